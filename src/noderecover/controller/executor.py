"""Performs the state machine's actions against the API: the imperative shell's hands.

Invariants:
- Every write is preceded by the act-gate (`may_act`): a replica that is not a valid leader
  raises NotLeader before touching anything.
- Evidence before force: right before every forward step (cordon, each grace-1 eviction and
  force-delete of the drain, fence, taint, delete) the Node is read again (and, for the
  destructive ones, its heartbeat Lease), and that read decides (`evidence`): healthy or a
  newer Ready transition (a flap) -> HEALTHY; another uid or gone -> GONE; an exclusion or a
  controller gate (stale watch, open breaker, out of the selector) -> BLOCKED; a live
  kubelet (Ready not Unknown, or its Lease renewing) -> no force, fence or removal.
- Every step carries the uid it was decided on: merge patches carry `metadata.uid` (the API
  server answers 409 when the object under that name has another uid), deletes and
  evictions a uid precondition. A node re-created under the same name is never written to
  by the old remediation.
- Node deletion is conditional on the uid and resourceVersion just read (409 -> re-read).
- The out-of-service taint is added with a JSON patch guarded by the resourceVersion, so
  other taints are never replaced; it is removed only if noderecover added it. A taint already
  on the node (seen in the fresh read before the removal) belongs to whoever put it there: the
  removal records `tainted=False` (`Result.tainted`), so the restore leaves it. If a write
  fails after we added the taint, the result still says it is ours. One conservative gap: if
  leadership is lost between the taint and its `noderecover.io/out-of-service` annotation, the
  next leader sees a taint it has no record of adding and leaves it on recovery.
- Dry-run performs reads only, and logs and counts each write it would have made.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import anyio

from noderecover.base.backoff import Backoff
from noderecover.base.clock import Clock
from noderecover.base.metrics import ACTIONS, BLOCKED, MALFORMED_OBJECTS
from noderecover.controller.drainer import DrainContext, Drained, Drainer, Evidence
from noderecover.controller.volumes import VolumeWatch
from noderecover.core.machine import (
    FLAPPING,
    HEALTHY_AGAIN,
    KUBELET_ALIVE,
    Action,
    Kind,
    Outcome,
    Record,
    annotations_for,
    evidence_hold,
    kubelet_alive,
    ready_since,
    unhealthy,
)
from noderecover.core.nodes import OUT_OF_SERVICE_KEY, OUT_OF_SERVICE_TAINT, NodeObs, parse_node
from noderecover.core.reasons import GATES
from noderecover.core.settings import Config
from noderecover.core.volumes import (
    MAX_WAIT_FOR_UNMOUNT,
    VOLUMES_ATTACHED,
    delete_warning,
    describe,
    on_node,
)
from noderecover.kube.client import (
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    Conflict,
    Invalid,
    KubeClient,
    NotFound,
    NotLeader,
)
from noderecover.kube.storage import attachments, waiting_pods

log = logging.getLogger("noderecover.controller.executor")

DELETE_CONFLICT_RETRIES = 3
BLOCKED_RETRY = 5.0  # a step held by a gate or a live kubelet: look again this much later
LIVE_DRAIN_RETRY = 30.0  # a live kubelet's drain that did not finish in time
MALFORMED_RETRY = 30.0  # a node object that cannot be read safely: look again this much later
DETACH_POLL = 1.0  # out-of-service: how often the node's VolumeAttachments are read while waiting
VOLUMES_EVENT = "NodeRecoverVolumesAttached"  # Event reason: volumes held by a removed node


class Guard(Protocol):
    """What the executor asks the controller while it acts."""

    def hold(self, node: str) -> str | None:
        """A controller-wide gate that holds a forward step now (stale watch, open breaker,
        node outside --node-selector), or None."""
        ...

    async def lease_renewing_now(self, node: str) -> bool:
        """A fresh read of the node's heartbeat Lease: renewed within the grace?"""
        ...

    def report(self, node: str, uid: str, reason: str, message: str) -> None:
        """A Warning Event on the node."""
        ...

    def event(
        self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str
    ) -> None:
        """A Warning Event on any object (a Node: namespace "")."""
        ...


