"""In-process reconcile pass cost (issue 24): a pass per event, an idle pass, initial sync.

    .venv/bin/python -m bench.pass_throughput [--quick] [--before DIR]

Synthetic ~7 KB Nodes (bench/nodegen.py) in a Controller's view, 2 % of them unhealthy
(Ready=False or Unknown), with 100 NodeRecoveryPolicies (each selects `pool=pK`, the nodes
spread evenly) or with the flags alone:

(a) a pass per event: MODIFIED lines of distinct nodes (their status, as kubelets post it)
    through the Watcher's own ``_handle`` into the view, then one reconcile pass, as the
    leader's loop does when events come one at a time. The pass is ``decide_changed()``
    where the code has it (issue 24: only what changed), else ``decide_all()`` (what the
    leader's loop did on every wake before). Also the events alone, without a pass.
(b) an idle pass: nothing changed, nothing due (the loop wakes at least once a second).
    (a) and (b) run with the gc tuned as ``entry.app`` tunes it after start-up.
(c) initial sync: a paginated LIST (pages of 500) through ``Watcher._list``, then the first
    pass, with the gc tuned as ``entry.app`` tunes it.

(d) RSS (``--rss``): at 1,000 / 5,000 / 20,000 / 50,000 nodes, a loopback HTTP server in this
    process serves the same N Nodes to, in a fresh process each: noderecover
    (bench/rss_worker.py: what `noderecover run` imports and does up to its first LIST, then
    the node watcher's LIST in pages of 500 through KubeClient/aiohttp, and the first pass)
    and the script (bench/liberator_rss.py under $LIBERATOR_PYTHON: one ``list_node()`` of
    the sync kubernetes client, held, as at the top of every poll). VmRSS after the read
    with the N nodes held, and VmHWM (the peak), from /proc/self/status.

``--before DIR`` runs the same measurements, in the same run, on another checkout of the
code (``DIR/src``; e.g. ``git worktree add --detach /tmp/nr-base main``) in a subprocess, one
size at a time alternating with this checkout, and prints both with their ratio. The machine
is shared: every row is a median of runs, and the ratio is the figure to read.

Targets (issue 24): >= 10,000 events/s with a pass per event at 50,000 nodes, 1,000 of them
unhealthy, 100 policies; an idle pass under 50 µs at any size; 50,000 nodes synced (LIST +
first pass) in at most 5 s; RSS at most 250 MiB at 50,000 nodes and no more than the
script's at every size.

Parts alone: ``--no-pass --sizes 50000:100`` the sync only; ``--rss --no-pass --no-sync``
the RSS rows only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import orjson

from bench.common import fmt, fmt_int, machine, table
from bench.controllers import read_policies
from bench.nodegen import ListApi, event_line, list_pages, make_node
from noderecover.base.clock import SystemClock
from noderecover.controller.reconciler import Controller
from noderecover.entry.config import Config
from noderecover.kube import watching
from noderecover.kube.client import KubeClient

SICK_EVERY = 50  # 2 % of the nodes: Ready=False or Unknown, alternately
POLICIES = 100
EVENTS = 5000  # distinct nodes the event stream cycles through (spread over the view)


def cpu_rate(run: Callable[[], int], *, repeat: int, min_seconds: float) -> float:
    """Median items per CPU second of this process (`time.process_time`: the machine is
    shared, and the time other processes take is not ours) over `repeat` runs of at least
    `min_seconds` of CPU each."""
    rates = []
    for _ in range(repeat):
        items = 0
        t0 = time.process_time()
        while (elapsed := time.process_time() - t0) < min_seconds:
            items += run()
        rates.append(items / elapsed)
    return statistics.median(rates)


def _ready(i: int) -> str:
    if i % SICK_EVERY == 0:
        return "Unknown" if i % (2 * SICK_EVERY) == 0 else "False"
    return "True"


def _labels(i: int, policies: int) -> dict[str, str]:
    return {"pool": f"p{i % policies}"} if policies else {}


def node_body(i: int, policies: int, rv: int = 1000) -> dict[str, Any]:
    return make_node(i, ready=_ready(i), rv=rv, labels=_labels(i, policies))


class LoopbackApi(ThreadingHTTPServer):
    """GET /api/v1/nodes on 127.0.0.1 from prepared Node bodies: paginated (`limit`,
    `continue`) as the API server does, or the whole list in one body without `limit`."""

    daemon_threads = True

    def __init__(self, nodes: Sequence[bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _ListHandler)
        self.nodes = nodes

    def body(self, limit: int, start: int) -> bytes:
        chunk = self.nodes[start : start + limit] if limit else self.nodes
        more = limit and start + limit < len(self.nodes)
        meta = (
            b'{"resourceVersion":"5000","continue":"tok-%d"}' % (start + limit)
            if more
            else b'{"resourceVersion":"5000"}'
        )
        return (
            b'{"kind":"NodeList","apiVersion":"v1","metadata":'
            + meta
            + b',"items":['
            + b",".join(chunk)
            + b"]}"
        )


class _ListHandler(BaseHTTPRequestHandler):
    server: LoopbackApi
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path != "/api/v1/nodes":
            self.send_error(404)
            return
        cont = query.get("continue", "")
        body = self.server.body(int(query.get("limit", "0")), int(cont[4:]) if cont else 0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def loopback(nodes: Sequence[bytes]) -> Iterator[str]:
    """A kubeconfig for a LoopbackApi serving `nodes` (served from a thread of this process)."""
    server = LoopbackApi(nodes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubeconfig"
        cluster = {"server": f"http://127.0.0.1:{server.server_address[1]}"}
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "bench",
                    "clusters": [{"name": "bench", "cluster": cluster}],
                    "users": [{"name": "bench", "user": {"token": "bench"}}],
                    "contexts": [
                        {"name": "bench", "context": {"cluster": "bench", "user": "bench"}}
                    ],
                }
            )
        )
        try:
            yield str(path)
        finally:
            server.shutdown()
            server.server_close()


def rss_rows(sizes: Sequence[int], policies: int) -> list[dict[str, Any]]:
    """(d): noderecover's and the script's RSS after reading the same N-node LIST, each in a
    fresh process, one size after the other."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([f"{here}/src", here]),
        "PYTHONHASHSEED": "0",
    }
    script_python = os.environ.get("LIBERATOR_PYTHON") or sys.executable
    everything = [orjson.dumps(node_body(i, policies)) for i in range(max(sizes))]
    rows = []
    for n in sizes:
        with loopback(everything[:n]) as kubeconfig:
            got = {}
            for label, argv in (
                (
                    "noderecover",
                    [sys.executable, "-m", "bench.rss_worker", kubeconfig, str(policies)],
                ),
                ("script", [script_python, "-m", "bench.liberator_rss", kubeconfig]),
            ):
                out = subprocess.run(
                    argv, env=env, cwd=here, check=True, capture_output=True, text=True
                )
                got[label] = json.loads(out.stdout.strip().splitlines()[-1])
                assert got[label]["nodes"] == n, got[label]
        rows.append({"nodes": n, **got, "load": os.getloadavg()[0]})
        print(f"  RSS measured at {n:,} nodes ({machine()})", file=sys.stderr)
    return rows


