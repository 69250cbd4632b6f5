"""The state machine, driven by a fake clock (plain floats): every phase, gate and recovery."""

from __future__ import annotations

import dataclasses

import pytest

from noderecover.core.machine import (
    FLAPPING,
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
from noderecover.core.nodes import (
    ANN_CORDONED,
    ANN_EXCLUDE,
    ANN_PHASE,
    ANN_PHASE_SINCE,
    ANN_TAINTED,
    ANN_UNHEALTHY_SINCE,
    OUT_OF_SERVICE_KEY,
    NodeObs,
    format_time,
)
from noderecover.core.settings import Removal
from noderecover.entry.config import Config, Threshold
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
    cfg = dataclasses.replace(CFG, removal=Removal.OUT_OF_SERVICE)
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


def test_flap_in_suspect_restarts_the_grace_timer_and_is_counted() -> None:
    o_bad, o_good = obs(ready="Unknown"), obs(ready="True")
    rec = run_ok(step(Record(uid=o_bad.uid), o_bad, T0), T0)
    d = step(rec, o_good, T0 + 20)  # healthy for 10 s only: no restore
    assert d.action is None and not d.flapped
    d = step(d.record, o_bad, T0 + 30)
    assert d.flapped and d.wake_at == T0 + 90
    assert d.record.unhealthy_since == T0 + 30 and d.record.flaps == 1
    assert d.record.healthy_since is None and d.record.phase is Phase.SUSPECT
    # The restarted timer is persisted, so a new leader would keep it.
    assert d.action is not None and d.action.kind is Kind.PERSIST
    assert annotations_for(d.action.success)[ANN_UNHEALTHY_SINCE] == format_time(T0 + 30)
    rec = run_ok(d, T0 + 30)
    assert rec.flaps == 1 and rec.unhealthy_since == T0 + 30
    assert not step(rec, o_bad, T0 + 31).flapped  # reported once per flap
    assert step(rec, o_bad, T0 + 60).action is None  # the old grace would have cordoned here
    assert step(rec, o_bad, T0 + 89.9).action is None
    d = step(rec, o_bad, T0 + 90)
    assert d.action is not None and d.action.kind is Kind.CORDON


def flap_cycles(
    rec: Record, now: float, cycles: int, bad_for: float = 50.0, good_for: float = 20.0
) -> tuple[Record, float, list[Kind], list[int]]:
    """Drive `cycles` of (unhealthy `bad_for` s, healthy `good_for` s), 1 s a step, performing
    every action successfully. Returns the record, the time, the actions and the flap counts."""
    bad, good = obs(ready="Unknown", unschedulable=True), obs(ready="True", unschedulable=True)
    kinds: list[Kind] = []
    counts: list[int] = []
    for _ in range(cycles):
        for o, length in ((good, good_for), (bad, bad_for)):
            for _ in range(int(length)):
                d = step(rec, o, now)
                if d.flapped:
                    counts.append(d.record.flaps)
                rec = d.record
                if d.action is not None:
                    kinds.append(d.action.kind)
                    rec = run_ok(d, now)
                now += 1
    return rec, now, kinds, counts


def test_node_flapping_faster_than_the_timers_is_never_cordoned() -> None:
    rec, now = to_phase(Phase.SUSPECT)
    rec, now, kinds, counts = flap_cycles(rec, now, cycles=10)  # 50 s bad < 60 s grace
    assert set(kinds) == {Kind.PERSIST}
    assert counts == list(range(1, 11)) and rec.flaps == 10 and rec.phase is Phase.SUSPECT
    # Healthy for the whole healthy-delay at last: restored, the count starts over.
    good = obs(ready="True")
    rec = step(rec, good, now).record
    d = step(rec, good, now + 30)
    assert d.action is not None and d.action.kind is Kind.PERSIST
    rec = run_ok(d, now + 30)
    assert rec.phase is Phase.HEALTHY and rec.flaps == 0


def test_unhealthy_for_the_grace_after_the_last_flap_is_remediated() -> None:
    rec, now = to_phase(Phase.SUSPECT)
    rec, now, _, counts = flap_cycles(rec, now, cycles=3)
    assert counts == [1, 2, 3]
    bad = obs(ready="Unknown")
    last_flap = rec.unhealthy_since
    assert last_flap is not None and now - last_flap < 60
    assert step(rec, bad, last_flap + 59).action is None
    d = step(rec, bad, last_flap + 60)
    assert d.action is not None and d.action.kind is Kind.CORDON
    rec = run_ok(d, last_flap + 60)
    rec, _ = drive(rec, bad, last_flap + 61, until=Phase.REMOVED)
    assert rec.phase is Phase.REMOVED and rec.flaps == 3


def drive(rec: Record, o: object, now: float, until: Phase) -> tuple[Record, float]:
    """Perform every decided action successfully until `until` (or nothing is decided)."""
    for _ in range(100):
        if rec.phase is until:
            break
        d = step(rec, o, now)
        if d.action is None:
            assert d.wake_at is not None, d
            now = d.wake_at
            continue
        rec = run_ok(d, now)
        now += 1
    return rec, now


@pytest.mark.parametrize(
    ("phase", "next_kind"),
    [(Phase.CORDONED, Kind.DRAIN), (Phase.DRAINING, Kind.DRAIN), (Phase.REMOVING, Kind.REMOVE)],
)
def test_flap_after_cordon_holds_every_destructive_step_for_a_grace(
    phase: Phase, next_kind: Kind
) -> None:
    rec, now = to_phase(phase)
    good, bad = obs(ready="True", unschedulable=True), obs(ready="Unknown", unschedulable=True)
    rec = step(rec, good, now).record
    d = step(rec, bad, now + 5)
    assert d.flapped and d.record.flaps == 1 and d.record.unhealthy_since == now + 5
    assert d.action is not None and d.action.kind is Kind.PERSIST
    assert d.action.success.phase is phase and d.action.success.cordoned
    rec = run_ok(d, now + 5)
    for t in (now + 6, now + 30, now + 64.9):
        d = step(rec, bad, t)
        assert d.action is None and d.blocked == FLAPPING and d.wake_at == now + 65
    d = step(rec, bad, now + 65)
    assert d.action is not None and d.action.kind is next_kind


def test_hold_is_for_a_flapping_node_only_not_for_a_steadily_dead_one() -> None:
    rec, now = to_phase(Phase.CORDONED)
    d = step(rec, obs(ready="Unknown", unschedulable=True), now)
    assert d.blocked is None and d.action is not None and d.action.kind is Kind.DRAIN


def test_flap_holds_the_fence_too() -> None:
    cfg = dataclasses.replace(CFG, fence_command=("true",))
    rec, now = to_phase(Phase.REMOVING, cfg)
    good, bad = obs(cfg, ready="True"), obs(cfg, ready="Unknown")
    rec = run_ok(step(step(rec, good, now, cfg).record, bad, now + 1, cfg), now + 1)
    assert step(rec, bad, now + 2, cfg).blocked == FLAPPING
    d = step(rec, bad, now + 61, cfg)
    assert d.action is not None and d.action.kind is Kind.FENCE


def test_node_flapping_after_cordon_is_never_removed_and_is_restored() -> None:
    rec, now = to_phase(Phase.CORDONED)
    rec, now, kinds, counts = flap_cycles(rec, now, cycles=10)
    assert set(kinds) == {Kind.PERSIST}  # no drain, fence or removal
    assert counts == list(range(1, 11)) and rec.phase is Phase.CORDONED and rec.cordoned
    good = obs(ready="True", unschedulable=True)
    rec = step(rec, good, now).record
    d = step(rec, good, now + 30)
    assert d.action is not None and d.action.kind is Kind.RESTORE  # uncordons our cordon
    assert run_ok(d, now + 30) == Record(uid=rec.uid, phase_since=now + 30)


def test_reread_finding_the_node_healthy_counts_as_a_sign_of_life() -> None:
    rec, now = to_phase(Phase.REMOVING)
    bad = obs(ready="Unknown", unschedulable=True)
    d = step(rec, bad, now)
    assert d.action is not None and d.action.kind is Kind.REMOVE
    rec = complete(d.record, d.action, Outcome.HEALTHY, now)
    d = step(rec, bad, now + 1)
    assert d.flapped
    assert step(run_ok(d, now + 1), bad, now + 2).blocked == FLAPPING


def test_flap_hold_survives_failover_through_the_annotation() -> None:
    rec, now = to_phase(Phase.DRAINING)
    good, bad = obs(ready="True", unschedulable=True), obs(ready="Unknown", unschedulable=True)
    d = step(step(rec, good, now).record, bad, now + 10)
    assert d.action is not None
    # The PERSIST wrote the restarted timer; a new leader resumes from the Node.
    o = obs(ready="Unknown", unschedulable=True, annotations=annotations_for(d.action.success))
    back = resume(o, now + 10, CFG)
    assert back.phase is Phase.DRAINING and back.cordoned and back.flaps == 0
    assert step(back, o, now + 30).blocked == FLAPPING
    d = step(back, o, now + 70)
    assert d.action is not None and d.action.kind is Kind.DRAIN


def test_resume_in_flight_restarts_after_a_ready_transition_no_leader_saw() -> None:
    # Cordoned an hour ago; the node flapped while no leader was watching (Ready changed
    # 10 s ago): the node does not back the annotations, so the new leader starts over at
    # Suspect (the cordon still ours) and does nothing before a whole grace since that
    # transition (read as the end of its second).
    o = obs(
        ready="Unknown",
        since=T0 - 10,
        unschedulable=True,
        annotations={
            ANN_PHASE: "Cordoned",
            ANN_CORDONED: "true",
            ANN_PHASE_SINCE: format_time(T0 - 3600),
            ANN_UNHEALTHY_SINCE: format_time(T0 - 3700),
        },
    )
    rec = resume(o, T0, CFG)
    assert rec.phase is Phase.SUSPECT and rec.cordoned
    assert rec.unhealthy_since == T0 - 9
    assert step(rec, o, T0 + 50).action is None
    d = step(rec, o, T0 + 51)
    assert d.action is not None and d.action.kind is Kind.CORDON and d.action.success.cordoned


def test_suspect_keeps_a_cordon_carried_over_from_an_earlier_episode() -> None:
    o = obs(ready="Unknown", unschedulable=True)
    rec = Record(uid=o.uid, phase=Phase.SUSPECT, phase_since=T0, unhealthy_since=T0, cordoned=True)
    d = step(rec, o, T0 + 60)
    assert d.action is not None and d.action.kind is Kind.CORDON and d.action.success.cordoned


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
        (Gates(lease_renewing=True, lease_renewal_seen=True), "heartbeat-lease-renewing"),
    ],
)
def test_gates_hold_the_cordon(gates: Gates, reason: str) -> None:
    rec, now = to_phase(Phase.SUSPECT)
    d = step(rec, obs(ready="Unknown"), now + 60, gates=gates)
    assert d.action is None and d.blocked == reason


