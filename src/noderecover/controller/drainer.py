"""Draining a node: evict what can be evicted, then force what a dead kubelet cannot finish.

Pure part: `parse_pod` and `plan` decide per pod from (pod, node state, elapsed, config).
Shell part: `Drainer.drain` lists pods, calls the Eviction API, waits, and force-deletes.

Rules (kubectl's filters, Cluster API's unreachable-node rule, upstream eviction semantics):
- Skipped: DaemonSet pods (their controller re-creates them anyway), mirror pods.
- Eviction through policy/v1: 2xx accepted, 404 gone, 429 = a PodDisruptionBudget says no
  (retry after max(Retry-After, 5 s) + jitter, never in a tight loop), 500 "more than one
  PodDisruptionBudget" = permanent for that pod (reported), other errors retried with backoff.
- Dead node (the freshest evidence: Ready=Unknown and its heartbeat Lease not renewed for the
  grace): evict with gracePeriodSeconds=1 (no kubelet will honour a longer one); after
  `drain_timeout` force-delete (grace 0) every pod still there.
- Live kubelet (Ready=False, or Ready=Unknown with its heartbeat Lease renewing): evict with
  the pod's own grace period and let the kubelet finish; nothing is ever force-deleted (a
  terminating pod may still run, and a PDB may protect it). After `drain_timeout` with pods
  left, the drain ends BLOCKED (`pod-disruption-budget` or `pods-terminating`), retried later.
- Evidence before force: the node and its Lease are read again right before every grace-1
  eviction and every force-delete, and that read decides: healthy, a newer Ready transition
  (a flap), an exclusion, a gate (stale watch, open breaker), a replaced node (new uid) or a
  live kubelet stops the batch at once.
- Each pod uid is force-deleted once. A pod still listed after that is held only by its
  finalizers: reported once (`pod-finalizers`), and it does not hold the drain.
- Every eviction and force-delete carries the pod's uid as a precondition (a same-named
  replacement is never touched). Force-deleting needs fencing when configured
  (`may_force`); PVCs and PVs are never touched.

Hostile input: `parse_pod` is total, like `nodes.parse_node`. A pod that cannot be read
safely comes back with `malformed` set to one of POD_MALFORMED_REASONS, and `plan` says HOLD:
- it is never evicted or force-deleted (we cannot tell whether it is a DaemonSet or mirror
  pod, whether it is terminating, or which object a uid precondition would protect);
- the drain never reports the node empty while it is listed: the readable pods are drained
  as usual, then, with only unreadable (or permanently unevictable) pods left, the drain
  returns FAILED and the controller retries it later (60 s), re-listing. So the node stays
  cordoned in Draining and is never removed with a pod that may still run on it. Each
  unreadable pod is logged once and counted once per drain attempt, in
  noderecover_malformed_objects_total{resource="pods",reason} and
  noderecover_blocked_total{reason="malformed-pod"}.
What "read safely" means (only what decisions read is checked; the rest may be anything):
metadata.name and metadata.namespace are non-empty strings usable as a URL path segment;
metadata.uid a non-empty string; deletionTimestamp absent or RFC 3339; annotations an object
whose mirror annotation, if present, is a string; ownerReferences a list of objects with a
string kind and a boolean (or absent) controller, at most one controller; spec an object
whose nodeName is the node being drained. A LIST answer whose `items` is not a list (absent
or null included: the API server always sends `[]`), without a metadata object, with a
continue token that is not a string, or that pages on without end is an error
(kube.paging's BadList, counted with reason `bad-list`): the drain fails and is retried,
never "empty".
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from noderecover.base.backoff import Backoff
from noderecover.base.clock import Clock
from noderecover.base.metrics import ACTIONS, MALFORMED_OBJECTS
from noderecover.controller.writes import Evidence, Held, WritePath
from noderecover.core.machine import Outcome
from noderecover.core.pods import (
    BAD_LIST,
    MALFORMED_POD,
    MULTIPLE_PDBS,
    PDB_BLOCKED,
    POD_FINALIZERS,
    PODS_TERMINATING,
    PodObs,
    Step,
    force_order,
    parse_pod,
    plan,
)
from noderecover.core.settings import Config
from noderecover.kube.client import (
    ApiError,
    Conflict,
    KubeClient,
    NotFound,
    TooManyRequests,
    multiple_pdbs,
)
from noderecover.kube.paging import BadList, list_pages

log = logging.getLogger("noderecover.controller.drainer")

PDB_MIN_RETRY = 5.0
POLL = 0.5  # seconds between looks at a draining node's pods
PAGE_SIZE = 500


@dataclass
class _PodRetry:
    at: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    permanent: str = ""
    pdb: bool = False  # an eviction of it was refused by a PodDisruptionBudget


@dataclass(frozen=True, slots=True)
class Drained:
    outcome: Outcome
    reason: str = ""
    transition: float | None = None


@dataclass
class DrainContext:
    """What the drain asks the controller while it runs."""

    evidence: Callable[[], Awaitable[Evidence]]  # a fresh read, gates applied
    blocked: Callable[[str], None]  # report a held-back step (e.g. PDB)
    report: Callable[[str, str], None] = lambda reason, message: None  # an Event on the node


class Drainer:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        *,
        drain_timeout: float,
        dry_run: bool = False,
        rng: random.Random | None = None,
        now: Callable[[], float] | None = None,
        writes: WritePath | None = None,
    ) -> None:
        """`writes`: the write path every eviction and force-delete goes through (default:
        one with no controller gates, for tests of the drain alone)."""
        self._writes = writes or WritePath(kube, clock, Config(dry_run=dry_run), lambda: True)
        self._kube = kube
        self._clock = clock
        self._now = now or clock.wall  # timeline seconds (the controller passes its Timeline)
        self._timeout = drain_timeout
        self._dry_run = dry_run
        self._rng = rng or random.Random()

    async def list_pods(self, node: str) -> list[PodObs]:
        """Every pod bound to `node`, unreadable ones included (marked). Raises ApiError."""
        pods: list[PodObs] = []

        def page(items: list[Any], first: bool) -> None:
            if first:
                pods.clear()
            pods.extend(parse_pod(p, node) for p in items)

        query = [("fieldSelector", f"spec.nodeName={node}")]
        try:
            # An absent or null `items` is a BadList: it would make the node look empty.
            await list_pages(self._kube, "/api/v1/pods", page, page_size=PAGE_SIZE, query=query)
        except BadList:
            MALFORMED_OBJECTS.labels("pods", BAD_LIST).inc()
            raise
        return pods

    async def drain(
        self,
        node: str,
        started: float,
        may_force: bool,
        ctx: DrainContext,
        forced: set[str] | None = None,
        timeout: float | None = None,
        deleting: dict[str, float] | None = None,
    ) -> Drained:
        """Drain until empty, or until the evidence or a gate stops it.

        `started` (timeline seconds) survives failover via the phase annotation. `forced`:
        uids force-deleted already for this node (each is forced once; kept by the caller
        across attempts). `deleting`: uid -> when (our monotonic clock) a pod was first seen
        deleting, by this attempt or by the one the caller carries it over from (only an
        attempt that ended needing a fence: the grace its evictions waited while the node was
        fenced is not waited again); filled here.
        """
        drain_timeout = self._timeout if timeout is None else timeout
        forced = set() if forced is None else forced
        retries: dict[str, _PodRetry] = {}
        evicted: set[str] = set()
        unreadable: set[tuple[str, str, str]] = set()  # reported in this drain attempt
        lingering: set[str] = set()  # reported in this drain attempt
        # uid -> when (monotonic) we first saw the pod deleting: our own clock for the
        # silent-node fast path (never the API server's deletionTimestamp).
        deleting_since: dict[str, float] = {} if deleting is None else deleting
        # uids evicted with the 1-second grace of a dead kubelet in this attempt: a dead
        # kubelet never finishes them, so their disappearing on their own is a sign of life.
        awaiting: set[str] = set()
        while True:
            ev = await ctx.evidence()
            if ev.stop is not None:
                return Drained(ev.stop, ev.reason, ev.transition)
            dead = ev.dead
            pods = await self.list_pods(node)
            elapsed = self._now() - started
            mono = self._clock.monotonic()
            listed = {p.uid for p in pods}
            finished = [u for u in awaiting if u not in listed and u not in forced]
            if finished and not self._dry_run:
                # A graceful deletion we asked for completed without our force: something
                # finished it, and on a node that looks dead that is its kubelet. A sign of
                # life: stop, and let flap damping restart the grace before any removal.
                log.warning(
                    "drain of %s: %d evicted pods finished their graceful deletion without a "
                    "force-delete; the kubelet is alive: no force or removal before a new grace",
                    node,
                    len(finished),
                )
                return Drained(Outcome.HEALTHY, "kubelet-finished-deletion")
            for p in pods:
                if p.deleting:
                    deleting_since.setdefault(p.uid, mono)

            seen: dict[str, float] = deleting_since if ev.confirmed else {}
            # Per listed object, not per key: a garbled list may name one pod twice.
            steps = [
                (
                    p,
                    plan(
                        p,
                        dead,
                        elapsed,
                        drain_timeout,
                        p.uid in forced,
                        mono - seen[p.uid] if p.uid in seen else None,
                    ),
                )
                for p in pods
            ]
            for pod, step in steps:
                if step is Step.HOLD:
                    self._report_unreadable(node, pod, unreadable, ctx)
                elif step is Step.LINGER and pod.uid not in lingering:
                    lingering.add(pod.uid)
                    self._report_lingering(node, pod, ctx)
            todo = [(p, s) for p, s in steps if s not in (Step.SKIP, Step.LINGER)]
            if self._dry_run:
                todo = [(p, s) for p, s in todo if s is Step.HOLD or p.key not in evicted]
            if not todo:
                log.info(
                    "drained %s: %d pods skipped (daemonset/mirror), %d held by finalizers",
                    node,
                    len(pods) - len(lingering),
                    len(lingering),
                )
                return Drained(Outcome.OK)
            stuck = [self._stuck(p, s, retries) for p, s in todo]
            if all(stuck):
                # Only pods that can never be evicted (or read) are left: report, let the
                # caller back off and look again; never "drained".
                log.error("drain of %s cannot finish: %s", node, stuck[0])
                return Drained(Outcome.FAILED)
            to_force = sorted((p for p, s in todo if s is Step.FORCE), key=force_order)
            if to_force and not may_force:
                return Drained(Outcome.NEEDS_FENCE)
            for pod in to_force:
                # Evidence before force: the read right before this pod decides.
                ev = await ctx.evidence()
                if ev.stop is not None:
                    return Drained(ev.stop, ev.reason, ev.transition)
                if not ev.dead:
                    dead = False  # a sign of life: the batch stops, live rules from now on
                    break
                try:
                    await self._force(pod, ev, ev.confirmed and pod.uid in seen, drain_timeout)
                except Held as held:
                    return Drained(Outcome.BLOCKED, held.reason)
                forced.add(pod.uid)
                evicted.add(pod.key)
            for pod, step in todo:
                if step is not Step.EVICT:
                    continue
                retry = retries.setdefault(pod.key, _PodRetry(backoff=Backoff(rng=self._rng)))
                if retry.permanent or retry.at > self._clock.monotonic():
                    continue
                proof: Evidence | None = None
                if dead:
                    # A 1-second eviction is destructive on a live kubelet: read first.
                    ev = await ctx.evidence()
                    if ev.stop is not None:
                        return Drained(ev.stop, ev.reason, ev.transition)
                    dead = ev.dead
                    proof = ev if dead else None
                try:
                    # A graceful eviction asks the gates right before it too (a pause that
                    # became known mid-batch stops the batch at its next pod).
                    accepted = await self._evict(node, pod, proof, retry, ctx)
                except Held as held:
                    return Drained(Outcome.BLOCKED, held.reason)
                if accepted:
                    deleting_since.setdefault(pod.uid, self._clock.monotonic())
                    if dead:
                        awaiting.add(pod.uid)
                evicted.add(pod.key)
            if not dead and elapsed >= drain_timeout:
                # A live kubelet's pods leave by its hand or not at all: say why and let the
                # caller look again later (the node keeps its slot).
                pdb = any(retries.get(p.key, _PodRetry()).pdb for p, _ in todo)
                reason = PDB_BLOCKED if pdb else PODS_TERMINATING
                log.warning(
                    "drain of %s not finished after %.0fs and its kubelet is alive: %s; "
                    "nothing is forced on a live kubelet",
                    node,
                    elapsed,
                    reason,
                )
                return Drained(Outcome.BLOCKED, reason)
            # Bounded wait before looking again: until the earliest retry, at most POLL.
            waits = [r.at - self._clock.monotonic() for r in retries.values() if r.at]
            pause = min([POLL, *[w for w in waits if w > 0]])
            await self._clock.sleep(pause * (0.8 + 0.4 * self._rng.random()))

    @staticmethod
    def _stuck(pod: PodObs, step: Step, retries: Mapping[str, _PodRetry]) -> str:
        """Why this pod can never leave the node by our hand ('' if it can)."""
        if step is Step.HOLD:
            return f"pod {_named(pod)} cannot be read ({pod.malformed})"
        retry = retries.get(pod.key)
        return retry.permanent if retry is not None else ""

    @staticmethod
    def _report_lingering(node: str, pod: PodObs, ctx: DrainContext) -> None:
        """A pod force-deleted once and still listed: finalizers hold it. Said once per
        drain attempt; it does not hold the drain (forcing again would change nothing)."""
        ctx.blocked(POD_FINALIZERS)
        message = (
            f"Pod {pod.key} was force-deleted but is still there: its finalizers hold it. "
            "noderecover does not remove finalizers; the drain goes on without it."
        )
        ctx.report(POD_FINALIZERS, message)
        log.warning("drain of %s: %s", node, message)

    @staticmethod
    def _report_unreadable(
        node: str, pod: PodObs, seen: set[tuple[str, str, str]], ctx: DrainContext
    ) -> None:
        """Count and log an unreadable pod once per drain attempt."""
        ident = (pod.malformed or "", pod.key, pod.uid)
        if ident in seen:
            return
        seen.add(ident)
        MALFORMED_OBJECTS.labels("pods", pod.malformed or "").inc()
        ctx.blocked(MALFORMED_POD)
        log.warning(
            "drain of %s held: pod %s cannot be read (%s); it is never evicted or "
            "force-deleted and the node is not removed while it is listed",
            node,
            _named(pod),
            pod.malformed,
        )

    async def _evict(
        self, node: str, pod: PodObs, proof: Evidence | None, retry: _PodRetry, ctx: DrainContext
    ) -> bool:
        """Evict one pod (grace 1 with `proof` of a silent kubelet, else its own grace); True
        when the API server accepted it (the pod is now deleting). Raises Held."""
        if self._dry_run:
            await self._writes.evict(node, pod.namespace, pod.name, pod.uid, proof)
            return False
        try:
            # The uid precondition: a same-named replacement (elsewhere) is never evicted.
            await self._writes.evict(node, pod.namespace, pod.name, pod.uid, proof)
        except (NotFound, Conflict):  # gone, or replaced by a new pod of the same name
            ACTIONS.labels("evict", "gone").inc()
            return False
        except ApiError as exc:
            if isinstance(exc, TooManyRequests):
                ACTIONS.labels("evict", "pdb-blocked").inc()
                retry.pdb = True
                ctx.blocked(PDB_BLOCKED)
                delay = max(exc.retry_after or 0.0, PDB_MIN_RETRY)
                retry.at = self._clock.monotonic() + delay * (1.0 + 0.2 * self._rng.random())
                log.info(
                    "eviction of %s blocked by a PodDisruptionBudget; retry in %.0fs",
                    pod.key,
                    delay,
                )
                return False
            if multiple_pdbs(exc):
                ACTIONS.labels("evict", "permanent-error").inc()
                ctx.blocked(MULTIPLE_PDBS)
                retry.permanent = exc.message
                log.error("cannot evict %s: %s", pod.key, exc.message)
                return False
            ACTIONS.labels("evict", "error").inc()
            retry.at = self._clock.monotonic() + retry.backoff.next_delay(exc.retry_after or 0)
            log.warning("eviction of %s failed: %s", pod.key, exc)
            return False
        ACTIONS.labels("evict", "ok").inc()
        log.info("evicted %s", pod.key)
        return True

    async def _force(self, pod: PodObs, ev: Evidence, fast: bool, timeout: float) -> None:
        """Force-delete one pod on `ev`, the read made right before. Raises Held, ApiError.

        `fast`: the silent-node fast path decided it (the heartbeat Lease confirmed silent),
        not the drain timeout: the log says which evidence decided."""
        try:
            if not await self._writes.force_delete(ev, pod.namespace, pod.name, pod.uid):
                return
        except (NotFound, Conflict):  # gone, or replaced by a new pod of the same name
            ACTIONS.labels("force-delete", "gone").inc()
            return
        except ApiError:
            ACTIONS.labels("force-delete", "error").inc()
            raise
        ACTIONS.labels("force-delete", "ok").inc()
        why = (
            "the grace of its eviction passed on a node silent in a read made right before "
            "(Ready=Unknown, heartbeat Lease unchanged for its whole window)"
            if fast
            else f"the drain timeout ({timeout:.0f}s) passed on a silent node "
            "(Ready=Unknown, read right before)"
        )
        log.warning("force-deleted %s (grace 0): %s", pod.key, why)


def _named(pod: PodObs) -> str:
    """How logs name a pod that may have no usable name (repr: it may be anything)."""
    return f"{pod.key!r} (uid {pod.uid!r})" if pod.name or pod.uid else "(an unnamed item)"
