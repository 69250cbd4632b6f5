"""Configuration: one frozen dataclass, parsed from flags and NODERECOVER_* variables.

Every value is validated here, once; the rest of the code trusts `Config`.
Flag precedence: command line > environment variable > default.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from noderecover.selectors import Selector, parse_selector

ENV_PREFIX = "NODERECOVER_"
REMOVAL_MODES = ("delete", "out-of-service", "both")
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """'90', '90s', '1m30s', '500ms', '2h' -> seconds. Negative or unparsable -> ValueError."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    if s.startswith("-"):
        raise ValueError(f"negative duration {text!r}")
    try:
        return float(s)
    except ValueError:
        pass
    pos, total = 0, 0.0
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * unit[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"unparsable duration {text!r} (use e.g. 90s, 5m, 1m30s)")
    return total


@dataclass(frozen=True, slots=True)
class Threshold:
    """An absolute count or a percentage of the node population."""

    value: float
    percent: bool

    def limit(self, total: int) -> float:
        return self.value * total / 100.0 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


def parse_threshold(text: str) -> Threshold:
    s = text.strip()
    try:
        if s.endswith("%"):
            value = float(s[:-1])
            if not 0 <= value <= 100:
                raise ValueError(f"percent {text!r} not within 0-100%")
            return Threshold(value, True)
        count = int(s)
    except ValueError as exc:
        if "percent" in str(exc):
            raise
        raise ValueError(f"{text!r} is neither a count nor a percent like 40%") from None
    if count < 0:
        raise ValueError(f"negative count {text!r}")
    return Threshold(float(count), False)


def parse_conditions(text: str) -> frozenset[tuple[str, str]]:
    """'Ready=False,Ready=Unknown,NetworkUnavailable=True' -> {(type, status)}."""
    out = set()
    for part in text.split(","):
        ctype, sep, status = part.strip().partition("=")
        if not sep or not ctype or status not in {"True", "False", "Unknown"}:
            raise ValueError(f"bad condition {part.strip()!r} (want Type=True|False|Unknown)")
        out.add((ctype, status))
    if not out:
        raise ValueError("no conditions given")
    return frozenset(out)


def parse_removal(text: str) -> str:
    if text not in REMOVAL_MODES:
        raise ValueError(f"unknown removal mode {text!r} (want one of {', '.join(REMOVAL_MODES)})")
    return text


def parse_positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def parse_command(text: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"unparsable command {text!r}: {exc}") from None
    return argv


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean")


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True, slots=True)
class Config:
    # Decisions
    grace: float = 60.0
    healthy_delay: float = 30.0
    unhealthy_conditions: frozenset[tuple[str, str]] = frozenset(
        {("Ready", "False"), ("Ready", "Unknown")}
    )
    drain_timeout: float = 60.0
    removal: str = "delete"
    fence_command: tuple[str, ...] = ()
    fence_timeout: float = 60.0
    # Safety gates
    max_unhealthy: Threshold = field(default_factory=lambda: Threshold(40.0, True))
    breaker_window: float = 1800.0
    storm_cooldown: float = 300.0
    max_concurrent: int = 1
    max_removals_per_hour: int = 10
    node_selector: Selector = field(default_factory=Selector)
    exclude_control_plane: bool = True
    dry_run: bool = False
    watch_node_leases: bool = True
    # Plumbing
    kubeconfig: str | None = None
    context: str | None = None
    api_timeout: float = 10.0
    watch_silence: float = 90.0
    watch_timeout: float = 300.0
    http_bind: str = "0.0.0.0:8080"
    leader_elect: bool | None = None  # None = on in a cluster, off locally
    lease_name: str = "noderecover"
    lease_namespace: str | None = None
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    log_format: str = "text"
    log_level: str = "info"

    @property
    def fencing(self) -> bool:
        return bool(self.fence_command)

    @property
    def relevant_labels(self) -> frozenset[str]:
        """Node labels the decisions read; all others are dropped when parsing a Node."""
        return self.node_selector.keys | frozenset(CONTROL_PLANE_LABELS)


class BadFlag(ValueError):
    """A flag or environment variable has a bad value; the message names it."""


@dataclass(frozen=True)
class _Opt:
    flag: str
    dest: str
    parse: Callable[[str], Any]
    help: str
    default: Any
    boolean: bool = False


