"""The StatefulSet takeover on a real control plane, with noderecover as real processes.

Every replica here runs with a ServiceAccount token bound only to `manifests/base/rbac.yaml`
(least privilege): a 403 anywhere would show up in `noderecover_api_errors_total{code="403"}`,
which each test checks is zero.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.replicas import (
    NAMESPACE,
    Replicas,
    Timeline,
    wait,
)

from .common import FAST, PVC, ROOT, FakeKubelet, no_403, node_deletes, running_web, seed, web

pytestmark = pytest.mark.e2e


def test_seed_scenario_statefulset_pod_moves_with_its_volume(nr: Replicas) -> None:
    c = nr.cluster
    node, pvc, pv = seed(c)
    a, b = nr.start("replica-a", *FAST), nr.start("replica-b", *FAST)
    leader = nr.leader()
    follower = b if leader is a else a
    tl = Timeline(c, node).start()
    c.kill_node(node)
    tl.mark("heartbeats stop (kwok killed)")
    try:
        moved = c.wait_pod_running("mysql-0", timeout=150, not_on=node)
        tl.mark(f"pod Running on another node ({moved['spec']['nodeName']})")
        wait(lambda: c.node(node) is None, 60, f"node {node} deleted")
        time.sleep(0.5)
    finally:
        tl.stop()
        tl.mark_from_log(leader, "drain-done", "drain done (noderecover log)")
        print(f"\ntimeline (seconds since the node died):\n{tl.render()}")
    # The order of events, as the timeline saw it.
    order = ["heartbeats stop", "node Ready=Unknown", "node cordoned", "drain done", "node deleted"]
    times = [tl.at(k) for k in order]
    assert None not in times, tl.marks
    assert times == sorted(times), tl.marks  # type: ignore[type-var]
    assert tl.at("pod Running on another") is not None
    # Same claim, same volume, untouched; no other node cordoned.
    assert [
        v["persistentVolumeClaim"]["claimName"]
        for v in moved["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ] == ["pvc-mysql-0"]
    pvc2 = c.get(PVC)
    pv2 = c.get(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
    assert pvc2["metadata"]["uid"] == pvc["metadata"]["uid"]
    assert pvc2["status"]["phase"] == "Bound" and pv2["status"]["phase"] == "Bound"
    assert pv2["metadata"]["uid"] == pv["metadata"]["uid"]
    assert pv2["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert not tl.cordoned_others
    # Only the leader acted.
    assert leader.metric("noderecover_actions_total", action="delete", result="ok") == 1
    assert follower.metric("noderecover_actions_total", action="cordon") == 0
    assert follower.metric("noderecover_leader") == 0 and leader.metric("noderecover_leader") == 1
    # Events on the Node, accepted by the real API server.
    events = wait(
        lambda: (
            {
                e["reason"]
                for e in c.request(
                    "GET",
                    "/api/v1/namespaces/default/events",
                    query={"fieldSelector": f"involvedObject.name={node}"},
                )["items"]
                if e.get("reportingComponent") == "noderecover"
            }
            >= {"NodeRecoverSuspect", "NodeRecoverCordoned", "NodeRecoverRemoved"}
        ),
        30,
        "node events",
    )
    assert events
    no_403(a, b)


def test_recovery_within_grace_leaves_nothing_behind(nr: Replicas) -> None:
    c = nr.cluster
    node = "worker-1"
    r = nr.start("replica-a", *FAST, "--grace", "60s")
    nr.leader()
    tl = Timeline(c, node).start()
    c.kill_node(node)
    try:
        c.wait_node_ready(node, "Unknown", timeout=60)
        wait(
            lambda: (
                (c.node(node) or {})["metadata"].get("annotations", {}).get("noderecover.io/phase")
                == "Suspect"
            ),
            30,
            "Suspect",
        )
        c.revive_node(node, timeout=90)
        wait(
            lambda: (
                "noderecover.io/phase"
                not in ((c.node(node) or {})["metadata"].get("annotations") or {})
            ),
            30,
            "annotations cleared after healthy-delay",
        )
    finally:
        tl.stop()
    assert tl.at("node cordoned") is None and not tl.cordoned_others
    assert c.node(node) is not None and not c.node(node)["spec"].get("unschedulable")  # type: ignore[index]
    assert r.metric("noderecover_actions_total", action="cordon") == 0
    no_403(r)


def test_mass_outage_opens_the_circuit_breaker(nr: Replicas) -> None:
    c = nr.cluster
    r = nr.start("replica-a", *FAST)
    nr.leader()
    tl = Timeline(c, "no-such-node").start()
    dead = ["worker-0", "worker-1"]  # 2 of 4 nodes = 50% > 40%
    for n in dead:
        c.kill_node(n)
    try:
        for n in dead:
            c.wait_node_ready(n, "Unknown", timeout=60)
        wait(lambda: r.metric("noderecover_circuit_breaker_open") == 1, 30, "breaker open")
        wait(
            lambda: r.metric("noderecover_blocked_total", reason="circuit-breaker") > 0,
            30,
            "blocked counted",
        )
        time.sleep(8)  # well past the 5 s grace: still nothing may happen
        assert r.metric("noderecover_circuit_breaker_open") == 1
    finally:
        tl.stop()
    assert not tl.cordoned_others, tl.cordoned_others
    assert r.metric("noderecover_actions_total", action="cordon") == 0
    assert all(c.node(n) is not None for n in dead)
    no_403(r)


def test_leader_failover_mid_remediation_finishes_exactly_once(nr: Replicas) -> None:
    c = nr.cluster
    node, _, _ = seed(c)
    slow = (*FAST, "--drain-timeout", "20s")
    a, b = nr.start("replica-a", *slow), nr.start("replica-b", *slow)
    leader = nr.leader()
    survivor = b if leader is a else a
    deletes_before = node_deletes(c)
    tl = Timeline(c, node).start()
    c.kill_node(node)
    try:
        wait(
            lambda: (
                (c.node(node) or {})
                .get("metadata", {})
                .get("annotations", {})
                .get("noderecover.io/phase")
                == "Draining"
            ),
            60,
            "remediation in progress",
        )
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        tl.mark("leader SIGKILLed")
        assert nr.leader(timeout=30) is survivor
        tl.mark("survivor holds the Lease")
        wait(lambda: c.node(node) is None, 90, "node deleted by the new leader")
        c.wait_pod_running("mysql-0", timeout=90, not_on=node)
    finally:
        tl.stop()
        print(f"\ntimeline:\n{tl.render()}")
    assert node_deletes(c) - deletes_before == 1
    assert survivor.metric("noderecover_actions_total", action="delete", result="ok") == 1
    # It resumed the remediation: no second cordon of its own.
    assert survivor.metric("noderecover_actions_total", action="cordon") == 0
    assert not tl.cordoned_others
    no_403(survivor)


def test_pdb_respected_on_notready_but_alive_node(nr: Replicas) -> None:
    c = nr.cluster
    target, spare = "worker-2", "worker-1"
    c.request(
        "PATCH", f"/api/v1/nodes/{target}", {"metadata": {"labels": {"noderecover.test/pool": "a"}}}
    )
    web(c, "a")
    wait(lambda: len(running_web(c)) == 3, 90, "3 web pods Running on the target")
    assert {p["spec"]["nodeName"] for p in running_web(c)} == {target}
    # Replacements may go to the spare node only.
    c.request(
        "PATCH", f"/api/v1/nodes/{spare}", {"metadata": {"labels": {"noderecover.test/pool": "a"}}}
    )
    r = nr.start("replica-a", *FAST, "--drain-timeout", "10s")
    nr.leader()
    c.kill_node(target)
    min_running = 3
    with FakeKubelet(c, target):
        deadline = time.monotonic() + 150
        while {p["spec"]["nodeName"] for p in running_web(c)} != {spare} or len(running_web(c)) < 3:
            assert time.monotonic() < deadline, "drain did not complete"
            min_running = min(min_running, len(running_web(c)))
            time.sleep(0.2)
        # Drained, but its kubelet is alive: the node is kept (cordoned), never removed.
        wait(
            lambda: (
                (c.node(target) or {})
                .get("metadata", {})
                .get("annotations", {})
                .get("noderecover.io/phase")
                == "Removing"
            ),
            30,
            "drained node annotated Removing",
        )
        time.sleep(5)
        node = c.node(target)
        assert node is not None and node["spec"].get("unschedulable") is True
    assert min_running >= 2  # the budget (minAvailable 2) held all along
    # The kubelet stops for good: the node is removed once it is silent.
    wait(lambda: c.node(target) is None, 90, "node removed once its kubelet is silent")
    assert {p["spec"]["nodeName"] for p in running_web(c)} == {spare}
    assert r.metric("noderecover_actions_total", action="evict", result="ok") == 3
    assert r.metric("noderecover_actions_total", action="evict", result="pdb-blocked") >= 1
    assert r.metric("noderecover_actions_total", action="force-delete") == 0
    no_403(r)


def test_rbac_is_least_privilege(cluster: TestCluster, sa_config: Path) -> None:
    sa = f"system:serviceaccount:{NAMESPACE}:noderecover"
    # `kubectl auth can-i` resolves noderecoverypolicies through discovery: the CRD first.
    crd = ROOT / "manifests" / "base" / "crd-noderecoverypolicy.yaml"
    cluster.kubectl("apply", "--server-side", "-f", str(crd))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/noderecoverypolicies.noderecover.io",
        "--timeout=60s",
    )
    allowed = [
        ("delete", "nodes", ""),
        ("patch", "nodes", ""),
        ("create", "pods/eviction", ""),
        ("delete", "pods", ""),
        ("update", "leases", NAMESPACE),
        # The node agents' Leases, beside its own leader Lease (docs/agent.md).
        ("list", "leases", NAMESPACE),
        ("watch", "leases", NAMESPACE),
        ("get", "leases", "kube-node-lease"),
        # The heartbeat Leases are watched (--grace-from-heartbeat), never written.
        ("list", "leases", "kube-node-lease"),
        ("watch", "leases", "kube-node-lease"),
        ("create", "events", "default"),
        ("create", "events", "kube-system"),
        ("list", "events", "default"),
        ("list", "noderecoverypolicies.noderecover.io", ""),
        ("watch", "noderecoverypolicies.noderecover.io", ""),
        ("patch", "noderecoverypolicies.noderecover.io/status", ""),
        ("get", "configmaps", NAMESPACE),
    ]
    denied = [
        ("delete", "persistentvolumeclaims", "default"),
        ("list", "poddisruptionbudgets", "default"),
        ("delete", "persistentvolumes", ""),
        ("get", "secrets", "default"),
        ("update", "nodes", ""),
        ("delete", "volumeattachments", ""),
        ("update", "leases", "kube-node-lease"),
        ("delete", "leases", "kube-node-lease"),
        ("delete", "leases", NAMESPACE),  # an agent's Lease is the agent's
        ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", ""),
        # Events are created in any namespace since issue 14 (pods waiting for a volume get
        # one in theirs): never deleted or updated.
        ("delete", "events", "default"),
        ("update", "events", "kube-system"),
        ("create", "pods", "default"),
        ("get", "pods", "default"),  # no code path reads a single pod (issue 12)
        # Policies are the operator's: noderecover writes their status only.
        ("update", "noderecoverypolicies.noderecover.io", ""),
        ("patch", "noderecoverypolicies.noderecover.io", ""),
        ("create", "noderecoverypolicies.noderecover.io", ""),
        ("get", "configmaps", "default"),
        ("list", "configmaps", NAMESPACE),
    ]
    for verb, resource, ns in allowed + denied:
        res, _, sub = resource.partition("/")
        args = ["auth", "can-i", verb, res, f"--as={sa}"]
        args += [f"--subresource={sub}"] if sub else []
        args += [f"--namespace={ns}"] if ns else []
        out = cluster.kubectl(*args, check=False).stdout.strip()
        assert out == ("yes" if (verb, resource, ns) in allowed else "no"), (verb, resource, ns)


def test_manifests_apply_server_side_dry_run(cluster: TestCluster) -> None:
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-k",
        str(ROOT / "manifests"),
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for kind in (
        "deployment.apps/noderecover",
        "clusterrole.rbac.authorization.k8s.io/noderecover",
        "poddisruptionbudget.policy/noderecover",
    ):
        assert kind in proc.stdout