def test_a_lease_not_yet_stale_for_the_grace_is_a_timer_not_a_warning() -> None:
    """First read of the heartbeat Lease a little after the grace started: no renewal seen,
    just not stale for a whole grace yet. The cordon waits for it, silently (no blocked
    reason, so no Warning Event), and wakes exactly when it will be stale."""
    rec, now = to_phase(Phase.SUSPECT)
    waiting = Gates(lease_renewing=True, lease_stale_at=now + 60.05)
    d = step(rec, obs(ready="Unknown"), now + 60, gates=waiting)
    assert d.action is None and d.blocked is None and d.wake_at == now + 60.05
    d = step(rec, obs(ready="Unknown"), now + 60.05, gates=Gates())
    assert d.action is not None and d.action.kind is Kind.CORDON


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


OOS = dataclasses.replace(CFG, removal=Removal.OUT_OF_SERVICE)
TAINT = {"key": OUT_OF_SERVICE_KEY, "value": "nodeshutdown", "effect": "NoExecute"}


def removed_oos() -> tuple[Record, float]:
    rec, now = to_phase(Phase.REMOVED, OOS)
    assert rec.tainted and rec.cordoned and rec.unhealthy_since is not None
    return rec, now


def node_after_removal(rec: Record, **kw: object) -> NodeObs:
    """The Node as the watch shows it after our Removed write (unless overridden)."""
    base: dict[str, object] = dict(
        ready="Unknown", unschedulable=True, taints=[TAINT], annotations=annotations_for(rec)
    )
    base.update(kw)
    return obs(OOS, **base)


