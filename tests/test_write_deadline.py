"""No write of the leader can reach the server after another replica could hold the Lease.

The elector's `write_deadline()` (last accepted renewal's send time + lease duration - margin)
bounds every write of the KubeClient the controller and the Event recorder use: a write's
timeout is min(its own, what is left), and with nothing left it is not sent. All on a fake
clock; the fake API server records what reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from noderecover.base.clock import FakeClock
from noderecover.controller.executor import Executor
from noderecover.controller.writes import Writer
from noderecover.core.machine import Action, Kind, Outcome, Phase, Record
from noderecover.kube.client import MERGE_PATCH, ApiError, KubeClient, Timeouts, WriteRefused
from noderecover.kube.election import WRITE_MARGIN, ElectionConfig, LeaderElector
from noderecover.kube.events import EventRecorder
from tests.builders import T0
from tests.conftest import make_config
from tests.fakeapi import FakeKube

NS, NAME = "kube-system", "noderecover"
LEASE_RE = re.escape(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}") + "$"
NODE_RE = "^/api/v1/nodes/w1$"
# The Lease passes 10.5 s after our last accepted renewal; we step down at 10 s.
CONFIG = ElectionConfig(NAME, NS, lease_duration=10.5, renew_deadline=10.0, retry_period=2.0)
PATCH = {"metadata": {"labels": {"touched": "yes"}}}


class Spy:
    """Wraps an ApiClient's call_api and records the timeout each request was sent with."""

    def __init__(self, api: ApiClient) -> None:
        self.totals: list[float | None] = []
        self._inner = api.call_api
        api.call_api = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kw: Any) -> Any:
        self.totals.append(kw["_request_timeout"].total)
        return await self._inner(*args, **kw)


def guarded(
    kube: FakeKube, clock: FakeClock, deadline: Callable[[], float | None], request: float = 2.0
) -> tuple[KubeClient, Spy]:
    api = ApiClient(Configuration(host=kube.base_url))
    spy = Spy(api)
    client = KubeClient(
        api,
        Timeouts(request=request, connect=2.0, stream_read=5.0),
        clock=clock,
        write_deadline=deadline,
    )
    return client, spy


@dataclass
class Leading:
    kube: FakeKube
    clock: FakeClock
    elector: LeaderElector
    acked: float  # fake monotonic time of the accepted write that made us leader


@pytest.fixture
async def leading(kube: FakeKube) -> AsyncIterator[Leading]:
    """An elector that has just acquired the Lease on a fake clock; renewals then fail (500),
    so its Lease can pass 10.5 fake seconds after the acquisition."""
    clock = FakeClock(start_wall=T0)
    lease_client = KubeClient(ApiClient(Configuration(host=kube.base_url)))
    elector = LeaderElector(lease_client, clock, CONFIG, "me", random.Random(1))
    kube.add_node("w1")

    async def work() -> None:
        await anyio.sleep_forever()

    task = asyncio.create_task(elector.run(work))
    with anyio.fail_after(5):
        while not elector.is_leader:
            await anyio.sleep(0.005)
    kube.fail_next("PUT", LEASE_RE, 500, count=10_000)
    yield Leading(kube, clock, elector, clock.monotonic())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await lease_client.close()


async def settle(clock: FakeClock, seconds: float) -> None:
    """Move the fake clock and let the elector's (failing) renewal attempts run."""
    clock.advance(seconds)
    await anyio.sleep(0.05)


def node_writes(kube: FakeKube) -> int:
    return kube.count("PATCH", NODE_RE)


async def test_the_write_deadline_is_the_lease_expiry_less_the_margin(leading: Leading) -> None:
    e = leading.elector
    assert e.write_deadline() == leading.acked + CONFIG.lease_duration - WRITE_MARGIN
    await settle(leading.clock, 10.0)  # no renewal accepted: stepped down
    assert not e.is_leader
    assert e.write_deadline() == float("-inf")


async def test_a_write_with_little_time_left_gets_only_that_time(leading: Leading) -> None:
    """0.3 s left before the Lease could pass: the write is sent with a timeout <= 0.3 s."""
    client, spy = guarded(leading.kube, leading.clock, leading.elector.write_deadline)
    try:
        await settle(leading.clock, 9.2)  # deadline: acked + 10.5 - 1 = acked + 9.5
        assert leading.elector.is_leader
        await client.request("PATCH", "/api/v1/nodes/w1", body=PATCH, content_type=MERGE_PATCH)
        assert len(spy.totals) == 1
        total = spy.totals[0]
        assert total is not None and 0.29 < total <= 0.3 + 1e-9
        # A read is never bounded by the write deadline.
        await client.request("GET", "/api/v1/nodes/w1")
        assert spy.totals[-1] == 2.0
    finally:
        await client.close()


