"""The write path: every mutating API call the controller makes goes through here.

One rule, structural rather than case by case (issue 20):
- **Leadership first.** Every write, destructive or not (annotations, restores, Events, policy
  status), asks the act-gate (`may_act`, the Lease with its margin) right before it is sent;
  without it: NotLeader, nothing sent. This is the only place the controller asks it.
- **Evidence, then the write, nothing in between.** A destructive step (cordon, eviction,
  force-delete, fence, out-of-service taint, Node DELETE) is allowed only by an `Evidence`: a
  fresh read of the Node by uid and, when heartbeat Leases are followed, of its heartbeat
  Lease, both sent at once. Right before the write, with no request in between, the write
  path checks that the evidence was answered less than EVIDENCE_SLACK ago (`StaleEvidence`
  otherwise: slow work crept between the read and the write), asks `Gates.hold(node, step)`
  (pause, unknown pause, policies known, breaker global and per pool, watch freshness,
  exclusion, concurrency and removal budgets) and, for a force (grace-1 eviction,
  force-delete, fence, taint, DELETE), that the evidence shows the kubelet silent. A live
  kubelet's evictions need no read (they are graceful), but ask the gates before each one.
- **Preconditions.** Node writes carry the uid of the evidence and its resourceVersion (a
  merge patch with `metadata.resourceVersion`, a JSON patch with a `test` op, a DELETE with
  preconditions): a Node that changed since the read is not written (409 / 422: read again).
  Pod writes carry the pod's uid.
- **Ownership with the change.** The marker that says a cordon or a taint is noderecover's
  (`noderecover.io/cordoned`, `noderecover.io/out-of-service`) is written in the same patch as
  the change, so a lost reply or a failover never leaves a change we cannot recognise as
  ours. A cordon or taint already on the Node in the fresh read, without our marker, is the
  operator's: never claimed. Markers are removed only by `restore`, together with what they
  mark, guarded by the resourceVersion; annotation writes never remove them.
- **Fencing** is a force like the others: asked right before, on the evidence. What is
  fenced is bound to the fresh read (the Node's uid, its providerID or BMC address), and the
  fence runs to the power state read back Off, bounded (`noderecover.fencing.runner`).
- **The fence mark** (`request_fence`: `noderecover.io/fence-requested=<uid>/<bootID>`, the
  request to the node's agent to fence it) is a force like the others. A step decided on the
  agent's self-fence (core.proof SELF_FENCED) reads the agent's Lease again with the Node,
  and the mark must still be in that read.
- **Dry-run** is decided here: the write is logged and counted, nothing is sent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote

import anyio

from noderecover.base.clock import Clock
from noderecover.base.metrics import ACTIONS, MALFORMED_OBJECTS
from noderecover.core.agent import mark_value
from noderecover.core.fencing import FenceSpec, NoTarget, target_for
from noderecover.core.machine import (
    FLAPPING,
    HEALTHY_AGAIN,
    KUBELET_ALIVE,
    Outcome,
    evidence_hold,
    kubelet_alive,
    ready_since,
)
from noderecover.core.nodes import (
    ANN_CORDONED,
    ANN_FENCE_REQUESTED,
    ANN_TAINTED,
    OUT_OF_SERVICE_KEY,
    OUT_OF_SERVICE_TAINT,
    NodeObs,
    parse_node,
)
from noderecover.core.proof import NO_PROOF, Proof, ProofKind, backed
from noderecover.core.reasons import Blocked
from noderecover.core.settings import Config
from noderecover.fencing.provider import Credentials, FenceError, FenceProvider
from noderecover.fencing.runner import Fenced, fence_node
from noderecover.kube import mutating
from noderecover.kube.client import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    Conflict,
    KubeClient,
    NotFound,
    NotLeader,
)
from noderecover.kube.events import EVENTS_NAMESPACE, event_body

log = logging.getLogger("noderecover.controller.writes")

# The most local time (no request) allowed between the answer of the read that decides a
# destructive write and the write itself.
EVIDENCE_SLACK = 1.0

# Markers of what noderecover owns on a Node: removed only with what they mark.
OWNERSHIP = frozenset({ANN_CORDONED, ANN_TAINTED})


class Step(StrEnum):
    """A write's kind: what the gates are asked about."""

    CORDON = "cordon"
    EVICT = "evict"  # graceful eviction (a live kubelet finishes it)
    EVICT_DEAD = "evict-dead"  # gracePeriodSeconds=1: only on a silent kubelet
    FORCE_DELETE = "force-delete"
    FENCE = "fence"
    TAINT = "taint"
    DELETE_NODE = "delete"


