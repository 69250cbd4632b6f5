"""The node agent with the controller (issue 23, item 2) on the real control plane:
noderecover (one replica, least privilege) and one `noderecover agent` per kwok worker
(noderecover_testkit.agents), the agents' "reboot" powering the kwok node off.

These tests apply noderecover's RBAC (the `nr` fixture); the chart's `helm install` test
installs under a fullnameOverride, so the order of the files does not matter (this one runs
early: tests/conftest.py's SLOWEST_FIRST).

The agents' timing: check every 1 s, isolation timeout 6 s, watchdog 2 s, API and peer
timeouts 1 s each (slack 2 s). The controller is told the same (--agent-*), with a 15 s floor:
safe time 6 + 2 + 1 + 2 + 10 = 21 s.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from noderecover_testkit.agents import Agents, Copies
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.replicas import Replicas, wait

from noderecover.core import agent as core

from .common import FAST, no_403
from .ledger import Ledger, _ts

pytestmark = pytest.mark.e2e

WORKERS = ["worker-0", "worker-1", "worker-2"]
ISOLATION, INTERVAL, SLACK = 6.0, 1.0, 2.0


@pytest.fixture
def agents(clean_cluster: TestCluster, tmp_path: Path) -> Iterator[Agents]:
    """Agents on the 3 baseline workers."""
    (tmp_path / "agents").mkdir()
    a = Agents(clean_cluster, tmp_path / "agents", WORKERS)
    try:
        a.start()
        yield a
    finally:
        a.close()
        print("\n" + a.tails(15))


CONTROLLER_AGENT_FLAGS = (
    "--agent-isolation-timeout",
    "6s",
    "--agent-watchdog-timeout",
    "2s",
    "--agent-check-interval",
    "1s",
    "--agent-safe-time-floor",
    "15s",
)
SAFE = core.safe_time(core.AgentParams(ISOLATION, 2.0, INTERVAL, SLACK), 15.0)
# An agent is relied on after 4 Lease windows (3 s each here) of steady renewals.
SETTLE = core.settle_time(3.0) + 3.0


@pytest.fixture
def five(clean_cluster: TestCluster, tmp_path: Path) -> Iterator[Agents]:
    """Agents on 5 workers: the 3 of the baseline and 2 more (reset() deletes them)."""
    extra = clean_cluster.create_nodes(2, prefix="worker")
    a = Agents(clean_cluster, tmp_path / "agents", [*WORKERS, *extra])
    (tmp_path / "agents").mkdir()
    try:
        a.start()
        yield a
    finally:
        a.close()
        print("\n" + a.tails(15))


def node_writes(led: Ledger, node: str) -> list[tuple[float, str]]:
    """noderecover's writes of Node `node`, with their time: "mark", "taint", "delete"."""
    out = []
    for e in led.writes("nodes", "patch", name=node):
        body = str(e.get("requestObject", ""))
        t = _ts(e["requestReceivedTimestamp"])
        if core.FENCE_REQUESTED in body:
            out.append((t, "mark"))
        if "node.kubernetes.io/out-of-service" in body and "taints" in body:
            out.append((t, "taint"))
    out += [
        (_ts(e["requestReceivedTimestamp"]), "delete")
        for e in led.writes("nodes", "delete", name=node)
    ]
    return sorted(out)


def test_partition_of_3_of_5_workers_never_runs_two_copies(
    five: Agents, nr: Replicas, led: Ledger
) -> None:
    """The case of issue 23: 3 of 5 workers partitioned 20 s apart, kubelets alive (their
    pods keep running), no BMC. With an agent on each, noderecover marks each node, waits
    the safe time, then takes the proven-off path; no replacement runs before the old node
    fenced itself, and the database comes back on its own."""
    c = nr.cluster
    c.apply_seed_statefulset()
    first = c.wait_pod_running("mysql-0", timeout=90)["spec"]["nodeName"]
    others = [n for n in five.nodes if n != first]
    victims = [first, others[0], others[1]]
    r = nr.start("replica-a", *FAST, "--max-unhealthy", "80%", *CONTROLLER_AGENT_FLAGS)
    copies = Copies(c, five).start()
    try:
        time.sleep(SETTLE)  # the controller sees each agent renewing steadily
        cut: dict[str, float] = {}
        for node in victims:
            led.fault(f"{node} partitioned (kubelet and agent cut off, pods keep running)")
            cut[node] = time.time()
            five.partition(node)
            if node != victims[-1]:
                time.sleep(20)

        def db_back() -> dict[str, Any] | None:
            p = c.pod("mysql-0")
            if p is None or p.get("status", {}).get("phase") != "Running":
                return None
            return p if p["spec"]["nodeName"] not in victims else None

        back: dict[str, Any] = wait(db_back, 150, "mysql-0 Running on a healthy node")
        print(f"\n[agent] mysql-0 back on {back['spec']['nodeName']}")
        wait(lambda: all(c.node(n) is None for n in victims), 120, "the 3 nodes removed")
    finally:
        copies.stop()
    assert not copies.overlaps, copies.overlaps[:3]
    assert set(five.fenced) == set(victims), five.fence_reasons
    for node in victims:
        writes = node_writes(led, node)
        kinds = [k for _, k in writes]
        print(
            f"[agent] {node}: fenced {five.fenced[node] - cut[node]:.1f}s after the cut; "
            + ", ".join(f"{k} +{t - cut[node]:.1f}s" for t, k in writes)
        )
        assert kinds[0] == "mark" and "taint" in kinds and kinds[-1] == "delete", writes
        marked = writes[0][0]
        forced = min(t for t, k in writes if k != "mark")
        # Nothing forced before the node fenced itself, nor before the safe time since the
        # mark (the proof: the mark, its agent Lease and heartbeat Lease still that long).
        assert forced >= five.fenced[node], (node, writes)
        assert forced - marked >= SAFE - 1.0, (node, writes)  # audit times: whole ms, skew
    assert r.metric("noderecover_actions_total", action="request-fence", result="ok") >= 3
    no_403(r)