class NoGuard:
    """No controller around (unit tests of the executor alone): no gate, no Lease."""

    def hold(self, node: str) -> str | None:
        return None

    async def lease_renewing_now(self, node: str) -> bool:
        return False

    def report(self, node: str, uid: str, reason: str, message: str) -> None:
        return None

    def event(
        self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str
    ) -> None:
        return None


class NodeReplaced(Exception):
    """A write carrying the node's uid was refused (409): the name has another node now."""


class MalformedNode(Exception):
    """The fresh read of a node is malformed: the step is not taken (never acted on)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    retry_in: float = 0.0
    detail: str = ""
    tainted: bool | None = None  # the out-of-service taint is ours (None: not looked at)
    transition: float | None = None  # a newer Ready transition seen in the fresh read (a flap)


class Executor:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        cfg: Config,
        may_act: Callable[[], bool],
        *,
        rng: random.Random | None = None,
        guard: Guard | None = None,
        now: Callable[[], float] | None = None,
        config_for: Callable[[str], Config] | None = None,
    ) -> None:
        """`config_for(node)`: the settings of the policy governing the node now (default:
        `cfg`, the flags); asked again at every step, so a changed policy applies at once."""
        self._kube = kube
        self._clock = clock
        self._cfg = cfg
        self._config_for: Callable[[str], Config] = config_for or (lambda _node: cfg)
        self._may_act = may_act
        self._rng = rng or random.Random()
        self._guard: Guard = guard or NoGuard()
        self._now = now or clock.wall
        self.drainer = Drainer(
            kube,
            clock,
            drain_timeout=cfg.drain_timeout,
            dry_run=cfg.dry_run,
            rng=self._rng,
            now=self._now,
        )
        self._forced: dict[str, set[str]] = {}  # node uid -> pod uids force-deleted once
        # node uid -> when this process saw its out-of-service taint on (the detach bound)
        self._tainted_at: dict[str, float] = {}
        self.volumes = VolumeWatch(kube, clock, now=self._now)

    # -- helpers -----------------------------------------------------------------------

    def _path(self, node: str) -> str:
        return f"/api/v1/nodes/{quote(node, safe='')}"

    async def read(self, node: str, uid: str) -> NodeObs | None:
        """A fresh GET of the node; None when it is gone or was replaced (uid changed).

        Raises MalformedNode when the object cannot be read safely.
        """
        try:
            raw = await self._kube.request("GET", self._path(node))
        except NotFound:
            return None
        cfg = self._config_for(node)
        obs = parse_node(raw, cfg.relevant_labels, cfg.kept_conditions)
        if obs.uid and obs.uid != uid:
            return None  # another node under this name: whatever it looks like, not ours
        if obs.malformed is not None:
            MALFORMED_OBJECTS.labels("nodes", obs.malformed).inc()
            raise MalformedNode(obs.malformed)
        return obs

    def _write_allowed(self, what: str, node: str) -> bool:
        """False in dry-run (logged + counted); raises NotLeader without leadership."""
        if self._cfg.dry_run:
            log.info("dry-run: would %s node %s", what, node)
            ACTIONS.labels(what, "dry-run").inc()
            return False
        if not self._may_act():
            raise NotLeader
        return True

    async def _merge(self, node: str, uid: str, body: dict[str, Any]) -> None:
        """A merge patch that applies only to the node with this uid (Conflict -> NodeReplaced)."""
        meta = {**body.get("metadata", {}), "uid": uid}
        try:
            await self._kube.request(
                "PATCH",
                self._path(node),
                body={**body, "metadata": meta},
                content_type=MERGE_PATCH,
            )
        except Conflict as exc:
            raise NodeReplaced(node) from exc

    async def evidence(self, action: Action, *, destructive: bool = True) -> Evidence:
        """Read the node (and, for a destructive step on a silent node, its heartbeat Lease)
        and apply every gate to that read. Raises MalformedNode, ApiError, NotLeader."""
        if not self._cfg.dry_run and not self._may_act():
            raise NotLeader
        fresh = await self.read(action.node, action.uid)
        if fresh is None:
            return Evidence(Outcome.GONE)
        seen = ready_since(fresh)
        newer = (
            seen
            if seen is not None and action.transition is not None and seen > action.transition
            else None
        )
        why = evidence_hold(fresh, action.transition, self._config_for(action.node))
        if why in (HEALTHY_AGAIN, FLAPPING):
            return Evidence(Outcome.HEALTHY, why, transition=newer)
        if why is None:
            why = self._guard.hold(action.node)
        if why is not None:
            return Evidence(Outcome.BLOCKED, why)
        renewing = False
        if fresh.silent and destructive and self._cfg.watch_node_leases:
            renewing = await self._guard.lease_renewing_now(action.node)
        dead = not kubelet_alive(fresh, renewing)
        # Confirmed gone: its heartbeat Lease was read and has not changed for the whole grace.
        confirmed = dead and destructive and self._cfg.watch_node_leases
        return Evidence(dead=dead, confirmed=confirmed, fresh=fresh)

    @staticmethod
    def _stopped(ev: Evidence) -> Result:
        assert ev.stop is not None
        return Result(ev.stop, BLOCKED_RETRY if ev.stop is Outcome.BLOCKED else 0.0, ev.reason)

    # -- entry point ------------------------------------------------------------------

    async def perform(self, action: Action, rec: Record) -> Result:
        """Perform one action; never raises ApiError or MalformedNode (FAILED, retried later)."""
        try:
            match action.kind:
                case Kind.PERSIST:
                    return await self._persist(action)
                case Kind.CORDON:
                    return await self._cordon(action)
                case Kind.DRAIN:
                    return await self._drain(action, rec)
                case Kind.FENCE:
                    return await self._fence(action)
                case Kind.REMOVE:
                    return await self._remove(action, rec)
                case Kind.RESTORE:
                    return await self._restore(action, rec)
        except NodeReplaced:
            return Result(Outcome.GONE, detail="node replaced (another uid under its name)")
        except (MalformedNode, ApiError) as exc:
            return self._failed(action, rec, exc)
        raise AssertionError(f"unknown action {action.kind}")  # pragma: no cover

    def _failed(self, action: Action, rec: Record, exc: MalformedNode | ApiError) -> Result:
        if isinstance(exc, MalformedNode):
            ACTIONS.labels(action.kind.value, "malformed").inc()
            log.warning(
                "%s of node %s not done: the node object is malformed (%s); retry in %.0fs",
                action.kind,
                action.node,
                exc.reason,
                MALFORMED_RETRY,
            )
            return Result(Outcome.FAILED, MALFORMED_RETRY, f"node object malformed ({exc.reason})")
        ACTIONS.labels(action.kind.value, "error").inc()
        delay = Backoff(base=2.0, cap=300.0, rng=self._rng, failures=rec.failures).next_delay(
            exc.retry_after or 0.0
        )
        if not exc.retryable:
            delay = max(delay, 30.0)
        log.warning(
            "%s of node %s failed: %s; retry in %.1fs", action.kind, action.node, exc, delay
        )
        return Result(Outcome.FAILED, delay, str(exc))

    async def _persist(self, action: Action) -> Result:
        if self._write_allowed("annotate", action.node):
            try:
                await self._merge(
                    action.node,
                    action.uid,
                    {"metadata": {"annotations": annotations_for(action.success)}},
                )
            except NotFound:
                return Result(Outcome.GONE)
            ACTIONS.labels("annotate", "ok").inc()
        return Result(Outcome.OK)

    async def _cordon(self, action: Action) -> Result:
        ev = await self.evidence(action, destructive=False)
        if ev.stop is not None:
            return self._stopped(ev)
        if self._write_allowed("cordon", action.node):
            await self._merge(
                action.node,
                action.uid,
                {
                    "metadata": {"annotations": annotations_for(action.success)},
                    "spec": {"unschedulable": True},
                },
            )
            ACTIONS.labels("cordon", "ok").inc()
        return Result(Outcome.OK)

    async def _drain(self, action: Action, rec: Record) -> Result:
        started = rec.phase_since
        if action.persist is not None:
            started = action.persist.phase_since
            if self._write_allowed("annotate", action.node):
                await self._merge(
                    action.node,
                    action.uid,
                    {"metadata": {"annotations": annotations_for(action.persist)}},
                )

        async def evidence() -> Evidence:
            return await self.evidence(action)

        def blocked(reason: str) -> None:
            BLOCKED.labels(reason).inc()

        def report(reason: str, message: str) -> None:
            self._guard.report(action.node, action.uid, reason, message)

        ctx = DrainContext(self._may_act, evidence, blocked, report)
        forced = self._forced.setdefault(action.uid, set())
        done: Drained = await self.drainer.drain(
            action.node,
            started,
            action.may_force,
            ctx,
            forced,
            timeout=self._config_for(action.node).drain_timeout,
        )
        ACTIONS.labels("drain", done.outcome.value).inc()
        if done.outcome is Outcome.FAILED:
            return Result(
                done.outcome, 60.0, "pods that cannot be evicted or cannot be read remain"
            )
        if done.outcome is Outcome.BLOCKED:
            retry = LIVE_DRAIN_RETRY if done.reason not in _GATE_REASONS else BLOCKED_RETRY
            return Result(done.outcome, retry, done.reason)
        if done.outcome in (Outcome.OK, Outcome.GONE):
            # The drain is over: forget. Otherwise (held, failed, a flap, fencing first) a
            # retried drain must not force a uid it forced already.
            self._forced.pop(action.uid, None)
        if done.outcome is Outcome.OK and self._write_allowed("annotate", action.node):
            # The Node says Removing from now on, like the metrics, Events and `plan` (a
            # removal may wait for the hourly budget).
            await self._merge(
                action.node,
                action.uid,
                {"metadata": {"annotations": annotations_for(action.success)}},
            )
        return Result(done.outcome, transition=done.transition, detail=done.reason)

    async def _fence(self, action: Action) -> Result:
        ev = await self.evidence(action)
        if ev.stop is not None:
            return self._stopped(ev)
        if not ev.dead:
            return Result(Outcome.BLOCKED, BLOCKED_RETRY, KUBELET_ALIVE)
        argv = self._cfg.fence_command
        if self._cfg.dry_run:
            log.info("dry-run: would run fence command %s for node %s", argv, action.node)
            ACTIONS.labels("fence", "dry-run").inc()
            return Result(Outcome.OK)
        if not self._may_act():
            raise NotLeader
        env = {**os.environ, "NODE_NAME": action.node, "NODERECOVER_NODE": action.node}
        code: int | None = None
        try:
            with anyio.fail_after(self._cfg.fence_timeout):
                proc = await anyio.run_process(list(argv), env=env, check=False)
            code = proc.returncode
        except TimeoutError:
            log.error(
                "fence command for %s timed out after %.0fs", action.node, self._cfg.fence_timeout
            )
        except OSError as exc:
            log.error("fence command for %s could not run: %s", action.node, exc)
        if code != 0:
            ACTIONS.labels("fence", "error").inc()
            delay = Backoff(base=10.0, cap=300.0, rng=self._rng).next_delay()
            return Result(Outcome.FAILED, delay, f"fence command exit {code}")
        ACTIONS.labels("fence", "ok").inc()
        if self._write_allowed("annotate", action.node):
            await self._merge(
                action.node,
                action.uid,
                {"metadata": {"annotations": annotations_for(action.success)}},
            )
        return Result(Outcome.OK)

    async def _remove(self, action: Action, rec: Record) -> Result:
        """Taint (out-of-service, both), wait for the node's volumes to detach, delete (delete,
        both): each step decided from a fresh read (see core/volumes.py for the rules)."""
        cfg = self._config_for(action.node)
        mode = cfg.removal_mode
        taints = cfg.taints
        ours = rec.tainted  # the out-of-service taint is ours (put on in an earlier episode)
        result = Result(Outcome.FAILED, 1.0, "node kept changing during removal")
        try:
            # One pass per fresh read: the taint's own (then re-read), and conflicts.
            for _ in range(DELETE_CONFLICT_RETRIES + 1):
                ev = await self.evidence(action)
                if (stop := self._removal_stop(ev, mode)) is not None:
                    result = stop
                    break
                fresh = ev.fresh
                assert fresh is not None
                try:
                    if taints and not fresh.has_taint(OUT_OF_SERVICE_KEY):
                        # Before the taint: with it, the volumes may be gone before the wait
                        # first looks (detached in ~100 ms), and they are followed from here.
                        await self._follow_volumes(action, rec)
                        try:
                            written = await self._add_taint(action, fresh)
                        except Invalid:
                            continue  # the node changed since `fresh`: as on a Conflict
                        ours = True  # from here on, even if a later write fails (dry-run: as if)
                        self._tainted_at.setdefault(action.uid, self._now())
                        if written and self._write_allowed("annotate", action.node):
                            # Still Removing until its volumes are detached; the taint is ours.
                            await self._annotate_removing(action, rec, ours)
                            ACTIONS.labels("taint", "ok").inc()
                            log.warning("node %s tainted %s", action.node, OUT_OF_SERVICE_KEY)
                        if written:
                            continue  # re-read: the wait and the delete see the tainted node
                    elif taints and not ours:
                        ACTIONS.labels("taint", "already-present").inc()
                        log.info(
                            "node %s already has a %s taint noderecover did not add: not "
                            "ours, left in place on recovery",
                            action.node,
                            OUT_OF_SERVICE_KEY,
                        )
                    if taints and not self._cfg.dry_run:
                        held = await self._wait_detached(action, rec)
                        if held is not None:
                            result = held
                            break
                        if mode == "both":
                            # Time passed while waiting: the DELETE is decided on a new read.
                            ev = await self.evidence(action)
                            if (stop := self._removal_stop(ev, mode)) is not None:
                                result = stop
                                break
                            assert ev.fresh is not None
                            fresh = ev.fresh
                    elif mode == "delete":
                        await self._warn_attached(action, rec)
                    if mode in {"delete", "both"} and self._write_allowed("delete", action.node):
                        precondition = {"uid": fresh.uid, "resourceVersion": fresh.resource_version}
                        await self._kube.request(
                            "DELETE", self._path(action.node), body={"preconditions": precondition}
                        )
                        ACTIONS.labels("delete", "ok").inc()
                        log.warning("deleted node %s", action.node)
                    elif mode == "out-of-service" and self._write_allowed("annotate", action.node):
                        await self._annotate_removed(action, ours)
                    result = Result(Outcome.OK)
                    break
                except Conflict:
                    continue  # changed under us: re-read, re-check health, try again
                except NotFound:
                    result = Result(Outcome.OK)
                    break
        except NodeReplaced:
            result = Result(Outcome.GONE, detail="node replaced (another uid under its name)")
        except (MalformedNode, ApiError) as exc:
            result = self._failed(action, rec, exc)
        if result.outcome is not Outcome.BLOCKED:
            self._tainted_at.pop(action.uid, None)
            self.volumes.release(action.node)
        # Whatever the outcome, say whose the taint is: the record must neither lose nor
        # claim it.
        return dataclasses.replace(result, tainted=ours) if taints else result

    def _removal_stop(self, ev: Evidence, mode: str) -> Result | None:
        """What a fresh read says before a removal step: gone (done, unless the Node was to
        be kept), a gate or a flap (stopped), a live kubelet (held); None: go on."""
        if ev.stop is Outcome.GONE:
            return Result(Outcome.OK if mode != "out-of-service" else Outcome.GONE)
        if ev.stop is not None:
            return self._stopped(ev)
        if not ev.dead:
            return Result(Outcome.BLOCKED, BLOCKED_RETRY, KUBELET_ALIVE)
        return None

    async def _wait_detached(self, action: Action, rec: Record) -> Result | None:
        """Wait until no VolumeAttachment names the tainted node: None when none is left, a
        BLOCKED result when a gate closed or `--detach-timeout` (counted from the taint, in
        this process) ran out. The taint stays either way."""
        deadline = self._tainted_at.setdefault(action.uid, self._now()) + self._cfg.detach_timeout
        while True:
            left = on_node(await attachments(self._kube), action.node)
            self.volumes.held(action.node, len(left))
            for a in left:
                if a.pv is not None:
                    self.volumes.track(a.pv, action.node, self._started(rec, action.node))
            if not left:
                return None
            if self._now() >= deadline:
                message = (
                    f"{len(left)} volume(s) still attached to the out-of-service node "
                    f"{action.node} {self._cfg.detach_timeout:.0f}s after its taint "
                    f"({describe(left)}); the Node is kept, tainted, until they detach "
                    "(is the CSI driver's attacher running?)"
                )
                log.warning("%s", message)
                self._guard.report(action.node, action.uid, VOLUMES_ATTACHED, message)
                return Result(Outcome.BLOCKED, LIVE_DRAIN_RETRY, VOLUMES_ATTACHED)
            why = self._guard.hold(action.node)
            if why is not None:
                return Result(Outcome.BLOCKED, BLOCKED_RETRY, why)
            if not self._cfg.dry_run and not self._may_act():
                raise NotLeader
            await self._clock.sleep(min(DETACH_POLL, max(0.0, deadline - self._now())))

    def _started(self, rec: Record, node: str) -> float:
        """When the remediation started: the end of the grace (now, if unknown)."""
        if rec.unhealthy_since is None:
            return self._now()
        return min(self._now(), rec.unhealthy_since + self._config_for(node).grace)

    async def _follow_volumes(self, action: Action, rec: Record) -> None:
        """Read the node's VolumeAttachments and follow each volume to its re-attach
        (metrics only: a failed read is logged, the removal goes on)."""
        try:
            held = on_node(await attachments(self._kube), action.node)
        except ApiError as exc:
            log.warning("could not read the VolumeAttachments of %s: %s", action.node, exc)
            return
        self.volumes.held(action.node, len(held))
        for a in held:
            if a.pv is not None:
                self.volumes.track(a.pv, action.node, self._started(rec, action.node))

    async def _warn_attached(self, action: Action, rec: Record) -> None:
        """--removal delete on a node that still holds volumes: say what it costs, where the
        operator looks (log, Event on the Node and on each pod waiting for such a volume)."""
        try:
            held = on_node(await attachments(self._kube), action.node)
        except ApiError as exc:
            log.warning("could not read the VolumeAttachments of %s: %s", action.node, exc)
            return
        self.volumes.held(action.node, len(held))
        if not held:
            return
        message = delete_warning(action.node, held)
        log.warning("%s", message)
        self._guard.event("Node", "", action.node, action.uid, VOLUMES_EVENT, message)
        for a in held:
            if a.pv is None:
                continue
            self.volumes.track(a.pv, action.node, self._started(rec, action.node))
            try:
                pods = await waiting_pods(self._kube, a.pv, action.node)
            except ApiError as exc:
                log.warning("could not find the pods waiting for %s: %s", a.pv, exc)
                continue
            for p in pods:
                self._guard.event(
                    "Pod",
                    p.namespace,
                    p.name,
                    p.uid,
                    VOLUMES_EVENT,
                    f"volume {a.pv} is still attached to the removed node {action.node}: "
                    f"Kubernetes holds it up to {MAX_WAIT_FOR_UNMOUNT / 60:.0f} minutes "
                    "(maxWaitForUnmountDuration); see the Events of that node",
                )

    async def _annotate_removing(self, action: Action, rec: Record, ours: bool) -> None:
        """The taint is on, the node still Removing: a new leader resumes the wait, keeps
        the taint ours."""
        removing = dataclasses.replace(rec, tainted=ours, fenced=action.success.fenced)
        await self._merge(
            action.node, action.uid, {"metadata": {"annotations": annotations_for(removing)}}
        )

    async def _annotate_removed(self, action: Action, ours: bool) -> None:
        success = dataclasses.replace(action.success, tainted=ours)
        await self._merge(
            action.node, action.uid, {"metadata": {"annotations": annotations_for(success)}}
        )

    async def _add_taint(self, action: Action, fresh: NodeObs) -> bool:
        """Add the out-of-service taint (rv-guarded). False in dry-run: nothing written.

        Raises Invalid when the node changed since `fresh` (the patch's test op failed).
        """
        if not self._write_allowed("taint", action.node):
            return False
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": fresh.resource_version}
        ]
        if fresh.taints:
            ops.append({"op": "add", "path": "/spec/taints/-", "value": OUT_OF_SERVICE_TAINT})
        else:
            ops.append({"op": "add", "path": "/spec/taints", "value": [OUT_OF_SERVICE_TAINT]})
        await self._kube.request(
            "PATCH", self._path(action.node), body=ops, content_type=JSON_PATCH
        )
        return True

    async def _restore(self, action: Action, rec: Record) -> Result:
        fresh = await self.read(action.node, action.uid)
        if fresh is None:
            return Result(Outcome.GONE)
        if unhealthy(fresh, self._config_for(action.node)):
            # The view still says healthy: wait for it to catch up, with backoff.
            delay = Backoff(base=0.5, cap=10.0, rng=self._rng, failures=rec.failures).next_delay()
            return Result(Outcome.FAILED, delay, "unhealthy again")
        if not self._write_allowed("restore", action.node):
            return Result(Outcome.OK)
        if rec.tainted:
            idx = next((i for i, t in enumerate(fresh.taints) if t.key == OUT_OF_SERVICE_KEY), None)
            if idx is not None:
                ops = [
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": fresh.resource_version,
                    },
                    {"op": "test", "path": f"/spec/taints/{idx}/key", "value": OUT_OF_SERVICE_KEY},
                    {"op": "remove", "path": f"/spec/taints/{idx}"},
                ]
                try:
                    await self._kube.request(
                        "PATCH", self._path(action.node), body=ops, content_type=JSON_PATCH
                    )
                except Invalid:  # a test op failed: the node changed since `fresh`
                    return Result(Outcome.FAILED, 0.5, "node changed; retrying")
                ACTIONS.labels("untaint", "ok").inc()
        body: dict[str, Any] = {"metadata": {"annotations": annotations_for(action.success)}}
        if rec.cordoned and fresh.unschedulable:
            body["spec"] = {"unschedulable": False}
        if not self._may_act():
            raise NotLeader  # every write asks the act-gate, the second one of a restore too
        await self._merge(action.node, action.uid, body)
        self._forced.pop(action.uid, None)
        ACTIONS.labels("uncordon" if "spec" in body else "restore", "ok").inc()
        log.info(
            "node %s restored (uncordoned=%s, untainted=%s)",
            action.node,
            "spec" in body,
            rec.tainted,
        )
        return Result(Outcome.OK)


# Blocked reasons that are controller-wide gates (looked at again soon), as opposed to a
# live kubelet's unfinished drain (looked at again after LIVE_DRAIN_RETRY).
_GATE_REASONS: frozenset[str] = GATES
