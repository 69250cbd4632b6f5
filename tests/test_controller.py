"""The controller end to end against the in-process fake API server, on a fake clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from noderecover.base.clock import FakeClock
from noderecover.base.metrics import ACTIONS, BLOCKED, FLAPS, MALFORMED_OBJECTS
from noderecover.controller.executor import Executor
from noderecover.core.machine import Action, Kind, Outcome, Phase, Record, complete
from noderecover.core.nodes import (
    ANN_CORDONED,
    ANN_PHASE,
    ANN_TAINTED,
    ANN_UNHEALTHY_SINCE,
    OUT_OF_SERVICE_KEY,
    parse_time,
)
from noderecover.kube.client import JSON_PATCH, MERGE_PATCH, KubeClient, api_error
from tests.builders import T0, pod_json
from tests.conftest import Harness, make_config
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
    assert h.controller.pools.breaker.open
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
    assert h.controller.pools.breaker.open
    await h.until(lambda: not h.controller.pools.breaker.open, advance=5.0)
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


def cordon_patches(kube: FakeKube, node: str) -> list[Any]:
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
    assert cordon_patches(kube, "w1") == []
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
    assert h.controller.records["w1"].tainted  # we added it: ours
    assert kube.get_node("w1")["metadata"]["annotations"][ANN_TAINTED] == "true"  # type: ignore[index]
    kube.set_node_ready("w1", "True")
    await h.until(lambda: phase(h, "w1") is Phase.HEALTHY, advance=1.0)
    node = kube.get_node("w1")
    assert node is not None
    assert OUT_OF_SERVICE_KEY not in [t["key"] for t in node["spec"].get("taints") or []]
    assert not node["spec"].get("unschedulable")


THEIR_TAINT = {"key": OUT_OF_SERVICE_KEY, "value": "operator", "effect": "NoExecute"}


def out_of_service_taints(kube: FakeKube, node: str) -> list[dict[str, Any]]:
    n = kube.get_node(node)
    assert n is not None
    return [t for t in n["spec"].get("taints") or [] if t["key"] == OUT_OF_SERVICE_KEY]


@pytest.mark.parametrize("view_lags", [False, True], ids=["in-view", "after-the-view"])
async def test_an_out_of_service_taint_noderecover_did_not_add_survives_recovery(
    kube: FakeKube, harness_factory: Start, view_lags: bool
) -> None:
    """An operator tainted the node out-of-service themselves. noderecover removes the node
    (cordon, drain, Removed) but does not claim the taint, so it leaves it on recovery.
    `after-the-view`: the taint arrives while the watch is silent, so only the executor's
    fresh read before the removal can tell."""
    cluster(kube)
    h: Harness = await harness_factory(removal="out-of-service", grace=5, healthy_delay=10)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.SUSPECT)
    if view_lags:
        kube.silence_watches(True)
    taints = kube.get_node("w1")["spec"]["taints"]  # type: ignore[index]
    kube.patch_node("w1", {"spec": {"taints": [*taints, THEIR_TAINT]}})
    if not view_lags:
        await h.until(lambda: h.controller.nodes["w1"].has_taint(OUT_OF_SERVICE_KEY))
    await h.until(lambda: phase(h, "w1") is Phase.REMOVED, advance=1.0)
    rec = h.controller.records["w1"]
    assert not rec.tainted and rec.cordoned
    # Lagging: the decision never saw the taint; the executor's re-read did.
    assert h.controller.nodes["w1"].has_taint(OUT_OF_SERVICE_KEY) is not view_lags
    node = kube.get_node("w1")
    assert node is not None and ANN_TAINTED not in node["metadata"]["annotations"]
    assert node["metadata"]["annotations"][ANN_PHASE] == "Removed"
    assert out_of_service_taints(kube, "w1") == [THEIR_TAINT]  # not a second one of ours
    json_patches = [
        r
        for r in kube.requests_matching("PATCH", "^/api/v1/nodes/w1$")
        if r.content_type == "application/json-patch+json"
    ]
    assert json_patches == []
    kube.silence_watches(False)
    kube.set_node_ready("w1", "True")
    await h.until(lambda: phase(h, "w1") is Phase.HEALTHY, advance=1.0)
    await h.until(lambda: not h.controller.busy)
    node = kube.get_node("w1")
    assert node is not None and not node["spec"].get("unschedulable")  # our cordon: undone
    assert out_of_service_taints(kube, "w1") == [THEIR_TAINT]  # their taint: left alone
    assert not any(k.startswith("noderecover.io/") for k in node["metadata"]["annotations"])


class FailFirstMergePatch:
    """A client whose first merge patch fails (500): the write after the taint is lost."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        if kw.get("content_type") == MERGE_PATCH and not self.failed:
            self.failed = True
            raise api_error(500, "InternalError", "injected", verb=method, path=path)
        return await self.inner.request(method, path, **kw)


