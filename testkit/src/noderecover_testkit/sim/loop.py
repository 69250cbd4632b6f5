"""Virtual time for asyncio: the loop's clock only moves when nothing is ready.

`VirtualTimeLoop.time()` is virtual. An iteration never blocks: when asyncio would wait for
I/O until the next timer, the loop jumps virtual time to that timer (polling the real
selector now and then: the loop's self-pipe, nothing else is registered in a simulation).
anyio's sleep, fail_after and move_on_after all read `loop.time()`, so they run on virtual
time. A wait with no timer at all and nothing ready is a deadlock: `Deadlock` is raised.

The iteration (`_run_once`) is asyncio's own, with the wait replaced by the jump, in one
method; its timer heap holds (when, sequence, handle), so timers due at the same instant run
in the order they were set (asyncio's heap leaves that order to the heap's shape) and the
heap compares tuples, not handles (`TimerHandle.__lt__`, a Python call per comparison).
`call_soon` and `call_at` skip asyncio's debug-mode checks (a simulation never runs in debug
mode). A seed runs ~6,000 iterations and ~5,000 timers; a CI run, thousands of seeds.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import selectors
import time
from asyncio import events
from collections.abc import Callable
from typing import Any, TypeVarTuple

_Ts = TypeVarTuple("_Ts")

CPU_TICK = 1e-6  # virtual seconds each loop iteration with ready work takes

# asyncio's own thresholds (base_events): cancelled timers are purged from the heap once
# they are more than half of it (and it holds more than 100).
_MIN_SCHEDULED_TIMER_HANDLES = 100
_MIN_CANCELLED_TIMER_HANDLES_FRACTION = 0.5
_MAXIMUM_SELECT_TIMEOUT = 24 * 3600  # asyncio's longest single wait
_DELIVER_CANCELLATION = "_deliver_cancellation"


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is scheduled: the simulation can never progress."""


class Livelock(RuntimeError):
    """The run took more loop iterations than its cap (a busy loop: deterministic), or more
    CPU time of its process than its budget (a backstop only: not reproducible; CPU time, not
    wall time, so a machine loaded by other work does not make a seed fail)."""


# Loop iterations in a row with work ready, virtual time moving only by CPU_TICK: past this, a
# livelock (a busy loop that never waits for a timer). Counted, not timed, so a livelock fails
# the same way on every machine and replays exactly.
MAX_BUSY = 1000


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector and never blocks on it: the loop moves virtual time instead."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._real.select(0)

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class _SimTask(asyncio.Task[Any]):
    """A Task with a cheap repr: anyio puts the cancelling task's repr into every cancel
    reason (`CancelScope.cancel`), and asyncio's repr formats the coroutine's frame, about
    a tenth of a seed's CPU time. The name says which task it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<Task {self.get_name()}>"


class _SimHandle(events.Handle):
    """asyncio's Handle, made without asking the loop for its debug mode."""

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None = None,
    ) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._context = context if context is not None else contextvars.copy_context()
        self._source_traceback = None
        self._repr = None


