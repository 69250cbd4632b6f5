"""`noderecover plan`: what noderecover would do right now, read-only, against any cluster.

One LIST of Nodes (and heartbeat Leases), then the same decision code the controller runs,
with two look-ahead assumptions: a node that is unhealthy but has no noderecover state is
treated as Suspect since its Ready condition's lastTransitionTime, and a heartbeat Lease's
age is read from its renewTime against the local clock (the controller never does this; it is
good enough for a preview). What it shows comes from the controller's `Snapshot`
(controller/snapshot.py), never from its internals; the kubectl plugin reads the `Preview`.

The POLICY column says which NodeRecoveryPolicy governs each node and why: its name, or
"(flags)" when no policy exists, or "-" when none does (no policy selects it, two do, or
the one that does is invalid: WHY says which). Notes under the table list each policy's
pause (until when, why), invalid policies, and the cluster-wide pause.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from noderecover.base.clock import Clock, SystemClock
from noderecover.controller.reconciler import Controller
from noderecover.controller.snapshot import Snapshot
from noderecover.core.display import format_age, table
from noderecover.core.machine import Phase
from noderecover.core.nodes import Condition, format_time
from noderecover.core.proof import Outlook
from noderecover.core.volumes import Attachment, on_node, plan_note
from noderecover.entry.config import Config
from noderecover.entry.output import Output, emit
from noderecover.kube.client import ApiError, KubeClient
from noderecover.kube.storage import attachments

log = logging.getLogger("noderecover.entry.plan")

HEADER = ("NODE", "READY", "UNHEALTHY FOR", "PHASE", "NOW", "WHY", "POLICY", "AGENT")


@dataclass(frozen=True)
class NodeReport:
    """What `plan` (and `kubectl noderecover`) says of one node."""

    node: str
    ready: str  # Ready status, "-" without one
    unhealthy_for: float | None  # seconds since its Ready transition, while unhealthy
    phase: str  # "-": outside --node-selector
    now: str  # the step now: an action, "wait", "blocked", "nothing", "ignore"
    why: str
    blocked: str | None = None
    next_in: float | None = None  # seconds until the next step is due (a timer)
    phase_since: float | None = None  # wall time (from the Node's annotation)
    conditions: tuple[Condition, ...] = ()
    volumes: tuple[str, ...] = ()  # VolumeAttachments on the node (unhealthy nodes only)
    excluded: str | None = None
    managed: bool = True
    policy: str = "(flags)"  # the NodeRecoveryPolicy governing it; "-": none
    proof: str = "none"  # why the node is believed off (core.proof), as this read shows it
    removal: str = ""  # the removal it would get with that proof ("" = the settings')
    # Its node agent: mode (watchdog, sysrq; None: no agent), safe time, why not relied on.
    agent_mode: str | None = None
    agent_safe_time: float | None = None
    agent_not_relied_on: str | None = None
    agent: str = "-"  # the AGENT cell: mode/safe time
    outlook: Outlook | None = None  # the proof it will get, or why none (core.proof.outlook)

    def row(self) -> tuple[str, ...]:
        return (
            self.node,
            self.ready,
            format_age(self.unhealthy_for),
            self.phase,
            self.now,
            self.why,
        )


@dataclass
class Preview:
    reports: list[NodeReport]
    breaker_open: bool
    unhealthy: int
    total: int
    snapshot: Snapshot  # what the controller saw and decided
    notes: list[str] = dataclasses.field(default_factory=list)  # pauses, invalid policies


async def preview(
    kube: KubeClient, cfg: Config, clock: Clock | None = None, namespace: str | None = None
) -> Preview:
    """The controller's decisions for every node now, from one LIST (read-only).

    `namespace`: where the cluster-wide pause ConfigMap is read (None: not read)."""
    clock = clock or SystemClock()
    snap = await Controller(kube, clock, cfg, namespace=namespace).preview()
    now = snap.now
    held: dict[str, list[Attachment]] = {}
    if any(n.unhealthy for n in snap.nodes):
        try:
            found = await attachments(kube)
        except ApiError as exc:  # plan still answers; the volumes column says it could not
            log.warning("could not read VolumeAttachments: %s", exc)
            found = None
        for n in snap.nodes:
            held[n.name] = on_node(found or [], n.name)
    reports: list[NodeReport] = []
    sick_count = 0
    managed_count = 0
    for n in snap.nodes:
        name = n.name
        ready = n.ready
        status = ready.status if ready is not None else "-"
        sick = n.unhealthy
        age = now - ready.since if sick and ready is not None and ready.since else None
        ungoverned = n.ungoverned
        base = NodeReport(
            node=name,
            ready=status,
            unhealthy_for=age,
            phase="-",
            now="",
            why="",
            phase_since=n.phase_since,
            conditions=n.conditions,
            volumes=tuple(a.pv or a.name for a in held.get(name, [])),
            excluded=n.excluded,
            policy=n.policy,
            managed=ungoverned is None,
            proof=n.proof,
            removal=n.removal,
            agent_mode=n.agent_mode,
            agent_safe_time=n.agent_safe_time,
            agent_not_relied_on=n.agent_not_relied_on,
            agent=n.agent,
            outlook=n.outlook,
        )
        if not n.selected:
            reports.append(
                dataclasses.replace(
                    base,
                    phase="-",
                    now="ignore",
                    why="not matched by --node-selector",
                    managed=False,
                )
            )
            continue
        if ungoverned is None:
            managed_count += 1
            sick_count += sick
        if not n.decided or n.phase is None:
            why = ungoverned or n.excluded or "healthy"
            reports.append(
                dataclasses.replace(base, phase=Phase.HEALTHY.value, now="nothing", why=why)
            )
            continue
        if n.action is not None:
            now_do = n.action.value
        elif n.blocked is not None or n.malformed:
            now_do = "blocked"
        else:
            now_do = "wait"
        why = n.blocked or n.why
        if n.blocked is not None and ungoverned is not None:
            why = ungoverned
        next_in = None
        if n.next_at is not None and n.action is None and n.blocked is None:
            next_in = max(0.0, n.next_at - now)
            why += f" (next step in {format_age(next_in)})"
        if note := plan_note(n.removal, held.get(name, [])):
            why += f"; {note}"
        reports.append(
            dataclasses.replace(
                base,
                phase=n.phase.value,
                now=now_do,
                why=why,
                blocked=n.blocked,
                next_in=next_in,
            )
        )
    return Preview(
        reports, snap.pool_breaker_open, sick_count, managed_count, snap, list(snap.notes)
    )


def in_remediation(r: NodeReport) -> bool:
    return r.phase not in ("-", "Healthy") or r.now not in ("nothing", "ignore")


def _time(wall: float | None) -> str | None:
    return None if wall is None else format_time(wall)


def report_dict(r: NodeReport) -> dict[str, Any]:
    """One node in -o json/yaml/jsonpath (plan, status, why)."""
    return {
        "node": r.node,
        "ready": r.ready,
        "phase": r.phase,
        "phaseSince": _time(r.phase_since),
        "unhealthyForSeconds": None if r.unhealthy_for is None else round(r.unhealthy_for, 1),
        "next": r.now,
        "nextInSeconds": None if r.next_in is None else round(r.next_in, 1),
        "blockedReason": r.blocked,
        "why": r.why,
        "excluded": r.excluded,
        "managed": r.managed,
        "policy": r.policy,
        "volumes": list(r.volumes),
        "proof": r.proof,
        "removal": r.removal,
        "agent": agent_dict(r),
        "proofOutlook": r.outlook.data() if r.outlook is not None else None,
        "conditions": [
            {"type": c.type, "status": c.status, "reason": c.reason, "since": _time(c.since)}
            for c in r.conditions
        ],
    }


def agent_dict(r: NodeReport) -> dict[str, Any] | None:
    """The node's agent in -o json/yaml (None: no agent Lease)."""
    if r.agent_mode is None:
        return None
    return {
        "mode": r.agent_mode,
        "safeTimeSeconds": None if r.agent_safe_time is None else round(r.agent_safe_time, 1),
        "reliedOn": r.agent_not_relied_on is None,
        "notReliedOnBecause": r.agent_not_relied_on,
    }


