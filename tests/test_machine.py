"""The state machine, driven by a fake clock (plain floats): every phase, gate and recovery."""

from __future__ import annotations

import dataclasses

import pytest

from noderecover.config import Config, Threshold
from noderecover.machine import (
    Action,
    Decision,
    Gates,
    Kind,
    Outcome,
    Phase,
    Record,
    annotations_for,
    complete,
    decide,
    resume,
)
from noderecover.nodes import ANN_CORDONED, ANN_EXCLUDE, ANN_PHASE, ANN_UNHEALTHY_SINCE, format_time
from tests.builders import T0, obs

CFG = Config(grace=60.0, healthy_delay=30.0, drain_timeout=60.0)
OK = Gates()


def step(rec: Record, o: object, now: float, cfg: Config = CFG, gates: Gates = OK) -> Decision:
    return decide(rec, o, now, cfg, gates)  # type: ignore[arg-type]


def run_ok(d: Decision, now: float) -> Record:
    """Perform the decided action successfully."""
    assert d.action is not None
    return complete(d.record, d.action, Outcome.OK, now)


def to_phase(target: Phase, cfg: Config = CFG, **node: object) -> tuple[Record, float]:
    """Drive a fresh node from Healthy to `target` with every action succeeding."""
    o = obs(cfg, ready="Unknown", **node)
    rec, now = Record(uid=o.uid), T0
    while rec.phase is not target:
        d = step(rec, o, now, cfg)
        if d.action is None:
            assert d.wake_at is not None, d
            now = d.wake_at
            continue
        if d.action.persist is not None and d.action.persist.phase is target:
            return d.action.persist, now  # the drain is under way
        rec = run_ok(d, now)
        now += 1
    return rec, now


def test_healthy_node_needs_nothing() -> None:
    d = step(Record(uid="uid-w1"), obs(), T0)
    assert d.action is None and d.record.phase is Phase.HEALTHY


@pytest.mark.parametrize("status", ["False", "Unknown"])
def test_unhealthy_starts_grace_then_cordons_at_expiry(status: str) -> None:
    o = obs(ready=status)
    d = step(Record(uid=o.uid), o, T0)
    assert d.action is not None and d.action.kind is Kind.PERSIST
    assert d.action.success.phase is Phase.SUSPECT and d.wake_at == T0 + 60
    rec = run_ok(d, T0)
    assert step(rec, o, T0 + 59.9).action is None
    d = step(rec, o, T0 + 60)
    assert d.action is not None and d.action.kind is Kind.CORDON
    assert d.action.silent is (status == "Unknown")
    assert d.action.success.cordoned is True


def test_full_path_to_removed_and_ownership() -> None:
    rec, _ = to_phase(Phase.REMOVED)
    assert rec.cordoned and rec.phase is Phase.REMOVED and not rec.tainted


def test_cordon_of_already_unschedulable_node_is_not_ours() -> None:
    rec, _ = to_phase(Phase.CORDONED, unschedulable=True)
    assert rec.cordoned is False


def test_drain_then_remove_sequence() -> None:
    rec, now = to_phase(Phase.CORDONED)
    o = obs(ready="Unknown")
    d = step(rec, o, now)
    assert d.action is not None and d.action.kind is Kind.DRAIN
    assert d.action.persist is not None and d.action.persist.phase is Phase.DRAINING
    rec = run_ok(d, now)
    assert rec.phase is Phase.REMOVING
    d = step(rec, o, now)
    assert d.action is not None and d.action.kind is Kind.REMOVE


def test_out_of_service_marks_taint_ownership() -> None:
    cfg = dataclasses.replace(CFG, removal="out-of-service")
    rec, _ = to_phase(Phase.REMOVED, cfg)
    assert rec.tainted


