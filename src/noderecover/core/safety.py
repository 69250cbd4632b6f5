"""Safety gates as pure functions: circuit breaker, rate limits, exclusions.

A remediation controller must never make an outage worse. Each gate answers "may this step
happen now?" from observed counts and the clock; none performs I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from noderecover.core.settings import Config
from noderecover.core.nodes import ANN_EXCLUDE, NodeObs
from noderecover.core.reasons import Blocked

HOUR = 3600.0

# Nodes with these labels run the control plane: never remediated unless asked to.
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


@dataclass(frozen=True, slots=True)
class BreakerState:
    """The mass-failure circuit breaker. `open` means remediation is switched off.

    Invariant: it opens the moment the unhealthy count exceeds the limit, and closes only
    after the count has stayed at or below the limit for `storm_cooldown` without a break
    (nodes come back one by one after a mass outage; NHC's stormCooldownDuration).
    """

    open: bool = False
    opened_at: float | None = None
    below_since: float | None = None


def breaker_step(
    state: BreakerState, unhealthy: int, total: int, now: float, cfg: Config
) -> BreakerState:
    if unhealthy > cfg.max_unhealthy.limit(total):
        return BreakerState(True, state.opened_at if state.open else now, None)
    if not state.open:
        return state
    below = state.below_since if state.below_since is not None else now
    if now - below >= cfg.storm_cooldown:
        return BreakerState()
    return BreakerState(True, state.opened_at, below)


def breaker_wake(state: BreakerState, cfg: Config) -> float | None:
    """When an open breaker could close by itself (for the scheduler)."""
    if state.open and state.below_since is not None:
        return state.below_since + cfg.storm_cooldown
    return None


# Taints of systems that are taking a node away on purpose: the cluster autoscaler (scale
# down) and Karpenter (disruption: v1 `karpenter.sh/disrupted`, before v1
# `karpenter.sh/disruption=disrupting`). Such a node is theirs: never remediated.
AUTOSCALER_TAINTS = (
    "ToBeDeletedByClusterAutoscaler",
    "karpenter.sh/disrupted",
    "karpenter.sh/disruption",
)
EXCLUDED_AUTOSCALER = Blocked.EXCLUDED_AUTOSCALER
EXCLUDED_ANNOTATION = Blocked.EXCLUDED_ANNOTATION
EXCLUDED_CONTROL_PLANE = Blocked.EXCLUDED_CONTROL_PLANE


def exclusion(obs: NodeObs, cfg: Config) -> str | None:
    """Why this node must never be remediated, or None. Checked before every forward step."""
    if obs.annotations.get(ANN_EXCLUDE, "").lower() == "true":
        return EXCLUDED_ANNOTATION
    if any(obs.has_taint(k) for k in AUTOSCALER_TAINTS):
        return EXCLUDED_AUTOSCALER
    if cfg.exclude_control_plane and any(k in obs.labels for k in CONTROL_PLANE_LABELS):
        return EXCLUDED_CONTROL_PLANE
    return None


def in_population(obs: NodeObs, cfg: Config) -> bool:
    """Nodes the controller manages and the breaker counts: those matching --node-selector.

    A malformed node (its labels unreadable) counts too: the breaker errs on the safe side.
    """
    return obs.malformed is not None or cfg.node_selector.matches(obs.labels)


def recent(timestamps: Iterable[float], now: float, window: float) -> int:
    return sum(1 for t in timestamps if now - t < window)


def prune(timestamps: Sequence[float], now: float, keep: float) -> tuple[float, ...]:
    return tuple(t for t in timestamps if now - t < keep)
