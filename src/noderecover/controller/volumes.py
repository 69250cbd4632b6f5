"""The volumes of removed nodes, followed until they are attached elsewhere (metrics only).

- `held(node, n)`: the node being removed still has `n` VolumeAttachments (last read);
  `noderecover_volumes_held` is the sum over such nodes, `release(node)` drops it.
- `track(pv, node, started)`: after a removal, the volume `pv` of `node` is followed until a
  VolumeAttachment on another node says attached; then
  `noderecover_volume_reattach_seconds` observes the time since `started` (the end of the
  grace) and a log line says it. Followed for at most TRACK_FOR; at most MAX_TRACKED at once.
- `run()` LISTs VolumeAttachments every `interval` only while something is tracked: no cost
  when no removal happened. Every failure is logged and retried on the next tick.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from noderecover.base.clock import Clock
from noderecover.base.metrics import VOLUME_REATTACH, VOLUMES_HELD
from noderecover.core.volumes import reattached
from noderecover.kube.client import ApiError, KubeClient
from noderecover.kube.storage import attachments

log = logging.getLogger("noderecover.controller.volumes")

TRACK_FOR = 1800.0  # seconds: a volume not re-attached by then is no longer followed
MAX_TRACKED = 1000


@dataclass(slots=True)
class _Tracked:
    node: str
    started: float  # the remediation's start (the time scale of `now`)
    until: float


class VolumeWatch:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        *,
        now: Callable[[], float] | None = None,
        interval: float = 2.0,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._now = now or clock.wall
        self._interval = interval
        self._held: dict[str, int] = {}
        self.tracked: dict[str, _Tracked] = {}  # pv -> what we follow
        self._wake: anyio.Event | None = None

    def held(self, node: str, count: int) -> None:
        self._held[node] = count
        VOLUMES_HELD.set(sum(self._held.values()))

    def release(self, node: str) -> None:
        if self._held.pop(node, None) is not None:
            VOLUMES_HELD.set(sum(self._held.values()))

    def track(self, pv: str, node: str, started: float) -> None:
        if pv in self.tracked or len(self.tracked) >= MAX_TRACKED:
            return
        self.tracked[pv] = _Tracked(node, started, self._now() + TRACK_FOR)
        if self._wake is not None:
            self._wake.set()

    def check(self, found: Callable[[str, str], str | None]) -> None:
        """One look: `found(pv, old_node)` is the node it is attached to now, if another."""
        now = self._now()
        for pv, t in list(self.tracked.items()):
            where = found(pv, t.node)
            if where is not None:
                took = max(0.0, now - t.started)
                VOLUME_REATTACH.observe(took)
                log.info(
                    "volume %s of removed node %s attached on %s %.1fs after the remediation "
                    "started",
                    pv,
                    t.node,
                    where,
                    took,
                )
                del self.tracked[pv]
            elif now >= t.until:
                log.warning(
                    "volume %s of removed node %s not attached elsewhere after %.0fs; no longer "
                    "followed",
                    pv,
                    t.node,
                    TRACK_FOR,
                )
                del self.tracked[pv]

    async def run(self) -> None:
        """Follow tracked volumes until cancelled."""
        while True:
            if not self.tracked:
                self._wake = anyio.Event()
                await self._wake.wait()
                self._wake = None
            try:
                seen = await attachments(self._kube)
            except ApiError as exc:
                log.debug("VolumeAttachment LIST failed (retrying): %s", exc)
            else:
                self.check(functools.partial(reattached, seen))
            await self._clock.sleep(self._interval)
