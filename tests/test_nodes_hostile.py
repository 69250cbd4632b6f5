"""Hostile Node JSON: the parser never raises, and what it cannot read safely is never acted on.

Table-driven cases document each decision (which reason, which values are accepted); the
property tests feed arbitrary JSON and randomly damaged real Nodes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from noderecover.core.machine import FORWARD, Gates, Phase, Record, decide, resume
from noderecover.core.nodes import (
    ANN_EXCLUDE,
    ANN_PHASE,
    MALFORMED_REASONS,
    NodeObs,
    format_time,
    parse_node,
    parse_time,
)
from noderecover.entry.config import CONTROL_PLANE_LABELS, Config
from tests.builders import T0, node_json

CFG = Config()
CP = CONTROL_PLANE_LABELS[0]
KEEP_LABELS = CFG.relevant_labels
KEEP_CONDITIONS = frozenset({"Ready"})
YEAR_1 = -62135596800.0
YEAR_10000 = 253402300800.0


def parse(raw: object) -> NodeObs:
    return parse_node(raw, KEEP_LABELS, KEEP_CONDITIONS)


def ready_condition(raw: dict[str, Any]) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = raw["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "Ready")


def damaged(change: Any) -> dict[str, Any]:
    raw = node_json("w1", ready="Unknown", labels={CP: ""}, annotations={ANN_PHASE: "Cordoned"})
    change(raw)
    return raw


def _at(raw: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    target: Any = raw
    for p in path:
        target = target[p]
    return target


def _set(*path_and_value: Any) -> Any:
    *path, value = path_and_value

    def change(raw: dict[str, Any]) -> None:
        _at(raw, tuple(path[:-1]))[path[-1]] = value

    return change


def _drop(*path: str | int) -> Any:
    def change(raw: dict[str, Any]) -> None:
        del _at(raw, path[:-1])[path[-1]]

    return change


def _duplicate_ready(status: str, when: float) -> Any:
    def change(raw: dict[str, Any]) -> None:
        extra = dict(ready_condition(raw), status=status, lastTransitionTime=format_time(when))
        raw["status"]["conditions"].append(extra)

    return change


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_drop("metadata"), "missing-name"),
        (_set("metadata", ["w1"]), "bad-metadata"),
        (_set("metadata", "name", ""), "missing-name"),
        (_set("metadata", "name", 7), "missing-name"),
        (_drop("metadata", "uid"), "missing-uid"),
        (_set("metadata", "uid", None), "missing-uid"),
        (_set("metadata", "uid", {"id": 1}), "missing-uid"),
        (_set("metadata", "resourceVersion", 42), "bad-metadata"),
        (_set("metadata", "labels", ["a=b"]), "bad-metadata"),
        # A control-plane label that does not parse must not make the node look like a worker.
        (_set("metadata", "labels", CP, None), "bad-metadata"),
        (_set("metadata", "annotations", "phase=Removing"), "bad-metadata"),
        (_set("metadata", "annotations", ANN_EXCLUDE, True), "bad-metadata"),
        (_set("metadata", "deletionTimestamp", 12), "bad-metadata"),
        (_set("spec", []), "bad-spec"),
        (_set("spec", "unschedulable", "true"), "bad-spec"),
        (_set("spec", "taints", {"key": "x"}), "bad-spec"),
        (_set("spec", "taints", [{"effect": "NoSchedule"}]), "bad-spec"),
        (_set("spec", "taints", ["node.kubernetes.io/unreachable"]), "bad-spec"),
        (_set("status", "Ready"), "bad-conditions"),
        (_set("status", "conditions", {"Ready": "True"}), "bad-conditions"),
        (_set("status", "conditions", 0, "MemoryPressure=False"), "bad-conditions"),
        (_drop("status", "conditions", 0, "type"), "bad-conditions"),
        (_set("status", "conditions", 1, "status", "Maybe"), "bad-conditions"),
        (_set("status", "conditions", 1, "status", ["Unknown"]), "bad-conditions"),
        (_set("status", "conditions", 1, "status", None), "bad-conditions"),
        (_drop("status", "conditions", 1, "lastTransitionTime"), "bad-conditions"),
        (_set("status", "conditions", 1, "lastTransitionTime", "yesterday"), "bad-conditions"),
        (_set("status", "conditions", 1, "lastTransitionTime", T0), "bad-conditions"),
        (_set("status", "conditions", 1, "lastTransitionTime", -1), "bad-conditions"),
        (
            _set("status", "conditions", 1, "lastTransitionTime", "2026-01-01T00:00:00"),
            "bad-conditions",
        ),
        (
            _set("status", "conditions", 1, "lastTransitionTime", "9999-12-31T23:59:59-01:00"),
            "bad-conditions",
        ),
        (
            _set("status", "conditions", 1, "lastTransitionTime", "0001-01-01T00:00:00+01:00"),
            "bad-conditions",
        ),
        # Two Ready conditions are ambiguous, whichever is newer: neither wins.
        (_duplicate_ready("True", T0), "duplicate-condition"),
        (_duplicate_ready("Unknown", T0 - 7200), "duplicate-condition"),
        (_drop("status"), "no-ready-condition"),
        (_drop("status", "conditions"), "no-ready-condition"),
        (_set("status", "conditions", []), "no-ready-condition"),
        (_set("status", "conditions", 1, "type", "ready"), "no-ready-condition"),
    ],
)
def test_what_cannot_be_read_safely(change: Any, reason: str) -> None:
    obs = parse(damaged(change))
    assert obs.malformed == reason
    assert (obs.conditions, dict(obs.labels), dict(obs.annotations)) == ((), {}, {})
    assert not obs.unschedulable and not obs.silent and obs.ready is None
    # Never acted on, whatever the record says.
    for phase in Phase:
        rec = Record(uid="uid-w1", phase=phase, unhealthy_since=T0 - 3600, healthy_since=T0 - 99)
        d = decide(rec, obs, T0, CFG, Gates())
        assert d.action is None
        assert d.blocked == (None if phase is Phase.HEALTHY else "malformed-object")
    assert resume(obs, T0, CFG) == Record(uid=obs.uid)


@pytest.mark.parametrize(
    ("change", "check"),
    [
        # Fields decisions do not read may be anything.
        (_set("status", "images", "lots"), lambda o: o.silent),
        (_set("status", "conditions", 0, "status", "Exploded"), lambda o: o.silent),
        (_set("status", "conditions", 0, "lastTransitionTime", None), lambda o: o.silent),
        (_set("metadata", "labels", "zone", 5), lambda o: CP in o.labels),
        (_set("metadata", "annotations", "other", ["x"]), lambda o: o.annotations[ANN_PHASE]),
        (_set("status", "conditions", 1, "reason", {"why": 1}), lambda o: o.ready.reason == ""),
        # Absent optional fields.
        (_drop("spec"), lambda o: not o.unschedulable and o.taints == ()),
        (_set("spec", "taints", [{"key": "k"}]), lambda o: o.taints[0].value == ""),
        (_set("metadata", "labels", None), lambda o: dict(o.labels) == {}),
        (_set("spec", "unschedulable", None), lambda o: not o.unschedulable),
        # Absurd but valid timestamps are kept (they can only delay: see the machine tests).
        (
            _set("status", "conditions", 1, "lastTransitionTime", "0001-01-01T00:00:00Z"),
            lambda o: o.ready.since == YEAR_1,
        ),
        (
            _set("status", "conditions", 1, "lastTransitionTime", "9999-12-31T23:59:59Z"),
            lambda o: o.ready.since == YEAR_10000 - 1,
        ),
        (
            _set("status", "conditions", 1, "lastTransitionTime", "2027-01-15T09:00:00.5+01:00"),
            lambda o: o.ready.since == T0 + 0.5,
        ),
    ],
)
def test_what_is_tolerated(change: Any, check: Any) -> None:
    obs = parse(damaged(change))
    assert obs.malformed is None
    assert check(obs)


def test_huge_label_and_annotation_maps() -> None:
    raw = node_json("w1", ready="Unknown")
    raw["metadata"]["labels"].update({f"example.com/l{i}": "x" * 63 for i in range(20_000)})
    raw["metadata"]["labels"][CP] = ""
    raw["metadata"]["annotations"].update({f"example.com/a{i}": "y" * 500 for i in range(20_000)})
    raw["metadata"]["annotations"][ANN_PHASE] = "Suspect"
    obs = parse(orjson.loads(orjson.dumps(raw)))  # a ~14 MB object, as from the wire
    assert obs.malformed is None
    assert dict(obs.labels) == {CP: ""} and dict(obs.annotations) == {ANN_PHASE: "Suspect"}


# -------------------------------------------------------------------------------- properties
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["True", "False", "Unknown", "Ready", "", "2026-01-01T00:00:00Z"])
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)
NODE_KEYS = st.sampled_from(
    [
        "metadata",
        "spec",
        "status",
        "name",
        "uid",
        "resourceVersion",
        "labels",
        "annotations",
        "conditions",
        "type",
        "status",
        "lastTransitionTime",
        "taints",
        "unschedulable",
    ]
)
NODE_SHAPED = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NODE_KEYS, inner, max_size=5),
    max_leaves=40,
)


def check_parsed(obs: NodeObs) -> None:
    """What every result satisfies, malformed or not."""
    if obs.malformed is not None:
        assert obs.malformed in MALFORMED_REASONS
        assert (obs.conditions, dict(obs.labels), dict(obs.annotations), obs.taints) == (
            (),
            {},
            {},
            (),
        )
        return
    assert obs.name and obs.uid and obs.resource_version
    types = [c.type for c in obs.conditions]
    assert "Ready" in types and len(types) == len(set(types))
    for c in obs.conditions:
        assert c.status in {"True", "False", "Unknown"}
        assert c.since is not None and YEAR_1 <= c.since < YEAR_10000
    assert all(isinstance(v, str) for v in [*obs.labels.values(), *obs.annotations.values()])


@given(JSON | NODE_SHAPED)
def test_arbitrary_json_never_crashes_the_parser(raw: object) -> None:
    obs = parse(raw)
    check_parsed(obs)
    d = decide(Record(uid=obs.uid, phase=Phase.SUSPECT, unhealthy_since=0.0), obs, T0, CFG, Gates())
    assert obs.malformed is None or d.action is None


# Places in a real Node where damage matters (and a few where it does not).
PATHS = [
    (),
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "labels"),
    ("metadata", "labels", CP),
    ("metadata", "annotations"),
    ("metadata", "annotations", ANN_PHASE),
    ("metadata", "annotations", ANN_EXCLUDE),
    ("metadata", "deletionTimestamp"),
    ("spec",),
    ("spec", "unschedulable"),
    ("spec", "taints"),
    ("status",),
    ("status", "conditions"),
    ("status", "conditions", 0),
    ("status", "conditions", 1),
    ("status", "conditions", 1, "type"),
    ("status", "conditions", 1, "status"),
    ("status", "conditions", 1, "lastTransitionTime"),
    ("status", "conditions", 1, "reason"),
    ("status", "images"),
]
TIMES = (
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-23:59",
            "1970-01-01T00:00:00Z",
            "2027-01-15T08:00:00.123456789Z",
            "2027-01-15T08:00:00",
            "2027-13-45T99:99:99Z",
            "yesterday",
            "",
        ]
    )
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
)
VALUES = JSON | TIMES | st.sampled_from(["True", "False", "Unknown", "Maybe"])


ANNOTATION_CHOICES: list[dict[str, str | None]] = [
    {},
    {ANN_PHASE: "Removing"},
    {ANN_EXCLUDE: "true"},
]


def _has(parent: Any, key: str | int) -> bool:
    if isinstance(parent, dict):
        return key in parent
    return isinstance(parent, list) and isinstance(key, int) and key < len(parent)


@st.composite
def damaged_nodes(draw: st.DrawFn) -> Any:
    """A real Node (random health, labels, annotations) with 1-4 random injuries."""
    raw: Any = node_json(
        "w1",
        ready=draw(st.sampled_from(["True", "False", "Unknown"])),
        since=draw(st.floats(min_value=0, max_value=4e9)),
        labels=draw(st.sampled_from([{}, {CP: ""}])),
        annotations=draw(st.sampled_from(ANNOTATION_CHOICES)),
        unschedulable=draw(st.booleans()),
        taints=draw(st.sampled_from([None, [{"key": "k", "effect": "NoSchedule"}]])),
    )
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS))
        if not path:
            return draw(VALUES)  # not a Node at all
        parent = raw
        for p in path[:-1]:
            parent = parent[p] if _has(parent, p) else None
        last, how = path[-1], draw(st.sampled_from(["set", "drop", "duplicate"]))
        if how == "set" and (isinstance(parent, dict) or _has(parent, last)):
            parent[last] = draw(VALUES)
        elif how == "drop" and _has(parent, last):
            del parent[last]
        elif how == "duplicate" and isinstance(parent, list) and _has(parent, last):
            parent.append(copy.deepcopy(parent[int(last)]))
    return raw


@given(damaged_nodes())
def test_damaged_nodes_are_read_exactly_or_not_at_all(raw: Any) -> None:
    obs = parse(copy.deepcopy(raw))
    check_parsed(obs)
    if obs.malformed is not None:
        return
    # Whatever was accepted is what the object says (read independently of the parser).
    meta = raw["metadata"]
    assert (obs.name, obs.uid) == (meta["name"], meta["uid"])
    ready = [c for c in raw["status"]["conditions"] if c["type"] == "Ready"]
    assert len(ready) == 1 and obs.ready is not None
    assert obs.ready.status == ready[0]["status"]
    assert obs.ready.since == parse_time(ready[0]["lastTransitionTime"])
    assert (CP in obs.labels) == (CP in (meta.get("labels") or {}))
    assert obs.unschedulable is bool((raw.get("spec") or {}).get("unschedulable"))


@given(damaged_nodes(), st.sampled_from(list(Phase)), st.floats(0, 1e5), st.floats(0, 1e5))
def test_a_malformed_node_never_causes_an_action(
    raw: Any, phase: Phase, unhealthy_for: float, healthy_for: float
) -> None:
    obs = parse(raw)
    rec = Record(
        uid=obs.uid or "uid-w1",
        phase=phase,
        unhealthy_since=T0 - unhealthy_for,
        healthy_since=T0 - healthy_for if healthy_for > 5e4 else None,
        fenced=True,
    )
    d = decide(rec, obs, T0, CFG, Gates())
    if obs.malformed is not None:
        assert d.action is None
    elif d.action is not None and d.action.kind in FORWARD:
        # A forward step needs a readable, unhealthy, non-excluded node.
        assert obs.ready is not None and obs.ready.status in {"False", "Unknown"}
        assert CP not in obs.labels and obs.annotations.get(ANN_EXCLUDE) != "true"


@given(st.one_of(st.text(max_size=40), TIMES, JSON))
def test_parse_time_accepts_only_what_can_be_written_back(value: object) -> None:
    t = parse_time(value)
    if t is None:
        return
    assert isinstance(value, str)
    assert YEAR_1 <= t < YEAR_10000
    assert parse_time(format_time(t)) == math.floor(t)


def test_missing_uid_is_never_acted_on_even_when_dead() -> None:
    raw = node_json("w1", ready="Unknown", since=T0 - 3600)
    del raw["metadata"]["uid"]
    obs = parse(raw)
    rec = dataclasses.replace(
        Record(uid=""), phase=Phase.REMOVING, unhealthy_since=T0 - 3600, fenced=True
    )
    d = decide(rec, obs, T0, CFG, Gates())
    assert obs.malformed == "missing-uid" and d.action is None
    assert d.blocked == "malformed-object"
