"""Configuration: one frozen dataclass, parsed from flags and NODERECOVER_* variables.

Every value is validated here, once; the rest of the code trusts `Config`.
Flag precedence: command line > environment variable > default.

Errors are one line naming where the bad value came from: the flag, or the NODERECOVER_*
variable when the flag was not given. Two kinds:
- a bad value of one setting (`_opts`: each parser raises ValueError);
- a conflict between settings, or a setting that cannot work as given (`_cross_check`),
  e.g. a selector that matches no node, or a fence command that is not executable.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from noderecover.core import durations
from noderecover.core.durations import format_duration
from noderecover.core.fencing import (
    AGENT_DIR,
    FenceAction,
    FenceSpec,
    Provider,
    check_template,
    parse_fence_spec,
    spec_error,
)
from noderecover.core.safety import CONTROL_PLANE_LABELS
from noderecover.core.selectors import Requirement, Selector, parse_selector
from noderecover.core.settings import REMOVAL_MODES, Config, Removal, Threshold

__all__ = [
    "CONTROL_PLANE_LABELS",
    "REMOVAL_MODES",
    "BadFlag",
    "Config",
    "Threshold",
    "build_config",
]

ENV_PREFIX = "NODERECOVER_"

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_INTEGER = re.compile(r"[0-9]+")
_ASCII_SPACE = " \t\r\n\f\v"  # str.strip() would also drop Unicode spaces
MAX_DURATION = durations.MAX_SECONDS
_CONDITION_TYPE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def parse_duration(text: str) -> float:
    """'90', '90s', '1m30s', '500ms', '2h' -> seconds: the one grammar of core/durations.py
    (the CRD's and the chart's too), after trimming surrounding ASCII whitespace (a value
    from a YAML block ends with a newline). ValueError for anything else."""
    return durations.parse_duration(text.strip(_ASCII_SPACE))


def duration_at_least(minimum: float, *, strictly: bool = False) -> Callable[[str], float]:
    """A duration parser with a lower bound (strictly: the bound itself is refused)."""

    def parse(text: str) -> float:
        value = parse_duration(text)
        if value < minimum or (strictly and value == minimum):
            what = "greater than" if strictly else "at least"
            raise ValueError(f"must be {what} {minimum:g}s, got {text!r}")
        return value

    return parse


def parse_threshold(text: str) -> Threshold:
    s = text.strip(_ASCII_SPACE)
    if s.startswith("-"):
        if s.endswith("%"):
            raise ValueError(f"percent {text!r} not within 0-100%")
        raise ValueError(f"negative count {text!r}")
    if s.endswith("%") and _DECIMAL.fullmatch(s[:-1]):
        value = float(s[:-1])
        if not 0 <= value <= 100:
            raise ValueError(f"percent {text!r} not within 0-100%")
        return Threshold(value, True)
    if not _INTEGER.fullmatch(s):
        # ASCII digits only: int() and float() also take other scripts' digits, '_', 'nan'.
        raise ValueError(f"{text!r} is neither a count nor a percent like 40%")
    return Threshold(float(int(s)), False)


def parse_conditions(text: str) -> frozenset[tuple[str, str]]:
    """'Ready=False,Ready=Unknown,NetworkUnavailable=True' -> {(type, status)}.

    Refused: a pair that healthy nodes match (Ready=True), and a type listed both =True and
    =False (every node reporting that condition would be unhealthy).
    """
    out = set()
    for part in text.split(","):
        ctype, sep, status = part.strip().partition("=")
        if not sep or not ctype or status not in {"True", "False", "Unknown"}:
            raise ValueError(f"bad condition {part.strip()!r} (want Type=True|False|Unknown)")
        if not _CONDITION_TYPE.fullmatch(ctype):
            raise ValueError(f"bad condition type {ctype!r}")
        out.add((ctype, status))
    if ("Ready", "True") in out:
        raise ValueError("Ready=True would make every healthy node unhealthy")
    both = sorted(t for t, st in out if st == "True" and (t, "False") in out)
    if both:
        raise ValueError(f"{both[0]}=True and {both[0]}=False make every node unhealthy")
    return frozenset(out)


def parse_removal(text: str) -> Removal:
    if text not in REMOVAL_MODES:
        raise ValueError(f"unknown removal mode {text!r} (want one of {', '.join(REMOVAL_MODES)})")
    return Removal(text)


def parse_positive_int(text: str) -> int:
    s = text.strip(_ASCII_SPACE)
    if s.startswith("-") and _INTEGER.fullmatch(s[1:]):
        raise ValueError(f"{s} must be at least 1")
    if not _INTEGER.fullmatch(s):  # int() also takes other scripts' digits and '1_0'
        raise ValueError(f"{text!r} is not an integer (ASCII digits)")
    value = int(s)
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def parse_command(text: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"unparsable command {text!r}: {exc}") from None
    return argv


def parse_provider(text: str) -> Provider:
    try:
        return Provider(text.strip(_ASCII_SPACE))
    except ValueError:
        names = ", ".join(p.value for p in Provider)
        raise ValueError(f"{text!r} is not one of {names}") from None


def parse_fence_action(text: str) -> FenceAction:
    try:
        return FenceAction(text.strip(_ASCII_SPACE))
    except ValueError:
        raise ValueError(f"{text!r} is not off or reboot") from None


def parse_secret_name(text: str) -> str:
    if len(text) > 253 or not _DNS_SUBDOMAIN.fullmatch(text):
        raise ValueError(f"{text!r} is not a Secret name (DNS subdomain)")
    return text


def parse_address_template(text: str) -> str:
    check_template(text, "template")
    return text


def read_fence_config(path: str) -> dict[str, Any]:
    """A JSON file with the shape of a policy's spec.fence (validated here, once)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path!r} is not JSON: {exc}") from None
    parse_fence_spec(raw, "fence config", FenceSpec())
    return dict(raw)


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean")


