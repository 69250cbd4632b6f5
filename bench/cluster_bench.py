"""Benchmarks on a real control plane (noderecover_testkit) + kwok, with the liberator
(bench/baseline_liberator.py) run against the same cluster in the same run.

    .venv/bin/python -m bench.cluster_bench scale [--nodes 1000] [--lease-seconds 40]
        [--idle 60] [--trials 60] [--breakdown 20] [--failovers 10]
        [--parts idle,replicas,sync,latency,failover,zone] [--max-unhealthy 3%]
    .venv/bin/python -m bench.cluster_bench recovery [--cap 120] [--no-defaults]
        [--only NAME,...] [--logs DIR]
    .venv/bin/python -m bench.cluster_bench all

``scale`` (one cluster with ``--nodes`` kwok nodes, kubelet-default heartbeat timings: node
Lease 40 s, renewed every 10 s; node-monitor-grace-period 50 s):
  2. idle cost: noderecover as deployed (leader election, heartbeat Leases checked),
     noderecover ``--no-watch-node-leases`` without election, and the liberator, each through
     its own counting proxy (plain HTTP on 127.0.0.1 -> TLS to kube-apiserver): RSS, CPU s/min,
     initial sync, API requests and bytes per minute.
  3. reaction latency with ``--grace 0``: bare Nodes (no kwok) whose Ready condition the
     benchmark writes; time from the Ready=False MODIFIED event to the first MODIFIED with
     spec.unschedulable=true, both seen on the benchmark's own watch; then ``--breakdown``
     more failures with noderecover behind a counting proxy, to split that time.
  5. leader failover: two replicas; SIGKILL the leader and, at the same instant, fail a node;
     time until the other replica's first write on that node.
  zone: 5 % of the nodes fail at once (a zone): noderecover's circuit breaker opens within
     a pass of the write that crossed ``--max-unhealthy`` and nothing is cordoned or removed;
     the script, on a fresh zone in the same run, deletes what it sees NotReady.
``recovery`` (a cluster with 3 killable kwok workers, node-monitor-grace-period 10 s):
  4. the seed scenario (kill mysql-0's node -> mysql-0 Running elsewhere) in phases for: no
     controller (capped), the liberator, noderecover --removal delete, noderecover --removal
     out-of-service (both with --grace 10s --drain-timeout 10s) and noderecover with its
     default timers; a timeline chart into docs/recovery-timeline.png.

Every process is stopped and the cluster's temp folder removed at exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noderecover_testkit import build
from noderecover_testkit.cluster import KWOK_NODE_ANNOTATION, TestCluster
from noderecover_testkit.processes import free_port

from bench.clusterkit import (
    JSON,
    ROOT,
    Api,
    CountingProxy,
    Proc,
    Traffic,
    WatchThread,
    liberator,
    noderecover,
    ready_status,
    spawn,
    write_kubeconfig,
)
from bench.common import fmt, machine, percentile, table

SCALE_LABEL = "bench.noderecover.io/scale"
BARE_LABEL = "bench.noderecover.io/bare"
LEASES = "/apis/coordination.k8s.io/v1"
PREFIX = "noderecover.io/"


@contextlib.contextmanager
def running_cluster(**kw: Any) -> Iterator[TestCluster]:
    if not build.is_built():
        sys.exit("the test control plane is not built: python -m noderecover_testkit build")
    c = TestCluster(**kw)
    t0 = time.monotonic()
    c.start()
    print(f"cluster up in {time.monotonic() - t0:.0f}s ({c.server})", flush=True)
    try:
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.stop(signal.SIGKILL)


# ============================================================================ scale


# kube-controller-manager's TTL controller: (sizeMax, ttl seconds) while growing.
_TTL_STEPS = ((100, 0), (500, 15), (1000, 30), (2000, 60), (10000, 300))


def ttl_for(nodes: int) -> int:
    return next((ttl for size_max, ttl in _TTL_STEPS if nodes <= size_max), 600)


def quiesce(api: Api, quiet: float = 15.0, cap: float = 420.0) -> tuple[float, int]:
    """Wait until no Node was modified for ``quiet`` seconds (kube-controller-manager's
    one-off updates of new nodes are over); returns (seconds waited, events seen)."""
    last = [time.monotonic()]
    count = [0]

    def seen(t: float, etype: str, obj: JSON) -> None:
        if etype != "LISTED":
            last[0] = t
            count[0] += 1

    w = WatchThread(api, "/api/v1/nodes", {}, seen)
    w.start()
    w.ready.wait(60)
    t0 = time.monotonic()
    try:
        while time.monotonic() - last[0] < quiet and time.monotonic() - t0 < cap:
            time.sleep(1.0)
    finally:
        w.stop()
    return time.monotonic() - t0, count[0]


def create_kwok_nodes(api: Api, n: int) -> float:
    """n Nodes served by the shared kwok; returns seconds until all are Ready."""
    t0 = time.monotonic()
    res = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    ttl = str(ttl_for(n + 1))

    def one(i: int) -> None:
        name = f"scale-{i}"
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    # what kube-controller-manager would add (one update per node otherwise)
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/worker": "",
                    "type": "kwok",
                    SCALE_LABEL: "true",
                },
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": ttl},
            },
            "status": {"capacity": res, "allocatable": res},
        }
        status, out = api.call("POST", "/api/v1/nodes", body)
        if status not in (201, 409):
            raise RuntimeError(f"create {name}: {status} {out}")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    created = time.monotonic()
    print(f"{n:,} nodes created in {created - t0:.0f}s", flush=True)
    deadline = created + max(300.0, n * 0.05)  # kwok marks ~60-70 nodes/s Ready on 2 loaded cores
    while True:
        items = api.ok("GET", f"/api/v1/nodes?labelSelector={SCALE_LABEL}%3Dtrue")["items"]
        ready = sum(1 for x in items if ready_status(x) == "True")
        if ready >= n:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {ready}/{n} nodes Ready")
        time.sleep(2)


@dataclass
class IdleResult:
    name: str
    sync_from_spawn: float
    sync_from_first_list: float
    rss: float
    cpu_per_min: float
    requests_per_min: dict[str, float]
    bytes_per_min: float


def first_list_window(traffic: Traffic, after: float) -> tuple[float, float] | None:
    """(start of the first LIST nodes, end of the last LIST nodes before the first WATCH)."""
    lists = sorted((s, e) for s, e, kind, _ in traffic.done if kind == "LIST nodes" and s >= after)
    if not lists:
        return None
    watches = [s for s, _, kind, _ in traffic.done if kind.startswith("WATCH nodes")]
    first_watch = min(watches) if watches else float("inf")
    ends = [e for s, e in lists if s < first_watch]
    return lists[0][0], max(ends) if ends else lists[0][1]


def bench_idle(
    c: TestCluster, api: Api, procs: list[Proc], tmp: Path, idle: float
) -> tuple[list[IdleResult], dict[str, float]]:
    specs: list[tuple[str, list[str]]] = [
        (
            "noderecover (as deployed: leader election, heartbeat Leases checked)",
            ["--leader-elect", "--lease-namespace", "default", "--lease-name", "bench-idle"],
        ),
        ("noderecover --no-watch-node-leases (no election)", ["--no-watch-node-leases"]),
        ("liberator (seed script, 5 s LIST)", []),
    ]

    proxies: list[CountingProxy] = []
    started: list[tuple[str, Proc, CountingProxy, float]] = []
    try:
        for i, (name, flags) in enumerate(specs):
            proxy = CountingProxy(name, c.server, c.ca_file)
            port = proxy.start()
            proxies.append(proxy)
            kc = write_kubeconfig(
                tmp / f"idle-{i}.kubeconfig", f"http://127.0.0.1:{port}", c.token, None
            )
            if name.startswith("liberator"):
                p = liberator(f"idle-{i}", kc, tmp)
                procs.append(p)
                deadline = time.monotonic() + 60
                while not (
                    lists := [e for _, e, k, _ in proxy.snapshot().done if k == "LIST nodes"]
                ):
                    if time.monotonic() > deadline or not p.alive:
                        raise RuntimeError(f"liberator made no LIST: {p.tail()}")
                    time.sleep(0.05)
                ready_at = min(lists)  # its first LIST response ended
            else:
                p = noderecover(f"idle-{i}", kc, tmp, *flags)
                procs.append(p)
                ready_at = p.wait_ready(90)
            started.append((name, p, proxy, ready_at))
            print(f"  started {name}: ready {ready_at - p.started:.2f}s after spawn", flush=True)
        time.sleep(10)  # settle: first Lease renewals, watch handshakes
        cpu0 = {p.name: p.cpu_seconds() for _, p, _, _ in started}
        traffic0 = {p.name: proxy.snapshot() for _, p, proxy, _ in started}
        rss_max = {p.name: 0.0 for _, p, _, _ in started}
        lease_events0 = sum(
            p.metric("noderecover_watch_events_total", resource="leases")
            for _, p, _, _ in started[:1]
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < idle:
            for _, p, _, _ in started:
                rss_max[p.name] = max(rss_max[p.name], p.rss_mib())
            time.sleep(min(5.0, max(0.1, idle - (time.monotonic() - t0))))
        minutes = (time.monotonic() - t0) / 60
        lease_events = (
            sum(
                p.metric("noderecover_watch_events_total", resource="leases")
                for _, p, _, _ in started[:1]
            )
            - lease_events0
        )
        results = []
        for name, p, proxy, ready_at in started:
            t1 = proxy.snapshot()
            t0_ = traffic0[p.name]
            win = first_list_window(t1, p.started)
            per_kind = {k: (t1.requests[k] - t0_.requests[k]) / minutes for k in t1.requests}
            results.append(
                IdleResult(
                    name,
                    ready_at - p.started,
                    (ready_at - win[0]) if win else float("nan"),
                    max(rss_max[p.name], p.rss_mib()),
                    (p.cpu_seconds() - cpu0[p.name]) / minutes,
                    {k: v for k, v in per_kind.items() if v > 0},
                    (t1.bytes_down + t1.bytes_up - t0_.bytes_down - t0_.bytes_up) / minutes,
                )
            )
        for _, p, _, _ in started:
            p.stop()
        return results, {"lease_events_per_min": lease_events / minutes}
    finally:
        for proxy in proxies:
            proxy.stop()


def bench_replicas(
    c: TestCluster, api: Api, procs: list[Proc], tmp: Path, idle: float
) -> list[list[str]]:
    """RSS as deployed: two replicas with leader election (the manifests' defaults otherwise),
    straight to the API server (no proxy); max VmRSS of each over `idle` seconds of steady
    state after 10 s of settling. One row per replica, the leader first."""
    kc = write_kubeconfig(tmp / "replicas.kubeconfig", c.server, c.token, c.ca_file)
    flags = ("--leader-elect", "--lease-namespace", "default", "--lease-name", "bench-replicas")
    reps = [noderecover(f"replica-{i}", kc, tmp, *flags) for i in range(2)]
    procs.extend(reps)
    for p in reps:
        p.wait_ready(120)
    wait_until(lambda: lease_holder(api, "bench-replicas") is not None, 60, "a leader", 0.1)
    time.sleep(10)  # settle: first renewals
    rss_max = {p.name: 0.0 for p in reps}
    t0 = time.monotonic()
    while time.monotonic() - t0 < idle:
        for p in reps:
            rss_max[p.name] = max(rss_max[p.name], p.rss_mib())
        time.sleep(min(2.0, max(0.1, idle - (time.monotonic() - t0))))
    leader = lease_holder(api, "bench-replicas")
    rows = []
    for p in sorted(reps, key=lambda p: p.name != leader):
        rss_max[p.name] = max(rss_max[p.name], p.rss_mib())
        role = "leader" if p.name == leader else "follower"
        rows.append([f"{p.name} ({role})", f"{rss_max[p.name]:.1f}", f"{p.rss_mib():.1f}"])
    for p in reps:
        p.stop()
    return rows


def bench_sync_pages(
    c: TestCluster, procs: list[Proc], tmp: Path, pages: list[int], repeat: int
) -> list[list[str]]:
    """Initial sync on the real cluster with noderecover's LIST page size set to each of
    ``pages`` (alternating, ``repeat`` times): spawn -> /readyz, first LIST -> /readyz."""
    samples: dict[int, list[tuple[float, float, int]]] = {n: [] for n in pages}
    for r in range(repeat):
        for size in pages:
            proxy = CountingProxy(f"sync-{size}", c.server, c.ca_file)
            port = proxy.start()
            try:
                kc = write_kubeconfig(
                    tmp / f"sync-{size}.kubeconfig", f"http://127.0.0.1:{port}", c.token, None
                )
                code = (
                    "import sys, noderecover.kube.watching as w; "
                    f"w.PAGE_SIZE = {size}; "
                    "from noderecover.entry.cli import main; sys.exit(main(sys.argv[1:]))"
                )
                http = free_port()
                argv = [
                    sys.executable,
                    "-c",
                    code,
                    "run",
                    "--kubeconfig",
                    str(kc),
                    "--http-bind",
                    f"127.0.0.1:{http}",
                    "--no-watch-node-leases",
                ]
                p = spawn(f"sync-{size}-{r}", argv, tmp)
                p.http_port = http
                procs.append(p)
                ready = p.wait_ready(120)
                t = proxy.snapshot()
                lists = [s_ for s_, _, k, _ in t.done if k == "LIST nodes"]
                samples[size].append((ready - p.started, ready - min(lists), len(lists)))
                p.stop()
            finally:
                proxy.stop()
    rows = []
    for size, xs in samples.items():
        rows.append(
            [
                str(size),
                str(xs[0][2]),
                fmt(statistics.median(x[0] for x in xs), 2),
                fmt(statistics.median(x[1] for x in xs), 2),
                ", ".join(f"{x[1]:.2f}" for x in xs),
            ]
        )
    return rows


def print_idle(results: list[IdleResult], n: int, extra: dict[str, float]) -> None:
    lib = results[-1]
    rows = []
    for r in results:
        lists = sum(v for k, v in r.requests_per_min.items() if k.startswith("LIST"))
        total = sum(r.requests_per_min.values())
        ratio = lib.bytes_per_min / r.bytes_per_min if r.bytes_per_min else float("inf")
        rows.append(
            [
                r.name,
                fmt(r.rss),
                f"{r.cpu_per_min:.2f}",
                f"{r.sync_from_spawn:.2f}",
                f"{r.sync_from_first_list:.2f}",
                fmt(total),
                fmt(lists),
                f"{r.bytes_per_min / 1024:,.1f}",
                "1x" if r is lib else f"{ratio:,.0f}x lower",
            ]
        )
    print(f"\n### 2. Idle cost at {n:,} kwok nodes\n")
    print(
        table(
            [
                "controller",
                "RSS MiB",
                "CPU s/min",
                "sync from spawn s",
                "sync from 1st LIST s",
                "requests/min",
                "LIST/min",
                "KiB/min",
                "bytes vs liberator",
            ],
            rows,
        )
    )
    print("\nrequests per minute by kind (steady state):\n")
    kinds = sorted({k for r in results for k in r.requests_per_min})
    print(
        table(
            [
                "kind",
                *[r.name.split(" (")[0].split(":")[0] for r in results],
            ],
            [[k, *[fmt(r.requests_per_min.get(k, 0.0)) for r in results]] for k in kinds],
        )
    )
    print(
        f"\nnode-Lease watch events seen by noderecover: {extra['lease_events_per_min']:,.0f}/min"
    )


# ---------------------------------------------------------------------------- latency


@dataclass
class NodeTimes:
    false_seen: float | None = None
    cordon_seen: float | None = None
    first_write: float | None = None  # first MODIFIED carrying a noderecover.io/ annotation
    gone: float | None = None


@dataclass
class Recorder:
    times: dict[str, NodeTimes] = field(default_factory=dict)

    def __call__(self, t: float, etype: str, obj: JSON) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        nt = self.times.setdefault(name, NodeTimes())
        if etype == "DELETED":
            nt.gone = nt.gone or t
            return
        if etype != "MODIFIED":
            return
        if ready_status(obj) == "False" and nt.false_seen is None:
            nt.false_seen = t
        if nt.false_seen is not None:
            ann = (obj.get("metadata") or {}).get("annotations") or {}
            if nt.first_write is None and any(k.startswith("noderecover.io/") for k in ann):
                nt.first_write = t
            if nt.cordon_seen is None and (obj.get("spec") or {}).get("unschedulable"):
                nt.cordon_seen = t


def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)


LATENCY_FLAGS = (
    "--grace",
    "0",
    "--max-concurrent",
    "1000",
    "--max-removals-per-hour",
    "100000",
    "--drain-timeout",
    "5s",
)

# The cordon path, as seen by a counting proxy: (label, from, to) over the time points
# false (Ready=False seen), p1s/p1e (Suspect PATCH), gs/ge (re-read GET), p2s/p2e (cordon PATCH),
# cordon (cordon event seen).
STEPS = [
    ("Ready=False event -> Suspect PATCH sent (watch + reconcile)", "false", "p1s"),
    ("Suspect annotation PATCH (API round trip)", "p1s", "p1e"),
    ("-> re-read GET sent (complete, wake, reconcile)", "p1e", "gs"),
    ("re-read GET (API round trip)", "gs", "ge"),
    ("-> cordon PATCH sent", "ge", "p2s"),
    ("cordon PATCH (API round trip)", "p2s", "p2e"),
    ("-> cordon event seen by the benchmark", "p2e", "cordon"),
]


@dataclass
class LatencyResult:
    from_event: list[float] = field(default_factory=list)
    from_patch: list[float] = field(default_factory=list)
    missed: int = 0
    steps: list[dict[str, float]] = field(default_factory=list)  # proxied pass


def _fail_nodes(
    api: Api, rec: Recorder, prefix: str, trials: int, out: LatencyResult
) -> list[tuple[float, float, float]]:
    """Fail ``trials`` fresh bare nodes one at a time; returns (t_send, t_false, t_cordon)."""
    seen = []
    for i in range(trials):
        name = f"{prefix}-{i}"
        api.create_bare_node(name, {BARE_LABEL: "latency"})
        time.sleep(0.5)  # noderecover sees it healthy first
        t_send = time.monotonic()
        api.set_ready(name, "False")
        try:
            wait_until(lambda n=name: rec.times.get(n, NodeTimes()).cordon_seen, 15, "cordon")
        except TimeoutError:
            out.missed += 1
        nt = rec.times.get(name, NodeTimes())
        if nt.cordon_seen is not None and nt.false_seen is not None:
            seen.append((t_send, nt.false_seen, nt.cordon_seen))
        api.call("DELETE", f"/api/v1/nodes/{name}")
    return seen


def bench_latency(
    c: TestCluster,
    api: Api,
    procs: list[Proc],
    tmp: Path,
    trials: int,
    breakdown: int,
) -> LatencyResult:
    rec = Recorder()
    w = WatchThread(api, "/api/v1/nodes", {"labelSelector": f"{BARE_LABEL}=latency"}, rec)
    w.start()
    w.ready.wait(30)
    out = LatencyResult()
    kc = write_kubeconfig(tmp / "admin.kubeconfig", c.server, c.token, c.ca_file)
    proxy = CountingProxy("latency", c.server, c.ca_file)
    try:
        # 1. direct to the API server: the numbers
        p = noderecover("latency", kc, tmp, *LATENCY_FLAGS)
        procs.append(p)
        p.wait_ready(90)
        time.sleep(2)
        for t_send, t_false, t_cordon in _fail_nodes(api, rec, "lat", trials, out):
            out.from_event.append(t_cordon - t_false)
            out.from_patch.append(t_cordon - t_send)
        p.stop()
        # 2. through the counting proxy (adds ~1 ms per request): where the time goes
        if breakdown:
            port = proxy.start()
            pkc = write_kubeconfig(
                tmp / "latency-proxy.kubeconfig", f"http://127.0.0.1:{port}", c.token, None
            )
            p = noderecover("latency-proxied", pkc, tmp, *LATENCY_FLAGS)
            procs.append(p)
            p.wait_ready(90)
            time.sleep(2)
            for _, t_false, t_cordon in _fail_nodes(api, rec, "latp", breakdown, out):
                reqs = sorted(
                    (s, e, k)
                    for s, e, k, _ in proxy.snapshot().done
                    if k in ("PATCH nodes", "GET nodes") and t_false - 0.5 <= s <= t_cordon
                )
                if [k for _, _, k in reqs[:3]] != ["PATCH nodes", "GET nodes", "PATCH nodes"]:
                    continue
                (p1s, p1e, _), (gs, ge, _), (p2s, p2e, _) = reqs[:3]
                points = {"false": t_false, "p1s": p1s, "p1e": p1e, "gs": gs, "ge": ge}
                points |= {"p2s": p2s, "p2e": p2e, "cordon": t_cordon}
                out.steps.append(points)
            p.stop()
    finally:
        proxy.stop()
        w.stop()
    return out


def print_latency(n: int, res: LatencyResult) -> None:
    print(f"\n### 3. Reaction latency at {n:,} nodes (--grace 0), {len(res.from_event)} failures\n")
    rows = []
    cases = [
        ("Ready=False event -> cordon event (same watch)", res.from_event),
        ("status PATCH sent -> cordon event", res.from_patch),
    ]
    for label, xs in cases:
        ms = [x * 1e3 for x in xs]
        rows.append(
            [
                label,
                fmt(percentile(ms, 50)),
                fmt(percentile(ms, 90)),
                fmt(percentile(ms, 99)),
                fmt(max(ms)),
                fmt(statistics.mean(ms)),
            ]
        )
    print(table(["interval", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"], rows))
    if res.missed:
        print(f"\n{res.missed} failures saw no cordon within 15 s")
    if res.steps:
        print(
            f"\nwhere the time goes ({len(res.steps)} more failures, noderecover behind the "
            "counting proxy):\n"
        )
        rows = []
        for label, a, b in STEPS:
            ms = [(pt[b] - pt[a]) * 1e3 for pt in res.steps]
            rows.append([label, fmt(statistics.median(ms)), fmt(max(ms))])
        total = [(pt["cordon"] - pt["false"]) * 1e3 for pt in res.steps]
        rows.append(["total", fmt(statistics.median(total)), fmt(max(total))])
        print(table(["step", "median ms", "max ms"], rows))


# ---------------------------------------------------------------------------- failover


def lease_holder(api: Api, name: str) -> str | None:
    status, out = api.call("GET", f"{LEASES}/namespaces/default/leases/{name}")
    if status != 200:
        return None
    holder = (out.get("spec") or {}).get("holderIdentity")
    return str(holder) if holder else None


def bench_failover(
    c: TestCluster, api: Api, procs: list[Proc], tmp: Path, runs: int
) -> list[tuple[float, float, float]]:
    rec = Recorder()
    w = WatchThread(api, "/api/v1/nodes", {"labelSelector": f"{BARE_LABEL}=failover"}, rec)
    w.start()
    w.ready.wait(30)
    kc = write_kubeconfig(tmp / "admin.kubeconfig", c.server, c.token, c.ca_file)
    flags = (
        "--leader-elect",
        "--lease-namespace",
        "default",
        "--lease-name",
        "bench-failover",
        "--grace",
        "0",
        "--max-concurrent",
        "1000",
        "--max-removals-per-hour",
        "100000",
    )
    live: dict[str, Proc] = {}
    serial = 0

    def start_one() -> None:
        nonlocal serial
        name = f"replica-{serial}"
        serial += 1
        p = noderecover(name, kc, tmp, *flags)
        procs.append(p)
        p.wait_ready(90)
        live[name] = p

    out: list[tuple[float, float, float]] = []
    try:
        start_one()
        start_one()
        for i in range(runs):
            wait_until(lambda: lease_holder(api, "bench-failover") in live, 60, "a leader", 0.1)
            leader = lease_holder(api, "bench-failover")
            assert leader is not None
            node = f"fo-{i}"
            api.create_bare_node(node, {BARE_LABEL: "failover"})
            time.sleep(1.0)
            t_kill = time.monotonic()
            live.pop(leader).stop(signal.SIGKILL)
            api.set_ready(node, "False")
            holder_at: float | None = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                h = lease_holder(api, "bench-failover")
                if holder_at is None and h in live:
                    holder_at = time.monotonic()
                nt = rec.times.get(node, NodeTimes())
                if nt.cordon_seen is not None and holder_at is not None:
                    break
                time.sleep(0.05)
            nt = rec.times.get(node, NodeTimes())
            if nt.first_write is None or nt.cordon_seen is None or holder_at is None:
                print(f"  run {i}: no action by the new leader within 60 s", flush=True)
            else:
                out.append((holder_at - t_kill, nt.first_write - t_kill, nt.cordon_seen - t_kill))
                print(
                    f"  run {i}: lease taken {holder_at - t_kill:.2f}s, first write "
                    f"{nt.first_write - t_kill:.2f}s after SIGKILL",
                    flush=True,
                )
            api.call("DELETE", f"/api/v1/nodes/{node}")
            start_one()  # a new standby
    finally:
        for p in live.values():
            p.stop()
        w.stop()
    return out


def print_failover(out: list[tuple[float, float, float]]) -> None:
    print(f"\n### 5. Leader failover (SIGKILL the leader), {len(out)} runs\n")
    print("lease duration 15 s, renew deadline 10 s, retry period 2 s (defaults)\n")
    rows = []
    for label, k in (
        ("Lease holder changed (polled every 50 ms)", 0),
        ("first write by the new leader", 1),
        ("cordon by the new leader (--grace 0)", 2),
    ):
        xs = [r[k] for r in out]
        rows.append(
            [label, fmt(min(xs), 2), fmt(statistics.median(xs), 2), fmt(max(xs), 2), "<= 19.00"]
        )
    print(table(["seconds after SIGKILL", "min", "median", "max", "target"], rows))


# ---------------------------------------------------------------------------- zone failure

ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass
class ZoneResult:
    name: str
    failed: int  # zone nodes set Ready=False
    limit: float  # the breaker's limit over every node (noderecover only)
    crossing_s: float | None  # the write that put the count over the limit: answered at
    seen_s: float | None  # ...and its event seen on the benchmark's own watch at
    breaker_open_after_ms: float | None  # from that answer to the breaker's gauge reading 1
    cordoned: int
    removed: int
    window_s: float


def _fail_zone(api: Api, names: list[str]) -> list[float]:
    """Ready=False on every node of the zone at once (8 writers): a zone event. Returns the
    monotonic time each write was answered, in answer order."""
    done: list[float] = []
    lock = threading.Lock()

    def one(name: str) -> None:
        api.set_ready(name, "False")
        with lock:
            done.append(time.monotonic())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))
    return sorted(done)


def bench_zone(
    c: TestCluster, api: Api, procs: list[Proc], tmp: Path, n: int, max_unhealthy: str, wait: float
) -> list[ZoneResult]:
    """A zone failure of 5 % of the nodes (bare Nodes labelled with one zone, Ready=False
    written by the benchmark at once, 8 writers), met first by noderecover as deployed
    (leader election; default flags but ``--max-unhealthy``), then by the script, each on a
    fresh zone, in the same run. noderecover: how long after the write that put the count
    over the limit its ``noderecover_circuit_breaker_open`` reads 1 (polled every 5 ms), and
    that nothing is cordoned or removed within ``wait`` seconds (past the 30 s grace). The
    script: how many of the zone's nodes it deletes in the same window."""
    from noderecover.core.settings import Threshold

    total_before = n
    m = max(1, round(n / 19))  # 5 % of the n + m nodes
    rec = Recorder()
    w = WatchThread(api, "/api/v1/nodes", {"labelSelector": f"{BARE_LABEL}=zone"}, rec)
    w.start()
    w.ready.wait(60)
    kc = write_kubeconfig(tmp / "zone.kubeconfig", c.server, c.token, c.ca_file)
    out: list[ZoneResult] = []

    def make_zone(tag: str) -> list[str]:
        names = [f"zone-{tag}-{i}" for i in range(m)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda x: api.create_bare_node(x, {BARE_LABEL: "zone", ZONE_LABEL: tag}), names
                )
            )
        return names

    def drop_zone(names: list[str]) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda x: api.call("DELETE", f"/api/v1/nodes/{x}"), names))

    def counts(names: list[str]) -> tuple[int, int]:
        cordoned = sum(1 for x in names if rec.times.get(x, NodeTimes()).cordon_seen is not None)
        removed = sum(1 for x in names if rec.times.get(x, NodeTimes()).gone is not None)
        return cordoned, removed

    try:
        # 1. noderecover, as deployed but --max-unhealthy
        names = make_zone("a")
        p = noderecover(
            "zone-noderecover",
            kc,
            tmp,
            "--leader-elect",
            "--lease-namespace",
            "default",
            "--lease-name",
            "bench-zone",
            "--max-unhealthy",
            max_unhealthy,
        )
        procs.append(p)
        p.wait_ready(180)
        wait_until(lambda: lease_holder(api, "bench-zone") is not None, 60, "a leader", 0.1)
        time.sleep(5)
        thr = Threshold(float(max_unhealthy.rstrip("%")), max_unhealthy.endswith("%"))
        limit = thr.limit(total_before + m)
        opened: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                if p.metric("noderecover_circuit_breaker_open") >= 1:
                    opened.append(time.monotonic())
                    return
                time.sleep(0.005)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        t0 = time.monotonic()
        answered = _fail_zone(api, names)
        k = int(limit) + 1  # the count is over the limit from the k-th failure on
        crossing = answered[k - 1] if k <= len(answered) else None
        poller.join(wait)
        stop.set()
        seen_at = sorted(
            t for x in names if (t := rec.times.get(x, NodeTimes()).false_seen) is not None
        )
        time.sleep(max(0.0, wait - (time.monotonic() - t0)))
        cordoned, removed = counts(names)
        out.append(
            ZoneResult(
                "noderecover (leader election, --max-unhealthy " + max_unhealthy + ")",
                m,
                limit,
                None if crossing is None else crossing - t0,
                seen_at[k - 1] - t0 if k <= len(seen_at) else None,
                None if crossing is None or not opened else (opened[0] - crossing) * 1e3,
                cordoned,
                removed,
                wait,
            )
        )
        p.stop()
        drop_zone(names)
        # 2. the script, on a fresh zone
        names = make_zone("b")
        lib = liberator("zone-liberator", kc, tmp)
        procs.append(lib)
        time.sleep(6)  # its first LIST
        t0 = time.monotonic()
        _fail_zone(api, names)
        # The script needs 4 NotReady polls, and one poll is a full LIST (~30 s at 20,000
        # nodes): watched until it deleted the whole zone, or for 4 times the window.
        while time.monotonic() - t0 < 4 * wait and counts(names)[1] < m:
            time.sleep(1.0)
        cordoned, removed = counts(names)
        window = time.monotonic() - t0
        out.append(
            ZoneResult(
                "liberator (seed script)",
                m,
                float("nan"),
                None,
                None,
                None,
                cordoned,
                removed,
                window,
            )
        )
        lib.stop()
        drop_zone([x for x in names if rec.times.get(x, NodeTimes()).gone is None])
    finally:
        w.stop()
    return out


