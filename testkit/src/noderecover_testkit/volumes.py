"""CSI volumes that need attaching, in the test control plane (kwok simulates none of it).

The attach/detach controller of kube-controller-manager is real; what a cluster with an
attachable CSI driver adds around it is played here:

* :class:`ExternalAttacher` - the CSI external-attacher: it marks each new VolumeAttachment
  of :data:`CSI_DRIVER` ``status.attached=true`` (and, with ``finalizer``, adds the finalizer
  a real attacher adds, and removes it when the VolumeAttachment is deleted). Detaching is
  the controller's: it deletes the VolumeAttachment.
* :class:`VolumesInUseReporter` - the kubelets' volume manager: for every node whose kubelet
  (kwok) runs, it reports the CSI volumes of the pods bound to the node in
  ``node.status.volumesInUse`` (``kubernetes.io/csi/<driver>^<volumeHandle>``). A killed node
  keeps what it last reported, as a dead kubelet does - that list is what makes the
  attach/detach controller hold the volume for ``maxWaitForUnmountDuration`` (6 min).
* :func:`recovery_timeline` - when a StatefulSet pod is really back: the new pod Running
  *and* its VolumeAttachment on the new node attached, with the Multi-Attach wait if any.

The rest (CSIDriver ``attachRequired: true``, a CSINode per node, the nodes' annotation
``volumes.kubernetes.io/controller-managed-attach-detach``, CSI PersistentVolumes and their
StorageClass) is created by :class:`~noderecover_testkit.cluster.TestCluster` with
``storage="csi"`` (or ``"both"``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import TestCluster

#: The attachable CSI driver of the test control plane (no real driver runs).
CSI_DRIVER = "attach.noderecover.test"
#: StorageClass of the CSI PersistentVolumes (WaitForFirstConsumer, static PVs only).
CSI_STORAGE_CLASS = "csi-wffc"
#: Node annotation without which the attach/detach controller ignores a node's pods.
ATTACH_DETACH_ANNOTATION = "volumes.kubernetes.io/controller-managed-attach-detach"
VOLUME_ATTACHMENTS = "/apis/storage.k8s.io/v1/volumeattachments"
#: The finalizer the external-attacher puts on the VolumeAttachments it attached.
ATTACHER_FINALIZER = "external-attacher/" + CSI_DRIVER.replace(".", "-")
#: The taint of "non-graceful node shutdown" (GA v1.28).
OUT_OF_SERVICE_TAINT: dict[str, str] = {
    "key": "node.kubernetes.io/out-of-service",
    "value": "nodeshutdown",
    "effect": "NoExecute",
}

_QUIET = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def unique_volume_name(driver: str, handle: str) -> str:
    """The name of a CSI volume in ``node.status.volumesInUse`` / ``volumesAttached``."""
    return f"kubernetes.io/csi/{driver}^{handle}"


def csi_driver_object() -> dict[str, Any]:
    """CSIDriver :data:`CSI_DRIVER`: attach required, no pod info on mount."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": CSI_DRIVER},
        "spec": {"attachRequired": True, "podInfoOnMount": False},
    }


def csi_node_object(node: str, uid: str | None) -> dict[str, Any]:
    """CSINode of ``node`` listing :data:`CSI_DRIVER`, owned by the Node (as the kubelet
    makes it: the garbage collector removes it with the Node)."""
    meta: dict[str, Any] = {"name": node}
    if uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSINode",
        "metadata": meta,
        "spec": {"drivers": [{"name": CSI_DRIVER, "nodeID": node, "topologyKeys": None}]},
    }


class _Loop:
    """A daemon thread calling ``self.tick()`` every ``interval`` until stopped; errors of a
    tick (API down, objects changing under it) are counted and the next tick retries."""

    name = "loop"

    def __init__(self, c: TestCluster, interval: float) -> None:
        self.c, self.interval = c, interval
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(20)
            self._thread = None

    def __enter__(self) -> _Loop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except _QUIET:
                self.errors += 1
            self._stop.wait(self.interval)

    def tick(self) -> None:
        raise NotImplementedError


