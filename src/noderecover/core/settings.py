"""The settings decisions are made with: one frozen dataclass, no parsing, no I/O.

`noderecover.entry.config` builds it from flags and NODERECOVER_* variables, validated once;
the core and the controller only read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

from noderecover.core.fencing import FenceSpec, Provider
from noderecover.core.safety import CONTROL_PLANE_LABELS
from noderecover.core.selectors import Selector


class Removal(StrEnum):
    """The --removal setting. "auto" (the default): "both" when a fence proves a node off, else
    "delete". The out-of-service taint detaches volumes at once and is only safe on a node
    that is really off (KEP-2268): it is never put on a guess."""

    AUTO = "auto"
    DELETE = "delete"
    OUT_OF_SERVICE = "out-of-service"
    BOTH = "both"


class RemovalMode(StrEnum):
    """The removal actually done ("auto" resolved). Every site that acts on it matches it
    exhaustively (`assert_never`): a new mode is listed by mypy wherever it needs a decision,
    and can never fall through to "done" with no write."""

    DELETE = "delete"
    OUT_OF_SERVICE = "out-of-service"
    BOTH = "both"

    @property
    def taints(self) -> bool:
        """Puts the out-of-service taint on the node (and waits for its volumes to detach)."""
        match self:
            case RemovalMode.DELETE:
                return False
            case RemovalMode.OUT_OF_SERVICE | RemovalMode.BOTH:
                return True
            case _:  # pragma: no cover
                assert_never(self)

    @property
    def deletes(self) -> bool:
        """Deletes the Node object."""
        match self:
            case RemovalMode.DELETE | RemovalMode.BOTH:
                return True
            case RemovalMode.OUT_OF_SERVICE:
                return False
            case _:  # pragma: no cover
                assert_never(self)


REMOVAL_MODES = tuple(m.value for m in Removal)


@dataclass(frozen=True, slots=True)
class Threshold:
    """An absolute count or a percentage of the node population."""

    value: float
    percent: bool
    # Policies (NodeRecoveryPolicy.spec.maxUnhealthy): a percentage rounds up to a whole
    # number of nodes, at least 1, so a small pool can always remediate one node (40% of 2
    # nodes allows 1, not 0.8). The flags keep the exact fraction (unchanged behaviour).
    round_up: bool = False

    def limit(self, total: int) -> float:
        if not self.percent:
            return self.value
        exact = self.value * total / 100.0
        if self.round_up:
            # 1e-9: 10% of 30 is 3.0000000000000004 in floating point, and 3 is meant.
            return float(max(1, math.ceil(exact - 1e-9))) if self.value > 0 else 0.0
        return exact

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


@dataclass(frozen=True, slots=True)
class Config:
    # Decisions
    grace: float = 30.0
    healthy_delay: float = 30.0
    unhealthy_conditions: frozenset[tuple[str, str]] = frozenset(
        {("Ready", "False"), ("Ready", "Unknown")}
    )
    # Per-condition graces (type, status, seconds) of a NodeRecoveryPolicy; empty for the
    # flags (every condition has `grace`). See machine.grace_deadline.
    condition_graces: tuple[tuple[str, str, float], ...] = ()
    drain_timeout: float = 60.0
    node_startup_timeout: float = 600.0
    removal: Removal = Removal.AUTO
    detach_timeout: float = 120.0
    fence_command: tuple[str, ...] = ()
    fence_timeout: float = 60.0
    # The fence provider and its settings (--fence-provider, --fence-config; a policy's
    # spec.fence). Its provider None with a --fence-command: the `command` provider.
    fence: FenceSpec = field(default_factory=FenceSpec)
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
    # Watch every heartbeat Lease (kube-node-lease) and count a silent node's grace from the
    # last change seen (controller/heartbeats.py); off: from when the node is seen NotReady.
    grace_from_heartbeat: bool = True
    # Node agents (issue 23): the timing the controller assumes; an agent's published timing
    # counts where larger (core.agent.merged). The safe time is never below the floor.
    watch_agents: bool = True  # watch the agents' Leases (controller/agents.py)
    agent_isolation_timeout: float = 30.0
    agent_watchdog_timeout: float = 30.0
    agent_check_interval: float = 5.0
    agent_safe_time_floor: float = 60.0
    # Label keys and condition types other policies read: kept when parsing a Node.
    extra_labels: frozenset[str] = frozenset()
    extra_conditions: frozenset[str] = frozenset()
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
    # Where each setting came from (dest -> flag or NODERECOVER_* variable), for errors found
    # after parsing (e.g. --http-bind that cannot be bound); the flag when absent.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # A mode given as a string (a test, **kwargs) becomes the enum here; an unknown one
        # raises, so it can never reach a removal as "nothing to do".
        object.__setattr__(self, "removal", Removal(self.removal))

    def source(self, dest: str) -> str:
        """The flag or variable `dest` came from (its flag when it was a default)."""
        if dest in self.sources:
            return self.sources[dest]
        return "--" + dest.replace("_", "-")

    @property
    def silent_grace(self) -> float:
        """The grace of a silent node (Ready=Unknown): how long its heartbeat Lease must stay
        unchanged before it counts as dead (a policy's Ready=Unknown duration, or `grace`)."""
        for ctype, status, seconds in self.condition_graces:
            if (ctype, status) == ("Ready", "Unknown"):
                return seconds
        return self.grace

    @property
    def fence_provider(self) -> Provider | None:
        """Who fences: the spec's provider, else `command` when a --fence-command is set."""
        if self.fence.provider is not None:
            return self.fence.provider
        return Provider.COMMAND if self.fence_command else None

    @property
    def fencing(self) -> bool:
        return self.fence_provider is not None

    @property
    def removal_mode(self) -> RemovalMode:
        """The removal actually done: "auto" resolved (fenced -> "both", else "delete")."""
        removal = Removal(self.removal)
        match removal:
            case Removal.AUTO:
                return RemovalMode.BOTH if self.fencing else RemovalMode.DELETE
            case Removal.DELETE:
                return RemovalMode.DELETE
            case Removal.OUT_OF_SERVICE:
                return RemovalMode.OUT_OF_SERVICE
            case Removal.BOTH:
                return RemovalMode.BOTH
            case _:  # pragma: no cover
                assert_never(removal)

    @property
    def taints(self) -> bool:
        """The removal puts the out-of-service taint on the node."""
        return self.removal_mode.taints

    @property
    def relevant_labels(self) -> frozenset[str]:
        """Node labels the decisions read; all others are dropped when parsing a Node."""
        return (
            self.node_selector.keys
            | frozenset(CONTROL_PLANE_LABELS)
            | self.extra_labels
            | self.fence.labels
        )

    @property
    def kept_conditions(self) -> frozenset[str]:
        """Node condition types the decisions read (Ready and the unhealthy ones)."""
        return (
            frozenset({"Ready"} | {t for t, _ in self.unhealthy_conditions}) | self.extra_conditions
        )
