"""Shared fixtures for the async unit tests (fake API server, fake clock, controller)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, settings
from kubernetes_asyncio.client import ApiClient, Configuration

from noderecover.base.clock import FakeClock
from noderecover.controller.reconciler import Controller
from noderecover.controller.writes import Writer
from noderecover.entry.config import Config
from noderecover.kube.client import KubeClient, Timeouts
from noderecover.kube.events import EventRecorder
from noderecover.kube.permissions import Permission, declared, permission_of
from tests.fakeapi import FakeKube

# Property tests: deterministic by default (same examples on every run and in CI, no example
# database written into the tree); HYPOTHESIS_PROFILE=explore searches more widely.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", database=None, deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with FakeKube(bookmark_interval=0.05, kubelet_finish_delay=0.01) as fake:
        yield fake


def client_for(
    fake: FakeKube, request: float = 2.0, stream_read: float = 5.0, *, user_agent: str = ""
) -> KubeClient:
    """`user_agent`: another program than the controller (its calls are not checked against
    the controller's RBAC table)."""
    conf = Configuration(host=fake.base_url)
    return KubeClient(
        ApiClient(conf),
        Timeouts(request=request, connect=2.0, stream_read=stream_read),
        user_agent=user_agent,
    )


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[KubeClient]:
    c = client_for(kube)
    yield c
    await c.close()


class FlagGate:
    def __init__(self) -> None:
        self.allowed = True

    def may_act(self) -> bool:
        return self.allowed


@dataclass
class Harness:
    """A controller against the fake server, leading in the background, on a fake clock."""

    kube: FakeKube
    clock: FakeClock
    controller: Controller
    gate: FlagGate
    events: list[tuple[str, str, str]] = field(default_factory=list)  # Node Events
    pod_events: list[tuple[str, str, str]] = field(default_factory=list)  # (ns/name, reason, type)
    messages: list[tuple[str, str, str]] = field(default_factory=list)  # (name, reason, message)
    recorder: EventRecorder | None = None  # also write them to the fake API (real_events=True)

    def record(
        self,
        node: str,
        uid: str,
        reason: str,
        message: str,
        type: str = "Normal",
        *,
        kind: str = "Node",
        namespace: str = "",
    ) -> None:
        self.messages.append((node, reason, message))
        if kind == "Node":
            self.events.append((node, reason, type))
        else:
            self.pod_events.append((f"{namespace}/{node}", reason, type))
        if self.recorder is not None:
            self.recorder.record(node, uid, reason, message, type, kind=kind, namespace=namespace)

    async def until(
        self,
        pred: Callable[[], bool],
        *,
        advance: float = 0.0,
        real_timeout: float = 5.0,
        what: str = "",
    ) -> None:
        """Poll `pred`, moving the fake clock `advance` seconds per poll (0 = not at all)."""
        with anyio.fail_after(real_timeout):
            while not pred():
                if advance:
                    self.clock.advance(advance)
                    self.kube.tick()  # the server's bookmarks, as fake time passes
                await anyio.sleep(0.005)
        assert pred(), what

    async def idle(self, fake_seconds: float, step: float = 1.0) -> None:
        """Let `fake_seconds` pass on the fake clock, giving the loop real time each step."""
        t = 0.0
        while t < fake_seconds:
            self.clock.advance(step)
            self.kube.tick()  # the server's bookmarks, as fake time passes
            t += step
            await anyio.sleep(0.003)


def make_config(**kw: object) -> Config:
    base: dict[str, object] = dict(
        grace=60.0,
        healthy_delay=30.0,
        drain_timeout=60.0,
        watch_silence=3600.0,
        watch_node_leases=False,
        storm_cooldown=300.0,
    )
    base.update(kw)
    return Config(**base)  # type: ignore[arg-type]


@pytest.fixture
async def harness_factory(kube: FakeKube) -> AsyncIterator[Callable[..., Any]]:
    """`h = await start(**config)` starts a leading controller; all stopped at teardown.

    The controllers run in plain asyncio tasks: pytest-asyncio finalises fixtures in another
    task, so a task group cannot span the `yield`.
    """
    clients: list[KubeClient] = []
    tasks: list[asyncio.Task[None]] = []

    async def start(
        *,
        real_events: bool = False,
        namespace: str | None = None,
        settle: bool = True,
        **kw: object,
    ) -> Harness:
        """`real_events`: Events also go through a real EventRecorder to the fake API.
        `settle`: return once the policies are known too (moved on for on the fake clock);
        False to look at the start itself."""
        clock = FakeClock(start_wall=time.time())
        gate = FlagGate()
        c = client_for(kube)
        clients.append(c)
        h = Harness(kube, clock, None, gate)  # type: ignore[arg-type]
        h.controller = Controller(
            c,
            clock,
            make_config(**kw),
            gate=gate,
            events=h,
            rng=random.Random(7),
            namespace=namespace,
        )
        if real_events:
            h.recorder = EventRecorder(Writer(c), clock, "noderecover-test", rng=random.Random(7))

        async def run() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(h.controller.watch)
                tg.start_soon(h.controller.lead)
                if h.recorder is not None:
                    tg.start_soon(h.recorder.run)

        tasks.append(asyncio.create_task(run()))
        await h.until(
            lambda: h.controller.leading and h.controller.synced, what="controller synced"
        )
        if settle:
            await h.until(lambda: h.controller.policies_ready, advance=0.5, what="policies known")
        return h

    yield start
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    for c in clients:
        await c.close()


# ------------------------------------------------------------- the API calls noderecover makes
# Every request noderecover's client (User-Agent noderecover/...) makes to a FakeKube in any
# unit test must need a permission declared in noderecover.kube.permissions.API_CALLS (checked
# after each test), and the whole suite's requests are collected in API_CALLS_MADE for
# tests/test_rbac.py's "every declared call is made" (it runs last).
API_CALLS_MADE: set[Permission] = set()
# Modules that drive the client (or the fake server) with arbitrary requests on purpose.
ANY_API_CALL_MODULES = frozenset({"test_fakeapi.py", "test_kube.py"})
# Modules marked `tools` as a whole (helm, promtool, mkdocs: `pytestmark = pytest.mark.tools`):
# no API calls; the test command runs them after the build, apart from the unit suite whose
# calls test_rbac.py checks. Read from the files, so a new tools module is never a missing
# module of the unit suite (a hand-kept list once made the check skip in every run).
TOOLS_MARK_LINE = "pytestmark = pytest.mark.tools"
TOOLS_MODULES = frozenset(
    p.name
    for p in Path(__file__).resolve().parent.glob("test_*.py")
    if any(line.startswith(TOOLS_MARK_LINE) for line in p.read_text().splitlines())
)


@pytest.fixture(autouse=True)
def _api_calls_are_declared(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    servers: list[FakeKube] = []
    start = FakeKube.start

    async def recording_start(self: FakeKube) -> None:
        servers.append(self)
        await start(self)

    monkeypatch.setattr(FakeKube, "start", recording_start)
    yield
    if request.path.name in ANY_API_CALL_MODULES:
        return
    undeclared: set[str] = set()
    for server in servers:
        for r in server.requests:
            if not (r.user_agent or "").startswith("noderecover/"):
                continue
            needed = permission_of(r.method, r.path, r.query)
            match = declared(needed) if needed is not None else None
            if match is None:
                undeclared.add(f"{r.method} {r.path} needs {needed}")
            else:
                API_CALLS_MADE.add(match)
    assert not undeclared, (
        "API calls not declared in noderecover.kube.permissions.API_CALLS (and so not granted by "
        f"manifests/base/rbac.yaml): {sorted(undeclared)}"
    )


# The slowest end-to-end files, slowest first (measured minutes in a comment): the test
# command hands whole files to two pytest-xdist workers in this order
# (`--dist loadfile --no-loadscope-reorder`), so the long files start first and the short
# ones fill the gaps at the end.
SLOWEST_FIRST = (  # seconds per file, two workers on 2 loaded cores (load ~10), 2026-12-07
    "tests/e2e/test_faults.py",  # 629
    "tests/e2e/test_self_fence.py",  # 433 (alone beside a benchmark, load 3-10)
    "tests/e2e/test_volumes.py",  # 414
    "tests/e2e/test_takeover.py",  # 333
    "tests/e2e/test_image.py",  # 283 (the image's own build runs beside the unit suite)
    "tests/e2e/test_agent.py",  # 204 (alone beside a benchmark, load ~3)
    "tests/e2e/test_policies.py",  # 188
    "tests/e2e/test_live_kubelet.py",  # 178
    "tests/e2e/test_kubectl_plugin.py",  # 170
    "tests/e2e/test_control_plane.py",  # 121
    "tests/test_alerts.py",  # 111
    "tests/e2e/test_demo.py",  # 88
)


def _file_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return SLOWEST_FIRST.index(path) if path in SLOWEST_FIRST else len(SLOWEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest e2e files first (:data:`SLOWEST_FIRST`; a stable sort keeps the order
    within a file and among the rest); tests/test_rbac.py's whole-suite check runs after
    every other test."""
    items.sort(key=_file_rank)
    last = [i for i in items if i.name == "test_every_declared_call_is_made_by_the_unit_suite"]
    items[:] = [i for i in items if i not in last] + last
