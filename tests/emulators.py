"""Real emulators for the fence providers' tests, each started on 127.0.0.1 with a free port
and stopped by the test: sushy-tools' Redfish emulator (fake systems driver; in the testkit,
which `noderecover demo` uses too), moto's server (EC2), and a BMC on pyghmi's server side
(tests/ipmi_bmc.py). No wire protocol is faked here.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    "Redfish",
    "RedfishSystem",
    "fence_agents_installed",
    "free_port",
    "ipmi_bmc",
    "moto_server",
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
