"""NodeRecoveryPolicies driving the controller, against the fake API server on a fake clock.

Each test attacks one rule: a pause holds every destructive step (a drain in flight stops at
its next pod), pauses expire by themselves, each pool keeps its own timer, two policies on a
node refuse it, a node no policy selects is left alone, a policy change applies without a
restart (even one reading a new node condition), status is written by the leader only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noderecover.base.metrics import BLOCKED, PAUSED
from noderecover.core.machine import Phase
from noderecover.core.nodes import ANN_PHASE, format_time
from noderecover.core.policies import CLUSTER_PAUSED, NO_POLICY, POLICY_CONFLICT
from noderecover.core.policies import PAUSED as PAUSED_REASON
from tests.conftest import Harness
from tests.fakeapi import FakeKube

Start = Callable[..., Any]
CP = {"node-role.kubernetes.io/control-plane": ""}


def phase(h: Harness, node: str) -> Phase | None:
    rec = h.controller.records.get(node)
    if rec is not None:
        return rec.phase
    return Phase.HEALTHY if node in h.controller.nodes else None


def kill(kube: FakeKube, node: str) -> None:
    kube.set_kubelet_alive(node, False)
    kube.set_node_ready(node, "Unknown", "NodeStatusUnknown")


def forced(kube: FakeKube) -> list[str]:
    return [r.path for r in kube.requests_matching("DELETE", r"/pods/")]


def cordoned(kube: FakeKube, node: str) -> bool:
    n = kube.get_node(node)
    return n is not None and bool(n["spec"].get("unschedulable"))


async def test_a_pause_appearing_mid_drain_stops_the_next_force_delete_until_it_expires(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.install_policies()
    kube.add_policy("all", {})
    kube.add_node("cp", labels=CP)
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    h: Harness = await harness_factory(grace=60, drain_timeout=60)
    kill(kube, "w1")
    await h.until(lambda: len(kube.requests_matching("POST", "eviction")) >= 1, advance=0.5)
    assert forced(kube) == []
    until = h.clock.wall() + 300
    held_before = BLOCKED.labels(PAUSED_REASON)._value.get()
    kube.set_policy_spec("all", {"paused": {"until": format_time(until), "reason": "upgrade"}})
    await h.until(lambda: h.controller.policy_hold("w1") == PAUSED_REASON, what="pause seen")
    # Well past the drain timeout: the dead kubelet's pod would be force-deleted now.
    await h.idle(200, step=2.0)
    assert forced(kube) == [], "a force-delete happened while paused"
    assert cordoned(kube, "w1"), "our cordon stays while paused"
    assert kube.get_node("w1") is not None
    assert h.controller.blocked.get("w1") == PAUSED_REASON
    assert BLOCKED.labels(PAUSED_REASON)._value.get() > held_before
    assert PAUSED.labels("all")._value.get() == 1
    blocked = [m for n, r, m in h.messages if n == "w1" and r == "NodeRecoverBlocked"]
    assert any("policy all paused until" in m and "upgrade" in m for m in blocked), blocked
    # The pause expires by itself: the drain goes on and the node is removed.
    await h.until(lambda: kube.get_node("w1") is None, advance=2.0, what="removed after pause")
    assert forced(kube) and h.clock.wall() >= until
    assert PAUSED.labels("all")._value.get() == 0


async def test_a_pause_set_before_the_grace_ends_holds_the_cordon_then_expires(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.install_policies()
    kube.add_node("cp", labels=CP)
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
    h: Harness = await harness_factory(grace=30)
    kube.add_policy(
        "all", {"paused": {"until": format_time(h.clock.wall() + 120), "reason": "maintenance"}}
    )
    await h.until(lambda: h.controller.policies.active, what="policy seen")
    kill(kube, "w1")
    await h.until(lambda: phase(h, "w1") is Phase.SUSPECT, advance=0.5)
    await h.idle(100, step=2.0)
    assert not cordoned(kube, "w1"), "cordoned while paused"
    assert h.controller.blocked.get("w1") == PAUSED_REASON
    await h.until(lambda: cordoned(kube, "w1"), advance=1.0, what="cordoned after expiry")


async def test_a_recovered_node_is_restored_while_paused(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.install_policies()
    kube.add_policy("all", {})
    kube.add_node("cp", labels=CP)
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
    h: Harness = await harness_factory(grace=10, healthy_delay=10, drain_timeout=3600)
    kube.set_node_ready("w1", "False")  # a live kubelet: the drain never forces
    await h.until(lambda: cordoned(kube, "w1"), advance=1.0)
    kube.set_policy_spec("all", {"paused": {"until": format_time(h.clock.wall() + 3600)}})
    await h.until(lambda: h.controller.policy_hold("w1") == PAUSED_REASON)
    kube.set_node_ready("w1", "True")
    await h.until(lambda: not cordoned(kube, "w1"), advance=1.0, what="uncordoned while paused")
    node = kube.get_node("w1")
    assert node is not None and ANN_PHASE not in node["metadata"].get("annotations", {})


async def test_the_cluster_wide_pause_holds_every_node_and_expires(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.add_node("cp", labels=CP)
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
    h: Harness = await harness_factory(grace=20, namespace="noderecover")
    kube.set_configmap(
        "noderecover",
        "noderecover-pause",
        {"until": format_time(h.clock.wall() + 100), "reason": "incident"},
    )
    await h.until(lambda: h.controller.policy_hold("w1") == CLUSTER_PAUSED, advance=1.0)
    assert PAUSED.labels("")._value.get() == 1
    kill(kube, "w1")
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "w1"), "cordoned while the cluster was paused"
    assert h.controller.blocked.get("w1") == CLUSTER_PAUSED
    await h.until(lambda: cordoned(kube, "w1"), advance=2.0, what="cordoned after expiry")
    assert h.controller.policy_hold("w1") is None
    assert PAUSED.labels("")._value.get() == 0


async def test_two_pools_each_on_its_own_timer(kube: FakeKube, harness_factory: Start) -> None:
    kube.install_policies()
    ready_unknown = {"type": "Ready", "status": "Unknown"}
    kube.add_policy(
        "fast",
        {
            "nodeSelector": {"matchLabels": {"pool": "fast"}},
            "unhealthyConditions": [{**ready_unknown, "duration": "30s"}],
        },
    )
    kube.add_policy(
        "slow",
        {
            "nodeSelector": {"matchLabels": {"pool": "slow"}},
            "unhealthyConditions": [{**ready_unknown, "duration": "5m"}],
        },
    )
    for i in (1, 2, 3):
        kube.add_node(f"f{i}", labels={"pool": "fast"})
        kube.add_node(f"s{i}", labels={"pool": "slow"})
    h: Harness = await harness_factory(grace=1000)
    await h.until(lambda: len(h.controller.policies.policies) == 2)
    kill(kube, "f1")
    kill(kube, "s1")
    await h.until(lambda: phase(h, "s1") is Phase.SUSPECT, advance=0.5)
    await h.until(lambda: cordoned(kube, "f1"), advance=1.0, what="fast pool cordoned")
    t_fast = h.clock.wall()
    assert not cordoned(kube, "s1")
    await h.until(lambda: cordoned(kube, "s1"), advance=2.0, what="slow pool cordoned")
    t_slow = h.clock.wall()
    assert t_slow - t_fast >= 240, (t_fast, t_slow)
    assert kube.get_node("f1") is None, "the fast pool's node was removed meanwhile"


async def test_each_pool_has_its_own_max_concurrent(kube: FakeKube, harness_factory: Start) -> None:
    """The flags allow 1 remediation at a time; two pools of the same policy shape run one
    each, at once (a slow drain in one pool does not hold the other)."""
    kube.install_policies()
    for pool in ("a", "b"):
        kube.add_policy(pool, {"nodeSelector": {"matchLabels": {"pool": pool}}})
        for i in (1, 2, 3):
            kube.add_node(f"{pool}{i}", labels={"pool": pool})
    h: Harness = await harness_factory(grace=10, drain_timeout=3600, max_concurrent=1)
    await h.until(lambda: len(h.controller.policies.policies) == 2)
    kube.set_node_ready("a1", "False")  # live kubelets: drains that never force
    kube.set_node_ready("b1", "False")
    kube.add_pod("x-0", "default", "a1", "StatefulSet", owner_name="x")
    kube.add_pod("y-0", "default", "b1", "StatefulSet", owner_name="y")
    await h.until(lambda: cordoned(kube, "a1") and cordoned(kube, "b1"), advance=1.0)


async def test_a_node_two_policies_select_is_refused_and_reported_on_both(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.install_policies()
    kube.add_policy("gpu", {"nodeSelector": {"matchLabels": {"pool": "gpu"}}})
    kube.add_policy("everything", {})
    kube.add_node("g1", labels={"pool": "gpu"})
    kube.add_node("g2", labels={"pool": "gpu"})
    for n in ("c1", "c2", "c3"):
        kube.add_node(n)
    h: Harness = await harness_factory(grace=10)
    kill(kube, "g1")
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "g1")
    assert h.controller.policy_hold("g1") == POLICY_CONFLICT
    assert not [r for r in kube.requests if r.method != "GET" and r.path.endswith("/g1")]

    def degraded(name: str) -> dict[str, Any] | None:
        p = kube.get_policy(name)
        conds = (p or {}).get("status", {}).get("conditions", [])
        return next((c for c in conds if c["type"] == "Degraded"), None)

    await h.until(lambda: degraded("gpu") is not None, advance=1.0, what="status written")
    for name, other in (("gpu", "everything"), ("everything", "gpu")):
        d = degraded(name)
        assert d is not None and d["status"] == "True" and d["reason"] == "Conflict"
        assert other in d["message"] and "g1" in d["message"]
    # Removing the overlap lets the remaining policy govern the node.
    kube.remove_policy("everything")
    await h.until(lambda: cordoned(kube, "g1"), advance=1.0, what="governed again")


async def test_a_node_no_policy_selects_is_left_alone(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.install_policies()
    kube.add_policy("gpu", {"nodeSelector": {"matchLabels": {"pool": "gpu"}}})
    for n in ("g1", "g2", "g3"):
        kube.add_node(n, labels={"pool": "gpu"})
    kube.add_node("other")
    h: Harness = await harness_factory(grace=10)
    kill(kube, "other")
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "other")
    assert h.controller.policy_hold("other") == NO_POLICY
    assert not [r for r in kube.requests if r.method != "GET" and r.path.endswith("/other")]


async def test_a_policy_change_applies_without_restart_even_a_new_condition(
    kube: FakeKube, harness_factory: Start
) -> None:
    """KernelDeadlock (node-problem-detector) is not read until a policy names it: the nodes
    are re-listed with it, and the node is remediated on that condition's own duration."""
    kube.install_policies()
    kube.add_policy("all", {})
    for n in ("w1", "w2", "w3", "w4"):
        kube.add_node(n)
    h: Harness = await harness_factory(grace=30)
    await h.until(lambda: h.controller.policies.active)
    node = kube.get_node("w1")
    assert node is not None
    conds = node["status"]["conditions"] + [
        {
            "type": "KernelDeadlock",
            "status": "True",
            "reason": "DockerHung",
            "lastTransitionTime": format_time(h.clock.wall()),
        }
    ]
    kube.patch_node("w1", {"status": {"conditions": conds}})
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "w1"), "KernelDeadlock is no unhealthy condition yet"
    lists = kube.count("GET", r"^/api/v1/nodes$")
    kube.set_policy_spec(
        "all",
        {
            "unhealthyConditions": [
                {"type": "Ready", "status": "Unknown", "duration": "30s"},
                {"type": "KernelDeadlock", "status": "True", "duration": "90s"},
            ]
        },
    )
    await h.until(lambda: kube.count("GET", r"^/api/v1/nodes$") > lists, what="re-listed")
    await h.until(lambda: cordoned(kube, "w1"), advance=1.0, what="cordoned on KernelDeadlock")


