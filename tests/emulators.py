"""Real emulators for the fence providers' tests, each started on 127.0.0.1 with a free port
and stopped by the test: sushy-tools' Redfish emulator (fake systems driver), moto's server
(EC2), and a BMC on pyghmi's server side (tests/ipmi_bmc.py). No wire protocol is faked here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], log: Path, within: float = 30.0, port: int = 0
) -> None:
    """Until `url` answers (or, with no url, `port` accepts a connection)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the emulator exited: {log.read_text()[-2000:]}")
        try:
            if not url:
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    return
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: no answer within {within:g}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _process(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
    try:
        yield proc
    finally:
        _stop(proc)


@dataclass(frozen=True)
class RedfishSystem:
    uuid: str
    name: str
    power: str = "On"


@dataclass(frozen=True)
class Redfish:
    url: str
    user: str
    password: str
    log: Path

    def system_path(self, uuid: str) -> str:
        return f"/redfish/v1/Systems/{uuid}"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "bmc.crt", tmp / "bmc.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.contextmanager
def sushy_emulator(
    tmp: Path,
    systems: Sequence[RedfishSystem],
    user: str = "admin",
    password: str = "pw",
    *,
    tls: bool = False,
    extra: str = "",
) -> Iterator[Redfish]:
    """sushy-tools' emulator with its fake driver and Basic auth (bcrypt htpasswd), its
    state in `tmp` (the driver keeps a uuid's old state across runs otherwise). `tls`: HTTPS
    with a self-signed certificate (fence_redfish speaks HTTPS only)."""
    port = free_port()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp / "htpasswd").write_text(f"{user}:{hashed}\n")
    fake = [
        {
            "uuid": s.uuid,
            "name": s.name,
            "power_state": s.power,
            "nics": [],
            "external_notifier": False,
        }
        for s in systems
    ]
    conf = tmp / "emulator.conf"
    conf.write_text(
        f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(tmp / 'htpasswd')!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(tmp / 'state')!r}\n"
    )
    scheme = "http"
    if extra:
        with conf.open("a") as f:
            f.write(extra)
    if tls:
        cert, key = self_signed(tmp)
        scheme = "https"
        with conf.open("a") as f:
            f.write(
                f"SUSHY_EMULATOR_SSL_CERT = {str(cert)!r}\nSUSHY_EMULATOR_SSL_KEY = {str(key)!r}\n"
            )
    log = tmp / "sushy.log"
    argv = [str(BIN / "sushy-emulator"), "--config", str(conf), "-i", "127.0.0.1", "-p", str(port)]
    with _process(argv, log) as proc:
        url = f"{scheme}://127.0.0.1:{port}"
        _wait_http(f"http://127.0.0.1:{port}/redfish/v1/" if not tls else "", proc, log, port=port)
        yield Redfish(url, user, password, log)


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
        _wait_http(f"{url}/moto-api/", proc, log)
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
