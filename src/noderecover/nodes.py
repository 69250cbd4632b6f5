"""What noderecover keeps of a Node: a few fields parsed from the raw JSON.

A real Node is 5-10 KB of JSON (images, addresses, capacity...). We keep ~10 fields, as
immutable slotted objects, and never build kubernetes_asyncio V1Node models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from noderecover import ANNOTATION_PREFIX

OUT_OF_SERVICE_KEY = "node.kubernetes.io/out-of-service"
OUT_OF_SERVICE_TAINT = {"key": OUT_OF_SERVICE_KEY, "value": "nodeshutdown", "effect": "NoExecute"}

# Annotations noderecover writes on a Node (and the one operators write to opt a node out).
ANN_PHASE = ANNOTATION_PREFIX + "phase"
ANN_PHASE_SINCE = ANNOTATION_PREFIX + "phase-since"
ANN_UNHEALTHY_SINCE = ANNOTATION_PREFIX + "unhealthy-since"
ANN_CORDONED = ANNOTATION_PREFIX + "cordoned"
ANN_TAINTED = ANNOTATION_PREFIX + "out-of-service"
ANN_FENCED = ANNOTATION_PREFIX + "fenced"
ANN_EXCLUDE = ANNOTATION_PREFIX + "exclude"
OUR_ANNOTATIONS = (
    ANN_PHASE,
    ANN_PHASE_SINCE,
    ANN_UNHEALTHY_SINCE,
    ANN_CORDONED,
    ANN_TAINTED,
    ANN_FENCED,
)


def parse_time(value: object) -> float | None:
    """RFC 3339 ('2026-11-28T04:37:56Z', fractional seconds allowed) -> epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(epoch: float) -> str:
    """Epoch seconds -> RFC 3339 with second precision, 'Z' suffix (metav1.Time form)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(epoch: float) -> str:
    """Epoch seconds -> metav1.MicroTime: exactly 6 fractional digits."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    since: float | None  # lastTransitionTime


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class NodeObs:
    """One observation of a Node: the fields decisions need, nothing more."""

    name: str
    uid: str
    resource_version: str
    conditions: tuple[Condition, ...]
    unschedulable: bool
    labels: Mapping[str, str]  # only the keys the configuration reads
    annotations: Mapping[str, str]  # only noderecover.io/ ones
    taints: tuple[Taint, ...]
    deleting: bool

    def condition(self, ctype: str) -> Condition | None:
        for c in self.conditions:
            if c.type == ctype:
                return c
        return None

    @property
    def ready(self) -> Condition | None:
        return self.condition("Ready")

    @property
    def silent(self) -> bool:
        """Ready=Unknown: the kubelet stopped reporting (as opposed to reporting NotReady)."""
        r = self.ready
        return r is not None and r.status == "Unknown"

    def has_taint(self, key: str) -> bool:
        return any(t.key == key for t in self.taints)


def parse_node(
    obj: Mapping[str, Any],
    keep_labels: frozenset[str],
    keep_conditions: frozenset[str] = frozenset({"Ready"}),
) -> NodeObs:
    """Raw Node JSON (a dict from orjson) -> NodeObs. Tolerates missing optional fields."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    conditions = tuple(
        Condition(
            str(c.get("type", "")),
            str(c.get("status", "Unknown")),
            str(c.get("reason", "")),
            parse_time(c.get("lastTransitionTime")),
        )
        for c in status.get("conditions") or ()
        if c.get("type") in keep_conditions
    )
    taints = tuple(
        Taint(str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
        for t in spec.get("taints") or ()
    )
    return NodeObs(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        conditions=conditions,
        unschedulable=bool(spec.get("unschedulable", False)),
        labels={k: str(v) for k, v in labels.items() if k in keep_labels},
        annotations={k: str(v) for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)},
        taints=taints,
        deleting=bool(meta.get("deletionTimestamp")),
    )
