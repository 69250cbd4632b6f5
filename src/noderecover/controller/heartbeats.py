"""Heartbeat Leases: the evidence that a Ready=Unknown node's kubelet lives, and when it last did.

Invariants:
- A Lease is judged on OUR monotonic clock: it renews when its renewTime changed within its
  window, as seen by us. The window is the longer of the node's grace and the Lease's own
  `leaseDurationSeconds` (the kubelet's: 40 s, renewed every 10 s): a Lease that keeps
  changing within its own duration is alive, whatever any grace says (a short or zero grace
  would judge a Lease stale between two renewals). Its renewTime is never compared with our
  wall clock (another host's clock), except by the read-only preview (`judge_by_renew_time`).
- A Lease not read yet counts as renewing (no evidence of silence); a node without a Lease
  (404) does not; an answer we cannot read is no evidence either way (renewing).
- A first read is not a renewal: `renewal_seen` is only set by a change we observed, so a
  Lease first read a little after the grace began is a timer, not a Warning.
- A change is a new resourceVersion (opaque, compared for equality only), from the watch or
  a GET alike: every renewal is one, and so is any other write (more life seen, never less).
  Without a resourceVersion, a new renewTime.
- Silent nodes' Leases are read with a GET (at once, then every min(grace / 3, 5 s)), and
  before every force (`renewing_now`).
- History (`--grace-from-heartbeat`, on by default with `--watch-node-leases`): kube-node-lease
  is also watched, cluster-wide, and each event only records the node's resourceVersion,
  renewTime and duration, and when we saw it change (one small dict lookup per event; ~one
  event per node every 10 s: docs/benchmarks.md, "Heartbeat history"). It gives the last
  change of a Lease BEFORE its node goes NotReady, so the grace can count from the last
  heartbeat (`last_change`), not from kube-controller-manager's NotReady, which comes
  node-monitor-grace (40-50 s) later. The history is believed only while that watch is
  synced and fresh; a Lease only first seen (listed, no change observed) gives no time.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio

from noderecover.base.clock import Clock, Timeline, wait_event
from noderecover.core.nodes import parse_time
from noderecover.core.settings import Config
from noderecover.kube.client import ApiError, KubeClient, NotFound
from noderecover.kube.watching import Watcher

log = logging.getLogger("noderecover.controller.heartbeats")

NODE_LEASES_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
# The kubelet's leaseDurationSeconds (nodeLeaseDurationSeconds); used when a Lease's own is
# absent or unreadable. A larger value in a Lease is honoured up to MAX_LEASE_DURATION.
DEFAULT_LEASE_DURATION = 40.0
MAX_LEASE_DURATION = 3600.0


@dataclass(frozen=True, slots=True)
class Seen:
    renew: str  # the Lease's renewTime as read ("" when absent or unreadable)
    changed_at: float  # our monotonic clock when we saw it take this value
    renewal_seen: bool  # it changed while we watched (not just a first read)
    duration: float = DEFAULT_LEASE_DURATION  # its leaseDurationSeconds
    version: str = ""  # its resourceVersion as read ("" when absent)


# What the Lease watch keeps of one event: (resourceVersion, renewTime, duration).
LeaseObs = tuple[str, str, float]


def _duration(spec: object) -> float:
    raw = spec.get("leaseDurationSeconds") if isinstance(spec, dict) else None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        # A longer duration than the kubelet's makes us wait longer, never shorter.
        return min(max(float(raw), DEFAULT_LEASE_DURATION), MAX_LEASE_DURATION)
    return DEFAULT_LEASE_DURATION


def parse_lease(lease: dict[str, Any]) -> LeaseObs:
    """The few fields of a Lease we keep. Never raises: anything unreadable reads as absent
    (a renewTime that is not a string never changes: no evidence of renewal)."""
    meta, spec = lease.get("metadata"), lease.get("spec")
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    renew = spec.get("renewTime") if isinstance(spec, dict) else None
    return (
        rv if isinstance(rv, str) else "",
        renew if isinstance(renew, str) else "",
        _duration(spec),
    )


class Heartbeats:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        timeline: Timeline,
        cfg: Config,
        grace_for: Callable[[str], float] | None = None,
        min_grace: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`grace_for(node)`: the grace a silent node is judged by (its policy's; default
        the flags'); `min_grace()`: the shortest of them (how often Leases are read)."""
        self._grace_for: Callable[[str], float] = grace_for or (lambda _node: cfg.grace)
        self._min_grace: Callable[[], float] = min_grace or (lambda: cfg.grace)
        self._kube = kube
        self._clock = clock
        self._timeline = timeline
        self._cfg = cfg
        self.leases: dict[str, Seen] = {}
        # Called with a node's name when what we know of its Lease changed (the reconcile
        # pass decides that node again).
        self.on_change: Callable[[str], None] = lambda _name: None
        self.wake = anyio.Event()  # set to read a newly silent node's Lease at once
        # The heartbeat history: a watch of every node's Lease (see the module doc).
        self.history = cfg.watch_node_leases and cfg.grace_from_heartbeat
        self.watcher: Watcher[LeaseObs] = Watcher(
            kube,
            clock,
            NODE_LEASES_PATH,
            "leases",
            parse_lease,
            self._event,
            self._resync,
            silence=cfg.watch_silence,
            server_timeout=cfg.watch_timeout,
            rng=rng or random.Random(),
        )

    # -- the history (a watch of kube-node-lease) ------------------------------------------

    def _event(self, etype: str, name: str, lease: LeaseObs | None) -> None:
        if lease is None:
            if self.leases.pop(name, None) is not None:  # gone: the next GET says 404
                self.on_change(name)
        else:
            self._note(name, lease[1], lease[2], lease[0])

    def _resync(self, items: Iterable[tuple[str, LeaseObs]]) -> None:
        listed = dict(items)
        for name, (version, renew, duration) in listed.items():
            self._note(name, renew, duration, version)
        # Leases that are gone (their DELETED events may have been lost).
        self._forget(listed)

    def _forget(self, keep: Iterable[str] | dict[str, object]) -> None:
        """Forget the Leases of nodes not in `keep`."""
        kept = keep if isinstance(keep, (set, dict)) else set(keep)
        gone = [k for k in self.leases if k not in kept]
        for name in gone:
            del self.leases[name]
            self.on_change(name)

    def history_fresh(self) -> bool:
        """The Lease watch is on, listed, and made progress within --watch-silence."""
        return self.history and not self.watcher.stale()

    def last_change(self, name: str) -> float | None:
        """When (timeline) we last saw the node's Lease change; None when we do not know it:
        no history (off, or its watch not fresh), no Lease, or no change observed yet (a
        Lease only first seen gives no time)."""
        if not self.history_fresh():
            return None
        seen = self.leases.get(name)
        if seen is None or not seen.renewal_seen:
            return None
        return self._timeline.now() - (self._clock.monotonic() - seen.changed_at)

    def renewing(self, name: str, *, force: bool = True) -> bool:
        """The node's heartbeat Lease changed within its window, as observed by us.

        `force`: judged for a force (the longer of the grace and its leaseDurationSeconds);
        False: for a cordon only, on the grace alone (a cordon takes nothing away: it waits
        no longer than the grace for a Lease that stopped)."""
        if not self._cfg.watch_node_leases:
            return False
        seen = self.leases.get(name)
        if seen is None:
            return True
        return self._clock.monotonic() - seen.changed_at < self._window(name, seen, force)

    def _window(self, name: str, seen: Seen, force: bool = True) -> float:
        """How long a Lease must stay unchanged to count as stale: for a force, the longer of
        the node's grace and its own leaseDurationSeconds; for a cordon, or a node without a
        Lease, the grace."""
        grace = self._grace_for(name)
        return grace if not seen.renew or not force else max(grace, seen.duration)

    def renewal_seen(self, name: str, *, force: bool = True) -> bool:
        """Renewing because we saw its renewTime change: real evidence of life."""
        seen = self.leases.get(name)
        return seen is not None and seen.renewal_seen and self.renewing(name, force=force)

    def stale_at(self, name: str, *, force: bool = True) -> float | None:
        """When (timeline) the Lease counts as stale if it does not change; None: not read.

        Later than now whenever `renewing` says it renews: a remainder smaller than the
        timeline's resolution (~0.2 us at the wall scale) must not round to now, or the timer
        that decides the node again when it turns stale is never set (a node held
        `heartbeat-lease-renewing` until its hold's Event was due again, 60 s)."""
        seen = self.leases.get(name)
        if seen is None:
            return None
        left = seen.changed_at + self._window(name, seen, force) - self._clock.monotonic()
        now = self._timeline.now()
        at = now + left
        if left > 0 and at <= now:
            at = math.nextafter(now, math.inf)
        return at

    async def renewing_now(self, name: str) -> bool:
        """A fresh GET of the node's Lease, then: changed within its window, as seen by us.

        Asked right before every force, whatever --watch-node-leases says: a Lease first read
        here starts its window (held until it stays unchanged that long)."""
        if not await self.fetch(name):
            return True
        seen = self.leases[name]
        return self._clock.monotonic() - seen.changed_at < self._window(name, seen)

    async def fetch(self, name: str) -> bool:
        """GET a node's Lease and note its renewTime; False if it could not be read."""
        try:
            lease = await self._kube.request("GET", f"{NODE_LEASES_PATH}/{quote(name, safe='')}")
        except NotFound:
            if self.leases.get(name) != (no := Seen("", float("-inf"), False)):
                self.leases[name] = no  # no Lease: nothing renews it
                self.on_change(name)
            return True
        except ApiError as exc:
            log.warning("could not read the heartbeat Lease of %s: %s", name, exc)
            return False
        version, renew, duration = parse_lease(lease)
        self._note(name, renew, duration, version)
        return True

    def _note(
        self, name: str, renew: str, duration: float = DEFAULT_LEASE_DURATION, version: str = ""
    ) -> None:
        """One read of a Lease (watch event, LIST item or GET): a change when its
        resourceVersion differs from the last one we saw (without one on either side: its
        renewTime)."""
        old = self.leases.get(name)
        if old is None:
            self.leases[name] = Seen(renew, self._clock.monotonic(), False, duration, version)
            self.on_change(name)
            return
        changed = version != old.version if version and old.version else renew != old.renew
        if changed:
            self.leases[name] = Seen(renew, self._clock.monotonic(), True, duration, version)
            self.on_change(name)
        elif old.duration != duration or (version and version != old.version):
            self.leases[name] = Seen(
                old.renew, old.changed_at, old.renewal_seen, duration, version or old.version
            )
            self.on_change(name)

    async def refresh(self, silent: list[str]) -> None:
        """One round: read the Lease of every silent node; without history, forget the
        others (with it, the watch keeps them)."""
        for name in silent:
            await self.fetch(name)
        if not self.history:
            self._forget(set(silent))

    async def poll(self, silent: Callable[[], list[str]], changed: Callable[[], None]) -> None:
        """While nodes are silent, re-read their Leases every min(grace / 3, 5 s); with
        history, watch every Lease meanwhile."""
        async with anyio.create_task_group() as tg:
            if self.history:
                tg.start_soon(self.watcher.run)
            while True:
                interval = max(0.5, min(self._min_grace() / 3.0, 5.0))
                self.wake = anyio.Event()
                await self.refresh(silent())
                changed()
                await wait_event(self.wake, self._clock, interval)

    def judge_by_renew_time(self) -> None:
        """Preview only (`plan`, one read, no history): take each Lease's renewTime as the
        time it changed, measured against the local wall clock."""
        now_wall, now_mono = self._clock.wall(), self._clock.monotonic()
        self.leases = {
            name: Seen(
                seen.renew,
                now_mono - max(0.0, now_wall - (parse_time(seen.renew) or 0.0)),
                True,
            )
            for name, seen in self.leases.items()
        }
