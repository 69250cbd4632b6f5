"""`noderecover demo`: the seed's StatefulSet takeover, live, on a local real control plane,
until the database is back: `mysql-0` Running on another node with its volume attached there.

Starts kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1
(building them from the Go module proxy the first time), with an attachable CSI volume as a
cloud disk or a SAN LUN is one (see :mod:`noderecover_testkit.volumes`: the real attach/detach
controller, a test-side external attacher, the kubelets' ``volumesInUse``). Each worker node
gets a BMC: sushy-tools' Redfish emulator (:mod:`noderecover_testkit.emulators`), its address
in the Node's ``noderecover.io/fence-address`` annotation, its credentials in the Secret the
manifests' RBAC names. The demo creates the seed's MySQL StatefulSet, runs two noderecover
replicas with ``--fence-provider redfish``, kills the node under ``mysql-0`` (its kubelet stops;
its BMC still says On, as on a hung machine) and shows the takeover: noderecover powers the
node off through its BMC, reads it back Off, puts the out-of-service taint on it, and the
attach/detach controller detaches the volume at once instead of holding it 6 minutes.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from noderecover.core.nodes import parse_time
from noderecover_testkit import build
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.emulators import Redfish, RedfishSystem, sushy_emulator
from noderecover_testkit.processes import metric_samples
from noderecover_testkit.replicas import NAMESPACE, Replica, Replicas, Timeline, sa_kubeconfig
from noderecover_testkit.volumes import (
    OUT_OF_SERVICE_TAINT,
    RecoveryTimeline,
    attached_nodes,
    recovery_timeline,
)

CLEAR = "\x1b[H\x1b[2J"
#: The Secret the manifests' RBAC lets noderecover read (manifests/base/rbac.yaml).
FENCE_SECRET = "noderecover-fence"
FENCE_ADDRESS = "noderecover.io/fence-address"
BMC_USER = "admin"
#: The attach/detach controller's maxWaitForUnmountDuration (upstream: 6 minutes).
MAX_WAIT_FOR_UNMOUNT = 360.0
PVC = "pvc-mysql-0"
#: Timeline marks of the volume (prefixes, as :meth:`Timeline.at` reads them).
DETACHED = "volume detached from"
ATTACHED = "volume attached on"
BACK = "database back"
FENCE_ASKED = "noderecover fences the node"
FENCED = "BMC reads"  # the fence done: the provider read the power state back Off
TAINTED = "out-of-service taint on"


def bmc_uuid(node: str) -> str:
    """The Redfish ComputerSystem id of ``node``'s machine (stable per name)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"noderecover-demo/{node}"))


@dataclass
class Bmcs:
    """The BMC of each worker node: one sushy-tools emulator each (one machine, one BMC)."""

    by_node: dict[str, Redfish]

    def power(self, node: str) -> str:
        bmc = self.by_node.get(node)
        if bmc is None:
            return "-"
        try:
            return bmc.power(bmc_uuid(node), timeout=2.0)
        except (OSError, ValueError, KeyError):
            return "?"


def _start_bmcs(c: TestCluster, stack: contextlib.ExitStack, work: Path, password: str) -> Bmcs:
    """A BMC per killable node, its address on the Node, the credentials in the Secret."""
    out: dict[str, Redfish] = {}
    for node in sorted(n for n, spec in c.nodes.items() if spec.killable):
        tmp = work / f"bmc-{node}"
        tmp.mkdir()
        bmc = stack.enter_context(
            sushy_emulator(tmp, [RedfishSystem(bmc_uuid(node), node)], BMC_USER, password)
        )
        c.request(
            "PATCH",
            f"/api/v1/nodes/{node}",
            {"metadata": {"annotations": {FENCE_ADDRESS: bmc.url}}},
            content_type="application/merge-patch+json",
        )
        out[node] = bmc
    c.request(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": FENCE_SECRET, "namespace": NAMESPACE},
            "stringData": {"username": BMC_USER, "password": password},
        },
    )
    return Bmcs(out)


def _status(c: TestCluster, bmcs: Bmcs) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for n in sorted(
        c.request("GET", "/api/v1/nodes")["items"], key=lambda n: n["metadata"]["name"]
    ):
        name = n["metadata"]["name"]
        ready = next(
            (x["status"] for x in n["status"].get("conditions") or [] if x["type"] == "Ready"), "?"
        )
        sched = "cordoned" if n["spec"].get("unschedulable") else "yes"
        phase = (n["metadata"].get("annotations") or {}).get("noderecover.io/phase", "-")
        rows.append((name, ready, sched, bmcs.power(name), phase))
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


