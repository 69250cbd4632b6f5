"""Property tests that attack the drain and the removal with a life event at any request.

The real `Executor` drains, then removes, a node that starts dead (Ready=Unknown, its
heartbeat Lease stale) against a scripted in-memory API (`ScriptedApi`). Hypothesis picks the
pods (StatefulSet / ReplicaSet / DaemonSet, some terminating, some behind a
PodDisruptionBudget answering 429 a few times, some held by finalizers), whether force is
allowed, the removal mode, and one LIFE EVENT that takes effect at request index k: the node
shows life (Ready=True, Ready=False, a newer Ready transition hidden in a burst, its Lease
renewing), is excluded, is deleted and re-created under the same name with a new uid, or a
gate closes (circuit breaker, stale watch, out of --node-selector, leadership lost). k is
picked from a first run without the event, mostly right around its destructive requests.

"Destructive" below means: a pod DELETE with gracePeriodSeconds 0, an eviction with
gracePeriodSeconds 1, a Node DELETE, a PATCH adding the out-of-service taint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noderecover.base.clock import FakeClock
from noderecover.controller.executor import Executor, Result
from noderecover.controller.writes import Step
from noderecover.core.machine import Action, Kind, Outcome, Phase, Record
from noderecover.core.nodes import ANN_EXCLUDE, OUT_OF_SERVICE_KEY, format_time
from noderecover.kube.client import (
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    KubeClient,
    NotLeader,
    api_error,
)
from tests.builders import T0, node_json, pod_json
from tests.conftest import make_config

NODE = "w1"
UID = "uid-w1"
NEW_UID = "uid-w1-reborn"
NODE_PATH = f"/api/v1/nodes/{NODE}"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
PODS_PATH = "/api/v1/pods"
POD_PREFIX = "/api/v1/namespaces/default/pods/"
VA_PATH = "/apis/storage.k8s.io/v1/volumeattachments"
PV_PREFIX = "/api/v1/persistentvolumes/"
# The node's volume stays attached for this many VolumeAttachment LISTs after its
# out-of-service taint is seen (the attach/detach controller's detach, as the executor polls).
DETACH_AFTER_LISTS = 2
TRANSITION = T0 - 600.0  # Ready=Unknown since then: the transition the steps were decided on
STALE_RENEW = "2027-01-15T07:50:00.000000Z"  # the Lease's renewTime while nobody renews it
TIMEOUT = 10.0  # drain timeout (seconds)
MAX_REQUESTS = 20_000


class Life(StrEnum):
    READY_TRUE = "ready-true"  # healthy again (the kubelet is back and Ready)
    READY_FALSE = "ready-false"  # the kubelet is back and posts Ready=False: alive
    FLAP = "flap"  # Ready=Unknown still, but a newer lastTransitionTime (a flap in a burst)
    LEASE = "lease"  # Ready=Unknown, but the heartbeat Lease starts renewing: alive
    EXCLUDE = "exclude"  # noderecover.io/exclude=true
    REPLACED = "replaced"  # deleted and re-created under the same name, new uid
    BREAKER = "circuit-breaker"
    STALE = "watch-stale"
    SELECTOR = "excluded-selector"
    LEADER = "leadership-lost"


NODE_EVENTS = frozenset({Life.READY_TRUE, Life.READY_FALSE, Life.FLAP, Life.EXCLUDE, Life.REPLACED})
GATE_EVENTS = frozenset({Life.BREAKER, Life.STALE, Life.SELECTOR})
# After these the kubelet is alive: it renews its Lease and finishes terminating pods.
ALIVE_EVENTS = frozenset({Life.READY_TRUE, Life.READY_FALSE, Life.LEASE, Life.REPLACED})
# After these (once seen) the removal must never end OK ("removed").
NEVER_REMOVED = frozenset(Life) - {Life.REPLACED, Life.LEADER}
# After these (once seen) the drain must never end OK either (not unhealthy, or told not to).
NEVER_DRAINED = frozenset({Life.READY_TRUE, Life.FLAP, Life.EXCLUDE, *GATE_EVENTS})


class AutoClock(FakeClock):
    """Time moves only when the code under test sleeps (drain timeouts pass at once)."""

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


@dataclass(frozen=True)
class PodSpec:
    owner: str
    deleting: bool
    pdb_refusals: int  # an eviction answers 429 this many times
    finalizer: bool  # a force-delete leaves it listed (Terminating)


@dataclass
class Pod:
    name: str
    uid: str
    owner: str
    deleting: bool
    pdb_refusals: int
    finalizer: bool
    node: str = NODE
    node_uid: str = UID  # the Node object it runs on
    gone: bool = False

    def raw(self) -> dict[str, Any]:
        return pod_json(
            self.name, node=self.node, uid=self.uid, owner_kind=self.owner, deleting=self.deleting
        )


@dataclass
class Req:
    index: int
    method: str
    path: str
    body: Any
    content_type: str | None
    status: int = 0  # 200, or the ApiError code
    hit: str | None = None  # accepted write: uid of the node object it changed / pod's node uid
    listed: tuple[tuple[str, str], ...] = ()  # a LIST: the (name, uid) of each pod it showed

    @property
    def write(self) -> bool:
        return self.method != "GET"

    @property
    def destructive(self) -> bool:
        body = self.body if isinstance(self.body, dict) else {}
        if self.method == "DELETE" and self.path.startswith(POD_PREFIX):
            return bool(body.get("gracePeriodSeconds") == 0)
        if self.method == "POST" and self.path.endswith("/eviction"):
            return bool(body.get("deleteOptions", {}).get("gracePeriodSeconds") == 1)
        if self.path == NODE_PATH and self.method == "DELETE":
            return True
        if self.path == NODE_PATH and self.method == "PATCH" and isinstance(self.body, list):
            return any(
                op.get("op") == "add"
                and str(op.get("path", "")).startswith("/spec/taints")
                and OUT_OF_SERVICE_KEY in repr(op.get("value"))
                for op in self.body
            )
        return False

    @property
    def pod_write(self) -> bool:
        return self.path.startswith(POD_PREFIX) and self.method in ("POST", "DELETE")

    @property
    def node_read(self) -> bool:
        return self.method == "GET" and self.path == NODE_PATH

    @property
    def lease_read(self) -> bool:
        return self.method == "GET" and self.path == LEASE_PATH


@dataclass
class NodeState:
    uid: str
    rv: int
    ready: str
    since: float
    annotations: dict[str, str | None] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    unschedulable: bool = True

    def raw(self) -> dict[str, Any]:
        return node_json(
            NODE,
            ready=self.ready,
            since=self.since,
            uid=self.uid,
            rv=str(self.rv),
            unschedulable=self.unschedulable,
            annotations=self.annotations,
            taints=list(self.taints),
        )


class ScriptedApi:
    """The API server for one node, its heartbeat Lease and its pods, as `KubeClient.request`
    sees it. Every request is logged with its index; the life event takes effect when the
    request with index `at` arrives (that request is served the changed world)."""

    def __init__(
        self, pods: list[PodSpec], clock: FakeClock, event: Life | None, at: int | None
    ) -> None:
        self.clock = clock
        self.event, self.at = event, at
        self.fired = False  # the event took effect
        self.void = False  # ... on nothing (a node event after the node was deleted)
        self._rv = 100
        self.node: NodeState | None = NodeState(UID, self._next_rv(), "Unknown", TRANSITION)
        self.pods: dict[str, Pod] = {}
        for i, p in enumerate(pods):
            name = f"p{i}"
            self.pods[name] = Pod(
                name, f"pod-{i}", p.owner, p.deleting, p.pdb_refusals, p.finalizer
            )
        self.alive = False  # the kubelet: renews its Lease, finishes terminating pods
        self.renewals = 0
        self.gate: str | None = None
        self.leader = True
        self.log: list[Req] = []
        self.va_lists_tainted = 0  # VolumeAttachment LISTs served while the node was tainted

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def may_act(self) -> bool:
        return self.leader

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        index = len(self.log)
        assert index < MAX_REQUESTS, "no end"
        if index == self.at:
            self._fire()
        req = Req(index, method, path, body, content_type)
        self.log.append(req)
        await asyncio.sleep(0)
        try:
            out = self._serve(req, query)
        except ApiError as exc:
            req.status = exc.code
            raise
        req.status = 200
        return out

    # -- the life event ----------------------------------------------------------------

    def _fire(self) -> None:
        self.fired = True
        now = float(int(self.clock.wall()))
        match self.event:
            case Life.BREAKER | Life.STALE | Life.SELECTOR:
                self.gate = str(self.event)
            case Life.LEADER:
                self.leader = False
            case Life.LEASE:
                self.alive = True
            case Life.REPLACED:
                self.node = NodeState(NEW_UID, self._next_rv(), "True", now, unschedulable=False)
                self.alive = True
                for name, owner in (("fresh-0", "ReplicaSet"), ("fresh-ds", "DaemonSet")):
                    self.pods[name] = Pod(
                        name, f"{name}-uid", owner, False, 0, False, NODE, NEW_UID
                    )
            case _ if self.node is None:
                self.void = True
            case Life.READY_TRUE | Life.READY_FALSE:
                assert self.node is not None
                self.node.ready = "True" if self.event is Life.READY_TRUE else "False"
                self.node.since, self.node.rv = now, self._next_rv()
                self.alive = True
            case Life.FLAP:
                assert self.node is not None
                self.node.since, self.node.rv = now, self._next_rv()
            case Life.EXCLUDE:
                assert self.node is not None
                self.node.annotations[ANN_EXCLUDE] = "true"
                self.node.rv = self._next_rv()

    # -- serving -----------------------------------------------------------------------

    def _serve(self, req: Req, query: Any) -> dict[str, Any]:
        method, path, body = req.method, req.path, req.body
        if path == NODE_PATH:
            return self._node(req)
        if path == LEASE_PATH and method == "GET":
            if self.alive:
                self.renewals += 1
                renew = f"{format_time(T0)[:-1]}.{self.renewals:06d}Z"
            else:
                renew = STALE_RENEW
            return {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": NODE, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": renew},
            }
        if path == PODS_PATH and method == "GET":
            assert dict(query or []).get("fieldSelector") == f"spec.nodeName={NODE}"
            if self.alive:  # the kubelet finishes what it was asked to delete
                for pod in list(self.pods.values()):
                    if pod.deleting and not pod.gone and not pod.finalizer:
                        self._gone(pod)
            items = [p.raw() for p in self.pods.values() if not p.gone and p.node == NODE]
            req.listed = tuple((r["metadata"]["name"], r["metadata"]["uid"]) for r in items)
            return {"kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": items}
        if path.startswith(POD_PREFIX):
            return self._pod(req, path.removeprefix(POD_PREFIX), method, body)
        if path == VA_PATH and method == "GET":
            items = self._attachments()
            req.listed = tuple((a["metadata"]["name"], "") for a in items)
            return {"kind": "VolumeAttachmentList", "metadata": {}, "items": items}
        if path.startswith(PV_PREFIX) and method == "GET":
            raise api_error(404, "NotFound", "persistentvolumes not found")
        raise AssertionError(f"unexpected request {method} {path}")

    def _attachments(self) -> list[dict[str, Any]]:
        """The node's one volume: attached until DETACH_AFTER_LISTS LISTs saw it tainted."""
        node = self.node
        if node is None or node.uid != UID:
            return []
        if any(t.get("key") == OUT_OF_SERVICE_KEY for t in node.taints):
            self.va_lists_tainted += 1
            if self.va_lists_tainted > DETACH_AFTER_LISTS:
                return []
        return [
            {
                "metadata": {"name": "csi-va-1"},
                "spec": {
                    "attacher": "csi.test",
                    "nodeName": NODE,
                    "source": {"persistentVolumeName": "pv-1"},
                },
                "status": {"attached": True},
            }
        ]

    def _gone(self, pod: Pod) -> None:
        pod.gone = True
        if pod.owner == "StatefulSet":
            # Its controller re-creates it under the same name, elsewhere (w1 is cordoned).
            self.pods[pod.name] = Pod(
                pod.name, pod.uid + "-r", pod.owner, False, 0, False, "w2", "uid-w2"
            )

    def _pod(self, req: Req, rest: str, method: str, body: Any) -> dict[str, Any]:
        name, _, sub = rest.partition("/")
        pod = self.pods.get(name)
        if pod is None or pod.gone:
            raise api_error(404, "NotFound", f"pods {name!r} not found")
        if method == "POST" and sub == "eviction":
            options = body.get("deleteOptions") or {}
            if (options.get("preconditions") or {}).get("uid", pod.uid) != pod.uid:
                raise api_error(409, "Conflict", "Precondition failed: UID in precondition")
            if pod.pdb_refusals > 0:
                pod.pdb_refusals -= 1
                raise api_error(429, "TooManyRequests", "Cannot evict pod", retry_after=5.0)
            req.hit = pod.node_uid
            pod.deleting = True
            if self.alive and pod.node_uid == UID and not pod.finalizer:
                self._gone(pod)
            return {"kind": "Status", "status": "Success"}
        if method == "DELETE" and not sub:
            if (body.get("preconditions") or {}).get("uid", pod.uid) != pod.uid:
                raise api_error(409, "Conflict", "Precondition failed: UID in precondition")
            req.hit = pod.node_uid
            if body.get("gracePeriodSeconds") == 0 and not pod.finalizer:
                self._gone(pod)
            else:
                pod.deleting = True
            return pod.raw()
        raise AssertionError(f"unexpected pod request {method} {rest}")

    def _node(self, req: Req) -> dict[str, Any]:
        node, body = self.node, req.body
        if node is None:
            raise api_error(404, "NotFound", f'nodes "{NODE}" not found')
        if req.method == "GET":
            return node.raw()
        before = node.raw()
        if req.method == "PATCH" and req.content_type == MERGE_PATCH:
            meta = body.get("metadata") or {}
            if meta.get("uid", node.uid) != node.uid:
                raise api_error(409, "Conflict", "Precondition failed: UID in precondition")
            if meta.get("resourceVersion", str(node.rv)) != str(node.rv):
                raise api_error(409, "Conflict", "the object has been modified")
            for key, value in (meta.get("annotations") or {}).items():
                if value is None:
                    node.annotations.pop(key, None)
                else:
                    node.annotations[key] = value
            if "unschedulable" in (body.get("spec") or {}):
                node.unschedulable = bool(body["spec"]["unschedulable"])
        elif req.method == "PATCH" and req.content_type == JSON_PATCH:
            for op in body:
                if op["op"] == "test" and op["path"] == "/metadata/resourceVersion":
                    if op["value"] != str(node.rv):
                        raise api_error(422, "Invalid", "the test op failed")
                elif op["op"] == "add" and op["path"] in ("/spec/taints", "/spec/taints/-"):
                    new = op["value"] if op["path"] == "/spec/taints" else [op["value"]]
                    node.taints.extend(new)
                elif op["path"].startswith("/metadata/annotations/"):
                    key = op["path"].removeprefix("/metadata/annotations/")
                    key = key.replace("~1", "/").replace("~0", "~")
                    if op["op"] == "add":
                        node.annotations[key] = op["value"]
                    elif op["op"] == "remove":
                        node.annotations.pop(key)
                    else:
                        raise AssertionError(f"unexpected JSON patch op {op}")
                else:
                    raise AssertionError(f"unexpected JSON patch op {op}")
        elif req.method == "DELETE":
            pre = body.get("preconditions") or {}
            if pre.get("uid", node.uid) != node.uid:
                raise api_error(409, "Conflict", "Precondition failed: UID in precondition")
            if pre.get("resourceVersion", str(node.rv)) != str(node.rv):
                raise api_error(409, "Conflict", "Precondition failed: ResourceVersion")
            req.hit = node.uid
            self.node = None
            return {"kind": "Status", "status": "Success"}
        else:
            raise AssertionError(f"unexpected node request {req.method} {req.content_type}")
        req.hit = node.uid
        if node.raw() != before:  # as the API server: a no-op patch keeps the resourceVersion
            node.rv = self._next_rv()
        return node.raw()


