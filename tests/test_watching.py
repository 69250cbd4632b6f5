"""The watcher against the fake API server: list+watch, bookmarks, 410, silence, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import orjson
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from noderecover.base.clock import FakeClock, SystemClock
from noderecover.base.metrics import (
    MALFORMED_OBJECTS,
    WATCH_BAD_EVENTS,
    WATCH_EVENTS,
    WATCH_RESTARTS,
)
from noderecover.core.nodes import parse_node
from noderecover.kube.client import ApiError, Gone, KubeClient, Timeouts, api_error
from noderecover.kube.watching import Watcher, _Broken, _Expired
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
    # The first watch must be open before counting: else opening it looks like a reopen.
    await until(lambda: "a" in view.items and kube.watch_count() == 1)
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
    assert WATCH_RESTARTS.labels("nodes", "silent")._value.get() > silent_before, {
        r: count(WATCH_RESTARTS, "nodes", r) for r in ("error", "timeout", "bad-event", "silent")
    }


async def test_an_error_event_repeating_from_the_same_version_is_escaped_by_a_list(
    kube: FakeKube, fake_watched: Any
) -> None:
    """What a real API server answered after an etcd compaction raced the watch: ERROR 500
    ("etcd event received with PrevKv=nil") on every watch from that resourceVersion. Re-
    watching from it would loop forever; the LIST moves the version on."""
    w, view, clock = fake_watched
    lists = w.lists
    prevkv = (
        b'{"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": '
        b'"InternalError", "message": "etcd event received with PrevKv=nil"}}\n'
    )
    assert kube.inject_watch_bytes("nodes", prevkv) == 1
    await reconnects(kube, clock, 1)
    assert w.lists == lists + 1
    kube.set_node_ready("a", "Unknown")  # the watch after the LIST works
    await until(lambda: view.items.get("a") == "Unknown")


async def test_a_silent_stream_is_reopened_without_backoff(kube: FakeKube) -> None:
    """Quiet is not a failure: a server without bookmarks sends nothing on a quiet cluster,
    and sleeping a backoff before reopening would leave the view stale for no reason. The
    backoff sleeps on a fake clock nobody advances: a reopen proves there was none."""
    client = client_for(kube, request=1.0, stream_read=0.2)  # the socket read bound: real
    clock = FakeClock()
    view = View()
    w: Watcher[str] = Watcher(
        client, clock, "/api/v1/nodes", "nodes", health_of, view.event, view.resync, silence=0.2
    )
    task = asyncio.create_task(w.run())
    try:
        kube.add_node("a")
        await until(lambda: view.items.get("a") == "True" and kube.watch_count() == 1)
        before = count(WATCH_RESTARTS, "nodes", "silent")
        opened = len(watches(kube))
        kube.silence_watches(True)
        await until(lambda: len(watches(kube)) >= opened + 3, timeout=5)
        assert clock.sleepers == 0
        assert count(WATCH_RESTARTS, "nodes", "silent") >= before + 3
        kube.silence_watches(False)
        kube.set_node_ready("a", "False")
        await until(lambda: view.items.get("a") == "False")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def test_a_watch_that_never_answers_is_a_failed_attempt(kube: FakeKube) -> None:
    """A server that accepts the watch but never sends the response headers: the bounded
    wait used to end in a bare TimeoutError that killed the watcher task."""
    conf = Configuration(host=kube.base_url)
    client = KubeClient(ApiClient(conf), Timeouts(request=0.1, connect=0.1, stream_read=30))
    view = View()
    clock = FakeClock()
    w: Watcher[str] = Watcher(
        client, clock, "/api/v1/nodes", "nodes", health_of, view.event, view.resync
    )
    task = asyncio.create_task(w.run())
    try:
        kube.add_node("a")
        await until(lambda: view.items.get("a") == "True" and kube.watch_count() == 1)
        kube.hang("GET", "^/api/v1/nodes$")
        kube.drop_watches()
        # Two more attempts after the hung ones: the watcher outlived each timeout.
        await reconnects(kube, clock, 3)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


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
    from noderecover.kube import watching

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


async def test_a_relist_whose_list_fails_is_answered_by_the_next_list(
    kube: FakeKube, watched: Any
) -> None:
    """A new leader waits for relist(): a LIST that fails (503) must be retried as a LIST,
    and the waiter answered by it, never forgotten (found by the simulation: the leader
    waited forever and remediated nothing)."""
    w, view, _ = watched
    kube.add_node("a")
    await until(lambda: "a" in view.items)
    n = w.lists
    kube.fail_next("GET", r"^/api/v1/nodes$", 503)
    with anyio.fail_after(10):
        await w.relist()
    assert w.lists == n + 1


# ------------------------------------------------------------------ hostile streams and lists
def count(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


def health_of(raw: dict[str, Any]) -> str:
    """What the test view keeps: Ready status, or the parser's malformed reason."""
    obs = parse_node(raw, frozenset())
    return obs.malformed or (obs.ready.status if obs.ready else "?")


