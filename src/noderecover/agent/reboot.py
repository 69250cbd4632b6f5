"""How the agent stops its node: one class per strategy behind one interface.

- `Watchdog`: opens the kernel watchdog device (which arms it) at the agent's first check
  that reached the API server - never before: a node that boots into a partition is not
  rebooted again and again, and an agent restarted (after a crash) while cut off leaves the
  dog its dead predecessor armed to bite - then feeds it with a write every interval, and
  fences by *no longer feeding*: the hardware dog (or the `softdog` module) reboots the node
  within its timeout. The magic close character 'V' is written only by `disarm`, on a clean
  shutdown of a healthy agent; after a fence nothing is ever written again and the device is
  never closed by us (a driver without magic close would stop the dog on close).
- `Sysrq`: writes 'b' to /proc/sysrq-trigger: an immediate reboot, no sync, no unmount
  (the kernel's emergency path; a sync could hang on a dead network filesystem). Used where
  no watchdog device exists. Nothing to feed, so an agent that crashes does not fence.
- `FileAction`: the test harness's "reboot", a watchdog emulated with files. Fencing appends
  one JSON line to a file (the harness then powers that kwok node off at once); armed, every
  feed stamps `<file>.feed` with the monotonic time, and the harness powers the node off when
  an armed stamp is older than the timeout - as the kernel dog would reboot a node whose agent
  stalled, hung, was stopped or killed. The controller trusts `test` agents like watchdog
  ones, so the harness must model the dog. Never used in a cluster.

Paths are parameters (the agent's flags), so unit tests use plain files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from noderecover.core.agent import Mode

log = logging.getLogger("noderecover.agent.reboot")

# <linux/watchdog.h>: _IOWR('W', 6, int).
WDIOC_SETTIMEOUT = 0xC0045706
MAGIC_CLOSE = b"V"
FEED = b"\0"


class RebootError(Exception):
    """The strategy cannot work here (no device, not writable): the agent exits 1 at start."""


class RebootAction(Protocol):
    mode: Mode

    @property
    def timeout(self) -> float:
        """Seconds from `fence()` until the node is certainly off."""
        ...

    def check(self) -> None:
        """At start: raise RebootError when this strategy cannot work here (arms nothing)."""
        ...

    def arm(self) -> None:
        """At the first check that reached the API server (idempotent): a watchdog is opened
        (armed) from here on."""
        ...

    def feed(self) -> None:
        """Called every feed interval while the agent is healthy or still counting."""
        ...

    def fence(self, why: str) -> None:
        """Stop the node (or let it be stopped). Final: no feed follows."""
        ...

    def disarm(self) -> None:
        """Clean shutdown of a healthy agent (never after `fence`)."""
        ...


class Watchdog:
    mode = Mode.WATCHDOG

    def __init__(self, device: Path, timeout: float) -> None:
        self.device = device
        self._timeout = timeout
        self._fd: int | None = None
        self._fenced = False
        self.feeds = 0

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def armed(self) -> bool:
        return self._fd is not None

    def check(self) -> None:
        if not self.device.exists():
            raise RebootError(f"no watchdog device at {self.device}")
        if not os.access(self.device, os.W_OK):
            raise RebootError(f"cannot open watchdog {self.device}: not writable")

    def arm(self) -> None:
        if self._fd is not None:
            return
        try:
            self._fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RebootError(f"cannot open watchdog {self.device}: {exc.strerror}") from None
        self._timeout = self._set_timeout(self._fd, self._timeout)
        log.info("watchdog %s armed, timeout %gs", self.device, self._timeout)
        self.feed()

    @staticmethod
    def _set_timeout(fd: int, wanted: float) -> float:
        """Ask the driver for `wanted` (whole seconds) and return what it took; a file that is
        not a watchdog (ENOTTY, the unit tests' fake) keeps `wanted`."""
        try:
            # WDIOC_SETTIMEOUT is read-write: the driver answers the timeout it set.
            answer = fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", max(1, round(wanted))))
            got = float(struct.unpack("i", answer)[0])
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                log.warning("watchdog timeout ioctl failed: %s", exc.strerror)
            return wanted
        # The driver may round: the larger of the two bounds the reboot.
        return max(got, wanted) if got > 0 else wanted

    def feed(self) -> None:
        if self._fenced or self._fd is None:
            return
        try:
            os.write(self._fd, FEED)
            self.feeds += 1
        except OSError as exc:
            log.error("watchdog feed failed: %s", exc.strerror)

    def fence(self, why: str) -> None:
        # Nothing to do but never feed again; the fd stays open (see the module docstring).
        self._fenced = True
        log.critical("watchdog no longer fed: the node reboots within %gs", self._timeout)

    def disarm(self) -> None:
        if self._fenced or self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.write(fd, MAGIC_CLOSE)
        with contextlib.suppress(OSError):
            os.close(fd)
        log.info("watchdog %s disarmed (clean shutdown)", self.device)


class Sysrq:
    mode = Mode.SYSRQ

    def __init__(self, trigger: Path) -> None:
        self.trigger = trigger
        self.fired = False

    @property
    def timeout(self) -> float:
        return 0.0

    def check(self) -> None:
        if not self.trigger.exists():
            raise RebootError(f"no sysrq trigger at {self.trigger}")
        # Opened for writing and closed, nothing written: the truth for root too (a
        # read-only mount, a directory), where access(2) would say yes. (A watchdog is never
        # probed this way: opening it arms it.)
        try:
            fd = os.open(self.trigger, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RebootError(
                f"sysrq trigger {self.trigger} is not writable: {exc.strerror}"
            ) from None
        os.close(fd)

    def arm(self) -> None:
        self.check()

    def feed(self) -> None:
        return None

    def fence(self, why: str) -> None:
        log.critical("rebooting through %s now", self.trigger)
        self.fired = True
        fire_sysrq(self.trigger)

    def disarm(self) -> None:
        return None


def fire_sysrq(trigger: Path) -> bool:
    """Write 'b' (reboot now) to the sysrq trigger; False when that failed."""
    try:
        fd = os.open(trigger, os.O_WRONLY)
        try:
            os.write(fd, b"b")
        finally:
            os.close(fd)
    except OSError as exc:
        log.error("sysrq reboot failed: %s", exc.strerror)
        return False
    return True


def feed_file(fence_file: Path) -> Path:
    """Where a `FileAction` fencing through `fence_file` stamps its feeds."""
    return fence_file.with_name(fence_file.name + ".feed")


@dataclass(frozen=True, slots=True)
class FeedStamp:
    """A `FileAction`'s last feed: `fed` on CLOCK_MONOTONIC (one clock for every process of
    the host); `armed` False after a clean disarm (the magic close)."""

    armed: bool
    timeout: float
    fed: float
    pid: int

    def overdue(self, now: float) -> float | None:
        """Seconds past the timeout at monotonic `now` (the dog bites), else None."""
        late = now - self.fed - self.timeout
        return late if self.armed and late > 0 else None


def read_feed(path: Path) -> FeedStamp | None:
    """The stamp at `path`; None when there is none (never armed) or it cannot be read."""
    try:
        data = orjson.loads(path.read_bytes())
        return FeedStamp(
            bool(data["armed"]), float(data["timeout"]), float(data["fed"]), int(data["pid"])
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class FileAction:
    """Tests only: a watchdog emulated with files (see the module docstring). `monotonic` is
    the clock of the stamps (CLOCK_MONOTONIC; the unit tests' fake clock)."""

    mode = Mode.TEST

    def __init__(
        self,
        path: Path,
        node: str,
        timeout: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.node = node
        self._timeout = timeout
        self._monotonic = monotonic
        self.why = ""
        self.armed = False
        self.feeds = 0
        self._fenced = False

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def feed_path(self) -> Path:
        return feed_file(self.path)

    def check(self) -> None:
        parent = self.path.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise RebootError(f"test fence file {self.path}: folder not writable")

    def arm(self) -> None:
        if self.armed:
            return
        self.check()
        self.armed = True
        self.feed()

    def feed(self) -> None:
        if self._fenced or not self.armed:
            return
        if self._stamp(armed=True):
            self.feeds += 1

    def _stamp(self, *, armed: bool) -> bool:
        """Replace the stamp at once (a reader never sees half of one)."""
        body = orjson.dumps(
            {"armed": armed, "timeout": self._timeout, "fed": self._monotonic(), "pid": os.getpid()}
        )
        tmp = self.feed_path.with_name(self.feed_path.name + ".tmp")
        try:
            tmp.write_bytes(body)
            os.replace(tmp, self.feed_path)
        except OSError as exc:
            log.error("test watchdog feed failed: %s", exc.strerror)
            return False
        return True

    def fence(self, why: str) -> None:
        self._fenced = True  # never fed again, as a watchdog
        self.why = why
        line = orjson.dumps({"node": self.node, "why": why, "wall": time.time()})
        with self.path.open("ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def disarm(self) -> None:
        if self._fenced or not self.armed:
            return
        self.armed = False
        self._stamp(armed=False)


def choose(
    wanted: str,
    watchdog: Path,
    sysrq: Path,
    watchdog_timeout: float,
    *,
    test_file: Path | None = None,
    node: str = "",
) -> RebootAction:
    """The strategy for `--agent-reboot` (auto: the watchdog device if it exists, else sysrq).
    RebootError when it cannot work on this machine (checked again by `arm`)."""
    if wanted == "test":
        if test_file is None:
            raise RebootError("--agent-reboot test needs --agent-test-fence-file")
        return FileAction(test_file, node, watchdog_timeout)
    # A hostPath volume of a missing device may show up as an empty directory: not a dog.
    if wanted == "watchdog" or (wanted == "auto" and watchdog.exists() and not watchdog.is_dir()):
        return Watchdog(watchdog, watchdog_timeout)
    if wanted in ("sysrq", "auto"):
        if wanted == "auto" and not sysrq.exists():
            raise RebootError(
                f"no watchdog device {watchdog} and no sysrq trigger {sysrq}: cannot fence "
                "this node (load the softdog module, or mount /proc/sysrq-trigger)"
            )
        return Sysrq(sysrq)
    raise RebootError(f"unknown reboot strategy {wanted!r}")
