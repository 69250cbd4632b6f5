"""The watcher against the fake API server: list+watch, bookmarks, 410, silence, errors."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import pytest

from noderecover.clock import FakeClock, SystemClock
from noderecover.kube import KubeClient
from noderecover.metrics import WATCH_RESTARTS
from noderecover.watching import Watcher
from tests.conftest import client_for
from tests.fakeapi import FakeKube


class View:
    def __init__(self) -> None:
        self.items: dict[str, str] = {}
        self.resyncs = 0

    def event(self, etype: str, key: str, value: str | None) -> None:
        if value is None:
            self.items.pop(key, None)
        else:
            self.items[key] = value

    def resync(self, items: Iterable[tuple[str, str]]) -> None:
        self.items = dict(items)
        self.resyncs += 1


def ready_of(raw: dict[str, Any]) -> str:
    for c in raw["status"]["conditions"]:
        if c["type"] == "Ready":
            return str(c["status"])
    return "?"


async def until(pred: Any, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(0.005)


@pytest.fixture
async def watched(kube: FakeKube) -> AsyncIterator[tuple[Watcher[str], View, KubeClient]]:
    client = client_for(kube, request=1.0, stream_read=0.5)
    view = View()
    w: Watcher[str] = Watcher(
        client,
        SystemClock(),
        "/api/v1/nodes",
        "nodes",
        ready_of,
        view.event,
        view.resync,
        silence=0.5,
        server_timeout=30,
        rng=random.Random(1),
    )
    task = asyncio.create_task(w.run())  # a task group cannot span a fixture's yield
    yield w, view, client
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()


async def test_list_then_watch_with_bookmarks(kube: FakeKube, watched: Any) -> None:
    w, view, _ = watched
    kube.add_node("a")
    await until(lambda: view.items.get("a") == "True")
    kube.set_node_ready("a", "Unknown")
    await until(lambda: view.items.get("a") == "Unknown")
    kube.add_node("b")
    await until(lambda: "b" in view.items)
    kube.remove_node("b")
    await until(lambda: "b" not in view.items)
    watches = kube.requests_matching("GET", "^/api/v1/nodes$")
    watch = next(r for r in watches if r.query.get("watch") == "true")
    assert watch.query["allowWatchBookmarks"] == "true" and "timeoutSeconds" in watch.query
    assert watch.query["resourceVersion"] != ""
    rv = w.resource_version
    kube.add_pod("p", "default", "a")  # moves the global resourceVersion, not the nodes
    await until(lambda: w.resource_version != rv)  # a bookmark carried it
    assert view.resyncs == 1 and not w.stale()


@pytest.mark.parametrize("mode", ["event", "http"])
async def test_expired_resource_version_relists_and_forgets(
    kube: FakeKube, watched: Any, mode: str
) -> None:
    _w, view, _ = watched
    kube.expired_mode = mode
    kube.add_node("a")
    kube.add_node("gone")
    await until(lambda: {"a", "gone"} <= set(view.items))
    kube.silence_watches(True)  # the DELETED event is lost ...
    kube.remove_node("gone")
    kube.compact()  # ... and the history with it
    kube.drop_watches()
    kube.silence_watches(False)
    before = WATCH_RESTARTS.labels("nodes", "expired")._value.get()
    await until(lambda: view.resyncs >= 2 and "gone" not in view.items)
    assert "a" in view.items
    assert WATCH_RESTARTS.labels("nodes", "expired")._value.get() > before


async def test_silent_stream_is_abandoned_and_reopened(kube: FakeKube, watched: Any) -> None:
    _w, view, _ = watched
    kube.add_node("a")
    await until(lambda: "a" in view.items)
    silent_before = WATCH_RESTARTS.labels("nodes", "silent")._value.get()
    opened = len([r for r in kube.requests if r.query.get("watch") == "true"])
    kube.silence_watches(True)
    await until(
        lambda: len([r for r in kube.requests if r.query.get("watch") == "true"]) > opened,
        timeout=5,
    )
    kube.silence_watches(False)
    kube.set_node_ready("a", "False")
    await until(lambda: view.items.get("a") == "False")
    assert WATCH_RESTARTS.labels("nodes", "silent")._value.get() > silent_before


async def test_errors_are_retried_with_backoff(kube: FakeKube) -> None:
    kube.add_node("a")
    kube.fail_next("GET", "^/api/v1/nodes$", 503, count=3)
    kube.fail_next("GET", "^/api/v1/nodes$", 429, count=1, retry_after=1)
    client = client_for(kube)
    view = View()
    clock = FakeClock()
    w: Watcher[str] = Watcher(
        client,
        clock,
        "/api/v1/nodes",
        "nodes",
        ready_of,
        view.event,
        view.resync,
        rng=random.Random(1),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        assert w.stale() and not w.synced
        with anyio.fail_after(5):
            while not w.synced:  # backoff sleeps run on the fake clock
                clock.advance(0.5)
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    assert clock.monotonic() - 1000.0 >= 1.0  # Retry-After: 1 was honoured
    await client.close()
    lists = [r for r in kube.requests_matching("GET", "^/api/v1/nodes$") if "watch" not in r.query]
    assert len(lists) == 5 and view.items == {"a": "True"}


async def test_paginated_list(kube: FakeKube, watched: Any) -> None:
    from noderecover import watching

    for i in range(12):
        kube.add_node(f"n{i}")
    old = watching.PAGE_SIZE
    watching.PAGE_SIZE = 5
    try:
        w, view, _ = watched
        await w.relist()
    finally:
        watching.PAGE_SIZE = old
    assert len(view.items) == 12
    assert any("continue" in r.query for r in kube.requests)


async def test_relist_on_demand(kube: FakeKube, watched: Any) -> None:
    w, view, _ = watched
    kube.add_node("a")
    await until(lambda: "a" in view.items)
    n = w.lists
    await w.relist()
    assert w.lists == n + 1 and view.resyncs == n + 1


def test_garbled_event_line_is_an_error_not_a_crash() -> None:
    from noderecover.kube import ApiError

    view = View()
    no_client: Any = None  # _handle never calls the API
    w: Watcher[str] = Watcher(
        no_client, FakeClock(), "/api/v1/nodes", "nodes", ready_of, view.event, view.resync
    )
    with pytest.raises(ApiError) as exc:
        w._handle(b'{"type": "ADDED", "object": {"metad')
    assert exc.value.code == 0 and exc.value.reason == "BadEvent"
    w._handle(b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}')
    assert w.resource_version == "42"