def offline_watcher(view: View) -> Watcher[str]:
    no_client: Any = None  # _handle and _key never call the API
    w: Watcher[str] = Watcher(
        no_client, FakeClock(), "/api/v1/nodes", "nodes", health_of, view.event, view.resync
    )
    w.resource_version = "10"
    return w


GOOD = {"metadata": {"name": "a", "uid": "u", "resourceVersion": "11"}}
RECONNECT_GARBLED = ("bad-event", _Broken)
RECONNECT_ERROR = ("error-event", _Broken)


@pytest.mark.parametrize(
    ("line", "bad", "malformed", "then"),
    [
        # Garbled framing: the rest of the stream cannot be trusted -> reconnect.
        (b'{"type": "ADDED", "object": {"metad', "invalid-json", None, RECONNECT_GARBLED),
        (b"\xff\xfe not even utf-8", "invalid-json", None, RECONNECT_GARBLED),
        (b"[1, 2, 3]", "not-an-event", None, RECONNECT_GARBLED),
        (b'"MODIFIED"', "not-an-event", None, RECONNECT_GARBLED),
        (b"null", "not-an-event", None, RECONNECT_GARBLED),
        # ERROR events always end the stream; only 410 means re-list.
        (b'{"type": "ERROR", "object": {"kind": "Status", "code": 410}}', None, None, "expired"),
        (
            b'{"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "x"}}',
            None,
            None,
            RECONNECT_ERROR,
        ),
        (
            b'{"type": "ERROR", "object": {"kind": "Status", "code": 403}}',
            None,
            None,
            RECONNECT_ERROR,
        ),
        (b'{"type": "ERROR", "object": {"kind": "Status"}}', "bad-error", None, RECONNECT_ERROR),
        (b'{"type": "ERROR", "object": {"code": "410"}}', "bad-error", None, RECONNECT_ERROR),
        (b'{"type": "ERROR", "object": {"code": true}}', "bad-error", None, RECONNECT_ERROR),
        (b'{"type": "ERROR", "object": "boom"}', "bad-error", None, RECONNECT_ERROR),
        (b'{"type": "ERROR"}', "bad-error", None, RECONNECT_ERROR),
        # Skipped, the stream goes on.
        (b'{"type": "SNAPSHOT", "object": {}}', "unknown-type", None, "skip"),
        (b'{"type": null, "object": {}}', "unknown-type", None, "skip"),
        (b'{"object": {"metadata": {"name": "a"}}}', "unknown-type", None, "skip"),
        (b'{"type": ["ADDED"], "object": {}}', "unknown-type", None, "skip"),
        (b'{"type": "BOOKMARK", "object": {"metadata": {}}}', "bookmark-without-rv", None, "skip"),
        (
            b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": 42}}}',
            "bookmark-without-rv",
            None,
            "skip",
        ),
        (b'{"type": "BOOKMARK", "object": null}', "bookmark-without-rv", None, "skip"),
        (b'{"type": "BOOKMARK"}', "bookmark-without-rv", None, "skip"),
        (b'{"type": "MODIFIED", "object": "a"}', None, "not-an-object", "skip"),
        (b'{"type": "ADDED", "object": [1]}', None, "not-an-object", "skip"),
        (b'{"type": "DELETED"}', None, "not-an-object", "skip"),
        (b'{"type": "MODIFIED", "object": {"spec": {}}}', None, "missing-name", "skip"),
        (b'{"type": "DELETED", "object": {"metadata": {"name": 5}}}', None, "missing-name", "skip"),
        (b'{"type": "MODIFIED", "object": {"metadata": ["a"]}}', None, "missing-name", "skip"),
    ],
)
def test_every_kind_of_bad_line_is_counted_and_never_touches_the_view(
    line: bytes, bad: str | None, malformed: str | None, then: Any
) -> None:
    view = View()
    view.items = {"a": "True"}
    w = offline_watcher(view)
    before_bad = count(WATCH_BAD_EVENTS, "nodes", bad) if bad else 0.0
    before_malformed = count(MALFORMED_OBJECTS, "nodes", malformed) if malformed else 0.0
    progress = w.last_progress
    if then == "skip":
        w._handle(line)
    elif then == "expired":
        with pytest.raises(_Expired):
            w._handle(line)
    else:
        restart, exc_type = then
        with pytest.raises(exc_type) as exc:
            w._handle(line)
        assert exc.value.restart == restart
    assert view.items == {"a": "True"} and view.resyncs == 0
    assert w.resource_version == "10" and w.last_progress == progress
    if bad:
        assert count(WATCH_BAD_EVENTS, "nodes", bad) == before_bad + 1
    if malformed:
        assert count(MALFORMED_OBJECTS, "nodes", malformed) == before_malformed + 1


