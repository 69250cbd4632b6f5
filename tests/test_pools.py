"""Pools (controller/pools.py): node pools and the limits the write path asks through
`Controller.hold`: the breakers (per pool and cluster-wide), the concurrency slots, the
removal history with its intents and the hourly budget."""

from __future__ import annotations

from typing import Any

from noderecover.base.clock import FakeClock
from noderecover.controller.reconciler import Controller
from noderecover.controller.writes import Step
from noderecover.core.machine import MAX_REMOVALS, Kind, Phase, Record, removal_intent
from noderecover.core.nodes import ANN_CORDONED, format_time, parse_node
from noderecover.core.policies import parse_policy
from noderecover.core.reasons import Blocked
from noderecover.core.safety import HOUR, BreakerState
from tests.builders import T0, node_json, obs
from tests.conftest import make_config


class EventsApi:
    """Answers the Event LISTs of `Pools.load_removals`, by the reason asked for."""

    def __init__(self, events: list[dict[str, Any]] | None = None) -> None:
        self.events = events or []

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        selector = dict(kw.get("query") or ()).get("fieldSelector", "")
        return {"items": [e for e in self.events if selector == f"reason={e['reason']}"]}


def controller(api: Any = None, **cfg: object) -> Controller:
    """A controller with nodes n0..n3 in view (healthy, the flags' pool), policies absent."""
    kube: Any = api or EventsApi()
    c = Controller(kube, FakeClock(start_wall=T0), make_config(**cfg))
    c.view.resync([(f"n{i}", obs(c.cfg, name=f"n{i}")) for i in range(4)])
    c.node_watcher.synced = True
    c.policies.absent = True
    c._policies_changed()
    return c


def sick(c: Controller, name: str, **kw: Any) -> None:
    c.view.event("MODIFIED", name, obs(c.cfg, name=name, ready="Unknown", **kw))


def removing(name: str, since: float = T0 - 600) -> Record:
    return Record(uid=f"uid-{name}", phase=Phase.REMOVING, phase_since=since, unhealthy_since=since)


# -- concurrency slots ------------------------------------------------------------------


def test_a_slot_is_held_from_the_cordon_until_removal_or_restore() -> None:
    c = controller(max_concurrent=1)
    pools = c.pools
    assert not pools.slots_full("n1", "", c.records, {})
    c.records["n0"] = Record(uid="uid-n0", phase=Phase.DRAINING, phase_since=T0)
    assert pools.slots_full("n1", "", c.records, {})
    assert not pools.slots_full("n0", "", c.records, {})  # its own slot
    # Held (parked) by a live kubelet, a budget or a gate: it keeps its slot.
    c.records["n0"] = Record(uid="uid-n0", phase=Phase.CORDONED, phase_since=T0, parked=True)
    assert pools.in_flight_others("n1", "", c.records, {}) == 1
    # A cordon in progress holds one; a removal in progress is counted by its record.
    assert pools.slots_full("n1", "", {}, {"n2": Kind.CORDON})
    assert not pools.slots_full("n1", "", {}, {"n2": Kind.REMOVE})
    # A record of a node no longer in view holds none.
    assert not pools.slots_full("n1", "", {"gone": c.records["n0"]}, {})


def test_our_cordon_marker_on_the_node_holds_a_slot_an_operators_cordon_does_not() -> None:
    c = controller(max_concurrent=1)
    pools = c.pools
    # A cordon whose reply was lost: ours on the Node, its record still Suspect.
    sick(c, "n2", unschedulable=True, annotations={ANN_CORDONED: "true"})
    assert pools.marked_cordoned("n2")
    assert pools.slots_full("n1", "", {}, {}) and not pools.slots_full("n2", "", {}, {})
    sick(c, "n2", unschedulable=True)  # cordoned by an operator
    assert not pools.marked_cordoned("n2") and not pools.slots_full("n1", "", {}, {})


def test_hold_asks_the_slots_before_a_cordon_only() -> None:
    c = controller(max_concurrent=1)
    sick(c, "n1")
    c.records["n0"] = Record(uid="uid-n0", phase=Phase.DRAINING, phase_since=T0)
    assert c.hold("n1", Step.CORDON) == Blocked.MAX_CONCURRENT
    assert c.hold("n1", Step.EVICT) is None
    c.records.pop("n0")
    assert c.hold("n1", Step.CORDON) is None


# -- breakers ---------------------------------------------------------------------------


