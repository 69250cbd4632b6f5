"""The simulated world of one seed: nodes and their kubelets, operators, faults, two replicas.

One `random.Random(seed)` draws everything: the cluster, the flags, the policies, which fault
kinds are on (swarm testing: a random subset per seed) and their rates, every latency and
every fault's time. The replicas are the real `Controller` + `LeaderElector` +
`EventRecorder`, wired as `noderecover.entry.app.run` wires them, each with its own identity.

Kubelets write straight into the in-memory API (no latency, no faults); the node lifecycle
controller here is status-based only (Ready=Unknown once a kubelet posted no status for 40 s,
whatever its Lease does): stricter than the real one, so a "renewing Lease, no status" node
exists, which is the case the controller must not mistake for dead.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from noderecover.controller.reconciler import Controller
from noderecover.controller.writes import Writer
from noderecover.core.nodes import OUT_OF_SERVICE_KEY
from noderecover.core.pauses import PAUSE_PROPAGATION_BOUND
from noderecover.core.settings import Config
from noderecover.entry.app import _StopGate
from noderecover.entry.config import add_run_flags, build_config
from noderecover.kube.client import KubeClient, Timeouts
from noderecover.kube.election import ElectionConfig, LeaderElector
from noderecover.kube.events import EventRecorder
from noderecover_testkit.sim.api import (
    JSON,
    Applied,
    Faults,
    Reject,
    SimApi,
    SimApiClient,
    Target,
    rfc3339,
)
from noderecover_testkit.sim.oracle import Bounds, Oracle, Violation, is_ours

START_WALL = 1_800_000_000.0
START_MONO = 1000.0
NAMESPACE = "noderecover"
LEASE_NS = "kube-node-lease"
KUBELET_PERIOD = 10.0
NODE_LEASE_SECONDS = 40
NLC_GRACE = 40.0
REPLICAS = ("replica-a", "replica-b")
LOST_WRITE = 0.04  # chance (times the seed's rate) that the reply to one of our writes is lost
LOST_NODE_WRITE = 0.25  # ... to one of our Node writes

FAULT_KINDS = (
    "watch-lag",
    "compaction",
    "lost-reply",
    "error-burst",
    "slow",
    "leader",
    "pause",
    "pause-unreadable",
    "policy-churn",
    "partition",
    "notready",
    "node-recreate",
    "wall-step",
    "operator",
)


class SimClock:
    """noderecover.base.clock.Clock on the loop's virtual time, with a steppable wall."""

    # Its sleep is a loop timer, as the system clock's: bounds on it are the production
    # code path (anyio deadlines), not a unit test's fake-clock helper tasks.
    loop_timers = True

    def __init__(self, loop: asyncio.AbstractEventLoop, offset: Callable[[], float]) -> None:
        self._loop = loop
        self._offset = offset  # the host clock's error (seconds; stepped by faults)

    def monotonic(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return START_WALL + (self._loop.time() - START_MONO) + self._offset()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))  # what anyio.sleep does, without its dispatch


@dataclass
class Kubelet:
    name: str
    status_on: bool = True  # posts node status (Ready)
    lease_on: bool = True  # renews its Lease
    ready: str = "True"  # what it posts: True, or False (runtime down)
    last_status: float = -math.inf  # when its last status post was applied
    status_posts: list[float] = field(default_factory=list)
    lease_changes: list[float] = field(default_factory=list)
    dead_since: float | None = None  # both off since
    up_since: float = 0.0  # fully up (posting Ready=True, renewing) since


@dataclass
class PauseSpan:
    key: str  # "cluster" or "policy:<uid>"
    start: float
    end: float | None
    until: float  # wall (true time) when it ends by itself
    nodes: frozenset[str]  # the nodes it applies to ("*": all)


@dataclass
class Scenario:
    seed: int
    nodes: int
    pools: list[str]  # node label pool values used
    node_pool: dict[str, str]
    policies: int
    argv: list[str]
    kinds: frozenset[str]
    rates: dict[str, float]
    faults_end: float
    heal_at: float
    end_at: float
    stale: float
    api_timeout: float
    replicas: tuple[str, ...] = REPLICAS


