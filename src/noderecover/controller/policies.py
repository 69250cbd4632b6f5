"""The NodeRecoveryPolicy objects and the cluster-wide pause, kept current; policy status.

- Policies: list + watch (kube.watching.Watcher, the node watch's machinery), while the
  CRD exists. Whether it exists is itself watched: a LIST and WATCH of that one
  CustomResourceDefinition (a fieldSelector on its name; no poll, no probe of the policies'
  path). Absent (its LIST or watch says so) means no policies (the flags govern), believed
  while that watch is fresh; a CRD installed later starts the policy watch, one deleted stops
  it. `known` is False until the CRD's first answer, while the CRD exists and the policies'
  first LIST has not completed, and while the watch that answers (the policies', or the CRD's
  when absent) is stale: the controller then holds every forward step (`policies-unknown`),
  since a pause or a policy it has not seen may exist. A policy's `spec.paused` is a pause:
  both watches are the pause watch's kind (core.pauses: streams of PAUSE_WATCH_TIMEOUT, 5-9
  s, each ended by the server proving them current; stale after PAUSE_WATCH_SILENCE), so a
  policy pause written while they are broken holds within the pause propagation bound too
  (found by the simulation: with --watch-silence, 90 s, a policy pause written while its
  watch was refused was missed for a minute and a half). A quiet CRD or policy list costs one
  WATCH every 5-9 s, never a LIST.
- The cluster-wide pause (where, its format, how long an answer is believed: core.pauses):
  a watch of that one ConfigMap. An answer is a LIST (the object, or none: no pause), an
  event or a BOOKMARK; a 403, a 5xx, a 404 (a namespaced LIST answers 200, empty, even in a
  namespace that does not exist), a timeout are failures. `pause_known` is False until the
  first LIST and once the last answer is older than PAUSE_PROPAGATION_BOUND: the controller
  then holds every forward step (`pause-unknown`), visibly - a log line when it changes,
  `noderecover_pause_unknown`, `/readyz`, NodeRecoverBlocked Events. A preview (`plan`)
  reads it once (`read_pause`: a 200, or the ConfigMap's own 404).
- Pauses are compared with the current wall clock (`Clock.wall`): their `until` is a time
  another party wrote, and a corrected host clock must move their end with it.
- Status: `write_status` PATCHes (merge) the status subresource of each policy whose status
  changed, at most once per STATUS_INTERVAL per policy, by the leader only (the act-gate is
  asked right before each write), outside the action path (its own task in the leader's task
  group); a failed write is logged and retried at the next round.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

import anyio

from noderecover.base.clock import Clock, Timeline
from noderecover.base.metrics import PAUSE_UNKNOWN, PAUSED, POLICY_INVALID, POLICY_NODES
from noderecover.controller.writes import Writer
from noderecover.core.nodes import format_time
from noderecover.core.pauses import (
    PAUSE_PROPAGATION_BOUND,
    PAUSE_READ_TIMEOUT,
    PAUSE_WATCH_SILENCE,
    PAUSE_WATCH_TIMEOUT,
    Pause,
    PauseLocation,
    parse_cluster_pause,
)
from noderecover.core.policies import (
    GROUP,
    PLURAL,
    POLICIES_PATH,
    Policy,
    PoolState,
    parse_policy,
    pause_hold,
    policy_status,
    status_changed,
)
from noderecover.core.settings import Config
from noderecover.kube.client import MERGE_PATCH, ApiError, KubeClient, NotFound, NotLeader
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.policies")

CRD_NAME = f"{PLURAL}.{GROUP}"
CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_PATH = f"{CRDS_PATH}/{CRD_NAME}"
STATUS_INTERVAL = 10.0  # at most one status write per policy this often


def _the_objects_404(exc: NotFound, name: str) -> bool:
    """A 404 that says this very object does not exist (the API server's Status: reason
    NotFound, `<resource> "<name>" not found`), not a 404 of something on the way (a proxy,
    an aggregated API, a path the server does not serve)."""
    return exc.reason == "NotFound" and f'"{name}" not found' in exc.message


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
        self.location = PauseLocation(namespace) if namespace else None
        self.policies: dict[str, Policy] = {}
        self.absent = False  # the CRD is not installed (its watch says so)
        # Whether policies are looked for at all: set when the watch starts (or a preview
        # reads them). A controller that never looks (a unit test driving `decide_all`, a
        # benchmark) is the flags alone.
        self.started = False
        # A read-only preview (`plan`): one read of each, believed as read (no watch runs).
        self.preview = False
        self.cluster_pause: Pause | None = None
        self._pause_warning: str | None = None
        # A preview's one read (`read_pause`): the monotonic start of the last read answered.
        self._pause_read_at: float | None = None
        self.pause_error: str | None = None  # why the last read did not answer (None: it did)
        rng = rng or random.Random()

        # The cluster pause: a watch of that one ConfigMap (see the module doc).
        def one_object(
            path: str,
            resource: str,
            name: str,
            on_event: Callable[[str, str, dict[str, Any] | None], None],
            on_resync: Callable[[Iterable[tuple[str, dict[str, Any]]]], None],
        ) -> Watcher[dict[str, Any]]:
            """A watch of one object by name, at the pause watch's pace (core.pauses)."""
            return Watcher(
                kube,
                clock,
                path,
                resource,
                lambda raw: raw,
                on_event,
                on_resync,
                silence=PAUSE_WATCH_SILENCE,
                server_timeout=PAUSE_WATCH_TIMEOUT,
                rng=rng,
                query=[("fieldSelector", f"metadata.name={name}")],
            )

        self.pause_watcher: Watcher[dict[str, Any]] | None = None
        if self.location is not None:
            self.pause_watcher = one_object(
                self.location.collection,
                "configmaps",
                self.location.name,
                self._pause_event,
                self._pause_resync,
            )
        # Is the CRD installed: a watch of that one CustomResourceDefinition.
        self.crd_watcher = one_object(
            CRDS_PATH, "customresourcedefinitions", CRD_NAME, self._crd_event, self._crd_resync
        )
        self._crd_present = anyio.Event()  # set while the CRD exists (the policies are watched)
        self._crd_gone = anyio.Event()  # set when the CRD is seen gone (the watch stops)
        self._was_unknown: tuple[bool, bool] = (False, False)  # (pause, policies), last logged
        self._written: dict[str, tuple[float, Mapping[str, Any]]] = {}  # name -> (when, status)
        self.watcher: Watcher[Policy] = Watcher(
            kube,
            clock,
            POLICIES_PATH,
            PLURAL,
            self._parse,
            self._event,
            self._resync,
            silence=PAUSE_WATCH_SILENCE,
            server_timeout=PAUSE_WATCH_TIMEOUT,
            rng=rng,
        )

    # -- the policies -------------------------------------------------------------------

    @property
    def known(self) -> bool:
        """Whether the set of policies is known now (see the module doc)."""
        if not self.started:
            return True
        if self.absent:
            return self.preview or not self.crd_watcher.stale()
        return not self.watcher.stale()

    @property
    def pause_known(self) -> bool:
        """The cluster-wide pause is known now: no pause is looked for, or the last answer is
        at most PAUSE_PROPAGATION_BOUND old (core.pauses)."""
        if self.location is None or not self.started:
            return True
        w, now = self.pause_watcher, self._clock.monotonic()
        if w is not None and w.synced and now - w.last_progress <= PAUSE_PROPAGATION_BOUND:
            return True
        read = self._pause_read_at  # a preview's one read
        return read is not None and now - read <= PAUSE_PROPAGATION_BOUND

    def pause_hold(self, pool: str | None) -> str | None:
        """The pause holding a node of `pool` (None: the flags), by the wall clock now."""
        p = self.policies.get(pool) if pool else None
        return pause_hold(
            p.pause if p is not None else None,
            self.cluster_pause,
            self._clock.wall(),
            cluster_known=self.pause_known,
        )

    def unknown_why(self) -> str | None:
        """Why a pause or policy may exist unseen (what /readyz and `plan` say), or None."""
        if not self.pause_known:
            w = self.pause_watcher
            read = self._pause_read_at
            if w is not None and w.synced:
                read = max(read or -math.inf, w.last_progress)
            age = (
                "never read"
                if read is None
                else f"not read for {self._clock.monotonic() - read:.0f}s"
            )
            error = self.pause_error or (w.last_error if w is not None else None)
            return f"cluster pause unknown ({self.location} {age}: {error or 'no answer yet'})"
        if not self.known:
            if self.absent or not self.crd_watcher.synced:
                why = self.crd_watcher.last_error or "not read yet, or its watch is stale"
                return f"NodeRecoveryPolicies unknown (the CRD {CRD_NAME}: {why})"
            why = self.watcher.last_error or "not read yet, or the policy watch is stale"
            return f"NodeRecoveryPolicies unknown ({why})"
        return None

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
        """noderecover_paused, noderecover_pause_unknown and noderecover_policy_invalid, as of
        now (pauses expire, answers age); a log line when a pause turns unknown or known."""
        now = self._clock.wall()
        for name, p in self.policies.items():
            POLICY_INVALID.labels(name).set(0 if p.valid else 1)
            PAUSED.labels(name).set(1 if p.pause is not None and p.pause.active(now) else 0)
        active = self.cluster_pause is not None and self.cluster_pause.active(now)
        PAUSED.labels("").set(1 if active else 0)
        unknown = (not self.pause_known, not self.known)
        PAUSE_UNKNOWN.labels("cluster").set(1 if unknown[0] else 0)
        PAUSE_UNKNOWN.labels("policies").set(1 if unknown[1] else 0)
        if unknown != self._was_unknown:
            if any(unknown):
                log.warning("every forward step held: %s", self.unknown_why())
            else:
                log.info("pauses and policies known again: forward steps may go on")
            self._was_unknown = unknown

    async def run(self) -> None:
        """Watch the CRD, the policies while it exists, and the cluster pause."""
        self.started = True
        self.update_metrics()
        async with anyio.create_task_group() as tg:
            if self.pause_watcher is not None:
                tg.start_soon(self.pause_watcher.run)
            tg.start_soon(self.crd_watcher.run)
            while True:
                await self._crd_present.wait()
                self._crd_gone = anyio.Event()
                async with anyio.create_task_group() as policies:
                    policies.start_soon(self.watcher.run)
                    await self._crd_gone.wait()
                    policies.cancel_scope.cancel()
                # The CRD is gone: the next one starts from a fresh LIST.
                self.watcher.synced = False

    def _crd_event(self, etype: str, name: str, raw: dict[str, Any] | None) -> None:
        if name == CRD_NAME:
            self._crd_seen(raw is not None)

    def _crd_resync(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        self._crd_seen(any(name == CRD_NAME for name, _ in items))

    def _crd_seen(self, present: bool) -> None:
        """The CRD's watch says it exists (or not): watch the policies, or the flags govern."""
        if present:
            if self.absent or not self._crd_present.is_set():
                if self.absent:
                    log.info("the NodeRecoveryPolicy CRD is installed: reading the policies")
                self.absent = False
                self._crd_present.set()
                self._changed()  # unknown until their first LIST
        else:
            if self._crd_present.is_set():
                self._crd_present = anyio.Event()
                self._crd_gone.set()
            if not self.absent:
                log.info("no NodeRecoveryPolicy CRD installed: the flags govern every node")
                self.absent = True
                self.policies = {}
                self._changed()
        self.update_metrics()

    # -- the cluster-wide pause ---------------------------------------------------------

    def _pause_event(self, etype: str, name: str, raw: dict[str, Any] | None) -> None:
        if self.location is not None and name == self.location.name:
            self._pause_answer(raw)

    def _pause_resync(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self.location is not None:
            self._pause_answer(dict(items).get(self.location.name))

    async def read_pause(self) -> None:
        """One GET of the pause ConfigMap (no location: no cluster pause)."""
        loc = self.location
        if loc is None:
            return
        started = self._clock.monotonic()
        timeout = min(PAUSE_READ_TIMEOUT, self._kube.timeouts.request)
        try:
            raw: Mapping[str, Any] | None = await self._kube.request(
                "GET", loc.path, timeout=timeout
            )
        except NotFound as exc:
            if not _the_objects_404(exc, loc.name):
                self._pause_failed(f"a 404 that is not the ConfigMap's own: {exc}")
                return
            raw = None
        except ApiError as exc:
            self._pause_failed(str(exc))
            return
        self._pause_read_at = started
        if self.pause_error is not None:
            log.info("cluster pause %s read again", loc)
            self.pause_error = None
        self._pause_answer(raw)

    def _pause_answer(self, raw: Mapping[str, Any] | None) -> None:
        """An answer about the pause ConfigMap: its object, or None (it does not exist)."""
        pause, warning = parse_cluster_pause(raw, self._clock.wall())
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

    def _pause_failed(self, why: str) -> None:
        if why != self.pause_error:
            log.warning(
                "cannot read the cluster pause %s: %s; held as unknown once the last answer is "
                "%gs old",
                self.location,
                why,
                PAUSE_PROPAGATION_BOUND,
            )
        self.pause_error = why
        self.update_metrics()

    # -- status ------------------------------------------------------------------------

    async def write_status(self, states: Mapping[str, PoolState], writer: Writer) -> int:
        """One round of status writes; returns how many were written."""
        now = self._clock.wall()  # pauses' ends are wall times; so is lastTransitionTime
        mono = self._clock.monotonic()
        written = 0
        for name, p in sorted(self.policies.items()):
            status = policy_status(
                p,
                states.get(name, PoolState()),
                self.cluster_pause,
                now,
                cluster_known=self.pause_known,
            )
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
