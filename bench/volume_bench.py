"""Time until the database is back: mysql-0 Running elsewhere AND its volume attached there.

A real control plane (noderecover_testkit, ``storage="csi"``: an attachable CSI driver, the
real attach/detach controller, a test-side external attacher and kubelets that report
``volumesInUse``) with **upstream-default kube-controller-manager timers**
(node-monitor-grace-period 40 s, node-monitor-period 5 s, node Lease 40 s renewed every
10 s). Each scenario, one after the other in the same run and cluster: reset, seed
StatefulSet Running with its volume attached, start the controller, SIGKILL the kwok of
mysql-0's node, and follow (polling every 0.1 s) until mysql-0 is back or the cap::

    .venv/bin/python -m bench.volume_bench                      # ~30 min
    .venv/bin/python -m bench.volume_bench --only fenced,oos    # a subset (names below)

Prints Markdown tables (pasted into docs/benchmarks.md, section 6).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.volumes import RecoveryTimeline, attached_nodes, recovery_timeline

from bench.cluster_bench import Timeline, processes, reset_for_scenario, running_cluster
from bench.clusterkit import Api, Proc, liberator, noderecover, write_kubeconfig
from bench.common import machine, table

NODE_MONITOR_GRACE = 40.0

# (key, label, controller, flags)
SCENARIOS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("liberator", "liberator (seed script)", "liberator", ()),
    ("defaults", "noderecover, defaults (auto = delete)", "noderecover", ()),
    (
        "fenced",
        "noderecover --grace 10s --fence-command (auto = both)",
        "noderecover",
        ("--grace", "10s", "--fence-command", "true"),
    ),
    (
        "oos",
        "noderecover --grace 10s --removal out-of-service",
        "noderecover",
        ("--grace", "10s", "--removal", "out-of-service"),
    ),
    (
        "delete",
        "noderecover --grace 10s --removal delete",
        "noderecover",
        ("--grace", "10s", "--removal", "delete"),
    ),
]


@dataclass
class Result:
    key: str
    label: str
    marks: dict[str, float] = field(default_factory=dict)
    tl: RecoveryTimeline | None = None


def run_one(
    c: TestCluster,
    api: Api,
    procs: list[Proc],
    tmp: Path,
    key: str,
    label: str,
    kind: str,
    flags: tuple[str, ...],
    cap: float,
) -> Result:
    print(f"  {label}: resetting ...", flush=True)
    reset_for_scenario(c, api)
    c.apply_seed_statefulset()
    pod = c.wait_pod_running("mysql-0", timeout=120)
    node = pod["spec"]["nodeName"]
    pvc = c.wait_for(
        lambda: (
            (p := c.get("/api/v1/namespaces/default/persistentvolumeclaims/pvc-mysql-0"))
            and p["status"].get("phase") == "Bound"
            and p
        ),
        90,
        "pvc Bound",
    )
    pv = pvc["spec"]["volumeName"]
    c.wait_for(lambda: attached_nodes(c, pv) == {node: True}, 60, "volume attached")
    c.wait_for(
        lambda: any(
            pv in u for u in ((c.node(node) or {}).get("status", {}).get("volumesInUse") or [])
        ),
        60,
        "volume in use",
    )
    kc = write_kubeconfig(tmp / "admin.kubeconfig", c.server, c.token, c.ca_file)
    proc = (
        noderecover(f"vol-{key}", kc, tmp, *flags)
        if kind == "noderecover"
        else liberator("vol-liberator", kc, tmp)
    )
    procs.append(proc)
    if kind == "noderecover":
        proc.wait_ready(90)
    else:
        time.sleep(6)  # its first LIST
    watch = Timeline(api, node, pod["metadata"]["uid"])
    watch.start()
    res = Result(key, label)
    try:
        t_kill = time.time()
        watch.t0 = time.monotonic()
        c.kill_node(node)
        res.tl = recovery_timeline(
            c,
            "mysql-0",
            old_uid=pod["metadata"]["uid"],
            old_node=node,
            pv=pv,
            start=t_kill,
            timeout=cap,
        )
        time.sleep(1.0)
        res.marks = dict(watch.marks)
        if not proc.alive:
            print(f"  WARNING: {proc.name} exited early:\n{proc.tail()}", flush=True)
    finally:
        watch.stop()
        proc.stop()
    print(f"  {label}: {res.tl.summary() if res.tl else '-'}", flush=True)
    return res


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def report(results: list[Result], cap: float) -> None:
    print("\n### 6. Time until the database is back (seconds after the node's kwok is killed)\n")
    print(
        "kcm: upstream defaults (node-monitor-grace-period 40 s, node-monitor-period 5 s, "
        "node Lease 40 s); attachable CSI volume, real attach/detach controller\n"
    )
    rows: list[list[str]] = []
    keys: list[tuple[str, Callable[[Result], float | None]]] = [
        ("node NotReady", lambda r: r.marks.get("node NotReady")),
        ("cordon", lambda r: r.marks.get("cordon")),
        ("old pod deleted", lambda r: r.marks.get("old pod deleted")),
        ("out-of-service taint", lambda r: r.marks.get("out-of-service taint")),
        ("new pod Running", lambda r: r.tl.running if r.tl else None),
        ("Multi-Attach warning seen", lambda r: r.tl.multi_attach_seen if r.tl else None),
        ("old VolumeAttachment gone", lambda r: r.tl.old_va_gone if r.tl else None),
        ("node deleted", lambda r: r.marks.get("node deleted")),
        ("volume attached on the new node", lambda r: r.tl.attached if r.tl else None),
    ]
    for label, get in keys:
        rows.append([label, *(_f(get(r)) for r in results)])
    rows.append(
        [
            "**back (Running + attached)**",
            *(
                f"**{r.tl.back:.1f}**" if r.tl and r.tl.back is not None else f"no (> {cap:.0f})"
                for r in results
            ),
        ]
    )
    print(table(["milestone", *(r.label for r in results)], rows))
    lib = next((r for r in results if r.key == "liberator" and r.tl and r.tl.back), None)
    print()
    for r in results:
        if r.tl is None or r.tl.back is None:
            continue
        line = f"- {r.label}: back at {r.tl.back:.1f}s"
        if lib is not None and lib is not r and lib.tl and lib.tl.back:
            line += f", {lib.tl.back / r.tl.back:.2f}x the liberator's speed"
        if "10s" in r.label:
            bound = NODE_MONITOR_GRACE + 10 + 5
            line += f"; target <= node-monitor-grace + grace + 5 s = {bound:.0f}s: " + (
                "met" if r.tl.back <= bound else "MISSED"
            )
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated scenario keys")
    ap.add_argument("--cap", type=float, default=600.0, help="seconds to wait per scenario")
    ap.add_argument("--logs", default="", help="keep process logs in this folder")
    args = ap.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s[0] in args.only.split(",")]
    print(f"## volumes ({machine()})", flush=True)
    with (
        running_cluster(
            workers=3,
            storage="csi",
            node_monitor_grace_period=f"{NODE_MONITOR_GRACE:.0f}s",
            node_monitor_period="5s",
            node_lease_duration_seconds=40,
        ) as c,
        processes() as procs,
        tempfile.TemporaryDirectory(prefix="nr-vol-bench-") as tmpname,
    ):
        api = Api(c)
        logdir = Path(args.logs) if args.logs else Path(tmpname)
        logdir.mkdir(parents=True, exist_ok=True)
        results = [
            run_one(c, api, procs, logdir, key, label, kind, flags, args.cap)
            for key, label, kind, flags in chosen
        ]
    report(results, args.cap)
    print(f"\ndone ({machine()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
