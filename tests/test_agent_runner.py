"""The node agent's shell against the fake API server, on a fake clock: its Lease, the mark,
peers, the watchdog feeder, the peer endpoint; every call it makes is in AGENT_API_CALLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration
from noderecover_testkit.agents import power_off_due

from noderecover import AGENT_USER_AGENT
from noderecover.agent import reboot
from noderecover.agent.runner import Agent, AgentSettings
from noderecover.base.clock import FakeClock
from noderecover.core import agent as core
from noderecover.core.agent import AgentParams, Mode, Why
from noderecover.kube.client import JSON, KubeClient, Timeouts
from noderecover.kube.permissions import AGENT_API_CALLS, declared, permission_of
from tests.fakeapi import FakeKube

NS = "noderecover"
PARAMS = AgentParams(isolation_timeout=30, watchdog_timeout=20, check_interval=5, slack=3)
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/noderecover-agent-w1"


class Peers:
    """A scripted peer: answers whatever `reply` is (JSON-like), counting questions."""

    def __init__(self) -> None:
        self.reply: object = None
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, address: str, node: str, timeout: float) -> object:
        self.asked.append((address, node))
        return self.reply


@pytest.fixture
async def agent_env(
    kube: FakeKube, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]]]:
    clients: list[KubeClient] = []

    async def make(
        action: reboot.RebootAction | None = None, params: AgentParams = PARAMS
    ) -> tuple[Agent, FakeClock, Peers]:
        clock = FakeClock(start_wall=time.time())
        c = KubeClient(
            ApiClient(Configuration(host=kube.base_url)),
            Timeouts(request=2.0, connect=2.0),
            "w1",
            user_agent=AGENT_USER_AGENT,
        )
        clients.append(c)
        peers = Peers()
        settings = AgentSettings(
            node="w1",
            namespace=NS,
            params=params,
            api_timeout=2.0,
            peer_timeout=1.0,
            static_peers=("127.0.0.1:1", "127.0.0.1:2"),
            advertise="127.0.0.1:9",
        )
        act = action or reboot.FileAction(tmp_path / "fenced", "w1", params.watchdog_timeout)
        return Agent(c, clock, settings, act, ask_peer=peers), clock, peers

    yield make
    for c in clients:
        await c.close()
    # Least privilege: every request of the agent is one its RBAC grants.
    undeclared = []
    for r in kube.requests:
        if not (r.user_agent or "").startswith("noderecover-agent/"):
            continue
        needed = permission_of(r.method, r.path, r.query)
        if needed is None or declared(needed, AGENT_API_CALLS) is None:
            undeclared.append(f"{r.method} {r.path} {needed}")
    assert not undeclared


def cut_api(kube: FakeKube) -> None:
    kube.fail_next("*", ".", 503, count=10**6)


def heal_api(kube: FakeKube) -> None:
    kube._faults.clear()


def fenced_lines(tmp_path: Path) -> list[dict[str, Any]]:
    f = tmp_path / "fenced"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


async def test_lease_created_then_renewed_with_parameters(
    kube: FakeKube, agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]]
) -> None:
    node = kube.add_node("w1")
    agent, clock, _ = await agent_env()
    d = await agent.check_once()
    assert d.why is Why.HEALTHY and agent.state.node_uid == node["metadata"]["uid"]
    lease = kube.stores["leases"].objects[(NS, "noderecover-agent-w1")]
    first = lease["spec"]["renewTime"]
    assert lease["spec"]["holderIdentity"] == "w1"
    ann = lease["metadata"]["annotations"]
    assert core.params_of(ann) == AgentParams(30, 20, 5, 3, Mode.TEST)
    assert ann[core.ANN_ADDRESS] == "127.0.0.1:9"
    assert lease["metadata"]["labels"][core.AGENT_LABEL] == core.AGENT_LABEL_VALUE
    clock.advance(5)
    await agent.check_once()
    lease = kube.stores["leases"].objects[(NS, "noderecover-agent-w1")]
    assert lease["spec"]["renewTime"] != first
    assert lease["spec"]["acquireTime"] == first  # kept on renewal
    assert agent.renewals == 2
    # Someone else rewrote it (409 on our copy): read again, renew.
    kube.stores["leases"].objects[(NS, "noderecover-agent-w1")]["metadata"]["resourceVersion"] = "1"
    clock.advance(5)
    assert (await agent.check_once()).why is Why.HEALTHY
    assert agent.renewals == 3


async def test_mark_with_own_uid_fences_once_and_for_good(
    kube: FakeKube,
    agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]],
    tmp_path: Path,
) -> None:
    node = kube.add_node("w1", annotations={core.FENCE_REQUESTED: "some-other-uid"})
    agent, clock, _ = await agent_env()
    assert not (await agent.check_once()).fence  # another Node's mark: ignored
    kube.stores["nodes"].objects[("", "w1")]["metadata"]["annotations"][core.FENCE_REQUESTED] = (
        node["metadata"]["uid"]
    )
    d = await agent.check_once()
    assert d.fence and d.why is Why.MARKED
    clock.advance(5)
    assert (await agent.check_once()).why is Why.FENCED
    assert [x["why"] for x in fenced_lines(tmp_path)] == ["marked"]  # fired once


async def test_isolated_agent_fences_after_the_timeout_unless_a_peer_vouches(
    kube: FakeKube,
    agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]],
    tmp_path: Path,
) -> None:
    node = kube.add_node("w1")
    uid = node["metadata"]["uid"]
    agent, clock, peers = await agent_env()
    await agent.check_once()
    cut_api(kube)
    # A peer that reaches the API server and read this very Node vouches: no fence, ever.
    peers.reply = {"apiReachable": True, "node": "w1", "uid": uid, "fenceRequested": ""}
    for _ in range(20):
        clock.advance(5)
        assert (await agent.check_once()).why is Why.VOUCHED
    assert {a for a, _ in peers.asked} == {"127.0.0.1:1", "127.0.0.1:2"}
    # Garbage and peers that cannot reach the API server either: the clock runs.
    peers.reply = {"apiReachable": False, "node": "w1", "uid": "", "fenceRequested": ""}
    whys = []
    for _ in range(8):
        clock.advance(5)
        whys.append((await agent.check_once()).why)
        peers.reply = "<html>garbage</html>"
    assert whys[:5] == [Why.COUNTING] * 5
    assert Why.ISOLATED in whys
    assert [x["why"] for x in fenced_lines(tmp_path)] == ["isolation-timeout"]


async def test_flapping_api_never_fences(
    kube: FakeKube,
    agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]],
    tmp_path: Path,
) -> None:
    kube.add_node("w1")
    agent, clock, _ = await agent_env()
    for _ in range(10):
        heal_api(kube)
        clock.advance(5)
        assert (await agent.check_once()).why is Why.HEALTHY
        cut_api(kube)
        for _ in range(5):  # 25 s < 30 s
            clock.advance(5)
            assert not (await agent.check_once()).fence
    assert fenced_lines(tmp_path) == []


async def test_peer_endpoint_answers_from_a_live_read_only_while_reachable(
    kube: FakeKube, agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]]
) -> None:
    kube.add_node("w1")
    other = kube.add_node("w2", annotations={core.FENCE_REQUESTED: "x"})
    agent, clock, _ = await agent_env()
    assert (await agent.answer("w2"))["apiReachable"] is False  # no check yet
    await agent.check_once()
    got = await agent.answer("w2")
    assert got == {
        "apiReachable": True,
        "node": "w2",
        "uid": other["metadata"]["uid"],
        "fenceRequested": "x",
    }
    assert (await agent.answer("gone"))["uid"] == ""
    cut_api(kube)
    clock.advance(5)
    await agent.check_once()
    assert (await agent.answer("w2"))["apiReachable"] is False
    status = agent.status()
    assert status["mode"] == "test" and status["apiReachable"] is False
    assert status["params"]["safeTimeSeconds"] == core.safe_time(agent.params_published())


async def test_watchdog_fed_while_healthy_not_after_the_fence(
    kube: FakeKube,
    agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]],
    tmp_path: Path,
) -> None:
    node = kube.add_node("w1")
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    dog = reboot.Watchdog(dev, 6.0)
    dog.arm()
    agent, clock, _ = await agent_env(action=dog)
    task = asyncio.create_task(agent.run())
    try:
        with anyio.fail_after(5):
            while agent.checks < 3:
                clock.advance(1)
                await anyio.sleep(0.02)
        fed = dog.feeds
        assert fed >= 3
        kube.stores["nodes"].objects[("", "w1")]["metadata"].setdefault("annotations", {})[
            core.FENCE_REQUESTED
        ] = node["metadata"]["uid"]
        with anyio.fail_after(5):
            while agent.state.fenced is None:
                clock.advance(1)
                await anyio.sleep(0.02)
        fed = dog.feeds
        for _ in range(30):
            clock.advance(1)
            await anyio.sleep(0.005)
        assert dog.feeds == fed
        assert b"V" not in dev.read_bytes()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_hung_check_loop_stops_the_feeding(
    kube: FakeKube,
    agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]],
    tmp_path: Path,
) -> None:
    kube.add_node("w1")
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    dog = reboot.Watchdog(dev, 6.0)
    dog.arm()
    agent, clock, _ = await agent_env(action=dog)
    feeder = asyncio.create_task(agent._feeder())  # the loop never runs: a hung loop
    try:
        for _ in range(40):
            clock.advance(0.5)
            await anyio.sleep(0.005)
        # interval 5 + slack 3 + 1 s of grace, then nothing
        assert 1 <= dog.feeds <= 1 + 9 / 2 + 1
        assert not agent.liveness()[0]
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


async def test_a_check_stuck_in_an_await_starves_the_test_dog_and_says_where(
    kube: FakeKube,
    agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A check whose API call never returns (the bounds taken away: a stand-in for any await
    without a timeout) stops the feeding of the harness's emulated dog, so the harness powers
    the node off within interval + slack + 1 s + the watchdog timeout, as a kernel dog would;
    the stall is logged once, with the await chain it is stuck in."""
    kube.add_node("w1")
    agent, clock, _ = await agent_env()
    action = reboot.FileAction(tmp_path / "fenced", "w1", 20.0, monotonic=clock.monotonic)
    agent.action = action
    task = asyncio.create_task(agent.run())
    try:
        with anyio.fail_after(5):
            while agent.checks < 2:
                clock.advance(1)
                await anyio.sleep(0.02)
        assert action.armed and action.feeds >= 2
        never = anyio.Event()

        async def hangs() -> JSON:
            await never.wait()
            return {}

        agent._api_part = hangs  # type: ignore[method-assign]
        agent.settings = replace(agent.settings, api_timeout=10**9)
        with caplog.at_level(logging.ERROR, logger="noderecover.agent"):
            for _ in range(60):
                clock.advance(1)
                await anyio.sleep(0.005)
        stamp = reboot.read_feed(reboot.feed_file(tmp_path / "fenced"))
        assert stamp is not None and stamp.armed
        # fed until the loop was stale (interval 5 + slack 3 + 1 s), then never again
        assert clock.monotonic() - stamp.fed >= 60 - (5 + 3 + 1) - 5
        due = power_off_due(tmp_path / "fenced", clock.monotonic())
        assert due is not None and due.late is not None
        assert agent.stalls == 1 and agent.state.fenced is None
        (stall,) = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
        assert "hangs" in stall and "check_once" in stall, stall
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_peers_are_read_from_the_agents_leases(
    kube: FakeKube, agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]]
) -> None:
    kube.add_node("w1")
    for node, address in (("w2", "10.0.0.2:8081"), ("w3", "10.0.0.3:8081")):
        kube.stores["leases"].objects[(NS, f"noderecover-agent-{node}")] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": f"noderecover-agent-{node}",
                "namespace": NS,
                "uid": f"u-{node}",
                "resourceVersion": "1",
                "labels": {core.AGENT_LABEL: core.AGENT_LABEL_VALUE},
                "annotations": {core.ANN_ADDRESS: address},
            },
            "spec": {"holderIdentity": node},
        }
    agent, clock, peers = await agent_env()
    await agent.check_once()
    assert agent.peers == ["10.0.0.2:8081", "10.0.0.3:8081", "127.0.0.1:1", "127.0.0.1:2"]
    # while the API server is unreachable the addresses are kept and asked
    cut_api(kube)
    clock.advance(5)
    await agent.check_once()
    assert {a for a, _ in peers.asked} == set(agent.peers)