class ExternalAttacher(_Loop):
    """The CSI external-attacher of :data:`CSI_DRIVER`, polling every ``interval``.

    A VolumeAttachment of the driver that is not attached and not deleting gets
    ``{"status": {"attached": true}}`` (a merge patch of ``volumeattachments/<name>/status``;
    with ``finalizer``, :data:`ATTACHER_FINALIZER` is added first). One that is deleting
    loses that finalizer (a real attacher does it after ControllerUnpublish). ``attached``
    and ``released`` record the wall time of each, by VolumeAttachment name."""

    name = "csi-external-attacher"

    def __init__(self, c: TestCluster, *, interval: float = 0.1, finalizer: bool = False) -> None:
        super().__init__(c, interval)
        self.finalizer = finalizer
        self.attached: dict[str, float] = {}
        self.released: dict[str, float] = {}

    def tick(self) -> None:
        for va in self.c.request("GET", VOLUME_ATTACHMENTS)["items"]:
            if va["spec"].get("attacher") != CSI_DRIVER:
                continue
            meta = va["metadata"]
            name = meta["name"]
            finalizers: list[str] = list(meta.get("finalizers") or [])
            if meta.get("deletionTimestamp"):
                if ATTACHER_FINALIZER in finalizers:
                    rest = [f for f in finalizers if f != ATTACHER_FINALIZER]
                    status, _ = self.c.api(
                        "PATCH",
                        f"{VOLUME_ATTACHMENTS}/{name}",
                        [
                            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                            {"op": "replace", "path": "/metadata/finalizers", "value": rest},
                        ],
                        content_type="application/json-patch+json",
                    )
                    if status == 200:
                        self.released.setdefault(name, time.time())
                continue
            if (va.get("status") or {}).get("attached"):
                continue
            if self.finalizer and ATTACHER_FINALIZER not in finalizers:
                self.c.request(
                    "PATCH",
                    f"{VOLUME_ATTACHMENTS}/{name}",
                    {"metadata": {"finalizers": [*finalizers, ATTACHER_FINALIZER]}},
                )
            status, _ = self.c.api(
                "PATCH", f"{VOLUME_ATTACHMENTS}/{name}/status", {"status": {"attached": True}}
            )
            if status == 200:
                self.attached.setdefault(name, time.time())


class VolumesInUseReporter(_Loop):
    """The kubelets' ``node.status.volumesInUse``, for the nodes whose kwok runs.

    Every ``interval``: the CSI volumes (driver :data:`CSI_DRIVER`) of the PVCs of the pods
    bound to a node and not finished (phase neither Succeeded nor Failed; a deleting pod
    still counts until its object is gone) are that node's volumes in use. A node whose
    kubelet runs (``TestCluster.node_alive``) gets the list through a merge patch of
    ``nodes/<name>/status`` when it differs; a killed node is left with what it had.
    ``patches`` counts the accepted patches."""

    name = "volumes-in-use-reporter"

    def __init__(self, c: TestCluster, *, interval: float = 0.3) -> None:
        super().__init__(c, interval)
        self.patches = 0

    def in_use(self) -> dict[str, list[str]]:
        """Node name -> sorted unique names of the CSI volumes its pods use."""
        by_claim: dict[tuple[str, str], str] = {}
        for pv in self.c.request("GET", "/api/v1/persistentvolumes")["items"]:
            csi = pv["spec"].get("csi") or {}
            ref = pv["spec"].get("claimRef") or {}
            if csi.get("driver") == CSI_DRIVER and ref.get("name"):
                key = (ref.get("namespace", "default"), ref["name"])
                by_claim[key] = unique_volume_name(CSI_DRIVER, csi["volumeHandle"])
        out: dict[str, set[str]] = {}
        for pod in self.c.request("GET", "/api/v1/pods")["items"]:
            node = pod["spec"].get("nodeName")
            if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            ns = pod["metadata"]["namespace"]
            for vol in pod["spec"].get("volumes") or []:
                claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
                if claim and (ns, claim) in by_claim:
                    out.setdefault(node, set()).add(by_claim[(ns, claim)])
        return {node: sorted(v) for node, v in out.items()}

    def tick(self) -> None:
        wanted = self.in_use()
        for node in self.c.request("GET", "/api/v1/nodes")["items"]:
            name = node["metadata"]["name"]
            if name not in self.c.nodes or not self.c.node_alive(name):
                continue
            want = wanted.get(name, [])
            have = sorted((node.get("status") or {}).get("volumesInUse") or [])
            if want == have:
                continue
            status, _ = self.c.api(
                "PATCH",
                f"/api/v1/nodes/{name}/status",
                {"status": {"volumesInUse": want or None}},
            )
            if status == 200:
                self.patches += 1


# ---------------------------------------------------------------------- recovery timeline


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def volume_attachment(c: TestCluster, pv: str, node: str) -> dict[str, Any] | None:
    """The VolumeAttachment of PersistentVolume ``pv`` on ``node``, or None."""
    for va in c.request("GET", VOLUME_ATTACHMENTS)["items"]:
        spec = va["spec"]
        if (
            spec.get("nodeName") == node
            and spec.get("source", {}).get("persistentVolumeName") == pv
        ):
            out: dict[str, Any] = va
            return out
    return None


def attached_nodes(c: TestCluster, pv: str) -> dict[str, bool]:
    """Node -> ``status.attached`` of each VolumeAttachment of ``pv`` (deleting ones too)."""
    out: dict[str, bool] = {}
    for va in c.request("GET", VOLUME_ATTACHMENTS)["items"]:
        if va["spec"].get("source", {}).get("persistentVolumeName") == pv:
            out[va["spec"]["nodeName"]] = bool((va.get("status") or {}).get("attached"))
    return out