async def test_a_write_with_no_time_left_is_not_sent(leading: Leading) -> None:
    """Still leading (it steps down only at 10 s), but past the write deadline (9.5 s): the
    write is refused before it leaves; the server sees nothing. Reads still go out."""
    client, spy = guarded(leading.kube, leading.clock, leading.elector.write_deadline)
    try:
        await settle(leading.clock, 9.6)
        assert leading.elector.is_leader
        before = node_writes(leading.kube)
        with pytest.raises(WriteRefused) as refused:
            await client.request("PATCH", "/api/v1/nodes/w1", body=PATCH, content_type=MERGE_PATCH)
        assert isinstance(refused.value, ApiError) and refused.value.code == 0
        assert node_writes(leading.kube) == before and spy.totals == []
        await client.request("GET", "/api/v1/nodes/w1")
        assert len(spy.totals) == 1
    finally:
        await client.close()


async def test_a_hung_write_is_cut_at_the_deadline(leading: Leading) -> None:
    """A write that hangs on the server is abandoned when the fake clock reaches the write
    deadline, not after its own (30 s) timeout."""
    client, _spy = guarded(
        leading.kube, leading.clock, leading.elector.write_deadline, request=30.0
    )
    leading.kube.hang("PATCH", NODE_RE)
    outcome: list[BaseException | None] = []

    async def write() -> None:
        try:
            await client.request("PATCH", "/api/v1/nodes/w1", body=PATCH, content_type=MERGE_PATCH)
            outcome.append(None)
        except ApiError as exc:
            outcome.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            with anyio.fail_after(5):
                while leading.kube.hanging == 0:
                    await anyio.sleep(0.005)
            await settle(leading.clock, 9.4)
            assert outcome == []  # 0.1 s left: still waiting
            leading.clock.advance(0.1)
            with anyio.fail_after(2):  # real seconds: the fake deadline cut it
                while not outcome:
                    await anyio.sleep(0.005)
        err = outcome[0]
        assert isinstance(err, ApiError) and err.reason == "Timeout"
    finally:
        leading.kube.release_hangs()
        await client.close()


async def test_no_deadline_means_no_bound(kube: FakeKube) -> None:
    """Without leader election (`write_deadline` absent or None) writes keep their timeout."""
    kube.add_node("w1")
    clock = FakeClock()
    client, spy = guarded(kube, clock, lambda: None)
    try:
        await client.request("PATCH", "/api/v1/nodes/w1", body=PATCH, content_type=MERGE_PATCH)
        assert spy.totals == [2.0]
    finally:
        await client.close()


async def test_a_refused_write_is_a_failure_never_a_success(kube: FakeKube) -> None:
    """The callers see an ApiError: a cordon is FAILED (retried later, nothing written) and an
    Event is dropped - neither raises out of the leader's loop or the recorder."""
    kube.add_node("w1", "Unknown")
    uid = kube.get_node("w1")["metadata"]["uid"]  # type: ignore[index]
    clock = FakeClock(start_wall=T0)
    client, _spy = guarded(kube, clock, lambda: float("-inf"))
    try:
        cfg = make_config()
        rec = Record(uid, Phase.SUSPECT, T0, T0 - 600)
        done = Record(uid, Phase.CORDONED, T0, T0 - 600, cordoned=True)
        action = Action(Kind.CORDON, "w1", uid, None, done, silent=True)
        executor = Executor(client, clock, cfg, lambda: True)
        result = await executor.perform(action, rec)
        assert result.outcome is Outcome.FAILED
        assert kube.count("PATCH", NODE_RE) == 0
        assert kube.get_node("w1")["spec"].get("unschedulable") is not True  # type: ignore[index]

        recorder = EventRecorder(Writer(client), clock, "me", rng=random.Random(1))
        recorder.record("w1", uid, "NodeRecoverCordoned", "cordoned", "Normal")
        async with anyio.create_task_group() as tg:
            tg.start_soon(recorder.run)
            with anyio.fail_after(5):
                while recorder.dropped == 0:
                    clock.advance(1.0)  # the recorder's retry backoff
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
        assert kube.count("POST", "/events$") == 0
    finally:
        await client.close()