class ScriptedGuard:
    """The controller's side of `remediation.Guard`, modelled simply: the gate flag of the
    stub, and a fresh GET of the Lease that says renewing when its renewTime changed (as seen
    by us, on our monotonic clock) within the grace."""

    def __init__(self, api: ScriptedApi, clock: FakeClock, grace: float) -> None:
        self.api, self.clock, self.grace = api, clock, grace
        # Read long ago, unchanged since: silent.
        self.seen = (STALE_RENEW, clock.monotonic() - 10 * grace)
        self.reports: list[str] = []

    def hold(self, node: str, step: Step) -> str | None:
        return self.api.gate

    async def self_fenced_now(self, node: str, uid: str) -> bool:
        return False  # no agent here

    def fence_requested(self, node: str, uid: str) -> None:
        return None

    async def renewing_now(self, node: str) -> bool:
        try:
            lease = await self.api.request("GET", LEASE_PATH)
        except ApiError as exc:
            return exc.code != 404
        renew = lease["spec"]["renewTime"]
        if renew != self.seen[0]:
            self.seen = (renew, self.clock.monotonic())
        return self.clock.monotonic() - self.seen[1] < self.grace

    def report(self, node: str, uid: str, reason: str, message: str) -> None:
        self.reports.append(reason)

    def event(
        self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str
    ) -> None:
        self.reports.append(reason)

    async def record_removal(self, node: str, uid: str, intent: str, message: str) -> None:
        self.reports.append(intent)