def test_either_breaker_open_holds_the_pool() -> None:
    c = controller()
    pools = c.pools
    assert not pools.breaker_open("")
    pools.global_breaker = BreakerState(open=True, opened_at=T0)
    assert pools.breaker_open("") and pools.breaker_open("a")
    assert c.hold("n1", Step.CORDON) == Blocked.CIRCUIT_BREAKER
    pools.global_breaker = BreakerState()
    pools.breakers["a"] = BreakerState(open=True, opened_at=T0)
    assert pools.breaker_open("a") and not pools.breaker_open("")


def test_a_pass_moves_the_breakers_and_the_reported_one() -> None:
    c = controller()  # --max-unhealthy 40 %: three of four opens both
    for name in ("n0", "n1", "n2"):
        sick(c, name)
    c.decide_all()
    pools = c.pools
    assert pools.breakers[""].open and pools.global_breaker.open
    assert pools.breaker is pools.global_breaker
    assert c.hold("n0", Step.CORDON) == Blocked.CIRCUIT_BREAKER


def test_a_step_counts_each_pool_and_a_cordon_the_pass_starts() -> None:
    c = controller()
    sick(c, "n1")
    c.records["n0"] = Record(uid="uid-n0", phase=Phase.DRAINING, phase_since=T0)
    now = c.timeline.now()
    c.pools.count_removal("gone", removing("gone"), now, ("",))
    candidates = [c.nodes["n0"], c.nodes["n1"]]
    limits = c.pools.step(candidates, c.records, {}, now)
    census = limits.census[""]
    assert (census.unhealthy, census.total, census.in_flight) == (3, 5, 1)
    assert limits.removals_last_hour == {"": 1}
    # The counts change by themselves when that removal leaves the breaker window.
    assert limits.wake_at == now + min(c.cfg.breaker_window, HOUR)
    c.records["n1"] = Record(uid="uid-n1", phase=Phase.SUSPECT, phase_since=T0)
    assert c.pools.gate_counts(limits, "n0", "", c.records, {}, T0) == (0, 1)  # not its own slot
    assert c.pools.gate_counts(limits, "n1", "", c.records, {"n3": Kind.REMOVE}, T0) == (1, 2)
    assert c.pools.gate_counts(limits, "n1", None, c.records, {}, T0) == (0, 0)
    limits.started("", Kind.CORDON)
    limits.started("", Kind.DRAIN)
    limits.started(None, Kind.CORDON)
    assert limits.in_flight == {"": 2}


# -- removal history and the hourly budget -------------------------------------------------


def test_a_removal_counts_once_per_episode() -> None:
    c = controller()
    pools, now = c.pools, c.timeline.now()
    pools.count_removal("n0", removing("n0"), now, ("",))
    pools.count_removal("n0", removing("n0"), now + 5, ("",))  # its taint, then its DELETE
    assert pools.removals == (now,) and pools.removal_times("") == (now,)
    pools.count_removal("n0", removing("n0", since=T0 - 60), now + 5, ("",))  # a new episode
    assert list(pools.removals) == [now, now + 5]


def test_a_removal_counts_against_its_pool_or_every_pool_when_it_is_unknown() -> None:
    c = controller()
    pools, now = c.pools, c.timeline.now()
    pools.count_removal("n0", removing("n0"), now, ("a",))
    assert pools.pool_removals == {"a": (now,)} and pools.removal_times("b") == ()
    pools.count_removal("gone", removing("gone"), now + 1, ())  # gone mid-removal
    assert pools.removal_times("a") == (now, now + 1) and pools.removal_times("b") == (now + 1,)
    assert pools.removals == (now, now + 1)  # the cluster's, the flags' pool's
    pools.prune(now + HOUR + 1)
    assert not pools.removals and not pools.removal_times("a")


def test_the_budget_counts_history_and_removals_in_progress() -> None:
    c = controller(max_removals_per_hour=2)
    pools, now = c.pools, c.timeline.now()
    pools.count_removal("n0", removing("n0"), now, ("",))
    assert not pools.removal_budget_spent("n1", "", {}, {}, now)
    assert pools.removal_budget_spent("n1", "", {}, {"n2": Kind.REMOVE}, now)
    assert not pools.removal_budget_spent("n2", "", {}, {"n2": Kind.REMOVE}, now)  # its own
    # Gone from view mid-removal: its pool is unknown, it counts in every pool.
    assert pools.removals_started("a", {}, {"gone": Kind.REMOVE}) == 1
    assert pools.removals_started("a", {}, {"n2": Kind.REMOVE}) == 0  # the flags' pool's
    pools.count_removal("n2", removing("n2"), now, ("",))
    assert pools.removal_budget_spent("n1", "", {}, {}, now)
    assert not pools.removal_budget_spent("n1", "", {}, {}, now + HOUR)  # out of the hour