def new_controller(api: object, policies: int) -> Controller:
    """A controller whose policies are read (before any node: the nodes are parsed for what
    they select on), its watch fresh for the whole run."""
    cfg = Config()
    ctrl = Controller(cast(KubeClient, api), SystemClock(), cfg)
    read_policies(ctrl, cfg, policies)
    return ctrl


def fresh(ctrl: Controller) -> None:
    ctrl.node_watcher.synced = True
    ctrl.node_watcher.last_progress = time.monotonic() + 3600  # fresh for the whole run


def fill_view(ctrl: Controller, n: int, policies: int) -> None:
    items = []
    for i in range(n):
        obs = ctrl.view.parse(node_body(i, policies))
        items.append((obs.name, obs))
    ctrl.view.resync(items)
    fresh(ctrl)


def pass_of(ctrl: Controller) -> tuple[str, Callable[[], float]]:
    changed = getattr(ctrl, "decide_changed", None)
    if changed is not None:
        return "decide_changed", cast(Callable[[], float], changed)
    return "decide_all", ctrl.decide_all


def measure(n: int, policies: int, repeat: int) -> dict[str, Any]:
    """(a) and (b) at `n` nodes."""
    ctrl = new_controller(object(), policies)
    fill_view(ctrl, n, policies)
    name, one_pass = pass_of(ctrl)
    one_pass()  # the first pass decides every node (and the next one what it changed)
    one_pass()
    # Distinct nodes spread over the view by a prime stride: 2 % of them unhealthy, as in the
    # view (a stride of n // EVENTS would hit the unhealthy ones 10 times as often at 50,000).
    picked = [(k * 7919) % n for k in range(min(n, EVENTS))]
    lines = [event_line("MODIFIED", node_body(i, policies, rv=2000 + i)) for i in picked]
    handle = ctrl.node_watcher._handle
    # As entry.app after start-up: the heap of the synced view frozen (the collector no
    # longer walks it), the gen-0 threshold raised.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    sample = time.perf_counter()
    one_pass()
    slow = time.perf_counter() - sample > 1e-3  # the old pass: fewer events per call
    batch = 20 if slow else 500
    cursor = [0]

    def events_and_passes() -> int:
        start = cursor[0]
        for line in lines[start : start + batch]:
            handle(line)
            one_pass()
        cursor[0] = (start + batch) % len(lines)
        return batch

    def events_only() -> int:
        start = cursor[0]
        for line in lines[start : start + 500]:
            handle(line)
        cursor[0] = (start + 500) % len(lines)
        return 500

    rate = cpu_rate(events_and_passes, repeat=repeat, min_seconds=0.5)
    one_pass()
    one_pass()
    idle_runs = 200 if not slow else 5

    def idle() -> int:
        for _ in range(idle_runs):
            one_pass()
        return idle_runs

    idle_rate = cpu_rate(idle, repeat=repeat, min_seconds=0.3)
    events_rate = cpu_rate(events_only, repeat=repeat, min_seconds=0.3)
    unhealthy = sum(1 for i in range(n) if i % SICK_EVERY == 0)
    return {
        "pass": name,
        "nodes": n,
        "unhealthy": unhealthy,
        "policies": policies,
        "events_per_s": rate,
        "events_only_per_s": events_rate,
        "idle_us": 1e6 / idle_rate,
    }