def parse_bind(text: str) -> tuple[str, int]:
    """'host:port', '[::1]:port' or ':port' (all interfaces) -> (host, port); port 0 = any."""
    s = text.strip()
    host, sep, port = s.rpartition(":")
    if not sep:
        raise ValueError(f"bind address {text!r} is not host:port (e.g. 0.0.0.0:8080)")
    if not _INTEGER.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"bind address {text!r}: port {port!r} is not a number in 0-65535")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"bind address {text!r}: bad IPv6 literal {host!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bind address {text!r}: write IPv6 addresses as [addr]:port")
    if any(c.isspace() for c in host):
        raise ValueError(f"bind address {text!r}: host contains whitespace")
    if not host.isascii() or not host.isprintable():
        raise ValueError(f"bind address {text!r}: host has non-ASCII or control characters")
    return host or "0.0.0.0", int(port)


def parse_bind_text(text: str) -> str:
    parse_bind(text)
    return text


def non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def dns_name(pattern: re.Pattern[str], limit: int, what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) > limit or not pattern.fullmatch(text):
            raise ValueError(f"{text!r} is not a valid {what}")
        return text

    return parse


class BadFlag(ValueError):
    """A flag or environment variable has a bad value; the message names it."""


class Kind(Enum):
    """What a flag's value is: its metavar in --help, how its default is written, and its
    type in the chart's values.schema.json (noderecover_testkit.chartschema)."""

    DURATION = "DURATION"
    COUNT = "N"
    THRESHOLD = "N|N%"
    BOOLEAN = "BOOL"
    CHOICE = "CHOICE"
    TEXT = "TEXT"


@dataclass(frozen=True)
class _Opt:
    flag: str
    dest: str
    parse: Callable[[str], Any]
    help: str
    default: Any
    boolean: bool = False
    kind: Kind = Kind.TEXT
    metavar: str = ""  # TEXT's (default: the kind's)
    choices: tuple[str, ...] = ()  # CHOICE's
    run_only: bool = False  # `noderecover run`'s only: not a flag of `plan` (HTTP, election)

    @property
    def shown_default(self) -> str:
        """The default as --help writes it: a duration as a duration, not as seconds."""
        if self.kind is Kind.DURATION and isinstance(self.default, int | float):
            return format_duration(float(self.default))
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default) or "none"


