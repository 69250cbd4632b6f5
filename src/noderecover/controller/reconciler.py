"""The controller: keeps the cluster view from the watches and drives the state machine.

Two duties with different lifetimes:
- `watch()` runs on every replica from start to stop: it keeps `nodes` (and the node
  heartbeat Leases) current, which is what /readyz and /healthz report on.
- `lead()` is the leader's work: re-list, then reconcile until cancelled. Every action runs
  in `lead()`'s task group, so losing leadership cancels all of them at once.

Invariants:
- At most one action per node at a time (`_busy`); actions run concurrently across nodes,
  within the state machine's own --max-concurrent gate.
- Leadership is re-checked by the executor before each write (the act-gate), not only here.
- On taking the lead, in-memory records are dropped and rebuilt from the Node annotations,
  so a leader that lost and regained the Lease never acts on what it remembered. A reconcile
  pass resumes every record it visits before it counts remediations in flight, so a new
  leader's first pass sees the remediation it inherits (--max-concurrent holds).
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
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import quote

import anyio
import anyio.abc

from noderecover.base import logs
from noderecover.base.clock import Clock, Timeline
from noderecover.base.metrics import (
    ACTIONS,
    BLOCKED,
    BREAKER_OPEN,
    CLOCK_DRIFT,
    FLAPS,
    MALFORMED_OBJECTS,
    NODES,
    PHASE_DURATION,
    RECOVERY_DURATION,
    UNHEALTHY,
)
from noderecover.controller.executor import Executor
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
from noderecover.core.nodes import OUR_ANNOTATIONS, NodeObs, parse_node, parse_time
from noderecover.core.safety import (
    HOUR,
    BreakerState,
    breaker_step,
    breaker_wake,
    in_population,
    prune,
    recent,
)
from noderecover.core.settings import Config
from noderecover.kube.client import ApiError, KubeClient, NotFound, NotLeader
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.reconciler")

NODES_PATH = "/api/v1/nodes"
NODE_LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
MAX_IDLE = 1.0  # re-evaluate at least this often (freshness, breaker cooldown)

EVENT_REASONS = {
    Phase.SUSPECT: ("NodeRecoverSuspect", "Warning"),
    Phase.CORDONED: ("NodeRecoverCordoned", "Warning"),
    Phase.DRAINING: ("NodeRecoverDraining", "Warning"),
    Phase.REMOVING: ("NodeRecoverDrained", "Warning"),
    Phase.REMOVED: ("NodeRecoverRemoved", "Warning"),
    Phase.HEALTHY: ("NodeRecoverRecovered", "Normal"),
}


class Gate(Protocol):
    def may_act(self) -> bool: ...


class EventSink(Protocol):
    def record(
        self, node: str, uid: str, reason: str, message: str, type: str = "Normal"
    ) -> None: ...


class AlwaysLeader:
    """The act-gate when leader election is off: this process is the only one."""

    def may_act(self) -> bool:
        return True


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
        self._events = events
        self._rng = rng or random.Random()
        self.timeline = Timeline(clock)
        self.executor = Executor(
            kube,
            clock,
            cfg,
            self._gate.may_act,
            rng=self._rng,
            guard=self,
            now=self.timeline.now,
        )
        self.nodes: dict[str, NodeObs] = {}
        self.records: dict[str, Record] = {}
        self.blocked: dict[str, str] = {}
        # node -> (renewTime, when it changed on our monotonic clock, a change was seen: not
        # just the first read)
        self.leases: dict[str, tuple[str, float, bool]] = {}
        self.breaker = BreakerState()
        self.removals: tuple[float, ...] = ()
        self.leading = False
        self.decisions: dict[str, Decision] = {}  # the last decision per node (for `plan`)
        self._population: set[str] = set()  # nodes matching --node-selector
        self._watchlist: set[str] = set()  # nodes unhealthy or carrying our annotations
        # Young nodes (created within --node-startup-timeout) seen Ready: the start-up
        # allowance is only for nodes never seen Ready. Old nodes are never kept here.
        self._young_ready: set[str] = set()
        self._drift_logged = 0.0
        self._executor_held: set[str] = set()  # `blocked` reasons reported by the executor
        self._busy: dict[str, Kind] = {}  # node -> the action in progress
        self._idle = anyio.Event()
        self._wake = anyio.Event()
        self._keep_labels = cfg.relevant_labels
        self._keep_conditions = cfg.kept_conditions
        self.node_watcher: Watcher[NodeObs] = Watcher(
            kube,
            clock,
            NODES_PATH,
            "nodes",
            self._parse_node,
            self._node_event,
            self._node_resync,
            silence=cfg.watch_silence,
            server_timeout=cfg.watch_timeout,
            rng=self._rng,
        )
        # Heartbeat Leases are read per silent node (GET), not watched: a cluster-wide watch
        # of kube-node-lease is one event per node every 10 s (99 % of the traffic at 1,000
        # nodes, docs/benchmarks.md) for a signal that matters only for Ready=Unknown nodes.
        self._lease_wake = anyio.Event()

    # -- the view ----------------------------------------------------------------------

    def _parse_node(self, raw: dict[str, Any]) -> NodeObs:
        """Malformed nodes stay in the view (marked, so nothing acts on them) and are counted."""
        obs = parse_node(raw, self._keep_labels, self._keep_conditions)
        if obs.malformed is not None:
            MALFORMED_OBJECTS.labels("nodes", obs.malformed).inc()
            old = self.nodes.get(obs.name)
            if old is None or old.malformed != obs.malformed:
                log.warning(
                    "node %s: object malformed (%s); it is not acted on until it is readable",
                    obs.name,
                    obs.malformed,
                )
        return obs

    def _node_event(self, etype: str, name: str, obs: NodeObs | None) -> None:
        if obs is None:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = obs
        self._index(name, obs)
        self._wake.set()

    def _node_resync(self, items: Iterable[tuple[str, NodeObs]]) -> None:
        self.nodes = dict(items)  # nodes missing from a re-list are forgotten
        self._population = set()
        self._watchlist = set()
        for name, obs in self.nodes.items():
            self._index(name, obs)
        self._wake.set()

    def _index(self, name: str, obs: NodeObs | None) -> None:
        """Keep the two sets that make a reconcile pass O(nodes needing attention).

        Invariant: a node outside `_watchlist` without a record and without an action in
        progress is healthy with nothing of ours on it: `decide` would do nothing for it and
        it adds nothing to the breaker's unhealthy or in-flight counts.
        """
        if obs is not None and in_population(obs, self.cfg):
            self._population.add(name)
        else:
            self._population.discard(name)
        ready = obs.ready if obs is not None else None
        if obs is None:
            self._young_ready.discard(name)
        elif ready is not None and ready.status == "True" and self._young(obs):
            self._young_ready.add(name)
        if obs is not None and (
            obs.malformed is not None
            or unhealthy(obs, self.cfg)
            or any(k in obs.annotations for k in OUR_ANNOTATIONS)
        ):
            self._watchlist.add(name)
            if obs.silent and name not in self.leases:
                self._lease_wake.set()  # read its heartbeat Lease now
        else:
            self._watchlist.discard(name)

    def _young(self, obs: NodeObs) -> bool:
        created = obs.created
        return created is not None and self.timeline.now() - created < self.cfg.node_startup_timeout

    def _startup_until(self, obs: NodeObs) -> float | None:
        """Until when a node never seen Ready is still joining (None: not joining)."""
        if obs.created is None or obs.name in self._young_ready or not self._young(obs):
            return None
        return obs.created + self.cfg.node_startup_timeout

    # -- the executor's guard (remediation.Guard) ----------------------------------------

    def hold(self, node: str) -> str | None:
        """Controller-wide gates, asked again before every destructive step."""
        if not self.fresh():
            return "watch-stale"
        if self.breaker.open:
            return "circuit-breaker"
        if node not in self._population:
            return EXCLUDED_SELECTOR
        return None

    async def lease_renewing_now(self, node: str) -> bool:
        """A fresh GET of the node's heartbeat Lease, then `lease_renewing`. An answer we
        cannot read is no evidence of silence: renewing."""
        if not self.cfg.watch_node_leases:
            return False
        if not await self._fetch_lease(node):
            return True
        return self.lease_renewing(node)

    async def _fetch_lease(self, name: str) -> bool:
        """GET a node's heartbeat Lease and note its renewTime; False if it could not be read."""
        try:
            lease = await self._kube.request("GET", f"{NODE_LEASES_PATH}/{quote(name, safe='')}")
        except ApiError as exc:
            if isinstance(exc, NotFound):
                self.leases[name] = ("", float("-inf"), False)  # no Lease: nothing renews it
                return True
            log.warning("could not read the heartbeat Lease of %s: %s", name, exc)
            return False
        spec = lease.get("spec")
        renew = spec.get("renewTime") if isinstance(spec, dict) else None
        # Anything but a string is no evidence of renewal (it never changes: not renewing).
        self._lease_seen(name, renew if isinstance(renew, str) else "")
        return True

    def report(self, node: str, uid: str, reason: str, message: str) -> None:
        if self._events is not None:
            self._events.record(node, uid, "NodeRecoverBlocked", message, "Warning")

    def _lease_seen(self, name: str, renew: str) -> None:
        old = self.leases.get(name)
        if old is None or old[0] != renew:
            # Measured on OUR clock when we saw it change: no cross-host clock comparison.
            self.leases[name] = (renew, self._clock.monotonic(), old is not None)

    def lease_renewing(self, name: str) -> bool:
        """The node's heartbeat Lease changed within the grace, as observed by us.

        Not yet read counts as renewing (no evidence of silence yet); a node without a Lease
        (404) does not.
        """
        if not self.cfg.watch_node_leases:
            return False
        seen = self.leases.get(name)
        return seen is None or self._clock.monotonic() - seen[1] < self.cfg.grace

    def _lease_renewal_seen(self, name: str) -> bool:
        """We saw the Lease's renewTime change (within the grace): real evidence of life, as
        opposed to a Lease first read less than a grace ago."""
        seen = self.leases.get(name)
        return seen is not None and seen[2] and self.lease_renewing(name)

    def _lease_stale_at(self, name: str) -> float | None:
        """When (timeline) the Lease counts as stale if it does not change; None: not read."""
        seen = self.leases.get(name)
        if seen is None:
            return None
        return self.timeline.now() + (seen[1] + self.cfg.grace - self._clock.monotonic())

    def _silent_nodes(self) -> list[str]:
        return [n for n in self._watchlist if (o := self.nodes.get(n)) is not None and o.silent]

    async def refresh_leases(self) -> None:
        """One round: GET the heartbeat Lease of every silent node; forget the others."""
        silent = self._silent_nodes()
        for name in silent:
            await self._fetch_lease(name)
        keep = set(silent)
        self.leases = {k: v for k, v in self.leases.items() if k in keep}

    async def _poll_leases(self) -> None:
        """While nodes are silent, re-read their Leases every min(grace / 3, 5 s)."""
        interval = max(0.5, min(self.cfg.grace / 3.0, 5.0))
        while True:
            self._lease_wake = anyio.Event()
            await self.refresh_leases()
            self._wake.set()
            await _wait(self._lease_wake, self._clock, interval)

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

    def fresh(self) -> bool:
        return not self.node_watcher.stale()

    @property
    def synced(self) -> bool:
        return self.node_watcher.synced

    async def watch(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.node_watcher.run)
            if self.cfg.watch_node_leases:
                tg.start_soon(self._poll_leases)

    # -- the leader's work -------------------------------------------------------------

    async def lead(self) -> None:
        """Run as leader until cancelled."""
        self.leading = True
        try:
            await self.node_watcher.relist()
            self.records = {}
            self.blocked = {}
            self._executor_held = set()
            await self._load_removals()
            log.info("leading: %d nodes in view", len(self.nodes))
            async with anyio.create_task_group() as tg:
                while True:
                    self._wake = anyio.Event()
                    wake_at = self.reconcile(tg)
                    delay = min(MAX_IDLE, max(0.0, wake_at - self.timeline.now()))
                    await _wait(self._wake, self._clock, delay)
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

    def reconcile(self, tg: anyio.abc.TaskGroup | None) -> float:
        """Decide for every node once; start the actions in `tg`. Returns the next wake time.

        With `tg` None nothing is started (used by `plan`).
        """
        now = self.timeline.now()
        cfg = self.cfg
        self.removals = prune(self.removals, now, max(HOUR, cfg.breaker_window))
        # Only nodes that can need a decision are visited (see `_index`): a pass costs
        # O(unhealthy + remediated), not O(cluster), so 5,000 healthy nodes are free.
        # A node outside --node-selector is visited only while something of ours is on it.
        names = {
            n
            for n in self._watchlist | self.records.keys() | self._busy.keys()
            if n in self._population or n in self.records or self._carries_ours(n)
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
        recent_removed = recent(self.removals, now, cfg.breaker_window)
        bad = recent_removed
        in_flight = 0
        counted_removed = 0  # removed recently, still in view: already in `recent_removed`
        for obs in candidates:
            if obs.name not in self._population:
                continue
            rec = self.records.get(obs.name)
            phase = rec.phase if rec is not None else Phase.HEALTHY
            if (
                rec is not None
                and phase is Phase.REMOVED
                and now - rec.phase_since < cfg.breaker_window
            ):
                # A deleted node until its DELETED event arrives, or an out-of-service node:
                # count it once (as a removal), not twice. Found by the e2e fault suite: the
                # double count opened the breaker for the next node after every removal.
                counted_removed += 1
                continue
            parked = rec is not None and rec.parked
            if (phase in IN_FLIGHT and not parked) or self._busy.get(obs.name) is Kind.CORDON:
                in_flight += 1
            # A malformed node counts as unhealthy: the breaker errs on the safe side.
            if unhealthy(obs, cfg) or phase in IN_FLIGHT or obs.malformed is not None:
                bad += 1
        total = len(self._population) - counted_removed + recent_removed
        self.breaker = breaker_step(self.breaker, bad, total, now, cfg)
        BREAKER_OPEN.set(1 if self.breaker.open else 0)
        UNHEALTHY.set(bad)
        self._note_drift()
        wake_at = now + MAX_IDLE
        if (b := breaker_wake(self.breaker, cfg)) is not None:
            wake_at = min(wake_at, b)
        fresh = self.fresh()
        removals_last_hour = recent(self.removals, now, HOUR)

        def order(o: NodeObs) -> tuple[float, str]:
            rec = self.records.get(o.name)
            since = rec.unhealthy_since if rec is not None else None
            return (since if since is not None else now, o.name)

        for obs in sorted(candidates, key=order):
            name = obs.name
            if name in self._busy:
                continue
            rec = self.records.get(name)
            if rec is None or (rec.uid != obs.uid and obs.malformed is None):
                rec = resume(obs, now, cfg)
            managed = name in self._population
            own = 1 if managed and rec.phase in IN_FLIGHT and not rec.parked else 0
            gates = Gates(
                fresh=fresh,
                breaker_open=self.breaker.open,
                in_flight=in_flight - own,
                removals_last_hour=removals_last_hour,
                lease_renewing=self.lease_renewing(name),
                lease_renewal_seen=self._lease_renewal_seen(name),
                lease_stale_at=self._lease_stale_at(name),
                managed=managed,
                startup_until=self._startup_until(obs),
            )
            d = decide(rec, obs, now, cfg, gates)
            self.decisions[name] = d
            self._note_flap(obs, d)
            self._note_block(obs, d)
            if d.record == Record(uid=obs.uid, phase_since=d.record.phase_since) and not d.action:
                # Healthy with nothing pending: nothing worth remembering.
                self.records.pop(name, None)
            else:
                self.records[name] = d.record
            if d.wake_at is not None:
                wake_at = min(wake_at, d.wake_at)
            if d.action is not None and tg is not None:
                if d.action.kind is Kind.CORDON:
                    in_flight += 1
                if d.action.kind is Kind.REMOVE:
                    removals_last_hour += 1
                self._start(tg, d)
        # Forget records of nodes that are gone.
        for name in [n for n in self.records if n not in self.nodes and n not in self._busy]:
            self._forget(name, now)
        self._export_phases()
        return wake_at

    def _note_drift(self) -> None:
        """Export the wall clock's steps since start; log each new step over a second."""
        drift = self.timeline.drift()
        CLOCK_DRIFT.set(drift)
        if abs(drift - self._drift_logged) > 1.0:
            log.warning(
                "the wall clock stepped by %+.1fs (%+.1fs since start); timers run on the "
                "monotonic clock and ignore it",
                drift - self._drift_logged,
                drift,
            )
            self._drift_logged = drift

    def _carries_ours(self, name: str) -> bool:
        obs = self.nodes.get(name)
        return obs is not None and any(k in obs.annotations for k in OUR_ANNOTATIONS)

    def _note_flap(self, obs: NodeObs, d: Decision) -> None:
        """Count and report a flap. The Event's message is constant so the recorder aggregates
        repeats into one Event whose `count` is the number of flaps."""
        if not d.flapped:
            return
        FLAPS.inc()
        if self._events is not None:
            cfg = self.cfg
            self._events.record(
                obs.name,
                obs.uid,
                "NodeRecoverFlapping",
                f"Node flapped (healthy again for less than the {cfg.healthy_delay:.0f}s "
                "healthy-delay, then unhealthy): grace restarted, remediation damped - no "
                f"cordon, drain or removal until it stays unhealthy for {cfg.grace:.0f}s.",
                "Warning",
            )

    def _note_block(self, obs: NodeObs, d: Decision) -> None:
        if d.blocked is None:
            if obs.name not in self._executor_held:
                self.blocked.pop(obs.name, None)  # the executor's holds end with its results
            return
        self._report_block(obs.name, obs.uid, d.record.phase.value, d.blocked)

    def _report_block(self, name: str, uid: str, phase: str, reason: str) -> None:
        """Log, count and Event a hold once per reason (not once per pass)."""
        if self.blocked.get(name) == reason:
            return  # already reported; the Event recorder aggregates repeats anyway
        self.blocked[name] = reason
        BLOCKED.labels(reason).inc()
        logs.decision(log, name, phase, "hold", reason)
        if self._events is not None:
            self._events.record(
                name,
                uid,
                "NodeRecoverBlocked",
                f"{phase}: next step held by '{reason}'; will proceed when it clears",
                "Warning",
            )

    def _start(self, tg: anyio.abc.TaskGroup, d: Decision) -> None:
        action = d.action
        assert action is not None
        name = action.node
        self._busy[name] = action.kind
        logs.decision(log, name, d.record.phase.value, action.kind.value, d.why)
        rec = d.record
        if action.persist is not None:
            self._phase_changed(name, action.uid, rec, action.persist)
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
        if result.outcome is Outcome.BLOCKED:
            self._report_block(name, action.uid, current.phase.value, result.detail)
            self._executor_held.add(name)
        elif name in self._executor_held:
            self._executor_held.discard(name)
            self.blocked.pop(name, None)
        if result.outcome is Outcome.GONE:
            self.records.pop(name, None)
        else:
            self.records[name] = new
            if new.phase is not current.phase:
                self._phase_changed(name, action.uid, current, new)
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

    def _phase_changed(self, name: str, uid: str, old: Record, new: Record) -> None:
        now = self.timeline.now()
        if old.phase is not Phase.HEALTHY and old.phase_since:
            PHASE_DURATION.labels(old.phase.value).observe(max(0.0, now - old.phase_since))
        ACTIONS.labels(f"phase-{new.phase.value.lower()}", "ok").inc()
        if self._events is not None:
            reason, etype = EVENT_REASONS[new.phase]
            self._events.record(name, uid, reason, _message(new, self.cfg), etype)

    def _forget(self, name: str, now: float) -> None:
        rec = self.records.pop(name)
        self.blocked.pop(name, None)
        self._executor_held.discard(name)
        if rec.phase is not Phase.HEALTHY and rec.phase_since:
            PHASE_DURATION.labels(rec.phase.value).observe(max(0.0, now - rec.phase_since))
        log.info("node %s is gone (last phase %s)", name, rec.phase.value)

    def _export_phases(self) -> None:
        counts = dict.fromkeys(Phase, 0)
        for name, rec in self.records.items():
            if name in self.nodes:
                counts[rec.phase] += 1
        counts[Phase.HEALTHY] += len(self.nodes) - sum(counts.values())
        for phase, n in counts.items():
            NODES.labels(phase.value).set(n)

    # -- health ------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.node_watcher.synced:
            return False, "initial node list not complete"
        return True, "synced"

    def liveness(self) -> tuple[bool, str]:
        if self.node_watcher.synced and self.node_watcher.stale():
            return False, "node watch stale"
        return True, "ok"


def _message(rec: Record, cfg: Config) -> str:
    match rec.phase:
        case Phase.SUSPECT:
            return (
                f"Node unhealthy; remediation starts after the {cfg.grace:.0f}s grace"
                " unless it recovers."
            )
        case Phase.CORDONED:
            return "Node cordoned by noderecover; draining next."
        case Phase.DRAINING:
            return (
                f"Draining: evicting pods; force-deleting leftovers after {cfg.drain_timeout:.0f}s."
            )
        case Phase.REMOVING:
            return f"Drained; removing the node ({cfg.removal}) next."
        case Phase.REMOVED:
            return f"Node removed ({cfg.removal}); its pods can start elsewhere."
        case Phase.HEALTHY:
            return "Node healthy again; noderecover undid its cordon/taint and stopped."
    return rec.phase.value  # pragma: no cover


async def _wait(event: anyio.Event, clock: Clock, seconds: float) -> None:
    """Wait until `event` is set or `seconds` passed on `clock` (fake clocks included)."""
    if event.is_set():
        return
    async with anyio.create_task_group() as tg:

        async def sleeper() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        async def waiter() -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(sleeper)
        tg.start_soon(waiter)