@dataclass(frozen=True)
class Case:
    pods: tuple[PodSpec, ...]
    may_force: bool
    removal: str
    overdue: bool  # the drain started a drain timeout ago (forces come at once)
    event: Life | None = None
    at: int | None = None


@dataclass
class Trace:
    case: Case
    log: list[Req]
    drain: Result | None = None
    drain_end: int = 0  # requests sent by the end of the drain
    remove: Result | None = None
    not_leader: bool = False
    fired: bool = False
    void: bool = False

    def seen_at(self, *, node_only: bool = False) -> int | None:
        """The index of the first request that can observe the event (None: none did).

        Leadership: the act-gate is asked before every write, so the event itself. Node
        events: the first GET of the Node from k on (READY_TRUE/FALSE also the Lease: it
        renews). Gates: the first GET of the Node from k on (`Guard.hold` is asked right
        after it, on that read). The Lease: the first GET of the Lease from k on.
        `node_only`: the first GET of the Node from k on that can see it.
        """
        ev, k = self.case.event, self.case.at
        if ev is None or k is None or not self.fired or self.void:
            return None
        if ev is Life.LEADER:
            return k
        for r in self.log[k:]:
            if ev is Life.LEASE and r.lease_read:
                return r.index
            if ev is not Life.LEASE and r.node_read:
                return r.index
            if ev in (Life.READY_TRUE, Life.READY_FALSE) and r.lease_read and not node_only:
                return r.index
        return None


