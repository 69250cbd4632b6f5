"""Kubernetes Events on Nodes, so `kubectl describe node` tells what noderecover did.

Events are best effort. Invariants:
- `record()` never blocks and never raises for API reasons: it appends to a bounded queue;
  when the queue is full the OLDEST entry is dropped and counted.
- One writer task (`run()`) does all API calls, each bounded by a timeout, with a bounded
  number of retries (backoff) for retryable errors; then the Event is dropped and logged.
- The same (node, reason, message) again within `aggregate_window` of its last occurrence
  updates the existing Event (merge PATCH of count and lastTimestamp) instead of creating one,
  and a key is PATCHed at most once per `patch_interval`: occurrences in between are counted
  in memory and written together when the interval has passed.
- At most `max_keys` keys are remembered (least recently used evicted).
- Every write first asks `may_write` (the act-gate: leadership): a replica that lost the
  Lease writes nothing, not even an Event queued while it led (dropped, `not-leader`). Found
  by the frozen-leader fault test: a thawed ex-leader flushed its queue.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal, Protocol

import anyio

from noderecover.base.backoff import Backoff
from noderecover.base.clock import Clock, wait_event
from noderecover.base.metrics import EVENTS_DROPPED
from noderecover.kube.client import JSON, MERGE_PATCH, ApiError, NotFound, NotLeader

Method = Literal["POST", "PUT", "PATCH", "DELETE"]


class EventWriter(Protocol):
    """Where Event writes go: the controller's write path (leadership asked right before
    each write; NotLeader when lost)."""

    async def send(
        self,
        method: Method,
        path: str,
        *,
        body: JSON | list[JSON] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON: ...


log = logging.getLogger("noderecover.kube.events")

# Validation limits of core/v1 Event fields.
_REASON_MAX = 128
_MESSAGE_MAX = 1024
_INSTANCE_MAX = 128
_NAME_MAX = 253
_SUFFIX_LEN = 17  # "." + 16 hex digits
# Events about cluster-scoped objects (Nodes) live in "default" (API validation).
EVENTS_NAMESPACE = "default"
# The reason of the Event that records a removal's intent before its first taint or Node
# DELETE (see core.machine.removal_intent); a new leader counts them (removal budget).
REMOVAL_INTENT = "NodeRecoverRemoving"


def rfc3339(wall: float) -> str:
    """metav1.Time: second precision, UTC, 'Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


@dataclasses.dataclass(frozen=True, slots=True)
class _Occurrence:
    node: str
    uid: str
    reason: str
    message: str
    type: str
    action: str
    wall: float
    mono: float
    kind: str = "Node"  # the involved object: a Node, or a Pod in `namespace`
    namespace: str = ""


_Key = tuple[str, str, str, str, str]  # (kind, namespace, name, reason, message)


@dataclasses.dataclass(slots=True)
class _Aggregate:
    name: str  # the Event object's name
    origin: _Occurrence  # the occurrence that created it
    count: int  # count the server has
    pending: int  # occurrences since, not yet written
    last_wall: float  # wall time of the latest occurrence (lastTimestamp)
    last_seen: float  # monotonic time of the latest occurrence
    last_patch: float  # monotonic time of the latest PATCH (-inf: none yet)


def event_body(
    name: str,
    node: str,
    uid: str,
    reason: str,
    message: str,
    type: str,
    wall: float,
    *,
    kind: str = "Node",
    namespace: str = EVENTS_NAMESPACE,
    action: str = "",
    component: str = "noderecover",
    instance: str = "",
    count: int = 1,
) -> JSON:
    """A core/v1 Event about a Node (default) or a Pod in `namespace`, fields cut to their
    validation limits."""
    stamp = rfc3339(wall)
    involved: JSON = {"apiVersion": "v1", "kind": kind, "name": node, "uid": uid}
    if kind != "Node":
        involved["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name[:_NAME_MAX], "namespace": namespace},
        "involvedObject": involved,
        "reason": reason[:_REASON_MAX],
        "message": message[:_MESSAGE_MAX],
        "type": type,
        "action": (action or reason)[:_REASON_MAX],
        "source": {"component": component},
        "reportingComponent": "noderecover",
        "reportingInstance": instance[:_INSTANCE_MAX],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": count,
    }