def opts() -> list[_Opt]:
    """Every flag of `noderecover run` (and, but the run-only ones, of `plan`)."""
    return _opts()


def _opts() -> list[_Opt]:
    d = Config()
    dur = parse_duration
    positive = duration_at_least(0.0, strictly=True)
    return [
        _Opt(
            "--grace",
            "grace",
            dur,
            "how long a node must stay unhealthy before remediation",
            d.grace,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--healthy-delay",
            "healthy_delay",
            dur,
            "how long a node must stay healthy again before it counts as recovered",
            d.healthy_delay,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--unhealthy-conditions",
            "unhealthy_conditions",
            parse_conditions,
            "comma-separated Type=Status pairs that make a node unhealthy",
            "Ready=False,Ready=Unknown",
            metavar="TYPE=STATUS,...",
        ),
        _Opt(
            "--drain-timeout",
            "drain_timeout",
            dur,
            "after this long draining, force-delete pods still on the node",
            d.drain_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--node-startup-timeout",
            "node_startup_timeout",
            dur,
            "a node never seen Ready is left alone until it is this old (still joining)",
            d.node_startup_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--removal",
            "removal",
            parse_removal,
            "how to remove a drained node: auto (both when --fence-command is set, else "
            "delete) | delete | out-of-service | both",
            d.removal,
            kind=Kind.CHOICE,
            choices=REMOVAL_MODES,
        ),
        _Opt(
            "--detach-timeout",
            "detach_timeout",
            positive,
            "out-of-service/both: how long to wait for the node's volumes to detach after the "
            "taint before holding (the Node is deleted only once they are detached)",
            d.detach_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--fence-command",
            "fence_command",
            parse_command,
            "command that powers off the node (NODE_NAME in env); must succeed before "
            "force-deleting pods or removing the node",
            "",
            metavar="COMMAND",
        ),
        _Opt(
            "--fence-timeout",
            "fence_timeout",
            positive,
            "bound on one fence (request, then the power state read back Off)",
            d.fence_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--fence-provider",
            "fence_provider",
            parse_provider,
            "who proves a node off: command | redfish | aws | fence-agent (a policy's "
            "spec.fence.provider overrides it; default: command with --fence-command, else none)",
            None,
            kind=Kind.CHOICE,
            choices=tuple(p.value for p in Provider),
        ),
        _Opt(
            "--fence-secret",
            "fence_secret",
            parse_secret_name,
            "the Secret, in noderecover's namespace, with the fence credentials",
            None,
            metavar="NAME",
        ),
        _Opt(
            "--fence-action",
            "fence_action",
            parse_fence_action,
            "off | reboot",
            d.fence.action.value,
            kind=Kind.CHOICE,
            choices=tuple(a.value for a in FenceAction),
        ),
        _Opt(
            "--fence-address-template",
            "fence_address_template",
            parse_address_template,
            "the BMC address of a node without the noderecover.io/fence-address annotation, "
            "from {name} and {label:KEY} (e.g. https://{name}-bmc.example.com)",
            None,
            metavar="TEMPLATE",
        ),
        _Opt(
            "--fence-config",
            "fence_config",
            non_empty,
            "a JSON file with the provider's settings, in the shape of a policy's spec.fence "
            "(redfish, aws, agent, sharedParameters, nodeParameters...)",
            None,
            metavar="FILE",
        ),
        _Opt(
            "--max-unhealthy",
            "max_unhealthy",
            parse_threshold,
            "circuit breaker: no new remediation while more nodes than this (count or %) "
            "are unhealthy",
            str(d.max_unhealthy),
            kind=Kind.THRESHOLD,
        ),
        _Opt(
            "--breaker-window",
            "breaker_window",
            dur,
            "removed nodes still count as unhealthy for this long",
            d.breaker_window,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--storm-cooldown",
            "storm_cooldown",
            dur,
            "the breaker stays open this long after the count drops",
            d.storm_cooldown,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--max-concurrent",
            "max_concurrent",
            parse_positive_int,
            "remediations in progress at once",
            d.max_concurrent,
            kind=Kind.COUNT,
        ),
        _Opt(
            "--max-removals-per-hour",
            "max_removals_per_hour",
            parse_positive_int,
            "node removals per rolling hour",
            d.max_removals_per_hour,
            kind=Kind.COUNT,
        ),
        _Opt(
            "--node-selector",
            "node_selector",
            parse_selector,
            "label selector of the nodes to manage (default: all)",
            "",
            metavar="SELECTOR",
        ),
        _Opt(
            "--exclude-control-plane",
            "exclude_control_plane",
            parse_bool,
            "never remediate control-plane nodes",
            d.exclude_control_plane,
            boolean=True,
            kind=Kind.BOOLEAN,
        ),
        _Opt(
            "--dry-run",
            "dry_run",
            parse_bool,
            "decide and log everything, change nothing",
            d.dry_run,
            boolean=True,
            kind=Kind.BOOLEAN,
        ),
        _Opt(
            "--watch-agents",
            "watch_agents",
            parse_bool,
            "watch the node agents' Leases in noderecover's namespace (noderecover agent): a "
            "node whose agent is relied on is asked to fence itself and counts as off after "
            "the safe time; off: no agent is relied on",
            d.watch_agents,
            boolean=True,
            kind=Kind.BOOLEAN,
        ),
        _Opt(
            "--agent-isolation-timeout",
            "agent_isolation_timeout",
            positive,
            "node agents: the isolation timeout the controller assumes (the larger of this "
            "and an agent's published one counts: config drift never shortens the safe time)",
            d.agent_isolation_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--agent-watchdog-timeout",
            "agent_watchdog_timeout",
            positive,
            "node agents: the watchdog timeout the controller assumes (the larger counts)",
            d.agent_watchdog_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--agent-check-interval",
            "agent_check_interval",
            positive,
            "node agents: the check interval the controller assumes (the larger counts)",
            d.agent_check_interval,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--agent-safe-time-floor",
            "agent_safe_time_floor",
            positive,
            "node agents: a node whose agent was asked to fence it counts as off no sooner "
            "than this after its last sign of life, whatever the timeouts",
            d.agent_safe_time_floor,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--watch-node-leases",
            "watch_node_leases",
            parse_bool,
            "a Ready=Unknown node counts as silent only when its kube-node-lease Lease has not "
            "changed for the grace (read per silent node)",
            d.watch_node_leases,
            boolean=True,
            kind=Kind.BOOLEAN,
        ),
        _Opt(
            "--grace-from-heartbeat",
            "grace_from_heartbeat",
            parse_bool,
            "watch every heartbeat Lease (kube-node-lease, ~1 event per node per 10 s) and "
            "count a silent node's grace from its last heartbeat seen, not from NotReady",
            d.grace_from_heartbeat,
            boolean=True,
            kind=Kind.BOOLEAN,
        ),
        *kubeconfig_opts(),
        _Opt(
            "--api-timeout",
            "api_timeout",
            positive,
            "bound on each API request",
            d.api_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--watch-silence",
            "watch_silence",
            duration_at_least(1.0),
            "reconnect a watch silent this long (at once, no backoff); no destructive action "
            "while no reconnect succeeded for this long",
            d.watch_silence,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--watch-timeout",
            "watch_timeout",
            duration_at_least(1.0),
            "server-side timeout of one watch request",
            d.watch_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--http-bind",
            "http_bind",
            parse_bind_text,
            "address of /healthz, /readyz, /metrics",
            d.http_bind,
            metavar="HOST:PORT",
            run_only=True,
        ),
        _Opt(
            "--leader-elect",
            "leader_elect",
            parse_bool,
            "Lease leader election (default: on in a cluster, off locally)",
            None,
            boolean=True,
            kind=Kind.BOOLEAN,
            run_only=True,
        ),
        _Opt(
            "--lease-name",
            "lease_name",
            dns_name(_DNS_SUBDOMAIN, 253, "Lease name (DNS subdomain)"),
            "leader Lease name",
            d.lease_name,
            metavar="NAME",
            run_only=True,
        ),
        _Opt(
            "--lease-namespace",
            "lease_namespace",
            dns_name(_DNS_LABEL, 63, "namespace (DNS label)"),
            "leader Lease namespace (default: the pod's, else kube-system)",
            None,
            metavar="NAMESPACE",
        ),
        _Opt(
            "--lease-duration",
            "lease_duration",
            positive,
            "leader Lease duration",
            d.lease_duration,
            kind=Kind.DURATION,
            run_only=True,
        ),
        _Opt(
            "--renew-deadline",
            "renew_deadline",
            dur,
            "leader gives up after this long without a renewal",
            d.renew_deadline,
            kind=Kind.DURATION,
            run_only=True,
        ),
        _Opt(
            "--retry-period",
            "retry_period",
            positive,
            "leader election retry period",
            d.retry_period,
            kind=Kind.DURATION,
            run_only=True,
        ),
        *log_opts(d.log_format, d.log_level),
    ]


