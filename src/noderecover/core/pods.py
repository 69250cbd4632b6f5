"""A pod on a node being drained: total parsing and the per-pod drain rule. Pure.

`parse_pod` is total, like `core.nodes.parse_node`. A pod that cannot be read safely comes back
with `malformed` set to one of POD_MALFORMED_REASONS, and `plan` says HOLD:
- it is never evicted or force-deleted (we cannot tell whether it is a DaemonSet or mirror
  pod, whether it is terminating, or which object a uid precondition would protect);
- the drain never reports the node empty while it is listed.
What "read safely" means (only what decisions read is checked; the rest may be anything):
metadata.name and metadata.namespace are non-empty strings usable as a URL path segment;
metadata.uid a non-empty string; deletionTimestamp absent or RFC 3339; annotations an object
whose mirror annotation, if present, is a string; ownerReferences a list of objects with a
string kind and a boolean (or absent) controller, at most one controller; spec an object
whose nodeName is the node being drained.

`plan` (see its docstring): DaemonSet and mirror pods are skipped; FORCE only when the
freshest evidence says the kubelet is gone and the drain timeout passed; a pod forced once
lingers (held by finalizers) instead of being forced again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeGuard

from noderecover.core.nodes import (
    BAD_METADATA,
    BAD_SPEC,
    MISSING_NAME,
    MISSING_UID,
    NOT_AN_OBJECT,
    parse_time,
)
from noderecover.core.reasons import Blocked

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

# Why a pod cannot be used: the `reason` label of noderecover_malformed_objects_total with
# resource="pods" (the node reasons, where they mean the same thing).
BAD_LIST = "bad-list"  # the LIST answer itself: items, metadata or continue token unreadable
POD_MALFORMED_REASONS = (NOT_AN_OBJECT, MISSING_NAME, MISSING_UID, BAD_METADATA, BAD_SPEC, BAD_LIST)

# Blocked reasons (core.reasons; noderecover_blocked_total) of a drain.
MALFORMED_POD = Blocked.MALFORMED_POD  # an unreadable pod is listed
PDB_BLOCKED = Blocked.PDB_BLOCKED  # an eviction answered 429
MULTIPLE_PDBS = Blocked.MULTIPLE_PDBS  # a pod covered by two PDBs: the API refuses to evict
PODS_TERMINATING = Blocked.PODS_TERMINATING  # a live kubelet has not finished its pods in time
POD_FINALIZERS = Blocked.POD_FINALIZERS  # force-deleted once, still listed: held by finalizers


@dataclass(frozen=True, slots=True)
class PodObs:
    namespace: str
    name: str
    uid: str
    owner_kind: str
    mirror: bool
    phase: str
    deleting: bool
    malformed: str | None = None  # one of POD_MALFORMED_REASONS: never evicted or forced
    grace: float = 30.0  # deletionGracePeriodSeconds once deleting, else its termination grace
    claims: bool = False  # mounts a PersistentVolumeClaim (a StatefulSet's volume, say)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class _Unreadable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_pod(obj: object, node: str | None = None) -> PodObs:
    """Raw pod JSON from a LIST -> PodObs. Never raises (see the module doc).

    With `node`, the pod must say it is bound to that node (the LIST asked for exactly that).
    """
    try:
        return _parse_pod(obj, node)
    except _Unreadable as bad:
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        meta = meta if isinstance(meta, Mapping) else {}
        ns, name, uid = (meta.get(k) for k in ("namespace", "name", "uid"))
        return PodObs(
            namespace=ns if isinstance(ns, str) else "",
            name=name if isinstance(name, str) else "",
            uid=uid if isinstance(uid, str) else "",
            owner_kind="",
            mirror=False,
            phase="",
            deleting=False,
            malformed=bad.reason,
        )


def _parse_pod(obj: object, node: str | None) -> PodObs:
    if not isinstance(obj, Mapping):
        raise _Unreadable(NOT_AN_OBJECT)
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise _Unreadable(MISSING_NAME if meta is None else BAD_METADATA)
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
    if not _path_segment(namespace) or not _path_segment(name):
        raise _Unreadable(MISSING_NAME)
    if not isinstance(uid, str) or not uid:
        raise _Unreadable(MISSING_UID)  # the force-delete precondition needs it
    deletion = meta.get("deletionTimestamp")
    if deletion is not None and parse_time(deletion) is None:
        raise _Unreadable(BAD_METADATA)
    annotations = meta.get("annotations")
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, Mapping):
        raise _Unreadable(BAD_METADATA)
    mirror = MIRROR_ANNOTATION in annotations
    if mirror and not isinstance(annotations[MIRROR_ANNOTATION], str):
        raise _Unreadable(BAD_METADATA)
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise _Unreadable(BAD_SPEC)
    bound = spec.get("nodeName")
    if bound is not None and not isinstance(bound, str):
        raise _Unreadable(BAD_SPEC)
    if node is not None and bound != node:
        raise _Unreadable(BAD_SPEC)
    status = obj.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    # Only used to order and time forcing on a dead kubelet; odd values fall back safely.
    grace = meta.get("deletionGracePeriodSeconds")
    if not isinstance(grace, int) or isinstance(grace, bool):
        grace = spec.get("terminationGracePeriodSeconds")
    volumes = spec.get("volumes")
    claims = isinstance(volumes, list) and any(
        isinstance(v, Mapping) and isinstance(v.get("persistentVolumeClaim"), Mapping)
        for v in volumes
    )
    return PodObs(
        namespace=namespace,
        name=name,
        uid=uid,
        owner_kind=_owner_kind(meta.get("ownerReferences")),
        mirror=mirror,
        phase=phase if isinstance(phase, str) else "",  # informational: no decision reads it
        deleting=deletion is not None,
        grace=float(grace) if isinstance(grace, int) and not isinstance(grace, bool) else 30.0,
        claims=claims,
    )


def _path_segment(value: object) -> TypeGuard[str]:
    """A name usable as one URL path segment (what the API server accepts as a name)."""
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value


def _owner_kind(owners: object) -> str:
    """The kind of the controlling owner, else of the first owner, else ''."""
    if owners is None:
        return ""
    if not isinstance(owners, list):
        raise _Unreadable(BAD_METADATA)
    kinds: list[str] = []
    controllers: list[str] = []
    for ref in owners:
        if not isinstance(ref, Mapping):
            raise _Unreadable(BAD_METADATA)
        kind, controller = ref.get("kind"), ref.get("controller")
        if not isinstance(kind, str) or not kind:
            raise _Unreadable(BAD_METADATA)
        if controller is not None and not isinstance(controller, bool):
            raise _Unreadable(BAD_METADATA)
        kinds.append(kind)
        if controller:
            controllers.append(kind)
    if len(controllers) > 1:
        # The API server allows one controller: which one is meant decides SKIP or not.
        raise _Unreadable(BAD_METADATA)
    return controllers[0] if controllers else (kinds[0] if kinds else "")


class Step(StrEnum):
    SKIP = "skip"
    EVICT = "evict"
    WAIT = "wait"
    FORCE = "force"
    HOLD = "hold"  # unreadable: never touched, and the drain cannot finish while it is listed
    LINGER = "linger"  # force-deleted once already, still listed: finalizers hold it


def plan(
    pod: PodObs,
    dead: bool,
    elapsed: float,
    drain_timeout: float,
    forced: bool = False,
    deleting_for: float | None = None,
) -> Step:
    """What to do with one pod on the node now.

    `dead`: the freshest evidence says the kubelet is gone. Invariant: FORCE only then.
    `deleting_for`: how long this drain has seen the pod deleting (its eviction accepted),
    on our own clock - given only when the kubelet is confirmed gone (Ready=Unknown and its
    heartbeat Lease unchanged for the whole grace): such a kubelet never finishes a graceful
    delete, so once the pod's own grace (1 s after a silent-node eviction) has passed it is
    forced at once instead of after `drain_timeout` (the silent-node fast path).
    """
    if pod.malformed is not None:
        return Step.HOLD
    if pod.owner_kind == "DaemonSet" or pod.mirror:
        return Step.SKIP
    if forced:
        return Step.LINGER
    if not dead:
        # A live kubelet finishes what it was asked to delete; nothing is forced.
        return Step.WAIT if pod.deleting else Step.EVICT
    overdue = elapsed >= drain_timeout
    if pod.deleting:
        graceful_over = deleting_for is not None and deleting_for >= pod.grace
        return Step.FORCE if overdue or graceful_over else Step.WAIT
    return Step.FORCE if overdue else Step.EVICT


def force_order(pod: PodObs) -> tuple[bool, bool, str]:
    """Which pods to force first: StatefulSet pods, then pods with volume claims (the
    workloads that wait on the dead node), then by name."""
    return (pod.owner_kind != "StatefulSet", not pod.claims, pod.key)