async def test_an_agent_restarted_while_cut_off_never_opens_the_watchdog(
    kube: FakeKube,
    agent_env: Callable[..., Awaitable[tuple[Agent, FakeClock, Peers]]],
    tmp_path: Path,
) -> None:
    """A crashed agent's dog stays armed (no magic close); its successor, started while the
    API server cannot be reached, must not feed it (the node must reboot within the
    watchdog timeout, as the controller's safe time assumes). Nor is a node that boots into
    a partition rebooted again and again: the device is not even opened before the first
    contact. Then the first check that reaches the API server arms it, and it is fed."""
    kube.add_node("w1")
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    dog = reboot.Watchdog(dev, 6.0)
    dog.check()
    cut_api(kube)
    agent, clock, _ = await agent_env(action=dog)
    task = asyncio.create_task(agent.run())
    try:
        with anyio.fail_after(10):
            while agent.checks < 8:
                clock.advance(1)
                await anyio.sleep(0.02)
        assert not dog.armed and dog.feeds == 0 and dev.read_bytes() == b""
        assert agent.state.fenced is None and agent.decision is not None
        assert agent.decision.why is Why.NOT_ARMED
        heal_api(kube)
        with anyio.fail_after(10):
            while not dog.armed or dog.feeds < 3:
                clock.advance(1)
                await anyio.sleep(0.02)
        assert agent.decision.why is Why.HEALTHY
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