async def _run(case: Case) -> Trace:
    clock = AutoClock(start_wall=T0)
    api = ScriptedApi(list(case.pods), clock, case.event, case.at)
    cfg = make_config(watch_node_leases=True, removal=case.removal, drain_timeout=TIMEOUT)
    guard = ScriptedGuard(api, clock, cfg.grace)
    ex = Executor(cast(KubeClient, api), clock, cfg, api.may_act, rng=random.Random(7), guard=guard)
    trace = Trace(case, api.log)
    rec = Record(
        uid=UID,
        phase=Phase.DRAINING,
        phase_since=clock.wall() - (TIMEOUT if case.overdue else 0.0),
        unhealthy_since=TRANSITION + 1,
        cordoned=True,
        transition=TRANSITION,
    )
    removing = dataclasses.replace(rec, phase=Phase.REMOVING, phase_since=clock.wall())
    drain = Action(
        Kind.DRAIN,
        NODE,
        UID,
        None,
        removing,
        silent=True,
        may_force=case.may_force,
        transition=TRANSITION,
    )
    done = dataclasses.replace(removing, phase=Phase.REMOVED, tainted=case.removal != "delete")
    remove = Action(Kind.REMOVE, NODE, UID, None, done, silent=True, transition=TRANSITION)
    try:
        trace.drain = await ex.perform(drain, rec)
        trace.drain_end = len(api.log)
        # Whatever the drain said: the removal must stand on its own evidence.
        trace.remove = await ex.perform(remove, removing)
    except NotLeader:
        trace.not_leader = True
    trace.fired, trace.void = api.fired, api.void
    return trace