def kubeconfig_opts() -> list[_Opt]:
    """--kubeconfig and --context, one definition for every command that reaches the API."""
    return [
        _Opt(
            "--kubeconfig",
            "kubeconfig",
            non_empty,
            "kubeconfig path (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)",
            None,
            metavar="PATH",
        ),
        _Opt("--context", "context", non_empty, "kubeconfig context", None, metavar="NAME"),
    ]


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def log_opts(log_format: str, log_level: str) -> list[_Opt]:
    """--log-format and --log-level, one definition for every command that logs (the
    controller and the node agent), with these defaults."""
    return [
        _Opt(
            "--log-format",
            "log_format",
            lambda s: _choice(s, LOG_FORMATS),
            " | ".join(LOG_FORMATS),
            log_format,
            kind=Kind.CHOICE,
            choices=LOG_FORMATS,
        ),
        _Opt(
            "--log-level",
            "log_level",
            lambda s: _choice(s.lower(), LOG_LEVELS),
            " | ".join(LOG_LEVELS),
            log_level,
            kind=Kind.CHOICE,
            choices=LOG_LEVELS,
        ),
    ]


def _choice(text: str, choices: Sequence[str]) -> str:
    if text not in choices:
        raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
    return text


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def add_run_flags(parser: argparse.ArgumentParser, *, run: bool = True) -> None:
    """Flags of `run` (run=True) or `plan` (the run-only ones left out: HTTP, election).
    Values stay strings here; `build_config` parses. Each default is written once, in the
    flag's own grammar (a duration as `30s`), after a metavar naming the value's kind."""
    for opt in _opts():
        if opt.run_only and not run:
            continue
        default = "" if opt.default is None else f" (default: {opt.shown_default})"
        # argparse %-formats help strings: a literal % (e.g. the 40% default) must be %%.
        text = f"{opt.help}{default} [env {env_name(opt.flag)}]".replace("%", "%%")
        if opt.boolean:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        else:
            if opt.kind is Kind.CHOICE:
                metavar = "{" + ",".join(opt.choices) + "}"
            else:
                metavar = opt.metavar or opt.kind.value
            parser.add_argument(opt.flag, dest=opt.dest, default=None, metavar=metavar, help=text)


