"""The NodeRecoveryPolicy objects and the cluster-wide pause, kept current; policy status.

- Policies: list + watch (kube.watching.Watcher, the node watch's machinery). Before the
  first LIST the CRD's existence is probed: absent (404) means no policies (the flags
  govern) and is probed again every PROBE_INTERVAL; a CRD installed later is picked up.
  `known` is False until the first LIST completed (or the CRD was found absent) and while
  the watch is stale: the controller then holds every forward step (`policies-unknown`),
  since a pause or a policy it has not seen may exist.
- The cluster-wide pause: the ConfigMap `noderecover-pause` in the controller's own
  namespace, read every PAUSE_POLL (GET; 404 = no pause). A failed read keeps the last
  answer (and says so in the log).
- Status: `write_status` PATCHes (merge) the status subresource of each policy whose status
  changed, at most once per STATUS_INTERVAL per policy, by the leader only (the act-gate is
  asked right before each write), outside the action path (its own task in the leader's task
  group); a failed write is logged and retried at the next round.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import anyio

from noderecover.base.clock import Clock, Timeline
from noderecover.base.metrics import PAUSED, POLICY_INVALID, POLICY_NODES
from noderecover.controller.writes import Writer
from noderecover.core.nodes import format_time
from noderecover.core.policies import (
    CLUSTER_PAUSE_NAME,
    PLURAL,
    POLICIES_PATH,
    Pause,
    Policy,
    PoolState,
    parse_cluster_pause,
    parse_policy,
    policy_status,
    status_changed,
)
from noderecover.core.settings import Config
from noderecover.kube.client import MERGE_PATCH, ApiError, KubeClient, NotFound, NotLeader
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.policies")

PROBE_INTERVAL = 30.0  # the CRD is absent: look again this often
PAUSE_POLL = 5.0  # the cluster-wide pause ConfigMap is read this often
STATUS_INTERVAL = 10.0  # at most one status write per policy this often


class PolicySource:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        timeline: Timeline,
        cfg: Config,
        changed: Callable[[], None],
        *,
        namespace: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`changed()`: called after the set of policies or the cluster pause changed."""
        self._kube = kube
        self._clock = clock
        self._timeline = timeline
        self._cfg = cfg
        self._changed = changed
        self._namespace = namespace
        self.policies: dict[str, Policy] = {}
        self.absent = False  # the CRD is not installed (last probe)
        # Whether policies are looked for at all: set when the watch starts (or a preview
        # reads them). A controller that never looks (a unit test driving `decide_all`, a
        # benchmark) is the flags alone.
        self.started = False
        self.cluster_pause: Pause | None = None
        self._pause_warning: str | None = None
        self._written: dict[str, tuple[float, Mapping[str, Any]]] = {}  # name -> (when, status)
        self.watcher: Watcher[Policy] = Watcher(
            kube,
            clock,
            POLICIES_PATH,
            PLURAL,
            self._parse,
            self._event,
            self._resync,
            silence=cfg.watch_silence,
            server_timeout=cfg.watch_timeout,
            rng=rng or random.Random(),
        )

    # -- the policies -------------------------------------------------------------------

    @property
    def known(self) -> bool:
        """Whether the set of policies is known now (see the module doc)."""
        return not self.started or self.absent or not self.watcher.stale()

    @property
    def listed(self) -> bool:
        """The policies were read at least once (or found absent, or not looked for)."""
        return not self.started or self.absent or self.watcher.synced

    @property
    def active(self) -> bool:
        """Policies govern (at least one exists): the flags are only the defaults."""
        return bool(self.policies)

    def _parse(self, raw: dict[str, Any]) -> Policy:
        p = parse_policy(raw, self._cfg)
        if p.error is not None:
            old = self.policies.get(p.name)
            if old is None or old.error != p.error or old.generation != p.generation:
                log.warning("NodeRecoveryPolicy %s is invalid, not applied: %s", p.name, p.error)
        return p

    def _event(self, etype: str, name: str, p: Policy | None) -> None:
        if p is None:
            self.policies.pop(name, None)
            self._written.pop(name, None)
            for metric in (PAUSED, POLICY_INVALID):
                with contextlib.suppress(KeyError):
                    metric.remove(name)
            for state in ("matched", "unhealthy", "remediating", "conflict"):
                with contextlib.suppress(KeyError):
                    POLICY_NODES.remove(name, state)
        else:
            old = self.policies.get(name)
            self.policies[name] = p
            if old == p:
                return  # only its status changed (our own write, mostly): nothing to apply
        self.update_metrics()
        self._changed()

    def _resync(self, items: Iterable[tuple[str, Policy]]) -> None:
        self.policies = dict(items)
        self.update_metrics()
        self._changed()

    def update_metrics(self) -> None:
        """noderecover_paused and noderecover_policy_invalid, as of now (pauses expire)."""
        now = self._timeline.now()
        for name, p in self.policies.items():
            POLICY_INVALID.labels(name).set(0 if p.valid else 1)
            PAUSED.labels(name).set(1 if p.pause is not None and p.pause.active(now) else 0)
        active = self.cluster_pause is not None and self.cluster_pause.active(now)
        PAUSED.labels("").set(1 if active else 0)

    async def run(self) -> None:
        """Probe for the CRD, then watch the policies; poll the cluster pause meanwhile."""
        self.started = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._poll_pause)
            while True:
                try:
                    await self._kube.request("GET", POLICIES_PATH, query=[("limit", "1")])
                except NotFound:
                    if not self.absent:
                        log.info("no NodeRecoveryPolicy CRD installed: the flags govern every node")
                    self.absent = True
                    if self.policies:
                        self.policies = {}
                        self._changed()
                    await self._clock.sleep(PROBE_INTERVAL)
                    continue
                except ApiError as exc:
                    log.warning("cannot probe NodeRecoveryPolicies: %s; retrying", exc)
                    await self._clock.sleep(PROBE_INTERVAL / 3)
                    continue
                break
            self.absent = False
            await self.watcher.run()

    # -- the cluster-wide pause ---------------------------------------------------------

    async def read_pause(self) -> None:
        """One GET of the pause ConfigMap (no namespace: no cluster pause)."""
        if self._namespace is None:
            return
        path = (
            f"/api/v1/namespaces/{quote(self._namespace, safe='')}/configmaps/{CLUSTER_PAUSE_NAME}"
        )
        try:
            raw: Mapping[str, Any] | None = await self._kube.request("GET", path)
        except NotFound:
            raw = None
        except ApiError as exc:
            log.warning("cannot read the cluster pause %s: %s; keeping the last answer", path, exc)
            return
        pause, warning = parse_cluster_pause(raw)
        if warning is not None and warning != self._pause_warning:
            log.warning("%s", warning)
        self._pause_warning = warning
        if pause != self.cluster_pause:
            if pause is not None:
                log.warning(
                    "cluster-wide pause until %s (%s)",
                    format_time(pause.until),
                    pause.reason or "no reason given",
                )
            else:
                log.info("cluster-wide pause removed")
            self.cluster_pause = pause
            self._changed()
        self.update_metrics()

    async def _poll_pause(self) -> None:
        while True:
            await self.read_pause()
            await self._clock.sleep(PAUSE_POLL)

    # -- status ------------------------------------------------------------------------

    async def write_status(self, states: Mapping[str, PoolState], writer: Writer) -> int:
        """One round of status writes; returns how many were written."""
        now = self._timeline.now()
        mono = self._clock.monotonic()
        written = 0
        for name, p in sorted(self.policies.items()):
            status = policy_status(p, states.get(name, PoolState()), self.cluster_pause, now)
            last = self._written.get(name)
            previous = last[1] if last is not None else p.status
            if not status_changed(previous, status):
                continue
            if last is not None and mono - last[0] < STATUS_INTERVAL:
                continue
            path = f"{POLICIES_PATH}/{quote(name, safe='')}/status"
            body = {"metadata": {"uid": p.uid}, "status": status} if p.uid else {"status": status}
            try:
                # The write path's writer: leadership asked right before (NotLeader).
                await writer.send("PATCH", path, body=body, content_type=MERGE_PATCH)
            except NotFound:
                continue  # deleted meanwhile: the watch will say so
            except ApiError as exc:
                log.warning("status of NodeRecoveryPolicy %s not written: %s", name, exc)
                continue
            self._written[name] = (mono, status)
            written += 1
        return written

    async def status_loop(
        self, states: Callable[[], Mapping[str, PoolState]], writer: Writer
    ) -> None:
        """The leader's status writer: a round every STATUS_INTERVAL / 2."""
        self._written = {}
        while True:
            try:
                await self.write_status(states(), writer)
            except NotLeader:
                return
            await self._clock.sleep(STATUS_INTERVAL / 2)
