"""Helpers shared by the end-to-end test modules."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.fixtures import micro_rfc3339, rfc3339
from noderecover_testkit.processes import metric_sum
from noderecover_testkit.replicas import Replica, wait

ROOT = Path(__file__).resolve().parents[2]  # the source checkout

FAST = (
    "--grace",
    "5s",
    "--healthy-delay",
    "3s",
    "--drain-timeout",
    "5s",
    "--lease-duration",
    "4s",
    "--renew-deadline",
    "3s",
    "--retry-period",
    "1s",
    "--watch-silence",
    "30s",
    "--log-level",
    "debug",
)
PVC = "/api/v1/namespaces/default/persistentvolumeclaims/pvc-mysql-0"


def seed(c: TestCluster) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Apply the seed StatefulSet; return (node of mysql-0, its PVC, its PV)."""
    c.apply_seed_statefulset()
    pod = c.wait_pod_running("mysql-0", timeout=90)
    pvc = wait(
        lambda: (p := c.get(PVC)) and p["status"].get("phase") == "Bound" and p,
        90,
        "pvc-mysql-0 Bound",
    )
    pv = c.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    return pod["spec"]["nodeName"], pvc, pv


def no_403(*replicas: Replica) -> None:
    for r in replicas:
        if r.alive:
            assert r.metric("noderecover_api_errors_total", code="403") == 0


def node_deletes(c: TestCluster) -> float:
    status, text = c.api("GET", "/metrics")
    assert status == 200
    return metric_sum(
        str(text), "apiserver_request_total", resource="nodes", verb="DELETE", code="200"
    )


def web(c: TestCluster, pool: str, *, pdb: bool = True) -> None:
    """Deployment ``web`` (3 replicas) pinned to node pool ``pool``, with a PDB
    (minAvailable 2) unless ``pdb`` is False."""
    labels = {"app": "web"}
    c.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"noderecover.test/pool": pool},
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{"name": "web", "image": "nginx"}],
                    },
                },
            },
        }
    )
    if not pdb:
        return
    c.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
        }
    )


def running_web(c: TestCluster) -> list[dict[str, Any]]:
    pods = c.request("GET", "/api/v1/namespaces/default/pods", query={"labelSelector": "app=web"})[
        "items"
    ]
    return [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]


def phase(c: TestCluster, node: str) -> str | None:
    """The node's ``noderecover.io/phase`` annotation (None: no node or no annotation)."""
    n = c.node(node) or {}
    return (n.get("metadata", {}).get("annotations") or {}).get("noderecover.io/phase")


def pin_pool(c: TestCluster, node: str, pool: str) -> None:
    """Label ``node`` with ``noderecover.test/pool=<pool>`` (what the workloads here select)."""
    c.request(
        "PATCH", f"/api/v1/nodes/{node}", {"metadata": {"labels": {"noderecover.test/pool": pool}}}
    )


def statefulset(c: TestCluster, name: str, pool: str, *, grace: int = 30) -> None:
    """StatefulSet ``name`` (1 replica, no volumes, label ``app=<name>``) pinned to node pool
    ``pool``; its pod ``<name>-0`` has terminationGracePeriodSeconds ``grace``."""
    labels = {"app": name}
    c.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"noderecover.test/pool": pool},
                        "terminationGracePeriodSeconds": grace,
                        "containers": [{"name": name, "image": "postgres"}],
                    },
                },
            },
        }
    )


def pdb(c: TestCluster, name: str, app: str, min_available: int) -> None:
    """PodDisruptionBudget ``name`` over the pods labelled ``app=<app>`` (applied: calling it
    again changes ``minAvailable``)."""
    c.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}},
        }
    )


class FakeKubelet:
    """The kubelet of a node whose kwok was stopped (``kill_node``), played by the test.

    Every ``interval`` it renews the node's heartbeat Lease in ``kube-node-lease``; with
    ``ready`` (default ``"False"``; None: post no status at all) it posts that Ready status
    (a live kubelet reporting NotReady); with ``finish_after`` (seconds; None: never) it
    finishes a pod's graceful deletion (DELETE, grace 0, uid precondition, as the kubelet does
    once the containers stopped) that long after it first saw the pod's deletionTimestamp.
    What it did is kept: ``renewals`` (accepted Lease writes), ``finished`` (pod uid -> wall
    time of its accepted DELETE) and ``deleting`` (pod uid -> the pod when first seen
    terminating)."""

    def __init__(
        self,
        c: TestCluster,
        node: str,
        *,
        ready: str | None = "False",
        finish_after: float | None = 0.0,
        interval: float = 0.5,
    ) -> None:
        self.c, self.node = c, node
        self.ready, self.finish_after, self.interval = ready, finish_after, interval
        self.since = rfc3339()
        self.renewals = 0
        self.started = 0.0
        self.deleting: dict[str, tuple[float, dict[str, Any]]] = {}
        self.finished: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kubelet-{node}", daemon=True)

    def __enter__(self) -> FakeKubelet:
        self.started = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self._beat()
            self._stop.wait(self.interval)

    def _beat(self) -> None:
        now = dt.datetime.now(dt.UTC)
        if self.c.node(self.node) is None:
            return
        status, _ = self.c.api(
            "PATCH",
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}",
            {"spec": {"renewTime": micro_rfc3339(now), "holderIdentity": self.node}},
        )
        if status == 200:
            self.renewals += 1
        if self.ready is not None:
            self.c.api(
                "PATCH",
                f"/api/v1/nodes/{self.node}/status",
                {
                    "status": {
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": self.ready,
                                "reason": "KubeletNotReady",
                                "message": "container runtime is down (test)",
                                "lastHeartbeatTime": rfc3339(now),
                                "lastTransitionTime": self.since,
                            }
                        ]
                    }
                },
                content_type="application/strategic-merge-patch+json",
            )
        if self.finish_after is None:
            return
        pods = self.c.request(
            "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={self.node}"}
        )["items"]
        for p in pods:
            meta = p["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            first, _ = self.deleting.setdefault(meta["uid"], (time.time(), p))
            if time.time() - first < self.finish_after:
                continue
            status, _ = self.c.api(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
            if status == 200:
                self.finished.setdefault(meta["uid"], time.time())
