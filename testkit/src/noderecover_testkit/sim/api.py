"""An in-memory Kubernetes API for the simulation, behind the real `KubeClient`.

`SimApiClient` stands in for kubernetes_asyncio's ApiClient (`call_api`, `user_agent`,
`close`), so the controller's own `KubeClient` runs unchanged on top of it: its timeouts,
write deadline, error mapping and stream parsing are the real ones.

Each request is sent at once and reaches the server `up` seconds later (drawn from the seed);
the server applies it there, whatever the client does meanwhile (a client that gave up does
not un-send a request: "applied, reply lost"), and answers `down` seconds later. A request
sent during a stall of its replica never reaches the server (the client times out).

Semantics kept from the real API server: resourceVersion per write, uid and resourceVersion
preconditions (409), merge and JSON patches (a failed `test` op is 422), 404 on a missing
object, graceful pod deletion (deletionTimestamp; the kubelet finishes it), eviction with a
grace period, watches from a resourceVersion (replayed from history; older than the compacted
one: 410), bookmarks, `timeoutSeconds`. Not modelled: pagination (a LIST is one page), PDBs
(no eviction is refused), field managers, admission.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import unquote

import orjson

from noderecover.core.nodes import format_micro_time, format_time
from tests.fakeapi import ApiError as FakeApiError
from tests.fakeapi import json_patch, labels_match, merge_patch, parse_label_selector

JSON = dict[str, Any]
_T = TypeVar("_T")

HISTORY_KEEP = 400  # watch events kept per resource for a WATCH from an older version
BOOKMARK_EVERY = 30.0
CRD_NAME = "noderecoverypolicies.noderecover.io"


def clone(obj: _T) -> _T:
    return cast(_T, orjson.loads(orjson.dumps(obj)))


def rfc3339(wall: float, micro: bool = False) -> str:
    return format_micro_time(wall) if micro else format_time(wall)


class Reject(Exception):
    """An error answer of the server (a Status with `code`)."""

    def __init__(self, code: int, message: str = "", reason: str = "") -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.reason = reason or {
            400: "BadRequest",
            403: "Forbidden",
            404: "NotFound",
            409: "Conflict",
            410: "Expired",
            422: "Invalid",
            429: "TooManyRequests",
            500: "InternalError",
            503: "ServiceUnavailable",
            504: "Timeout",
        }.get(code, "Error")

    def body(self) -> bytes:
        status: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.code == 429:
            status["details"] = {"retryAfterSeconds": 1}
        return orjson.dumps(status)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed request path."""

    resource: str  # plural, e.g. "nodes"; group-qualified for CRDs and leases
    namespace: str  # "" for cluster-scoped or all namespaces
    name: str  # "" for the collection
    sub: str = ""  # "status", "eviction"


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> Target:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
    elif parts and parts[0] == "apis" and len(parts) >= 3:
        rest = parts[3:]
    else:
        raise Reject(404, f"the server could not find the requested resource ({path})")
    ns = ""
    if len(rest) >= 2 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest:
        raise Reject(404, f"no resource in {path}")
    return Target(rest[0], ns, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")


@dataclass(slots=True)
class Applied:
    """One write the server applied (what the oracle judges)."""

    at: float
    actor: str
    method: str
    target: Target
    before: JSON | None
    after: JSON | None
    body: Any = None


class SimWatch:
    """One open watch stream: lines delivered in order, each after the seed's lag."""

    def __init__(
        self,
        api: SimApi,
        target: Target,
        selector: list[Any],
        fields: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.api = api
        self.target = target
        self.selector = selector
        self.fields = fields  # fieldSelector terms (path, value): equality only
        self.lines: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.last_delivery = 0.0

    def matches(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.target.namespace and meta.get("namespace") != self.target.namespace:
            return False
        if not all(_field(obj, k) == v for k, v in self.fields):
            return False
        return labels_match(self.selector, meta.get("labels") or {})

    def offer(self, etype: str, obj: JSON, prev: JSON | None) -> None:
        now, before = self.matches(obj), self.matches(prev)
        if etype == "MODIFIED" and now != before:
            self.send("ADDED" if now else "DELETED", obj)
        elif now:
            self.send(etype, obj)

    def send(self, etype: str, obj: JSON, *, final: bool = False) -> None:
        line = orjson.dumps({"type": etype, "object": obj}) + b"\n"
        loop = self.api.loop
        # Strictly after the previous line: asyncio does not order timers due at the same
        # instant, and a watch never reorders (the API's guarantee).
        at = max(loop.time() + self.api.faults.watch_lag(), self.last_delivery + 1e-6)
        self.last_delivery = at

        def deliver() -> None:
            if self.closed:
                return
            self.lines.append(line)
            if final:
                self.lines.append(b"")
                self.closed = True
            self.wake.set()

        loop.call_at(at, deliver)

    def end(self) -> None:
        """The server ends the stream (after what was already sent)."""
        loop = self.api.loop
        at = max(loop.time(), self.last_delivery + 1e-6)

        def close() -> None:
            if not self.closed:
                self.lines.append(b"")
                self.closed = True
                self.wake.set()

        loop.call_at(at, close)


class _Content:
    def __init__(self, watch: SimWatch) -> None:
        self._w = watch

    async def readline(self) -> bytes:
        w = self._w
        while not w.lines:
            w.wake.clear()
            await w.wake.wait()
        line = w.lines.popleft()
        if line == b"":
            w.lines.appendleft(b"")  # stays at its end
        return line


class SimResponse:
    """What `KubeClient` reads of an aiohttp ClientResponse."""

    def __init__(self, status: int, data: bytes, watch: SimWatch | None = None) -> None:
        self.status = status
        self._data = data
        self.headers: dict[str, str] = {}
        self._watch = watch
        if watch is not None:
            self.content = _Content(watch)

    async def read(self) -> bytes:
        return self._data

    def release(self) -> None:
        if self._watch is not None:
            self._watch.api.close_watch(self._watch)

    def close(self) -> None:
        self.release()


class Faults:
    """What the API does wrong, asked per request (the world sets it from the seed)."""

    def latency(self, actor: str, method: str, target: Target) -> tuple[float, float]:
        return 0.005, 0.005

    def error(self, actor: str, method: str, target: Target, path: str) -> Reject | None:
        return None

    def lose_reply(self, actor: str, method: str, target: Target) -> bool:
        return False

    def stalled(self, actor: str) -> bool:
        return False

    def watch_lag(self) -> float:
        return 0.0


@dataclass
class Store:
    objects: dict[tuple[str, str], JSON] = field(default_factory=dict)
    history: deque[tuple[int, str, JSON, JSON | None]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_KEEP)
    )
    compacted: int = 0


class SimApi:
    """The server: stores, watches, and the rules of each resource."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        wall: Callable[[], float],
        *,
        faults: Faults | None = None,
        on_write: Callable[[Applied], None] | None = None,
        on_request: Callable[[str, str, Target, Any], None] | None = None,
        policies_installed: bool = True,
    ) -> None:
        self.loop = loop
        self.wall = wall  # the API server's clock (the true time)
        self.faults = faults or Faults()
        self.on_write = on_write or (lambda _a: None)
        self.on_request = on_request or (lambda _actor, _m, _t, _q: None)
        self.rv = 100
        self.uids = 0
        self.stores: dict[str, Store] = {}
        self.watches: list[SimWatch] = []
        self.policies_installed = policies_installed
        if policies_installed:
            # The NodeRecoveryPolicy CRD: an object (its watch says it exists).
            crd = {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": CRD_NAME, "uid": self.new_uid()},
            }
            self._commit("customresourcedefinitions", "ADDED", ("", CRD_NAME), crd, None)

    # -- objects ------------------------------------------------------------------------

    def store(self, resource: str) -> Store:
        s = self.stores.get(resource)
        if s is None:
            s = self.stores[resource] = Store()
        return s

    def get(self, resource: str, name: str, namespace: str = "") -> JSON | None:
        return self.store(resource).objects.get((namespace, name))

    def items(self, resource: str) -> list[JSON]:
        return list(self.store(resource).objects.values())

    def new_uid(self) -> str:
        self.uids += 1
        return f"uid-{self.uids:06d}"

    def _commit(
        self, resource: str, etype: str, key: tuple[str, str], obj: JSON, prev: JSON | None
    ) -> JSON:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        s = self.store(resource)
        if etype == "DELETED":
            s.objects.pop(key, None)
        else:
            s.objects[key] = obj
        s.history.append((self.rv, etype, obj, prev))
        if len(s.history) == HISTORY_KEEP:
            s.compacted = max(s.compacted, s.history[0][0] - 1)
        for w in self.watches:
            if w.target.resource == resource and not w.closed:
                w.offer(etype, obj, prev)
        return obj

    def create(self, resource: str, obj: JSON, actor: str = "world") -> JSON:
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        if key in self.store(resource).objects:
            raise Reject(409, f'{resource} "{meta["name"]}" already exists', "AlreadyExists")
        meta["uid"] = self.new_uid()
        meta.setdefault("creationTimestamp", rfc3339(self.wall()))
        meta["generation"] = 1
        out = self._commit(resource, "ADDED", key, obj, None)
        self.on_write(
            Applied(self.loop.time(), actor, "POST", Target(resource, key[0], ""), None, out)
        )
        return out

    def replace(
        self, resource: str, obj: JSON, actor: str = "world", method: str = "PUT", note: Any = None
    ) -> JSON:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        prev = self.store(resource).objects.get(key)
        if prev is None:
            raise Reject(404, f'{resource} "{meta["name"]}" not found')
        obj = clone(obj)
        obj["metadata"]["uid"] = prev["metadata"]["uid"]
        obj["metadata"]["creationTimestamp"] = prev["metadata"].get("creationTimestamp")
        if obj.get("spec") != prev.get("spec"):
            obj["metadata"]["generation"] = prev["metadata"].get("generation", 1) + 1
        out = self._commit(resource, "MODIFIED", key, obj, prev)
        target = Target(resource, key[0], key[1])
        self.on_write(Applied(self.loop.time(), actor, method, target, prev, out, note))
        return out

    def remove(
        self, resource: str, name: str, namespace: str = "", actor: str = "world", note: Any = None
    ) -> JSON:
        key = (namespace, name)
        prev = self.store(resource).objects.get(key)
        if prev is None:
            raise Reject(404, f'{resource} "{name}" not found')
        gone = clone(prev)
        self._commit(resource, "DELETED", key, gone, prev)
        target = Target(resource, namespace, name)
        self.on_write(Applied(self.loop.time(), actor, "DELETE", target, prev, None, note))
        return gone

    def compact(self) -> None:
        """Forget the history (etcd compaction): every open watch ends with 410."""
        for s in self.stores.values():
            s.compacted = self.rv
            s.history.clear()
        for w in list(self.watches):
            if not w.closed:
                w.send("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"}, final=True)

    # -- requests -----------------------------------------------------------------------

    def handle(
        self,
        actor: str,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        content_type: str,
    ) -> JSON:
        """Apply one request now; returns the answer's body or raises Reject. The body may be
        a stored object: the caller serializes it at once and must not keep or change it."""
        t = parse_path(path)
        q = dict(query)
        self.on_request(actor, method, t, q)
        if err := self.faults.error(actor, method, t, path):
            raise err
        if t.resource == "noderecoverypolicies" and not self.policies_installed:
            raise Reject(404, "the server could not find the requested resource")
        if (
            t.resource == "customresourcedefinitions"
            and method == "GET"
            and t.name
            and self.get(t.resource, t.name) is None
        ):
            # Only the NodeRecoveryPolicy CRD exists, once installed (its own 404 message).
            raise Reject(
                404, f'customresourcedefinitions.apiextensions.k8s.io "{t.name}" not found'
            )
        if method == "GET":
            if not t.name:
                return self._list(t, q)
            obj = self.get(t.resource, t.name, t.namespace)
            if obj is None:
                raise Reject(404, f'{t.resource} "{t.name}" not found')
            return obj  # serialized at once by the caller: no copy needed
        if method == "POST":
            if t.sub == "eviction":
                return self._evict(actor, t, body)
            if t.name:
                raise Reject(405, "POST to an object")
            obj = clone(body)
            obj.setdefault("metadata", {})
            if t.namespace:
                obj["metadata"]["namespace"] = t.namespace
            if not obj["metadata"].get("name"):
                gen = obj["metadata"].get("generateName", "obj-")
                obj["metadata"]["name"] = f"{gen}{self.rv + 1:x}"
            return self.create(t.resource, obj, actor)
        cur = self.get(t.resource, t.name, t.namespace)
        if cur is None:
            raise Reject(404, f'{t.resource} "{t.name}" not found')
        if method == "PUT":
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise Reject(409, "the object has been modified; please apply your changes")
            return self.replace(t.resource, body, actor)
        if method == "PATCH":
            return self._patch(actor, t, cur, body, content_type)
        if method == "DELETE":
            return self._delete(actor, t, cur, body or {})
        raise Reject(405, f"method {method}")

    def _list(self, t: Target, q: dict[str, str]) -> JSON:
        if q.get("watch") == "true":
            raise Reject(400, "watch through request()")
        sel = parse_label_selector(q.get("labelSelector", ""))
        fields = [f.split("=", 1) for f in q.get("fieldSelector", "").split(",") if "=" in f]
        items = []
        for (ns, _name), obj in sorted(self.store(t.resource).objects.items()):
            if t.namespace and ns != t.namespace:
                continue
            if not labels_match(sel, obj["metadata"].get("labels") or {}):
                continue
            if all(_field(obj, k) == v for k, v in fields):
                items.append(obj)
        return {"kind": "List", "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    def _patch(self, actor: str, t: Target, cur: JSON, body: Any, content_type: str) -> JSON:
        try:
            if "json-patch" in content_type:
                new = json_patch(cur, body)
            else:
                meta = body.get("metadata") or {} if isinstance(body, dict) else {}
                uid = meta.get("uid")
                if uid is not None and uid != cur["metadata"]["uid"]:
                    raise Reject(409, "Precondition failed: UID in precondition does not match")
                rv = meta.get("resourceVersion")
                if rv is not None and rv != cur["metadata"]["resourceVersion"]:
                    raise Reject(409, "the object has been modified; please apply your changes")
                new = merge_patch(cur, body)
        except FakeApiError as exc:
            raise Reject(exc.code, exc.message) from None
        if t.sub == "status":
            new = {**cur, "status": new.get("status")}
        elif t.resource == "noderecoverypolicies":
            new["status"] = cur.get("status")
        new["metadata"]["uid"] = cur["metadata"]["uid"]
        new["metadata"]["name"] = cur["metadata"]["name"]
        return self.replace(t.resource, new, actor, "PATCH")

    def _check_pre(self, cur: JSON, opts: JSON) -> None:
        pre = opts.get("preconditions") or {}
        if pre.get("uid") is not None and pre["uid"] != cur["metadata"]["uid"]:
            raise Reject(409, "Precondition failed: UID in precondition does not match")
        rv = pre.get("resourceVersion")
        if rv is not None and rv != cur["metadata"]["resourceVersion"]:
            raise Reject(409, "Precondition failed: ResourceVersion in precondition does not match")

    def _delete(self, actor: str, t: Target, cur: JSON, opts: JSON) -> JSON:
        self._check_pre(cur, opts)
        if t.resource == "pods":
            return self.delete_pod(actor, cur, opts.get("gracePeriodSeconds"), opts)
        gone = self.remove(t.resource, t.name, t.namespace, actor)
        self._last_opts = opts
        return {"kind": "Status", "status": "Success", "details": {"uid": gone["metadata"]["uid"]}}

    def delete_pod(
        self, actor: str, pod: JSON, grace: int | None, opts: JSON | None = None
    ) -> JSON:
        meta = pod["metadata"]
        spec_grace = int(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))
        g = spec_grace if grace is None else int(grace)
        if g <= 0 or not pod.get("spec", {}).get("nodeName"):
            how = "eviction" if (opts or {}).get("eviction") else None
            gone = self.remove("pods", meta["name"], meta["namespace"], actor, how)
            return {
                "kind": "Status",
                "status": "Success",
                "details": {"uid": gone["metadata"]["uid"]},
            }
        new = clone(pod)
        old_g = meta.get("deletionGracePeriodSeconds")
        if old_g is not None and old_g <= g:
            return new  # a longer (or equal) grace never extends a deletion in progress
        new["metadata"]["deletionGracePeriodSeconds"] = g
        new["metadata"]["deletionTimestamp"] = rfc3339(self.wall() + g)
        how = "eviction" if (opts or {}).get("eviction") else None
        return clone(self.replace("pods", new, actor, "DELETE", how))

    def _evict(self, actor: str, t: Target, body: Any) -> JSON:
        pod = self.get("pods", t.name, t.namespace)
        if pod is None:
            raise Reject(404, f'pods "{t.name}" not found')
        opts = (body or {}).get("deleteOptions") or {}
        self._check_pre(pod, opts)
        self.delete_pod(actor, pod, opts.get("gracePeriodSeconds"), {**opts, "eviction": True})
        return {"kind": "Status", "status": "Success", "code": 201}

    # -- watches ------------------------------------------------------------------------

    def open_watch(self, actor: str, path: str, query: list[tuple[str, str]]) -> SimWatch:
        t = parse_path(path)
        q = dict(query)
        self.on_request(actor, "WATCH", t, q)
        if err := self.faults.error(actor, "WATCH", t, path):
            raise err
        if t.resource == "noderecoverypolicies" and not self.policies_installed:
            raise Reject(404, "the server could not find the requested resource")
        s = self.store(t.resource)
        rv = int(q.get("resourceVersion") or self.rv)
        if rv < s.compacted:
            raise Reject(410, f"too old resource version: {rv} ({s.compacted})", "Expired")
        fields = tuple(
            (k, v)
            for k, v in (f.split("=", 1) for f in q.get("fieldSelector", "").split(",") if "=" in f)
        )
        w = SimWatch(self, t, parse_label_selector(q.get("labelSelector", "")), fields)
        for ev_rv, etype, obj, prev in s.history:
            if ev_rv > rv:
                w.offer(etype, obj, prev)
        self.watches.append(w)
        timeout = float(q.get("timeoutSeconds") or 1800)
        self.loop.call_later(timeout, w.end)
        if q.get("allowWatchBookmarks") == "true":
            self._bookmarks(w)
        return w

    def _bookmark(self, w: SimWatch) -> None:
        if not w.closed:
            w.send("BOOKMARK", {"kind": "Bookmark", "metadata": {"resourceVersion": str(self.rv)}})

    def _bookmarks(self, w: SimWatch) -> None:
        def tick() -> None:
            if w.closed:
                return
            self._bookmark(w)
            self.loop.call_later(BOOKMARK_EVERY, tick)

        self.loop.call_later(BOOKMARK_EVERY, tick)

    def close_watch(self, w: SimWatch) -> None:
        w.closed = True
        with contextlib.suppress(ValueError):
            self.watches.remove(w)


def _field(obj: JSON, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


class SimApiClient:
    """kubernetes_asyncio's ApiClient, as `KubeClient` uses it, onto a SimApi."""

    def __init__(self, api: SimApi, actor: str) -> None:
        self.api = api
        self.actor = actor
        self.user_agent = ""

    async def close(self) -> None:
        return None

    async def call_api(
        self,
        path: str,
        method: str,
        *,
        query_params: list[tuple[str, str]],
        header_params: dict[str, str],
        body: Any,
        auth_settings: list[str],
        _preload_content: bool,
        _request_timeout: Any,
    ) -> SimResponse:
        api = self.api
        loop = api.loop
        watch = ("watch", "true") in query_params
        content_type = header_params.get("Content-Type", "application/json")
        verb = "WATCH" if watch else method
        target = parse_path(path)
        up, down = api.faults.latency(self.actor, verb, target)
        fut: asyncio.Future[SimResponse] = loop.create_future()
        lost = method != "GET" and api.faults.lose_reply(self.actor, method, target)
        if api.faults.stalled(self.actor):
            return await fut  # never reaches the server: the client's bound ends it
        sent = clone(body) if body is not None else None

        def arrive() -> None:
            try:
                if watch:
                    resp = SimResponse(200, b"", api.open_watch(self.actor, path, query_params))
                else:
                    out = api.handle(self.actor, method, path, query_params, sent, content_type)
                    resp = SimResponse(200, orjson.dumps(out))
            except Reject as exc:
                resp = SimResponse(exc.code, exc.body())
            if lost:
                return  # applied; the answer never comes (the client times out)

            def answer() -> None:
                if not fut.done():
                    fut.set_result(resp)
                elif resp._watch is not None:
                    api.close_watch(resp._watch)

            loop.call_later(down, answer)

        loop.call_later(up, arrive)
        try:
            return await fut
        finally:
            if not fut.done():
                fut.cancel()