def run(case: Case) -> Trace:
    return asyncio.run(_run(case))


# ------------------------------------------------------------------------------ properties
def _deciding_read(log: list[Req], i: int) -> int:
    """The last GET of the Node before request i (the read a step was decided on)."""
    return max((r.index for r in log[:i] if r.node_read), default=-1)


def check_evidence_before_force(t: Trace) -> None:
    """(a) Let k be the index of the request at which the life event takes effect (the stub
    serves the changed world to it and to every later one) and s = `Trace.seen_at()` the
    first request from k on that can observe it. Then:
    - no destructive request is sent after s (once a read has seen it: zero);
    - the destructive requests sent in [k, s) all belong to ONE step, decided on a read of
      the Node before k (at most one step was already past its read: a force-delete or a
      grace-1 eviction, or the removal's taint and Node DELETE, decided on one read).
    Leadership: s = k (see check_leadership).
    """
    k, s = t.case.at, t.seen_at()
    if k is None or s is None:
        return
    late = [r for r in t.log if r.destructive and r.index >= k]
    after = [r for r in late if r.index > s]
    assert not after, f"destructive after the read at {s} saw {t.case.event}: {after[0]}"
    reads = {_deciding_read(t.log, r.index) for r in late}
    assert len(reads) <= 1, f"{len(reads)} steps past the event at {k}: {late}"
    assert all(d < k for d in reads), f"a step decided on a read at/after the event: {late}"


