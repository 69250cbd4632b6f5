"""The census a pass decides with is kept as nodes change (issue 24: a pass costs what
changed), never recounted in a pass. Property: after any sequence of node events, records,
actions, removals, policy changes and clock steps, and the incremental passes they cause, the
kept counts equal a full recount (per pool and cluster-wide, and the phase gauges)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from noderecover.base.clock import FakeClock
from noderecover.controller.reconciler import Controller
from noderecover.core.machine import Kind, Phase, Record
from noderecover.core.nodes import ANN_CORDONED, ANN_PHASE
from noderecover.core.policies import parse_policy
from noderecover.core.reasons import Blocked
from tests.builders import T0, obs
from tests.conftest import make_config

NAMES = [f"n{i}" for i in range(8)]


class NoApi:
    async def request(self, *a: Any, **kw: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("no API call expected")


def controller() -> tuple[Controller, FakeClock]:
    clock = FakeClock(start_wall=T0)
    c = Controller(NoApi(), clock, make_config(max_concurrent=2))  # type: ignore[arg-type]
    c.view.resync([(n, obs(c.cfg, name=n, labels={"pool": "a"})) for n in NAMES[:4]])
    c.node_watcher.synced = True
    c.policies.absent = True
    c._policies_changed()
    return c, clock


def set_policies(c: Controller, pools: tuple[str, ...]) -> None:
    raw = {
        "a": {"nodeSelector": {"matchLabels": {"pool": "a"}}},
        "b": {"nodeSelector": {"matchLabels": {"pool": "b"}}},
        # Selects what "a" selects too: a conflict on those nodes.
        "ab": {"nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}},
        "bad": {"nodeSelector": {"matchLabels": {"pool": "c"}}, "maxUnhealthy": "lots"},
    }
    c.policies.absent = not pools
    c.policies.policies = {
        p: parse_policy({"metadata": {"name": p, "uid": p}, "spec": raw[p]}, c.cfg) for p in pools
    }
    c._policies_changed()
    if c.view.watcher.synced and not c.view.keys_current:
        # What a re-list does: the nodes parsed again for what the policies read.
        # (the builders' nodes carry every label and condition these policies read).
        c.view.resync(list(c.nodes.items()))


node_event = st.tuples(
    st.just("node"),
    st.sampled_from(NAMES),
    st.sampled_from(["True", "False", "Unknown"]),
    st.sampled_from([{}, {"pool": "a"}, {"pool": "b"}, {"pool": "a", "zone": "z"}, {"pool": "c"}]),
    st.sampled_from(["none", "cordoned", "phase"]),
)
delete = st.tuples(st.just("delete"), st.sampled_from(NAMES))
record = st.tuples(
    st.just("record"),
    st.sampled_from(NAMES),
    st.sampled_from([None, *Phase, Phase.REMOVED]),
    st.integers(0, 4000),
)
action = st.tuples(
    st.just("busy"), st.sampled_from(NAMES), st.sampled_from([None, Kind.CORDON, Kind.REMOVE])
)
removal = st.tuples(st.just("removal"), st.sampled_from(NAMES), st.sampled_from(["", "a", "b"]))
policies = st.tuples(
    st.just("policies"),
    st.sampled_from([(), ("a",), ("a", "b"), ("a", "ab"), ("a", "b", "bad")]),
)
clock = st.tuples(st.just("clock"), st.sampled_from([0.5, 30.0, 700.0, 1900.0, 3700.0]))
step = st.one_of(
    node_event, node_event, delete, record, record, action, removal, policies, clock, clock
)


def full_recount(c: Controller) -> tuple[Any, Any, Counter[Phase]]:
    view, records, busy = c.view, c.records, c._busy
    names = {
        n
        for n in view.watchlist | records.keys() | busy.keys()
        if (n in view.population or n in records or view.carries_ours(n))
        and n not in c._gone
        and n in c.nodes
    }
    now = c.timeline.now()
    pools, cluster = c.pools.recount_check([c.nodes[n] for n in names], records, busy, now)
    phases = Counter(r.phase for n, r in records.items() if n in c.nodes)
    return pools, cluster, phases


def settle(c: Controller) -> None:
    """Passes until none changes a count (what the leader's loop does: `wake_at` is now)."""
    for _ in range(10):
        c.decide_changed()
        if not c.pools.pending():
            return
    raise AssertionError("the counts never settle")


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=40))
def test_the_kept_census_equals_a_full_recount(steps: list[tuple[Any, ...]]) -> None:
    c, clk = controller()
    settle(c)
    for s in steps:
        match s:
            case ("node", name, ready, labels, ours):
                annotations: dict[str, str | None] = {}
                if ours == "cordoned":
                    annotations[ANN_CORDONED] = "true"
                elif ours == "phase":
                    annotations[ANN_PHASE] = Phase.CORDONED.value
                o = obs(
                    c.cfg,
                    name=name,
                    ready=ready,
                    labels=labels,
                    annotations=annotations,
                    unschedulable=ours == "cordoned",
                )
                c.view.event("MODIFIED", name, o)
            case ("delete", name):
                c.view.event("DELETED", name, None)
            case ("record", name, phase, age):
                # What an action's end does to a record (Controller._perform, then `_done`).
                if phase is None:
                    c.records.pop(name, None)
                else:
                    since = c.timeline.now() - age
                    uid = c.nodes[name].uid if name in c.nodes else f"uid-{name}"
                    c.records[name] = Record(
                        uid=uid, phase=phase, phase_since=since, unhealthy_since=since
                    )
                c._done(name)
            case ("busy", name, kind):
                if kind is None:
                    c._done(name)
                else:
                    c._busy[name] = kind
                    c.pools.touch_pool(c.view.pool(name))
                    c._agenda.touch(name)
            case ("removal", name, pool):
                rec = c.records.get(name) or Record(uid=f"uid-{name}", phase=Phase.REMOVING)
                # Mid-action (the intent is written before the taint or DELETE): nothing
                # else marks the node; the kept census must count its removal once all the same.
                c.pools.count_removal(name, rec, c.timeline.now(), (pool,) if pool else ())
            case ("policies", pools):
                set_policies(c, pools)
            case ("clock", seconds):
                clk.advance(seconds)
        settle(c)
        pools, cluster, phases = full_recount(c)
        kept_pools, kept_cluster = c.pools.kept_census(c.timeline.now())
        assert kept_pools == pools, s
        assert kept_cluster == cluster, s
        assert +c.pools.phases == +phases, s


class Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def record(self, node: str, uid: str, reason: str, message: str, *a: Any, **kw: Any) -> None:
        self.sent.append((node, reason))


def test_a_lasting_hold_is_decided_again_and_its_event_sent_again() -> None:
    """A node the incremental pass does not decide again for any change still has its hold's
    Event sent again every HOLD_EVENT_AGAIN (a timer), as when every pass decided it."""
    clk = FakeClock(start_wall=T0)
    events = Events()
    c = Controller(NoApi(), clk, make_config(), events=events)  # type: ignore[arg-type]
    sick = {
        f"n{i}": obs(c.cfg, name=f"n{i}", ready="Unknown" if i < 3 else "True") for i in range(4)
    }
    c.view.resync(list(sick.items()))
    c.node_watcher.synced = True
    c.node_watcher.last_progress = clk.monotonic()
    c.policies.absent = True
    c._policies_changed()
    since = c.timeline.now() - 600
    c.records["n0"] = Record(
        uid="uid-n0", phase=Phase.SUSPECT, phase_since=since, unhealthy_since=since
    )
    c.decide_all()  # 3 of 4 unhealthy: the breaker holds the cordon
    assert c.decisions["n0"].blocked == Blocked.CIRCUIT_BREAKER
    held = [e for e in events.sent if e == ("n0", "NodeRecoverBlocked")]
    assert len(held) == 1
    for _ in range(3):
        clk.advance(30.0)
        c.node_watcher.last_progress = clk.monotonic()
        c.decide_changed()
    held = [e for e in events.sent if e == ("n0", "NodeRecoverBlocked")]
    assert len(held) == 2
