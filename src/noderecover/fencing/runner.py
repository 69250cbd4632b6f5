"""One fence, start to proof: check, fence, then the power state read back until Off.

Bounded by `timeout` as a whole (the write path's fence deadline); a try that fails with a
retryable error (a timeout, a refused connection, a 5xx) is tried again after a backoff with
jitter, at most `tries` times and only while time is left. A fence ends in one of:
- done: the provider read the power state back as Off (or, for a provider that is its own
  proof - the `command`, a fence agent's reboot - it said done);
- FenceError: the reason (fence-unreachable, fence-refused, fence-not-off, fence-secret,
  fence-no-target) and a message with no credential in it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from noderecover.base.backoff import Backoff
from noderecover.base.clock import Clock
from noderecover.core.fencing import FenceAction, Target
from noderecover.core.reasons import Blocked
from noderecover.fencing.provider import Credentials, FenceError, FenceProvider, PowerState

log = logging.getLogger("noderecover.fencing")

TRIES = 3
POLL = 1.0  # how often the power state is read back while waiting for Off


@dataclass(frozen=True, slots=True)
class Fenced:
    """A fence that proved the node off."""

    target: Target
    action: FenceAction
    state: PowerState
    seconds: float
    tries: int


async def fence_node(
    provider: FenceProvider,
    target: Target,
    creds: Credentials,
    action: FenceAction,
    *,
    timeout: float,
    clock: Clock,
    rng: random.Random | None = None,
    tries: int = TRIES,
    poll: float = POLL,
    before_fence: Callable[[], Awaitable[None]] | None = None,
) -> Fenced:
    """Fence `target` and read it back Off; FenceError otherwise (see the module doc).

    `before_fence()` is awaited right before each power request, after the check: the
    caller's last word (leadership, gates, evidence still fresh); it raises to stop."""
    start = clock.monotonic()
    deadline = start + timeout
    backoff = Backoff(base=1.0, cap=10.0, rng=rng or random.Random())
    stage = "check"
    for attempt in range(1, tries + 1):
        try:
            with anyio.fail_after(max(0.0, deadline - clock.monotonic())):
                stage = "check"
                await provider.check(target, creds)
                if before_fence is not None:
                    await before_fence()
                stage = "fence"
                await provider.fence(target, creds, action)
                log.warning("fence %s of %s requested through %s", action, target, provider.kind)
                stage = "confirm"
                state = await _confirm(provider, target, creds, action, clock, poll)
            seconds = clock.monotonic() - start
            log.warning(
                "%s confirmed %s: %s after %.1fs (%d tries)",
                provider.kind,
                target,
                state,
                seconds,
                attempt,
            )
            return Fenced(target, action, state, seconds, attempt)
        except TimeoutError:
            reason = Blocked.FENCE_NOT_OFF if stage == "confirm" else Blocked.FENCE_UNREACHABLE
            what = "never read back Off" if stage == "confirm" else f"no answer ({stage})"
            raise FenceError(
                reason, f"{provider.kind} {what} within {timeout:g}s for {target}"
            ) from None
        except FenceError as exc:
            delay = backoff.next_delay()
            left = deadline - clock.monotonic()
            if not exc.retryable or attempt == tries or delay >= left:
                raise
            log.warning(
                "fence of %s, try %d of %d: %s; again in %.1fs",
                target,
                attempt,
                tries,
                exc.message,
                delay,
            )
            await clock.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def _confirm(
    provider: FenceProvider,
    target: Target,
    creds: Credentials,
    action: FenceAction,
    clock: Clock,
    poll: float,
) -> PowerState:
    if provider.self_confirmed(action):
        return await provider.confirm(target, creds)
    while True:
        state = await provider.confirm(target, creds)
        if state is PowerState.OFF:
            return state
        await clock.sleep(poll)