# Steps that act as if the kubelet were gone: the evidence must show it silent.
FORCE = frozenset({Step.EVICT_DEAD, Step.FORCE_DELETE, Step.FENCE, Step.TAINT, Step.DELETE_NODE})

EVIDENCE_STALE = Blocked.EVIDENCE_STALE
NOT_PROVEN_OFF = Blocked.NOT_PROVEN_OFF
# Why a fresh read stopped a step decided on the cloud's shutdown taint (a flap, not a hold).
SHUTDOWN_GONE = "shutdown taint gone"


class Gates(Protocol):
    def hold(self, node: str, step: Step) -> str | None:
        """Every controller gate for `step` on `node` now (None: open)."""
        ...


class Leases(Protocol):
    async def renewing_now(self, node: str) -> bool:
        """A fresh read of the node's heartbeat Lease: renewing (or unreadable)?"""
        ...

    async def self_fenced_now(self, node: str, uid: str) -> bool:
        """A fresh read of the node's agent Lease: does the self-fence proof still hold?"""
        ...

    def fence_requested(self, node: str, uid: str) -> None:
        """Our fence mark for the node's agent was written (its answer is in)."""
        ...


class OpenGates:
    """No controller around (unit tests of the executor alone): every gate open."""

    def hold(self, node: str, step: Step) -> str | None:
        return None


class NoLeases:
    async def renewing_now(self, node: str) -> bool:
        return False

    async def self_fenced_now(self, node: str, uid: str) -> bool:
        return False  # no agent Leases: no self-fence

    def fence_requested(self, node: str, uid: str) -> None:
        return None


class Held(Exception):
    """A gate closed (or the evidence did not allow the step) right before a write."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StaleEvidence(Held):
    """A destructive write asked for on evidence answered too long ago: a bug of the caller
    (slow work between the read and the write). Held, never written."""

    def __init__(self, age: float) -> None:
        super().__init__(EVIDENCE_STALE)
        self.age = age


class NodeReplaced(Exception):
    """A write carrying the node's uid was refused (409): the name has another node now."""


class MalformedNode(Exception):
    """The fresh read of a node is malformed: the step is not taken (never acted on)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a fresh read of the node (and its heartbeat Lease) says, with every gate applied.

    `stop` set: the step must not happen (GONE: deleted or replaced; HEALTHY: healthy again
    or flapped, `transition` newer than the one decided on; BLOCKED: `reason`).
    """

    stop: Outcome | None = None
    reason: str = ""
    dead: bool = False  # Ready=Unknown (and the heartbeat Lease, when read, not renewing)
    confirmed: bool = False  # dead, and the heartbeat Lease read stale for its whole window
    transition: float | None = None
    fresh: NodeObs | None = None  # the read itself (when it did not stop the step)
    node: str = ""
    uid: str = ""
    answered: float = float("-inf")  # monotonic time the read's answers were in
    annotations_present: bool = True  # the Node has a metadata.annotations object
    # The proof that the node is off the step was decided on, backed by this read (a shutdown
    # taint must be in it; core.proof).
    proof: Proof = NO_PROOF


def node_path(node: str) -> str:
    return f"/api/v1/nodes/{quote(node, safe='')}"


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"


def _ptr(key: str) -> str:
    """A JSON pointer token (RFC 6901) for an annotation key."""
    return key.replace("~", "~0").replace("/", "~1")


