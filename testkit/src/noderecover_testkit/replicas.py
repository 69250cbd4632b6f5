"""noderecover replicas as real processes against the test cluster (used by e2e and demo).

`LeastPrivilege.setup(cluster)` applies exactly `manifests/base/{namespace,rbac}.yaml` and mints
a ServiceAccount token (TokenRequest API); every e2e replica runs with that token only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from noderecover.core.nodes import parse_time
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.processes import free_port, metric_sum, replica_argv, start

# manifests/base/{namespace,rbac}.yaml, shipped with this package (symlinks in the source
# tree, copies in a wheel), so an installed testkit applies exactly the RBAC of manifests/.
DATA = Path(__file__).resolve().parent / "data"
NAMESPACE = "noderecover"


def rbac_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in ("namespace.yaml", "rbac.yaml"):
        text = (DATA / name).read_text()
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def sa_kubeconfig(cluster: TestCluster, path: Path, server: str | None = None) -> Path:
    """Apply the manifests' RBAC and write a kubeconfig holding only the SA's token
    (``server``: another address for the API server, e.g. a fault-injecting proxy)."""
    for obj in rbac_objects():
        cluster.apply(obj)
    return token_kubeconfig(cluster, path, server or cluster.server, "noderecover", "sa")


def token_kubeconfig(
    cluster: TestCluster, path: Path, server: str, service_account: str, user: str
) -> Path:
    """A kubeconfig at ``path`` holding only a fresh token of ServiceAccount
    ``service_account`` (of noderecover's namespace), for the API server at ``server``."""
    token = cluster.request(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{service_account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200},
        },
    )["status"]["token"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": user,
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": server,
                            "certificate-authority": str(cluster.ca_file),
                        },
                    }
                ],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": user, "context": {"cluster": "test", "user": user}}],
            }
        )
    )
    return path


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` matching `labels` (0 when absent)."""
        return metric_sum(self.get("/metrics")[1], name, **labels)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        # Its whole process group (it runs in a session of its own): a replica run by
        # `buildah run` is a child of the buildah process, which a SIGKILL would orphan.
        if self.proc.poll() is None:
            self._signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            return self.proc.wait(10)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


@dataclass
class Replicas:
    """Start/stop noderecover processes; all are killed at `close()`."""

    cluster: TestCluster
    kubeconfig: Path
    workdir: Path
    started: list[Replica] = field(default_factory=list)

    def start(self, name: str, *flags: str) -> Replica:
        port = free_port()
        argv = replica_argv(
            self.kubeconfig, port, "--leader-elect", "--lease-namespace", NAMESPACE, *flags
        )
        return self.start_argv(name, argv, port)

    def start_argv(self, name: str, argv: list[str], port: int) -> Replica:
        """Start ``argv``, a replica serving HTTP on 127.0.0.1:``port`` (e.g. one run from the
        image by ``buildah run``); wait until it is ready."""
        log = self.workdir / f"{name}.log"
        proc = start(argv, log, env={"POD_NAME": name})
        r = Replica(name, proc, port, log)
        self.started.append(r)
        TestCluster.wait_for(lambda: r.alive and r.get("/readyz")[0] == 200, 30, f"{name} ready")
        return r

    def leader(self, timeout: float = 30.0) -> Replica:
        def holder() -> Replica | None:
            lease = self.cluster.get(
                f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/noderecover"
            )
            who = (lease or {}).get("spec", {}).get("holderIdentity")
            return next((r for r in self.started if r.name == who and r.alive), None)

        return TestCluster.wait_for(holder, timeout, "a noderecover leader")

    def close(self) -> None:
        for r in self.started:
            r.stop(signal.SIGKILL, timeout=10)

    def tails(self, lines: int = 40) -> str:
        out = []
        for r in self.started:
            text = r.log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {r.name} (exit {r.proc.poll()})\n" + "\n".join(text))
        return "\n".join(out)


class Timeline:
    """Polls the cluster in a thread and records when things first happened."""

    def __init__(
        self, cluster: TestCluster, node: str, pod: str = "mysql-0", interval: float = 0.2
    ) -> None:
        self.cluster, self.node, self.pod, self.interval = cluster, node, pod, interval
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.marks: dict[str, float] = {}
        self.cordoned_others: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def mark(self, what: str) -> None:
        self.marks.setdefault(what, time.monotonic() - self.t0)

    def mark_wall(self, what: str, wall: float) -> None:
        """Record something another process logged at wall time `wall`."""
        self.marks.setdefault(what, wall - self.t0_wall)

    def mark_from_log(self, replica: Replica, action: str, what: str) -> None:
        """Mark the first decision log line of `replica` with this `action`."""
        for line in replica.log_lines():
            if line.get("action") == action and (ts := parse_time(line.get("ts"))):
                self.mark_wall(what, ts)
                return

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self._poll()
            self._stop.wait(self.interval)

    def _poll(self) -> None:
        nodes = self.cluster.request("GET", "/api/v1/nodes")["items"]
        names = set()
        for n in nodes:
            name = n["metadata"]["name"]
            names.add(name)
            ready = next(
                (c["status"] for c in n["status"].get("conditions") or [] if c["type"] == "Ready"),
                None,
            )
            if name == self.node:
                if ready not in (None, "True"):
                    self.mark(f"node Ready={ready} (NotReady seen)")
                if n["spec"].get("unschedulable"):
                    self.mark("node cordoned")
                if n["metadata"].get("annotations", {}).get("noderecover.io/phase") in (
                    "Removing",
                    "Removed",
                ):
                    self.mark("drain done (phase Removing)")
            elif n["spec"].get("unschedulable"):
                self.cordoned_others.add(name)
        if self.node not in names:
            self.mark("node deleted")
        pod = self.cluster.pod(self.pod)
        if pod is not None:
            on = pod["spec"].get("nodeName")
            if pod["metadata"].get("deletionTimestamp"):
                self.mark("pod terminating")
            if on and on != self.node and pod.get("status", {}).get("phase") == "Running":
                self.mark(f"pod Running on another node ({on})")
        else:
            self.mark("old pod object gone")

    def render(self) -> str:
        rows = sorted(self.marks.items(), key=lambda kv: kv[1])
        return "\n".join(f"  {t:7.2f}s  {what}" for what, t in rows)

    def at(self, prefix: str) -> float | None:
        return next((t for k, t in self.marks.items() if k.startswith(prefix)), None)


def wait(pred: Callable[[], Any], timeout: float, desc: str) -> Any:
    return TestCluster.wait_for(pred, timeout, desc)
