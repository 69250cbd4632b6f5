"""Leader election on a coordination.k8s.io/v1 Lease, client-go semantics, made cancellable.

Only the leader acts; `run(work)` runs `work()` while this replica holds the Lease.

Invariants (client-go tools/leaderelection, plus a hard step-down):
- The Lease is only ever written with a PUT carrying the resourceVersion we read (or a POST
  that fails with 409 if it exists): of two racing writers exactly one wins, the other gets 409.
- Another holder's Lease is expired only when its record has not changed for that Lease's own
  leaseDurationSeconds, measured on OUR monotonic clock from the moment we first received that
  record. renewTime is never compared with our wall clock (skew tolerant).
- `acked_at` is the monotonic time at which we SENT the last write the server accepted. The
  server applied it after that, so every other candidate observed it after that, so none can
  take over before acked_at + leaseDurationSeconds.
- The leader steps down (flag off, work cancelled) no later than acked_at + renew_deadline,
  which is < acked_at + lease_duration: every Lease call is bounded by what is left of that
  deadline, on the injected clock, and the renew loop never sleeps past it.
- `may_act()` is stricter still (a margin before the deadline); each destructive call checks it.
- `write_deadline()` = acked_at + lease_duration - write_margin while leading, -inf otherwise:
  the KubeClient of the controller and the Event recorder ends every write by it (not sent,
  or abandoned), so a write that passed `may_act()` is not still running when another
  candidate could take the Lease. The margin covers a write the server still applies after
  we stopped waiting for it.
- The Lease is released (holder "", leaseDurationSeconds 1) only after the work has stopped,
  and only with a write guarded by a resourceVersion whose record names us as holder; and
  only once every write the work abandoned (cancelled with it, timed out) is at least the
  write margin behind (`writes_abandoned_at`): the server may still apply such a write, and a
  release lets another candidate lead at once. When that cannot be waited for within the
  release bound, the Lease is not released: it expires, the margin included.
"""

from __future__ import annotations

import logging
import math
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar, cast

import anyio

from noderecover.base.clock import Clock, call_within
from noderecover.base.metrics import LEADER, LEADER_RENEWED, LEADER_TRANSITIONS
from noderecover.kube import mutating
from noderecover.kube.client import JSON, ApiError, Conflict, KubeClient, NotFound

log = logging.getLogger("noderecover.kube.election")

JITTER_FACTOR = 1.2  # client-go's: retries wait retry_period x [1, 1.2)
RELEASE_BOUND = 5.0  # upper bound of the release write, seconds
WRITE_MARGIN = 1.0  # every write ends this long before our Lease could pass, seconds

_T = TypeVar("_T")


def format_microtime(wall: float) -> str:
    """A Lease MicroTime: always exactly 6 fractional digits (the API rejects other forms)."""
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """POD_NAME (unique per replica in a Deployment), else hostname + '_' + 8 random hex."""
    pod = os.environ.get("POD_NAME", "").strip()
    if pod:
        return pod
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


class LeaseTiming(Enum):
    """The two halves of the Lease timing rule, lease_duration > renew_deadline >
    JITTER_FACTOR x retry_period:
    - the leader steps down at its renew deadline, before any other candidate may take the
      Lease (it waits the lease duration), so two replicas never act at once;
    - a renewal retried after at most JITTER_FACTOR x retry_period still fits in the deadline.
    """

    DURATION_OVER_DEADLINE = "lease_duration > renew_deadline"
    DEADLINE_OVER_RETRIES = "renew_deadline > 1.2 x retry_period"


def lease_timing_broken(
    lease_duration: float, renew_deadline: float, retry_period: float
) -> LeaseTiming | None:
    """The first half of the Lease timing rule these durations break, None when they keep it.
    The one statement of the rule: ElectionConfig.validate and the flag check both call it."""
    if not lease_duration > renew_deadline:
        return LeaseTiming.DURATION_OVER_DEADLINE
    if not renew_deadline > JITTER_FACTOR * retry_period:
        return LeaseTiming.DEADLINE_OVER_RETRIES
    return None


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    lease_name: str
    lease_namespace: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def validate(self) -> None:
        """Raise ValueError naming the flag unless duration > deadline > 1.2 x retry > 0."""
        if not self.lease_name:
            raise ValueError("--lease-name: must not be empty")
        if not self.lease_namespace:
            raise ValueError("--lease-namespace: must not be empty")
        if not self.retry_period > 0:
            raise ValueError(f"--retry-period: must be positive, got {self.retry_period:g}s")
        broken = lease_timing_broken(self.lease_duration, self.renew_deadline, self.retry_period)
        if broken is LeaseTiming.DURATION_OVER_DEADLINE:
            raise ValueError(
                f"--lease-duration: must be greater than --renew-deadline "
                f"({self.lease_duration:g}s <= {self.renew_deadline:g}s)"
            )
        if broken is LeaseTiming.DEADLINE_OVER_RETRIES:
            raise ValueError(
                f"--renew-deadline: must be greater than 1.2 x --retry-period "
                f"({self.renew_deadline:g}s <= 1.2 x {self.retry_period:g}s)"
            )

    @property
    def lease_seconds(self) -> int:
        """leaseDurationSeconds we write: rounded UP, so others never wait less than we assume."""
        return max(1, math.ceil(self.lease_duration))


