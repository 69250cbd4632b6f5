"""`noderecover plan`: what noderecover would do right now, read-only, against any cluster.

One LIST of Nodes (and heartbeat Leases), then the same decision code the controller runs,
with two look-ahead assumptions: a node that is unhealthy but has no noderecover state is
treated as Suspect since its Ready condition's lastTransitionTime, and a heartbeat Lease's
age is read from its renewTime against the local clock (the controller never does this; it is
good enough for a preview).

The POLICY column says which NodeRecoveryPolicy governs each node and why: its name, or
"(flags)" when no policy exists, or "-" when none does (no policy selects it, two do, or
the one that does is invalid: WHY says which). Notes under the table list each policy's
pause (until when, why), invalid policies, and the cluster-wide pause.
"""

from __future__ import annotations

import sys
from typing import TextIO

from noderecover.base.clock import Clock, SystemClock
from noderecover.controller.reconciler import Controller
from noderecover.core.machine import Phase, unhealthy
from noderecover.core.nodes import format_time
from noderecover.core.policies import NO_POLICY, POLICY_CONFLICT
from noderecover.core.safety import exclusion, in_population
from noderecover.entry.config import Config
from noderecover.kube.client import KubeClient

HEADER = ("NODE", "READY", "UNHEALTHY FOR", "PHASE", "NOW", "WHY", "POLICY")


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
    rows, breaker, _ = await plan_report(kube, cfg, clock)
    return rows, breaker


def _governed_by(c: Controller, name: str) -> tuple[str, str | None]:
    """(POLICY column, why no policy governs it or None)."""
    if not c.policies.active:
        return ("(flags)", None) if name in c.view.population else ("-", None)
    pool = c.view.pool(name)
    if pool is not None:
        return pool, None
    gov = c.view.held.get(name)
    if gov is not None and gov.held == POLICY_CONFLICT:
        return "-", f"{POLICY_CONFLICT}: selected by {', '.join(gov.matched)}"
    if gov is not None and gov.held is not None:
        return "-", gov.why
    return "-", f"{NO_POLICY}: no NodeRecoveryPolicy selects it (left alone)"


def _notes(c: Controller, now: float) -> list[str]:
    notes = []
    cluster = c.policies.cluster_pause
    if cluster is not None and cluster.active(now):
        notes.append(
            f"cluster-wide pause until {format_time(cluster.until)}: {cluster.reason or '-'}"
        )
    for name, p in sorted(c.policies.policies.items()):
        if p.error is not None:
            notes.append(f"policy {name}: INVALID, not applied (its nodes are held): {p.error}")
        elif p.pause is not None and p.pause.active(now):
            until = format_time(p.pause.until)
            notes.append(f"policy {name}: paused until {until}: {p.pause.reason or '-'}")
    return notes


async def plan_report(
    kube: KubeClient, cfg: Config, clock: Clock | None = None, namespace: str | None = None
) -> tuple[list[tuple[str, ...]], bool, list[str]]:
    """Rows, whether a circuit breaker would be open, and notes (pauses, invalid policies).

    `namespace`: where the cluster-wide pause ConfigMap is read (None: not read)."""
    clock = clock or SystemClock()
    c = Controller(kube, clock, cfg, namespace=namespace)
    decisions = await c.preview()
    now = c.timeline.now()
    rows: list[tuple[str, ...]] = []
    for name in sorted(c.nodes):
        obs = c.nodes[name]
        ready = obs.ready
        status = ready.status if ready is not None else "-"
        ncfg = c.config_for(name)
        sick = unhealthy(obs, ncfg)
        age = now - ready.since if sick and ready is not None and ready.since else None
        d = decisions.get(name)
        policy, ungoverned = _governed_by(c, name)
        if not c.policies.active and not in_population(obs, cfg):
            rows.append(
                (name, status, _age(age), "-", "ignore", "not matched by --node-selector", "-")
            )
            continue
        if d is None:
            why = ungoverned or exclusion(obs, ncfg) or "healthy"
            rows.append((name, status, _age(age), Phase.HEALTHY.value, "nothing", why, policy))
            continue
        if d.action is not None:
            now_do = d.action.kind.value
        elif d.blocked is not None or obs.malformed is not None:
            now_do = "blocked"
        else:
            now_do = "wait"
        why = d.blocked or d.why
        if d.blocked is not None and ungoverned is not None:
            why = ungoverned
        if d.wake_at is not None and d.action is None and d.blocked is None:
            why += f" (next step in {_age(max(0.0, d.wake_at - now))})"
        rows.append((name, status, _age(age), d.record.phase.value, now_do, why, policy))
    breaker = any(b.open for b in c.breakers.values())
    return rows, breaker, _notes(c, now)


def render(
    rows: list[tuple[str, ...]],
    breaker_open: bool | None = None,
    out: TextIO = sys.stdout,
    notes: list[str] | None = None,
) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    for r in [HEADER, *rows]:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    if breaker_open is not None:
        out.write(f"circuit breaker: {'OPEN (no new remediation)' if breaker_open else 'closed'}\n")
    for note in notes or ():
        out.write(note + "\n")


async def run_plan(cfg: Config, out: TextIO = sys.stdout) -> int:
    from noderecover.entry.app import lease_namespace, load_client
    from noderecover.kube.client import Timeouts

    kube = KubeClient(await load_client(cfg), Timeouts(request=cfg.api_timeout))
    try:
        rows, breaker, notes = await plan_report(kube, cfg, namespace=lease_namespace(cfg))
    finally:
        await kube.close()
    render(rows, breaker, out, notes)
    return 0
