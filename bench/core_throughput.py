"""In-process core throughput: parsing + state machine, memory per node, initial sync.

    .venv/bin/python -m bench.core_throughput [--quick] [--full] [--profile]

Synthetic ~7 KB Nodes (bench/nodegen.py) go through noderecover's code, and through
kubernetes_asyncio's V1Node models as the baseline, in the same process and run:

(a) watch-event lines/s: ``orjson.loads`` + ``parse_node`` + ``decide`` (the per-event hot
    path); the Watcher's own ``_handle`` into ``NodeView.event``; and the realistic
    loop with the leader's pass (``Controller.decide_changed()``, issue 24) after every event /
    every 100 events; (a') a full pass (``decide_all()``: the first of a term, after a
    re-list) over views of 1,000 to 50,000 nodes. Baselines:
    ``json.loads`` + ``ApiClient.__deserialize(obj, "V1Node")``, and kubernetes_asyncio's
    ``Watch.unmarshal_event(line, "V1Node")`` (what a ``watch.stream`` loop does per event).
(b) memory per tracked node (tracemalloc, after gc) at 5,000 and 50,000 nodes: the
    Controller's ``nodes`` dict of NodeObs, vs keeping the raw dicts, vs V1Node models.
(c) initial sync of a 5,000-node LIST (10 pages of 500, as the Watcher asks): bytes ->
    orjson -> parse -> store, through ``Watcher._list`` with an in-memory API; vs
    ``ApiClient.deserialize(page, "V1NodeList")`` for the same pages. The Watcher pauses the
    cyclic GC during its LIST (base.gcpause, issue 24) in every row; "heap not frozen": the
    start-up heap without `entry.app`'s gc.freeze() and gen-0 threshold.

Targets (issue 6): >= 20,000 node events/s; initial sync of 5,000 nodes <= 1 s.
Rates are medians of 5 runs of >= 0.5 s each (3 runs with --quick).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, cast

import anyio
import orjson
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.watch import Watch

from bench.common import fmt, fmt_int, machine, median_rate, median_time, table
from bench.nodegen import ListApi, event_line, list_pages, make_node
from noderecover.base.clock import SystemClock
from noderecover.controller.reconciler import Controller
from noderecover.core.machine import Gates, Record, decide
from noderecover.core.nodes import NodeObs, parse_node
from noderecover.entry.config import Config
from noderecover.kube import watching
from noderecover.kube.client import KubeClient

DISTINCT = 1000  # distinct nodes the event stream cycles through
SICK_EVERY = 50  # every 50th node is NotReady / Unknown (2 %, below the breaker's 40 %)


def _ready(i: int) -> str:
    if i % SICK_EVERY == 0:
        return "Unknown" if i % (2 * SICK_EVERY) == 0 else "False"
    return "True"


def event_lines(count: int = DISTINCT) -> list[bytes]:
    """MODIFIED events (heartbeats) for nodes 0..count-1, as a watch stream sends them."""
    return [
        event_line("MODIFIED", make_node(i, ready=_ready(i), rv=10_000 + i)) for i in range(count)
    ]


def new_controller(api: object, cfg: Config) -> Controller:
    return Controller(cast(KubeClient, api), SystemClock(), cfg)


def fill_view(ctrl: Controller, n: int) -> None:
    """Put n nodes in the controller's view, as after a LIST, and mark the watch fresh."""
    items = []
    for i in range(n):
        obs = ctrl.view.parse(make_node(i, ready=_ready(i)))
        items.append((obs.name, obs))
    ctrl.view.resync(items)
    ctrl.node_watcher.synced = True
    ctrl.node_watcher.last_progress = time.monotonic() + 3600  # fresh for the whole run


# ---------------------------------------------------------------------------- (a) events


