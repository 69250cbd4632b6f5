"""The settings decisions are made with: one frozen dataclass, no parsing, no I/O.

`noderecover.entry.config` builds it from flags and NODERECOVER_* variables, validated once;
the core and the controller only read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from noderecover.core.safety import CONTROL_PLANE_LABELS
from noderecover.core.selectors import Selector

# "auto" (the default): "both" when a --fence-command proves a node off, else "delete". The
# out-of-service taint detaches volumes at once and is only safe on a node that is really off
# (KEP-2268): it is never put on a guess.
REMOVAL_MODES = ("auto", "delete", "out-of-service", "both")


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
    removal: str = "auto"
    detach_timeout: float = 120.0
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
    # Watch every heartbeat Lease (kube-node-lease) and count a silent node's grace from the
    # last change seen (controller/heartbeats.py); off: from when the node is seen NotReady.
    grace_from_heartbeat: bool = True
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
    def fencing(self) -> bool:
        return bool(self.fence_command)

    @property
    def removal_mode(self) -> str:
        """The removal actually done: "auto" resolved (fenced -> "both", else "delete")."""
        if self.removal == "auto":
            return "both" if self.fencing else "delete"
        return self.removal

    @property
    def taints(self) -> bool:
        """The removal puts the out-of-service taint on the node."""
        return self.removal_mode in {"out-of-service", "both"}

    @property
    def relevant_labels(self) -> frozenset[str]:
        """Node labels the decisions read; all others are dropped when parsing a Node."""
        return self.node_selector.keys | frozenset(CONTROL_PLANE_LABELS) | self.extra_labels

    @property
    def kept_conditions(self) -> frozenset[str]:
        """Node condition types the decisions read (Ready and the unhealthy ones)."""
        return (
            frozenset({"Ready"} | {t for t, _ in self.unhealthy_conditions}) | self.extra_conditions
        )
