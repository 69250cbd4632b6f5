"""Lease leader election against the in-process fake API server, on a fake clock.

The fake clock only moves when the harness advances it, and only once every request in flight
has been answered (or is hung on purpose), so timings are exact in fake seconds and no test
sleeps in real time. Every state change and every step checks the safety invariants:
at most one leader, and work only runs on the leader.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration
from prometheus_client import REGISTRY

from noderecover.base.clock import Clock, FakeClock
from noderecover.kube.client import JSON, MERGE_PATCH, ApiError, KubeClient
from noderecover.kube.election import (
    WRITE_MARGIN,
    ElectionConfig,
    LeaderElector,
    default_identity,
    format_microtime,
)
from tests.fakeapi import FakeKube

NS, NAME = "kube-system", "noderecover"
COLLECTION = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
ITEM = f"{COLLECTION}/{NAME}"
ITEM_RE = re.escape(ITEM) + "$"
STEP = 0.25  # fake seconds per harness step
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# ----------------------------------------------------------------------------- harness


@dataclass
class _Call:
    method: str
    path: str
    hung: bool  # parked on purpose (partition): the harness does not wait for it


class Barrier:
    """Hold GET answers until `parties` callers have theirs: forces two candidates to read
    the same record before either writes."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.armed = False
        self.waiting = 0
        self.event = anyio.Event()

    async def pass_(self) -> None:
        if not self.armed:
            return
        self.waiting += 1
        if self.waiting >= self.parties:
            self.armed = False
            self.event.set()
        await self.event.wait()


class TrackedKube(KubeClient):
    """KubeClient that counts calls in flight and can be cut off from the server."""

    def __init__(self, api: ApiClient, harness: Harness) -> None:
        super().__init__(api)
        self.harness = harness
        self.inflight: list[_Call] = []
        self.partitioned = False

    async def request(self, method: str, path: str, **kw: Any) -> JSON:
        call = _Call(method, path, self.partitioned)
        if not call.hung and self.harness.server_hung(call):
            self.harness.hung_sent += 1
        self.inflight.append(call)
        try:
            if call.hung:
                await anyio.sleep_forever()
            try:
                return await super().request(method, path, **kw)
            finally:
                if method == "GET" and self.harness.barrier is not None:
                    await self.harness.barrier.pass_()
        finally:
            self.inflight.remove(call)

    def busy(self) -> bool:
        return any(not c.hung and not self.harness.server_hung(c) for c in self.inflight)


class Probe(LeaderElector):
    """A LeaderElector whose leadership changes are checked and timed by the harness."""

    harness: Harness
    killed = False

    def _set_leading(self, leading: bool, why: str, level: int = 30) -> None:
        super()._set_leading(leading, why, level)
        self.harness.note(self, "leader" if leading else "follower")

    async def release(self) -> None:
        if self.killed:  # a dead process writes nothing
            self._set_leading(False, "killed")
            return
        await super().release()