def bench_events(api: ApiClient, watch: Watch, lines: list[bytes], repeat: int) -> list[list[str]]:
    cfg = Config()
    keep_labels = cfg.relevant_labels
    keep_conditions = frozenset({"Ready"} | {t for t, _ in cfg.unhealthy_conditions})
    gates = Gates()
    records: dict[str, Record] = {}
    now = time.time()

    def hot() -> int:
        for line in lines:
            obs = parse_node(orjson.loads(line)["object"], keep_labels, keep_conditions)
            rec = records.get(obs.name) or Record(uid=obs.uid)
            records[obs.name] = decide(rec, obs, now, cfg, gates).record
        return len(lines)

    deserialize = cast(Any, api)._ApiClient__deserialize

    def models(batch: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            for line in batch:
                deserialize(json.loads(line)["object"], "V1Node")
            return len(batch)

        return run

    def unmarshal(batch: list[bytes]) -> Callable[[], int]:
        def run() -> int:
            for line in batch:
                watch.unmarshal_event(line, "V1Node")
            return len(batch)

        return run

    def controller(view: int, every: int) -> Callable[[], int]:
        ctrl = new_controller(object(), cfg)
        fill_view(ctrl, view)
        handle = ctrl.node_watcher._handle
        ctrl.decide_all()  # the first pass of a term decides every node
        reconcile = ctrl.decide_changed  # the leader's pass (issue 24: what changed)

        def run() -> int:
            if every == 0:
                for line in lines:
                    handle(line)
                return len(lines)
            done = 0
            for start in range(0, len(lines), every):
                for line in lines[start : start + every]:
                    handle(line)
                reconcile()
                done += min(every, len(lines) - start)
                if every == 1 and done >= 50:
                    break  # short batches: keeps a slow reconcile bounded in time
            return done

        return run

    small = lines[:100]
    cases: list[tuple[str, Callable[[], int]]] = [
        ("noderecover hot path: orjson.loads + parse_node + decide", hot),
        ("noderecover Watcher._handle -> NodeView.event (view 5,000)", controller(5000, 0)),
        ("  + Controller.decide_changed() every 100 events (view 5,000)", controller(5000, 100)),
        ("  + Controller.decide_changed() every event (view 1,000)", controller(1000, 1)),
        ("  + Controller.decide_changed() every event (view 5,000)", controller(5000, 1)),
        ("baseline: json.loads + ApiClient.__deserialize(V1Node)", models(small)),
        ("baseline: kubernetes_asyncio Watch.unmarshal_event(V1Node)", unmarshal(small)),
    ]
    results = []
    for name, run in cases:
        gc.collect()
        rate, _ = median_rate(run, repeat=repeat)
        results.append((name, rate))
    base = results[-2][1]
    rows = []
    for name, rate in results:
        rows.append([name, fmt_int(rate), fmt(1e6 / rate), f"{rate / base:.1f}x"])
    return rows


def bench_reconcile(repeat: int, views: Sequence[int]) -> list[list[str]]:
    """Cost of one Controller.decide_all() pass over the whole view (2 % unhealthy)."""
    cfg = Config()
    rows = []
    for n in views:
        ctrl = new_controller(object(), cfg)
        fill_view(ctrl, n)
        ctrl.decide_all()
        t, _ = median_time(lambda c=ctrl: c.decide_all(), repeat=repeat)  # type: ignore[misc]
        rows.append([fmt_int(n), fmt(t * 1e3, 3), fmt(t * 1e6 / n, 3)])
        del ctrl
        gc.collect()
    return rows


# ---------------------------------------------------------------------------- (b) memory


def tracked_bytes(n: int, kind: str, api: ApiClient | None) -> float:
    """Python heap held by a dict of n tracked nodes (tracemalloc, after gc), per node."""
    cfg = Config()
    keep_labels = cfg.relevant_labels
    keep_conditions = frozenset({"Ready"} | {t for t, _ in cfg.unhealthy_conditions})
    deserialize = cast(Any, api)._ApiClient__deserialize if api is not None else None
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store: dict[str, object] = {}
    for i in range(n):
        raw = orjson.loads(orjson.dumps(make_node(i, ready=_ready(i))))
        name = raw["metadata"]["name"]
        if kind == "NodeObs":
            obs: NodeObs = parse_node(raw, keep_labels, keep_conditions)
            store[obs.name] = obs
        elif kind == "raw dict":
            store[name] = raw
        else:
            assert deserialize is not None
            store[name] = deserialize(raw, "V1Node")
        del raw
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del store
    gc.collect()
    return held / n


def bench_memory(api: ApiClient, sizes: Sequence[int], full: bool) -> list[list[str]]:
    rows = []
    for n in sizes:
        per: dict[str, float | None] = {}
        for kind in ("NodeObs", "raw dict", "V1Node"):
            big = n > 5000
            if big and kind == "V1Node" and not full:
                per[kind] = None
                continue
            per[kind] = tracked_bytes(n, kind, api)
        obs = per["NodeObs"]
        assert obs is not None
        cells = [fmt_int(n), fmt_int(obs), fmt(obs * n / 2**20)]
        for kind in ("raw dict", "V1Node"):
            v = per[kind]
            cells += ["not run (--full)"] * 2 if v is None else [fmt_int(v), f"{v / obs:.0f}x"]
        rows.append(cells)
    return rows


# ---------------------------------------------------------------------------- (c) initial sync


async def bench_sync(api: ApiClient, n: int, repeat: int) -> tuple[list[list[str]], float]:
    cfg = Config()
    bodies = [orjson.dumps(make_node(i, ready=_ready(i))) for i in range(n)]
    pages = list_pages(bodies, 500)
    size = sum(len(p) for p in pages)

    keep_labels = cfg.relevant_labels
    keep_conditions = frozenset({"Ready"} | {t for t, _ in cfg.unhealthy_conditions})

    def loads_only() -> None:
        for p in pages:
            orjson.loads(p)

    def loads_parse() -> None:
        for p in pages:
            for raw in orjson.loads(p)["items"]:
                parse_node(raw, keep_labels, keep_conditions)

    async def sync(page_size: int, tuned_gc: bool = False) -> tuple[float, float]:
        """Median (Watcher._list, first reconcile) seconds with pages of page_size; with
        tuned_gc, the start-up heap frozen (gc.freeze) and the gen-0 threshold at 10,000."""
        paged = pages if page_size == 500 else list_pages(bodies, page_size)
        saved = watching.PAGE_SIZE
        watching.PAGE_SIZE = page_size
        threshold = gc.get_threshold()
        if tuned_gc:
            gc.freeze()
            gc.set_threshold(10_000, threshold[1], threshold[2])
        lists: list[float] = []
        firsts: list[float] = []
        try:
            for _ in range(repeat):
                ctrl = new_controller(ListApi(paged, page_size), cfg)
                gc.collect()
                t0 = time.perf_counter()
                await ctrl.node_watcher._list()
                t1 = time.perf_counter()
                ctrl.decide_all()
                t2 = time.perf_counter()
                assert len(ctrl.nodes) == n, len(ctrl.nodes)
                lists.append(t1 - t0)
                firsts.append(t2 - t1)
                del ctrl
        finally:
            watching.PAGE_SIZE = saved
            if tuned_gc:
                gc.set_threshold(*threshold)
                gc.unfreeze()
        return statistics.median(lists), statistics.median(firsts)

    t_list, t_first = await sync(500)
    t_list100, _ = await sync(100)
    t_tuned500, t_first_tuned = await sync(500, tuned_gc=True)
    t_tuned, _ = await sync(100, tuned_gc=True)

    def models() -> None:
        for p in pages:
            api.deserialize(cast(Any, SimpleNamespace(data=p)), "V1NodeList")

    t_loads, _ = median_time(loads_only, repeat=repeat)
    t_parse, _ = median_time(loads_parse, repeat=repeat)
    t_models, _ = median_time(models, repeat=max(1, repeat - 2))
    rows = [
        ["orjson.loads of the pages only", fmt(t_loads * 1e3), f"{t_models / t_loads:.1f}x"],
        ["orjson.loads + parse_node", fmt(t_parse * 1e3), f"{t_models / t_parse:.1f}x"],
        [
            "Watcher._list (loads + parse + store), pages of 500, heap not frozen",
            fmt(t_list * 1e3),
            f"{t_models / t_list:.1f}x",
        ],
        ["  then the first Controller.decide_all()", fmt(t_first * 1e3), ""],
        [
            "Watcher._list, pages of 100, heap not frozen",
            fmt(t_list100 * 1e3),
            f"{t_models / t_list100:.1f}x",
        ],
        [
            "Watcher._list, pages of 500, gc.freeze() + gen-0 threshold 10,000",
            fmt(t_tuned500 * 1e3),
            f"{t_models / t_tuned500:.1f}x",
        ],
        [
            "Watcher._list, pages of 100, gc.freeze() + gen-0 threshold 10,000",
            fmt(t_tuned * 1e3),
            f"{t_models / t_tuned:.1f}x",
        ],
        ["baseline: ApiClient.deserialize(page, V1NodeList)", fmt(t_models * 1e3), "1.0x"],
    ]
    print(f"\nLIST body: {n:,} nodes in {len(pages)} pages, {size / 2**20:.1f} MiB")
    return rows, t_tuned500 + t_first_tuned


# ---------------------------------------------------------------------------- main


def profile_hot(lines: list[bytes]) -> None:
    from pyinstrument import Profiler  # optional: pip install pyinstrument

    cfg = Config()
    ctrl = new_controller(object(), cfg)
    fill_view(ctrl, 5000)
    prof = Profiler(interval=0.0002)
    prof.start()
    for _ in range(3):
        for start in range(0, len(lines), 100):
            for line in lines[start : start + 100]:
                ctrl.node_watcher._handle(line)
            ctrl.decide_all()
    prof.stop()
    print(prof.output_text(unicode=False, color=False, show_all=False))


async def amain(args: argparse.Namespace) -> int:
    repeat = 3 if args.quick else 5
    print(f"# core throughput ({machine()})")
    api = ApiClient()
    watch = Watch()
    try:
        lines = event_lines()
        sizes = {len(x) for x in lines[:5]}
        print(
            f"\n(a) watch events: {len(lines):,} distinct MODIFIED lines of {min(sizes):,}-"
            f"{max(sizes):,} bytes, 2 % of nodes unhealthy\n"
        )
        rows = bench_events(api, watch, lines, repeat)
        print(table(["path", "events/s", "µs/event", "vs V1Node"], rows))
        print("\nController.decide_all(), one full pass (2 % of the view unhealthy):\n")
        views = (1000, 5000) if args.quick else (1000, 5000, 50000)
        print(table(["nodes in view", "ms/pass", "µs/node"], bench_reconcile(repeat, views)))

        print("\n(b) memory per tracked node (tracemalloc, Python heap after gc)\n")
        msizes = (5000,) if args.quick else (5000, 50000)
        print(
            table(
                [
                    "nodes",
                    "NodeObs B/node",
                    "NodeObs MiB total",
                    "raw dict B/node",
                    "raw/NodeObs",
                    "V1Node B/node",
                    "V1Node/NodeObs",
                ],
                bench_memory(api, msizes, args.full),
            )
        )

        print("\n(c) initial sync")
        rows, total = await bench_sync(api, 5000, repeat)
        print()
        print(table(["step (5,000 nodes)", "ms", "V1Node time / this"], rows))
        print(
            f"\ninitial sync incl. first reconcile (pages of 500, gc tuned as in app.run): "
            f"{total * 1e3:.0f} ms (target <= 1,000 ms)"
        )
        if args.profile:
            print("\nprofile: Watcher._handle x 100 + reconcile, view 5,000\n")
            profile_hot(lines)
    finally:
        await watch.close()
        await api.close()
    print(f"\ndone ({machine()})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="3 repeats, fewer sizes")
    parser.add_argument("--full", action="store_true", help="also V1Node memory at 50,000")
    parser.add_argument("--profile", action="store_true", help="pyinstrument the event loop path")
    args = parser.parse_args()
    return anyio.run(amain, args)


if __name__ == "__main__":
    raise SystemExit(main())
