"""Attachable volumes of a node being removed: total parsing and the removal rules. Pure.

Why it matters (kubernetes-facts.md, measured on v1.34.4): the attach/detach controller keeps a
volume the dead kubelet last reported in `status.volumesInUse` attached to the dead node for
`maxWaitForUnmountDuration` (6 minutes) after its pod is gone - whether or not the Node is
deleted - unless the Node carries the `node.kubernetes.io/out-of-service` taint when the
controller looks. Deleting the Node right after the taint (~15 ms) loses that race: the
controller never sees the taint, and the 6 minutes apply again.

Rules (the executor follows them; tests/test_volume_removal.py attacks them):
- out-of-service / both: taint, then wait until no VolumeAttachment names the node, bounded
  by `--detach-timeout`; the Node is deleted (both) only after that. The taint stays on the
  node while anything of it is attached, whatever happens: a held gate, a timeout, a failover.
- A wait that runs out is a hold (`volumes-attached`, Event, metric), not a failure: the Node
  stays, tainted and cordoned, and is looked at again later; it keeps its slot.
- delete: the node's attachments are read before the DELETE; if any, the operator is told
  where they look (log, Event on the Node and on each pod waiting for such a volume, a reason
  in `plan`): Kubernetes holds them up to 6 minutes; fencing plus out-of-service avoids it.
- noderecover never deletes or edits a VolumeAttachment (it races the attach/detach
  controller) and never reads more than it needs: VolumeAttachment LIST, PersistentVolume GET.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from noderecover.core.reasons import Blocked

#: upstream attach/detach controller's maxWaitForUnmountDuration (seconds).
MAX_WAIT_FOR_UNMOUNT = 360.0

# Blocked reason (noderecover_blocked_total): the node's volumes did not detach in time.
VOLUMES_ATTACHED = Blocked.VOLUMES_ATTACHED


@dataclass(frozen=True, slots=True)
class Attachment:
    """One VolumeAttachment, reduced to what removal reads."""

    name: str
    node: str
    pv: str | None  # spec.source.persistentVolumeName (None: an inline volume)
    attached: bool  # status.attached
    detaching: bool  # metadata.deletionTimestamp set: the controller is detaching it


def parse_attachment(raw: Any) -> Attachment | None:
    """A VolumeAttachment, or None when it cannot be read (never guessed at)."""
    if not isinstance(raw, Mapping):
        return None
    meta, spec = raw.get("metadata"), raw.get("spec")
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        return None
    name, node = meta.get("name"), spec.get("nodeName")
    if not isinstance(name, str) or not name or not isinstance(node, str) or not node:
        return None
    source = spec.get("source")
    pv = source.get("persistentVolumeName") if isinstance(source, Mapping) else None
    status = raw.get("status")
    attached = isinstance(status, Mapping) and status.get("attached") is True
    return Attachment(
        name=name,
        node=node,
        pv=pv if isinstance(pv, str) and pv else None,
        attached=attached,
        detaching=meta.get("deletionTimestamp") is not None,
    )


def on_node(attachments: Iterable[Attachment], node: str) -> list[Attachment]:
    """The attachments that still tie a volume to `node` (attached or being detached)."""
    return sorted((a for a in attachments if a.node == node), key=lambda a: a.name)


def reattached(attachments: Iterable[Attachment], pv: str, old_node: str) -> str | None:
    """The node `pv` is attached to now, if it is another node than `old_node`."""
    for a in attachments:
        if a.pv == pv and a.node != old_node and a.attached and not a.detaching:
            return a.node
    return None


def describe(attachments: Iterable[Attachment]) -> str:
    """'pv-a, pv-b (detaching)' for messages; at most 5 named."""
    items = [f"{a.pv or a.name}{' (detaching)' if a.detaching else ''}" for a in attachments]
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return ", ".join(items[:5]) + more


def delete_warning(node: str, attachments: Iterable[Attachment]) -> str:
    """What `--removal delete` costs a node that still holds attached volumes."""
    held = list(attachments)
    return (
        f"node {node} is deleted with {len(held)} volume(s) still attached to it "
        f"({describe(held)}): Kubernetes keeps them attached up to "
        f"{MAX_WAIT_FOR_UNMOUNT / 60:.0f} minutes (maxWaitForUnmountDuration) and their new pods "
        "wait (Multi-Attach); a --fence-command with --removal both (or out-of-service) "
        "detaches them at once"
    )


def plan_note(mode: str, held: list[Attachment]) -> str:
    """What `plan` says about an unhealthy node's volumes under removal mode `mode`."""
    if not held:
        return ""
    what = f"{len(held)} volume(s) attached ({describe(held)})"
    if mode == "delete":
        return (
            f"{what}: --removal delete leaves them held up to "
            f"{MAX_WAIT_FOR_UNMOUNT / 60:.0f}m after removal (fencing + --removal both avoids it)"
        )
    return f"{what}: tainted out-of-service, the Node is kept until they detach"


def claim_of(pv: Any) -> tuple[str, str] | None:
    """(namespace, claim name) a PersistentVolume is bound to, from its raw JSON."""
    if not isinstance(pv, Mapping):
        return None
    spec = pv.get("spec")
    ref = spec.get("claimRef") if isinstance(spec, Mapping) else None
    if not isinstance(ref, Mapping):
        return None
    ns, name = ref.get("namespace"), ref.get("name")
    if isinstance(ns, str) and ns and isinstance(name, str) and name:
        return ns, name
    return None


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str


def pods_waiting(pods: Iterable[Any], claim: str, old_node: str) -> list[PodRef]:
    """Pods (raw JSON) that mount `claim`, not on `old_node` and not deleting: the ones the
    volume's hold keeps waiting."""
    out: list[PodRef] = []
    for p in pods:
        if not isinstance(p, Mapping):
            continue
        meta, spec = p.get("metadata"), p.get("spec")
        if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
            continue
        if meta.get("deletionTimestamp") is not None or spec.get("nodeName") == old_node:
            continue
        vols = spec.get("volumes")
        uses = isinstance(vols, list) and any(
            isinstance(v, Mapping)
            and isinstance(v.get("persistentVolumeClaim"), Mapping)
            and v["persistentVolumeClaim"].get("claimName") == claim
            for v in vols
        )
        ns, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
        if uses and isinstance(ns, str) and isinstance(name, str) and isinstance(uid, str):
            out.append(PodRef(ns, name, uid))
    return out
