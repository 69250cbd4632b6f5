"""Issue 11: the drain must not force past a kubelet that is alive, nor past a Node replaced
under it - on the real control plane, checked from the API server's audit log.

A. A dead node's heartbeat Lease renews again mid-drain (a kubelet that came back but cannot
   post its status): Ready stays Unknown, and nothing may be force-deleted or removed while
   the Lease renews.
B. A live kubelet (Ready=False, Lease renewing) needs 20 s to finish the graceful deletion of
   a pod whose PDB held the eviction past --drain-timeout: the pod must leave by the
   kubelet's own deletion, never by a force-delete.
C. The Node is deleted and re-created with the same name mid-remediation: the old
   remediation must not touch the new node, which gets its own full --grace.

The test-side kubelet is :class:`common.FakeKubelet`; ``led`` is the test's ledger, whose
invariants are checked after each test as for every e2e test.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from noderecover_testkit.replicas import Replicas, wait

from .common import FAST, FakeKubelet, no_403, pdb, phase, pin_pool, running_web, statefulset, web
from .ledger import Ledger, _ts, unschedulable_set

pytestmark = pytest.mark.e2e

GRACE = 5.0  # FAST's --grace


def _ready(node: dict[str, Any] | None) -> str | None:
    for cond in (node or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return None


def _evictions(led: Ledger, pod: str, code: int | None = None) -> list[dict[str, Any]]:
    """noderecover's eviction requests for ``pod``: accepted ones (2xx), or with ``code``."""
    return [
        e
        for e in led.writes("pods", "create", name=pod, sub="eviction", ok=code is None)
        if code is None or e.get("responseStatus", {}).get("code") == code
    ]


def _at(e: dict[str, Any]) -> float:
    return _ts(e["requestReceivedTimestamp"])


def _described(events: list[dict[str, Any]], t0: float) -> list[str]:
    """Audit events as `verb name (+seconds since t0, code)` for failure messages."""
    return [
        f"{e['verb']} {e['objectRef'].get('name')} (+{_at(e) - t0:.1f}s, "
        f"code {e.get('responseStatus', {}).get('code')})"
        for e in events
    ]


def test_heartbeat_returning_mid_drain_stops_force_and_removal(nr: Replicas, led: Ledger) -> None:
    c = nr.cluster
    target = "worker-2"
    pin_pool(c, target, "a")
    web(c, "a")  # 3 pods, PDB minAvailable 2: once the node is NotReady, evictions get 429
    statefulset(c, "db", "a")  # an ordinary StatefulSet pod: evicted (grace 1), then stuck
    wait(lambda: len(running_web(c)) == 3, 90, "3 web pods Running on the target")
    assert c.wait_pod_running("db-0", timeout=90)["spec"]["nodeName"] == target
    drain_timeout = 10.0
    r = nr.start("replica-a", *FAST, "--drain-timeout", "10s", "--watch-node-leases")
    nr.leader()
    uid = c.request("GET", f"/api/v1/nodes/{target}")["metadata"]["uid"]
    c.kill_node(target)
    c.wait_node_ready(target, "Unknown", timeout=60)
    wait(lambda: phase(c, target) == "Draining", 60, f"{target} Draining")
    draining = time.time()
    # Mid-drain: db-0's eviction accepted, the web pods' refused by their PDB.
    wait(lambda: _evictions(led, "db-0"), 20, "db-0 evicted")
    wait(
        lambda: any(_evictions(led, p["metadata"]["name"], 429) for p in running_web(c)),
        20,
        "a web pod's eviction refused (429)",
    )
    assert not led.force_deletes(), "forced before the heartbeat came back: test too slow"
    led.fault(f"{target}: heartbeat Lease renewed again mid-drain, no node status posted")
    ready_seen: dict[str, int] = {}
    with FakeKubelet(c, target, ready=None, finish_after=None) as kubelet:
        # Past the drain timeout (counted from Draining) with a margin for the fix to act.
        until = max(kubelet.started + 20, draining + drain_timeout + 12)
        while time.time() < until:
            node = c.node(target)
            if node is None or node["metadata"]["uid"] != uid:
                break
            ready = _ready(node) or "none"
            ready_seen[ready] = ready_seen.get(ready, 0) + 1
            time.sleep(0.5)
    hb = kubelet.started
    print(
        f"\n[live-kubelet] Ready status (samples) while only the Lease renewed "
        f"({kubelet.renewals} renewals over {time.time() - hb:.0f}s): {ready_seen}"
    )
    assert kubelet.renewals >= 10, "the test-side kubelet did not renew the Lease"
    forced = led.force_deletes()
    removed = led.writes("nodes", "delete", name=target, ok=False)
    assert not forced and not removed, (
        f"acted past a renewing heartbeat Lease (renewed from +0.0s): force-deleted "
        f"{_described(forced, hb)}; node DELETE {_described(removed, hb)}"
    )
    # The real node lifecycle controller sets Ready=Unknown when the Lease stops, and does
    # not set it back to True from a renewed Lease alone (only a posted status does that).
    assert set(ready_seen) == {"Unknown"}, ready_seen
    node = c.node(target)
    assert node is not None and node["metadata"]["uid"] == uid
    no_403(r)