def check_uid_of_node(t: Trace) -> None:
    """(b) Every accepted write (to the Node, or an eviction or DELETE of a pod) lands on the
    node the action was decided for (its uid): never on a re-created node (new uid), nor on
    a pod of one, nor on a same-named pod re-created elsewhere."""
    for r in t.log:
        if r.hit is not None:
            assert r.hit == UID, f"{r.method} {r.path} landed on node uid {r.hit}"


def check_pod_uid_preconditions(t: Trace) -> None:
    """(c) Every eviction and pod DELETE carries, as a uid precondition, the uid of a pod of
    that name a LIST of the node showed."""
    listed: dict[str, set[str]] = {}
    for r in t.log:
        if r.pod_write:
            name = r.path.removeprefix(POD_PREFIX).split("/")[0]
            body = r.body if isinstance(r.body, dict) else {}
            options = body.get("deleteOptions", {}) if r.method == "POST" else body
            uid = (options.get("preconditions") or {}).get("uid")
            assert uid is not None, f"{r.method} {r.path} without a uid precondition"
            assert uid in listed.get(name, set()), f"{r.method} {r.path}: uid {uid} never listed"
        for name, uid in r.listed:
            listed.setdefault(name, set()).add(uid)


def check_forced_once(t: Trace) -> None:
    """(d) Each pod uid is force-deleted (DELETE, grace 0) at most once in the drain."""
    forced: list[str] = []
    for r in t.log:
        if r.method == "DELETE" and r.path.startswith(POD_PREFIX) and r.destructive:
            forced.append(r.body["preconditions"]["uid"])
    assert len(forced) == len(set(forced)), f"forced more than once: {sorted(forced)}"


def check_leadership(t: Trace) -> None:
    """(e) Leadership lost when request k is sent: no write after k; and a removal started
    after that never runs (the act-gate raises NotLeader before its first read)."""
    if t.case.event is not Life.LEADER or not t.fired:
        return
    k = t.case.at
    assert k is not None
    writes = [r for r in t.log if r.write and r.index > k]
    assert not writes, f"write after leadership was lost at {k}: {writes[0]}"
    if k < t.drain_end or t.drain is None:
        assert t.not_leader, "leadership lost during the drain, yet the removal ran"


