"""The ledger: what noderecover did during one e2e test, checked against its promises.

Sources of truth, none of them noderecover's own account:
- the API server's audit log (every write by the noderecover ServiceAccount, with the
  request body, and every PVC/PV deletion by anyone; see ``AUDIT_POLICY``);
- the harness's power log (when each node's kubelet, i.e. its kwok, was running);
- a poller that remembers which node every pod ran on, the uid of every Node object it saw
  under each name (a Node deleted and re-created is another node), and every PVC/PV it saw.

Invariants (all must be 0):
- healthy nodes removed: a Node DELETE by noderecover while the node's kubelet was running;
- pods deleted from healthy nodes: an eviction or pod DELETE by noderecover of a pod whose
  node's kubelet was running;
- PVCs/PVs lost: any PVC/PV deletion, by anyone, or one seen during the test missing at the end;
- nodes left cordoned while Ready: at the end, a Ready node that is unschedulable;
- double actions: a node deleted twice, a node cordoned again while still cordoned, a pod
  force-deleted twice.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from noderecover_testkit.cluster import TestCluster

SA_USER = "system:serviceaccount:noderecover:noderecover"
INVARIANTS = (
    "healthy_nodes_removed",
    "healthy_pods_deleted",
    "storage_lost",
    "left_cordoned",
    "double_actions",
)


def unschedulable_set(body: Any) -> bool | None:
    """What a Node PATCH body does to spec.unschedulable: True/False, None when it does not
    touch it. A merge patch (an object) or a JSON patch (a list of ops: the restore's)."""
    if isinstance(body, dict):
        spec = body.get("spec")
        if isinstance(spec, dict) and "unschedulable" in spec:
            return bool(spec["unschedulable"])
        return None
    if isinstance(body, list):
        for op in body:
            if (
                isinstance(op, dict)
                and op.get("path") == "/spec/unschedulable"
                and op.get("op") in ("add", "replace")
            ):
                return bool(op.get("value"))
    return None


@dataclass
class Row:
    test: str
    faults: list[str] = field(default_factory=list)
    remediations: int = 0
    healthy_nodes_removed: int = 0
    healthy_pods_deleted: int = 0
    storage_lost: int = 0
    left_cordoned: int = 0
    double_actions: int = 0
    details: list[str] = field(default_factory=list)

    def violations(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in INVARIANTS if getattr(self, k)}


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def table(rows: list[Row]) -> str:
    """The suite's ledger as a fixed-width table with a totals line."""
    head = (
        "test",
        "faults",
        "remediated",
        "healthy nodes removed",
        "healthy pods deleted",
        "PVC/PV lost",
        "left cordoned",
        "double actions",
    )
    lines = [
        (
            r.test,
            str(len(r.faults)),
            str(r.remediations),
            *(str(getattr(r, k)) for k in INVARIANTS),
        )
        for r in rows
    ]
    total = (
        "TOTAL",
        str(sum(len(r.faults) for r in rows)),
        str(sum(r.remediations for r in rows)),
        *(str(sum(getattr(r, k) for r in rows)) for k in INVARIANTS),
    )
    widths = [max(len(x[i]) for x in [head, *lines, total]) for i in range(len(head))]

    def fmt(cols: tuple[str, ...]) -> str:
        pairs = enumerate(zip(cols, widths, strict=True))
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(head), sep, *map(fmt, lines), sep, fmt(total)])