@pytest.mark.parametrize(
    "phase", [Phase.SUSPECT, Phase.CORDONED, Phase.DRAINING, Phase.REMOVING, Phase.REMOVED]
)
def test_recovery_in_every_phase_waits_healthy_delay_then_restores(phase: Phase) -> None:
    rec, now = to_phase(phase)
    healthy = obs(ready="True")
    d = step(rec, healthy, now)
    assert d.action is None and d.wake_at == now + 30
    assert step(d.record, healthy, now + 29).action is None
    d2 = step(d.record, healthy, now + 30)
    assert d2.action is not None
    expected = Kind.PERSIST if phase is Phase.SUSPECT else Kind.RESTORE
    assert d2.action.kind is expected
    assert d2.action.success.phase is Phase.HEALTHY
    assert run_ok(d2, now + 30).phase is Phase.HEALTHY


def test_flap_shorter_than_healthy_delay_keeps_grace_timer() -> None:
    o_bad, o_good = obs(ready="Unknown"), obs(ready="True")
    rec = run_ok(step(Record(uid=o_bad.uid), o_bad, T0), T0)
    rec = step(rec, o_good, T0 + 20).record  # Ready for 10 s only
    rec = step(rec, o_bad, T0 + 30).record
    assert rec.healthy_since is None and rec.unhealthy_since == T0
    d = step(rec, o_bad, T0 + 60)
    assert d.action is not None and d.action.kind is Kind.CORDON


def test_flap_interrupting_healthy_delay_restarts_it() -> None:
    rec, now = to_phase(Phase.CORDONED)
    good, bad = obs(ready="True"), obs(ready="Unknown")
    rec = step(rec, good, now).record
    rec = step(rec, bad, now + 20).record
    rec = step(rec, good, now + 25).record
    assert step(rec, good, now + 50).action is None  # 25 s of health only
    d = step(rec, good, now + 55)
    assert d.action is not None and d.action.kind is Kind.RESTORE


def test_unhealthy_again_after_restore_restarts_grace() -> None:
    rec, now = to_phase(Phase.SUSPECT)
    good, bad = obs(ready="True"), obs(ready="Unknown")
    rec = step(rec, good, now).record
    rec = run_ok(step(rec, good, now + 30), now + 30)
    assert rec.phase is Phase.HEALTHY
    d = step(rec, bad, now + 31)
    assert d.action is not None and d.action.success.unhealthy_since == now + 31


@pytest.mark.parametrize(
    ("gates", "reason"),
    [
        (Gates(fresh=False), "watch-stale"),
        (Gates(breaker_open=True), "circuit-breaker"),
        (Gates(in_flight=1), "max-concurrent"),
        (Gates(lease_renewing=True), "heartbeat-lease-renewing"),
    ],
)
def test_gates_hold_the_cordon(gates: Gates, reason: str) -> None:
    rec, now = to_phase(Phase.SUSPECT)
    d = step(rec, obs(ready="Unknown"), now + 60, gates=gates)
    assert d.action is None and d.blocked == reason


def test_lease_gate_only_for_silent_nodes() -> None:
    o = obs(ready="False")
    rec = run_ok(step(Record(uid=o.uid), o, T0), T0)
    d = step(rec, o, T0 + 60, gates=Gates(lease_renewing=True))
    assert d.action is not None and d.action.kind is Kind.CORDON


def test_max_concurrent_counts_only_other_nodes() -> None:
    cfg = dataclasses.replace(CFG, max_concurrent=2)
    rec, now = to_phase(Phase.SUSPECT, cfg)
    d = step(rec, obs(ready="Unknown"), now + 60, cfg, Gates(in_flight=1))
    assert d.action is not None


@pytest.mark.parametrize("phase", [Phase.CORDONED, Phase.REMOVING])
@pytest.mark.parametrize(
    "gates", [Gates(fresh=False), Gates(breaker_open=True)], ids=["stale", "breaker"]
)
def test_gates_hold_every_destructive_step(phase: Phase, gates: Gates) -> None:
    rec, now = to_phase(phase)
    d = step(rec, obs(ready="Unknown"), now, gates=gates)
    assert d.action is None and d.blocked is not None


