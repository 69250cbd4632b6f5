"""/healthz, /readyz, /metrics over real HTTP on 127.0.0.1:0, with a fake clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from noderecover.base.clock import FakeClock
from noderecover.entry.config import parse_bind
from noderecover.entry.httpserver import HttpServer


class Source:
    def __init__(self) -> None:
        self.live: tuple[bool, str] = (True, "")
        self.ready: tuple[bool, str] = (True, "")
        self.explode = False

    def liveness(self) -> tuple[bool, str]:
        if self.explode:
            raise RuntimeError("token=secret-value")
        return self.live

    def readiness(self) -> tuple[bool, str]:
        return self.ready


class StarvedClock(FakeClock):
    """A clock whose sleepers never wake: the heartbeat ticks once, then starves."""

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep_forever()


@contextlib.asynccontextmanager
async def serving(
    source: Source, clock: FakeClock, registry: CollectorRegistry | None = None
) -> AsyncIterator[tuple[HttpServer, aiohttp.ClientSession, str]]:
    server = HttpServer("127.0.0.1:0", source, clock, registry or CollectorRegistry())
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield server, session, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        (":9090", ("0.0.0.0", 9090)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize(
    "text", ["8080", "host:", "host:http", "host:65536", "host:-1", "::1:80", "[::1:80", ""]
)
def test_parse_bind_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bind address"):
        parse_bind(text)


async def test_health_and_readiness_status_codes() -> None:
    source = Source()
    async with serving(source, FakeClock()) as (server, session, base):
        assert server.port > 0
        assert await get(session, f"{base}/healthz") == (200, {"status": "ok"})
        assert await get(session, f"{base}/readyz") == (200, {"status": "ok"})

        source.live = (False, "node watch silent for 120s")  # a stale watch
        assert await get(session, f"{base}/healthz") == (
            500,
            {"status": "fail", "reason": "node watch silent for 120s"},
        )
        source.live = (True, "")
        source.ready = (False, "node cache not synced yet")
        assert await get(session, f"{base}/readyz") == (
            503,
            {"status": "fail", "reason": "node cache not synced yet"},
        )
        assert (await get(session, f"{base}/healthz"))[0] == 200  # not ready is still alive

        status, _ = await get(session, f"{base}/nope")
        assert status == 404
        status, _ = await get(session, f"{base}/healthz/../env")
        assert status == 404


async def test_a_raising_check_fails_without_leaking_its_message() -> None:
    source = Source()
    source.explode = True
    async with serving(source, FakeClock()) as (_, session, base):
        status, body = await get(session, f"{base}/healthz")
    assert status == 500
    assert body == {"status": "fail", "reason": "health check raised RuntimeError"}
    assert "secret" not in str(body)


def test_loop_stall_logic() -> None:
    clock = FakeClock()
    server = HttpServer("127.0.0.1:0", Source(), clock, CollectorRegistry())
    assert server.check_liveness() == (True, "")
    clock.advance(10.0)  # exactly the limit: still fine
    assert server.check_liveness() == (True, "")
    clock.advance(0.5)  # no heartbeat for 10.5 s
    assert server.check_liveness() == (False, "event loop stalled")


async def test_stalled_heartbeat_fails_liveness_over_http() -> None:
    clock = StarvedClock()
    async with serving(Source(), clock) as (_, session, base):
        assert (await get(session, f"{base}/healthz"))[0] == 200
        clock.advance(11)
        assert await get(session, f"{base}/healthz") == (
            500,
            {"status": "fail", "reason": "event loop stalled"},
        )


async def test_heartbeat_keeps_liveness_fresh() -> None:
    clock = FakeClock()
    async with serving(Source(), clock) as (_, session, base):
        for _ in range(15):  # 15 s pass, the heartbeat ticks every second
            clock.advance(1)
            await anyio.lowlevel.checkpoint()
        clock.advance(9.5)  # its last tick is 9.5 s old at most
        assert (await get(session, f"{base}/healthz"))[0] == 200


async def test_metrics_exposition_parses_and_shows_a_counter_change() -> None:
    registry = CollectorRegistry()
    things = Counter("noderecover_test_things", "Things.", ["kind"], registry=registry)
    things.labels("a").inc()
    async with serving(Source(), FakeClock(), registry) as (_, session, base):
        status, text = await get(session, f"{base}/metrics")
        assert status == 200
        before = {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.labels.get("kind") == "a"
        }
        assert before["noderecover_test_things_total"] == 1.0
        things.labels("a").inc(2)
        _, text = await get(session, f"{base}/metrics")
    after = {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("kind") == "a"
    }
    assert after["noderecover_test_things_total"] == 3.0


async def test_default_registry_serves_noderecover_metrics() -> None:
    server = HttpServer("127.0.0.1:0", Source(), FakeClock())  # prometheus_client.REGISTRY
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/metrics") as resp,
        ):
            text = await resp.text()
    finally:
        await server.stop()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"noderecover_leader", "noderecover_leader_transitions"} <= names