def test_config_drift_the_controllers_longer_isolation_timeout_wins(
    agents: Agents, nr: Replicas, led: Ledger
) -> None:
    """The agents fence after 6 s of isolation; the controller was told 20 s: its safe time
    (20 + 2 + 1 + 2 + 10 = 35 s, not 21 s) is what it waits after the mark."""
    c = nr.cluster
    flags = list(CONTROLLER_AGENT_FLAGS)
    flags[1] = "20s"
    longer = core.safe_time(core.AgentParams(20.0, 2.0, INTERVAL, SLACK), 15.0)
    r = nr.start("replica-a", *FAST, *flags)
    time.sleep(SETTLE)
    t0 = time.time()
    agents.partition("worker-1")
    wait(lambda: c.node("worker-1") is None, 150, "worker-1 removed")
    writes = node_writes(led, "worker-1")
    print("\n[agent] drift: " + ", ".join(f"{k} +{t - t0:.1f}s" for t, k in writes))
    assert writes[0][1] == "mark"
    forced = min(t for t, k in writes if k != "mark")
    assert forced - writes[0][0] >= longer - 1.0, writes
    assert agents.fenced["worker-1"] <= forced
    no_403(r)


def test_a_crash_looping_agents_node_is_handled_as_agent_less(
    agents: Agents, nr: Replicas, led: Ledger
) -> None:
    """worker-2's agent is rolled out to a start that fails (its predecessor stopped cleanly,
    the dog disarmed) and keeps dying; then worker-2 loses power. The controller does not
    count on that agent (its Lease stood still since before the node went silent; the unit
    tests attack the crash loop's renewal gaps themselves), asks nothing of it, and removes
    the node as it would without an agent."""
    c = nr.cluster
    r = nr.start("replica-a", *FAST, *CONTROLLER_AGENT_FLAGS)
    agents.procs["worker-2"].stop(signal.SIGTERM)
    for _ in range(3):
        p = agents.launch("worker-2", "--agent-isolation-timeout", "0s").proc
        assert p is not None and p.wait(30) == 2
        time.sleep(1.0)
    time.sleep(SETTLE)
    led.fault("worker-2 powered off (its agent crash-looping)")
    c.kill_node("worker-2")
    wait(lambda: c.node("worker-2") is None, 150, "worker-2 removed")
    kinds = [k for _, k in node_writes(led, "worker-2")]
    print(f"\n[agent] crash-looping agent's node: {kinds}")
    assert "mark" not in kinds and kinds[-1] == "delete", kinds
    assert r.metric("noderecover_actions_total", action="request-fence", result="ok") == 0
    no_403(r)


def test_a_hung_agents_node_is_powered_off_by_its_dog_and_handled_safely(
    agents: Agents, nr: Replicas, led: Ledger
) -> None:
    """The agent of mysql-0's node hangs (SIGSTOP) while the controller relies on it: it
    feeds its watchdog no more, so the node is powered off within the watchdog timeout (the
    harness's dog, as a kernel dog would), and noderecover brings the database back without
    two copies, forcing nothing before the node was off."""
    c = nr.cluster
    c.apply_seed_statefulset()
    node = c.wait_pod_running("mysql-0", timeout=90)["spec"]["nodeName"]
    r = nr.start("replica-a", *FAST, *CONTROLLER_AGENT_FLAGS)
    copies = Copies(c, agents).start()
    try:
        time.sleep(SETTLE)
        led.fault(f"{node}'s agent hangs (SIGSTOP): its watchdog is no longer fed")
        proc = agents.procs[node].proc
        assert proc is not None
        t0 = time.time()
        proc.send_signal(signal.SIGSTOP)
        wait(lambda: node in agents.fenced, 30, f"{node} powered off by its dog")
        off = agents.fenced[node]
        assert agents.fence_reasons[node].startswith("watchdog: not fed"), agents.fence_reasons
        assert off - t0 <= 2.0 + 1.5, off - t0  # watchdog timeout + the harness's poll

        def db_back() -> dict[str, Any] | None:
            p = c.pod("mysql-0")
            if p is None or p.get("status", {}).get("phase") != "Running":
                return None
            return p if p["spec"]["nodeName"] != node else None

        back: dict[str, Any] = wait(db_back, 150, "mysql-0 Running on a healthy node")
    finally:
        copies.stop()
    writes = node_writes(led, node)
    print(
        f"\n[agent] hung agent: {node} off {off - t0:.1f}s after the SIGSTOP, mysql-0 back on "
        f"{back['spec']['nodeName']}; " + ", ".join(f"{k} +{t - t0:.1f}s" for t, k in writes)
    )
    assert not copies.overlaps, copies.overlaps[:3]
    assert set(agents.fenced) == {node}
    assert all(t >= off for t, k in writes if k != "mark"), writes
    no_403(r)
