"""The node view: what the Node watch says, parsed small, indexed for the reconcile pass.

Invariants:
- Malformed Nodes stay in the view, marked (nothing acts on them), counted and logged once
  per reason.
- `population`: nodes matching --node-selector (malformed ones too: the breaker errs on the
  safe side); with NodeRecoveryPolicies, the nodes exactly one valid policy governs
  (`classify`, core.policies.govern), split by policy in `pools`; nodes refused (two
  policies, or an invalid one) are in `held`.
- `keep_labels` / `keep_conditions`: what a Node is parsed into; every policy's selector keys
  and condition types. When they change the controller asks for a re-list, and
  `keys_current` is False until that re-list was delivered.
- `watchlist`: nodes unhealthy, malformed or carrying our annotations. A node
  outside the watchlist without a record and without an action in progress is healthy with
  nothing of ours on it: a decision would do nothing for it and it adds nothing to the
  breaker's counts, so a reconcile pass costs O(nodes needing attention), not O(cluster).
- `young_ready`: young nodes (created within --node-startup-timeout) seen Ready. The start-up
  allowance is only for nodes never seen Ready; old nodes are never kept in it.
- `alive_at`: per node, the last time (timeline) the view showed it not silent (Ready not
  Unknown: its kubelet posted status, as far as anyone knew) - a sign of life beside its
  heartbeat Lease. A LIST sets it to now for every node: events may have been lost before
  it, so nothing earlier is believed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from noderecover.base.clock import Clock, Timeline
from noderecover.base.metrics import MALFORMED_OBJECTS
from noderecover.core.machine import EXCLUDED_SELECTOR, unhealthy
from noderecover.core.nodes import OUR_ANNOTATIONS, NodeObs, parse_node
from noderecover.core.policies import POLICY_CONFLICT, POLICY_INVALID, Governance
from noderecover.core.safety import in_population
from noderecover.core.selectors import SelectorIndex
from noderecover.core.settings import Config
from noderecover.kube.client import KubeClient
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.view")

NODES_PATH = "/api/v1/nodes"


class NodeView:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        timeline: Timeline,
        cfg: Config,
        changed: Callable[[str | None, NodeObs | None], None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        """`changed(name, obs)`: called after each change (name None: a whole re-list)."""
        self._cfg = cfg
        self.keep_labels = cfg.relevant_labels
        self.keep_conditions = cfg.kept_conditions
        self.parsed_keys = (self.keep_labels, self.keep_conditions)
        self.classify: Callable[[NodeObs], Governance] = self.flag_classify
        self.unhealthy_cfg = cfg  # the conditions that put a node on the watchlist
        self.policy_mode = False
        self.pool_of: dict[str, str] = {}  # policy mode only: node -> its policy
        self.pools: dict[str, set[str]] = {}  # policy mode only: policy -> its nodes
        self.held: dict[str, Governance] = {}  # policy mode: nodes refused (conflict, invalid)
        self._timeline = timeline
        self._changed = changed
        self.nodes: dict[str, NodeObs] = {}
        self.population: set[str] = set()
        self.watchlist: set[str] = set()
        self.young_ready: set[str] = set()
        self.alive_at: dict[str, float] = {}
        # Pools whose member count changed since the controller last looked (it takes them).
        self.resized: set[str] = set()
        self.watcher: Watcher[NodeObs] = Watcher(
            kube,
            clock,
            NODES_PATH,
            "nodes",
            self.parse,
            self.event,
            self.resync,
            silence=cfg.watch_silence,
            server_timeout=cfg.watch_timeout,
            rng=rng or random.Random(),
        )

    def parse(self, raw: dict[str, Any]) -> NodeObs:
        obs = parse_node(raw, self.keep_labels, self.keep_conditions)
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

    def event(self, etype: str, name: str, obs: NodeObs | None) -> None:
        if obs is None:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = obs
        self._index(name, obs)
        self._changed(name, obs)

    def resync(self, items: Iterable[tuple[str, NodeObs]]) -> None:
        self.nodes = dict(items)  # nodes missing from a re-list are forgotten
        now = self._timeline.now()
        self.alive_at = dict.fromkeys(self.nodes, now)
        self.parsed_keys = (self.keep_labels, self.keep_conditions)
        self.reindex()

    def reindex(
        self, policies: set[str] | None = None, selects: SelectorIndex | None = None
    ) -> None:
        """Index every node again (the policies or what they read changed); with `policies`
        (and `selects`, the index of their selectors now), only the nodes they may govern:
        those they governed or refused, and those their selectors select now. The others'
        classification cannot have changed."""
        if policies is not None:
            names: set[str] = set()
            for p in policies:
                names |= self.pools.get(p, set())
            names |= {n for n, gov in self.held.items() if policies.intersection(gov.matched)}
            if selects is not None:
                names |= {
                    n
                    for n, o in self.nodes.items()
                    if o.malformed is None and selects.matching(o.labels)
                }
            for name in names:
                self._index(name, self.nodes.get(name))
            self._changed(None, None)
            return
        self.population = set()
        self.watchlist = set()
        self.pool_of = {}
        self.pools = {}
        self.held = {}
        for name, obs in self.nodes.items():
            self._index(name, obs)
        self._changed(None, None)

    @property
    def keys_current(self) -> bool:
        """The nodes in view were parsed with what the policies read now."""
        return self.parsed_keys == (self.keep_labels, self.keep_conditions)

    def flag_classify(self, obs: NodeObs) -> Governance:
        """No policies: the nodes --node-selector selects (and malformed ones) are managed."""
        if in_population(obs, self._cfg):
            return Governance("")
        return Governance(None, EXCLUDED_SELECTOR, "not matched by --node-selector")

    def pool(self, name: str) -> str | None:
        """The policy governing a node ("" = the flags), None when none does."""
        if self.policy_mode:
            return self.pool_of.get(name)
        return "" if name in self.population else None

    def members(self, pool: str) -> set[str]:
        return self.pools.get(pool, set()) if self.policy_mode else self.population

    def _index(self, name: str, obs: NodeObs | None) -> None:
        before = self.pool(name)
        if self.policy_mode:
            old = self.pool_of.pop(name, None)
            if old is not None and old in self.pools:
                self.pools[old].discard(name)
            self.held.pop(name, None)
        gov = self.classify(obs) if obs is not None else None
        if gov is not None and gov.policy is not None:
            self.population.add(name)
            if self.policy_mode:
                self.pool_of[name] = gov.policy
                self.pools.setdefault(gov.policy, set()).add(name)
        else:
            self.population.discard(name)
        if self.policy_mode and gov is not None and gov.held in (POLICY_CONFLICT, POLICY_INVALID):
            self.held[name] = gov
        after = self.pool(name)
        if before != after:
            self.resized.update(p for p in (before, after) if p is not None)
        ready = obs.ready if obs is not None else None
        if obs is None:
            self.alive_at.pop(name, None)
        elif not obs.silent:
            self.alive_at[name] = self._timeline.now()
        if obs is None:
            self.young_ready.discard(name)
        elif ready is not None and ready.status == "True" and self._young(obs):
            self.young_ready.add(name)
        if obs is not None and (
            obs.malformed is not None
            or unhealthy(obs, self.unhealthy_cfg)
            # (most nodes carry no annotation of ours: an empty map is not looked into)
            or (obs.annotations and any(k in obs.annotations for k in OUR_ANNOTATIONS))
        ):
            self.watchlist.add(name)
        else:
            self.watchlist.discard(name)

    def _young(self, obs: NodeObs) -> bool:
        created = obs.created
        return (
            created is not None
            and self._timeline.now() + self._timeline.drift() - created  # the wall clock now
            < self._cfg.node_startup_timeout
        )

    def startup_until(self, obs: NodeObs) -> float | None:
        """Until when a node never seen Ready is still joining (None: not joining).

        A node whose Ready=Unknown says `NodeStatusUnknown` has joined: the node lifecycle
        controller says so only of a kubelet that posted status before and stopped
        (`NodeStatusNeverUpdated` otherwise). What this process saw is not needed for that: a
        restarted controller, which never saw it Ready, must not take a dead node for a
        joining one."""
        if obs.created is None or obs.name in self.young_ready or not self._young(obs):
            return None
        ready = obs.ready
        if ready is not None and ready.status == "Unknown" and ready.reason == "NodeStatusUnknown":
            return None
        # A wall time (its creationTimestamp), put on the timeline decisions are made on.
        return obs.created - self._timeline.drift() + self._cfg.node_startup_timeout

    def carries_ours(self, name: str) -> bool:
        obs = self.nodes.get(name)
        return obs is not None and any(k in obs.annotations for k in OUR_ANNOTATIONS)

    def heartbeat_at(self, name: str, lease_changed: float | None) -> float | None:
        """The node's last sign of life we saw (timeline): the last change of its heartbeat
        Lease (`lease_changed`, None: unknown), or later the last time the view showed it not
        silent. None when the Lease's is unknown: the Lease is what tells a dead kubelet."""
        if lease_changed is None:
            return None
        return max(lease_changed, self.alive_at.get(name, lease_changed))

    def silent(self) -> list[str]:
        """Nodes whose kubelet stopped posting status (Ready=Unknown)."""
        return [n for n in self.watchlist if (o := self.nodes.get(n)) is not None and o.silent]
