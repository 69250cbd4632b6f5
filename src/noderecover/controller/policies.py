"""The NodeRecoveryPolicy objects and the cluster-wide pause, kept current; policy status.

- Policies: list + watch (kube.watching.Watcher, the node watch's machinery). Before the
  first LIST the CRD's existence is probed: absent means no policies (the flags govern), but
  a 404 of the policies' own path is not believed by itself (an API server whose CRD handler
  is not up yet, a proxy, a path that 404s while the CRD exists): the CRD object is asked for
  by name (CRD_PATH), and only its own 404 ("... not found", naming it) is "not installed".
  A CRD object that exists, or no answer, keeps the policies unknown (held, visibly) and
  probes again. It is probed again every PROBE_INTERVAL, and a probe that fails makes the
  policies unknown again. A CRD installed later is picked up. `known` is False until the
  first LIST completed (or the CRD was confirmed absent) and while the watch is stale: the
  controller then holds every forward step (`policies-unknown`), since a pause or a policy it
  has not seen may exist.
- The cluster-wide pause (where, its format, how long an answer is believed: core.pauses):
  read every PAUSE_POLL. An answer is a 200 or a 404 that is the ConfigMap's own (a Status
  naming it; a 404 from anything else, a 403, a 5xx, a timeout are failures). `pause_known`
  is False until a read answered and once the last answer is older than
  PAUSE_PROPAGATION_BOUND: the controller then holds every forward step (`pause-unknown`),
  visibly - a log line when it changes, `noderecover_pause_unknown`, `/readyz`.
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
    PAUSE_POLL,
    PAUSE_PROPAGATION_BOUND,
    PAUSE_READ_TIMEOUT,
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
from noderecover.core.reasons import Blocked
from noderecover.core.settings import Config
from noderecover.kube.client import MERGE_PATCH, ApiError, KubeClient, NotFound, NotLeader
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.policies")

PROBE_INTERVAL = 5.0  # the CRD is absent: look again this often
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
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
        self.absent = False  # the CRD is not installed (confirmed by the last probes)
        # Why the policies' 404 is not believed (the CRD object exists, or could not be read).
        self._unconfirmed_404: str | None = None
        # Whether policies are looked for at all: set when the watch starts (or a preview
        # reads them). A controller that never looks (a unit test driving `decide_all`, a
        # benchmark) is the flags alone.
        self.started = False
        self.cluster_pause: Pause | None = None
        self._pause_warning: str | None = None
        self._pause_read_at: float | None = None  # monotonic start of the last read answered
        self.pause_error: str | None = None  # why the last read did not answer (None: it did)
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
    def pause_known(self) -> bool:
        """The cluster-wide pause is known now: no pause is looked for, or the last answer is
        at most PAUSE_PROPAGATION_BOUND old (core.pauses)."""
        if self.location is None or not self.started:
            return True
        read = self._pause_read_at
        return read is not None and self._clock.monotonic() - read <= PAUSE_PROPAGATION_BOUND

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
            if self._pause_read_at is None:
                age = "never read"
            else:
                age = f"not read for {self._clock.monotonic() - self._pause_read_at:.0f}s"
            return (
                f"cluster pause unknown ({self.location} {age}: "
                f"{self.pause_error or 'no answer yet'})"
            )
        if not self.known:
            if self._unconfirmed_404 is not None:
                return f"NodeRecoveryPolicies unknown (404: {self._unconfirmed_404})"
            return "NodeRecoveryPolicies unknown (not read yet, or the policy watch is stale)"
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
        """Probe for the CRD, then watch the policies; poll the cluster pause meanwhile."""
        self.started = True
        self.update_metrics()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._poll_pause)
            while True:
                try:
                    await self._kube.request("GET", POLICIES_PATH, query=[("limit", "1")])
                except NotFound:
                    await self._clock.sleep(await self._absent_seen())
                    continue
                except ApiError as exc:
                    self._unconfirmed_404 = None
                    if self.absent:  # it may have been installed meanwhile: unknown again
                        self.absent = False
                        self._changed()
                    self.update_metrics()
                    log.warning("cannot probe NodeRecoveryPolicies: %s; retrying", exc)
                    await self._clock.sleep(PROBE_INTERVAL)
                    continue
                break
            self._unconfirmed_404 = None
            self.absent = False
            await self.watcher.run()

    async def _absent_seen(self) -> float:
        """The policies' path answered 404: believed only when the CRD object's own GET says
        it does not exist (see the module doc); returns how long to wait before the next
        probe."""
        why: str | None = None
        try:
            await self._kube.request("GET", CRD_PATH)
            why = f"the CRD {CRD_NAME} exists (not established yet, or a path that 404s)"
        except NotFound as exc:
            if not _the_objects_404(exc, CRD_NAME):
                why = f"a 404 that is not the CRD's own: {exc}"
        except ApiError as exc:
            why = f"the CRD {CRD_NAME} could not be read to confirm it is absent: {exc}"
        if why is not None:
            if why != self._unconfirmed_404:
                log.warning(
                    "NodeRecoveryPolicies: 404, not believed: %s (meanwhile: %s)",
                    why,
                    Blocked.POLICIES_UNKNOWN,
                )
            self._unconfirmed_404 = why
            if self.absent:  # it may be being installed: unknown again
                self.absent = False
                self._changed()
            self.update_metrics()
            return PROBE_INTERVAL
        self._unconfirmed_404 = None
        if not self.absent:
            log.info("no NodeRecoveryPolicy CRD installed: the flags govern every node")
            self.absent = True
            self.policies = {}
            self._changed()
        return PROBE_INTERVAL

    # -- the cluster-wide pause ---------------------------------------------------------

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

    async def _poll_pause(self) -> None:
        while True:
            started = self._clock.monotonic()
            await self.read_pause()
            await self._clock.sleep(max(0.0, started + PAUSE_POLL - self._clock.monotonic()))

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