def sync(n: int, policies: int, repeat: int) -> dict[str, Any]:
    """(c): LIST of `n` nodes in pages of 500, then the first pass; gc tuned as entry.app."""
    pages = list_pages([orjson.dumps(node_body(i, policies)) for i in range(n)], 500)
    lists, firsts, cpus = [], [], []
    threshold = gc.get_threshold()
    watching.PAGE_SIZE = 500
    for _ in range(repeat):
        ctrl = new_controller(ListApi(pages), policies)
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, threshold[1], threshold[2])
        try:
            c0 = time.process_time()
            t0 = time.perf_counter()
            asyncio.run(ctrl.node_watcher._list())
            fresh(ctrl)
            t1 = time.perf_counter()
            ctrl.decide_all()
            t2 = time.perf_counter()
            cpus.append(time.process_time() - c0)
        finally:
            gc.set_threshold(*threshold)
            gc.unfreeze()
        assert len(ctrl.nodes) == n, len(ctrl.nodes)
        lists.append(t1 - t0)
        firsts.append(t2 - t1)
        del ctrl
        gc.collect()
    return {
        "nodes": n,
        "policies": policies,
        "list_s": statistics.median(lists),
        "first_pass_s": statistics.median(firsts),
        "cpu_s": statistics.median(cpus),
        "runs": [f"{a + b:.2f} / {c:.2f}" for a, b, c in zip(lists, firsts, cpus, strict=True)],
        "bytes": sum(len(p) for p in pages),
    }


def worker(spec: str, repeat: int) -> None:
    """One measurement in this process (the code on sys.path), as a JSON line."""
    kind, n, policies = spec.split(":")
    fn = measure if kind == "pass" else sync
    print(json.dumps(fn(int(n), int(policies), repeat)), flush=True)


