"""The harness's power-off (``_Proc.stop(sigkill_first=True)``, what ``kill_node`` and the
agents' fence do to a node's kwok) lets no code of a paused process run again: a frozen
(partitioned, SIGSTOPped) kubelet powered off sends no heartbeat after it. The volume
benchmark once measured a partitioned node whose agent had fenced it renew its Lease at the
fence (resumed by a SIGCONT before the SIGKILL): the controller then saw the kubelet alive
after its agent had gone quiet, rightly did not rely on the agent, and the volume waited the
6-minute hold."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from noderecover_testkit.cluster import _Proc

# Writes a line every 10 ms: any moment it runs shows in the file.
BEAT = (
    "import sys, time\n"
    "f = open(sys.argv[1], 'a', buffering=1)\n"
    "while True:\n"
    "    f.write(f'{time.time()}\\n')\n"
    "    time.sleep(0.01)\n"
)


def _frozen(tmp_path: Path, name: str) -> tuple[_Proc, Path]:
    beats = tmp_path / f"{name}.beats"
    proc = _Proc(name, [sys.executable, "-c", BEAT, str(beats)], tmp_path / f"{name}.log")
    proc.start()
    deadline = time.monotonic() + 10
    while not beats.exists() or not beats.read_text():
        assert time.monotonic() < deadline, "the child never beat"
        time.sleep(0.01)
    assert proc.popen is not None
    os.killpg(proc.popen.pid, signal.SIGSTOP)
    time.sleep(0.2)  # its next beat is overdue by now
    return proc, beats


def test_a_paused_process_powered_off_never_runs_again(tmp_path: Path) -> None:
    for i in range(5):  # the race (a resume before the kill) needs no luck to show
        proc, beats = _frozen(tmp_path, f"kwok-{i}")
        before = beats.read_text()
        proc.stop(sigkill_first=True)
        assert not proc.running()
        assert beats.read_text() == before, "a beat after the power-off"


def test_a_paused_process_stopped_gently_still_exits(tmp_path: Path) -> None:
    proc, _beats = _frozen(tmp_path, "kwok-term")
    proc.stop(timeout=5)
    assert not proc.running()


def test_a_power_off_never_resumes_a_paused_process_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the behaviour test above cannot always catch with a Python child (a Go
    kwok's threads resumed on the other core within microseconds): the signals a power-off
    sends, in order. Nothing may resume the process before SIGKILL."""
    proc, _beats = _frozen(tmp_path, "kwok-order")
    sent: list[int] = []
    real_killpg = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        sent.append(sig)
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    proc.stop(sigkill_first=True)
    assert sent and sent[0] == signal.SIGKILL, sent
    assert signal.SIGCONT not in sent, sent