def test_an_error_event_keeps_its_code_and_reason() -> None:
    w = offline_watcher(View())
    with pytest.raises(_Broken) as exc:
        w._handle(b'{"type":"ERROR","object":{"code":403,"reason":"Forbidden","message":"no"}}')
    assert (exc.value.code, exc.value.reason, exc.value.message) == (403, "Forbidden", "no")


def test_a_malformed_but_named_node_reaches_the_view_marked() -> None:
    """A keyed object goes to the parser: the caller keeps it, marked (the controller never
    acts on it), and the stream position and progress move on."""
    view = View()
    w = offline_watcher(view)
    w._clock.advance(5)  # type: ignore[attr-defined]
    raw = {"metadata": {"name": "a", "resourceVersion": "11"}, "status": {}}
    w._handle(orjson.dumps({"type": "MODIFIED", "object": raw}))
    assert view.items == {"a": "missing-uid"} and w.resource_version == "11"
    assert w.last_progress == w._clock.monotonic()
    w._handle(orjson.dumps({"type": "DELETED", "object": GOOD}))
    assert view.items == {}


class StubLists:
    """Stands in for KubeClient.request: answers LIST pages from a list of bodies."""

    def __init__(self, *bodies: Any) -> None:
        self.bodies = list(bodies)

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.bodies.pop(0)


def node(name: str, ready: str = "True") -> dict[str, Any]:
    from tests.builders import node_json

    return node_json(name, ready=ready)


@pytest.mark.parametrize(
    "body",
    [
        {"items": "nodes", "metadata": {"resourceVersion": "5"}},
        {"items": {"a": 1}, "metadata": {"resourceVersion": "5"}},
        {"items": [], "metadata": ["5"]},
        {"items": []},
        {"items": [], "metadata": {}},
        {"items": [], "metadata": {"resourceVersion": 5}},
        {"items": [], "metadata": {"continue": 7}},
    ],
)
async def test_a_garbled_list_is_an_error_to_retry(body: dict[str, Any]) -> None:
    view = View()
    kube: Any = StubLists(body)
    w: Watcher[str] = Watcher(
        kube, FakeClock(), "/api/v1/nodes", "nodes", health_of, view.event, view.resync
    )
    with pytest.raises(ApiError) as exc:
        await w._list()
    assert exc.value.reason == "BadList"
    assert not w.synced and view.resyncs == 0


async def test_an_expired_continue_token_starts_the_list_over() -> None:
    """A 410 on a continue token restarts the LIST; what the abandoned pages gave is dropped.
    A 410 on a first page is the watcher's own (it lists again from scratch)."""
    pages: list[dict[str, Any] | ApiError] = [
        {"items": [node("a"), node("gone")], "metadata": {"continue": "t1"}},
        api_error(410, "Expired", "continue token expired"),
        {"items": [node("a")], "metadata": {"continue": "t2"}},
        {"items": [node("b", "Unknown")], "metadata": {"resourceVersion": "12"}},
        api_error(410, "Expired", "too old"),
    ]
    queries: list[dict[str, str]] = []

    class Api:
        async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
            queries.append(dict(kw["query"]))
            page = pages.pop(0)
            if isinstance(page, ApiError):
                raise page
            return page

    view = View()
    kube: Any = Api()
    w: Watcher[str] = Watcher(
        kube, FakeClock(), "/api/v1/nodes", "nodes", health_of, view.event, view.resync
    )
    await w._list()
    assert view.items == {"a": "True", "b": "Unknown"} and w.resource_version == "12"
    assert [q.get("continue") for q in queries] == [None, "t1", None, "t2"]
    with pytest.raises(Gone):
        await w._list()