async def test_status_is_written_by_the_leader_only_and_rate_limited(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.install_policies()
    kube.add_policy("all", {})
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
    h: Harness = await harness_factory(grace=10)

    def status() -> dict[str, Any]:
        p = kube.get_policy("all")
        out: dict[str, Any] = (p or {}).get("status", {})
        return out

    await h.until(lambda: status().get("nodesMatched") == 3, advance=1.0)
    s = status()
    assert s["observedGeneration"] == 1 and s["nodesUnhealthy"] == 0 and s["paused"] is False
    writes = kube.count("PATCH", r"/noderecoverypolicies/all/status$")
    await h.idle(60, step=2.0)
    assert kube.count("PATCH", r"/noderecoverypolicies/all/status$") == writes, "no change"
    kill(kube, "w1")
    await h.until(lambda: status().get("nodesUnhealthy") == 1, advance=1.0)
    # Not the leader: nothing is written however the state changes.
    h.gate.allowed = False
    writes = kube.count("PATCH", r"/noderecoverypolicies/all/status$")
    kube.set_node_ready("w2", "False")
    await h.idle(60, step=2.0)
    assert kube.count("PATCH", r"/noderecoverypolicies/all/status$") == writes


async def test_a_silent_nodes_heartbeat_lease_is_judged_by_its_policys_grace(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The flags' grace (1000 s) must not keep a policy's 30 s Ready=Unknown waiting on the
    heartbeat Lease: the Lease counts as stale after the node's own grace."""
    kube.install_policies()
    kube.add_policy(
        "all", {"unhealthyConditions": [{"type": "Ready", "status": "Unknown", "duration": "30s"}]}
    )
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
        kube.add_node_lease(n)
    h: Harness = await harness_factory(grace=1000, watch_node_leases=True)
    await h.until(lambda: h.controller.policies.active)
    kill(kube, "w1")
    await h.until(lambda: cordoned(kube, "w1"), advance=1.0, real_timeout=10, what="cordoned")
    assert h.clock.monotonic() - 1000 < 200


async def test_an_invalid_policy_is_never_half_applied_its_nodes_are_held(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Past the schema (the fake API server has none): reported on its status, and none of
    its spec is used - its nodes are held, not remediated with the flags' settings either."""
    from noderecover.base.metrics import POLICY_INVALID as INVALID_METRIC
    from noderecover.core.policies import POLICY_INVALID

    kube.install_policies()
    kube.add_policy(
        "gpu",
        {
            "nodeSelector": {"matchLabels": {"pool": "gpu"}},
            "unhealthyConditions": [{"type": "Ready", "status": "True", "duration": "1s"}],
        },
    )
    for n in ("g1", "g2", "g3"):
        kube.add_node(n, labels={"pool": "gpu"})
    h: Harness = await harness_factory(grace=10)
    await h.until(lambda: h.controller.policies.active)
    kill(kube, "g1")
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "g1") and not cordoned(kube, "g2")
    assert h.controller.policy_hold("g1") == POLICY_INVALID
    assert INVALID_METRIC.labels("gpu")._value.get() == 1

    def ready() -> dict[str, Any]:
        conds = (kube.get_policy("gpu") or {}).get("status", {}).get("conditions", [])
        return next((c for c in conds if c["type"] == "Ready"), {})

    await h.until(lambda: ready().get("reason") == "Invalid", advance=1.0, what="status")
    assert "Ready=True" in ready()["message"]
    # Fixed: applied at once, no restart.
    kube.set_policy_spec("gpu", {"nodeSelector": {"matchLabels": {"pool": "gpu"}}})
    await h.until(lambda: cordoned(kube, "g1"), advance=1.0, what="governed once fixed")
    assert INVALID_METRIC.labels("gpu")._value.get() == 0


async def test_policies_that_cannot_be_read_hold_everything_visibly(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A 403 (RBAC not updated) is not "no policies": a pause may exist. Nothing is decided,
    /readyz says why; once the policies can be read, the flags govern (none exists)."""
    kube.install_policies()
    kube.fail_next("GET", r"noderecoverypolicies", 403, count=10**6)
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
    kill(kube, "w1")
    h: Harness = await harness_factory(grace=5, settle=False)
    await h.until(lambda: h.controller.synced)
    await h.idle(8, step=1.0)
    assert not cordoned(kube, "w1")
    ready, why = h.controller.readiness()
    assert not ready and "NodeRecoveryPolicies" in why and "403" in why, why
    kube._faults.clear()
    await h.until(lambda: cordoned(kube, "w1"), advance=2.0, what="cordoned once readable")
    assert h.controller.readiness()[0]


async def test_many_small_pools_cannot_hide_a_cluster_wide_storm(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Four pools of two nodes, each allowing one unhealthy node: one dead node in each is
    "1 of 2" for every pool, but half the cluster. The cluster-wide breaker (the flags'
    --max-unhealthy over every node, whatever the policies) holds every cordon."""
    kube.install_policies()
    for pool in ("a", "b", "c", "d"):
        kube.add_policy(pool, {"nodeSelector": {"matchLabels": {"pool": pool}}, "maxUnhealthy": 1})
        for i in (1, 2):
            kube.add_node(f"{pool}{i}", labels={"pool": pool})
    h: Harness = await harness_factory(grace=10)  # --max-unhealthy 40% (the default)
    await h.until(lambda: len(h.controller.policies.policies) == 4)
    for pool in ("a", "b", "c", "d"):
        kill(kube, f"{pool}1")
    await h.idle(60, step=2.0)
    assert not any(cordoned(kube, f"{pool}1") for pool in ("a", "b", "c", "d"))
    assert h.controller.pools.global_breaker.open
    assert {h.controller.blocked.get(f"{p}1") for p in "abcd"} == {"circuit-breaker"}