@dataclass
class Harness:
    kube: FakeKube
    clock: FakeClock
    tg: anyio.abc.TaskGroup
    clients: list[TrackedKube] = field(default_factory=list)
    electors: list[Probe] = field(default_factory=list)
    scopes: dict[str, anyio.CancelScope] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)  # identities whose work is running
    violations: list[str] = field(default_factory=list)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    hangs: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)
    barrier: Barrier | None = None
    outcomes: dict[str, BaseException | None] = field(default_factory=dict)
    acts: list[tuple[float, str]] = field(default_factory=list)  # (time, identity)
    hang_base: int = 0  # len(kube.requests) when the last hang() was set
    hung_sent: int = 0  # calls sent into that hang since

    # -- construction
    def client(self) -> TrackedKube:
        c = TrackedKube(ApiClient(Configuration(host=self.kube.base_url)), self)
        self.clients.append(c)
        return c

    def elector(self, identity: str, seed: int | None = None, clock: Clock | None = None) -> Probe:
        config = ElectionConfig(NAME, NS)
        e = Probe(self.client(), clock or self.clock, config, identity, random.Random(seed))
        e.harness = self
        self.electors.append(e)
        return e

    def start(self, e: Probe, work: Callable[[], Awaitable[None]] | None = None) -> None:
        scope = anyio.CancelScope()
        self.scopes[e.identity] = scope

        async def runner() -> None:
            with scope:
                try:
                    await e.run(work or self.work(e))
                    self.outcomes[e.identity] = None
                except Exception as exc:
                    self.outcomes[e.identity] = exc
            self.note(e, "run-ended")

        self.tg.start_soon(runner)

    def work(self, e: Probe) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            self.active.add(e.identity)
            self.note(e, "work-started")
            try:
                while True:
                    if not e.is_leader:
                        # Cancellation lands at the work's next checkpoint: a step already
                        # woken in the instant of the step-down may still run, no later.
                        down = self.last(e.identity, "follower")
                        if down is None or self.now > down:
                            self.violations.append(f"{self.now}: {e.identity} works unled")
                    if e.may_act():  # what every real action checks first
                        self.acts.append((self.now, e.identity))
                        if leader_of(self) != e.identity:
                            self.violations.append(f"{self.now}: {e.identity} acts unled")
                    self.check()
                    await self.clock.sleep(0.5)
            finally:
                self.active.discard(e.identity)
                self.note(e, "work-stopped")

        return work

    # -- observation
    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def note(self, e: LeaderElector, what: str) -> None:
        self.timeline.append((self.now, e.identity, what))
        self.check()

    def check(self) -> None:
        live = [e for e in self.electors if not e.killed]
        leaders = [e.identity for e in live if e.is_leader]
        if len(leaders) > 1:
            self.violations.append(f"{self.now}: several leaders {leaders}")
        working = self.active - {e.identity for e in self.electors if e.killed}
        if len(working) > 1:
            self.violations.append(f"{self.now}: several run work {sorted(working)}")
        # Work may still be unwinding right after its elector stepped down (it is cancelled
        # but not yet resumed), but never while someone else leads.
        for ident in working:
            if set(leaders) - {ident}:
                self.violations.append(f"{self.now}: {ident} works while {leaders} leads")

    def last(self, identity: str, what: str) -> float | None:
        return next((t for t, i, w in reversed(self.timeline) if i == identity and w == what), None)

    def when(self, identity: str, what: str, after: float = 0.0) -> float | None:
        return next(
            (t for t, i, w in self.timeline if i == identity and w == what and t >= after), None
        )

    def lease(self) -> JSON:
        lease = self.kube.get_lease(NS, NAME)
        assert lease is not None
        return lease

    # -- faults
    def server_hung(self, call: _Call) -> bool:
        return any(m in ("*", call.method) and p.search(call.path) for m, p in self.hangs)

    def hang(self, method: str, regex: str) -> None:
        self.kube.hang(method, regex)
        self.hangs.append((method, re.compile(regex)))
        self.hang_base, self.hung_sent = len(self.kube.requests), 0

    def release_hangs(self) -> None:
        self.hangs.clear()
        self.hung_sent = 0
        self.kube.release_hangs()

    def hung_arrived(self) -> bool:
        """Every call sent into a server-side hang has reached the server (so time may pass
        without cancelling it in transit)."""
        arrived = [
            r
            for r in self.kube.requests[self.hang_base :]
            if self.server_hung(_Call(r.method, r.path, False))
        ]
        return len(arrived) >= self.hung_sent

    def kill(self, e: Probe) -> None:
        """The process dies: its work and renewals stop, nothing is written."""
        e.killed = True
        self.scopes[e.identity].cancel()

    # -- time
    async def settle(self) -> None:
        """Run the loop until nothing is runnable and no request is in flight (except hung)."""
        with anyio.fail_after(10):
            quiet = 0
            while quiet < 12:
                if any(c.busy() for c in self.clients) or not self.hung_arrived():
                    quiet = 0
                    await anyio.sleep(0.0005)
                else:
                    quiet += 1
                    await anyio.lowlevel.checkpoint()

    async def advance(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        end = self.now + seconds
        await self.settle()
        while self.now < end - 1e-9:
            if until is not None and until():
                return
            self.clock.advance(min(STEP, end - self.now))
            await self.settle()
            self.check()

    async def close(self) -> None:
        self.release_hangs()
        for c in self.clients:
            await c.close()


class SkewedClock:
    """Another host's clock: the same monotonic time, a wall clock `offset` seconds off."""

    def __init__(self, base: FakeClock, offset: float) -> None:
        self.base, self.offset = base, offset

    def monotonic(self) -> float:
        return self.base.monotonic()

    def wall(self) -> float:
        return self.base.wall() + self.offset

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[Harness]:
    """A fake API server, a fake clock and a task group for the electors (one test's world)."""
    async with FakeKube() as kube:
        h: Harness | None = None
        try:
            async with anyio.create_task_group() as tg:
                h = Harness(kube, FakeClock(), tg)
                try:
                    yield h
                finally:
                    # Let releases at teardown reach the server instead of waiting out a bound.
                    h.release_hangs()
                    for c in h.clients:
                        c.partitioned = False
                    tg.cancel_scope.cancel()
        finally:
            if h is not None:
                await h.close()
    assert h is not None and h.violations == []


def transitions() -> float:
    return REGISTRY.get_sample_value("noderecover_leader_transitions_total") or 0.0


def leader_of(h: Harness) -> str | None:
    leaders = [e.identity for e in h.electors if e.is_leader and not e.killed]
    assert len(leaders) <= 1
    return leaders[0] if leaders else None


async def put_lease(holder: str, h: Harness, duration: int = 15) -> JSON:
    """Create the Lease as another process (a 'ghost' holder) would."""
    stamp = format_microtime(h.clock.wall())
    body: JSON = {
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": 4,
        },
    }
    return await h.client().request("POST", COLLECTION, body=body)