def draw(seed: int, kinds: frozenset[str] | None = None) -> tuple[Scenario, random.Random]:
    rng = random.Random(seed)
    n = rng.randint(3, 6)
    pools = ["p0", "p1", "p2"][: rng.randint(1, 3)]
    node_pool = {f"node-{i}": rng.choice([*pools, *pools, ""]) for i in range(n)}
    policies = rng.choice([0, 0, 1, 2, 3])
    chosen = kinds if kinds is not None else frozenset(k for k in FAULT_KINDS if rng.random() < 0.5)
    rates = {k: rng.uniform(0.2, 1.0) for k in FAULT_KINDS}
    api_timeout = rng.choice([3.0, 5.0, 10.0])
    grace = rng.choice(["0", "1s", "5s", "10s", "30s", "60s"])
    argv = [
        f"--grace={grace}",
        f"--healthy-delay={rng.choice(['5s', '10s', '30s'])}",
        f"--drain-timeout={rng.choice(['5s', '20s', '60s'])}",
        f"--max-concurrent={rng.randint(1, 3)}",
        f"--max-removals-per-hour={rng.randint(1, 6)}",
        f"--max-unhealthy={rng.choice(['40%', '60%', '3', '100%'])}",
        f"--removal={rng.choice(['delete', 'out-of-service', 'both'])}",
        f"--detach-timeout={rng.choice(['10s', '60s'])}",
        f"--storm-cooldown={rng.choice(['30s', '120s'])}",
        f"--api-timeout={api_timeout:g}s",
        "--leader-elect",
        "--lease-name=noderecover",
        f"--lease-namespace={NAMESPACE}",
        "--watch-node-leases" if rng.random() < 0.85 else "--no-watch-node-leases",
    ]
    # ~6-8 virtual minutes: faults, then time for every dead node's liveness horizon, then a
    # healed tail for quiescence.
    faults_end = START_MONO + rng.uniform(90.0, 200.0)
    heal_at = faults_end + 160.0
    stale = 0.2 + (api_timeout if "slow" in chosen or "lost-reply" in chosen else 0.0)
    sc = Scenario(
        seed,
        n,
        pools,
        node_pool,
        policies,
        argv,
        chosen,
        rates,
        faults_end,
        heal_at,
        heal_at + 100.0,
        stale,
        api_timeout,
        # Two replicas on a drawn 30% of the seeds (a standby doubles a seed's cost); with one,
        # the leader fault still stalls it past its Lease or restarts it.
        REPLICAS if rng.random() < 0.3 else REPLICAS[:1],
    )
    return sc, rng


@functools.cache
def _run_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_run_flags(p)
    return p


def config_of(argv: list[str]) -> Config:
    # The world has no node agents (`noderecover agent`): their Lease watch is left out, so
    # it adds no requests, and no draws from the seeded random sources, to every seed.
    return build_config(_run_flags().parse_args([*argv, "--no-watch-agents"]), environ={})


class WorldFaults(Faults):
    def __init__(self, world: World) -> None:
        self.w = world

    def latency(self, actor: str, method: str, target: Target) -> tuple[float, float]:
        r = self.w.rng
        up, down = r.uniform(0.001, 0.05), r.uniform(0.001, 0.05)
        if self.w.on("slow") and r.random() < 0.05 * self.w.rate("slow"):
            down += r.uniform(0.5, 1.5) * self.w.sc.api_timeout
        return up, down

    def error(self, actor: str, method: str, target: Target, path: str) -> Reject | None:
        w = self.w
        if not is_ours(actor):
            return None
        now = w.loop.time()
        pause_until = w.unreadable.get("pause", -1.0)
        if now < pause_until and target.resource == "configmaps" and method in ("GET", "WATCH"):
            return Reject(w.rng.choice([403, 500, 503]), "pause unreadable")
        policies_until = w.unreadable.get("policies", -1.0)
        reading = method in ("GET", "WATCH")
        if now < policies_until and target.resource == "noderecoverypolicies" and reading:
            return Reject(w.rng.choice([403, 500, 404]), "policies unreadable")
        if now < w.burst_until and w.rng.random() < 0.5:
            if target.resource == "noderecoverypolicies" and method == "GET":
                return Reject(404, "the server could not find the requested resource")
            codes = [429, 500, 503] + ([409] if method in ("PATCH", "PUT", "DELETE") else [])
            return Reject(w.rng.choice(codes), "injected")
        return None

    def lose_reply(self, actor: str, method: str, target: Target) -> bool:
        w = self.w
        if not (w.on("lost-reply") and is_ours(actor)):
            return False
        # The writes a lost reply can orphan (a cordon, a taint) are Node writes: lost more
        # often (one draw either way: the other draws of the seed do not move).
        p = LOST_NODE_WRITE if target.resource == "nodes" else LOST_WRITE
        return w.rng.random() < p * w.rate("lost-reply")

    def stalled(self, actor: str) -> bool:
        return self.w.loop.time() < self.w.stall_until.get(actor, -1.0)

    def watch_lag(self) -> float:
        w = self.w
        return w.rng.uniform(0.0, 3.0 * w.rate("watch-lag")) if w.on("watch-lag") else 0.0