class Writer:
    """Leadership, then the mutating call: the door for writes that take nothing away
    (Events, policy status). Raises NotLeader, unsent, without leadership."""

    def __init__(self, kube: KubeClient, may_act: Callable[[], bool] | None = None) -> None:
        self._kube = kube
        self._may_act = may_act or (lambda: True)

    async def send(
        self,
        method: mutating.Mutating,
        path: str,
        *,
        body: JSON | list[JSON] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        if not self._may_act():
            raise NotLeader
        return await mutating.send(
            self._kube, method, path, body=body, content_type=content_type, timeout=timeout
        )


class WritePath:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        cfg: Config,
        may_act: Callable[[], bool],
        *,
        gates: Gates | None = None,
        leases: Leases | None = None,
        config_for: Callable[[str], Config] | None = None,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._cfg = cfg
        self._may_act = may_act
        self.gates: Gates = gates or OpenGates()
        self._leases: Leases = leases or NoLeases()
        self._config_for: Callable[[str], Config] = config_for or (lambda _node: cfg)
        self.writer = Writer(kube, may_act)  # Events, policy status: leadership only

    @property
    def dry_run(self) -> bool:
        return self._cfg.dry_run

    # -- reads that decide ------------------------------------------------------------

    async def _read_raw(self, node: str) -> JSON | None:
        try:
            return await self._kube.request("GET", node_path(node))
        except NotFound:
            return None

    def _parse(self, node: str, uid: str, raw: JSON | None) -> NodeObs | None:
        if raw is None:
            return None
        cfg = self._config_for(node)
        obs = parse_node(raw, cfg.relevant_labels, cfg.kept_conditions)
        if obs.uid and obs.uid != uid:
            return None  # another node under this name: whatever it looks like, not ours
        if obs.malformed is not None:
            MALFORMED_OBJECTS.labels("nodes", obs.malformed).inc()
            raise MalformedNode(obs.malformed)
        return obs

    async def read(self, node: str, uid: str) -> NodeObs | None:
        """A fresh GET of the node; None when it is gone or was replaced (uid changed).

        Raises MalformedNode when the object cannot be read safely."""
        return self._parse(node, uid, await self._read_raw(node))

    async def evidence(
        self,
        node: str,
        uid: str,
        transition: float | None,
        step: Step,
        proof: Proof = NO_PROOF,
    ) -> Evidence:
        """Read the node and (for a force, heartbeat Leases followed) its heartbeat Lease, at
        once, and apply every gate for `step` to that read. `proof`: why the step believes the
        node off (core.proof); a read that no longer backs it (the cloud's shutdown taint
        gone) is evidence of life: HEALTHY, the step stops and the grace restarts. Raises
        MalformedNode, ApiError, NotLeader."""
        self._leader()
        raw: list[JSON | None] = [None]
        renewing = [False]
        self_fenced = [False]
        failed: list[BaseException] = []
        # The heartbeat Lease is part of the evidence for every force, whatever
        # --watch-node-leases says (that flag is about following silent nodes' Leases between
        # steps): a partitioned kubelet that renews it is alive.
        lease = step in FORCE

        async def read_node() -> None:
            try:
                raw[0] = await self._read_raw(node)
            except Exception as exc:  # ApiError, mostly: re-raised below, unwrapped
                failed.append(exc)

        async def read_lease() -> None:
            try:
                renewing[0] = await self._leases.renewing_now(node)
            except Exception as exc:
                failed.append(exc)

        async def read_agent_lease() -> None:
            try:
                self_fenced[0] = await self._leases.self_fenced_now(node, uid)
            except Exception as exc:
                failed.append(exc)

        # The reads at once: the decision is no older than the slowest of them.
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_node)
            if lease:
                tg.start_soon(read_lease)
            if proof.kind is ProofKind.SELF_FENCED:
                tg.start_soon(read_agent_lease)
        if failed:
            raise failed[0]
        answered = self._clock.monotonic()
        fresh = self._parse(node, uid, raw[0])
        if fresh is None:
            return Evidence(Outcome.GONE, node=node, uid=uid, answered=answered)
        seen = ready_since(fresh)
        newer = seen if seen is not None and transition is not None and seen > transition else None
        why = evidence_hold(fresh, transition, self._config_for(node))
        if why in (HEALTHY_AGAIN, FLAPPING):
            return Evidence(Outcome.HEALTHY, why, transition=newer, node=node, uid=uid)
        if why is None and not backed(proof, fresh):
            log.warning(
                "node %s: the step was decided on %s, and the fresh read no longer shows it: "
                "a sign of life, no force",
                node,
                proof,
            )
            return Evidence(Outcome.HEALTHY, SHUTDOWN_GONE, node=node, uid=uid)
        if why is None and proof.kind is ProofKind.SELF_FENCED and not self_fenced[0]:
            # The agent's Lease changed since (or cannot be read): no proof in this read.
            log.warning("node %s: the self-fence no longer holds in a fresh read: no force", node)
            return Evidence(Outcome.BLOCKED, NOT_PROVEN_OFF, node=node, uid=uid, answered=answered)
        dead = not kubelet_alive(fresh, renewing[0])
        meta = raw[0].get("metadata") if raw[0] is not None else None
        present = isinstance(meta, dict) and isinstance(meta.get("annotations"), dict)
        ev = Evidence(
            dead=dead,
            # Confirmed gone: its heartbeat Lease was read and has not changed for its window.
            confirmed=dead and lease and self._cfg.watch_node_leases,
            fresh=fresh,
            node=node,
            uid=uid,
            answered=answered,
            annotations_present=present,
            proof=proof,
        )
        if why is None:
            why = self.gates.hold(node, step)
        if why is not None:
            return Evidence(Outcome.BLOCKED, why, node=node, uid=uid, answered=answered)
        return ev

    # -- the checks right before a write ------------------------------------------------

    def may_write(self) -> bool:
        """The act-gate is open now (leadership, with its margin; always in dry-run)."""
        return self._cfg.dry_run or self._may_act()

    def _leader(self) -> None:
        if not self.may_write():
            raise NotLeader

    def _allow(self, step: Step, node: str, ev: Evidence | None) -> None:
        """Raise unless `step` on `node` may be written now (see the module's rules)."""
        self._leader()
        if ev is not None:
            if ev.stop is not None or ev.fresh is None or ev.node != node:
                raise Held(ev.reason or EVIDENCE_STALE)
            age = self._clock.monotonic() - ev.answered
            if age > EVIDENCE_SLACK:
                log.error("bug: %s of %s asked for on evidence %.1fs old: held", step, node, age)
                raise StaleEvidence(age)
            if step in FORCE and not ev.dead:
                raise Held(KUBELET_ALIVE)
            # `auto` taints only a node proven off, and the proof is in this read.
            auto = self._config_for(node).removal == "auto"
            if step is Step.TAINT and auto and not (ev.proof.proven and backed(ev.proof, ev.fresh)):
                raise Held(NOT_PROVEN_OFF)
        elif step is not Step.EVICT:
            raise Held(EVIDENCE_STALE)
        if (why := self.gates.hold(node, step)) is not None:
            raise Held(why)

    def _dry(self, what: str, target: str) -> bool:
        if self._cfg.dry_run:
            log.info("dry-run: would %s %s", what, target)
            ACTIONS.labels(what, "dry-run").inc()
            return True
        return False

    async def _send(
        self,
        method: mutating.Mutating,
        path: str,
        body: JSON | list[JSON] | None,
        content_type: str = "application/json",
    ) -> JSON:
        return await mutating.send(self._kube, method, path, body=body, content_type=content_type)

    async def _merge_node(self, node: str, uid: str, body: JSON) -> None:
        """A merge patch of the node with this uid (Conflict -> NodeReplaced when the uid
        differs; the caller re-reads on a resourceVersion conflict)."""
        meta = {**body.get("metadata", {}), "uid": uid}
        try:
            await self._send("PATCH", node_path(node), {**body, "metadata": meta}, MERGE_PATCH)
        except Conflict as exc:
            if "resourceVersion" in meta:
                raise
            raise NodeReplaced(node) from exc

    # -- records other replicas count on -------------------------------------------------

    async def record(self, name: str, node: str, uid: str, reason: str, message: str) -> None:
        """Write an Event about `node` under the name `name` now and wait for the answer: a
        record a later leader counts on (the removal intent), not a notice (those go through
        the queued EventRecorder). Leadership is asked; one call, bounded by the client's
        timeout, no retry here (the caller holds and retries with backoff). A 409 means an
        Event of that name exists: a lost reply or an earlier leader wrote it."""
        self._leader()
        body = event_body(name, node, uid, reason, message, "Warning", self._clock.wall())
        with contextlib.suppress(Conflict):
            await self._send("POST", f"/api/v1/namespaces/{EVENTS_NAMESPACE}/events", body)

    # -- destructive writes --------------------------------------------------------------

    async def cordon(self, ev: Evidence, annotations: Mapping[str, str | None]) -> bool:
        """Cordon the node of `ev` with our annotations, in one patch guarded by its uid and
        resourceVersion. Returns whether the cordon is ours: not already on the node, or
        already on it with our marker (a cordon of ours whose reply was lost). Raises Conflict
        when the node changed since the read."""
        self._allow(Step.CORDON, ev.node, ev)
        fresh = ev.fresh
        assert fresh is not None
        ours = not fresh.unschedulable or fresh.annotations.get(ANN_CORDONED) == "true"
        ann = {k: v for k, v in annotations.items() if k not in OWNERSHIP}
        ann[ANN_CORDONED] = "true" if ours else None
        if fresh.annotations.get(ANN_TAINTED) == "true":
            ann[ANN_TAINTED] = "true"
        if ann[ANN_CORDONED] is None and ANN_CORDONED not in fresh.annotations:
            del ann[ANN_CORDONED]
        if self._dry("cordon", ev.node):
            return ours
        body: JSON = {
            "metadata": {"resourceVersion": fresh.resource_version, "annotations": ann},
            "spec": {"unschedulable": True},
        }
        await self._merge_node(ev.node, ev.uid, body)
        ACTIONS.labels("cordon", "ok").inc()
        return ours

    async def evict(
        self, node: str, namespace: str, name: str, uid: str, ev: Evidence | None
    ) -> None:
        """Evict one pod (uid precondition). With evidence of a silent kubelet: grace 1;
        without evidence: graceful, the gates asked right before. Raises ApiError."""
        step = Step.EVICT_DEAD if ev is not None else Step.EVICT
        self._allow(step, node, ev)
        if self._dry("evict", f"{namespace}/{name}"):
            return
        options: JSON = {"preconditions": {"uid": uid}}
        if ev is not None:
            options["gracePeriodSeconds"] = 1
        body: JSON = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": options,
        }
        await self._send("POST", f"{pod_path(namespace, name)}/eviction", body)

    async def force_delete(self, ev: Evidence, namespace: str, name: str, uid: str) -> bool:
        """Delete a pod with grace 0 (uid precondition); False in dry-run. Raises ApiError."""
        self._allow(Step.FORCE_DELETE, ev.node, ev)
        if self._dry("force-delete", f"{namespace}/{name}"):
            return False
        body: JSON = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        await self._send("DELETE", pod_path(namespace, name), body)
        return True

    async def fence(
        self,
        ev: Evidence,
        provider: FenceProvider,
        spec: FenceSpec,
        creds: Credentials,
        timeout: float,
        transition: float | None = None,
    ) -> Fenced | None:
        """Fence the machine of `ev` through `provider` and read it back off, bounded by
        `timeout`; None in dry-run. What is fenced is what the fresh read shows: the Node's
        uid with its providerID or BMC address (core.fencing.target_for), never the name
        alone, so a machine re-created under the name is not the target.

        The provider's check (a read of the BMC or the cloud API) comes first; right before
        each power request the rule is applied again: leadership, the gates, and evidence no
        older than EVIDENCE_SLACK - read again (Node and heartbeat Lease) when the check took
        longer, and the machine it names must still be the target. Raises Held (a gate or the
        evidence), FenceError (not proven off: its Blocked reason)."""
        fresh = ev.fresh
        if fresh is None or ev.stop is not None:
            raise Held(ev.reason or EVIDENCE_STALE)
        try:
            target = target_for(spec, fresh)  # pure: nothing between the checks and the call
        except NoTarget as exc:
            raise FenceError(Blocked.FENCE_NO_TARGET, f"node {ev.node}: {exc}") from None
        self._allow(Step.FENCE, ev.node, ev)
        if self._dry("fence", str(target)):
            return None
        latest = ev

        async def right_before() -> None:
            nonlocal latest
            if self._clock.monotonic() - latest.answered > EVIDENCE_SLACK:
                latest = await self.evidence(ev.node, ev.uid, transition, Step.FENCE)
                if latest.fresh is not None and latest.stop is None:
                    try:
                        again = target_for(spec, latest.fresh)
                    except NoTarget as exc:
                        raise FenceError(Blocked.FENCE_NO_TARGET, str(exc)) from None
                    if again != target:
                        raise FenceError(
                            Blocked.FENCE_NO_TARGET,
                            f"node {ev.node}: what it names changed during the fence "
                            f"({target} -> {again}): not fenced",
                        )
            self._allow(Step.FENCE, ev.node, latest)

        return await fence_node(
            provider,
            target,
            creds,
            spec.action,
            timeout=timeout,
            clock=self._clock,
            before_fence=right_before,
        )

    async def taint(self, ev: Evidence, annotations: Mapping[str, str | None]) -> bool:
        """Add the out-of-service taint and our marker of it (with `annotations`) in one JSON
        patch guarded by the resourceVersion; False in dry-run. Raises Invalid when the node
        changed since the read (a test op failed)."""
        self._allow(Step.TAINT, ev.node, ev)
        fresh = ev.fresh
        assert fresh is not None
        if self._dry("taint", ev.node):
            return False
        ann = {k: v for k, v in annotations.items() if k not in OWNERSHIP}
        ann[ANN_TAINTED] = "true"
        if fresh.annotations.get(ANN_CORDONED) == "true":
            ann[ANN_CORDONED] = "true"
        ops: list[JSON] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": fresh.resource_version}
        ]
        if fresh.taints:
            ops.append({"op": "add", "path": "/spec/taints/-", "value": OUT_OF_SERVICE_TAINT})
        else:
            ops.append({"op": "add", "path": "/spec/taints", "value": [OUT_OF_SERVICE_TAINT]})
        ops += _annotation_ops(fresh, ann, ev.annotations_present)
        await self._send("PATCH", node_path(ev.node), ops, JSON_PATCH)
        ACTIONS.labels("taint", "ok").inc()
        return True

    async def delete_node(self, ev: Evidence) -> bool:
        """DELETE the Node, on the uid and resourceVersion of the read; False in dry-run."""
        self._allow(Step.DELETE_NODE, ev.node, ev)
        fresh = ev.fresh
        assert fresh is not None
        if self._dry("delete", ev.node):
            return False
        precondition = {"uid": fresh.uid, "resourceVersion": fresh.resource_version}
        await self._send("DELETE", node_path(ev.node), {"preconditions": precondition})
        ACTIONS.labels("delete", "ok").inc()
        return True

    async def request_fence(self, ev: Evidence) -> bool:
        """Ask the node's agent to fence it: `noderecover.io/fence-requested=<uid>/<bootID>` on
        the Node
        of `ev` (the boot its kubelet reported in that read: the agent of a later boot ignores
        it), in a merge patch guarded by its uid and resourceVersion (a force: the gates
        and a silent kubelet in `ev`, asked right before). The mark names the Node's uid, so
        it is ours and of this Node only (a Node re-created under the name ignores it); it
        goes with the Node or with our restore. False in dry-run. Raises Conflict when the
        node changed since the read."""
        self._allow(Step.FENCE, ev.node, ev)
        fresh = ev.fresh
        assert fresh is not None
        if self._dry("request-fence", ev.node):
            return False
        body: JSON = {
            "metadata": {
                "resourceVersion": fresh.resource_version,
                "annotations": {ANN_FENCE_REQUESTED: mark_value(ev.uid, fresh.boot_id)},
            }
        }
        await self._merge_node(ev.node, ev.uid, body)
        self._leases.fence_requested(ev.node, ev.uid)
        ACTIONS.labels("request-fence", "ok").inc()
        return True

    # -- writes that take nothing away -----------------------------------------------------

    async def annotate(self, node: str, uid: str, annotations: Mapping[str, str | None]) -> None:
        """Write our phase annotations (uid-guarded). Never touches an ownership marker:
        only `restore` removes one, with what it marks, and only `cordon` and `taint` put one
        on, in the patch that makes what it marks. An annotation write that carried a marker
        from the record would claim what it does not mark (simulation seed 332191: a record
        left from the last episode planted `cordoned` on an uncordoned node; the operator's
        cordon that followed was taken for ours and undone)."""
        self._leader()
        if self._dry("annotate", node):
            return
        ann = {k: v for k, v in annotations.items() if k not in OWNERSHIP}
        await self._merge_node(node, uid, {"metadata": {"annotations": ann}})
        ACTIONS.labels("annotate", "ok").inc()

    async def restore(
        self,
        fresh: NodeObs,
        clear: Mapping[str, str | None],
        *,
        cordoned: bool = False,
        tainted: bool = False,
        present: bool = True,
    ) -> tuple[bool, bool]:
        """Undo what our markers on `fresh` say is ours, and clear our annotations, in one
        JSON patch guarded by the resourceVersion.

        Only the markers in the fresh read decide, never the record (`cordoned`, `tainted`:
        logged when they disagree): a cordon or taint of ours always carries its marker (one
        patch), so one without it is someone else's - an operator's cordon set after our own
        restore, whose reply was lost, is not undone by the retry (found by the simulation,
        seed 30287 with every fault kind).

        Returns (uncordoned, untainted). Raises Invalid when the node changed since `fresh`."""
        self._leader()
        owned = ownership(fresh)
        if (cordoned and fresh.unschedulable and not owned["cordoned"]) or (
            tainted and fresh.has_taint(OUT_OF_SERVICE_KEY) and not owned["tainted"]
        ):
            log.info(
                "node %s: the record says the cordon/taint is ours, the node carries no "
                "marker of it: someone else's, left in place",
                fresh.name,
            )
        cordoned = bool(owned["cordoned"])
        idx = next((i for i, t in enumerate(fresh.taints) if t.key == OUT_OF_SERVICE_KEY), None)
        tainted = bool(owned["tainted"]) and idx is not None
        if self._dry("restore", fresh.name):
            return cordoned, tainted
        ops: list[JSON] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": fresh.resource_version}
        ]
        if tainted:
            ops += [
                {"op": "test", "path": f"/spec/taints/{idx}/key", "value": OUT_OF_SERVICE_KEY},
                {"op": "remove", "path": f"/spec/taints/{idx}"},
            ]
        if cordoned:
            ops.append({"op": "replace", "path": "/spec/unschedulable", "value": False})
        ops += _annotation_ops(fresh, dict(clear), present)
        if len(ops) > 1:
            await self._send("PATCH", node_path(fresh.name), ops, JSON_PATCH)
        return cordoned, tainted


def _annotation_ops(fresh: NodeObs, ann: Mapping[str, str | None], present: bool) -> list[JSON]:
    """JSON patch ops that set (value) or remove (None) our annotation keys on `fresh`."""
    sets = {k: v for k, v in ann.items() if v is not None}
    if not present:
        return [{"op": "add", "path": "/metadata/annotations", "value": sets}] if sets else []
    ops: list[JSON] = []
    for key, value in ann.items():
        path = f"/metadata/annotations/{_ptr(key)}"
        if value is not None:
            ops.append({"op": "add", "path": path, "value": value})
        elif key in fresh.annotations:
            ops.append({"op": "remove", "path": path})
    return ops


def ownership(fresh: NodeObs) -> Mapping[str, Any]:
    """What our markers on a Node say is ours (for logs and tests)."""
    return {
        "cordoned": fresh.annotations.get(ANN_CORDONED) == "true" and fresh.unschedulable,
        "tainted": fresh.annotations.get(ANN_TAINTED) == "true"
        and fresh.has_taint(OUT_OF_SERVICE_KEY),
    }
