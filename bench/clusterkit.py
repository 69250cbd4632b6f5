"""Plumbing for bench/cluster_bench.py: keep-alive API calls, watch threads, a counting
HTTP proxy, controller processes. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.fixtures import rfc3339
from noderecover_testkit.processes import free_port, metric_sum, replica_argv, start

JSON = dict[str, Any]
ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------- API


class Api:
    """JSON calls as the cluster admin over keep-alive HTTPS, one connection per thread."""

    def __init__(self, cluster: TestCluster) -> None:
        url = urllib.parse.urlsplit(cluster.server)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        self.token = cluster.token
        self.ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
        self._local = threading.local()

    def connect(self, timeout: float | None = 30.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def _conn(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
        return conn

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type or (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        text = raw.decode(errors="replace")
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, out = self.call(method, path, body, **kw)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path} -> {status}: {out}")
        return out

    # -- nodes without kwok: their status is ours to write

    def create_bare_node(self, name: str, labels: Mapping[str, str]) -> None:
        """A Node that no kwok manages (no kwok annotation), Ready=True written by us."""
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        }
        self.ok("POST", "/api/v1/nodes", body)
        self.set_ready(name, "True")

    def set_ready(self, name: str, status: str) -> JSON:
        when = rfc3339()
        reason = {"True": "KubeletReady", "False": "KubeletNotReady"}.get(
            status, "NodeStatusUnknown"
        )
        patch = {
            "status": {
                "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": status,
                        "reason": reason,
                        "message": f"set by the benchmark ({status})",
                        "lastHeartbeatTime": when,
                        "lastTransitionTime": when,
                    }
                ],
            }
        }
        out: JSON = self.ok("PATCH", f"/api/v1/nodes/{name}/status", patch)
        return out


def ready_status(node: Mapping[str, Any]) -> str | None:
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return str(c.get("status"))
    return None


# ------------------------------------------------------------------------- watch


class WatchThread(threading.Thread):
    """LIST then WATCH ``path`` (with ``query``) and call ``on_event(t, type, obj)`` for every
    event, ``t`` the monotonic time its line was read. Reconnects from the last
    resourceVersion; ``stop()`` ends it."""

    def __init__(
        self,
        api: Api,
        path: str,
        query: Mapping[str, str],
        on_event: Callable[[float, str, JSON], None],
    ) -> None:
        super().__init__(daemon=True, name=f"watch {path}")
        self.api, self.path, self.query, self.on_event = api, path, dict(query), on_event
        self._stop_evt = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None
        self.ready = threading.Event()
        self.rv = ""

    def _list(self) -> None:
        qs = urllib.parse.urlencode(self.query)
        out = self.api.ok("GET", f"{self.path}?{qs}")
        t = time.monotonic()
        for obj in out.get("items") or ():
            self.on_event(t, "LISTED", obj)
        self.rv = out["metadata"]["resourceVersion"]

    def run(self) -> None:
        try:
            self._list()
        finally:
            self.ready.set()
        while not self._stop_evt.is_set():
            q = {
                **self.query,
                "watch": "true",
                "resourceVersion": self.rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "600",
            }
            conn = self.api.connect(timeout=None)
            self._conn = conn
            try:
                conn.request(
                    "GET",
                    f"{self.path}?{urllib.parse.urlencode(q)}",
                    headers={"Authorization": f"Bearer {self.api.token}"},
                )
                resp = conn.getresponse()
                if resp.status == 410:
                    self._list()
                    continue
                while not self._stop_evt.is_set():
                    line = resp.readline()
                    if not line:
                        break
                    t = time.monotonic()
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if ev.get("type") == "ERROR":
                        self._list()
                        break
                    if rv:
                        self.rv = rv
                    if ev.get("type") != "BOOKMARK":
                        self.on_event(t, str(ev.get("type")), obj)
            except (OSError, http.client.HTTPException, ValueError):
                if not self._stop_evt.is_set():
                    time.sleep(0.2)
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop_evt.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        self.join(5)


# ------------------------------------------------------------------------- counting proxy

_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "proxy-connection",
}


def classify(method: str, path: str, query: Mapping[str, str]) -> str:
    """'LIST nodes', 'WATCH leases', 'GET nodes', 'PATCH nodes', ..."""
    parts = [p for p in path.split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]  # after /api/v1 or /apis/g/v
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] if rest else "?"
    if len(rest) >= 3:
        resource += "/" + rest[2]  # subresource
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return f"WATCH {resource}"
        return f"{'LIST' if len(rest) == 1 else 'GET'} {resource}"
    return f"{method} {resource}"


@dataclass
class Traffic:
    requests: Counter[str] = field(default_factory=Counter)
    bytes_down: int = 0  # API server -> controller: bodies as sent (compressed if asked) + headers
    bytes_up: int = 0  # controller -> API server
    # (t_start, t_end, kind, bytes_down) for every finished request
    done: list[tuple[float, float, str, int]] = field(default_factory=list)

    def copy(self) -> Traffic:
        return Traffic(Counter(self.requests), self.bytes_down, self.bytes_up, list(self.done))


def _header_bytes(headers: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.items()) + 20


class CountingProxy:
    """A plain-HTTP reverse proxy on 127.0.0.1 in front of the API server (TLS upstream) that
    counts requests by kind and the bytes each way. Bodies pass through untouched
    (compressed stays compressed), so the counts are what the controller itself asked for."""

    def __init__(self, name: str, upstream: str, ca_file: Path) -> None:
        self.name, self.upstream = name, upstream.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=str(ca_file))
        self.port = 0
        self._traffic = Traffic()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None

    def snapshot(self) -> Traffic:
        with self._lock:
            return self._traffic.copy()

    def start(self) -> int:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"proxy {self.name}")
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("proxy did not start")
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        async with aiohttp.ClientSession(
            auto_decompress=False,
            timeout=timeout,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0),
        ) as session:
            app = web.Application(client_max_size=64 * 2**20)

            async def handle(request: web.Request) -> web.StreamResponse:
                return await self._forward(session, request)

            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            self._started.set()
            await self._stopping.wait()
            await runner.cleanup()

    async def _forward(
        self, session: aiohttp.ClientSession, request: web.Request
    ) -> web.StreamResponse:
        t0 = time.monotonic()
        body = await request.read()
        kind = classify(request.method, request.path, request.query)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        with self._lock:
            self._traffic.requests[kind] += 1
            self._traffic.bytes_up += len(body) + _header_bytes(request.headers)
        down = 0
        resp = web.StreamResponse()
        try:
            async with session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body or None,
            ) as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in _HOP:
                        resp.headers[k] = v
                await resp.prepare(request)
                down = _header_bytes(up.headers)
                with self._lock:
                    self._traffic.bytes_down += down
                async for chunk in up.content.iter_any():
                    with self._lock:
                        self._traffic.bytes_down += len(chunk)
                    down += len(chunk)
                    await resp.write(chunk)
                await resp.write_eof()
        except (aiohttp.ClientError, ConnectionError):
            pass  # the client or the API server went away mid-stream (a watch being closed)
        finally:
            with self._lock:
                self._traffic.done.append((t0, time.monotonic(), kind, down))
        return resp


def write_kubeconfig(path: Path, server: str, token: str, ca_file: Path | None) -> Path:
    cluster: JSON = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": "bench", "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
    }
    path.write_text(json.dumps(cfg))
    return path


# ------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A controller process (noderecover replica or the liberator)."""

    name: str
    popen: subprocess.Popen[bytes]
    started: float  # monotonic time of the spawn
    log: Path
    http_port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def http(self, path: str) -> tuple[int, str]:
        assert self.http_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=3)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples matching ``labels`` (0 when absent or not answering)."""
        return metric_sum(self.http("/metrics")[1], name, **labels)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll /readyz every 20 ms; return the monotonic time it first answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            if self.http("/readyz")[0] == 200:
                return time.monotonic()
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready in {timeout}s: {self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(
    name: str, argv: list[str], logdir: Path, *, env: Mapping[str, str] | None = None
) -> Proc:
    t = time.monotonic()
    log = logdir / f"{name}.log"
    return Proc(name, start(argv, log, env=env, cwd=ROOT), t, log)


def noderecover(
    name: str,
    kubeconfig: Path,
    logdir: Path,
    *flags: str,
    identity: str | None = None,
    namespace: str | None = None,
) -> Proc:
    """`namespace`: its POD_NAMESPACE (where it reads the fence Secret; unset: kube-system)."""
    port = free_port()
    env = {"POD_NAME": identity or name}
    if namespace:
        env["POD_NAMESPACE"] = namespace
    p = spawn(name, replica_argv(kubeconfig, port, *flags), logdir, env=env)
    p.http_port = port
    return p


def liberator(
    name: str, kubeconfig: Path, logdir: Path, *flags: str, python: str | None = None
) -> Proc:
    """The script, run by `python` (default: $LIBERATOR_PYTHON, else this interpreter). It
    needs the sync kubernetes client, which cannot share a venv with the fence providers'
    boto3 (docs/benchmarks.md, Setup)."""
    argv = [
        python or os.environ.get("LIBERATOR_PYTHON") or sys.executable,
        "-u",
        str(ROOT / "bench" / "baseline_liberator.py"),
        "--kubeconfig",
        str(kubeconfig),
        *flags,
    ]
    return spawn(name, argv, logdir)
