"""One `noderecover agent` process per kwok node, each behind proxies the test can cut.

The network of each agent node N, all on 127.0.0.1:

* N -> API server: a :class:`TcpProxy` (``api[N]``); the agent's kubeconfig names it, with a
  token of the ServiceAccount of ``manifests/components/agent/rbac.yaml`` only.
* N -> peer M: one proxy per ordered pair (``peer[(N, M)]``), given to N as ``--agent-peers``
  (the agents publish no address on their Leases here, so every peer question goes through a
  proxy that a partition can cut, in both directions).

:meth:`Agents.partition` cuts a node off: its API proxy, its kwok (SIGSTOP: the kubelet's
heartbeats stop reaching the API server too, as in a real partition, while it keeps its pods)
and, unless ``peers=False``, every peer proxy to and from it. :meth:`Agents.heal` undoes it.

The agents' "reboot" is ``--agent-reboot test`` (:class:`noderecover.agent.reboot.FileAction`):
a line in a file per node, and a watchdog emulated with a feed stamp. A watcher thread acts
on the line like the node's power going off: it stops the node's kwok for good
(:meth:`TestCluster.kill_node`), stops the agent (the reboot takes it down too) and records
when (:attr:`Agents.fenced`). It is also the node's watchdog: an armed agent that has not
fed it within its timeout (stalled, hung, SIGSTOPped, killed) gets its node powered off the
same way (:attr:`Agents.bites`), as the kernel dog would reboot it - the controller trusts a
``test`` agent like a watchdog one, so the harness must keep that promise.

:class:`Copies` follows StatefulSet pods over time to check that no two copies of one pod
ever run at once: a copy runs from when it is seen Running until its node is fenced or
powered off, or until it leaves the API while its node's kubelet could still finish it (not
partitioned, alive).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from noderecover.agent.reboot import feed_file, read_feed
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.processes import free_port, start
from noderecover_testkit.proxy import TcpProxy
from noderecover_testkit.replicas import DATA, NAMESPACE, token_kubeconfig

LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"


@dataclass(frozen=True)
class PowerOff:
    """Why a node goes off: its agent fenced it (``wall``: when it wrote so), or its emulated
    watchdog bit (``late``: seconds past the timeout when seen)."""

    why: str
    wall: float | None = None
    late: float | None = None


def power_off_due(
    fence_file: Path, now: float, process_state: Callable[[], str] = lambda: "?"
) -> PowerOff | None:
    """Whether the node whose agent fences through ``fence_file`` goes off at monotonic
    ``now``: its agent wrote that it fenced, or its armed emulated watchdog was not fed within
    its timeout. None while neither."""
    if fence_file.exists():
        lines = fence_file.read_text().splitlines()
        if lines:
            data = json.loads(lines[0])
            return PowerOff(str(data.get("why", "")), wall=float(data["wall"]))
    stamp = read_feed(feed_file(fence_file))
    late = None if stamp is None else stamp.overdue(now)
    if stamp is None or late is None:
        return None
    why = (
        f"watchdog: not fed for {now - stamp.fed:.1f}s (timeout {stamp.timeout:g}s; agent "
        f"process {process_state()})"
    )
    return PowerOff(why, late=late)


def agent_rbac_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in ("namespace.yaml", "agent-rbac.yaml"):
        docs.extend(d for d in yaml.safe_load_all((DATA / name).read_text()) if d)
    return docs


def agent_kubeconfig(cluster: TestCluster, path: Path, server: str) -> Path:
    """Apply the agent's RBAC; a kubeconfig with only its ServiceAccount's token."""
    for obj in agent_rbac_objects():
        cluster.apply(obj)
    return token_kubeconfig(cluster, path, server, "noderecover-agent", "agent")


@dataclass
class AgentProc:
    node: str
    port: int
    log: Path
    fence_file: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        return body if code == 200 and isinstance(body, dict) else {}

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    out.append(data)
        return out

    def process_state(self) -> str:
        """The agent's process state letter (R, S, T: stopped, Z...), or how it ended
        ("exited 1", "killed by SIGSEGV")."""
        p = self.proc
        if p is None:
            return "never started"
        rc = p.poll()
        if rc is not None:
            return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited {rc}"
        try:
            return Path(f"/proc/{p.pid}/stat").read_text().split(")")[-1].split()[0]
        except (OSError, IndexError):
            return "gone"

    def diagnose(self) -> str:
        """Why an agent does not answer: its process state, and every thread's stack (the
        agent prints them on SIGUSR1), from its log."""
        p = self.proc
        if p is None or p.poll() is not None:
            return f"agent on {self.node} exited: {None if p is None else p.returncode}"
        try:
            state = Path(f"/proc/{p.pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError as exc:
            state = repr(exc)
        p.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])
        return f"agent on {self.node}: process state {state}\n{tail}"

    def stop(self, sig: int = signal.SIGKILL) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


@dataclass
class Agents:
    """Agents on ``nodes`` of ``cluster`` (killable kwok nodes); ``start()``, ``close()``.
    The timing defaults are the e2e tests' short ones; "" leaves a flag at the agent's
    default (the benchmarks)."""

    cluster: TestCluster
    workdir: Path
    nodes: list[str]
    check_interval: str = "1s"
    isolation_timeout: str = "6s"
    watchdog_timeout: str = "2s"
    api_timeout: str = "1s"
    peer_timeout: str = "1s"
    extra: tuple[str, ...] = ()
    procs: dict[str, AgentProc] = field(default_factory=dict)
    api: dict[str, TcpProxy] = field(default_factory=dict)
    peer: dict[tuple[str, str], TcpProxy] = field(default_factory=dict)
    #: node -> wall time its agent fenced it (the harness powered it off then)
    fenced: dict[str, float] = field(default_factory=dict)
    #: node -> the reason the agent gave ("watchdog: ..." when the emulated dog bit)
    fence_reasons: dict[str, str] = field(default_factory=dict)
    #: node -> seconds its emulated watchdog was past its timeout when the harness saw it
    bites: dict[str, float] = field(default_factory=dict)
    partitioned: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, wait_ready: bool = True) -> Agents:
        api_port = int(self.cluster.server.rsplit(":", 1)[1])
        ports = {n: free_port() for n in self.nodes}
        for n in self.nodes:
            self.api[n] = TcpProxy(api_port).start()
            for m in self.nodes:
                if m != n:
                    self.peer[(n, m)] = TcpProxy(ports[m]).start()
        for n in self.nodes:
            kc = agent_kubeconfig(
                self.cluster,
                self.workdir / f"agent-{n}.kubeconfig",
                f"https://{self.api[n].address}",
            )
            fence_file = self.workdir / f"fenced-{n}.jsonl"
            # The kwok node's boot, as its Node reports it (the agent runs on this host).
            boot = self.workdir / f"boot-id-{n}"
            node_obj = self.cluster.node(n) or {}
            boot.write_text(
                ((node_obj.get("status") or {}).get("nodeInfo") or {}).get("bootID", "")
            )
            peers = ",".join(self.peer[(n, m)].address for m in self.nodes if m != n)
            argv = [
                sys.executable,
                "-m",
                "noderecover",
                "agent",
                "--node-name",
                n,
                "--kubeconfig",
                str(kc),
                "--lease-namespace",
                NAMESPACE,
                "--http-bind",
                f"127.0.0.1:{ports[n]}",
                "--agent-reboot",
                "test",
                "--agent-test-fence-file",
                str(fence_file),
                "--agent-boot-id-file",
                str(boot),
                *self.timing_flags(),
                "--log-format",
                "json",
                "--log-level",
                "debug",
                *(["--agent-peers", peers] if peers else []),
                *self.extra,
            ]
            self.procs[n] = AgentProc(
                n, ports[n], self.workdir / f"agent-{n}.log", fence_file, argv
            )
            self.launch(n)
        self._watcher = threading.Thread(target=self._watch, name="agent-fences", daemon=True)
        self._watcher.start()
        if wait_ready:
            for n in self.nodes:
                self.cluster.wait_for(
                    lambda n=n: self._started(n),  # type: ignore[misc]
                    30,
                    f"agent on {n} healthy",
                )
        return self

    def _started(self, node: str) -> bool:
        """Healthy yet? An agent whose port was taken between :func:`free_port` and its bind
        (another test run on this host) is moved to a new port, its peers' proxies too."""
        a = self.procs[node]
        if a.proc is not None and a.proc.poll() == 2 and "cannot bind" in a.log.read_text():
            old = f"127.0.0.1:{a.port}"
            a.port = free_port()
            a.argv[a.argv.index(old)] = f"127.0.0.1:{a.port}"
            for (_, m), proxy in self.peer.items():
                if m == node:
                    proxy.target = ("127.0.0.1", a.port)
            self.launch(node)
            return False
        return a.status().get("decision") == "healthy"

    def timing_flags(self) -> list[str]:
        """The agents' timing flags; one set to "" is left out (the agent's default)."""
        pairs = (
            ("--agent-check-interval", self.check_interval),
            ("--agent-isolation-timeout", self.isolation_timeout),
            ("--agent-watchdog-timeout", self.watchdog_timeout),
            ("--api-timeout", self.api_timeout),
            ("--agent-peer-timeout", self.peer_timeout),
        )
        return [x for flag, value in pairs if value for x in (flag, value)]

    def launch(self, node: str, *argv_extra: str) -> AgentProc:
        """(Re)start the agent of ``node`` (its log appended)."""
        a = self.procs[node]
        a.starts += 1
        log_mode_path = a.log if a.starts == 1 else a.log.with_suffix(f".{a.starts}.log")
        a.proc = start([*a.argv, *argv_extra], log_mode_path)
        return a

    # ------------------------------------------------------------------ faults

    def partition(self, node: str, *, peers: bool = True) -> None:
        """Cut ``node`` off the API server (agent and kubelet); with ``peers``, also from
        every other agent, both ways."""
        with self._lock:
            self.partitioned.add(node)
        self.api[node].cut()
        if node not in self.fenced and self.cluster.node_alive(node):
            self.cluster.signal_component(f"kwok-{node}", signal.SIGSTOP)
        if peers:
            for (a, b), proxy in self.peer.items():
                if node in (a, b):
                    proxy.cut()

    def heal(self, node: str) -> None:
        if node in self.api:
            self.api[node].heal()
        for (a, b), proxy in self.peer.items():
            if node in (a, b):
                proxy.heal()
        if node not in self.fenced and self.cluster.node_alive(node):
            self.cluster.signal_component(f"kwok-{node}", signal.SIGCONT)
        with self._lock:
            self.partitioned.discard(node)

    def lease(self, node: str) -> dict[str, Any] | None:
        got: dict[str, Any] | None = self.cluster.get(f"{LEASES}/noderecover-agent-{node}")
        return got

    def renew_time(self, node: str) -> str | None:
        return ((self.lease(node) or {}).get("spec") or {}).get("renewTime")

    # ------------------------------------------------------------------ the "reboot"

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            for n, a in self.procs.items():
                if n in self.fenced:
                    continue
                got = power_off_due(a.fence_file, time.monotonic(), a.process_state)
                if got is None:
                    continue
                if got.late is not None:
                    self.stall_report(a)
                with self._lock:
                    self.fenced[n] = time.time() if got.wall is None else got.wall
                    self.fence_reasons[n] = got.why
                    if got.late is not None:
                        self.bites[n] = got.late
                # Power off: the kubelet and every container on the node, the agent too.
                with contextlib.suppress(Exception):
                    self.cluster.kill_node(n)
                a.stop()

    def stall_report(self, a: AgentProc) -> None:
        """Before the bite: where the starving agent is (every thread's stack in its log, on
        SIGUSR1; the kernel's view of each thread in ``<log>.stall``)."""
        p = a.proc
        if p is None or p.poll() is not None:
            return
        out = []
        for task in sorted(Path(f"/proc/{p.pid}/task").glob("*")):
            parts = []
            for name in ("stat", "wchan", "syscall", "stack"):
                with contextlib.suppress(OSError):
                    parts.append(f"{name}: {(task / name).read_text().strip()}")
            out.append(f"thread {task.name}\n" + "\n".join(parts))
        a.log.with_suffix(".stall").write_text("\n\n".join(out) + "\n")
        with contextlib.suppress(OSError):
            p.send_signal(signal.SIGUSR1)
        time.sleep(0.3)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        for a in self.procs.values():
            a.stop()
        for n in list(self.partitioned):
            with contextlib.suppress(Exception):
                self.heal(n)
        for proxy in [*self.api.values(), *self.peer.values()]:
            proxy.close()
        for n in self.nodes:
            self.cluster.api("DELETE", f"{LEASES}/noderecover-agent-{n}")

    def tails(self, lines: int = 30) -> str:
        out = []
        for a in self.procs.values():
            for log in sorted(a.log.parent.glob(f"agent-{a.node}*.log")):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name} (alive {a.alive})\n" + "\n".join(text))
        return "\n".join(out)