class _SimTimer(events.TimerHandle):
    """asyncio's TimerHandle, made without asking the loop for its debug mode."""

    __slots__ = ()

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None = None,
    ) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._context = context if context is not None else contextvars.copy_context()
        self._source_traceback = None
        self._repr = None
        self._when = when
        self._scheduled = False


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> _SimTask:
    return _SimTask(coro, loop=loop, **kwargs)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, starting at `start` seconds."""

    def __init__(self, start: float = 0.0, budget: float = 60.0, max_busy: int = MAX_BUSY) -> None:
        self._vtime = start
        self.iterations = 0
        self.busy = 0
        self.max_busy = max_busy
        self.max_seen_busy = 0
        self.real_deadline = time.process_time() + budget
        self._virtual_selector = _VirtualSelector()
        self._timer_seq = itertools.count()
        super().__init__(self._virtual_selector)
        # Timers due within this much of now fire together; virtual time is exact.
        self._clock_resolution = 1e-9
        self.set_task_factory(_task_factory)

    def spinning(self) -> bool:
        """Only anyio's cancellation delivery is ready: it re-schedules itself with call_soon
        until the cancelled task leaves its scope (e.g. a shielded, bounded cleanup waiting on
        a timer). In real time that spin lets the clock run; here it must too."""
        ready: Any = self._ready  # type: ignore[attr-defined]
        for h in ready:
            if getattr(h._callback, "__name__", "") != _DELIVER_CANCELLATION:
                return False
        return bool(ready)

    def next_timer(self) -> float | None:
        scheduled: Any = self._scheduled  # type: ignore[attr-defined]
        return max(0.0, scheduled[0][0] - self._vtime) if scheduled else None

    def call_soon(
        self,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        me: Any = self
        if me._closed:
            raise RuntimeError("Event loop is closed")
        handle = _SimHandle(callback, args, self, context)
        me._ready.append(handle)
        return handle

    def call_at(
        self,
        when: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        me: Any = self
        if me._closed:
            raise RuntimeError("Event loop is closed")
        timer = _SimTimer(when, callback, args, self, context)
        heapq.heappush(me._scheduled, (when, next(self._timer_seq), timer))
        timer._scheduled = True
        return timer

    def time(self) -> float:
        return self._vtime

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._vtime += seconds

    def _poll_real(self) -> bool:
        """Polls the real selector (the self-pipe: signals) and checks the CPU-time budget;
        True when it had events (processed: this iteration then moves no virtual time)."""
        ready = self._virtual_selector.select(0)
        if ready:
            me: Any = self
            me._process_events(ready)
            return True
        if time.process_time() > self.real_deadline:
            raise Livelock(
                f"CPU-time budget spent at virtual time {self._vtime:.3f}s "
                f"({self.iterations} loop iterations)"
            )
        return False

    def _run_once(self) -> None:
        """asyncio's BaseEventLoop._run_once, where the selector's wait is a jump of virtual
        time: to the next timer when nothing is ready, by CPU_TICK when work is ready."""
        me: Any = self  # asyncio's private state, untyped
        sched: list[Any] = me._scheduled
        ready: Any = me._ready
        sched_count = len(sched)
        if (
            sched_count > _MIN_SCHEDULED_TIMER_HANDLES
            and me._timer_cancelled_count / sched_count > _MIN_CANCELLED_TIMER_HANDLES_FRACTION
        ):
            new_scheduled = []
            for entry in sched:
                if entry[2]._cancelled:
                    entry[2]._scheduled = False
                else:
                    new_scheduled.append(entry)
            heapq.heapify(new_scheduled)
            me._scheduled = sched = new_scheduled
            me._timer_cancelled_count = 0
        else:
            while sched and sched[0][2]._cancelled:
                me._timer_cancelled_count -= 1
                heapq.heappop(sched)[2]._scheduled = False

        timeout: float | None = None
        if ready or me._stopping:
            timeout = 0
        elif sched:
            timeout = min(max(0, sched[0][0] - self._vtime), _MAXIMUM_SELECT_TIMEOUT)

        self.iterations += 1
        # Only the loop's self-pipe is registered (signals): polled now and then, and before
        # a deadlock is declared, not on every iteration (a syscall each).
        polled = (self.iterations & 1023 == 0 or timeout is None) and self._poll_real()
        if not polled:
            if timeout == 0 and self.spinning():
                timeout = self.next_timer()
            if timeout == 0:
                # Work is ready: a little virtual time passes, as the CPU time of a step
                # would. Without it a deadline a rounding error ahead (a Timeline at the wall
                # scale has a 0.24 us resolution) is never reached by a loop that waits for it.
                self._vtime += CPU_TICK
                self.busy += 1
                if self.busy > self.max_busy:
                    raise Livelock(
                        f"{self.busy} loop iterations in a row with work ready, no timer "
                        f"awaited, at virtual time {self._vtime:.3f}s"
                    )
                self.max_seen_busy = max(self.max_seen_busy, self.busy)
            elif timeout is None:
                raise Deadlock(f"nothing ready and no timer at virtual time {self._vtime:.3f}s")
            else:
                if timeout > 0:
                    self._vtime += timeout
                self.busy = 0

        end_time = self._vtime + self._clock_resolution
        while sched and sched[0][0] < end_time:
            handle = heapq.heappop(sched)[2]
            handle._scheduled = False
            ready.append(handle)

        # Every callback ready now runs; those they schedule run next iteration (asyncio's).
        # Handle._run, inline: one Python call less per callback.
        popleft = ready.popleft
        for _ in range(len(ready)):
            handle = popleft()
            if handle._cancelled:
                continue
            try:
                handle._context.run(handle._callback, *handle._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.call_exception_handler(
                    {"message": "Exception in callback", "exception": exc, "handle": handle}
                )
        handle = None  # breaks cycles when an exception occurs


def run_virtual(main: Any, start: float = 0.0, budget: float = 60.0) -> Any:
    """Run the coroutine `main` to completion on a fresh VirtualTimeLoop (Livelock once
    `budget` seconds of this process's CPU time are spent)."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start, budget)) as runner:
        return runner.run(main)