@pytest.mark.parametrize("removal", ["out-of-service", "both"])
async def test_a_taint_we_added_stays_ours_when_a_later_write_fails(
    kube: FakeKube, client: KubeClient, removal: str
) -> None:
    """Taint added, then the Removed annotation write fails (or, with `both`, the delete
    conflicts): the result still says the taint is ours, and the retry does not disown it."""
    kube.add_node("w1", "Unknown")
    uid = kube.get_node("w1")["metadata"]["uid"]  # type: ignore[index]
    cfg = make_config(removal=removal)
    rec = Record(uid, Phase.REMOVING, T0, T0 - 600, cordoned=True)
    done = Record(uid, Phase.REMOVED, T0, T0 - 600, cordoned=True, tainted=True)
    action = Action(Kind.REMOVE, "w1", uid, None, done, silent=True)
    flaky: Any = FailFirstMergePatch(client) if removal == "out-of-service" else client
    if removal == "both":
        kube.fail_next("DELETE", "^/api/v1/nodes/w1$", 409)
    executor = Executor(flaky, FakeClock(start_wall=T0), cfg, lambda: True)
    result = await executor.perform(action, rec)
    assert result.tainted is True
    if removal == "both":
        # The delete conflicted; the re-read found the taint we had just added: still ours
        # (our marker was written in the same patch as the taint), then the node was deleted.
        assert result.outcome is Outcome.OK and kube.get_node("w1") is None
        patches = [r for r in kube.requests if r.content_type == JSON_PATCH]
        assert len(patches) == 1
        marker = "/metadata/annotations/" + ANN_TAINTED.replace("/", "~1")
        assert {"op": "add", "path": marker, "value": "true"} in patches[0].body
        return
    assert result.outcome is Outcome.FAILED
    assert len(out_of_service_taints(kube, "w1")) == 1
    # The marker went on with the taint (one patch): the failed write after it loses nothing.
    node = kube.get_node("w1")
    assert node is not None and node["metadata"]["annotations"][ANN_TAINTED] == "true"
    rec = complete(rec, action, result.outcome, T0, result.retry_in, result.tainted)
    assert rec.tainted
    # The retry finds the taint on the node: ours (not "already there"), recorded as such.
    result = await executor.perform(action, rec)
    assert (result.outcome, result.tainted) == (Outcome.OK, True)
    assert kube.get_node("w1")["metadata"]["annotations"][ANN_TAINTED] == "true"  # type: ignore[index]
    assert len(out_of_service_taints(kube, "w1")) == 1


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
    assert h.controller.blocked.get("w1") == "pod-disruption-budget"
    kube.set_pdb_allowed("web", 5)
    await h.until(lambda: not kube.pods_on("w1"), advance=1.0, what="drained")
    # Drained, but a live kubelet's node is never removed: held, cordoned, slot given back.
    await h.until(lambda: h.controller.blocked.get("w1") == "kubelet-alive", advance=1.0)
    await h.idle(120, step=2.0)
    node = kube.get_node("w1")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert phase(h, "w1") is Phase.REMOVING
    rec = h.controller.records["w1"]
    assert rec.parked
    evictions = kube.requests_matching("POST", "eviction")
    # The pod's own grace (no gracePeriodSeconds), and only the pod with this uid.
    assert all(set(e.body["deleteOptions"]) == {"preconditions"} for e in evictions)
    assert all(e.body["deleteOptions"]["preconditions"]["uid"] for e in evictions)
    # Once its kubelet is silent, it is removed (after a new grace: the Ready transition).
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)  # the lifecycle controller's
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown", at=later)
    await h.idle(3)
    assert kube.get_node("w1") is not None
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0, what="removed once silent")


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


