"""`noderecover plan`: what noderecover would do right now, read-only, against any cluster.

One LIST of Nodes (and heartbeat Leases), then the same decision code the controller runs,
with two look-ahead assumptions: a node that is unhealthy but has no noderecover state is
treated as Suspect since its Ready condition's lastTransitionTime, and a heartbeat Lease's
age is read from its renewTime against the local clock (the controller never does this; it is
good enough for a preview).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from noderecover.base.clock import Clock, SystemClock
from noderecover.controller.reconciler import Controller
from noderecover.core.machine import Phase, unhealthy
from noderecover.core.safety import exclusion, in_population
from noderecover.core.volumes import Attachment, on_node, plan_note
from noderecover.entry.config import Config
from noderecover.kube.client import ApiError, KubeClient
from noderecover.kube.storage import attachments

log = logging.getLogger("noderecover.entry.plan")

HEADER = ("NODE", "READY", "UNHEALTHY FOR", "PHASE", "NOW", "WHY")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


async def plan_rows(
    kube: KubeClient, cfg: Config, clock: Clock | None = None
) -> tuple[list[tuple[str, ...]], bool]:
    """One row per node, and whether the circuit breaker would be open."""
    clock = clock or SystemClock()
    c = Controller(kube, clock, cfg)
    decisions = await c.preview()
    now = c.timeline.now()
    held: dict[str, list[Attachment]] = {}
    if any(unhealthy(obs, cfg) for obs in c.nodes.values()):
        try:
            found = await attachments(kube)
        except ApiError as exc:  # plan still answers; the volumes column says it could not
            log.warning("could not read VolumeAttachments: %s", exc)
            found = None
        for name in c.nodes:
            held[name] = on_node(found or [], name)
    rows: list[tuple[str, ...]] = []
    for name in sorted(c.nodes):
        obs = c.nodes[name]
        ready = obs.ready
        status = ready.status if ready is not None else "-"
        sick = unhealthy(obs, cfg)
        age = now - ready.since if sick and ready is not None and ready.since else None
        d = decisions.get(name)
        if not in_population(obs, cfg):
            rows.append((name, status, _age(age), "-", "ignore", "not matched by --node-selector"))
            continue
        if d is None:
            why = exclusion(obs, cfg) or "healthy"
            rows.append((name, status, _age(age), Phase.HEALTHY.value, "nothing", why))
            continue
        if d.action is not None:
            now_do = d.action.kind.value
        elif d.blocked is not None or obs.malformed is not None:
            now_do = "blocked"
        else:
            now_do = "wait"
        why = d.blocked or d.why
        if d.wake_at is not None and d.action is None and d.blocked is None:
            why += f" (next step in {_age(max(0.0, d.wake_at - now))})"
        if note := plan_note(cfg.removal_mode, held.get(name, [])):
            why += f"; {note}"
        rows.append((name, status, _age(age), d.record.phase.value, now_do, why))
    return rows, c.breaker.open


def render(
    rows: list[tuple[str, ...]], breaker_open: bool | None = None, out: TextIO = sys.stdout
) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, *rows]:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    if breaker_open is not None:
        out.write(f"circuit breaker: {'OPEN (no new remediation)' if breaker_open else 'closed'}\n")


async def run_plan(cfg: Config, out: TextIO = sys.stdout) -> int:
    from noderecover.entry.app import load_client
    from noderecover.kube.client import Timeouts

    kube = KubeClient(await load_client(cfg), Timeouts(request=cfg.api_timeout))
    try:
        rows, breaker = await plan_rows(kube, cfg)
    finally:
        await kube.close()
    render(rows, breaker, out)
    return 0