def test_removal_budget_per_hour() -> None:
    cfg = dataclasses.replace(CFG, max_removals_per_hour=2)
    rec, now = to_phase(Phase.REMOVING, cfg)
    d = step(rec, obs(ready="Unknown"), now, cfg, Gates(removals_last_hour=2))
    assert d.blocked == "max-removals-per-hour"
    d = step(rec, obs(ready="Unknown"), now, cfg, Gates(removals_last_hour=1))
    assert d.action is not None and d.action.kind is Kind.REMOVE


@pytest.mark.parametrize(
    ("labels", "annotations", "reason"),
    [
        ({"node-role.kubernetes.io/control-plane": ""}, {}, "excluded-control-plane"),
        ({"node-role.kubernetes.io/master": ""}, {}, "excluded-control-plane"),
        ({}, {ANN_EXCLUDE: "true"}, "excluded-annotation"),
    ],
)
def test_exclusions(labels: dict[str, str], annotations: dict[str, str], reason: str) -> None:
    o = obs(ready="Unknown", labels=labels, annotations=annotations)
    rec = run_ok(step(Record(uid=o.uid), o, T0), T0)
    d = step(rec, o, T0 + 600)
    assert d.action is None and d.blocked == reason


def test_control_plane_can_be_included() -> None:
    cfg = dataclasses.replace(CFG, exclude_control_plane=False)
    o = obs(cfg, ready="Unknown", labels={"node-role.kubernetes.io/control-plane": ""})
    rec = run_ok(step(Record(uid=o.uid), o, T0, cfg), T0)
    assert step(rec, o, T0 + 60, cfg).action is not None


def test_exclusion_added_mid_remediation_stops_it() -> None:
    rec, now = to_phase(Phase.CORDONED)
    o = obs(ready="Unknown", annotations={ANN_EXCLUDE: "true"})
    assert step(rec, o, now).blocked == "excluded-annotation"


def test_failure_backs_off_then_retries() -> None:
    rec, now = to_phase(Phase.SUSPECT)
    o = obs(ready="Unknown")
    d = step(rec, o, now + 60)
    assert d.action is not None
    rec = complete(d.record, d.action, Outcome.FAILED, now + 60, retry_in=8.0)
    assert rec.failures == 1 and rec.phase is Phase.SUSPECT
    assert step(rec, o, now + 67).action is None
    d = step(rec, o, now + 68)
    assert d.action is not None and d.action.kind is Kind.CORDON
    assert run_ok(d, now + 68).failures == 0


def test_healthy_on_reread_starts_damping() -> None:
    rec, now = to_phase(Phase.SUSPECT)
    d = step(rec, obs(ready="Unknown"), now + 60)
    assert d.action is not None
    rec = complete(d.record, d.action, Outcome.HEALTHY, now + 60)
    assert rec.phase is Phase.SUSPECT and rec.healthy_since == now + 60


def test_needs_fence_fences_then_drains_with_force() -> None:
    cfg = dataclasses.replace(CFG, fence_command=("true",))
    rec, now = to_phase(Phase.CORDONED, cfg)
    o = obs(cfg, ready="Unknown")
    d = step(rec, o, now, cfg)
    assert d.action is not None and d.action.kind is Kind.DRAIN and not d.action.may_force
    rec = complete(d.record, d.action, Outcome.NEEDS_FENCE, now)
    assert rec.phase is Phase.DRAINING and rec.fence_first
    d = step(rec, o, now, cfg)
    assert d.action is not None and d.action.kind is Kind.FENCE
    rec = run_ok(d, now)
    d = step(rec, o, now, cfg)
    assert d.action is not None and d.action.kind is Kind.DRAIN and d.action.may_force