@pytest.mark.parametrize("history", [False, True])
async def test_lease_still_renewing_holds_a_silent_node(
    kube: FakeKube, harness_factory: Start, history: bool
) -> None:
    cluster(kube)
    kube.add_node_lease("w1")
    h: Harness = await harness_factory(
        grace=10, watch_node_leases=True, grace_from_heartbeat=history
    )
    kube.set_node_ready("w1", "Unknown")
    for _ in range(6):
        await h.idle(5)
        kube.renew_node_lease("w1")
    await h.until(lambda: h.controller.blocked.get("w1") == "heartbeat-lease-renewing", advance=0.5)
    assert not kube.get_node("w1")["spec"].get("unschedulable")  # type: ignore[index]
    await h.until(
        lambda: phase(h, "w1") is not Phase.SUSPECT, advance=1.0, what="lease stale -> remediation"
    )
    lease_reads = kube.requests_matching("GET", "/namespaces/kube-node-lease/leases/")
    assert lease_reads and {r.path.rsplit("/", 1)[1] for r in lease_reads} == {"w1"}
    collection = kube.requests_matching("GET", "/namespaces/kube-node-lease/leases$")
    if history:
        # The heartbeat history: one LIST, then a watch of kube-node-lease.
        assert [r for r in collection if r.query.get("watch")]
    else:
        # Leases are read one by one for silent nodes only; nothing watches kube-node-lease.
        assert not collection


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

    from noderecover.core.nodes import format_time
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
    await h.until(lambda: len(h.controller.pools.removals) == 1, what="history loaded from Events")
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: h.controller.blocked.get("w1") == "max-removals-per-hour", advance=1.0)
    assert kube.get_node("w1") is not None


async def test_a_removal_is_recorded_before_its_delete_and_counts_after_a_failover(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The leader dies right after its Node DELETE, before the NodeRecoverRemoved Event (it
    is queued): the next leader still counts the removal, from the intent Event written and
    answered before the DELETE (budget 1: a second node is held, not removed)."""
    cluster(kube, workers=5)
    a: Harness = await harness_factory(grace=5, drain_timeout=5, max_removals_per_hour=1)
    kube.set_node_ready("w1", "Unknown")
    await a.until(lambda: kube.get_node("w1") is None, advance=1.0, what="w1 removed")
    stored = kube.stores["events"].objects
    intents = [e for e in stored.values() if e.get("reason") == "NodeRecoverRemoving"]
    assert [e["involvedObject"]["name"] for e in intents] == ["w1"]
    posted = [
        i for i, r in enumerate(kube.requests) if r.method == "POST" and r.path.endswith("/events")
    ]
    deleted = [
        i for i, r in enumerate(kube.requests) if r.method == "DELETE" and r.path.endswith("/w1")
    ]
    assert posted and deleted and posted[0] < deleted[0], "the intent comes first"
    # The old leader is gone before its NodeRecoverRemoved Event was written.
    a.gate.allowed = False
    for key, e in list(stored.items()):
        if e.get("reason") == "NodeRecoverRemoved":
            del stored[key]
    b: Harness = await harness_factory(grace=5, drain_timeout=5, max_removals_per_hour=1)
    await b.until(
        lambda: len(b.controller.pools.removals) == 1, what="the intent read as a removal"
    )
    kube.set_node_ready("w2", "Unknown")
    await b.until(lambda: b.controller.blocked.get("w2") == "max-removals-per-hour", advance=1.0)
    assert kube.get_node("w2") is not None


async def test_a_removal_counts_from_its_intent_even_if_its_taint_is_never_seen(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The taint's answer is lost (here: refused, which looks the same to the controller as
    applied-but-lost), then the node recovers and is restored: the removal still counts, from
    its intent (budget 1: the next dead node is held). Found by the simulation (seed 979): a
    taint applied with its reply lost, the node restored, and a second removal in the hour."""
    cluster(kube, workers=5)
    h: Harness = await harness_factory(
        grace=5, drain_timeout=5, healthy_delay=5, max_removals_per_hour=1,
        removal="out-of-service",
    )  # fmt: skip
    # From the intent on, every write to w1 fails: its taint is never seen to go on.
    kube.on_request(
        "POST",
        r"/namespaces/default/events$",
        lambda: kube.fail_next("PATCH", r"/api/v1/nodes/w1$", 500, count=10**6),
    )
    kube.set_node_ready("w1", "Unknown")
    await h.until(
        lambda: any(
            e.get("reason") == "NodeRecoverRemoving" for e in kube.stores["events"].objects.values()
        ),
        advance=1.0,
        what="w1's removal intent",
    )
    kube._faults.clear()
    kube.set_node_ready("w1", "True")
    await h.until(lambda: "w1" not in h.controller.records, advance=1.0, what="w1 restored")
    kube.set_node_ready("w2", "Unknown")
    await h.until(lambda: h.controller.blocked.get("w2") == "max-removals-per-hour", advance=1.0)
    from noderecover.core.nodes import OUT_OF_SERVICE_KEY

    node = kube.get_node("w2") or {}
    assert not any(t["key"] == OUT_OF_SERVICE_KEY for t in node["spec"].get("taints") or [])


async def test_an_intent_that_cannot_be_written_holds_the_removal(
    kube: FakeKube, harness_factory: Start
) -> None:
    """No intent, no removal: a refused intent Event holds the Node DELETE, visibly
    (`removal-unrecorded`), until the Event is written; then the node is removed, once."""
    cluster(kube, workers=5)
    h: Harness = await harness_factory(grace=5, drain_timeout=5)
    kube.fail_next("POST", r"/namespaces/default/events$", 500, count=1000)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: h.controller.blocked.get("w1") == "removal-unrecorded", advance=1.0)
    assert kube.get_node("w1") is not None
    kube._faults.clear()
    await h.until(lambda: kube.get_node("w1") is None, advance=2.0, what="w1 removed")
    assert len(h.controller.pools.removals) == 1