def test_removed_node_with_our_taint_that_never_came_back_stays_removed() -> None:
    rec, now = removed_oos()
    o = node_after_removal(rec)  # Ready transition an hour before T0: never Ready since
    for t in (now, now + 60, now + 3600, now + 86400):
        d = step(rec, o, t, OOS)
        assert d.action is None and d.blocked is None and d.record.phase is Phase.REMOVED
    back = resume(o, now + 86400, OOS)  # also after a failover
    assert back.phase is Phase.REMOVED and back.tainted
    assert step(back, o, now + 86400, OOS).action is None


def test_removed_node_seen_healthy_then_failing_again_starts_a_new_episode() -> None:
    rec, now = removed_oos()
    good = node_after_removal(rec, ready="True", since=now + 5)
    bad = node_after_removal(rec, ready="Unknown", since=now + 20)
    rec = step(rec, good, now + 10, OOS).record  # back for 10 s: less than healthy-delay
    d = step(rec, bad, now + 20, OOS)
    assert d.flapped and d.action is not None and d.action.kind is Kind.PERSIST
    new = d.action.success
    assert d.action.persist == new  # the phase change is reported when it starts
    assert new.phase is Phase.SUSPECT and new.unhealthy_since == now + 20 and new.flaps == 1
    assert new.cordoned and new.tainted and not new.fenced  # both still on the node: ours
    rec = run_ok(d, now + 20)
    assert step(rec, bad, now + 79, OOS).action is None
    d = step(rec, bad, now + 80, OOS)
    assert d.action is not None and d.action.kind is Kind.CORDON and d.action.success.cordoned


