"""Real emulators for the fence providers' tests, each started on 127.0.0.1 with a free port
and stopped by the test: sushy-tools' Redfish emulator (fake systems driver; in the testkit,
which `noderecover demo` uses too), moto's server (EC2), and a BMC on pyghmi's server side
(tests/ipmi_bmc.py). No wire protocol is faked here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from noderecover_testkit.emulators import (
    BIN,
    Redfish,
    RedfishSystem,
    self_signed,
    sushy_emulator,
    wait_http,
)
from noderecover_testkit.emulators import process as _any_process

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "BIN",
    "Ec2",
    "IpmiBmc",
    "PowerReader",
    "PowerWire",
    "Redfish",
    "RedfishSystem",
    "ec2_power",
    "fence_agents_installed",
    "free_port",
    "ipmi_bmc",
    "ipmi_power",
    "moto_server",
    "redfish_power",
    "self_signed",
    "sushy_emulator",
]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` run from the checkout (``-m tests.ipmi_bmc``)."""
    with _any_process(argv, log, env, cwd=ROOT) as proc:
        yield proc


@dataclass(frozen=True)
class Ec2:
    url: str
    region: str = "us-east-1"

    def client(self) -> Any:
        """A boto3 EC2 client of the test's own (moto takes any keys; never the keys a test
        gives noderecover, so a key seen in a log is noderecover's)."""
        import boto3

        return boto3.client(
            "ec2",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )


@contextlib.contextmanager
def moto_server(tmp: Path) -> Iterator[Ec2]:
    """moto in server mode, in its own process, on 127.0.0.1."""
    port = free_port()
    log = tmp / "moto.log"
    with _process([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/", proc, log)
        yield Ec2(url)


@dataclass(frozen=True)
class IpmiBmc:
    port: int
    user: str
    password: str
    state_file: Path

    @property
    def power(self) -> str:
        """The machine's side: what the BMC process holds (not what a client says)."""
        return self.state_file.read_text().strip()


@contextlib.contextmanager
def ipmi_bmc(
    tmp: Path, user: str = "admin", password: str = "pw", *, ignore_off: bool = False
) -> Iterator[IpmiBmc]:
    """A pyghmi BMC in its own process (a Bmc and a client in one process share pyghmi's
    session state and break)."""
    port = free_port(socket.SOCK_DGRAM)
    state = tmp / f"bmc-{port}.power"
    log = tmp / f"bmc-{port}.log"
    argv = [sys.executable, "-m", "tests.ipmi_bmc", "--port", str(port), "--user", user]
    argv += ["--state", str(state)]
    if ignore_off:
        argv.append("--ignore-off")
    with _process(argv, log, env={"BMC_PASSWORD": password}) as proc:
        end = time.monotonic() + 20
        while not state.exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the BMC did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield IpmiBmc(port, user, password, state)


def fence_agents_installed() -> bool:
    return all(shutil.which(a, path="/usr/sbin") for a in ("fence_ipmilan", "fence_redfish")) and (
        shutil.which("ipmitool") is not None
    )


# -- the emulators wired to the test control plane -------------------------------------------

PowerReader = Callable[[], str]  # the machine's power as its emulator says it: "on" | "off"


def redfish_power(url: str, uuid: str, user: str, password: str) -> PowerReader:
    """A system's PowerState by a raw GET to the Redfish emulator (its fake driver applies a
    pending power change on a read, so polling is what makes it happen)."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the emulator's self-signed certificate (tls=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    def read() -> str:
        req = urllib.request.Request(f"{url}/redfish/v1/Systems/{uuid}")
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=5, context=ctx) as reply:
            return str(json.load(reply)["PowerState"]).lower()

    return read


def ec2_power(server: Ec2, instance: str) -> PowerReader:
    """An instance's state from moto's EC2 server: off once `stopped` (or gone: terminated)."""
    ec2 = server.client()

    def read() -> str:
        reply = ec2.describe_instances(InstanceIds=[instance])
        state = reply["Reservations"][0]["Instances"][0]["State"]["Name"]
        return "off" if state in ("stopped", "terminated") else "on"

    return read


def ipmi_power(bmc: IpmiBmc) -> PowerReader:
    """The pyghmi BMC's machine side (what its process holds, written at every change)."""
    return lambda: bmc.power


class Machines(Protocol):
    """What the wire drives: the test control plane's kwok nodes (TestCluster)."""

    def kill_node(self, name: str) -> None: ...
    def revive_node(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None: ...
    def node_alive(self, name: str) -> bool: ...


class PowerWire:
    """Each wired machine's power, read from its emulator every `period` seconds in a thread,
    drives its node's kwok: a machine seen Off stops that node's heartbeats (`kill_node`:
    its Lease is no longer renewed, its pods no longer served); seen On again after that,
    they start again (`revive_node`, not waited for). So a test can tell a real power-off
    (the heartbeats stop, `off_at` says when) from a provider that says done and powered
    nothing off (no Off is ever read here).

        with PowerWire(cluster) as wire:
            wire.wire("node-1", redfish_power(bmc.url, uuid, "admin", pw))

    `changes`: every change seen, (wall time, node, "on"|"off"); `errors`: reads that
    failed (the emulator down); a node already dead is not killed again."""

    def __init__(
        self,
        machines: Machines,
        period: float = 0.2,
        *,
        on_off: Callable[[str], None] | None = None,
        on_on: Callable[[str], None] | None = None,
    ) -> None:
        self.period = period
        self._machines = machines
        self._on_off = on_off or self._kill
        self._on_on = on_on or self._revive
        self._readers: dict[str, PowerReader] = {}
        self._power: dict[str, str] = {}
        self.changes: list[tuple[float, str, str]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._polling = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-wire", daemon=True)

    def _kill(self, node: str) -> None:
        if self._machines.node_alive(node):
            self._machines.kill_node(node)

    def _revive(self, node: str) -> None:
        if not self._machines.node_alive(node):
            self._machines.revive_node(node, wait=False)

    def wire(self, node: str, read: PowerReader) -> None:
        """From now on `node` lives and dies with the machine `read` reports (read once here:
        a machine already off stops its node's heartbeats at once)."""
        with self._lock:
            self._readers[node] = read
        self._poll_one(node, read)

    def power(self, node: str) -> str | None:
        return self._power.get(node)

    def off_at(self, node: str) -> float | None:
        """When the machine was first seen Off (wall time), None: never."""
        return next((t for t, n, p in self.changes if n == node and p == "off"), None)

    def _poll_one(self, node: str, read: PowerReader) -> None:
        with self._polling:  # one poll at a time: a change is acted on once
            self._poll_locked(node, read)

    def _poll_locked(self, node: str, read: PowerReader) -> None:
        try:
            power = read()
        except Exception as exc:  # the emulator down or slow: say so, keep polling
            self.errors.append(f"{node}: {type(exc).__name__}: {exc}")
            return
        if power not in ("on", "off") or power == self._power.get(node):
            return
        before = self._power.get(node)
        self._power[node] = power
        self.changes.append((time.time(), node, power))
        if power == "off":
            self._on_off(node)
        elif before == "off":
            self._on_on(node)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                readers = list(self._readers.items())
            for node, read in readers:
                self._poll_one(node, read)
            self._stop.wait(self.period)

    def __enter__(self) -> PowerWire:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