def read_opts(
    opts: Sequence[_Opt], args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each option's value, parsed, from its flag, else its NODERECOVER_* variable (absent:
    left out, its default applies), and where each came from (its flag unless the variable
    gave it): the one rule of the controller's and the agent's settings. Raises BadFlag
    naming the flag (or variable)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {opt.dest: opt.flag for opt in opts}
    for opt in opts:
        raw = getattr(args, opt.dest, None)
        if raw is None and env_name(opt.flag) in env:
            raw, sources[opt.dest] = env[env_name(opt.flag)], env_name(opt.flag)
        if raw is None:
            continue
        if isinstance(raw, bool):
            values[opt.dest] = raw
            continue
        if isinstance(raw, list):
            # argparse (3.11-3.12) drops a "--" value: `--grace=--` arrives as [].
            raw = " ".join(["--", *raw])
        try:
            values[opt.dest] = opt.parse(raw)
        except ValueError as exc:
            raise BadFlag(f"{sources[opt.dest]}: {exc}") from None
    return values, sources


def build_config(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    *,
    runs_here: bool = True,
    **overrides: Any,
) -> Config:
    """Flags > NODERECOVER_* env > defaults. Raises BadFlag naming the flag (or variable).

    `runs_here`: the settings are for a process on this machine, so what only this machine can
    answer is checked too (the fence program exists and is executable). False for settings
    read from a Deployment (the kubectl plugin): the program lives in the image."""
    values, sources = read_opts(_opts(), args, environ)
    values["fence"] = _fence_spec(values, sources, runs_here)
    values.update(overrides)
    cfg = Config(**values, sources=dict(sources))
    _cross_check(cfg, sources, given=frozenset(values), runs_here=runs_here)
    return cfg


