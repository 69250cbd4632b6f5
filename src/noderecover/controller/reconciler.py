"""The reconciler: drives the state machine from the node view and starts the actions.

Two duties with different lifetimes:
- `watch()` runs on every replica from start to stop: it keeps the node view (and the
  heartbeat Leases of silent nodes) current, which is what /readyz and /healthz report on.
- `lead()` is the leader's work: re-list, then reconcile until cancelled. Every action runs
  in `lead()`'s task group, so losing leadership cancels all of them at once.

Invariants:
- At most one action per node at a time (`_busy`); actions run concurrently across nodes,
  within the state machine's own --max-concurrent gate.
- Leadership is re-checked by the executor before each write (the act-gate), not only here.
- On taking the lead, in-memory records are dropped and rebuilt from the Node annotations,
  so a leader that lost and regained the Lease never acts on what it remembered. A pass
  resumes every record it visits before it counts remediations in flight, so a new leader's
  first pass sees the remediation it inherits (--max-concurrent holds).
- A removed node still in view counts once (as a removal) for the breaker, not twice.
- Time: records, timers and annotations use the Timeline (monotonic, on the wall scale): a
  wall-clock step cannot shorten a grace. Heartbeat Lease ages use the monotonic clock.
- What noderecover did it undoes: a node that leaves --node-selector keeps being visited
  while it has a record or our annotations; it is held (`excluded-selector`) and restored
  once healthy.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc

from noderecover.base import logs
from noderecover.base.clock import Clock, Timeline, wait_event
from noderecover.base.metrics import BREAKER_OPEN, RECOVERY_DURATION, UNHEALTHY
from noderecover.controller.executor import Executor
from noderecover.controller.heartbeats import Heartbeats
from noderecover.controller.reporting import EventSink, Reporter
from noderecover.controller.view import NodeView
from noderecover.core.machine import (
    EXCLUDED_SELECTOR,
    IN_FLIGHT,
    Action,
    Decision,
    Gates,
    Kind,
    Outcome,
    Phase,
    Record,
    complete,
    decide,
    resume,
    unhealthy,
)
from noderecover.core.nodes import ANN_PHASE, NodeObs, parse_time
from noderecover.core.safety import HOUR, BreakerState, breaker_step, breaker_wake, prune, recent
from noderecover.core.settings import Config
from noderecover.kube.client import ApiError, KubeClient, NotLeader
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.reconciler")

MAX_IDLE = 1.0  # re-evaluate at least this often (freshness, breaker cooldown)


class Gate(Protocol):
    def may_act(self) -> bool: ...


class AlwaysLeader:
    """The act-gate when leader election is off: this process is the only one."""

    def may_act(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Census:
    """What one pass counts for the circuit breaker and --max-concurrent."""

    unhealthy: int
    total: int
    in_flight: int


class Controller:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        cfg: Config,
        *,
        gate: Gate | None = None,
        events: EventSink | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._kube = kube
        self._clock = clock
        self._gate = gate or AlwaysLeader()
        self._rng = rng or random.Random()
        self.timeline = Timeline(clock)
        self.view = NodeView(kube, clock, self.timeline, cfg, self._view_changed, rng=self._rng)
        self.heartbeats = Heartbeats(kube, clock, self.timeline, cfg)
        self.reporter = Reporter(cfg, self.timeline, events)
        self.executor = Executor(
            kube,
            clock,
            cfg,
            self._gate.may_act,
            rng=self._rng,
            guard=self,
            now=self.timeline.now,
        )
        self.records: dict[str, Record] = {}
        self.breaker = BreakerState()
        self.removals: tuple[float, ...] = ()
        self.leading = False
        self.decisions: dict[str, Decision] = {}  # the last decision per node
        self._busy: dict[str, Kind] = {}  # node -> the action in progress
        self._idle = anyio.Event()
        self._wake = anyio.Event()

    # -- the view and its evidence -----------------------------------------------------

    @property
    def nodes(self) -> dict[str, NodeObs]:
        return self.view.nodes

    @property
    def node_watcher(self) -> Watcher[NodeObs]:
        return self.view.watcher

    @property
    def blocked(self) -> dict[str, str]:
        """Node -> why its next step is held (what was reported)."""
        return self.reporter.blocked

    def _view_changed(self, name: str | None, obs: NodeObs | None) -> None:
        if obs is not None and obs.silent and name not in self.heartbeats.leases:
            self.heartbeats.wake.set()  # read its heartbeat Lease now
        self._wake.set()

    def lease_renewing(self, name: str) -> bool:
        return self.heartbeats.renewing(name)

    async def refresh_leases(self) -> None:
        await self.heartbeats.refresh(self.view.silent())

    def fresh(self) -> bool:
        return not self.view.watcher.stale()

    @property
    def synced(self) -> bool:
        return self.view.watcher.synced

    async def watch(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.view.watcher.run)
            if self.cfg.watch_node_leases:
                tg.start_soon(self.heartbeats.poll, self.view.silent, self._wake.set)

    # -- the executor's guard (executor.Guard) -------------------------------------------

    def hold(self, node: str) -> str | None:
        """Controller-wide gates, asked again before every destructive step."""
        if not self.fresh():
            return "watch-stale"
        if self.breaker.open:
            return "circuit-breaker"
        if node not in self.view.population:
            return EXCLUDED_SELECTOR
        return None

    async def lease_renewing_now(self, node: str) -> bool:
        return await self.heartbeats.renewing_now(node)

    def report(self, node: str, uid: str, reason: str, message: str) -> None:
        self.reporter.event(node, uid, "NodeRecoverBlocked", message)

    def event(
        self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str
    ) -> None:
        self.reporter.object_event(kind, namespace, name, uid, reason, message)

    # -- actions in progress -------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Some action is being performed right now."""
        return bool(self._busy)

    async def wait_idle(self) -> None:
        """Return once no action is in progress."""
        while self._busy:
            self._idle = anyio.Event()
            await self._idle.wait()

    def _done(self, name: str) -> None:
        self._busy.pop(name, None)
        if not self._busy:
            self._idle.set()
        self._wake.set()

    # -- the leader's work -------------------------------------------------------------

    async def lead(self) -> None:
        """Run as leader until cancelled."""
        self.leading = True
        try:
            await self.view.watcher.relist()
            self.records = {}
            self.reporter.reset()
            await self._load_removals()
            log.info("leading: %d nodes in view", len(self.nodes))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.executor.volumes.run)
                while True:
                    self._wake = anyio.Event()
                    wake_at = self.reconcile(tg)
                    delay = min(MAX_IDLE, max(0.0, wake_at - self.timeline.now()))
                    await wait_event(self._wake, self._clock, delay)
        finally:
            self.leading = False
            self._busy.clear()

    async def _load_removals(self) -> None:
        """Seed the removal history from the NodeRecoverRemoved Events of earlier leaders.

        So a failover does not reset --max-removals-per-hour or the breaker window. Events are
        best-effort (and expire after the API server's event TTL, 1 h by default): a miss here
        is logged and the history starts from what this replica saw.
        """
        try:
            body = await self._kube.request(
                "GET",
                "/api/v1/namespaces/default/events",
                query=[("fieldSelector", "reason=NodeRecoverRemoved"), ("limit", "500")],
            )
        except ApiError as exc:
            log.warning("could not read earlier removals from Events: %s", exc)
            return
        now = self.timeline.now()
        keep = max(HOUR, self.cfg.breaker_window)
        # The most removals the hourly budget allows in the kept window: a larger `count` is
        # garbage, and counting past it changes no decision (the budget is spent either way).
        most = self.cfg.max_removals_per_hour * math.ceil(keep / HOUR)
        loaded: Counter[float] = Counter()
        items = body.get("items")
        for ev in items if isinstance(items, list) else ():
            if not isinstance(ev, dict) or ev.get("reportingComponent") != "noderecover":
                continue
            stamps = [parse_time(ev.get(k)) for k in ("firstTimestamp", "lastTimestamp")]
            # All at the latest timestamp: no removal of an aggregated Event happened after
            # it, so none leaves the window sooner than it really would (never undercounts).
            when = max((t for t in stamps if t is not None), default=None)
            if when is None or now - when >= keep:
                continue
            count = ev.get("count")
            # The Event itself is one removal; `count` (an int, not a bool) says how many.
            n = count if isinstance(count, int) and not isinstance(count, bool) else 1
            loaded[when] += min(max(n, 1), most)
        # A multiset union: Events this replica loaded in an earlier term are not counted twice.
        merged = Counter(self.removals) | loaded
        self.removals = tuple(sorted(merged.elements()))
        if self.removals:
            log.info(
                "%d node removals in the last hour/breaker window (from Events)", len(self.removals)
            )

    def reconcile(self, tg: anyio.abc.TaskGroup) -> float:
        """Decide for every node needing attention; start the actions in `tg`.

        Returns the next wake time (timeline).
        """
        return self._pass(lambda d: self._start(tg, d))

    def decide_all(self) -> float:
        """One pass that decides (and records) but starts nothing: previews and benchmarks."""
        return self._pass(None)

    async def preview(self) -> dict[str, Decision]:
        """What this controller would decide now, from one LIST (read-only; `plan`).

        No history is available to a preview: heartbeat Leases are judged by their
        renewTime against the local clock, and an unhealthy node without our annotations
        is taken as Suspect since its Ready transition.
        """
        await self.view.watcher.list_once()
        if self.cfg.watch_node_leases:
            await self.refresh_leases()
            self.heartbeats.judge_by_renew_time()
        now = self.timeline.now()
        for obs in self.nodes.values():
            ready = obs.ready
            if unhealthy(obs, self.cfg) and ANN_PHASE not in obs.annotations:
                since = ready.since if ready is not None and ready.since is not None else now
                self.records[obs.name] = Record(
                    uid=obs.uid,
                    phase=Phase.SUSPECT,
                    phase_since=since,
                    unhealthy_since=since,
                    transition=ready.since if ready is not None else None,
                )
        self.decide_all()
        return dict(self.decisions)

    def _pass(self, start: Callable[[Decision], None] | None) -> float:
        now = self.timeline.now()
        cfg = self.cfg
        self.removals = prune(self.removals, now, max(HOUR, cfg.breaker_window))
        view = self.view
        # Only nodes that can need a decision are visited (see NodeView): a pass costs
        # O(unhealthy + remediated), not O(cluster). A node outside --node-selector is
        # visited only while something of ours is on it.
        names = {
            n
            for n in view.watchlist | self.records.keys() | self._busy.keys()
            if n in view.population or n in self.records or view.carries_ours(n)
        }
        candidates = [self.nodes[n] for n in names if n in self.nodes]
        # Resume before counting: a new leader's first pass must see the remediations it
        # inherits, or it could start more than --max-concurrent.
        for obs in candidates:
            rec = self.records.get(obs.name)
            if obs.name not in self._busy and (
                rec is None or (rec.uid != obs.uid and obs.malformed is None)
            ):
                self.records[obs.name] = resume(obs, now, cfg)
        census = self._census(candidates, now)
        self.breaker = breaker_step(self.breaker, census.unhealthy, census.total, now, cfg)
        BREAKER_OPEN.set(1 if self.breaker.open else 0)
        UNHEALTHY.set(census.unhealthy)
        self.reporter.drift()
        wake_at = now + MAX_IDLE
        if (b := breaker_wake(self.breaker, cfg)) is not None:
            wake_at = min(wake_at, b)
        fresh = self.fresh()
        in_flight = census.in_flight
        removals_last_hour = recent(self.removals, now, HOUR)
        heartbeats = self.heartbeats

        def order(o: NodeObs) -> tuple[float, str]:
            rec = self.records.get(o.name)
            since = rec.unhealthy_since if rec is not None else None
            return (since if since is not None else now, o.name)

        for obs in sorted(candidates, key=order):
            name = obs.name
            if name in self._busy:
                continue
            rec = self.records[name]
            managed = name in view.population
            own = 1 if managed and rec.phase in IN_FLIGHT and not rec.parked else 0
            gates = Gates(
                fresh=fresh,
                breaker_open=self.breaker.open,
                in_flight=in_flight - own,
                removals_last_hour=removals_last_hour,
                lease_renewing=heartbeats.renewing(name),
                lease_renewal_seen=heartbeats.renewal_seen(name),
                lease_stale_at=heartbeats.stale_at(name),
                managed=managed,
                startup_until=view.startup_until(obs),
            )
            d = decide(rec, obs, now, cfg, gates)
            self.decisions[name] = d
            self.reporter.decision(name, obs.uid, d)
            if d.record == Record(uid=obs.uid, phase_since=d.record.phase_since) and not d.action:
                self.records.pop(name, None)  # healthy, nothing pending: nothing to remember
            else:
                self.records[name] = d.record
            if d.wake_at is not None:
                wake_at = min(wake_at, d.wake_at)
            if d.action is not None and start is not None:
                if d.action.kind is Kind.CORDON:
                    in_flight += 1
                if d.action.kind is Kind.REMOVE:
                    removals_last_hour += 1
                start(d)
        for name in [n for n in self.records if n not in self.nodes and n not in self._busy]:
            self.reporter.forgotten(name, self.records.pop(name))
        self.reporter.phases(self.records, len(self.nodes), set(self.nodes))
        return wake_at

    def _census(self, candidates: list[NodeObs], now: float) -> Census:
        """Unhealthy and in-flight counts over the managed nodes, with recent removals."""
        cfg = self.cfg
        recent_removed = recent(self.removals, now, cfg.breaker_window)
        bad = recent_removed
        in_flight = 0
        counted_removed = 0  # removed recently, still in view: already in `recent_removed`
        for obs in candidates:
            if obs.name not in self.view.population:
                continue
            rec = self.records.get(obs.name)
            phase = rec.phase if rec is not None else Phase.HEALTHY
            if (
                rec is not None
                and phase is Phase.REMOVED
                and now - rec.phase_since < cfg.breaker_window
            ):
                # A deleted node until its DELETED event arrives, or an out-of-service node:
                # counted once, as a removal.
                counted_removed += 1
                continue
            parked = rec is not None and rec.parked
            if (phase in IN_FLIGHT and not parked) or self._busy.get(obs.name) is Kind.CORDON:
                in_flight += 1
            # A malformed node counts as unhealthy: the breaker errs on the safe side.
            if unhealthy(obs, cfg) or phase in IN_FLIGHT or obs.malformed is not None:
                bad += 1
        total = len(self.view.population) - counted_removed + recent_removed
        return Census(bad, total, in_flight)

    def _start(self, tg: anyio.abc.TaskGroup, d: Decision) -> None:
        action = d.action
        assert action is not None
        name = action.node
        self._busy[name] = action.kind
        logs.decision(log, name, d.record.phase.value, action.kind.value, d.why)
        rec = d.record
        if action.persist is not None:
            self.reporter.phase_changed(name, action.uid, rec, action.persist)
            self.records[name] = rec = action.persist
        tg.start_soon(self._perform, action, rec)

    async def _perform(self, action: Action, rec: Record) -> None:
        name = action.node
        try:
            result = await self.executor.perform(action, rec)
        except NotLeader:
            log.warning("lost leadership before %s of node %s; stopping", action.kind, name)
            self._done(name)
            return
        now = self.timeline.now()
        current = self.records.get(name, rec)
        new = complete(
            current,
            action,
            result.outcome,
            now,
            result.retry_in,
            result.tainted,
            result.transition,
        )
        held = result.detail if result.outcome is Outcome.BLOCKED else None
        self.reporter.executor_result(name, action.uid, current.phase.value, held)
        if result.outcome is Outcome.GONE:
            self.records.pop(name, None)
        else:
            self.records[name] = new
            if new.phase is not current.phase:
                self.reporter.phase_changed(name, action.uid, current, new)
        if action.kind is Kind.REMOVE and result.outcome is Outcome.OK:
            self.removals = (*self.removals, now)
            if current.unhealthy_since is not None:
                RECOVERY_DURATION.observe(max(0.0, now - current.unhealthy_since))
        logs.decision(
            log,
            name,
            new.phase.value,
            f"{action.kind.value}-done",
            result.outcome.value,
            detail=result.detail,
        )
        self._done(name)

    # -- health ------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.view.watcher.synced:
            return False, "initial node list not complete"
        return True, "synced"

    def liveness(self) -> tuple[bool, str]:
        if self.view.watcher.synced and self.view.watcher.stale():
            return False, "node watch stale"
        return True, "ok"
