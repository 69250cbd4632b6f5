"""The controller end to end against the in-process fake API server, on a fake clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from noderecover.machine import Phase
from noderecover.metrics import ACTIONS, BLOCKED, MALFORMED_OBJECTS
from noderecover.nodes import ANN_CORDONED, ANN_PHASE, OUT_OF_SERVICE_KEY
from tests.conftest import Harness
from tests.fakeapi import FakeKube

Start = Callable[..., Any]
WORKER = {"node-role.kubernetes.io/worker": ""}
CP = {"node-role.kubernetes.io/control-plane": ""}


def cluster(kube: FakeKube, workers: int = 3) -> None:
    kube.add_node("cp", labels=CP)
    for i in range(1, workers + 1):
        kube.add_node(f"w{i}", labels=WORKER)


def writes(kube: FakeKube) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube.requests if r.method != "GET"]


def phase(h: Harness, node: str) -> Phase | None:
    """The node's phase in the controller; None once the node is gone from its view."""
    rec = h.controller.records.get(node)
    if rec is not None:
        return rec.phase
    return Phase.HEALTHY if node in h.controller.nodes else None


async def test_seed_scenario_dead_node_is_cordoned_drained_and_deleted(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    kube.add_pod("web-abc", "default", "w1", "ReplicaSet", owner_name="web")
    kube.add_pod("kube-proxy-x", "kube-system", "w1", "DaemonSet", owner_name="kube-proxy")
    h: Harness = await harness_factory(grace=60, drain_timeout=60)
    kube.set_kubelet_alive("w1", False)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: phase(h, "w1") is Phase.SUSPECT, what="suspect")
    assert kube.get_node("w1")["metadata"]["annotations"][ANN_PHASE] == "Suspect"  # type: ignore[index]
    await h.idle(59)
    assert not kube.get_node("w1")["spec"].get("unschedulable")  # type: ignore[index]
    await h.until(
        lambda: phase(h, "w1") in {Phase.DRAINING, Phase.REMOVING, Phase.REMOVED}, advance=0.5
    )
    node = kube.get_node("w1")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"][ANN_CORDONED] == "true"
    cordon = kube.requests_matching("PATCH", r"^/api/v1/nodes/w1$")[1]
    assert cordon.content_type == "application/merge-patch+json"
    # Evicted with grace 1 (silent node), DaemonSet pod left alone.
    await h.until(lambda: len(kube.requests_matching("POST", "eviction")) >= 2)
    evictions = kube.requests_matching("POST", r"/eviction$")
    assert {e.path.split("/")[-2] for e in evictions} == {"mysql-0", "web-abc"}
    assert all(e.body["deleteOptions"]["gracePeriodSeconds"] == 1 for e in evictions)
    # The dead kubelet never finishes them: force-deleted after the drain timeout.
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0, what="node deleted")
    forced = kube.requests_matching("DELETE", r"/pods/")
    assert {f.path.split("/")[-1] for f in forced} == {"mysql-0", "web-abc"}
    assert all(f.body["gracePeriodSeconds"] == 0 for f in forced)
    delete = kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")
    assert len(delete) == 1
    assert set(delete[0].body["preconditions"]) == {"uid", "resourceVersion"}
    assert kube.get_pod("kube-system", "kube-proxy-x") is not None
    # Nothing else was touched: no other node written, no PVC/PV calls at all.
    assert all("/nodes/w1" in p or "/pods/" in p or "/events" in p for _, p in writes(kube))
    assert not [r for r in kube.requests if "persistentvolume" in r.path]
    await h.until(lambda: "w1" not in h.controller.records)
    reasons = [r for n, r, _ in h.events if n == "w1"]
    assert reasons[:3] == ["NodeRecoverSuspect", "NodeRecoverCordoned", "NodeRecoverDraining"]
    assert "NodeRecoverRemoved" in reasons