# ------------------------------------------------------------------------------- tests


def test_config_validation_names_the_flag() -> None:
    ElectionConfig(NAME, NS).validate()
    with pytest.raises(ValueError, match="--lease-duration"):
        ElectionConfig(NAME, NS, lease_duration=10, renew_deadline=10).validate()
    with pytest.raises(ValueError, match="--renew-deadline"):
        ElectionConfig(NAME, NS, renew_deadline=2.4, retry_period=2).validate()
    with pytest.raises(ValueError, match="--retry-period"):
        ElectionConfig(NAME, NS, retry_period=0).validate()
    with pytest.raises(ValueError, match="--lease-name"):
        ElectionConfig("", NS).validate()


def test_microtime_always_has_six_fraction_digits() -> None:
    assert format_microtime(1_800_000_000.0) == "2027-01-15T08:00:00.000000Z"
    assert format_microtime(1_800_000_000.5) == "2027-01-15T08:00:00.500000Z"
    assert MICRO.match(format_microtime(1_800_000_000.123456))


def test_default_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "noderecover-7d4b9-abcde")
    assert default_identity() == "noderecover-7d4b9-abcde"
    monkeypatch.delenv("POD_NAME")
    a, b = default_identity(), default_identity()
    assert a != b and re.fullmatch(r".+_[0-9a-f]{8}", a)


async def test_acquire_renew_and_lease_fields() -> None:
    async with running() as h:
        before = transitions()
        a = h.elector("a")
        h.start(a)
        await h.advance(0)
        assert a.is_leader and a.may_act() and a.observed_holder == "a"
        assert a.leader_since == h.now and h.active == {"a"}
        first = h.lease()["spec"]
        assert first["holderIdentity"] == "a" and first["leaseDurationSeconds"] == 15
        assert first["leaseTransitions"] == 0
        await h.advance(10)
        spec = h.lease()["spec"]
        # Renewals move renewTime only; acquireTime and leaseTransitions stay.
        assert spec["acquireTime"] == first["acquireTime"]
        assert spec["renewTime"] != first["renewTime"] and spec["leaseTransitions"] == 0
        assert h.kube.count("PUT", ITEM_RE) >= 4  # every 2 s
        assert a.last_activity >= h.now - 2.0
        assert transitions() == before + 1
        assert REGISTRY.get_sample_value("noderecover_leader") == 1
        # The last accepted write's send time, on the wall clock (for alerts on stale leaders).
        assert a._acked_at is not None
        renewed = REGISTRY.get_sample_value("noderecover_leader_last_renew_timestamp_seconds")
        assert renewed == h.clock.wall() - (h.clock.monotonic() - a._acked_at)
        assert h.clock.wall() - 2.0 <= renewed <= h.clock.wall()
        writes = [r for r in h.kube.requests if r.method in ("PUT", "POST") and "leases" in r.path]
        for r in writes:  # the server would have rejected anything else, but say so here
            assert MICRO.match(r.body["spec"]["renewTime"]), r.body
            assert MICRO.match(r.body["spec"]["acquireTime"]), r.body