def agent_line(r: NodeReport) -> str:
    """`why`: what its agent means for the node."""
    if r.agent_mode is None or r.agent_safe_time is None:
        return "no node agent (no noderecover-agent Lease): no self-fence"
    safe = format_age(r.agent_safe_time)
    if r.agent_not_relied_on is not None:
        return (
            f"node agent ({r.agent_mode}, safe time {safe}) NOT relied on: "
            f"{r.agent_not_relied_on}; handled as a node without an agent"
        )
    return (
        f"node agent ({r.agent_mode}): asked to fence the node before any force; the node "
        f"counts as off {safe} after the mark and its last sign of life (safe time)"
    )


def breaker_dict(p: Preview, cfg: Config) -> dict[str, Any]:
    return {
        "open": p.breaker_open,
        "unhealthy": p.unhealthy,
        "managed": p.total,
        "maxUnhealthy": str(cfg.max_unhealthy),
    }


def breaker_line(p: Preview, cfg: Config) -> str:
    return (
        f"circuit breaker: {'OPEN (no new remediation)' if p.breaker_open else 'closed'} "
        f"({p.unhealthy}/{p.total} unhealthy, limit {cfg.max_unhealthy})"
    )


def plan_data(p: Preview, cfg: Config) -> dict[str, Any]:
    """`plan -o json|yaml|jsonpath` of both `noderecover plan` and `kubectl noderecover plan`."""
    return {
        "circuitBreaker": breaker_dict(p, cfg),
        "notes": list(p.notes),
        "nodes": [report_dict(r) for r in p.reports],
    }