async def test_recovery_within_grace_touches_nothing_but_annotations(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h: Harness = await harness_factory()
    kube.set_node_ready("w2", "False", "KubeletNotReady")
    await h.until(lambda: phase(h, "w2") is Phase.SUSPECT)
    await h.idle(30)
    kube.set_node_ready("w2", "True")
    await h.until(lambda: phase(h, "w2") is Phase.HEALTHY, advance=1.0)
    node = kube.get_node("w2")
    assert node is not None and not node["spec"].get("unschedulable")
    assert not any(k.startswith("noderecover.io/") for k in node["metadata"]["annotations"])
    assert not kube.requests_matching("POST", "eviction")
    await h.idle(120)
    assert not kube.get_node("w2")["spec"].get("unschedulable")  # type: ignore[index]


async def test_recovery_after_cordon_uncordons_only_our_own_cordon(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube, workers=5)  # 2 of 6 unhealthy stays under the 40% breaker
    kube.patch_node("w3", {"spec": {"unschedulable": True}})  # an admin's cordon
    kube.add_pod("db-0", "default", "w1", "StatefulSet", labels={"app": "db"})
    kube.add_pod("db-1", "default", "w3", "StatefulSet", labels={"app": "db"})
    kube.add_pdb("db", "default", {"app": "db"}, 0)  # blocks both drains: they stay in Draining
    h: Harness = await harness_factory(max_concurrent=2, grace=10)
    kube.set_node_ready("w1", "False")
    kube.set_node_ready("w3", "False")
    await h.until(
        lambda: phase(h, "w1") is Phase.DRAINING and phase(h, "w3") is Phase.DRAINING, advance=1.0
    )
    assert kube.get_node("w1")["spec"]["unschedulable"] is True  # type: ignore[index]
    kube.set_node_ready("w1", "True")
    kube.set_node_ready("w3", "True")
    await h.until(
        lambda: phase(h, "w1") is Phase.HEALTHY and phase(h, "w3") is Phase.HEALTHY, advance=1.0
    )
    assert not kube.get_node("w1")["spec"].get("unschedulable")  # type: ignore[index]
    assert kube.get_node("w3")["spec"]["unschedulable"] is True  # type: ignore[index]
    assert kube.get_pod("default", "db-0") is not None  # the PDB was respected


async def test_circuit_breaker_blocks_mass_failure(kube: FakeKube, harness_factory: Start) -> None:
    cluster(kube, workers=4)  # 5 nodes; 40% = 2
    before = BLOCKED.labels("circuit-breaker")._value.get()
    h: Harness = await harness_factory(grace=10)
    for n in ("w1", "w2", "w3"):
        kube.set_node_ready(n, "Unknown")
    await h.idle(120)
    assert h.controller.breaker.open
    assert not [
        r for r in kube.requests_matching("PATCH", "^/api/v1/nodes/") if (r.body or {}).get("spec")
    ]
    assert not kube.requests_matching("POST", "eviction")
    assert not kube.requests_matching("DELETE", "^/api/v1/nodes/")
    assert all(
        not (kube.get_node(n) or {}).get("spec", {}).get("unschedulable")
        for n in ("w1", "w2", "w3")
    )
    assert BLOCKED.labels("circuit-breaker")._value.get() > before
    assert ("w1", "NodeRecoverBlocked", "Warning") in h.events
    # Two recover: count 1 <= 2, but the breaker stays open for the storm cooldown.
    kube.set_node_ready("w2", "True")
    kube.set_node_ready("w3", "True")
    await h.idle(100)
    assert h.controller.breaker.open
    await h.until(lambda: not h.controller.breaker.open, advance=5.0)
    await h.until(
        lambda: phase(h, "w1") in {Phase.DRAINING, Phase.REMOVING, Phase.REMOVED},
        advance=1.0,
        what="w1 remediated after cooldown",
    )


async def test_dry_run_writes_nothing(kube: FakeKube, harness_factory: Start) -> None:
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet")
    kube.set_kubelet_alive("w1", False)
    h: Harness = await harness_factory(dry_run=True, grace=5, drain_timeout=5)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.REMOVED, advance=1.0)
    assert writes(kube) == []
    assert kube.get_node("w1") is not None and kube.get_pod("default", "mysql-0") is not None


DRAINING_SINCE_2020 = {
    "noderecover.io/phase": "Draining",
    "noderecover.io/cordoned": "true",
    "noderecover.io/phase-since": "2020-01-01T00:10:00Z",
    "noderecover.io/unhealthy-since": "2020-01-01T00:00:00Z",
}


