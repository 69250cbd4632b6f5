"""Helpers shared by the end-to-end test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noderecover_testkit.cluster import TestCluster
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
    total = 0.0
    for line in str(text).splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="nodes"' in line
            and 'verb="DELETE"' in line
            and 'code="200"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


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