async def test_an_intent_an_earlier_leader_recorded_counts_once() -> None:
    """Read from its NodeRecoverRemoving Event: it counts against the budget, and not again
    when this replica finishes that removal; it does not stand in its own node's way."""
    rec = removing("n1")
    intent = {
        "reason": "NodeRecoverRemoving",
        "reportingComponent": "noderecover",
        "metadata": {"name": removal_intent("n1", rec)},
        "involvedObject": {"kind": "Node", "name": "n1", "uid": "uid-n1"},
        "firstTimestamp": format_time(T0 - 30),
    }
    removed = {  # the same removal's NodeRecoverRemoved: counted by its intent
        "reason": "NodeRecoverRemoved",
        "reportingComponent": "noderecover",
        "involvedObject": {"kind": "Node", "name": "n1", "uid": "uid-n1"},
        "lastTimestamp": format_time(T0 - 20),
    }
    c = controller(EventsApi([intent, removed]), max_removals_per_hour=1)
    pools = c.pools
    pools.removals_known = False
    await pools.load_removals()
    assert pools.removals_known and len(pools.removals) == 1
    sick(c, "n1")
    sick(c, "n2")
    c.records["n1"] = rec
    c.records["n2"] = removing("n2")
    now = c.timeline.now()
    assert not pools.removal_budget_spent("n1", "", c.records, {}, now)  # its own removal
    assert pools.removal_budget_spent("n2", "", c.records, {}, now)
    assert c.hold("n2", Step.DELETE_NODE) == MAX_REMOVALS
    assert c.hold("n1", Step.DELETE_NODE) is None
    pools.count_removal("n1", rec, now, ("",))  # this replica finishes it: counted already
    assert len(pools.removals) == 1
    await pools.load_removals()  # a later term reads the same Events: not counted twice
    assert len(pools.removals) == 1


async def test_an_unknown_history_holds_taints_and_node_deletes() -> None:
    class Failing:
        async def request(self, method: str, path: str, **kw: Any) -> Any:
            from noderecover.kube.client import ApiError

            raise ApiError(500, "boom")

    c = controller(Failing())
    sick(c, "n1")
    c.pools.removals_known = False
    await c.pools.load_removals()
    assert not c.pools.removals_known
    assert c.hold("n1", Step.TAINT) == c.hold("n1", Step.DELETE_NODE) == Blocked.REMOVALS_UNKNOWN
    assert c.hold("n1", Step.CORDON) is None


def test_a_removal_whose_node_changed_pool_counts_in_both() -> None:
    """Simulation seed 300031 (every fault kind): node-2's removal intent was counted in the
    pool it was in then; a policy change moved it into pol-319 before its taint and DELETE,
    and node-3 of pol-319 (1 removal an hour) was removed too: two in that pool's hour. A
    removal now counts in every pool its node was in from its intent to its end (more is
    held, never less)."""
    c = controller()
    pools, now = c.pools, c.timeline.now()
    pools.count_removal("n0", removing("n0"), now, ("a",))  # its intent, in pool a
    pools.count_removal("n0", removing("n0"), now + 5, ("b",))  # its DELETE, now in pool b
    assert pools.removal_times("a") == (now,) and pools.removal_times("b") == (now,)
    assert pools.removals == (now,)  # once for the cluster
    pools.count_removal("n0", removing("n0"), now + 6, ("b",))  # again: nothing more
    assert pools.removal_times("b") == (now,)
    pools.count_removal("n0", removing("n0"), now + 7, ())  # gone, its pool unknown
    assert pools.removal_times("c") == (now,) and pools.removals == (now,)
    pools.prune(now + HOUR + 1)
    assert not pools.removal_times("a") and not pools.removal_times("b")
    assert not pools.removal_times("c")


