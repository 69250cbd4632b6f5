"""What the operator sees of the controller's decisions: Events, metrics and log lines.

Invariants:
- A hold is reported once per reason (log line, noderecover_blocked_total, a
  NodeRecoverBlocked Warning), not once per reconcile pass; the Event recorder aggregates
  repeats anyway.
- A hold reported by the executor (a step stopped by its fresh read) lasts until the
  executor's next result for that node; a hold from a decision lasts while decisions say so.
- Phase changes are one Event each, with a message that says what comes next.
- No metric carries a node name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Protocol

from noderecover.base import logs
from noderecover.base.clock import Timeline
from noderecover.base.metrics import (
    ACTIONS,
    BLOCKED,
    CLOCK_DRIFT,
    FLAPS,
    NODES,
    PHASE_DURATION,
)
from noderecover.core import reasons
from noderecover.core.machine import Decision, Phase, Record
from noderecover.core.settings import Config

log = logging.getLogger("noderecover.controller.reconciler")

EVENT_REASONS = {
    Phase.SUSPECT: ("NodeRecoverSuspect", "Warning"),
    Phase.CORDONED: ("NodeRecoverCordoned", "Warning"),
    Phase.DRAINING: ("NodeRecoverDraining", "Warning"),
    Phase.REMOVING: ("NodeRecoverDrained", "Warning"),
    Phase.REMOVED: ("NodeRecoverRemoved", "Warning"),
    Phase.HEALTHY: ("NodeRecoverRecovered", "Normal"),
}

HOLD_EVENT_AGAIN = 60.0  # seconds: a hold that lasts has its Event sent again this often
DRIFT_LOG_STEP = 1.0  # seconds: a wall-clock step this large is logged
DRIFT_EXPORT_STEP = 0.001  # seconds: noderecover_clock_drift_seconds moves by at least this


class EventSink(Protocol):
    def record(
        self,
        node: str,
        uid: str,
        reason: str,
        message: str,
        type: str = "Normal",
        *,
        kind: str = "Node",
        namespace: str = "",
    ) -> None: ...


class Reporter:
    def __init__(
        self,
        cfg: Config,
        timeline: Timeline,
        events: EventSink | None,
        config_for: Callable[[str], Config] | None = None,
        explain: Callable[[str, str], str | None] | None = None,
    ) -> None:
        """`config_for(node)`: the settings of the node's policy (for messages);
        `explain(node, reason)`: more about a hold (a pause's end and reason), or None."""
        self._explain: Callable[[str, str], str | None] = explain or (lambda _n, _r: None)
        self._cfg = cfg
        self._config_for: Callable[[str], Config] = config_for or (lambda _node: cfg)
        self._timeline = timeline
        self._events = events
        self.blocked: dict[str, str] = {}  # node -> the reason its next step is held
        self._held_since: dict[str, float] = {}  # node -> when its hold's Event was last sent
        self._executor_held: set[str] = set()  # `blocked` entries the executor reported
        self._drift_logged = 0.0
        self._drift_set = -math.inf
        self._phases_set: tuple[int, ...] = ()
        self._phases_seen = (-1, -1)

    def reset(self) -> None:
        """A new term as leader: nothing reported yet."""
        self.blocked = {}
        self._executor_held = set()

    def event(self, node: str, uid: str, reason: str, message: str) -> None:
        if self._events is not None:
            self._events.record(node, uid, reason, message, "Warning")

    def object_event(
        self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str
    ) -> None:
        """A Warning Event on any object (a Node when `namespace` is "")."""
        if self._events is not None:
            self._events.record(
                name, uid, reason, message, "Warning", kind=kind, namespace=namespace
            )

    def decision(self, name: str, uid: str, d: Decision) -> None:
        """Report what a decision says: a flap, a hold, or that a hold ended."""
        if d.flapped:
            self._flap(name, uid)
        if d.blocked is None:
            if name not in self._executor_held:
                self.blocked.pop(name, None)
            return
        self.hold(name, uid, d.record.phase.value, d.blocked)

    def executor_result(self, name: str, uid: str, phase: str, held: str | None) -> None:
        """The executor stopped a step (`held`: its reason) or finished one (None)."""
        if held is not None:
            self.hold(name, uid, phase, held)
            self._executor_held.add(name)
        elif name in self._executor_held:
            self._executor_held.discard(name)
            self.blocked.pop(name, None)

    def hold(self, name: str, uid: str, phase: str, reason: str) -> None:
        now = self._timeline.now()
        if self.blocked.get(name) == reason:
            # Said already: the Event again (aggregated by the recorder into its count) once
            # per HOLD_EVENT_AGAIN, so an Event the recorder had to drop (API errors) does not
            # leave a long hold silent. The log line and the metric count the hold once.
            if now - self._held_since.get(name, now) >= HOLD_EVENT_AGAIN:
                self._held_since[name] = now
                self.event(name, uid, "NodeRecoverBlocked", self.hold_message(name, phase, reason))
            return
        self._held_since[name] = now
        self.blocked[name] = reason
        BLOCKED.labels(reasons.metric_label(reason)).inc()
        logs.decision(log, name, phase, "hold", reason)
        self.event(name, uid, "NodeRecoverBlocked", self.hold_message(name, phase, reason))

    def hold_message(self, name: str, phase: str, reason: str) -> str:
        """The NodeRecoverBlocked Event's text: the reason, what holds (with the controller's
        details: a pause's end and why, the policies in conflict) and what ends it."""
        more = self._explain(name, reason)
        detail = f" ({more})" if more else ""
        b = reasons.blocked(reason)
        if b is None:  # not in the registry: say what can be said
            return f"{phase}: next step held by '{reason}'{detail}; will proceed when it clears"
        return f"{phase}: next step held by '{reason}': {b.means}{detail}; {b.ends}"

    def _flap(self, name: str, uid: str) -> None:
        """The message is constant so the recorder aggregates repeats into one Event whose
        `count` is the number of flaps."""
        FLAPS.inc()
        cfg = self._config_for(name)
        self.event(
            name,
            uid,
            "NodeRecoverFlapping",
            f"Node flapped (healthy again for less than the {cfg.healthy_delay:.0f}s "
            "healthy-delay, then unhealthy): grace restarted, remediation damped - no "
            f"cordon, drain or removal until it stays unhealthy for {cfg.grace:.0f}s.",
        )

    def phase_changed(self, name: str, uid: str, old: Record, new: Record) -> None:
        now = self._timeline.now()
        if old.phase is not Phase.HEALTHY and old.phase_since:
            PHASE_DURATION.labels(old.phase.value).observe(max(0.0, now - old.phase_since))
        ACTIONS.labels(f"phase-{new.phase.value.lower()}", "ok").inc()
        if self._events is not None:
            reason, etype = EVENT_REASONS[new.phase]
            self._events.record(name, uid, reason, message(new, self._config_for(name)), etype)

    def forgotten(self, name: str, rec: Record) -> None:
        """The node is gone from the cluster."""
        self.blocked.pop(name, None)
        self._executor_held.discard(name)
        if rec.phase is not Phase.HEALTHY and rec.phase_since:
            now = self._timeline.now()
            PHASE_DURATION.labels(rec.phase.value).observe(max(0.0, now - rec.phase_since))
        log.info("node %s is gone (last phase %s)", name, rec.phase.value)

    def phases(self, records: Mapping[Phase, int], nodes: int, version: int = -1) -> None:
        """noderecover_nodes{phase}: `records` counts the records of nodes in view per phase
        (kept by the census, controller.pools; `version` moves with it), the other nodes are
        Healthy."""
        if version >= 0 and (version, nodes) == self._phases_seen:
            return
        self._phases_seen = (version, nodes)
        counts = {phase: records.get(phase, 0) for phase in Phase}
        counts[Phase.HEALTHY] += nodes - sum(counts.values())
        key = tuple(counts.values())
        if key == self._phases_set:
            return
        self._phases_set = key
        for phase, n in counts.items():
            NODES.labels(phase.value).set(n)

    def drift(self) -> None:
        """Export the wall clock's steps since start; log each new step over a second."""
        drift = self._timeline.drift()
        if abs(drift - self._drift_set) >= DRIFT_EXPORT_STEP:
            self._drift_set = drift
            CLOCK_DRIFT.set(drift)
        if abs(drift - self._drift_logged) > DRIFT_LOG_STEP:
            log.warning(
                "the wall clock stepped by %+.1fs (%+.1fs since start); timers run on the "
                "monotonic clock and ignore it",
                drift - self._drift_logged,
                drift,
            )
            self._drift_logged = drift


def message(rec: Record, cfg: Config) -> str:
    """What an Event about a phase change tells the operator comes next."""
    match rec.phase:
        case Phase.SUSPECT:
            lease = (
                " (Ready=Unknown: also once its heartbeat Lease stayed unchanged for the longer"
                " of the grace and its leaseDurationSeconds)"
                if cfg.watch_node_leases
                else ""
            )
            since = (
                " (Ready=Unknown: counted from its last heartbeat seen)"
                if cfg.watch_node_leases and cfg.grace_from_heartbeat
                else ""
            )
            return (
                f"Node unhealthy; remediation starts after the {cfg.grace:.0f}s grace{since}"
                f"{lease} unless it recovers."
            )
        case Phase.CORDONED:
            return "Node cordoned by noderecover; draining next."
        case Phase.DRAINING:
            fast = (
                "a pod of a kubelet proven silent (Ready=Unknown and its heartbeat Lease "
                "unchanged for its window, read right before) is force-deleted once the grace "
                "of its eviction (1s) has passed; otherwise "
                if cfg.watch_node_leases
                else ""
            )
            return (
                f"Draining: evicting pods; {fast}the leftovers of a silent kubelet "
                f"(Ready=Unknown, read right before each) are force-deleted after "
                f"{cfg.drain_timeout:.0f}s. Nothing is forced on a live kubelet."
            )
        case Phase.REMOVING:
            auto = (
                " (auto: out-of-service, then delete, for a node proven off: a fence, or the "
                "cloud's shutdown taint)"
                if cfg.removal == "auto" and not cfg.fencing
                else ""
            )
            return (
                f"Drained; removing the node ({cfg.removal_mode}{auto}) once its kubelet is gone."
            )
        case Phase.REMOVED:
            return f"Node removed; its pods can start elsewhere (--removal {cfg.removal})."
        case Phase.HEALTHY:
            return "Node healthy again; noderecover undid its cordon/taint and stopped."
    return rec.phase.value  # pragma: no cover
