"""A real, throwaway Kubernetes control plane on 127.0.0.1 for end-to-end tests.

etcd, kube-apiserver, kube-controller-manager (real node lifecycle, StatefulSet, PodGC,
attach/detach and PV controllers), kube-scheduler and kwok (simulated kubelets) run as local
processes built by :mod:`noderecover_testkit.build`. Every process listens on 127.0.0.1
on a port picked at run time; certificates, tokens, kubeconfigs, data and logs live in a
temporary folder that :meth:`TestCluster.stop` removes.

Nodes come in two kinds:

* *killable* nodes each have their own kwok process (``--manage-single-node``); stopping it
  stops the node's Lease renewals like a powered-off kubelet, so the real node lifecycle
  controller marks the node ``Ready=Unknown`` after ``--node-monitor-grace-period``;
* *ordinary* nodes are all served by one shared kwok process.

The harness talks to the API with the standard library only (``urllib`` + ``ssl``); the
certificates are made with the ``cryptography`` package.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import build
from .fixtures import rfc3339
from .processes import free_port
from .volumes import (
    ATTACH_DETACH_ANNOTATION,
    CSI_DRIVER,
    CSI_STORAGE_CLASS,
    VOLUME_ATTACHMENTS,
    ExternalAttacher,
    VolumesInUseReporter,
    csi_driver_object,
    csi_node_object,
)

T = TypeVar("T")

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: Label that gives a node its own kwok process (value: node name).
KWOK_GROUP_LABEL = "noderecover.test/kwok-group"
#: Label put on every object the harness creates so :meth:`TestCluster.reset` finds them.
HARNESS_LABEL = "noderecover.test/harness"
WORKER_ROLE_LABEL = "node-role.kubernetes.io/worker"
CONTROL_PLANE_ROLE_LABEL = "node-role.kubernetes.io/control-plane"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
STORAGE_CLASS = "local-wffc"
#: What ``TestCluster(storage=...)`` accepts: hostPath PVs, attachable CSI PVs, or both.
STORAGE_KINDS = ("hostpath", "csi", "both")

CONTROL_PLANE_TAINT: dict[str, str] = {
    "key": CONTROL_PLANE_ROLE_LABEL,
    "effect": "NoSchedule",
}

#: What the API server audits (ResponseComplete stage only): every write, with its request
#: body, by a ServiceAccount of the ``noderecover`` namespace (the controller under test), every
#: deletion of a PVC or PV by anyone, and nothing else.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {
            "level": "Metadata",
            "resources": [
                {"group": "", "resources": ["persistentvolumeclaims", "persistentvolumes"]}
            ],
            "verbs": ["delete", "deletecollection"],
        },
        {
            "level": "Request",
            "userGroups": ["system:serviceaccounts:noderecover"],
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {"level": "None"},
    ],
}

_LIVE: weakref.WeakSet[TestCluster] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop()


atexit.register(_stop_all_at_exit)


class ClusterError(RuntimeError):
    """The cluster could not be started, or an API call failed unexpectedly."""


class ApiError(ClusterError):
    """A non-2xx answer from the API server."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        msg = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> {status}: {msg}")
        self.status = status
        self.body = body


