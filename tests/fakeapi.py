"""In-process fake kube-apiserver for the async unit tests.

Behaves like the real server where the controller can tell the difference: a global
resourceVersion, real Status errors, list pagination from a consistent snapshot, watches with
history, bookmarks and 410 Expired after compaction, optimistic concurrency on PUT/PATCH,
no-op writes that do not bump the resourceVersion, graceful pod deletion finished only by a live
"kubelet", the eviction subresource with a PodDisruptionBudget model, and Lease MicroTime
parsing. Fault injection: fail_next, hang, silence_watches, drop_watches, inject_watch_bytes,
list_garbage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import random
import re
import socket
import string
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from aiohttp import web
from noderecover_testkit.fixtures import CONDITIONS, make_node, micro_rfc3339, rfc3339

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY: web.RequestKey[Any] = web.RequestKey("body")  # the parsed JSON body of a request

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MICROTIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# Strategic merge patch: lists merged by key instead of replaced (None = set of scalars).
_SMP_LISTS: dict[tuple[str, str], str | None] = {
    ("metadata", "finalizers"): None,
    ("metadata", "ownerReferences"): "uid",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("spec", "containers"): "name",
}
_LIFECYCLE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


class ApiError(Exception):
    """An error answered as a metav1.Status."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: JSON | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    def response(self) -> web.Response:
        headers = {}
        retry = (self.details or {}).get("retryAfterSeconds")
        if retry:
            headers["Retry-After"] = str(retry)
        return _json_response(self.status(), self.code, headers)


def _json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _clone(obj: _T) -> _T:
    """Deep copy via JSON: stored objects are never shared with callers or history."""
    copied: _T = orjson.loads(orjson.dumps(obj))
    return copied


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _go_bool(value: str) -> bool:
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _int_param(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {raw!r}") from None


def _float_param(query: dict[str, str], name: str) -> float | None:
    """Like the int parameters, but fractions are allowed so tests need not sleep seconds."""
    raw = query.get(name)
    try:
        return None if raw in (None, "") else float(raw)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {raw!r}") from None


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    group: str
    namespaced: bool
    fields: frozenset[str]
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def details(self, name: str, **extra: Any) -> JSON:
        out: JSON = {"name": name, "kind": self.plural, **extra}
        if self.group:
            out["group"] = self.group
        return out

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, f'{self.qualified} "{name}" not found', details=self.details(name))

    def conflict(self, name: str, why: str) -> ApiError:
        return ApiError(
            409,
            f'Operation cannot be fulfilled on {self.qualified} "{name}": {why}',
            details=self.details(name),
        )


_META_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
NODES = Kind("Node", "nodes", "", False, frozenset({"metadata.name", "spec.unschedulable"}))
PODS = Kind(
    "Pod",
    "pods",
    "",
    True,
    _META_FIELDS
    | {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    },
)
LEASES = Kind("Lease", "leases", "coordination.k8s.io", True, _META_FIELDS)
CONFIGMAPS = Kind("ConfigMap", "configmaps", "", True, _META_FIELDS)
SECRETS = Kind("Secret", "secrets", "", True, _META_FIELDS)
# noderecover's own Deployment, as `kubectl noderecover` reads its settings from it.
DEPLOYMENTS = Kind("Deployment", "deployments", "apps", True, _META_FIELDS)
# The NodeRecoveryPolicy CRD: served only once `install_policies()` was called (a cluster
# without the CRD answers 404, as the real one does). No schema validation here.
CRD_NAME = "noderecoverypolicies.noderecover.io"
POLICIES = Kind(
    "NodeRecoveryPolicy",
    "noderecoverypolicies",
    "noderecover.io",
    False,
    frozenset({"metadata.name"}),
    "v1alpha1",
)
# CustomResourceDefinitions: the NodeRecoveryPolicy one exists once `install_policies()` was
# called (an object: its watch says so).
CRDS = Kind(
    "CustomResourceDefinition",
    "customresourcedefinitions",
    "apiextensions.k8s.io",
    False,
    frozenset({"metadata.name"}),
)
VOLUMEATTACHMENTS = Kind(
    "VolumeAttachment", "volumeattachments", "storage.k8s.io", False, frozenset({"metadata.name"})
)
PERSISTENTVOLUMES = Kind(
    "PersistentVolume", "persistentvolumes", "", False, frozenset({"metadata.name"})
)
EVENTS = Kind(
    "Event",
    "events",
    "",
    True,
    _META_FIELDS
    | {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
)

# ---------------------------------------------------------------------------------- selectors
_Req = tuple[str, str, frozenset[str]]  # key, op (=, !=, in, notin, exists, !), values
_SET_RE = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_RE = re.compile(r"^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$")
_KEY_RE = re.compile(r"^(!?)\s*([^\s!=(),]+)$")


def parse_label_selector(text: str) -> list[_Req]:
    terms, depth, cur = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    reqs: list[_Req] = []
    for term in (t.strip() for t in terms):
        if not term:
            continue
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m[3].split(",") if v.strip())
            reqs.append((m[1], m[2], values))
        elif m := _EQ_RE.match(term):
            reqs.append((m[1], "!=" if m[2] == "!=" else "=", frozenset({m[3]})))
        elif m := _KEY_RE.match(term):
            reqs.append((m[2], "!" if m[1] else "exists", frozenset()))
        else:
            raise ApiError(400, f"unable to parse requirement: found '{term}'")
    return reqs


