"""What the command lines print: kubectl's jsonpath subset (core.jsonpath), ages and tables
(core.display), and that each has one implementation.

CASES were recorded from kubectl v1.34.4 (`kubectl label --local -f DATA a=b -o
jsonpath=TEMPLATE`, no cluster needed); tests/e2e/test_kubectl_plugin.py asks the pinned
kubectl again for each."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from noderecover.core import jsonpath
from noderecover.core.display import format_age, table

SRC = Path(__file__).resolve().parents[1] / "src" / "noderecover"

DATA: dict[str, Any] = {
    "circuitBreaker": {"open": False, "unhealthy": 1, "managed": 5, "maxUnhealthy": "40%"},
    "notes": ["policy spot: paused until 2027-01-15T08:10:00Z: <upgrade> & more"],
    "nodes": [
        {
            "node": "w1",
            "ready": "Unknown",
            "unhealthyForSeconds": 600.0,
            "nextInSeconds": 12.5,
            "blockedReason": None,
            "managed": True,
            "volumes": ["pv-a", "pv-b"],
            "tiny": 1.5e-05,
            "small": 0.00025,
            "huge": 1e21,
            "big": 1e20,
            "neg": -0.0,
            "uni": "ü\u2028x",
            "conditions": [{"type": "Ready", "status": "Unknown", "since": "2027-01-15T08:00:00Z"}],
        },
        {
            "node": "w2",
            "ready": "True",
            "unhealthyForSeconds": None,
            "managed": False,
            "volumes": [],
            "conditions": [],
        },
    ],
    "nums": {
        "a": 1000000.0,
        "b": 123456.7,
        "c": 1234567.5,
        "d": 10000000,
        "e": 100000.0,
        "f": 999999.0,
        "g": 0.0001,
        "h": 0.00001234,
        "i": 1e300,
        "k": 5e-324,
        "l": -2.5e-7,
        "m": 1.7976931348623157e308,
        "n": 3.0e-6,
    },
}

CASES = [
    ("{.nodes[*].node}", "w1 w2"),
    ('{range .nodes[*]}{.node}{"\\t"}{.ready}{"\\n"}{end}', "w1\tUnknown\nw2\tTrue\n"),
    (
        "{.nodes[0].unhealthyForSeconds} {.nodes[0].nextInSeconds} {.nodes[1].unhealthyForSeconds}",
        "600 12.5 null",
    ),
    (
        "{.nodes[0].tiny} {.nodes[0].small} {.nodes[0].huge} {.nodes[0].big} {.nodes[0].neg}",
        "1.5e-05 0.00025 1e+21 1e+20 -0",
    ),
    (
        "{.nodes[*].managed}|{.nodes[0].blockedReason}|{.nodes[0].missing}|{.nope.deeper}",
        "true false|null||",
    ),
    ("{.circuitBreaker}", '{"managed":5,"maxUnhealthy":"40%","open":false,"unhealthy":1}'),
    (
        "{.nodes[0]}",
        '{"big":100000000000000000000,"blockedReason":null,"conditions":[{"since":"2027-01-15T08:00:00Z","status":"Unknown","type":"Ready"}],"huge":1e+21,"managed":true,"neg":-0,"nextInSeconds":12.5,"node":"w1","ready":"Unknown","small":0.00025,"tiny":0.000015,"unhealthyForSeconds":600,"uni":"ü\\u2028x","volumes":["pv-a","pv-b"]}',
    ),
    ("{.nodes[1].volumes}{.nodes[0].volumes}", '[]["pv-a","pv-b"]'),
    ("{.notes[0]}", "policy spot: paused until 2027-01-15T08:10:00Z: <upgrade> & more"),
    (
        "{.notes}",
        '["policy spot: paused until 2027-01-15T08:10:00Z: \\u003cupgrade\\u003e \\u0026 more"]',
    ),
    ("{.nodes[-1].node}", "w2"),
    ("{range .nodes[*]}{range .volumes[*]}{@},{end};{end}", "pv-a,pv-b,;;"),
    ("{range .nodes[*]}{.conditions[*].type}{end}", "Ready"),
    ("{range .nodes}{.node}:{end}", ":"),
    ("{.nodes.node}", ""),
    ("{@.circuitBreaker.open} {$.circuitBreaker.unhealthy}", "false 1"),
    ("{range .nodes[*]}{$.circuitBreaker.managed}{end}", ""),
    ("text {.nodes[0].uni} } {'x'}{\"\\u00e9\\x41\"}", "text ü\u2028x } xéA"),
    ("{ .nodes[0].node }", "w1"),
    ("no actions", "no actions"),
    (
        "{.nums.a} {.nums.b} {.nums.c} {.nums.d} {.nums.e} {.nums.f} {.nums.g} "
        "{.nums.h} {.nums.i} {.nums.k} {.nums.l} {.nums.m} {.nums.n}",
        "1e+06 123456.7 1.2345675e+06 10000000 100000 999999 0.0001 "
        "1.234e-05 1e+300 5e-324 -2.5e-07 1.7976931348623157e+308 3e-06",
    ),
    (
        "{.nums}",
        '{"a":1000000,"b":123456.7,"c":1234567.5,"d":10000000,"e":100000,"f":999999,"g":0.0001,"h":0.00001234,"i":1e+300,"k":5e-324,"l":-2.5e-7,"m":1.7976931348623157e+308,"n":0.000003}',
    ),
]


@pytest.mark.parametrize(("template", "expected"), CASES)
def test_jsonpath_prints_what_kubectl_prints(template: str, expected: str) -> None:
    assert jsonpath.parse(template).render(DATA) == expected


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("", "no template given"),
        ("{.nodes", "unclosed action"),
        ("{.nodes[?(@.ready)]}", "not in the jsonpath subset"),
        ("{.nodes[0:1]}", "not in the jsonpath subset"),
        ("{..node}", "not in the jsonpath subset"),
        ("{.nodes['node']}", "not in the jsonpath subset"),
        ("{.}", "not in the jsonpath subset"),
        ("{range .nodes[*]}{.node}", "{range} without {end}"),
        ("{end}", "{end} without {range}"),
        ('{"\\q"}', "invalid syntax"),
        ('{"\\ud800"}', "invalid syntax"),
        ('{"a}', "unclosed action"),
        ('{"a"b"}', "unclosed action"),
        ('{"a" "b"}', "unescaped quote"),
    ],
)
def test_a_template_outside_the_subset_is_refused_in_one_line(template: str, error: str) -> None:
    with pytest.raises(jsonpath.BadTemplate, match=re.escape(error)) as exc:
        jsonpath.parse(template)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{.nodes[5]}", "array index out of bounds: index 5, length 2"),
        ("{.nodes[0].node[0]}", "string is not array or slice"),
        ("{.circuitBreaker[*]}", "map[string]interface {} is not array or slice"),
    ],
)
def test_a_template_that_does_not_apply_is_kubectls_error(template: str, error: str) -> None:
    with pytest.raises(jsonpath.JsonPathError, match=re.escape(error)):
        jsonpath.parse(template).render(DATA)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (float("nan"), "-"),
        (float("inf"), "-"),
        (-5.0, "0s"),  # a clock ahead of ours
        (0.9, "0s"),
        (119.9, "119s"),
        (120.0, "2m00s"),
        (7199.0, "119m59s"),
        (7200.0, "2h00m"),
        (90061.0, "25h01m"),
    ],
)
def test_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


def test_table_is_kubectls() -> None:
    assert table(["NODE", "PHASE", "WHY"], [["w1", "Suspect", ""], ["worker-10", "-", "x"]]) == (
        "NODE        PHASE     WHY\nw1          Suspect\nworker-10   -         x\n"
    )


def test_one_rfc3339_writer_one_age_one_table() -> None:
    """core.nodes writes every metav1.Time and MicroTime; core.display every age and table.
    (base.logs writes its own log timestamps, with milliseconds: base cannot import core.)"""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text()
        writer = rel in ("core/nodes.py", "base/logs.py")
        if not writer and re.search(r"%Y-%m-%d|\bisoformat\(|strftime\(", text):
            found.append(f"{rel}: formats a time")
        if rel != "core/display.py" and re.search(r"def _?\w*_?age\(seconds|\.ljust\(", text):
            found.append(f"{rel}: formats an age or a table")
    assert found == []


def test_a_string_enum_is_written_as_its_text() -> None:
    """Typed values (a removal mode) reach the data as enums: -o yaml writes their text, as
    -o json does (found: `plan -o yaml` crashed on RemovalMode.DELETE)."""
    import json

    import yaml

    from noderecover.core.settings import RemovalMode
    from noderecover.entry.output import to_yaml

    data = {"removal": RemovalMode.DELETE, "modes": [RemovalMode.BOTH]}
    assert yaml.safe_load(to_yaml(data)) == {"removal": "delete", "modes": ["both"]}
    assert json.loads(json.dumps(data)) == {"removal": "delete", "modes": ["both"]}
