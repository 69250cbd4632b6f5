"""Regression tests of the drain's safety holes (issue 11), one test per hole.

Each scenario runs the controller against the in-process fake API server on a fake clock and
asserts only on what the API saw (requests, objects), so it also runs against the code from
before the fix, where it fails: that is the hole it closes. Tests that look at the new code's
internals are marked as such in their docstring.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from noderecover_testkit.fixtures import rfc3339

from noderecover.base.metrics import BLOCKED
from noderecover.core.selectors import parse_selector
from noderecover.entry.config import Config
from tests.conftest import Harness
from tests.fakeapi import FakeKube, RecordedRequest

Start = Callable[..., Any]
WORKER = {"node-role.kubernetes.io/worker": ""}
CP = {"node-role.kubernetes.io/control-plane": ""}
PREFIX = "noderecover.io/"


def cluster(kube: FakeKube, workers: int = 3, labels: dict[str, str] | None = None) -> None:
    kube.add_node("cp", labels=CP)
    for i in range(1, workers + 1):
        kube.add_node(f"w{i}", labels={**WORKER, **(labels or {})})


def forced(kube: FakeKube, pod: str = "") -> list[RecordedRequest]:
    """Force-deletes (grace 0) of pods (of the pod named `pod`, if given)."""
    return [
        r
        for r in kube.requests_matching("DELETE", rf"/pods/{pod}[^/]*$")
        if (r.body or {}).get("gracePeriodSeconds") == 0 or r.query.get("gracePeriodSeconds") == "0"
    ]


def node_deletes(kube: FakeKube, node: str) -> list[RecordedRequest]:
    return kube.requests_matching("DELETE", rf"^/api/v1/nodes/{node}$")


def evictions(kube: FakeKube, pod: str = "") -> list[RecordedRequest]:
    return kube.requests_matching("POST", rf"/pods/{pod}[^/]*/eviction$")


def cordoned(kube: FakeKube, node: str) -> bool:
    obj = kube.get_node(node)
    assert obj is not None, f"node {node} was deleted"
    return bool(obj["spec"].get("unschedulable"))


def ours(kube: FakeKube, node: str) -> dict[str, str]:
    obj = kube.get_node(node)
    assert obj is not None
    return {k: v for k, v in obj["metadata"].get("annotations", {}).items() if k.startswith(PREFIX)}


def cordon_patches(kube: FakeKube, node: str) -> list[RecordedRequest]:
    return [
        r
        for r in kube.requests_matching("PATCH", rf"^/api/v1/nodes/{node}$")
        if isinstance(r.body, dict) and (r.body.get("spec") or {}).get("unschedulable") is True
    ]


def has_config_field(name: str) -> bool:
    return name in {f.name for f in dataclasses.fields(Config)}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def pdb_pod(kube: FakeKube, node: str, name: str = "db-0", allowed: int = 0) -> None:
    """A StatefulSet pod on `node` whose PodDisruptionBudget refuses every eviction."""
    kube.add_pod(name, "default", node, "StatefulSet", owner_name="db", labels={"app": "db"})
    kube.add_pdb("db", "default", {"app": "db"}, allowed)


# -- 1 ----------------------------------------------------------------------------------
async def test_heartbeat_lease_renewing_again_mid_drain_stops_force_and_removal(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Ready stays Unknown (the node lifecycle controller has not caught up), but the
    kubelet's heartbeat Lease renews again after the drain began: nothing is forced and the
    node is not deleted, even far past --drain-timeout."""
    cluster(kube)
    for n in ("w1", "w2", "w3"):
        kube.add_node_lease(n)
    pdb_pod(kube, "w1")
    kube.set_kubelet_alive("w1", False)
    h: Harness = await harness_factory(grace=10, drain_timeout=30, watch_node_leases=True)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: len(evictions(kube)) >= 1, advance=0.5, what="drain began")
    assert cordoned(kube, "w1")
    for _ in range(60):  # 180 s of a renewing Lease: 6x the drain timeout
        kube.renew_node_lease("w1")
        await h.idle(3, step=0.5)
    assert forced(kube) == []
    assert node_deletes(kube, "w1") == []
    assert kube.get_pod("default", "db-0") is not None


