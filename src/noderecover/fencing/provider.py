"""The one small interface every fence provider implements, and what they share.

- `check(target, creds)`: configured and reachable (a read: no power change).
- `fence(target, creds, action)`: the power-off (or reset) request itself.
- `confirm(target, creds)`: the power state read back (`PowerState.OFF` is the proof).

A provider raises `FenceError` with a registered Blocked reason and a message that never
holds a credential (`scrub` takes every credential value out of any text that leaves the
provider: logs, Events, exception text). Blocking libraries (sushy, boto3) run in a worker
thread, each network call with its own timeout (`in_thread`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from typing import Protocol, TypeVar

import anyio.to_thread

from noderecover.core.fencing import FenceAction, Provider, Target
from noderecover.core.reasons import Blocked

T = TypeVar("T")

REDACTED = "<redacted>"


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"  # transitioning, or not said


class Credentials(Mapping[str, str]):
    """The Secret's keys and values. Its repr and str show the keys only."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Credentials(keys={sorted(self._values)})"

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """`text` with every credential value replaced (longest first)."""
        for v in sorted(self._values.values(), key=len, reverse=True):
            if v:
                text = text.replace(v, REDACTED)
        return text


class FenceError(Exception):
    """A fence that did not prove the node off. `reason`: a registered Blocked reason;
    `retryable`: worth another try within the same fence (a timeout, a refused connection)."""

    def __init__(self, reason: Blocked, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable


class FenceProvider(Protocol):
    kind: Provider

    def self_confirmed(self, action: FenceAction) -> bool:
        """Whether the fence's own success is the proof for `action` (nothing Off to read
        back: the `command`; a fence agent's reboot, which waits for Off itself)."""
        ...

    async def check(self, target: Target, creds: Credentials) -> None:
        """Configured and reachable; FenceError otherwise. Changes nothing."""
        ...

    async def fence(self, target: Target, creds: Credentials, action: FenceAction) -> None:
        """Ask for the power-off (or reset); FenceError when it was not accepted."""
        ...

    async def confirm(self, target: Target, creds: Credentials) -> PowerState:
        """The power state read back now; FenceError when it cannot be read."""
        ...


async def in_thread(fn: Callable[[], T], timeout: float) -> T:
    """Run a blocking call in a worker thread, bounded by `timeout` (TimeoutError). The call
    itself must bound its own network I/O too: an abandoned thread ends with its timeout."""
    with anyio.fail_after(timeout):
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


def unreachable(what: str, exc: BaseException, creds: Credentials) -> FenceError:
    return FenceError(
        Blocked.FENCE_UNREACHABLE, creds.scrub(f"{what}: {_name(exc)}: {exc}"), retryable=True
    )


def refused(what: str, exc: BaseException | str, creds: Credentials) -> FenceError:
    text = exc if isinstance(exc, str) else f"{_name(exc)}: {exc}"
    return FenceError(Blocked.FENCE_REFUSED, creds.scrub(f"{what}: {text}"))


def _name(exc: BaseException) -> str:
    return type(exc).__name__