def test_reconcile_visits_only_nodes_needing_attention() -> None:
    """5,000 healthy nodes cost nothing per pass; breaker totals still count them all."""
    from noderecover.base.clock import FakeClock
    from noderecover.controller.reconciler import Controller
    from noderecover.core.selectors import parse_selector
    from noderecover.entry.config import Config
    from tests.builders import T0, obs

    cfg = Config(node_selector=parse_selector("pool=a"), watch_node_leases=False)
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), cfg)
    healthy = [(f"n{i}", obs(cfg, name=f"n{i}", labels={"pool": "a"})) for i in range(5000)]
    sick = ("bad", obs(cfg, name="bad", ready="Unknown", labels={"pool": "a"}))
    c.view.resync([*healthy, sick])
    c.node_watcher.synced = True
    c.decide_all()
    assert set(c.decisions) == {"bad"}
    assert c.records["bad"].phase is Phase.HEALTHY  # the PERSIST to Suspect is not started
    # Breaker: 1 of 5,001 is far below 40%; 2,001 unhealthy of 5,001 would open it.
    assert not c.pools.breaker.open
    for i in range(2001):
        c.view.event(
            "MODIFIED", f"n{i}", obs(cfg, name=f"n{i}", ready="False", labels={"pool": "a"})
        )
    c.decide_all()
    assert c.pools.breaker.open and len(c.decisions) == 2002
    # Leaving the population (relabelled) removes a node from the totals and the visits.
    c.view.event("MODIFIED", "bad", obs(cfg, name="bad", ready="Unknown", labels={}))
    assert "bad" not in c.view.population


def test_breaker_counts_a_removed_node_still_in_view_once() -> None:
    """Between a node's DELETE and its DELETED event (or for an out-of-service node) the
    removed node is in view *and* in the removal history: it must count once, or every
    removal pushes the next dead node over the breaker's limit."""
    from noderecover.base.clock import FakeClock
    from noderecover.controller.reconciler import Controller
    from noderecover.core.machine import Record
    from noderecover.entry.config import Config
    from tests.builders import T0, obs

    cfg = Config(watch_node_leases=False)  # breaker at 40 %
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), cfg)
    nodes = [(f"n{i}", obs(cfg, name=f"n{i}")) for i in range(3)]
    gone = obs(cfg, name="gone", ready="Unknown")
    dead = obs(cfg, name="dead", ready="Unknown")
    c.view.resync([*nodes, ("gone", gone), ("dead", dead)])
    c.node_watcher.synced = True
    c.records["gone"] = Record(uid=gone.uid, phase=Phase.REMOVED, phase_since=T0 - 1)
    c.pools.removals = (T0 - 1,)
    c.decide_all()
    # 2 bad ("gone" once, "dead") of 5 nodes = 40 %: not over the limit.
    assert not c.pools.breaker.open
    # A second dead node makes it 3 of 5: open.
    c.view.event("MODIFIED", "n0", obs(cfg, name="n0", ready="Unknown"))
    c.decide_all()
    assert c.pools.breaker.open


