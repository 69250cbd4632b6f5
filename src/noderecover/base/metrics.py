"""Prometheus metric definitions (the only module-level state noderecover has).

Names follow Prometheus conventions: `noderecover_` prefix, base units, `_total` counters.
No node names in labels: a cluster of 5,000 nodes must not mean 5,000 series per metric.
"""

from __future__ import annotations

from typing import Self

import prometheus_client
from prometheus_client import Info
from prometheus_client.metrics import MetricWrapperBase


class _LabelsMemo(MetricWrapperBase):
    """`labels()` memoized: prometheus_client validates, converts and locks on every call,
    and a reconcile pass calls it for every gauge it refreshes (a tenth of the simulation's
    CPU). Returns the very child prometheus_client would: the one it still holds for those
    values (after a `remove()` or `clear()`, a new one, from prometheus_client)."""

    def labels(self, *labelvalues: object, **labelkwargs: object) -> Self:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)
        memo: dict[tuple[object, ...], Self] = self.__dict__.setdefault("_labels_memo", {})
        try:
            child = memo.get(labelvalues)
        except TypeError:  # unhashable values: not memoized
            return super().labels(*labelvalues)
        if child is not None and _same(self._metrics.get(child._labelvalues), child):
            return child
        child = super().labels(*labelvalues)
        memo[labelvalues] = child
        return child


def _same(a: object, b: object) -> bool:
    return a is b


class Counter(_LabelsMemo, prometheus_client.Counter):
    pass


class Gauge(_LabelsMemo, prometheus_client.Gauge):
    pass


class Histogram(_LabelsMemo, prometheus_client.Histogram):
    pass


# Seconds to tens of minutes: grace timers default to 60 s, drains to 60 s, PodGC adds 40-60 s.
_DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 3600)

LEADER = Gauge("noderecover_leader", "1 while this replica holds the leader Lease, else 0.")
NODES = Gauge("noderecover_nodes", "Tracked nodes by remediation phase.", ["phase"])
ACTIONS = Counter(
    "noderecover_actions_total",
    "Remediation actions performed (or simulated in dry-run), by action and result.",
    ["action", "result"],
)
FENCES = Counter(
    "noderecover_fences_total",
    "Fences by provider and outcome: ok (read back off), or the blocked reason that ended it.",
    ["provider", "outcome"],
)
BLOCKED = Counter(
    "noderecover_blocked_total",
    "Remediation steps held back by a safety gate, by reason.",
    ["reason"],
)
PAUSE_UNKNOWN = Gauge(
    "noderecover_pause_unknown",
    "1 while a pause may exist unseen, so every forward step is held: `cluster` (the pause "
    "ConfigMap not read for longer than the pause propagation bound), `policies` (the "
    "NodeRecoveryPolicies not known).",
    ["what"],
)
BREAKER_OPEN = Gauge(
    "noderecover_circuit_breaker_open",
    "1 while the mass-failure circuit breaker blocks new remediations.",
)
UNHEALTHY = Gauge(
    "noderecover_unhealthy_nodes",
    "Nodes the circuit breaker counts as unhealthy (incl. in remediation and recently removed).",
)
CLOCK_DRIFT = Gauge(
    "noderecover_clock_drift_seconds",
    "Wall clock minus the monotonic timeline timers run on: the sum of clock steps since start.",
)
PHASE_DURATION = Histogram(
    "noderecover_phase_duration_seconds",
    "Time a node spent in a phase before leaving it.",
    ["phase"],
    buckets=_DURATION_BUCKETS,
)
RECOVERY_DURATION = Histogram(
    "noderecover_recovery_duration_seconds",
    "From the start of the grace timer (restarted by a flap) to the node removed.",
    buckets=_DURATION_BUCKETS,
)
FLAPS = Counter(
    "noderecover_flaps_total",
    "Flaps: a node healthy again for less than --healthy-delay, then unhealthy again "
    "(grace timer restarted, remediation damped).",
)
WATCH_EVENTS = Counter(
    "noderecover_watch_events_total", "Watch events received, by type.", ["resource", "type"]
)
WATCH_RESTARTS = Counter(
    "noderecover_watch_restarts_total",
    "Watch streams restarted, by reason (timeout: ended by the server at its timeoutSeconds, "
    "closed-early: ended cleanly before it, silent, expired, error, error-event, bad-event, "
    "relist).",
    ["resource", "reason"],
)
WATCH_BAD_EVENTS = Counter(
    "noderecover_watch_bad_events_total",
    "Watch stream lines that were not a usable event, by reason (invalid-json, not-an-event, "
    "truncated, line-too-long, unknown-type, bookmark-without-rv, bad-error).",
    ["resource", "reason"],
)
MALFORMED_OBJECTS = Counter(
    "noderecover_malformed_objects_total",
    "API objects that could not be read safely and are never acted on, by resource and reason "
    "(nodes: nodes.MALFORMED_REASONS; pods, which hold their node's drain: "
    "draining.POD_MALFORMED_REASONS).",
    ["resource", "reason"],
)
API_ERRORS = Counter(
    "noderecover_api_errors_total",
    "Kubernetes API calls that failed, by verb and HTTP code (0 = no answer/timeout).",
    ["verb", "code"],
)
LEADER_RENEWED = Gauge(
    "noderecover_leader_last_renew_timestamp_seconds",
    "Wall time at which this replica sent its last Lease write that the API server accepted "
    "(acquire or renew; 0 = never). Others may take over lease-duration after it.",
)
LEADER_TRANSITIONS = Counter(
    "noderecover_leader_transitions_total",
    "Times this replica became leader or stopped being leader.",
)
BUILD_INFO = Info("noderecover_build", "Build information.")
EVENTS_DROPPED = Counter(
    "noderecover_events_dropped_total",
    "Kubernetes Events not written (best effort, leader only), by reason "
    "(queue_full, error, not-leader).",
    ["reason"],
)
PAUSED = Gauge(
    "noderecover_paused",
    '1 while remediation is paused: per NodeRecoveryPolicy, or policy="" for the '
    "cluster-wide pause (ConfigMap noderecover-pause). Pauses expire by themselves.",
    ["policy"],
)
POLICY_NODES = Gauge(
    "noderecover_policy_nodes",
    "Nodes per NodeRecoveryPolicy: matched, unhealthy, remediating, conflict.",
    ["policy", "state"],
)
POLICY_INVALID = Gauge(
    "noderecover_policy_invalid",
    "1 while a NodeRecoveryPolicy cannot be applied (see its status); its nodes are held.",
    ["policy"],
)
VOLUMES_HELD = Gauge(
    "noderecover_volumes_held",
    "VolumeAttachments still on nodes noderecover is removing (their last read).",
)
VOLUME_REATTACH = Histogram(
    "noderecover_volume_reattach_seconds",
    "From the start of a remediation (the end of the grace) to a volume of the removed node "
    "attached on another node.",
    buckets=_DURATION_BUCKETS,
)
