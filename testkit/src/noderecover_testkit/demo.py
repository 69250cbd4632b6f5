"""`noderecover demo`: the seed's StatefulSet takeover, live, on a local real control plane.

Starts kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1
(building them from the Go module proxy the first time), creates the seed's MySQL StatefulSet,
runs two noderecover replicas, kills the node under `mysql-0` and shows the takeover.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from noderecover_testkit import build
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.processes import metric_samples
from noderecover_testkit.replicas import Replica, Replicas, Timeline, sa_kubeconfig

CLEAR = "\x1b[H\x1b[2J"


def _status(c: TestCluster) -> list[tuple[str, str, str, str]]:
    rows = []
    for n in sorted(
        c.request("GET", "/api/v1/nodes")["items"], key=lambda n: n["metadata"]["name"]
    ):
        ready = next(
            (x["status"] for x in n["status"].get("conditions") or [] if x["type"] == "Ready"), "?"
        )
        sched = "cordoned" if n["spec"].get("unschedulable") else "yes"
        phase = (n["metadata"].get("annotations") or {}).get("noderecover.io/phase", "-")
        rows.append((n["metadata"]["name"], ready, sched, phase))
    return rows


def _pod_line(c: TestCluster) -> str:
    pod = c.pod("mysql-0")
    if pod is None:
        return "mysql-0: (no pod object)"
    state = (
        "Terminating"
        if pod["metadata"].get("deletionTimestamp")
        else pod.get("status", {}).get("phase", "?")
    )
    return f"mysql-0: {state} on {pod['spec'].get('nodeName') or '(unscheduled)'}"


def _frame(c: TestCluster, tl: Timeline, node: str, leader: str) -> list[str]:
    lines = [
        f"noderecover demo - {time.monotonic() - tl.t0:5.1f}s since {node} died"
        f"        leader: {leader}",
        "",
    ]
    lines.append(f"  {'NODE':<12}{'READY':<10}{'SCHEDULABLE':<13}PHASE")
    for name, ready, sched, phase in _status(c):
        lines.append(f"  {name:<12}{ready:<10}{sched:<13}{phase}")
    lines += ["", "  " + _pod_line(c), "", "  timeline (seconds since the node died):", tl.render()]
    return lines


class Screen:
    """On a terminal: the whole frame, redrawn in place. Otherwise (CI logs, `| tee`): each
    timeline line once, as it appears, and the frame once at the end."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.printed: set[str] = set()

    def update(self, c: TestCluster, tl: Timeline, node: str, leader: str) -> None:
        if self.tty:
            self.out.write(CLEAR + "\n".join(_frame(c, tl, node, leader)) + "\n")
        else:
            for what, t in sorted(tl.marks.items(), key=lambda kv: kv[1]):
                if what not in self.printed:
                    self.printed.add(what)
                    self.out.write(f"  {t:7.2f}s  {what}\n")
        self.out.flush()

    def final(self, c: TestCluster, tl: Timeline, node: str, leader: str) -> None:
        if self.tty:
            self.update(c, tl, node, leader)
        else:
            self.out.write("\n" + "\n".join(_frame(c, tl, node, leader)) + "\n")
            self.out.flush()


def run_demo(
    grace: str = "10s", keep: bool = False, timeout: float = 240.0, out: TextIO = sys.stdout
) -> int:
    def say(msg: str) -> None:
        print(f"==> {msg}", file=out, flush=True)

    if not build.is_built():
        if shutil.which("go") is None:
            print(
                "noderecover: error: the demo needs Go to build the control plane once",
                file=sys.stderr,
            )
            return 2
        say(
            "building kube-apiserver, etcd, controller-manager, scheduler and kwok "
            "(first run only; ~10-20 minutes on 2 cores)"
        )
    bin_dir = build.ensure_built()
    say(
        "starting a control plane on 127.0.0.1 (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler, kwok)"
    )
    cluster = TestCluster(bin_dir=bin_dir, keep_tmp=keep)
    work = Path(tempfile.mkdtemp(prefix="noderecover-demo-"))
    reps: Replicas | None = None
    try:
        cluster.start()
        say(
            f"cluster up in {cluster.start_seconds:.1f}s: nodes " + ", ".join(sorted(cluster.nodes))
        )
        say("applying the seed's headless Service and StatefulSet mysql")
        cluster.apply_seed_statefulset()
        pod = cluster.wait_pod_running("mysql-0", timeout=120)
        node = pod["spec"]["nodeName"]
        say(f"mysql-0 is Running on {node} with PVC pvc-mysql-0")
        kubeconfig = cluster.kubeconfig
        kubeconfig = sa_kubeconfig(cluster, work / "sa.kubeconfig")
        say("noderecover runs with the least-privilege RBAC of manifests/")
        reps = Replicas(cluster, kubeconfig, work)
        flags = (
            "--grace",
            grace,
            "--healthy-delay",
            "5s",
            "--drain-timeout",
            "10s",
            "--lease-namespace",
            "noderecover",
            "--lease-duration",
            "6s",
            "--renew-deadline",
            "4s",
            "--retry-period",
            "1s",
        )
        for name in ("replica-a", "replica-b"):
            reps.start(name, *flags)
        leader: Replica = reps.leader()
        say(f"two replicas running; leader: {leader.name}")
        say(f"killing {node} (its kubelet stops heartbeating) ...")
        time.sleep(1.0)
        tl = Timeline(cluster, node).start()
        cluster.kill_node(node)
        tl.mark(f"{node} heartbeats stop")
        deadline = time.monotonic() + timeout
        done = False
        screen = Screen(out)
        while time.monotonic() < deadline:
            screen.update(cluster, tl, node, leader.name)
            if tl.at("pod Running on another") is not None and tl.at("node deleted") is not None:
                done = True
                break
            time.sleep(0.5)
        tl.stop()
        screen.final(cluster, tl, node, leader.name)
        print("", file=out)
        if not done:
            say(f"the takeover did not complete within {timeout:.0f}s")
            return 1
        summary(tl, leader, out)
        if keep:
            say(f"cluster kept: kubectl --kubeconfig {cluster.kubeconfig} get nodes,pods")
            say("press Ctrl-C to tear it down")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    finally:
        if reps is not None:
            reps.close()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def summary(tl: Timeline, leader: Replica, out: TextIO) -> None:
    recovered = tl.at("pod Running on another")
    notready = tl.at("node Ready=")
    if recovered is None:
        return
    print(
        f"time to recovery (heartbeats stop -> mysql-0 Running elsewhere): {recovered:.1f}s",
        file=out,
    )
    if notready is not None:
        print(
            f"  of which the node lifecycle controller noticing: {notready:.1f}s; "
            f"noderecover (grace + drain + removal): {recovered - notready:.1f}s",
            file=out,
        )
    actions: dict[str, float] = {}
    _, text = leader.get("/metrics")
    for labels, value in metric_samples(text, "noderecover_actions_total"):
        action = labels.get("action", "")
        if labels.get("result") == "ok" and not action.startswith("phase-"):
            actions[action] = actions.get(action, 0.0) + value
    print(
        "actions taken by the leader: "
        + ", ".join(f"{k}={int(v)}" for k, v in sorted(actions.items())),
        file=out,
    )