def check_outcomes(t: Trace) -> None:
    """(f) Once the event was seen (before the end), the removal never ends OK when the node
    showed life (Ready=True, Ready=False, a Lease renewing, a flap) or was excluded or gated;
    the drain never ends OK after a GET of the Node saw Ready=True, a flap, an exclusion or
    a closed gate (a live kubelet's node may well be drained: by eviction)."""
    s, ev = t.seen_at(), t.case.event
    if s is None or ev is None:
        return
    if ev in NEVER_REMOVED and t.remove is not None:
        assert t.remove.outcome is not Outcome.OK, f"removed after {ev} seen at {s}"
    s = t.seen_at(node_only=True)
    if ev in NEVER_DRAINED and t.drain is not None and s is not None and s < t.drain_end:
        assert t.drain.outcome is not Outcome.OK, f"drained OK after {ev} seen at {s}"


def check_delete_after_detach(t: Trace) -> None:
    """(g) out-of-service/both: the Node is deleted only after a VolumeAttachment LIST, after
    the taint, showed none of its volumes left; no taint is ever removed by a removal.
    delete: the node's VolumeAttachments are read before its DELETE (the warning)."""
    for r in t.log:
        if not (r.path == NODE_PATH and r.method == "DELETE"):
            continue
        before = [q for q in t.log[: r.index] if q.path == VA_PATH]
        assert before, f"Node DELETE at {r.index} without reading its VolumeAttachments"
        if t.case.removal == "both":
            taint = next(
                (q.index for q in t.log if q.content_type == JSON_PATCH and q.path == NODE_PATH),
                None,
            )
            assert taint is not None and taint < r.index, "deleted before the taint"
            assert before[-1].listed == (), (
                f"Node DELETE at {r.index} while its volumes were attached: {before[-1].listed}"
            )
    for r in t.log:
        if r.content_type == JSON_PATCH and r.path == NODE_PATH:
            assert all(op.get("op") != "remove" for op in r.body), "a taint removed"


CHECKS = (
    check_delete_after_detach,
    check_evidence_before_force,
    check_uid_of_node,
    check_pod_uid_preconditions,
    check_forced_once,
    check_leadership,
    check_outcomes,
)


def check_all(t: Trace) -> None:
    for check in CHECKS:
        check(t)


# ------------------------------------------------------------------------------ strategies
PODS = st.lists(
    st.builds(
        PodSpec,
        owner=st.sampled_from(["StatefulSet", "StatefulSet", "ReplicaSet", "DaemonSet"]),
        deleting=st.sampled_from([False, False, True]),
        pdb_refusals=st.sampled_from([0, 0, 0, 1, 3]),
        finalizer=st.sampled_from([False, False, False, True]),
    ),
    max_size=20,
).map(tuple)
CASES = st.builds(
    Case,
    pods=PODS,
    may_force=st.sampled_from([True, True, False]),
    removal=st.sampled_from(["delete", "out-of-service", "both"]),
    overdue=st.booleans(),
)


def _kind(r: Req) -> str:
    return f"{r.method} {'node' if r.path == NODE_PATH else r.path.rsplit('/', 1)[-1]}"


def event_index(base: Trace) -> st.SearchStrategy[int]:
    """Where to let the event happen, from the run without it: anywhere, or (mostly) just
    around one destructive request - first its kind (grace-1 eviction, force-delete, taint,
    Node DELETE: each as likely, however many pods), then which one, then the read before
    it, the request itself or the next one."""
    kinds: dict[str, list[int]] = {}
    for r in base.log:
        if r.destructive:
            kinds.setdefault(_kind(r), []).append(r.index)
    anywhere = st.integers(0, len(base.log))
    if not kinds:
        return anywhere
    near = (
        st.sampled_from(sorted(kinds))
        .flatmap(lambda k: st.sampled_from(kinds[k]))
        .flatmap(lambda i: st.integers(max(0, i - 3), i + 1))
    )
    return st.one_of(near, near, anywhere)