async def test_unkeyable_list_items_are_skipped_and_counted() -> None:
    view = View()
    bad = node("b")
    del bad["metadata"]["name"]
    kube: Any = StubLists(
        {
            "items": [node("a"), "garbage", None, bad, node("c", "Unknown")],
            "metadata": {"resourceVersion": "9"},
        }
    )
    w: Watcher[str] = Watcher(
        kube, FakeClock(), "/api/v1/nodes", "nodes", health_of, view.event, view.resync
    )
    before = count(MALFORMED_OBJECTS, "nodes", "not-an-object")
    await w._list()
    assert view.items == {"a": "True", "c": "Unknown"} and w.resource_version == "9"
    assert count(MALFORMED_OBJECTS, "nodes", "not-an-object") == before + 2


@pytest.fixture
async def fake_watched(kube: FakeKube) -> AsyncIterator[tuple[Watcher[str], View, FakeClock]]:
    """A watcher on a fake clock (backoff sleeps pass only when the test advances it)."""
    client = client_for(kube, request=1.0, stream_read=5.0)
    clock = FakeClock()
    view = View()
    w: Watcher[str] = Watcher(
        client,
        clock,
        "/api/v1/nodes",
        "nodes",
        health_of,
        view.event,
        view.resync,
        silence=3600,
        rng=random.Random(3),
    )
    task = asyncio.create_task(w.run())
    kube.add_node("a")
    await until(lambda: view.items.get("a") == "True" and kube.watch_count() == 1)
    yield w, view, clock
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()


def watches(kube: FakeKube) -> list[Any]:
    return [r for r in kube.requests if r.query.get("watch") == "true"]


async def reconnects(kube: FakeKube, clock: FakeClock, n: int) -> None:
    """Wait until `n` more watch requests were made, moving the fake clock for the backoff."""
    target = len(watches(kube)) + n
    with anyio.fail_after(5):
        while len(watches(kube)) < target:
            clock.advance(0.25)
            await anyio.sleep(0.005)


@pytest.mark.parametrize(
    ("data", "then", "bad", "restart"),
    [
        (b"this is not json\n", "open", "invalid-json", "bad-event"),
        (b'["an", "array"]\n', "open", "not-an-event", "bad-event"),
        (
            b'{"type": "MODIFIED", "object": {"metadata": {"name": "a", "uid"',
            "close",
            "truncated",
            "bad-event",
        ),
        (b'{"type": "MODIFIED", "object": {"metadata": {"name": "a", "uid"', "drop", None, "error"),
        # Over the client's 4 MiB line limit (aiohttp's LineTooLong is not a ClientError).
        (
            b'{"type": "ADDED", "object": "' + b"x" * 5 * 2**20 + b'"}\n',
            "open",
            "line-too-long",
            "bad-event",
        ),
        (
            b'{"type": "ERROR", "object": {"kind": "Status", "code": 500}}\n',
            "open",
            None,
            "error-event",
        ),
        (
            b'{"type": "ERROR", "object": {"kind": "Status", "code": 403}}\n',
            "open",
            None,
            "error-event",
        ),
        (b'{"type": "ERROR", "object": {"kind": "Status"}}\n', "open", "bad-error", "error-event"),
        (b'{"type": "ERROR", "object": "oops"}\n', "open", "bad-error", "error-event"),
    ],
)
async def test_a_broken_stream_reconnects_or_relists(
    kube: FakeKube, fake_watched: Any, data: bytes, then: str, bad: str | None, restart: str
) -> None:
    w, view, clock = fake_watched
    rv = w.resource_version
    before_bad = count(WATCH_BAD_EVENTS, "nodes", bad) if bad else 0.0
    before_restart = count(WATCH_RESTARTS, "nodes", restart)
    lists = w.lists
    assert kube.inject_watch_bytes("nodes", data, then) == 1
    await reconnects(kube, clock, 1)
    if restart == "error-event":
        # The server ended the watch: it may end the next one from this version the same
        # way (an etcd compaction race answers 500 forever), so LIST again, like client-go.
        assert w.lists == lists + 1
    else:
        assert watches(kube)[-1].query["resourceVersion"] == rv  # resumed, nothing skipped
        assert w.lists == lists
    assert view.items == {"a": "True"}
    assert count(WATCH_RESTARTS, "nodes", restart) == before_restart + 1
    if bad:
        assert count(WATCH_BAD_EVENTS, "nodes", bad) == before_bad + 1
    kube.set_node_ready("a", "Unknown")  # and the new stream works
    await until(lambda: view.items.get("a") == "Unknown")


