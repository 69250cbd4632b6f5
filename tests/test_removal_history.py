"""The removal history a new leader rebuilds from the NodeRecoverRemoved Events of earlier
leaders: an aggregated Event (`count` > 1) is `count` removals, at its latest timestamp."""

from __future__ import annotations

from typing import Any

from noderecover.base.clock import FakeClock
from noderecover.controller.reconciler import Controller
from noderecover.core.nodes import format_time
from noderecover.kube.client import KubeClient
from tests.builders import T0
from tests.conftest import client_for, make_config
from tests.fakeapi import FakeKube


def removed_event(name: str, first: float, last: float, count: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": name},
        "reason": "NodeRecoverRemoved",
        "message": "removed",
        "type": "Warning",
        "reportingComponent": "noderecover",
        "reportingInstance": "old-leader",
        "source": {"component": "noderecover"},
        "count": count,
        "firstTimestamp": format_time(first),
        "lastTimestamp": format_time(last),
    }


async def load(client: KubeClient, **cfg: object) -> Controller:
    c = Controller(client, FakeClock(start_wall=T0), make_config(**cfg))
    await c.pools.load_removals()
    return c


async def test_an_aggregated_event_counts_each_removal(kube: FakeKube) -> None:
    client = client_for(kube)
    try:
        events = "/api/v1/namespaces/default/events"
        await client.request("POST", events, body=removed_event("w1", T0 - 3000, T0 - 60, 3))
        await client.request("POST", events, body=removed_event("w2", T0 - 30, T0 - 30, 1))
        c = await load(client)
        # Three removals of w1, all at its lastTimestamp (none spread back towards the
        # firstTimestamp, where they would leave the hour window too early), and w2's one.
        assert c.pools.removals == (T0 - 60, T0 - 60, T0 - 60, T0 - 30)
        await c.pools.load_removals()  # a later term reads the same Events: not counted twice
        assert len(c.pools.removals) == 4
    finally:
        await client.close()


async def test_the_hourly_budget_sees_every_aggregated_removal(kube: FakeKube) -> None:
    """Budget 3, one Event with count 3: the budget is spent (one per Event said 1 of 3)."""
    client = client_for(kube)
    try:
        await client.request(
            "POST",
            "/api/v1/namespaces/default/events",
            body=removed_event("w1", T0 - 1200, T0 - 600, 3),
        )
        c = await load(client, max_removals_per_hour=3)
        assert len(c.pools.removals) == 3
    finally:
        await client.close()


class StubApi:
    def __init__(self, body: Any) -> None:
        self.body = body

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.body


async def test_a_garbled_count_is_read_safely() -> None:
    """Not an int, a bool, zero, negative: the Event still is one removal. An absurd count is
    cut at what the hourly budget allows in the kept window (10 by default)."""
    base = removed_event("w1", T0 - 60, T0 - 60, 1)
    cases: list[tuple[Any, int]] = [
        ("3", 1),
        (3.0, 1),
        (True, 1),
        (None, 1),
        (0, 1),
        (-5, 1),
        (10**18, 10),
        (2, 2),
    ]
    for count, expected in cases:
        ev = {**base, "count": count}
        api: Any = StubApi({"items": [ev]})
        c = await load(api)
        assert c.pools.removals == (T0 - 60,) * expected, count
    no_count = {k: v for k, v in base.items() if k != "count"}
    api = StubApi({"items": [no_count]})
    assert (await load(api)).pools.removals == (T0 - 60,)


async def test_the_latest_readable_timestamp_is_used() -> None:
    """A garbled lastTimestamp falls back to firstTimestamp; neither readable: skipped."""
    ev = removed_event("w1", T0 - 100, T0 - 60, 2)
    api: Any = StubApi({"items": [{**ev, "lastTimestamp": "yesterday"}]})
    assert (await load(api)).pools.removals == (T0 - 100, T0 - 100)
    api = StubApi({"items": [{**ev, "lastTimestamp": 5, "firstTimestamp": None}]})
    assert (await load(api)).pools.removals == ()


async def test_an_unreadable_removal_history_holds_removals_until_it_is_read(
    kube: FakeKube, client: KubeClient
) -> None:
    """Unknown holds: a new leader that cannot read the removals earlier leaders made does
    not take the hourly budget for unspent (found by the simulation: a restarted replica
    removed a second node under a budget of 1)."""
    from noderecover.controller.writes import Step
    from noderecover.core.reasons import Blocked

    c = Controller(client, FakeClock(start_wall=T0), make_config())
    kube.fail_next("GET", r"/events$", 500)
    c.pools.removals_known = False
    await c.pools.load_removals()
    assert not c.pools.removals_known
    kube.add_node("w1", "Unknown")
    c.view.resync([("w1", c.view.parse(kube.get_node("w1") or {}))])
    c.node_watcher.synced = True
    c.policies.absent = True
    c._policies_changed()
    assert c.hold("w1", Step.DELETE_NODE) == Blocked.REMOVALS_UNKNOWN
    assert c.hold("w1", Step.CORDON) != Blocked.REMOVALS_UNKNOWN
    await c.pools.load_removals()
    assert c.pools.removals_known and c.hold("w1", Step.DELETE_NODE) is None
