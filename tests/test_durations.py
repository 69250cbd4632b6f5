"""One duration grammar (core/durations.py) for the flags, the CRD, the plugin and the chart:
the same text means the same thing, or is refused, everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from noderecover.core import durations
from noderecover.core.durations import MAX_SECONDS, PATTERN, format_duration, parse_duration
from noderecover.core.policies import parse_duration as policy_duration
from noderecover.entry import kubectl
from noderecover.entry.cli import main as cli_main
from noderecover.entry.config import parse_duration as flag_duration

ROOT = Path(__file__).resolve().parents[1]
CRDS = [
    ROOT / "manifests/base/crd-noderecoverypolicy.yaml",
    ROOT / "charts/noderecover/files/crds/crd-noderecoverypolicy.yaml",
]


def policy(text: str) -> float:
    return policy_duration(text, "spec.grace")


GOOD = [
    ("0", 0.0),
    ("90", 90.0),
    ("90s", 90.0),
    ("1m30s", 90.0),
    ("1.5m", 90.0),
    ("500ms", 0.5),
    (".5s", 0.5),
    ("2h", 7200.0),
    ("1h1h", 7200.0),
    ("8760h", MAX_SECONDS),
]
BAD = ["", " 5s", "5s ", "-5s", "+5s", "5x", "5S", "1e3s", "nan", "inf", "s", "m5", "5.", "1.5"]


@pytest.mark.parametrize(("text", "seconds"), GOOD)
def test_every_reader_takes_the_same_text(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert flag_duration(text) == seconds
    assert policy_duration(text, "spec.grace") == seconds
    assert re.fullmatch(PATTERN.strip("^$"), text)


@pytest.mark.parametrize("text", BAD)
def test_every_reader_refuses_the_same_text(text: str) -> None:
    # A flag's value is trimmed first (a YAML block ends with a newline): " 5s" is 5s there.
    readers: list[Callable[[str], float]] = [parse_duration, policy]
    if text.strip() == text:
        readers.append(flag_duration)
    for parse in readers:
        with pytest.raises(ValueError):
            parse(text)


def test_one_bound_for_all() -> None:
    too_long = f"{durations.MAX_DAYS * 24 + 1}h"
    for parse in (parse_duration, flag_duration, policy):
        with pytest.raises(ValueError, match="longer than 365 days"):
            parse(too_long)


def _patterns(node: object) -> list[str]:
    """Every `pattern` of a duration-like string field in an OpenAPI schema."""
    found: list[str] = []
    if isinstance(node, dict):
        if "pattern" in node and "ms|h|m|s" in str(node["pattern"]):
            found.append(node["pattern"])
        for v in node.values():
            found += _patterns(v)
    elif isinstance(node, list):
        for v in node:
            found += _patterns(v)
    return found


@pytest.mark.parametrize("path", CRDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_crds_duration_fields_use_the_grammar(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    durations_in_crd = _patterns(spec)
    assert durations_in_crd and set(durations_in_crd) == {PATTERN}
    # No duration field with another pattern (the old one had no "ms").
    text = path.read_text()
    assert "(h|m|s)" not in text


@given(st.text(alphabet="0123456789.hms -+", max_size=12))
def test_the_pattern_and_the_parser_agree(text: str) -> None:
    """The CRD's and chart's pattern accepts exactly what the parser reads (below the bound)."""
    matched = re.fullmatch(PATTERN.strip("^$"), text) is not None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert not matched or "longer than" in str(exc), text
    else:
        assert matched and seconds <= MAX_SECONDS


@given(st.integers(min_value=0, max_value=int(MAX_SECONDS * 1000)))
def test_format_reads_back(ms: int) -> None:
    seconds = ms / 1000
    text = format_duration(seconds)
    assert abs(parse_duration(text) - seconds) < 1e-6, text


def test_format_is_short() -> None:
    cases = {0: "0s", 30: "30s", 90: "1m30s", 600: "10m", 3600: "1h", 0.5: "500ms", 1.5: "1.5s"}
    assert {s: format_duration(s) for s in cases} == cases


def test_a_negative_flag_value_is_named_not_taken_for_an_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--grace -5s`: one line about the value, not argparse's "expected one argument"."""
    assert cli_main(["run", "--grace", "-5s"]) == 2
    err = capsys.readouterr().err
    assert err == "noderecover: error: --grace: negative duration '-5s'\n"
    with pytest.raises(SystemExit) as exit_:
        kubectl.main(["--request-timeout", "-5s", "status"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: argument --request-timeout: negative duration '-5s'\n"