def labels_match(reqs: Iterable[_Req], labels: dict[str, str]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        ok = {
            "=": present and labels.get(key) in values,
            "in": present and labels.get(key) in values,
            "!=": not present or labels.get(key) not in values,
            "notin": not present or labels.get(key) not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True


def _field_value(obj: JSON, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


@dataclass(frozen=True)
class Selector:
    namespace: str | None = None
    labels: tuple[_Req, ...] = ()
    fields: tuple[tuple[str, bool, str], ...] = ()  # (path, negated, value)

    @classmethod
    def from_query(cls, kind: Kind, namespace: str | None, query: dict[str, str]) -> Selector:
        fields = []
        for term in filter(None, (t.strip() for t in query.get("fieldSelector", "").split(","))):
            m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", term)
            if not m:
                raise ApiError(400, f"invalid selector: '{term}'; can't understand '{term}'")
            if m[1] not in kind.fields:
                raise ApiError(400, f"field label not supported: {m[1]}")
            fields.append((m[1], m[2] == "!=", m[3]))
        return cls(
            namespace, tuple(parse_label_selector(query.get("labelSelector", ""))), tuple(fields)
        )

    def match(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if not labels_match(self.labels, meta.get("labels") or {}):
            return False
        return all((_field_value(obj, p) == v) != neg for p, neg, v in self.fields)


# ------------------------------------------------------------------------------------ patches
def merge_patch(
    target: Any, patch: Any, strategic: bool = False, path: tuple[str, ...] = ()
) -> Any:
    """RFC 7386 merge patch; with strategic=True lists in _SMP_LISTS are merged by key."""
    if not isinstance(patch, dict):
        return _clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        sub = (*path, k)[-2:]
        if v is None:
            result.pop(k, None)
        elif strategic and sub in _SMP_LISTS and isinstance(v, list):
            result[k] = _merge_list(result.get(k) or [], v, _SMP_LISTS[sub])
        else:
            result[k] = merge_patch(result.get(k), v, strategic, (*path, k))
    return result


def _merge_list(old: list[Any], new: list[Any], key: str | None) -> list[Any]:
    out = list(old)
    for item in new:
        if key is None:
            if item not in out:
                out.append(item)
            continue
        idx = next((i for i, o in enumerate(out) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
        elif idx is None:
            out.append(_clone(item))
        else:
            out[idx] = merge_patch(out[idx], item)
    return out


def json_patch(doc: JSON, ops: Any) -> JSON:
    """RFC 6902 add/remove/replace/test (apply errors -> 422 like the real server)."""
    if not isinstance(ops, list):
        raise ApiError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = _clone(doc)

    def fail(why: str) -> ApiError:
        cause = {"reason": "UnexpectedServerResponse", "message": why}
        return ApiError(
            422,
            "the server rejected our request due to an error in our request",
            details={"causes": [cause]},
        )

    for op in ops:
        name, path = op.get("op"), str(op.get("path", ""))
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not parts:
            raise fail(f"{name} operation on the document root is not supported")
        parent: Any = doc
        for p in parts[:-1]:
            if isinstance(parent, list):
                parent = parent[int(p)] if p.isdigit() and int(p) < len(parent) else None
            elif isinstance(parent, dict):
                parent = parent.get(p)
            if not isinstance(parent, (dict, list)):
                raise fail(f"{name} operation does not apply: doc is missing path: {path}")
        slot: Any = parts[-1]
        if isinstance(parent, list):
            slot = len(parent) if slot == "-" else int(slot) if slot.isdigit() else -1
            exists = 0 <= slot < len(parent)
        else:
            exists = slot in parent
        if name == "test":
            if not exists or parent[slot] != op.get("value"):
                raise fail(f"testing value {path} failed: test failed")
        elif name in ("remove", "replace") and not exists:
            raise fail(f"{name} operation does not apply: doc is missing path: {path}")
        elif name == "remove":
            del parent[slot]
        elif name == "add" and isinstance(parent, list):
            if not 0 <= slot <= len(parent):
                raise fail(f"add operation does not apply: doc is missing path: {path}")
            parent.insert(slot, _clone(op.get("value")))
        elif name in ("add", "replace"):
            parent[slot] = _clone(op.get("value"))
        else:
            raise fail(f"Unexpected kind: {name}")
    return doc


# -------------------------------------------------------------------------------- stores/watch
@dataclass
class HistoryEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: JSON
    prev: JSON | None


class Watcher:
    def __init__(self, selector: Selector) -> None:
        self.selector = selector
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.state = "open"  # open | final (flush, then close) | final-drop | stop | drop

    def push(self, etype: str, obj: JSON) -> None:
        self.pending.append(orjson.dumps({"type": etype, "object": obj}) + b"\n")
        self.wake.set()

    def offer(self, ev: HistoryEvent) -> None:
        now, before = self.selector.match(ev.obj), self.selector.match(ev.prev)
        if ev.type == "MODIFIED" and now != before:
            self.push("ADDED" if now else "DELETED", ev.obj)
        elif now:
            self.push(ev.type, ev.obj)


class Store:
    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.objects: dict[Key, JSON] = {}
        self.history: list[HistoryEvent] = []
        self.watchers: set[Watcher] = set()

    def get(self, ns: str, name: str) -> JSON:
        obj = self.objects.get((ns, name))
        if obj is None:
            raise self.kind.not_found(name)
        return obj

    def state_at(self, rv: int) -> dict[Key, JSON]:
        state = dict(self.objects)
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            key = _key(ev.obj)
            if ev.prev is None:
                state.pop(key, None)
            else:
                state[key] = ev.prev
        return state


def _key(obj: JSON) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    user_agent: str | None
    headers: dict[str, str] = field(repr=False, default_factory=dict)


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    status: int = 0
    remaining: int = 0
    retry_after: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.pattern.search(path) is not None


@dataclass
class Pdb:
    name: str
    namespace: str
    match_labels: dict[str, str]
    allowed: int


# ---------------------------------------------------------------------------------- the server
class FakeKube:
    """`async with FakeKube() as kube:` then point a client at `kube.base_url`."""

    def __init__(self, bookmark_interval: float = 1.0, kubelet_finish_delay: float = 0.05) -> None:
        self.node_age = dt.timedelta(days=1)
        self.bookmark_interval = bookmark_interval
        self.kubelet_finish_delay = kubelet_finish_delay
        self.expired_mode = "event"  # or "http"
        self.requests: list[RecordedRequest] = []
        self.pdbs: dict[str, Pdb] = {}
        self.stores = {
            k.plural: Store(k)
            for k in (
                NODES,
                PODS,
                LEASES,
                EVENTS,
                VOLUMEATTACHMENTS,
                PERSISTENTVOLUMES,
                CONFIGMAPS,
                SECRETS,
                DEPLOYMENTS,
                POLICIES,
                CRDS,
            )
        }
        self.policies_installed = False
        # plural -> raw items added verbatim to the last page of every LIST of it, whatever
        # the selector: a garbled answer (not objects, objects missing fields...).
        self.list_garbage: dict[str, list[Any]] = {}
        self.base_url = ""
        self._rv = 0
        self._compacted_rv = 0
        self._silenced = False
        self._faults: list[_Rule] = []
        self._hangs: list[_Rule] = []
        self._hooks: list[tuple[_Rule, Callable[[], None]]] = []  # see on_request()
        self._hang_release = asyncio.Event()
        self.hanging = 0  # requests currently held by hang()
        self._dead_kubelets: set[str] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._stopping = False

    # ------------------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> FakeKube:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 2**20)
        for path, handler in self._routes():
            app.router.add_route("*", path, handler)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))  # a restart keeps the port (and all objects)
        self._port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self._port}"
        self._stopping = False
        self._hang_release = asyncio.Event()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping = True
        self._close_watches("stop")
        self._hang_release.set()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    # ---------------------------------------------------------------------- fault injection
    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        count: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `count` requests matching (method or "*", re.search on the path)."""
        self._faults = [f for f in self._faults if f.remaining > 0]
        self._faults.append(
            _Rule(method.upper(), re.compile(path_regex), status, count, retry_after)
        )

    def hang(self, method: str, path_regex: str) -> None:
        """Hold matching requests until release_hangs() (or stop(), which aborts them)."""
        self._hangs.append(_Rule(method.upper(), re.compile(path_regex)))

    def release_hangs(self) -> None:
        self._hangs.clear()
        self._hang_release.set()
        self._hang_release = asyncio.Event()

    def on_request(
        self, method: str, path_regex: str, callback: Callable[[], None], nth: int = 1
    ) -> None:
        """Run `callback` right before the `nth` matching request (counted from now) is
        served: a change that lands between a client's two requests."""
        self._hooks.append((_Rule(method.upper(), re.compile(path_regex), remaining=nth), callback))

    def silence_watches(self, silent: bool = True) -> None:
        """Keep watch streams open but send nothing (queued events flow again when False)."""
        self._silenced = silent
        for store in self.stores.values():
            for w in store.watchers:
                w.wake.set()

    def drop_watches(self) -> None:
        """Abort every open watch connection (no chunked terminator)."""
        self._close_watches("drop")

    def inject_watch_bytes(self, plural: str, data: bytes, then: str = "open") -> int:
        """Send `data` verbatim on every open watch of `plural` (garbage, half events...).

        After it the streams stay open (`then="open"`), end cleanly with the chunked
        terminator (`"close"`: a fragment without newline is then a truncated last line) or
        are aborted (`"drop"`). Returns how many streams got it.
        """
        if then not in ("open", "close", "drop"):
            raise ValueError(f"bad then {then!r}")
        watchers = list(self.stores[plural].watchers)
        for w in watchers:
            w.pending.append(data)
            if then != "open":
                w.state = "final" if then == "close" else "final-drop"
            w.wake.set()
        return len(watchers)

    def compact(self) -> None:
        """Forget the event history: watches/continues from an older RV get 410 Expired."""
        self._compacted_rv = self._rv
        for store in self.stores.values():
            store.history.clear()

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def watch_count(self, plural: str = "nodes") -> int:
        return len(self.stores[plural].watchers)

    def count(self, method: str, path_regex: str) -> int:
        return len(self.requests_matching(method, path_regex))

    def requests_matching(self, method: str, path_regex: str) -> list[RecordedRequest]:
        rule = _Rule(method.upper(), re.compile(path_regex))
        return [r for r in self.requests if rule.matches(r.method, r.path)]

    def _close_watches(self, state: str) -> None:
        for store in self.stores.values():
            for w in store.watchers:
                w.state = state
                w.wake.set()

    # ---------------------------------------------------------------------- storage core
    def _write(self, store: Store, etype: str, obj: JSON, prev: JSON | None) -> JSON:
        self._rv += 1
        obj = _clone(obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = _key(obj)
        if etype == "DELETED":
            del store.objects[key]
        else:
            store.objects[key] = obj
        ev = HistoryEvent(self._rv, etype, obj, prev)
        store.history.append(ev)
        for w in store.watchers:
            w.offer(ev)
        return obj

    def _create(
        self, store: Store, obj: JSON, namespace: str | None = None, *, dry_run: bool = False
    ) -> JSON:
        """`dry_run` (`?dryRun=All`): everything the server does on a create (a name from
        generateName, uid, creationTimestamp) but store nothing, as the API server does."""
        kind = store.kind
        obj = _clone(obj)
        meta = obj.setdefault("metadata", {})
        if not kind.namespaced:
            meta.pop("namespace", None)
        if namespace is not None:
            if meta.get("namespace", namespace) != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request",
                )
            meta["namespace"] = namespace
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    f'{kind.kind} "" is invalid: metadata.name: Required value: '
                    "name or generateName is required",
                    details={"kind": kind.kind, "group": kind.group},
                )
            meta["name"] = meta["generateName"] + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5)
            )
        if _key(obj) in store.objects:
            raise ApiError(
                409,
                f'{kind.qualified} "{meta["name"]}" already exists',
                "AlreadyExists",
                kind.details(meta["name"]),
            )
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        # Nodes look as if they joined `node_age` ago (a cluster's nodes are rarely new; the
        # start-up allowance of never-Ready nodes is tested with node_age 0).
        born = _now() - self.node_age if kind is NODES else _now()
        meta["creationTimestamp"] = rfc3339(born)
        if kind in (PODS, POLICIES):
            meta["generation"] = 1
        self._validate(kind, obj)
        if dry_run:
            return obj
        return self._write(store, "ADDED", obj, None)

    def _update(self, store: Store, cur: JSON, new: JSON, subresource: str = "") -> JSON:
        """Store `new` in place of `cur` keeping server-owned fields; no-op writes are skipped."""
        kind, meta = store.kind, new.setdefault("metadata", {})
        name = cur["metadata"]["name"]
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                f"the name of the object ({meta['name']}) does not match the "
                f"name on the URL ({name})",
            )
        rv = meta.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise kind.conflict(
                name,
                "the object has been modified; please apply your changes "
                "to the latest version and try again",
            )
        if meta.get("uid", cur["metadata"]["uid"]) != cur["metadata"]["uid"]:
            raise kind.conflict(
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, "
                f"UID in object meta: {cur['metadata']['uid']}",
            )
        if subresource == "status":
            new = {**_clone(cur), "status": new.get("status")}
        else:
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "namespace",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if k in cur["metadata"]:
                    meta[k] = cur["metadata"][k]
                else:
                    meta.pop(k, None)
            if kind in (NODES, PODS, POLICIES):  # status only changes through /status
                new.pop("status", None)
                if "status" in cur:
                    new["status"] = cur["status"]
            if kind in (PODS, POLICIES) and new.get("spec") != cur.get("spec"):
                meta["generation"] = cur["metadata"].get("generation", 1) + 1
        new["kind"], new["apiVersion"] = kind.kind, kind.api_version
        new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        self._validate(kind, new)
        if new == cur:
            return cur
        return self._write(store, "MODIFIED", new, cur)

    def _validate(self, kind: Kind, obj: JSON) -> None:
        if kind is not LEASES:
            return
        spec = obj.get("spec") or {}
        for fname in ("acquireTime", "renewTime"):
            value = spec.get(fname)
            if value is None:
                continue
            if not isinstance(value, str) or not _MICROTIME.match(value):
                raise ApiError(
                    400,
                    f'Lease in version "v1" cannot be handled as a Lease: '
                    f'parsing time "{value}" as "{MICROTIME_LAYOUT}": '
                    f"cannot parse {value!r} as {MICROTIME_LAYOUT!r}",
                )
            spec[fname] = micro_rfc3339(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        for fname, low in (("leaseDurationSeconds", 1), ("leaseTransitions", 0)):
            value = spec.get(fname)
            if value is not None and (not isinstance(value, int) or value < low):
                cmp = "greater than 0" if low else "greater than or equal to 0"
                name = obj["metadata"]["name"]
                raise ApiError(
                    422,
                    f'Lease.coordination.k8s.io "{name}" is invalid: '
                    f"spec.{fname}: Invalid value: {value}: must be {cmp}",
                    details={
                        "name": name,
                        "group": "coordination.k8s.io",
                        "kind": "Lease",
                        "causes": [
                            {
                                "reason": "FieldValueInvalid",
                                "message": f"Invalid value: {value}: must be {cmp}",
                                "field": f"spec.{fname}",
                            }
                        ],
                    },
                )

    def _delete(
        self, store: Store, ns: str, name: str, options: JSON, grace_query: int | None
    ) -> tuple[JSON, bool]:
        """Returns (object or Status, removed)."""
        kind, cur = store.kind, store.get(ns, name)
        pre = options.get("preconditions") or {}
        for pk, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(pk) is not None and pre[pk] != cur["metadata"].get(pk):
                raise kind.conflict(
                    name,
                    f"Precondition failed: {label} in precondition: "
                    f"{pre[pk]}, {label} in object meta: "
                    f"{cur['metadata'].get(pk)}",
                )
        if kind is PODS:
            grace = grace_query if grace_query is not None else options.get("gracePeriodSeconds")
            return self._delete_pod(store, cur, grace)
        gone = self._write(store, "DELETED", cur, cur)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": kind.details(name, uid=gone["metadata"]["uid"]),
        }, True

    def _delete_pod(self, store: Store, pod: JSON, grace: int | None) -> tuple[JSON, bool]:
        spec, meta = pod.get("spec") or {}, pod["metadata"]
        if meta.get("deletionTimestamp"):  # rest.BeforeDelete: only a shorter grace applies
            current = meta.get("deletionGracePeriodSeconds") or 0
            if current == 0:
                grace = 0
            elif grace is None or grace >= current:
                return pod, False
        else:  # pod strategy CheckGracefulDelete
            if grace is None:
                grace = spec.get("terminationGracePeriodSeconds", 30)
            if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in (
                "Succeeded",
                "Failed",
            ):
                grace = 0
        grace = 1 if grace < 0 else grace
        if grace == 0:
            return self._remove_pod(store, pod)
        new = _clone(pod)
        if meta.get("deletionTimestamp"):
            old_ts = dt.datetime.fromisoformat(meta["deletionTimestamp"].replace("Z", "+00:00"))
            deadline = old_ts - dt.timedelta(seconds=meta["deletionGracePeriodSeconds"] - grace)
        else:
            deadline = _now() + dt.timedelta(seconds=grace)
        new["metadata"]["deletionTimestamp"] = rfc3339(deadline)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        out = self._write(store, "MODIFIED", new, pod)
        self._kubelet_schedule(out)
        return out, False

    def _remove_pod(self, store: Store, pod: JSON) -> tuple[JSON, bool]:
        """Delete now (grace 0), unless finalizers hold the pod: then, like the API server,
        it only gets a deletionTimestamp (grace 0) and stays until they are removed."""
        if not pod["metadata"].get("finalizers"):
            return self._write(store, "DELETED", pod, pod), True
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds") == 0:
            return pod, False
        new = _clone(pod)
        new["metadata"].setdefault("deletionTimestamp", rfc3339(_now()))
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        return self._write(store, "MODIFIED", new, pod), False

    # --------------------------------------------------------------------------- kubelet
    def set_kubelet_alive(self, node: str, alive: bool) -> None:
        """A dead kubelet never finishes graceful pod deletions on its node."""
        if not alive:
            self._dead_kubelets.add(node)
            return
        self._dead_kubelets.discard(node)
        for pod in self.pods_on(node):
            if pod["metadata"].get("deletionTimestamp"):
                self._kubelet_schedule(pod)

    def _kubelet_schedule(self, pod: JSON) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or node in self._dead_kubelets or self._runner is None:
            return
        delay = min(float(pod["metadata"]["deletionGracePeriodSeconds"]), self.kubelet_finish_delay)
        key, uid = _key(pod), pod["metadata"]["uid"]

        def finish() -> None:
            self._timers.discard(handle)
            cur = self.stores["pods"].objects.get(key)
            if (
                cur is not None
                and cur["metadata"]["uid"] == uid
                and node not in self._dead_kubelets
                and cur["metadata"].get("deletionTimestamp")
            ):
                self._remove_pod(self.stores["pods"], cur)

        handle = asyncio.get_running_loop().call_later(delay, finish)
        self._timers.add(handle)

    def podgc(self) -> list[str]:
        """PodGC without its quarantine: force-delete pods whose node is gone, and terminating
        pods on a not-Ready node that has the out-of-service taint. Returns ns/name deleted."""
        nodes, done = self.stores["nodes"].objects, []
        for pod in list(self.stores["pods"].objects.values()):
            node = nodes.get(("", (pod.get("spec") or {}).get("nodeName", "")))
            oos = (
                node is not None
                and pod["metadata"].get("deletionTimestamp")
                and any(
                    t.get("key") == "node.kubernetes.io/out-of-service"
                    for t in node["spec"].get("taints") or []
                )
                and _ready(node) != "True"
            )
            if (node is None and pod["spec"].get("nodeName")) or oos:
                self._write(self.stores["pods"], "DELETED", pod, pod)
                done.append("/".join(_key(pod)))
        return done

    # ------------------------------------------------------------------------ PDB model
    def add_pdb(
        self, name: str, namespace: str, match_labels: dict[str, str], allowed: int
    ) -> None:
        self.pdbs[name] = Pdb(name, namespace, dict(match_labels), allowed)

    def set_pdb_allowed(self, name: str, allowed: int) -> None:
        self.pdbs[name].allowed = allowed

    # --------------------------------------------------------------------- HTTP plumbing
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        bad_body = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body, bad_body = raw.decode(errors="replace"), True
        ctype = request.headers.get("Content-Type")
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                ctype.split(";")[0].strip().lower() if ctype else None,
                body,
                request.headers.get("User-Agent"),
                dict(request.headers),
            )
        )
        request[BODY] = body
        for hook in list(self._hooks):
            rule, callback = hook
            if rule.matches(request.method, request.path):
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._hooks.remove(hook)
                    callback()
        for rule in self._faults:
            if rule.remaining > 0 and rule.matches(request.method, request.path):
                rule.remaining -= 1
                details: JSON = {}
                if rule.retry_after is not None:
                    details["retryAfterSeconds"] = rule.retry_after
                return ApiError(
                    rule.status, f"injected failure ({rule.status})", details=details or None
                ).response()
        if any(r.matches(request.method, request.path) for r in self._hangs):
            self.hanging += 1
            try:
                await self._hang_release.wait()
            finally:
                self.hanging -= 1
            if self._stopping:
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=503)
        try:
            if bad_body:
                raise ApiError(400, "the body of the request could not be decoded as JSON")
            return await handler(request)
        except ApiError as err:
            return err.response()
        except web.HTTPNotFound:
            return ApiError(
                404, "the server could not find the requested resource", details={}
            ).response()
        except web.HTTPMethodNotAllowed:
            return ApiError(
                405,
                f"the server does not allow this method on the requested "
                f"resource ({request.method})",
            ).response()

    def _routes(self) -> list[tuple[str, Handler]]:
        core, coord = "/api/v1", "/apis/coordination.k8s.io/v1"
        nrp = "/apis/noderecover.io/v1alpha1"
        nsd = "/namespaces/{ns}"
        return [
            (f"{core}/nodes", self._collection(NODES)),
            (f"{core}/nodes/{{name}}", self._item(NODES)),
            (f"{core}/nodes/{{name}}/status", self._item(NODES, "status")),
            (f"{core}/pods", self._collection(PODS)),
            (f"{core}{nsd}/pods", self._collection(PODS)),
            (f"{core}{nsd}/pods/{{name}}", self._item(PODS)),
            (f"{core}{nsd}/pods/{{name}}/status", self._item(PODS, "status")),
            (f"{core}{nsd}/pods/{{name}}/eviction", self._evict),
            (f"{coord}/leases", self._collection(LEASES)),
            (f"{coord}{nsd}/leases", self._collection(LEASES)),
            (f"{coord}{nsd}/leases/{{name}}", self._item(LEASES)),
            ("/apis/storage.k8s.io/v1/volumeattachments", self._collection(VOLUMEATTACHMENTS)),
            (
                "/apis/storage.k8s.io/v1/volumeattachments/{name}",
                self._item(VOLUMEATTACHMENTS),
            ),
            (f"{core}/persistentvolumes", self._collection(PERSISTENTVOLUMES)),
            (f"{core}/persistentvolumes/{{name}}", self._item(PERSISTENTVOLUMES)),
            (f"{core}/events", self._collection(EVENTS)),
            (f"{core}{nsd}/events", self._collection(EVENTS)),
            (f"{core}{nsd}/events/{{name}}", self._item(EVENTS)),
            (f"{core}{nsd}/configmaps", self._collection(CONFIGMAPS)),
            (f"{core}{nsd}/configmaps/{{name}}", self._item(CONFIGMAPS)),
            (f"{core}{nsd}/secrets/{{name}}", self._item(SECRETS)),
            (f"/apis/apps/v1{nsd}/deployments", self._collection(DEPLOYMENTS)),
            (f"/apis/apps/v1{nsd}/deployments/{{name}}", self._item(DEPLOYMENTS)),
            ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", self._collection(CRDS)),
            (
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                self._item(CRDS),
            ),
            (f"{nrp}/noderecoverypolicies", self._crd(self._collection(POLICIES))),
            (f"{nrp}/noderecoverypolicies/{{name}}", self._crd(self._item(POLICIES))),
            (
                f"{nrp}/noderecoverypolicies/{{name}}/status",
                self._crd(self._item(POLICIES, "status")),
            ),
        ]

    def install_policies(self) -> None:
        """Serve the NodeRecoveryPolicy CRD from now on (its object appears: a watch of it
        says so)."""
        self.policies_installed = True
        store = self.stores["customresourcedefinitions"]
        if ("", CRD_NAME) not in store.objects:
            self._create(
                store,
                {
                    "metadata": {"name": CRD_NAME},
                    "spec": {
                        "group": "noderecover.io",
                        "names": {"plural": "noderecoverypolicies"},
                    },
                },
            )

    def uninstall_policies(self) -> None:
        """Stop serving the CRD (its object is deleted; the policies' paths answer 404)."""
        self.policies_installed = False
        store = self.stores["customresourcedefinitions"]
        cur = store.objects.get(("", CRD_NAME))
        if cur is not None:
            self._write(store, "DELETED", cur, cur)

    def tick(self) -> None:
        """A BOOKMARK on every open watch of the pause ConfigMap, the CRD and the policies:
        what keeps those watches fresh as the tests' fake clock races ahead of real time,
        as the server's clean end of each short pause watch (and its minute's BOOKMARK on the
        CRD's) does on a real API server (Harness.until/idle call it; `silence_watches` holds
        them too)."""
        for plural in ("configmaps", "customresourcedefinitions", "noderecoverypolicies"):
            store = self.stores[plural]
            for w in store.watchers:
                if w.state == "open":
                    w.pending.append(self._bookmark(store.kind))
                    w.wake.set()

    def add_policy(self, name: str, spec: JSON) -> JSON:
        """Create a NodeRecoveryPolicy (the CRD must be installed)."""
        obj = {
            "apiVersion": POLICIES.api_version,
            "kind": POLICIES.kind,
            "metadata": {"name": name},
        }
        return self._create(self.stores["noderecoverypolicies"], {**obj, "spec": spec})

    def set_policy_spec(self, name: str, spec: JSON) -> JSON:
        store = self.stores["noderecoverypolicies"]
        cur = store.get("", name)
        return self._update(store, cur, {**_clone(cur), "spec": spec})

    def get_policy(self, name: str) -> JSON | None:
        return _clone(self.stores["noderecoverypolicies"].objects.get(("", name)))

    def remove_policy(self, name: str) -> None:
        store = self.stores["noderecoverypolicies"]
        cur = store.get("", name)
        self._write(store, "DELETED", cur, cur)

    def set_secret(self, namespace: str, name: str, data: dict[str, str] | None) -> None:
        """Create, replace or delete (None) a Secret; `data` in clear (stored base64)."""
        import base64

        store = self.stores["secrets"]
        cur = store.objects.get((namespace, name))
        if data is None:
            if cur is not None:
                self._write(store, "DELETED", cur, cur)
            return
        enc = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        if cur is None:
            self._create(store, {"metadata": {"name": name}, "data": enc}, namespace)
        else:
            self._update(store, cur, {**_clone(cur), "data": enc})

    def set_configmap(self, namespace: str, name: str, data: dict[str, str] | None) -> None:
        """Create, replace (data) or delete (None) a ConfigMap."""
        store = self.stores["configmaps"]
        cur = store.objects.get((namespace, name))
        if data is None:
            if cur is not None:
                self._write(store, "DELETED", cur, cur)
            return
        if cur is None:
            self._create(store, {"metadata": {"name": name}, "data": data}, namespace)
        else:
            self._update(store, cur, {**_clone(cur), "data": data})

    def add_deployment(self, namespace: str, obj: JSON) -> JSON:
        """Create a Deployment in `namespace` (stored as given: nothing runs it)."""
        return self._create(self.stores["deployments"], obj, namespace)

    def _crd(self, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not self.policies_installed:
                raise ApiError(404, "the server could not find the requested resource")
            return await handler(request)

        return handle

    def _collection(self, kind: Kind) -> Handler:
        store = self.stores[kind.plural]

        async def handle(request: web.Request) -> web.StreamResponse:
            ns = request.match_info.get("ns")
            query = dict(request.query)
            if request.method == "GET":
                selector = Selector.from_query(kind, ns, query)
                if _go_bool(query.get("watch", "")):
                    return await self._serve_watch(request, store, selector, query)
                return _json_response(self._list(store, selector, query))
            if request.method == "POST" and (ns is not None or not kind.namespaced):
                _require_json(request)
                body = request[BODY]
                if not isinstance(body, dict):
                    raise ApiError(400, "the body of the request must be an object")
                if kind is PODS:  # status is server-owned on create
                    body = {**body, "status": {"phase": "Pending"}}
                dry_run = query.get("dryRun") == "All"
                return _json_response(self._create(store, body, ns, dry_run=dry_run), 201)
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])

        return handle

    def _item(self, kind: Kind, subresource: str = "") -> Handler:
        store = self.stores[kind.plural]

        async def handle(request: web.Request) -> web.StreamResponse:
            ns, name = request.match_info.get("ns", ""), request.match_info["name"]
            body = request[BODY]
            if request.method == "GET":
                return _json_response(store.get(ns, name))
            if request.method == "PUT":
                _require_json(request)
                if not isinstance(body, dict):
                    raise ApiError(400, "the body of the request must be an object")
                return _json_response(
                    self._update(store, store.get(ns, name), _clone(body), subresource)
                )
            if request.method == "PATCH":
                cur = store.get(ns, name)
                return _json_response(self._update(store, cur, _patched(request, cur), subresource))
            if request.method == "DELETE" and not subresource:
                grace = _int_param(dict(request.query), "gracePeriodSeconds")
                obj, _ = self._delete(
                    store, ns, name, body if isinstance(body, dict) else {}, grace
                )
                return _json_response(obj)
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "PATCH", "DELETE"])

        return handle

    def _list(self, store: Store, selector: Selector, query: dict[str, str]) -> JSON:
        limit = _int_param(query, "limit") or 0
        token = query.get("continue")
        start: Key | None = None
        if token:
            try:
                data = orjson.loads(base64.urlsafe_b64decode(token))
                list_rv, start = int(data["rv"]), (data["start"][0], data["start"][1])
            except (ValueError, KeyError, TypeError, IndexError):
                raise ApiError(400, "continue key is not valid") from None
            if list_rv < self._compacted_rv:
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a "
                    "consistent list result. You can start a new list without "
                    "the continue parameter.",
                )
            objects = store.state_at(list_rv)
        else:
            list_rv, objects = self._rv, store.objects
        keys = sorted(
            k for k in objects if (start is None or k > start) and selector.match(objects[k])
        )
        meta: JSON = {"resourceVersion": str(list_rv)}
        if limit and len(keys) > limit:
            keys, rest = keys[:limit], len(keys) - limit
            meta["continue"] = base64.urlsafe_b64encode(
                orjson.dumps({"v": "meta.k8s.io/v1", "rv": list_rv, "start": keys[-1]})
            ).decode()
            if not selector.labels and not selector.fields:
                meta["remainingItemCount"] = rest
        items: list[Any] = [
            {k: v for k, v in objects[key].items() if k not in ("kind", "apiVersion")}
            for key in keys
        ]
        if "continue" not in meta:
            items.extend(_clone(self.list_garbage.get(store.kind.plural, [])))
        return {
            "kind": f"{store.kind.kind}List",
            "apiVersion": store.kind.api_version,
            "metadata": meta,
            "items": items,
        }

    async def _serve_watch(
        self, request: web.Request, store: Store, selector: Selector, query: dict[str, str]
    ) -> web.StreamResponse:
        rv_param = query.get("resourceVersion", "")
        timeout = _float_param(query, "timeoutSeconds")
        bookmarks = _go_bool(query.get("allowWatchBookmarks", ""))
        watcher = Watcher(selector)
        if rv_param in ("", "0"):
            for obj in sorted(
                store.objects.values(), key=lambda o: int(o["metadata"]["resourceVersion"])
            ):
                if selector.match(obj):
                    watcher.push("ADDED", obj)
            if bookmarks and _go_bool(query.get("sendInitialEvents", "")):
                watcher.pending.append(self._bookmark(store.kind))
        else:
            since = _int_param(query, "resourceVersion") or 0
            if since < self._compacted_rv:
                err = ApiError(410, f"too old resource version: {since} ({self._compacted_rv})")
                if self.expired_mode == "http":
                    raise err
                watcher.push("ERROR", err.status())
                watcher.state = "final"
            for ev in store.history if watcher.state == "open" else ():
                if ev.rv > since:
                    watcher.offer(ev)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        store.watchers.add(watcher)
        try:
            await resp.prepare(request)
            await self._pump(watcher, resp, store.kind, timeout, bookmarks)
        except ConnectionError:
            pass  # client went away
        finally:
            store.watchers.discard(watcher)
        if watcher.state in ("drop", "final-drop") and request.transport is not None:
            request.transport.abort()
        return resp

    async def _pump(
        self,
        w: Watcher,
        resp: web.StreamResponse,
        kind: Kind,
        timeout: float | None,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        inf = float("inf")
        deadline = loop.time() + timeout if timeout else inf
        interval = self.bookmark_interval if bookmarks and self.bookmark_interval > 0 else inf
        next_bookmark = loop.time() + interval
        while True:
            if w.state in ("final", "final-drop") and w.pending:
                await resp.write(w.pending.popleft())  # e.g. the ERROR event of an expired RV
                continue
            if w.state != "open":
                return
            now = loop.time()
            wait = inf
            if not self._silenced:  # a silenced stream never times out: it looks hung
                if w.pending:
                    await resp.write(w.pending.popleft())
                    continue
                if now >= deadline:
                    return
                if now >= next_bookmark:
                    await resp.write(self._bookmark(kind))
                    next_bookmark = now + interval
                    continue
                wait = min(deadline, next_bookmark) - now
            w.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.wake.wait(), None if wait == inf else wait)

    def _bookmark(self, kind: Kind) -> bytes:
        return (
            orjson.dumps(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": kind.kind,
                        "apiVersion": kind.api_version,
                        "metadata": {
                            "resourceVersion": str(self._rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                }
            )
            + b"\n"
        )

    async def _evict(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        _require_json(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = request[BODY] if isinstance(request[BODY], dict) else {}
        if (body.get("metadata") or {}).get("name", name) != name:
            raise ApiError(400, "name in URL does not match name in Eviction object")
        store = self.stores["pods"]
        pod = store.get(ns, name)
        options = body.get("deleteOptions") or {}
        phase = (pod.get("status") or {}).get("phase")
        if not pod["metadata"].get("deletionTimestamp") and phase not in (
            "Pending",
            "Succeeded",
            "Failed",
        ):
            labels = pod["metadata"].get("labels") or {}
            pdbs = [
                p
                for p in self.pdbs.values()
                if p.namespace == ns
                and p.match_labels
                and labels_match(
                    [(k, "=", frozenset({v})) for k, v in p.match_labels.items()], labels
                )
            ]
            if len(pdbs) > 1:
                why = (
                    "This pod has more than one PodDisruptionBudget, which the eviction "
                    "subresource does not support."
                )
                raise ApiError(
                    500, f"Internal error occurred: {why}", details={"causes": [{"message": why}]}
                )
            if pdbs and pdbs[0].allowed <= 0:
                raise ApiError(
                    429,
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    details={
                        "causes": [
                            {
                                "reason": "DisruptionBudget",
                                "message": f"The disruption budget {pdbs[0].name} "
                                "needs 1 healthy pods and has 0 currently",
                            }
                        ],
                        "retryAfterSeconds": 10,
                    },
                )
            self._delete(store, ns, name, options, None)  # may raise (preconditions)
            if pdbs:
                pdbs[0].allowed -= 1
        else:
            self._delete(store, ns, name, options, None)
        return _json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            201,
        )

    # ---------------------------------------------------------------- direct state helpers
    def add_node(
        self,
        name: str,
        ready: str = "True",
        *,
        reason: str | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        taints: list[JSON] | None = None,
        unschedulable: bool = False,
        last_transition_time: dt.datetime | None = None,
    ) -> JSON:
        """Create a realistic Node (~6 KB). taints=None derives the lifecycle taints."""
        node = make_node(
            name, ready=None, labels=labels, annotations=annotations, unschedulable=unschedulable
        )
        _set_conditions(node, ready, reason, last_transition_time or _now(), taints is None)
        if taints is not None:
            node["spec"]["taints"] = _clone(taints)
        return _clone(self._create(self.stores["nodes"], node))

    def set_node_ready(
        self,
        name: str,
        status: str,
        reason: str | None = None,
        *,
        update_taints: bool = True,
        at: dt.datetime | None = None,
    ) -> JSON:
        """Like the kubelet / node lifecycle controller. lastTransitionTime moves only on change
        (to `at`, default now: tests that need two transitions in distinct seconds pass it)."""
        store = self.stores["nodes"]
        cur = store.get("", name)
        new = _clone(cur)
        _set_conditions(new, status, reason, at or _now(), update_taints)
        return _clone(self._write(store, "MODIFIED", new, cur) if new != cur else cur)

    def patch_node(self, name: str, patch: JSON) -> JSON:
        """Merge-patch any part of a node (status included), as a controller would."""
        store = self.stores["nodes"]
        cur = store.get("", name)
        return _clone(self._write(store, "MODIFIED", merge_patch(cur, patch), cur))

    def get_node(self, name: str) -> JSON | None:
        return _clone(self.stores["nodes"].objects.get(("", name)))

    def remove_node(self, name: str) -> None:
        store = self.stores["nodes"]
        cur = store.get("", name)
        self._write(store, "DELETED", cur, cur)

    def add_pod(
        self,
        name: str,
        namespace: str,
        node: str,
        owner_kind: str | None = None,
        *,
        owner_name: str | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        mirror: bool = False,
        phase: str = "Running",
        grace: int = 30,
        empty_dir: bool = False,
        finalizers: list[str] | None = None,
        claim: str | None = None,
    ) -> JSON:
        pod = _make_pod(name, namespace, node, labels or {}, annotations or {}, phase, grace)
        if finalizers:
            pod["metadata"]["finalizers"] = list(finalizers)
        if owner_kind:
            owner = owner_name or name.rsplit("-", 1)[0]
            pod["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": owner,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{namespace}/{owner}")),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        if mirror:
            pod["metadata"]["annotations"].update(
                {
                    "kubernetes.io/config.mirror": hashlib.md5(name.encode()).hexdigest(),
                    "kubernetes.io/config.source": "file",
                }
            )
        if empty_dir:
            pod["spec"]["volumes"].append({"name": "scratch", "emptyDir": {}})
        if claim:
            pod["spec"]["volumes"].append(
                {"name": "data", "persistentVolumeClaim": {"claimName": claim}}
            )
        return _clone(self._create(self.stores["pods"], pod))

    def get_pod(self, namespace: str, name: str) -> JSON | None:
        return _clone(self.stores["pods"].objects.get((namespace, name)))

    def delete_pod(self, namespace: str, name: str, grace: int | None = None) -> JSON | None:
        """Graceful delete as the taint manager or PodGC would; returns the pod if still there."""
        store = self.stores["pods"]
        obj, removed = self._delete_pod(store, store.get(namespace, name), grace)
        return None if removed else _clone(obj)

    def remove_pod(self, namespace: str, name: str) -> None:
        store = self.stores["pods"]
        cur = store.get(namespace, name)
        self._write(store, "DELETED", cur, cur)

    def add_volume_attachment(
        self, name: str, node: str, pv: str | None, *, attached: bool = True
    ) -> JSON:
        """A VolumeAttachment (as the attach/detach controller creates it, an attacher marked)."""
        source: JSON = {"persistentVolumeName": pv} if pv else {"inlineVolumeSpec": {}}
        return self._create(
            self.stores["volumeattachments"],
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "VolumeAttachment",
                "metadata": {"name": name},
                "spec": {"attacher": "csi.test", "nodeName": node, "source": source},
                "status": {"attached": attached},
            },
        )

    def remove_volume_attachment(self, name: str) -> None:
        store = self.stores["volumeattachments"]
        cur = store.get("", name)
        self._write(store, "DELETED", cur, cur)

    def add_persistent_volume(self, name: str, claim_namespace: str, claim: str) -> JSON:
        return self._create(
            self.stores["persistentvolumes"],
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "claimRef": {"namespace": claim_namespace, "name": claim},
                },
            },
        )

    def pods_on(self, node: str) -> list[JSON]:
        return [
            _clone(p)
            for _, p in sorted(self.stores["pods"].objects.items())
            if (p.get("spec") or {}).get("nodeName") == node
        ]

    def add_node_lease(
        self, name: str, renew_time: dt.datetime | None = None, duration: int = 40
    ) -> JSON:
        node = self.stores["nodes"].objects.get(("", name))
        meta: JSON = {"name": name, "namespace": "kube-node-lease"}
        if node is not None:
            meta["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
            ]
        lease = {
            "metadata": meta,
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": duration,
                "renewTime": micro_rfc3339(renew_time or _now()),
            },
        }
        return _clone(self._create(self.stores["leases"], lease))

    def renew_node_lease(self, name: str, at: dt.datetime | None = None) -> JSON:
        store = self.stores["leases"]
        cur = store.get("kube-node-lease", name)
        new = merge_patch(cur, {"spec": {"renewTime": micro_rfc3339(at or _now())}})
        return _clone(self._write(store, "MODIFIED", new, cur))

    def get_lease(self, namespace: str, name: str) -> JSON | None:
        return _clone(self.stores["leases"].objects.get((namespace, name)))

    @property
    def events(self) -> list[JSON]:
        return [_clone(e) for e in self.stores["events"].objects.values()]


