"""Hostile pod JSON in the drain: the parser never raises, an unreadable pod is never evicted
or force-deleted, and a drain never reports a node empty while one is listed.

Table-driven cases document each decision; property tests feed arbitrary JSON, randomly
damaged real pods, and whole drains over lists mixing good pods and garbage (against a stub
API on a clock that moves only when the drain sleeps); example tests run the drain against
the fake API server.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from noderecover_testkit.fixtures import make_node

from noderecover.base.clock import FakeClock
from noderecover.base.metrics import MALFORMED_OBJECTS
from noderecover.controller.drainer import DrainContext, Drainer
from noderecover.controller.writes import Evidence
from noderecover.core.machine import Outcome
from noderecover.core.nodes import parse_node, parse_time
from noderecover.core.pods import (
    MALFORMED_POD,
    POD_MALFORMED_REASONS,
    PodObs,
    Step,
    parse_pod,
    plan,
)
from noderecover.kube.client import ApiError, KubeClient, api_error
from tests.builders import T0, pod_json
from tests.fakeapi import FakeKube
from tests.test_nodes_hostile import JSON, JSON_LEAVES, TIMES, VALUES, _has

NODE = "w1"
TIMEOUT = 60.0
MIRROR = "kubernetes.io/config.mirror"


def parse(raw: object) -> PodObs:
    return parse_pod(raw, NODE)


def _at(raw: Any, path: tuple[str | int, ...]) -> Any:
    for p in path:
        raw = raw[p]
    return raw


def _set(*path_and_value: Any) -> Callable[[Any], None]:
    *path, value = path_and_value

    def change(raw: Any) -> None:
        _at(raw, tuple(path[:-1]))[path[-1]] = value

    return change


def _drop(*path: str | int) -> Callable[[Any], None]:
    def change(raw: Any) -> None:
        del _at(raw, path[:-1])[path[-1]]

    return change


def _owners(*refs: Any) -> Callable[[Any], None]:
    return _set("metadata", "ownerReferences", list(refs))


def damaged(change: Callable[[Any], None]) -> Any:
    raw = pod_json("db-0", owner_kind="StatefulSet", deleting=True)
    change(raw)
    return raw


ALL_PLANS = [(silent, elapsed) for silent in (True, False) for elapsed in (0.0, 59.0, 60.0, 1e9)]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("db-0", "not-an-object"),
        (42, "not-an-object"),
        (None, "not-an-object"),
        ([pod_json()], "not-an-object"),
        (damaged(_drop("metadata")), "missing-name"),
        (damaged(_set("metadata", ["db-0"])), "bad-metadata"),
        (damaged(_drop("metadata", "name")), "missing-name"),
        (damaged(_set("metadata", "name", "")), "missing-name"),
        (damaged(_set("metadata", "name", 7)), "missing-name"),
        # Names that would change the URL the eviction or the force-delete goes to.
        (damaged(_set("metadata", "name", "../../nodes/w2")), "missing-name"),
        (damaged(_set("metadata", "name", "..")), "missing-name"),
        (damaged(_drop("metadata", "namespace")), "missing-name"),
        (damaged(_set("metadata", "namespace", {"ns": "default"})), "missing-name"),
        (damaged(_drop("metadata", "uid")), "missing-uid"),
        (damaged(_set("metadata", "uid", None)), "missing-uid"),
        (damaged(_set("metadata", "uid", 12345)), "missing-uid"),
        (damaged(_set("metadata", "uid", "")), "missing-uid"),
        (damaged(_set("metadata", "ownerReferences", "StatefulSet")), "bad-metadata"),
        (damaged(_set("metadata", "ownerReferences", {"kind": "DaemonSet"})), "bad-metadata"),
        (damaged(_owners("DaemonSet")), "bad-metadata"),
        (damaged(_owners({"name": "no-kind"})), "bad-metadata"),
        (damaged(_owners({"kind": 5})), "bad-metadata"),
        (damaged(_owners({"kind": "DaemonSet", "controller": "true"})), "bad-metadata"),
        # Two controllers: which one decides whether the pod is skipped?
        (
            damaged(
                _owners(
                    {"kind": "StatefulSet", "controller": True},
                    {"kind": "DaemonSet", "controller": True},
                )
            ),
            "bad-metadata",
        ),
        (damaged(_set("metadata", "annotations", ["a=b"])), "bad-metadata"),
        (damaged(_set("metadata", "annotations", {MIRROR: 1})), "bad-metadata"),
        (damaged(_set("metadata", "deletionTimestamp", 1_800_000_000)), "bad-metadata"),
        (damaged(_set("metadata", "deletionTimestamp", "soon")), "bad-metadata"),
        (damaged(_set("metadata", "deletionTimestamp", "2026-01-01T00:00:00")), "bad-metadata"),
        (damaged(_set("spec", ["nodeName", NODE])), "bad-spec"),
        (damaged(_drop("spec")), "bad-spec"),
        (damaged(_set("spec", "nodeName", 1)), "bad-spec"),
        (damaged(_set("spec", "nodeName", "w2")), "bad-spec"),  # not on the node drained
    ],
)
def test_what_cannot_be_read_safely(raw: Any, reason: str) -> None:
    pod = parse(raw)
    assert pod.malformed == reason
    assert (pod.owner_kind, pod.mirror, pod.deleting) == ("", False, False)
    # Never evicted, forced or skipped: held, whatever the node and the time.
    assert {plan(pod, silent, elapsed, TIMEOUT) for silent, elapsed in ALL_PLANS} == {Step.HOLD}


@pytest.mark.parametrize(
    ("change", "check"),
    [
        # Fields no decision reads may be anything.
        (_set("status", "Running"), lambda p: p.phase == ""),
        (_set("status", "phase", 5), lambda p: p.phase == ""),
        (_drop("status"), lambda p: p.phase == ""),
        (_set("spec", "volumes", "lots"), lambda p: p.deleting),
        (_set("spec", "containers", None), lambda p: p.deleting),
        (_set("metadata", "labels", ["x"]), lambda p: p.owner_kind == "StatefulSet"),
        (_set("metadata", "annotations", "other", ["x"]), lambda p: not p.mirror),
        (_set("metadata", "ownerReferences", 0, "uid", None), lambda p: p.deleting),
        # Absent optional fields.
        (_drop("metadata", "ownerReferences"), lambda p: p.owner_kind == ""),
        (_set("metadata", "ownerReferences", None), lambda p: p.owner_kind == ""),
        (_set("metadata", "annotations", None), lambda p: not p.mirror),
        (_drop("metadata", "deletionTimestamp"), lambda p: not p.deleting),
        # No controller: the first owner's kind, as before.
        (_owners({"kind": "Job"}, {"kind": "DaemonSet"}), lambda p: p.owner_kind == "Job"),
        (
            _owners(
                {"kind": "Job", "controller": False}, {"kind": "DaemonSet", "controller": True}
            ),
            lambda p: p.owner_kind == "DaemonSet",
        ),
        (_set("metadata", "annotations", {MIRROR: ""}), lambda p: p.mirror),
    ],
)
def test_what_is_tolerated(change: Callable[[Any], None], check: Callable[[PodObs], bool]) -> None:
    pod = parse(damaged(change))
    assert pod.malformed is None
    assert check(pod)


def test_without_a_node_the_binding_is_not_checked() -> None:
    raw = pod_json(node="w2")
    assert parse_pod(raw).malformed is None
    assert parse_pod(raw, "w2").malformed is None
    assert parse_pod(raw, NODE).malformed == "bad-spec"


# -------------------------------------------------------------------------------- properties
POD_KEYS = st.sampled_from(
    [
        "metadata",
        "spec",
        "status",
        "name",
        "namespace",
        "uid",
        "ownerReferences",
        "kind",
        "controller",
        "annotations",
        "deletionTimestamp",
        "nodeName",
        "phase",
        MIRROR,
    ]
)
POD_SHAPED = st.recursive(
    JSON_LEAVES | st.sampled_from(["DaemonSet", NODE, "default", "2026-01-01T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(POD_KEYS, inner, max_size=5),
    max_leaves=40,
)


def check_parsed(pod: PodObs, raw: object) -> None:
    """What every result satisfies, malformed or not."""
    steps = {plan(pod, silent, elapsed, TIMEOUT) for silent, elapsed in ALL_PLANS}
    if pod.malformed is not None:
        assert pod.malformed in POD_MALFORMED_REASONS
        assert steps == {Step.HOLD}
        assert (pod.owner_kind, pod.mirror, pod.deleting) == ("", False, False)
        return
    assert Step.HOLD not in steps
    assert pod.name and pod.namespace and pod.uid
    assert "/" not in pod.name + pod.namespace
    # Whatever was accepted is what the object says (read independently of the parser).
    assert isinstance(raw, dict)
    meta = raw["metadata"]
    assert (pod.namespace, pod.name, pod.uid) == (meta["namespace"], meta["name"], meta["uid"])
    assert raw["spec"]["nodeName"] == NODE
    assert pod.deleting is (parse_time(meta.get("deletionTimestamp")) is not None)
    assert pod.mirror is (MIRROR in (meta.get("annotations") or {}))
    owners = meta.get("ownerReferences") or []
    controllers = [o["kind"] for o in owners if o.get("controller") is True]
    assert len(controllers) <= 1
    assert pod.owner_kind == (controllers or [o["kind"] for o in owners] or [""])[0]


@given(JSON | POD_SHAPED)
def test_arbitrary_json_never_crashes_the_parser(raw: object) -> None:
    check_parsed(parse(raw), raw)
    parse_pod(raw)  # nor without a node


# Places in a real pod where damage matters (and a few where it does not).
PATHS: list[tuple[str | int, ...]] = [
    (),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "ownerReferences"),
    ("metadata", "ownerReferences", 0),
    ("metadata", "ownerReferences", 1),
    ("metadata", "ownerReferences", 1, "kind"),
    ("metadata", "ownerReferences", 1, "controller"),
    ("metadata", "ownerReferences", 0, "controller"),
    ("metadata", "annotations"),
    ("metadata", "annotations", MIRROR),
    ("metadata", "deletionTimestamp"),
    ("metadata", "labels"),
    ("spec",),
    ("spec", "nodeName"),
    ("spec", "volumes"),
    ("status",),
    ("status", "phase"),
]
POD_VALUES = VALUES | st.sampled_from(["DaemonSet", NODE, "w2", "", "a/b", True, False])


@st.composite
def damaged_pods(draw: st.DrawFn, name: str = "db-0") -> Any:
    """A real pod (random owner, deleting, mirror) with 1-4 random injuries."""
    raw: Any = pod_json(
        name,
        owner_kind=draw(st.sampled_from([None, "ReplicaSet", "DaemonSet", "StatefulSet"])),
        deleting=draw(st.booleans()),
        mirror=draw(st.booleans()),
    )
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS))
        if not path:
            return draw(POD_VALUES)  # not a pod at all
        parent = raw
        for p in path[:-1]:
            parent = parent[p] if _has(parent, p) else None
        last, how = path[-1], draw(st.sampled_from(["set", "drop", "duplicate"]))
        if how == "set" and (isinstance(parent, dict) or _has(parent, last)):
            parent[last] = draw(POD_VALUES | TIMES)
        elif how == "drop" and _has(parent, last):
            del parent[last]
        elif how == "duplicate" and isinstance(parent, list) and _has(parent, last):
            parent.append(copy.deepcopy(parent[int(last)]))
    return raw


@given(damaged_pods())
def test_damaged_pods_are_read_exactly_or_not_at_all(raw: Any) -> None:
    check_parsed(parse(copy.deepcopy(raw)), raw)


class AutoClock(FakeClock):
    """Time moves only when the code under test sleeps: no real sleeps, no driver task."""

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


class StubPodApi:
    """Serves the pod LIST of one node from `items` (paged); an accepted eviction or force
    delete of a pod it knows removes it (as a quick kubelet or PodGC would). Every write is
    recorded; writes to anything but a readable pod are what the tests look for."""

    def __init__(self, items: list[Any], page: int, readable: dict[str, Any]) -> None:
        self.items = items
        self.page = page
        self.readable = readable  # URL path of a pod -> its raw object (an item, by identity)
        self.writes: list[tuple[str, str, Any]] = []
        self.lists = 0

    async def request(
        self, method: str, path: str, *, query: Any = None, body: Any = None, **kw: Any
    ) -> dict[str, Any]:
        if method == "GET":
            self.lists += 1
            assert self.lists < 5000, "the drain loops without end"
            start = int(dict(query or []).get("continue") or 0)
            rest = self.items[start : start + self.page]
            more = start + self.page < len(self.items)
            return {"metadata": {"continue": str(start + self.page) if more else ""}, "items": rest}
        self.writes.append((method, path, body))
        target = self.readable.get(path.removesuffix("/eviction"))
        if target is not None and target in self.items:
            self.items.remove(target)
        return {}


def pod_path(raw: dict[str, Any]) -> str:
    meta = raw["metadata"]
    ns, name = quote(meta["namespace"], safe=""), quote(meta["name"], safe="")
    return f"/api/v1/namespaces/{ns}/pods/{name}"


def ctx_for(silent: bool, blocked: list[str] | None = None) -> DrainContext:
    """A node that stays unhealthy; `silent`: its kubelet is gone (Ready=Unknown, Lease
    stale), else alive (Ready=False)."""

    async def evidence() -> Evidence:
        # A read of the node answered just now (the write path checks its age on the
        # drainer's clock: "now" is never older than that).
        raw = make_node(NODE, ready="Unknown" if silent else "False")
        fresh = parse_node(raw, frozenset(), frozenset())
        return Evidence(dead=silent, fresh=fresh, node=NODE, answered=float("inf"))

    return DrainContext(
        evidence=evidence,
        blocked=(blocked if blocked is not None else []).append,
    )


@st.composite
def garbage_items(draw: st.DrawFn) -> list[Any]:
    """Up to 3 items: damaged pods (distinct names), arbitrary JSON, pod-shaped JSON."""
    n = draw(st.integers(min_value=0, max_value=3))
    return [draw(damaged_pods(f"bad-{i}") | JSON | POD_SHAPED) for i in range(n)]


GOOD_PODS = st.lists(
    st.tuples(
        st.sampled_from([None, "ReplicaSet", "DaemonSet", "StatefulSet"]),
        st.booleans(),  # deleting
        st.booleans(),  # mirror
    ),
    max_size=5,
)


@given(
    good=GOOD_PODS,
    garbage=garbage_items(),
    silent=st.booleans(),
    overdue=st.booleans(),
    may_force=st.booleans(),
    page=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_drain_never_touches_an_unreadable_pod_nor_finishes_while_one_is_listed(
    good: list[tuple[str | None, bool, bool]],
    garbage: list[Any],
    silent: bool,
    overdue: bool,
    may_force: bool,
    page: int,
    seed: int,
) -> None:
    goods = [
        pod_json(f"good-{i}", owner_kind=owner, deleting=deleting, mirror=mirror)
        for i, (owner, deleting, mirror) in enumerate(good)
    ]
    items = [*goods, *garbage]
    unreadable = [g for g in items if parse(g).malformed is not None]
    # Garbage can happen to be a readable pod (a harmless injury): then it is drained too.
    readable = {pod_path(g): g for g in items if parse(g).malformed is None}
    rng = random.Random(seed)
    rng.shuffle(items)
    api = StubPodApi(items, page, readable)
    kube: Any = api
    drainer = Drainer(kube, AutoClock(start_wall=T0), drain_timeout=TIMEOUT, rng=rng)
    started = T0 - (TIMEOUT + 1 if overdue else 0)
    outcome = asyncio.run(drainer.drain(NODE, started, may_force, ctx_for(silent))).outcome

    # Never "drained" while an unreadable pod is listed (it still is: nothing removes it).
    # A live kubelet's drain that outlasts its timeout ends BLOCKED (nothing is forced on it).
    extra = set() if may_force else {Outcome.NEEDS_FENCE}
    if not silent:
        extra.add(Outcome.BLOCKED)
    else:
        # The stub finishes an accepted eviction at once, like a quick kubelet: on a node
        # that looked dead that is a sign of life, and the drain stops (never OK by force).
        extra.add(Outcome.HEALTHY)
    if unreadable:
        assert outcome in {Outcome.FAILED, *extra}
        assert all(u in api.items for u in unreadable)
    else:
        assert outcome in {Outcome.OK, *extra}
    # Every write went to a readable pod; a force-delete guarded by that pod's own uid.
    for method, path, body in api.writes:
        target = readable.get(path.removesuffix("/eviction"))
        assert target is not None, (method, path)
        if method == "DELETE":
            assert may_force
            assert silent, "a force-delete on a live kubelet"
            assert body["preconditions"]["uid"] == target["metadata"]["uid"]
        else:
            assert (method, path) == ("POST", pod_path(target) + "/eviction")


# ------------------------------------------------------------------ the drain, with the fake API
async def drain_once(
    client: KubeClient, *, silent: bool = True, overdue: bool = True
) -> tuple[Outcome, list[str]]:
    blocked: list[str] = []
    clock = AutoClock(start_wall=T0)
    drainer = Drainer(client, clock, drain_timeout=TIMEOUT, rng=random.Random(1))
    started = T0 - (TIMEOUT + 1 if overdue else 0)
    done = await drainer.drain(NODE, started, True, ctx_for(silent, blocked))
    return done.outcome, blocked


def pod_writes(kube: FakeKube) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in kube.requests if r.method != "GET"]


def _without_uid() -> Any:
    raw = pod_json("ghost-0", owner_kind="StatefulSet")
    del raw["metadata"]["uid"]
    return raw


def _owners_not_a_list() -> Any:
    raw = pod_json("ghost-0", owner_kind=None)
    raw["metadata"]["ownerReferences"] = {"kind": "DaemonSet", "controller": True}
    return raw


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda: "ghost-0", "not-an-object", id="string"),
        pytest.param(lambda: ["ghost-0"], "not-an-object", id="list"),
        pytest.param(_without_uid, "missing-uid", id="no-uid"),
        pytest.param(_owners_not_a_list, "bad-metadata", id="owners-not-a-list"),
    ],
)
async def test_garbage_in_the_pod_list_holds_the_drain_until_it_is_gone(
    kube: FakeKube, client: KubeClient, make: Callable[[], Any], expected: str
) -> None:
    kube.add_node(NODE)
    kube.add_pod("web-1", "default", NODE, "ReplicaSet")
    kube.add_pod("proxy-x", "kube-system", NODE, "DaemonSet")
    kube.list_garbage["pods"] = [make()]
    counted = MALFORMED_OBJECTS.labels("pods", expected)._value.get()

    outcome, blocked = await drain_once(client)
    # The readable pod was drained (silent, overdue: forced), the unreadable one held it.
    assert outcome is Outcome.FAILED
    assert kube.get_pod("default", "web-1") is None
    assert all("ghost" not in path for _, path in pod_writes(kube))
    assert [p for _, p in pod_writes(kube) if "/pods/" in p] == [
        "/api/v1/namespaces/default/pods/web-1"
    ]
    assert kube.get_pod("kube-system", "proxy-x") is not None
    # Counted once for this drain attempt, however many times it listed the node.
    assert MALFORMED_OBJECTS.labels("pods", expected)._value.get() == counted + 1
    assert blocked == [MALFORMED_POD]

    # A retry while it is still listed: held again; once the list is clean: drained.
    assert (await drain_once(client))[0] is Outcome.FAILED
    kube.list_garbage.clear()
    assert (await drain_once(client))[0] is Outcome.OK


async def test_an_unreadable_pod_holds_the_drain_on_a_live_node_too(
    kube: FakeKube, client: KubeClient
) -> None:
    """Ready=False before the drain timeout: the readable pods are evicted, not forced, and
    the drain still does not finish while the unreadable one is listed."""
    kube.add_node(NODE)
    kube.add_pod("web-1", "default", NODE, "ReplicaSet")
    bad = pod_json("ghost-0")
    bad["metadata"]["deletionTimestamp"] = "any minute now"
    kube.list_garbage["pods"] = [bad]
    outcome, _ = await drain_once(client, silent=False, overdue=False)
    assert outcome is Outcome.FAILED
    assert [m for m, p in pod_writes(kube)] == ["POST"]  # web-1's eviction, nothing else
    assert not kube.requests_matching("DELETE", "/pods/")


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": {}},  # no items: the API server always sends []
        {"metadata": {}, "items": None},
        {"metadata": {}, "items": {"web-1": {}}},
        {"metadata": {}, "items": "pods"},
        {"metadata": [], "items": []},
        {"items": []},  # a bare JSON array `[]`, as kube.request hands it over
        {"metadata": None, "items": []},
        {"metadata": {"continue": 5}, "items": []},
    ],
)
async def test_an_unreadable_list_is_an_error_never_an_empty_node(body: dict[str, Any]) -> None:
    class Api:
        async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
            assert method == "GET", "nothing may be written"
            return body

    api: Any = Api()
    drainer = Drainer(api, AutoClock(start_wall=T0), drain_timeout=TIMEOUT)
    counted = MALFORMED_OBJECTS.labels("pods", "bad-list")._value.get()
    with pytest.raises(ApiError, match="BadList"):
        await drainer.drain(NODE, T0 - 3600, True, ctx_for(True))
    assert MALFORMED_OBJECTS.labels("pods", "bad-list")._value.get() == counted + 1


async def test_a_list_that_pages_forever_is_an_error() -> None:
    class Api:
        async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
            return {"metadata": {"continue": "again"}, "items": []}

    api: Any = Api()
    drainer = Drainer(api, AutoClock(start_wall=T0), drain_timeout=TIMEOUT)
    with pytest.raises(ApiError, match="pages"):
        await drainer.list_pods(NODE)


async def test_an_expired_continue_token_starts_the_pod_list_over() -> None:
    """A 410 on a continue token: the LIST starts over, and pods of the abandoned pages are
    not counted twice (as the watcher's LIST does)."""
    pages: list[dict[str, Any] | ApiError] = [
        {"metadata": {"continue": "t1"}, "items": [pod_json("a", node=NODE)]},
        api_error(410, "Expired", "continue token expired"),
        {"metadata": {"continue": "t2"}, "items": [pod_json("a", node=NODE)]},
        {"metadata": {}, "items": [pod_json("b", node=NODE)]},
    ]
    queries: list[dict[str, str]] = []

    class Api:
        async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
            queries.append(dict(kw["query"]))
            page = pages.pop(0)
            if isinstance(page, ApiError):
                raise page
            return page

    api: Any = Api()
    drainer = Drainer(api, AutoClock(start_wall=T0), drain_timeout=TIMEOUT)
    pods = await drainer.list_pods(NODE)
    assert sorted(p.name for p in pods) == ["a", "b"]
    assert [q.get("continue") for q in queries] == [None, "t1", None, "t2"]
    assert all(q["fieldSelector"] == f"spec.nodeName={NODE}" for q in queries)