def print_zone(n: int, results: list[ZoneResult]) -> None:
    m = results[0].failed if results else 0
    print(f"\n### Zone failure: {m:,} of {n + m:,} nodes Ready=False at once\n")
    rows = []
    for r in results:
        rows.append(
            [
                r.name,
                f"{r.failed:,}",
                "-" if r.limit != r.limit else f"{r.limit:g}",
                "-" if r.crossing_s is None else f"{r.crossing_s:.2f}",
                "-" if r.seen_s is None else f"{r.seen_s:.2f}",
                "-" if r.breaker_open_after_ms is None else fmt(r.breaker_open_after_ms),
                str(r.cordoned),
                str(r.removed),
                f"{r.window_s:.0f}",
            ]
        )
    print(
        table(
            [
                "controller",
                "failed",
                "breaker limit",
                "limit crossed s",
                "seen on a watch s",
                "breaker open ms after",
                "cordoned",
                "removed",
                "window s",
            ],
            rows,
        )
    )


def cmd_scale(args: argparse.Namespace) -> None:
    n = args.nodes
    print(
        f"## scale: {n:,} kwok nodes, node Lease {args.lease_seconds} s renewed every "
        f"{args.lease_seconds / 4:g} s ({machine()})",
        flush=True,
    )
    with (
        running_cluster(
            workers=0,
            node_lease_duration_seconds=args.lease_seconds,
            node_monitor_grace_period=f"{args.lease_seconds * 5 // 4}s",
        ) as c,
        processes() as procs,
        tempfile.TemporaryDirectory(prefix="nr-bench-") as tmpname,
    ):
        tmp = Path(tmpname)
        api = Api(c)
        secs = create_kwok_nodes(api, n)
        print(f"{n:,} nodes Ready in {secs:.0f}s", flush=True)
        if args.parts != {"sync"}:
            waited, events = quiesce(api)
            print(f"quiet (no Node change for 15 s) after {waited:.0f}s, {events} events")
        if "idle" in args.parts:
            results, extra = bench_idle(c, api, procs, tmp, args.idle)
            print_idle(results, n, extra)
        if "replicas" in args.parts:
            print("\nreplicas ...", flush=True)
            rows = bench_replicas(c, api, procs, tmp, args.idle)
            print(f"\n### RSS as deployed: 2 replicas, leader election, {n:,} nodes\n")
            print(table(["replica", "max RSS MiB", "RSS at end MiB"], rows))
        if "sync" in args.parts:
            print("\nsync ...", flush=True)
            rows = bench_sync_pages(c, procs, tmp, [500, 100], 3)
            print(f"\n### Initial sync on the cluster by LIST page size, {n:,} nodes\n")
            print(
                table(
                    [
                        "limit",
                        "LIST requests",
                        "spawn -> ready s",
                        "1st LIST -> ready s",
                        "each run",
                    ],
                    rows,
                )
            )
        if "latency" in args.parts:
            print("\nlatency ...", flush=True)
            res = bench_latency(c, api, procs, tmp, args.trials, args.breakdown)
            print_latency(n, res)
        if "failover" in args.parts:
            print("\nfailover ...", flush=True)
            print_failover(bench_failover(c, api, procs, tmp, args.failovers))
        if "zone" in args.parts:
            print("\nzone ...", flush=True)
            print_zone(n, bench_zone(c, api, procs, tmp, n, args.max_unhealthy, args.zone_wait))
        print(f"\ndone ({machine()})")


