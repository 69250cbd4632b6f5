"""Flags, environment variables, validation and the one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from noderecover.cli import main, parser
from noderecover.config import (
    BadFlag,
    build_config,
    parse_conditions,
    parse_duration,
    parse_threshold,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5m", 90), ("0", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-5s", "", "abc", "5x", "1m-3s", "s", "m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_thresholds() -> None:
    assert parse_threshold("40%").percent and parse_threshold("40%").value == 40
    assert not parse_threshold("3").percent
    for bad in ["101%", "-1", "x", "-5%", "4.5"]:
        with pytest.raises(ValueError):
            parse_threshold(bad)


def test_conditions() -> None:
    assert parse_conditions("Ready=False, NetworkUnavailable=True") == {
        ("Ready", "False"),
        ("NetworkUnavailable", "True"),
    }
    with pytest.raises(ValueError):
        parse_conditions("Ready=Maybe")


def cfg(*argv: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    args = parser().parse_args(["run", *argv])
    return build_config(args, env or {})


def test_defaults() -> None:
    c = cfg()
    assert (c.grace, c.healthy_delay, c.drain_timeout, c.removal) == (60, 30, 60, "delete")
    assert str(c.max_unhealthy) == "40%" and c.max_concurrent == 1
    assert c.exclude_control_plane and not c.dry_run and c.watch_node_leases
    assert c.leader_elect is None and c.lease_duration == 15 and c.retry_period == 2


def test_flags_beat_env_beat_defaults() -> None:
    c = cfg("--grace", "2m", env={"NODERECOVER_GRACE": "30s", "NODERECOVER_DRY_RUN": "true"})
    assert c.grace == 120 and c.dry_run
    c = cfg("--no-dry-run", env={"NODERECOVER_DRY_RUN": "true"})
    assert not c.dry_run
    c = cfg(env={"NODERECOVER_NODE_SELECTOR": "pool=db", "NODERECOVER_REMOVAL": "both"})
    assert str(c.node_selector) == "pool=db" and c.removal == "both"


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--grace=-5s"], {}, "--grace"),
        (["--grace", "soon"], {}, "--grace"),
        (["--max-unhealthy", "150%"], {}, "--max-unhealthy"),
        (["--removal", "nuke"], {}, "--removal"),
        (["--node-selector", "a in (b"], {}, "--node-selector"),
        (["--max-concurrent", "0"], {}, "--max-concurrent"),
        ([], {"NODERECOVER_DRAIN_TIMEOUT": "forever"}, "NODERECOVER_DRAIN_TIMEOUT"),
        (["--lease-duration", "5s"], {}, "--lease-duration"),
        (["--retry-period", "9s"], {}, "--renew-deadline"),
        (["--http-bind", "nowhere"], {}, "--http-bind"),
        (["--log-format", "xml"], {}, "--log-format"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(BadFlag) as exc:
        cfg(*argv, env=env)
    assert str(exc.value).startswith(named)


def test_bad_flag_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--grace=-1s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["noderecover: error: --grace: negative duration '-1s'"]


def test_unknown_flag_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "noderecover", "run", "--graze", "5s"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--graze" in proc.stderr


def test_unreadable_kubeconfig_exits_2_naming_the_path(tmp_path: object) -> None:
    path = f"{tmp_path}/missing.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "noderecover", "run", "--kubeconfig", path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"noderecover: error: --kubeconfig: cannot read {path}"
    ]


def test_garbage_kubeconfig_exits_2(tmp_path: object) -> None:
    path = f"{tmp_path}/bad.yaml"
    with open(path, "w") as f:
        f.write("this: [is not: a kubeconfig\n")
    proc = subprocess.run(
        [sys.executable, "-m", "noderecover", "run", "--kubeconfig", path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and path in proc.stderr


def test_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "noderecover", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("noderecover ")
