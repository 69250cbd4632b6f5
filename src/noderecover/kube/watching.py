"""List + watch of one resource collection, robust to everything a watch does in real life.

Modelled on client-go's reflector and kopf's `_cogs/clients/watching.py`.

Invariants:
- The first LIST (paginated by kube.paging: a 410 on a continue token starts it over)
  completes before `synced` is set; a WATCH always starts from the
  resourceVersion of the last LIST, event or BOOKMARK seen (treated as an opaque string).
- 410 Gone/Expired, as an HTTP status or an ERROR event, means events were lost: LIST again
  and hand the full set to `on_resync`, which forgets objects missing from it.
- A stream silent for longer than `silence` is abandoned and reopened at once, without
  backoff (a watch can hang without the TCP connection dropping, and a server without watch
  bookmarks sends nothing on a quiet cluster); the server-side `timeoutSeconds` is jittered
  so that replicas do not reconnect in lockstep.
- Progress is only what proves the view current: a completed LIST, an event or BOOKMARK
  that was applied, or a stream the server ended cleanly once the `timeoutSeconds` it was
  asked for had passed (it held the stream open that long and delivered every event of
  that time: the view was current when it ended; a stream ended sooner proves nothing).
  Opening a stream is not progress (a server may accept watches and never
  deliver anything), so `stale()` turns True once nothing was applied for `silence`. Before
  each WATCH, a view without progress for `silence` is LISTed again: a quiet server without
  bookmarks costs one LIST per `silence` (stale only while that LIST runs).
- Failures are retried forever with bounded, jittered backoff (Retry-After honoured on 429);
  `last_progress` tells the controller how fresh its view is.

Hostile streams: nothing a server (or a proxy) sends can crash the watcher or put a wrong
entry in the view. Every bad line is counted in noderecover_watch_bad_events_total:
- a line that is not JSON (`invalid-json`), JSON that is not an object (`not-an-event`), a
  stream closed mid-event (`truncated`) or a line over the client's limit (`line-too-long`):
  the stream is garbled, so it is dropped and reopened from the last good resourceVersion,
  with backoff (restart reason `bad-event`);
- an ERROR event other than 410, or one whose object is not a Status with an integer code
  (also counted as `bad-error`): the server ended this watch and may end the next one from
  the same resourceVersion the same way (seen on a real API server after an etcd compaction:
  500 "etcd event received with PrevKv=nil", forever), so LIST again after backoff, like
  client-go's reflector (restart reason `error-event`);
- an unknown or missing `type` (`unknown-type`) or a BOOKMARK without a resourceVersion
  (`bookmark-without-rv`): skipped, the stream goes on;
- an ADDED/MODIFIED/DELETED (or LIST item) whose object is not an object or has no name
  cannot be keyed: skipped and counted in noderecover_malformed_objects_total
  (`not-an-object`, `missing-name`).
Skipped lines neither advance the resourceVersion nor count as progress.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, NoReturn, TypeVar

import anyio
import orjson

from noderecover.base.backoff import Backoff
from noderecover.base.clock import Clock
from noderecover.base.gcpause import gc_paused
from noderecover.base.metrics import (
    MALFORMED_OBJECTS,
    WATCH_BAD_EVENTS,
    WATCH_EVENTS,
    WATCH_RESTARTS,
)
from noderecover.core.nodes import MISSING_NAME, NOT_AN_OBJECT
from noderecover.kube.client import LINE_TOO_LONG, TRUNCATED, ApiError, Gone, KubeClient
from noderecover.kube.paging import BadList, list_pages

T = TypeVar("T")
log = logging.getLogger("noderecover.kube.watching")

# kubectl's page size. Smaller pages parse faster in-process but cost more round trips on a real
# API server: 5,000 nodes synced in 0.95 s with 500, 1.54 s with 100 (docs/benchmarks.md).
PAGE_SIZE = 500


EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


class _Expired(Exception):
    """The resourceVersion we hold is too old: re-list."""


class _Broken(ApiError):
    """The stream cannot be trusted any further: reconnect (with backoff), counted as `restart`."""

    def __init__(self, restart: str, code: int, reason: str, message: str, path: str) -> None:
        super().__init__(code, reason, message, verb="WATCH", path=path)
        self.restart = restart


class Watcher(Generic[T]):
    """Keeps a caller's view of a collection current through `on_event` / `on_resync`.

    `parse` turns one raw object (a dict with a non-empty metadata.name) into what the caller
    keeps, or None to ignore it. `on_event(type, key, value)` gets ADDED/MODIFIED (value not
    None) and DELETED (value None); `on_resync(items)` the full state after every LIST.
    """

    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        path: str,
        resource: str,
        parse: Callable[[dict[str, Any]], T | None],
        on_event: Callable[[str, str, T | None], None],
        on_resync: Callable[[Iterable[tuple[str, T]]], None],
        *,
        silence: float = 90.0,
        server_timeout: float = 300.0,
        rng: random.Random | None = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> None:
        """`query`: parameters of every LIST and WATCH besides the watcher's own (a
        fieldSelector naming one object: a watch of that object alone)."""
        self._kube = kube
        self._query = tuple(query)
        self._clock = clock
        self._path = path
        self.resource = resource
        self._parse = parse
        self._on_event = on_event
        self._on_resync = on_resync
        self._silence = silence
        self._server_timeout = server_timeout
        self._rng = rng or random.Random()
        self._backoff = Backoff(base=0.5, cap=30.0, rng=self._rng)
        self.resource_version = ""
        self.synced = False
        self.last_progress = clock.monotonic()
        self.lists = 0
        # Why the last LIST or WATCH failed, until the next progress (None: it did not).
        self.last_error: str | None = None
        self._relist = anyio.Event()
        self._relisted = anyio.Event()
        self._stream_scope: anyio.CancelScope | None = None
        # The events counter's child per event type: `labels()` costs as much as parsing a
        # small event (a kube-node-lease watch is one event per node every 10 s).
        self._event_counters = {t: WATCH_EVENTS.labels(resource, t) for t in EVENT_TYPES}

    def stale(self) -> bool:
        """True until the first LIST, or when no progress was made for `silence`."""
        return (not self.synced) or (self._clock.monotonic() - self.last_progress > self._silence)

    async def list_once(self) -> None:
        """One LIST delivered to the callbacks, without watching (a read-only preview)."""
        await self._list()

    async def relist(self) -> None:
        """Force a fresh LIST (e.g. on winning leadership) and wait until it was delivered."""
        self._relisted = anyio.Event()
        self._relist.set()
        if self._stream_scope is not None:
            self._stream_scope.cancel()
        await self._relisted.wait()

    def request_relist(self) -> None:
        """Ask for a fresh LIST soon, without waiting for it (e.g. the parse changed)."""
        self._relist.set()
        if self._stream_scope is not None:
            self._stream_scope.cancel()

    async def run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list or self._relist.is_set():
                    # Whoever asked for this LIST (relist()) is answered by the first LIST
                    # that succeeds after the ask: a failed LIST keeps them waiting for the
                    # next one, never forgets them (found by the simulation: a new leader
                    # waited forever after a LIST that failed).
                    asked = self._relisted
                    self._relist = anyio.Event()
                    need_list = True  # until this LIST succeeds
                    await self._list()
                    asked.set()
                    need_list = False
                if self._clock.monotonic() - self.last_progress >= self._silence:
                    # Nothing has proven the view current for `silence`: LIST again.
                    need_list = True
                    continue
                reason = await self._watch()
                WATCH_RESTARTS.labels(self.resource, reason).inc()
                self._backoff.reset()
            except _Expired:
                log.info(
                    "%s watch expired at rv %s; re-listing", self.resource, self.resource_version
                )
                WATCH_RESTARTS.labels(self.resource, "expired").inc()
                need_list = True
            except ApiError as exc:
                if isinstance(exc, _Broken):
                    reason = exc.restart
                elif exc.reason == "Timeout" and self.synced:
                    reason = "silent"
                else:
                    reason = "error"
                WATCH_RESTARTS.labels(self.resource, reason).inc()
                if isinstance(exc, Gone):
                    need_list = True
                    continue
                if reason == "silent":
                    continue  # reopen at once; the backoff is for failures, not quiet
                if reason == "error-event":
                    need_list = True
                delay = self._backoff.next_delay(at_least=exc.retry_after or 0.0)
                self.last_error = str(exc)
                log.warning("%s watch failed (%s); retrying in %.1fs", self.resource, exc, delay)
                await self._clock.sleep(delay)

    async def _list(self) -> None:
        items: list[tuple[str, T]] = []

        def page(raw_items: list[Any], first: bool) -> None:
            if first:
                items.clear()
            for raw in raw_items:
                key = self._key(raw)
                if key is None:
                    continue
                value = self._parse(raw)
                if value is not None:
                    items.append((key, value))

        # An absent or null `items` reads as no items: an empty view acts on nothing. The
        # cyclic GC is paused while the pages are read and parsed and the view is rebuilt
        # from them (base.gcpause: it made a quarter of a 50,000-node sync's CPU, and
        # parsing makes no cycles).
        with gc_paused():
            meta = await list_pages(
                self._kube,
                self._path,
                page,
                page_size=PAGE_SIZE,
                query=self._query,
                null_items=True,
            )
            rv = meta.get("resourceVersion")
            if not isinstance(rv, str) or not rv:
                raise BadList("no metadata.resourceVersion", self._path)
            self.resource_version = rv
            self._on_resync(items)
        self.lists += 1
        self.synced = True
        self.last_progress = self._clock.monotonic()
        self.last_error = None
        log.debug(
            "%s listed: %d objects at rv %s", self.resource, len(items), self.resource_version
        )

    async def _watch(self) -> str:
        """One watch request; returns why it ended normally, raises on errors/expiry."""
        timeout = max(1, int(self._server_timeout * (1.0 + self._rng.random())))
        query = [
            *self._query,
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", self.resource_version),
            ("timeoutSeconds", str(timeout)),
        ]
        with anyio.CancelScope() as scope:
            self._stream_scope = scope
            if self._relist.is_set():  # asked for while we were listing
                scope.cancel()
            asked = self._clock.monotonic()
            try:
                async with self._kube.stream(
                    self._path, query, read_timeout=self._silence
                ) as lines:
                    async for line in lines:
                        self._handle(line)
                ended = self._clock.monotonic()
                if ended - asked >= timeout:
                    # The server held the stream for its whole timeout and ended it cleanly:
                    # every event of that time was delivered (see the module doc).
                    self.last_progress = ended
                    self.last_error = None
                    return "timeout"
                return "closed-early"
            except Gone as exc:
                raise _Expired from exc
            except ApiError as exc:
                if exc.reason in {TRUNCATED, LINE_TOO_LONG}:
                    self._count_bad("truncated" if exc.reason == TRUNCATED else "line-too-long")
                    raise _Broken("bad-event", 0, exc.reason, exc.message, self._path) from exc
                raise
            finally:
                self._stream_scope = None
        return "relist"  # cancelled by relist()

    def _handle(self, line: bytes) -> None:
        """One line of the stream (see the module doc for what is done with bad ones)."""
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            # A torn or garbled stream: drop it and reconnect from the last good version.
            self._count_bad("invalid-json")
            raise _Broken("bad-event", 0, "BadEvent", str(exc), self._path) from exc
        if not isinstance(event, dict):
            self._count_bad("not-an-event")
            raise _Broken("bad-event", 0, "BadEvent", f"not an object: {line[:80]!r}", self._path)
        etype, obj = event.get("type"), event.get("object")
        if not isinstance(etype, str) or etype not in EVENT_TYPES:
            self._count_bad("unknown-type")
            log.warning("%s watch: skipped an event of type %.40r", self.resource, etype)
            return
        self._event_counters[etype].inc()
        if etype == "ERROR":
            self._error_event(obj)
        if etype == "BOOKMARK":
            rv = _resource_version(obj)
            if rv is None:
                self._count_bad("bookmark-without-rv")
                return
            self.resource_version = rv
            self.last_progress = self._clock.monotonic()
            self.last_error = None
            return
        key = self._key(obj)
        if key is None or not isinstance(obj, dict):
            return
        rv = _resource_version(obj)
        if rv is not None:
            self.resource_version = rv
        self.last_progress = self._clock.monotonic()
        self.last_error = None
        if etype == "DELETED":
            self._on_event(etype, key, None)
            return
        value = self._parse(obj)
        if value is not None:
            self._on_event(etype, key, value)

    def _error_event(self, obj: object) -> NoReturn:
        """An ERROR event always ends the stream, and the next attempt re-lists (410 at once,
        anything else after backoff)."""
        code = obj.get("code") if isinstance(obj, dict) else None
        if code == 410 and isinstance(code, int):
            raise _Expired
        if not isinstance(code, int) or isinstance(code, bool):
            self._count_bad("bad-error")
            raise _Broken("error-event", 0, "BadError", f"ERROR event {obj!r:.120}", self._path)
        assert isinstance(obj, dict)
        reason, message = obj.get("reason"), obj.get("message")
        raise _Broken(
            "error-event",
            code,
            reason if isinstance(reason, str) else "",
            message[:200] if isinstance(message, str) else "",
            self._path,
        )

    def _key(self, obj: object) -> str | None:
        """metadata.name, or None (counted, logged) when the object cannot be keyed."""
        if not isinstance(obj, dict):
            reason = NOT_AN_OBJECT
        else:
            meta = obj.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            if isinstance(name, str) and name:
                return name
            reason = MISSING_NAME
        MALFORMED_OBJECTS.labels(self.resource, reason).inc()
        log.warning("%s: skipped an object that cannot be keyed (%s)", self.resource, reason)
        return None

    def _count_bad(self, reason: str) -> None:
        WATCH_BAD_EVENTS.labels(self.resource, reason).inc()


def _resource_version(obj: object) -> str | None:
    """metadata.resourceVersion if it is a non-empty string (it is opaque), else None."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) and rv else None