def cordons(kube: FakeKube, node: str) -> list[Any]:
    return [
        r
        for r in kube.requests_matching("PATCH", f"^/api/v1/nodes/{node}$")
        if (r.body or {}).get("spec", {}).get("unschedulable")
    ]


async def test_new_leader_resumes_from_annotations(kube: FakeKube, harness_factory: Start) -> None:
    # What a previous leader left: the node NotReady since 2019, cordoned by us in the same
    # episode, draining for years already.
    kube.add_node("cp", labels=CP)
    kube.add_node(
        "w1",
        "Unknown",
        labels=WORKER,
        unschedulable=True,
        annotations=DRAINING_SINCE_2020,
        last_transition_time=dt.datetime(2019, 12, 31, 23, 0, tzinfo=dt.UTC),
    )
    for n in ("w2", "w3"):
        kube.add_node(n, labels=WORKER)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet")
    kube.set_kubelet_alive("w1", False)
    h: Harness = await harness_factory(grace=600, drain_timeout=60)
    # No new grace, no second cordon: straight on with the drain, overdue -> force.
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="removed")
    assert cordons(kube, "w1") == []
    assert kube.requests_matching("DELETE", "/pods/mysql-0")


async def test_stale_annotations_from_an_older_episode_restart_the_grace(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Draining annotations from 2020, but the node went NotReady only now: the node does not
    back them (it was healthy in between), so nothing is skipped - a full new grace first."""
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet")
    kube.set_kubelet_alive("w1", False)
    kube.patch_node(
        "w1", {"spec": {"unschedulable": True}, "metadata": {"annotations": DRAINING_SINCE_2020}}
    )
    kube.set_node_ready("w1", "Unknown")
    h: Harness = await harness_factory(grace=600, drain_timeout=60)
    await h.idle(590, step=5.0)
    assert phase(h, "w1") is Phase.SUSPECT
    assert h.controller.records["w1"].cordoned  # our cordon is still ours to undo
    assert not kube.requests_matching("POST", "eviction")
    assert not kube.requests_matching("DELETE", "/pods/")
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0, what="removed after grace")


async def test_out_of_service_taint_added_without_replacing_and_removed_on_return(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h: Harness = await harness_factory(removal="out-of-service", grace=5, healthy_delay=10)
    kube.set_node_ready("w1", "Unknown")  # adds the lifecycle taints too
    await h.until(lambda: phase(h, "w1") is Phase.REMOVED, advance=1.0)
    taints = [t["key"] for t in kube.get_node("w1")["spec"]["taints"]]  # type: ignore[index]
    assert OUT_OF_SERVICE_KEY in taints and "node.kubernetes.io/unreachable" in taints
    patch = [
        r
        for r in kube.requests_matching("PATCH", "^/api/v1/nodes/w1$")
        if r.content_type == "application/json-patch+json"
    ]
    assert patch and patch[0].body[0]["op"] == "test"
    kube.set_node_ready("w1", "True")
    await h.until(lambda: phase(h, "w1") is Phase.HEALTHY, advance=1.0)
    node = kube.get_node("w1")
    assert node is not None
    assert OUT_OF_SERVICE_KEY not in [t["key"] for t in node["spec"].get("taints") or []]
    assert not node["spec"].get("unschedulable")


async def test_pdb_blocks_evictions_on_a_live_notready_node_until_allowed(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    for i in range(3):
        kube.add_pod(
            f"web-{i}", "default", "w1", "ReplicaSet", owner_name="web", labels={"app": "web"}
        )
    kube.add_pdb("web", "default", {"app": "web"}, 1)
    h: Harness = await harness_factory(grace=5, drain_timeout=30)
    kube.set_node_ready("w1", "False", "KubeletNotReady")  # kubelet alive: finishes deletes
    await h.until(lambda: phase(h, "w1") is Phase.DRAINING, advance=1.0)
    await h.idle(120, step=2.0)
    # A live node's PDB-protected pods are never forced, even past the drain timeout.
    assert len(kube.pods_on("w1")) == 2 and phase(h, "w1") is Phase.DRAINING
    assert not kube.requests_matching("DELETE", "/pods/")
    blocked = [r for r in kube.requests_matching("POST", "eviction")]
    assert len(blocked) >= 3
    kube.set_pdb_allowed("web", 5)
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0, what="drained + removed")
    evictions = kube.requests_matching("POST", "eviction")
    assert all("deleteOptions" not in (e.body or {}) for e in evictions)  # pod's own grace


async def test_node_changing_during_delete_is_reread_and_retried(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    kube.fail_next("DELETE", r"^/api/v1/nodes/w1$", 409)
    h: Harness = await harness_factory(grace=5, drain_timeout=5)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0)
    assert len(kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")) == 2


async def test_node_healthy_on_reread_is_not_deleted(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The watch lags (silenced) while the node comes back: the re-read before removal wins."""
    cluster(kube)
    # The fence command gives the test a window between drain and removal.
    h: Harness = await harness_factory(
        grace=5, drain_timeout=5, fence_command=("sleep", "0.4"), healthy_delay=5
    )
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.REMOVING, advance=0.5)
    kube.silence_watches(True)
    kube.set_node_ready("w1", "True")
    await h.idle(30, step=0.5)
    await h.until(lambda: not h.controller.busy)
    assert kube.get_node("w1") is not None
    assert not kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")
    kube.silence_watches(False)
    await h.until(lambda: phase(h, "w1") is Phase.HEALTHY, advance=1.0)
    assert not kube.get_node("w1")["spec"].get("unschedulable")  # type: ignore[index]


