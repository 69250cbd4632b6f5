"""`noderecover agent`'s flags: one table (`agent_opts`), NODERECOVER_* variables, one line
naming the flag (or variable) on bad input - the rules of entry/config.py."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from noderecover.core.agent import MAX_NODE_NAME
from noderecover.entry.config import (
    _DNS_LABEL,
    _DNS_SUBDOMAIN,
    BadFlag,
    Kind,
    _choice,
    _Opt,
    dns_name,
    duration_at_least,
    env_name,
    kubeconfig_opts,
    log_opts,
    non_empty,
    parse_bind,
    parse_bind_text,
    parse_positive_int,
    read_opts,
)

REBOOT_STRATEGIES = ("auto", "watchdog", "sysrq", "test")


@dataclass(frozen=True)
class AgentConfig:
    node_name: str = ""
    check_interval: float = 5.0
    isolation_timeout: float = 30.0
    watchdog_timeout: float = 30.0
    api_timeout: float = 5.0
    peer_timeout: float = 3.0
    peers: tuple[str, ...] = ()
    max_peers: int = 5
    reboot: str = "auto"
    watchdog_device: str = "/dev/watchdog"
    sysrq_trigger: str = "/proc/sysrq-trigger"
    boot_id_file: str = "/proc/sys/kernel/random/boot_id"
    test_fence_file: str | None = None
    advertise_address: str | None = None
    http_bind: str = "0.0.0.0:8081"
    kubeconfig: str | None = None
    context: str | None = None
    lease_namespace: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def source(self, dest: str) -> str:
        return self.sources.get(dest, "--" + dest.replace("_", "-"))

    @property
    def slack(self) -> float:
        return self.api_timeout + self.peer_timeout


def parse_peers(text: str) -> tuple[str, ...]:
    out = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        host, _port = parse_bind(part)
        if host == "0.0.0.0" and part.startswith(":"):
            raise ValueError(f"peer {part!r} has no host")
        out.append(part)
    return tuple(out)


def parse_node_name(text: str) -> str:
    return dns_name(_DNS_SUBDOMAIN, MAX_NODE_NAME, "node name (DNS subdomain)")(text.strip())


def agent_opts() -> list[_Opt]:
    d = AgentConfig()
    positive = duration_at_least(0.0, strictly=True)
    return [
        _Opt(
            "--node-name",
            "node_name",
            parse_node_name,
            "the node this agent runs on and fences (in a DaemonSet: spec.nodeName)",
            None,
            metavar="NAME",
        ),
        _Opt(
            "--agent-check-interval",
            "check_interval",
            positive,
            "how often the agent checks that it reaches the API server (and renews its Lease)",
            d.check_interval,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--agent-isolation-timeout",
            "isolation_timeout",
            positive,
            "fence the node after this long without the API server and without a peer that "
            "vouches (at least 2 check intervals)",
            d.isolation_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--agent-watchdog-timeout",
            "watchdog_timeout",
            duration_at_least(1.0),
            "the watchdog's timeout (set on the device; published for the controller)",
            d.watchdog_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--api-timeout",
            "api_timeout",
            positive,
            "bound on the API part of one check (Lease renewal and Node read)",
            d.api_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--agent-peer-timeout",
            "peer_timeout",
            positive,
            "bound on one round of questions to the peer agents",
            d.peer_timeout,
            kind=Kind.DURATION,
        ),
        _Opt(
            "--agent-peers",
            "peers",
            parse_peers,
            "comma-separated host:port of peer agents, besides those read from their Leases",
            "",
            metavar="HOST:PORT,...",
        ),
        _Opt(
            "--agent-max-peers",
            "max_peers",
            parse_positive_int,
            "peers asked per check while the API server is unreachable",
            d.max_peers,
            kind=Kind.COUNT,
        ),
        _Opt(
            "--agent-reboot",
            "reboot",
            lambda s: _choice(s.strip(), REBOOT_STRATEGIES),
            "how to stop the node: auto (the watchdog device if it exists, else sysrq) | "
            "watchdog | sysrq | test (the test harness only)",
            d.reboot,
            kind=Kind.CHOICE,
            choices=REBOOT_STRATEGIES,
        ),
        _Opt(
            "--agent-watchdog-device",
            "watchdog_device",
            non_empty,
            "the kernel watchdog device",
            d.watchdog_device,
            metavar="PATH",
        ),
        _Opt(
            "--agent-sysrq-trigger",
            "sysrq_trigger",
            non_empty,
            "the sysrq trigger (fallback without a watchdog, and if the watchdog does not bite)",
            d.sysrq_trigger,
            metavar="PATH",
        ),
        _Opt(
            "--agent-boot-id-file",
            "boot_id_file",
            non_empty,
            "where this boot's id is read (the kubelet reports the same as the Node's "
            "status.nodeInfo.bootID): a fence mark for an earlier boot is ignored",
            d.boot_id_file,
            metavar="PATH",
        ),
        _Opt(
            "--agent-test-fence-file",
            "test_fence_file",
            non_empty,
            "--agent-reboot test: the file the fence is written to (the harness acts on it)",
            None,
            metavar="PATH",
        ),
        _Opt(
            "--agent-advertise-address",
            "advertise_address",
            parse_bind_text,
            "host:port the peers reach this agent at, published on its Lease "
            "(default: $POD_IP and the --http-bind port)",
            None,
            metavar="HOST:PORT",
        ),
        _Opt(
            "--http-bind",
            "http_bind",
            parse_bind_text,
            "address of /healthz, /readyz, /metrics, /status and the peers' questions",
            d.http_bind,
            metavar="HOST:PORT",
        ),
        *kubeconfig_opts(),
        _Opt(
            "--lease-namespace",
            "lease_namespace",
            dns_name(_DNS_LABEL, 63, "namespace (DNS label)"),
            "namespace of the agent's Lease (default: the pod's, else kube-system)",
            None,
            metavar="NAMESPACE",
        ),
        *log_opts(d.log_format, d.log_level),
    ]


def add_agent_flags(parser: argparse.ArgumentParser) -> None:
    for opt in agent_opts():
        default = "" if opt.default is None else f" (default: {opt.shown_default})"
        text = f"{opt.help}{default} [env {env_name(opt.flag)}]".replace("%", "%%")
        if opt.kind is Kind.CHOICE:
            metavar = "{" + ",".join(opt.choices) + "}"
        else:
            metavar = opt.metavar or opt.kind.value
        parser.add_argument(opt.flag, dest=opt.dest, default=None, metavar=metavar, help=text)


def build_agent_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """Flags > NODERECOVER_* env > defaults. Raises BadFlag naming the flag (or variable)."""
    values, sources = read_opts(agent_opts(), args, environ)
    cfg = AgentConfig(**values, sources=sources)
    _cross_check(cfg)
    return cfg


def _cross_check(cfg: AgentConfig) -> None:
    if not cfg.node_name:
        raise BadFlag(f"{cfg.source('node_name')}: required (the node this agent fences)")
    if cfg.isolation_timeout < 2 * cfg.check_interval:
        raise BadFlag(
            f"{cfg.source('isolation_timeout')}: must be at least 2 x "
            f"{cfg.source('check_interval')} ({cfg.isolation_timeout:g}s < "
            f"2 x {cfg.check_interval:g}s): one lost check would fence the node"
        )
    if cfg.reboot == "test" and not cfg.test_fence_file:
        raise BadFlag(f"{cfg.source('reboot')}: test needs --agent-test-fence-file")
    if cfg.reboot != "test" and cfg.test_fence_file:
        raise BadFlag(f"{cfg.source('test_fence_file')}: only with --agent-reboot test")
    if cfg.test_fence_file and not Path(cfg.test_fence_file).parent.is_dir():
        raise BadFlag(f"{cfg.source('test_fence_file')}: folder does not exist")