def test_removed_node_whose_ready_changed_since_starts_a_new_episode_after_failover() -> None:
    # No leader saw the node come back (failover): its Ready transition says it did. The
    # node no longer backs the Removed annotations: the new leader resumes at Suspect (cordon
    # and taint still ours), the grace counting from the transition, never earlier.
    rec, now = removed_oos()
    o = node_after_removal(rec, since=now + 100)
    back = resume(o, now + 130, OOS)
    assert back.phase is Phase.SUSPECT and back.tainted and back.cordoned
    assert back.unhealthy_since is not None and back.unhealthy_since >= now + 100
    deadline = back.unhealthy_since + OOS.grace
    assert step(back, o, deadline - 1, OOS).action is None
    d = step(back, o, deadline, OOS)
    assert d.action is not None and d.action.kind is Kind.CORDON


def test_removed_node_whose_taint_someone_removed_starts_a_new_episode() -> None:
    rec, now = removed_oos()
    o = node_after_removal(rec, taints=None)  # never Ready since; taint gone
    d = step(rec, o, now + 300, OOS)
    assert d.action is not None and d.action.kind is Kind.PERSIST
    new = d.action.success
    assert new.phase is Phase.SUSPECT and new.unhealthy_since == now + 300
    assert not new.tainted and new.cordoned  # the taint is no longer ours to remove
    assert annotations_for(new)[ANN_TAINTED] is None
    # The same through a failover.
    d = step(resume(o, now + 300, OOS), o, now + 300, OOS)
    assert d.action is not None and d.action.success.phase is Phase.SUSPECT
    assert not d.action.success.tainted


def test_missing_taint_in_a_lagging_view_is_not_taken_for_a_removal() -> None:
    rec, now = removed_oos()
    # The watch has not delivered our taint + Removed write yet (or dry-run wrote nothing).
    earlier = dataclasses.replace(rec, phase=Phase.REMOVING)
    o = node_after_removal(rec, taints=None, annotations=annotations_for(earlier))
    d = step(rec, o, now + 1, OOS)
    assert d.action is None and d.record.phase is Phase.REMOVED
    o = node_after_removal(rec, taints=None, annotations={})
    assert step(rec, o, now + 1, OOS).action is None