def cordons(kube: FakeKube, node: str) -> int:
    return sum(
        1
        for r in kube.requests_matching("PATCH", f"^/api/v1/nodes/{node}$")
        if (r.body or {}).get("spec", {}).get("unschedulable") is True
    )


def flapping_events(kube: FakeKube, node: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kube.events
        if e["reason"] == "NodeRecoverFlapping" and e["involvedObject"]["name"] == node
    ]


async def until_flap_event_count(h: Harness, node: str, count: int) -> None:
    """Until the node has exactly one NodeRecoverFlapping Event, with this count (the fake
    clock stands still: the recorder writes a repeat at once when 30 s passed since the last)."""
    await h.until(
        lambda: [e["count"] for e in flapping_events(h.kube, node)] == [count],
        what=f"NodeRecoverFlapping count {count}",
    )


async def set_ready(h: Harness, node: str, status: str) -> None:
    """Change Ready and wait until the controller's view has it."""
    h.kube.set_node_ready(node, status)

    def seen() -> bool:
        obs = h.controller.nodes.get(node)
        return obs is not None and obs.ready is not None and obs.ready.status == status

    await h.until(seen, what=f"{node} Ready={status} seen")


async def test_flapping_node_is_damped_then_remediated_once_it_stays_down(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Unhealthy 40 s < grace 60 s, healthy 10 s < healthy-delay 30 s, five times: no cordon,
    no removal, one aggregated NodeRecoverFlapping Event whose count grows with each flap.
    Then unhealthy for good: remediated one grace after the last flap."""
    cluster(kube)
    flaps_before = FLAPS._value.get()
    h: Harness = await harness_factory(real_events=True, grace=60, healthy_delay=30)
    for i in range(5):
        await set_ready(h, "w1", "Unknown")
        if i > 0:
            await until_flap_event_count(h, "w1", i)
            assert FLAPS._value.get() - flaps_before == i
        await h.idle(40)
        assert phase(h, "w1") is Phase.SUSPECT
        await set_ready(h, "w1", "True")
        await h.idle(10)
    assert h.controller.records["w1"].flaps == 4
    assert cordons(kube, "w1") == 0 and not kube.get_node("w1")["spec"].get("unschedulable")  # type: ignore[index]
    assert not kube.requests_matching("POST", "eviction")
    reasons = [r for n, r, _ in h.events if n == "w1"]
    assert reasons.count("NodeRecoverFlapping") == 4 and reasons.count("NodeRecoverSuspect") == 1
    assert all(t == "Warning" for n, r, t in h.events if r == "NodeRecoverFlapping")
    # Down for good now: the grace counts from this last flap, not from the first failure.
    await set_ready(h, "w1", "Unknown")
    last_flap = h.clock.wall()
    await h.until(lambda: FLAPS._value.get() - flaps_before == 5)
    await h.idle(55)
    assert cordons(kube, "w1") == 0
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0, what="w1 removed")
    [cordon] = [
        r
        for r in kube.requests_matching("PATCH", "^/api/v1/nodes/w1$")
        if (r.body or {}).get("spec", {}).get("unschedulable") is True
    ]
    annotations = cordon.body["metadata"]["annotations"]
    assert parse_time(annotations[ANN_UNHEALTHY_SINCE]) == pytest.approx(last_flap, abs=2)
    await until_flap_event_count(h, "w1", 5)


async def test_node_flapping_after_cordon_is_never_drained_by_force_or_removed(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    kube.set_kubelet_alive("w1", False)  # evicted pods would need forcing
    held_before = BLOCKED.labels("flapping")._value.get()
    h: Harness = await harness_factory(grace=60, healthy_delay=30, drain_timeout=60)
    await set_ready(h, "w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.DRAINING, advance=1.0, what="draining")
    for _ in range(4):  # back for 10 s, down for 50 s: never a whole grace
        await set_ready(h, "w1", "True")
        await h.idle(10)
        await set_ready(h, "w1", "Unknown")
        await h.until(lambda: h.controller.blocked.get("w1") == "flapping")
        await h.idle(50)
        assert phase(h, "w1") in {Phase.DRAINING, Phase.REMOVING}
    assert not kube.requests_matching("DELETE", "/pods/")  # never forced
    assert not kube.requests_matching("DELETE", "^/api/v1/nodes/")
    assert kube.get_node("w1")["spec"]["unschedulable"] is True  # type: ignore[index]
    assert h.controller.records["w1"].flaps == 4
    assert BLOCKED.labels("flapping")._value.get() > held_before
    assert [r for n, r, _ in h.events if n == "w1"].count("NodeRecoverFlapping") == 4
    # Healthy for the healthy-delay: restored, our cordon undone.
    await set_ready(h, "w1", "True")
    await h.until(lambda: phase(h, "w1") is Phase.HEALTHY, advance=1.0, what="restored")
    node = kube.get_node("w1")
    assert node is not None and not node["spec"].get("unschedulable")
    assert not any(k.startswith("noderecover.io/") for k in node["metadata"]["annotations"])
    assert kube.get_pod("default", "mysql-0") is not None


@pytest.mark.parametrize("operator_untaints", [True, False], ids=["untainted", "still-tainted"])
async def test_removed_out_of_service_node_failing_again_starts_a_new_episode(
    kube: FakeKube, harness_factory: Start, operator_untaints: bool
) -> None:
    """Removed (out-of-service), back for less than the healthy-delay, down again: a new
    episode with a fresh grace, not Removed forever."""
    cluster(kube)
    h: Harness = await harness_factory(removal="out-of-service", grace=5, healthy_delay=30)
    await set_ready(h, "w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.REMOVED, advance=1.0, what="removed")
    if operator_untaints:
        node = kube.get_node("w1")
        assert node is not None
        others = [t for t in node["spec"]["taints"] if t["key"] != OUT_OF_SERVICE_KEY]
        kube.patch_node("w1", {"spec": {"taints": others}})
    await set_ready(h, "w1", "True")
    await h.idle(10)
    await set_ready(h, "w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.SUSPECT, what="new episode")
    rec = h.controller.records["w1"]
    assert rec.tainted is not operator_untaints and rec.cordoned and rec.flaps == 1
    await h.idle(4)
    assert phase(h, "w1") is Phase.SUSPECT  # a whole new grace
    await h.until(lambda: phase(h, "w1") is Phase.REMOVED, advance=1.0, what="removed again")
    node = kube.get_node("w1")
    assert node is not None
    assert [t["key"] for t in node["spec"]["taints"]].count(OUT_OF_SERVICE_KEY) == 1
    assert node["metadata"]["annotations"][ANN_PHASE] == "Removed"
    reasons = [r for n, r, _ in h.events if n == "w1"]
    assert reasons.count("NodeRecoverSuspect") == 2 and reasons.count("NodeRecoverRemoved") == 2
    assert reasons.count("NodeRecoverFlapping") == 1
    # Back for good: the taint and the cordon are ours, both undone.
    await set_ready(h, "w1", "True")
    await h.until(lambda: phase(h, "w1") is Phase.HEALTHY, advance=1.0, what="restored")
    node = kube.get_node("w1")
    assert node is not None and not node["spec"].get("unschedulable")
    assert OUT_OF_SERVICE_KEY not in [t["key"] for t in node["spec"].get("taints") or []]


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
    h.controller.decide_all()
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
    # The malformed hold ends (the PDB may hold the drain again right after: another reason).
    await h.until(lambda: h.controller.blocked.get("w1") != "malformed-object", advance=1.0)


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


async def test_an_unreadable_pod_holds_the_drain_and_the_node_is_never_removed(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A dead node whose pod list carries garbage: the readable pods are drained (forced after
    the timeout), the unreadable ones are never touched, and the node stays cordoned in
    Draining - not deleted - until the list is readable again."""
    cluster(kube)
    kube.add_pod("web-abc", "default", "w1", "ReplicaSet", owner_name="web")
    ghost = pod_json("ghost-0", node="w1", owner_kind="StatefulSet")
    del ghost["metadata"]["uid"]
    kube.list_garbage["pods"] = [ghost, "not a pod"]
    counted = [MALFORMED_OBJECTS.labels("pods", r)._value.get() for r in MISSING_UID_NOT_OBJECT]
    held = BLOCKED.labels("malformed-pod")._value.get()
    h: Harness = await harness_factory(grace=5, drain_timeout=30)
    kube.set_kubelet_alive("w1", False)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: kube.get_pod("default", "web-abc") is None, advance=1.0)
    await h.idle(600, step=5.0)
    assert kube.get_node("w1") is not None and phase(h, "w1") is Phase.DRAINING
    assert kube.get_node("w1")["spec"]["unschedulable"] is True  # type: ignore[index]
    assert kube.requests_matching("DELETE", "^/api/v1/nodes/") == []
    assert [p for _, p in writes(kube) if "/pods/" in p and "web-abc" not in p] == []
    # Counted at every drain attempt (one a minute), not at every look at the pods.
    for reason, before in zip(MISSING_UID_NOT_OBJECT, counted, strict=True):
        assert 5 <= MALFORMED_OBJECTS.labels("pods", reason)._value.get() - before <= 12
    assert BLOCKED.labels("malformed-pod")._value.get() - held >= 5
    kube.list_garbage.clear()
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0, what="removed once readable")


