"""Performs the state machine's actions against the API: the imperative shell's hands.

Invariants:
- Every write goes through the write path (controller/writes.py): it asks the act-gate
  (leadership) and, for a destructive step, every controller gate right before the write, on
  evidence read just before (nothing slower than one request in between).
- Evidence before force: right before every forward step (cordon, each grace-1 eviction and
  force-delete of the drain, fence, taint, delete) the Node is read again (and, for the
  destructive ones, its heartbeat Lease, at the same time), and that read decides: healthy
  or a newer Ready transition (a flap) -> HEALTHY; another uid or gone -> GONE; an exclusion
  or a controller gate -> BLOCKED; a live kubelet (Ready not Unknown, or its Lease renewing)
  -> no force, fence or removal. Slow work (volume lookups, Events) happens before that read,
  never between it and the write.
- Every step carries the uid it was decided on: merge patches carry `metadata.uid` (the API
  server answers 409 when the object under that name has another uid), deletes and
  evictions a uid precondition. A node re-created under the same name is never written to
  by the old remediation.
- Node deletion is conditional on the uid and resourceVersion just read (409 -> re-read).
- The out-of-service taint is added with a JSON patch guarded by the resourceVersion that
  also writes our marker of it (`noderecover.io/out-of-service`), so other taints are never
  replaced and a lost reply or a failover never orphans it; it is removed only if noderecover
  added it. A taint already on the node without our marker belongs to whoever put it there:
  the removal records `tainted=False` (`Result.tainted`), so the restore leaves it. The same
  holds for the cordon (`noderecover.io/cordoned`, `Result.cordoned`).
- Dry-run performs reads only, and logs and counts each write it would have made.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from noderecover.base.backoff import Backoff
from noderecover.base.clock import Clock
from noderecover.base.metrics import ACTIONS, BLOCKED, FENCES
from noderecover.controller.drainer import DrainContext, Drained, Drainer
from noderecover.controller.volumes import VolumeWatch
from noderecover.controller.writes import (
    Evidence,
    Gates,
    Held,
    MalformedNode,
    NodeReplaced,
    StaleEvidence,
    Step,
    WritePath,
)
from noderecover.core.fencing import Provider
from noderecover.core.machine import (
    KUBELET_ALIVE,
    Action,
    Kind,
    Outcome,
    Phase,
    Record,
    annotations_for,
    removal_intent,
    unhealthy,
)
from noderecover.core.nodes import ANN_TAINTED, OUT_OF_SERVICE_KEY
from noderecover.core.proof import removal_mode
from noderecover.core.reasons import GATES, Blocked
from noderecover.core.settings import Config, RemovalMode
from noderecover.core.volumes import (
    MAX_WAIT_FOR_UNMOUNT,
    VOLUMES_ATTACHED,
    delete_warning,
    describe,
    on_node,
)
from noderecover.fencing.provider import Credentials, FenceError
from noderecover.fencing.registry import provider_for
from noderecover.kube.client import ApiError, Conflict, Invalid, KubeClient, NotFound
from noderecover.kube.secrets import SecretMalformed, SecretMissing, read_secret
from noderecover.kube.storage import attachments, waiting_pods

__all__ = ["Executor", "MalformedNode", "NodeReplaced", "Result"]

log = logging.getLogger("noderecover.controller.executor")

DELETE_CONFLICT_RETRIES = 3
BLOCKED_RETRY = 5.0  # a step held by a gate or a live kubelet: look again this much later
LIVE_DRAIN_RETRY = 30.0  # a live kubelet's drain that did not finish in time
MALFORMED_RETRY = 30.0  # a node object that cannot be read safely: look again this much later
DETACH_POLL = 1.0  # out-of-service: how often the node's VolumeAttachments are read while waiting
VOLUMES_EVENT = "NodeRecoverVolumesAttached"  # Event reason: volumes held by a removed node
FENCE_EVENT = "NodeRecoverFenceFailed"  # Event reason: a fence that did not prove the node off


class Guard(Gates, Protocol):
    """What the executor asks the controller while it acts."""

    async def renewing_now(self, node: str) -> bool:
        """A fresh read of the node's heartbeat Lease: renewed within its window?"""
        ...

    async def self_fenced_now(self, node: str, uid: str) -> bool:
        """A fresh read of the node's agent Lease: does the self-fence proof still hold?"""
        ...

    def fence_requested(self, node: str, uid: str) -> None:
        """Our fence mark for the node's agent was written."""
        ...

    def report(self, node: str, uid: str, reason: str, message: str) -> None:
        """A Warning Event on the node."""
        ...

    def event(
        self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str
    ) -> None:
        """A Warning Event on any object (a Node: namespace "")."""
        ...

    async def record_removal(self, node: str, uid: str, intent: str, message: str) -> None:
        """Write the removal's intent (its Event, named `intent`) and wait for the answer:
        what a later leader counts against the hourly budget. Raises ApiError or NotLeader."""
        ...


