"""Time until the database is back: seconds from the kill to mysql-0's volume attached elsewhere.

A real control plane (noderecover_testkit, ``storage="csi"``: an attachable CSI driver, the
real attach/detach controller, a test-side external attacher and kubelets that report
``volumesInUse``) with **upstream kube-controller-manager timers** (node-monitor-grace-period
40 s, node-monitor-period 5 s, node Lease 40 s renewed every 10 s). Each scenario, one after
the other in the same run and cluster: reset, seed StatefulSet Running with its volume
attached, set up its proof (a BMC emulator, an EC2 instance, nothing), start the controller,
SIGKILL the kwok of mysql-0's node (its heartbeats stop; its BMC still says On), and follow
(polling every 0.1 s) until mysql-0 is back or the cap.

noderecover runs with its DEFAULT flags (``--grace 30s`` counted from the last heartbeat,
``--removal auto``, ``--drain-timeout 60s``, ``--fence-timeout 60s``); a fenced row adds only
what names its provider (``--fence-provider``, ``--fence-secret``, ``--fence-config``):

- ``liberator``: the seed script (bench/baseline_liberator.py), the baseline;
- ``none``: no proof (auto = Node delete; the volume waits Kubernetes' 6-minute hold);
- ``command``: ``--fence-command true``;
- ``redfish``: sushy-tools' emulator (fake driver: Off 1-11 s after the ForceOff);
- ``aws``: moto's EC2 server; the Node's spec.providerID names a running instance;
- ``fence-agent``: Debian's ``fence_ipmilan`` against a pyghmi BMC (tests/ipmi_bmc.py);
- ``shutdown-taint``: no fence; the bench puts ``node.cloudprovider.kubernetes.io/shutdown``
  on the Node as soon as it sees it NotReady, as the cloud-controller-manager does for a
  stopped instance (it checks NotReady nodes every node-monitor-period, 5 s);
- ``agent``: no fence provider, a ``noderecover agent`` on every worker at its default flags
  (noderecover_testkit.agents: its "reboot" and emulated watchdog power the kwok node off);
  the power loss takes the agent down with the node, and noderecover counts the node off
  after the safe time (proof ``self-fenced``);
- ``agent-partition``: the same, but the node is partitioned instead (its kubelet and agent
  cut off from the API server and the peers, its pods still running): the agent fences its
  node after its isolation timeout, noderecover after the safe time;
- ``liberator-partition``: the script against the same partition: it deletes the live Node,
  so the replacement runs while the old copy still does (two copies; counted).

A partition row starts its clock at the cut; the others at the kill. ``Copies``
(noderecover_testkit.agents) follows mysql-0's copies in every agent and partition row and
the table says whether two ever ran at once.

    .venv/bin/python -m bench.volume_bench --liberator-python .venv-liberator/bin/python
    .venv/bin/python -m bench.volume_bench --only command,redfish     # a subset
    .venv/bin/python -m bench.volume_bench \
        --only liberator,agent,agent-partition,liberator-partition  # the agent's rows

The liberator needs the sync ``kubernetes`` client, which cannot share a venv with boto3
(python-dateutil >= 3 against < 3): give it its own (docs/benchmarks.md, section 6).
Prints Markdown tables (pasted into docs/benchmarks.md, section 6).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noderecover_testkit.agents import Agents, Copies
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.volumes import RecoveryTimeline, attached_nodes, recovery_timeline

from bench.cluster_bench import Timeline, processes, reset_for_scenario, running_cluster
from bench.clusterkit import Api, Proc, WatchThread, liberator, noderecover, write_kubeconfig
from bench.common import machine, table
from noderecover.core.agent import settle_time

NODE_MONITOR_GRACE = 40.0
NODE_MONITOR_PERIOD = 5.0
LEASE_DURATION = 40.0
GRACE = 30.0  # noderecover's default --grace
KILL_PHASE = 5.0  # the kill comes this long after a heartbeat (renewals every 10 s)
TARGET = NODE_MONITOR_GRACE + 15.0  # issue 21: node-monitor-grace + 15 s at default --grace

AGENT_CHECK_INTERVAL = 5.0  # the agent's default --agent-check-interval
AGENT_SETTLE = settle_time(3 * AGENT_CHECK_INTERVAL) + 10.0  # 70 s
NAMESPACE = "noderecover"  # POD_NAMESPACE of the bench's noderecover: where the Secret is
SECRET = "bench-fence"
BMC_USER, BMC_PASSWORD = "admin", "bench-Bmc-pw-21"
SHUTDOWN_TAINT = {"key": "node.cloudprovider.kubernetes.io/shutdown", "effect": "NoSchedule"}
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    kind: str  # "liberator" | "noderecover"
    flags: tuple[str, ...] = ()
    fault: str = "power"  # "power": kwok SIGKILLed | "partition": cut off, still running
    agents: bool = False  # a noderecover agent on every worker (default flags)


FENCE = ("--fence-secret", SECRET)
SCENARIOS: list[Scenario] = [
    Scenario("liberator", "script (liberator)", "liberator"),
    Scenario("command", "command", "noderecover", ("--fence-command", "true")),
    Scenario("redfish", "redfish", "noderecover", ("--fence-provider", "redfish", *FENCE)),
    Scenario("aws", "aws", "noderecover", ("--fence-provider", "aws", *FENCE)),
    Scenario(
        "fence-agent", "fence-agent", "noderecover", ("--fence-provider", "fence-agent", *FENCE)
    ),
    Scenario("shutdown-taint", "shutdown taint", "noderecover"),
    Scenario("none", "no proof (Node delete)", "noderecover"),
    Scenario("agent", "agent, power loss", "noderecover", agents=True),
    Scenario("agent-partition", "agent, partition", "noderecover", fault="partition", agents=True),
    Scenario("liberator-partition", "script, partition", "liberator", fault="partition"),
]


@dataclass
class Result:
    key: str
    label: str
    marks: dict[str, float] = field(default_factory=dict)  # seconds after the kill
    tl: RecoveryTimeline | None = None
    note: str = ""
    two_copies: bool | None = None  # followed (agent and partition rows): ever two at once?

    @property
    def attached(self) -> float | None:
        """The measure: the new mysql-0's volume attached on its new node."""
        return self.tl.attached if self.tl is not None else None