def run_in(src: str | None, spec: str, repeat: int) -> dict[str, Any]:
    """The measurement `spec` in a fresh process on the code in `src` (None: this checkout)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = src or here
    path = [f"{code}/src", f"{code}/testkit/src", here]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.pass_throughput", "--worker", spec, "--repeat", str(repeat)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="3 repeats, fewer sizes")
    parser.add_argument("--before", help="another checkout to measure in the same run")
    parser.add_argument("--sizes", help="nodes:policies,... (default: all the rows)")
    parser.add_argument("--no-sync", action="store_true", help="skip the initial sync")
    parser.add_argument("--no-pass", action="store_true", help="skip the pass rows")
    parser.add_argument("--rss", action="store_true", help="the RSS rows (d), against the script")
    parser.add_argument(
        "--rss-sizes", default="1000,5000,20000,50000", help="node counts of the RSS rows"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 5)
    if args.worker:
        worker(args.worker, repeat)
        return 0
    sizes = [(1000, POLICIES), (5000, POLICIES), (50000, POLICIES), (50000, 0)]
    if not args.quick:
        sizes.insert(2, (20000, POLICIES))
    if args.sizes:
        sizes = [(int(a), int(b)) for a, b in (x.split(":") for x in args.sizes.split(","))]
    trees: list[tuple[str, str | None]] = [("after", None)]
    if args.before:
        trees.insert(0, ("before", args.before))
    print(f"# reconcile pass cost ({machine()})\n")
    if not args.no_pass:
        pass_rows(sizes, trees, repeat, before=bool(args.before))
    if not args.no_sync:
        sync_rows(trees, repeat)
    if args.rss:
        print(f"\nRSS after reading the same N-node LIST, a fresh process each ({machine()})\n")
        rss_table([int(x) for x in args.rss_sizes.split(",")])
    print(f"\ndone ({machine()})")
    return 0


def pass_rows(
    sizes: Sequence[tuple[int, int]],
    trees: Sequence[tuple[str, str | None]],
    repeat: int,
    *,
    before: bool,
) -> None:
    rows = []
    for n, policies in sizes:
        got = {label: run_in(src, f"pass:{n}:{policies}", repeat) for label, src in trees}
        after = got["after"]
        row = [fmt_int(n), fmt_int(after["unhealthy"]), str(policies)]
        for label, _ in trees:
            r = got[label]
            row += [fmt_int(r["events_per_s"]), fmt(r["idle_us"], 1)]
        if before:
            row += [
                f"{after['events_per_s'] / got['before']['events_per_s']:.0f}x",
                f"{got['before']['idle_us'] / after['idle_us']:.0f}x",
            ]
        row.append(fmt_int(after["events_only_per_s"]))
        rows.append(row)
        print(f"  measured {n:,} nodes, {policies} policies ({machine()})", file=sys.stderr)
    headers = ["nodes", "unhealthy", "policies"]
    for label, _ in trees:
        headers += [f"{label}: events/CPU s, a pass each", f"{label}: idle pass CPU µs"]
    if before:
        headers += ["events/s after/before", "idle before/after"]
    headers.append("after: events/CPU s, no pass")
    print(table(headers, rows))


def sync_rows(trees: Sequence[tuple[str, str | None]], repeat: int) -> None:
    print("\ninitial sync (LIST in pages of 500, then the first pass; gc tuned as entry.app)\n")
    rows = []
    for n, policies in [(50000, POLICIES)]:
        got = {
            label: run_in(src, f"sync:{n}:{policies}", max(1, repeat - 2)) for label, src in trees
        }
        row = [fmt_int(n), str(policies), f"{got['after']['bytes'] / 2**20:.0f}"]
        for label, _ in trees:
            r = got[label]
            total = r["list_s"] + r["first_pass_s"]
            row += [
                fmt(r["list_s"], 2),
                fmt(r["first_pass_s"], 2),
                fmt(total, 2),
                fmt(r["cpu_s"], 2),
                ", ".join(r.get("runs", [])),
            ]
        row.append(f"{os.getloadavg()[0]:.2f}")
        rows.append(row)
    headers = ["nodes", "policies", "LIST MiB"]
    for label, _ in trees:
        headers += [
            f"{label}: LIST s",
            f"{label}: first pass s",
            f"{label}: total s",
            f"{label}: CPU s",
            f"{label}: each run, total s wall / CPU s",
        ]
    headers.append("load")
    print(table(headers, rows))


def rss_table(sizes: Sequence[int]) -> None:
    rows = []
    for r in rss_rows(sizes, 0):
        ours, script = r["noderecover"], r["script"]
        rows.append(
            [
                fmt_int(r["nodes"]),
                fmt(ours["rss_before_mib"], 1),
                fmt(ours["rss_mib"], 1),
                fmt(ours["hwm_mib"], 1),
                fmt(script["rss_before_mib"], 1),
                fmt(script["rss_mib"], 1),
                fmt(script["hwm_mib"], 1),
                f"{script['rss_mib'] / ours['rss_mib']:.1f}x",
                f"{ours['sync_s']:.2f} / {ours['sync_cpu_s']:.2f}",
                f"{script['list_s']:.2f}",
                f"{r['load']:.2f}",
            ]
        )
    headers = [
        "nodes",
        "noderecover: RSS before the LIST MiB",
        "noderecover: RSS after sync MiB",
        "noderecover: peak MiB",
        "script: RSS before MiB",
        "script: RSS holding the list MiB",
        "script: peak MiB",
        "script/noderecover (RSS after)",
        "noderecover: sync s (wall / CPU)",
        "script: list_node() s",
        "load",
    ]
    print(table(headers, rows))


if __name__ == "__main__":
    raise SystemExit(main())