def node_names(reports: list[NodeReport]) -> list[str]:
    """-o name: kubectl's `node/NAME`."""
    return [f"node/{r.node}" for r in reports]


def plan_rows(p: Preview, wide: bool = False) -> list[tuple[str, ...]]:
    """The plan table's rows (HEADER, and VOLUMES and PROOF when wide)."""
    rows = [(*r.row(), r.policy, r.agent) for r in p.reports]
    if wide:
        rows = [
            (*row, ",".join(r.volumes) or "-", proof_column(r))
            for row, r in zip(rows, p.reports, strict=True)
        ]
    return rows


def proof_column(r: NodeReport) -> str:
    """The PROOF column (wide): the proof the node will get (core.proof.outlook)."""
    return r.outlook.short if r.outlook is not None else r.proof


def write_plan(p: Preview, cfg: Config, output: Output, out: TextIO) -> None:
    """The plan as `output` says: the table (then the circuit breaker and the notes), or the
    data (plan_data)."""
    if output.data:
        emit(plan_data(p, cfg), node_names(p.reports), output, out)
        return
    wide = output.kind == "wide"
    out.write(table([*HEADER, *(["VOLUMES", "PROOF"] if wide else [])], plan_rows(p, wide)))
    out.write(breaker_line(p, cfg) + "\n")
    for note in p.notes:
        out.write(note + "\n")


async def run_plan(cfg: Config, output: Output | None = None, out: TextIO | None = None) -> int:
    from noderecover.entry.app import lease_namespace, load_client
    from noderecover.kube.client import Timeouts

    kube = KubeClient(await load_client(cfg), Timeouts(request=cfg.api_timeout))
    try:
        p = await preview(kube, cfg, namespace=lease_namespace(cfg))
    finally:
        await kube.close()
    write_plan(p, cfg, output or Output(), out or sys.stdout)
    return 0