# ------------------------------------------------------------------- noderecover's log


def _wall(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def log_marks(lines: Sequence[str], t_kill: float, node: str) -> dict[str, float]:
    """Milestones from noderecover's JSON log, in seconds after `t_kill` (wall): the first
    decision of each action for `node` (`decided <action>`), the fence's start (its confirmed
    line less its own duration), request and read-back Off."""
    out: dict[str, float] = {}

    def mark(what: str, t: float) -> None:
        out.setdefault(what, t - t_kill)

    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("ts"), str):
            continue
        t = _wall(rec["ts"])
        msg = str(rec.get("msg", ""))
        if rec.get("node") == node and isinstance(rec.get("action"), str):
            mark(f"decided {rec['action']}", t)
            if "grace timer started from the last heartbeat seen" in msg:
                mark("grace counted from the last heartbeat", t)
        if f"node {node} " not in msg:
            continue
        if msg.startswith("fence ") and " requested through " in msg:
            mark("fence requested", t)
        elif " confirmed node " in msg and " after " in msg:
            seconds = float(msg.rsplit(" after ", 1)[1].split("s", 1)[0])
            mark("fence start", t - seconds)
            mark("fence confirmed off", t)
    return out


# ------------------------------------------------------------------- proofs (set-ups)


def _secret(c: TestCluster, data: dict[str, str]) -> None:
    c.api("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    c.api("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")
    c.request(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        {"metadata": {"name": SECRET}, "stringData": data},
    )


def _annotate(c: TestCluster, node: str, address: str) -> None:
    c.request(
        "PATCH",
        f"/api/v1/nodes/{node}",
        {"metadata": {"annotations": {"noderecover.io/fence-address": address}}},
        content_type="application/merge-patch+json",
    )


def _redfish_power(url: str, uuid: str) -> str:
    import urllib.request

    req = urllib.request.Request(f"{url}/redfish/v1/Systems/{uuid}")
    token = base64.b64encode(f"{BMC_USER}:{BMC_PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as reply:
        return str(json.load(reply)["PowerState"])


@dataclass
class Proof:
    """What a scenario's proof needs while it runs: extra flags, and what to say after."""

    flags: tuple[str, ...] = ()
    after: Callable[[], str] = lambda: ""


@contextlib.contextmanager
def proof_for(key: str, c: TestCluster, node: str, tmp: Path, ec2_url: str) -> Iterator[Proof]:
    """Set up the machine side of scenario `key` for `node` (started before the kill)."""
    from tests.emulators import RedfishSystem, ipmi_bmc, sushy_emulator

    tmp.mkdir(parents=True, exist_ok=True)
    if key == "redfish":
        uuid = "bbbbbbbb-0000-4000-8000-0000000000b1"
        with sushy_emulator(tmp, [RedfishSystem(uuid, node)], BMC_USER, BMC_PASSWORD) as bmc:
            _secret(c, {"username": BMC_USER, "password": BMC_PASSWORD})
            _annotate(c, node, bmc.url)
            yield Proof(after=lambda: f"BMC power after: {_redfish_power(bmc.url, uuid)}")
    elif key == "fence-agent":
        with ipmi_bmc(tmp, BMC_USER, BMC_PASSWORD) as ipmi:
            _secret(c, {"password": BMC_PASSWORD})
            _annotate(c, node, "127.0.0.1")
            conf = tmp / "fence.json"
            conf.write_text(
                json.dumps(
                    {
                        "agent": "fence_ipmilan",
                        "sharedParameters": {
                            "--lanplus": "",
                            "--cipher": "3",
                            "--username": BMC_USER,
                            "--ipport": str(ipmi.port),
                        },
                    }
                )
            )
            yield Proof(("--fence-config", str(conf)), lambda: f"BMC power after: {ipmi.power}")
    elif key == "aws":
        ec2, instance = _ec2_instance(c, node, ec2_url)
        _secret(c, {"aws_access_key_id": "AKIDBENCH", "aws_secret_access_key": BMC_PASSWORD})
        conf = tmp / "fence.json"
        conf.write_text(json.dumps({"aws": {"endpoint": ec2_url, "region": "us-east-1"}}))

        def state() -> str:
            reply = ec2.describe_instances(InstanceIds=[instance])
            return f"instance {reply['Reservations'][0]['Instances'][0]['State']['Name']}"

        yield Proof(("--fence-config", str(conf)), state)
    else:
        yield Proof()


def _ec2_instance(c: TestCluster, node: str, url: str) -> tuple[Any, str]:
    """A running instance in moto for `node`, named by its spec.providerID (set once: the
    field is immutable, so a node that has one keeps it and its instance is started)."""
    import boto3

    ec2 = boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDBENCH",
        aws_secret_access_key="bench",
    )
    have = ((c.node(node) or {}).get("spec") or {}).get("providerID", "")
    if have:
        instance = have.rsplit("/", 1)[1]
        ec2.start_instances(InstanceIds=[instance])
    else:
        image = ec2.describe_images()["Images"][0]["ImageId"]
        reply = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        instance = reply["Instances"][0]["InstanceId"]
        c.request(
            "PATCH",
            f"/api/v1/nodes/{node}",
            {"spec": {"providerID": f"aws:///us-east-1a/{instance}"}},
            content_type="application/merge-patch+json",
        )
    return ec2, str(instance)


class ShutdownTainter(threading.Thread):
    """The cloud-controller-manager's part: the shutdown taint on the Node once it is NotReady
    (a merge patch of the whole list guarded by the resourceVersion read: the node lifecycle
    controller's own unreachable taints stay)."""

    def __init__(self, c: TestCluster, node: str, watch: Timeline) -> None:
        super().__init__(daemon=True, name="shutdown-taint")
        self.c, self.node, self.watch = c, node, watch
        self.done = threading.Event()
        self.error = ""

    def run(self) -> None:
        end = time.monotonic() + 300
        while "node NotReady" not in self.watch.marks:
            if self.done.is_set() or time.monotonic() > end:
                return
            time.sleep(0.02)
        for _ in range(20):
            n = self.c.node(self.node)
            if n is None:
                return
            taints = [*(n["spec"].get("taints") or []), SHUTDOWN_TAINT]
            rv = n["metadata"]["resourceVersion"]
            status, body = self.c.api(  # 409 when the Node changed since the read
                "PATCH",
                f"/api/v1/nodes/{self.node}",
                {"metadata": {"resourceVersion": rv}, "spec": {"taints": taints}},
            )
            if status == 200:
                self.error = ""
                self.watch.mark("shutdown taint", time.monotonic())
                return
            self.error = f"HTTP {status}: {str(body)[:300]}"
            time.sleep(0.1)


class Heartbeats:
    """The renewTime of the node's heartbeat Lease (its kwok's), from a watch."""

    def __init__(self, api: Api, node: str) -> None:
        self.renewals: list[float] = []  # wall times
        self.watch = WatchThread(api, LEASES, {"fieldSelector": f"metadata.name={node}"}, self._ev)

    def _ev(self, t: float, etype: str, obj: dict[str, Any]) -> None:
        renew = (obj.get("spec") or {}).get("renewTime")
        if isinstance(renew, str):
            self.renewals.append(_wall(renew))

    def renewal_after(self, t: float, timeout: float) -> float:
        """The first renewal (wall time) later than `t`; waits for it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            later = [r for r in self.renewals if r > t]
            if later:
                return min(later)
            time.sleep(0.02)
        raise TimeoutError(f"no heartbeat renewal after {t:.1f} within {timeout:g}s")

    def last_before(self, t: float) -> float | None:
        before = [r for r in self.renewals if r <= t]
        return max(before) if before else None


@contextlib.contextmanager
def agents_for(sc: Scenario, c: TestCluster, tmp: Path) -> Iterator[Agents]:
    """A noderecover agent on every worker at its default flags for an agent row; an empty
    harness otherwise (what ``Copies`` and a partition without agents use)."""
    tmp.mkdir(parents=True, exist_ok=True)
    workers = sorted(n for n, spec in c.nodes.items() if spec.killable) if sc.agents else []
    agents = Agents(
        c,
        tmp,
        workers,
        check_interval="",
        isolation_timeout="",
        watchdog_timeout="",
        api_timeout="",
        peer_timeout="",
    )
    try:
        if workers:
            agents.start()
        yield agents
    finally:
        for node in list(agents.partitioned):
            if c.node_alive(node):  # still cut off, never fenced: powered off after the row
                c.kill_node(node)
        agents.close()


def partition(c: TestCluster, agents: Agents, node: str) -> None:
    """Cut `node` off: its kubelet (kwok SIGSTOPped: no heartbeats, its pods still running)
    and, with agents, its agent from the API server and from every peer."""
    if node in agents.procs:
        agents.partition(node)
    else:
        with agents._lock:
            agents.partitioned.add(node)
        c.signal_component(f"kwok-{node}", signal.SIGSTOP)


# ------------------------------------------------------------------- one scenario


def run_one(
    c: TestCluster,
    api: Api,
    procs: list[Proc],
    tmp: Path,
    sc: Scenario,
    cap: float,
    ec2_url: str,
    liberator_python: str,
) -> Result:
    print(f"  {sc.label}: resetting ...", flush=True)
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
    res = Result(sc.key, sc.label)
    with (
        proof_for(sc.key, c, node, tmp / f"proof-{sc.key}", ec2_url) as proof,
        agents_for(sc, c, tmp / f"agents-{sc.key}") as agents,
    ):
        if sc.kind == "noderecover":
            proc = noderecover(
                f"vol-{sc.key}", kc, tmp, *sc.flags, *proof.flags, namespace=NAMESPACE
            )
        else:
            proc = liberator(f"vol-{sc.key}", kc, tmp, python=liberator_python)
        procs.append(proc)
        if sc.kind == "noderecover":
            proc.wait_ready(90)
        else:
            time.sleep(6)  # its first LIST
        if sc.agents:
            # The controller relies on an agent only once it has seen it renew steadily for
            # 4 Lease windows (3 check intervals each): an agent just started fences nothing
            # it can count on.
            time.sleep(AGENT_SETTLE)
        watch = Timeline(api, node, pod["metadata"]["uid"])
        watch.start()
        beats = Heartbeats(api, node)
        beats.watch.start()
        beats.watch.ready.wait(30)
        tainter = ShutdownTainter(c, node, watch) if sc.key == "shutdown-taint" else None
        copies = Copies(c, agents) if sc.agents or sc.fault == "partition" else None
        if copies is not None:
            copies.start()
        try:
            # The controller in its steady state: it has seen the node's Lease renew (its
            # heartbeat history starts at a change, never at a first read), then the kill
            # comes KILL_PHASE after a renewal (the mean phase of kwok's 10 s renewals), the
            # same for every row.
            renewed = beats.renewal_after(time.time() + 2.0, timeout=30)
            time.sleep(max(0.0, renewed + KILL_PHASE - time.time()))
            t_kill = time.time()
            watch.t0 = time.monotonic()
            if tainter is not None:
                tainter.start()
            if sc.fault == "partition":
                partition(c, agents, node)
            else:
                if node in agents.procs:
                    agents.procs[node].stop()  # the power loss takes the agent down too
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
            res.marks = dict(watch.marks)  # (the tainter's mark included)
            if (last := beats.last_before(t_kill)) is not None:
                res.marks["last heartbeat"] = last - t_kill
            if sc.kind == "noderecover":
                lines = proc.log.read_text(errors="replace").splitlines()
                res.marks.update(log_marks(lines, t_kill, node))
            if sc.fault == "partition" and node in agents.fenced:
                res.marks["node powered off by its agent"] = agents.fenced[node] - t_kill
            if copies is not None:
                copies.stop()
                res.two_copies = bool(copies.overlaps)
                if copies.overlaps:
                    first = copies.overlaps[0][0] - t_kill
                    res.note += f" TWO COPIES of mysql-0 running at once from +{first:.1f}s"
            with contextlib.suppress(Exception):
                res.note = proof.after() + res.note
            if tainter is not None and tainter.error:
                res.note += f" shutdown taint: {tainter.error}"
            if not proc.alive:
                print(f"  WARNING: {proc.name} exited early:\n{proc.tail()}", flush=True)
        finally:
            if copies is not None:
                copies.stop()
            if tainter is not None:
                tainter.done.set()
            beats.watch.stop()
            watch.stop()
            proc.stop()
    print(f"  {sc.label}: {res.tl.summary() if res.tl else '-'} {res.note}", flush=True)
    return res


# ------------------------------------------------------------------- the report


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _plus(a: float | None, b: float) -> float | None:
    return None if a is None else a + b


# (row label, how to read it off a result)
BREAKDOWN: list[tuple[str, Callable[[Result], float | None]]] = [
    ("last heartbeat (Lease renewTime)", lambda r: r.marks.get("last heartbeat")),
    ("Lease expired (+40 s)", lambda r: _plus(r.marks.get("last heartbeat"), LEASE_DURATION)),
    ("Ready=Unknown by KCM", lambda r: r.marks.get("node NotReady")),
    ("grace over (heartbeat +30 s)", lambda r: _plus(r.marks.get("last heartbeat"), GRACE)),
    ("episode start seen by noderecover", lambda r: r.marks.get("decided persist")),
    ("cordon", lambda r: r.marks.get("cordon")),
    ("shutdown taint (by the bench, as the CCM)", lambda r: r.marks.get("shutdown taint")),
    (
        "fence requested from the agent (mark)",
        lambda r: r.marks.get("decided fence") if r.key.startswith("agent") else None,
    ),
    ("node powered off by its agent", lambda r: r.marks.get("node powered off by its agent")),
    ("fence start", lambda r: None if r.key.startswith("agent") else r.marks.get("fence start")),
    ("fence confirmed off", lambda r: r.marks.get("fence confirmed off")),
    ("old pod deleted", lambda r: r.marks.get("old pod deleted")),
    ("out-of-service taint", lambda r: r.marks.get("out-of-service taint")),
    ("new pod created", lambda r: r.marks.get("new pod created")),
    ("old VolumeAttachment gone", lambda r: r.tl.old_va_gone if r.tl else None),
    ("Node deleted", lambda r: r.marks.get("node deleted")),
    ("new pod Running", lambda r: r.tl.running if r.tl else None),
]


def physical_limit(r: Result) -> float | None:
    """One KCM monitor period after the Lease expired: the earliest Ready=Unknown."""
    return _plus(r.marks.get("last heartbeat"), LEASE_DURATION + NODE_MONITOR_PERIOD)


def report(results: list[Result], cap: float) -> str:
    out: list[str] = []
    lib = next((r for r in results if r.key == "liberator" and r.attached), None)
    heads = ["seconds after the kill", *(r.label for r in results)]
    rows: list[list[str]] = [[label, *(_f(get(r)) for r in results)] for label, get in BREAKDOWN]
    rows.insert(
        5,
        [
            "grace counted from the last heartbeat?",
            *(
                "-"
                if r.key.startswith("liberator")
                else ("yes" if "grace counted from the last heartbeat" in r.marks else "no")
                for r in results
            ),
        ],
    )
    rows.append(
        [
            "**volume attached on the new node**",
            *(f"**{r.attached:.1f}**" if r.attached else f"no (> {cap:.0f})" for r in results),
        ]
    )
    rows.append(
        [
            "gap: attached - Ready=Unknown (the limit in this run)",
            *(
                _f(r.attached - r.marks["node NotReady"])
                if r.attached and "node NotReady" in r.marks
                else "-"
                for r in results
            ),
        ]
    )
    rows.append(
        [
            "gap: attached - (Lease expired + 5 s)",
            *(
                _f(r.attached - lim)
                if r.attached and (lim := physical_limit(r)) is not None
                else "-"
                for r in results
            ),
        ]
    )
    rows.append(
        [
            "two copies of mysql-0 running at once",
            *("-" if r.two_copies is None else "YES" if r.two_copies else "no" for r in results),
        ]
    )
    rows.append(
        [
            f"target <= {TARGET:.0f} s",
            *(
                "(baseline)"
                if r.key.startswith("liberator")
                else "(no proof: the hold)"
                if r.key == "none"
                else "(the agent's safe time)"
                if r.key.startswith("agent")
                else ("met" if r.attached and r.attached <= TARGET else "MISSED")
                for r in results
            ),
        ]
    )
    rows.append(
        [
            "vs the script (its time / this)",
            *(
                f"{lib.attached / r.attached:.1f}x"
                if lib is not None and lib.attached and r.attached
                else "-"
                for r in results
            ),
        ]
    )
    out.append(table(heads, rows))
    out.append("")
    for r in results:
        line = f"- {r.label}: {r.tl.summary() if r.tl else '-'}"
        if r.note:
            line += f"; {r.note.strip()}"
        out.append(line)
    return "\n".join(out)


def readme_table(results: list[Result]) -> str:
    """The short table for the README: the measure and the ratio per row."""
    lib = next((r for r in results if r.key == "liberator" and r.attached), None)
    rows = []
    for r in results:
        ratio = (
            f"{lib.attached / r.attached:.1f}x"
            if lib is not None and lib.attached and r.attached
            else "-"
        )
        rows.append([r.label, _f(r.attached), "1.0x" if r is lib else ratio])
    return table(["proof (default flags)", "volume back (s)", "vs the script"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated scenario keys")
    ap.add_argument("--cap", type=float, default=600.0, help="seconds to wait per scenario")
    ap.add_argument("--logs", default="", help="keep process logs in this folder")
    ap.add_argument(
        "--liberator-python",
        default=os.environ.get("LIBERATOR_PYTHON") or sys.executable,
        help="the interpreter that runs the script (it needs the sync kubernetes client)",
    )
    args = ap.parse_args(argv)
    keys = [k for k in args.only.split(",") if k]
    unknown = set(keys) - {s.key for s in SCENARIOS}
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    chosen = [s for s in SCENARIOS if not keys or s.key in keys]
    from tests.emulators import moto_server

    print(f"## volumes ({machine()})", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="nr-vol-bench-") as tmpname,
        running_cluster(
            workers=3,
            storage="csi",
            node_monitor_grace_period=f"{NODE_MONITOR_GRACE:.0f}s",
            node_monitor_period=f"{NODE_MONITOR_PERIOD:.0f}s",
            node_lease_duration_seconds=int(LEASE_DURATION),
        ) as c,
        processes() as procs,
    ):
        api = Api(c)
        logdir = Path(args.logs) if args.logs else Path(tmpname)
        logdir.mkdir(parents=True, exist_ok=True)
        (logdir / "moto").mkdir(exist_ok=True)
        with moto_server(logdir / "moto") as ec2:
            results = [
                run_one(c, api, procs, logdir, sc, args.cap, ec2.url, args.liberator_python)
                for sc in chosen
            ]
    print(f"\n### 6. Time until the database is back ({machine()})\n")
    print(report(results, args.cap))
    print("\nREADME:\n")
    print(readme_table(results))
    print(f"\ndone ({machine()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