_FENCE_FLAGS = {
    "fence_provider": "provider",
    "fence_secret": "secretName",
    "fence_action": "action",
    "fence_address_template": "addressTemplate",
}


def _fence_spec(values: dict[str, Any], sources: Mapping[str, str], runs_here: bool) -> FenceSpec:
    """--fence-config, then the --fence-* flags over it (each validated by its parser). The
    file is read only by a process of this machine (for a Deployment's settings it is in the
    pod: the flags alone are known)."""
    raw: dict[str, Any] = {}
    path = values.pop("fence_config", None)
    if path and runs_here:
        try:
            raw = read_fence_config(path)
        except ValueError as exc:
            raise BadFlag(f"{sources['fence_config']}: {exc}") from None
    for dest, key in _FENCE_FLAGS.items():
        if dest in values:
            value = values.pop(dest)
            raw[key] = value.value if isinstance(value, Provider | FenceAction) else value
    try:
        return parse_fence_spec(raw, "fence", FenceSpec())
    except ValueError as exc:  # pragma: no cover - each part was validated by its parser
        raise BadFlag(f"{sources['fence_config']}: {exc}") from None


def _fence_problem(cfg: Config, runs_here: bool) -> tuple[str, str] | None:
    """(setting, why) when the fence configuration cannot work as given (what only this
    machine can answer - a library, an agent installed - only for a process that runs here)."""
    provider = cfg.fence_provider
    if provider is None:
        return None
    if not runs_here:
        return None
    if cfg.fence.provider is Provider.COMMAND and not cfg.fence_command:
        return "fence_provider", "command needs --fence-command"
    if (why := spec_error(cfg.fence)) is not None:
        return "fence_provider", why
    import importlib.util

    needs = {Provider.REDFISH: "sushy", Provider.AWS: "boto3"}.get(provider)
    if needs is not None and importlib.util.find_spec(needs) is None:
        return "fence_provider", (
            f"{provider} needs the {needs} library: pip install 'noderecover[fencing]'"
        )
    if provider is Provider.AWS and cfg.fence.action is FenceAction.REBOOT:
        return "fence_action", "aws stops the instance: reboot is not a fence there (use off)"
    if provider is Provider.FENCE_AGENT:
        path = os.path.join(AGENT_DIR, cfg.fence.agent)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return "fence_config", f"fence agent {path} is not installed"
    return None


