"""The silent-node fast path (issue 14): a kubelet confirmed gone never finishes a graceful
delete, so an evicted pod is forced once its own (1 s) grace has passed, not after
--drain-timeout. Confirmed gone = Ready=Unknown and the heartbeat Lease unchanged for the
whole grace; without that evidence (leases not read, or renewing) the old bounds hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noderecover.core.machine import Phase
from noderecover.core.pods import PodObs, Step, force_order, plan
from tests.conftest import Harness
from tests.fakeapi import FakeKube

Start = Callable[..., Any]
WORKER = {"node-role.kubernetes.io/worker": ""}


def pod(owner: str = "ReplicaSet", *, deleting: bool = False, grace: float = 1.0) -> PodObs:
    return PodObs("ns", f"p-{owner}", f"u-{owner}", owner, False, "Running", deleting, grace=grace)


def test_a_confirmed_dead_kubelets_pod_is_forced_once_its_own_grace_passed() -> None:
    evicted = pod(deleting=True, grace=1.0)
    assert plan(evicted, True, 2.0, 60.0, deleting_for=0.5) is Step.WAIT
    assert plan(evicted, True, 2.0, 60.0, deleting_for=1.0) is Step.FORCE
    # A pod a live kubelet was stopping with its own 30 s grace keeps it.
    slow = pod(deleting=True, grace=30.0)
    assert plan(slow, True, 2.0, 60.0, deleting_for=29.0) is Step.WAIT
    assert plan(slow, True, 2.0, 60.0, deleting_for=30.0) is Step.FORCE


def test_without_confirmation_the_drain_timeout_bounds_as_before() -> None:
    evicted = pod(deleting=True, grace=1.0)
    assert plan(evicted, True, 59.0, 60.0, deleting_for=None) is Step.WAIT
    assert plan(evicted, True, 60.0, 60.0, deleting_for=None) is Step.FORCE
    # A live kubelet: never forced, whatever the clocks say.
    assert plan(evicted, False, 1e9, 60.0, deleting_for=1e9) is Step.WAIT
    # Not evicted yet: evicted first, never forced before the drain timeout.
    assert plan(pod(), True, 1.0, 60.0, deleting_for=1e9) is Step.EVICT


def test_statefulset_pods_and_pods_with_claims_are_forced_first() -> None:
    web = PodObs("ns", "web", "u1", "ReplicaSet", False, "Running", True)
    data = PodObs("ns", "cache", "u2", "ReplicaSet", False, "Running", True, claims=True)
    db = PodObs("ns", "mysql-0", "u3", "StatefulSet", False, "Running", True)
    assert [p.name for p in sorted([web, data, db], key=force_order)] == [
        "mysql-0",
        "cache",
        "web",
    ]


def forced(kube: FakeKube) -> list[str]:
    return [
        r.path.rsplit("/", 1)[1]
        for r in kube.requests_matching("DELETE", r"/pods/")
        if (r.body or {}).get("gracePeriodSeconds") == 0
    ]


async def test_silent_node_with_a_stale_lease_is_drained_in_seconds_not_the_timeout(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for n in ("w1", "w2", "w3", "w4"):
        kube.add_node(n, labels=WORKER)
    kube.add_node_lease("w1")  # never renewed again: the kubelet is gone
    kube.add_pod("web-0", "default", "w1", "ReplicaSet", owner_name="web")
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    kube.set_kubelet_alive("w1", False)
    # A grace longer than the Lease's own duration (40 s): by the drain, the Lease has been
    # seen unchanged for its whole window (a shorter grace waits for the window instead).
    h: Harness = await harness_factory(grace=45, drain_timeout=300, watch_node_leases=True)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: h.controller.records.get("w1") is not None, advance=0.5)
    await h.until(
        lambda: (r := h.controller.records.get("w1")) is not None and r.phase is Phase.DRAINING,
        advance=0.5,
        what="draining",
    )
    draining_at = h.clock.monotonic()
    await h.until(lambda: len(forced(kube)) == 2, advance=0.25, what="both pods forced")
    took = h.clock.monotonic() - draining_at
    assert took < 10, f"forced after {took:.1f}s of a 300s drain timeout"
    assert forced(kube) == ["mysql-0", "web-0"]  # the StatefulSet pod first
    # Each was evicted (grace 1) before it was forced.
    evictions = kube.requests_matching("POST", r"/eviction$")
    assert all(e.body["deleteOptions"]["gracePeriodSeconds"] == 1 for e in evictions)
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="node removed")


async def test_without_lease_evidence_the_drain_waits_its_timeout(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for n in ("w1", "w2", "w3", "w4"):
        kube.add_node(n, labels=WORKER)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    kube.set_kubelet_alive("w1", False)
    h: Harness = await harness_factory(grace=10, drain_timeout=60, watch_node_leases=False)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(
        lambda: (r := h.controller.records.get("w1")) is not None and r.phase is Phase.DRAINING,
        advance=0.5,
        what="draining",
    )
    await h.until(lambda: bool(kube.requests_matching("POST", r"/eviction$")), advance=0.25)
    await h.idle(50)
    assert forced(kube) == []  # no Lease read: no confirmation, so the timeout bounds it
    await h.until(lambda: forced(kube) == ["mysql-0"], advance=1.0, what="forced at timeout")


async def test_evicted_pods_finishing_by_themselves_are_a_sign_of_life(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Ready=Unknown, Lease stale, but the evicted pods' graceful deletions complete without a
    force-delete: only a kubelet does that. No removal; the grace restarts (a flap), and the
    node is removed only if it then stays silent for a whole grace with nothing finishing."""
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for n in ("w1", "w2", "w3", "w4"):
        kube.add_node(n, labels=WORKER)
    kube.add_node_lease("w1")
    kube.add_pod("web-0", "default", "w1", "ReplicaSet", owner_name="web")
    # The fake kubelet of w1 stays alive: it finishes graceful deletions (after 10 ms). The
    # grace outlasts the Lease's own duration (40 s): the drain sees a confirmed-silent node.
    h: Harness = await harness_factory(grace=45, drain_timeout=300, watch_node_leases=True)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: bool(kube.requests_matching("POST", r"/eviction$")), advance=0.5)
    await h.until(lambda: kube.get_pod("default", "web-0") is None, advance=0.1)
    await h.idle(8, step=0.5)
    assert kube.get_node("w1") is not None, "removed although its kubelet finished a deletion"
    assert forced(kube) == []
    rec = h.controller.records["w1"]
    assert rec.flaps >= 1  # the sign of life restarted the grace
    # Silent for a whole grace since, nothing left to finish: removed.
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="removed after a grace")


