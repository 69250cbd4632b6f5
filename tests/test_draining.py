"""Per-pod drain decisions (pure) and pod parsing."""

from __future__ import annotations

import pytest

from noderecover.draining import PodObs, Step, parse_pod, plan


def pod(owner: str = "ReplicaSet", mirror: bool = False, deleting: bool = False) -> PodObs:
    return PodObs("ns", "p", "u", owner, mirror, "Running", deleting)


@pytest.mark.parametrize("silent", [True, False])
def test_daemonset_and_mirror_pods_are_skipped(silent: bool) -> None:
    assert plan(pod("DaemonSet"), silent, 1e9, 60) is Step.SKIP
    assert plan(pod(mirror=True), silent, 1e9, 60) is Step.SKIP


def test_silent_node_evicts_then_forces_everything_after_timeout() -> None:
    assert plan(pod(), True, 0, 60) is Step.EVICT
    assert plan(pod(), True, 60, 60) is Step.FORCE
    assert plan(pod(deleting=True), True, 59, 60) is Step.WAIT
    assert plan(pod(deleting=True), True, 60, 60) is Step.FORCE


def test_live_node_forces_only_accepted_but_stuck_pods() -> None:
    assert plan(pod(), False, 600, 60) is Step.EVICT  # e.g. PDB-blocked: never forced
    assert plan(pod(deleting=True), False, 30, 60) is Step.WAIT
    assert plan(pod(deleting=True), False, 60, 60) is Step.FORCE


def test_parse_pod() -> None:
    raw = {
        "metadata": {
            "name": "mysql-0",
            "namespace": "default",
            "uid": "u1",
            "deletionTimestamp": "2026-11-28T00:00:00Z",
            "ownerReferences": [
                {"kind": "Other", "controller": False},
                {"kind": "StatefulSet", "controller": True},
            ],
            "annotations": {"kubernetes.io/config.mirror": "x"},
        },
        "status": {"phase": "Running"},
    }
    p = parse_pod(raw)
    assert (p.key, p.uid, p.owner_kind, p.mirror, p.deleting) == (
        "default/mysql-0",
        "u1",
        "StatefulSet",
        True,
        True,
    )
    bare = parse_pod({"metadata": {"name": "x", "namespace": "ns", "uid": "u2"}})
    assert bare.malformed is None
    assert bare.owner_kind == "" and not bare.deleting and not bare.mirror
    # Without a namespace it cannot be addressed: held, never guessed at.
    unnamed = parse_pod({"metadata": {"name": "x", "uid": "u2"}})
    assert unnamed.malformed == "missing-name"
    assert plan(unnamed, True, 1e9, 60) is Step.HOLD