async def test_lease_still_renewing_holds_a_silent_node(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    kube.add_node_lease("w1")
    h: Harness = await harness_factory(grace=10, watch_node_leases=True)
    kube.set_node_ready("w1", "Unknown")
    for _ in range(6):
        await h.idle(5)
        kube.renew_node_lease("w1")
    await h.until(lambda: h.controller.blocked.get("w1") == "heartbeat-lease-renewing", advance=0.5)
    assert not kube.get_node("w1")["spec"].get("unschedulable")  # type: ignore[index]
    await h.until(
        lambda: phase(h, "w1") is not Phase.SUSPECT, advance=1.0, what="lease stale -> remediation"
    )
    # Leases are read one by one for silent nodes only; nothing watches kube-node-lease.
    lease_reads = kube.requests_matching("GET", "/namespaces/kube-node-lease/leases")
    assert lease_reads and {r.path.rsplit("/", 1)[1] for r in lease_reads} == {"w1"}
    assert not [r for r in lease_reads if r.query.get("watch")]


async def test_no_writes_without_the_act_gate(kube: FakeKube, harness_factory: Start) -> None:
    cluster(kube)
    h: Harness = await harness_factory(grace=5)
    h.gate.allowed = False
    kube.set_node_ready("w1", "Unknown")
    await h.idle(60)
    assert [w for w in writes(kube) if "/events" not in w[1]] == []
    h.gate.allowed = True
    await h.until(lambda: phase(h, "w1") not in {None, Phase.HEALTHY, Phase.SUSPECT}, advance=1.0)


async def test_max_concurrent_one_at_a_time(kube: FakeKube, harness_factory: Start) -> None:
    cluster(kube, workers=6)
    for n in ("w1", "w2"):
        kube.add_pod(f"db-{n}", "default", n, "StatefulSet", labels={"app": "db"})
        kube.set_kubelet_alive(n, False)
    kube.add_pdb("db", "default", {"app": "db"}, 0)
    h: Harness = await harness_factory(grace=5, drain_timeout=3600)
    kube.set_node_ready("w1", "False")
    kube.set_node_ready("w2", "False")
    await h.idle(60)
    phases = {phase(h, "w1"), phase(h, "w2")}
    assert phases == {Phase.DRAINING, Phase.SUSPECT}
    assert (
        sum(bool((kube.get_node(n) or {})["spec"].get("unschedulable")) for n in ("w1", "w2")) == 1
    )


async def test_removal_budget_survives_failover_through_events(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A new leader reads the earlier leader's NodeRecoverRemoved Events: the hourly budget
    is not reset by a failover."""
    import time

    from noderecover.nodes import format_time
    from tests.conftest import client_for

    cluster(kube, workers=5)
    c = client_for(kube)
    try:
        await c.request(
            "POST",
            "/api/v1/namespaces/default/events",
            body={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": "w0.removed", "namespace": "default"},
                "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": "w0"},
                "reason": "NodeRecoverRemoved",
                "message": "removed",
                "type": "Warning",
                "reportingComponent": "noderecover",
                "reportingInstance": "old-leader",
                "source": {"component": "noderecover"},
                "count": 1,
                "firstTimestamp": format_time(time.time() - 600),
                "lastTimestamp": format_time(time.time() - 600),
            },
        )
    finally:
        await c.close()
    h: Harness = await harness_factory(grace=5, drain_timeout=5, max_removals_per_hour=1)
    await h.until(lambda: len(h.controller.removals) == 1, what="history loaded from Events")
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: h.controller.blocked.get("w1") == "max-removals-per-hour", advance=1.0)
    assert kube.get_node("w1") is not None


def test_reconcile_visits_only_nodes_needing_attention() -> None:
    """5,000 healthy nodes cost nothing per pass; breaker totals still count them all."""
    from noderecover.clock import FakeClock
    from noderecover.config import Config
    from noderecover.controller import Controller
    from noderecover.selectors import parse_selector
    from tests.builders import T0, obs

    cfg = Config(node_selector=parse_selector("pool=a"), watch_node_leases=False)
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), cfg)
    healthy = [(f"n{i}", obs(cfg, name=f"n{i}", labels={"pool": "a"})) for i in range(5000)]
    sick = ("bad", obs(cfg, name="bad", ready="Unknown", labels={"pool": "a"}))
    c._node_resync([*healthy, sick])
    c.node_watcher.synced = True
    c.reconcile(None)
    assert set(c.decisions) == {"bad"}
    assert c.records["bad"].phase is Phase.HEALTHY  # the PERSIST to Suspect is not started
    # Breaker: 1 of 5,001 is far below 40%; 2,001 unhealthy of 5,001 would open it.
    assert not c.breaker.open
    for i in range(2001):
        c._node_event(
            "MODIFIED", f"n{i}", obs(cfg, name=f"n{i}", ready="False", labels={"pool": "a"})
        )
    c.reconcile(None)
    assert c.breaker.open and len(c.decisions) == 2002
    # Leaving the population (relabelled) removes a node from the totals and the visits.
    c._node_event("MODIFIED", "bad", obs(cfg, name="bad", ready="Unknown", labels={}))
    assert "bad" not in c._population


# ------------------------------------------------------------------------- malformed nodes
DEAD_BUT_UNREADABLE = {
    "status": {
        "conditions": [
            {"type": "Ready", "status": "Unknown", "lastTransitionTime": "2020-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:01Z"},
        ]
    }
}


def spec_writes(kube: FakeKube) -> list[Any]:
    return [r for r in kube.requests_matching("PATCH", "^/api/v1/nodes/") if r.body.get("spec")]


async def test_a_malformed_node_is_counted_held_and_never_acted_on(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h: Harness = await harness_factory(grace=10)
    before = MALFORMED_OBJECTS.labels("nodes", "duplicate-condition")._value.get()
    kube.patch_node("w1", DEAD_BUT_UNREADABLE)  # two Ready conditions: ambiguous
    await h.until(lambda: h.controller.nodes["w1"].malformed == "duplicate-condition")
    assert MALFORMED_OBJECTS.labels("nodes", "duplicate-condition")._value.get() > before
    await h.idle(300, step=5.0)
    assert writes(kube) == [] and phase(h, "w1") is Phase.HEALTHY
    h.controller.reconcile(None)
    assert h.controller.decisions["w1"].why.startswith("node object malformed")
    # Readable again (and still dead): remediation starts from scratch, grace included.
    kube.patch_node("w1", {"status": {"conditions": None}})
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.SUSPECT)
    await h.until(lambda: bool(spec_writes(kube)), advance=1.0, what="cordoned after grace")


async def test_a_node_turning_malformed_mid_remediation_is_held(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    kube.add_pod("db-0", "default", "w1", "StatefulSet", labels={"app": "db"})
    kube.add_pdb("db", "default", {"app": "db"}, 0)  # keeps the drain going
    h: Harness = await harness_factory(grace=5)
    kube.set_node_ready("w1", "False")
    await h.until(lambda: phase(h, "w1") is Phase.DRAINING, advance=1.0)
    uid = kube.get_node("w1")["metadata"]["uid"]  # type: ignore[index]
    kube.patch_node("w1", {"metadata": {"uid": None}})  # no uid: nothing may be written
    await h.until(lambda: h.controller.nodes["w1"].malformed == "missing-uid")
    await h.until(lambda: not h.controller.busy, advance=1.0)  # the drain noticed and stopped
    await h.until(lambda: h.controller.blocked.get("w1") == "malformed-object", advance=1.0)
    assert ("w1", "NodeRecoverBlocked", "Warning") in h.events
    n = len(writes(kube))
    await h.idle(120, step=5.0)
    assert len(writes(kube)) == n and kube.get_node("w1") is not None
    assert phase(h, "w1") is Phase.DRAINING  # the record survives, held
    kube.patch_node("w1", {"metadata": {"uid": uid}})
    await h.until(lambda: "w1" not in h.controller.blocked, advance=1.0)


async def test_the_reread_before_a_destructive_step_refuses_a_malformed_node(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The watch lags (silenced) while the node object turns unreadable: the fresh read
    before the cordon sees it and the cordon is not done."""
    cluster(kube)
    h: Harness = await harness_factory(grace=10)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.SUSPECT)
    kube.silence_watches(True)
    kube.patch_node("w1", {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}})
    before = ACTIONS.labels("cordon", "malformed")._value.get()
    await h.until(lambda: ACTIONS.labels("cordon", "malformed")._value.get() > before, advance=1.0)
    assert spec_writes(kube) == []
    assert h.controller.records["w1"].retry_at > h.clock.wall()  # looked at again later