def _volume_line(c: TestCluster, pv: str) -> str:
    states = attached_nodes(c, pv)
    where = ", ".join(
        f"{node} ({'attached' if ok else 'attaching'})" for node, ok in sorted(states.items())
    )
    return f"{PVC} -> {pv}: " + (where or "attached nowhere")


def _frame(c: TestCluster, tl: Timeline, node: str, leader: str, bmcs: Bmcs, pv: str) -> list[str]:
    lines = [
        f"noderecover demo - {time.monotonic() - tl.t0:5.1f}s since {node} died"
        f"        leader: {leader}",
        "",
    ]
    lines.append(f"  {'NODE':<12}{'READY':<10}{'SCHEDULABLE':<13}{'POWER':<8}PHASE")
    for name, ready, sched, power, phase in _status(c, bmcs):
        lines.append(f"  {name:<12}{ready:<10}{sched:<13}{power:<8}{phase}")
    lines += [
        "",
        "  " + _pod_line(c),
        "  " + _volume_line(c, pv),
        "",
        "  timeline (seconds since the node died):",
        tl.render(),
    ]
    return lines


class Screen:
    """On a terminal: the whole frame, redrawn in place. Otherwise (CI logs, `| tee`): each
    timeline line once, as it appears, and the frame once at the end."""

    def __init__(self, out: TextIO, c: TestCluster, bmcs: Bmcs, pv: str) -> None:
        self.out = out
        self.tty = out.isatty()
        self.printed: set[str] = set()
        self.c, self.bmcs, self.pv = c, bmcs, pv

    def update(self, tl: Timeline, node: str, leader: str) -> None:
        if self.tty:
            frame = _frame(self.c, tl, node, leader, self.bmcs, self.pv)
            self.out.write(CLEAR + "\n".join(frame) + "\n")
        else:
            for what, t in sorted(tl.marks.items(), key=lambda kv: kv[1]):
                if what not in self.printed:
                    self.printed.add(what)
                    self.out.write(f"  {t:7.2f}s  {what}\n")
        self.out.flush()

    def final(self, tl: Timeline, node: str, leader: str) -> None:
        if self.tty:
            self.update(tl, node, leader)
        else:
            frame = _frame(self.c, tl, node, leader, self.bmcs, self.pv)
            self.out.write("\n" + "\n".join(frame) + "\n")
            self.out.flush()


def _adds_out_of_service(request: object) -> bool:
    """The request body puts the out-of-service taint on (a JSON patch ``add`` under
    ``/spec/taints``, or a merge patch / update whose ``spec.taints`` has it)."""
    key = OUT_OF_SERVICE_TAINT["key"]

    def has(value: object) -> bool:
        items = value if isinstance(value, list) else [value]
        return any(isinstance(x, dict) and x.get("key") == key for x in items)

    if isinstance(request, list):
        return any(
            isinstance(op, dict)
            and op.get("op") in ("add", "replace")
            and str(op.get("path", "")).startswith("/spec/taints")
            and has(op.get("value"))
            for op in request
        )
    if isinstance(request, dict):
        return has((request.get("spec") or {}).get("taints") or [])
    return False


def taint_written(c: TestCluster, node: str) -> float | None:
    """Wall time at which the API server recorded the out-of-service taint put on ``node``
    (its audit log, blocking mode: noderecover's writes with their bodies), or None. The
    taint may be on the Node for only a few milliseconds: the attach/detach controller
    detaches at once and noderecover deletes the Node right after, too fast to poll."""
    for e in c.audit_events():
        ref = e.get("objectRef") or {}
        if ref.get("resource") != "nodes" or ref.get("name") != node or ref.get("subresource"):
            continue
        if not 200 <= int((e.get("responseStatus") or {}).get("code", 0)) < 300:
            continue
        if e.get("verb") in ("patch", "update") and _adds_out_of_service(e.get("requestObject")):
            return parse_time(e.get("stageTimestamp"))
    return None