async def test_after_the_fence_the_evicted_pod_is_forced_without_waiting_its_grace_again(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Fencing first (issue 21, item 7): the drain evicted mysql-0 (grace 1 s), waited that
    grace, found it must force and stopped to fence. The pod's grace passed before the fence:
    after it, the pod is forced at once, not after another second (when it was first seen
    deleting is carried over from the drain that stopped to fence, and only from it)."""
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for n in ("w1", "w2", "w3", "w4"):
        kube.add_node(n, labels=WORKER)
    kube.add_node_lease("w1")  # never renewed again: the kubelet is gone
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    kube.set_kubelet_alive("w1", False)
    h: Harness = await harness_factory(
        grace=45, drain_timeout=300, watch_node_leases=True, fence_command=("true",)
    )
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(
        lambda: (r := h.controller.records.get("w1")) is not None and r.fence_first,
        advance=0.25,
        real_timeout=20,
        what="the drain stopped to fence",
    )
    assert forced(kube) == []
    assert len(kube.requests_matching("POST", r"/eviction$")) == 1
    # From here in small steps: the fence, then the drain again.
    await h.until(
        lambda: (r := h.controller.records.get("w1")) is not None and r.fenced,
        advance=0.01,
        real_timeout=20,
        what="fenced",
    )
    fenced_at = h.clock.monotonic()
    await h.until(lambda: forced(kube) == ["mysql-0"], advance=0.01, real_timeout=20)
    took = h.clock.monotonic() - fenced_at
    assert took < 0.5, f"forced {took:.2f}s after the fence: its 1 s grace was waited again"
    assert len(kube.requests_matching("POST", r"/eviction$")) == 1  # never evicted again