def port_is_listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _set_pdeathsig() -> None:
    """In the child: die with SIGKILL if the parent (the test process) dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class _Proc:
    name: str
    args: list[str]
    log_path: Path
    ports: tuple[int, ...] = ()
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, env: Mapping[str, str] | None = None) -> None:
        if self.running():
            return
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n==== start #{self.starts}: {' '.join(self.args)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # PR_SET_PDEATHSIG fires when the forking *thread* ends: only from the main
                # thread, or a kwok started from a worker thread would die with that thread.
                preexec_fn=(  # noqa: PLW1509
                    _set_pdeathsig
                    if threading.current_thread() is threading.main_thread()
                    else None
                ),
                env=dict(env) if env is not None else None,
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, *, sigkill_first: bool = False, timeout: float = 10.0) -> None:
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if sigkill_first:
                    # A power-off: SIGKILL ends even a paused (SIGSTOP) process, and no code
                    # of it runs again. (Resumed first, a frozen kwok sent one more overdue
                    # Lease renewal before the kill landed: a heartbeat after the power-off.)
                    os.killpg(p.pid, signal.SIGKILL)
                else:
                    os.killpg(p.pid, signal.SIGTERM)  # pending while paused, then
                    os.killpg(p.pid, signal.SIGCONT)  # handled once resumed
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=timeout)
        # Whatever else is left in the process group (nothing, normally).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)

    def tail(self, lines: int) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class NodeSpec:
    """What the harness remembers about a node it created (to restore it on reset)."""

    name: str
    killable: bool
    labels: dict[str, str]
    taints: list[dict[str, str]] = field(default_factory=list)
    baseline: bool = False


class TestCluster:
    """A real control plane + kwok nodes; a context manager and a pytest fixture value.

    ``TestCluster(...).start()`` returns once the API is ready, every component is healthy,
    the baseline nodes (one control-plane node ``cp-0`` and ``workers`` killable worker
    nodes ``worker-0``...) are Ready and the storage exists.

    ``storage`` picks the PersistentVolumes: ``"hostpath"`` (default: StorageClass
    ``local-wffc`` with ``pv_count`` hostPath PVs, which nothing attaches), ``"csi"``
    (StorageClass ``csi-wffc`` with ``pv_count`` PVs of the attachable CSI driver
    ``attach.noderecover.test``: see :mod:`noderecover_testkit.volumes`) or ``"both"``.
    With CSI, every node carries ``volumes.kubernetes.io/controller-managed-attach-detach``
    and has a CSINode listing the driver, and two harness threads run while the cluster
    does: :attr:`attacher` (the external attacher) and :attr:`volumes_in_use` (the live
    kubelets' ``status.volumesInUse``). The seed StatefulSet uses ``csi-wffc`` when
    ``storage="csi"``, ``local-wffc`` otherwise (:meth:`apply_seed_statefulset` can pick).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        workers: int = 3,
        pv_count: int = 3,
        node_monitor_grace_period: str = "10s",
        node_monitor_period: str = "1s",
        node_lease_duration_seconds: int = 20,
        keep_tmp: bool | None = None,
        build_if_missing: bool = True,
        start_timeout: float = 120.0,
        apiserver_args: Iterable[str] = (),
        storage: str = "hostpath",
        attacher_finalizer: bool = False,
    ) -> None:
        if storage not in STORAGE_KINDS:
            raise ValueError(f"storage must be one of {STORAGE_KINDS}, not {storage!r}")
        self.storage = storage
        self.bin_dir = bin_dir
        self.workers = workers
        self.pv_count = pv_count
        self.node_monitor_grace_period = node_monitor_grace_period
        self.node_monitor_period = node_monitor_period
        self.node_lease_duration_seconds = node_lease_duration_seconds
        if keep_tmp is None:
            keep_tmp = os.environ.get("NODERECOVER_KEEP_TMP", "") not in ("", "0")
        self.keep_tmp = keep_tmp
        self.build_if_missing = build_if_missing
        self.start_timeout = start_timeout
        self.apiserver_args = list(apiserver_args)

        self.tmp_dir: Path = Path()
        self.server = ""
        self.token = ""
        self.ports: dict[str, int] = {}
        self.start_seconds = 0.0
        self._procs: dict[str, _Proc] = {}
        self._nodes: dict[str, NodeSpec] = {}
        self._disturbed = False  # an API server / etcd fault since the last heal()
        #: (wall time, node, kubelet running) each time the harness powered a node off/on.
        self.power_log: list[tuple[float, str, bool]] = []
        self._ssl: ssl.SSLContext | None = None
        self._started = False
        #: The test-side CSI external attacher (None without CSI storage).
        self.attacher: ExternalAttacher | None = None
        #: The test-side kubelets' ``status.volumesInUse`` reporter (None without CSI).
        self.volumes_in_use: VolumesInUseReporter | None = None
        if self.csi:
            self.attacher = ExternalAttacher(self, finalizer=attacher_finalizer)
            self.volumes_in_use = VolumesInUseReporter(self)

    # ------------------------------------------------------------------ properties

    @property
    def csi(self) -> bool:
        """True when the cluster has the attachable CSI volumes (``storage`` csi/both)."""
        return self.storage in ("csi", "both")

    @property
    def seed_storage_class(self) -> str:
        """The StorageClass of the seed StatefulSet by default."""
        return CSI_STORAGE_CLASS if self.storage == "csi" else STORAGE_CLASS

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (user ``admin`` in group ``system:masters``, CA-verified TLS)."""
        return self.tmp_dir / "kubeconfig" / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        """CA certificate that signed the apiserver's serving certificate."""
        return self.tmp_dir / "pki" / "ca.crt"

    @property
    def log_dir(self) -> Path:
        """Folder of the per-process log files."""
        return self.tmp_dir / "logs"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines; see :data:`AUDIT_POLICY`). It survives
        API server restarts: each start appends to it."""
        return self.log_dir / "audit.log"

    @property
    def nodes(self) -> dict[str, NodeSpec]:
        """Nodes created by the harness, by name (a copy)."""
        return dict(self._nodes)

    def binary(self, name: str) -> Path:
        """Path of one built binary (``kubectl``, ``kube-apiserver`` ...)."""
        assert self.bin_dir is not None
        return self.bin_dir / name

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> TestCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            print(self.log_tails(), file=sys.stderr)
        self.stop()

    def start(self) -> TestCluster:
        """Start every component and the baseline nodes; on failure stop all and raise."""
        if self._started:
            return self
        t0 = time.monotonic()
        if self.bin_dir is None:
            if self.build_if_missing:
                self.bin_dir = build.ensure_built()
            else:
                self.bin_dir = build.bin_dir()
        missing = build.missing(self.bin_dir)
        if missing:
            raise ClusterError(
                f"binaries missing in {self.bin_dir}: {missing}; "
                "run `python -m noderecover_testkit build`"
            )
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="noderecover-cluster-"))
        self._started = True
        _LIVE.add(self)
        try:
            self._write_config()
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
            self._start_main_kwok()
            self._wait_healthy()
            self._create_baseline()
            for loop in (self.attacher, self.volumes_in_use):
                if loop is not None:
                    loop.start()
        except BaseException:
            print(self.log_tails(), file=sys.stderr)
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """SIGTERM then SIGKILL every process group, check their ports are closed and
        remove the temporary folder (kept if ``keep_tmp``). Idempotent."""
        if not self._started:
            return
        self._started = False
        _LIVE.discard(self)
        for loop in (self.attacher, self.volumes_in_use):
            if loop is not None:
                loop.stop()
        order = [n for n in self._procs if n.startswith("kwok")]
        order += ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        for name in order:
            proc = self._procs.get(name)
            if proc is not None:
                proc.stop()
        ports = [p for proc in self._procs.values() for p in proc.ports]
        deadline = time.monotonic() + 10
        still = [p for p in ports if port_is_listening(p)]
        while still and time.monotonic() < deadline:
            time.sleep(0.2)
            still = [p for p in still if port_is_listening(p)]
        alive = [p.name for p in self._procs.values() if p.running()]
        if self.keep_tmp:
            print(f"[testcluster] kept {self.tmp_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        if alive or still:
            raise ClusterError(f"teardown left processes {alive} / listening ports {still}")

    def processes(self) -> dict[str, int | None]:
        """Name -> pid of each process (None when it is not running)."""
        return {
            n: (p.popen.pid if p.popen is not None and p.running() else None)
            for n, p in self._procs.items()
        }

    # ------------------------------------------------------------------ faults

    def _component(self, name: str) -> _Proc:
        proc = self._procs.get(name)
        if proc is None:
            raise ClusterError(f"no component {name!r}; have {sorted(self._procs)}")
        return proc

    def signal_component(self, name: str, sig: int) -> None:
        """Send ``sig`` to a component's process group (``kube-apiserver``, ``etcd``, ...):
        ``SIGSTOP`` freezes it (connections stay open, nothing answers), ``SIGCONT`` thaws."""
        proc = self._component(name)
        if proc.popen is None or not proc.running():
            raise ClusterError(f"{name} is not running")
        if name in ("kube-apiserver", "etcd"):
            self._disturbed = True
        os.killpg(proc.popen.pid, sig)

    def kill_component(self, name: str) -> None:
        """SIGKILL a component (no graceful shutdown) and wait until it is gone."""
        if name in ("kube-apiserver", "etcd"):
            self._disturbed = True
        self._component(name).stop(sigkill_first=True)

    def restart_component(self, name: str, timeout: float = 90.0) -> None:
        """Start a stopped/killed component again with the same arguments and wait until it
        answers its health check."""
        proc = self._component(name)
        env = self._kwok_env() if name.startswith("kwok") else None
        proc.start(env)
        if name == "kube-apiserver":
            self._wait_http(f"{self.server}/readyz", name, timeout, verify=True)
        elif name == "etcd":
            self._wait_http(f"http://127.0.0.1:{self.ports['etcd-client']}/health", name, timeout)
        elif name in ("kube-controller-manager", "kube-scheduler"):
            self._wait_http(f"https://127.0.0.1:{self.ports[name]}/healthz", name, timeout)

    def heal(self) -> None:
        """Undo component faults: thaw paused components and restart dead ones. After an API
        server or etcd fault, also restart kube-controller-manager and kube-scheduler: their
        informers come back on their own, but after a growing backoff (seen: the PV
        controller binding nothing for over a minute), which would slow the next test."""
        for name, proc in self._procs.items():
            if name.startswith("kwok-"):
                continue  # node kubelets: powered on/off by tests via kill_node/revive_node
            if proc.running() and proc.popen is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGCONT)
            else:
                self.restart_component(name)
        if self._disturbed:
            self._disturbed = False
            for name in ("kube-controller-manager", "kube-scheduler"):
                self._component(name).stop()
                self.restart_component(name)

    def _etcd(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to etcd's v3 JSON gateway."""
        url = f"http://127.0.0.1:{self.ports['etcd-client']}{path}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            out: dict[str, Any] = json.loads(resp.read())
        return out

    def etcd_revision(self) -> int:
        """etcd's current revision (what a resourceVersion is made of)."""
        key = base64.b64encode(b"/registry/nodes/").decode()
        return int(self._etcd("/v3/kv/range", {"key": key, "limit": 1})["header"]["revision"])

    def compact_etcd(self, revision: int | None = None) -> int:
        """Compact etcd's history up to ``revision`` (default: the current one) and return
        it: a watch from an older resourceVersion then gets 410 Gone (for resources the API
        server does not serve from its watch cache, see ``--watch-cache-sizes``)."""
        rev = revision if revision is not None else self.etcd_revision()
        self._etcd("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log's events so far (see :data:`AUDIT_POLICY`), oldest first."""
        out = []
        try:
            text = self.audit_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def log_tails(self, lines: int = 30) -> str:
        """The last ``lines`` lines of each process log, for failure reports."""
        parts = []
        for name, proc in self._procs.items():
            parts.append(f"----- {name} ({proc.log_path}) -----\n{proc.tail(lines)}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ config files

    def _port(self, name: str) -> int:
        used = set(self.ports.values())
        while True:
            p = free_port()
            if p not in used:
                self.ports[name] = p
                return p

    def _write_config(self) -> None:
        pki = self.tmp_dir / "pki"
        kc = self.tmp_dir / "kubeconfig"
        for d in (pki, kc, self.log_dir):
            d.mkdir(parents=True)
        _write_pki(pki)
        (self.tmp_dir / "audit-policy.yaml").write_text(json.dumps(AUDIT_POLICY))
        api_port = self._port("kube-apiserver")
        self.server = f"https://127.0.0.1:{api_port}"
        tokens = {
            "admin": ("admin", "system:masters"),
            "kube-controller-manager": ("system:kube-controller-manager", ""),
            "kube-scheduler": ("system:kube-scheduler", ""),
            "kwok": ("noderecover:kwok", "system:masters"),
        }
        lines = []
        for i, (name, (user, groups)) in enumerate(tokens.items()):
            token = secrets.token_hex(16)
            lines.append(f'{token},{user},uid-{i},"{groups}"')
            _write_kubeconfig(kc / f"{name}.kubeconfig", self.server, self.ca_file, user, token)
            if name == "admin":
                self.token = token
        (pki / "tokens.csv").write_text("\n".join(lines) + "\n")
        os.chmod(pki / "tokens.csv", 0o600)
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        self._ssl = ctx

    def _proc(self, name: str, args: list[str], ports: Iterable[int]) -> _Proc:
        proc = _Proc(name, args, self.log_dir / f"{name}.log", tuple(ports))
        self._procs[name] = proc
        return proc

    # ------------------------------------------------------------------ components

    def _start_etcd(self) -> None:
        client, peer = self._port("etcd-client"), self._port("etcd-peer")
        args = [
            str(self.binary("etcd")),
            "--name=noderecover",
            f"--data-dir={self.tmp_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=noderecover=http://127.0.0.1:{peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ]
        self._proc("etcd", args, (client, peer)).start()
        self._wait_http(f"http://127.0.0.1:{client}/health", "etcd", 30)

    def _start_apiserver(self) -> None:
        pki = self.tmp_dir / "pki"
        args = [
            str(self.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd-client']}",
            f"--secure-port={self.ports['kube-apiserver']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # Endpoints may not hold loopback addresses: do not publish the apiserver in the
            # "kubernetes" Service (nothing runs in-cluster here).
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}",
            # Lets kube-controller-manager/kube-scheduler load the requestheader CA quietly.
            f"--requestheader-client-ca-file={self.ca_file}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--cert-dir={self.tmp_dir / 'apiserver-certs'}",
            f"--audit-policy-file={self.tmp_dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
            "--audit-log-format=json",
            "--v=1",
            *self.apiserver_args,
        ]
        self._proc("kube-apiserver", args, (self.ports["kube-apiserver"],)).start()
        self._wait_http(f"{self.server}/readyz", "kube-apiserver", 90, verify=True)

    def _start_controllers(self) -> None:
        pki = self.tmp_dir / "pki"
        kc = self.tmp_dir / "kubeconfig"
        kcm_port = self._port("kube-controller-manager")
        kcm_kc = kc / "kube-controller-manager.kubeconfig"
        kcm = [
            str(self.binary("kube-controller-manager")),
            f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}",
            f"--authorization-kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={self.tmp_dir / 'kcm-certs'}",
            "--leader-elect=false",
            "--controllers=*",
            f"--node-monitor-grace-period={self.node_monitor_grace_period}",
            f"--node-monitor-period={self.node_monitor_period}",
            "--use-service-account-credentials=true",
            f"--root-ca-file={self.ca_file}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={self.ca_file}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--v=2",
        ]
        self._proc("kube-controller-manager", kcm, (kcm_port,)).start()
        sched_port = self._port("kube-scheduler")
        sched_kc = kc / "kube-scheduler.kubeconfig"
        sched = [
            str(self.binary("kube-scheduler")),
            f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}",
            f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            f"--cert-dir={self.tmp_dir / 'scheduler-certs'}",
            "--leader-elect=false",
            "--v=1",
        ]
        self._proc("kube-scheduler", sched, (sched_port,)).start()

    def _kwok_args(self, port: int, selector: list[str]) -> list[str]:
        assert self.bin_dir is not None
        return [
            str(self.binary("kwok")),
            f"--kubeconfig={self.tmp_dir / 'kubeconfig' / 'kwok.kubeconfig'}",
            f"--config={self.bin_dir / build.KWOK_STAGES_NAME}",
            f"--server-address=127.0.0.1:{port}",
            f"--node-lease-duration-seconds={self.node_lease_duration_seconds}",
            "--node-ip=127.0.0.1",
            "--cidr=10.244.0.0/16",
            *selector,
        ]

    def _kwok_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # kwok reads ~/.kwok/kwok.yaml by default: keep it out of the user's home.
        env["HOME"] = str(self.tmp_dir)
        return env

    def _start_main_kwok(self) -> None:
        port = self._port("kwok")
        selector = [
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--manage-nodes-with-label-selector=!{KWOK_GROUP_LABEL}",
        ]
        self._proc("kwok", self._kwok_args(port, selector), (port,)).start(self._kwok_env())

    def _node_kwok(self, node: str) -> _Proc:
        """The node's own kwok; a stopped one gets a fresh port for its next start (its old
        port may have been taken by then)."""
        name = f"kwok-{node}"
        proc = self._procs.get(name)
        if proc is None or not proc.running():
            port = self._port(name)
            selector = [f"--manage-single-node={node}"]
            starts = proc.starts if proc is not None else 0
            proc = self._proc(name, self._kwok_args(port, selector), (port,))
            proc.starts = starts
        return proc

    def _wait_healthy(self) -> None:
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._wait_http(f"https://127.0.0.1:{self.ports[name]}/healthz", name, 60)
        self._wait_http(f"http://127.0.0.1:{self.ports['kwok']}/healthz", "kwok", 60)

    def _wait_http(self, url: str, name: str, timeout: float, *, verify: bool = False) -> None:
        if verify:
            ctx = self._ssl
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        proc = self._procs.get(name)
        last = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.popen.returncode}:\n{proc.tail(40)}")
            req = urllib.request.Request(url)
            if verify:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise ClusterError(f"{name} not healthy at {url} after {timeout}s: {last}")

    def _create_baseline(self) -> None:
        self.wait_for(
            lambda: self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            60,
            "ServiceAccount default/default (created by kube-controller-manager)",
        )
        self.create_nodes(
            1, prefix="cp", killable=False, control_plane=True, _baseline=True, wait=False
        )
        self.create_nodes(self.workers, prefix="worker", killable=True, _baseline=True, wait=False)
        self.create_storage()
        for name in self._nodes:
            self.wait_node_ready(name, timeout=60)

    # ------------------------------------------------------------------ API access

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
        query: Mapping[str, str | int | bool] | None = None,
        timeout: float = 15.0,
    ) -> tuple[int, Any]:
        """Call the API server as admin; return ``(status, parsed JSON or text)``.

        ``body`` (a dict/list) is sent as JSON; ``PATCH`` defaults to a JSON merge patch
        (pass ``content_type="application/apply-patch+yaml"`` for server-side apply).
        Non-2xx answers are returned, not raised.
        """
        url = self.server + path
        if query:
            params = {
                k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items()
            }
            url += ("&" if "?" in path else "?") + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method.upper())
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            ct = content_type or (
                "application/merge-patch+json" if method.upper() == "PATCH" else "application/json"
            )
            req.add_header("Content-Type", ct)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """Like :meth:`api` but raise :class:`ApiError` on a non-2xx answer; return the body."""
        status, out = self.api(method, path, body, **kw)
        if not 200 <= status < 300:
            raise ApiError(method, path, status, out)
        return out

    def get(self, path: str) -> Any:
        """GET ``path``; None on 404; :class:`ApiError` on other errors."""
        status, out = self.api("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise ApiError("GET", path, status, out)
        return out

    def apply(
        self, obj: Mapping[str, Any], *, field_manager: str = "noderecover-testcluster"
    ) -> Any:
        """Server-side apply of one object (``apiVersion``/``kind``/``metadata`` required)."""
        path = _object_path(obj)
        return self.request(
            "PATCH",
            path,
            obj,
            content_type="application/apply-patch+yaml",
            query={"fieldManager": field_manager, "force": True},
        )

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster (admin kubeconfig); ``input`` is its
        stdin (e.g. a manifest for ``apply --dry-run=server -f -``)."""
        cmd = [str(self.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(
            cmd, input=input or "", capture_output=True, text=True, timeout=timeout, check=check
        )

    @staticmethod
    def wait_for(
        predicate: Callable[[], T | None],
        timeout: float,
        desc: str,
        interval: float = 0.25,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy and return that.

        Connection errors count as "not yet". Raises :class:`TimeoutError` naming ``desc``
        and the last value seen.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                value = predicate()
            except OSError as exc:
                value, last = None, exc
            else:
                last = value
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {desc}; last: {last!r}")
            time.sleep(interval)

    # ------------------------------------------------------------------ nodes

    def create_nodes(
        self,
        n: int,
        *,
        prefix: str = "node",
        killable: bool = True,
        control_plane: bool = False,
        labels: Mapping[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
        wait: bool = True,
        timeout: float = 60.0,
        _baseline: bool = False,
    ) -> list[str]:
        """Create ``n`` kwok Nodes named ``<prefix>-<i>`` (next free ``i``) and return names.

        Workers get ``node-role.kubernetes.io/worker=""``; ``control_plane=True`` gives the
        control-plane role label and its NoSchedule taint instead. ``killable`` nodes get
        their own kwok process so :meth:`kill_node` can stop just that node. With ``wait``
        the call returns when every new node is Ready.
        """
        names: list[str] = []
        i = 0
        while len(names) < n:
            name = f"{prefix}-{i}"
            i += 1
            if name in self._nodes or self.get(f"/api/v1/nodes/{name}") is not None:
                continue
            node_labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                HARNESS_LABEL: "true",
            }
            node_taints = list(taints or [])
            if control_plane:
                node_labels[CONTROL_PLANE_ROLE_LABEL] = ""
                node_taints.append(dict(CONTROL_PLANE_TAINT))
            else:
                node_labels[WORKER_ROLE_LABEL] = ""
            if killable:
                node_labels[KWOK_GROUP_LABEL] = name
            node_labels.update(labels or {})
            spec = NodeSpec(name, killable, node_labels, node_taints, _baseline)
            self._nodes[name] = spec
            self._create_node_object(spec)
            if killable:
                self._node_kwok(name).start(self._kwok_env())
            names.append(name)
        if wait:
            for name in names:
                self.wait_node_ready(name, timeout=timeout)
        return names

    def _create_node_object(self, spec: NodeSpec) -> None:
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        annotations = {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"}
        if self.csi:
            annotations[ATTACH_DETACH_ANNOTATION] = "true"
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": spec.name, "labels": spec.labels, "annotations": annotations},
            "spec": {"taints": spec.taints} if spec.taints else {},
            "status": {"capacity": resources, "allocatable": resources},
        }
        node = self.request("POST", "/api/v1/nodes", body)
        if self.csi:
            # As the kubelet registers its CSI drivers; owned by this Node incarnation.
            self.apply(csi_node_object(spec.name, node["metadata"]["uid"]))

    def delete_node(self, name: str, *, wait: bool = True) -> None:
        """Stop the node's kwok (if any), delete the Node object and forget it."""
        proc = self._procs.pop(f"kwok-{name}", None)
        if proc is not None:
            proc.stop()
            self.power_log.append((time.time(), name, False))
        self._nodes.pop(name, None)
        self.api("DELETE", f"/api/v1/nodes/{name}")
        if wait:
            self.wait_for(
                lambda: self.get(f"/api/v1/nodes/{name}") is None, 30, f"node {name} deleted"
            )

    def recreate_node(self, name: str, *, ready: str | None = None) -> dict[str, Any]:
        """Delete the Node object and create it again at once with the same name and labels
        (a new uid): a machine that re-registered, its kubelet not running (the node's kwok
        is stopped, or stopped here). With ``ready`` (``"False"``, ``"Unknown"``) the new
        node's status gets that Ready condition once, transition time = its creation, as a
        kubelet that registered and reported NotReady before it stopped; without, it has no
        conditions (the node lifecycle controller marks such a node Unknown only after its
        ``--node-startup-grace-period``, 60 s by default). Returns the new Node."""
        spec = self._nodes.get(name)
        if spec is None:
            raise ClusterError(f"node {name} is not a node of this harness")
        proc = self._procs.get(f"kwok-{name}")
        if proc is not None and proc.running():
            self.kill_node(name)
        self.request("DELETE", f"/api/v1/nodes/{name}")
        self.wait_for(lambda: self.node(name) is None, 30, f"node {name} deleted", 0.02)
        self._create_node_object(spec)
        node = self.request("GET", f"/api/v1/nodes/{name}")
        if ready is not None:
            now = rfc3339()
            node = self.request(
                "PATCH",
                f"/api/v1/nodes/{name}/status",
                {
                    "status": {
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": ready,
                                "reason": "KubeletNotReady",
                                "message": "re-registered; container runtime not ready (test)",
                                "lastHeartbeatTime": now,
                                "lastTransitionTime": node["metadata"]["creationTimestamp"],
                            }
                        ]
                    }
                },
                content_type="application/strategic-merge-patch+json",
            )
        out: dict[str, Any] = node
        return out

    def kill_node(self, name: str) -> None:
        """Power the node off: SIGKILL its own kwok, so its Lease stops being renewed and
        its pods are no longer served (deletions on it never finish)."""
        proc = self._procs.get(f"kwok-{name}")
        if proc is None:
            raise ClusterError(f"node {name} is not killable (it has no kwok of its own)")
        proc.stop(sigkill_first=True)
        self.power_log.append((time.time(), name, False))

    def revive_node(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Start the node's kwok again (recreating the Node object if it was deleted).

        With ``wait``, return once the node is Ready=True *and* its Lease was renewed by
        the new kwok. kwok takes the Lease over only after the dead holder's lease expired
        (``node_lease_duration_seconds`` after its last renewal), so reviving a node that
        died moments ago can take up to that long; without the Lease the node would go
        Unknown again after the grace period."""
        spec = self._nodes.get(name)
        if spec is None or not spec.killable:
            raise ClusterError(f"node {name} is not a killable node of this harness")
        if self.get(f"/api/v1/nodes/{name}") is None:
            self._create_node_object(spec)
        proc = self._node_kwok(name)
        was_running = proc.running()
        since = dt.datetime.now(dt.UTC)
        proc.start(self._kwok_env())
        if not was_running:
            self.power_log.append((time.time(), name, True))
        if wait:
            if not was_running:
                self.wait_for(
                    lambda: self.lease_renewed_after(name, since),
                    timeout,
                    f"node lease {name} renewed by the revived kwok",
                )
            self.wait_node_ready(name, timeout=timeout)

    def lease_renewed_after(self, name: str, when: dt.datetime) -> bool:
        """True when the node's Lease in ``kube-node-lease`` was renewed after ``when``."""
        lease = self.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
        renew = (lease or {}).get("spec", {}).get("renewTime")
        return bool(renew) and dt.datetime.fromisoformat(renew) > when

    def node_alive(self, name: str) -> bool:
        """True when the node's kwok process runs (always True for ordinary nodes)."""
        proc = self._procs.get(f"kwok-{name}")
        return proc.running() if proc is not None else self._procs["kwok"].running()

    def node(self, name: str) -> dict[str, Any] | None:
        """The Node object, or None if it does not exist."""
        out: dict[str, Any] | None = self.get(f"/api/v1/nodes/{name}")
        return out

    def node_ready_status(self, name: str) -> str | None:
        """``"True"``, ``"False"``, ``"Unknown"`` or None (no node / no Ready condition)."""
        return _ready_status(self.node(name))

    def node_taint_keys(self, name: str) -> list[str]:
        """Keys (with effect: ``key:Effect``) of the node's taints."""
        node = self.node(name) or {}
        return [f"{t['key']}:{t['effect']}" for t in node.get("spec", {}).get("taints") or []]

    def wait_node_ready(
        self, name: str, status: str = "True", timeout: float = 60.0
    ) -> dict[str, Any]:
        """Wait until the node's Ready condition has ``status``; return the Node."""

        def check() -> dict[str, Any] | None:
            node = self.node(name)
            return node if _ready_status(node) == status else None

        return self.wait_for(check, timeout, f"node {name} Ready={status}")

    # ------------------------------------------------------------------ storage & workloads

    def create_storage(self, count: int | None = None) -> list[str]:
        """Create the PersistentVolumes of :attr:`storage` and return their names.

        hostPath: StorageClass ``local-wffc`` (no provisioner, WaitForFirstConsumer) and
        ``count`` 2Gi RWO Retain hostPath PVs ``nr-pv-<i>`` without node affinity. CSI: the
        CSIDriver ``attach.noderecover.test`` (``attachRequired: true``), StorageClass
        ``csi-wffc`` (no provisioner, WaitForFirstConsumer) and ``count`` 2Gi RWO Retain PVs
        ``nr-csi-pv-<i>`` of that driver; each creation gets fresh volume handles, so a
        VolumeAttachment left from an earlier incarnation never names a new volume."""
        names: list[str] = []
        if self.storage in ("hostpath", "both"):
            names += self._create_hostpath_storage(count)
        if self.csi:
            names += self._create_csi_storage(count)
        return names

    def _create_csi_storage(self, count: int | None) -> list[str]:
        self.apply(csi_driver_object())
        self.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": CSI_STORAGE_CLASS, "labels": {HARNESS_LABEL: "true"}},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Retain",
            }
        )
        names = []
        salt = secrets.token_hex(3)
        for i in range(self.pv_count if count is None else count):
            name = f"nr-csi-pv-{i}"
            self.apply(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name, "labels": {HARNESS_LABEL: "true"}},
                    "spec": {
                        "capacity": {"storage": "2Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": CSI_STORAGE_CLASS,
                        "volumeMode": "Filesystem",
                        "csi": {
                            "driver": CSI_DRIVER,
                            "volumeHandle": f"vol-{name}-{salt}",
                            "fsType": "ext4",
                        },
                    },
                }
            )
            names.append(name)
        return names

    def _create_hostpath_storage(self, count: int | None) -> list[str]:
        self.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS, "labels": {HARNESS_LABEL: "true"}},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Retain",
            }
        )
        names = []
        for i in range(self.pv_count if count is None else count):
            name = f"nr-pv-{i}"
            self.apply(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name, "labels": {HARNESS_LABEL: "true"}},
                    "spec": {
                        "capacity": {"storage": "2Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": STORAGE_CLASS,
                        "volumeMode": "Filesystem",
                        "hostPath": {"path": f"/tmp/noderecover-pv/{name}", "type": ""},
                    },
                }
            )
            names.append(name)
        return names

    def apply_seed_statefulset(
        self, namespace: str = "default", replicas: int = 1, storage_class: str | None = None
    ) -> None:
        """Apply the seed's headless Service ``mysql`` and StatefulSet ``mysql`` (storage
        class ``storage_class``, default :attr:`seed_storage_class`; its PVC is
        ``pvc-mysql-0``)."""
        for obj in seed_manifests(namespace, replicas, storage_class or self.seed_storage_class):
            self.apply(obj)

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        """The Pod object, or None."""
        out: dict[str, Any] | None = self.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return out

    def wait_pod_running(
        self,
        name: str,
        namespace: str = "default",
        timeout: float = 60.0,
        *,
        not_on: str | None = None,
    ) -> dict[str, Any]:
        """Wait until the pod has phase Running and no deletionTimestamp (and, with
        ``not_on``, is on another node than ``not_on``); return it."""

        def check() -> dict[str, Any] | None:
            pod = self.pod(name, namespace)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return None
            if pod.get("status", {}).get("phase") != "Running":
                return None
            if not_on is not None and pod["spec"].get("nodeName") == not_on:
                return None
            return pod

        where = f" off {not_on}" if not_on else ""
        return self.wait_for(check, timeout, f"pod {namespace}/{name} Running{where}")

    def _empty(self, path: str, query: Mapping[str, str] | None = None) -> bool:
        return not self.request("GET", path, query=query)["items"]

    def reset(self, namespace: str = "default") -> None:
        """Bring the cluster back to its baseline between tests.

        Deletes StatefulSets, Deployments, ReplicaSets, PodDisruptionBudgets, Services
        (but ``kubernetes``), Pods (force) and PVCs in ``namespace``; deletes and recreates
        the harness PVs; deletes nodes that are not baseline; revives, recreates and
        un-cordons baseline nodes, restores their taints and waits for them to be Ready.
        """
        ns = f"/namespaces/{namespace}"
        for path in (
            f"/apis/apps/v1{ns}/statefulsets",
            f"/apis/apps/v1{ns}/deployments",
            f"/apis/apps/v1{ns}/replicasets",
            f"/apis/policy/v1{ns}/poddisruptionbudgets",
        ):
            self.api("DELETE", path, {"propagationPolicy": "Background"})
        svcs = self.request("GET", f"/api/v1{ns}/services")["items"]
        for svc in svcs:
            if not (namespace == "default" and svc["metadata"]["name"] == "kubernetes"):
                self.api("DELETE", f"/api/v1{ns}/services/{svc['metadata']['name']}")
        for path in (f"/apis/apps/v1{ns}/statefulsets", f"/apis/apps/v1{ns}/replicasets"):
            self.wait_for(lambda p=path: self._empty(p), 30, f"{path} empty")  # type: ignore[misc]
        self.api("DELETE", f"/api/v1{ns}/pods", {"gracePeriodSeconds": 0})
        self.wait_for(
            lambda: not self.request("GET", f"/api/v1{ns}/pods")["items"], 30, "pods gone"
        )
        self.api("DELETE", f"/api/v1{ns}/persistentvolumeclaims")
        self.wait_for(
            lambda: not self.request("GET", f"/api/v1{ns}/persistentvolumeclaims")["items"],
            30,
            "PVCs gone",
        )
        pv_sel = {"labelSelector": f"{HARNESS_LABEL}=true"}
        self.api("DELETE", "/api/v1/persistentvolumes", query=pv_sel)
        self.wait_for(
            lambda: not self.request("GET", "/api/v1/persistentvolumes", query=pv_sel)["items"],
            30,
            "PVs gone",
        )
        self.create_storage()

        for name in list(self._nodes):
            if not self._nodes[name].baseline:
                self.delete_node(name, wait=False)
        for node in self.request("GET", "/api/v1/nodes")["items"]:
            if node["metadata"]["name"] not in self._nodes:
                self.api("DELETE", f"/api/v1/nodes/{node['metadata']['name']}")
        revived: list[tuple[str, dt.datetime]] = []
        for name, spec in self._nodes.items():
            current = self.get(f"/api/v1/nodes/{name}")
            if current is None:
                self._create_node_object(spec)
            else:
                # A merge patch only adds: the labels a test added (a pool another test's
                # workload then lands on) and the annotations noderecover left are removed
                # by name.
                meta = current.get("metadata") or {}
                labels: dict[str, str | None] = {
                    k: None for k in meta.get("labels") or {} if k not in spec.labels
                }
                annotations: dict[str, str | None] = {
                    k: None
                    for k in meta.get("annotations") or {}
                    if k.startswith("noderecover.io/")
                }
                patch_meta: dict[str, Any] = {"labels": {**labels, **spec.labels}}
                if annotations:  # (a null `annotations` would drop every annotation)
                    patch_meta["annotations"] = annotations
                self.request(
                    "PATCH",
                    f"/api/v1/nodes/{name}",
                    {
                        "metadata": patch_meta,
                        "spec": {"unschedulable": None, "taints": spec.taints or None},
                    },
                )
            if spec.killable and not self.node_alive(name):
                revived.append((name, dt.datetime.now(dt.UTC)))
                self.revive_node(name, wait=False)
        for name, since in revived:
            self.wait_for(
                lambda n=name, t=since: self.lease_renewed_after(n, t),  # type: ignore[misc]
                60,
                f"node lease {name} renewed after revival",
            )

        def pristine() -> bool:
            for name, spec in self._nodes.items():
                node = self.node(name)
                if _ready_status(node) != "True" or node is None:
                    return False
                taints = node.get("spec", {}).get("taints") or []
                if len(taints) != len(spec.taints) or node["spec"].get("unschedulable"):
                    return False
            return True

        self.wait_for(pristine, 90, "baseline nodes Ready, untainted and schedulable", 0.5)
        if self.csi:
            # The attach/detach controller detaches what the deleted pods used (a revived or
            # recreated node reports no volumes in use, so nothing is held).
            self.wait_for(
                lambda: not self.request("GET", VOLUME_ATTACHMENTS)["items"],
                60,
                "VolumeAttachments gone",
                0.5,
            )


