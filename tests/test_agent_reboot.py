"""The reboot strategies with fake device files: what the watchdog and sysrq code paths write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from noderecover.agent import reboot
from noderecover.core.agent import Mode


def test_watchdog_is_fed_until_the_fence_and_never_after(tmp_path: Path) -> None:
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    dog = reboot.Watchdog(dev, 30.0)
    dog.arm()
    assert dog.timeout == 30.0  # a plain file is not a watchdog: the flag's timeout stays
    dog.feed()
    dog.feed()
    assert dev.read_bytes() == reboot.FEED * 3  # arm feeds once
    dog.fence("isolation-timeout")
    dog.feed()
    dog.disarm()  # never after a fence: the magic close would stop the dog
    assert dev.read_bytes() == reboot.FEED * 3
    assert b"V" not in dev.read_bytes()


def test_watchdog_magic_close_only_on_a_clean_disarm(tmp_path: Path) -> None:
    dev = tmp_path / "watchdog"
    dev.write_bytes(b"")
    dog = reboot.Watchdog(dev, 10.0)
    dog.arm()
    dog.disarm()
    assert dev.read_bytes() == reboot.FEED + reboot.MAGIC_CLOSE
    dog.feed()  # closed: nothing more
    assert dev.read_bytes() == reboot.FEED + reboot.MAGIC_CLOSE


def test_watchdog_missing_device(tmp_path: Path) -> None:
    with pytest.raises(reboot.RebootError, match="cannot open watchdog"):
        reboot.Watchdog(tmp_path / "none", 10).arm()


def test_sysrq_writes_b_on_fence_only(tmp_path: Path) -> None:
    trigger = tmp_path / "sysrq-trigger"
    trigger.write_bytes(b"")
    action = reboot.Sysrq(trigger)
    action.arm()
    action.feed()
    action.disarm()
    assert trigger.read_bytes() == b""
    action.fence("marked")
    assert trigger.read_bytes() == b"b"
    assert action.timeout == 0.0


def test_sysrq_missing_or_read_only(tmp_path: Path) -> None:
    with pytest.raises(reboot.RebootError, match="no sysrq trigger"):
        reboot.Sysrq(tmp_path / "none").arm()
    ro = tmp_path / "ro"
    ro.write_bytes(b"")
    ro.chmod(0o444)
    if os.access(ro, os.W_OK):
        pytest.skip("running as root: a read-only file is still writable")
    with pytest.raises(reboot.RebootError, match="not writable"):
        reboot.Sysrq(ro).arm()


def test_file_action_appends_a_json_line(tmp_path: Path) -> None:
    out = tmp_path / "fenced"
    action = reboot.FileAction(out, "worker-1", 3.0)
    action.arm()
    action.fence("isolation-timeout")
    (line,) = out.read_text().splitlines()
    data = json.loads(line)
    assert data["node"] == "worker-1" and data["why"] == "isolation-timeout"


def test_choose_auto_prefers_the_watchdog_then_sysrq(tmp_path: Path) -> None:
    dev, trig = tmp_path / "watchdog", tmp_path / "sysrq"
    with pytest.raises(reboot.RebootError, match="cannot fence this node"):
        reboot.choose("auto", dev, trig, 30)
    trig.write_bytes(b"")
    assert reboot.choose("auto", dev, trig, 30).mode is Mode.SYSRQ
    dev.write_bytes(b"")
    assert reboot.choose("auto", dev, trig, 30).mode is Mode.WATCHDOG
    assert reboot.choose("sysrq", dev, trig, 30).mode is Mode.SYSRQ
    with pytest.raises(reboot.RebootError):
        reboot.choose("test", dev, trig, 30)
    assert reboot.choose("test", dev, trig, 30, test_file=tmp_path / "f").mode is Mode.TEST