MISSING_UID_NOT_OBJECT = ("missing-uid", "not-an-object")


def test_malformed_nodes_count_as_unhealthy_for_the_breaker() -> None:
    """Many nodes turning unreadable at once (an API bug?) opens the breaker: the safe side."""
    from noderecover.base.clock import FakeClock
    from noderecover.controller.reconciler import Controller
    from noderecover.entry.config import Config
    from tests.builders import T0, node_json, obs

    cfg = Config(watch_node_leases=False)
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), cfg)
    c.view.resync([(f"n{i}", obs(cfg, name=f"n{i}")) for i in range(10)])
    c.node_watcher.synced = True
    for i in range(5):
        raw = node_json(f"n{i}")
        del raw["metadata"]["uid"]
        c.view.event("MODIFIED", f"n{i}", c.view.parse(raw))
    c.decide_all()
    assert c.pools.breaker.open
    assert all(c.decisions[f"n{i}"].action is None for i in range(5))


class StubApi:
    """Answers every request with the same body (for the leader's one-off reads)."""

    def __init__(self, body: Any) -> None:
        self.body = body

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.body


def stub_controller(body: Any) -> Any:
    from noderecover.base.clock import FakeClock
    from noderecover.controller.reconciler import Controller
    from tests.builders import T0
    from tests.conftest import make_config

    api: Any = StubApi(body)
    return Controller(api, FakeClock(start_wall=T0), make_config(watch_node_leases=True))