async def test_reconnects_after_garbage_back_off(kube: FakeKube, fake_watched: Any) -> None:
    """Garbage every time: the watcher keeps reconnecting, with growing (jittered) delays."""
    _w, view, clock = fake_watched
    delays = []
    streams = kube.stores["nodes"].watchers
    for _ in range(4):
        old = set(streams)
        assert kube.inject_watch_bytes("nodes", b"garbage\n") == 1
        await until(lambda: clock.sleepers == 1)  # waiting out the backoff
        delays.append(clock._waiters[0][0] - clock.monotonic())
        await reconnects(kube, clock, 1)
        await until(lambda old=old: bool(streams) and not streams & old)  # the new one is up
    assert [0.25 * 2**k <= d <= 0.5 * 2**k for k, d in enumerate(delays)] == [True] * 4
    assert view.items == {"a": "True"}


async def test_skipped_lines_leave_the_stream_open(kube: FakeKube, fake_watched: Any) -> None:
    _w, view, _clock = fake_watched
    opened = len(watches(kube))
    before = count(WATCH_BAD_EVENTS, "nodes", "unknown-type")
    before_rv = count(WATCH_BAD_EVENTS, "nodes", "bookmark-without-rv")
    before_obj = count(MALFORMED_OBJECTS, "nodes", "not-an-object")
    for line in (
        b'{"type": "SNAPSHOT", "object": {}}\n',
        b'{"type": "BOOKMARK", "object": {"metadata": {}}}\n',
        b'{"type": "MODIFIED", "object": "a"}\n',
        b'{"type": "DELETED", "object": null}\n',
    ):
        kube.inject_watch_bytes("nodes", line)
    kube.set_node_ready("a", "False")
    await until(lambda: view.items.get("a") == "False")
    assert len(watches(kube)) == opened and kube.watch_count() == 1
    assert count(WATCH_BAD_EVENTS, "nodes", "unknown-type") == before + 1
    assert count(WATCH_BAD_EVENTS, "nodes", "bookmark-without-rv") == before_rv + 1
    assert count(MALFORMED_OBJECTS, "nodes", "not-an-object") == before_obj + 2
    assert count(WATCH_EVENTS, "nodes", "SNAPSHOT") == 0  # unknown types are not labels


# ----- freshness: only what proves the view current is progress ------------------------------


@pytest.fixture
async def quiet_watched(kube: FakeKube) -> AsyncIterator[tuple[Watcher[str], View, FakeClock]]:
    """A watcher whose `silence` (30 s) passes on a fake clock only; the stream's own read
    bound is real time and never fires here, so a silenced stream stays open."""
    async with fake_clock_watcher(kube, rng=random.Random(5)) as watched:
        yield watched


@contextlib.asynccontextmanager
async def fake_clock_watcher(
    kube: FakeKube, **kw: Any
) -> AsyncIterator[tuple[Watcher[str], View, FakeClock]]:
    """A node watcher on a fake clock (`silence` 30 s, the stream's own read bound an hour of
    real time), running with node "a" listed and one stream open."""
    client = client_for(kube, request=1.0, stream_read=3600)
    clock = FakeClock()
    view = View()
    w: Watcher[str] = Watcher(
        client,
        clock,
        "/api/v1/nodes",
        "nodes",
        health_of,
        view.event,
        view.resync,
        silence=30,
        **kw,
    )
    task = asyncio.create_task(w.run())
    kube.add_node("a")
    await until(lambda: view.items.get("a") == "True" and kube.watch_count() == 1)
    try:
        yield w, view, clock
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def reopen_silently(kube: FakeKube, clock: FakeClock) -> None:
    """Drop the stream; the server accepts the next watch and sends nothing on it."""
    kube.silence_watches(True)
    kube.drop_watches()
    await reconnects(kube, clock, 1)  # the reconnect backoff passes on the fake clock
    await until(lambda: kube.watch_count() == 1)
    await anyio.sleep(0.05)  # the response headers reach the client: the stream is open