# ---------------------------------------------------------------------- helpers


def _ready_status(node: Mapping[str, Any] | None) -> str | None:
    if node is None:
        return None
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            status: str = cond.get("status")
            return status
    return None


_CORE_KINDS = {
    "Service": "services",
    "Pod": "pods",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PersistentVolume": "persistentvolumes",
    "Node": "nodes",
    "Namespace": "namespaces",
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "StatefulSet": "statefulsets",
    "Deployment": "deployments",
    "StorageClass": "storageclasses",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Lease": "leases",
    "Secret": "secrets",
    "CSIDriver": "csidrivers",
    "CSINode": "csinodes",
    "DaemonSet": "daemonsets",
    "ReplicaSet": "replicasets",
    "Job": "jobs",
    "PriorityClass": "priorityclasses",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
}
_CLUSTER_SCOPED = {
    "PersistentVolume",
    "Node",
    "Namespace",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CSIDriver",
    "CSINode",
}


def _object_path(obj: Mapping[str, Any]) -> str:
    api_version: str = obj["apiVersion"]
    kind: str = obj["kind"]
    if kind not in _CORE_KINDS:
        raise ClusterError(f"apply does not know the resource of kind {kind}")
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    name = obj["metadata"]["name"]
    if kind in _CLUSTER_SCOPED:
        return f"{prefix}/{_CORE_KINDS[kind]}/{name}"
    ns = obj["metadata"].get("namespace", "default")
    return f"{prefix}/namespaces/{ns}/{_CORE_KINDS[kind]}/{name}"