class _Try(Enum):
    OK = "ok"  # we hold the Lease, as of a write the server accepted
    FAILED = "failed"  # no answer, error, or a lost 409 race: try again later
    HELD = "held"  # someone else holds an unexpired Lease


@dataclass(frozen=True, slots=True)
class _Record:
    """The election record of a Lease; any change to it restarts the expiry timer."""

    holder: str
    duration: int | None
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @staticmethod
    def of(lease: JSON) -> _Record:
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return _Record(
            holder=str(spec.get("holderIdentity") or ""),
            duration=duration if isinstance(duration, int) else None,
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=transitions if isinstance(transitions, int) else 0,
        )


class LeaderElector:
    """One candidate. `run(work)` loops: acquire, lead (work + renewals), step down or finish."""

    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        config: ElectionConfig,
        identity: str,
        rng: random.Random | None = None,
        *,
        write_margin: float = WRITE_MARGIN,
    ) -> None:
        config.validate()
        if not identity:
            raise ValueError("leader election identity must not be empty")
        if not write_margin >= 0:
            raise ValueError(f"write margin must not be negative, got {write_margin:g}s")
        self._write_margin = write_margin
        self._kube = kube
        self._clock = clock
        self._cfg = config
        self.identity = identity
        self._rng = rng or random.Random()
        ns, name = config.lease_namespace, config.lease_name
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        self._item = f"{self._collection}/{name}"
        # Each call gets at most half the renew deadline: a renewal round fits two tries.
        self._call_timeout = config.renew_deadline / 2
        self._leading = False
        self._leader_since: float | None = None
        self._acked_at: float | None = None  # send time of the last write the server accepted
        self._lease: JSON | None = None  # the Lease as our last accepted write returned it
        self._observed: _Record | None = None
        self._observed_at = 0.0  # our monotonic time when `_observed` was first received
        self._last_activity = clock.monotonic()
        # When the last write of the leader's work was abandoned (the KubeClient that ends
        # them by `write_deadline` tells): +inf while one is in flight. See `release`.
        self.writes_abandoned_at: Callable[[], float] = lambda: -math.inf

    # ----- state for the rest of the program -------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def leader_since(self) -> float | None:
        """Monotonic time at which we became leader; None while not leading."""
        return self._leader_since

    @property
    def observed_holder(self) -> str:
        """Holder identity as last seen on the Lease ('' = none or unknown). For display."""
        return self._observed.holder if self._observed else ""

    @property
    def last_activity(self) -> float:
        """Monotonic time of the last election step (attempt or wake-up), for liveness."""
        return self._last_activity

    def may_act(self, margin: float = 1.0) -> bool:
        """The act-gate: leading, and our last accepted write was SENT less than
        renew_deadline - margin ago. Conservative: others wait at least lease_duration."""
        if not self._leading or self._acked_at is None:
            return False
        return self._clock.monotonic() - self._acked_at < self._cfg.renew_deadline - margin

    def write_deadline(self) -> float:
        """Monotonic time by which every write of the leader must have ended: the Lease cannot
        pass before acked_at + lease_duration (others wait at least that, from a moment after
        we sent), less the write margin. -inf while not leading: no write may start."""
        if not self._leading or self._acked_at is None:
            return float("-inf")
        return self._acked_at + self._cfg.lease_duration - self._write_margin

    # ----- the loop -----------------------------------------------------------------------------

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Acquire, run `work()` while renewing, and repeat after a lost Lease.

        - Renewal fails for renew_deadline: the work is cancelled at once, we become a
          candidate again.
        - `work()` raises: renewal stops, the Lease is released, the exception propagates.
        - `work()` returns: the Lease is released and `run` returns.
        - `run` is cancelled: the work is cancelled first, then the Lease released (shielded,
          bounded), so the other replica takes over within about one retry period.

        Cancellation reaches the work at its next await; a step already woken in the same
        instant may still run once. Hence every destructive call checks `may_act()` first.
        """
        delay_first = False
        while True:
            await self._acquire(delay_first)
            if await self._lead(work):
                return
            delay_first = True  # do not grab the Lease back in the same instant

    async def _acquire(self, delay_first: bool) -> None:
        log.info(
            "waiting to acquire lease %s/%s as %s",
            self._cfg.lease_namespace,
            self._cfg.lease_name,
            self.identity,
        )
        if delay_first:
            await self._clock.sleep(self._jittered_retry())
        while True:
            self._touch()
            deadline = self._clock.monotonic() + self._cfg.renew_deadline
            if await self._attempt(deadline) is _Try.OK:
                self._set_leading(True, "acquired the lease")
                return
            await self._clock.sleep(self._jittered_retry())

    async def _lead(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Lead until the work ends (-> True, after release) or the Lease is lost (-> False)."""
        crashed: list[Exception] = []
        finished = False
        lost: str | None = None
        try:
            async with anyio.create_task_group() as tg:

                async def guarded() -> None:
                    nonlocal finished
                    try:
                        await work()
                    except Exception as exc:
                        crashed.append(exc)
                    else:
                        finished = True
                    # The work has stopped, by itself: so do renewals.
                    tg.cancel_scope.cancel()

                tg.start_soon(guarded)
                lost = await self._renew_loop()
                # Flag off BEFORE cancelling: may_act() is False while the work unwinds.
                self._set_leading(False, lost)
                tg.cancel_scope.cancel()
        finally:
            if lost is None:
                # Work returned, crashed, or we are being cancelled. The task group has
                # exited, so the work has stopped: now the Lease may be released.
                with anyio.CancelScope(shield=True):
                    await self.release()
        if crashed:
            log.error("leader work failed; lease released: %r", crashed[0])
            raise crashed[0]
        return finished

    async def _renew_loop(self) -> str:
        """Renew every retry_period; return the reason once the Lease is lost.

        Invariant: returns no later than acked_at + renew_deadline on our clock.
        """
        while True:
            assert self._acked_at is not None
            deadline = self._acked_at + self._cfg.renew_deadline
            await self._clock.sleep(min(self._cfg.retry_period, deadline - self._clock.monotonic()))
            self._touch()
            deadline = self._acked_at + self._cfg.renew_deadline
            if self._clock.monotonic() >= deadline:
                return f"no renewal within the renew deadline of {self._cfg.renew_deadline:g}s"
            result = await self._attempt(deadline)
            self._touch()
            if result is _Try.HELD:
                return f"lease now held by {self.observed_holder!r}"
            # OK: deadline moves on. FAILED: retry after retry_period, within the deadline.

    async def _attempt(self, deadline: float) -> _Try:
        try:
            return await self._try_acquire_or_renew(deadline)
        except ApiError as exc:
            # Kept at debug for conflicts (a normal race), info otherwise.
            level = logging.DEBUG if isinstance(exc, Conflict) else logging.INFO
            log.log(level, "lease attempt failed: %s", exc)
            return _Try.FAILED

    async def _try_acquire_or_renew(self, deadline: float) -> _Try:
        # 1. Fast path for the leader: rewrite our own last accepted copy. Its resourceVersion
        #    proves nobody has written since; a 409 falls through to a fresh read.
        if self._leading and self._lease is not None:
            sent = self._clock.monotonic()
            try:
                lease = await self._call("PUT", self._item, deadline, self._written(self._lease))
            except ApiError as exc:
                log.debug("optimistic renewal failed, reading the lease: %s", exc)
            else:
                self._accepted(lease, sent)
                return _Try.OK

        # 2. Read the current record; create the Lease if there is none.
        try:
            current = await self._call("GET", self._item, deadline)
        except NotFound:
            return await self._create(deadline)
        self._observe(current)
        record = _Record.of(current)
        if record.holder and record.holder != self.identity and not self._expired():
            return _Try.HELD

        # 3. Take it (free, expired, or ours): the resourceVersion we read guards the write.
        sent = self._clock.monotonic()
        lease = await self._call("PUT", self._item, deadline, self._written(current))
        self._accepted(lease, sent)
        return _Try.OK

    async def _create(self, deadline: float) -> _Try:
        now = format_microtime(self._clock.wall())
        body: JSON = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self._cfg.lease_name, "namespace": self._cfg.lease_namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._cfg.lease_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        sent = self._clock.monotonic()
        try:
            lease = await self._call("POST", self._collection, deadline, body)
        except Conflict:  # another candidate created it first
            log.debug("lease was created by another candidate")
            return _Try.FAILED
        self._accepted(lease, sent)
        return _Try.OK

    def _written(self, lease: JSON) -> JSON:
        """The whole Lease with our record. Renewals keep acquireTime and leaseTransitions;
        a change of holder sets acquireTime and counts one transition."""
        old = _Record.of(lease)
        now = format_microtime(self._clock.wall())
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self._cfg.lease_seconds
        spec["renewTime"] = now
        if old.holder == self.identity and old.acquire_time:
            spec["acquireTime"] = old.acquire_time
            spec["leaseTransitions"] = old.transitions
        else:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = old.transitions + 1
        return {**lease, "spec": spec}

    def _accepted(self, lease: JSON, sent: float) -> None:
        """The server accepted our write sent at `sent`: we hold the Lease until at least
        sent + lease_duration in every other candidate's eyes."""
        self._lease = lease
        self._observe(lease)
        self._acked_at = sent
        LEADER_RENEWED.set(self._clock.wall() - (self._clock.monotonic() - sent))

    def _observe(self, lease: JSON) -> None:
        record = _Record.of(lease)
        if record == self._observed:
            return
        if self._observed is None or record.holder != self._observed.holder:
            log.info("lease holder is now %r", record.holder or "(none)")
        self._observed = record
        self._observed_at = self._clock.monotonic()

    def _expired(self) -> bool:
        """True when the observed record has not changed for its own leaseDurationSeconds,
        counted on our monotonic clock from when we first received it."""
        assert self._observed is not None
        duration = self._observed.duration
        if duration is None or duration <= 0:
            duration = self._cfg.lease_seconds
        return self._clock.monotonic() - self._observed_at >= duration

    # ----- release ------------------------------------------------------------------------------

    async def release(self) -> None:
        """Give the Lease up: holder '' and leaseDurationSeconds 1, if we still hold it.

        Call only after the guarded work has stopped (`run` does). Bounded by
        min(renew_deadline, 5 s); failures are logged, never raised: the Lease then simply
        expires for the others.
        """
        self._set_leading(False, "releasing the lease", logging.INFO)
        if self._lease is None or _Record.of(self._lease).holder != self.identity:
            return
        bound = min(self._cfg.renew_deadline, RELEASE_BOUND)
        deadline = self._clock.monotonic() + bound
        settled = self.writes_abandoned_at() + self._write_margin
        if settled > deadline:
            log.warning(
                "not releasing the lease: a write of ours may still be applied (abandoned "
                "less than %gs ago); it expires instead",
                self._write_margin,
            )
            return
        if settled > self._clock.monotonic():
            await self._clock.sleep(settled - self._clock.monotonic())
        try:
            # Two bounds: the injected clock's, and a real-time one in case that never moves.
            with anyio.fail_after(bound + 1.0):
                await self._release(deadline)
        except (ApiError, TimeoutError) as exc:
            log.warning("could not release the lease (it will expire instead): %s", exc)

    async def _release(self, deadline: float) -> None:
        assert self._lease is not None
        lease = self._lease
        for _ in range(2):
            body = self._released(lease)
            try:
                self._lease = await self._call("PUT", self._item, deadline, body)
            except Conflict:
                # Stale resourceVersion (e.g. a renewal applied after its timeout):
                # re-read, and release only if the record still names us.
                lease = await self._call("GET", self._item, deadline)
                self._observe(lease)
                if _Record.of(lease).holder != self.identity:
                    return
                continue
            self._observe(self._lease)
            log.info("released the lease")
            return

    def _released(self, lease: JSON) -> JSON:
        now = format_microtime(self._clock.wall())
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        spec.update(holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now)
        return {**lease, "spec": spec}

    # ----- helpers ------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, deadline: float, body: JSON | None = None
    ) -> JSON:
        """One Lease call, ended by min(call timeout, what is left until `deadline`)."""
        remaining = deadline - self._clock.monotonic()
        if remaining <= 0:
            raise ApiError(0, "Timeout", "election deadline reached", None, method, path)
        timeout = min(self._call_timeout, remaining)
        try:
            if method == "GET":
                return await self._bounded(
                    timeout, lambda: self._kube.request("GET", path, timeout=timeout)
                )
            verb = cast(mutating.Mutating, method)
            return await self._bounded(
                timeout,
                lambda: mutating.send(self._kube, verb, path, body=body, timeout=timeout),
            )
        except TimeoutError as exc:
            raise ApiError(
                0, "Timeout", f"no answer in {timeout:.3g}s", None, method, path
            ) from exc

    async def _bounded(self, seconds: float, call: Callable[[], Awaitable[_T]]) -> _T:
        """`await call()`, cancelled after `seconds` on the injected clock (TimeoutError)."""
        return await call_within(self._clock, seconds, call)

    def _jittered_retry(self) -> float:
        return self._cfg.retry_period * (1.0 + (JITTER_FACTOR - 1.0) * self._rng.random())

    def _touch(self) -> None:
        self._last_activity = self._clock.monotonic()

    def _set_leading(self, leading: bool, why: str, level: int = logging.WARNING) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        LEADER.set(1 if leading else 0)
        LEADER_TRANSITIONS.inc()
        if leading:
            self._leader_since = self._clock.monotonic()
            log.info("became leader (%s) as %s", why, self.identity)
        else:
            self._leader_since = None
            log.log(level, "stopped leading: %s", why)
