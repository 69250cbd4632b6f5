"""Helpers of the chart, alert and dashboard tests: the pinned helm and promtool (built by the
testkit into their cache folder when missing; a test fails, never skips, when they cannot be
built), the kustomize manifests read as objects, and the PromQL names check."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from noderecover_testkit import build

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "noderecover"
MANIFESTS = ROOT / "manifests"
RULES = MANIFESTS / "components" / "prometheusrule" / "prometheusrule.yaml"
SERVICEMONITOR = MANIFESTS / "components" / "servicemonitor" / "servicemonitor.yaml"
DASHBOARD = ROOT / "docs" / "dashboard.json"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
NAMESPACE = "noderecover"

#: Labels that Helm adds to every object; the kustomize objects have only the name label.
HELM_LABELS = frozenset(
    {
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    }
)


def tool(name: str) -> Path:
    """The pinned helm or promtool; fails the test (with the build's message) if it cannot be
    built."""
    try:
        return build.tool(name)
    except build.BuildError as exc:
        pytest.fail(f"{name} is not built and could not be built: {exc}")


def run(
    args: Sequence[str | Path], *, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool with its output captured; helm keeps no state outside a throwaway HOME."""
    home = Path(tempfile.gettempdir()) / f"noderecover-helm-home-{os.getuid()}"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(a) for a in args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run([tool("helm"), *args])


def render(*extra: str | Path, chart: Path = CHART) -> list[dict[str, Any]]:
    """``helm template`` of the chart (release ``noderecover`` in its namespace) as objects."""
    proc = helm("template", "noderecover", chart, "--namespace", NAMESPACE, *extra)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def render_text(*extra: str | Path) -> str:
    proc = helm("template", "noderecover", CHART, "--namespace", NAMESPACE, *extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def kustomize(path: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization (or component) that only lists ``resources`` (no
    patches, no generators: checked), read without kustomize."""
    kfile = path / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - {"apiVersion", "kind", "resources"}
    assert not unknown, f"{kfile}: this reader knows only resources, not {sorted(unknown)}"
    out: list[dict[str, Any]] = []
    for entry in spec["resources"]:
        p = path / entry
        if p.is_dir():
            out += kustomize(p)
        else:
            out += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return out


def key(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def by_key(docs: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in docs:
        assert key(d) not in out, f"twice: {key(d)}"
        out[key(d)] = d
    return out


def without_helm_labels(obj: Any) -> Any:
    """A copy of ``obj`` with Helm's labels removed from every ``labels`` map in it."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "labels" and isinstance(v, dict):
                out[k] = {lk: lv for lk, lv in v.items() if lk not in HELM_LABELS}
            else:
                out[k] = without_helm_labels(v)
        return out
    if isinstance(obj, list):
        return [without_helm_labels(v) for v in obj]
    return obj


def run_subparser() -> argparse.ArgumentParser:
    """The parser of ``noderecover run`` (found by walking the command line parser)."""
    from noderecover.entry.cli import parser

    for action in parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get("run")
            if isinstance(sub, argparse.ArgumentParser):
                return sub
    raise AssertionError("noderecover has no `run` subcommand")


def run_flags() -> dict[str, argparse.Action]:
    """Every flag of ``noderecover run`` by name without ``--`` (``--no-x`` is ``x``'s)."""
    out: dict[str, argparse.Action] = {}
    for action in run_subparser()._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or longs[0] == "--help":
            continue
        out[longs[0].removeprefix("--")] = action
    return out


# ----------------------------------------------------------------------------------- PromQL
#: Functions, aggregations and keywords of PromQL: identifiers that are not metric names.
PROMQL_WORDS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "info",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "pi",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
        "double_exponential_smoothing",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    ]
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER_UNIT = re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y)\b")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label
    matchers, ranges and grouping clauses that are not PromQL's own words. (Syntax is
    promtool's job: this runs on expressions promtool parsed.)"""
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER_UNIT.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in PROMQL_WORDS}


def exported_names() -> set[str]:
    """Every series name noderecover's /metrics can show, from the prometheus_client registry
    after importing noderecover's metric definitions."""
    from prometheus_client import REGISTRY

    import noderecover.base.metrics  # noqa: F401  (registers the metrics)

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    out: set[str] = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("noderecover_"):
            continue
        out |= {family.name + s for s in suffixes[family.type]}
    return out


def rule_exprs(spec: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(alert name, expression) of every rule of a PrometheusRule spec."""
    for group in spec["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]