def test_fencing_precedes_removal() -> None:
    cfg = dataclasses.replace(CFG, fence_command=("true",))
    rec, now = to_phase(Phase.REMOVING, cfg)
    o = obs(cfg, ready="Unknown")
    d = step(rec, o, now, cfg)
    assert d.action is not None and d.action.kind is Kind.FENCE
    d = step(run_ok(d, now), o, now, cfg)
    assert d.action is not None and d.action.kind is Kind.REMOVE


def test_annotations_round_trip_through_resume() -> None:
    rec, _now = to_phase(Phase.DRAINING)
    ann = annotations_for(rec)
    o = obs(ready="Unknown", unschedulable=True, annotations=ann)
    back = resume(o, T0, CFG)
    assert back.phase is Phase.DRAINING
    assert back.cordoned and back.unhealthy_since == pytest.approx(rec.unhealthy_since, abs=1)
    healthy_ann = annotations_for(Record(uid="x"))
    assert all(v is None for v in healthy_ann.values()) and ANN_PHASE in healthy_ann


def test_resume_does_not_claim_a_cordon_that_is_gone() -> None:
    o = obs(
        ready="Unknown",
        unschedulable=False,
        annotations={ANN_PHASE: "Cordoned", ANN_CORDONED: "true"},
    )
    assert resume(o, T0, CFG).cordoned is False


def test_new_leader_resumes_suspect_timer_instead_of_restarting() -> None:
    since = T0 - 50
    o = obs(
        ready="Unknown",
        since=T0 - 55,
        annotations={ANN_PHASE: "Suspect", ANN_UNHEALTHY_SINCE: format_time(since)},
    )
    rec = resume(o, T0, CFG)
    assert step(rec, o, T0 + 9).action is None
    d = step(rec, o, T0 + 10)
    assert d.action is not None and d.action.kind is Kind.CORDON


def test_stale_suspect_annotation_never_shortens_the_grace() -> None:
    # A Suspect record from an earlier episode (leader died before clearing it) while the
    # node went NotReady again only 5 s ago: the grace counts from the new transition.
    o = obs(
        ready="Unknown",
        since=T0 - 5,
        annotations={ANN_PHASE: "Suspect", ANN_UNHEALTHY_SINCE: format_time(T0 - 3600)},
    )
    rec = resume(o, T0, CFG)
    assert step(rec, o, T0).action is None
    # The transition is known to the second (T0 - 5 means [T0 - 5, T0 - 4)): the end counts.
    assert step(rec, o, T0 + 55).action is None
    assert step(rec, o, T0 + 56).action is not None


def test_garbage_phase_annotation_is_ignored() -> None:
    o = obs(ready="True", annotations={ANN_PHASE: "Exploded"})
    assert resume(o, T0, CFG).phase is Phase.HEALTHY


def test_other_condition_configured_as_unhealthy() -> None:
    cfg = dataclasses.replace(CFG, unhealthy_conditions=frozenset({("Ready", "Unknown")}))
    o = obs(cfg, ready="False")
    assert step(Record(uid=o.uid), o, T0, cfg).action is None


def test_removed_phase_waits() -> None:
    rec, now = to_phase(Phase.REMOVED)
    d = step(rec, obs(ready="Unknown"), now + 1000)
    assert d.action is None and d.blocked is None


def test_threshold_limits() -> None:
    assert Threshold(40, True).limit(10) == 4
    assert Threshold(3, False).limit(1000) == 3