def seed_manifests(
    namespace: str = "default", replicas: int = 1, storage_class: str = STORAGE_CLASS
) -> list[dict[str, Any]]:
    """The seed's headless Service + StatefulSet ``mysql`` whose PVCs use ``storage_class``
    (default ``local-wffc``)."""
    labels = {"app": "mysql-sts"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mysql", "namespace": namespace, "labels": labels},
        "spec": {
            "ports": [{"port": 3306, "name": "mysql"}],
            "clusterIP": "None",
            "selector": labels,
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "mysql", "namespace": namespace},
        "spec": {
            "serviceName": "mysql",
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "mysql",
                            "image": "mysql:5.7",
                            "env": [{"name": "MYSQL_ROOT_PASSWORD", "value": "qwerty"}],
                            "ports": [{"containerPort": 3306, "name": "mysql"}],
                            "volumeMounts": [
                                {"name": "pvc", "mountPath": "/var/lib/mysql", "subPath": "data"}
                            ],
                            "livenessProbe": {
                                "exec": {
                                    "command": ["mysqladmin", "-p$MYSQL_ROOT_PASSWORD", "ping"]
                                },
                                "initialDelaySeconds": 60,
                                "timeoutSeconds": 10,
                            },
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "pvc"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": storage_class,
                        "resources": {"requests": {"storage": "2Gi"}},
                    },
                }
            ],
        },
    }
    return [service, statefulset]


def _write_pki(pki: Path) -> None:
    """CA, apiserver serving cert (SAN 127.0.0.1/localhost/kubernetes...), SA key pair."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ClusterError("the test cluster needs the 'cryptography' package") from exc

    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(hours=1)
    not_after = now + dt.timedelta(days=2)

    def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "noderecover-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(pem_key(ca_key))
    (pki / "apiserver.crt").write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    (pki / "apiserver.key").write_bytes(pem_key(srv_key))
    (pki / "sa.key").write_bytes(pem_key(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for name in ("ca.key", "apiserver.key", "sa.key"):
        os.chmod(pki / name, 0o600)


def _write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "noderecover-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "noderecover-test",
                "context": {"cluster": "noderecover-test", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "noderecover-test",
    }
    # JSON is YAML: every kubeconfig loader reads it.
    path.write_text(json.dumps(config, indent=2) + "\n")
    os.chmod(path, 0o600)