async def test_garbled_removal_history_is_skipped_not_fatal() -> None:
    from noderecover.core.nodes import format_time
    from tests.builders import T0

    good = {
        "reason": "NodeRecoverRemoved",
        "reportingComponent": "noderecover",
        "lastTimestamp": format_time(T0 - 60),
    }
    intent = {
        "reason": "NodeRecoverRemoving",
        "reportingComponent": "noderecover",
        "metadata": {"name": "w1.removal-0123456789abcdef"},
        "involvedObject": {"kind": "Node", "name": "w1", "uid": "u-w1"},
        "firstTimestamp": format_time(T0 - 30),
    }
    cases: list[tuple[Any, tuple[float, ...]]] = [
        ({"items": "events"}, ()),
        ({"items": {"a": 1}}, ()),
        ({"items": [None, "x", 5, {"reportingComponent": "noderecover", "lastTimestamp": 7}]}, ()),
        ({"items": [good, ["not", "an", "event"]]}, (T0 - 60,)),
        # Intents with a garbled name, time or object: skipped, never fatal.
        ({"items": [{**intent, "metadata": "x"}, {**intent, "firstTimestamp": 7}]}, ()),
        ({"items": [{**intent, "involvedObject": None}]}, (T0 - 30,)),
        # A removal with its intent counts once (the intent), whatever its Removed Event says.
        ({"items": [intent, {**good, "involvedObject": intent["involvedObject"]}]}, (T0 - 30,)),
    ]
    for body, expected in cases:
        c = stub_controller(body)
        await c.pools.load_removals()  # a leader must not crash on what the API returns
        assert c.pools.removals == expected


async def test_garbled_heartbeat_lease_counts_as_not_renewing() -> None:
    from tests.builders import obs

    for lease in ({"spec": ["renewTime"]}, {"spec": {"renewTime": 5}}, {"spec": None}, {}):
        c = stub_controller(lease)
        c.view.resync([("w1", obs(c.cfg, ready="Unknown"))])
        await c.refresh_leases()
        assert c.heartbeats.leases["w1"].renew == ""
        c._clock.advance(c.cfg.grace)
        assert not c.lease_renewing("w1")