def test_action_is_immutable() -> None:
    a = Action(Kind.CORDON, "n", "u", None, Record(uid="u"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.node = "x"  # type: ignore[misc]


# -- regressions found while writing the property tests (tests/test_machine_properties.py) --


def test_recovered_but_not_restored_then_unhealthy_again_is_a_new_episode() -> None:
    """Healthy for healthy-delay, the restore failed, unhealthy again: the old episode is
    over. The grace restarts (no drain straight away) and our cordon stays ours to undo."""
    rec, now = to_phase(Phase.CORDONED)
    good, bad = obs(ready="True"), obs(ready="Unknown", unschedulable=True)
    d = step(rec, good, now)
    d = step(d.record, good, now + 30)
    assert d.action is not None and d.action.kind is Kind.RESTORE
    rec = complete(d.record, d.action, Outcome.FAILED, now + 30, retry_in=60.0)
    d = step(rec, bad, now + 40)
    assert d.action is not None and d.action.kind is Kind.PERSIST
    assert d.action.persist is not None and d.action.persist.phase is Phase.SUSPECT
    assert d.action.persist.unhealthy_since == now + 40 and d.action.persist.cordoned
    rec = run_ok(d, now + 40)
    assert step(rec, bad, now + 99).action is None  # a full new grace
    d = step(rec, bad, now + 100)
    assert d.action is not None and d.action.kind is Kind.CORDON
    assert d.action.success.cordoned  # already unschedulable, but by us: still ours


def test_suspect_with_our_taint_restores_it() -> None:
    """Out-of-service taint left from an earlier episode (ours): recovery from Suspect must
    untaint, not just clear the annotations."""
    rec = Record(uid="uid-w1", phase=Phase.SUSPECT, phase_since=T0, unhealthy_since=T0)
    rec = dataclasses.replace(rec, tainted=True)
    good = obs(ready="True")
    d = step(step(rec, good, T0 + 1).record, good, T0 + 31)
    assert d.action is not None and d.action.kind is Kind.RESTORE


def test_resumed_later_phase_still_waits_out_the_grace() -> None:
    """A trusted Cordoned annotation from an episode that began 30 s ago: no drain before the
    grace is over, whatever phase the annotation names."""
    o = obs(
        ready="Unknown",
        since=T0 - 31,
        unschedulable=True,
        annotations={
            ANN_PHASE: "Cordoned",
            ANN_CORDONED: "true",
            ANN_UNHEALTHY_SINCE: format_time(T0 - 30),
            "noderecover.io/phase-since": format_time(T0 - 30),
        },
    )
    rec = resume(o, T0, CFG)
    assert rec.phase is Phase.CORDONED and rec.unhealthy_since == T0 - 30
    d = step(rec, o, T0)
    assert d.action is None and d.wake_at == T0 + 30
    d = step(rec, o, T0 + 30)
    assert d.action is not None and d.action.kind is Kind.DRAIN


@pytest.mark.parametrize(
    ("phase_since", "unhealthy_since"),
    [
        ("garbage", "garbage"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
        (None, None),
        ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),  # older than the Ready transition
    ],
)
def test_removing_with_bogus_times_restarts_at_suspect(
    phase_since: str | None, unhealthy_since: str | None
) -> None:
    """phase=Removing with timestamps the node does not back: nothing is skipped - Suspect,
    grace from the Ready transition, then cordon, drain, remove. Fenced is not kept."""
    o = obs(
        ready="Unknown",
        since=T0 - 10,
        annotations={
            ANN_PHASE: "Removing",
            "noderecover.io/phase-since": phase_since,
            ANN_UNHEALTHY_SINCE: unhealthy_since,
            "noderecover.io/fenced": "true",
        },
    )
    rec = resume(o, T0, CFG)
    assert rec.phase is Phase.SUSPECT and not rec.fenced
    assert rec.unhealthy_since == T0 - 9 and rec.phase_since == T0  # end of the second
    assert step(rec, o, T0 + 50.9).action is None
    d = step(rec, o, T0 + 51)
    assert d.action is not None and d.action.kind is Kind.CORDON


def test_transition_in_the_future_counts_from_now() -> None:
    """Clock skew: the Node says it went NotReady 30 s in our future. The grace counts from
    now (our clock), not from a time we have not reached."""
    o = obs(ready="Unknown", since=T0 + 30, annotations={ANN_PHASE: "Suspect"})
    rec = resume(o, T0, CFG)
    assert rec.phase is Phase.SUSPECT and rec.unhealthy_since == T0