# -- 2 ----------------------------------------------------------------------------------
async def test_slow_kubelet_of_a_notready_node_never_gets_its_pods_force_deleted(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Ready=False: the kubelet posts status, it is alive. A PDB holds the eviction past the
    drain timeout, then admits it; the kubelet is slow to finish the pod. It is its pod to
    finish: never force-deleted."""
    cluster(kube)
    pdb_pod(kube, "w1")
    h: Harness = await harness_factory(grace=5, drain_timeout=30)
    kube.set_node_ready("w1", "False", "KubeletNotReady")
    await h.until(lambda: len(evictions(kube)) >= 1, advance=0.5, what="eviction refused")
    await h.idle(60)  # the PDB holds it well past the drain timeout
    assert kube.get_pod("default", "db-0") is not None
    kube.set_kubelet_alive("w1", False)  # slow: never finishes while the test looks
    kube.set_pdb_allowed("db", 1)
    await h.until(
        lambda: bool(
            (kube.get_pod("default", "db-0") or {}).get("metadata", {}).get("deletionTimestamp")
        ),
        advance=0.5,
        what="eviction admitted, pod terminating",
    )
    await h.idle(600, step=2.0)  # ten minutes
    assert forced(kube) == []
    assert kube.get_pod("default", "db-0") is not None
    assert node_deletes(kube, "w1") == []


# -- 3 ----------------------------------------------------------------------------------
async def test_stale_view_saying_unknown_does_not_force_when_the_node_is_ready_false(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The view is stuck (silent watch, not yet stale) at Ready=Unknown while the node really
    is Ready=False (kubelet back, posting NotReady): the fresh read decides, no force."""
    cluster(kube)
    kube.add_pod("web-0", "default", "w1", "ReplicaSet", owner_name="web")
    kube.set_kubelet_alive("w1", False)
    h: Harness = await harness_factory(grace=10, drain_timeout=30)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: len(evictions(kube)) >= 1, advance=0.5, what="drain began")
    kube.silence_watches(True)
    kube.set_node_ready("w1", "False", "KubeletNotReady")  # the view does not see this
    await h.idle(180, step=1.0)
    assert forced(kube) == []
    assert node_deletes(kube, "w1") == []
    assert kube.get_pod("default", "web-0") is not None


# -- 4 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("life", ["ready", "lease"])
async def test_a_sign_of_life_mid_batch_stops_the_force_deletes(
    kube: FakeKube, harness_factory: Start, life: str
) -> None:
    """30 pods left on a silent node past the drain timeout; right after the 3rd
    force-delete the node turns Ready=True (`ready`) or its heartbeat Lease renews again
    (`lease`, Ready still Unknown): at most one more force-delete (one already past its
    check), and the node is not deleted."""
    cluster(kube)
    for n in ("w1", "w2", "w3"):
        kube.add_node_lease(n)
    for i in range(30):
        kube.add_pod(f"app-{i:02d}", "default", "w1", "ReplicaSet", owner_name="app")
    kube.set_kubelet_alive("w1", False)  # accepts nothing: the grace-1 evictions never finish
    h: Harness = await harness_factory(
        grace=10, drain_timeout=30, healthy_delay=3600, watch_node_leases=True
    )
    seen: list[int] = []

    def revive() -> None:
        seen.append(len(forced(kube)) - 1)  # the 4th is being served: 3 done before the change
        if life == "ready":
            kube.set_node_ready("w1", "True")
        else:
            kube.renew_node_lease("w1")

    kube.on_request("DELETE", r"^/api/v1/namespaces/default/pods/", revive, nth=4)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: len(evictions(kube)) >= 30, advance=0.5, what="30 evictions")
    await h.until(lambda: bool(seen), advance=0.5, what="the 4th force-delete")
    for _ in range(20):  # a minute, the kubelet renewing its Lease as it does
        if life == "lease":
            kube.renew_node_lease("w1")
        await h.idle(3, step=0.5)
    assert seen == [3]
    assert len(forced(kube)) <= seen[0] + 1, f"{len(forced(kube))} force-deletes"
    assert node_deletes(kube, "w1") == []


