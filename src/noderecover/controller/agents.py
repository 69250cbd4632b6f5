"""The node agents' Leases and our fence marks, as the controller sees them (issue 23).

Invariants:
- Every agent Lease (`noderecover-agent-<node>`, label app.kubernetes.io/component=
  noderecover-agent, in noderecover's namespace) is watched with the Lease watch machinery
  (kube.watching.Watcher, as the heartbeat history); each record is judged on OUR monotonic
  clock: when we received it, never its renewTime (another host's clock).
- A change is a new resourceVersion (opaque; without one, a new renewTime). A first read is
  not a renewal. A run of renewals is broken by a gap longer than the Lease's own duration +
  core.agent.GAP_TOLERANCE: the agent is relied on only after `settle_time` of steady renewals
  (a crash-looping agent never is: core.agent.not_relied_on).
- The time our fence mark was first seen on a Node (the view, or the answer to our own
  write) is kept per (node, uid); a mark that disappears is forgotten.
- The parameters the controller uses are the larger of the agent's published ones and the
  controller's own (`--agent-*` flags): config drift never shortens the safe time.
- Before every write decided on a self-fence the agent's Lease and the heartbeat Lease are
  read again with a GET (Controller.self_fenced_now, asked by the write path's evidence): a
  change since is a sign of life, and the proof must hold on that read.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from noderecover.base.clock import Clock, Timeline
from noderecover.core import agent as core
from noderecover.core.agent import AgentGate, AgentParams, AgentSeen
from noderecover.core.nodes import parse_time
from noderecover.core.settings import Config
from noderecover.kube.client import ApiError, KubeClient, NotFound
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.agents")

# How long a mark we wrote is believed without the view showing it (the watch's lag).
MARK_VIEW_LAG = 30.0


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One agent Lease as received (monotonic times)."""

    params: AgentParams | None
    version: str
    renew: str
    window: float
    changed_at: float
    steady_since: float | None  # None: no change seen yet
    settled_until: float | None = None  # core.agent.AgentSeen


# What the watch keeps of one agent Lease: (node, resourceVersion, renewTime, duration, params).
AgentLeaseObs = tuple[str, str, str, float, AgentParams | None]


def parse_agent_lease(lease: dict[str, Any]) -> AgentLeaseObs | None:
    """An agent's Lease, or None for any other Lease of the namespace (the leader's)."""
    meta = lease.get("metadata")
    if not isinstance(meta, dict):
        return None
    labels = meta.get("labels")
    name = meta.get("name")
    if not isinstance(labels, dict) or labels.get(core.AGENT_LABEL) != core.AGENT_LABEL_VALUE:
        return None
    if not isinstance(name, str) or not name.startswith(core.LEASE_PREFIX):
        return None
    spec = lease.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    rv = meta.get("resourceVersion")
    renew = spec.get("renewTime")
    raw = spec.get("leaseDurationSeconds")
    window = float(raw) if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else 0.0
    annotations = meta.get("annotations")
    params = core.params_of(annotations) if isinstance(annotations, dict) else None
    if params is not None and window <= 0:
        window = 3 * params.check_interval
    return (
        name.removeprefix(core.LEASE_PREFIX),
        rv if isinstance(rv, str) else "",
        renew if isinstance(renew, str) else "",
        window,
        params,
    )


def controller_params(cfg: Config) -> AgentParams:
    """The agent timing the controller was told (the `--agent-*` flags)."""
    return AgentParams(
        isolation_timeout=cfg.agent_isolation_timeout,
        watchdog_timeout=cfg.agent_watchdog_timeout,
        check_interval=cfg.agent_check_interval,
        slack=0.0,
    )


