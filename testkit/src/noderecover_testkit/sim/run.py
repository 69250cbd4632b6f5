"""Run seeds: one (`--seed S --verbose`, replays exactly), or many across worker processes.

    python -m noderecover_testkit.sim --seeds 2000 --jobs 2
    python -m noderecover_testkit.sim --seed 1234 --verbose
    python -m noderecover_testkit.sim --mutations          # the teeth check (mutations.py)
    python -m noderecover_testkit.sim --mutations --seeds 300 --unseen    # its soak

Workers run with PYTHONHASHSEED=0 (set iteration order is part of a run's determinism).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from noderecover_testkit.sim.loop import Deadlock, Livelock, run_virtual
from noderecover_testkit.sim.world import FAULT_KINDS, START_MONO, World, draw

REGRESSION_FILE = Path(__file__).with_name("REGRESSION_SEEDS")


@dataclass
class SeedResult:
    seed: int
    ok: bool
    invariant: str = ""
    detail: str = ""
    trace_hash: str = ""
    writes: int = 0
    requests: int = 0
    max_rate: float = 0.0
    tail: list[str] = field(default_factory=list)
    kinds: str = ""


def run_seed(
    seed: int,
    kinds: frozenset[str] | None = None,
    mutation: str | None = None,
    verbose: bool = False,
) -> SeedResult:
    if mutation:
        from noderecover_testkit.sim.mutations import apply

        undo = apply(mutation)
    else:
        undo = None
    try:
        return _run(seed, kinds, verbose)
    finally:
        if undo is not None:
            undo()


SEED_BUDGET = 20.0  # CPU seconds one seed may take before it counts as a livelock (~0.2 s)


def _run(
    seed: int, kinds: frozenset[str] | None, verbose: bool, budget: float = SEED_BUDGET
) -> SeedResult:
    if not verbose:
        logging.disable(logging.CRITICAL)
    sc, rng = draw(seed, kinds)
    holder: list[World] = []

    async def main() -> None:
        world = World(sc, rng)
        holder.append(world)
        await world.main()

    res = SeedResult(seed, True, kinds=",".join(sorted(sc.kinds)))
    try:
        run_virtual(main(), START_MONO, budget)
    except* AssertionError as eg:
        v = eg.exceptions[0]
        res.ok = False
        res.invariant = getattr(v, "invariant", type(v).__name__)
        res.detail = getattr(v, "detail", str(v))
    except* Deadlock as eg:
        res.ok, res.invariant, res.detail = False, "deadlock", str(eg.exceptions[0])
    except* Livelock as eg:
        res.ok, res.invariant, res.detail = False, "livelock", str(eg.exceptions[0])
    except* Exception as eg:
        exc = eg.exceptions[0]
        res.ok, res.invariant, res.detail = False, "crash", f"{type(exc).__name__}: {exc}"
        if verbose:
            import traceback

            traceback.print_exception(exc)
    if holder:
        o = holder[0].oracle
        res.trace_hash = hashlib.sha256("\n".join(o.writes).encode()).hexdigest()[:16]
        res.writes, res.requests, res.max_rate = len(o.writes), o.requests, o.max_rate
        res.tail = list(o.log)[-40:]
    return res


def _describe(r: SeedResult) -> str:
    lines = [f"seed {r.seed} FAILED: {r.invariant}: {r.detail}", f"  fault kinds: {r.kinds}"]
    lines += [f"    {x}" for x in r.tail]
    lines.append(f"  replay: python -m noderecover_testkit.sim --seed {r.seed} --verbose")
    return "\n".join(lines)


def _worker(argv: Sequence[str]) -> int:
    """A worker process: `--worker START STEP COUNT [--faults ...] [--mutation M]`, or
    `--worker-seeds S1,S2,...` (any seeds)."""
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=3, type=int)
    p.add_argument("--worker-seeds", default="")
    p.add_argument("--faults", default="")
    p.add_argument("--mutation", default="")
    p.add_argument("--stop-first", action="store_true")
    a = p.parse_args(argv)
    kinds = frozenset(a.faults.split(",")) if a.faults else None
    if a.worker_seeds:
        todo: Sequence[int] = [int(s) for s in a.worker_seeds.split(",")]
    else:
        start, step, count = a.worker
        todo = range(start, start + count * step, step)
    for seed in todo:
        r = run_seed(seed, kinds, a.mutation or None)
        status = "ok" if r.ok else "FAIL"
        print(f"R {seed} {status} {r.invariant or '-'} {r.max_rate:.1f}", flush=True)
        if not r.ok:
            print("# " + _describe(r).replace("\n", "\n# "), flush=True)
            if a.stop_first:
                return 1
    return 0


@dataclass
class Summary:
    seeds: int
    failures: list[tuple[int, str]]
    seconds: float
    max_rate: float


def run_many(
    seeds: Sequence[int] | range,
    jobs: int = 2,
    faults: str = "",
    mutation: str = "",
    stop_first: bool = False,
    echo: bool = True,
) -> Summary:
    """Seeds across `jobs` worker processes (PYTHONHASHSEED=0)."""
    seeds = list(seeds)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    root = str(Path(__file__).resolve().parents[4])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    procs = []
    chunks = [seeds[i::jobs] for i in range(jobs)]
    for chunk in chunks:
        if not chunk:
            continue
        step = chunk[1] - chunk[0] if len(chunk) > 1 else 1
        if chunk == list(range(chunk[0], chunk[0] + len(chunk) * step, step)):
            which = ["--worker", str(chunk[0]), str(step), str(len(chunk))]
        else:
            which = ["--worker-seeds", ",".join(map(str, chunk))]
        cmd = [sys.executable, "-m", "noderecover_testkit.sim", *which]
        if faults:
            cmd += ["--faults", faults]
        if mutation:
            cmd += ["--mutation", mutation]
        if stop_first:
            cmd.append("--stop-first")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    failures: list[tuple[int, str]] = []
    rates: list[float] = [0.0]

    def drain(proc: subprocess.Popen[str]) -> None:
        # One reader per worker, all at once: a worker whose pipe is not read blocks when it
        # fills (a failing seed prints its trace), and the jobs would run one after another.
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("#"):
                if echo:
                    print(line[2:], end="", flush=True)
                continue
            parts = line.split()
            if len(parts) != 5 or parts[0] != "R":
                continue
            if parts[2] == "FAIL":
                failures.append((int(parts[1]), parts[3]))
            rates.append(float(parts[4]))
        proc.wait()

    readers = [threading.Thread(target=drain, args=(proc,)) for proc in procs]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    failures.sort()
    max_rate = max(rates)
    return Summary(len(seeds), failures, time.perf_counter() - t0, max_rate)


def regression_seeds() -> list[int]:
    if not REGRESSION_FILE.exists():
        return []
    out = []
    for raw in REGRESSION_FILE.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(int(line))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--worker", "--worker-seeds"):
        return _worker(argv)
    p = argparse.ArgumentParser(prog="python -m noderecover_testkit.sim", description=__doc__)
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="how many seeds (default 200; with --mutations: each mutation's own seeds)",
    )
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--faults", default="", help=f"fault kinds, comma-separated: {FAULT_KINDS}")
    p.add_argument("--seed", type=int, help="replay one seed in this process")
    p.add_argument("--verbose", action="store_true", help="with --seed: logs and the trace")
    p.add_argument("--mutation", default="", help="run with one guard reverted")
    p.add_argument("--mutations", action="store_true", help="the teeth check, every mutation")
    p.add_argument("--unseen", action="store_true", help="with --mutations: the unseen ones too")
    a = p.parse_args(argv)
    kinds = frozenset(a.faults.split(",")) if a.faults else None
    if a.mutations:
        from noderecover_testkit.sim.mutations import check_all

        return check_all(seeds=a.seeds, start=a.start, jobs=a.jobs, unseen=a.unseen)
    if a.seeds is None:
        a.seeds = 200
    if a.seed is not None:
        if a.verbose:
            logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
        r = run_seed(a.seed, kinds, a.mutation or None, verbose=a.verbose)
        print(
            f"seed {r.seed}: {'ok' if r.ok else 'FAILED'} trace {r.trace_hash} "
            f"writes {r.writes} requests {r.requests} max calls/s/node {r.max_rate:.1f}"
        )
        if a.verbose or not r.ok:
            print(_describe(r) if not r.ok else "\n".join(r.tail))
        return 0 if r.ok else 1
    s = run_many(range(a.start, a.start + a.seeds), a.jobs, a.faults, a.mutation)
    rate = s.seeds / s.seconds if s.seconds else 0.0
    print(
        f"{s.seeds} seeds in {s.seconds:.1f}s ({rate:.1f} seeds/s, {a.jobs} jobs); "
        f"{len(s.failures)} failed; max API calls/s per node {s.max_rate:.1f}"
    )
    by: dict[str, list[int]] = {}
    for seed, inv in s.failures:
        by.setdefault(inv, []).append(seed)
    for inv, seeds in sorted(by.items()):
        print(f"  {inv}: {len(seeds)} seeds, e.g. {seeds[:8]}")
    return 1 if s.failures else 0
