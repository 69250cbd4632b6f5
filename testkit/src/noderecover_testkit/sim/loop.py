"""Virtual time for asyncio: the loop's clock only moves when nothing is ready.

`VirtualTimeLoop.time()` is virtual. Its selector never blocks: when asyncio would wait for
I/O until the next timer, the selector polls the real selector once (the loop's self-pipe,
nothing else is registered in a simulation) and jumps virtual time to that timer. anyio's
sleep, fail_after and move_on_after all read `loop.time()`, so they run on virtual time.
A wait with no timer at all and nothing ready is a deadlock: `Deadlock` is raised.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from typing import Any

CPU_TICK = 1e-6  # virtual seconds each loop iteration with ready work takes


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is scheduled: the simulation can never progress."""


class Livelock(RuntimeError):
    """The run took more loop iterations than its cap (a busy loop: deterministic), or more
    real time than its budget (a backstop only: not reproducible)."""


# Loop iterations in a row with work ready, virtual time moving only by CPU_TICK: past this, a
# livelock (a busy loop that never waits for a timer). Counted, not timed, so a livelock fails
# the same way on every machine and replays exactly.
MAX_BUSY = 1000


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector: polls it without blocking, then advances virtual time."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        loop.iterations += 1
        if loop.iterations & 1023 == 0 or timeout is None:
            # Only the loop's self-pipe is registered (signals): polled now and then, and
            # before a deadlock is declared, not on every iteration (a syscall each).
            ready = self._real.select(0)
            if ready:
                return ready
            if time.perf_counter() > loop.real_deadline:
                raise Livelock(
                    f"real-time budget spent at virtual time {loop.time():.3f}s "
                    f"({loop.iterations} loop iterations)"
                )
        if timeout == 0 and loop.spinning():
            timeout = loop.next_timer()
        if timeout == 0:
            # Work is ready: a little virtual time passes, as the CPU time of a step would.
            # Without it a deadline a rounding error ahead (a Timeline at the wall scale has
            # a 0.24 us resolution) is never reached by a loop that waits for it.
            loop.advance(CPU_TICK)
            loop.busy += 1
            if loop.busy > loop.max_busy:
                raise Livelock(
                    f"{loop.busy} loop iterations in a row with work ready, no timer awaited, "
                    f"at virtual time {loop.time():.3f}s"
                )
            loop.max_seen_busy = max(loop.max_seen_busy, loop.busy)
            return []
        if timeout is None:
            raise Deadlock(f"nothing ready and no timer at virtual time {self._loop.time():.3f}s")
        loop.advance(timeout)
        loop.busy = 0
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, starting at `start` seconds."""

    def __init__(self, start: float = 0.0, budget: float = 60.0, max_busy: int = MAX_BUSY) -> None:
        self._vtime = start
        self.iterations = 0
        self.busy = 0
        self.max_busy = max_busy
        self.max_seen_busy = 0
        self.real_deadline = time.perf_counter() + budget
        super().__init__(_VirtualSelector(self))
        # Timers due within this much of now fire together; virtual time is exact.
        self._clock_resolution = 1e-9

    def spinning(self) -> bool:
        """Only anyio's cancellation delivery is ready: it re-schedules itself with call_soon
        until the cancelled task leaves its scope (e.g. a shielded, bounded cleanup waiting on
        a timer). In real time that spin lets the clock run; here it must too."""
        ready: Any = self._ready  # type: ignore[attr-defined]
        if not ready:
            return False
        return all(getattr(h._callback, "__name__", "") == "_deliver_cancellation" for h in ready)

    def next_timer(self) -> float | None:
        scheduled: Any = self._scheduled  # type: ignore[attr-defined]
        return max(0.0, scheduled[0].when() - self._vtime) if scheduled else None

    def time(self) -> float:
        return self._vtime

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._vtime += seconds


def run_virtual(main: Any, start: float = 0.0, budget: float = 60.0) -> Any:
    """Run the coroutine `main` to completion on a fresh VirtualTimeLoop (Livelock once
    `budget` seconds of real time are spent)."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start, budget)) as runner:
        return runner.run(main)
