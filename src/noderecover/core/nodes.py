"""What noderecover keeps of a Node: a few fields parsed from the raw JSON.

A real Node is 5-10 KB of JSON (images, addresses, capacity...). We keep ~10 fields, as
immutable slotted objects, and never build kubernetes_asyncio V1Node models.

Hostile input: `parse_node` is total. Whatever it is given (truncated objects, wrong types,
absurd timestamps, duplicated conditions) it returns a NodeObs and never raises; a Node that
cannot be read safely comes back with `malformed` set to one of MALFORMED_REASONS, no
conditions, no labels and no annotations. The state machine never acts on such a node
(`machine.decide` holds it) and the shell counts it in noderecover_malformed_objects_total.

What "read safely" means, field by field (only the fields decisions use are checked; the
rest of the object may be anything):
- metadata.name and metadata.uid: non-empty strings (no uid, no action: every write is
  guarded by it). metadata.resourceVersion: a non-empty string.
- labels / annotations: objects; the values noderecover reads (selector and control-plane
  labels, noderecover.io/ annotations) must be strings: a control-plane label that does not
  parse must not make a control-plane node look like a worker.
- spec.unschedulable: a boolean if present; spec.taints: a list of {key, value, effect}
  strings.
- status.conditions: a list of objects with a string type. Each condition type decisions
  read (Ready and the --unhealthy-conditions types) must appear at most once, with status
  True, False or Unknown and an RFC 3339 lastTransitionTime with a zone, within years
  1-9999. Duplicated Ready conditions are ambiguous: neither wins (the newest-timestamp rule
  would let one stale or forged entry decide) and the node is not actionable.
- A Ready condition must be present: without it health is unknown, and unknown is neither
  unhealthy (no remediation) nor healthy (no restore).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

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
# The controller's request to the node's agent to fence it (value: the Node's uid; core.agent).
ANN_FENCE_REQUESTED = ANNOTATION_PREFIX + "fence-requested"
OUR_ANNOTATIONS = (
    ANN_PHASE,
    ANN_PHASE_SINCE,
    ANN_UNHEALTHY_SINCE,
    ANN_CORDONED,
    ANN_TAINTED,
    ANN_FENCED,
    ANN_FENCE_REQUESTED,
)

CONDITION_STATUSES = frozenset({"True", "False", "Unknown"})

# Why an object cannot be used: the `reason` label of noderecover_malformed_objects_total.
NOT_AN_OBJECT = "not-an-object"  # not a JSON object at all
MISSING_NAME = "missing-name"  # no usable metadata.name: it cannot even be keyed
MISSING_UID = "missing-uid"
BAD_METADATA = "bad-metadata"  # metadata, resourceVersion, labels or annotations
BAD_SPEC = "bad-spec"  # spec, unschedulable or taints
BAD_CONDITIONS = "bad-conditions"  # status.conditions, or a condition decisions read
DUPLICATE_CONDITION = "duplicate-condition"  # a condition decisions read, twice
NO_READY_CONDITION = "no-ready-condition"
MALFORMED_REASONS = (
    NOT_AN_OBJECT,
    MISSING_NAME,
    MISSING_UID,
    BAD_METADATA,
    BAD_SPEC,
    BAD_CONDITIONS,
    DUPLICATE_CONDITION,
    NO_READY_CONDITION,
)

# RFC 3339 date-time (what metav1.Time and MicroTime serialise to), ASCII digits only.
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_time(value: object) -> float | None:
    """RFC 3339 ('2026-11-28T04:37:56Z', fractional seconds allowed) -> epoch seconds.

    None for anything else: not a string, not RFC 3339 (no zone: a naive time would be read
    in the local zone; other ISO 8601 forms), not a valid date, or outside years 1-9999 once
    in UTC (it could not be written back).
    """
    if not isinstance(value, str):
        return None
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    day, clock, fraction, zone = m.groups()
    utc = zone in ("Z", "z")
    try:
        t = datetime.fromisoformat(
            f"{day}T{clock}{(fraction or '')[:7]}{'+00:00' if utc else zone}"
        )
        # Already in UTC (what the API server writes), so within years 1-9999 in UTC.
        return (t if utc else t.astimezone(UTC)).timestamp()
    except (ValueError, OverflowError):
        return None


# The one writer of API times: metav1.Time (format_time: Node annotations, Events, pauses,
# policy conditions, the plugin's output) and metav1.MicroTime (format_micro_time: Leases).
def _utc(epoch: float) -> str:
    d = datetime.fromtimestamp(epoch, UTC)
    # Not strftime('%Y'): glibc writes year 1 as '1', which is not RFC 3339.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"


def format_time(epoch: float) -> str:
    """Epoch seconds -> RFC 3339 with second precision, 'Z' suffix (metav1.Time form)."""
    return _utc(epoch) + "Z"


def format_micro_time(epoch: float) -> str:
    """Epoch seconds -> metav1.MicroTime: exactly 6 fractional digits."""
    d = datetime.fromtimestamp(epoch, UTC)
    return f"{_utc(epoch)}.{d.microsecond:06d}Z"


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
    malformed: str | None = None  # one of MALFORMED_REASONS: never act on this node
    created: float | None = None  # creationTimestamp (None: unreadable, treated as old)
    provider_id: str = ""  # spec.providerID ("" when absent or not a string): what fencing aims at
    # status.nodeInfo.bootID as its kubelet last reported it ("" when absent or not a string):
    # a fence mark names the boot it was meant for (core.agent.mark_value).
    boot_id: str = ""

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


class _Malformed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_node(
    obj: object,
    keep_labels: frozenset[str],
    keep_conditions: frozenset[str] = frozenset({"Ready"}),
) -> NodeObs:
    """Raw Node JSON (a dict from orjson) -> NodeObs. Never raises (see the module doc)."""
    try:
        return _parse_node(obj, keep_labels, keep_conditions)
    except _Malformed as bad:
        meta = obj.get("metadata") if _is_object(obj) else None
        meta = meta if _is_object(meta) else {}
        name, uid = meta.get("name"), meta.get("uid")
        return NodeObs(
            name=name if isinstance(name, str) else "",
            uid=uid if isinstance(uid, str) else "",
            resource_version="",
            conditions=(),
            unschedulable=False,
            labels={},
            annotations={},
            taints=(),
            deleting=False,
            malformed=bad.reason,
        )


def _parse_node(obj: object, keep_labels: frozenset[str], keep: frozenset[str]) -> NodeObs:
    if not _is_object(obj):
        raise _Malformed(NOT_AN_OBJECT)
    meta = obj.get("metadata")
    if not _is_object(meta):
        raise _Malformed(MISSING_NAME if meta is None else BAD_METADATA)
    name, uid, rv = meta.get("name"), meta.get("uid"), meta.get("resourceVersion")
    if not isinstance(name, str) or not name:
        raise _Malformed(MISSING_NAME)
    if not isinstance(uid, str) or not uid:
        raise _Malformed(MISSING_UID)
    if not isinstance(rv, str) or not rv:
        raise _Malformed(BAD_METADATA)
    labels = _kept_labels(meta.get("labels"), keep_labels)
    annotations = _our_annotations(meta.get("annotations"))
    deletion = meta.get("deletionTimestamp")
    if deletion is not None and not isinstance(deletion, str):
        raise _Malformed(BAD_METADATA)
    spec = _object_or_empty(obj.get("spec"), BAD_SPEC)
    unschedulable = spec.get("unschedulable")
    if unschedulable is not None and not isinstance(unschedulable, bool):
        raise _Malformed(BAD_SPEC)
    return NodeObs(
        name=name,
        uid=uid,
        resource_version=rv,
        conditions=_conditions(obj.get("status"), keep),
        unschedulable=bool(unschedulable),
        labels=labels,
        annotations=annotations,
        taints=_taints(spec.get("taints")),
        deleting=bool(deletion),
        created=parse_time(meta.get("creationTimestamp")),
        provider_id=pid if isinstance(pid := spec.get("providerID"), str) else "",
        boot_id=_boot_id(obj.get("status")),
    )


def _boot_id(status: object) -> str:
    """status.nodeInfo.bootID, or "" (never malformed: nothing but the fence mark reads it)."""
    info = status.get("nodeInfo") if _is_object(status) else None
    boot = info.get("bootID") if _is_object(info) else None
    return boot if isinstance(boot, str) and "/" not in boot else ""


def _is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object (orjson gives dicts: checked first, an ABC check costs 5x as much)."""
    return type(value) is dict or isinstance(value, Mapping)