def test_slow_graceful_deletion_on_live_kubelet_is_not_forced(nr: Replicas, led: Ledger) -> None:
    c = nr.cluster
    target = "worker-1"
    pin_pool(c, target, "b")
    statefulset(c, "db", "b", grace=30)  # a database that takes its time to stop
    pdb(c, "db", "db", 1)
    pod = c.wait_pod_running("db-0", timeout=90)
    assert pod["spec"]["nodeName"] == target
    uid = pod["metadata"]["uid"]
    r = nr.start("replica-a", *FAST)  # --grace 5s, --drain-timeout 5s
    nr.leader()
    c.kill_node(target)
    # A live kubelet: Lease renewed, Ready=False posted; it finishes a graceful deletion
    # 20 s after it began (within the pod's 30 s grace).
    with FakeKubelet(c, target, ready="False", finish_after=20) as kubelet:
        refused = wait(lambda: _evictions(led, "db-0", 429), 60, "db-0's eviction refused (429)")
        first_429 = _at(refused[0])
        # The drain began before that refusal: 7 s later its --drain-timeout (5 s) is over.
        time.sleep(max(0.0, first_429 + 7 - time.time()))
        pdb(c, "db", "db", 0)
        led.fault("PDB of db relaxed (minAvailable 1 -> 0) after the drain timeout")
        terminating = wait(
            lambda: (
                (p := c.pod("db-0")) is not None
                and p["metadata"]["uid"] == uid
                and p["metadata"].get("deletionTimestamp")
                and p
            ),
            40,
            "db-0's eviction admitted",
        )
        wait(
            lambda: (p := c.pod("db-0")) is None or p["metadata"]["uid"] != uid,
            45,
            "db-0 gone",
        )
    admitted = _evictions(led, "db-0")
    assert admitted, "db-0 left without an accepted eviction"
    t_admit = _at(admitted[0])
    assert t_admit - first_429 >= 5, "admitted before the drain timeout: test too fast"
    meta = terminating["metadata"]
    assert meta.get("deletionGracePeriodSeconds") == 30, meta  # its own grace on a live node
    deadline = _ts(meta["deletionTimestamp"])
    forced = led.force_deletes(name="db-0")
    assert not forced, (
        f"db-0 force-deleted on a live kubelet: {_described(forced, t_admit)} after the "
        f"eviction was admitted; its grace ran until +{deadline - t_admit:.1f}s and the "
        f"kubelet would have finished it at +{kubelet.finish_after:.0f}s"
    )
    assert uid in kubelet.finished, "db-0 did not leave by the kubelet's own deletion"
    assert kubelet.finished[uid] - t_admit >= 19
    no_403(r)


def test_node_recreated_mid_remediation_gets_its_own_grace(nr: Replicas, led: Ledger) -> None:
    c = nr.cluster
    target = "worker-0"
    pin_pool(c, target, "c")
    statefulset(c, "db", "c")
    assert c.wait_pod_running("db-0", timeout=90)["spec"]["nodeName"] == target
    # A long drain timeout: the old remediation is still draining when the node is replaced.
    # A short start-up allowance: the new node (never Ready) is judged by its own grace here;
    # the allowance itself is tested in tests/test_drain_safety.py.
    r = nr.start("replica-a", *FAST, "--drain-timeout", "60s", "--node-startup-timeout", "2s")
    nr.leader()
    old_uid = c.request("GET", f"/api/v1/nodes/{target}")["metadata"]["uid"]
    c.kill_node(target)
    wait(lambda: phase(c, target) == "Draining", 60, f"{target} Draining")
    wait(lambda: _evictions(led, "db-0"), 20, "db-0 evicted (the drain under way)")
    led.fault(f"{target} deleted and re-created with the same name mid-drain")
    t0 = time.time()
    # Re-registered: the new Node reports Ready=False once, then its kubelet is silent.
    new = c.recreate_node(target, ready="False")
    new_uid = new["metadata"]["uid"]
    assert new_uid != old_uid
    # creationTimestamp has second precision: this is at or before the real creation.
    created = _ts(new["metadata"]["creationTimestamp"])
    window_end = created + GRACE
    replaced: list[str] = []
    while time.time() < window_end + 1:
        node = c.node(target)
        if node is None or node["metadata"]["uid"] != new_uid:
            replaced.append(f"+{time.time() - created:.1f}s: {node and node['metadata']['uid']}")
            break
        time.sleep(0.25)
    # Its own remediation may cordon it once its grace is over.
    wait(
        lambda: (n := c.node(target)) is not None and n["spec"].get("unschedulable"),
        GRACE + 30,
        "the new node cordoned by its own remediation",
    )

    def early(e: dict[str, Any]) -> bool:
        return t0 < _at(e) < window_end

    # Every accepted write to this name after t0 reached the new node (the old one was gone
    # or about to be: a second cordon of it would be a double action anyway).
    cordons = [
        e
        for e in led.writes("nodes", "patch", name=target, after=t0)
        if unschedulable_set(e.get("requestObject")) is not None
    ]
    deletes = led.writes("nodes", "delete", name=target, after=t0)
    pods = [
        e
        for verb, sub in (("create", "eviction"), ("delete", None))
        for e in led.writes("pods", verb, sub=sub, after=t0)
        if early(e)
    ]
    print(
        f"\n[live-kubelet] after the re-creation (+s from the new node's creationTimestamp): "
        f"node writes {_described(led.writes('nodes', 'patch', name=target, after=t0), created)}"
        f" {_described(deletes, created)}; bodies "
        f"{[e.get('requestObject') for e in led.writes('nodes', 'patch', name=target, after=t0)]}"
    )
    too_early = [e for e in cordons + deletes if early(e)]
    assert not too_early and not replaced, (
        f"the new node {new_uid} was acted on within its grace ({GRACE:.0f}s from its "
        f"creation): {_described(too_early, created)}; replaced/deleted: {replaced}"
    )
    assert not pods, f"pods on the new node touched within its grace: {_described(pods, created)}"
    assert cordons and _at(cordons[0]) >= window_end, _described(cordons, created)
    no_403(r)
