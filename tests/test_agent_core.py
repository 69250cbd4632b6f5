"""The node agent's pure decisions (core/agent.py): when it fences, when it never does, and
what the controller may conclude from its Lease (safe time, self-fenced, config drift)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noderecover.core import agent as core
from noderecover.core.agent import (
    AgentParams,
    AgentState,
    Answer,
    Check,
    Mode,
    PeerReport,
    Why,
    judge,
    merged,
    parse_peer_report,
    safe_time,
    self_fenced,
    step,
)

P = AgentParams(isolation_timeout=30, watchdog_timeout=20, check_interval=5, slack=8)
UID = "uid-1"


def healthy(t: float, mark: str | None = None, uid: str | None = UID) -> Check:
    return Check(t, True, uid, mark)


def cut(t: float, *peers: Answer) -> Check:
    return Check(t, False, peers=peers)


def run(checks: list[Check], state: AgentState | None = None) -> list[core.Decision]:
    s = state or AgentState()
    out = []
    for c in checks:
        s, d = step(s, c, c.started + 0.5, P)
        out.append(d)
    return out


# ---------------------------------------------------------------------------- the agent
def test_healthy_checks_feed() -> None:
    decisions = run([healthy(t) for t in range(0, 100, 5)])
    assert {d.why for d in decisions} == {Why.HEALTHY}
    assert not any(d.fence for d in decisions)


def test_isolation_fences_after_the_timeout_counted_from_the_last_contact() -> None:
    checks = [healthy(0), *[cut(t) for t in range(5, 60, 5)]]
    decisions = run(checks)
    first = next(i for i, d in enumerate(decisions) if d.fence)
    # last contact at 0 (the check's start); decisions at start + 0.5: 30.5 is the first >= 30
    assert checks[first].started == 30
    assert decisions[first].why is Why.ISOLATED
    assert all(d.why is Why.COUNTING for d in decisions[1:first])
    # final: every later decision is "fenced"
    assert all(d.fence and d.why is Why.FENCED for d in decisions[first + 1 :])


def test_a_vouching_peer_keeps_the_node_up_forever() -> None:
    checks = [healthy(0), *[cut(t, Answer.NO_API, Answer.VOUCH) for t in range(5, 600, 5)]]
    assert not any(d.fence for d in run(checks))
    assert run(checks)[-1].why is Why.VOUCHED


def test_peers_that_cannot_reach_the_api_server_never_vouch() -> None:
    """A partition may hold several nodes that see each other: they must all fence."""
    checks = [healthy(0), *[cut(t, Answer.NO_API, Answer.NO_API) for t in range(5, 40, 5)]]
    assert run(checks)[-1].why in {Why.ISOLATED, Why.FENCED}


def test_a_mark_with_my_uid_fences_at_once() -> None:
    (d,) = run([healthy(0, mark=UID)])
    assert d.fence and d.why is Why.MARKED


def test_a_mark_with_another_uid_is_ignored() -> None:
    decisions = run([healthy(t, mark="uid-of-an-older-node") for t in range(0, 100, 5)])
    assert not any(d.fence for d in decisions)


def test_a_peer_that_read_my_mark_fences_me() -> None:
    decisions = run([healthy(0), cut(5, Answer.VOUCH, Answer.MARKED)])
    assert decisions[-1].fence and decisions[-1].why is Why.MARKED_BY_PEER


def test_no_fence_before_the_first_contact() -> None:
    """A node that boots into a partition is not rebooted again and again."""
    decisions = run([cut(t) for t in range(0, 600, 5)])
    assert {d.why for d in decisions} == {Why.NOT_ARMED}


def test_flapping_contact_within_the_timeout_never_fences() -> None:
    checks: list[Check] = []
    for cycle in range(20):
        base = cycle * 40
        checks.append(healthy(base))
        checks.extend(cut(base + t) for t in range(5, 30, 5))  # 25 s cut < 30 s timeout
    assert not any(d.fence for d in run(checks))


def test_contact_counts_from_the_start_of_the_check() -> None:
    """A slow successful check may describe the world before a mark: its contact time is
    when it began, so the isolation clock never gets the benefit of its duration."""
    s, _ = step(AgentState(), healthy(0), now=4.9, params=P)
    assert s.last_contact == 0
    s, d = step(s, cut(30), now=30.0, params=P)
    assert d.fence and d.isolated_for == 30


def test_clock_running_backwards_never_fences() -> None:
    s, _ = step(AgentState(), healthy(100), now=100, params=P)
    s, d = step(s, cut(50), now=50, params=P)
    assert not d.fence and d.isolated_for == 0


MARKS = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.just(UID),
    st.just(f"{UID}/this-boot"),
    st.just(f"{UID}/earlier-boot"),
    st.just(f"other/{UID}"),
)


@given(
    st.lists(
        st.tuples(
            st.floats(-1e9, 1e9, allow_nan=False),
            st.one_of(st.none(), st.text(max_size=8), st.just(UID)),
            MARKS,
            st.lists(st.sampled_from(list(Answer)), max_size=4),
        ),
        max_size=30,
    ),
    st.sampled_from(["", "this-boot"]),
)
def test_a_healthy_check_never_fences_whatever_it_reads(
    steps: list[tuple[float, str | None, str | None, list[Answer]]], boot: str
) -> None:
    """Whatever came before (garbage peers, any clock), a check that reached the API server
    fences only for a mark that names the Node's own uid and, when the mark names a boot and
    the agent knows its own, this boot - and a fence is final."""
    s = AgentState(boot_id=boot)
    for now, uid, mark, peers in steps:
        before = s
        s, d = step(s, Check(now, True, uid, mark, tuple(peers)), now, P)
        if before.fenced is None:
            named_uid, _, named_boot = (mark or "").partition("/")
            this_boot = not named_boot or not boot or named_boot == boot
            assert d.fence == (bool(uid) and mark is not None and named_uid == uid and this_boot)
        else:
            assert d.fence


def test_a_mark_for_an_earlier_boot_is_ignored_by_the_agent_and_its_peers() -> None:
    """A node its agent rebooted comes back while the mark is still on its Node: that mark
    named the boot that was fenced; the new boot must not reboot again and again."""
    from noderecover.core.agent import PeerReport, judge, mark_value

    s = AgentState(boot_id="boot-2")
    s, d = step(s, Check(0, True, UID, mark_value(UID, "boot-1")), 0, P)
    assert not d.fence and d.why is Why.HEALTHY
    s, d = step(s, Check(1, True, UID, mark_value(UID, "boot-2")), 1, P)
    assert d.fence and d.why is Why.MARKED
    earlier = PeerReport(True, "w1", UID, mark_value(UID, "boot-1"))
    assert judge(earlier, "w1", UID, "boot-2") is Answer.VOUCH
    now = PeerReport(True, "w1", UID, mark_value(UID, "boot-2"))
    assert judge(now, "w1", UID, "boot-2") is Answer.MARKED
    assert mark_value(UID) == UID  # no boot reported by the kubelet: the uid alone


def test_judge_reads_peer_reports_strictly() -> None:
    ok = PeerReport(True, "w1", UID, "")
    assert judge(ok, "w1", UID) is Answer.VOUCH
    assert judge(PeerReport(True, "w1", UID, UID), "w1", UID) is Answer.MARKED
    assert judge(PeerReport(True, "w1", UID, "other"), "w1", UID) is Answer.VOUCH
    assert judge(PeerReport(False, "w1", UID, UID), "w1", UID) is Answer.NO_API
    assert judge(PeerReport(True, "w2", UID, ""), "w1", UID) is Answer.USELESS  # another node
    assert judge(PeerReport(True, "w1", "uid-2", ""), "w1", UID) is Answer.USELESS  # re-created
    assert judge(ok, "w1", None) is Answer.USELESS
    assert judge(None, "w1", UID) is Answer.USELESS


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "yes",
        {"apiReachable": "true", "node": "w1", "uid": UID, "fenceRequested": ""},
        {"apiReachable": True, "node": "w1", "uid": 1, "fenceRequested": ""},
        {"apiReachable": True, "node": "w1", "uid": UID},
        {"apiReachable": 1, "node": "w1", "uid": UID, "fenceRequested": ""},
    ],
)
def test_garbage_peer_answers_are_useless(data: object) -> None:
    assert judge(parse_peer_report(data), "w1", UID) is Answer.USELESS


def test_peer_report_round_trip() -> None:
    node = {"metadata": {"uid": UID, "annotations": {core.FENCE_REQUESTED: UID}}}
    report = parse_peer_report(core.peer_report("w1", node))
    assert report == PeerReport(True, "w1", UID, UID)
    assert parse_peer_report(core.peer_report("w1", None)) == PeerReport(False, "w1", "", "")
    assert core.node_mark({"metadata": {"uid": 5}}) == (None, None)


# --------------------------------------------------------------------------- controller side
def test_safe_time_formula_and_floor() -> None:
    assert safe_time(P, floor=0) == 30 + 20 + 5 + 8 + core.SAFE_TIME_MARGIN
    assert safe_time(P, floor=200) == 200
    bad = AgentParams(-1, 20, 5, 8)
    assert math.isinf(safe_time(bad))
    assert math.isinf(safe_time(AgentParams(math.nan, 1, 1, 1)))


def test_self_fenced_needs_both_leases_and_the_mark_still_for_the_safe_time() -> None:
    wait = safe_time(P)
    assert self_fenced(0, 0, wait, P, marked_seen=0)
    assert not self_fenced(0, 0, wait - 0.1, P, marked_seen=0)
    # counted from the latest of the three
    assert not self_fenced(0, 10, wait + 5, P, marked_seen=0)
    assert not self_fenced(0, 0, wait + 5, P, marked_seen=10)
    assert self_fenced(0, 0, wait + 10, P, marked_seen=10)
    # no mark, no agent, no parameters: never
    assert not self_fenced(0, 0, 1e9, P, marked_seen=None)
    assert not self_fenced(None, 0, 1e9, P, marked_seen=0)
    assert not self_fenced(0, None, 1e9, P, marked_seen=0)
    assert not self_fenced(0, 0, 1e9, None, marked_seen=0)
    assert not self_fenced(0, 0, 1e9, AgentParams(-1, 1, 1, 1), marked_seen=0)


def test_config_drift_the_larger_wins() -> None:
    agent = AgentParams(30, 10, 5, 8, Mode.SYSRQ)
    controller = AgentParams(20, 60, 10, 2, Mode.WATCHDOG)
    m = merged(agent, controller)
    assert m == AgentParams(30, 60, 10, 8, Mode.SYSRQ)
    assert safe_time(m) >= max(safe_time(agent), safe_time(controller))


def test_published_parameters_round_trip_and_refuse_garbage() -> None:
    p = AgentParams(30.5, 20, 5, 8, Mode.SYSRQ)
    ann = p.annotations("10.0.0.1:8081")
    assert ann[core.ANN_ADDRESS] == "10.0.0.1:8081"
    assert core.params_of(ann) == p
    for key, value in [
        (core.ANN_MODE, "reboot"),
        (core.ANN_ISOLATION, "soon"),
        (core.ANN_WATCHDOG, 5),
        (core.ANN_SLACK, "-1s"),
    ]:
        assert core.params_of({**ann, key: value}) is None, key
    assert core.params_of({k: v for k, v in ann.items() if k != core.ANN_INTERVAL}) is None