def _cross_check(
    cfg: Config, source: Mapping[str, str], given: frozenset[str], *, runs_here: bool = True
) -> None:
    """Conflicts between settings, and settings that cannot work as given.

    A conflict is reported on the setting that was given (flag or variable) when the other
    side is a default; on the first one when both or neither were given.
    """

    def conflict(a: str, a_says: str, b: str, b_says: str) -> BadFlag:
        if b in given and a not in given:
            return BadFlag(f"{source[b]}: {b_says}")
        return BadFlag(f"{source[a]}: {a_says}")

    # Imported here: the kube layer (aiohttp, orjson, prometheus_client) costs ~0.4 s, which
    # `--help`, `--version` and a flag refused by its own parser never need.
    from noderecover.kube.election import LeaseTiming, lease_timing_broken

    lease, renew, retry = cfg.lease_duration, cfg.renew_deadline, cfg.retry_period
    broken = lease_timing_broken(lease, renew, retry)
    if broken is LeaseTiming.DURATION_OVER_DEADLINE:
        raise conflict(
            "lease_duration",
            f"must be greater than {source['renew_deadline']} ({lease:g}s <= {renew:g}s)",
            "renew_deadline",
            f"must be less than {source['lease_duration']} ({renew:g}s >= {lease:g}s)",
        )
    if broken is LeaseTiming.DEADLINE_OVER_RETRIES:
        raise conflict(
            "renew_deadline",
            f"must be greater than 1.2 x {source['retry_period']} ({renew:g}s <= 1.2 x {retry:g}s)",
            "retry_period",
            f"1.2 x it must be less than {source['renew_deadline']} "
            f"(1.2 x {retry:g}s >= {renew:g}s)",
        )
    if (why := selector_matches_nothing(cfg.node_selector)) is not None:
        raise BadFlag(f"{source['node_selector']}: matches no node ({why})")
    if cfg.exclude_control_plane and (key := _requires_control_plane(cfg.node_selector)):
        raise conflict(
            "node_selector",
            f"selects only control-plane nodes ({key}), which "
            f"{source['exclude_control_plane']} excludes: nothing would ever be remediated",
            "exclude_control_plane",
            f"excludes every node {source['node_selector']} selects ({key}): nothing would "
            "ever be remediated",
        )
    if runs_here and cfg.fence_command and (why := _not_runnable(cfg.fence_command[0])):
        raise BadFlag(f"{source['fence_command']}: {why}")
    if (problem := _fence_problem(cfg, runs_here)) is not None:
        setting, why = problem
        raise BadFlag(f"{source.get(setting, '--' + setting.replace('_', '-'))}: {why}")


def selector_matches_nothing(selector: Selector) -> str | None:
    """Why no label set can match `selector` (requirements on one key that contradict)."""
    by_key: dict[str, list[Requirement]] = {}
    for r in selector.requirements:
        by_key.setdefault(r.key, []).append(r)
    for key, reqs in by_key.items():
        present = any(r.op in {"exists", "=", "in"} for r in reqs)
        if present and any(r.op == "!exists" for r in reqs):
            return f"{key!r} both required and excluded"
        allowed: frozenset[str] | None = None
        for r in reqs:
            if r.op in {"=", "in"}:
                allowed = r.values if allowed is None else allowed & r.values
        for r in reqs:
            if r.op in {"!=", "notin"} and allowed is not None:
                allowed = allowed - r.values
        if allowed is not None and not allowed:
            return f"no value of {key!r} satisfies every requirement on it"
    return None


def _requires_control_plane(selector: Selector) -> str | None:
    for r in selector.requirements:
        if r.key in CONTROL_PLANE_LABELS and r.op in {"exists", "=", "in"}:
            return r.key
    return None


def _not_runnable(program: str) -> str | None:
    """Why the fence command cannot be started (checked once, at start-up), or None."""
    if os.sep in program:
        if not os.path.isfile(program):
            return f"{program!r} does not exist"
        if not os.access(program, os.X_OK):
            return f"{program!r} is not executable"
        return None
    if shutil.which(program) is None:
        return f"{program!r} is not an executable on PATH"
    return None