# -- 5 ----------------------------------------------------------------------------------
def _exclude(kube: FakeKube) -> None:
    kube.patch_node("w1", {"metadata": {"annotations": {f"{PREFIX}exclude": "true"}}})


def _storm(kube: FakeKube) -> None:
    for n in ("w2", "w3"):  # 3 of 6 unhealthy: over the 40 % limit
        kube.set_node_ready(n, "Unknown", "NodeStatusUnknown")


def _stale(kube: FakeKube) -> None:
    kube.silence_watches(True)
    kube.hang("GET", r"^/api/v1/nodes$")  # and no re-LIST / new watch gets through either


@pytest.mark.parametrize(
    "gate", [_exclude, _storm, _stale], ids=["exclude-annotation", "circuit-breaker", "stale-watch"]
)
async def test_a_gate_closing_mid_drain_stops_force_and_removal(
    kube: FakeKube, harness_factory: Start, gate: Callable[[FakeKube], None]
) -> None:
    """A drain (PDB-blocked pod, silent node) is under way when a gate closes: the operator
    excludes the node, a storm opens the circuit breaker, or the watch goes stale. From then
    on no pod is force-deleted and the node is not deleted."""
    cluster(kube, workers=5)
    pdb_pod(kube, "w1")
    kube.set_kubelet_alive("w1", False)
    h: Harness = await harness_factory(grace=10, drain_timeout=120, watch_silence=60)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: len(evictions(kube)) >= 1, advance=0.25, what="drain began")
    gate(kube)
    await h.idle(400, step=1.0)
    assert forced(kube) == []
    assert node_deletes(kube, "w1") == []
    assert kube.get_pod("default", "db-0") is not None


