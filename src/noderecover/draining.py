"""Draining a node: evict what can be evicted, then force what a dead kubelet cannot finish.

Pure part: `parse_pod` and `plan` decide per pod from (pod, node state, elapsed, config).
Shell part: `Drainer.drain` lists pods, calls the Eviction API, waits, and force-deletes.

Rules (kubectl's filters, Cluster API's unreachable-node rule, upstream eviction semantics):
- Skipped: DaemonSet pods (their controller re-creates them anyway), mirror pods.
- Eviction through policy/v1: 2xx accepted, 404 gone, 429 = a PodDisruptionBudget says no
  (retry after max(Retry-After, 5 s) + jitter, never in a tight loop), 500 "more than one
  PodDisruptionBudget" = permanent for that pod (reported), other errors retried with backoff.
- Silent node (Ready=Unknown): evict with gracePeriodSeconds=1 (no kubelet will honour a longer
  one); after `drain_timeout` force-delete (grace 0) every pod still there.
- Ready=False node (kubelet alive): the pod's own grace period; after `drain_timeout` force only
  pods whose eviction was accepted but which are stuck terminating - a pod a PDB protects
  is never forced on a live node.
- Force-deleting needs fencing when configured (`may_force`); PVCs and PVs are never touched.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from noderecover.backoff import Backoff
from noderecover.clock import Clock
from noderecover.kube import ApiError, KubeClient
from noderecover.machine import Outcome
from noderecover.metrics import ACTIONS
from noderecover.nodes import parse_time

log = logging.getLogger("noderecover.draining")

PDB_MIN_RETRY = 5.0
POLL = 0.5  # seconds between looks at a draining node's pods


@dataclass(frozen=True, slots=True)
class PodObs:
    namespace: str
    name: str
    uid: str
    owner_kind: str
    mirror: bool
    phase: str
    deleting: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_pod(obj: Mapping[str, Any]) -> PodObs:
    meta = obj.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    controller = next((o for o in owners if o.get("controller")), owners[0] if owners else {})
    return PodObs(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        owner_kind=str(controller.get("kind", "")),
        mirror="kubernetes.io/config.mirror" in (meta.get("annotations") or {}),
        phase=str((obj.get("status") or {}).get("phase", "")),
        deleting=parse_time(meta.get("deletionTimestamp")) is not None,
    )


class Step(StrEnum):
    SKIP = "skip"
    EVICT = "evict"
    WAIT = "wait"
    FORCE = "force"


def plan(pod: PodObs, silent: bool, elapsed: float, drain_timeout: float) -> Step:
    """What to do with one pod on the node now."""
    if pod.owner_kind == "DaemonSet" or pod.mirror:
        return Step.SKIP
    overdue = elapsed >= drain_timeout
    if pod.deleting:
        # Accepted for deletion; a live kubelet finishes it, a dead one never will.
        return Step.FORCE if overdue else Step.WAIT
    if overdue and silent:
        return Step.FORCE
    return Step.EVICT


@dataclass
class _PodRetry:
    at: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    permanent: str = ""


class NotLeader(Exception):
    """The act-gate said no: stop at once, do not count as a failure of the node."""


@dataclass
class DrainContext:
    """What the drain asks the controller while it runs."""

    may_act: Callable[[], bool]  # leadership still valid (checked before every write)
    still_unhealthy: Callable[[], Awaitable[bool | None]]  # fresh re-read: None = node gone
    silent: Callable[[], bool]  # Ready=Unknown right now
    blocked: Callable[[str], None]  # report a held-back step (e.g. PDB)


class Drainer:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        *,
        drain_timeout: float,
        dry_run: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._timeout = drain_timeout
        self._dry_run = dry_run
        self._rng = rng or random.Random()

    async def list_pods(self, node: str) -> list[PodObs]:
        pods: list[PodObs] = []
        cont = ""
        while True:
            query = [("fieldSelector", f"spec.nodeName={node}"), ("limit", "500")]
            if cont:
                query.append(("continue", cont))
            body = await self._kube.request("GET", "/api/v1/pods", query=query)
            pods.extend(parse_pod(p) for p in body.get("items") or ())
            cont = (body.get("metadata") or {}).get("continue") or ""
            if not cont:
                return pods

    async def drain(self, node: str, started: float, may_force: bool, ctx: DrainContext) -> Outcome:
        """Drain until empty. `started` (wall) survives failover via the phase annotation."""
        retries: dict[str, _PodRetry] = {}
        evicted: set[str] = set()
        while True:
            state = await ctx.still_unhealthy()
            if state is None:
                return Outcome.GONE
            if not state:
                return Outcome.HEALTHY
            pods = await self.list_pods(node)
            now = self._clock.wall()
            elapsed = now - started
            silent = ctx.silent()
            steps = {p.key: plan(p, silent, elapsed, self._timeout) for p in pods}
            todo = [p for p in pods if steps[p.key] is not Step.SKIP]
            if self._dry_run:
                todo = [p for p in todo if p.key not in evicted]
            if not todo:
                log.info("drained %s: %d pods skipped (daemonset/mirror)", node, len(pods))
                return Outcome.OK
            stuck = [retries[p.key].permanent for p in todo if p.key in retries]
            if len(stuck) == len(todo) and all(stuck):
                # Only pods that can never be evicted are left: report, let the caller back off.
                log.error("drain of %s cannot finish: %s", node, stuck[0])
                return Outcome.FAILED
            forced = [p for p in todo if steps[p.key] is Step.FORCE]
            if forced:
                if not may_force:
                    return Outcome.NEEDS_FENCE
                if not await ctx.still_unhealthy():
                    return Outcome.HEALTHY
                for pod in forced:
                    await self._force(pod, ctx)
                    evicted.add(pod.key)
            for pod in todo:
                if steps[pod.key] is not Step.EVICT:
                    continue
                retry = retries.setdefault(pod.key, _PodRetry(backoff=Backoff(rng=self._rng)))
                if retry.permanent or retry.at > self._clock.monotonic():
                    continue
                await self._evict(pod, silent, retry, ctx)
                evicted.add(pod.key)
            # Bounded wait before looking again: until the earliest retry, at most POLL.
            waits = [r.at - self._clock.monotonic() for r in retries.values() if r.at]
            pause = min([POLL, *[w for w in waits if w > 0]])
            await self._clock.sleep(pause * (0.8 + 0.4 * self._rng.random()))

    async def _evict(self, pod: PodObs, silent: bool, retry: _PodRetry, ctx: DrainContext) -> None:
        if self._dry_run:
            log.info("dry-run: would evict %s", pod.key)
            ACTIONS.labels("evict", "dry-run").inc()
            return
        if not ctx.may_act():
            raise NotLeader
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        if silent:
            body["deleteOptions"] = {"gracePeriodSeconds": 1}
        path = f"/api/v1/namespaces/{quote(pod.namespace)}/pods/{quote(pod.name)}/eviction"
        try:
            await self._kube.request("POST", path, body=body)
        except ApiError as exc:
            if exc.code == 404:
                ACTIONS.labels("evict", "gone").inc()
                return
            if exc.code == 429:
                ACTIONS.labels("evict", "pdb-blocked").inc()
                ctx.blocked("pod-disruption-budget")
                delay = max(exc.retry_after or 0.0, PDB_MIN_RETRY)
                retry.at = self._clock.monotonic() + delay * (1.0 + 0.2 * self._rng.random())
                log.info(
                    "eviction of %s blocked by a PodDisruptionBudget; retry in %.0fs",
                    pod.key,
                    delay,
                )
                return
            if exc.code == 500 and "more than one" in exc.message.lower():
                ACTIONS.labels("evict", "permanent-error").inc()
                ctx.blocked("multiple-pdbs")
                retry.permanent = exc.message
                log.error("cannot evict %s: %s", pod.key, exc.message)
                return
            ACTIONS.labels("evict", "error").inc()
            retry.at = self._clock.monotonic() + retry.backoff.next_delay(exc.retry_after or 0)
            log.warning("eviction of %s failed: %s", pod.key, exc)
            return
        ACTIONS.labels("evict", "ok").inc()
        log.info("evicted %s", pod.key)

    async def _force(self, pod: PodObs, ctx: DrainContext) -> None:
        if self._dry_run:
            log.info("dry-run: would force-delete %s", pod.key)
            ACTIONS.labels("force-delete", "dry-run").inc()
            return
        if not ctx.may_act():
            raise NotLeader
        path = f"/api/v1/namespaces/{quote(pod.namespace)}/pods/{quote(pod.name)}"
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod.uid}}
        try:
            await self._kube.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.code in {404, 409}:  # gone, or replaced by a new pod of the same name
                ACTIONS.labels("force-delete", "gone").inc()
                return
            ACTIONS.labels("force-delete", "error").inc()
            raise
        ACTIONS.labels("force-delete", "ok").inc()
        log.warning("force-deleted %s (grace 0) after the drain timeout", pod.key)
