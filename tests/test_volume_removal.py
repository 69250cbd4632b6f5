"""Volume-aware removal (issue 14): the rules of core/volumes.py, attacked.

- out-of-service / both: the Node is never deleted while a VolumeAttachment names it; the
  taint stays on through a wait, a timeout, a gate closing and a failover.
- a wait that runs out is a hold (`volumes-attached`), reported, slot given back.
- delete: a node that still holds volumes is deleted, and the operator is told (Event on the
  Node and on each pod waiting for the volume); its volumes are followed to re-attach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from noderecover.core.machine import Phase
from noderecover.core.nodes import (
    ANN_PHASE,
    ANN_TAINTED,
    OUT_OF_SERVICE_KEY,
    OUT_OF_SERVICE_TAINT,
)
from noderecover.core.volumes import (
    VOLUMES_ATTACHED,
    claim_of,
    on_node,
    parse_attachment,
    pods_waiting,
    reattached,
)
from tests.conftest import Harness
from tests.fakeapi import FakeKube
from tests.test_controller import cluster, phase

Start = Callable[..., Any]


def tainted(kube: FakeKube, node: str) -> bool:
    n = kube.get_node(node)
    return n is not None and any(
        t["key"] == OUT_OF_SERVICE_KEY for t in n["spec"].get("taints") or []
    )


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


# ------------------------------------------------------------------------------ pure rules
def test_attachments_are_parsed_totally() -> None:
    good = {
        "metadata": {"name": "va-1"},
        "spec": {"nodeName": "w1", "source": {"persistentVolumeName": "pv-1"}},
        "status": {"attached": True},
    }
    a = parse_attachment(good)
    assert a is not None and (a.name, a.node, a.pv, a.attached, a.detaching) == (
        "va-1",
        "w1",
        "pv-1",
        True,
        False,
    )
    deleting = {**good, "metadata": {"name": "va-2", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    d = parse_attachment(deleting)
    assert d is not None and d.detaching
    bads: tuple[Any, ...] = (
        None,
        [],
        "x",
        {"metadata": {}},
        {"metadata": {"name": "a"}, "spec": {}},
        {
            "metadata": {"name": 3},
            "spec": {"nodeName": "w1"},
        },
    )
    for bad in bads:
        assert parse_attachment(bad) is None
    inline = parse_attachment({"metadata": {"name": "v"}, "spec": {"nodeName": "w1", "source": 7}})
    assert inline is not None and inline.pv is None and not inline.attached


def test_on_node_and_reattached() -> None:
    raws = [
        {
            "metadata": {"name": n},
            "spec": {"nodeName": node, "source": {"persistentVolumeName": pv}},
            "status": {"attached": att},
        }
        for n, node, pv, att in (
            ("b", "w1", "pv-1", True),
            ("a", "w1", "pv-2", False),
            ("c", "w2", "pv-1", False),
            ("d", "w3", "pv-2", True),
        )
    ]
    atts = [a for r in raws if (a := parse_attachment(r)) is not None]
    assert [a.name for a in on_node(atts, "w1")] == ["a", "b"]  # attached or not: still its
    assert reattached(atts, "pv-1", "w1") is None  # w2's is not attached yet
    assert reattached(atts, "pv-2", "w1") == "w3"
    assert reattached(atts, "pv-2", "w3") is None


def test_claims_and_waiting_pods() -> None:
    assert claim_of({"spec": {"claimRef": {"namespace": "db", "name": "data-0"}}}) == (
        "db",
        "data-0",
    )
    bad_pvs: tuple[Any, ...] = (
        None,
        {},
        {"spec": {"claimRef": {"name": "x"}}},
        {"spec": {"claimRef": []}},
    )
    for bad in bad_pvs:
        assert claim_of(bad) is None

    def pod(name: str, node: str, claim: str, deleting: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"namespace": "db", "name": name, "uid": f"u-{name}"}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return {
            "metadata": meta,
            "spec": {
                "nodeName": node,
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
            },
        }

    pods = [
        pod("new", "w2", "data-0"),
        pod("old", "w1", "data-0"),  # still on the removed node
        pod("gone", "w3", "data-0", deleting=True),
        pod("other", "w2", "data-1"),
        "garbage",
    ]
    assert [p.name for p in pods_waiting(pods, "data-0", "w1")] == ["new"]


# ------------------------------------------------------------------ the controller, faked API
async def _removing(kube: FakeKube, harness_factory: Start, **cfg: Any) -> Harness:
    cluster(kube, workers=4)
    kube.add_volume_attachment("va-w1", "w1", "pv-1")
    h: Harness = await harness_factory(grace=5, healthy_delay=10, **cfg)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: tainted(kube, "w1"), advance=0.5, what="tainted")
    return h


@pytest.mark.parametrize("removal", ["both", "out-of-service"])
async def test_the_node_is_kept_tainted_until_its_volumes_are_detached(
    kube: FakeKube, harness_factory: Start, removal: str
) -> None:
    h = await _removing(kube, harness_factory, removal=removal, detach_timeout=120)
    await h.idle(60, step=1.0)  # the attach/detach controller has not detached yet
    node = kube.get_node("w1")
    assert node is not None and tainted(kube, "w1")
    ann = node["metadata"]["annotations"]
    assert ann[ANN_PHASE] == Phase.REMOVING.value and ann[ANN_TAINTED] == "true"
    assert kube.count("DELETE", "^/api/v1/nodes/w1$") == 0
    assert sample("noderecover_volumes_held") == 1
    kube.remove_volume_attachment("va-w1")  # detached
    if removal == "both":
        await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="deleted")
    else:
        await h.until(lambda: phase(h, "w1") is Phase.REMOVED, advance=0.5, what="removed")
        assert tainted(kube, "w1")
    assert sample("noderecover_volumes_held") == 0


async def test_a_detach_that_does_not_come_is_a_visible_hold_and_the_taint_stays(
    kube: FakeKube, harness_factory: Start
) -> None:
    before = sample("noderecover_blocked_total", {"reason": VOLUMES_ATTACHED})
    h = await _removing(kube, harness_factory, removal="both", detach_timeout=10)
    await h.until(
        lambda: h.controller.reporter.blocked.get("w1") == VOLUMES_ATTACHED,
        advance=0.5,
        what="held",
    )
    assert ("w1", "NodeRecoverBlocked", "Warning") in h.events
    assert sample("noderecover_blocked_total", {"reason": VOLUMES_ATTACHED}) == before + 1
    assert h.controller.records["w1"].parked  # held for long (it keeps its slot)
    await h.idle(120, step=2.0)
    assert tainted(kube, "w1") and kube.count("DELETE", "^/api/v1/nodes/w1$") == 0
    kube.remove_volume_attachment("va-w1")
    await h.until(lambda: kube.get_node("w1") is None, advance=1.0, what="deleted at last")


async def test_a_gate_closing_during_the_wait_holds_the_delete_and_keeps_the_taint(
    kube: FakeKube, harness_factory: Start
) -> None:
    h = await _removing(kube, harness_factory, removal="both", detach_timeout=600)
    for n in ("w2", "w3"):  # 3 of 5 unhealthy: the circuit breaker opens
        kube.set_node_ready(n, "Unknown")
    await h.until(lambda: h.controller.pools.breaker.open, advance=0.5, what="breaker open")
    kube.remove_volume_attachment("va-w1")  # detached, but the breaker holds the delete
    await h.idle(30, step=1.0)
    assert kube.get_node("w1") is not None and tainted(kube, "w1")
    for n in ("w2", "w3"):
        kube.set_node_ready(n, "True")
    await h.until(lambda: kube.get_node("w1") is None, advance=2.0, real_timeout=10)


async def test_a_new_leader_resumes_the_wait_with_the_taint_still_ours(
    kube: FakeKube, harness_factory: Start
) -> None:
    h1 = await _removing(kube, harness_factory, removal="both", detach_timeout=600)
    await h1.until(
        lambda: (
            (kube.get_node("w1") or {}).get("metadata", {}).get("annotations", {}).get(ANN_TAINTED)
            == "true"
        ),
        advance=0.5,
    )
    h1.gate.allowed = False  # failover: the old leader stops acting
    h2: Harness = await harness_factory(grace=5, healthy_delay=10, removal="both")
    await h2.idle(30, step=1.0)
    assert tainted(kube, "w1") and kube.count("DELETE", "^/api/v1/nodes/w1$") == 0
    assert h2.controller.records["w1"].tainted  # ours, from the annotation
    kube.remove_volume_attachment("va-w1")
    await h2.until(lambda: kube.get_node("w1") is None, advance=0.5, what="deleted")


async def test_delete_mode_with_attached_volumes_tells_the_node_and_the_waiting_pod(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube, workers=4)
    kube.add_volume_attachment("va-w1", "w1", "pv-1")
    kube.add_volume_attachment("va-inline", "w1", None)
    kube.add_persistent_volume("pv-1", "default", "data-mysql-0")
    kube.add_pod("mysql-0", "default", "w2", "StatefulSet", claim="data-mysql-0")  # the new one
    observed = sample("noderecover_volume_reattach_seconds_count")
    h: Harness = await harness_factory(grace=5, healthy_delay=10)  # auto, no fencing: delete
    assert h.controller.cfg.removal_mode == "delete"
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="deleted")
    assert ("w1", "NodeRecoverVolumesAttached", "Warning") in h.events
    assert h.pod_events == [("default/mysql-0", "NodeRecoverVolumesAttached", "Warning")]
    assert not tainted(kube, "w1")
    # Followed until attached elsewhere: the re-attach time is observed once.
    kube.remove_volume_attachment("va-w1")
    kube.add_volume_attachment("va-w2", "w2", "pv-1", attached=False)
    await h.idle(10, step=1.0)
    assert sample("noderecover_volume_reattach_seconds_count") == observed
    kube.add_volume_attachment("va-w2b", "w2", "pv-1", attached=True)
    await h.until(
        lambda: sample("noderecover_volume_reattach_seconds_count") == observed + 1,
        advance=1.0,
        what="re-attach observed",
    )
    assert not h.controller.executor.volumes.tracked


async def test_a_fence_makes_auto_taint_and_wait(kube: FakeKube, harness_factory: Start) -> None:
    h = await _removing(kube, harness_factory, fence_command=("true",), detach_timeout=600)
    assert h.controller.cfg.removal_mode == "both"
    assert kube.get_node("w1") is not None
    kube.remove_volume_attachment("va-w1")
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, real_timeout=10)


async def test_dry_run_neither_taints_nor_waits(kube: FakeKube, harness_factory: Start) -> None:
    cluster(kube, workers=4)
    kube.add_volume_attachment("va-w1", "w1", "pv-1")
    h: Harness = await harness_factory(grace=5, healthy_delay=10, removal="both", dry_run=True)
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: phase(h, "w1") is Phase.REMOVED, advance=0.5, what="would remove")
    assert not tainted(kube, "w1") and kube.get_node("w1") is not None
    assert [r for r in kube.requests if r.method != "GET"] == []


def test_out_of_service_taint_is_the_upstream_one() -> None:
    assert OUT_OF_SERVICE_TAINT["key"] == "node.kubernetes.io/out-of-service"


async def test_a_volume_detached_before_the_wait_looks_is_still_followed(
    kube: FakeKube, harness_factory: Start
) -> None:
    """With the taint the attach/detach controller may detach within ~100 ms: the wait's first
    look finds nothing. The volume was read before the taint, so its re-attach is measured."""
    cluster(kube, workers=4)
    kube.add_volume_attachment("va-w1", "w1", "pv-1")
    observed = sample("noderecover_volume_reattach_seconds_count")
    h: Harness = await harness_factory(grace=5, healthy_delay=10, removal="both")

    def detach_once_tainted() -> None:  # the controller's 100 ms pass, before anyone looks
        if tainted(kube, "w1") and kube.stores["volumeattachments"].objects.get(("", "va-w1")):
            kube.remove_volume_attachment("va-w1")

    for nth in (1, 2, 3):  # before each of the next VolumeAttachment LISTs
        kube.on_request(
            "GET", "^/apis/storage.k8s.io/v1/volumeattachments$", detach_once_tainted, nth=nth
        )
    kube.set_node_ready("w1", "Unknown")
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="deleted")
    assert "pv-1" in h.controller.executor.volumes.tracked
    kube.add_volume_attachment("va-w2", "w2", "pv-1")
    await h.until(
        lambda: sample("noderecover_volume_reattach_seconds_count") == observed + 1,
        advance=1.0,
        what="re-attach observed",
    )