# ============================================================================ recovery


@dataclass
class Scenario:
    name: str
    marks: dict[str, float] = field(default_factory=dict)  # what -> seconds after the kill
    recovered: bool = False


class Timeline:
    """Watches Nodes and Pods and records when the seed scenario's milestones happened."""

    def __init__(self, api: Api, node: str, pod_uid: str) -> None:
        self.node, self.pod_uid = node, pod_uid
        self.t0 = 0.0
        self.marks: dict[str, float] = {}
        self.watches = [
            WatchThread(
                api, "/api/v1/nodes", {"fieldSelector": f"metadata.name={node}"}, self._node
            ),
            WatchThread(
                api,
                "/api/v1/namespaces/default/pods",
                {"fieldSelector": "metadata.name=mysql-0"},
                self._pod,
            ),
        ]

    def start(self) -> None:
        for w in self.watches:
            w.start()
            w.ready.wait(30)

    def stop(self) -> None:
        for w in self.watches:
            w.stop()

    def mark(self, what: str, t: float) -> None:
        if self.t0 and what not in self.marks:
            self.marks[what] = t - self.t0

    def _node(self, t: float, etype: str, obj: JSON) -> None:
        if etype == "DELETED":
            self.mark("node deleted", t)
            return
        r = ready_status(obj)
        if r not in (None, "True"):
            self.mark("node NotReady", t)
        if (obj.get("spec") or {}).get("unschedulable"):
            self.mark("cordon", t)
        phase = ((obj.get("metadata") or {}).get("annotations") or {}).get("noderecover.io/phase")
        if phase:
            self.mark(f"phase {phase}", t)
        for taint in (obj.get("spec") or {}).get("taints") or ():
            if taint.get("key") == "node.kubernetes.io/out-of-service":
                self.mark("out-of-service taint", t)

    def _pod(self, t: float, etype: str, obj: JSON) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("uid") == self.pod_uid:
            if meta.get("deletionTimestamp"):
                self.mark("old pod terminating", t)
            if etype == "DELETED":
                self.mark("old pod deleted", t)
            return
        self.mark("new pod created", t)
        if (obj.get("spec") or {}).get("nodeName"):
            self.mark("new pod scheduled", t)
        if (obj.get("status") or {}).get("phase") == "Running":
            self.mark("new pod Running", t)