@pytest.mark.parametrize("event", list(Life))
@settings(max_examples=max(20, settings().max_examples // 5))
@given(case=CASES, data=st.data())
def test_a_life_event_at_any_request_stops_force_and_removal(
    case: Case, event: Life, data: st.DataObject
) -> None:
    """Each event kind on its own (a fifth of the profile's examples each): all of (a)-(f)
    on the run without the event and on the run with it at the drawn request."""
    base = run(case)
    check_all(base)
    at = data.draw(event_index(base), label="at")
    t = run(dataclasses.replace(case, event=event, at=at))
    check_all(t)
    s = t.seen_at()
    late = [r for r in t.log if r.destructive and r.index >= at]
    hypothesis.event(f"{event}: {'seen' if s is not None else 'not seen'}")
    hypothesis.event(f"destructive requests sent from k on: {min(len(late), 2)}")


# ------------------------------------------------------------------- examples (not vacuous)
SS = PodSpec("StatefulSet", deleting=False, pdb_refusals=0, finalizer=False)


def test_without_an_event_a_dead_node_is_drained_by_force_and_removed() -> None:
    t = run(Case((SS, SS, dataclasses.replace(SS, owner="DaemonSet")), True, "both", False))
    check_all(t)
    assert t.drain is not None and t.drain.outcome is Outcome.OK
    assert t.remove is not None and t.remove.outcome is Outcome.OK
    kinds = [(r.method, r.path.rsplit("/", 1)[-1]) for r in t.log if r.destructive]
    assert kinds.count(("POST", "eviction")) == 2  # grace 1: no kubelet to honour more
    assert kinds.count(("DELETE", "p0")) == kinds.count(("DELETE", "p1")) == 1
    # Taint, then (once the volume detached: the read after the wait) one Node DELETE, on
    # the resourceVersion of that read.
    assert kinds[-2:] == [("PATCH", NODE), ("DELETE", NODE)]
    assert [r.status for r in t.log if r.destructive][-2:] == [200, 200]
    va_lists = [r for r in t.log if r.path == VA_PATH]
    # One before the taint (the volumes followed to their re-attach), then the wait's.
    assert len(va_lists) == 1 + DETACH_AFTER_LISTS + 1 and va_lists[-1].listed == ()


def _first(t: Trace, method: str, suffix: str) -> int:
    return next(r.index for r in t.log if r.method == method and r.path.endswith(suffix))


@pytest.mark.parametrize("event", [Life.READY_FALSE, Life.LEASE, Life.FLAP, Life.BREAKER])
def test_life_just_before_the_first_force_delete_stops_it(event: Life) -> None:
    case = Case((SS, SS), True, "delete", True)
    base = run(case)
    force = _first(base, "DELETE", "/p0")
    read = _deciding_read(base.log, force)
    t = run(dataclasses.replace(case, event=event, at=read))  # the read itself sees it
    check_all(t)
    assert not [r for r in t.log if r.destructive]
    assert t.remove is not None and t.remove.outcome is not Outcome.OK


def test_a_node_replaced_during_the_removal_is_not_deleted() -> None:
    case = Case((), True, "both", False)
    base = run(case)
    taint = next(r.index for r in base.log if r.destructive)
    t = run(dataclasses.replace(case, event=Life.REPLACED, at=taint))
    check_all(t)
    assert [r.status for r in t.log if r.destructive] == [422]  # rv test: refused
    assert t.remove is not None and t.remove.outcome is Outcome.OK  # the old node is gone
    assert not [r for r in t.log if r.hit == NEW_UID]


@pytest.mark.parametrize("removal", ["out-of-service", "both"])
def test_leadership_lost_during_the_taint_write_stops_the_removal(removal: str) -> None:
    """The taint PATCH is the last write: its annotation (and the DELETE) ask the act-gate
    first. The taint stays unrecorded (the documented conservative gap)."""
    case = Case((), True, removal, False)
    base = run(case)
    taint = next(r.index for r in base.log if r.destructive)
    t = run(dataclasses.replace(case, event=Life.LEADER, at=taint))
    check_all(t)
    assert t.not_leader
    writes = [r.index for r in t.log if r.write]
    assert taint in writes and max(writes) == taint  # nothing written after the lost Lease