async def test_a_watch_that_opens_but_carries_nothing_goes_stale(
    kube: FakeKube, quiet_watched: Any
) -> None:
    w, _view, clock = quiet_watched
    lists = w.lists
    clock.advance(20)
    await reopen_silently(kube, clock)
    assert not w.stale()  # ~20 s since the last LIST
    clock.advance(15)
    # 35 s since the LIST, ~15 s since the stream opened: opening it proved nothing.
    assert w.stale()
    assert w.lists == lists


async def test_events_and_bookmarks_keep_the_view_fresh(kube: FakeKube, quiet_watched: Any) -> None:
    w, view, clock = quiet_watched
    kube.silence_watches(True)
    clock.advance(25)
    kube.set_node_ready("a", "False")  # queued while silenced
    kube.silence_watches(False)
    await until(lambda: view.items.get("a") == "False")  # an event: progress
    clock.advance(25)
    assert not w.stale()  # 50 s since the LIST, 25 s since the event
    # Bookmarks alone (every 50 ms of real time here) keep a quiet view fresh.
    for _ in range(200):
        clock.advance(0.5)
        await anyio.sleep(0.01)
        assert not w.stale()


async def test_a_list_after_silence_proves_the_view_current(
    kube: FakeKube, quiet_watched: Any
) -> None:
    """After `silence` without progress the next attempt LISTs before it watches: a server
    without bookmarks on a quiet cluster costs one LIST per `silence`, not a stale view."""
    w, _view, clock = quiet_watched
    lists = w.lists
    kube.silence_watches(True)
    clock.advance(31)
    assert w.stale()
    kube.drop_watches()
    with anyio.fail_after(5):
        while w.lists == lists:
            clock.advance(0.25)  # the reconnect backoff
            await anyio.sleep(0.005)
    assert not w.stale()


async def test_liveness_reports_a_watch_that_carries_nothing(
    kube: FakeKube, harness_factory: Any
) -> None:
    """What /healthz reports (app._Health over Controller.liveness): a leader whose watch
    streams open but deliver nothing is not alive once `--watch-silence` has passed."""
    from noderecover.entry.app import _Health

    kube.add_node("a")
    h = await harness_factory(watch_silence=30)
    health = _Health(h.controller, None, h.clock, 2.0)
    h.clock.advance(20)
    kube.silence_watches(True)
    kube.drop_watches()
    opened = len(watches(kube))
    await h.until(lambda: len(watches(kube)) > opened, advance=0.25)
    await until(lambda: kube.watch_count() == 1)
    await anyio.sleep(0.05)
    assert health.liveness() == (True, "ok")
    h.clock.advance(15)
    assert health.liveness() == (False, "node watch stale")
    assert not h.controller.fresh()  # and the act-gate holds every destructive step
    kube.silence_watches(False)  # a bookmark arrives
    await until(lambda: health.liveness() == (True, "ok"))


# ----- a stream ended by the server at its timeout proves the view current ---------------


@pytest.fixture
async def short_watched(kube: FakeKube) -> AsyncIterator[tuple[Watcher[str], View, FakeClock]]:
    """A quiet server (no bookmarks, no events) whose watches end after 1 s of real time (the
    timeoutSeconds asked: 1); the watcher's clock is fake, so a test decides whether the
    stream lasted its timeout on that clock."""
    kube.bookmark_interval = 0  # no BOOKMARK ever
    # timeoutSeconds int(1 * (1 + r)) = 1
    async with fake_clock_watcher(kube, server_timeout=1, rng=random.Random(0)) as watched:
        yield watched