class NoGuard:
    """No controller around (unit tests of the executor alone): no gate, no Lease."""

    def hold(self, node: str, step: Step) -> str | None:
        return None

    async def renewing_now(self, node: str) -> bool:
        return False

    async def self_fenced_now(self, node: str, uid: str) -> bool:
        return False

    def fence_requested(self, node: str, uid: str) -> None:
        return None

    def report(self, node: str, uid: str, reason: str, message: str) -> None:
        return None

    def event(
        self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str
    ) -> None:
        return None

    async def record_removal(self, node: str, uid: str, intent: str, message: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    retry_in: float = 0.0
    detail: str = ""
    tainted: bool | None = None  # the out-of-service taint is ours (None: not looked at)
    transition: float | None = None  # a newer Ready transition seen in the fresh read (a flap)
    cordoned: bool | None = None  # the cordon is ours, as the fresh read showed (None: no cordon)


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
        namespace: str | None = None,
    ) -> None:
        """`config_for(node)`: the settings of the policy governing the node now (default:
        `cfg`, the flags); asked again at every step, so a changed policy applies at once.
        `namespace`: noderecover's own, where the fence Secret is read (None: unknown)."""
        self._kube = kube
        self._clock = clock
        self._cfg = cfg
        self._config_for: Callable[[str], Config] = config_for or (lambda _node: cfg)
        self._rng = rng or random.Random()
        self._guard: Guard = guard or NoGuard()
        self._now = now or clock.wall
        self.writes = WritePath(
            kube,
            clock,
            cfg,
            may_act,
            gates=self._guard,
            leases=self._guard,
            config_for=self._config_for,
        )
        self.drainer = Drainer(
            kube,
            clock,
            drain_timeout=cfg.drain_timeout,
            dry_run=cfg.dry_run,
            rng=self._rng,
            now=self._now,
            writes=self.writes,
        )
        self._forced: dict[str, set[str]] = {}  # node uid -> pod uids force-deleted once
        # node uid -> (pod uid -> when first seen deleting), kept from a drain that ended
        # needing a fence to the drain after the fence (Drainer.drain's `deleting`)
        self._deleting: dict[str, dict[str, float]] = {}
        self._intents: set[str] = set()  # removal intents written (their Event names)
        # node uid -> when this process saw its out-of-service taint on (the detach bound)
        self._tainted_at: dict[str, float] = {}
        self.volumes = VolumeWatch(kube, clock, now=self._now)
        self._namespace = namespace
        self._fence_failures: dict[str, int] = {}  # node uid -> fences not proven off in a row
        # The fence Secrets as last read: name -> None (fine) or why not (core.proof.outlook).
        self.secrets: dict[str, str | None] = {}

    # -- helpers -----------------------------------------------------------------------

    async def evidence(self, action: Action, step: Step) -> Evidence:
        """The write path's fresh read for `step` (see controller/writes.py); it must back the
        proof the action was decided on (core.proof)."""
        return await self.writes.evidence(
            action.node, action.uid, action.transition, step, action.proof
        )

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
                    return await self._persist(action, rec)
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
        except Held as held:
            return self._held(action, held)
        except (MalformedNode, ApiError) as exc:
            return self._failed(action, rec, exc)
        raise AssertionError(f"unknown action {action.kind}")  # pragma: no cover

    def _held(self, action: Action, held: Held) -> Result:
        BLOCKED.labels(held.reason).inc()
        if not isinstance(held, StaleEvidence):
            log.info(
                "%s of node %s held right before the write: %s",
                action.kind,
                action.node,
                held.reason,
            )
        return Result(Outcome.BLOCKED, BLOCKED_RETRY, held.reason)

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

    async def _annotate(self, action: Action, rec: Record) -> None:
        await self.writes.annotate(action.node, action.uid, annotations_for(rec))

    async def _persist(self, action: Action, rec: Record) -> Result:
        if action.success.phase is Phase.HEALTHY:
            # Clearing our annotations is a restore: on a fresh read, with whatever our
            # markers say is ours (a cordon whose reply was lost is ours too).
            return await self._restore(action, rec)
        try:
            await self._annotate(action, action.success)
        except NotFound:
            return Result(Outcome.GONE)
        return Result(Outcome.OK)

    async def _cordon(self, action: Action) -> Result:
        ev = await self.evidence(action, Step.CORDON)
        if ev.stop is not None:
            return self._stopped(ev)
        try:
            ours = await self.writes.cordon(ev, annotations_for(action.success))
        except Conflict:
            # The node changed since the read (an operator's cordon, a status update): the
            # cordon is decided again on a new read.
            return Result(Outcome.FAILED, 0.5, "node changed since the read; again")
        return Result(Outcome.OK, cordoned=ours)

    async def _drain(self, action: Action, rec: Record) -> Result:
        started = rec.phase_since
        if action.persist is not None:
            started = action.persist.phase_since
            await self._annotate(action, action.persist)

        async def evidence() -> Evidence:
            return await self.evidence(action, Step.FORCE_DELETE)

        def blocked(reason: str) -> None:
            BLOCKED.labels(reason).inc()

        def report(reason: str, message: str) -> None:
            self._guard.report(action.node, action.uid, reason, message)

        ctx = DrainContext(evidence, blocked, report)
        forced = self._forced.setdefault(action.uid, set())
        # Carried over only from a drain that stopped to fence (right after it, on the same
        # node uid); any other outcome starts the next attempt's clocks afresh.
        deleting = self._deleting.pop(action.uid, {})
        done: Drained = await self.drainer.drain(
            action.node,
            started,
            action.may_force,
            ctx,
            forced,
            timeout=self._config_for(action.node).drain_timeout,
            deleting=deleting,
        )
        if done.outcome is Outcome.NEEDS_FENCE:
            self._deleting[action.uid] = deleting
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
        if done.outcome is Outcome.OK:
            # The Node says Removing from now on, like the metrics, Events and `plan` (a
            # removal may wait for the hourly budget).
            await self._annotate(action, action.success)
        return Result(done.outcome, transition=done.transition, detail=done.reason)

    async def _fence(self, action: Action) -> Result:
        """Prove the node off through its policy's provider (see controller/writes.py): the
        Secret is read first (slow work comes before the evidence), then the node and its
        Lease, then the fence. Not proven off: a visible block (its reason, a Warning Event,
        noderecover_fences_total), the Node kept, no taint, retried with backoff."""
        if action.request:
            return await self._request_fence(action)
        cfg = self._config_for(action.node)
        provider = provider_for(cfg)
        if provider is None:  # the policy stopped fencing since the decision: decide again
            return Result(Outcome.FAILED, 1.0, "fencing no longer configured")
        try:
            creds = await self._credentials(cfg)
        except FenceError as exc:
            return self._fence_blocked(action, provider.kind, exc)
        ev = await self.evidence(action, Step.FENCE)
        if ev.stop is not None:
            return self._stopped(ev)
        if not ev.dead:
            return Result(Outcome.BLOCKED, BLOCKED_RETRY, KUBELET_ALIVE)
        try:
            await self.writes.fence(
                ev, provider, cfg.fence, creds, cfg.fence_timeout, action.transition
            )
        except FenceError as exc:
            return self._fence_blocked(action, provider.kind, exc)
        self._fence_failures.pop(action.uid, None)
        ACTIONS.labels("fence", "ok").inc()
        FENCES.labels(provider.kind.value, "ok").inc()
        await self._annotate(action, action.success)
        return Result(Outcome.OK)

    async def _request_fence(self, action: Action) -> Result:
        """Ask the node's agent to fence it (the mark; controller/writes.py), on a fresh read
        that shows its kubelet silent, every gate asked right before the write."""
        ev = await self.evidence(action, Step.FENCE)
        if ev.stop is not None:
            return self._stopped(ev)
        if not ev.dead:
            return Result(Outcome.BLOCKED, BLOCKED_RETRY, KUBELET_ALIVE)
        try:
            await self.writes.request_fence(ev)
        except Conflict:
            return Result(Outcome.FAILED, 0.5, "node changed since the read; again")
        log.warning("node %s: its agent asked to fence it (%s)", action.node, action.uid)
        return Result(Outcome.OK)

    async def _credentials(self, cfg: Config) -> Credentials:
        """The fence Secret's keys (none when the configuration names no Secret)."""
        name = cfg.fence.secret_name
        if not name:
            return Credentials()
        if self._namespace is None:
            raise FenceError(Blocked.FENCE_SECRET, "noderecover's namespace is not known")
        try:
            creds = Credentials(await read_secret(self._kube, self._namespace, name))
        except (SecretMissing, SecretMalformed) as exc:
            self.secrets[name] = str(exc)
            raise FenceError(Blocked.FENCE_SECRET, str(exc)) from None
        except ApiError as exc:
            why = f"Secret {self._namespace}/{name} could not be read: HTTP {exc.code}"
            self.secrets[name] = why
            raise FenceError(Blocked.FENCE_SECRET, why) from None
        self.secrets[name] = None
        return creds

    async def look_at_secret(self, name: str) -> None:
        """Read the fence Secret `name` once, for a preview (`plan`, the plugin): its state
        goes to `secrets`; a read this caller is not allowed (401, 403) says nothing of the
        controller's own, so it stays unknown."""
        if self._namespace is None or name in self.secrets:
            return
        try:
            await read_secret(self._kube, self._namespace, name)
        except (SecretMissing, SecretMalformed) as exc:
            self.secrets[name] = str(exc)
            return
        except ApiError as exc:
            if exc.code not in (401, 403):
                self.secrets[name] = f"Secret {self._namespace}/{name}: HTTP {exc.code}"
            return
        self.secrets[name] = None

    def _fence_blocked(self, action: Action, provider: Provider, exc: FenceError) -> Result:
        failures = self._fence_failures.get(action.uid, 0)
        self._fence_failures[action.uid] = failures + 1
        delay = Backoff(base=10.0, cap=300.0, rng=self._rng, failures=failures).next_delay()
        ACTIONS.labels("fence", "error").inc()
        FENCES.labels(provider.value, exc.reason.value).inc()
        message = (
            f"{provider} fence of {action.node} did not prove it off ({exc.reason}): "
            f"{exc.message}; the Node is kept, no out-of-service taint; again in {delay:.0f}s"
        )
        log.warning("%s", message)
        self._guard.event("Node", "", action.node, action.uid, FENCE_EVENT, message[:1024])
        return Result(Outcome.BLOCKED, delay, exc.reason)

    async def _remove(self, action: Action, rec: Record) -> Result:
        """Taint (out-of-service, both), wait for the node's volumes to detach, delete (delete,
        both): each step decided from a fresh read made right before it (see core/volumes.py
        for the rules). Slow reads (VolumeAttachments, pods) and Events come before that read."""
        cfg = self._config_for(action.node)
        mode = removal_mode(cfg, action.proof)  # `auto`: taints only a node proven off
        taints = mode.taints
        ours = rec.tainted  # the out-of-service taint is ours (put on in an earlier episode)
        result = Result(Outcome.FAILED, 1.0, "node kept changing during removal")
        step = Step.TAINT if taints else Step.DELETE_NODE
        try:
            if not ours and (unrecorded := await self._record_intent(action, rec, step)):
                return unrecorded
            if taints and not ours:
                # Before the taint: with it, the volumes may be gone before the wait first
                # looks (detached in ~100 ms), and they are followed from here.
                await self._follow_volumes(action, rec)
            elif not mode.taints:
                await self._warn_attached(action, rec)
            # One pass per fresh read: the taint's own (then re-read), and conflicts.
            for _ in range(DELETE_CONFLICT_RETRIES + 1):
                ev = await self.evidence(action, step)
                if (stop := self._removal_stop(ev, mode)) is not None:
                    result = stop
                    break
                fresh = ev.fresh
                assert fresh is not None
                try:
                    if taints and not fresh.has_taint(OUT_OF_SERVICE_KEY):
                        removing = dataclasses.replace(
                            rec, tainted=True, fenced=action.success.fenced
                        )
                        try:
                            # Our marker of the taint goes with it (the node stays Removing
                            # until its volumes are detached): a new leader resumes the wait
                            # and keeps the taint ours.
                            written = await self.writes.taint(ev, annotations_for(removing))
                        except Invalid:
                            continue  # the node changed since `fresh`: as on a Conflict
                        ours = True  # from here on, even if a later write fails (dry-run: as if)
                        self._tainted_at.setdefault(action.uid, self._now())
                        if written:
                            log.warning("node %s tainted %s", action.node, OUT_OF_SERVICE_KEY)
                            continue  # re-read: the wait and the delete see the tainted node
                    elif taints and not ours:
                        if fresh.annotations.get(ANN_TAINTED) == "true":
                            ours = True  # our marker: a taint of ours whose reply was lost
                        else:
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
                        if mode.deletes:
                            # Time passed while waiting: the DELETE is decided on a new read.
                            ev = await self.evidence(action, Step.DELETE_NODE)
                            if (stop := self._removal_stop(ev, mode)) is not None:
                                result = stop
                                break
                    if mode.deletes:
                        if await self.writes.delete_node(ev):
                            log.warning(
                                "deleted node %s (Ready=Unknown, kubelet silent in a read "
                                "made right before)",
                                action.node,
                            )
                    else:
                        success = dataclasses.replace(action.success, tainted=ours)
                        await self._annotate(action, success)
                    result = Result(Outcome.OK)
                    break
                except Conflict:
                    continue  # changed under us: re-read, re-check health, try again
                except NotFound:
                    result = Result(Outcome.OK)
                    break
        except NodeReplaced:
            result = Result(Outcome.GONE, detail="node replaced (another uid under its name)")
        except Held as held:
            result = self._held(action, held)
        except (MalformedNode, ApiError) as exc:
            result = self._failed(action, rec, exc)
        if result.outcome is not Outcome.BLOCKED:
            self._tainted_at.pop(action.uid, None)
            self.volumes.release(action.node)
        # Whatever the outcome, say whose the taint is: the record must neither lose nor
        # claim it.
        return dataclasses.replace(result, tainted=ours) if taints else result

    async def _record_intent(self, action: Action, rec: Record, step: Step) -> Result | None:
        """Before the episode's first taint or Node DELETE: its intent, written and answered
        (so a leader that dies right after the write leaves the removal counted for the
        next). None: recorded (or nothing will be removed: dry-run); a BLOCKED result: held,
        by a gate (no intent written for a removal that cannot happen now) or because the
        Event could not be written (`removal-unrecorded`)."""
        if self._cfg.dry_run:
            return None
        intent = removal_intent(action.node, rec)
        if intent in self._intents:
            return None
        if (why := self._guard.hold(action.node, step)) is not None:
            return Result(Outcome.BLOCKED, BLOCKED_RETRY, why)
        message = (
            f"removal of node {action.node} begins: recorded before its out-of-service taint "
            "or Node DELETE, it counts against --max-removals-per-hour (for a new leader too); "
            "each write still waits for a fresh read that shows the kubelet silent"
        )
        try:
            await self._guard.record_removal(action.node, action.uid, intent, message)
        except ApiError as exc:
            BLOCKED.labels(Blocked.REMOVAL_UNRECORDED).inc()
            delay = Backoff(base=2.0, cap=60.0, rng=self._rng, failures=rec.failures).next_delay()
            log.warning(
                "removal of node %s held: its intent Event could not be written (%s); "
                "retry in %.0fs (%s)",
                action.node,
                exc,
                delay,
                Blocked.REMOVAL_UNRECORDED,
            )
            return Result(Outcome.BLOCKED, delay, Blocked.REMOVAL_UNRECORDED)
        if len(self._intents) >= 4096:
            self._intents.clear()  # bounded: a repeat costs one POST answered 409
        self._intents.add(intent)
        return None

    def _removal_stop(self, ev: Evidence, mode: RemovalMode) -> Result | None:
        """What a fresh read says before a removal step: gone (done, unless the Node was to
        be kept), a gate or a flap (stopped), a live kubelet (held); None: go on."""
        if ev.stop is Outcome.GONE:
            return Result(Outcome.OK if mode.deletes else Outcome.GONE)
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
            why = self._guard.hold(action.node, Step.DELETE_NODE)
            if why is not None:
                return Result(Outcome.BLOCKED, BLOCKED_RETRY, why)
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

    async def _restore(self, action: Action, rec: Record) -> Result:
        fresh = await self.writes.read(action.node, action.uid)
        if fresh is None:
            return Result(Outcome.GONE)
        if unhealthy(fresh, self._config_for(action.node)):
            # The view still says healthy: wait for it to catch up, with backoff.
            delay = Backoff(base=0.5, cap=10.0, rng=self._rng, failures=rec.failures).next_delay()
            return Result(Outcome.FAILED, delay, "unhealthy again")
        try:
            uncordoned, untainted = await self.writes.restore(
                fresh,
                annotations_for(action.success),
                cordoned=rec.cordoned,
                tainted=rec.tainted,
            )
        except Invalid:  # a test op failed: the node changed since `fresh`
            return Result(Outcome.FAILED, 0.5, "node changed; retrying")
        self._forced.pop(action.uid, None)
        self._deleting.pop(action.uid, None)
        if untainted:
            ACTIONS.labels("untaint", "ok").inc()
        ACTIONS.labels("uncordon" if uncordoned else "restore", "ok").inc()
        log.info(
            "node %s restored (uncordoned=%s, untainted=%s)", action.node, uncordoned, untainted
        )
        return Result(Outcome.OK)


# Blocked reasons that are controller-wide gates (looked at again soon), as opposed to a
# live kubelet's unfinished drain (looked at again after LIVE_DRAIN_RETRY).
_GATE_REASONS: frozenset[str] = GATES
