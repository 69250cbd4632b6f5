"""Real emulators of the machines' out-of-band side, run on 127.0.0.1 beside the test control
plane: sushy-tools' Redfish emulator (its fake systems driver), in its own process, on a free
port. Used by the fence providers' tests (tests/emulators.py adds moto's EC2 server and a
pyghmi BMC) and by ``noderecover demo`` (each killable node gets a BMC). No wire protocol is
faked here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
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

from .processes import free_port

#: The folder of this interpreter's scripts (sushy-emulator, moto_server).
BIN = Path(sys.executable).parent


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_http(
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
def process(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running, its output in ``log``; stopped (SIGTERM, then SIGKILL) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    try:
        yield proc
    finally:
        stop_process(proc)


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

    def power(self, uuid: str, timeout: float = 5.0) -> str:
        """The emulator's own answer about system ``uuid``'s PowerState (a raw GET with
        Basic auth, not through a client library). Plain HTTP only."""
        req = urllib.request.Request(self.url + self.system_path(uuid))
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=timeout) as reply:
            return str(json.load(reply)["PowerState"])


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
    with a self-signed certificate (fence_redfish speaks HTTPS only). The fake driver reports
    a ForceOff done 1-11 s after the request."""
    import bcrypt  # sushy-tools' own dependency (its htpasswd check)

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
    with process(argv, log, cwd=tmp) as proc:
        url = f"{scheme}://127.0.0.1:{port}"
        wait_http(f"http://127.0.0.1:{port}/redfish/v1/" if not tls else "", proc, log, port=port)
        yield Redfish(url, user, password, log)
