"""Per-pod drain decisions (pure) and pod parsing."""

from __future__ import annotations

import pytest

from noderecover.core.pods import PodObs, Step, parse_pod, plan


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


def test_live_kubelet_never_gets_a_force_delete() -> None:
    """Ready=False or a renewing Lease: the kubelet finishes its own deletions (a terminating
    pod may still run its containers; a PDB may protect it). Never forced, however late."""
    for elapsed in (0, 30, 60, 600, 1e9):
        assert plan(pod(), False, elapsed, 60) is Step.EVICT
        assert plan(pod(deleting=True), False, elapsed, 60) is Step.WAIT


def test_a_pod_forced_once_lingers_instead_of_being_forced_again() -> None:
    for dead in (True, False):
        assert plan(pod(deleting=True), dead, 1e9, 60, forced=True) is Step.LINGER
    assert plan(pod("DaemonSet"), True, 1e9, 60, forced=True) is Step.SKIP


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
