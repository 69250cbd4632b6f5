"""Label selectors and Node parsing."""

from __future__ import annotations

import pytest

from noderecover.core.nodes import format_micro_time, format_time, parse_node, parse_time
from noderecover.core.selectors import parse_selector
from noderecover.entry.config import Config
from tests.builders import T0, node_json


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("", {}, True),
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a!=b", {"a": "b"}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("a in (x, y)", {"a": "y"}, True),
        ("a notin (x,y)", {"a": "z"}, True),
        ("a notin (x,y)", {}, True),
        ("a=b,c in (d)", {"a": "b", "c": "e"}, False),
        ("node-role.kubernetes.io/worker", {"node-role.kubernetes.io/worker": ""}, True),
    ],
)
def test_selector_matching(selector: str, labels: dict[str, str], match: bool) -> None:
    assert parse_selector(selector).matches(labels) is match


@pytest.mark.parametrize("bad", ["a in (b", "=b", "a=b=c", "a in ()", ",", "a b"])
def test_bad_selectors(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(bad)


def test_selector_round_trips_to_string() -> None:
    text = "a=b,c!=d,e,!f,g in (h,i)"
    assert str(parse_selector(text)) == text


def test_parse_node_keeps_only_what_decisions_need() -> None:
    cfg = Config(node_selector=parse_selector("pool=db"))
    raw = node_json(
        "w7",
        ready="Unknown",
        reason="NodeStatusUnknown",
        since=T0,
        unschedulable=True,
        labels={"pool": "db", "irrelevant": "x"},
        annotations={"noderecover.io/phase": "Suspect", "other.io/x": "y"},
        taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}],
    )
    o = parse_node(raw, cfg.relevant_labels)
    assert o.name == "w7" and o.uid == "uid-w7" and o.resource_version == "1"
    assert o.silent and o.ready is not None and o.ready.reason == "NodeStatusUnknown"
    assert o.ready.since == T0 and o.unschedulable
    assert dict(o.labels) == {"pool": "db"}
    assert dict(o.annotations) == {"noderecover.io/phase": "Suspect"}
    assert o.has_taint("node.kubernetes.io/unreachable")
    assert [c.type for c in o.conditions] == ["Ready"]


def test_parse_node_tolerates_a_bare_object() -> None:
    o = parse_node({"metadata": {"name": "x"}}, frozenset())
    assert o.name == "x" and o.ready is None and not o.silent and not o.unschedulable


def test_time_formats() -> None:
    assert format_time(T0) == "2027-01-15T08:00:00Z"
    assert parse_time(format_time(T0)) == T0
    assert format_micro_time(T0) == "2027-01-15T08:00:00.000000Z"
    assert parse_time("2027-01-15T08:00:00.250000Z") == T0 + 0.25
    assert parse_time("garbage") is None and parse_time(None) is None