def test_malformed_nodes_count_as_unhealthy_for_the_breaker() -> None:
    """Many nodes turning unreadable at once (an API bug?) opens the breaker: the safe side."""
    from noderecover.clock import FakeClock
    from noderecover.config import Config
    from noderecover.controller import Controller
    from tests.builders import T0, node_json, obs

    cfg = Config(watch_node_leases=False)
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), cfg)
    c._node_resync([(f"n{i}", obs(cfg, name=f"n{i}")) for i in range(10)])
    c.node_watcher.synced = True
    for i in range(5):
        raw = node_json(f"n{i}")
        del raw["metadata"]["uid"]
        c._node_event("MODIFIED", f"n{i}", c._parse_node(raw))
    c.reconcile(None)
    assert c.breaker.open
    assert all(c.decisions[f"n{i}"].action is None for i in range(5))


class StubApi:
    """Answers every request with the same body (for the leader's one-off reads)."""

    def __init__(self, body: Any) -> None:
        self.body = body

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.body


def stub_controller(body: Any) -> Any:
    from noderecover.clock import FakeClock
    from noderecover.controller import Controller
    from tests.builders import T0
    from tests.conftest import make_config

    api: Any = StubApi(body)
    return Controller(api, FakeClock(start_wall=T0), make_config(watch_node_leases=True))


async def test_garbled_removal_history_is_skipped_not_fatal() -> None:
    from noderecover.nodes import format_time
    from tests.builders import T0

    good = {"reportingComponent": "noderecover", "lastTimestamp": format_time(T0 - 60)}
    cases: list[tuple[Any, tuple[float, ...]]] = [
        ({"items": "events"}, ()),
        ({"items": {"a": 1}}, ()),
        ({"items": [None, "x", 5, {"reportingComponent": "noderecover", "lastTimestamp": 7}]}, ()),
        ({"items": [good, ["not", "an", "event"]]}, (T0 - 60,)),
    ]
    for body, expected in cases:
        c = stub_controller(body)
        await c._load_removals()  # a leader must not crash on what the API returns
        assert c.removals == expected


async def test_garbled_heartbeat_lease_counts_as_not_renewing() -> None:
    from tests.builders import obs

    for lease in ({"spec": ["renewTime"]}, {"spec": {"renewTime": 5}}, {"spec": None}, {}):
        c = stub_controller(lease)
        c._node_resync([("w1", obs(c.cfg, ready="Unknown"))])
        await c.refresh_leases()
        assert c.leases["w1"][0] == ""
        c._clock.advance(c.cfg.grace)
        assert not c.lease_renewing("w1")
