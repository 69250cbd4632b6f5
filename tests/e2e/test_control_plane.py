"""The test control plane itself: pinned versions, nodes, storage, node death and revival,
and the CONTROL scenario (issue 4, test 2): without noderecover, a StatefulSet pod on a
dead node does not come back elsewhere."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from noderecover_testkit import build, versions
from noderecover_testkit.cluster import (
    CONTROL_PLANE_ROLE_LABEL,
    UNREACHABLE_TAINT,
    WORKER_ROLE_LABEL,
    TestCluster,
)

pytestmark = pytest.mark.e2e

#: How long the CONTROL scenario watches the dead node's pod (seconds).
CONTROL_WINDOW = float(os.environ.get("NODERECOVER_E2E_CONTROL_WINDOW", "75"))


def _pod_summary(pod: dict[str, Any] | None) -> str:
    if pod is None:
        return "<no pod>"
    st = pod.get("status", {})
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    return json.dumps(
        {
            "node": pod["spec"].get("nodeName"),
            "phase": st.get("phase"),
            "reason": st.get("reason"),
            "conditions": conds,
            "deletionTimestamp": pod["metadata"].get("deletionTimestamp"),
            "uid": pod["metadata"]["uid"],
        }
    )


def _start_mysql(c: TestCluster) -> dict[str, Any]:
    c.apply_seed_statefulset()
    return c.wait_pod_running("mysql-0", timeout=90)


@pytest.mark.parametrize("name", versions.ALL_BINARIES)
def test_built_binary_reports_pinned_version(testcluster_bin_dir: Path, name: str) -> None:
    out = build.version_output(name, testcluster_bin_dir)
    assert build.expected_version(name) in out, out


def test_server_version_matches_pin(cluster: TestCluster) -> None:
    info = cluster.request("GET", "/version")
    assert info["gitVersion"] == versions.K8S_VERSION
    major, minor = versions.k8s_major_minor()
    assert (info["major"], info["minor"]) == (major, minor)


def test_cluster_up_with_ready_nodes(cluster: TestCluster) -> None:
    assert all(pid is not None for pid in cluster.processes().values()), cluster.processes()
    nodes = {n["metadata"]["name"]: n for n in cluster.request("GET", "/api/v1/nodes")["items"]}
    assert set(nodes) >= {"cp-0", "worker-0", "worker-1", "worker-2"}
    for name in nodes:
        assert cluster.node_ready_status(name) == "True", name
    assert CONTROL_PLANE_ROLE_LABEL in nodes["cp-0"]["metadata"]["labels"]
    assert f"{CONTROL_PLANE_ROLE_LABEL}:NoSchedule" in cluster.node_taint_keys("cp-0")
    assert WORKER_ROLE_LABEL in nodes["worker-0"]["metadata"]["labels"]
    # Node Leases are renewed by kwok (the node lifecycle controller's heartbeat).
    lease = cluster.request(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/worker-0"
    )
    assert lease["spec"]["holderIdentity"]
    # kubectl works with the admin kubeconfig, and server-side dry-run works.
    out = cluster.kubectl("get", "nodes", "-o", "name").stdout
    assert "node/worker-0" in out
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dry", "namespace": "default"},
        }
    )
    dry = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert dry.returncode == 0 and "server dry run" in dry.stdout, dry.stdout + dry.stderr
    assert cluster.get("/api/v1/namespaces/default/configmaps/dry") is None
    storage = cluster.request("GET", "/apis/storage.k8s.io/v1/storageclasses/local-wffc")
    assert storage["volumeBindingMode"] == "WaitForFirstConsumer"


def test_seed_statefulset_runs_on_a_worker_with_bound_pvc(clean_cluster: TestCluster) -> None:
    c = clean_cluster
    pod = _start_mysql(c)
    node = pod["spec"]["nodeName"]
    assert node.startswith("worker-"), node
    pvc = c.request("GET", "/api/v1/namespaces/default/persistentvolumeclaims/pvc-mysql-0")
    assert pvc["status"]["phase"] == "Bound"
    pv = c.request("GET", f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["name"] == "pvc-mysql-0"
    sts = c.wait_for(
        lambda: (
            (s := c.get("/apis/apps/v1/namespaces/default/statefulsets/mysql"))
            and s.get("status", {}).get("readyReplicas") == 1
            and s
        ),
        30,
        "StatefulSet mysql readyReplicas=1",
    )
    assert sts["status"]["readyReplicas"] == 1


def test_killed_node_goes_unknown_with_unreachable_taint_then_revives(
    clean_cluster: TestCluster,
) -> None:
    c = clean_cluster
    node = _start_mysql(c)["spec"]["nodeName"]
    t0 = time.monotonic()
    c.kill_node(node)
    c.wait_node_ready(node, "Unknown", timeout=60)
    t_unknown = time.monotonic() - t0
    keys = c.wait_for(
        lambda: (
            k
            if {f"{UNREACHABLE_TAINT}:NoSchedule", f"{UNREACHABLE_TAINT}:NoExecute"}
            <= set(k := c.node_taint_keys(node))
            else None
        ),
        30,
        f"unreachable taints on {node}",
    )
    t_taint = time.monotonic() - t0
    cond = next(x for x in c.node(node)["status"]["conditions"] if x["type"] == "Ready")  # type: ignore[index]
    print(f"\n{node}: Ready=Unknown after {t_unknown:.1f}s, taints {keys} after {t_taint:.1f}s")
    assert cond["reason"] == "NodeStatusUnknown"
    # Grace 10s counted from the last Lease renewal (every ~5s, before the kill): expect
    # 5-11s after the kill; bounds are loose for a loaded 2-core machine.
    assert 2 <= t_unknown <= 30, t_unknown
    # The node lifecycle controller also marks the pod not ready.
    c.wait_for(
        lambda: any(
            x["type"] == "Ready" and x["status"] == "False"
            for x in (c.pod("mysql-0") or {}).get("status", {}).get("conditions") or []
        ),
        30,
        "mysql-0 Ready=False",
    )

    t1 = time.monotonic()
    c.revive_node(node, timeout=60)
    c.wait_for(
        lambda: not any(k.startswith(UNREACHABLE_TAINT) for k in c.node_taint_keys(node)),
        30,
        f"unreachable taints removed from {node}",
    )
    print(f"{node}: Ready=True again {time.monotonic() - t1:.1f}s after revive")
    pod = c.wait_pod_running("mysql-0", timeout=60)
    assert pod["spec"]["nodeName"] == node


def test_control_without_noderecover_pod_stays_on_dead_node(clean_cluster: TestCluster) -> None:
    """CONTROL (issue 4, test 2): with only the stock controllers, after the node under
    ``mysql-0`` dies the pod is not Running on another node within the window."""
    c = clean_cluster
    first = _start_mysql(c)
    node, uid = first["spec"]["nodeName"], first["metadata"]["uid"]
    c.kill_node(node)
    c.wait_node_ready(node, "Unknown", timeout=60)
    t0 = time.monotonic()
    seen: list[str] = []
    while time.monotonic() - t0 < CONTROL_WINDOW:
        pod = c.pod("mysql-0")
        summary = _pod_summary(pod)
        if not seen or seen[-1] != summary:
            seen.append(summary)
            print(f"[{time.monotonic() - t0:5.1f}s] mysql-0 {summary}")
        moved = pod is not None and pod["spec"].get("nodeName") not in (None, node)
        running_elsewhere = moved and pod is not None and pod["status"].get("phase") == "Running"
        assert not running_elsewhere, f"mysql-0 moved without noderecover: {summary}"
        time.sleep(1)
    pod = c.pod("mysql-0")
    print(f"after {CONTROL_WINDOW:.0f}s: mysql-0 {_pod_summary(pod)}")
    assert pod is not None and pod["metadata"]["uid"] == uid
    assert pod["spec"]["nodeName"] == node
    assert c.node_ready_status(node) == "Unknown"

    c.revive_node(node, timeout=60)
    assert c.node_ready_status(node) == "True"
