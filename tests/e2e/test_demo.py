"""`noderecover demo` end to end: its own control plane, the takeover until the database is
back (mysql-0 Running on another node with its CSI volume attached there, freed by the
out-of-service taint after noderecover's Redfish fence), a summary, no leftovers.

The demo runs as a user runs it, with ``--keep``; while it keeps its cluster up, the facts
behind its last line are read from that cluster with the built kubectl and the kubeconfig
the demo printed, and from the dead node's BMC (the emulator's own answer); then Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from noderecover_testkit import build

pytestmark = pytest.mark.e2e


class Output:
    """The demo's stdout, line by line as it comes (a pipe: not a terminal)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._out = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._out:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = next((ln for ln in self.lines if ln.startswith(prefix)), None)
            if found is not None:
                return found
            if not self._thread.is_alive():
                break
            time.sleep(0.5)
        raise AssertionError(f"no line {prefix!r} within {timeout:g}s:\n" + self.text[-4000:])

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self) -> None:
        self._thread.join(30)


def kubectl_json(kubectl: Path, kubeconfig: str, *args: str) -> Any:
    out = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "--request-timeout=10s", *args, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def bmc_power(url: str, user: str, password: str) -> str:
    """The BMC's own answer (a raw Redfish GET, Basic auth)."""
    req = urllib.request.Request(url)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as reply:
        return str(json.load(reply)["PowerState"])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_gets_the_database_back_and_cleans_up(testcluster_bin_dir: Path) -> None:
    assert build.is_built()
    kubectl = testcluster_bin_dir / "kubectl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "noderecover", "demo", "--grace", "3s", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = Output(proc)
    t0 = time.monotonic()
    kept_dir: Path | None = None
    ports: list[int] = []
    try:
        kept = out.wait_for("==> cluster kept: kubectl --kubeconfig ", 400)
        out.wait_for("==> press Ctrl-C", 10)
        took = time.monotonic() - t0
        kubeconfig = kept.split("--kubeconfig ", 1)[1].split()[0]
        kept_dir = Path(kubeconfig).parents[1]
        text = out.text
        dead = re.search(r"^==> killing (\S+):", text, re.M)
        assert dead, text
        node = dead.group(1)

        # The last line of the run (before the --keep lines) is "database back", with the
        # step that freed the volume.
        run_lines = [ln for ln in out.lines if ln and not ln.startswith("==> ")]
        last = run_lines[-1]
        m = re.fullmatch(
            r"database back (\d+\.\d)s after (\S+) died: mysql-0 Running on (\S+) with (\S+) "
            r"attached there; by the out-of-service taint noderecover put on (\S+) once its "
            r"Redfish BMC read it back Off: the attach/detach controller detached the volume at "
            r"once",
            last,
        )
        assert m, f"last line: {last!r}\n{text}"
        back, died, new_node, pv = float(m[1]), m[2], m[3], m[4]
        assert died == m[5] == node and new_node != node
        print(f"\n[demo] {last}\n[demo] the demo reached it {took:.0f}s after it started")
        # The fast path, not Kubernetes' 6-minute hold: the node lease (20 s) goes stale,
        # then the fence (the emulator: Off 1-11 s after the ForceOff), taint, detach, attach.
        assert back < 90, last

        # The facts, read from the demo's cluster as an operator would.
        pod = kubectl_json(kubectl, kubeconfig, "get", "pod", "mysql-0")
        assert pod["status"]["phase"] == "Running" and pod["spec"]["nodeName"] == new_node
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == ["pvc-mysql-0"]
        pvc = kubectl_json(kubectl, kubeconfig, "get", "pvc", "pvc-mysql-0")
        assert pvc["spec"]["volumeName"] == pv
        vol = kubectl_json(kubectl, kubeconfig, "get", "pv", pv)
        assert vol["spec"]["csi"]["driver"] == "attach.noderecover.test"
        driver = kubectl_json(kubectl, kubeconfig, "get", "csidriver", "attach.noderecover.test")
        assert driver["spec"]["attachRequired"] is True
        attachments = [
            va
            for va in kubectl_json(kubectl, kubeconfig, "get", "volumeattachments")["items"]
            if va["spec"]["source"].get("persistentVolumeName") == pv
        ]
        assert [(va["spec"]["nodeName"], va["status"]["attached"]) for va in attachments] == [
            (new_node, True)
        ]
        nodes = [
            n["metadata"]["name"]
            for n in kubectl_json(kubectl, kubeconfig, "get", "nodes")["items"]
        ]
        assert node not in nodes  # noderecover's removal: taint, detach, Node DELETE
        # The dead node's BMC says Off (the emulator's own word, not noderecover's).
        secret = kubectl_json(
            kubectl, kubeconfig, "get", "secret", "-n", "noderecover", "noderecover-fence"
        )
        user, password = (
            base64.b64decode(secret["data"][k]).decode() for k in ("username", "password")
        )
        bmcs = dict(re.findall(r"^==> BMC of (\S+): (\S+)$", text, re.M))
        assert node in bmcs and len(bmcs) == 3, text
        assert bmc_power(bmcs[node], user, password) == "Off"
        assert all(bmc_power(u, user, password) == "On" for n, u in bmcs.items() if n != node)
        assert password not in text  # the demo never prints the BMC password

        # The timeline, as it happened: the fence and the taint before the volume moved.
        def at(what: str) -> float:
            found = re.search(rf"^\s+(\d+\.\d\d)s  {re.escape(what)}", text, re.M)
            assert found, f"{what!r} not in the timeline:\n{text}"
            return float(found[1])

        order = [
            f"{node} heartbeats stop",
            "node cordoned",
            "noderecover fences the node",
            f"BMC reads {node} Off",
            f"out-of-service taint on {node}",
            f"volume detached from {node}",
            f"volume attached on {new_node}",
            "database back",
        ]
        times = [at(w) for w in order]
        assert times == sorted(times), list(zip(order, times, strict=True))
        assert "node deleted" in text
        assert "cordon=1" in text and "taint=1" in text and "delete=1" in text and "fence=1" in text
        # stdout is a pipe, not a terminal: each timeline line once and one frame at the end,
        # not a full screen every half second.
        assert text.count("noderecover demo - ") == 1, text
        assert "\x1b[" not in text
        timeline = [ln for ln in out.lines if ln.strip().endswith("heartbeats stop")]
        assert len(timeline) == 2, timeline  # as it happened, and in the final frame
        ports = [int(urllib.parse.urlsplit(u).port or 0) for u in bmcs.values()]

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(90) == 0, out.text[-3000:] + (proc.stderr.read() if proc.stderr else "")
        out.join()
    finally:
        if proc.poll() is None:  # a failed check: tear the demo down as Ctrl-C does
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
    # The demo's own processes are gone: nothing runs from its cluster's folder (kwok,
    # the control plane), no BMC listens.
    assert kept_dir is not None
    left = subprocess.run(
        ["pgrep", "-f", str(kept_dir)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert not left, left
    assert not [p for p in ports if listening(p)]
    shutil.rmtree(kept_dir, ignore_errors=True)  # --keep keeps the cluster's folder
