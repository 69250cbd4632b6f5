"""`noderecover demo` end to end: its own control plane, the takeover, a summary, no leftovers."""

from __future__ import annotations

import subprocess
import sys

import pytest
from noderecover_testkit import build

pytestmark = pytest.mark.e2e


def test_demo_runs_the_takeover_and_cleans_up(testcluster_bin_dir: object) -> None:
    assert build.is_built()
    before = subprocess.run(
        ["pgrep", "-c", "-f", "kwok --kubeconfig"], capture_output=True, text=True, check=False
    ).stdout.strip()
    proc = subprocess.run(
        [sys.executable, "-m", "noderecover", "demo", "--grace", "3s"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "mysql-0 is Running on" in out and "time to recovery" in out
    assert "cordon=1" in out and "delete=1" in out
    assert "node deleted" in out
    # stdout is a pipe, not a terminal: each timeline line once and one frame at the end,
    # not a full screen every half second (37 screens for one run, before).
    assert out.count("noderecover demo - ") == 1, out
    assert "\x1b[" not in out
    timeline = [ln for ln in out.splitlines() if ln.strip().endswith("heartbeats stop")]
    assert len(timeline) == 2, timeline  # as it happened, and in the final frame
    after = subprocess.run(
        ["pgrep", "-c", "-f", "kwok --kubeconfig"], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert after == before  # the demo's own processes are gone