def relist(c: Controller, names: range | tuple[int, ...] = range(4), **kw: Any) -> None:
    """What a LIST brings: nodes n<i> labelled pool=b (`kw`: more), parsed for what the
    policies read now."""
    view = c.view
    view.resync(
        [
            (
                f"n{i}",
                parse_node(
                    node_json(name=f"n{i}", labels={"pool": "b"}, **kw),
                    view.keep_labels,
                    view.keep_conditions,
                ),
            )
            for i in names
        ]
    )


def with_policy_b(c: Controller, budget: int = 1) -> None:
    """Policy "b" (nodes labelled pool=b, `budget` removals an hour) created now, and the
    nodes listed again for the label it reads."""
    spec = {"nodeSelector": {"matchLabels": {"pool": "b"}}, "maxRemovalsPerHour": budget}
    c.policies.absent = False
    c.policies.policies = {
        "b": parse_policy({"metadata": {"name": "b", "uid": "b"}, "spec": spec}, c.cfg)
    }
    c._policies_changed()
    relist(c, tuple(i for i in range(4) if f"n{i}" in c.nodes))


def test_a_removal_counts_in_a_pool_learnt_after_its_write() -> None:
    """Simulation seed 320422 (every fault kind): policy pol-246 was created 60 ms before
    node-3's out-of-service taint went on (its watch had not brought it yet): node-3's removal
    counted in the flags' pool only, and once the policy was known node-5 of the same pool
    (1 removal an hour) was removed too. A removal counted by this replica follows its node
    into whatever pool it turns out to be in, before any later removal is decided."""
    c = controller()
    relist(c, ready="Unknown")  # pool=b is not read yet: not kept
    c.records["n0"] = removing("n0")
    c.pools.count_removal("n0", c.records["n0"], c.timeline.now(), ("",))
    assert c.hold("n1", Step.DELETE_NODE) is None  # flags' budget (default) not spent
    with_policy_b(c)
    assert c.view.pool("n0") == c.view.pool("n1") == "b"
    assert c.hold("n1", Step.DELETE_NODE) == MAX_REMOVALS
    assert c.hold("n1", Step.TAINT) == MAX_REMOVALS
    assert c.hold("n0", Step.DELETE_NODE) is None  # its own removal does not stand in its way


def test_a_removal_whose_node_is_gone_counts_in_the_pools_it_may_have_been_in() -> None:
    """The same when the node left the view before the policy was known: its removal counts
    in each new pool its last labels put it in, and in every pool whose selector reads a
    label those labels were not parsed for (it may have been in it)."""
    c = controller()
    with_policy_b(c, budget=5)  # the label `pool` is read: kept on every node from here
    now = c.timeline.now()
    c.pools.count_removal("n0", removing("n0"), now, ("b",))
    c.view.event("DELETED", "n0", None)
    spec_c = {"nodeSelector": {"matchLabels": {"pool": "b"}}, "maxRemovalsPerHour": 1}
    spec_z = {"nodeSelector": {"matchLabels": {"zone": "z"}}, "maxRemovalsPerHour": 1}
    c.policies.policies = {
        # "b" renamed "c": same selector; "z" reads a label n0 was never parsed for.
        "c": parse_policy({"metadata": {"name": "c", "uid": "c"}, "spec": spec_c}, c.cfg),
        "z": parse_policy({"metadata": {"name": "z", "uid": "z"}, "spec": spec_z}, c.cfg),
    }
    c._policies_changed()
    assert c.pools.removal_times("c") == (now,)
    assert c.pools.removal_times("z") == (now,)
    relist(c, (1, 2), ready="Unknown")
    assert c.hold("n1", Step.DELETE_NODE) == MAX_REMOVALS


def test_a_gone_nodes_removal_does_not_spread_to_pools_it_was_never_in() -> None:
    """Policies that read only labels the gone node was parsed for, and do not select it:
    its removal is not counted there (a policy edit does not spend every pool's budget)."""
    c = controller()
    with_policy_b(c, budget=5)
    now = c.timeline.now()
    c.pools.count_removal("n0", removing("n0"), now, ("b",))
    c.view.event("DELETED", "n0", None)
    spec_a = {"nodeSelector": {"matchLabels": {"pool": "a"}}, "maxRemovalsPerHour": 1}
    c.policies.policies = {
        **c.policies.policies,
        "a": parse_policy({"metadata": {"name": "a", "uid": "a"}, "spec": spec_a}, c.cfg),
    }
    c._policies_changed()
    assert c.pools.removal_times("a") == ()
    assert c.pools.removal_times("b") == (now,)