async def test_a_stream_the_server_ends_at_its_timeout_is_progress(
    kube: FakeKube, short_watched: Any
) -> None:
    """No event, no BOOKMARK, no LIST: the server held the stream for the timeoutSeconds asked
    and ended it cleanly, so every event of that time was delivered (the pause watch's only
    proof on a quiet ConfigMap: kube-apiserver sends no bookmark in a watch's first minute)."""
    w, _view, clock = short_watched
    assert watches(kube)[-1].query["timeoutSeconds"] == "1"
    lists, opened = w.lists, len(watches(kube))
    before = count(WATCH_RESTARTS, "nodes", "timeout")
    clock.advance(25)  # the stream lasts its timeout on the watcher's clock
    with anyio.fail_after(5):
        while len(watches(kube)) == opened:  # the server ends it after 1 s: reopened at once
            await anyio.sleep(0.01)
    assert w.last_progress == clock.monotonic()
    assert count(WATCH_RESTARTS, "nodes", "timeout") == before + 1
    clock.advance(25)  # 50 s after the LIST, 25 s after the clean end: fresh
    assert not w.stale()
    assert w.lists == lists  # and no LIST was needed
    assert watches(kube)[-1].query["resourceVersion"] == watches(kube)[-2].query["resourceVersion"]


async def test_a_stream_ended_before_its_timeout_proves_nothing(
    kube: FakeKube, short_watched: Any
) -> None:
    """A clean end sooner than the timeout asked (a proxy, a server shutting down) is not
    progress: the view goes stale after `silence` however often streams end so."""
    w, _view, clock = short_watched
    progress = w.last_progress
    opened = len(watches(kube))
    before = count(WATCH_RESTARTS, "nodes", "closed-early")
    with anyio.fail_after(5):
        while len(watches(kube)) < opened + 2:  # two streams end, the fake clock still
            await anyio.sleep(0.01)
    assert count(WATCH_RESTARTS, "nodes", "closed-early") >= before + 2
    assert w.last_progress == progress
    clock.advance(31)
    assert w.stale()


async def test_the_policy_and_crd_watches_ask_for_quiet_timeouts(kube: FakeKube) -> None:
    from noderecover.base.clock import Timeline
    from noderecover.controller.policies import CRD_NAME, PolicySource
    from noderecover.entry.config import Config

    cfg = Config(watch_silence=30.0, watch_timeout=300.0)
    client = client_for(kube, request=1.0, stream_read=3600)
    kube.install_policies()
    clock = FakeClock()
    src = PolicySource(client, clock, Timeline(clock), cfg, lambda: None, rng=random.Random(3))
    async with anyio.create_task_group() as tg:
        tg.start_soon(src.run)
        await until(lambda: src.watcher.synced and kube.watch_count("noderecoverypolicies") == 1)
        await until(lambda: kube.watch_count("customresourcedefinitions") == 1)
        tg.cancel_scope.cancel()
    await client.close()
    asked = {
        r.path: int(r.query["timeoutSeconds"])
        for r in kube.requests
        if r.query.get("watch") == "true"
    }
    assert len(asked) == 2 and all(5 <= t < 10 for t in asked.values()), asked  # the pause's
    assert any(CRD_NAME in r.query.get("fieldSelector", "") for r in kube.requests)


async def test_the_gc_is_paused_while_a_list_is_read_and_delivered() -> None:
    """Issue 24 (50,000 nodes synced in at most 5 s): the cyclic GC is off while the pages
    are parsed and the view is rebuilt from them, and on again after, also when the LIST
    turns out garbled."""
    seen: list[bool] = []

    def parse(raw: dict[str, Any]) -> str:
        seen.append(gc.isenabled())
        return health_of(raw)

    class Resyncing(View):
        def resync(self, items: Iterable[tuple[str, str]]) -> None:
            seen.append(gc.isenabled())
            super().resync(items)

    view = Resyncing()
    kube: Any = StubLists(
        {"items": [node("a")], "metadata": {"continue": "t1"}},
        {"items": [node("b")], "metadata": {"resourceVersion": "7"}},
        {"items": [node("c")], "metadata": {}},  # garbled: no resourceVersion
    )
    w: Watcher[str] = Watcher(
        kube, FakeClock(), "/api/v1/nodes", "nodes", parse, view.event, view.resync
    )
    gc.enable()
    await w._list()
    assert seen == [False, False, False] and gc.isenabled()
    assert view.items == {"a": "True", "b": "True"}
    with pytest.raises(ApiError):
        await w._list()
    assert seen[3:] == [False] and gc.isenabled()
