"""NodeRecoveryPolicies on a real control plane: the CRD from manifests/, its validation by the
API server, pools on their own timers, a pause that expires while a node is down, status.

noderecover runs as real processes with the ServiceAccount of manifests/base/rbac.yaml only
(least privilege): a 403 fails the test (the `nr` fixture and `no_403`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.processes import metric_sum
from noderecover_testkit.replicas import NAMESPACE, Replicas, wait

from .common import FAST, ROOT, no_403

pytestmark = pytest.mark.e2e

CRD = ROOT / "manifests" / "base" / "crd-noderecoverypolicy.yaml"
CRD_NAME = "noderecoverypolicies.noderecover.io"
POLICIES = "/apis/noderecover.io/v1alpha1/noderecoverypolicies"
POOL = "noderecover.test/policy-pool"


def install_crd(c: TestCluster) -> None:
    """`kubectl apply` the CRD exactly as shipped, and wait until it is served."""
    proc = c.kubectl("apply", "--server-side", "-f", str(CRD), check=False)
    assert proc.returncode == 0, proc.stderr
    c.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    # Established comes before the storage is ready (429 "storage is (re)initializing").
    wait(lambda: c.api("GET", POLICIES)[0] == 200, 30, "NodeRecoveryPolicies served")


def delete_policies(c: TestCluster) -> None:
    if c.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}") is None:
        return
    for p in c.request("GET", POLICIES)["items"]:
        c.api("DELETE", f"{POLICIES}/{p['metadata']['name']}")
    wait(lambda: not c.request("GET", POLICIES)["items"], 30, "policies deleted")


@pytest.fixture
def crd(clean_cluster: TestCluster) -> Iterator[TestCluster]:
    """The CRD installed from manifests/, no policy and no pool label before or after."""
    install_crd(clean_cluster)
    delete_policies(clean_cluster)
    yield clean_cluster
    delete_policies(clean_cluster)
    for node in clean_cluster.request("GET", "/api/v1/nodes")["items"]:
        if POOL in (node["metadata"].get("labels") or {}):
            clean_cluster.request(
                "PATCH",
                f"/api/v1/nodes/{node['metadata']['name']}",
                {"metadata": {"labels": {POOL: None}}},
            )


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "noderecover.io/v1alpha1",
        "kind": "NodeRecoveryPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(c: TestCluster, obj: dict[str, Any]) -> None:
    c.request("POST", POLICIES, obj)


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cordoned(c: TestCluster, node: str) -> bool:
    n = c.node(node)
    return n is None or bool(n["spec"].get("unschedulable"))


def status(c: TestCluster, name: str) -> dict[str, Any]:
    out: dict[str, Any] = (c.get(f"{POLICIES}/{name}") or {}).get("status") or {}
    return out


def condition(c: TestCluster, name: str, ctype: str) -> dict[str, Any]:
    return next((x for x in status(c, name).get("conditions", []) if x["type"] == ctype), {})


def label(c: TestCluster, node: str, pool: str) -> None:
    c.request("PATCH", f"/api/v1/nodes/{node}", {"metadata": {"labels": {POOL: pool}}})


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        (
            {"unhealthyConditions": [{"type": "Ready", "status": "True", "duration": "1m"}]},
            "Ready=True is the healthy state",
        ),
        (
            {"unhealthyConditions": [{"type": "Ready", "status": "Maybe", "duration": "1m"}]},
            "Unsupported value",
        ),
        (
            {"unhealthyConditions": [{"type": "Ready", "status": "False", "duration": "soon"}]},
            "should match",
        ),
        (
            {
                "unhealthyConditions": [
                    {"type": "DiskPressure", "status": "True", "duration": "1m"},
                    {"type": "DiskPressure", "status": "False", "duration": "1m"},
                ]
            },
            "listed both True and False",
        ),
        (
            {
                "unhealthyConditions": [
                    {"type": "Ready", "status": "False", "duration": "1m"},
                    {"type": "Ready", "status": "False", "duration": "2m"},
                ]
            },
            "Duplicate value",
        ),
        ({"maxUnhealthy": "140%"}, "a count >= 0 or a percent"),
        ({"maxUnhealthy": -2}, "a count >= 0 or a percent"),
        ({"maxConcurrent": 0}, "should be greater than or equal to 1"),
        ({"removal": "explode"}, "Unsupported value"),
        ({"paused": {"reason": "no end"}}, "until: Required value"),
        (
            {"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "need at least one value",
        ),
    ],
)
def test_the_api_server_rejects_an_invalid_policy(
    crd: TestCluster, spec: dict[str, Any], complaint: str
) -> None:
    proc = crd.kubectl("create", "-f", "-", input=json.dumps(policy("bad", spec)), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "is invalid" in proc.stderr and complaint in proc.stderr, proc.stderr
    assert crd.get(f"{POLICIES}/bad") is None


def test_the_api_server_takes_the_duration_grammar_noderecover_reads(crd: TestCluster) -> None:
    """The CRD's duration pattern, run by the API server's own regexp engine (RE2), accepts
    what core/durations.py reads and refuses what it refuses (server-side dry-run)."""
    from noderecover.core.durations import parse_duration

    for text in [
        "0",
        "90",
        "90s",
        "1m30s",
        "1.5h",
        "500ms",
        ".5s",
        "1h1h",
        "soon",
        "-5s",
        "1.5",
        "5S",
        "1e3s",
        " 5s",
        "+5",
    ]:
        try:
            parse_duration(text)
            readable = True
        except ValueError:
            readable = False
        body = policy("grammar", {"drainTimeout": text})
        proc = crd.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False
        )
        assert (proc.returncode == 0) == readable, (text, proc.stderr)


def test_the_api_server_takes_a_policys_fence_and_refuses_an_unknown_field_in_it(
    crd: TestCluster,
) -> None:
    """spec.fence is a structural schema the API server accepts (a CRD with
    `additionalProperties: false` beside `properties` is refused outright); kubectl's strict
    field validation refuses a misspelt field in it."""
    fence = {
        "provider": "redfish",
        "action": "off",
        "secretName": "bmc",
        "addressTemplate": "https://bmc-{name}.example:443",
        "redfish": {"system": "/redfish/v1/Systems/1", "verifyTLS": False},
    }
    body = policy("fenced", {"fence": fence})
    ok = crd.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False)
    assert ok.returncode == 0, ok.stderr
    bad = policy("fenced", {"fence": {**fence, "secretNmae": "bmc"}})
    refused = crd.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False
    )
    assert refused.returncode != 0 and "secretNmae" in refused.stderr, refused.stderr


def test_the_fencing_docs_examples_are_taken_by_the_api_server(crd: TestCluster) -> None:
    """Every Secret and NodeRecoveryPolicy of docs/fencing.md's worked examples, as written there:
    server-side apply, dry run, strict field validation (a misspelt field fails)."""
    import yaml

    from tests.test_fencing_docs import objects

    docs = objects()
    assert {d["kind"] for d in docs} == {"Secret", "NodeRecoveryPolicy"}
    crd.apply(yaml.safe_load((ROOT / "manifests" / "base" / "namespace.yaml").read_text()))
    proc = crd.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=docs-test",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines()}
    for d in docs:
        kind = "secret" if d["kind"] == "Secret" else "noderecoverypolicy.noderecover.io"
        assert f"{kind}/{d['metadata']['name']}" in names, proc.stdout


def test_a_valid_policy_is_accepted_and_kubectl_get_shows_it(crd: TestCluster) -> None:
    spec = {
        "nodeSelector": {"matchLabels": {POOL: "gpu"}},
        "unhealthyConditions": [
            {"type": "Ready", "status": "Unknown", "duration": "5m"},
            {"type": "KernelDeadlock", "status": "True", "duration": "1h"},
        ],
        "maxUnhealthy": "30%",
        "maxConcurrent": 2,
        "removal": "out-of-service",
        "paused": {"until": "2030-01-01T00:00:00Z", "reason": "driver upgrade"},
    }
    crd.kubectl("create", "-f", "-", input=json.dumps(policy("gpu", spec)))
    out = crd.kubectl("get", "noderecoverypolicies").stdout
    header = out.splitlines()[0].split()
    assert header[:6] == ["NAME", "MATCHED", "UNHEALTHY", "REMEDIATING", "BREAKER", "PAUSED"]
    assert "gpu" in out
    assert crd.kubectl("get", "nrp", "gpu", "-o", "wide").returncode == 0


def test_two_pools_are_remediated_on_their_own_timers(crd: TestCluster, nr: Replicas) -> None:
    """A fast pool (Ready=Unknown 3 s) and a slow one (25 s) lose a node each at once. A silent
    node's grace counts from its last heartbeat noderecover saw (the heartbeat Lease watch), so
    the timers are measured from the Leases' last renewal, and the kill comes right after a
    renewal the replica saw: otherwise whether it saw one (kwok renews every ~5 s; the replica
    lists the Leases ~0.3 s before the kill) decides whether the grace counts from the
    heartbeat or from the Ready=Unknown 10 s later (node-monitor-grace), and a bound measured
    from the Ready=Unknown fails whenever it did (the slow node cordoned 25 s after its last
    heartbeat is 14.6 s after the Unknown)."""
    c = crd
    label(c, "worker-0", "fast")
    label(c, "worker-1", "slow")
    label(c, "worker-2", "slow")
    unknown = {"type": "Ready", "status": "Unknown"}
    for name, duration in (("fast", "3s"), ("slow", "25s")):
        create(
            c,
            policy(
                name,
                {
                    "nodeSelector": {"matchLabels": {POOL: name}},
                    "unhealthyConditions": [{**unknown, "duration": duration}],
                },
            ),
        )
    # The flags' grace never applies here. Two of the four nodes die: the cluster-wide breaker
    # (the flags' --max-unhealthy over every node) must allow it, or both pools are held.
    r = nr.start("replica-a", *FAST, "--grace", "10m", "--max-unhealthy", "3")
    nr.leader()
    wait(lambda: status(c, "slow").get("nodesMatched") == 2, 30, "status of the slow pool")
    assert status(c, "fast").get("nodesMatched") == 1
    assert condition(c, "slow", "Ready").get("status") == "True"
    # A renewal of both Leases after the replica watches them, then the kill.
    watching = dt.datetime.now(dt.UTC)
    dying = ("worker-0", "worker-1")
    wait(lambda: all(c.lease_renewed_after(n, watching) for n in dying), 30, "Leases renewed")
    time.sleep(0.5)  # the replica's Lease watch delivers the renewal
    for n in dying:
        c.kill_node(n)
    beats = {n: lease_renewed_at(c, n) for n in dying}  # each kwok's last renewal
    c.wait_node_ready("worker-0", "Unknown", timeout=60)
    c.wait_node_ready("worker-1", "Unknown", timeout=60)
    wait(lambda: cordoned(c, "worker-0"), 30, "fast pool's node cordoned")
    fast_at = time.time() - beats["worker-0"]
    assert not cordoned(c, "worker-1"), "the slow pool's node went on the fast pool's timer"
    wait(lambda: cordoned(c, "worker-1"), 60, "slow pool's node cordoned")
    slow_at = time.time() - beats["worker-1"]
    # The fast node goes at the Ready=Unknown (~10 s: its 3 s were over); the slow one 25 s
    # after its last heartbeat (never earlier: the replica saw it at or after its renewTime),
    # not at the flags' 10 minutes.
    assert fast_at < 20 and 25 <= slow_at < 40, (fast_at, slow_at)
    started = [
        line["msg"]
        for line in r.log_lines()
        if line.get("action") == "persist" and line.get("node") in dying
    ]
    assert len(started) == 2 and all("from the last heartbeat seen" in m for m in started), started
    assert not cordoned(c, "worker-2") and not cordoned(c, "cp-0")
    wait(lambda: status(c, "slow").get("nodesUnhealthy", 0) >= 1, 30, "status: unhealthy")
    no_403(r)


def lease_renewed_at(c: TestCluster, node: str) -> float:
    """The renewTime of the node's heartbeat Lease (a wall time of this host: kwok's)."""
    lease = c.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
    )
    return dt.datetime.fromisoformat(lease["spec"]["renewTime"]).timestamp()


def test_a_pause_that_expires_while_a_node_is_down(crd: TestCluster, nr: Replicas) -> None:
    c = crd
    until = time.time() + 45
    create(c, policy("all", {"paused": {"until": rfc3339(until), "reason": "e2e maintenance"}}))
    r = nr.start("replica-a", *FAST)
    nr.leader()
    wait(lambda: condition(c, "all", "Paused").get("status") == "True", 30, "Paused in status")
    assert "e2e maintenance" in condition(c, "all", "Paused")["message"]
    out = c.kubectl("get", "noderecoverypolicies", "all", "-o", "wide").stdout
    assert rfc3339(until) in out
    c.kill_node("worker-0")
    c.wait_node_ready("worker-0", "Unknown", timeout=60)
    # Down, well past the 5 s grace, and paused: nothing happens.
    wait(lambda: r.metric("noderecover_blocked_total", reason="paused") >= 1, 30, "held: paused")
    while time.time() < until - 3:
        assert not cordoned(c, "worker-0"), "cordoned while paused"
        time.sleep(1)
    assert r.metric("noderecover_paused", policy="all") == 1
    assert r.metric("noderecover_actions_total", action="cordon") == 0
    # The pause ends by itself: the node is remediated.
    wait(lambda: cordoned(c, "worker-0"), 45, "cordoned once the pause expired")
    assert time.time() >= until - 1
    wait(lambda: c.node("worker-0") is None, 60, "removed once the pause expired")
    wait(lambda: condition(c, "all", "Paused").get("status") == "False", 30, "unpaused status")
    assert r.metric("noderecover_paused", policy="all") == 0
    events = {
        e["reason"]
        for e in c.request(
            "GET",
            "/api/v1/namespaces/default/events",
            query={"fieldSelector": "involvedObject.name=worker-0"},
        )["items"]
        if e.get("reportingComponent") == "noderecover"
    }
    assert "NodeRecoverBlocked" in events, events
    no_403(r)


def test_the_cluster_wide_pause_holds_the_flag_mode_and_expires(
    crd: TestCluster, nr: Replicas
) -> None:
    """No policy at all (the flags govern): the ConfigMap noderecover-pause in noderecover's
    namespace, read with the ServiceAccount's RBAC, holds the remediation until `until`."""
    c = crd
    until = time.time() + 30
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "noderecover-pause", "namespace": NAMESPACE},
        "data": {"until": rfc3339(until), "reason": "e2e incident"},
    }
    c.request("POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", cm)
    try:
        r = nr.start("replica-a", *FAST)
        nr.leader()
        wait(lambda: r.metric("noderecover_paused", policy="") == 1, 30, "cluster pause seen")
        c.kill_node("worker-0")
        c.wait_node_ready("worker-0", "Unknown", timeout=60)
        wait(
            lambda: r.metric("noderecover_blocked_total", reason="paused-cluster") >= 1,
            30,
            "held: paused-cluster",
        )
        while time.time() < until - 3:
            assert not cordoned(c, "worker-0"), "cordoned during the cluster-wide pause"
            time.sleep(1)
        wait(lambda: cordoned(c, "worker-0"), 45, "cordoned once the cluster pause expired")
        assert time.time() >= until - 1
        wait(lambda: r.metric("noderecover_paused", policy="") == 0, 15, "pause metric cleared")
        no_403(r)
    finally:
        c.api("DELETE", f"/api/v1/namespaces/{NAMESPACE}/configmaps/noderecover-pause")