# ------------------------------------------------------------------------ request helpers
def _require_json(request: web.Request) -> None:
    ctype = (request.headers.get("Content-Type") or "application/json").split(";")[0].strip()
    if ctype.lower() != "application/json":
        raise ApiError(
            415,
            f"the body of the request was in an unknown format - accepted media "
            f"types include: application/json, application/yaml, "
            f'application/vnd.kubernetes.protobuf (got "{ctype}")',
        )


def _patched(request: web.Request, cur: JSON) -> JSON:
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    body = request[BODY]
    if ctype == JSON_PATCH:
        return json_patch(cur, body)
    if ctype in (MERGE_PATCH, STRATEGIC_PATCH):
        if not isinstance(body, dict):
            raise ApiError(400, "the patch body must be a JSON object")
        patched: JSON = merge_patch(cur, body, strategic=ctype == STRATEGIC_PATCH)
        return _clone(patched)
    raise ApiError(
        415,
        "the body of the request was in an unknown format - accepted media "
        "types include: application/json-patch+json, "
        "application/merge-patch+json, application/apply-patch+yaml",
    )


# --------------------------------------------------------------------------- object builders
def _ready(node: JSON) -> str:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return "Unknown"


def _set_conditions(
    node: JSON, ready: str, reason: str | None, when: dt.datetime, update_taints: bool
) -> None:
    if ready not in ("True", "False", "Unknown"):
        raise ValueError(f"bad Ready status {ready!r}")
    old = {c["type"]: c for c in node["status"].get("conditions", [])}
    conditions = []
    for ctype, (ok_reason, ok_msg) in CONDITIONS.items():
        status, why, msg = ("True" if ctype == "Ready" else "False"), ok_reason, ok_msg
        if ready == "Unknown":
            status, why = "Unknown", "NodeStatusUnknown"
            msg = "Kubelet stopped posting node status."
        elif ready == "False" and ctype == "Ready":
            status, why = "False", "KubeletNotReady"
            msg = "container runtime network not ready: NetworkReady=false"
        if ctype == "Ready" and reason:
            why = reason
        prev = old.get(ctype) or {}
        beat = prev.get("lastHeartbeatTime") if ready == "Unknown" else None
        since = prev.get("lastTransitionTime") if prev.get("status") == status else None
        conditions.append(
            {
                "type": ctype,
                "status": status,
                "reason": why,
                "message": msg,
                "lastHeartbeatTime": beat or rfc3339(when),
                "lastTransitionTime": since or rfc3339(when),
            }
        )
    node["status"]["conditions"] = conditions
    if update_taints:
        taints = [t for t in node["spec"].get("taints") or [] if t["key"] not in _LIFECYCLE_TAINTS]
        if ready != "True":
            key = _LIFECYCLE_TAINTS[ready == "Unknown"]
            taints += [
                {"key": key, "effect": "NoSchedule"},
                {"key": key, "effect": "NoExecute", "timeAdded": rfc3339(when)},
            ]
        if taints:
            node["spec"]["taints"] = taints
        else:
            node["spec"].pop("taints", None)


def _make_pod(
    name: str,
    namespace: str,
    node: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    phase: str,
    grace: int,
) -> JSON:
    ip = f"192.168.{len(name) % 250}.{sum(name.encode()) % 250 + 2}"
    tolerations = [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        for key in _LIFECYCLE_TAINTS
    ]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name, **labels},
            "annotations": dict(annotations),
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {
                    "name": "main",
                    "image": "docker.io/library/nginx:1.29.1",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
            "volumes": [
                {
                    "name": "kube-api-access",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}
                        ]
                    },
                }
            ],
            "tolerations": tolerations,
        },
        "status": {
            "phase": phase,
            "hostIP": "10.0.0.1",
            "podIP": ip,
            "startTime": rfc3339(_now()),
            "qosClass": "Burstable",
        },
    }
