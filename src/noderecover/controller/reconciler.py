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
- A pass decides only the nodes that changed, whose time came or whose pool's gates moved
  (controller.agenda: a dirty set and a timer heap; issue 24); the first pass of a term, after
  a re-list or a policy change, or once a cluster-wide fact changed, decides every node. The
  gates at the write are asked as before.
- Time: records, timers and annotations use the Timeline (monotonic, on the wall scale): a
  wall-clock step cannot shorten a grace. Heartbeat Lease ages use the monotonic clock.
  Times other parties wrote (a pause's end, Event times, creationTimestamp) are compared
  with the current wall clock (put on the timeline with `Timeline.drift()`).
- What noderecover did it undoes: a node that leaves --node-selector keeps being visited
  while it has a record or our annotations; it is held (`excluded-selector`) and restored
  once healthy.
- Policies (controller.policies, core.policies): with none, the flags are the one pool ("")
  and everything above is unchanged. With some, each policy is a pool with its own settings
  and its own gates (circuit breaker, --max-concurrent, removals per hour, counted over its
  nodes only; removals earlier leaders made, read from Events, count against every pool).
  The pools and their limits live in controller.pools (`Pools`); the controller passes its
  records and actions in progress to them, and asks them in each pass and in `hold`.
  A node no valid policy alone governs is held (`no-policy`, `policy-conflict`,
  `policy-invalid`) and judged unhealthy by any policy's conditions, so what we did is only
  undone once it is healthy by all of them. No decision at all is made until the policies
  are known and the nodes were parsed with what they read (a restore judged without a
  policy's conditions could uncordon a node that is still sick).
- Pauses (a policy's, the cluster-wide one) are a controller gate like the breaker: asked in
  every pass and again by the executor before each destructive step (`hold`), so a drain in
  flight stops at its next pod. Restores go on while paused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.abc

from noderecover.base import logs
from noderecover.base.clock import Clock, Timeline, wait_event
from noderecover.base.metrics import RECOVERY_DURATION
from noderecover.controller.agenda import Agenda
from noderecover.controller.agents import AgentLeases
from noderecover.controller.executor import BLOCKED_RETRY, Executor
from noderecover.controller.heartbeats import Heartbeats
from noderecover.controller.policies import PolicySource
from noderecover.controller.pools import Pools
from noderecover.controller.reporting import HOLD_EVENT_AGAIN, EventSink, Reporter
from noderecover.controller.snapshot import Snapshot, take
from noderecover.controller.view import NodeView
from noderecover.controller.writes import Step
from noderecover.core.agent import AgentGate
from noderecover.core.machine import (
    EXCLUDED_SELECTOR,
    MAX_REMOVALS,
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
from noderecover.core.nodes import ANN_PHASE, NodeObs, format_time
from noderecover.core.policies import (
    CLUSTER_PAUSED,
    NO_POLICY,
    PAUSE_UNKNOWN,
    PAUSED,
    POLICIES_UNKNOWN,
    POLICY_CONFLICT,
    POLICY_INVALID,
    Governance,
    PolicyIndex,
    govern,
)
from noderecover.core.proof import fence_requested
from noderecover.core.reasons import Blocked
from noderecover.core.settings import Config
from noderecover.kube.client import ApiError, KubeClient, NotFound, NotLeader
from noderecover.kube.events import REMOVAL_INTENT
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.reconciler")

MAX_IDLE = 1.0  # re-evaluate at least this often (freshness, breaker cooldown)
GONE_RECHECK = 10.0  # a node a step found gone, still in view: looked at again this much later
REMOVALS_RETRY = 10.0  # the removal history could not be read: read it again this often
NOT_LEADER_PAUSE = 0.1  # the act-gate is closed while leading: look again this much later
DRIFT_STEP = 0.5  # seconds: a wall-clock step this large makes the next pass a full one
SILENT_RETRY_MIN = 1.0  # a held drain of a silent node is retried no sooner than this
# Past a Lease's stale time (timeline) by this much, every read of it says stale: the timeline
# and the monotonic clock it is judged on agree to ~0.2 us at the wall scale.
STALE_SLACK = 0.01
# The drain's holds of a live kubelet (controller.drainer): its pods leave by its hand only.
LIVE_KUBELET_HOLDS = frozenset({Blocked.PODS_TERMINATING, Blocked.PDB_BLOCKED})


class Gate(Protocol):
    def may_act(self) -> bool: ...


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
        namespace: str | None = None,
    ) -> None:
        """`namespace`: where the cluster-wide pause ConfigMap lives (None: no cluster pause)."""
        self.cfg = cfg
        self._kube = kube
        self._clock = clock
        self._gate = gate or AlwaysLeader()
        self._rng = rng or random.Random()
        self.timeline = Timeline(clock)
        self.view = NodeView(kube, clock, self.timeline, cfg, self._view_changed, rng=self._rng)
        self.heartbeats = Heartbeats(
            kube,
            clock,
            self.timeline,
            cfg,
            grace_for=lambda node: self.config_for(node).silent_grace,
            min_grace=self._min_grace,
            rng=self._rng,
        )
        # The node agents' Leases in noderecover's namespace (controller/agents.py); None
        # when that namespace is not known or --no-watch-agents (no agent is relied on then).
        self.agents: AgentLeases | None = (
            AgentLeases(kube, clock, self.timeline, cfg, namespace, rng=self._rng)
            if namespace is not None and cfg.watch_agents
            else None
        )
        self.reporter = Reporter(
            cfg, self.timeline, events, config_for=self.config_for, explain=self._explain
        )
        self.executor = Executor(
            kube,
            clock,
            cfg,
            self._gate.may_act,
            rng=self._rng,
            guard=self,
            now=self.timeline.now,
            config_for=self.config_for,
            namespace=namespace,
        )
        self.policies = PolicySource(
            kube,
            clock,
            self.timeline,
            cfg,
            self._policies_changed,
            namespace=namespace,
            rng=self._rng,
        )
        # The node pools and their limits: per-pool settings, the breakers (per pool and
        # cluster-wide), the removal history and its intents, the census, policy status.
        self.pools = Pools(cfg, self.view, self.policies, kube, self.timeline)
        self.records: dict[str, Record] = {}
        # name -> uid of a node a step found gone or replaced while the view still shows it:
        # not acted on again until the view shows another uid or drops it.
        # Only for GONE_RECHECK: a 404 is an answer, not proof (a proxy, a burst), and a node
        # that is still there must not be left with what we put on it.
        self._gone: dict[str, tuple[str, float]] = {}
        self.leading = False
        self.decisions: dict[str, Decision] = {}  # the last decision per node
        self._busy: dict[str, Kind] = {}  # node -> the action in progress
        self._idle = anyio.Event()
        self._wake = anyio.Event()
        # Which nodes the next pass decides (issue 24: a pass costs what changed).
        self._agenda = Agenda()
        self._last_facts: tuple[object, ...] = ()
        self._drift = 0.0
        self._paused: tuple[str, ...] = ()  # policies with a pause (see `_facts`)
        self._policy_index: PolicyIndex | None = None  # the policies, by their selectors
        self.heartbeats.on_change = self._lease_changed
        if self.agents is not None:
            self.agents.on_change = self._agent_changed

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
        if name is None:
            self._agenda.full = True  # a re-list, or the policies changed: every node
        else:
            self._agenda.touch(name)
        self._wake.set()

    def _lease_changed(self, name: str) -> None:
        if name in self.view.watchlist or name in self.records:
            self._agenda.touch(name)

    def _agent_changed(self, name: str) -> None:
        """Its agent's Lease appeared, moved or went: the node is decided again (its gate)."""
        if name in self.view.watchlist or name in self.records:
            self._agenda.touch(name)
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
        self.policies.started = True  # before any node LIST: no pass runs on the flags alone
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.policies.run)
            tg.start_soon(self.view.watcher.run)
            if self.agents is not None:
                tg.start_soon(self.agents.watcher.run)
            if self.cfg.watch_node_leases:
                tg.start_soon(self.heartbeats.poll, self.view.silent, self._wake.set)

    # -- the executor's guard (executor.Guard) -------------------------------------------

    def hold(self, node: str, step: Step) -> str | None:
        """Every controller gate for a destructive `step` on `node`, asked by the write path
        right before the write (leadership is the write path's own check): watch freshness,
        policies known, pauses (unknown ones included), exclusion, the breakers (cluster-wide
        and the node's pool), and for a cordon the pool's concurrency slots, for a taint or a
        Node DELETE the pool's removal budget (counting removals begun, and those whose pool is
        unknown: earlier leaders', nodes gone mid-removal) and whether it is known at all."""
        if not self.fresh():
            return Blocked.WATCH_STALE
        if (why := self.policy_hold(node)) is not None:
            return why
        pool = self.view.pool(node)
        if pool is None or node not in self.view.population:
            return EXCLUDED_SELECTOR
        pools = self.pools
        if pools.breaker_open(pool):
            return Blocked.CIRCUIT_BREAKER
        if step is Step.CORDON and pools.slots_full(node, pool, self.records, self._busy):
            return Blocked.MAX_CONCURRENT
        if step in (Step.TAINT, Step.DELETE_NODE):
            if not pools.removals_known:
                # Earlier leaders' removals could not be read: the budget is unknown.
                return Blocked.REMOVALS_UNKNOWN
            now = self.timeline.now()
            if pools.removal_budget_spent(node, pool, self.records, self._busy, now):
                return MAX_REMOVALS
        return None

    # -- policies and pauses -------------------------------------------------------------

    def _policies_changed(self) -> None:
        """The policies or the cluster pause changed: what each node is judged by, again."""
        policies = self.policies.policies
        before = (self.view.policy_mode, self.pools.union.unhealthy_conditions)
        self.pools.configure()
        union = self.pools.union
        index = PolicyIndex(policies)
        # Which policies' nodes to classify again: all when the mode or the conditions that
        # put a node on the watchlist changed, else those of the policies that changed.
        same = before == (bool(policies), union.unhealthy_conditions)
        changed = index.changed_since(self._policy_index) if same else None
        self._policy_index = index
        view = self.view
        keys = (union.relevant_labels, union.kept_conditions)
        if keys != (view.keep_labels, view.keep_conditions):
            view.keep_labels, view.keep_conditions = keys
            if view.watcher.synced:
                log.info("policies read other labels or conditions: re-listing nodes")
                view.watcher.request_relist()
            else:
                view.parsed_keys = keys  # the first LIST has not happened: it parses so
        view.unhealthy_cfg = union
        view.policy_mode = bool(policies)
        view.classify = self._classify if policies else view.flag_classify
        self._paused = tuple(sorted(n for n, p in policies.items() if p.pause is not None))
        self._agenda.full = True
        if changed is None or not view.keys_current:
            view.reindex()
        else:
            view.reindex(changed, index.selecting(changed))
        self._wake.set()

    def _classify(self, obs: NodeObs) -> Governance:
        if obs.malformed is not None:
            return Governance(None)  # counted in every pool by the census instead
        index = self._policy_index  # built by `_policies_changed`, before any reindex
        if index is None:
            return govern(self.policies.policies, obs.labels)
        return index.govern(obs.labels)

    def _explain(self, node: str, reason: str) -> str | None:
        """What a policy hold's Event says besides its reason."""
        cluster = self.policies.cluster_pause
        if reason in (PAUSE_UNKNOWN, POLICIES_UNKNOWN):
            return self.policies.unknown_why()
        if reason == CLUSTER_PAUSED and cluster is not None:
            return f"cluster-wide pause until {format_time(cluster.until)}: {cluster.reason or '-'}"
        pool = self.view.pool(node)
        p = self.policies.policies.get(pool) if pool else None
        if reason == PAUSED and p is not None and p.pause is not None:
            until = format_time(p.pause.until)
            return f"policy {pool} paused until {until}: {p.pause.reason or '-'}"
        gov = self.view.held.get(node)
        if reason in (POLICY_CONFLICT, POLICY_INVALID) and gov is not None:
            return gov.why
        return None

    def _min_grace(self) -> float:
        return self.pools.min_grace()  # Heartbeats is made before Pools: asked later

    def config_for(self, node: str) -> Config:
        """The settings a node is judged and acted on with now (`Pools.config_for`)."""
        return self.pools.config_for(node)

    @property
    def policies_ready(self) -> bool:
        """The policies were read once (or found absent) and the nodes parsed for them."""
        return self.policies.listed and self.view.keys_current

    def policy_hold(self, node: str) -> str | None:
        """The policy gate: unknown policies, no or two policies, a pause; or None."""
        if not self.policies.known or not self.view.keys_current:
            return POLICIES_UNKNOWN
        if not self.policies.active:
            return self.policies.pause_hold(None)  # the cluster pause, known or not
        pool = self.view.pool(node)
        if pool is None:
            gov = self.view.held.get(node)
            return gov.held if gov is not None and gov.held is not None else NO_POLICY
        return self.policies.pause_hold(pool)

    async def renewing_now(self, node: str) -> bool:
        return await self.heartbeats.renewing_now(node)

    async def self_fenced_now(self, node: str, uid: str) -> bool:
        """Fresh GETs of the node's agent Lease and heartbeat Lease, then the self-fence
        proof on them (core.agent): False when either cannot be read or anything moved."""
        agents = self.agents
        if agents is None:
            return False
        if not await agents.fetch(node) or not await self.heartbeats.fetch(node):
            return False
        gate = self.agent_gate(node, uid)
        return gate is not None and gate.proven(self.timeline.now())

    def fence_requested(self, node: str, uid: str) -> None:
        if self.agents is not None:
            self.agents.mark_seen(node, uid, True, written=True)

    def agent_gate(self, node: str, uid: str) -> AgentGate | None:
        """The node's agent as `decide` sees it (None: no agent Lease, or agents not watched)."""
        if self.agents is None:
            return None
        seen = self.heartbeats.leases.get(node)
        hb = seen.changed_at if seen is not None and seen.changed_at != float("-inf") else None
        return self.agents.gate(node, uid, hb, seen.renew if seen is not None else "")

    async def record_removal(self, node: str, uid: str, intent: str, message: str) -> None:
        """Write the removal's intent, then count it: from here the removal counts against
        the budgets, whatever happens to its taint or DELETE (a reply lost, then the node
        restored: it still counts)."""
        await self.executor.writes.record(intent, node, uid, REMOVAL_INTENT, message)
        pool = self.view.pool(node)
        pools = (pool,) if pool is not None else ()
        self.pools.count_intent(intent, self.timeline.now(), pools, node)

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
        self._agenda.touch(name)
        self.pools.touch_pool(self.view.pool(name) if name in self.nodes else None)
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
            self._agenda.full = True
            self.reporter.reset()
            self.pools.removals_known = False
            await self.pools.load_removals()
            log.info("leading: %d nodes in view", len(self.nodes))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.executor.volumes.run)
                if not self.pools.removals_known:
                    tg.start_soon(self._reload_removals)
                # Policy status: its own task, never in an action's path.
                tg.start_soon(
                    self.policies.status_loop,
                    lambda: self.pools.states,
                    self.executor.writes.writer,
                )
                while True:
                    self._wake = anyio.Event()
                    if not self.executor.writes.may_write():
                        # The act-gate closed (the Lease is about to pass, or its renewal is
                        # late): every write would be refused. No pass starts actions that
                        # fail at once and wake the loop again (a busy loop); the elector
                        # either renews (the gate opens) or cancels this task.
                        await self._clock.sleep(NOT_LEADER_PAUSE)
                        continue
                    wake_at = self.reconcile(tg)
                    delay = min(MAX_IDLE, max(0.0, wake_at - self.timeline.now()))
                    await wait_event(self._wake, self._clock, delay)
        finally:
            self.leading = False
            self._busy.clear()

    async def _reload_removals(self) -> None:
        """The removal history could not be read on taking the lead: read it again until it
        is (unknown holds: no taint or Node DELETE meanwhile, `removals-unknown`)."""
        while not self.pools.removals_known:
            await self._clock.sleep(REMOVALS_RETRY * (0.8 + 0.4 * self._rng.random()))
            await self.pools.load_removals()
        self._wake.set()

    def reconcile(self, tg: anyio.abc.TaskGroup) -> float:
        """Decide for every node needing attention; start the actions in `tg`.

        Returns the next wake time (timeline).
        """
        return self._pass(lambda d: self._start(tg, d))

    def decide_all(self) -> float:
        """One pass that decides (and records) but starts nothing: previews and benchmarks."""
        return self._pass(None, full=True)

    def decide_changed(self) -> float:
        """`decide_all` as the leader's loop does it: only what changed (benchmarks, tests)."""
        return self._pass(None)

    async def preview(self) -> Snapshot:
        """What this controller would decide now, from one LIST (read-only; `plan`).

        No history is available to a preview: heartbeat Leases (and the agents' Leases: an
        agent renewed within its window is taken as steady) are judged by their renewTime
        against the local clock, and an unhealthy node without our annotations
        is taken as Suspect since its Ready transition.
        """
        await self.view.watcher.list_once()
        await self.load_policies()
        if not self.view.keys_current:
            await self.view.watcher.list_once()  # parsed again for what the policies read
        if self.cfg.watch_node_leases:
            await self.refresh_leases()
            self.heartbeats.judge_by_renew_time()
        if self.agents is not None:
            try:
                await self.agents.watcher.list_once()
            except ApiError as exc:  # plan still answers: without agents (it says so)
                log.warning("could not list the node agents' Leases: %s", exc)
            self.agents.judge_by_renew_time()
        now = self.timeline.now()
        for obs in self.nodes.values():
            ready = obs.ready
            if unhealthy(obs, self.config_for(obs.name)) and ANN_PHASE not in obs.annotations:
                since = ready.since if ready is not None and ready.since is not None else now
                self.records[obs.name] = Record(
                    uid=obs.uid,
                    phase=Phase.SUSPECT,
                    phase_since=since,
                    unhealthy_since=since,
                    transition=ready.since if ready is not None else None,
                )
        self.decide_all()
        for name in sorted(
            {
                ncfg.fence.secret_name
                for ncfg in map(self.config_for, self.nodes)
                if ncfg.fencing and ncfg.fence.secret_name
            }
        ):
            await self.executor.look_at_secret(name)  # what `plan` says of the proof
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """What this controller knows and decided now, frozen: all `plan` and the plugin read."""
        return take(
            self.timeline.now(),
            self.cfg,
            self.view,
            self.policies,
            self.pools,
            self.decisions,
            self.config_for,
            self.executor.secrets,
            self.agent_gate,
        )

    async def load_policies(self) -> None:
        """Read the policies and the cluster pause once (a read-only preview: `plan`)."""
        self.policies.started = True
        self.policies.preview = True
        try:
            await self.policies.watcher.list_once()
        except NotFound:
            self.policies.absent = True
            self._policies_changed()
        await self.policies.read_pause()

    def _pass(self, start: Callable[[Decision], None] | None, full: bool = False) -> float:
        """One pass. Incremental (issue 24): only the nodes that changed, whose time came or
        whose pool's gates changed are decided (controller.agenda); `full`, or when a
        cluster-wide fact changed: every node that can need a decision."""
        now = self.timeline.now()
        self.pools.prune(now)
        view = self.view
        agenda = self._agenda
        if not self.policies_ready:
            # Which policy governs each node, or what it reads, is not known yet: no decision
            # at all (not even a restore judged without a policy's conditions).
            agenda.full = True
            return now + MAX_IDLE
        agenda.due(now)
        facts = self._facts()
        if facts != self._last_facts:
            self._last_facts = facts
            self.policies.update_metrics()
            agenda.full = True
        if self.pools.recount_all:
            self.pools.recount_all = False
            agenda.full = True
        full = full or agenda.full
        agenda.full = False
        # Only nodes that can need a decision are visited (see NodeView): a pass costs
        # O(unhealthy + remediated), not O(cluster). A node outside --node-selector (or that
        # no single valid policy governs) is visited only while something of ours is on it:
        # a refused node (two policies, an invalid one) is not even annotated; the policies'
        # status, metrics and `plan` report it.
        for n, (uid, until) in list(self._gone.items()):
            seen = self.nodes.get(n)
            if seen is None or seen.uid != uid or now >= until:
                # The view caught up (gone, or another node by that name), or it is time to
                # look again.
                del self._gone[n]
                agenda.touch(n)
        # A node whose removal was counted since the last pass (its intent, mid-action): its
        # share turns from unhealthy to a removal, counted again before any breaker moves.
        counted, self.pools.counted = self.pools.counted, set()
        if full:
            agenda.take()
            agenda.reset()
            dirty = view.watchlist | self.records.keys() | self._busy.keys()
        else:
            dirty = agenda.take() | counted
        names = {
            n
            for n in dirty
            if (n in view.watchlist or n in self.records or n in self._busy)
            and (n in view.population or n in self.records or view.carries_ours(n))
            and n not in self._gone
            and n in self.nodes
        }
        for n in dirty:
            agenda.place(n, n in names, view.pool(n))
        if self.policies.active and dirty:
            # An unhealthy node no policy governs (none, two, an invalid one) is not acted on,
            # not even annotated, but it is never silent: its hold is reported.
            for n in sorted((dirty & view.watchlist) - names - self._gone.keys()):
                if (o := self.nodes.get(n)) is not None and unhealthy(o, self.pools.union):
                    held = self.policy_hold(n) or NO_POLICY
                    d = Decision(Record(uid=o.uid), blocked=held, why=f"held: {held}")
                    self.decisions[n] = d
                    self.reporter.decision(n, o.uid, d)
                    agenda.at(n, now + HOLD_EVENT_AGAIN)  # its Event again if it lasts
        candidates = [self.nodes[n] for n in names]
        self._resume(candidates, now)
        if full:
            limits = self.pools.step(candidates, self.records, self._busy, now)
        else:
            if dirty:
                self.pools.recount(dirty, candidates, self.records, self._busy, now)
            limits = self.pools.limits(self.records, self._busy, now)
            # A pool whose gates changed: its nodes are decided again.
            more = {n for p in limits.changed for n in agenda.members.get(p, ())} - names
            if more:
                extra = [self.nodes[n] for n in more if n in self.nodes]
                self._resume(extra, now)
                candidates += extra
        configs = limits.configs
        self.reporter.drift()
        wake_at = min(now + MAX_IDLE, limits.wake_at)
        fresh = self.fresh()
        heartbeats = self.heartbeats
        policy_mode = self.policies.active

        def order(o: NodeObs) -> tuple[float, str]:
            rec = self.records.get(o.name)
            since = rec.unhealthy_since if rec is not None else None
            return (since if since is not None else now, o.name)

        decided: set[str] = set()
        for obs in sorted(candidates, key=order):
            name = obs.name
            if name in self._busy:
                continue
            decided.add(name)
            rec = self.records[name]
            pool = view.pool(name)
            force = rec.phase is not Phase.SUSPECT
            ncfg = configs[pool] if pool is not None and pool in configs else self.pools.union
            # Policies: a node none governs is "managed" but held by the policy gate (its
            # reason says why); the flags: a node outside --node-selector is not managed.
            managed = pool is not None or policy_mode
            # The other remediations holding a slot of its pool, its pool's removals.
            pool_in_flight, pool_removals = self.pools.gate_counts(
                limits, name, pool, self.records, self._busy, now
            )
            if self.agents is not None:
                self.agents.mark_seen(name, obs.uid, fence_requested(obs))
            gates = Gates(
                fresh=fresh,
                breaker_open=pool is not None and self.pools.breaker_open(pool),
                in_flight=pool_in_flight,
                removals_last_hour=pool_removals,
                # A Suspect node's next step is the cordon (grace scale); any later one may
                # force (the longer of the grace and the Lease's own duration).
                lease_renewing=heartbeats.renewing(name, force=force),
                lease_renewal_seen=heartbeats.renewal_seen(name, force=force),
                lease_stale_at=heartbeats.stale_at(name, force=force),
                heartbeat_at=view.heartbeat_at(name, heartbeats.last_change(name)),
                managed=managed,
                startup_until=view.startup_until(obs),
                held=self.policy_hold(name),
                agent=self.agent_gate(name, obs.uid),
            )
            d = decide(rec, obs, now, ncfg, gates)
            self.decisions[name] = d
            self.reporter.decision(name, obs.uid, d)
            if d.record == Record(uid=obs.uid, phase_since=d.record.phase_since) and not d.action:
                self.records.pop(name, None)  # healthy, nothing pending: nothing to remember
            else:
                self.records[name] = d.record
            if d.wake_at is not None:
                wake_at = min(wake_at, d.wake_at)
            self._timers(name, d, gates, now)
            if d.action is not None and start is not None:
                limits.started(pool, d.action.kind)
                start(d)
        for name in [n for n in dirty if n in self.records and n not in self.nodes]:
            if name in self._busy:
                continue
            rec = self.records.pop(name)
            if rec.phase is Phase.REMOVING and not rec.tainted:
                # Gone while we were removing it (a DELETE whose answer was lost, or someone
                # else's): a removal all the same. Its pool may be unknown now: it counts
                # against every pool's budget, like the removals read from Events.
                self.pools.count_removal(name, rec, now, ())
            self.reporter.forgotten(name, rec)
        # What the pass changed (records, actions started) is counted now; a pool whose
        # counts moved is looked at again at once.
        if decided:
            self.pools.recount(
                decided, [self.nodes[n] for n in decided], self.records, self._busy, now
            )
            if self.pools.pending():
                wake_at = now
        for name, until in self.pools.take_expiring():
            agenda.at(name, until)  # its share of the counts changes by itself then
        self.reporter.phases(self.pools.phases, len(self.nodes), self.pools.phases_version)
        changed = full or bool(dirty) or bool(limits.changed)
        self.pools.report(limits.census, self.records, self.reporter.blocked, changed)
        return min(wake_at, agenda.next_at())

    def _resume(self, candidates: list[NodeObs], now: float) -> None:
        # Resume before counting: a new leader's first pass must see the remediations it
        # inherits, or it could start more than --max-concurrent.
        for obs in candidates:
            rec = self.records.get(obs.name)
            if obs.name not in self._busy and (
                rec is None
                or (rec.uid != obs.uid and obs.malformed is None)
                # Healthy in memory, yet our phase annotations are on the Node (a write whose
                # reply was lost applied them): the Node is the truth, resume from it, so
                # what it says is undone (found by the simulation: a Suspect annotation was
                # left on a healthy node for good).
                or (
                    rec.phase is Phase.HEALTHY
                    and obs.malformed is None
                    and obs.annotations.get(ANN_PHASE, Phase.HEALTHY.value) != Phase.HEALTHY.value
                )
            ):
                self.records[obs.name] = resume(obs, now, self.config_for(obs.name))

    def _timers(self, name: str, d: Decision, gates: Gates, now: float) -> None:
        """Every time the decision of `name` depends on: a timer (controller.agenda)."""
        times = [
            d.wake_at,
            gates.lease_stale_at,
            self.heartbeats.stale_at(name, force=False),
            gates.startup_until,
        ]
        soonest = min((t for t in times if t is not None and t > now), default=None)
        if d.wake_at is not None and d.wake_at <= now:
            soonest = d.wake_at
        if d.blocked is not None:
            # A hold that lasts has its Event sent again (controller.reporting).
            later = now + HOLD_EVENT_AGAIN
            soonest = later if soonest is None else min(soonest, later)
        if soonest is not None and soonest != math.inf:
            self._agenda.at(name, soonest)

    def _facts(self) -> tuple[object, ...]:
        """The cluster-wide facts every decision reads: when one changes, the next pass
        decides every node (a full pass)."""
        policies = self.policies
        drift = self.timeline.drift()
        if abs(drift - self._drift) > DRIFT_STEP:
            self._drift = drift  # a wall-clock step: a start-up allowance, a pause moved
        return (
            self.fresh(),
            policies.known,
            self.view.keys_current,
            policies.active,
            policies.pause_hold(None),
            tuple(policies.pause_hold(p) for p in self._paused),
            self.heartbeats.history_fresh(),
            self._drift,
        )

    def _start(self, tg: anyio.abc.TaskGroup, d: Decision) -> None:
        action = d.action
        assert action is not None
        name = action.node
        self._busy[name] = action.kind
        self.pools.touch_pool(self.view.pool(name))
        logs.decision(log, name, d.record.phase.value, action.kind.value, d.why)
        rec = d.record
        if action.persist is not None:
            self.reporter.phase_changed(name, action.uid, rec, action.persist)
            self.records[name] = rec = action.persist
        tg.start_soon(self._perform, action, rec)

    async def _perform(self, action: Action, rec: Record) -> None:
        name = action.node
        # The pool the node is in now: a removed node may have left the view (and its pool)
        # by the time the removal is counted against its pool's budget.
        pool_at_start = self.view.pool(name)
        try:
            result = await self.executor.perform(action, rec)
        except NotLeader:
            log.warning("lost leadership before %s of node %s; stopping", action.kind, name)
            self._done(name)
            return
        now = self.timeline.now()
        current = self.records.get(name, rec)
        retry_in = result.retry_in
        if action.kind is Kind.DRAIN and result.outcome is Outcome.BLOCKED:
            retry_in = self._retry_when_silent(name, result.detail, retry_in, now)
        new = complete(
            current,
            action,
            result.outcome,
            now,
            retry_in,
            result.tainted,
            result.transition,
        )
        if result.cordoned is not None:
            # Whose the cordon is, as the fresh read before it showed (never the view's guess).
            new = dataclasses.replace(new, cordoned=result.cordoned)
        held = result.detail if result.outcome is Outcome.BLOCKED else None
        self.reporter.executor_result(name, action.uid, current.phase.value, held)
        if result.outcome is Outcome.GONE:
            self.records.pop(name, None)
            self._gone[name] = (action.uid, now + GONE_RECHECK)
        else:
            self.records[name] = new
            if new.phase is not current.phase:
                self.reporter.phase_changed(name, action.uid, current, new)
        # A removal counts against the budget once per episode: when its out-of-service taint
        # went on (whatever happened after: held, failed, restored later), or when the Node
        # was removed without one of ours.
        newly_tainted = (
            action.kind is Kind.REMOVE and result.tainted is True and not current.tainted
        )
        if (
            action.kind is Kind.REMOVE
            and (result.outcome is Outcome.OK or newly_tainted)
            and not current.tainted
        ):
            pool = self.view.pool(name) or pool_at_start
            self.pools.count_removal(name, current, now, (pool,) if pool else ("",))
        if (
            action.kind is Kind.REMOVE
            and result.outcome is Outcome.OK
            and current.unhealthy_since is not None
        ):
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

    def _retry_when_silent(self, name: str, reason: str, retry_in: float, now: float) -> float:
        """A drain held by a live kubelet (`LIVE_KUBELET_HOLDS`) of a node whose status is
        silent (Ready=Unknown) lives by its heartbeat Lease alone: it is retried when that
        Lease turns stale for a force (a timer: the record's retry), not after the live
        drain's fixed retry. A Lease renewed meanwhile moves its stale time: the retry finds
        the kubelet alive and is held again until the next one."""
        obs = self.nodes.get(name)
        if reason not in LIVE_KUBELET_HOLDS or obs is None or not obs.silent:
            return retry_in
        stale = self.heartbeats.stale_at(name, force=True)
        if stale is None:
            return retry_in
        left = stale - now + STALE_SLACK
        # Already stale by our reads, yet the drain found it alive (a read newer than ours):
        # the gate's own retry.
        return min(retry_in, max(SILENT_RETRY_MIN, left) if left > 0 else BLOCKED_RETRY)

    # -- health ------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.view.watcher.synced:
            return False, "initial node list not complete"
        if not self.policies.listed:
            # Nothing is decided until then (a pause may exist): say so, do not look idle.
            why = self.policies.unknown_why()
            return False, why or "NodeRecoveryPolicies not read yet (see the log)"
        if (unknown := self.policies.unknown_why()) is not None:
            return False, unknown  # every forward step is held (pause-unknown...)
        return True, "synced"

    def liveness(self) -> tuple[bool, str]:
        if self.view.watcher.synced and self.view.watcher.stale():
            return False, "node watch stale"
        return True, "ok"