# -- 6 ----------------------------------------------------------------------------------
async def test_pod_held_by_finalizers_is_forced_once_and_does_not_hold_the_drain(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A pod whose finalizer nobody removes: force-deleted once (not on every poll), reported
    (`pod-finalizers`), the drain completes and the next dead node gets its turn."""
    cluster(kube, workers=6)  # 2 of 7 unhealthy: under the breaker
    kube.add_pod(
        "held-0", "default", "w1", "StatefulSet", owner_name="held", finalizers=["example.com/x"]
    )
    kube.add_pod("db-0", "default", "w2", "StatefulSet", owner_name="db")
    for n in ("w1", "w2"):
        kube.set_kubelet_alive(n, False)
    before = BLOCKED.labels("pod-finalizers")._value.get()
    h: Harness = await harness_factory(
        grace=10, drain_timeout=30, max_concurrent=1, real_events=True
    )
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.idle(2)
    kube.set_node_ready("w2", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: len(forced(kube, "held-0")) >= 1, advance=0.5, what="forced")
    await h.idle(60, step=0.5)
    assert len(forced(kube, "held-0")) == 1
    pod = kube.get_pod("default", "held-0")
    assert pod is not None and pod["metadata"].get("deletionTimestamp")  # held, as in a cluster
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="w1 removed")
    await h.until(lambda: kube.get_node("w2") is None, advance=0.5, what="w2 removed next")
    assert len(forced(kube, "held-0")) == 1
    # Why the drain went on without it, said once.
    assert BLOCKED.labels("pod-finalizers")._value.get() > before
    await h.until(
        lambda: any("finalizers" in (e.get("message") or "") for e in kube.events),
        advance=0.1,
        what="a NodeRecoverBlocked Event naming the finalizers",
    )
    (event,) = [e for e in kube.events if "finalizers" in (e.get("message") or "")]
    assert event["reason"] == "NodeRecoverBlocked" and event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "w1"


# -- 7 ----------------------------------------------------------------------------------
async def test_new_leader_counts_the_inherited_remediation_before_starting_another(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A new leader (max_concurrent=1) finds w1 mid-drain (annotations) and w2 dead long
    enough (Suspect since an hour): w2 is not cordoned while w1 is in flight."""
    now = utcnow()
    hour_ago = rfc3339(now - dt.timedelta(hours=1))
    kube.add_node("cp", labels=CP)
    kube.add_node(
        "w1",
        "Unknown",
        labels=WORKER,
        unschedulable=True,
        annotations={
            f"{PREFIX}phase": "Draining",
            f"{PREFIX}cordoned": "true",
            f"{PREFIX}phase-since": rfc3339(now - dt.timedelta(seconds=10)),
            f"{PREFIX}unhealthy-since": hour_ago,
        },
        last_transition_time=now - dt.timedelta(hours=2),
    )
    kube.add_node(
        "w2",
        "Unknown",
        labels=WORKER,
        annotations={
            f"{PREFIX}phase": "Suspect",
            f"{PREFIX}phase-since": hour_ago,
            f"{PREFIX}unhealthy-since": hour_ago,
        },
        last_transition_time=now - dt.timedelta(hours=2),
    )
    for n in ("w3", "w4", "w5"):
        kube.add_node(n, labels=WORKER)
    pdb_pod(kube, "w1")  # holds w1 in Draining (drain timeout far away)
    for n in ("w1", "w2"):
        kube.set_kubelet_alive(n, False)
    h: Harness = await harness_factory(grace=60, drain_timeout=3600, max_concurrent=1)
    await h.idle(30, step=0.5)
    assert cordon_patches(kube, "w2") == []
    assert not cordoned(kube, "w2")
    assert ours(kube, "w2").get(f"{PREFIX}phase") == "Suspect"
    assert cordoned(kube, "w1") and ours(kube, "w1")[f"{PREFIX}phase"] == "Draining"


# -- 8 ----------------------------------------------------------------------------------
async def test_eviction_carries_the_pod_uid_so_a_replacement_is_not_evicted(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Between the LIST and the eviction, the pod is replaced by a same-named pod (another
    uid, running elsewhere): the eviction must not hit the replacement."""
    cluster(kube)
    kube.add_pod("web-0", "default", "w1", "StatefulSet", owner_name="web")
    replacement: dict[str, Any] = {}

    def replace() -> None:
        kube.remove_pod("default", "web-0")
        replacement.update(kube.add_pod("web-0", "default", "w2", "StatefulSet", owner_name="web"))

    kube.on_request("POST", r"/pods/web-0/eviction$", replace, nth=1)
    h: Harness = await harness_factory(grace=5, drain_timeout=30)
    kube.set_node_ready("w1", "False", "KubeletNotReady")  # kubelets alive: evictions finish
    await h.until(lambda: bool(replacement), advance=0.5, what="eviction sent")
    await h.idle(20, step=0.5)
    pod = kube.get_pod("default", "web-0")
    assert pod is not None, "the replacement pod was evicted"
    assert pod["metadata"]["uid"] == replacement["metadata"]["uid"]
    assert not pod["metadata"].get("deletionTimestamp")
    assert pod["spec"]["nodeName"] == "w2"


# -- 9 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [120.0, -3600.0], ids=["forward", "backward"])
async def test_a_wall_clock_step_neither_shortens_nor_stretches_the_grace(
    kube: FakeKube, harness_factory: Start, step: float
) -> None:
    """Ready=False for 2 s, then the wall clock steps (NTP): the cordon comes after 60 s of
    monotonic time, not at once (+120 s) and not an hour late (-3600 s)."""
    cluster(kube)
    h: Harness = await harness_factory(grace=60)
    kube.set_node_ready("w1", "False", "KubeletNotReady")
    await h.until(lambda: ours(kube, "w1").get(f"{PREFIX}phase") == "Suspect", what="suspect")
    t0 = h.clock.monotonic()
    await h.idle(2, step=0.5)
    h.clock.skew_wall(step)
    await h.until(
        lambda: cordoned(kube, "w1") or h.clock.monotonic() - t0 > 70,
        advance=0.5,
        real_timeout=5.0,
    )
    elapsed = h.clock.monotonic() - t0
    assert cordoned(kube, "w1"), f"not cordoned {elapsed:.0f}s after the grace started"
    assert 59.0 <= elapsed <= 66.0, f"cordoned after {elapsed:.1f}s of monotonic time"


# -- 10 ---------------------------------------------------------------------------------
async def test_a_flap_hidden_in_a_watch_burst_restarts_the_grace(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Unknown since t0; at t0+50 the node is Ready=True then Ready=False again, both events
    arriving in one burst (the controller never sees the healthy state in its view): the
    newer Ready transition is a flap, the grace restarts; no cordon before t0+110."""
    cluster(kube)
    h: Harness = await harness_factory(grace=60, healthy_delay=30)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: ours(kube, "w1").get(f"{PREFIX}phase") == "Suspect", what="suspect")
    t0 = h.clock.monotonic()
    await h.idle(50, step=0.5)
    kube.silence_watches(True)
    base = utcnow()
    kube.set_node_ready("w1", "True", at=base + dt.timedelta(seconds=1))
    kube.set_node_ready("w1", "False", "KubeletNotReady", at=base + dt.timedelta(seconds=2))
    kube.silence_watches(False)
    while h.clock.monotonic() - t0 < 105:
        await h.idle(0.5, step=0.5)
        assert not cordoned(kube, "w1"), f"cordoned at t0+{h.clock.monotonic() - t0:.0f}s"
    await h.until(lambda: cordoned(kube, "w1"), advance=0.5, what="cordoned after a new grace")
    assert h.clock.monotonic() - t0 >= 110


# -- 11 ---------------------------------------------------------------------------------
async def test_a_new_node_that_never_became_ready_gets_the_startup_allowance(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A node that just joined and was never Ready (CNI, image pulls) is not dead: not
    cordoned after --grace, only after --node-startup-timeout.

    On the old code (no --node-startup-timeout) the option is left out of the config.
    """
    cluster(kube, workers=4)
    kube.node_age = dt.timedelta(0)
    kube.add_node("new", "False", reason="KubeletNotReady", labels=WORKER)
    kube.node_age = dt.timedelta(days=1)
    kw = {"node_startup_timeout": 300.0} if has_config_field("node_startup_timeout") else {}
    h: Harness = await harness_factory(grace=60, **kw)
    t0 = h.clock.monotonic()
    await h.idle(240, step=1.0)
    assert not cordoned(kube, "new"), "cordoned within the start-up allowance"
    assert cordon_patches(kube, "new") == []
    await h.until(lambda: cordoned(kube, "new"), advance=1.0, what="cordoned after start-up")
    assert h.clock.monotonic() - t0 >= 295


# -- 12 ---------------------------------------------------------------------------------
async def test_restore_against_a_lagging_view_backs_off(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The view says healthy (restore due), the fresh read says unhealthy again: the restore
    is retried with backoff, not on every pass (the node GET count stays small)."""
    cluster(kube)
    pdb_pod(kube, "w1")
    h: Harness = await harness_factory(grace=5, drain_timeout=600, healthy_delay=5)
    kube.set_node_ready("w1", "False", "KubeletNotReady")
    await h.until(lambda: len(evictions(kube)) >= 1, advance=0.5, what="draining")

    def reads() -> int:
        return len(kube.requests_matching("GET", r"^/api/v1/nodes/w1$"))

    base = utcnow()  # transitions in distinct seconds, as in a cluster
    kube.set_node_ready("w1", "True", at=base + dt.timedelta(seconds=1))
    n = reads()
    await h.until(lambda: reads() > n, advance=0.1, what="the drain saw it healthy")
    await h.idle(1, step=0.5)
    kube.silence_watches(True)  # the view keeps Ready=True
    kube.set_node_ready("w1", "False", "KubeletNotReady", at=base + dt.timedelta(seconds=2))
    await h.idle(6, step=0.5)  # healthy-delay passes in the view: the restore is due
    start = reads()
    await h.idle(10, step=0.1)
    gets = reads() - start
    assert 1 <= gets < 20, f"{gets} GETs of the node in 10 s"
    assert cordoned(kube, "w1")  # the fresh read said unhealthy: nothing undone


# -- 13 ---------------------------------------------------------------------------------
async def test_a_node_leaving_the_selector_is_still_restored(
    kube: FakeKube, harness_factory: Start
) -> None:
    """noderecover cordoned a node; the node loses the --node-selector label and turns
    healthy: what noderecover did is undone (uncordoned, annotations removed)."""
    cluster(kube, workers=4, labels={"pool": "a"})
    pdb_pod(kube, "w1")
    h: Harness = await harness_factory(
        grace=5, drain_timeout=600, healthy_delay=10, node_selector=parse_selector("pool=a")
    )
    kube.set_node_ready("w1", "False", "KubeletNotReady")
    await h.until(lambda: len(evictions(kube)) >= 1, advance=0.5, what="draining")
    assert cordoned(kube, "w1")
    kube.patch_node("w1", {"metadata": {"labels": {"pool": None}}})
    kube.set_node_ready("w1", "True")
    await h.idle(120, step=1.0)
    assert not cordoned(kube, "w1")
    assert ours(kube, "w1") == {}


# -- 14 ---------------------------------------------------------------------------------
async def test_a_node_recreated_under_the_same_name_is_not_touched_by_the_old_remediation(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Mid-remediation (between the fresh read before the cordon and the cordon itself) the
    Node is deleted and re-created under the same name: a new machine, NotReady while it
    joins. The old remediation's cordon and annotations never land on it, it is not deleted,
    and within its own grace nothing but its own Suspect bookkeeping happens to it."""
    cluster(kube, workers=4)
    kube.add_pod("web-0", "default", "w1", "ReplicaSet", owner_name="web")
    kube.set_kubelet_alive("w1", False)
    old_uid = kube.get_node("w1")["metadata"]["uid"]  # type: ignore[index]
    swapped: list[str] = []

    def recreate() -> None:
        kube.remove_node("w1")
        kube.podgc()
        kube.node_age = dt.timedelta(0)
        new = kube.add_node("w1", "False", reason="KubeletNotReady", labels=WORKER)
        kube.node_age = dt.timedelta(days=1)
        swapped.append(new["metadata"]["uid"])

    # PATCHes of w1: 1st the Suspect annotations, 2nd the cordon.
    kube.on_request("PATCH", r"^/api/v1/nodes/w1$", recreate, nth=2)
    h: Harness = await harness_factory(grace=10, drain_timeout=30)
    created = utcnow() - dt.timedelta(seconds=1)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: bool(swapped), advance=0.5, what="the node was re-created")
    cordon = kube.requests_matching("PATCH", r"^/api/v1/nodes/w1$")[1]
    assert cordon.body["spec"]["unschedulable"] is True  # the swap came right before it
    (new_uid,) = swapped
    await h.idle(50, step=0.5)  # within the new node's own grace (60 s from now at least)
    node = kube.get_node("w1")
    assert node is not None, "the re-created node was deleted"
    assert node["metadata"]["uid"] == new_uid
    assert not node["spec"].get("unschedulable"), "the old remediation cordoned the new node"
    ann = ours(kube, "w1")
    assert ann.get(f"{PREFIX}phase") in (None, "Suspect"), f"old remediation's data: {ann}"
    assert f"{PREFIX}cordoned" not in ann
    since = ann.get(f"{PREFIX}unhealthy-since")
    assert since is None or since >= rfc3339(created), f"old episode's start: {ann}"
    assert node_deletes(kube, "w1") == []
    assert forced(kube) == []
    # Every write to the name carries the uid it was decided on; none with the old one may
    # have been applied (the fake API server refuses a uid mismatch with 409).
    for r in kube.requests_matching("PATCH", r"^/api/v1/nodes/w1$"):
        uid = ((r.body if isinstance(r.body, dict) else {}).get("metadata") or {}).get("uid")
        assert uid in (old_uid, new_uid), f"a PATCH without the node's uid: {r.body}"