class AgentLeases:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        timeline: Timeline,
        cfg: Config,
        namespace: str,
        rng: random.Random | None = None,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._timeline = timeline
        self._cfg = cfg
        self.namespace = namespace
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"
        self.leases: dict[str, LeaseRecord] = {}  # node -> its agent's Lease
        # node -> (uid, first seen (monotonic), seen in the view)
        self.marks: dict[str, tuple[str, float, bool]] = {}
        self._synced_once = False  # a preview's one LIST stands for a current view
        # Called with the node's name when its agent's Lease appears, changes or goes: the
        # reconciler decides that node again (its pass decides only what changed).
        self.on_change: Callable[[str], None] = lambda node: None
        self.watcher: Watcher[AgentLeaseObs] = Watcher(
            kube,
            clock,
            self._path,
            "agent-leases",
            parse_agent_lease,
            self._event,
            self._resync,
            silence=cfg.watch_silence,
            server_timeout=cfg.watch_timeout,
            rng=rng or random.Random(),
        )

    # -- the watch -----------------------------------------------------------------------

    def _event(self, etype: str, name: str, lease: AgentLeaseObs | None) -> None:
        if lease is None:
            node = name.removeprefix(core.LEASE_PREFIX)
            if self.leases.pop(node, None) is not None:
                self.on_change(node)
        else:
            self.note(lease)

    def _resync(self, items: Iterable[tuple[str, AgentLeaseObs]]) -> None:
        listed = {obs[0]: obs for _, obs in items}
        for obs in listed.values():
            self.note(obs)
        for node in [k for k in self.leases if k not in listed]:
            del self.leases[node]
            self.on_change(node)

    def note(self, lease: AgentLeaseObs) -> None:
        """One read of an agent Lease (watch event, LIST item or GET)."""
        node, version, renew, window, params = lease
        now = self._clock.monotonic()
        old = self.leases.get(node)
        if old is None:
            self.leases[node] = LeaseRecord(params, version, renew, window, now, None)
            self.on_change(node)
            return
        changed = version != old.version if version and old.version else renew != old.renew
        if not changed:
            return
        self.on_change(node)
        gap = now - old.changed_at
        steady = old.steady_since
        if steady is None or gap > old.window + core.GAP_TOLERANCE:
            steady = now  # the first renewal seen, or the first after a gap: a new run
        until = core.settled(AgentSeen(params, now, steady, window, old.settled_until), now)
        self.leases[node] = LeaseRecord(params, version, renew, window, now, steady, until)

    # -- our marks ---------------------------------------------------------------------------

    def mark_seen(self, node: str, uid: str, marked: bool, *, written: bool = False) -> None:
        """The view (or, `written`, our write's answer) shows the node with (`marked`) or
        without our mark naming `uid`: its first sighting is kept. A view without it forgets
        it, unless it comes from our write and the view has not shown it yet (the view lags;
        for MARK_VIEW_LAG at most: a mark removed before the view ever showed it is asked
        again, never waited on for good)."""
        held = self.marks.get(node)
        now = self._clock.monotonic()
        if not marked:
            if held is not None and held[0] == uid and (held[2] or now - held[1] > MARK_VIEW_LAG):
                del self.marks[node]
            return
        if held is None or held[0] != uid:
            self.marks[node] = (uid, now, not written)
        elif not written and not held[2]:
            self.marks[node] = (uid, held[1], True)

    # -- what decide reads -------------------------------------------------------------------

    def _timeline_of(self, mono: float) -> float:
        return self._timeline.now() - (self._clock.monotonic() - mono)

    def seen(self, node: str) -> AgentSeen | None:
        rec = self.leases.get(node)
        if rec is None:
            return None
        steady = None if rec.steady_since is None else self._timeline_of(rec.steady_since)
        until = None if rec.settled_until is None else self._timeline_of(rec.settled_until)
        changed = self._timeline_of(rec.changed_at)
        wall = parse_time(rec.renew)
        return AgentSeen(rec.params, changed, steady, rec.window, until, wall)

    def gate(
        self,
        node: str,
        uid: str,
        heartbeat_mono: float | None,
        heartbeat_renew: str = "",
    ) -> AgentGate | None:
        """The agent gate of `node` (uid `uid`) for `machine.decide`; None: no agent Lease.
        `heartbeat_mono`: when its heartbeat Lease's current record was first received;
        `heartbeat_renew`: that record's renewTime (the node's clock, core.agent)."""
        rec = self.leases.get(node)
        if rec is None:
            return None
        seen = self.seen(node)
        hb = None if heartbeat_mono is None else self._timeline_of(heartbeat_mono)
        why_not = core.not_relied_on(seen, hb, parse_time(heartbeat_renew))
        mine = controller_params(self._cfg)
        params = core.merged(rec.params, mine) if rec.params is not None else mine
        mark = self.marks.get(node)
        marked = self._timeline_of(mark[1]) if mark is not None and mark[0] == uid else None
        return AgentGate(
            params=params,
            why_not=why_not,
            lease_at=self._timeline_of(rec.changed_at),
            heartbeat_at=hb,
            marked_at=marked,
            floor=self._cfg.agent_safe_time_floor,
        )

    def judge_by_renew_time(self) -> None:
        """Preview only (`plan`, one LIST, no history): take each Lease's renewTime as when
        it last changed, against the local wall clock, and an agent renewed within its window
        as steady since long enough (the live controller never assumes this)."""
        now_wall, now_mono = self._clock.wall(), self._clock.monotonic()
        judged = {}
        for node, rec in self.leases.items():
            renewed = parse_time(rec.renew)
            if renewed is None:
                continue
            mono = now_mono - max(0.0, now_wall - renewed)
            fresh = now_wall - renewed <= rec.window
            judged[node] = LeaseRecord(
                rec.params,
                rec.version,
                rec.renew,
                rec.window,
                mono,
                mono - core.settle_time(rec.window) if fresh else None,
                mono if fresh else None,
            )
        self.leases = judged
        self._synced_once = True

    def synced(self) -> bool:
        return self._synced_once or (self.watcher.synced and not self.watcher.stale())

    async def fetch(self, node: str) -> bool:
        """GET the node's agent Lease and note it; False when it could not be read."""
        path = f"{self._path}/{quote(core.lease_name(node), safe='')}"
        try:
            lease = await self._kube.request("GET", path)
        except NotFound:
            self.leases.pop(node, None)
            return True
        except ApiError as exc:
            log.warning("could not read the agent Lease of %s: %s", node, exc)
            return False
        obs = parse_agent_lease(lease)
        if obs is None or obs[0] != node:
            self.leases.pop(node, None)
            return True
        self.note(obs)
        return True
