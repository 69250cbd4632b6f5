"""Flags, environment variables, validation and the one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from noderecover.entry.cli import main, parser
from noderecover.entry.config import (
    BadFlag,
    Config,
    build_config,
    env_name,
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


@pytest.mark.parametrize(
    "text", ["-5s", "", "abc", "5x", "1m-3s", "s", "m5", "nan", "inf", "-inf", "1e999", "9000h"]
)
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
    assert (c.grace, c.healthy_delay, c.drain_timeout, c.removal) == (30, 30, 60, "auto")
    assert (c.removal_mode, c.detach_timeout) == ("delete", 120)
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


# ------------------------------------------------------------------------ the config matrix
NOT_EXECUTABLE = str(Path(__file__).with_name("__init__.py"))
ROOT = Path(__file__).resolve().parents[1]
CP_LABEL = "node-role.kubernetes.io/control-plane"

# Every flag that takes a value, with values it must refuse (and a word of the reason).
INVALID: list[tuple[str, str, str]] = [
    ("--grace", "-5s", "negative"),
    ("--grace", "soon", "unparsable"),
    ("--grace", "", "empty"),
    ("--grace", "nan", "unparsable"),
    ("--grace", "inf", "unparsable"),
    ("--grace", "1e400", "unparsable"),  # no exponents, like Go's time.ParseDuration
    ("--grace", "\uff15s", "non-ASCII"),  # fullwidth 5
    ("--grace", "\u0663s", "non-ASCII"),  # Arabic-Indic 3
    ("--grace", "\u0663", "non-ASCII"),
    ("--grace", "\u30005s", "non-ASCII"),  # an ideographic space is not stripped
    ("--grace", "1_000", "unparsable"),
    ("--grace", "+5", "unparsable"),
    ("--grace", "--", "negative duration '--'"),  # argparse hands `--grace=--` as []
    ("--grace", "9000h", "longer than 365 days"),
    ("--grace", "5x", "unparsable"),
    ("--healthy-delay", "-1", "negative"),
    ("--healthy-delay", "1m-3s", "unparsable"),
    ("--healthy-delay", "1\u0665m", "non-ASCII"),
    ("--unhealthy-conditions", "", "bad condition"),
    ("--unhealthy-conditions", "Ready", "bad condition"),
    ("--unhealthy-conditions", "Ready=Maybe", "bad condition"),
    ("--unhealthy-conditions", "Ready=False,,Ready=Unknown", "bad condition"),
    ("--unhealthy-conditions", "Re ady=False", "bad condition type"),
    ("--unhealthy-conditions", "Ready=True", "every healthy node"),
    ("--unhealthy-conditions", "DiskPressure=True,DiskPressure=False", "every node"),
    ("--drain-timeout", "forever", "unparsable"),
    ("--node-startup-timeout", "-1m", "negative"),
    ("--removal", "nuke", "unknown removal mode"),
    ("--removal", "DELETE", "unknown removal mode"),
    ("--fence-command", "'unterminated", "unparsable command"),
    ("--fence-command", "/nonexistent/power-off", "does not exist"),
    ("--fence-command", "no-such-power-off-tool --now", "not an executable on PATH"),
    ("--fence-command", NOT_EXECUTABLE, "not executable"),
    ("--fence-timeout", "0", "greater than 0s"),
    ("--detach-timeout", "0", "greater than 0s"),
    ("--detach-timeout", "soon", "duration"),
    ("--fence-timeout", "-1s", "negative"),
    ("--fence-provider", "ipmi", "is not one of command, redfish, aws, fence-agent"),
    ("--fence-provider", "command", "command needs --fence-command"),
    ("--fence-provider", "redfish", "needs secretName"),
    ("--fence-provider", "fence-agent", "needs agent"),
    ("--fence-secret", "Bad_Name", "not a Secret name"),
    ("--fence-action", "halt", "not off or reboot"),
    ("--fence-address-template", "{node}.bmc", "only {name} and {label:KEY}"),
    ("--fence-config", "/nonexistent/fence.json", "cannot read"),
    # JSON, but not a fence spec (the Grafana dashboard):
    ("--fence-config", str(ROOT / "docs" / "dashboard.json"), "fence config: unknown field"),
    ("--fence-config", __file__, "is not JSON"),
    ("--max-unhealthy", "150%", "not within 0-100%"),
    ("--max-unhealthy", "nan%", "neither a count nor a percent"),
    ("--max-unhealthy", "\u0664", "neither a count nor a percent"),
    ("--max-unhealthy", "\u0664\u0660%", "neither a count nor a percent"),
    ("--max-unhealthy", "1_0", "neither a count nor a percent"),
    ("--max-unhealthy", "-1", "negative"),
    ("--max-unhealthy", "4.5", "neither a count nor a percent"),
    ("--max-unhealthy", "", "neither a count nor a percent"),
    ("--breaker-window", "half an hour", "unparsable"),
    ("--storm-cooldown", "-5m", "negative"),
    ("--max-concurrent", "0", "at least 1"),
    ("--max-concurrent", "two", "not an integer"),
    ("--max-concurrent", "1.5", "not an integer"),
    ("--max-concurrent", "\u0663", "not an integer"),
    ("--max-concurrent", "\uff12", "not an integer"),
    ("--max-concurrent", "1_0", "not an integer"),
    ("--max-concurrent", "\u00b2", "not an integer"),  # superscript 2: isdigit() but not int()
    ("--max-removals-per-hour", "-1", "at least 1"),
    ("--max-removals-per-hour", "\u0661\u0660", "not an integer"),
    ("--node-selector", "a in (b", "unbalanced"),
    ("--node-selector", "=b", "invalid label key"),
    ("--node-selector", "A/B/C=x", "at most one '/'"),
    ("--node-selector", "Example.com/pool=x", "not a DNS subdomain"),
    ("--node-selector", "/pool=x", "empty prefix"),
    ("--node-selector", "example.com/=x", "empty name"),
    ("--node-selector", "-pool=x", "name part must be"),
    ("--node-selector", "a" * 64 + "=x", "longer than 63"),
    ("--node-selector", "a" * 254 + "/b", "not a DNS subdomain"),
    ("--node-selector", "pool=" + "v" * 64, "invalid label value"),
    ("--node-selector", "pool=-db", "invalid label value"),
    ("--node-selector", "pool in (a,b/c)", "invalid label value"),
    ("--node-selector", "p\u00f6ol=x", "invalid label key"),
    ("--node-selector", "pool=d\u00b5", "invalid label value"),
    ("--node-selector", "a=b,a=c", "matches no node"),
    ("--node-selector", "a,!a", "matches no node"),
    ("--node-selector", "a in (x),a notin (x)", "matches no node"),
    ("--node-selector", "pool=db,pool!=db", "matches no node"),
    ("--kubeconfig", "", "must not be empty"),
    ("--context", " ", "must not be empty"),
    ("--api-timeout", "0", "greater than 0s"),
    ("--watch-silence", "0.5s", "at least 1s"),
    ("--watch-timeout", "0.5s", "at least 1s"),
    ("--watch-timeout", "0.5", "unparsable"),  # a bare number is whole seconds (kubectl's)
    ("--http-bind", "nowhere", "not host:port"),
    ("--http-bind", "host:99999", "0-65535"),
    ("--http-bind", "::1:80", "[addr]:port"),
    ("--http-bind", "host:\u0668\u0660", "0-65535"),
    ("--http-bind", "host:\u00b2", "0-65535"),
    ("--http-bind", "h\u00f6st:80", "non-ASCII"),
    ("--lease-name", "Bad_Name", "not a valid Lease name"),
    ("--lease-name", "", "not a valid Lease name"),
    ("--lease-name", "a" * 254, "not a valid Lease name"),
    ("--lease-namespace", "Kube-System", "not a valid namespace"),
    ("--lease-namespace", "ns.with.dots", "not a valid namespace"),
    ("--lease-duration", "0", "greater than 0s"),
    ("--renew-deadline", "tomorrow", "unparsable"),
    ("--retry-period", "0", "greater than 0s"),
    ("--log-format", "xml", "not one of text, json"),
    ("--agent-isolation-timeout", "0", "greater than 0s"),
    ("--agent-watchdog-timeout", "-1s", "negative"),
    ("--agent-check-interval", "0s", "greater than 0s"),
    ("--agent-safe-time-floor", "soon", "unparsable"),
    ("--log-level", "verbose", "not one of"),
]
BOOLEAN_FLAGS = [
    "--exclude-control-plane",
    "--dry-run",
    "--watch-node-leases",
    "--grace-from-heartbeat",
    "--watch-agents",
    "--leader-elect",
]
INVALID_BOOLEANS = ["maybe", "2", "", "yes please"]


def run_flags() -> set[str]:
    run = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "run"
    ]
    return {a.option_strings[0] for a in run._actions if a.option_strings} - {"-h"}


def test_the_matrix_covers_every_flag() -> None:
    assert {f for f, _, _ in INVALID} | set(BOOLEAN_FLAGS) == run_flags()


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["run", *argv])
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("via", ["flag", "env"])
@pytest.mark.parametrize(("flag", "value", "why"), INVALID)
def test_every_invalid_value_exits_2_with_one_line_naming_its_source(
    flag: str,
    value: str,
    why: str,
    via: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if via == "env":
        monkeypatch.setenv(env_name(flag), value)
        code, err = run_main([], capsys)
        source = env_name(flag)
    else:
        code, err = run_main([f"{flag}={value}"], capsys)
        source = flag
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"noderecover: error: {source}: "), err
    assert why in err[0]


@pytest.mark.parametrize("value", INVALID_BOOLEANS)
@pytest.mark.parametrize("flag", BOOLEAN_FLAGS)
def test_invalid_boolean_env_values_exit_2(
    flag: str,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(env_name(flag), value)
    code, err = run_main([], capsys)
    assert code == 2
    assert err == [f"noderecover: error: {env_name(flag)}: {value!r} is not a boolean"]


@pytest.mark.parametrize("flag", BOOLEAN_FLAGS)
def test_boolean_flags_take_no_value(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", f"{flag}=yes"])
    err = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2 and len(err) == 1 and flag in err[0]


# Conflicts: (flags, environment, the source named first, the other side it names).
CONFLICTS: list[tuple[list[str], dict[str, str], str, str]] = [
    (["--lease-duration=5s"], {}, "--lease-duration", "--renew-deadline"),
    (["--renew-deadline=20s"], {}, "--renew-deadline", "--lease-duration"),
    (["--renew-deadline=15s"], {}, "--renew-deadline", "--lease-duration"),
    (["--retry-period=9s"], {}, "--retry-period", "--renew-deadline"),
    (["--renew-deadline=2.4s", "--retry-period=2s"], {}, "--renew-deadline", "--retry-period"),
    ([], {"NODERECOVER_LEASE_DURATION": "5s"}, "NODERECOVER_LEASE_DURATION", "--renew-deadline"),
    (
        ["--renew-deadline=20s"],
        {"NODERECOVER_LEASE_DURATION": "10s"},
        "NODERECOVER_LEASE_DURATION",
        "--renew-deadline",
    ),
    ([f"--node-selector={CP_LABEL}"], {}, "--node-selector", "--exclude-control-plane"),
    (
        ["--node-selector=node-role.kubernetes.io/master=", "--exclude-control-plane"],
        {},
        "--node-selector",
        "--exclude-control-plane",
    ),
    (
        ["--exclude-control-plane"],
        {"NODERECOVER_NODE_SELECTOR": f"{CP_LABEL},pool=db"},
        "NODERECOVER_NODE_SELECTOR",
        "--exclude-control-plane",
    ),
    (
        [f"--node-selector={CP_LABEL}"],
        {"NODERECOVER_EXCLUDE_CONTROL_PLANE": "true"},
        "--node-selector",
        "NODERECOVER_EXCLUDE_CONTROL_PLANE",
    ),
]


@pytest.mark.parametrize(("argv", "env", "named", "other"), CONFLICTS)
def test_conflicting_settings_are_refused(
    argv: list[str],
    env: dict[str, str],
    named: str,
    other: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, err = run_main(argv, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"noderecover: error: {named}: "), err
    assert other in err[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["--grace=0", "--healthy-delay=0", "--drain-timeout=0", "--max-unhealthy=0"],
        ["--watch-silence=1s", "--watch-timeout=1"],
        ["--fence-command=true --really", "--fence-timeout=0.5s"],
        ["--fence-command="],  # explicitly none
        ["--node-selector=a=b,a!=c"],
        ["--node-selector=example.com/pool=db,Pool_1.x-y=V_1.a-b,k8s.io/empty="],
        ["--node-selector=" + "a" * 63 + "=" + "v" * 63],
        ["--node-selector=" + ".".join(["a" * 63] * 3 + ["b" * 61]) + "/n in (x, y)"],
        ["--grace=1h1h", "--healthy-delay=.5s", "--max-unhealthy=12.5%", "--max-concurrent= 3"],
        ["--grace=60s\n", "--max-concurrent=3\n", "--max-unhealthy=\t40%\n"],  # YAML `|`
        ["--node-selector=a in (x,y),a notin (y)"],
        ["--node-selector=pool!=db,!pool"],  # matched by nodes without the label
        [f"--node-selector={CP_LABEL}", "--no-exclude-control-plane"],
        [f"--node-selector=!{CP_LABEL}"],
        ["--unhealthy-conditions=Ready=Unknown,NetworkUnavailable=True"],
        ["--unhealthy-conditions=KernelDeadlock=True,Ready=False"],
        ["--http-bind=[::1]:0", "--lease-name=a.b-c", "--lease-namespace=ops-1"],
        ["--lease-duration=4s", "--renew-deadline=3s", "--retry-period=1s"],
        ["--grace=8760h"],
    ],
)
def test_edge_values_that_are_fine(argv: list[str]) -> None:
    assert isinstance(cfg(*argv), Config)


def test_flag_wins_over_env_even_a_bad_env_value() -> None:
    c = cfg("--grace=2m", env={"NODERECOVER_GRACE": "garbage"})
    assert c.grace == 120
    c = cfg("--no-dry-run", env={"NODERECOVER_DRY_RUN": "maybe"})
    assert not c.dry_run
    with pytest.raises(BadFlag, match=r"^--grace: negative duration"):
        cfg("--grace=-1s", env={"NODERECOVER_GRACE": "30s"})  # the flag is what is used
    with pytest.raises(BadFlag, match=r"^NODERECOVER_GRACE: unparsable"):
        cfg("--healthy-delay=5s", env={"NODERECOVER_GRACE": "soon"})


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
