"""Read-only storage lookups for a node's removal: its VolumeAttachments, a volume's claim and
the pods waiting for it. Never a write: VolumeAttachments belong to the attach/detach
controller (deleting one races it), PersistentVolumes and claims to their owners.

There is no field selector on `spec.nodeName` for VolumeAttachments: the LIST is cluster-wide
(paginated) and filtered here. It is made only around a removal and by `plan`, never per event.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from noderecover.core.volumes import (
    Attachment,
    PodRef,
    claim_of,
    parse_attachment,
    pods_waiting,
)
from noderecover.kube.client import KubeClient, NotFound
from noderecover.kube.paging import list_pages

VA_PATH = "/apis/storage.k8s.io/v1/volumeattachments"
PAGE_SIZE = 500


async def attachments(kube: KubeClient) -> list[Attachment]:
    """Every readable VolumeAttachment of the cluster (unreadable items are skipped)."""
    out: list[Attachment] = []

    def page(items: list[Any], first: bool) -> None:
        if first:
            out.clear()
        for raw in items:
            a = parse_attachment(raw)
            if a is not None:
                out.append(a)

    await list_pages(kube, VA_PATH, page, page_size=PAGE_SIZE, null_items=True)
    return out


async def waiting_pods(kube: KubeClient, pv: str, old_node: str) -> list[PodRef]:
    """The pods (not on `old_node`) that mount the claim bound to PersistentVolume `pv`."""
    try:
        raw = await kube.request("GET", f"/api/v1/persistentvolumes/{quote(pv, safe='')}")
    except NotFound:
        return []
    claim = claim_of(raw)
    if claim is None:
        return []
    ns, name = claim
    found: list[PodRef] = []

    def page(items: list[Any], first: bool) -> None:
        if first:
            found.clear()
        found.extend(pods_waiting(items, name, old_node))

    await list_pages(
        kube,
        f"/api/v1/namespaces/{quote(ns, safe='')}/pods",
        page,
        page_size=PAGE_SIZE,
        null_items=True,
    )
    return found