class Follow:
    """Called after every poll of :func:`~noderecover_testkit.volumes.recovery_timeline`:
    folds what it saw into the timeline's marks (the volume's detach and attach, the
    database back; the fence noderecover asked for and the BMC's power state; the
    out-of-service taint) and redraws the screen at most every ``every`` seconds."""

    def __init__(
        self,
        c: TestCluster,
        tl: Timeline,
        screen: Screen,
        node: str,
        leader: Replica,
        bmcs: Bmcs,
        every: float = 0.5,
    ) -> None:
        self.c, self.tl, self.screen, self.node, self.leader = c, tl, screen, node, leader
        self.bmcs, self.every = bmcs, every
        self.last = 0.0

    def __call__(self, rt: RecoveryTimeline, *, now: bool = False) -> None:
        tl = self.tl
        if rt.old_va_gone is not None:
            tl.mark_wall(
                f"{DETACHED} {self.node} (its VolumeAttachment gone)", rt.start + rt.old_va_gone
            )
        if rt.attached is not None:
            tl.mark_wall(f"{ATTACHED} {rt.node}", rt.start + rt.attached)
        if rt.back is not None:
            tl.mark_wall(
                f"{BACK} (mysql-0 Running on {rt.node}, its volume attached there)",
                rt.start + rt.back,
            )
        if not now and time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        if tl.at(FENCE_ASKED) is None or tl.at(FENCED) is None:
            self._fence_marks()
        if tl.at(TAINTED) is None and (when := taint_written(self.c, self.node)) is not None:
            tl.mark_wall(f"{TAINTED} {self.node}", when)
        self.screen.update(tl, self.node, self.leader.name)

    def _fence_marks(self) -> None:
        """From the leader's decision log: the fence asked for, and the fence done (the
        provider read the power state back Off)."""
        for line in self.leader.log_lines():
            if line.get("node") != self.node or (ts := parse_time(line.get("ts"))) is None:
                continue
            if line.get("action") == "fence":
                self.tl.mark_wall(f"{FENCE_ASKED} (Redfish ForceOff to its BMC)", ts)
            elif line.get("action") == "fence-done" and line.get("reason") == "ok":
                self.tl.mark_wall(f"{FENCED} {self.node} Off (the fence confirmed)", ts)


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
    cluster = TestCluster(bin_dir=bin_dir, keep_tmp=keep, storage="csi")
    work = Path(tempfile.mkdtemp(prefix="noderecover-demo-"))
    reps: Replicas | None = None
    try:
        with contextlib.ExitStack() as stack:
            cluster.start()
            say(
                f"cluster up in {cluster.start_seconds:.1f}s: nodes "
                + ", ".join(sorted(cluster.nodes))
            )
            say("applying the seed's headless Service and StatefulSet mysql")
            cluster.apply_seed_statefulset()
            pod = cluster.wait_pod_running("mysql-0", timeout=120)
            node = pod["spec"]["nodeName"]
            pv = _wait_attached(cluster, node)
            say(
                f"mysql-0 is Running on {node}; its PVC {PVC} is bound to {pv}, a CSI volume "
                f"that must be attached to the node (attachRequired), attached on {node}"
            )
            kubeconfig = sa_kubeconfig(cluster, work / "sa.kubeconfig")
            say("noderecover runs with the least-privilege RBAC of manifests/")
            bmcs = _start_bmcs(cluster, stack, work, secrets.token_urlsafe(12))
            say(
                "each worker has a BMC (sushy-tools' Redfish emulator) named by its "
                f"{FENCE_ADDRESS} annotation; credentials in Secret {NAMESPACE}/{FENCE_SECRET}"
            )
            reps = Replicas(cluster, kubeconfig, work)
            flags = (
                "--grace",
                grace,
                "--healthy-delay",
                "5s",
                "--drain-timeout",
                "10s",
                "--fence-provider",
                "redfish",
                "--fence-secret",
                FENCE_SECRET,
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
            say(f"two replicas running (--fence-provider redfish); leader: {leader.name}")
            say(f"killing {node}: its kubelet stops heartbeating, its BMC still says On ...")
            time.sleep(1.0)
            old_uid = pod["metadata"]["uid"]
            tl = Timeline(cluster, node).start()
            cluster.kill_node(node)
            tl.mark(f"{node} heartbeats stop")
            screen = Screen(out, cluster, bmcs, pv)
            follow = Follow(cluster, tl, screen, node, leader, bmcs)
            rt = recovery_timeline(
                cluster,
                "mysql-0",
                old_uid=old_uid,
                old_node=node,
                pv=pv,
                start=tl.t0_wall,
                timeout=timeout,
                on_poll=follow,
            )
            # noderecover's last step, the Node DELETE (after the detach, with the taint).
            deadline = time.monotonic() + 30
            while rt.back is not None and tl.at("node deleted") is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
                follow(rt, now=True)
            tl.stop()
            follow(rt, now=True)
            screen.final(tl, node, leader.name)
            print("", file=out)
            if rt.back is None or tl.at("node deleted") is None:
                say(f"the database was not back within {timeout:.0f}s: {rt.summary()}")
                return 1
            summary(tl, rt, leader, out)
            if keep:
                say(f"cluster kept: kubectl --kubeconfig {cluster.kubeconfig} get nodes,pods")
                for n, bmc in sorted(bmcs.by_node.items()):
                    say(f"BMC of {n}: {bmc.url}{bmc.system_path(bmc_uuid(n))}")
                _wait_for_stop(lambda: say("press Ctrl-C to tear it down"))
            return 0
    finally:
        if reps is not None:
            reps.close()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_stop(announce: Callable[[], None]) -> None:
    """``announce``, then wait until Ctrl-C or SIGTERM (both tear the cluster down). The
    handlers are in place before the announcement, and SIGINT is handled even when the demo
    was started with it ignored (as a background job of a script is)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.suppress(KeyboardInterrupt):
            announce()
            while True:
                signal.pause()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _wait_attached(c: TestCluster, node: str) -> str:
    """The PV of ``mysql-0``'s claim, once its VolumeAttachment on ``node`` is attached."""
    pvc = c.wait_for(
        lambda: (
            (p := c.get(f"/api/v1/namespaces/default/persistentvolumeclaims/{PVC}"))
            and p["status"].get("phase") == "Bound"
            and p
        ),
        60,
        f"{PVC} Bound",
    )
    pv: str = pvc["spec"]["volumeName"]
    c.wait_for(lambda: attached_nodes(c, pv) == {node: True}, 60, f"{pv} attached on {node}")
    return pv


def how_back(tl: Timeline, rt: RecoveryTimeline, fenced_by: str) -> str:
    """The step that freed the volume, from what was seen: the out-of-service taint (after
    which proof), or else the attach/detach controller's own release."""
    tainted, gone, fenced = tl.at(TAINTED), rt.old_va_gone, tl.at(FENCED)
    if tainted is not None and gone is not None and tainted <= gone:
        if fenced is not None and fenced <= tainted:
            proof = f"its {fenced_by or 'fence'} BMC read it back Off"
        else:
            proof = "it was proven off"
        return (
            f"the out-of-service taint noderecover put on {rt.old_node} once {proof}: the "
            "attach/detach controller detached the volume at once"
        )
    if gone is not None and gone >= MAX_WAIT_FOR_UNMOUNT - 60:
        return (
            f"the Node delete: the attach/detach controller held the volume on {rt.old_node} "
            "until its 6-minute maxWaitForUnmountDuration passed"
        )
    return f"a detach from {rt.old_node} without the out-of-service taint"


def summary(tl: Timeline, rt: RecoveryTimeline, leader: Replica, out: TextIO) -> None:
    recovered = tl.at("pod Running on another")
    notready = tl.at("node Ready=")
    if recovered is not None:
        print(
            f"time to recovery (heartbeats stop -> mysql-0 Running elsewhere): {recovered:.1f}s",
            file=out,
        )
    if recovered is not None and notready is not None:
        print(
            f"  of which the node lifecycle controller noticing: {notready:.1f}s; "
            f"noderecover (grace + fence + drain + removal): {recovered - notready:.1f}s",
            file=out,
        )
    actions: dict[str, float] = {}
    fences: dict[str, float] = {}
    _, text = leader.get("/metrics")
    for labels, value in metric_samples(text, "noderecover_actions_total"):
        action = labels.get("action", "")
        if labels.get("result") == "ok" and not action.startswith("phase-"):
            actions[action] = actions.get(action, 0.0) + value
    for labels, value in metric_samples(text, "noderecover_fences_total"):
        if labels.get("outcome") == "ok" and value:
            fences[labels.get("provider", "")] = value
    print(
        "actions taken by the leader: "
        + ", ".join(f"{k}={int(v)}" for k, v in sorted(actions.items())),
        file=out,
    )
    fenced_by = "Redfish" if "redfish" in fences else ", ".join(sorted(fences))
    back = tl.at(BACK)
    assert back is not None and rt.back is not None
    print(
        f"{BACK} {back:.1f}s after {rt.old_node} died: mysql-0 Running on {rt.node} with "
        f"{rt.pv} attached there; by {how_back(tl, rt, fenced_by)}",
        file=out,
    )