@dataclass
class Copies:
    """Samples the pods of ``namespace`` every ``period`` s and keeps, per pod name, the
    copies (pod uid, node) that run: from when seen Running until their node is fenced or
    powered off, or until the pod left the API while its node's kubelet could finish it.
    ``overlaps`` lists every moment two copies of one pod ran at once."""

    cluster: TestCluster
    agents: Agents
    namespace: str = "default"
    period: float = 0.25
    running: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> uid -> node
    overlaps: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Copies:
        self._thread = threading.Thread(target=self._run, name="copies", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _node_off(self, node: str) -> bool:
        return node in self.agents.fenced or not self.cluster.node_alive(node)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                pods = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/pods")
            except Exception:
                continue
            self.sample(pods.get("items") or [], time.time())

    def sample(self, pods: list[dict[str, Any]], now: float) -> None:
        self.samples += 1
        listed: set[str] = set()
        for pod in pods:
            meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
            name, uid, node = meta.get("name"), meta.get("uid"), spec.get("nodeName")
            if not (name and uid and node):
                continue
            listed.add(uid)
            if (pod.get("status") or {}).get("phase") == "Running" and not self._node_off(node):
                self.running.setdefault(name, {})[uid] = node
        for name, copies in self.running.items():
            for uid, node in list(copies.items()):
                if self._node_off(node):
                    del copies[uid]  # powered off: it stopped running then
                elif uid not in listed and node not in self.agents.partitioned:
                    del copies[uid]  # deleted, and its live, connected kubelet finished it
            if len(copies) > 1:
                self.overlaps.append((now, name, dict(copies)))
