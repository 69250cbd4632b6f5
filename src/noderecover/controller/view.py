"""The node view: what the Node watch says, parsed small, indexed for the reconcile pass.

Invariants:
- Malformed Nodes stay in the view, marked (nothing acts on them), counted and logged once
  per reason.
- `population`: nodes matching --node-selector (malformed ones too: the breaker errs on the
  safe side). `watchlist`: nodes unhealthy, malformed or carrying our annotations. A node
  outside the watchlist without a record and without an action in progress is healthy with
  nothing of ours on it: a decision would do nothing for it and it adds nothing to the
  breaker's counts, so a reconcile pass costs O(nodes needing attention), not O(cluster).
- `young_ready`: young nodes (created within --node-startup-timeout) seen Ready. The start-up
  allowance is only for nodes never seen Ready; old nodes are never kept in it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from noderecover.base.clock import Clock, Timeline
from noderecover.base.metrics import MALFORMED_OBJECTS
from noderecover.core.machine import unhealthy
from noderecover.core.nodes import OUR_ANNOTATIONS, NodeObs, parse_node
from noderecover.core.safety import in_population
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
        self._timeline = timeline
        self._changed = changed
        self.nodes: dict[str, NodeObs] = {}
        self.population: set[str] = set()
        self.watchlist: set[str] = set()
        self.young_ready: set[str] = set()
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
        obs = parse_node(raw, self._cfg.relevant_labels, self._cfg.kept_conditions)
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
        self.population = set()
        self.watchlist = set()
        for name, obs in self.nodes.items():
            self._index(name, obs)
        self._changed(None, None)

    def _index(self, name: str, obs: NodeObs | None) -> None:
        if obs is not None and in_population(obs, self._cfg):
            self.population.add(name)
        else:
            self.population.discard(name)
        ready = obs.ready if obs is not None else None
        if obs is None:
            self.young_ready.discard(name)
        elif ready is not None and ready.status == "True" and self._young(obs):
            self.young_ready.add(name)
        if obs is not None and (
            obs.malformed is not None
            or unhealthy(obs, self._cfg)
            or any(k in obs.annotations for k in OUR_ANNOTATIONS)
        ):
            self.watchlist.add(name)
        else:
            self.watchlist.discard(name)

    def _young(self, obs: NodeObs) -> bool:
        created = obs.created
        return (
            created is not None and self._timeline.now() - created < self._cfg.node_startup_timeout
        )

    def startup_until(self, obs: NodeObs) -> float | None:
        """Until when a node never seen Ready is still joining (None: not joining)."""
        if obs.created is None or obs.name in self.young_ready or not self._young(obs):
            return None
        return obs.created + self._cfg.node_startup_timeout

    def carries_ours(self, name: str) -> bool:
        obs = self.nodes.get(name)
        return obs is not None and any(k in obs.annotations for k in OUR_ANNOTATIONS)

    def silent(self) -> list[str]:
        """Nodes whose kubelet stopped posting status (Ready=Unknown)."""
        return [n for n in self.watchlist if (o := self.nodes.get(n)) is not None and o.silent]
