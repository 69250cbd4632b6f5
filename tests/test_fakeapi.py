"""Tests of the fake kube-apiserver itself (plain aiohttp and kubernetes_asyncio ApiClient)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from tests.fakeapi import JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, FakeKube

JSON = dict[str, Any]
NODES = "/api/v1/nodes"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
MERGE = {"Content-Type": MERGE_PATCH}


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.05, kubelet_finish_delay=0.02) as k:
        yield k


@pytest.fixture
async def http(kube: FakeKube) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(kube.base_url, timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


@pytest.fixture
async def api(kube: FakeKube) -> AsyncIterator[ApiClient]:
    cfg = Configuration(host=kube.base_url)
    cfg.api_key = {"BearerToken": "secret"}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    async with ApiClient(configuration=cfg) as client:
        client.user_agent = "noderecover-test/1"
        yield client


async def call(
    api: ApiClient,
    path: str,
    method: str = "GET",
    query: Any = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """How the controller calls the API: raw response, bounded."""
    resp: aiohttp.ClientResponse = await api.call_api(
        path,
        method,
        query_params=query or [],
        header_params=dict(headers or {}),
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=aiohttp.ClientTimeout(total=5),
    )
    return resp


async def get_json(http: aiohttp.ClientSession, path: str, status: int = 200, **kw: Any) -> JSON:
    async with http.get(path, **kw) as r:
        assert r.status == status, await r.text()
        data: JSON = orjson.loads(await r.read())
        return data


async def send(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    status: int = 200,
    ctype: str = "application/json",
    **kw: Any,
) -> JSON:
    data = None if body is None else orjson.dumps(body)
    async with http.request(method, path, data=data, headers={"Content-Type": ctype}, **kw) as r:
        assert r.status == status, await r.text()
        out: JSON = orjson.loads(await r.read())
        return out


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def events(resp: aiohttp.ClientResponse, n: int, timeout: float = 2.0) -> list[JSON]:
    out: list[JSON] = []
    async with asyncio.timeout(timeout):
        for _ in range(n):
            line = await resp.content.readline()
            assert line, f"stream ended after {out}"
            out.append(orjson.loads(line))
    return out


async def drain(resp: aiohttp.ClientResponse, timeout: float = 2.0) -> list[JSON]:
    """Read until the server ends the stream cleanly."""
    async with asyncio.timeout(timeout):
        return [orjson.loads(line) async for line in resp.content if line.strip()]


def assert_status(body: JSON, code: int, reason: str) -> None:
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert (body["status"], body["code"], body["reason"]) == ("Failure", code, reason)
    assert body["message"]


# ---------------------------------------------------------------------------- basics / nodes
async def test_lifecycle_base_url_and_stop() -> None:
    kube = FakeKube()
    await kube.start()
    url = kube.base_url
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}{NODES}") as r:
            assert r.status == 200
        await kube.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(f"{url}{NODES}") as r:
                pass


async def test_node_list_shape(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1")
    kube.add_node("n2", ready="Unknown")
    body = await get_json(http, NODES)
    assert body["kind"] == "NodeList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"] == kube.resource_version == "2"
    assert [n["metadata"]["name"] for n in body["items"]] == ["n1", "n2"]
    assert "kind" not in body["items"][0]  # like the real server, list items carry no TypeMeta
    node = await get_json(http, f"{NODES}/n1")
    assert node["kind"] == "Node" and node["metadata"]["resourceVersion"] == "1"
    assert len(node["metadata"]["uid"]) == 36 and node["metadata"]["creationTimestamp"][-1] == "Z"
    assert 4000 < len(orjson.dumps(node)) < 8000
    conds = {c["type"]: c for c in body["items"][1]["status"]["conditions"]}
    assert set(conds) == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure"}
    assert {c["status"] for c in conds.values()} == {"Unknown"}
    assert conds["Ready"]["reason"] == "NodeStatusUnknown"
    assert {t["key"] for t in body["items"][1]["spec"]["taints"]} == {
        "node.kubernetes.io/unreachable"
    }


async def test_missing_objects_and_paths_are_status_404(http: aiohttp.ClientSession) -> None:
    body = await get_json(http, f"{NODES}/ghost", 404)
    assert_status(body, 404, "NotFound")
    assert body["message"] == 'nodes "ghost" not found'
    assert body["details"] == {"name": "ghost", "kind": "nodes"}
    lease = await get_json(http, f"{LEASES}/x", 404)
    assert lease["details"]["group"] == "coordination.k8s.io"
    assert_status(await get_json(http, "/api/v1/widgets", 404), 404, "NotFound")


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=db", ["a"]),
        ("tier==db", ["a"]),
        ("tier!=db", ["b", "c"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c"]),
        ("tier in (db, web)", ["a", "b"]),
        ("tier notin (db)", ["b", "c"]),
        ("tier,zone=z1", ["a", "b"]),
        ("tier=web,zone=z1", ["b"]),
    ],
)
async def test_label_selectors(
    kube: FakeKube, http: aiohttp.ClientSession, selector: str, expected: list[str]
) -> None:
    kube.add_node("a", labels={"tier": "db", "zone": "z1"})
    kube.add_node("b", labels={"tier": "web", "zone": "z1"})
    kube.add_node("c", labels={"zone": "z2"})
    body = await get_json(http, NODES, params={"labelSelector": selector})
    assert [n["metadata"]["name"] for n in body["items"]] == expected


async def test_bad_selectors_are_400(http: aiohttp.ClientSession) -> None:
    assert_status(
        await get_json(http, NODES, 400, params={"fieldSelector": "spec.nodeName=x"}),
        400,
        "BadRequest",
    )
    assert_status(
        await get_json(http, NODES, 400, params={"labelSelector": "a in b"}), 400, "BadRequest"
    )


async def test_pagination_is_a_consistent_snapshot(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    for i in range(5):
        kube.add_node(f"n{i}")
    first = await get_json(http, NODES, params={"limit": "2"})
    token = first["metadata"]["continue"]
    assert first["metadata"]["remainingItemCount"] == 3
    kube.remove_node("n3")
    kube.add_node("n9")
    kube.set_node_ready("n4", "False")
    pages = [first]
    while token:
        pages.append(await get_json(http, NODES, params={"limit": "2", "continue": token}))
        token = pages[-1]["metadata"].get("continue")
    items = [n for p in pages for n in p["items"]]
    assert [n["metadata"]["name"] for n in items] == ["n0", "n1", "n2", "n3", "n4"]
    assert {p["metadata"]["resourceVersion"] for p in pages} == {"5"}
    assert items[4]["status"]["conditions"][-1]["status"] == "True"  # state as of RV 5
    kube.compact()
    expired = await get_json(
        http, NODES, 410, params={"limit": "2", "continue": first["metadata"]["continue"]}
    )
    assert_status(expired, 410, "Expired")


async def test_put_requires_matching_resource_version(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    node = kube.add_node("n1")
    kube.set_node_ready("n1", "False")  # bumps RV: `node` is now stale
    node["spec"]["unschedulable"] = True
    conflict = await send(http, "PUT", f"{NODES}/n1", node, 409)
    assert_status(conflict, 409, "Conflict")
    assert "the object has been modified" in conflict["message"]
    fresh = await get_json(http, f"{NODES}/n1")
    fresh["spec"]["unschedulable"] = True
    fresh["status"]["conditions"] = []  # status is ignored on the main resource
    out = await send(http, "PUT", f"{NODES}/n1", fresh)
    assert out["spec"]["unschedulable"] is True and len(out["status"]["conditions"]) == 4
    assert int(out["metadata"]["resourceVersion"]) > int(fresh["metadata"]["resourceVersion"])
    assert out["metadata"]["uid"] == node["metadata"]["uid"]


async def test_merge_patch_and_noop(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1", annotations={"a": "1", "b": "2"})
    patch = {"metadata": {"annotations": {"a": None, "c": "3"}}, "spec": {"unschedulable": True}}
    out = await send(http, "PATCH", f"{NODES}/n1", patch, ctype=MERGE_PATCH)
    assert "a" not in out["metadata"]["annotations"]
    assert out["metadata"]["annotations"]["c"] == "3" and out["spec"]["unschedulable"] is True
    rv = kube.resource_version
    again = await send(http, "PATCH", f"{NODES}/n1", patch, ctype=MERGE_PATCH)
    assert again["metadata"]["resourceVersion"] == rv == kube.resource_version  # no-op write
    assert [r.content_type for r in kube.requests_matching("PATCH", "/nodes/n1$")] == [
        MERGE_PATCH,
        MERGE_PATCH,
    ]


async def test_patch_with_stale_resource_version_conflicts(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("n1")
    patch = {"metadata": {"resourceVersion": "1"}, "spec": {"unschedulable": True}}
    await send(http, "PATCH", f"{NODES}/n1", patch, ctype=MERGE_PATCH)
    assert_status(
        await send(http, "PATCH", f"{NODES}/n1", patch, 409, ctype=MERGE_PATCH), 409, "Conflict"
    )


async def test_strategic_patch_merges_keyed_lists(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("n1", taints=[{"key": "a", "effect": "NoSchedule"}])
    patch = {
        "metadata": {"finalizers": ["x"]},
        "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
    }
    out = await send(http, "PATCH", f"{NODES}/n1", patch, ctype=STRATEGIC_PATCH)
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoExecute"}]  # taints are atomic
    status_patch = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    out = await send(http, "PATCH", f"{NODES}/n1/status", status_patch, ctype=STRATEGIC_PATCH)
    conds = {c["type"]: c["status"] for c in out["status"]["conditions"]}
    assert conds == {
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
        "Ready": "False",
    }
    assert kube.requests[-1].content_type == STRATEGIC_PATCH


async def test_json_patch(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1")
    ops = [{"op": "test", "path": "/spec/unschedulable", "value": True}]
    failed = await send(http, "PATCH", f"{NODES}/n1", ops, 422, ctype=JSON_PATCH)
    assert_status(failed, 422, "Invalid")
    ops = [
        {"op": "add", "path": "/metadata/labels/x~1y", "value": "1"},
        {"op": "replace", "path": "/spec/podCIDR", "value": "10.9.0.0/24"},
        {"op": "remove", "path": "/metadata/labels/kubernetes.io~1os"},
    ]
    out = await send(http, "PATCH", f"{NODES}/n1", ops, ctype=JSON_PATCH)
    assert out["metadata"]["labels"]["x/y"] == "1" and out["spec"]["podCIDR"] == "10.9.0.0/24"
    assert "kubernetes.io/os" not in out["metadata"]["labels"]


async def test_patch_with_plain_json_is_415(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1")
    body = await send(http, "PATCH", f"{NODES}/n1", {"spec": {}}, 415)
    assert_status(body, 415, "UnsupportedMediaType")


async def test_delete_node_preconditions(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    node = kube.add_node("n1")
    for pre in ({"uid": "other"}, {"resourceVersion": "999"}):
        body = await send(http, "DELETE", f"{NODES}/n1", {"preconditions": pre}, 409)
        assert_status(body, 409, "Conflict")
        assert "Precondition failed" in body["message"]
    uid = node["metadata"]["uid"]
    ok = await send(http, "DELETE", f"{NODES}/n1", {"preconditions": {"uid": uid}})
    assert ok["status"] == "Success" and ok["details"]["uid"] == uid
    assert kube.get_node("n1") is None
    assert_status(await send(http, "DELETE", f"{NODES}/n1", None, 404), 404, "NotFound")


async def test_create_node_and_generate_name(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "new"}}
    created = await send(http, "POST", NODES, body, 201)
    assert created["metadata"]["resourceVersion"] == kube.resource_version
    assert_status(await send(http, "POST", NODES, body, 409), 409, "AlreadyExists")
    ev = await send(
        http,
        "POST",
        "/api/v1/namespaces/default/events",
        {"metadata": {"generateName": "n1."}, "reason": "Cordoned"},
        201,
    )
    assert ev["metadata"]["name"].startswith("n1.") and len(ev["metadata"]["name"]) == 8


# ------------------------------------------------------------------------------------ watch
async def test_watch_from_resource_version_replays_history(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("n1")
    rv = (await get_json(http, NODES))["metadata"]["resourceVersion"]
    kube.add_node("n2")
    kube.set_node_ready("n1", "Unknown")
    kube.remove_node("n2")
    async with http.get(NODES, params={"watch": "true", "resourceVersion": rv}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        got = await events(r, 3)
        kube.patch_node("n1", {"metadata": {"labels": {"late": "1"}}})
        got += await events(r, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [
        ("ADDED", "n2"),
        ("MODIFIED", "n1"),
        ("DELETED", "n2"),
        ("MODIFIED", "n1"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in got]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert got[0]["object"]["kind"] == "Node"


async def test_watch_without_resource_version_sends_synthetic_added(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("a")
    kube.add_node("b")
    kube.set_node_ready("a", "False")
    for rv in ("0", None):
        params = {"watch": "1"} | ({"resourceVersion": rv} if rv else {})
        async with http.get(NODES, params=params) as r:
            got = await events(r, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [
            ("ADDED", "b"),
            ("ADDED", "a"),
        ]  # current state, in resourceVersion order


async def test_bookmarks_and_timeout(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1")
    params = {
        "watch": "true",
        "resourceVersion": "1",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "0.3",
    }
    started = time.monotonic()
    async with http.get(NODES, params=params) as r:
        got = await drain(r)
    assert 0.25 < time.monotonic() - started < 1.5
    assert len(got) >= 3 and {e["type"] for e in got} == {"BOOKMARK"}
    assert got[0]["object"] == {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1", "annotations": {"k8s.io/initial-events-end": "true"}},
    }
    params.pop("allowWatchBookmarks")
    async with http.get(NODES, params=params) as r:
        assert await drain(r) == []


async def test_bookmark_carries_current_resource_version(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("n1")
    params = {"watch": "true", "resourceVersion": "1", "allowWatchBookmarks": "true"}
    async with http.get(NODES, params=params) as r:
        await events(r, 1)
        kube.add_node_lease("n1")  # another kind bumps the global RV
        bookmark = (await events(r, 1))[0]
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["resourceVersion"] == kube.resource_version == "2"


async def test_watch_selector_transitions(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1", labels={"pool": "db"})
    params = {"watch": "true", "resourceVersion": "1", "labelSelector": "pool=db"}
    async with http.get(NODES, params=params) as r:
        kube.add_node("other")
        kube.patch_node("n1", {"metadata": {"labels": {"pool": "web"}}})
        kube.patch_node("n1", {"metadata": {"labels": {"pool": "db"}}})
        got = await events(r, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [
        ("DELETED", "n1"),
        ("ADDED", "n1"),
    ]


@pytest.mark.parametrize("mode", ["http", "event"])
async def test_watch_after_compaction_expires(
    kube: FakeKube, http: aiohttp.ClientSession, mode: str
) -> None:
    kube.expired_mode = mode
    kube.add_node("n1")
    kube.add_node("n2")
    kube.compact()
    async with http.get(NODES, params={"watch": "true", "resourceVersion": "2"}) as r:
        assert r.status == 200 and await events(r, 0) == []  # at the compacted RV is fine
    async with http.get(NODES, params={"watch": "true", "resourceVersion": "1"}) as r:
        if mode == "http":
            assert r.status == 410
            assert_status(orjson.loads(await r.read()), 410, "Expired")
        else:
            assert r.status == 200
            got = await drain(r)
            assert [e["type"] for e in got] == ["ERROR"]
            assert_status(got[0]["object"], 410, "Expired")
            assert got[0]["object"]["message"] == "too old resource version: 1 (2)"


async def test_silenced_watch_sends_nothing_then_resumes(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("n1")
    params = {
        "watch": "true",
        "resourceVersion": "1",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "0.1",
    }
    async with http.get(NODES, params=params) as r:
        kube.silence_watches(True)
        kube.add_node("n2")
        with pytest.raises(TimeoutError):
            await events(r, 1, timeout=0.3)  # no event, no bookmark, no timeout close
        assert kube.watch_count() == 1
        kube.silence_watches(False)
        got = await drain(r)
    assert got[0]["type"] == "ADDED" and got[0]["object"]["metadata"]["name"] == "n2"


async def test_drop_watches_aborts_streams(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1")
    async with http.get(NODES, params={"watch": "true"}) as r:
        await events(r, 1)
        assert kube.watch_count() == 1
        kube.drop_watches()
        with pytest.raises(aiohttp.ClientPayloadError):
            await drain(r)
    assert kube.watch_count() == 0


async def test_stop_closes_watches_promptly() -> None:
    kube = FakeKube(bookmark_interval=0)
    await kube.start()
    async with (
        aiohttp.ClientSession(kube.base_url) as s,
        s.get(NODES, params={"watch": "true"}) as r,
    ):
        started = time.monotonic()
        await kube.stop()
        assert await drain(r) == []
        assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("then", ["open", "close", "drop"])
async def test_inject_watch_bytes(kube: FakeKube, http: aiohttp.ClientSession, then: str) -> None:
    kube.add_node("n1")
    async with http.get(NODES, params={"watch": "true", "resourceVersion": "1"}) as r:
        await wait_until(lambda: kube.watch_count() == 1)
        assert kube.inject_watch_bytes("nodes", b"garbage\n{half", then) == 1
        assert await r.content.readline() == b"garbage\n"
        if then == "open":
            kube.add_node("n2")
            assert (await r.content.readline()).startswith(b'{half{"type":"ADDED"')
        elif then == "close":
            assert await r.content.read() == b"{half"  # then a clean end of the stream
        else:
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.content.read()


async def test_client_disconnect_unregisters_watch(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("n1")
    async with http.get(NODES, params={"watch": "true", "allowWatchBookmarks": "true"}) as r:
        await events(r, 1)
    await wait_until(lambda: kube.watch_count() == 0)
    assert (await get_json(http, NODES))["items"][0]["metadata"]["name"] == "n1"


# --------------------------------------------------------------------------------------- pods
async def test_pod_lists_by_node(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_pod("web-1", "default", "n1", "ReplicaSet")
    kube.add_pod("db-0", "data", "n1", "StatefulSet")
    kube.add_pod("db-1", "data", "n2", "StatefulSet")
    body = await get_json(http, "/api/v1/pods", params={"fieldSelector": "spec.nodeName=n1"})
    assert body["kind"] == "PodList"
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in body["items"]] == [
        ("data", "db-0"),
        ("default", "web-1"),
    ]
    body = await get_json(
        http,
        "/api/v1/namespaces/data/pods",
        params={"fieldSelector": "spec.nodeName=n1,metadata.name=db-0"},
    )
    assert [p["metadata"]["name"] for p in body["items"]] == ["db-0"]
    assert body["items"][0]["metadata"]["ownerReferences"][0]["name"] == "db"
    pages = await get_json(http, "/api/v1/pods", params={"limit": "1"})
    assert len(pages["items"]) == 1 and pages["metadata"]["continue"]
    assert [p["metadata"]["name"] for p in kube.pods_on("n1")] == ["db-0", "web-1"]


async def test_graceful_delete_finished_by_live_kubelet(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_pod("db-0", "data", "n1", grace=30)
    path = "/api/v1/namespaces/data/pods/db-0"
    async with http.get(
        "/api/v1/namespaces/data/pods", params={"watch": "true", "resourceVersion": "1"}
    ) as w:
        before = dt.datetime.now(dt.UTC)
        pod = await send(http, "DELETE", path, {"gracePeriodSeconds": 10})
        deadline = dt.datetime.fromisoformat(pod["metadata"]["deletionTimestamp"])
        assert 8 <= (deadline - before).total_seconds() <= 11  # a deadline, not the request time
        assert pod["metadata"]["deletionGracePeriodSeconds"] == 10
        got = await events(w, 2)
    assert [e["type"] for e in got] == ["MODIFIED", "DELETED"]
    assert kube.get_pod("data", "db-0") is None


async def test_dead_kubelet_leaves_pod_terminating(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.set_kubelet_alive("n1", False)
    kube.add_pod("db-0", "data", "n1", grace=30)
    path = "/api/v1/namespaces/data/pods/db-0"
    first = await send(http, "DELETE", path)
    assert first["metadata"]["deletionGracePeriodSeconds"] == 30  # spec default
    longer = await send(http, "DELETE", path, params={"gracePeriodSeconds": "60"})
    assert longer["metadata"] == first["metadata"]  # only a shorter grace applies
    shorter = await send(http, "DELETE", path, params={"gracePeriodSeconds": "1"})
    old = dt.datetime.fromisoformat(first["metadata"]["deletionTimestamp"])
    new = dt.datetime.fromisoformat(shorter["metadata"]["deletionTimestamp"])
    assert (old - new).total_seconds() == 29
    await asyncio.sleep(0.1)
    assert kube.get_pod("data", "db-0") is not None  # Terminating forever
    kube.set_kubelet_alive("n1", True)
    await wait_until(lambda: kube.get_pod("data", "db-0") is None)


async def test_force_delete_and_uid_precondition(kube: FakeKube, api: ApiClient) -> None:
    kube.set_kubelet_alive("n1", False)
    pod = kube.add_pod("db-0", "data", "n1")
    path = "/api/v1/namespaces/data/pods/db-0"
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "stale"},
    }
    r = await call(api, path, "DELETE", body=body)
    assert r.status == 409
    assert_status(orjson.loads(await r.read()), 409, "Conflict")
    body["preconditions"] = {"uid": pod["metadata"]["uid"]}
    r = await call(api, path, "DELETE", body=body)
    assert r.status == 200 and orjson.loads(await r.read())["kind"] == "Pod"
    assert kube.get_pod("data", "db-0") is None


async def test_finalizers_hold_a_force_deleted_pod(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    """Like the API server: grace 0 on a pod with finalizers only marks it for deletion."""
    kube.set_kubelet_alive("n1", False)
    kube.add_pod("db-0", "data", "n1", finalizers=["example.com/hold"])
    path = "/api/v1/namespaces/data/pods/db-0"
    first = await send(http, "DELETE", path, {"gracePeriodSeconds": 0})
    assert first["metadata"]["deletionTimestamp"]
    assert first["metadata"]["deletionGracePeriodSeconds"] == 0
    again = await send(http, "DELETE", path, {"gracePeriodSeconds": 0})
    assert again["metadata"] == first["metadata"]  # nothing changes: no new event either
    held = kube.get_pod("data", "db-0")
    assert held is not None and held["metadata"]["finalizers"] == ["example.com/hold"]
    kube.add_pod("web-0", "data", "n2", finalizers=["example.com/hold"])
    await send(http, "DELETE", "/api/v1/namespaces/data/pods/web-0")  # graceful, live kubelet
    await asyncio.sleep(0.1)
    done = kube.get_pod("data", "web-0")  # the kubelet finished it; the finalizer holds it
    assert done is not None and done["metadata"]["deletionGracePeriodSeconds"] == 0


async def test_on_request_runs_right_before_the_nth_match(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_node("n1")
    seen: list[int] = []
    kube.on_request("GET", r"^/api/v1/nodes/n1$", lambda: seen.append(len(kube.requests)), nth=2)
    for _ in range(3):
        await send(http, "GET", "/api/v1/nodes/n1")
    assert seen == [2]  # once, when the 2nd GET of n1 had arrived and before it was served


async def test_succeeded_pods_are_deleted_at_once(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.set_kubelet_alive("n1", False)
    kube.add_pod("job-x", "default", "n1", phase="Succeeded")
    await send(http, "DELETE", "/api/v1/namespaces/default/pods/job-x")
    assert kube.get_pod("default", "job-x") is None


async def test_podgc(kube: FakeKube) -> None:
    kube.add_node("n1", ready="Unknown")
    kube.add_node("n2")
    kube.set_kubelet_alive("n1", False)
    kube.add_pod("a", "default", "n1")
    kube.add_pod("b", "default", "gone")
    kube.add_pod("c", "default", "n2")
    assert kube.podgc() == ["default/b"]
    kube.patch_node(
        "n1",
        {
            "spec": {
                "taints": [
                    {
                        "key": "node.kubernetes.io/out-of-service",
                        "value": "nodeshutdown",
                        "effect": "NoExecute",
                    }
                ]
            }
        },
    )
    assert kube.podgc() == []  # only terminating pods are force-deleted
    terminating = kube.delete_pod("default", "a")
    assert terminating is not None and terminating["metadata"]["deletionTimestamp"]
    assert kube.podgc() == ["default/a"]
    assert [p["metadata"]["name"] for p in kube.pods_on("n2")] == ["c"]


# ----------------------------------------------------------------------------------- eviction
def eviction(name: str, grace: int | None = None) -> JSON:
    body: JSON = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": "data"},
    }
    if grace is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": grace}
    return body


def evict_path(name: str) -> str:
    return f"/api/v1/namespaces/data/pods/{name}/eviction"


async def test_eviction_success_and_not_found(
    kube: FakeKube, http: aiohttp.ClientSession, api: ApiClient
) -> None:
    kube.set_kubelet_alive("n1", False)
    kube.add_pod("db-0", "data", "n1")
    r = await call(api, evict_path("db-0"), "POST", body=eviction("db-0", 1))
    assert r.status == 201
    assert orjson.loads(await r.read()) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }
    pod = kube.get_pod("data", "db-0")
    assert pod is not None and pod["metadata"]["deletionGracePeriodSeconds"] == 1
    assert_status(
        await send(http, "POST", evict_path("nope"), eviction("nope"), 404), 404, "NotFound"
    )
    assert_status(
        await send(http, "POST", evict_path("db-0"), eviction("x"), 400), 400, "BadRequest"
    )


async def test_eviction_blocked_by_pdb(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.set_kubelet_alive("n1", False)
    for i in range(3):
        kube.add_pod(f"db-{i}", "data", "n1", "StatefulSet", labels={"app": "db"})
    kube.add_pdb("db", "data", {"app": "db"}, allowed=1)
    await send(http, "POST", evict_path("db-0"), eviction("db-0"), 201)
    async with http.post(evict_path("db-1"), json=eviction("db-1")) as r:
        assert r.status == 429 and r.headers["Retry-After"] == "10"
        body = orjson.loads(await r.read())
    assert_status(body, 429, "TooManyRequests")
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["retryAfterSeconds"] == 10
    pod = kube.get_pod("data", "db-1")
    assert pod is not None and "deletionTimestamp" not in pod["metadata"]
    # an already-deleting pod skips the budget check
    await send(http, "POST", evict_path("db-0"), eviction("db-0", 0), 201)
    assert kube.get_pod("data", "db-0") is None
    kube.set_pdb_allowed("db", 1)
    await send(http, "POST", evict_path("db-1"), eviction("db-1"), 201)
    assert kube.pdbs["db"].allowed == 0


async def test_eviction_with_two_pdbs_is_500_and_pending_skips(
    kube: FakeKube, http: aiohttp.ClientSession
) -> None:
    kube.add_pod("db-0", "data", "n1", labels={"app": "db"})
    kube.add_pod("db-1", "data", "n1", labels={"app": "db"}, phase="Pending")
    kube.add_pdb("a", "data", {"app": "db"}, allowed=5)
    kube.add_pdb("b", "data", {"app": "db"}, allowed=0)
    body = await send(http, "POST", evict_path("db-0"), eviction("db-0"), 500)
    assert_status(body, 500, "InternalError")
    assert "more than one PodDisruptionBudget" in body["message"]
    await send(http, "POST", evict_path("db-1"), eviction("db-1"), 201)
    assert kube.pdbs["a"].allowed == 5


# ------------------------------------------------------------------------------------- leases
def lease(holder: str, renew: str, rv: str | None = None) -> JSON:
    meta: JSON = {"name": "leader", "namespace": "default"}
    if rv:
        meta["resourceVersion"] = rv
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": renew,
            "renewTime": renew,
            "leaseTransitions": 0,
        },
    }


T0 = "2026-11-28T04:00:00.000000Z"


async def test_lease_create_get_and_racing_updates(kube: FakeKube, api: ApiClient) -> None:
    r = await call(api, LEASES, "POST", body=lease("a", T0))
    assert r.status == 201
    created = orjson.loads(await r.read())
    assert created["spec"]["renewTime"] == T0 and created["kind"] == "Lease"
    r = await call(api, LEASES, "POST", body=lease("b", T0))
    assert r.status == 409 and orjson.loads(await r.read())["reason"] == "AlreadyExists"
    rv = created["metadata"]["resourceVersion"]
    first, second = await asyncio.gather(
        call(api, f"{LEASES}/leader", "PUT", body=lease("a", T0.replace("00.0", "02.0"), rv)),
        call(api, f"{LEASES}/leader", "PUT", body=lease("b", T0.replace("00.0", "03.0"), rv)),
    )
    assert sorted([first.status, second.status]) == [200, 409]
    stored = kube.get_lease("default", "leader")
    assert stored is not None and stored["spec"]["holderIdentity"] == (
        "a" if first.status == 200 else "b"
    )
    r = await call(api, f"{LEASES}/leader", "DELETE")
    assert r.status == 200 and kube.get_lease("default", "leader") is None
    r = await call(api, f"{LEASES}/leader")
    assert r.status == 404


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-28T04:00:00Z",
        "2026-11-28T04:00:00.123Z",
        "2026-11-28T04:00:00.123456789Z",
        "yesterday",
    ],
)
async def test_lease_microtime_must_have_six_digits(
    http: aiohttp.ClientSession, value: str
) -> None:
    body = await send(http, "POST", LEASES, lease("a", value), 400)
    assert_status(body, 400, "BadRequest")  # decode error on the real server, not 422
    assert "cannot be handled as a Lease" in body["message"]


async def test_lease_microtime_offset_is_normalised(http: aiohttp.ClientSession) -> None:
    out = await send(http, "POST", LEASES, lease("a", "2026-11-28T05:00:00.000001+01:00"), 201)
    assert out["spec"]["renewTime"] == "2026-11-28T04:00:00.000001Z"


async def test_lease_duration_validation(http: aiohttp.ClientSession) -> None:
    body = lease("a", T0)
    body["spec"]["leaseDurationSeconds"] = 0
    out = await send(http, "POST", LEASES, body, 422)
    assert_status(out, 422, "Invalid")
    assert out["details"]["causes"][0]["field"] == "spec.leaseDurationSeconds"


async def test_node_lease_watch(kube: FakeKube, api: ApiClient) -> None:
    kube.add_node("n1")
    kube.add_node_lease("n1", renew_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    r = await call(
        api,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        query=[("watch", True), ("allowWatchBookmarks", True)],
    )
    async with r:
        first = await events(r, 1)
        assert first[0]["object"]["spec"]["renewTime"] == "2026-01-01T00:00:00.000000Z"
        assert first[0]["object"]["metadata"]["ownerReferences"][0]["kind"] == "Node"
        kube.renew_node_lease("n1")
        got = [e for e in await events(r, 3) if e["type"] != "BOOKMARK"]
    assert got[0]["type"] == "MODIFIED"
    assert got[0]["object"]["spec"]["renewTime"] > "2026-01-01T00:00:00.000000Z"
    assert kube.requests[-1].query == {"watch": "True", "allowWatchBookmarks": "True"}


# -------------------------------------------------------------------------------------- events
async def test_events_create_patch_list(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    path = "/api/v1/namespaces/default/events"
    ev = {
        "metadata": {"name": "n1.1"},
        "involvedObject": {"kind": "Node", "name": "n1"},
        "reason": "NodeNotReady",
        "count": 1,
        "type": "Warning",
    }
    await send(http, "POST", path, ev, 201)
    out = await send(http, "PATCH", f"{path}/n1.1", {"count": 2}, ctype=MERGE_PATCH)
    assert out["count"] == 2 and out["reason"] == "NodeNotReady"
    listed = await get_json(http, path, params={"fieldSelector": "involvedObject.name=n1"})
    assert [e["count"] for e in listed["items"]] == [2]
    assert [e["metadata"]["name"] for e in kube.events] == ["n1.1"]


# ----------------------------------------------------------------------------- fault injection
async def test_fail_next(kube: FakeKube, api: ApiClient) -> None:
    kube.add_node("n1")
    kube.fail_next("PATCH", r"/nodes/n1$", 429, count=2, retry_after=3)
    statuses = []
    for _ in range(3):
        r = await call(
            api, f"{NODES}/n1", "PATCH", body={"spec": {"unschedulable": True}}, headers=MERGE
        )
        statuses.append(r.status)
        if r.status == 429:
            assert r.headers["Retry-After"] == "3"
            body = orjson.loads(await r.read())
            assert_status(body, 429, "TooManyRequests")
            assert body["details"]["retryAfterSeconds"] == 3
    assert statuses == [429, 429, 200]
    assert kube.count("PATCH", "/nodes/n1") == 3 and kube.count("GET", "/nodes") == 0
    node = kube.get_node("n1")
    assert node is not None and node["spec"]["unschedulable"] is True


async def test_hang_and_release(kube: FakeKube, http: aiohttp.ClientSession) -> None:
    kube.add_node("n1")
    kube.hang("GET", r"/nodes/n1$")
    task = asyncio.create_task(get_json(http, f"{NODES}/n1"))
    await wait_until(lambda: kube.hanging == 1)
    assert not task.done()
    assert (await get_json(http, NODES))["items"]  # other paths are not held
    kube.release_hangs()
    assert (await asyncio.wait_for(task, 2))["metadata"]["name"] == "n1"
    assert kube.hanging == 0


async def test_stop_aborts_hung_requests() -> None:
    kube = FakeKube()
    await kube.start()
    kube.hang("*", "/api/v1/nodes")
    async with aiohttp.ClientSession(kube.base_url) as s:
        task = asyncio.create_task(s.get(NODES))
        await wait_until(lambda: kube.hanging == 1)
        await asyncio.wait_for(kube.stop(), 2)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(task, 2)


async def test_requests_are_recorded(kube: FakeKube, api: ApiClient) -> None:
    kube.add_node("n1")
    r = await call(
        api, "/api/v1/pods", query=[("fieldSelector", "spec.nodeName=n1"), ("limit", 500)]
    )
    assert r.status == 200
    r = await call(
        api,
        f"{NODES}/n1",
        "PATCH",
        body={"spec": {"unschedulable": True}},
        headers={"Content-Type": STRATEGIC_PATCH},
    )
    assert r.status == 200
    listed, patched = kube.requests
    assert listed.query == {"fieldSelector": "spec.nodeName=n1", "limit": "500"}
    assert listed.user_agent == "noderecover-test/1"
    assert listed.headers["Authorization"] == "Bearer secret"
    assert (patched.method, patched.path, patched.content_type) == (
        "PATCH",
        "/api/v1/nodes/n1",
        STRATEGIC_PATCH,
    )
    assert patched.body == {"spec": {"unschedulable": True}}


# ------------------------------------------------------------------------------ state helpers
async def test_set_node_ready_moves_transition_time_only_on_change(kube: FakeKube) -> None:
    long_ago = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    kube.add_node("n1", ready="False", reason="KubeletNotReady", last_transition_time=long_ago)
    rv = kube.resource_version
    node = kube.set_node_ready("n1", "False")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert ready["lastHeartbeatTime"] > ready["lastTransitionTime"]
    assert int(kube.resource_version) == int(rv) + 1  # heartbeat moved
    node = kube.set_node_ready("n1", "Unknown")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] > "2026-01-01T00:00:00Z"
    assert [t["effect"] for t in node["spec"]["taints"]] == ["NoSchedule", "NoExecute"]
    node = kube.set_node_ready("n1", "True")
    assert "taints" not in node["spec"]


async def test_api_client_watch_stream(kube: FakeKube, api: ApiClient) -> None:
    kube.add_node("n1")
    r = await call(
        api,
        NODES,
        query=[
            ("watch", "true"),
            ("resourceVersion", "1"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", 1),
        ],
    )
    async with r:
        assert r.status == 200
        kube.add_pod("p", "default", "n1", mirror=True, owner_kind="DaemonSet")
        kube.add_node("n2")
        got = await events(r, 1)
        while got[-1]["type"] == "BOOKMARK":
            got += await events(r, 1)
    assert (got[-1]["type"], got[-1]["object"]["metadata"]["name"]) == ("ADDED", "n2")
    assert got[-1]["object"]["metadata"]["resourceVersion"] == "3"  # the pod write was RV 2
    pod = kube.get_pod("default", "p")
    assert pod is not None and "kubernetes.io/config.mirror" in pod["metadata"]["annotations"]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"


async def test_restart_keeps_port_and_state() -> None:
    kube = FakeKube()
    await kube.start()
    kube.add_node("n1")
    url = kube.base_url
    await kube.stop()
    await kube.start()
    try:
        assert kube.base_url == url
        async with aiohttp.ClientSession(url) as s:
            assert (await get_json(s, f"{NODES}/n1"))["metadata"]["resourceVersion"] == "1"
    finally:
        await kube.stop()