NR_FLAGS = ("--grace", "10s", "--drain-timeout", "10s", "--healthy-delay", "5s")


def reset_for_scenario(c: TestCluster, api: Api) -> None:
    """Reset the cluster and forget noderecover: it restores its removal history (circuit
    breaker, removal budget) from the NodeRecoverRemoved Events, and each node's phase from
    its annotations (reset() keeps annotations), so each scenario starts without what the
    previous ones left."""
    c.reset()
    api.call("DELETE", "/api/v1/namespaces/default/events")
    for node in api.ok("GET", "/api/v1/nodes")["items"]:
        ours = [k for k in node["metadata"].get("annotations") or {} if k.startswith(PREFIX)]
        if ours:
            patch = {"metadata": {"annotations": dict.fromkeys(ours)}}
            api.ok("PATCH", f"/api/v1/nodes/{node['metadata']['name']}", patch)


def run_scenario(
    c: TestCluster, api: Api, procs: list[Proc], tmp: Path, name: str, cap: float
) -> Scenario:
    print(f"  {name}: resetting the cluster ...", flush=True)
    reset_for_scenario(c, api)
    c.apply_seed_statefulset()
    pod = c.wait_pod_running("mysql-0", timeout=120)
    node = pod["spec"]["nodeName"]
    kc = write_kubeconfig(tmp / "admin.kubeconfig", c.server, c.token, c.ca_file)
    proc: Proc | None = None
    if name.startswith("noderecover"):
        removal = "out-of-service" if "out-of-service" in name else "delete"
        timers = () if "defaults" in name else NR_FLAGS
        proc = noderecover(f"rec-{removal}", kc, tmp, *timers, "--removal", removal)
        procs.append(proc)
        proc.wait_ready(90)
    elif name.startswith("liberator"):
        proc = liberator("rec-liberator", kc, tmp)
        procs.append(proc)
        time.sleep(6)  # its first LIST
    tl = Timeline(api, node, pod["metadata"]["uid"])
    tl.start()
    sc = Scenario(name)
    try:
        tl.t0 = time.monotonic()
        c.kill_node(node)
        deadline = tl.t0 + cap
        while time.monotonic() < deadline:
            if "new pod Running" in tl.marks:
                sc.recovered = True
                break
            time.sleep(0.1)
        time.sleep(1.0)
        sc.marks = dict(tl.marks)
        if proc is not None and not proc.alive:
            print(f"  WARNING: {proc.name} exited early:\n{proc.tail()}", flush=True)
    finally:
        tl.stop()
        if proc is not None:
            proc.stop()
    got = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(sc.marks.items(), key=lambda kv: kv[1]))
    print(f"  {name}: {got}", flush=True)
    return sc