class Ledger:
    """Start it when the test's cluster is at baseline; :meth:`close` at the end of the test
    (before any reset) returns the :class:`Row`."""

    def __init__(self, cluster: TestCluster, test: str, interval: float = 0.25) -> None:
        self.c = cluster
        self.row = Row(test)
        self.t0 = time.time()
        self._audit_from = len(cluster.audit_events())
        self._power_from = len(cluster.power_log)
        self._interval = interval
        # (namespace, name) -> [(first seen, uid, node)]
        self._pods: dict[tuple[str, str], list[tuple[float, str, str]]] = defaultdict(list)
        self._storage: dict[str, str] = {}  # uid -> "pvc ns/name" | "pv name"
        # node name -> [(first seen, uid)]: a name may be deleted and re-created
        self._nodes: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)
        self._poll()
        self._thread.start()

    def fault(self, what: str) -> None:
        """Record a fault the test injected (node power-offs are recorded automatically)."""
        self.row.faults.append(what)

    def writes(
        self,
        resource: str,
        verb: str,
        *,
        name: str | None = None,
        sub: str | None = None,
        agent: str | None = None,
        after: float = 0.0,
        ok: bool = True,
    ) -> list[dict[str, Any]]:
        """noderecover's audited writes so far matching the filters (``agent``: a substring
        of the User-Agent, which carries the replica's identity; ``after``: wall time)."""
        out = []
        for e in self.c.audit_events()[self._audit_from :]:
            ref = e.get("objectRef", {})
            code = e.get("responseStatus", {}).get("code", 0)
            if (
                e.get("user", {}).get("username") == SA_USER
                and ref.get("resource") == resource
                and e.get("verb") == verb
                and (name is None or ref.get("name") == name)
                and ref.get("subresource") == sub
                and (agent is None or agent in e.get("userAgent", ""))
                and _ts(e["requestReceivedTimestamp"]) > after
                and (not ok or 200 <= code < 300)
            ):
                out.append(e)
        return out

    def force_deletes(self, *, name: str | None = None, after: float = 0.0) -> list[dict[str, Any]]:
        """noderecover's pod DELETEs with ``gracePeriodSeconds: 0`` so far, accepted or not
        (an attempt counts: a refused one only means the pod had changed)."""
        return [
            e
            for e in self.writes("pods", "delete", name=name, after=after, ok=False)
            if (e.get("requestObject") or {}).get("gracePeriodSeconds") == 0
        ]

    def cordons(self, node: str) -> int:
        """Successful PATCHes by noderecover that set ``spec.unschedulable`` on ``node``."""
        return sum(
            1
            for e in self.writes("nodes", "patch", name=node)
            if unschedulable_set(e.get("requestObject")) is True
        )

    # ------------------------------------------------------------------ polling

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll()
            except OSError:
                continue  # the API server may be down: that is the test's business
            except Exception:
                continue

    def _poll(self) -> None:
        now = time.time()
        for n in self.c.request("GET", "/api/v1/nodes")["items"]:
            seen = self._nodes[n["metadata"]["name"]]
            if not seen or seen[-1][1] != n["metadata"]["uid"]:
                seen.append((now, n["metadata"]["uid"]))
        pods = self.c.request("GET", "/api/v1/pods")["items"]
        for p in pods:
            meta, node = p["metadata"], p.get("spec", {}).get("nodeName") or ""
            hist = self._pods[(meta["namespace"], meta["name"])]
            if node and not any(uid == meta["uid"] and n for _, uid, n in hist):
                hist.append((now, meta["uid"], node))
        for kind, path in (
            ("pvc", "/api/v1/persistentvolumeclaims"),
            ("pv", "/api/v1/persistentvolumes"),
        ):
            for o in self.c.request("GET", path)["items"]:
                m = o["metadata"]
                name = f"{m['namespace']}/{m['name']}" if "namespace" in m else m["name"]
                self._storage.setdefault(m["uid"], f"{kind} {name}")

    # ------------------------------------------------------------------ checks

    def _alive_at(self, node: str, when: float) -> bool:
        """Was the node's kubelet (kwok) running at ``when``? Nodes start powered on."""
        alive = True
        for t, n, on in self.c.power_log[self._power_from :]:
            if t > when:
                break
            if n == node:
                alive = on
        return alive

    def _pod_node(self, ns: str, name: str, when: float, uid: str | None) -> str | None:
        """The node of the pod a request at ``when`` was about: the one with ``uid`` if the
        request named it, else the last pod of that name seen before ``when``."""
        hist = self._pods.get((ns, name)) or []
        if uid:
            return next((n for _, u, n in hist if u == uid), None)
        times = [t for t, _, _ in hist]
        i = bisect.bisect_right(times, when) - 1
        return hist[i][2] if i >= 0 else None

    def _node_object(self, name: str, when: float) -> str:
        """``name`` qualified by the uid of the Node object a request at ``when`` reached:
        the last one first seen before ``when`` (polled, so a write in the first
        poll interval of a re-created Node is attributed to the one before)."""
        seen = self._nodes.get(name) or []
        i = bisect.bisect_right([t for t, _ in seen], when) - 1
        return f"{name}/{seen[max(i, 0)][1]}" if seen else name

    def close(self) -> Row:
        self._stop.set()
        self._thread.join(10)
        with_retry(self._poll)
        row = self.row
        for _t, node, on in self.c.power_log[self._power_from :]:
            if not on:
                row.faults.append(f"node {node} powered off")
        events = self.c.audit_events()[self._audit_from :]
        ours = [
            e
            for e in events
            if e.get("user", {}).get("username") == SA_USER
            and 200 <= e.get("responseStatus", {}).get("code", 0) < 300
        ]
        cordoned: dict[str, bool] = {}
        deleted: dict[str, int] = defaultdict(int)
        forced: dict[str, int] = defaultdict(int)
        for e in ours:
            ref, verb, when = e.get("objectRef", {}), e["verb"], _ts(e["requestReceivedTimestamp"])
            res, name, sub = ref.get("resource"), ref.get("name", ""), ref.get("subresource")
            who = e.get("userAgent", "")
            if res == "nodes" and not sub and verb == "delete":
                obj = self._node_object(name, when)
                deleted[obj] += 1
                cordoned.pop(obj, None)
                if deleted[obj] > 1:
                    row.double_actions += 1
                    row.details.append(f"node {name} deleted again by {who}")
                if self._alive_at(name, when):
                    row.healthy_nodes_removed += 1
                    row.details.append(f"healthy node {name} deleted by {who}")
            elif res == "nodes" and not sub and verb == "patch":
                change = unschedulable_set(e.get("requestObject"))
                if change is not None:
                    obj = self._node_object(name, when)
                    if change:
                        if cordoned.get(obj):
                            row.double_actions += 1
                            row.details.append(f"node {obj} cordoned again by {who}")
                        cordoned[obj] = True
                    else:
                        cordoned[obj] = False
            elif res == "pods" and (
                (verb == "create" and sub == "eviction") or (verb == "delete" and not sub)
            ):
                ns = ref.get("namespace", "")
                body = e.get("requestObject") or {}
                opts = body.get("deleteOptions") or body  # eviction | DeleteOptions
                uid = (opts.get("preconditions") or {}).get("uid")
                on_node = self._pod_node(ns, name, when, uid)
                if on_node is not None and self._alive_at(on_node, when):
                    row.healthy_pods_deleted += 1
                    row.details.append(f"pod {ns}/{name} on healthy {on_node}: {verb} by {who}")
                if verb == "delete":
                    key = f"{ns}/{name}/{uid}" if uid else f"{ns}/{name}@{when:.0f}"
                    forced[key] += 1
                    if forced[key] > 1:
                        row.double_actions += 1
                        row.details.append(f"pod {key} force-deleted again by {who}")
        row.remediations = len(deleted)
        for e in events:
            ref = e.get("objectRef", {})
            if (
                ref.get("resource") in ("persistentvolumeclaims", "persistentvolumes")
                and 200 <= (e.get("responseStatus", {}).get("code", 0)) < 300
            ):
                row.storage_lost += 1
                row.details.append(
                    f"{ref['resource']} {ref.get('name')} deleted by {e['user']['username']}"
                )
        present = set()
        for path in ("/api/v1/persistentvolumeclaims", "/api/v1/persistentvolumes"):
            present |= {o["metadata"]["uid"] for o in self.c.request("GET", path)["items"]}
        for uid, what in self._storage.items():
            if uid not in present:
                row.storage_lost += 1
                row.details.append(f"{what} missing at the end")
        for n in self.c.request("GET", "/api/v1/nodes")["items"]:
            conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions") or []}
            if conds.get("Ready") == "True" and n.get("spec", {}).get("unschedulable"):
                row.left_cordoned += 1
                row.details.append(f"node {n['metadata']['name']} Ready but cordoned")
        return row


def with_retry(fn: Any, attempts: int = 20) -> None:
    for _ in range(attempts):
        try:
            fn()
            return
        except Exception:
            time.sleep(0.5)
    fn()


def dump(row: Row) -> str:
    return json.dumps(row.__dict__, indent=1)
