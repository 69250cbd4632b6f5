"""Performs the state machine's actions against the API: the imperative shell's hands.

Invariants:
- Every write is preceded by the act-gate (`may_act`): a replica that is not a valid leader
  raises NotLeader before touching anything.
- Before every destructive step (cordon, remove) the Node is re-read: if it became healthy
  the step is abandoned (Outcome.HEALTHY); if its uid changed the step is void (GONE).
- Node deletion is conditional on the uid and resourceVersion just read (409 -> re-read).
- The out-of-service taint is added with a JSON patch guarded by the resourceVersion, so
  other taints are never replaced; it is removed only if noderecover added it. A taint already
  on the node (seen in the fresh read before the removal) belongs to whoever put it there: the
  removal records `tainted=False` (`Result.tainted`), so the restore leaves it. If a write
  fails after we added the taint, the result still says it is ours. One conservative gap: if
  leadership is lost between the taint and its `noderecover.io/out-of-service` annotation, the
  next leader sees a taint it has no record of adding and leaves it on recovery.
- Dry-run performs reads only, and logs and counts each write it would have made.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio

from noderecover.backoff import Backoff
from noderecover.clock import Clock
from noderecover.config import Config
from noderecover.draining import DrainContext, Drainer, NotLeader
from noderecover.kube import JSON_PATCH, MERGE_PATCH, ApiError, KubeClient
from noderecover.machine import Action, Kind, Outcome, Record, annotations_for, unhealthy
from noderecover.metrics import ACTIONS, BLOCKED, MALFORMED_OBJECTS
from noderecover.nodes import OUT_OF_SERVICE_KEY, OUT_OF_SERVICE_TAINT, NodeObs, parse_node

log = logging.getLogger("noderecover.remediation")

DELETE_CONFLICT_RETRIES = 3
MALFORMED_RETRY = 30.0  # a node object that cannot be read safely: look again this much later


class MalformedNode(Exception):
    """The fresh read of a node is malformed: the step is not taken (never acted on)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    retry_in: float = 0.0
    detail: str = ""
    tainted: bool | None = None  # the out-of-service taint is ours (None: not looked at)