@dataclass
class RecoveryTimeline:
    """When a StatefulSet pod came back, in seconds after ``start`` (wall clock, observed by
    polling every 0.1 s, each fact stamped when the answer that showed it arrived; None: not
    seen before the timeout).

    ``back`` = the new pod Running *and* its VolumeAttachment on the new node attached.
    ``multi_attach`` = the first ``FailedAttachVolume`` "Multi-Attach error" Event of the new
    pod (its ``firstTimestamp``/``eventTime``: second precision, so it can read a little
    before ``start``), ``multi_attach_seen`` when the poll first saw it, ``multi_attach_count``
    its count and ``multi_attach_message`` its text. ``old_va_gone`` = the old node's
    VolumeAttachment of the volume no longer listed."""

    start: float
    pod: str
    old_node: str
    pv: str
    node: str | None = None
    uid: str | None = None
    created: float | None = None
    running: float | None = None
    attached: float | None = None
    old_va_gone: float | None = None
    multi_attach: float | None = None
    multi_attach_seen: float | None = None
    multi_attach_count: int = 0
    multi_attach_message: str = ""
    events: list[str] = field(default_factory=list)

    @property
    def back(self) -> float | None:
        if self.running is None or self.attached is None:
            return None
        return max(self.running, self.attached)

    def summary(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}s"

        wait = (
            f", Multi-Attach event at {f(self.multi_attach)}, seen {f(self.multi_attach_seen)}"
            f" (x{self.multi_attach_count})"
            if self.multi_attach_count
            else ", no Multi-Attach"
        )
        return (
            f"{self.pod}: {self.old_node} -> {self.node}: created {f(self.created)}, "
            f"Running {f(self.running)}, old VA gone {f(self.old_va_gone)}, "
            f"attached {f(self.attached)}, back {f(self.back)}{wait}"
        )


def recovery_timeline(
    c: TestCluster,
    pod: str,
    *,
    old_uid: str,
    old_node: str,
    pv: str,
    start: float,
    timeout: float,
    namespace: str = "default",
    hold: float | None = None,
    on_poll: Callable[[RecoveryTimeline], None] | None = None,
) -> RecoveryTimeline:
    """Follow the recovery of StatefulSet pod ``pod`` (whose old incarnation ``old_uid`` ran
    on ``old_node`` with PersistentVolume ``pv``) and return its :class:`RecoveryTimeline`.

    Polls until the pod is back (Running and attached on its new node), or until ``timeout``
    seconds after the new pod was created (after ``start`` while there is no new pod). With
    ``hold``, keeps polling until ``hold`` seconds after the new pod's creation even once it
    is back or the Multi-Attach wait has been seen (a control run checking that the volume
    stays held that long). ``on_poll`` sees the timeline after every poll."""
    tl = RecoveryTimeline(start=start, pod=pod, old_node=old_node, pv=pv)
    pod_path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    while True:
        with contextlib.suppress(*_QUIET):
            obj = c.get(pod_path)
            # Each fact is stamped when its answer arrived: the time by which it was true.
            # (Stamped before the request, a detach that the out-of-service taint caused
            # could read as a few milliseconds before the taint's audited write.)
            now = time.time()
            if obj is not None and obj["metadata"]["uid"] != old_uid:
                if tl.uid != obj["metadata"]["uid"]:
                    tl.uid = obj["metadata"]["uid"]
                    tl.created = now - start
                    tl.running = tl.attached = None
                tl.node = obj["spec"].get("nodeName")
                if (
                    tl.running is None
                    and (obj.get("status") or {}).get("phase") == "Running"
                    and not obj["metadata"].get("deletionTimestamp")
                ):
                    tl.running = now - start
            states = attached_nodes(c, pv)
            now = time.time()
            if tl.old_va_gone is None and old_node not in states:
                tl.old_va_gone = now - start
            if tl.node and tl.attached is None and states.get(tl.node):
                tl.attached = now - start
            if tl.uid is not None:
                _multi_attach(c, tl, namespace)
        if on_poll is not None:
            on_poll(tl)
        base = start + tl.created if tl.created is not None else start
        end = base + (hold if hold is not None else timeout)
        if hold is None and tl.back is not None:
            return tl
        if time.time() >= end:
            return tl
        time.sleep(0.1)


def _multi_attach(c: TestCluster, tl: RecoveryTimeline, namespace: str) -> None:
    events = c.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        query={"fieldSelector": f"involvedObject.uid={tl.uid}"},
    )["items"]
    tl.events = [f"{e.get('reason')}: {e.get('message')}" for e in events]
    for e in events:
        msg = str(e.get("message") or "")
        if e.get("reason") != "FailedAttachVolume" or "Multi-Attach error" not in msg:
            continue
        first = _ts(e.get("firstTimestamp")) or _ts(e.get("eventTime"))
        if first is not None:
            first -= tl.start
            tl.multi_attach = first if tl.multi_attach is None else min(tl.multi_attach, first)
        if tl.multi_attach_seen is None:
            tl.multi_attach_seen = time.time() - tl.start
        tl.multi_attach_count = max(tl.multi_attach_count, int(e.get("count") or 1))
        tl.multi_attach_message = msg
