"""Node pools and their limits.

A pool is the group of nodes one set of settings governs: with no NodeRecoveryPolicy, the
flags' one pool (""), the nodes matching --node-selector; with policies, one pool per valid
policy, its nodes as the view indexes them (`NodeView.pool`). Each pool has its own gates,
counted over its nodes only: a circuit breaker, --max-concurrent slots, removals per hour.
Beside them, the cluster-wide breaker (the flags' --max-unhealthy over every node in view)
is kept whatever the policies do (created, deleted, renamed).

`Pools` owns those limits: the per-pool settings, the breakers, the removal history (this
replica's, per pool; the earlier leaders' read from Events, which count against every pool;
the removal intents, so a removal counts once; whether the history is known at all), the
census of each pass, and the pool states that policy status reports. The controller asks it
once per pass (`step`) and the write path asks it right before each destructive write
(through `Controller.hold`: `breaker_open`, `slots_full`, `removals_known`,
`removal_budget_spent`). Records and the actions in progress are the controller's: they are
passed in, never kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from noderecover.base.clock import Timeline
from noderecover.base.metrics import BREAKER_OPEN, POLICY_NODES, UNHEALTHY
from noderecover.controller.policies import PolicySource
from noderecover.controller.view import NodeView
from noderecover.core.machine import IN_FLIGHT, Kind, Phase, Record, removal_intent, unhealthy
from noderecover.core.nodes import ANN_CORDONED, NodeObs, parse_time
from noderecover.core.policies import POLICY_CONFLICT, PoolState, needed_keys
from noderecover.core.reasons import Blocked
from noderecover.core.safety import HOUR, BreakerState, breaker_step, breaker_wake, prune, recent
from noderecover.core.settings import Config
from noderecover.kube.client import JSON, ApiError, KubeClient
from noderecover.kube.events import EVENTS_NAMESPACE, REMOVAL_INTENT

# The lines it logs are the reconciler's, as they always were (log filters keep working).
log = logging.getLogger("noderecover.controller.reconciler")

STATES_EVERY = 1.0  # seconds: policy status metrics are worked out at most this often by a pass


@dataclass(frozen=True, slots=True)
class Census:
    """What one pass counts for the circuit breaker and --max-concurrent."""

    unhealthy: int
    total: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class Share:
    """One node's share of the counts (`Pools.share`): of its pool's census (`_census`), of
    the cluster-wide census (`_cluster_census`) and of the phase gauges. The census is the sum
    of the shares, kept as nodes change (`Pools.recount`), never recounted in a pass."""

    pool: str | None = None  # the pool it counts in (None: none, or every pool below)
    bad: int = 0
    in_flight: int = 0
    removal: int = 0  # removed (or its removal counted), still in view: counted once
    every_bad: int = 0  # policy mode, malformed: unhealthy in every pool
    every_in_flight: int = 0  # policy mode, in remediation, no single policy governs it
    cluster_bad: int = 0
    cluster_twice: int = 0  # cluster-wide: a removal still in view
    phase: Phase | None = None  # its record's phase (the noderecover_nodes gauges)
    until: float = math.inf  # when it changes by itself (a removal leaves its window)

    def counts(self) -> tuple[object, ...]:
        return (
            self.pool,
            self.bad,
            self.in_flight,
            self.removal,
            self.every_bad,
            self.every_in_flight,
            self.cluster_bad,
            self.cluster_twice,
            self.phase,
        )


NO_SHARE = Share()


@dataclass(slots=True)
class PassLimits:
    """The pools' limits as one pass sees them: counted at its start (`Pools.step`), then
    each cordon the pass starts is added (`started`), so one pass cannot overrun them."""

    configs: Mapping[str, Config]  # pool -> its settings
    census: Mapping[str, Census]  # pool -> its census (the pass reads it, never writes)
    removals_last_hour: Mapping[str, int]  # pool -> removals counted in the last hour
    wake_at: float  # the earliest a count or breaker changes by itself (inf: none)
    # Pools whose gates (breaker, slots, removals) changed since the last pass: their nodes
    # are decided again (an incremental pass; a full pass decides every node anyway).
    changed: set[str] = dataclasses.field(default_factory=set)
    # Cordons this pass started, per pool (on top of the census's in-flight count).
    cordons: dict[str, int] = dataclasses.field(default_factory=dict)

    def slots(self, pool: str) -> int:
        """Remediations holding a slot of `pool`, with the cordons this pass started."""
        c = self.census.get(pool)
        return (c.in_flight if c is not None else 0) + self.cordons.get(pool, 0)

    @property
    def in_flight(self) -> dict[str, int]:
        """Pool -> remediations holding a slot (`slots` of every pool)."""
        return {p: self.slots(p) for p in self.census.keys() | self.cordons.keys()}

    def started(self, pool: str | None, kind: Kind) -> None:
        """The pass started an action of `kind` on a node of `pool` (a removal started is
        counted by `Pools.removals_started`, from the actions in progress)."""
        if kind is Kind.CORDON and pool is not None:
            self.cordons[pool] = self.cordons.get(pool, 0) + 1


@dataclass(frozen=True, slots=True)
class Removed:
    """Whose removal an intent is (`Pools.follow`): the node, its uid, and its labels as last
    seen in view, with the label keys they were parsed for (the only keys they can hold)."""

    node: str
    uid: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    keys: frozenset[str] = frozenset()


class Pools:
    def __init__(
        self,
        cfg: Config,
        view: NodeView,
        policies: PolicySource,
        kube: KubeClient,
        timeline: Timeline,
    ) -> None:
        self.cfg = cfg
        self._view = view
        self._policies = policies
        self._kube = kube
        self._timeline = timeline
        self.union = cfg  # the flags + what every policy reads (see `configure`)
        self._policy_cfgs: dict[str, Config] = {}
        self.breakers: dict[str, BreakerState] = {}
        # The cluster-wide breaker (the flags' --max-unhealthy over every managed node): kept
        # whatever the policies do (created, deleted, renamed), beside each pool's own.
        self.global_breaker = BreakerState()
        # The breaker to report: the cluster-wide one if open, else the flags' pool's, else
        # an open pool's.
        self.breaker = BreakerState()
        self.removals: tuple[float, ...] = ()
        self.pool_removals: dict[str, tuple[float, ...]] = {}  # policy -> its removals
        self._loaded_removals: tuple[float, ...] = ()  # earlier leaders' (Events)
        # Removal intents (NodeRecoverRemoving Event names, see core.machine.removal_intent):
        # earlier leaders' (read from Events; counted in `_loaded_removals`) and this
        # replica's (counted in `removals`), with when each was counted. A removal counts
        # once: an intent this replica counted is not loaded again, and one an earlier leader
        # recorded is not counted again when this replica finishes that removal.
        self._loaded_intents: dict[str, float] = {}
        # This replica's: intent -> (when counted, the pools counted in; () = every pool).
        self._own_intents: dict[str, tuple[float, tuple[str, ...]]] = {}
        # Whose removal each of those is: the node, its uid, and its labels as last seen in
        # view with the label keys they were parsed for (see `follow`).
        self._removed: dict[str, Removed] = {}
        # The removals of earlier leaders were read (Events) in this term: until then the
        # hourly budget is unknown and holds every removal.
        self.removals_known = True
        self._states: dict[str, PoolState] = {}  # policy status, as of `_stated`
        self._stated: tuple[Mapping[str, Record], Mapping[str, str]] | None = None
        self._stated_at = -math.inf
        # The census, kept as nodes change (see Share): node -> its share, and their sums.
        self._configs: dict[str, Config] = {"": cfg}
        self._flags: dict[str, Config] = {"": cfg}
        self._shares: dict[str, Share] = {}
        self._bad: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._in_view_removals: Counter[str] = Counter()
        self._every_bad = 0
        self._every_in_flight = 0
        self._cluster_bad = 0
        self._cluster_twice = 0
        self.phases: Counter[Phase] = Counter()  # records of nodes in view, per phase
        self.phases_version = 0  # moves with `phases`
        self.census: dict[str, Census] = {}  # pool -> its census as of the last pass
        self.removals_hour: dict[str, int] = {}  # pool -> removals counted in the last hour
        self._gates: dict[str, tuple[object, ...]] = {}  # pool -> its gates, last pass
        self._dirty: set[str] = set()  # pools whose census may have changed
        self._all_dirty = True  # every pool (and the cluster-wide count) may have changed
        self._cluster_dirty = True
        self._cluster_size = -1
        self._due: dict[str | None, float] = {}  # pool (None: cluster) -> when it changes
        self._prune_at = -math.inf
        self._next_due = -math.inf  # `due()` as of the last `limits`
        self._unhealthy_sum = 0
        self._expiring: dict[str, float] = {}  # node -> when its share changes by itself
        # Nodes whose removal was just counted (`count_intent`): their share turns from
        # unhealthy to a removal, and must be counted again before any breaker is moved, or
        # the node counts twice (its unhealthy share and the removal) until its action ends.
        self.counted: set[str] = set()
        # Set when every node's share may have changed (the removal history was read):
        # the controller's next pass is a full one.
        self.recount_all = False

    # -- settings ------------------------------------------------------------------------

    def configure(self) -> None:
        """The policies changed: each pool's settings, and the union of what they read."""
        cfg = self.cfg
        policies = self._policies.policies
        labels, conditions = needed_keys(policies.values())
        union = set(cfg.unhealthy_conditions)
        for p in policies.values():
            if p.cfg is not None:
                union |= p.cfg.unhealthy_conditions
        if policies:
            self.union = dataclasses.replace(
                cfg,
                extra_labels=labels,
                extra_conditions=conditions,
                unhealthy_conditions=frozenset(union),
            )
        else:
            self.union = cfg
        self._policy_cfgs = {
            n: dataclasses.replace(p.cfg, extra_labels=labels, extra_conditions=conditions)
            for n, p in policies.items()
            if p.cfg is not None and p.valid
        }
        self._configs = dict(self._policy_cfgs) if policies else {"": cfg}
        self._all_dirty = True
        self.follow(policies_changed=True)

    def min_grace(self) -> float:
        return min([self.cfg.grace] + [c.silent_grace for c in self._policy_cfgs.values()])

    def config_for(self, node: str) -> Config:
        """The settings a node is judged and acted on with now."""
        if not self._policies.active:
            return self.cfg
        pool = self._view.pool(node)
        return self._policy_cfgs.get(pool, self.union) if pool is not None else self.union

    def configs(self) -> dict[str, Config]:
        """Pool -> its settings."""
        if not self._policies.active:
            return {"": self.cfg}
        return dict(self._policy_cfgs)

    def pool_configs(self) -> Mapping[str, Config]:
        """`configs()` without the copy (kept by `configure`)."""
        if not self._policies.active:
            return self._flags
        return self._configs

    # -- the gates the write path asks (Controller.hold) ---------------------------------

    def breaker_open(self, pool: str) -> bool:
        """The cluster-wide breaker or `pool`'s is open."""
        return self.global_breaker.open or self.breakers.get(pool, BreakerState()).open

    def slots_full(
        self, node: str, pool: str, records: Mapping[str, Record], busy: Mapping[str, Kind]
    ) -> bool:
        """A cordon of `node` would exceed its pool's --max-concurrent."""
        pcfg = self.config_for(node)
        return self.in_flight_others(node, pool, records, busy) >= pcfg.max_concurrent

    def removal_budget_spent(
        self,
        node: str,
        pool: str,
        records: Mapping[str, Record],
        busy: Mapping[str, Kind],
        now: float,
    ) -> bool:
        """Removing `node` would exceed its pool's --max-removals-per-hour: the removals
        counted in the last hour, plus those in progress on its other nodes (and those whose
        pool is unknown: earlier leaders', nodes gone mid-removal), less this node's own
        removal if an earlier leader recorded its intent. Only once `removals_known`."""
        self.follow()  # the removals counted so far, each in every pool it is known in now
        pcfg = self.config_for(node)
        removing = self.removals_started(pool, records, busy, node)
        return (
            recent(self.removal_times(pool), now, HOUR)
            - self._mine(node, pool, records, now)
            + removing
            >= pcfg.max_removals_per_hour
        )

    def _counted(self, node: str, records: Mapping[str, Record]) -> str | None:
        """The intent of `node`'s removal in this episode, if it is counted already (its
        Event written by this replica, or read from an earlier leader's)."""
        rec = records.get(node)
        if rec is None:
            return None
        intent = removal_intent(node, rec)
        return intent if intent in self._own_intents or intent in self._loaded_intents else None

    def _mine(self, node: str, pool: str, records: Mapping[str, Record], now: float) -> int:
        """1 when `node`'s own removal is among the removals counted against `pool` in the
        last hour: it is not a removal standing in its own way (its intent is counted when
        written, before its first taint or Node DELETE)."""
        intent = self._counted(node, records)
        if intent is None:
            return 0
        if (loaded := self._loaded_intents.get(intent)) is not None:
            return 1 if now - loaded < HOUR else 0  # read from Events: counts in every pool
        at, pools = self._own_intents[intent]
        here = pool == "" or not pools or pool in pools
        return 1 if here and now - at < HOUR else 0

    def removals_started(
        self,
        pool: str,
        records: Mapping[str, Record],
        busy: Mapping[str, Kind],
        node: str | None = None,
    ) -> int:
        """Removals in `pool` in progress on nodes other than `node` and not counted yet (a
        removal counts from its intent, written before its first taint or Node DELETE; one
        in progress may be about to write it)."""
        return sum(
            1
            for n in busy  # only a removal in progress counts here
            if n != node
            # Gone from view mid-removal: its pool is unknown now, it counts in every pool.
            and (self._view.pool(n) == pool or n not in self._view.nodes)
            and busy.get(n) is Kind.REMOVE
            and self._counted(n, records) is None
        )

    def marked_cordoned(self, name: str) -> bool:
        obs = self._view.nodes.get(name)
        return obs is not None and obs.unschedulable and obs.annotations.get(ANN_CORDONED) == "true"

    def in_flight_others(
        self, node: str, pool: str, records: Mapping[str, Record], busy: Mapping[str, Kind]
    ) -> int:
        """Remediations holding a slot of `pool` on nodes other than `node`.

        A slot is held from the cordon until the node is removed or restored: a node held
        (parked) by a live kubelet, a budget or a gate keeps it."""
        nodes = self._view.nodes
        names = {
            n for n, rec in records.items() if n != node and rec.phase in IN_FLIGHT and n in nodes
        }
        names |= {n for n, k in busy.items() if n != node and k is Kind.CORDON}
        # Our cordon marker on the Node is a slot too: a cordon whose reply was lost left its
        # record behind (Suspect), not the node.
        names |= {n for n in self._view.watchlist if n != node and self.marked_cordoned(n)}
        # A remediation on a node no single policy governs now (policies changed under it)
        # holds a slot in every pool: whichever it joins, its limit already counts it.
        return sum(1 for n in names if self._view.pool(n) in (pool, None))

    def gate_counts(
        self,
        limits: PassLimits,
        name: str,
        pool: str | None,
        records: Mapping[str, Record],
        busy: Mapping[str, Kind],
        now: float,
    ) -> tuple[int, int]:
        """(`Gates.in_flight`, `Gates.removals_last_hour`) of node `name` in this pass: the
        other remediations holding a slot of its pool, and its pool's removals in the last
        hour with those in progress on its other nodes. (0, 0) for a node in no pool."""
        if pool is None:
            return 0, 0
        rec = records[name]
        # Its own slot (counted in the census): not "another" remediation.
        own = 1 if rec.phase in IN_FLIGHT or self.marked_cordoned(name) else 0
        in_flight = limits.slots(pool) - own
        removals = (
            limits.removals_last_hour.get(pool, 0)
            - self._mine(name, pool, records, now)  # its own, counted from its intent
            + self.removals_started(pool, records, busy, name)
        )
        return in_flight, removals

    # -- removal history -----------------------------------------------------------------

    def removal_times(self, pool: str) -> tuple[float, ...]:
        """The removals counted against `pool`'s budget and breaker."""
        if pool == "":
            return self.removals
        return self.pool_removals.get(pool, ()) + self._loaded_removals

    def count_removal(self, node: str, rec: Record, now: float, pools: tuple[str, ...]) -> None:
        """Count one removal against the budgets: the cluster's and `pools` (empty: its pool
        is unknown, it counts in every pool). Once per episode: when its intent is written
        (`count_intent`), or, without one (dry-run), when its taint went on or its Node is
        gone. Not when an earlier leader's intent for it was read: that already counts it."""
        self.count_intent(removal_intent(node, rec), now, pools, node)

    def count_intent(
        self, intent: str, now: float, pools: tuple[str, ...], node: str | None = None
    ) -> None:
        """Count the removal whose intent Event is `intent` (see `count_removal`); `node`:
        whose removal it is (its share is counted again by the next pass: `counted`).

        Counted again for the same episode (its taint, its DELETE, its node gone) it adds
        only the pools it was not counted in yet, at its first time: a node a policy change
        moved into another pool between its intent and its removal counts in both (found by
        the simulation: two removals in one pool's hour), and one whose pool became unknown
        counts in every pool. Never less, at worst a removal more in a pool."""
        if intent in self._loaded_intents:
            return
        if (own := self._own_intents.get(intent)) is not None:
            self._widen(intent, own, pools)
            return
        if node is not None:
            self.counted.add(node)
            self._removed[intent] = self._seen(node, Removed(node))
        self._own_intents[intent] = (now, pools)
        self._removals_changed()
        self.removals = (*self.removals, now)
        if not pools:
            self._loaded_removals = (*self._loaded_removals, now)
        for pool in pools:
            self.pool_removals[pool] = (*self.pool_removals.get(pool, ()), now)

    def _widen(
        self, intent: str, own: tuple[float, tuple[str, ...]], pools: tuple[str, ...]
    ) -> None:
        """Count an already counted removal in `pools` too (() : every pool), at its time."""
        at, counted = own
        if not counted:
            return  # counted in every pool already
        if not pools:
            self._own_intents[intent] = (at, ())
            self._loaded_removals = tuple(sorted((*self._loaded_removals, at)))
            for pool in counted:  # now in every pool through the loaded removals
                times = list(self.pool_removals.get(pool, ()))
                with contextlib.suppress(ValueError):
                    times.remove(at)
                self.pool_removals[pool] = tuple(times)
            self._removals_changed()
            return
        extra = tuple(p for p in pools if p not in counted)
        if not extra:
            return
        self._own_intents[intent] = (at, (*counted, *extra))
        for pool in extra:
            self.pool_removals[pool] = tuple(sorted((*self.pool_removals.get(pool, ()), at)))
        self._removals_changed()

    def follow(self, *, policies_changed: bool = False) -> None:
        """Count each removal this replica counted in the pools its node is known in now.

        A policy reaches the controller through its watch, some seconds after it is written:
        a node can be tainted or deleted while in a pool the controller does not know yet,
        and its removal counted in its old pool only (simulation seed 320422: two removals
        in a pool with budget 1). So a counted removal follows its node: a node still in view
        counts in the pool it is in now (asked when a node changes pool, and before every
        taint or Node DELETE); a node gone from view counts, when the policies change, in
        every new pool its last labels put it in and in every pool whose selector reads a
        label it was not parsed for (it may have been in it). More is held, never less."""
        if not self._removed:
            return
        view = self._view
        policies = self._policies.policies if self._policies.active else {}
        for intent, who in list(self._removed.items()):
            own = self._own_intents.get(intent)
            if own is None or not own[1]:
                continue  # forgotten, or counted in every pool already
            obs = view.nodes.get(who.node)
            if obs is not None and obs.uid == who.uid:
                if not view.keys_current:
                    continue  # parsed for other policies: followed once listed again
                self._removed[intent] = self._seen(who.node, who)
                pool = view.pool(who.node)
                if pool is not None:
                    self._widen(intent, own, (pool,))
                continue
            if not policies_changed or not policies:
                continue  # no policies: the flags' pool counts every removal
            maybe = tuple(
                sorted(
                    n
                    for n, p in policies.items()
                    if p.selector is not None
                    and (not p.selector.keys <= who.keys or p.selector.matches(who.labels))
                )
            )
            if maybe:
                self._widen(intent, self._own_intents[intent], maybe)

    def _seen(self, node: str, before: Removed) -> Removed:
        """`before`, with the node's labels as the view has them now (if it is in view)."""
        obs = self._view.nodes.get(node)
        if obs is None or (before.uid and obs.uid != before.uid):
            return before
        # Parsed for the keys of the last LIST, or (an event since the policies changed) for
        # those read now: it holds every key the two have in common.
        keys = self._view.parsed_keys[0] & self._view.keep_labels
        return Removed(node, obs.uid, dict(obs.labels), keys)

    def _removals_changed(self) -> None:
        """The removal history changed: every pool's counts and gates, again."""
        self._all_dirty = True
        self._cluster_dirty = True
        self._prune_at = -math.inf

    def prune(self, now: float) -> None:
        """Forget removals (and intents) older than every window that counts them."""
        if now < self._prune_at:
            return  # nothing is old enough yet
        keep = max(HOUR, self.cfg.breaker_window)
        before = (len(self.removals), len(self._own_intents), len(self._loaded_intents))
        self.removals = prune(self.removals, now, keep)
        self._loaded_removals = prune(self._loaded_removals, now, keep)
        self.pool_removals = {p: prune(t, now, keep) for p, t in self.pool_removals.items() if t}
        self._own_intents = {i: v for i, v in self._own_intents.items() if now - v[0] < keep}
        self._removed = {i: r for i, r in self._removed.items() if i in self._own_intents}
        self._loaded_intents = {i: t for i, t in self._loaded_intents.items() if now - t < keep}
        if before != (len(self.removals), len(self._own_intents), len(self._loaded_intents)):
            self._removals_changed()
            self.recount_all = True  # a removal counted from its intent may have left it
        stamps = [
            *self.removals,
            *self._loaded_removals,
            *(at for at, _ in self._own_intents.values()),
            *self._loaded_intents.values(),
        ]
        self._prune_at = min(stamps) + keep if stamps else math.inf

    async def load_removals(self) -> None:
        """Seed the removal history from the Events of earlier leaders.

        So a failover does not reset --max-removals-per-hour or the breaker window. A removal
        is recorded by its intent (NodeRecoverRemoving, written and answered before the first
        taint or Node DELETE: a leader that dies right after the DELETE still leaves it
        counted); NodeRecoverRemoved Events count the removals of versions that wrote no
        intent (one whose node has an intent Event is counted by that). Events expire after
        the API server's event TTL (1 h by default). A failed read holds every removal
        (`removals-unknown`) until a read succeeds.
        """
        try:
            bodies = [
                await self._kube.request(
                    "GET",
                    f"/api/v1/namespaces/{EVENTS_NAMESPACE}/events",
                    query=[("fieldSelector", f"reason={reason}"), ("limit", "500")],
                )
                for reason in (REMOVAL_INTENT, "NodeRecoverRemoved")
            ]
        except ApiError as exc:
            log.warning(
                "could not read earlier removals from Events: %s; no taint or Node DELETE "
                "until they are read (%s)",
                exc,
                Blocked.REMOVALS_UNKNOWN,
            )
            return
        now = self._timeline.now()
        drift = self._timeline.drift()  # Event times are wall times: put them on the timeline
        keep = max(HOUR, self.cfg.breaker_window)
        # The most removals the hourly budget allows in the kept window: a larger `count` is
        # garbage, and counting past it changes no decision (the budget is spent either way).
        most = self.cfg.max_removals_per_hour * math.ceil(keep / HOUR)

        def ours(body: JSON, reason: str) -> list[JSON]:
            items = body.get("items")
            return [
                ev
                for ev in (items if isinstance(items, list) else ())
                if isinstance(ev, dict)
                and ev.get("reportingComponent") == "noderecover"
                and ev.get("reason") == reason  # whatever the field selector did
            ]

        def when(ev: JSON, key: str) -> float | None:
            stamp = parse_time(ev.get(key))
            return stamp - drift if stamp is not None else None

        intents: dict[str, float] = {}
        intent_uids: set[str] = set()
        for ev in ours(bodies[0], REMOVAL_INTENT):
            meta, obj = ev.get("metadata"), ev.get("involvedObject")
            name = meta.get("name") if isinstance(meta, dict) else None
            at = when(ev, "firstTimestamp")
            if isinstance(obj, dict) and isinstance(obj.get("uid"), str):
                intent_uids.add(obj["uid"])
            if not isinstance(name, str) or at is None or now - at >= keep:
                continue
            if name not in self._own_intents:  # this replica counted it in an earlier term
                intents[name] = at
        loaded: Counter[float] = Counter(intents.values())
        for ev in ours(bodies[1], "NodeRecoverRemoved"):
            obj = ev.get("involvedObject")
            if isinstance(obj, dict) and obj.get("uid") in intent_uids:
                continue  # its intent counts it
            stamps = [when(ev, k) for k in ("firstTimestamp", "lastTimestamp")]
            # All at the latest timestamp: no removal of an aggregated Event happened after
            # it, so none leaves the window sooner than it really would (never undercounts).
            at = max((t for t in stamps if t is not None), default=None)
            if at is None or now - at >= keep:
                continue
            count = ev.get("count")
            # The Event itself is one removal; `count` (an int, not a bool) says how many.
            n = count if isinstance(count, int) and not isinstance(count, bool) else 1
            loaded[at] += min(max(n, 1), most)
        # A multiset union: Events this replica loaded in an earlier term are not counted twice.
        merged = Counter(self.removals) | loaded
        self.removals = tuple(sorted(merged.elements()))
        self.removals_known = True
        self._loaded_removals = tuple(sorted(loaded.elements()))
        self._loaded_intents = intents
        self._removals_changed()
        self.recount_all = True  # a node's removal may be counted from an intent now
        if self.removals:
            log.info(
                "%d node removals in the last hour/breaker window (from Events)", len(self.removals)
            )

    # -- one pass ------------------------------------------------------------------------

    def step(
        self,
        candidates: list[NodeObs],
        records: Mapping[str, Record],
        busy: Mapping[str, Kind],
        now: float,
    ) -> PassLimits:
        """A full count for a pass: every node's share again (`candidates`: the nodes a pass
        decides; the cluster-wide count takes the watchlist), then every pool's breaker and
        the cluster-wide one; return the limits the pass decides with."""
        self._shares = {}
        self._bad, self._in_flight, self._in_view_removals = Counter(), Counter(), Counter()
        self._every_bad = self._every_in_flight = 0
        self._cluster_bad = self._cluster_twice = 0
        self.phases = Counter()
        self.phases_version += 1
        names = {obs.name for obs in candidates}
        pools = self.pool_configs()
        shares = self._census(candidates, records, busy, now, pools)
        for name in names | self._view.watchlist | records.keys():
            self._apply(name, self._whole(name, shares.get(name, NO_SHARE), records, now))
        self._all_dirty = self._cluster_dirty = True
        return self.limits(records, busy, now)

    def recount(
        self,
        names: set[str],
        candidates: list[NodeObs],
        records: Mapping[str, Record],
        busy: Mapping[str, Kind],
        now: float,
    ) -> None:
        """The shares of `names` again (they changed: an event, a record, an action),
        `candidates` among them (the nodes a pass decides)."""
        shares = self._census(candidates, records, busy, now, self.pool_configs())
        for name in names:
            self._apply(name, self._whole(name, shares.get(name, NO_SHARE), records, now))

    def _whole(self, name: str, part: Share, records: Mapping[str, Record], now: float) -> Share:
        """A node's whole share: its pool's (`part`, from `_census`), the cluster-wide one (a
        node on the watchlist) and its record's phase."""
        nodes = self._view.nodes
        obs = nodes.get(name)
        if obs is None:
            return NO_SHARE
        rec = records.get(name)
        bad = twice = 0
        until = part.until
        if name in self._view.watchlist:
            window = self.cfg.breaker_window
            if self._is_removal(name, rec, records, now, window):
                twice = 1  # removed (or its removal counted), still in view: counted once
                until = min(until, self._removal_until(name, rec, records, now, window))
            elif obs.malformed is not None or unhealthy(obs, self.union):
                bad = 1
        phase = rec.phase if rec is not None else None
        if part is NO_SHARE and not bad and not twice and phase is None:
            return NO_SHARE
        return Share(
            part.pool,
            part.bad,
            part.in_flight,
            part.removal,
            part.every_bad,
            part.every_in_flight,
            bad,
            twice,
            phase,
            until,
        )

    def _apply(self, name: str, new: Share) -> None:
        old = self._shares.get(name, NO_SHARE)
        if new.until != math.inf:
            self._expiring[name] = new.until
        if new is NO_SHARE:
            self._shares.pop(name, None)
        else:
            self._shares[name] = new
        if old is new or old.counts() == new.counts():
            return
        for share, sign in ((old, -1), (new, 1)):
            if share.pool is not None:
                self._bad[share.pool] += sign * share.bad
                self._in_flight[share.pool] += sign * share.in_flight
                self._in_view_removals[share.pool] += sign * share.removal
                self._dirty.add(share.pool)
            if share.every_bad or share.every_in_flight:
                self._every_bad += sign * share.every_bad
                self._every_in_flight += sign * share.every_in_flight
                self._all_dirty = True
            if share.cluster_bad or share.cluster_twice:
                self._cluster_bad += sign * share.cluster_bad
                self._cluster_twice += sign * share.cluster_twice
                self._cluster_dirty = True
            if share.phase is not None:
                self.phases[share.phase] += sign
                self.phases_version += 1

    def take_expiring(self) -> list[tuple[str, float]]:
        """The nodes whose share changes by itself, and when (for the pass's timers)."""
        if not self._expiring:
            return []
        out, self._expiring = list(self._expiring.items()), {}
        return out

    def touch_pool(self, pool: str | None) -> None:
        """An action started or ended on a node of `pool` (None: its pool is unknown, it
        counts in every pool): its gates (removals in progress) are looked at again."""
        if pool is None:
            self._all_dirty = True
        else:
            self._dirty.add(pool)

    def pending(self) -> bool:
        """Some count changed since `limits` last looked."""
        return bool(self._dirty) or self._all_dirty or self._cluster_dirty

    def due(self, now: float) -> float:
        """When a count changes by itself next (a removal leaves a window, a breaker may
        close), or the earliest a node's share does (inf: never)."""
        return min(self._due.values(), default=math.inf)

    def share_until(self, name: str) -> float:
        return self._shares.get(name, NO_SHARE).until

    def limits(
        self, records: Mapping[str, Record], busy: Mapping[str, Kind], now: float
    ) -> PassLimits:
        """Bring the counts of the pools that changed (or whose time came) up to date, move
        their breakers (and the cluster-wide one), and return the limits a pass decides
        with; `PassLimits.changed`: the pools whose gates changed since the last pass."""
        cfg = self.cfg
        view = self._view
        if view.resized:
            self.follow()  # a node moved: a removal counted on it counts in its new pool
        pools = self.pool_configs()
        if (
            not self._all_dirty
            and not self._dirty
            and not self._cluster_dirty
            and not view.resized
            and self._cluster_size == len(view.nodes)
            and self._next_due > now
        ):
            # Nothing changed and nothing is due: the limits of the last pass (an idle pass).
            return PassLimits(pools, self.census, self.removals_hour, self._next_due)
        due = {k for k, t in self._due.items() if t <= now}
        for key in due:
            del self._due[key]
        resized = view.resized
        view.resized = set()
        if self._all_dirty:
            targets: Iterable[str] = list(pools)
            for key in [p for p in self.breakers if p not in pools]:
                del self.breakers[key]
            for key in [p for p in self.census if p not in pools]:
                self._unhealthy_sum -= self.census.pop(key).unhealthy
                self._gates.pop(key, None)
                self.removals_hour.pop(key, None)
                self._due.pop(key, None)
        else:
            targets = [
                p for p in self._dirty | resized | {k for k in due if k is not None} if p in pools
            ]
        self._all_dirty = False
        self._dirty = set()
        moved = False
        changed: set[str] = set()
        for key in targets:
            pcfg = pools[key]
            times = self.removal_times(key)
            removed = recent(times, now, pcfg.breaker_window)
            c = Census(
                self._bad[key] + self._every_bad + removed,
                len(view.members(key)) - self._in_view_removals[key] + removed,
                self._in_flight[key] + self._every_in_flight,
            )
            old = self.census.get(key)
            self._unhealthy_sum += c.unhealthy - (old.unhealthy if old is not None else 0)
            self.census[key] = c
            hour = recent(times, now, HOUR)
            self.removals_hour[key] = hour
            before = self.breakers.get(key, BreakerState())
            b = breaker_step(before, c.unhealthy, c.total, now, pcfg)
            if b != before or key not in self.breakers:
                self.breakers[key] = b
                moved = True
            wake = [t + w for t in times for w in (pcfg.breaker_window, HOUR) if t + w > now]
            if (bw := breaker_wake(b, pcfg)) is not None:
                wake.append(bw)
            if wake:
                self._due[key] = min(wake)
            else:
                self._due.pop(key, None)
            gates = (b.open, c.in_flight, hour, self.removals_started(key, records, busy))
            if self._gates.get(key) != gates:
                self._gates[key] = gates
                changed.add(key)
        if self._cluster_dirty or None in due or self._cluster_size != len(view.nodes):
            self._cluster_dirty = False
            self._cluster_size = len(view.nodes)
            everyone = self._cluster_census(now)
            before = self.global_breaker
            self.global_breaker = breaker_step(before, everyone.unhealthy, everyone.total, now, cfg)
            wake = [t + cfg.breaker_window for t in self.removals if t + cfg.breaker_window > now]
            if (bw := breaker_wake(self.global_breaker, cfg)) is not None:
                wake.append(bw)
            if wake:
                self._due[None] = min(wake)
            else:
                self._due.pop(None, None)
            if self.global_breaker != before:
                moved = True
                if self.global_breaker.open != before.open:
                    changed |= set(pools)  # every pool's breaker gate
        if moved:
            opened = [b for b in (self.global_breaker, *self.breakers.values()) if b.open]
            self.breaker = (
                self.global_breaker
                if self.global_breaker.open
                else (self.breakers.get("") or (opened[0] if opened else BreakerState()))
            )
            BREAKER_OPEN.set(1 if opened else 0)
        if targets:
            UNHEALTHY.set(self._unhealthy_sum)
        self._next_due = self.due(now)
        return PassLimits(
            configs=pools,
            census=self.census,
            removals_last_hour=self.removals_hour,
            wake_at=self._next_due,
            changed=changed,
        )

    def recount_check(
        self,
        candidates: list[NodeObs],
        records: Mapping[str, Record],
        busy: Mapping[str, Kind],
        now: float,
    ) -> tuple[dict[str, Census], Census]:
        """The census counted from scratch, as a full pass would (for tests: the kept counts
        must equal it): per pool, and cluster-wide."""
        pools = self.pool_configs()
        shares = self._census(candidates, records, busy, now, pools)
        view = self._view
        out = {}
        every_bad = sum(s.every_bad for s in shares.values())
        every_in_flight = sum(s.every_in_flight for s in shares.values())
        for key, pcfg in pools.items():
            mine = [s for s in shares.values() if s.pool == key]
            removed = recent(self.removal_times(key), now, pcfg.breaker_window)
            out[key] = Census(
                sum(s.bad for s in mine) + every_bad + removed,
                len(view.members(key)) - sum(s.removal for s in mine) + removed,
                sum(s.in_flight for s in mine) + every_in_flight,
            )
        window = self.cfg.breaker_window
        nodes = view.nodes
        bad = twice = 0
        for n in view.watchlist:
            o = nodes.get(n)
            if self._is_removal(n, records.get(n), records, now, window):
                twice += 1
            elif o is not None and (o.malformed is not None or unhealthy(o, self.union)):
                bad += 1
        removed = recent(self.removals, now, window)
        return out, Census(bad + removed, len(nodes) - twice + removed, 0)

    def kept_census(self, now: float) -> tuple[dict[str, Census], Census]:
        """The kept counts (see `recount_check`), as of the last pass."""
        return dict(self.census), self._cluster_census(now)

    def _is_removal(
        self,
        name: str,
        rec: Record | None,
        records: Mapping[str, Record],
        now: float,
        window: float,
    ) -> bool:
        """The node (in view) is among the removals the breaker counts in `window`: removed,
        or its removal counted from its intent (before its taint or DELETE)."""
        if rec is None:
            return False
        if rec.phase is Phase.REMOVED and now - rec.phase_since < window:
            return True
        intent = self._counted(name, records)
        if intent is None:
            return False
        loaded = self._loaded_intents.get(intent)
        at = loaded if loaded is not None else self._own_intents[intent][0]
        return now - at < window

    def _removal_until(
        self,
        name: str,
        rec: Record | None,
        records: Mapping[str, Record],
        now: float,
        window: float,
    ) -> float:
        """The earliest `_is_removal` may turn False by itself (a window passes, its intent is
        pruned); inf: never."""
        ends = []
        if rec is not None and rec.phase is Phase.REMOVED:
            ends.append(rec.phase_since + window)
        intent = self._counted(name, records)
        if intent is not None:
            loaded = self._loaded_intents.get(intent)
            at = loaded if loaded is not None else self._own_intents[intent][0]
            ends += [at + window, at + max(HOUR, self.cfg.breaker_window)]
        return min((t for t in ends if t > now), default=math.inf)

    def _cluster_census(self, now: float) -> Census:
        """The whole cluster, whatever the policies: every node in view, unhealthy by any
        policy's conditions (or malformed), plus the removals in the breaker window. What the
        cluster-wide breaker counts: a storm across many small pools opens it."""
        removed = recent(self.removals, now, self.cfg.breaker_window)
        return Census(
            self._cluster_bad + removed,
            len(self._view.nodes) - self._cluster_twice + removed,
            0,
        )

    def _census(
        self,
        candidates: list[NodeObs],
        records: Mapping[str, Record],
        busy: Mapping[str, Kind],
        now: float,
        pools: Mapping[str, Config],
    ) -> dict[str, Share]:
        """Each candidate's share of its pool's census: unhealthy and in-flight counts over
        its nodes (the recent removals are the pool's, added by `limits`)."""
        view = self._view
        shares: dict[str, Share] = {}
        policy_mode = self._policies.active
        for obs in candidates:
            if policy_mode and obs.malformed is not None:
                # Its labels are unreadable: it may be in any pool. The breaker errs on the
                # safe side: unhealthy in every one.
                shares[obs.name] = Share(every_bad=1)
                continue
            found = view.pool(obs.name)
            if found is None and policy_mode:
                rec = records.get(obs.name)
                if (
                    (rec is not None and rec.phase in IN_FLIGHT)
                    or obs.name in busy
                    or self.marked_cordoned(obs.name)
                ):
                    # In remediation, but no single policy governs it now: it holds a slot
                    # in every pool (whichever it joins counts it already).
                    shares[obs.name] = Share(every_in_flight=1)
                continue
            if found is None or found not in pools:
                continue
            pool = found
            pcfg = pools[pool]
            rec = records.get(obs.name)
            phase = rec.phase if rec is not None else Phase.HEALTHY
            if self._is_removal(obs.name, rec, records, now, pcfg.breaker_window):
                # A deleted node until its DELETED event arrives, an out-of-service node, or
                # one whose removal is counted from its intent: counted once, as a removal.
                until = self._removal_until(obs.name, rec, records, now, pcfg.breaker_window)
                shares[obs.name] = Share(pool, removal=1, until=until)
                continue
            # A slot is held from the cordon until the node is removed or restored (parked
            # nodes included: held by a live kubelet, a budget or a gate).
            in_flight = 0
            if (
                phase in IN_FLIGHT
                or busy.get(obs.name) is Kind.CORDON
                or self.marked_cordoned(obs.name)
            ):
                in_flight = 1
            # A malformed node counts as unhealthy: the breaker errs on the safe side.
            bad = unhealthy(obs, pcfg) or phase in IN_FLIGHT or obs.malformed is not None
            shares[obs.name] = Share(pool, bad=int(bad), in_flight=in_flight)
        return shares

    # -- policy status -------------------------------------------------------------------

    def report(
        self,
        census: Mapping[str, Census],
        records: Mapping[str, Record],
        blocked: Mapping[str, str],
        changed: bool = True,
    ) -> None:
        """The pass is over: what each policy's status and metrics report (policy mode);
        nothing without policies. Worked out when asked (`states`), and by a pass at most
        every STATES_EVERY seconds (the metrics): not in every pass (it is O(records)).
        `changed`: the pass changed something (or may have)."""
        if not self._policies.active:
            self._stated = None
            self._states = {}
            return
        if changed:
            self._stated = (records, blocked)
        elif self._stated is None:
            return
        now = self._timeline.now()
        if now - self._stated_at >= STATES_EVERY:
            self._stated_at = now
            self._pool_states(self.census, records, blocked)

    @property
    def states(self) -> dict[str, PoolState]:
        """Policy status as of the last pass."""
        if self._stated is not None:
            self._pool_states(self.census, *self._stated)
        return self._states

    @states.setter
    def states(self, value: dict[str, PoolState]) -> None:
        self._states = value
        self._stated = None

    def _pool_states(
        self,
        census: Mapping[str, Census],
        records: Mapping[str, Record],
        blocked: Mapping[str, str],
    ) -> None:
        """What each policy's status and metrics report (policy mode)."""
        self._stated = None
        view = self._view
        remediating: dict[str, list[tuple[str, str, str]]] = {}
        for name, rec in records.items():
            pool = view.pool(name)
            if pool is not None and rec.phase is not Phase.HEALTHY:
                why = blocked.get(name, "")
                remediating.setdefault(pool, []).append((name, rec.phase.value, why))
        conflicts: dict[str, list[str]] = {}
        others: dict[str, set[str]] = {}
        for node, gov in view.held.items():
            if gov.held != POLICY_CONFLICT:
                continue
            for p in gov.matched:
                conflicts.setdefault(p, []).append(node)
                others.setdefault(p, set()).update(q for q in gov.matched if q != p)
        states: dict[str, PoolState] = {}
        for p in self._policies.policies:
            c = census.get(p)
            s = PoolState(
                matched=len(view.members(p)) + len(conflicts.get(p, ())),
                unhealthy=c.unhealthy if c is not None else 0,
                breaker_open=p in self.breakers and self.breakers[p].open,
                remediating=tuple(sorted(remediating.get(p, ()))),
                conflicts=tuple(sorted(conflicts.get(p, ()))),
                conflicting_policies=tuple(sorted(others.get(p, ()))),
            )
            states[p] = s
            POLICY_NODES.labels(p, "matched").set(s.matched)
            POLICY_NODES.labels(p, "unhealthy").set(s.unhealthy)
            POLICY_NODES.labels(p, "remediating").set(len(s.remediating))
            POLICY_NODES.labels(p, "conflict").set(len(s.conflicts))
        self._states = states