def test_the_cluster_pause_is_watched_not_polled(crd: TestCluster, nr: Replicas) -> None:
    """On a real API server, a quiet pause ConfigMap costs one WATCH every 5-9 s and nothing
    else: each stream the server ends at its timeoutSeconds proves the answer current (the
    pause stays known, no LIST, no GET), and a pause written arrives with its watch event.
    The CRD's and the policies' watches likewise (streams of 15-29 s with FAST's 30 s
    --watch-silence; kube-apiserver sends no BOOKMARK in a watch's first minute): the
    policies stay known and nobody LISTs them or the CRD in the window."""
    c = crd
    r = nr.start("replica-a", *FAST)
    nr.leader()
    wait(lambda: r.metric("noderecover_pause_unknown", what="cluster") == 0, 30, "pause known")

    def lists() -> tuple[float, ...]:
        status, text = c.api("GET", "/metrics")
        assert status == 200
        return tuple(
            metric_sum(str(text), "apiserver_request_total", resource=res, verb="LIST")
            for res in ("configmaps", "customresourcedefinitions", "noderecoverypolicies")
        )

    ended = r.metric("noderecover_watch_restarts_total", resource="configmaps", reason="timeout")
    early = r.metric(
        "noderecover_watch_restarts_total", resource="configmaps", reason="closed-early"
    )
    listed = lists()
    t_end = time.time() + 40
    while time.time() < t_end:  # longer than the 30 s silence: known all along
        assert r.metric("noderecover_pause_unknown", what="cluster") == 0
        assert r.metric("noderecover_pause_unknown", what="policies") == 0
        time.sleep(1)
    streams = (
        r.metric("noderecover_watch_restarts_total", resource="configmaps", reason="timeout")
        - ended
    )
    assert 3 <= streams <= 9, streams  # 40 s of streams of 5-9 s (reconnects under load)
    assert (
        r.metric("noderecover_watch_restarts_total", resource="configmaps", reason="closed-early")
        == early
    )
    assert lists() == listed  # no LIST of a ConfigMap, the CRD or a policy by anyone

    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "noderecover-pause", "namespace": NAMESPACE},
        "data": {"until": rfc3339(time.time() + 600), "reason": "e2e watched"},
    }
    written = time.monotonic()
    c.request("POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", cm)
    try:
        wait(lambda: r.metric("noderecover_paused", policy="") == 1, 10, "pause seen")
        took = time.monotonic() - written
        assert took < 4, f"the pause took {took:.1f}s: not delivered by its watch"
        no_403(r)
    finally:
        c.api("DELETE", f"/api/v1/namespaces/{NAMESPACE}/configmaps/noderecover-pause")
