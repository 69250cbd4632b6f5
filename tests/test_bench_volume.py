"""A smoke of bench/volume_bench.py's own code (no cluster): the milestones read from
noderecover's JSON log, the breakdown table, the ratios against the script and the target.
The benchmark itself is not part of the test command (docs/benchmarks.md, section 6)."""

from __future__ import annotations

import json

import pytest
from noderecover_testkit.volumes import RecoveryTimeline

from bench import volume_bench as vb

KILL = 1_800_000_000.0  # wall time of the kill


def _line(at: float, msg: str, **extra: object) -> str:
    secs = KILL + at
    whole = int(secs)
    ms = round((secs - whole) * 1000)
    import time

    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"
    return json.dumps({"ts": ts, "level": "info", "msg": msg, **extra})


def test_log_marks_reads_the_decisions_and_the_fence_of_that_node_only() -> None:
    lines = [
        "not json",
        _line(1.0, "persist w-2: unhealthy", node="w-2", action="persist"),
        _line(
            40.2,
            "persist w-1: unhealthy (Ready=Unknown), grace timer started from the last "
            "heartbeat seen, 37s ago",
            node="w-1",
            action="persist",
        ),
        _line(40.5, "cordon w-1: unhealthy for 40s >= grace", node="w-1", action="cordon"),
        _line(41.0, "cordon w-1: again", node="w-1", action="cordon"),
        _line(
            44.0,
            "fence off of node w-1 (uid u1) at http://127.0.0.1:1 requested through redfish",
        ),
        _line(
            49.5,
            "redfish confirmed node w-1 (uid u1) at http://127.0.0.1:1: off after 6.0s (1 tries)",
        ),
        _line(50.0, "fence off of node w-2 (uid u2) at x requested through redfish"),
    ]
    marks = vb.log_marks(lines, KILL, "w-1")
    assert marks["decided persist"] == pytest.approx(40.2, abs=0.002)
    assert marks["grace counted from the last heartbeat"] == marks["decided persist"]
    assert marks["decided cordon"] == pytest.approx(40.5, abs=0.002)  # the first one
    assert marks["fence requested"] == pytest.approx(44.0, abs=0.002)
    assert marks["fence start"] == pytest.approx(43.5, abs=0.002)  # confirmed less its 6.0 s
    assert marks["fence confirmed off"] == pytest.approx(49.5, abs=0.002)


def _result(key: str, attached: float | None, **marks: float) -> vb.Result:
    tl = RecoveryTimeline(start=KILL, pod="mysql-0", old_node="w-1", pv="pv-1")
    tl.node, tl.running, tl.attached = "w-2", (attached or 0) - 0.5, attached
    return vb.Result(key, key, marks=dict(marks), tl=tl)


def test_report_gives_the_breakdown_the_gaps_the_target_and_the_ratio_to_the_script() -> None:
    results = [
        _result("liberator", 470.0, **{"last heartbeat": -4.0, "node NotReady": 40.0}),
        _result("redfish", 47.0, **{"last heartbeat": -2.0, "node NotReady": 41.0}),
        _result("none", None),
        _result("aws", 60.0, **{"last heartbeat": -9.0}),
    ]
    text = vb.report(results, cap=600)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    cells = {k: [c.strip() for c in v.split("|")[2:-1]] for k, v in rows.items()}
    assert cells["grace counted from the last heartbeat?"] == ["-", "no", "no", "no"]
    assert cells["Lease expired (+40 s)"] == ["36.0", "38.0", "-", "31.0"]
    assert cells["**volume attached on the new node**"] == [
        "**470.0**",
        "**47.0**",
        "no (> 600)",
        "**60.0**",
    ]
    assert cells["gap: attached - Ready=Unknown (the limit in this run)"] == [
        "430.0",
        "6.0",
        "-",
        "-",
    ]
    # physical limit = last heartbeat + 40 s + one 5 s monitor period
    assert cells["gap: attached - (Lease expired + 5 s)"][1] == "4.0"
    assert cells[f"target <= {vb.TARGET:.0f} s"] == [
        "(baseline)",
        "met",
        "(no proof: the hold)",
        "MISSED",
    ]
    assert cells["vs the script (its time / this)"] == ["1.0x", "10.0x", "-", "7.8x"]
    readme = vb.readme_table(results)
    assert "| redfish" in readme and "10.0x" in readme and "| none" in readme


def test_an_unknown_scenario_is_refused_before_any_cluster_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        vb.main(["--only", "redfish,ipmi"])
    assert exc.value.code == 2
    assert "unknown scenarios: ipmi" in capsys.readouterr().err