# Phases: (label, start mark(s), end mark(s)); the first existing mark of each list counts.
PHASES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("kcm: heartbeats stop -> NotReady", ("kill",), ("node NotReady",)),
    (
        "controller: NotReady -> acts (cordon / delete)",
        ("node NotReady",),
        ("cordon", "node deleted"),
    ),
    (
        "old pod freed (drain+force / PodGC)",
        ("cordon", "node deleted"),
        ("old pod deleted",),
    ),
    ("StatefulSet + scheduler: new pod scheduled", ("old pod deleted",), ("new pod scheduled",)),
    ("kwok: new pod Running", ("new pod scheduled",), ("new pod Running",)),
]


def phase_spans(sc: Scenario) -> list[tuple[str, float, float]]:
    marks = {"kill": 0.0, **sc.marks}
    out = []
    for label, starts, ends in PHASES:
        s = next((marks[k] for k in starts if k in marks), None)
        e = next((marks[k] for k in ends if k in marks), None)
        if s is not None and e is not None and e >= s:
            out.append((label, s, e))
    return out


def print_recovery(scenarios: list[Scenario], cap: float) -> None:
    print("\n### 4. Time to recovery, seed scenario (seconds after the node's kwok is killed)\n")
    print(
        "kcm: node-monitor-grace-period 10 s, node Lease 20 s; noderecover: "
        + " ".join(NR_FLAGS)
        + "\n"
    )
    keys = [
        "node NotReady",
        "phase Suspect",
        "cordon",
        "phase Draining",
        "old pod terminating",
        "old pod deleted",
        "new pod created",
        "new pod scheduled",
        "new pod Running",
        "phase Removed",
        "out-of-service taint",
        "node deleted",
    ]
    rows = []
    for k in keys:
        row = [k]
        for sc in scenarios:
            v = sc.marks.get(k)
            row.append(f"{v:.1f}" if v is not None else "-")
        rows.append(row)
    rows.append(
        ["**recovered (mysql-0 Running elsewhere)**"]
        + [
            f"**{sc.marks['new pod Running']:.1f}**" if sc.recovered else f"no (> {cap:.0f})"
            for sc in scenarios
        ]
    )
    print(table(["milestone", *[sc.name for sc in scenarios]], rows))
    print("\nphases (s):\n")
    prow = []
    for label, _, _ in PHASES:
        row = [label]
        for sc in scenarios:
            span = next((e - s for lab, s, e in phase_spans(sc) if lab == label), None)
            row.append(f"{span:.1f}" if span is not None else "-")
        prow.append(row)
    print(table(["phase", *[sc.name for sc in scenarios]], prow))
    lib = next((sc for sc in scenarios if sc.name == "liberator" and sc.recovered), None)
    print()
    for sc in scenarios:
        if sc.name.startswith("noderecover") and sc.recovered:
            m = sc.marks
            timer = 60.0 if "defaults" in sc.name else 10.0
            act = m.get("cordon", 0) - m.get("node NotReady", 0)
            freed = m.get("old pod deleted", 0) - m.get("cordon", 0)
            vs = ""
            if lib is not None:
                ratio = lib.marks["new pod Running"] / m["new pod Running"]
                vs = f"; recovery {ratio:.2f}x the liberator's speed"
            print(
                f"- {sc.name}: added beyond its configured timers: "
                f"NotReady->cordon {act:.1f}s - grace {timer:.0f}s = {act - timer:+.1f}s; "
                f"cordon->pod freed {freed:.1f}s - drain-timeout {timer:.0f}s = "
                f"{freed - timer:+.1f}s{vs}"
            )