class EventRecorder:
    def __init__(
        self,
        writer: EventWriter,
        clock: Clock,
        instance: str,
        namespace: str = "default",
        component: str = "noderecover",
        *,
        queue_size: int = 256,
        max_keys: int = 1024,
        aggregate_window: float = 600.0,
        patch_interval: float = 30.0,
        timeout: float = 5.0,
        attempts: int = 3,
        rng: random.Random | None = None,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        if queue_size < 1 or max_keys < 1 or attempts < 1:
            raise ValueError("queue_size, max_keys and attempts must be at least 1")
        self._writer = writer
        self._clock = clock
        self._instance = instance[:_INSTANCE_MAX]
        # Events about cluster-scoped objects (Nodes) live in "default" (API validation).
        self._namespace = namespace
        self._component = component
        self._queue: deque[_Occurrence] = deque()
        self._queue_size = queue_size
        self._keys: OrderedDict[_Key, _Aggregate] = OrderedDict()
        self._max_keys = max_keys
        self._window = aggregate_window
        self._patch_interval = patch_interval
        self._timeout = timeout
        self._attempts = attempts
        self._rng = rng or random.Random()
        self._may_write = may_write or (lambda: True)
        self._wake: anyio.Event | None = None
        self.dropped = 0  # occurrences dropped, queue overflow or API failure

    @property
    def queued(self) -> int:
        return len(self._queue)

    def record(
        self,
        node: str,
        uid: str,
        reason: str,
        message: str,
        type: str = "Normal",
        *,
        action: str = "",
        kind: str = "Node",
        namespace: str = "",
    ) -> None:
        """Queue one Event about a Node (default) or a Pod in `namespace` (never blocks;
        call from the event loop's thread)."""
        if len(self._queue) >= self._queue_size:
            old = self._queue.popleft()
            self._drop("queue_full")
            log.debug("event queue full, dropped %s %s", old.reason, old.node)
        self._queue.append(
            _Occurrence(
                node=node,
                uid=uid,
                reason=reason[:_REASON_MAX],
                message=message[:_MESSAGE_MAX],
                type=type,
                action=(action or reason)[:_REASON_MAX],
                wall=self._clock.wall(),
                mono=self._clock.monotonic(),
                kind=kind,
                namespace=namespace or self._namespace,
            )
        )
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Write queued Events forever (one at a time), and coalesced counts when due."""
        while True:
            if self._queue:
                await self._handle(self._queue.popleft())
                continue
            due = self._next_flush()
            now = self._clock.monotonic()
            if due is not None and due <= now:
                await self._flush_due(now)
                continue
            self._wake = anyio.Event()
            await wait_event(self._wake, self._clock, None if due is None else due - now)

    # ----- internals ----------------------------------------------------------------------------

    def _next_flush(self) -> float | None:
        due = [a.last_patch + self._patch_interval for a in self._keys.values() if a.pending]
        return min(due) if due else None

    async def _flush_due(self, now: float) -> None:
        for key, agg in list(self._keys.items()):
            if agg.pending and agg.last_patch + self._patch_interval <= now:
                await self._patch(key, agg)

    async def _handle(self, occ: _Occurrence) -> None:
        key = (occ.kind, occ.namespace, occ.node, occ.reason, occ.message)
        agg = self._keys.get(key)
        if agg is not None and occ.mono - agg.last_seen <= self._window:
            agg.pending += 1
            agg.last_seen = occ.mono
            agg.last_wall = occ.wall
            self._keys.move_to_end(key)
            if self._clock.monotonic() - agg.last_patch >= self._patch_interval:
                await self._patch(key, agg)
            return
        self._keys.pop(key, None)  # too old to aggregate: a new Event
        await self._create(key, occ, 1)

    def _body(self, name: str, occ: _Occurrence, count: int) -> JSON:
        return event_body(
            name,
            occ.node,
            occ.uid,
            occ.reason,
            occ.message,
            occ.type,
            occ.wall,
            kind=occ.kind,
            namespace=occ.namespace,
            action=occ.action,
            component=self._component,
            instance=self._instance,
            count=count,
        )

    async def _create(self, key: _Key, occ: _Occurrence, count: int) -> None:
        name = f"{occ.node[: _NAME_MAX - _SUFFIX_LEN]}.{self._rng.getrandbits(64):016x}"
        body = self._body(name, occ, count)
        path = f"/api/v1/namespaces/{occ.namespace}/events"
        if await self._send("POST", path, body, "application/json"):
            self._keys[key] = _Aggregate(
                name=name,
                origin=occ,
                count=count,
                pending=0,
                last_wall=occ.wall,
                last_seen=occ.mono,
                last_patch=-math.inf,
            )
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)

    async def _patch(self, key: _Key, agg: _Aggregate) -> None:
        count = agg.count + agg.pending
        body: JSON = {"count": count, "lastTimestamp": rfc3339(agg.last_wall)}
        path = f"/api/v1/namespaces/{agg.origin.namespace}/events/{agg.name}"
        # Whatever happens, this key is not patched again for an interval.
        agg.last_patch = self._clock.monotonic()
        try:
            ok = await self._send("PATCH", path, body, MERGE_PATCH, missing_ok=False)
        except _Gone:
            # The Event expired on the server (default TTL 1 h): start a new one.
            self._keys.pop(key, None)
            occ = dataclasses.replace(agg.origin, wall=agg.last_wall, mono=agg.last_seen)
            log.debug("event %s is gone; creating a new one", agg.name)
            await self._create(key, occ, agg.pending)
            return
        if ok:
            agg.count = count
        agg.pending = 0

    async def _send(
        self,
        method: Method,
        path: str,
        body: JSON,
        content_type: str,
        *,
        missing_ok: bool = True,
    ) -> bool:
        """One bounded call with bounded retries. False (logged, counted) when it failed."""
        backoff = Backoff(base=0.5, cap=5.0, rng=self._rng)
        for attempt in range(1, self._attempts + 1):
            if not self._may_write():
                log.debug("event dropped: not the leader")
                self._drop("not-leader")
                return False
            try:
                await self._writer.send(
                    method, path, body=body, content_type=content_type, timeout=self._timeout
                )
                return True
            except NotLeader:
                log.debug("event dropped: not the leader")
                self._drop("not-leader")
                return False
            except ApiError as exc:
                if isinstance(exc, NotFound) and not missing_ok:
                    raise _Gone from exc
                if not exc.retryable or attempt == self._attempts:
                    log.warning("event dropped after %d attempt(s): %s", attempt, exc)
                    self._drop("error")
                    return False
                delay = backoff.next_delay(min(exc.retry_after or 0.0, 10.0))
                log.debug("event write failed (%s), retry in %.1fs", exc, delay)
                await self._clock.sleep(delay)
        return False  # not reached

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        EVENTS_DROPPED.labels(reason).inc()


class _Gone(Exception):
    """The Event to PATCH no longer exists."""
