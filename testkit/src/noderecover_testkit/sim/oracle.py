"""The oracle: judges every write the in-memory API applies, against its true state.

It looks at what the API saw (who wrote what, when), never at the controller's internals.
Each rule allows the staleness of one request (`Bounds.stale`): the state a correct
controller could have read just before its write.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from noderecover.core.nodes import ANN_PHASE, OUT_OF_SERVICE_KEY
from noderecover.core.policies import PAUSED, POLICIES_UNKNOWN
from noderecover_testkit.sim.api import JSON, Applied, Target

ANNOTATION_PREFIX = "noderecover.io/"
EXCLUDE = "noderecover.io/exclude"
HOUR = 3600.0
# Blocked reasons a liveness check accepts as visible (any NodeRecoverBlocked Event does).
_ = (PAUSED, POLICIES_UNKNOWN)


class Violation(AssertionError):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Bounds:
    stale: float  # one request's latency bound (read answered + write applied)
    pause: float  # how long a pause may exist before no destructive step may follow it
    lease_duration: float = 40.0  # the kubelets' node Lease leaseDurationSeconds
    status_fresh: float = 40.0  # a kubelet that posted status within this is alive
    election_margin: float = 0.0  # extra time a replica's Lease is trusted (clock margin)
    rate_window: float = 10.0
    rate_per_node: float = 20.0  # API calls per node per second, averaged over the window
    liveness: float = 120.0  # after grace + NLC's 40 s, a dead node is acted on or blocked


@dataclass
class NodeTruth:
    """What the oracle remembers of one node (by uid)."""

    cordon_owner: str = ""  # who set spec.unschedulable (the write that changed it to true)
    taint_owner: dict[str, str] = field(default_factory=dict)
    ann_owner: dict[str, str] = field(default_factory=dict)
    pool: str | None = None  # the pool whose slot our cordon holds
    removed: bool = False  # our removal happened (slot given back)


def is_ours(actor: str) -> bool:
    return actor.startswith("replica-")


class Oracle:
    def __init__(
        self,
        bounds: Bounds,
        *,
        now: Callable[[], float],
        kubelet_alive_at: Callable[[str, float], str | None],
        pause_over: Callable[[str, float, float], str | None],
        pool_of: Callable[[str], tuple[str, int, int]],
        election: Callable[[], tuple[str, float, float]],
    ) -> None:
        """Callbacks into the world's true state:
        - `kubelet_alive_at(node, t)`: why the node's kubelet is alive at t, or None;
        - `pause_over(node, t0, t1)`: a pause that applied to the node over all of [t0, t1];
        - `pool_of(node)`: (pool, max concurrent, max removals per hour) of the node now;
        - `election()`: (holder, when its last renewal was applied, lease duration).
        """
        self.b = bounds
        self.now = now
        self.kubelet_alive_at = kubelet_alive_at
        self.pause_over = pause_over
        self.pool_of = pool_of
        self.election = election
        self.nodes: dict[str, NodeTruth] = {}  # uid -> truth
        self.removals: dict[str, deque[float]] = {}  # pool -> times of our removals
        self.log: deque[str] = deque(maxlen=60)
        self.writes: list[str] = []  # the trace (hashed for determinism)
        self.violations: list[Violation] = []
        self.rates: dict[str, deque[float]] = {}
        self.max_rate = 0.0
        self.requests = 0
        # Called on the first violation (the world stops there): a violation is found in
        # loop callbacks, where raising would only be logged.
        self.on_violation: Callable[[], None] = lambda: None

    # -- recording ------------------------------------------------------------------------

    def note(self, line: str) -> None:
        self.log.append(f"{self.now():9.3f} {line}")

    def fail(self, invariant: str, detail: str) -> None:
        v = Violation(invariant, detail)
        self.violations.append(v)
        self.note(f"VIOLATION {invariant}: {detail}")
        if len(self.violations) == 1:
            self.on_violation()

    def request(self, actor: str, method: str, t: Target, q: dict[str, str], node: str) -> None:
        if not is_ours(actor):
            return
        self.requests += 1
        if not node:
            return
        now = self.now()
        d = self.rates.setdefault(node, deque())
        d.append(now)
        while d and d[0] <= now - self.b.rate_window:
            d.popleft()
        rate = len(d) / self.b.rate_window
        self.max_rate = max(self.max_rate, rate)
        if rate > self.b.rate_per_node:
            self.fail("api-rate", f"{len(d)} calls on node {node} in {self.b.rate_window:g}s")

    # -- every write ----------------------------------------------------------------------

    def write(self, a: Applied) -> None:
        t = a.target
        line = f"{a.actor} {a.method} {t.resource}/{t.namespace}/{t.name}/{t.sub}"
        if t.resource not in ("leases",) or t.namespace != "kube-node-lease":
            self.writes.append(f"{a.at:.6f} {line}")
        if t.resource == "events" or (t.resource == "leases" and t.namespace == "kube-node-lease"):
            return
        election = t.resource == "leases"
        shown = not election and (t.resource in ("nodes", "pods") or is_ours(a.actor))
        if shown and (a.actor != "kubelet" or _diff(a)):
            self.note(line + _diff(a))
        if is_ours(a.actor) and not (t.resource == "leases" and t.namespace != "kube-node-lease"):
            self._leadership(a)
        if t.resource == "nodes":
            self._node_write(a)
        elif t.resource == "pods" and is_ours(a.actor):
            self._pod_write(a)

    def _leadership(self, a: Applied) -> None:
        holder, renewed, duration = self.election()
        if holder != a.actor:
            self.fail("leadership", f"{a.actor} wrote {a.method} {a.target} while {holder!r} held")
        elif a.at - renewed > duration + self.b.election_margin:
            self.fail(
                "leadership",
                f"{a.actor} wrote {a.method} {a.target} {a.at - renewed:.2f}s after its last "
                f"renewal (lease {duration:g}s)",
            )

    def _truth(self, obj: JSON) -> NodeTruth:
        uid = obj["metadata"]["uid"]
        nt = self.nodes.get(uid)
        if nt is None:
            nt = self.nodes[uid] = NodeTruth()
        return nt

    def _node_write(self, a: Applied) -> None:
        before, after = a.before, a.after
        node = a.target.name or ((after or before or {}).get("metadata") or {}).get("name", "")
        if after is not None and before is None:
            nt = self._truth(after)  # created: what it was created with is the creator's
            if (after.get("spec") or {}).get("unschedulable"):
                nt.cordon_owner = a.actor
            for k in (after.get("metadata") or {}).get("annotations") or {}:
                nt.ann_owner[k] = a.actor
            for tt in (after.get("spec") or {}).get("taints") or []:
                nt.taint_owner[tt["key"]] = a.actor
            return
        assert before is not None
        nt = self._truth(before)
        ours = is_ours(a.actor)
        if after is None:  # Node DELETE
            if ours:
                self._destructive(a, node, "delete-node", force=True)
                self._removal(a, node, nt)
            return
        was = bool((before.get("spec") or {}).get("unschedulable"))
        now_ = bool((after.get("spec") or {}).get("unschedulable"))
        if now_ and not was:
            if ours:
                self._destructive(a, node, "cordon", force=False)
                self._slot(a, node, nt)
            nt.cordon_owner = a.actor
        elif was and not now_:
            if ours and nt.cordon_owner and not is_ours(nt.cordon_owner):
                self.fail(
                    "operator-change-undone",
                    f"{a.actor} uncordoned {node}: cordon of {nt.cordon_owner}",
                )
            nt.cordon_owner = ""
        t0 = {t["key"]: t for t in (before.get("spec") or {}).get("taints") or []}
        t1 = {t["key"]: t for t in (after.get("spec") or {}).get("taints") or []}
        for k in t1.keys() - t0.keys():
            nt.taint_owner[k] = a.actor
            if ours and k == OUT_OF_SERVICE_KEY:
                self._destructive(a, node, "out-of-service-taint", force=True)
                self._removal(a, node, nt)
        for k in t0.keys() - t1.keys():
            owner = nt.taint_owner.pop(k, "")
            if ours and owner and not is_ours(owner):
                self.fail("operator-change-undone", f"{a.actor} removed taint {k} of {owner}")
        a0 = (before.get("metadata") or {}).get("annotations") or {}
        a1 = (after.get("metadata") or {}).get("annotations") or {}
        for k in a1:
            if a0.get(k) != a1[k]:
                nt.ann_owner[k] = a.actor
        for k in a0.keys() - a1.keys():
            owner = nt.ann_owner.pop(k, "")
            if (
                ours
                and owner
                and not is_ours(owner)
                and (not k.startswith(ANNOTATION_PREFIX) or k == EXCLUDE)
            ):
                self.fail("operator-change-undone", f"{a.actor} removed annotation {k} of {owner}")

    def _pod_write(self, a: Applied) -> None:
        pod = a.before or {}
        node = (pod.get("spec") or {}).get("nodeName", "")
        if not node:
            return
        kind = "evict" if a.body == "eviction" else "delete-pod"
        g = (a.after or {}).get("metadata", {}).get("deletionGracePeriodSeconds")
        force = a.after is None and kind == "delete-pod"
        if a.after is None:
            kind = "force-delete"
        elif kind == "evict" and g is not None and g <= 1:
            kind = "evict-dead"
        self._destructive(a, node, kind, force=force)

    def _destructive(self, a: Applied, node: str, what: str, *, force: bool) -> None:
        """A destructive step on `node` at a.at: judged as of a.at - stale."""
        t = a.at - self.b.stale
        if force and (why := self.kubelet_alive_at(node, t)) is not None:
            self.fail("kubelet-alive", f"{what} of {node} by {a.actor} while {why}")
        if (why := self.pause_over(node, a.at - self.b.pause, a.at)) is not None:
            self.fail("paused", f"{what} of {node} by {a.actor} while {why}")

    def _slot(self, a: Applied, node: str, nt: NodeTruth) -> None:
        pool, limit, _budget = self.pool_of(node)
        nt.pool, nt.removed = pool, False
        held = [
            u
            for u, n in self.nodes.items()
            if n.pool == pool and not n.removed and is_ours(n.cordon_owner) and self.alive_uid(u)
        ]
        if len(held) + 1 > limit:
            self.fail(
                "max-concurrent",
                f"cordon of {node} by {a.actor}: pool {pool!r} holds {len(held) + 1} > {limit}",
            )

    alive_uid: Callable[[str], bool] = staticmethod(lambda _u: True)  # set by the world

    def _removal(self, a: Applied, node: str, nt: NodeTruth) -> None:
        if nt.removed:
            return  # out-of-service taint, then DELETE: one removal
        nt.removed = True
        pool, _limit, budget = self.pool_of(node)
        d = self.removals.setdefault(pool, deque())
        while d and d[0] <= a.at - HOUR:
            d.popleft()
        d.append(a.at)
        if len(d) > budget:
            self.fail(
                "removals-per-hour",
                f"removal of {node}: {len(d)} in pool {pool!r} in an hour > {budget}",
            )

    # -- at quiescence --------------------------------------------------------------------

    def quiescent(self, node: JSON) -> None:
        """`node` is healthy (its kubelet is up, long enough): nothing of ours is left."""
        nt = self._truth(node)
        name = node["metadata"]["name"]
        spec = node.get("spec") or {}
        if spec.get("unschedulable") and is_ours(nt.cordon_owner):
            self.fail("left-behind", f"our cordon is still on healthy node {name}")
        for tt in spec.get("taints") or []:
            if tt["key"] == OUT_OF_SERVICE_KEY and is_ours(nt.taint_owner.get(tt["key"], "")):
                self.fail("left-behind", f"our out-of-service taint is still on {name}")
        phase = ((node.get("metadata") or {}).get("annotations") or {}).get(ANN_PHASE)
        if phase not in (None, "Healthy"):
            self.fail("left-behind", f"healthy node {name} still annotated phase={phase}")

    def liveness(self, name: str, node: JSON | None, dead_since: float, visible: bool) -> None:
        if node is None:
            return  # removed
        nt = self._truth(node)
        spec = node.get("spec") or {}
        if spec.get("unschedulable") and is_ours(nt.cordon_owner):
            return
        if any(is_ours(nt.taint_owner.get(t["key"], "")) for t in spec.get("taints") or []):
            return
        if visible:
            return
        self.fail(
            "liveness",
            f"node {name} dead since {dead_since:.0f}s: neither remediated "
            "nor a NodeRecoverBlocked Event",
        )


def _diff(a: Applied) -> str:
    b, c = a.before or {}, a.after or {}
    out: list[str] = []
    if a.after is None:
        return " (deleted)"
    if a.before is None:
        return " (created)"
    sb, sc = b.get("spec") or {}, c.get("spec") or {}
    if sb.get("unschedulable") != sc.get("unschedulable"):
        out.append(f"unschedulable={sc.get('unschedulable')}")
    kb = {t.get("key") for t in sb.get("taints") or []}
    kc = {t.get("key") for t in sc.get("taints") or []}
    if kb != kc:
        out.append(f"taints +{sorted(kc - kb)} -{sorted(kb - kc)}")
    ab = (b.get("metadata") or {}).get("annotations") or {}
    ac = (c.get("metadata") or {}).get("annotations") or {}
    changed = {k: ac.get(k) for k in ab.keys() | ac.keys() if ab.get(k) != ac.get(k)}
    if changed:
        out.append(f"ann {changed}")
    md = (c.get("metadata") or {}).get("deletionGracePeriodSeconds")
    if md is not None and (b.get("metadata") or {}).get("deletionGracePeriodSeconds") != md:
        out.append(f"deleting grace={md}")
    rb = _ready(b)
    rc = _ready(c)
    if rb != rc:
        out.append(f"Ready {rb}->{rc}")
    return (" " + " ".join(out)) if out else ""


def _ready(obj: dict[str, Any]) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return ""
