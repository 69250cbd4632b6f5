"""Node Events: create, aggregate, rate-limit, overflow, failures (fake API, fake clock)."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from noderecover.base.clock import FakeClock
from noderecover.base.metrics import EVENTS_DROPPED
from noderecover.controller.writes import Writer
from noderecover.kube.client import KubeClient
from noderecover.kube.events import EventRecorder
from tests.fakeapi import MERGE_PATCH, FakeKube

EVENTS = r"^/api/v1/namespaces/default/events$"
EVENT = r"^/api/v1/namespaces/default/events/[^/]+$"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@contextlib.asynccontextmanager
async def recorder(**kw: Any) -> AsyncIterator[tuple[FakeKube, FakeClock, EventRecorder]]:
    async with FakeKube() as kube:
        client = KubeClient(ApiClient(Configuration(host=kube.base_url)))
        clock = FakeClock()
        rec = EventRecorder(Writer(client), clock, "noderecover-abc12", rng=random.Random(3), **kw)
        try:
            yield kube, clock, rec
        finally:
            await client.close()


async def until(cond: Callable[[], bool], clock: FakeClock | None = None) -> None:
    """Let the loop run (advancing the fake clock 0.5 s a round, if given) until `cond()`."""
    with anyio.fail_after(5):
        while not cond():
            if clock is not None:
                clock.advance(0.5)
            await anyio.sleep(0.001)


async def quiet(kube: FakeKube, rounds: int = 30) -> None:
    """Give the writer time to do anything it (wrongly) would."""
    for _ in range(rounds):
        await anyio.sleep(0.001)


async def test_create_then_aggregate() -> None:
    async with recorder() as (kube, clock, rec), anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        rec.record("node-1", "uid-1", "NodeRecoverCordoned", "cordoned: NotReady for 60s")
        await until(lambda: kube.count("POST", EVENTS) == 1)
        [event] = kube.events
        assert event["metadata"]["name"].startswith("node-1.")
        assert event["involvedObject"] == {
            "apiVersion": "v1",
            "kind": "Node",
            "name": "node-1",
            "uid": "uid-1",
        }
        assert event["reason"] == "NodeRecoverCordoned" and event["type"] == "Normal"
        assert event["action"] == "NodeRecoverCordoned"
        assert event["source"] == {"component": "noderecover"}
        assert event["reportingComponent"] == "noderecover"
        assert event["reportingInstance"] == "noderecover-abc12"
        assert event["count"] == 1 and STAMP.match(event["firstTimestamp"])
        assert event["firstTimestamp"] == event["lastTimestamp"]

        clock.advance(5)
        rec.record("node-1", "uid-1", "NodeRecoverCordoned", "cordoned: NotReady for 60s")
        await until(lambda: kube.count("PATCH", EVENT) == 1)
        [patch] = kube.requests_matching("PATCH", EVENT)
        assert patch.content_type == MERGE_PATCH
        assert set(patch.body) == {"count", "lastTimestamp"} and patch.body["count"] == 2
        [event] = kube.events
        assert event["count"] == 2 and event["lastTimestamp"] > event["firstTimestamp"]
        assert kube.count("POST", EVENTS) == 1

        # Another message, or another node, is another Event.
        rec.record("node-1", "uid-1", "NodeRecoverCordoned", "cordoned: NotReady for 90s")
        rec.record("node-2", "uid-2", "NodeRecoverCordoned", "cordoned: NotReady for 60s")
        await until(lambda: kube.count("POST", EVENTS) == 3)
        tg.cancel_scope.cancel()


async def test_patches_are_rate_limited_and_counts_coalesced() -> None:
    async with recorder() as (kube, clock, rec), anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        args = ("node-1", "uid-1", "NodeRecoverEvicting", "evicting 3 pods", "Warning")
        rec.record(*args)
        await until(lambda: kube.count("POST", EVENTS) == 1)
        rec.record(*args)
        await until(lambda: kube.count("PATCH", EVENT) == 1)  # first repeat: at once
        patched_at = clock.monotonic()
        for _ in range(3):  # three more within the next 30 s
            clock.advance(5)
            rec.record(*args)
        await quiet(kube)
        assert kube.count("PATCH", EVENT) == 1  # held back, counted in memory
        clock.advance(patched_at + 29.9 - clock.monotonic())
        await quiet(kube)
        assert kube.count("PATCH", EVENT) == 1
        clock.advance(0.2)  # 30 s after the last PATCH: the coalesced count goes out
        await until(lambda: kube.count("PATCH", EVENT) == 2)
        assert kube.requests_matching("PATCH", EVENT)[-1].body["count"] == 5
        [event] = kube.events
        assert event["count"] == 5 and event["type"] == "Warning"
        clock.advance(60)
        await quiet(kube)
        assert kube.count("PATCH", EVENT) == 2  # nothing pending, nothing written
        tg.cancel_scope.cancel()


async def test_repeat_after_the_aggregation_window_is_a_new_event() -> None:
    async with recorder() as (kube, clock, rec), anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        rec.record("node-1", "uid-1", "NodeRecoverDeleted", "deleted")
        await until(lambda: kube.count("POST", EVENTS) == 1)
        clock.advance(601)
        rec.record("node-1", "uid-1", "NodeRecoverDeleted", "deleted")
        await until(lambda: kube.count("POST", EVENTS) == 2)
        assert kube.count("PATCH", EVENT) == 0
        tg.cancel_scope.cancel()


async def test_queue_overflow_drops_the_oldest_and_never_blocks() -> None:
    async with recorder(queue_size=3) as (kube, _clock, rec), anyio.create_task_group() as tg:
        for i in range(5):  # the writer is not running yet
            rec.record(f"node-{i}", f"uid-{i}", "NodeRecoverCordoned", "cordoned")
        assert rec.queued == 3 and rec.dropped == 2
        tg.start_soon(rec.run)
        await until(lambda: kube.count("POST", EVENTS) == 3)
        assert sorted(e["involvedObject"]["name"] for e in kube.events) == [
            "node-2",
            "node-3",
            "node-4",
        ]
        tg.cancel_scope.cancel()


async def test_api_failures_are_retried_a_bounded_number_of_times_then_dropped() -> None:
    async with recorder(attempts=3) as (kube, clock, rec), anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        kube.fail_next("POST", EVENTS, 503, count=100)
        rec.record("node-1", "uid-1", "NodeRecoverCordoned", "cordoned")  # does not raise
        await until(lambda: rec.dropped == 1, clock)
        assert kube.count("POST", EVENTS) == 3 and kube.events == []
        # Not retryable: one attempt only.
        kube._faults.clear()
        kube.fail_next("POST", EVENTS, 403, count=1)
        rec.record("node-2", "uid-2", "NodeRecoverCordoned", "cordoned")
        await until(lambda: rec.dropped == 2, clock)
        assert kube.count("POST", EVENTS) == 4
        # The writer survived both and goes on.
        rec.record("node-3", "uid-3", "NodeRecoverCordoned", "cordoned")
        await until(lambda: len(kube.events) == 1, clock)
        tg.cancel_scope.cancel()


async def test_patch_of_an_expired_event_creates_a_new_one() -> None:
    async with recorder() as (kube, clock, rec), anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        rec.record("node-1", "uid-1", "NodeRecoverFenced", "fenced")
        await until(lambda: kube.count("POST", EVENTS) == 1)
        kube.stores["events"].objects.clear()  # the server's TTL removed it
        clock.advance(1)
        rec.record("node-1", "uid-1", "NodeRecoverFenced", "fenced")
        await until(lambda: kube.count("POST", EVENTS) == 2)
        assert kube.count("PATCH", EVENT) == 1
        [event] = kube.events
        assert event["involvedObject"]["uid"] == "uid-1" and event["count"] == 1
        tg.cancel_scope.cancel()


async def test_remembered_keys_are_bounded() -> None:
    async with recorder(max_keys=2) as (kube, _clock, rec), anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        for node in ("a", "b", "c"):
            rec.record(node, node, "NodeRecoverCordoned", "cordoned")
        await until(lambda: kube.count("POST", EVENTS) == 3)
        rec.record("a", "a", "NodeRecoverCordoned", "cordoned")  # "a" was evicted
        await until(lambda: kube.count("POST", EVENTS) == 4)
        rec.record("c", "c", "NodeRecoverCordoned", "cordoned")  # "c" is still known
        await until(lambda: kube.count("PATCH", EVENT) == 1)
        tg.cancel_scope.cancel()


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        EventRecorder(None, FakeClock(), "x", queue_size=0)  # type: ignore[arg-type]


async def test_nothing_is_written_without_the_lease() -> None:
    """A thawed ex-leader must not flush the Events it queued while it led (the frozen-leader
    fault test caught exactly that): each write asks the act-gate first."""
    leading = [True]
    before = EVENTS_DROPPED.labels("not-leader")._value.get()
    async with (
        recorder(may_write=lambda: leading[0]) as (kube, _clock, rec),
        anyio.create_task_group() as tg,
    ):
        rec.record("node-1", "uid-1", "NodeRecoverDraining", "draining")
        leading[0] = False  # lost the Lease before the writer ran
        tg.start_soon(rec.run)
        await until(lambda: EVENTS_DROPPED.labels("not-leader")._value.get() == before + 1)
        await quiet(kube)
        assert kube.count("POST", EVENTS) == 0 and kube.events == []
        leading[0] = True  # leading again: new Events are written
        rec.record("node-1", "uid-1", "NodeRecoverDraining", "draining")
        await until(lambda: kube.count("POST", EVENTS) == 1)
        tg.cancel_scope.cancel()
