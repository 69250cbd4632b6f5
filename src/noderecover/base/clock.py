"""Clocks, injected everywhere time matters.

Invariants:
- Durations and deadlines are measured on `monotonic()`; it never jumps.
- `wall()` is only for timestamps written to the API (annotations, Lease MicroTime, Events)
  and for reading timestamps other parties wrote; never compare another host's wall time
  with ours to decide that something expired unless a skew-safe rule says so.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: time.monotonic, time.time and anyio.sleep."""

    # Its sleep is a timer of the running event loop: see `loop_timers`.
    loop_timers = True

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class Timeline:
    """Seconds on the wall-clock scale that advance with the monotonic clock.

    Invariant: `now()` never jumps. It starts at the wall time of construction and moves
    only with `monotonic()`, so an NTP step can neither shorten nor stretch a timer measured
    on it. It is what the controller's records, timers and annotations use; `drift()` says
    how far the wall clock has moved away since (what a step could do to a resumed timer).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._offset = clock.wall() - clock.monotonic()

    def now(self) -> float:
        return self._clock.monotonic() + self._offset

    def drift(self) -> float:
        """Wall clock minus timeline: the sum of the steps since start (0 without any)."""
        return self._clock.wall() - self.now()


class FakeClock:
    """A clock that only moves when told to; `sleep` waits until `advance` passes its deadline.

    Used by unit tests so timers of minutes run in microseconds of real time.
    """

    def __init__(self, start_wall: float = 1_800_000_000.0, start_mono: float = 1000.0) -> None:
        self._mono = start_mono
        self._offset = start_wall - start_mono
        self._waiters: list[tuple[float, anyio.Event]] = []

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._mono + self._offset

    def skew_wall(self, seconds: float) -> None:
        """Move the wall clock alone (an NTP step), monotonic time unchanged."""
        self._offset += seconds

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._waiters.append((self._mono + seconds, event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._mono += seconds
        due = [w for w in self._waiters if w[0] <= self._mono]
        self._waiters = [w for w in self._waiters if w[0] > self._mono]
        for _, event in due:
            event.set()

    @property
    def sleepers(self) -> int:
        return len(self._waiters)


def loop_timers(clock: Clock) -> bool:
    """Whether `clock.sleep(s)` is a timer of the running event loop, `s` seconds from now
    (anyio.sleep: the system clock, the simulation's): a bound on that clock is then an anyio
    deadline, a cancel scope, and needs no helper task to sleep and cancel (what a bound on a
    clock that only moves when told to, a unit test's, needs). Same deadline either way."""
    return getattr(clock, "loop_timers", False) is True


async def wait_event(event: anyio.Event, clock: Clock, seconds: float | None) -> None:
    """Until `event` is set or `seconds` passed on `clock` (None: no timeout).

    The timeout runs on the injected clock, so a fake clock drives it in tests.
    """
    if event.is_set():
        return
    if loop_timers(clock):
        if seconds is None:
            await event.wait()
            return
        with anyio.move_on_after(max(0.0, seconds)):
            await event.wait()
        return
    async with anyio.create_task_group() as tg:
        if seconds is not None:

            async def alarm() -> None:
                await clock.sleep(seconds)
                tg.cancel_scope.cancel()

            tg.start_soon(alarm)
        await event.wait()
        tg.cancel_scope.cancel()


_T = TypeVar("_T")


async def call_within(clock: Clock, seconds: float, call: Callable[[], Awaitable[_T]]) -> _T:
    """`await call()`, cancelled after `seconds` on `clock` (then TimeoutError).

    Socket bounds run in real time; this one follows the clock deadlines are computed on, so
    both agree in tests with a fake clock. An error of `call` is re-raised as itself.
    """
    if loop_timers(clock):
        with anyio.move_on_after(max(0.0, seconds)):
            return await call()
        raise TimeoutError(f"no answer in {seconds:.3g}s")  # only the deadline ends it here
    results: list[_T] = []
    errors: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def alarm() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(alarm)
        try:
            results.append(await call())
        except Exception as exc:  # re-raised below, outside the task group (no group)
            errors.append(exc)
        tg.cancel_scope.cancel()
    if errors:
        raise errors[0]
    if not results:
        raise TimeoutError(f"no answer in {seconds:.3g}s")
    return results[0]
