"""Unknown holds: a pause or a policy list the controller could not read never counts as "no",
and a pause ends at its own wall time whatever the host clock did meanwhile.

Against the fake API server on a fake clock. Each test attacks one rule:
- the cluster pause ConfigMap unreadable at start (403, 5xx, a 404, no answer) holds every
  forward step, visibly, until its watch answers;
- a pause watch that breaks later (its stream dropped or hung, new ones refused) is believed
  for PAUSE_PROPAGATION_BOUND after its last answer, then holds;
- restores go on while the pause is unknown;
- a moment of 404 from the policy endpoint at start is not "no policies"; the CRD's absence
  is what its own watch says, and a CRD watch that cannot be read keeps the policies unknown;
- a policy whose spec.paused cannot be read holds its pool;
- a corrected host clock moves a pause's end with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from noderecover.base.metrics import BLOCKED, PAUSE_UNKNOWN
from noderecover.base.metrics import POLICY_INVALID as POLICY_INVALID_METRIC
from noderecover.core.nodes import format_time
from noderecover.core.pauses import PAUSE_PROPAGATION_BOUND
from noderecover.core.policies import (
    CLUSTER_PAUSED,
    PAUSED,
    POLICIES_UNKNOWN,
    POLICY_INVALID,
)
from noderecover.core.policies import (
    PAUSE_UNKNOWN as PAUSE_UNKNOWN_REASON,
)
from tests.conftest import Harness
from tests.fakeapi import FakeKube

Start = Callable[..., Any]
# The pause ConfigMap's LIST and WATCH (a fieldSelector on its name), and a preview's GET.
CM = r"/namespaces/noderecover/configmaps(/noderecover-pause)?$"
CRDS = r"/customresourcedefinitions$"
NS = "noderecover"


def kill(kube: FakeKube, node: str) -> None:
    kube.set_kubelet_alive(node, False)
    kube.set_node_ready(node, "Unknown", "NodeStatusUnknown")


def cordoned(kube: FakeKube, node: str) -> bool:
    n = kube.get_node(node)
    return n is not None and bool(n["spec"].get("unschedulable"))


def nodes(kube: FakeKube, *names: str) -> None:
    for n in names:
        kube.add_node(n)


def gauge(what: str) -> float:
    value: float = PAUSE_UNKNOWN.labels(what)._value.get()
    return value


@pytest.mark.parametrize("status", [403, 500, 503, 404])
async def test_a_pause_that_cannot_be_read_at_start_holds_every_forward_step(
    kube: FakeKube, harness_factory: Start, status: int
) -> None:
    """404 here is an injected one (a proxy's, a path not served): not the ConfigMap's own
    Status, so not "no pause"."""
    nodes(kube, "w1", "w2", "w3")
    kube.fail_next("GET", CM, status, count=10**6)
    held_before = BLOCKED.labels(PAUSE_UNKNOWN_REASON)._value.get()
    h: Harness = await harness_factory(grace=10, namespace=NS)
    kill(kube, "w1")
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "w1"), "cordoned while the pause could not be read"
    assert h.controller.policy_hold("w1") == PAUSE_UNKNOWN_REASON
    assert h.controller.blocked.get("w1") == PAUSE_UNKNOWN_REASON
    assert BLOCKED.labels(PAUSE_UNKNOWN_REASON)._value.get() > held_before
    assert gauge("cluster") == 1
    ready, why = h.controller.readiness()
    assert not ready and "cluster pause unknown" in why and "noderecover-pause" in why, why
    blocked = [m for n, r, m in h.messages if n == "w1" and r == "NodeRecoverBlocked"]
    assert any(PAUSE_UNKNOWN_REASON in m and "cluster pause unknown" in m for m in blocked)
    # Readable again (no pause): the node is remediated, the replica ready.
    kube._faults.clear()
    await h.until(lambda: cordoned(kube, "w1"), advance=1.0, what="cordoned once readable")
    assert h.controller.readiness()[0]
    assert gauge("cluster") == 0


async def test_the_configmaps_own_404_is_no_pause(kube: FakeKube, harness_factory: Start) -> None:
    nodes(kube, "w1", "w2", "w3")
    h: Harness = await harness_factory(grace=10, namespace=NS)
    kill(kube, "w1")
    await h.until(lambda: cordoned(kube, "w1"), advance=1.0, what="no pause: cordoned")
    assert h.controller.policies.pause_known


@pytest.mark.parametrize("fault", ["500", "403", "hang", "silent"])
async def test_a_pause_watch_broken_later_is_believed_only_for_the_bound(
    kube: FakeKube, harness_factory: Start, fault: str
) -> None:
    """The pause watch breaks: its stream is dropped and new ones fail or hang, or it stays
    open and delivers nothing (no bookmark either). A pause written meanwhile is not seen: the
    last answer is believed for PAUSE_PROPAGATION_BOUND, then every forward step holds."""
    nodes(kube, "w1", "w2", "w3")
    h: Harness = await harness_factory(grace=30, namespace=NS)
    await h.until(lambda: h.controller.policies.pause_known, advance=0.5)
    # Down before the watches break ("silent" stops every watch: the view keeps what it saw).
    kill(kube, "w1")
    await h.until(lambda: "w1" in h.controller.records, advance=0.1)
    if fault == "silent":
        kube.silence_watches()
    else:
        if fault == "hang":
            kube.hang("GET", CM)
        else:
            kube.fail_next("GET", CM, int(fault), count=10**6)
        kube.drop_watches()
    # Meanwhile somebody pauses: the controller cannot see it.
    kube.set_configmap(NS, "noderecover-pause", {"until": format_time(h.clock.wall() + 3600)})
    await h.idle(PAUSE_PROPAGATION_BOUND + 1, step=0.5)
    # "silent" stops the policy watch too, kept as fresh as the pause's: either holds.
    held = {PAUSE_UNKNOWN_REASON} | ({POLICIES_UNKNOWN} if fault == "silent" else set())
    assert h.controller.policy_hold("w1") in held
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "w1"), f"cordoned while the pause watch was broken ({fault})"
    assert h.controller.blocked.get("w1") in held
    kube.silence_watches(False)
    kube.release_hangs()
    kube._faults.clear()
    await h.until(
        lambda: h.controller.policy_hold("w1") == CLUSTER_PAUSED,
        advance=0.5,
        what="pause seen",
        real_timeout=30,
    )
    assert not cordoned(kube, "w1")


async def test_a_pause_reaches_the_controller_by_its_watch_without_a_poll(
    kube: FakeKube, harness_factory: Start
) -> None:
    """No GET of the pause, no LIST after the first while the watch answers: the pause
    written is seen by its watch event, well within the bound."""
    nodes(kube, "w1", "w2", "w3")
    h: Harness = await harness_factory(grace=10, namespace=NS)
    await h.until(lambda: h.controller.policies.pause_known, advance=0.5)
    await h.idle(120, step=1.0)
    lists = [r for r in kube.requests_matching("GET", CM) if r.query.get("watch") != "true"]
    assert len(lists) == 1, [(r.path, r.query) for r in lists]
    assert not kube.requests_matching("GET", r"/configmaps/noderecover-pause$")
    kube.set_configmap(NS, "noderecover-pause", {"until": format_time(h.clock.wall() + 3600)})
    await h.until(
        lambda: h.controller.policy_hold("w1") == CLUSTER_PAUSED,
        real_timeout=5,
        what="the pause seen without the fake clock moving",
    )


async def test_restores_go_on_while_the_pause_is_unknown(
    kube: FakeKube, harness_factory: Start
) -> None:
    nodes(kube, "w1", "w2", "w3")
    h: Harness = await harness_factory(grace=10, healthy_delay=10, drain_timeout=3600, namespace=NS)
    kube.set_node_ready("w1", "False")  # a live kubelet: the drain never forces
    await h.until(lambda: cordoned(kube, "w1"), advance=1.0)
    kube.fail_next("GET", CM, 503, count=10**6)
    kube.drop_watches()
    await h.until(lambda: h.controller.policy_hold("w1") == PAUSE_UNKNOWN_REASON, advance=0.5)
    kube.set_node_ready("w1", "True")
    await h.until(lambda: not cordoned(kube, "w1"), advance=1.0, what="restored while unknown")


async def test_a_moment_of_404_from_the_policy_endpoint_at_start_is_not_no_policies(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The CRD's handler answers 404 for a moment (an API server starting): a paused policy
    exists. The flags must not govern meanwhile."""
    kube.install_policies()
    nodes(kube, "w1", "w2", "w3")
    kube.add_policy("all", {"paused": {"until": "2999-01-01T00:00:00Z", "reason": "upgrade"}})
    kube.fail_next("GET", r"noderecoverypolicies$", 404, count=1)
    kill(kube, "w1")
    h: Harness = await harness_factory(grace=1, settle=False)
    assert h.controller.policy_hold("w1") == POLICIES_UNKNOWN
    assert not h.controller.readiness()[0]
    assert gauge("policies") == 1
    await h.until(lambda: h.controller.policies.active, advance=0.5, what="policy seen")
    await h.idle(30, step=1.0)
    assert not cordoned(kube, "w1"), "cordoned on a moment of 404: the pause was not seen"
    assert h.controller.policy_hold("w1") == PAUSED
    assert gauge("policies") == 0


async def test_a_crd_really_absent_is_what_its_own_watch_says(
    kube: FakeKube, harness_factory: Start
) -> None:
    """No CRD: its LIST (a fieldSelector on its name) answers none: the flags govern. Installed
    later, its watch says so: the policies are read, and a paused one holds."""
    nodes(kube, "w1", "w2", "w3", "w5", "w6", "w7", "w8")  # two down: under the breaker
    kill(kube, "w1")
    h: Harness = await harness_factory(grace=1, settle=False)
    await h.until(lambda: cordoned(kube, "w1"), advance=0.5, what="the flags govern")
    assert h.controller.policies.absent
    assert kube.requests_matching("GET", CRDS)
    assert not kube.requests_matching("GET", r"noderecoverypolicies")  # no probe of them
    kube.add_node("w4")
    kube.install_policies()
    kube.add_policy("all", {"paused": {"until": "2999-01-01T00:00:00Z", "reason": "upgrade"}})
    await h.until(lambda: h.controller.policies.active, advance=0.5, what="CRD seen installed")
    kill(kube, "w4")
    await h.idle(30, step=1.0)
    assert not cordoned(kube, "w4") and h.controller.policy_hold("w4") == PAUSED
    # Deleted again: the flags govern again.
    kube.uninstall_policies()
    await h.until(lambda: h.controller.policies.absent, advance=0.5, what="CRD seen gone")
    await h.until(lambda: cordoned(kube, "w4"), advance=0.5, what="the flags govern again")


async def test_a_lasting_404_of_the_policies_while_the_crd_exists_is_not_no_policies(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The policies' path answers 404 for a minute (a proxy, a CRD handler not up) while the
    CRD exists and a paused policy governs: however long the 404 lasts, the flags never
    govern (found by the simulation: two 404s 5 s apart were believed, and a pool of limit 1
    had 2 cordons under the flags' limit)."""
    kube.install_policies()
    nodes(kube, "w1", "w2", "w3")
    kube.add_policy("all", {"paused": {"until": "2999-01-01T00:00:00Z", "reason": "upgrade"}})
    kube.fail_next("GET", r"noderecoverypolicies$", 404, count=10**6)
    kill(kube, "w1")
    h: Harness = await harness_factory(grace=1, settle=False)
    await h.idle(60, step=1.0)
    assert not h.controller.policies.absent
    assert h.controller.policy_hold("w1") == POLICIES_UNKNOWN
    assert not cordoned(kube, "w1"), "the flags governed on a 404 while the CRD exists"
    assert "404" in (h.controller.policies.unknown_why() or "")
    kube._faults.clear()
    await h.until(lambda: h.controller.policy_hold("w1") == PAUSED, advance=1.0)
    assert not cordoned(kube, "w1")


async def test_a_crd_that_cannot_be_read_keeps_the_policies_unknown(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The CRD's LIST is refused (403): whether it exists is unknown, and unknown holds,
    visibly."""
    nodes(kube, "w1", "w2", "w3")
    kube.fail_next("GET", CRDS, 403, count=10**6)
    kill(kube, "w1")
    h: Harness = await harness_factory(grace=1, settle=False)
    await h.idle(30, step=1.0)
    assert not h.controller.policies.absent and not cordoned(kube, "w1")
    assert h.controller.policy_hold("w1") == POLICIES_UNKNOWN
    ready, why = h.controller.readiness()
    assert not ready and "noderecoverypolicies.noderecover.io" in why and "403" in why, why


async def test_a_policy_whose_pause_cannot_be_read_holds_its_pool(
    kube: FakeKube, harness_factory: Start
) -> None:
    kube.install_policies()
    kube.add_policy("all", {"paused": {"until": "next tuesday", "reason": "upgrade"}})
    nodes(kube, "w1", "w2", "w3")
    h: Harness = await harness_factory(grace=10)
    await h.until(lambda: h.controller.policies.active)
    kill(kube, "w1")
    await h.idle(60, step=2.0)
    assert not cordoned(kube, "w1"), "a corrupted pause counted as not paused"
    assert h.controller.policy_hold("w1") == POLICY_INVALID
    assert POLICY_INVALID_METRIC.labels("all")._value.get() == 1
    error = h.controller.policies.policies["all"].error
    assert error is not None and "spec.paused.until" in error


async def test_a_pause_ends_at_its_wall_time_after_the_host_clock_is_corrected(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The host clock was 50 s slow and NTP corrects it: a pause ending at 12:00 (the API
    server's, the operator's wall time) ends at 12:00 by the corrected clock, not 50 s later.
    Internal timers (the grace) stay on the monotonic timeline."""
    nodes(kube, "w1", "w2", "w3")
    h: Harness = await harness_factory(grace=10, namespace=NS)
    until = h.clock.wall() + 100
    kube.set_configmap(NS, "noderecover-pause", {"until": format_time(until), "reason": "x"})
    await h.until(lambda: h.controller.policy_hold("w1") == CLUSTER_PAUSED, advance=0.5)
    kill(kube, "w1")
    h.clock.skew_wall(+50)  # the host clock is corrected: 50 s later than it said
    left = until - h.clock.wall()  # by the corrected clock (the timeline still says +50)
    assert 30 < left < 50
    start = h.clock.monotonic()
    await h.idle(left - 5, step=1.0)
    assert h.clock.wall() < until and not cordoned(kube, "w1"), "the pause ended early"
    assert h.controller.policy_hold("w1") == CLUSTER_PAUSED
    await h.until(
        lambda: h.controller.policy_hold("w1") is None, advance=0.5, what="the pause ended"
    )
    assert h.clock.monotonic() - start <= left + 1, "the pause outlived its wall time"
    await h.until(
        lambda: cordoned(kube, "w1") or kube.get_node("w1") is None,
        advance=1.0,
        what="remediated at the pause's end",
    )
    assert h.clock.monotonic() - start <= left + 10


async def test_a_joining_nodes_allowance_ends_by_the_corrected_wall_clock(
    kube: FakeKube, harness_factory: Start
) -> None:
    """--node-startup-timeout counts from the node's creationTimestamp (the API server's wall
    time): after the host clock is corrected 200 s forward the node is 200 s older."""
    import datetime as dt

    nodes(kube, "w1", "w2", "w3", "w4")
    kube.node_age = dt.timedelta(0)
    kube.add_node("new", "False", reason="KubeletNotReady")
    kube.node_age = dt.timedelta(days=1)
    h: Harness = await harness_factory(grace=10, node_startup_timeout=300.0)
    h.clock.skew_wall(+200)
    start = h.clock.monotonic()
    await h.idle(80, step=1.0)
    assert not cordoned(kube, "new"), "cordoned within the start-up allowance"
    await h.until(lambda: cordoned(kube, "new"), advance=1.0, what="cordoned after start-up")
    assert h.clock.monotonic() - start <= 115, "the allowance ignored the corrected clock"


async def test_earlier_removals_age_by_the_corrected_wall_clock(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A NodeRecoverRemoved Event 50 minutes old by the wall clock leaves the hourly window
    10 minutes later, even when the host clock was corrected 20 minutes forward since start."""
    import time

    from tests.conftest import client_for

    nodes(kube, "w1", "w2", "w3")
    h: Harness = await harness_factory(grace=10)
    h.clock.skew_wall(+1200)
    at = time.time() + 1200 - 3000
    c = client_for(kube)
    try:
        await c.request(
            "POST",
            "/api/v1/namespaces/default/events",
            body={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": "w0.removed", "namespace": "default"},
                "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": "w0"},
                "reason": "NodeRecoverRemoved",
                "reportingComponent": "noderecover",
                "count": 1,
                "firstTimestamp": format_time(at),
                "lastTimestamp": format_time(at),
            },
        )
    finally:
        await c.close()
    await h.controller.pools.load_removals()
    (when,) = h.controller.pools.removals
    age = h.controller.timeline.now() - when
    assert 2990 <= age <= 3010, age