# An operator's (or another tool's) out-of-service taint, not noderecover's.
THEIR_TAINT = {"key": OUT_OF_SERVICE_KEY, "value": "operator", "effect": "NoExecute"}


@pytest.mark.parametrize("removal", ["out-of-service", "both"])
def test_a_taint_already_on_the_node_is_not_ours(removal: str) -> None:
    cfg = dataclasses.replace(CFG, removal=Removal(removal))
    rec, now = to_phase(Phase.REMOVING, cfg, taints=[THEIR_TAINT])
    o = obs(cfg, ready="Unknown", unschedulable=True, taints=[THEIR_TAINT])
    d = step(rec, o, now, cfg)
    assert d.action is not None and d.action.kind is Kind.REMOVE
    assert d.action.success.tainted is False
    done = run_ok(d, now)
    assert done.phase is Phase.REMOVED and not done.tainted and done.cordoned
    assert annotations_for(done)[ANN_TAINTED] is None  # a new leader will not claim it either


def test_the_executors_fresh_read_decides_whose_the_taint_is() -> None:
    """The view may lag: the operator's taint arrived after it (the decision guessed ours), or
    ours is not in it yet. What the executor found out wins, whatever the outcome."""
    rec, now = to_phase(Phase.REMOVING, OOS)
    d = step(rec, obs(OOS, ready="Unknown", unschedulable=True), now, OOS)
    assert d.action is not None and d.action.success.tainted  # the view shows no taint
    assert not complete(d.record, d.action, Outcome.OK, now, tainted=False).tainted
    assert complete(d.record, d.action, Outcome.OK, now, tainted=True).tainted
    assert complete(d.record, d.action, Outcome.OK, now).tainted  # not looked: the guess
    # We added it, then a later write failed: still ours, retried.
    failed = complete(d.record, d.action, Outcome.FAILED, now, retry_in=5.0, tainted=True)
    assert failed.tainted and failed.phase is Phase.REMOVING and failed.retry_at == now + 5
    healthy = complete(d.record, d.action, Outcome.HEALTHY, now, tainted=True)
    assert healthy.tainted and healthy.healthy_since == now


def test_recovery_leaves_a_taint_that_is_not_ours_and_removes_ours() -> None:
    for tainted in (False, True):
        rec, now = to_phase(Phase.REMOVED, OOS)
        rec = dataclasses.replace(rec, tainted=tainted)
        good = obs(OOS, ready="True", unschedulable=True, taints=[THEIR_TAINT])
        d = step(step(rec, good, now, OOS).record, good, now + 30, OOS)
        # Restore (the cordon is ours); the executor untaints only when the record says so.
        assert d.action is not None and d.action.kind is Kind.RESTORE
        assert d.record.tainted is tainted


def test_removed_with_their_taint_someone_removing_it_is_no_new_episode() -> None:
    """Only the disappearance of OUR taint ends a Removed episode."""
    cfg = OOS
    rec, now = to_phase(Phase.REMOVING, cfg, taints=[THEIR_TAINT])
    o = obs(cfg, ready="Unknown", unschedulable=True, taints=[THEIR_TAINT])
    rec = run_ok(step(rec, o, now, cfg), now)
    gone = node_after_removal(rec, taints=None)
    d = step(rec, gone, now + 300, cfg)
    assert d.action is None and d.record.phase is Phase.REMOVED


def test_new_episode_carrying_our_cordon_and_taint_restores_both() -> None:
    rec, now = removed_oos()
    o = node_after_removal(rec, since=now + 100)
    rec = run_ok(step(rec, o, now + 130, OOS), now + 130)
    good = node_after_removal(rec, ready="True", since=now + 140)
    rec = step(rec, good, now + 140, OOS).record
    d = step(rec, good, now + 170, OOS)
    assert d.action is not None and d.action.kind is Kind.RESTORE  # not just annotations
    assert run_ok(d, now + 170).phase is Phase.HEALTHY


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