class Executor:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        cfg: Config,
        may_act: Callable[[], bool],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._cfg = cfg
        self._may_act = may_act
        self._rng = rng or random.Random()
        self.drainer = Drainer(
            kube, clock, drain_timeout=cfg.drain_timeout, dry_run=cfg.dry_run, rng=self._rng
        )

    # -- helpers -----------------------------------------------------------------------

    def _path(self, node: str) -> str:
        return f"/api/v1/nodes/{quote(node, safe='')}"

    async def read(self, node: str, uid: str) -> NodeObs | None:
        """A fresh GET of the node; None when it is gone or was replaced (uid changed).

        Raises MalformedNode when the object cannot be read safely.
        """
        try:
            raw = await self._kube.request("GET", self._path(node))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise
        obs = parse_node(raw, self._cfg.relevant_labels, self._conditions())
        if obs.malformed is not None:
            MALFORMED_OBJECTS.labels("nodes", obs.malformed).inc()
            raise MalformedNode(obs.malformed)
        return obs if obs.uid == uid else None

    def _conditions(self) -> frozenset[str]:
        return frozenset({"Ready"} | {t for t, _ in self._cfg.unhealthy_conditions})

    def _write_allowed(self, what: str, node: str) -> bool:
        """False in dry-run (logged + counted); raises NotLeader without leadership."""
        if self._cfg.dry_run:
            log.info("dry-run: would %s node %s", what, node)
            ACTIONS.labels(what, "dry-run").inc()
            return False
        if not self._may_act():
            raise NotLeader
        return True

    async def _merge(self, node: str, body: dict[str, Any]) -> None:
        await self._kube.request("PATCH", self._path(node), body=body, content_type=MERGE_PATCH)

    # -- entry point ------------------------------------------------------------------

    async def perform(
        self, action: Action, rec: Record, current: Callable[[], NodeObs | None]
    ) -> Result:
        """Perform one action; never raises ApiError or MalformedNode (FAILED, retried later)."""
        try:
            match action.kind:
                case Kind.PERSIST:
                    return await self._persist(action)
                case Kind.CORDON:
                    return await self._cordon(action)
                case Kind.DRAIN:
                    return await self._drain(action, rec, current)
                case Kind.FENCE:
                    return await self._fence(action)
                case Kind.REMOVE:
                    return await self._remove(action, rec)
                case Kind.RESTORE:
                    return await self._restore(action, rec)
        except (MalformedNode, ApiError) as exc:
            return self._failed(action, rec, exc)
        raise AssertionError(f"unknown action {action.kind}")  # pragma: no cover

    def _failed(self, action: Action, rec: Record, exc: MalformedNode | ApiError) -> Result:
        if isinstance(exc, MalformedNode):
            ACTIONS.labels(action.kind.value, "malformed").inc()
            log.warning(
                "%s of node %s not done: the node object is malformed (%s); retry in %.0fs",
                action.kind,
                action.node,
                exc.reason,
                MALFORMED_RETRY,
            )
            return Result(Outcome.FAILED, MALFORMED_RETRY, f"node object malformed ({exc.reason})")
        ACTIONS.labels(action.kind.value, "error").inc()
        delay = Backoff(base=2.0, cap=300.0, rng=self._rng, failures=rec.failures).next_delay(
            exc.retry_after or 0.0
        )
        if not exc.retryable:
            delay = max(delay, 30.0)
        log.warning(
            "%s of node %s failed: %s; retry in %.1fs", action.kind, action.node, exc, delay
        )
        return Result(Outcome.FAILED, delay, str(exc))

    async def _persist(self, action: Action) -> Result:
        if self._write_allowed("annotate", action.node):
            try:
                await self._merge(
                    action.node, {"metadata": {"annotations": annotations_for(action.success)}}
                )
            except ApiError as exc:
                if exc.code == 404:
                    return Result(Outcome.GONE)
                raise
            ACTIONS.labels("annotate", "ok").inc()
        return Result(Outcome.OK)

    async def _cordon(self, action: Action) -> Result:
        fresh = await self.read(action.node, action.uid)
        if fresh is None:
            return Result(Outcome.GONE)
        if not unhealthy(fresh, self._cfg):
            return Result(Outcome.HEALTHY)
        if self._write_allowed("cordon", action.node):
            await self._merge(
                action.node,
                {
                    "metadata": {"annotations": annotations_for(action.success)},
                    "spec": {"unschedulable": True},
                },
            )
            ACTIONS.labels("cordon", "ok").inc()
        return Result(Outcome.OK)

    async def _drain(
        self, action: Action, rec: Record, current: Callable[[], NodeObs | None]
    ) -> Result:
        started = rec.phase_since
        if action.persist is not None:
            started = action.persist.phase_since
            if self._write_allowed("annotate", action.node):
                await self._merge(
                    action.node, {"metadata": {"annotations": annotations_for(action.persist)}}
                )

        async def still_unhealthy() -> bool | None:
            fresh = await self.read(action.node, action.uid)
            return None if fresh is None else unhealthy(fresh, self._cfg)

        def silent() -> bool:
            obs = current()
            return obs.silent if obs is not None else action.silent

        def blocked(reason: str) -> None:
            BLOCKED.labels(reason).inc()

        ctx = DrainContext(self._may_act, still_unhealthy, silent, blocked)
        outcome = await self.drainer.drain(action.node, started, action.may_force, ctx)
        ACTIONS.labels("drain", outcome.value).inc()
        if outcome is Outcome.FAILED:
            return Result(outcome, 60.0, "pods that cannot be evicted or cannot be read remain")
        return Result(outcome)

    async def _fence(self, action: Action) -> Result:
        argv = self._cfg.fence_command
        if self._cfg.dry_run:
            log.info("dry-run: would run fence command %s for node %s", argv, action.node)
            ACTIONS.labels("fence", "dry-run").inc()
            return Result(Outcome.OK)
        if not self._may_act():
            raise NotLeader
        env = {**os.environ, "NODE_NAME": action.node, "NODERECOVER_NODE": action.node}
        code: int | None = None
        try:
            with anyio.fail_after(self._cfg.fence_timeout):
                proc = await anyio.run_process(list(argv), env=env, check=False)
            code = proc.returncode
        except TimeoutError:
            log.error(
                "fence command for %s timed out after %.0fs", action.node, self._cfg.fence_timeout
            )
        except OSError as exc:
            log.error("fence command for %s could not run: %s", action.node, exc)
        if code != 0:
            ACTIONS.labels("fence", "error").inc()
            delay = Backoff(base=10.0, cap=300.0, rng=self._rng).next_delay()
            return Result(Outcome.FAILED, delay, f"fence command exit {code}")
        ACTIONS.labels("fence", "ok").inc()
        if self._write_allowed("annotate", action.node):
            await self._merge(
                action.node, {"metadata": {"annotations": annotations_for(action.success)}}
            )
        return Result(Outcome.OK)

    async def _remove(self, action: Action, rec: Record) -> Result:
        mode = self._cfg.removal
        taints = mode in {"out-of-service", "both"}
        ours = rec.tainted  # the out-of-service taint is ours (put on in an earlier episode)
        result = Result(Outcome.FAILED, 1.0, "node kept changing during removal")
        try:
            for _ in range(DELETE_CONFLICT_RETRIES):
                fresh = await self.read(action.node, action.uid)
                if fresh is None:
                    result = Result(Outcome.OK if mode != "out-of-service" else Outcome.GONE)
                    break
                if not unhealthy(fresh, self._cfg):
                    result = Result(Outcome.HEALTHY)
                    break
                try:
                    if taints and not fresh.has_taint(OUT_OF_SERVICE_KEY):
                        written = await self._add_taint(action, fresh)
                        ours = True  # from here on, even if a later write fails (dry-run: as if)
                        if written:
                            await self._annotate_removed(action, ours)
                            ACTIONS.labels("taint", "ok").inc()
                            log.warning("node %s tainted %s", action.node, OUT_OF_SERVICE_KEY)
                    elif taints:
                        if not ours:
                            ACTIONS.labels("taint", "already-present").inc()
                            log.info(
                                "node %s already has a %s taint noderecover did not add: not "
                                "ours, left in place on recovery",
                                action.node,
                                OUT_OF_SERVICE_KEY,
                            )
                        if self._write_allowed("annotate", action.node):
                            await self._annotate_removed(action, ours)
                    if mode in {"delete", "both"} and self._write_allowed("delete", action.node):
                        precondition = {"uid": fresh.uid, "resourceVersion": fresh.resource_version}
                        await self._kube.request(
                            "DELETE", self._path(action.node), body={"preconditions": precondition}
                        )
                        ACTIONS.labels("delete", "ok").inc()
                        log.warning("deleted node %s", action.node)
                    result = Result(Outcome.OK)
                    break
                except ApiError as exc:
                    if exc.code == 409:
                        continue  # changed under us: re-read, re-check health, try again
                    if exc.code != 404:
                        raise
                    result = Result(Outcome.OK)
                    break
        except (MalformedNode, ApiError) as exc:
            result = self._failed(action, rec, exc)
        # Whatever the outcome, say whose the taint is: the record must neither lose nor
        # claim it.
        return dataclasses.replace(result, tainted=ours) if taints else result

    async def _annotate_removed(self, action: Action, ours: bool) -> None:
        success = dataclasses.replace(action.success, tainted=ours)
        await self._merge(action.node, {"metadata": {"annotations": annotations_for(success)}})

    async def _add_taint(self, action: Action, fresh: NodeObs) -> bool:
        """Add the out-of-service taint (rv-guarded). False in dry-run: nothing written."""
        if not self._write_allowed("taint", action.node):
            return False
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": fresh.resource_version}
        ]
        if fresh.taints:
            ops.append({"op": "add", "path": "/spec/taints/-", "value": OUT_OF_SERVICE_TAINT})
        else:
            ops.append({"op": "add", "path": "/spec/taints", "value": [OUT_OF_SERVICE_TAINT]})
        try:
            await self._kube.request(
                "PATCH", self._path(action.node), body=ops, content_type=JSON_PATCH
            )
        except ApiError as exc:
            if exc.code == 422:  # the test op failed: the node changed, like a 409
                raise ApiError(409, "Conflict", exc.message) from exc
            raise
        return True

    async def _restore(self, action: Action, rec: Record) -> Result:
        fresh = await self.read(action.node, action.uid)
        if fresh is None:
            return Result(Outcome.GONE)
        if unhealthy(fresh, self._cfg):
            return Result(Outcome.FAILED, 0.0, "unhealthy again")
        if not self._write_allowed("restore", action.node):
            return Result(Outcome.OK)
        if rec.tainted:
            idx = next((i for i, t in enumerate(fresh.taints) if t.key == OUT_OF_SERVICE_KEY), None)
            if idx is not None:
                ops = [
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": fresh.resource_version,
                    },
                    {"op": "test", "path": f"/spec/taints/{idx}/key", "value": OUT_OF_SERVICE_KEY},
                    {"op": "remove", "path": f"/spec/taints/{idx}"},
                ]
                try:
                    await self._kube.request(
                        "PATCH", self._path(action.node), body=ops, content_type=JSON_PATCH
                    )
                except ApiError as exc:
                    if exc.code == 422:
                        return Result(Outcome.FAILED, 0.5, "node changed; retrying")
                    raise
                ACTIONS.labels("untaint", "ok").inc()
        body: dict[str, Any] = {"metadata": {"annotations": annotations_for(action.success)}}
        if rec.cordoned and fresh.unschedulable:
            body["spec"] = {"unschedulable": False}
        await self._merge(action.node, body)
        ACTIONS.labels("uncordon" if "spec" in body else "restore", "ok").inc()
        log.info(
            "node %s restored (uncordoned=%s, untainted=%s)",
            action.node,
            "spec" in body,
            rec.tainted,
        )
        return Result(Outcome.OK)