class World:
    def __init__(self, sc: Scenario, rng: random.Random, bounds: Bounds | None = None) -> None:
        self.sc = sc
        self.rng = rng
        self.loop = asyncio.get_running_loop()
        self.cfg = config_of(sc.argv)
        # Draws added after the seeds' main stream was fixed come from their own stream, so
        # a seed whose fault kinds do not use them runs as it did.
        self.rng2 = random.Random(f"world2:{sc.seed}")
        # With wall-step: the host clock may be off from the start (the replicas' Timelines
        # start on it) until a wall-step corrects it (class 10: a corrected clock moves every
        # pause's end; a Timeline frozen at start does not).
        self.host_error = 0.0
        self.start_error = "wall-step" in sc.kinds and self.rng2.random() < 0.5
        if self.start_error:
            self.host_error = self.rng2.uniform(-300.0, 300.0)
        self.max_host_error = abs(self.host_error)
        self.faulting = True
        self.burst_until = -1.0
        self.unreadable: dict[str, float] = {}
        self.stall_until: dict[str, float] = {}
        self.kubelets = {name: Kubelet(name) for name in sc.node_pool}
        self.pauses: list[PauseSpan] = []
        self.policy_specs: dict[str, JSON] = {}
        self.election_renewed = -math.inf
        self.blocked_events: dict[str, float] = {}
        self.replica_scopes: dict[str, anyio.CancelScope] = {}
        self.counts: dict[str, int] = {}
        self.api = SimApi(
            self.loop,
            self.true_wall,
            faults=WorldFaults(self),
            on_write=self._on_write,
            on_request=self._on_request,
            policies_installed=sc.policies > 0 or rng.random() < 0.5,
        )
        if bounds is None:
            # A pause reaches a replica by its watch, or holds once the watch's last answer is
            # older than the bound (core.pauses).
            pause = PAUSE_PROPAGATION_BOUND + sc.stale + (3.0 if self.on("watch-lag") else 0)
            bounds = Bounds(stale=sc.stale, pause=pause + 1.0)
        self.bounds = bounds
        self.oracle = Oracle(
            bounds,
            now=self.loop.time,
            kubelet_alive_at=self.kubelet_alive_at,
            pause_over=self.pause_over,
            pool_of=self.pool_of,
            election=self.election,
        )
        self.oracle.alive_uid = self._uid_exists

    # -- helpers ---------------------------------------------------------------------------

    def on(self, kind: str) -> bool:
        return self.faulting and kind in self.sc.kinds

    def rate(self, kind: str) -> float:
        return self.sc.rates[kind]

    def true_wall(self) -> float:
        return START_WALL + (self.loop.time() - START_MONO)

    def _uid_exists(self, uid: str) -> bool:
        return any(n["metadata"]["uid"] == uid for n in self.api.items("nodes"))

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _on_request(self, actor: str, method: str, t: Target, q: dict[str, str]) -> None:
        node = ""
        node_lease = t.resource == "leases" and t.namespace == LEASE_NS
        if (t.resource == "nodes" and t.name) or node_lease:
            node = t.name
        elif t.resource == "pods" and q.get("fieldSelector", "").startswith("spec.nodeName="):
            node = q["fieldSelector"].split("=", 1)[1]
        elif t.resource == "pods" and t.name:
            pod = self.api.get("pods", t.name, t.namespace)
            node = (pod or {}).get("spec", {}).get("nodeName", "")
        self.oracle.request(actor, method, t, q, node)

    def _on_write(self, a: Applied) -> None:
        t = a.target
        if t.resource == "leases" and t.namespace == NAMESPACE and a.after is not None:
            self.election_renewed = a.at
        if t.resource == "events" and a.after is not None and is_ours(a.actor):
            ev = a.after
            if ev.get("reason") == "NodeRecoverBlocked":
                self.blocked_events[(ev.get("involvedObject") or {}).get("name", "")] = a.at
        self.oracle.write(a)

    # -- the oracle's view of the truth ------------------------------------------------------

    def kubelet_alive_at(self, node: str, t: float) -> str | None:
        k = self.kubelets.get(node)
        if k is None:
            return None
        b = self.bounds
        for changes, window, what in (
            (k.lease_changes, b.lease_duration, "its heartbeat Lease renews"),
            (k.status_posts, b.status_fresh, "its kubelet posts status"),
        ):
            if _alive_over(changes, window, t, self.loop.time()):
                return what
        return None

    def pause_over(self, node: str, t0: float, t1: float) -> str | None:
        tolerance = abs(self.host_error) + self.bounds.stale
        wall1 = START_WALL + (t1 - START_MONO)
        for p in self.pauses:
            if p.start > t0 or (p.end is not None and p.end < t1):
                continue
            if "*" not in p.nodes and node not in p.nodes:
                continue
            if p.until - tolerance <= wall1:
                continue
            return f"pause {p.key} since {p.start:.1f}s until {rfc3339(p.until)}"
        return None

    def _selecting(self, node: str) -> list[JSON]:
        labels = (self.api.get("nodes", node) or {}).get("metadata", {}).get("labels") or {}
        pool = labels.get("pool", self.sc.node_pool.get(node, ""))
        out = []
        for p in self.api.items("noderecoverypolicies"):
            want = ((p.get("spec") or {}).get("nodeSelector") or {}).get("matchLabels") or {}
            if want.get("pool") == pool and pool:
                out.append(p)
        return out

    def pool_of(self, node: str) -> tuple[str, int, int]:
        if not self.api.policies_installed or not self.api.items("noderecoverypolicies"):
            return "", self.cfg.max_concurrent, self.cfg.max_removals_per_hour
        sel = self._selecting(node)
        if len(sel) != 1:
            return f"held:{node}", 1000, 1000
        spec = sel[0].get("spec") or {}
        return (
            sel[0]["metadata"]["name"],
            int(spec.get("maxConcurrent", 1)),
            int(spec.get("maxRemovalsPerHour", self.cfg.max_removals_per_hour)),
        )

    def election(self) -> tuple[str, float, float]:
        lease = self.api.get("leases", "noderecover", NAMESPACE)
        if lease is None:
            return "", -math.inf, 0.0
        spec = lease.get("spec") or {}
        return (
            spec.get("holderIdentity") or "",
            self.election_renewed,
            float(spec.get("leaseDurationSeconds") or 0),
        )

    # -- the cluster ---------------------------------------------------------------------

    def node_object(self, name: str) -> JSON:
        pool = self.sc.node_pool[name]
        labels = {"kubernetes.io/hostname": name}
        if pool:
            labels["pool"] = pool
        now = rfc3339(self.true_wall())
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {}},
            "spec": {},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ]
            },
        }

    def setup(self) -> None:
        api = self.api
        if self.host_error:
            self.oracle.note(f"world host clock error {self.host_error:.0f}s from the start")
        for name, k in self.kubelets.items():
            api.create("nodes", self.node_object(name), "kubelet")
            self._renew_lease(k)
            k.status_posts.append(self.loop.time())
            k.last_status = self.loop.time()
        for i in range(max(1, self.sc.nodes - 1)):
            self._schedule_pod(f"db-{i}")
        if self.sc.policies and self.api.policies_installed:
            for i in range(self.sc.policies):
                self._create_policy(f"pol-{i}", self.rng.choice(self.sc.pools))

    def _policy_spec(self, pool: str) -> JSON:
        r = self.rng
        spec: JSON = {
            "nodeSelector": {"matchLabels": {"pool": pool}},
            "maxConcurrent": r.randint(1, 2),
            "maxRemovalsPerHour": r.randint(1, 4),
            "removal": r.choice(["delete", "out-of-service", "both"]),
        }
        if r.random() < 0.5:
            spec["unhealthyConditions"] = [
                {"type": "Ready", "status": "Unknown", "duration": r.choice(["0s", "5s", "20s"])},
                {"type": "Ready", "status": "False", "duration": r.choice(["10s", "60s"])},
            ]
        if r.random() < 0.3:
            spec["maxUnhealthy"] = r.choice([1, "50%"])
        return spec

    def _create_policy(self, name: str, pool: str) -> None:
        obj = {
            "apiVersion": "noderecover.io/v1alpha1",
            "kind": "NodeRecoveryPolicy",
            "metadata": {"name": name},
            "spec": self._policy_spec(pool),
        }
        self.api.create("noderecoverypolicies", obj, "operator")

    def _renew_lease(self, k: Kubelet) -> None:
        api = self.api
        now = rfc3339(self.true_wall(), micro=True)
        lease = api.get("leases", k.name, LEASE_NS)
        if lease is None:
            api.create(
                "leases",
                {
                    "metadata": {"name": k.name, "namespace": LEASE_NS},
                    "spec": {
                        "holderIdentity": k.name,
                        "leaseDurationSeconds": NODE_LEASE_SECONDS,
                        "renewTime": now,
                    },
                },
                "kubelet",
            )
        else:
            new = {**lease, "spec": {**lease["spec"], "renewTime": now}}
            api.replace("leases", new, "kubelet")
        k.lease_changes.append(self.loop.time())

    def _post_status(self, k: Kubelet) -> None:
        api = self.api
        node = api.get("nodes", k.name)
        now = self.loop.time()
        if node is None:
            if k.ready == "True":
                api.create("nodes", self.node_object(k.name), "kubelet")  # re-registers
                self.count("re-register")
                k.status_posts.append(now)
                k.last_status = now
            return
        wall = rfc3339(self.true_wall())
        conds = []
        for old in (node.get("status") or {}).get("conditions") or []:
            c = old
            if c.get("type") == "Ready":
                changed = c.get("status") != k.ready
                c = {
                    **old,
                    "status": k.ready,
                    "reason": "KubeletReady" if k.ready == "True" else "KubeletNotReady",
                    "lastHeartbeatTime": wall,
                    "lastTransitionTime": wall if changed else c.get("lastTransitionTime"),
                }
            conds.append(c)
        api.replace(
            "nodes", {**node, "status": {**node.get("status", {}), "conditions": conds}}, "kubelet"
        )
        k.status_posts.append(now)
        k.last_status = now

    async def kubelet(self, k: Kubelet) -> None:
        await asyncio.sleep(self.rng.uniform(0, KUBELET_PERIOD))
        while True:
            if k.lease_on:
                self._renew_lease(k)
            if k.status_on:
                self._post_status(k)
                self._finish_deletions(k)
            await asyncio.sleep(KUBELET_PERIOD * self.rng.uniform(0.9, 1.1))

    def _finish_deletions(self, k: Kubelet) -> None:
        for pod in self.api.items("pods"):
            if pod["spec"].get("nodeName") == k.name and pod["metadata"].get("deletionTimestamp"):
                self.api.remove("pods", pod["metadata"]["name"], "default", "kubelet")

    async def controllers(self) -> None:
        """Node lifecycle (status-based), pod GC, the StatefulSet, attach-detach; every 2 s."""
        while True:
            await asyncio.sleep(2.0)
            now = self.loop.time()
            api = self.api
            for k in self.kubelets.values():
                node = api.get("nodes", k.name)
                if node is None or now - k.last_status < NLC_GRACE:
                    continue
                conds = (node.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Ready" and c.get("status") != "Unknown" for c in conds):
                    wall = rfc3339(self.true_wall())
                    new = [
                        {
                            **c,
                            "status": "Unknown",
                            "reason": "NodeStatusUnknown",
                            "lastTransitionTime": wall,
                        }
                        if c.get("type") == "Ready"
                        else c
                        for c in conds
                    ]
                    api.replace("nodes", {**node, "status": {"conditions": new}}, "node-lifecycle")
            nodes = {n["metadata"]["name"]: n for n in api.items("nodes")}
            for pod in api.items("pods"):
                where = pod["spec"].get("nodeName", "")
                node = nodes.get(where)
                if node is None or (
                    pod["metadata"].get("deletionTimestamp")
                    and any(
                        t["key"] == OUT_OF_SERVICE_KEY for t in node["spec"].get("taints") or []
                    )
                    and not self.kubelets[where].status_on
                ):
                    api.remove("pods", pod["metadata"]["name"], "default", "pod-gc")
            have = {p["metadata"]["name"] for p in api.items("pods")}
            for i in range(max(1, self.sc.nodes - 1)):
                if f"db-{i}" not in have:
                    self._schedule_pod(f"db-{i}")

    def _schedule_pod(self, name: str) -> None:
        ok = []
        for n in self.api.items("nodes"):
            conds = (n.get("status") or {}).get("conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
            if ready and not n["spec"].get("unschedulable") and not n["spec"].get("taints"):
                ok.append(n["metadata"]["name"])
        if not ok:
            return
        node = self.rng.choice(sorted(ok))
        pod = {
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "db"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": self.rng.choice([5, 30])},
            "status": {"phase": "Running"},
        }
        self.api.create("pods", pod, "statefulset")

    # -- faults ----------------------------------------------------------------------------

    def _set_kubelet(self, k: Kubelet, status: bool, lease: bool, ready: str = "True") -> None:
        now = self.loop.time()
        was_dead = not k.status_on and not k.lease_on
        k.status_on, k.lease_on, k.ready = status, lease, ready
        dead = not status and not lease
        if dead and not was_dead:
            k.dead_since = now
        elif not dead:
            k.dead_since = None
        if status and lease and ready == "True":
            if k.up_since < 0 or not (k.status_on and k.lease_on):
                k.up_since = now
        else:
            k.up_since = -1.0
        self.oracle.note(f"world kubelet {k.name} status={status} lease={lease} ready={ready}")

    async def chaos(self) -> None:
        r = self.rng
        while self.loop.time() < self.sc.faults_end:
            await asyncio.sleep(r.expovariate(1 / 12.0))
            if self.loop.time() >= self.sc.faults_end:
                break
            kinds = ["kubelet", "kubelet", *sorted(self.sc.kinds)]
            kind = r.choice(kinds)
            if kind != "kubelet" and r.random() > self.rate(kind):
                continue
            self.count(f"fault:{kind}")
            await self._fault(kind)
        self.faulting = False
        self.oracle.note("world faults end")

    async def _fault(self, kind: str) -> None:
        r = self.rng
        api = self.api
        now = self.loop.time()
        names = sorted(self.kubelets)
        k = self.kubelets[r.choice(names)]
        if kind == "kubelet":
            if k.status_on and k.lease_on:
                self._set_kubelet(k, False, False)
            else:
                self._set_kubelet(k, True, True)
        elif kind == "partition":
            self._set_kubelet(k, *r.choice([(True, False), (False, True)]))
        elif kind == "notready":
            self._set_kubelet(k, True, True, r.choice(["False", "True"]))
        elif kind == "compaction":
            api.compact()
        elif kind == "error-burst":
            self.burst_until = now + r.uniform(3.0, 20.0)
        elif kind == "leader":
            holder = self.election()[0]
            if holder in self.replica_scopes:
                if r.random() < 0.5:
                    self.stall_until[holder] = now + r.uniform(3.0, 30.0)
                    self.oracle.note(f"world stall {holder}")
                else:
                    self.replica_scopes[holder].cancel()
                    self.oracle.note(f"world restart {holder}")
        elif kind == "pause":
            self._pause_fault()
        elif kind == "pause-unreadable":
            which = r.choice(["pause", "policies"])
            self.unreadable[which] = now + r.uniform(5.0, 60.0)
            self.oracle.note(f"world {which} unreadable")
            # What makes it unreadable (a proxy, the API server restarting behind a balancer)
            # also ends the open watches of it: they reconnect into the refusals.
            resource = "configmaps" if which == "pause" else "noderecoverypolicies"
            for w in list(api.watches):
                if w.target.resource == resource and not w.closed:
                    w.end()
        elif kind == "policy-churn":
            self._churn()
        elif kind == "node-recreate":
            if api.get("nodes", k.name) is not None and k.status_on:
                api.remove("nodes", k.name, "", "cloud")  # the kubelet re-registers it
        elif kind == "wall-step":
            self.host_error = r.choice([0.0, r.uniform(-300, 300)])
            self.max_host_error = max(self.max_host_error, abs(self.host_error))
            if self.start_error:
                self.host_error, self.start_error = 0.0, False  # corrects the start's error
            self.oracle.note(f"world host clock error {self.host_error:.0f}s")
        elif kind == "operator":
            # Half the time on a node whose kubelet is down: operators cordon broken nodes,
            # a moment before (or after) the controller does (class 5).
            down = [n for n in names if not self.kubelets[n].status_on]
            self._operator(r.choice(down) if down and r.random() < 0.5 else k.name)
        elif kind in ("watch-lag", "lost-reply", "slow"):
            pass  # rates, asked per request

    def _pause_fault(self) -> None:
        r = self.rng
        api = self.api
        now = self.loop.time()
        wall = self.true_wall()
        policies = api.items("noderecoverypolicies")
        if r.random() < 0.5 or not policies:
            cm = api.get("configmaps", "noderecover-pause", NAMESPACE)
            self._end_spans("cluster", now)
            if cm is not None:
                api.remove("configmaps", "noderecover-pause", NAMESPACE, "operator")
                return
            corrupt = r.random() < 0.2
            # What is written has second precision: the pause ends at that second.
            until = float(math.floor(wall + r.uniform(20, 400)))
            data = {"until": "tomorrow" if corrupt else rfc3339(until), "reason": "sim"}
            if corrupt:
                until = wall + 3600.0
            api.create(
                "configmaps",
                {"metadata": {"name": "noderecover-pause", "namespace": NAMESPACE}, "data": data},
                "operator",
            )
            self.pauses.append(PauseSpan("cluster", now, None, until, frozenset({"*"})))
            return
        p = r.choice(sorted(policies, key=lambda x: str(x["metadata"]["name"])))
        key = f"policy:{p['metadata']['uid']}"
        self._end_spans(key, now)
        spec = dict(p.get("spec") or {})
        if spec.get("paused"):
            spec.pop("paused")
        else:
            until = float(math.floor(wall + r.uniform(20, 400)))
            spec["paused"] = {"until": rfc3339(until), "reason": "sim"}
            pool = spec["nodeSelector"]["matchLabels"]["pool"]
            nodes = frozenset(n for n, q in self.sc.node_pool.items() if q == pool)
            self.pauses.append(PauseSpan(key, now, None, until, nodes))
        api.replace("noderecoverypolicies", {**p, "spec": spec}, "operator")

    def _end_spans(self, key: str, now: float) -> None:
        for p in self.pauses:
            if p.key == key and p.end is None:
                p.end = now

    def _churn(self) -> None:
        r = self.rng
        api = self.api
        if not api.policies_installed:
            return
        now = self.loop.time()
        policies = sorted(
            api.items("noderecoverypolicies"), key=lambda x: str(x["metadata"]["name"])
        )
        op = r.choice(["create", "delete", "rename", "reselect"])
        if op == "create" or not policies:
            self._create_policy(f"pol-{api.rv}", r.choice(self.sc.pools))
            return
        p = r.choice(policies)
        name = p["metadata"]["name"]
        self._end_spans(f"policy:{p['metadata']['uid']}", now)
        if op in ("delete", "rename"):
            api.remove("noderecoverypolicies", name, "", "operator")
            if op == "rename":
                spec = {k: v for k, v in (p.get("spec") or {}).items() if k != "paused"}
                obj = {
                    "apiVersion": p["apiVersion"],
                    "kind": p["kind"],
                    "metadata": {"name": f"{name}-r"},
                    "spec": spec,
                }
                if api.get("noderecoverypolicies", f"{name}-r") is None:
                    api.create("noderecoverypolicies", obj, "operator")
            return
        spec = {k: v for k, v in (p.get("spec") or {}).items() if k != "paused"}
        spec["nodeSelector"] = {"matchLabels": {"pool": r.choice(self.sc.pools)}}
        api.replace("noderecoverypolicies", {**p, "spec": spec}, "operator")

    def _operator(self, name: str) -> None:
        r = self.rng
        api = self.api
        node = api.get("nodes", name)
        if node is None:
            return
        what = r.choice(["cordon", "cordon", "taint", "annotate", "exclude", "uncordon-own"])
        new = {**node, "metadata": dict(node["metadata"]), "spec": dict(node["spec"])}
        if what == "cordon":
            if node["spec"].get("unschedulable"):
                return
            new["spec"]["unschedulable"] = True
        elif what == "taint":
            taints = list(node["spec"].get("taints") or [])
            if any(t["key"] == "example.com/maintenance" for t in taints):
                return
            new["spec"]["taints"] = [
                *taints,
                {"key": "example.com/maintenance", "effect": "NoSchedule"},
            ]
        elif what in ("annotate", "exclude"):
            key, value = (
                ("ops.example.com/ticket", f"T-{api.rv}")
                if what == "annotate"
                else ("noderecover.io/exclude", "true")
            )
            new["metadata"]["annotations"] = {
                **(node["metadata"].get("annotations") or {}),
                key: value,
            }
        else:
            return
        api.replace("nodes", new, "operator")

    # -- replicas ---------------------------------------------------------------------------

    async def replica(self, identity: str, seed: int) -> None:
        """One replica, restarted (a new process, same identity) when its scope is cancelled."""
        restarts = 0
        while True:
            with anyio.CancelScope() as scope:
                self.replica_scopes[identity] = scope
                await self._run_replica(identity, random.Random(seed * 1000 + restarts))
            restarts += 1
            await asyncio.sleep(self.rng.uniform(2.0, 20.0))

    async def _run_replica(self, identity: str, rng: random.Random) -> None:
        cfg = self.cfg
        clock = SimClock(self.loop, lambda: self.host_error)
        client = SimApiClient(self.api, identity)
        timeouts = Timeouts(request=cfg.api_timeout, stream_read=cfg.watch_silence)
        ecfg = ElectionConfig(
            lease_name=cfg.lease_name,
            lease_namespace=NAMESPACE,
            lease_duration=cfg.lease_duration,
            renew_deadline=cfg.renew_deadline,
            retry_period=cfg.retry_period,
        )
        kube0 = KubeClient(client, timeouts, identity, clock=clock)
        elector = LeaderElector(kube0, clock, ecfg, identity, random.Random(rng.random()))
        kube = KubeClient(
            client, timeouts, identity, clock=clock, write_deadline=elector.write_deadline
        )
        elector.writes_abandoned_at = kube.writes_abandoned_at  # as noderecover run wires it
        gate = _StopGate(elector)
        events = EventRecorder(
            Writer(kube, gate.may_act),
            clock,
            identity,
            may_write=gate.may_act,
            rng=random.Random(rng.random()),
        )
        controller = Controller(
            kube,
            clock,
            cfg,
            gate=gate,
            events=events,
            namespace=NAMESPACE,
            rng=random.Random(rng.random()),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(controller.watch)
            tg.start_soon(events.run)
            tg.start_soon(elector.run, controller.lead)

    # -- checks at the end ---------------------------------------------------------------

    def max_grace(self) -> float:
        graces = [self.cfg.grace, self.cfg.silent_grace]
        for p in self.api.items("noderecoverypolicies"):
            for c in (p.get("spec") or {}).get("unhealthyConditions") or []:
                d = str(c.get("duration", "0s"))
                graces.append(float(d.rstrip("s") or 0))
        return max(graces)

    def check_liveness(self) -> None:
        now = self.loop.time()
        # A controller host clock wrong against the API server's (until a wall-step corrects
        # it) delays what is timed from the server's timestamps (a policy's per-condition
        # durations start at lastTransitionTime) by up to that error: a known limit
        # (docs/how-it-works.md, "Evidence before force"), never a shortening. Liveness allows
        # it; safety invariants do not.
        horizon = (
            NLC_GRACE
            + max(self.max_grace(), NODE_LEASE_SECONDS)
            + self.bounds.liveness
            + self.max_host_error
        )
        for name, k in sorted(self.kubelets.items()):
            if k.dead_since is None or now - k.dead_since < horizon:
                continue
            seen = self.blocked_events.get(name, -math.inf)
            visible = seen >= k.dead_since - 60.0
            self.oracle.liveness(name, self.api.get("nodes", name), k.dead_since, visible)

    def heal(self) -> None:
        for k in self.kubelets.values():
            self._set_kubelet(k, True, True)
        self.unreadable.clear()
        self.stall_until.clear()
        self.burst_until = -1.0

    def check_quiescent(self) -> None:
        for name in sorted(self.kubelets):
            node = self.api.get("nodes", name)
            if node is not None:
                self.oracle.quiescent(node)

    async def main(self) -> None:
        self.setup()
        async with anyio.create_task_group() as tg:
            self.oracle.on_violation = tg.cancel_scope.cancel
            for k in self.kubelets.values():
                tg.start_soon(self.kubelet, k)
            tg.start_soon(self.controllers)
            tg.start_soon(self.chaos)
            for i, identity in enumerate(self.sc.replicas):
                tg.start_soon(self.replica, identity, self.sc.seed * 10 + i)
            await asyncio.sleep(self.sc.heal_at - self.loop.time())
            self.check_liveness()
            self.heal()
            await asyncio.sleep(self.sc.end_at - self.loop.time())
            self.check_quiescent()
            tg.cancel_scope.cancel()
        if self.oracle.violations:
            raise self.oracle.violations[0]


def _alive_over(changes: list[float], window: float, t: float, now: float) -> bool:
    """Whether a thing that changed at `changes` was alive (changed within `window`) at
    every instant of [t, now]: the instants a correct reader could have judged it at."""
    import bisect

    def alive(x: float) -> bool:
        i = bisect.bisect_right(changes, x)
        return i > 0 and x - changes[i - 1] < window

    points = [t, now] + [c - 1e-6 for c in changes[bisect.bisect_right(changes, t) :]]
    return all(alive(x) for x in points if t <= x <= now)


__all__ = ["FAULT_KINDS", "Scenario", "Violation", "World", "draw"]
_unused: Any = None
