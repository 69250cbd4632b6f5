"""The probe and metrics endpoint: /healthz, /readyz, /metrics on one aiohttp server.

Invariants:
- Answers come from in-memory state only: a probe never waits for the API server.
- Liveness also fails when this event loop is starved: a heartbeat task ticks every second
  and a tick older than `stall_after` seconds means nothing else gets to run either.
- Nothing served reveals tokens, kubeconfig or the environment: only the reasons the health
  source gives and the metrics registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import orjson
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.registry import Collector

from noderecover.base.clock import Clock
from noderecover.entry.config import parse_bind

log = logging.getLogger("noderecover.http")

Handler = Callable[[web.Request], Awaitable[web.Response]]

HEARTBEAT_INTERVAL = 1.0
STALL_AFTER = 10.0


class HealthSource(Protocol):
    def liveness(self) -> tuple[bool, str]:
        """(ok, reason): False makes /healthz fail, and the kubelet restart us."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ok, reason): False makes /readyz fail (e.g. caches not synced yet)."""
        ...


def _json(status: int, body: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class HttpServer:
    def __init__(
        self,
        bind: str,
        source: HealthSource,
        clock: Clock,
        registry: Collector = REGISTRY,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        stall_after: float = STALL_AFTER,
        routes: Sequence[tuple[str, Handler]] = (),
    ) -> None:
        self._host, self._port = parse_bind(bind)
        self._routes = tuple(routes)  # more GET routes (the node agent's /status and peers)
        self._source = source
        self._clock = clock
        self._registry = registry
        self._heartbeat_interval = heartbeat_interval
        self._stall_after = stall_after
        self._last_tick = clock.monotonic()
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0); the configured one before start()."""
        return self._bound_port if self._bound_port is not None else self._port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("HttpServer already started")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        for path, handler in self._routes:
            app.router.add_get(path, handler)
        # No access log: probes every few seconds would drown the decisions.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self._bound_port = int(address[1])
                break
        self._last_tick = self._clock.monotonic()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        log.info("serving /healthz /readyz /metrics on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ----- health logic (synchronous, so it can be tested without HTTP) -------------------------

    def loop_stalled(self) -> bool:
        return self._clock.monotonic() - self._last_tick > self._stall_after

    def check_liveness(self) -> tuple[bool, str]:
        if self.loop_stalled():
            return False, "event loop stalled"
        return self._ask(self._source.liveness)

    def check_readiness(self) -> tuple[bool, str]:
        return self._ask(self._source.readiness)

    @staticmethod
    def _ask(check: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
        try:
            ok, reason = check()
        except Exception as exc:  # a broken check is a failed check, not a 500 traceback
            log.exception("health check raised")
            return False, f"health check raised {type(exc).__name__}"
        return bool(ok), str(reason)

    async def _beat(self) -> None:
        while True:
            self._last_tick = self._clock.monotonic()
            await self._clock.sleep(self._heartbeat_interval)

    # ----- handlers -----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, reason = self.check_liveness()
        if ok:
            return _json(200, {"status": "ok"})
        return _json(500, {"status": "fail", "reason": reason})

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, reason = self.check_readiness()
        if ok:
            return _json(200, {"status": "ok"})
        return _json(503, {"status": "fail", "reason": reason})
