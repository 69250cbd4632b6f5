"""Fault injection on a real control plane: noderecover must stay correct while the cluster
fails around it.

This module runs its own cluster (5 killable workers, so that two dead nodes stay under the
circuit breaker's 40 %) with the node watch cache switched off (``--watch-cache-sizes=
nodes#0``): node watches are then served by etcd, so an etcd compaction really expires the
controller's resourceVersion. Every replica reaches the API server through a TCP proxy the
tests can cut. Each test ends with the ledger's invariants (see ``ledger.py``), checked from
the API server's audit log, not from noderecover's own account.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.proxy import TcpProxy
from noderecover_testkit.replicas import NAMESPACE, Replica, Replicas, sa_kubeconfig, wait

from .common import FAST, no_403, phase, running_web, seed, web
from .conftest import forget_noderecover, running
from .ledger import Ledger, _ts, unschedulable_set

pytestmark = pytest.mark.e2e

# The API server outage tests: the watch goes stale after 5 s without progress, and a
# breaker opened by the outage's false alarms (KCM marks nodes Unknown when it has not
# seen their Leases for a while) may close again 5 s after the alarms stop.
OUTAGE = ("--watch-silence", "5s", "--storm-cooldown", "5s")


@pytest.fixture(scope="module")
def fcluster(testcluster_bin_dir: Path) -> Iterator[TestCluster]:
    c = TestCluster(
        bin_dir=testcluster_bin_dir,
        workers=5,
        apiserver_args=["--watch-cache-sizes=nodes#0"],
    )
    yield from running(c, "faults")


@dataclass
class Env:
    c: TestCluster
    nr: Replicas
    led: Ledger
    proxy: TcpProxy

    def lease_holder(self) -> str:
        lease = self.c.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/noderecover"
        )
        return str((lease or {}).get("spec", {}).get("holderIdentity") or "")


@pytest.fixture
def env(
    fcluster: TestCluster,
    tmp_path: Path,
    ledger_for: Callable[[TestCluster], Ledger],
) -> Iterator[Env]:
    c = fcluster
    c.heal()  # a failed earlier test may have left a component down or frozen
    c.reset()
    forget_noderecover(c)
    with TcpProxy(c.ports["kube-apiserver"]) as proxy:
        kc = sa_kubeconfig(c, tmp_path / "kubeconfig", server=f"https://{proxy.address}")
        reps = Replicas(c, kc, tmp_path)
        e = Env(c, reps, ledger_for(c), proxy)
        try:
            yield e
        finally:
            proxy.heal()
            c.heal()
            reps.close()
            print("\n" + reps.tails(80))


def wait_phase(c: TestCluster, node: str, phases: set[str], timeout: float = 90) -> str:
    return str(
        wait(
            lambda: (p := phase(c, node)) in phases and p,
            timeout,
            f"{node} in phase {sorted(phases)}",
        )
    )


def healthz(r: Replica) -> tuple[int, str]:
    try:
        return r.get("/healthz")
    except OSError as exc:
        return 0, str(exc)


def test_apiserver_killed_mid_remediation_completes_once(env: Env) -> None:
    c, nr, led = env.c, env.nr, env.led
    node, pvc, _ = seed(c)
    flags = (*FAST, *OUTAGE, "--drain-timeout", "20s")
    a, b = nr.start("replica-a", *flags), nr.start("replica-b", *flags)
    nr.leader()
    c.kill_node(node)
    wait_phase(c, node, {"Draining"})
    led.fault("kube-apiserver SIGKILL (down 12 s)")
    c.kill_component("kube-apiserver")
    down = time.monotonic()
    try:
        # While the server is down the node watch cannot make progress: /healthz says so.
        _, body = wait(
            lambda: (h := healthz(a))[0] >= 500 and h, 20, "/healthz reporting the stale watch"
        )
        assert "watch" in body and "stale" in body, body
        time.sleep(max(0.0, 12 - (time.monotonic() - down)))
    finally:
        c.restart_component("kube-apiserver")
    for r in (a, b):
        wait(lambda r=r: healthz(r)[0] == 200, 60, f"{r.name} /healthz ok again")  # type: ignore[misc]
    wait(lambda: c.node(node) is None, 120, f"{node} deleted after the restart")
    c.wait_pod_running("mysql-0", timeout=90, not_on=node)
    # Exactly once: one cordon, one delete, and the claim untouched.
    assert len(led.writes("nodes", "delete", name=node)) == 1
    assert led.cordons(node) == 1
    assert (
        c.get("/api/v1/namespaces/default/persistentvolumeclaims/pvc-mysql-0")["metadata"]["uid"]
        == (pvc["metadata"]["uid"])
    )
    restarts = sum(r.metric("noderecover_watch_restarts_total", resource="nodes") for r in (a, b))
    assert restarts >= 2
    # No no_403() here: a restarted API server answers 403 for a moment, until its RBAC
    # informers have synced (seen: the Lease GET of both replicas, ~1 s after /readyz). The
    # replicas must ride that out, which the completion above shows.


def test_apiserver_frozen_leader_steps_down_before_lease_could_pass(env: Env) -> None:
    c, nr, led = env.c, env.nr, env.led
    node, _, _ = seed(c)
    flags = (*FAST, *OUTAGE, "--drain-timeout", "20s")
    a, b = nr.start("replica-a", *flags), nr.start("replica-b", *flags)
    leader = nr.leader()
    c.kill_node(node)
    wait_phase(c, node, {"Cordoned", "Draining"})
    led.fault("kube-apiserver SIGSTOP (frozen 10 s)")
    c.signal_component("kube-apiserver", signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        wait(lambda: leader.metric("noderecover_leader") == 0, 8, "leader stepping down")
        wait(lambda: healthz(leader)[0] >= 500, 15, "/healthz reporting the stale watch")
        time.sleep(max(0.0, 10 - (time.monotonic() - frozen)))
    finally:
        c.signal_component("kube-apiserver", signal.SIGCONT)
    # The leader cannot renew: it must stop acting within --renew-deadline (3 s) of its last
    # accepted renewal, i.e. before its Lease (4 s) could expire and pass to the other
    # replica. Both times are the leader's own (its metric and its log).
    renewed = leader.metric("noderecover_leader_last_renew_timestamp_seconds")
    stepped = [
        _ts(line["ts"])
        for line in leader.log_lines()
        if str(line.get("msg", "")).startswith("stopped leading") and _ts(line["ts"]) > renewed
    ]
    assert stepped, "no step-down in the leader's log"
    assert 0 < stepped[0] - renewed < 4.0, f"stepped down {stepped[0] - renewed:.2f}s after renewal"
    for r in (a, b):
        wait(lambda r=r: healthz(r)[0] == 200, 60, f"{r.name} watch re-established")  # type: ignore[misc]
    wait(lambda: c.node(node) is None, 120, f"{node} deleted after the thaw")
    assert len(led.writes("nodes", "delete", name=node)) == 1
    assert led.cordons(node) == 1
    # One leader again, and it holds the Lease.
    assert sum(r.metric("noderecover_leader") for r in (a, b)) == 1
    holder = next(r for r in (a, b) if r.metric("noderecover_leader") == 1)
    assert env.lease_holder() == holder.name
    no_403(a, b)


def test_etcd_compaction_during_partition_relists_and_misses_nothing(env: Env) -> None:
    c, nr, led, proxy = env.c, env.nr, env.led, env.proxy
    dies, goes = "worker-1", "worker-3"
    # A long Lease: the partition must not cost leadership, whose re-acquisition would
    # re-list anyway and hide the 410 path this test is about.
    r = nr.start(
        "replica-a",
        *FAST,
        "--grace",
        "15s",
        "--lease-duration",
        "60s",
        "--renew-deadline",
        "45s",
        "--retry-period",
        "2s",
    )
    nr.leader()
    c.kill_node(goes)
    wait_phase(c, goes, {"Suspect"})  # tracked, in its grace period
    led.fault("controller partitioned from the API server")
    cut_at = time.time()
    proxy.cut()
    try:
        c.request("DELETE", f"/api/v1/nodes/{goes}")  # (reset() recreates it for later tests)
        c.kill_node(dies)
        c.wait_node_ready(dies, "Unknown", timeout=60)
        rev = c.compact_etcd()
        led.fault(f"etcd compacted at revision {rev}")
    finally:
        proxy.heal()
    wait(
        lambda: (
            r.metric("noderecover_watch_restarts_total", resource="nodes", reason="expired") >= 1
        ),
        60,
        "the watch expired (410) and re-listed",
    )
    wait(lambda: c.node(dies) is None, 120, f"{dies} (died in the gap) remediated")
    # The node deleted during the gap was forgotten: never written to after the partition.
    for verb in ("patch", "delete"):
        assert led.writes("nodes", verb, name=goes, after=cut_at, ok=False) == []
    assert r.metric("noderecover_nodes") == len(c.request("GET", "/api/v1/nodes")["items"])
    assert len(led.writes("nodes", "delete", name=dies)) == 1
    no_403(r)


def test_frozen_leader_does_not_act_after_thawing(env: Env) -> None:
    c, nr, led = env.c, env.nr, env.led
    node, _, _ = seed(c)
    flags = (*FAST, "--drain-timeout", "20s")
    a, b = nr.start("replica-a", *flags), nr.start("replica-b", *flags)
    old = nr.leader()
    new = b if old is a else a
    c.kill_node(node)
    wait_phase(c, node, {"Cordoned", "Draining"})
    led.fault(f"leader {old.name} SIGSTOP past its lease")
    old.proc.send_signal(signal.SIGSTOP)
    try:
        wait(lambda: env.lease_holder() == new.name, 30, f"{new.name} taking the Lease over")
        time.sleep(2)
    finally:
        thawed = time.time()
        old.proc.send_signal(signal.SIGCONT)
    wait(lambda: c.node(node) is None, 120, f"{node} deleted by {new.name}")
    time.sleep(3)  # give the thawed replica every chance to misbehave
    acted = [
        (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("name"))
        for res in ("nodes", "pods", "events")
        for verb in ("create", "patch", "update", "delete")
        for sub in (None, "eviction")
        for e in led.writes(res, verb, sub=sub, agent=f"({old.name})", after=thawed, ok=False)
    ]
    assert acted == [], f"{old.name} acted after thawing without the Lease: {acted}"
    assert old.metric("noderecover_leader") == 0
    assert env.lease_holder() == new.name
    assert len(led.writes("nodes", "delete", name=node)) == 1
    no_403(a, b)


def test_flapping_node_is_damped_never_cordoned_or_removed(env: Env) -> None:
    c, nr, led = env.c, env.nr, env.led
    node = "worker-2"
    # Unknown stretches last ~10 s (from the node monitor's 10 s grace to the revived kwok
    # taking its 20 s Lease), Ready stretches ~10 s: both shorter than these timers.
    r = nr.start("replica-a", *FAST, "--grace", "20s", "--healthy-delay", "15s")
    nr.leader()
    for i in range(3):
        led.fault(f"flap {i + 1}: heartbeats off then on")
        c.kill_node(node)
        c.wait_node_ready(node, "Unknown", timeout=60)
        c.revive_node(node, timeout=90)
    wait(lambda: r.metric("noderecover_flaps_total") >= 2, 30, "flaps counted")
    # Stable again: after --healthy-delay nothing of ours is left on the node.
    wait(lambda: phase(c, node) is None, 60, "annotations cleared once stable")
    n = c.node(node)
    assert n is not None and not n["spec"].get("unschedulable")
    assert led.cordons(node) == 0
    assert led.writes("nodes", "delete", name=node) == []
    events = c.request(
        "GET",
        "/api/v1/namespaces/default/events",
        query={"fieldSelector": f"involvedObject.name={node},reason=NodeRecoverFlapping"},
    )["items"]
    assert events and max(e.get("count", 1) for e in events) >= 2, events
    no_403(r)


def test_node_recovering_mid_drain_is_uncordoned_and_pods_come_back(env: Env) -> None:
    c, nr, led = env.c, env.nr, env.led
    target = "worker-4"
    c.request(
        "PATCH", f"/api/v1/nodes/{target}", {"metadata": {"labels": {"noderecover.test/pool": "a"}}}
    )
    web(c, "a", pdb=False)  # a PDB would (rightly) block evicting pods a dead node made unready
    wait(lambda: len(running_web(c)) == 3, 90, "3 web pods Running on the target")
    c.request(
        "PATCH",
        "/api/v1/nodes/worker-3",
        {"metadata": {"labels": {"noderecover.test/pool": "a"}}},
    )
    # No heartbeat-Lease evidence: the drain of the silent node waits its timeout (no
    # silent-node fast path), so the node can come back while it is in flight.
    r = nr.start("replica-a", *FAST, "--drain-timeout", "120s", "--no-watch-node-leases")
    nr.leader()
    c.kill_node(target)
    wait_phase(c, target, {"Draining"})
    wait(
        lambda: r.metric("noderecover_actions_total", action="evict", result="ok") >= 3,
        30,
        "the 3 pods evicted",
    )
    led.fault(f"{target} comes back mid-drain")
    c.revive_node(target, timeout=90)
    wait(lambda: phase(c, target) is None, 60, "remediation abandoned and undone")
    n = c.node(target)
    assert n is not None and not n["spec"].get("unschedulable")
    wait(lambda: len(running_web(c)) == 3, 90, "the evicted pods rescheduled and Running")
    assert led.writes("nodes", "delete", name=target) == []
    assert led.writes("pods", "delete") == []  # no force-delete: the drain stopped in time
    assert led.cordons(target) == 1
    no_403(r)


def test_second_failure_waits_for_max_concurrent(env: Env) -> None:
    c, nr, led = env.c, env.nr, env.led
    first, second = "worker-0", "worker-1"
    # Pods on the first node keep its drain in flight (a dead kubelet never confirms their
    # deletion) until the drain timeout.
    c.request(
        "PATCH", f"/api/v1/nodes/{first}", {"metadata": {"labels": {"noderecover.test/pool": "a"}}}
    )
    web(c, "a", pdb=False)
    wait(lambda: len(running_web(c)) == 3, 90, "3 web pods Running on the first node")
    # The first remediation stays in flight (drain timeout) long enough for the second node's
    # grace to end while it is.
    # No heartbeat-Lease evidence: no silent-node fast path, the first drain waits its timeout.
    r = nr.start(
        "replica-a",
        *FAST,
        "--max-concurrent",
        "1",
        "--drain-timeout",
        "30s",
        "--no-watch-node-leases",
    )
    nr.leader()
    c.kill_node(first)
    wait_phase(c, first, {"Cordoned", "Draining"})
    c.kill_node(second)
    wait(
        lambda: r.metric("noderecover_blocked_total", reason="max-concurrent") >= 1,
        60,
        "the second node held by --max-concurrent",
    )
    assert c.node(first) is not None  # the first was still in flight when the second waited
    wait(lambda: c.node(first) is None, 90, f"{first} removed")
    wait(lambda: c.node(second) is None, 90, f"{second} removed after it")
    first_deleted = _ts(led.writes("nodes", "delete", name=first)[0]["requestReceivedTimestamp"])
    second_cordoned = min(
        _ts(e["requestReceivedTimestamp"])
        for e in led.writes("nodes", "patch", name=second)
        if unschedulable_set(e.get("requestObject")) is True
    )
    assert second_cordoned > first_deleted
    no_403(r)


def test_rolling_restart_of_both_replicas_completes_once(env: Env) -> None:
    c, nr, led = env.c, env.nr, env.led
    node, _, _ = seed(c)
    flags = (*FAST, "--drain-timeout", "30s")
    a, b = nr.start("replica-a", *flags), nr.start("replica-b", *flags)
    first = nr.leader()
    other = b if first is a else a
    c.kill_node(node)
    wait_phase(c, node, {"Draining"})
    # Like a Deployment rollout: each original replica is replaced in turn, the leader first.
    led.fault(f"rolling restart: {first.name} terminated")
    assert first.stop(signal.SIGTERM) == 0
    a2 = nr.start(f"{first.name}-2", *flags)
    second = nr.leader(timeout=30)
    assert c.node(node) is not None, "finished before the second restart: test too slow"
    led.fault(f"rolling restart: {other.name} terminated (leader: {second.name})")
    assert other.stop(signal.SIGTERM) == 0
    b2 = nr.start(f"{other.name}-2", *flags)
    wait(lambda: c.node(node) is None, 120, f"{node} deleted")
    c.wait_pod_running("mysql-0", timeout=90, not_on=node)
    assert len(led.writes("nodes", "delete", name=node)) == 1
    assert led.cordons(node) == 1
    no_403(a2, b2)