async def test_only_one_leads_and_follower_waits_for_expiry_on_its_own_clock() -> None:
    async with running() as h:
        # B's wall clock runs an hour ahead: A's renewTime looks ancient to it. It must not care.
        a, b = h.elector("a"), h.elector("b", clock=SkewedClock(h.clock, 3600))
        h.start(a)
        await h.advance(0)
        h.start(b)
        await h.advance(40)
        assert leader_of(h) == "a" and h.when("b", "leader") is None
        assert b.observed_holder == "a"

        assert a._acked_at is not None
        last_write = a._acked_at  # A's last accepted renewal was sent then
        h.kill(a)
        await h.advance(30, until=lambda: b.is_leader)
        took = h.when("b", "leader")
        assert took is not None
        # Not before the record was 15 s old on B's clock (B saw it after A sent it) ...
        assert took >= last_write + 15
        # ... and not much later: B saw A's last write at its next poll, and takes over at
        # its first poll after expiry (each at most one jittered retry period late).
        assert took <= last_write + 15 + 2 * (2 * 1.2) + 2 * STEP
        spec = h.lease()["spec"]
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
        assert h.active == {"b"}


async def test_partitioned_leader_steps_down_before_its_lease_expires_for_others() -> None:
    async with running() as h:
        a, b = h.elector("a"), h.elector("b")
        h.start(a)
        await h.advance(0)
        h.start(b)
        await h.advance(5)
        assert a._acked_at is not None
        # A loses the API server: its calls hang, unanswered. B still reaches it.
        a_client = h.clients[0]
        a_client.partitioned = True
        cut = h.now
        await h.advance(30, until=lambda: b.is_leader)
        last_write = a._acked_at
        assert last_write <= cut
        stopped = h.when("a", "work-stopped")
        stepped_down = h.when("a", "follower")
        took = h.when("b", "leader")
        assert stopped is not None and stepped_down is not None and took is not None
        # A gave up within its renew deadline of the last write the server accepted ...
        assert stepped_down <= last_write + 10 + 1e-6
        assert stopped <= last_write + 10 + 1e-6
        # ... and B took over only after the lease expired on its own observation.
        assert took >= last_write + 15
        assert took - stopped >= 5 - 1e-6
        assert h.active == {"b"}
        # Repaired: A comes back as a follower, never as a second leader.
        a_client.partitioned = False
        await h.advance(20)
        assert leader_of(h) == "b" and a.observed_holder == "b"


async def test_may_act_closes_before_step_down() -> None:
    async with running() as h:
        a = h.elector("a")
        h.start(a)
        await h.advance(0)
        h.kube.fail_next("*", re.escape(ITEM), 500, count=1000)
        assert a._acked_at is not None
        acked = a._acked_at
        seen: list[tuple[float, bool, bool]] = []
        while h.now < acked + 11:
            seen.append((h.now, a.is_leader, a.may_act()))
            await h.advance(STEP)
        gate_closed = min(t for t, _, act in seen if not act)
        stepped_down = min(t for t, lead, _ in seen if not lead)
        assert acked + 9 - STEP <= gate_closed <= acked + 9
        assert gate_closed < stepped_down <= acked + 10
        assert all(lead for t, lead, _ in seen if t < acked + 10 - 1e-6)
        assert h.when("a", "work-stopped") == h.when("a", "follower")


async def test_renewal_hung_on_the_server_cancels_work_and_recovers() -> None:
    async with running() as h:
        a = h.elector("a")
        h.start(a)
        await h.advance(3)
        assert a._acked_at is not None
        acked = a._acked_at
        puts = h.kube.count("PUT", ITEM_RE)
        h.hang("PUT", ITEM_RE)
        await h.advance(12)
        stopped = h.when("a", "work-stopped")
        assert stopped is not None and stopped <= acked + 10 + 1e-6
        assert not a.is_leader and h.active == set()
        # The optimistic renewal and the one after a fresh read both reached the server.
        assert h.kube.count("PUT", ITEM_RE) - puts >= 2
        # Unblocked: the held writes land late; whatever they did, there is one leader again.
        h.release_hangs()
        await h.advance(10)
        assert a.is_leader and h.lease()["spec"]["holderIdentity"] == "a"


