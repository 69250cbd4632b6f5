"""The reboot strategies with fake device files: what the watchdog and sysrq code paths write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from noderecover_testkit.agents import power_off_due

from noderecover.agent import reboot
from noderecover.base.clock import FakeClock
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
    # Not writable whoever runs the test (root included): a directory in its place.
    folder = tmp_path / "sysrq-trigger"
    folder.mkdir()
    with pytest.raises(reboot.RebootError, match="not writable"):
        reboot.Sysrq(folder).arm()
    ro = tmp_path / "ro"
    ro.write_bytes(b"")
    ro.chmod(0o444)
    if not os.access(ro, os.W_OK):  # not root: a read-only file too
        with pytest.raises(reboot.RebootError, match="not writable"):
            reboot.Sysrq(ro).arm()
    assert ro.read_bytes() == b""  # a probe writes nothing


def test_file_action_appends_a_json_line(tmp_path: Path) -> None:
    out = tmp_path / "fenced"
    action = reboot.FileAction(out, "worker-1", 3.0)
    action.arm()
    action.fence("isolation-timeout")
    (line,) = out.read_text().splitlines()
    data = json.loads(line)
    assert data["node"] == "worker-1" and data["why"] == "isolation-timeout"


def test_file_action_emulates_a_watchdog_with_feed_stamps(tmp_path: Path) -> None:
    """The test action stamps every feed once armed (not before), stops for good at the fence,
    and a clean disarm says so (the magic close); the harness bites on the stamp."""
    clock = FakeClock()
    out = tmp_path / "fenced"
    action = reboot.FileAction(out, "w1", 2.0, monotonic=clock.monotonic)
    stamp = reboot.feed_file(out)
    action.feed()
    assert not stamp.exists() and reboot.read_feed(stamp) is None  # not armed: no dog
    action.arm()
    first = reboot.read_feed(stamp)
    assert first is not None and first.armed and first.timeout == 2.0
    assert first.fed == clock.monotonic() and first.pid == os.getpid()
    clock.advance(1.5)
    action.feed()
    fed = reboot.read_feed(stamp)
    assert fed is not None and fed.fed == clock.monotonic() and action.feeds == 2
    # The dog bites only once the timeout has passed since the last feed.
    assert fed.overdue(clock.monotonic() + 2.0) is None
    assert fed.overdue(clock.monotonic() + 2.25) == pytest.approx(0.25)
    action.fence("isolation-timeout")
    clock.advance(5)
    action.feed()
    action.disarm()  # never after a fence
    assert reboot.read_feed(stamp) == fed
    assert json.loads(out.read_text())["why"] == "isolation-timeout"


def test_file_action_clean_disarm_stops_the_emulated_dog(tmp_path: Path) -> None:
    clock = FakeClock()
    action = reboot.FileAction(tmp_path / "fenced", "w1", 2.0, monotonic=clock.monotonic)
    action.arm()
    action.disarm()
    stamp = reboot.read_feed(reboot.feed_file(tmp_path / "fenced"))
    assert stamp is not None and not stamp.armed
    assert stamp.overdue(clock.monotonic() + 3600) is None


def test_feed_stamp_that_cannot_be_read_is_no_stamp(tmp_path: Path) -> None:
    bad = tmp_path / "f.feed"
    for body in (b"", b"{", b'{"armed": true}', b'{"armed": true, "timeout": "x", "fed": 1}'):
        bad.write_bytes(body)
        assert reboot.read_feed(bad) is None


def test_harness_powers_off_a_node_whose_armed_agent_stopped_feeding(tmp_path: Path) -> None:
    """noderecover_testkit.agents.power_off_due: the emulated dog of a stalled agent bites
    after its timeout (not before, never when disarmed or never armed); a fence line wins."""
    clock = FakeClock()
    out = tmp_path / "fenced"
    assert power_off_due(out, clock.monotonic()) is None  # no agent armed yet
    action = reboot.FileAction(out, "w1", 2.0, monotonic=clock.monotonic)
    action.arm()
    for _ in range(10):  # fed every 0.5 s for 5 s: never due
        clock.advance(0.5)
        action.feed()
        assert power_off_due(out, clock.monotonic()) is None
    clock.advance(2.0)  # then stalled (hung, SIGSTOPped, killed): nothing fed
    assert power_off_due(out, clock.monotonic()) is None
    clock.advance(0.1)
    due = power_off_due(out, clock.monotonic(), lambda: "T")
    assert due is not None and due.wall is None and due.late == pytest.approx(0.1)
    assert due.why == "watchdog: not fed for 2.1s (timeout 2s; agent process T)"
    action.fence("marked")
    due = power_off_due(out, clock.monotonic())
    assert due is not None and due.why == "marked" and due.wall is not None and due.late is None


def test_harness_never_bites_after_a_clean_disarm(tmp_path: Path) -> None:
    clock = FakeClock()
    out = tmp_path / "fenced"
    action = reboot.FileAction(out, "w1", 2.0, monotonic=clock.monotonic)
    action.arm()
    action.disarm()
    clock.advance(600)
    assert power_off_due(out, clock.monotonic()) is None


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
