"""NodeRecoveryPolicy parsing, the selection/overlap rule, pauses and status (core, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from noderecover.core.machine import Gates, Kind, Phase, Record, decide, grace_deadline
from noderecover.core.nodes import format_time, parse_node
from noderecover.core.pauses import DEFAULT_CLUSTER_PAUSE, Pause, parse_cluster_pause
from noderecover.core.pauses import MAX_PAUSE as MAX_CLUSTER_PAUSE
from noderecover.core.policies import (
    CLUSTER_PAUSED,
    NO_POLICY,
    PAUSED,
    POLICY_CONFLICT,
    POLICY_INVALID,
    PoolState,
    govern,
    needed_keys,
    parse_policy,
    pause_hold,
    policy_status,
    status_changed,
)
from noderecover.core.safety import EXCLUDED_AUTOSCALER, BreakerState, breaker_step, exclusion
from noderecover.core.settings import Config, Threshold
from tests.builders import T0, node_json

BASE = Config(grace=60.0, fence_command=("/bin/true",))


def policy(name: str = "gpu", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "noderecover.io/v1alpha1",
        "kind": "NodeRecoveryPolicy",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 3},
        "spec": spec,
    }


def test_an_empty_spec_is_the_flags_with_the_policy_rounding() -> None:
    p = parse_policy(policy(), BASE)
    assert p.valid and p.cfg is not None
    assert p.cfg.grace == BASE.grace and p.cfg.unhealthy_conditions == BASE.unhealthy_conditions
    assert p.cfg.max_unhealthy == Threshold(40.0, True, round_up=True)
    assert p.generation == 3 and p.pause is None


def test_a_full_spec_overrides_every_field() -> None:
    p = parse_policy(
        policy(
            nodeSelector={
                "matchLabels": {"pool": "gpu"},
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}],
            },
            unhealthyConditions=[
                {"type": "Ready", "status": "Unknown", "duration": "5m"},
                {"type": "KernelDeadlock", "status": "True", "duration": "1h"},
            ],
            healthyDelay="2m",
            drainTimeout="10m",
            removal="out-of-service",
            fencing=False,
            maxUnhealthy="30%",
            maxConcurrent=2,
            maxRemovalsPerHour=3,
            stormCooldown="1m30s",
            paused={"until": "2030-01-01T00:00:00Z", "reason": "driver upgrade"},
        ),
        BASE,
    )
    assert p.valid and p.cfg is not None, p.error
    c = p.cfg
    assert c.condition_graces == (("Ready", "Unknown", 300.0), ("KernelDeadlock", "True", 3600.0))
    assert c.unhealthy_conditions == {("Ready", "Unknown"), ("KernelDeadlock", "True")}
    assert c.grace == 300.0 and c.healthy_delay == 120.0 and c.drain_timeout == 600.0
    assert c.removal == "out-of-service" and c.fence_command == () and not c.fencing
    assert c.max_unhealthy == Threshold(30.0, True, round_up=True)
    assert (c.max_concurrent, c.max_removals_per_hour, c.storm_cooldown) == (2, 3, 90.0)
    assert "KernelDeadlock" in c.kept_conditions and {"pool", "zone"} <= c.relevant_labels
    assert p.pause is not None and p.pause.reason == "driver upgrade"
    assert p.selector is not None
    assert p.selector.matches({"pool": "gpu", "zone": "a"})
    assert not p.selector.matches({"pool": "gpu", "zone": "c"})


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (
            {"unhealthyConditions": [{"type": "Ready", "status": "True", "duration": "1m"}]},
            "Ready=True",
        ),
        ({"unhealthyConditions": []}, "1 to 16"),
        (
            {"unhealthyConditions": [{"type": "Ready", "status": "Maybe", "duration": "1m"}]},
            "status",
        ),
        (
            {"unhealthyConditions": [{"type": "Ready", "status": "False", "duration": "soon"}]},
            "duration",
        ),
        (
            {
                "unhealthyConditions": [
                    {"type": "Ready", "status": "False", "duration": "1m"},
                    {"type": "Ready", "status": "False", "duration": "2m"},
                ]
            },
            "twice",
        ),
        (
            {
                "unhealthyConditions": [
                    {"type": "DiskPressure", "status": "True", "duration": "1m"},
                    {"type": "DiskPressure", "status": "False", "duration": "2m"},
                ]
            },
            "both True and False",
        ),
        ({"removal": "explode"}, "spec.removal"),
        ({"maxUnhealthy": "140%"}, "maxUnhealthy"),
        ({"maxUnhealthy": -1}, "maxUnhealthy"),
        ({"maxConcurrent": 0}, "maxConcurrent"),
        ({"maxConcurrent": True}, "maxConcurrent"),
        ({"paused": {"reason": "forever"}}, "paused.until"),
        ({"paused": {"until": "tomorrow"}}, "paused.until"),
        ({"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}, "operator"),
        ({"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "at least one"),
        ({"nodeSelector": {"matchLabels": {"bad key!": "x"}}}, "matchLabels"),
        ({"healthyDelay": "2y"}, "healthyDelay"),
    ],
)
def test_an_invalid_spec_is_reported_in_one_line_and_not_applied(
    spec: dict[str, Any], error: str
) -> None:
    p = parse_policy(policy(**spec), BASE)
    assert not p.valid and p.cfg is None
    assert p.error is not None and error in p.error and "\n" not in p.error


def test_fencing_needs_the_flag_command_a_policy_never_names_one() -> None:
    p = parse_policy(policy(fencing=True), Config())
    assert not p.valid and p.error is not None and "--fence-command" in p.error
    ok = parse_policy(policy(fencing=True), BASE)
    assert ok.cfg is not None and ok.cfg.fence_command == ("/bin/true",)


def test_garbage_objects_never_raise() -> None:
    raws: tuple[dict[str, Any], ...] = (
        {},
        {"spec": []},
        {"metadata": "x", "spec": {"nodeSelector": 3}},
    )
    for raw in raws:
        assert not parse_policy(raw, BASE).valid


def _policies(**specs: dict[str, Any]) -> dict[str, Any]:
    return {n: parse_policy(policy(n, **s), BASE) for n, s in specs.items()}


def test_one_policy_governs_a_node_it_alone_selects() -> None:
    ps = _policies(
        gpu={"nodeSelector": {"matchLabels": {"pool": "gpu"}}},
        spot={"nodeSelector": {"matchLabels": {"pool": "spot"}}},
    )
    g = govern(ps, {"pool": "gpu"})
    assert (g.policy, g.held, g.matched) == ("gpu", None, ("gpu",))


def test_a_node_selected_by_none_is_left_alone() -> None:
    ps = _policies(gpu={"nodeSelector": {"matchLabels": {"pool": "gpu"}}})
    g = govern(ps, {"pool": "general"})
    assert (g.policy, g.held) == (None, NO_POLICY)


def test_a_node_selected_by_two_is_refused_whatever_the_order() -> None:
    ps = _policies(
        zeta={"nodeSelector": {"matchLabels": {"pool": "gpu"}}},
        alpha={},  # every node
    )
    g = govern(ps, {"pool": "gpu"})
    assert (g.policy, g.held, g.matched) == (None, POLICY_CONFLICT, ("alpha", "zeta"))
    assert govern(dict(reversed(list(ps.items()))), {"pool": "gpu"}) == g
    assert govern(ps, {"pool": "cpu"}).policy == "alpha"


def test_an_invalid_policy_holds_its_nodes_and_still_conflicts() -> None:
    ps = _policies(gpu={"nodeSelector": {"matchLabels": {"pool": "gpu"}}, "removal": "nope"})
    g = govern(ps, {"pool": "gpu"})
    assert (g.policy, g.held) == (None, POLICY_INVALID)
    ps |= _policies(all={})
    assert govern(ps, {"pool": "gpu"}).held == POLICY_CONFLICT


def test_needed_keys_cover_every_policy() -> None:
    ps = _policies(
        a={"nodeSelector": {"matchLabels": {"pool": "gpu"}}},
        b={"unhealthyConditions": [{"type": "KernelDeadlock", "status": "True", "duration": "1m"}]},
    )
    labels, conditions = needed_keys(ps.values())
    assert labels == {"pool"} and "KernelDeadlock" in conditions


def test_pause_expires_by_the_clock() -> None:
    p = Pause(T0 + 100, "maintenance")
    assert pause_hold(p, None, T0) == PAUSED
    assert pause_hold(p, None, T0 + 100) is None
    assert pause_hold(None, Pause(T0 + 5, ""), T0) == CLUSTER_PAUSED
    assert pause_hold(Pause(T0 - 1, ""), None, T0) is None  # an expiry in the past: no pause


def _cm(data: dict[str, str], created: float = T0) -> dict[str, Any]:
    return {
        "metadata": {"name": "noderecover-pause", "creationTimestamp": format_time(created)},
        "data": data,
    }


def test_cluster_pause_cannot_be_forgotten_on() -> None:
    now = T0 + 1
    pause, warn = parse_cluster_pause(_cm({"until": format_time(T0 + 600), "reason": "x"}), now)
    assert pause == Pause(T0 + 600, "x") and warn is None
    pause, warn = parse_cluster_pause(_cm({"reason": "no until"}), now)
    assert pause is not None and pause.until == T0 + DEFAULT_CLUSTER_PAUSE and warn
    pause, warn = parse_cluster_pause(_cm({"until": "2999-01-01T00:00:00Z"}), now)
    assert pause is not None and pause.until == T0 + MAX_CLUSTER_PAUSE and warn
    assert parse_cluster_pause(None, now) == (None, None)


def _node(conditions: list[dict[str, str]]) -> Any:
    raw = node_json("n1", ready="True")
    raw["status"]["conditions"] += conditions
    return raw


def test_each_condition_has_its_own_duration_timed_from_its_own_transition() -> None:
    p = parse_policy(
        policy(
            unhealthyConditions=[
                {"type": "Ready", "status": "Unknown", "duration": "5m"},
                {"type": "KernelDeadlock", "status": "True", "duration": "1h"},
            ]
        ),
        BASE,
    )
    cfg = p.cfg
    assert cfg is not None
    kd = {"type": "KernelDeadlock", "status": "True", "lastTransitionTime": format_time(T0)}
    raw = _node([kd])
    o = parse_node(raw, cfg.relevant_labels, cfg.kept_conditions)
    # Only KernelDeadlock: its hour, from its transition (not from the Ready one).
    assert grace_deadline(T0, o, cfg) == T0 + 1 + 3600
    # A flap restarted the episode later: never earlier than the episode start.
    assert grace_deadline(T0 + 500, o, cfg) == T0 + 500 + 3600
    # Ready=Unknown appears at +50 min: its own 5 minutes from then, not from T0.
    for c in raw["status"]["conditions"]:
        if c["type"] == "Ready":
            c.update(status="Unknown", lastTransitionTime=format_time(T0 + 3000))
    o = parse_node(raw, cfg.relevant_labels, cfg.kept_conditions)
    assert grace_deadline(T0, o, cfg) == T0 + 3001 + 300
    # The machine waits for it.
    rec = Record(uid=o.uid, phase=Phase.SUSPECT, phase_since=T0, unhealthy_since=T0)
    assert decide(rec, o, T0 + 3200, cfg, Gates()).action is None
    d = decide(rec, o, T0 + 3302, cfg, Gates())
    assert d.action is not None and d.action.kind is Kind.CORDON


def test_flag_mode_grace_is_unchanged() -> None:
    o = parse_node(node_json("n1", ready="Unknown", since=T0), BASE.relevant_labels)
    assert grace_deadline(T0 + 7, o, BASE) == T0 + 7 + BASE.grace


def test_a_held_gate_holds_every_forward_step_but_not_a_restore() -> None:
    cfg = Config(grace=60.0, healthy_delay=30.0)
    sick = parse_node(node_json("n1", ready="Unknown", since=T0), cfg.relevant_labels)
    for phase in (Phase.SUSPECT, Phase.CORDONED, Phase.DRAINING, Phase.REMOVING):
        rec = Record(uid=sick.uid, phase=phase, phase_since=T0, unhealthy_since=T0, cordoned=True)
        d = decide(rec, sick, T0 + 600, cfg, Gates(held=PAUSED))
        assert d.action is None and d.blocked == PAUSED, phase
    well = parse_node(node_json("n1", ready="True", since=T0 + 700), cfg.relevant_labels)
    rec = Record(
        uid=well.uid,
        phase=Phase.CORDONED,
        phase_since=T0,
        unhealthy_since=T0,
        cordoned=True,
        healthy_since=T0 + 700,
    )
    d = decide(rec, well, T0 + 800, cfg, Gates(held=PAUSED))
    assert d.action is not None and d.action.kind is Kind.RESTORE


@pytest.mark.parametrize(
    "taint", ["ToBeDeletedByClusterAutoscaler", "karpenter.sh/disrupted", "karpenter.sh/disruption"]
)
def test_nodes_an_autoscaler_is_taking_away_are_not_remediated(taint: str) -> None:
    raw = node_json("n1", ready="Unknown", taints=[{"key": taint, "effect": "NoSchedule"}])
    o = parse_node(raw, BASE.relevant_labels)
    assert exclusion(o, BASE) == EXCLUDED_AUTOSCALER
    rec = Record(uid=o.uid, phase=Phase.SUSPECT, phase_since=T0, unhealthy_since=T0)
    assert decide(rec, o, T0 + 600, BASE, Gates()).blocked == EXCLUDED_AUTOSCALER


@pytest.mark.parametrize(
    ("percent", "total", "tolerated"),
    [
        (40, 1, 1),
        (40, 2, 1),
        (40, 3, 2),
        (40, 10, 4),
        (10, 30, 3),
        (1, 5, 1),
        (0, 5, 0),
        (100, 4, 4),
    ],
)
def test_percent_rounds_up_to_at_least_one_node(percent: int, total: int, tolerated: int) -> None:
    t = Threshold(float(percent), True, round_up=True)
    closed = breaker_step(BreakerState(), tolerated, total, T0, Config(max_unhealthy=t))
    opened = breaker_step(BreakerState(), tolerated + 1, total, T0, Config(max_unhealthy=t))
    assert not closed.open and opened.open


def test_flag_thresholds_keep_the_exact_fraction() -> None:
    t = Threshold(40.0, True)
    assert breaker_step(BreakerState(), 1, 2, T0, Config(max_unhealthy=t)).open


def test_status_reports_conflict_pause_and_keeps_transition_times() -> None:
    p = parse_policy(policy(paused={"until": format_time(T0 + 60), "reason": "upgrade"}), BASE)
    state = PoolState(
        matched=3,
        unhealthy=1,
        remediating=(("n1", "Cordoned", "paused"),),
        conflicts=("n2",),
        conflicting_policies=("other",),
    )
    s = policy_status(p, state, None, T0)
    conds = {c["type"]: c for c in s["conditions"]}
    assert s["observedGeneration"] == 3 and s["paused"] is True
    assert (s["nodesMatched"], s["nodesUnhealthy"], s["nodesInRemediation"]) == (3, 1, 1)
    assert s["remediating"] == [{"node": "n1", "phase": "Cordoned", "blocked": "paused"}]
    assert conds["Paused"]["status"] == "True" and conds["Ready"]["status"] == "True"
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "Conflict"
    assert "other" in conds["Degraded"]["message"]
    # Later, same state: transition times kept, nothing to write.
    p2 = parse_policy(
        {**policy(paused={"until": format_time(T0 + 60), "reason": "upgrade"}), "status": s}, BASE
    )
    s2 = policy_status(p2, state, None, T0 + 30)
    assert not status_changed(s, s2)
    assert s2["conditions"][1]["lastTransitionTime"] == format_time(T0)
    # Expired: the Paused condition flips by itself.
    s3 = policy_status(p2, state, None, T0 + 61)
    assert status_changed(s2, s3) and s3["paused"] is False


def test_status_of_an_invalid_policy_says_why() -> None:
    p = parse_policy(policy(removal="nope"), BASE)
    s = policy_status(p, PoolState(), None, T0)
    ready = s["conditions"][0]
    assert ready["status"] == "False" and "spec.removal" in ready["message"]