async def test_release_on_cancel_hands_over_within_a_retry_period() -> None:
    async with running() as h:
        a, b = h.elector("a"), h.elector("b")
        h.start(a)
        await h.advance(0)
        h.start(b)
        await h.advance(7)
        puts_before = h.kube.count("PUT", ITEM_RE)
        h.scopes["a"].cancel()  # SIGTERM
        stopped_at = h.now
        await h.advance(0)
        assert h.when("a", "run-ended") == stopped_at and not a.is_leader
        release = h.kube.requests_matching("PUT", ITEM_RE)[puts_before:]
        assert [r.body["spec"]["holderIdentity"] for r in release] == [""]
        assert release[0].body["spec"]["leaseDurationSeconds"] == 1
        # The work stopped before the release was written (same instant, but earlier in order).
        order = [w for t, i, w in h.timeline if i == "a" and t == stopped_at]
        assert order.index("work-stopped") < order.index("follower")
        await h.advance(10, until=lambda: b.is_leader)
        took = h.when("b", "leader")
        assert took is not None and took <= stopped_at + 2 * 1.2 + STEP
        spec = h.lease()["spec"]
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


async def test_release_waits_until_an_abandoned_write_is_a_margin_behind() -> None:
    """The leader's work is cancelled with a write in the air (abandoned: the server may still
    apply it). Releasing at once would let another candidate lead while it lands (found by
    the simulation: a policy status PATCH applied after the release). The release waits
    until the write is the write margin behind; a write still in flight: no release at all,
    the Lease expires."""
    async with running() as h:
        a, b = h.elector("a"), h.elector("b")
        h.start(a)
        await h.advance(0)
        h.start(b)
        await h.advance(7)
        cancelled_at = h.now
        a.writes_abandoned_at = lambda: cancelled_at  # the work's write, cancelled with it
        puts_before = h.kube.count("PUT", ITEM_RE)
        h.scopes["a"].cancel()
        await h.advance(0)
        assert h.kube.count("PUT", ITEM_RE) == puts_before, "released with a write in the air"
        await h.advance(1.5)
        release = h.kube.requests_matching("PUT", ITEM_RE)[puts_before:]
        assert [r.body["spec"]["holderIdentity"] for r in release] == [""]
        await h.advance(10, until=lambda: b.is_leader)
        took = h.when("b", "leader")
        assert took is not None and took >= cancelled_at + WRITE_MARGIN


async def test_no_release_while_a_write_is_in_flight() -> None:
    async with running() as h:
        a, b = h.elector("a"), h.elector("b")
        h.start(a)
        await h.advance(0)
        h.start(b)
        await h.advance(7)
        a.writes_abandoned_at = lambda: float("inf")
        puts_before = h.kube.count("PUT", ITEM_RE)
        h.scopes["a"].cancel()
        stopped_at = h.now
        await h.advance(30, until=lambda: b.is_leader)
        release = h.kube.requests_matching("PUT", ITEM_RE)[puts_before:]
        assert all(r.body["spec"]["holderIdentity"] != "" for r in release)
        took = h.when("b", "leader")
        assert took is not None and took >= stopped_at + 15 - 8  # the Lease expired