def chart(scenarios: list[Scenario], cap: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    colors = ["#8c8c8c", "#e6a23c", "#d9534f", "#5b8def", "#4caf50"]
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(scenarios) + 1.6))
    labels = [label for label, _, _ in PHASES]
    for y, sc in enumerate(reversed(scenarios)):
        spans = phase_spans(sc)
        for label, s, e in spans:
            ax.barh(y, e - s, left=s, color=colors[labels.index(label)], edgecolor="white")
        if not sc.recovered:
            last = max((e for _, _, e in spans), default=0.0)
            ax.barh(y, cap - last, left=last, color="#f2f2f2", hatch="//", edgecolor="#bbbbbb")
            ax.text(cap, y, " not recovered", va="center", fontsize=8)
        else:
            ax.text(
                sc.marks["new pod Running"],
                y,
                f" {sc.marks['new pod Running']:.0f}s",
                va="center",
                fontsize=8,
            )
    ax.set_yticks(range(len(scenarios)), [sc.name for sc in reversed(scenarios)])
    ax.set_xlabel("seconds after the node's heartbeats stop")
    ax.set_title("Seed scenario: mysql-0's node dies -> mysql-0 Running elsewhere")
    handles = [Rectangle((0, 0), 1, 1, color=col) for col in colors]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
    ax.set_xlim(0, cap * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nchart: {path.relative_to(ROOT)}")


def cmd_recovery(args: argparse.Namespace) -> None:
    print(f"## recovery ({machine()})", flush=True)
    names = [
        "no controller",
        "liberator",
        "noderecover --removal delete",
        "noderecover --removal out-of-service",
    ]
    if not args.no_defaults:
        names.append("noderecover defaults (grace 60s, drain-timeout 60s)")
    if args.only:
        names = [n for n in names if any(o in n for o in args.only.split(","))]
    with (
        running_cluster(workers=3) as c,
        processes() as procs,
        tempfile.TemporaryDirectory(prefix="nr-bench-") as tmpname,
    ):
        api = Api(c)
        logdir = Path(args.logs) if args.logs else Path(tmpname)
        logdir.mkdir(parents=True, exist_ok=True)
        scenarios = [
            run_scenario(c, api, procs, logdir, name, args.cap if name == "no controller" else 240)
            for name in names
        ]
    print_recovery(scenarios, args.cap)
    if args.only:
        return  # a partial run does not replace the chart
    chart(
        scenarios,
        max(args.cap, *(s.marks.get("new pod Running", 0) for s in scenarios)),
        ROOT / "docs" / "recovery-timeline.png",
    )
    print(f"\ndone ({machine()})")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_bench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scale", help="2 idle cost, 3 reaction latency, 5 failover")
    s.add_argument("--nodes", type=int, default=1000)
    s.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    s.add_argument("--trials", type=int, default=60, help="node failures for the latency")
    s.add_argument("--breakdown", type=int, default=20, help="failures behind the proxy")
    s.add_argument("--failovers", type=int, default=10)
    s.add_argument(
        "--lease-seconds",
        type=int,
        default=40,
        help="kwok node Lease duration (renewed every 1/4 of it; kcm grace = 5/4 of it)",
    )
    s.add_argument("--parts", default="idle,latency,failover", type=lambda v: set(v.split(",")))
    s.add_argument("--max-unhealthy", default="3%", help="part zone: noderecover's breaker limit")
    s.add_argument(
        "--zone-wait", type=float, default=45.0, help="part zone: seconds watched after the failure"
    )
    r = sub.add_parser("recovery", help="4 time to recovery of the seed scenario")
    r.add_argument("--cap", type=float, default=120.0, help="give up on 'no controller' after")
    r.add_argument(
        "--no-defaults", action="store_true", help="skip noderecover with its default timers"
    )
    r.add_argument("--only", default="", help="comma-separated scenario name parts to run")
    r.add_argument("--logs", default="", help="keep the controllers' logs in this folder")
    a = sub.add_parser("all", help="scale then recovery, defaults")
    a.set_defaults(
        lease_seconds=40,
        nodes=1000,
        idle=60.0,
        trials=60,
        breakdown=20,
        failovers=10,
        cap=120.0,
        no_defaults=False,
        only="",
        logs="",
        parts={"idle", "latency", "failover"},
        max_unhealthy="3%",
        zone_wait=45.0,
    )
    args = parser.parse_args()
    if args.cmd in ("scale", "all"):
        cmd_scale(args)
    if args.cmd in ("recovery", "all"):
        cmd_recovery(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