def _opts() -> list[_Opt]:
    d = Config()
    dur = parse_duration
    return [
        _Opt(
            "--grace",
            "grace",
            dur,
            "how long a node must stay unhealthy before remediation",
            d.grace,
        ),
        _Opt(
            "--healthy-delay",
            "healthy_delay",
            dur,
            "how long a node must stay healthy again before it counts as recovered",
            d.healthy_delay,
        ),
        _Opt(
            "--unhealthy-conditions",
            "unhealthy_conditions",
            parse_conditions,
            "comma-separated Type=Status pairs that make a node unhealthy",
            "Ready=False,Ready=Unknown",
        ),
        _Opt(
            "--drain-timeout",
            "drain_timeout",
            dur,
            "after this long draining, force-delete pods still on the node",
            d.drain_timeout,
        ),
        _Opt(
            "--removal",
            "removal",
            parse_removal,
            "how to free the pods: delete | out-of-service | both",
            d.removal,
        ),
        _Opt(
            "--fence-command",
            "fence_command",
            parse_command,
            "command that powers off the node (NODE_NAME in env); must succeed before "
            "force-deleting pods or removing the node",
            "",
        ),
        _Opt(
            "--fence-timeout",
            "fence_timeout",
            dur,
            "bound on one fence command run",
            d.fence_timeout,
        ),
        _Opt(
            "--max-unhealthy",
            "max_unhealthy",
            parse_threshold,
            "circuit breaker: no new remediation while more nodes than this (count or %) "
            "are unhealthy",
            str(d.max_unhealthy),
        ),
        _Opt(
            "--breaker-window",
            "breaker_window",
            dur,
            "removed nodes still count as unhealthy for this long",
            d.breaker_window,
        ),
        _Opt(
            "--storm-cooldown",
            "storm_cooldown",
            dur,
            "the breaker stays open this long after the count drops",
            d.storm_cooldown,
        ),
        _Opt(
            "--max-concurrent",
            "max_concurrent",
            parse_positive_int,
            "remediations in progress at once",
            d.max_concurrent,
        ),
        _Opt(
            "--max-removals-per-hour",
            "max_removals_per_hour",
            parse_positive_int,
            "node removals per rolling hour",
            d.max_removals_per_hour,
        ),
        _Opt(
            "--node-selector",
            "node_selector",
            parse_selector,
            "label selector of the nodes to manage (default: all)",
            "",
        ),
        _Opt(
            "--exclude-control-plane",
            "exclude_control_plane",
            parse_bool,
            "never remediate control-plane nodes",
            d.exclude_control_plane,
            boolean=True,
        ),
        _Opt(
            "--dry-run",
            "dry_run",
            parse_bool,
            "decide and log everything, change nothing",
            d.dry_run,
            boolean=True,
        ),
        _Opt(
            "--watch-node-leases",
            "watch_node_leases",
            parse_bool,
            "a Ready=Unknown node counts as silent only when its kube-node-lease Lease has not "
            "changed for the grace (read per silent node)",
            d.watch_node_leases,
            boolean=True,
        ),
        _Opt(
            "--kubeconfig",
            "kubeconfig",
            str,
            "kubeconfig path (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)",
            None,
        ),
        _Opt("--context", "context", str, "kubeconfig context", None),
        _Opt("--api-timeout", "api_timeout", dur, "bound on each API request", d.api_timeout),
        _Opt(
            "--watch-silence",
            "watch_silence",
            dur,
            "reconnect a watch silent this long; no destructive action while stale",
            d.watch_silence,
        ),
        _Opt(
            "--watch-timeout",
            "watch_timeout",
            dur,
            "server-side timeout of one watch request",
            d.watch_timeout,
        ),
        _Opt(
            "--http-bind", "http_bind", str, "address of /healthz, /readyz, /metrics", d.http_bind
        ),
        _Opt(
            "--leader-elect",
            "leader_elect",
            parse_bool,
            "Lease leader election (default: on in a cluster, off locally)",
            None,
            boolean=True,
        ),
        _Opt("--lease-name", "lease_name", str, "leader Lease name", d.lease_name),
        _Opt(
            "--lease-namespace",
            "lease_namespace",
            str,
            "leader Lease namespace (default: the pod's, else kube-system)",
            None,
        ),
        _Opt("--lease-duration", "lease_duration", dur, "leader Lease duration", d.lease_duration),
        _Opt(
            "--renew-deadline",
            "renew_deadline",
            dur,
            "leader gives up after this long without a renewal",
            d.renew_deadline,
        ),
        _Opt("--retry-period", "retry_period", dur, "leader election retry period", d.retry_period),
        _Opt(
            "--log-format",
            "log_format",
            lambda s: _choice(s, ("text", "json")),
            "text | json",
            d.log_format,
        ),
        _Opt(
            "--log-level",
            "log_level",
            lambda s: _choice(s.lower(), ("debug", "info", "warning", "error")),
            "debug | info | warning | error",
            d.log_level,
        ),
    ]


def _choice(text: str, choices: Sequence[str]) -> str:
    if text not in choices:
        raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
    return text


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `run` and `plan`. Values stay strings here; `build_config` parses."""
    for opt in _opts():
        env_hint = f" [env {env_name(opt.flag)}]"
        if opt.boolean:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{opt.help} (default: {opt.default}){env_hint}",
            )
        else:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                default=None,
                metavar="VALUE",
                help=f"{opt.help} (default: {opt.default}){env_hint}",
            )


def build_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Config:
    """Flags > NODERECOVER_* env > defaults. Raises BadFlag naming the flag (or variable)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for opt in _opts():
        raw = getattr(args, opt.dest, None)
        source = opt.flag
        if raw is None and env_name(opt.flag) in env:
            raw, source = env[env_name(opt.flag)], env_name(opt.flag)
        if raw is None:
            continue
        if isinstance(raw, bool):
            values[opt.dest] = raw
            continue
        try:
            values[opt.dest] = opt.parse(raw)
        except ValueError as exc:
            raise BadFlag(f"{source}: {exc}") from None
    values.update(overrides)
    cfg = Config(**values)
    _cross_check(cfg)
    return cfg


def _cross_check(cfg: Config) -> None:
    if cfg.watch_silence < 1.0:
        raise BadFlag("--watch-silence: must be at least 1s")
    if cfg.api_timeout <= 0:
        raise BadFlag("--api-timeout: must be positive")
    if not cfg.lease_duration > cfg.renew_deadline:
        raise BadFlag("--lease-duration: must be greater than --renew-deadline")
    if not cfg.renew_deadline > 1.2 * cfg.retry_period:
        raise BadFlag("--renew-deadline: must be greater than 1.2 x --retry-period")
    if cfg.retry_period <= 0:
        raise BadFlag("--retry-period: must be positive")
    try:
        parse_bind(cfg.http_bind)
    except ValueError as exc:
        raise BadFlag(f"--http-bind: {exc}") from None