async def test_the_client_says_when_its_last_write_was_abandoned(kube: FakeKube) -> None:
    """Answered writes (2xx or an error status) leave nothing pending; a write with no answer
    (timed out, cancelled) is abandoned at that moment; one in flight is +inf."""
    clock = FakeClock()
    api = ApiClient(Configuration(host=kube.base_url))
    client = KubeClient(api, clock=clock, write_deadline=lambda: clock.monotonic() + 30)
    events = "/api/v1/namespaces/default/events"
    body: JSON = {"metadata": {"name": "x"}, "involvedObject": {"kind": "Node", "name": "n"}}
    try:
        assert client.writes_abandoned_at() == float("-inf")
        await client.request("POST", events, body=body)
        with contextlib.suppress(ApiError):
            await client.request("POST", events, body=body)  # 409: answered
        assert client.writes_abandoned_at() == float("-inf")
        kube.hang("PATCH", "events/x")

        async def patch() -> None:
            await client.request(
                "PATCH", f"{events}/x", body={"count": 2}, content_type=MERGE_PATCH
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(patch)
            for _ in range(200):
                if client.writes_abandoned_at() == float("inf"):
                    break
                await anyio.sleep(0.005)
            assert client.writes_abandoned_at() == float("inf")
            clock.advance(5)
            tg.cancel_scope.cancel()
        assert client.writes_abandoned_at() == clock.monotonic()
    finally:
        kube.release_hangs()
        await client.close()


async def test_create_race_one_wins_the_other_gets_409() -> None:
    async with running() as h:
        h.barrier = Barrier(2)
        h.barrier.armed = True  # both read "no Lease" before either creates it
        a, b = h.elector("a", seed=1), h.elector("b", seed=1)
        h.start(a)
        h.start(b)
        await h.advance(0)
        assert h.kube.count("GET", ITEM_RE) == 2
        assert h.kube.count("POST", re.escape(COLLECTION) + "$") == 2
        winner = leader_of(h)
        assert winner in ("a", "b")
        assert h.lease()["spec"]["holderIdentity"] == winner
        await h.advance(20)
        assert leader_of(h) == winner
        loser = b if winner == "a" else a
        assert loser.observed_holder == winner and h.when(loser.identity, "leader") is None


async def test_update_race_one_wins_the_other_gets_409() -> None:
    async with running() as h:
        await put_lease("ghost", h)  # held by a process that then died
        a, b = h.elector("a", seed=7), h.elector("b", seed=7)  # same jitter: lockstep polls
        h.start(a)
        h.start(b)
        await h.advance(14)
        assert leader_of(h) is None and a.observed_holder == b.observed_holder == "ghost"
        h.barrier = Barrier(2)
        h.barrier.armed = True
        puts = h.kube.count("PUT", ITEM_RE)
        await h.advance(6, until=lambda: leader_of(h) is not None)
        winner = leader_of(h)
        assert winner is not None
        assert h.barrier.armed is False  # both read the expired record before writing
        assert h.kube.count("PUT", ITEM_RE) - puts == 2  # both tried; the server took one
        spec = h.lease()["spec"]
        assert spec["holderIdentity"] == winner
        assert spec["leaseTransitions"] == 5  # one change of holder, not two
        await h.advance(10)
        assert leader_of(h) == winner


async def test_work_crash_stops_renewal_releases_and_raises() -> None:
    async with running() as h:
        a = h.elector("a")

        async def crashing() -> None:
            await h.clock.sleep(3)
            raise RuntimeError("remediation bug")

        h.start(a, crashing)
        await h.advance(4)
        assert isinstance(h.outcomes.get("a"), RuntimeError)
        assert not a.is_leader
        assert h.lease()["spec"]["holderIdentity"] == ""
        puts = h.kube.count("PUT", ITEM_RE)
        await h.advance(10)
        assert h.kube.count("PUT", ITEM_RE) == puts  # renewals stopped


async def test_work_returning_releases_and_returns() -> None:
    async with running() as h:
        a = h.elector("a")

        async def short() -> None:
            await h.clock.sleep(1)

        h.start(a, short)
        await h.advance(2)
        assert "a" in h.outcomes and h.outcomes["a"] is None
        assert not a.is_leader and h.lease()["spec"]["holderIdentity"] == ""


async def test_lost_lease_to_another_holder_steps_down_at_once() -> None:
    async with running() as h:
        a = h.elector("a")
        h.start(a)
        await h.advance(1)
        # An admin (or a buggy peer) overwrites the Lease: the next renewal sees it.
        lease = h.lease()
        lease["spec"]["holderIdentity"] = "intruder"
        await h.client().request("PUT", ITEM, body=lease)
        await h.advance(2.5)
        assert not a.is_leader and h.active == set()
        assert a.observed_holder == "intruder"
        # A waits the full duration before taking the (no longer renewed) Lease back.
        await h.advance(12)
        assert not a.is_leader
        await h.advance(6, until=lambda: a.is_leader)
        assert a.is_leader