def _object_or_empty(value: object, reason: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not _is_object(value):
        raise _Malformed(reason)
    return value


def _kept_labels(value: object, keep: frozenset[str]) -> dict[str, str]:
    """The labels decisions read (a few keys, looked up: a huge map costs nothing)."""
    labels = _object_or_empty(value, BAD_METADATA)
    out: dict[str, str] = {}
    for k in keep:
        if k in labels:
            v = labels[k]
            if not isinstance(v, str):
                raise _Malformed(BAD_METADATA)
            out[k] = v
    return out


def _our_annotations(value: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in _object_or_empty(value, BAD_METADATA).items():
        if isinstance(k, str) and k.startswith(ANNOTATION_PREFIX):
            if not isinstance(v, str):
                raise _Malformed(BAD_METADATA)
            out[k] = v
    return out


def _taints(value: object) -> tuple[Taint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Malformed(BAD_SPEC)
    out = []
    for t in value:
        if not _is_object(t):
            raise _Malformed(BAD_SPEC)
        key, val, effect = t.get("key"), t.get("value", ""), t.get("effect", "")
        if not isinstance(key, str) or not key:
            raise _Malformed(BAD_SPEC)
        if not isinstance(val, str | None) or not isinstance(effect, str | None):
            raise _Malformed(BAD_SPEC)
        out.append(Taint(key, val or "", effect or ""))
    return tuple(out)


def _conditions(status: object, keep: frozenset[str]) -> tuple[Condition, ...]:
    raw = _object_or_empty(status, BAD_CONDITIONS).get("conditions")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise _Malformed(BAD_CONDITIONS)
    out: dict[str, Condition] = {}
    for c in raw:
        if not _is_object(c):
            raise _Malformed(BAD_CONDITIONS)
        ctype = c.get("type")
        if not isinstance(ctype, str) or not ctype:
            raise _Malformed(BAD_CONDITIONS)
        if ctype not in keep:
            continue
        if ctype in out:
            raise _Malformed(DUPLICATE_CONDITION)
        status_value, reason = c.get("status"), c.get("reason")
        since = parse_time(c.get("lastTransitionTime"))
        if not isinstance(status_value, str) or status_value not in CONDITION_STATUSES:
            raise _Malformed(BAD_CONDITIONS)
        if since is None:
            raise _Malformed(BAD_CONDITIONS)
        out[ctype] = Condition(
            ctype, status_value, reason if isinstance(reason, str) else "", since
        )
    if "Ready" in keep and "Ready" not in out:
        raise _Malformed(NO_READY_CONDITION)
    return tuple(out.values())
