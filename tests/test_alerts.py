"""The alert rules (manifests/components/prometheusrule, also in the chart) and the Grafana
dashboard (docs/dashboard.json) with the pinned promtool: the rules pass `promtool check
rules` and `promtool test rules` (tests/alerts/rules_test.yaml: for every alert, series that
fire it and series that do not); every alert has a runbook section in docs/runbooks.md; every
PromQL expression of the rules and of the dashboard parses and names only metrics noderecover
exports (the rules may also read `up`, Prometheus' own series of the scrape target)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts import (
    DASHBOARD,
    RULES,
    RUNBOOKS,
    exported_names,
    metric_names,
    rule_exprs,
    run,
    tool,
)

pytestmark = pytest.mark.tools  # the pinned helm / promtool (see hack/test.sh)

TESTS_FILE = Path(__file__).resolve().parent / "alerts" / "rules_test.yaml"

#: What the rules read besides noderecover's metrics: `up` of its scrape targets.
RULES_MAY_READ = frozenset({"up"})

#: The alerts issue 16 asks for (by what they catch), so none is dropped unnoticed.
REQUIRED_ALERTS = {
    "NodeRecoverNoLeader",  # no leader for a while
    "NodeRecoverNoReadyReplica",  # both replicas unready
    "NodeRecoverCircuitBreakerOpen",  # breaker open longer than a storm cooldown
    "NodeRecoverRemediationStuck",  # a remediation stuck in one phase
    "NodeRecoverNodeBlocked",  # a node unhealthy and blocked for long
    "NodeRecoverOutOfServiceTaintLeft",  # an out-of-service taint left on a node
    "NodeRecoverNodeWatchStale",  # a stale node watch
    "NodeRecoverApiErrors",  # API errors climbing
    "NodeRecoverPolicyInvalid",  # a policy that cannot be applied (its nodes held)
    "NodeRecoverPolicyConflict",  # nodes selected by two policies (held)
}


def spec() -> dict[str, Any]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule"
    assert isinstance(doc["spec"], dict)
    return doc["spec"]


def alerts() -> list[dict[str, Any]]:
    return [r for g in spec()["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str | Path) -> tuple[int, str]:
    proc = run([tool("promtool"), *args])
    return proc.returncode, proc.stdout + proc.stderr


def write_rules(path: Path, rules_spec: dict[str, Any], *, annotations: bool = True) -> Path:
    """A Prometheus rule file from a PrometheusRule spec (optionally without annotations)."""
    data = copy.deepcopy(rules_spec)
    if not annotations:
        for group in data["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_promtool_is_the_pinned_version() -> None:
    from noderecover_testkit import versions

    code, out = promtool("--version")
    assert code == 0 and f"version {versions.prometheus_release()}" in out, out


def test_the_required_alerts_exist() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), names
    assert set(names) >= REQUIRED_ALERTS


def test_promtool_check_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules.yaml", spec())
    code, out = promtool("check", "rules", rules)
    assert code == 0, out
    assert f"SUCCESS: {sum(len(g['rules']) for g in spec()['groups'])} rules found" in out


def test_promtool_check_rules_catches_a_bad_expression_and_template(tmp_path: Path) -> None:
    for field, bad in (("expr", "max(noderecover_leader"), ("description", "{{ $value | nope }}")):
        broken = copy.deepcopy(spec())
        rule = broken["groups"][0]["rules"][0]
        if field == "expr":
            rule["expr"] = bad
        else:
            rule["annotations"]["description"] = bad
        code, out = promtool("check", "rules", write_rules(tmp_path / "bad.yaml", broken))
        assert code != 0, (field, out)


def run_rule_tests(tmp_path: Path, rules_spec: dict[str, Any]) -> tuple[int, str]:
    """`promtool test rules` of tests/alerts/rules_test.yaml on ``rules_spec``. Annotations are
    dropped (promtool compares them verbatim; their templates are `check rules`' job)."""
    write_rules(tmp_path / "rules.yaml", rules_spec, annotations=False)
    shutil.copy(TESTS_FILE, tmp_path / TESTS_FILE.name)
    return promtool("test", "rules", tmp_path / TESTS_FILE.name)


def test_promtool_test_rules(tmp_path: Path) -> None:
    code, out = run_rule_tests(tmp_path, spec())
    assert code == 0, out
    assert "SUCCESS" in out


def cases() -> Iterator[tuple[str, bool]]:
    """(alert name, fires?) of every case of the promtool test file."""
    for test in yaml.safe_load(TESTS_FILE.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            yield case["alertname"], bool(case["exp_alerts"])


def test_every_alert_has_cases_that_fire_and_that_do_not() -> None:
    seen = set(cases())
    for alert in alerts():
        name = alert["alert"]
        assert (name, True) in seen, f"{name}: no case where it fires"
        assert (name, False) in seen, f"{name}: no case where it does not fire"
    assert {name for name, _ in seen} <= {a["alert"] for a in alerts()}


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_the_rule_tests_catch_an_alert_that_never_fires(tmp_path: Path, name: str) -> None:
    """The promtool tests can fail: each alert, replaced by one that never fires, fails them."""
    broken = copy.deepcopy(spec())
    for group in broken["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = "vector(1) > 2"
    code, out = run_rule_tests(tmp_path, broken)
    assert code != 0 and name in out, out


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_the_rule_tests_catch_an_alert_that_always_fires(tmp_path: Path, name: str) -> None:
    broken = copy.deepcopy(spec())
    for group in broken["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = "vector(1)"
                rule["for"] = "0s"
    code, out = run_rule_tests(tmp_path, broken)
    assert code != 0 and name in out, out


def test_rules_name_only_noderecover_metrics() -> None:
    exported = exported_names()
    for name, expr in rule_exprs(spec()):
        unknown = metric_names(expr) - exported - RULES_MAY_READ
        assert not unknown, f"{name} reads {sorted(unknown)}, which noderecover does not export"


# ------------------------------------------------------------------------------- runbooks
def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the markdown headings (lower case, spaces to '-', punctuation out)."""
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


RUNBOOK_URL = "https://github.com/noderecover/noderecover/blob/main/docs/runbooks.md"


def test_every_alert_has_a_runbook_section() -> None:
    text = RUNBOOKS.read_text()
    have = anchors(text)
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        # Absolute (an alert is read in Alertmanager, Slack, a pager: no repository around),
        # pointing at this repository's docs/runbooks.md; the chart's runbookBaseURL moves it.
        assert path == RUNBOOK_URL, url
        assert anchor == alert["alert"].lower() and anchor in have, url
        for field in ("summary", "description"):
            assert alert["annotations"][field], (alert["alert"], field)
        assert alert["labels"]["severity"] in {"critical", "warning"}


# ------------------------------------------------------------------------------ dashboard
def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of docs/dashboard.json (rows' panels included)."""
    board = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for target in p.get("targets", []):
                out.append((p.get("title", "?"), target["expr"]))
            walk(p.get("panels", []))

    walk(board["panels"])
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            out.append((f"${var['name']}", query["query"] if isinstance(query, dict) else query))
    return out


def test_dashboard_has_the_panels_issue_16_asks_for() -> None:
    text = json.dumps([e for _, e in dashboard_exprs()])
    for metric in (
        "noderecover_leader",
        "noderecover_nodes",
        "noderecover_circuit_breaker_open",
        "noderecover_actions_total",
        "noderecover_blocked_total",
        "noderecover_recovery_duration_seconds_bucket",
        "noderecover_watch_events_total",
        "noderecover_watch_restarts_total",
        "noderecover_api_errors_total",
    ):
        assert metric in text, metric
    assert "histogram_quantile" in text


def dashboard_rules(exprs: list[tuple[str, str]]) -> dict[str, Any]:
    """The expressions as recording rules: `promtool check rules` parses each one."""
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    return {"groups": [{"name": "dashboard", "rules": rules}]}


def test_every_dashboard_expr_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    code, out = promtool("check", "rules", write_rules(tmp_path / "d.yaml", dashboard_rules(exprs)))
    assert code == 0, out
    assert f"SUCCESS: {len(exprs)} rules found" in out


def test_the_parse_check_catches_a_bad_dashboard_expr(tmp_path: Path) -> None:
    exprs = [*dashboard_exprs(), ("broken", "sum by (phase (noderecover_nodes)")]
    code, out = promtool("check", "rules", write_rules(tmp_path / "d.yaml", dashboard_rules(exprs)))
    assert code != 0, out


def test_dashboard_names_only_noderecover_metrics() -> None:
    exported = exported_names()
    used: set[str] = set()
    for title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{title}: {expr} selects no metric"
        assert not names - exported, f"{title}: {sorted(names - exported)} not exported"
        used |= names
    assert len(used) >= 10


def test_the_names_check_sees_foreign_and_misspelt_metrics() -> None:
    exported = exported_names()
    assert {"noderecover_leader", "noderecover_actions_total", "noderecover_build_info"} <= exported
    assert "noderecover_recovery_duration_seconds_bucket" in exported
    expr = (
        'sum by (node) (rate(kube_node_info{job="x"}[5m])) '
        "and on (instance) noderecover_leaders == 1 or vector(0) unless up offset 5m"
    )
    assert metric_names(expr) == {"kube_node_info", "noderecover_leaders", "up"}
    assert metric_names('histogram_quantile(0.9, sum by (le) (rate(a_bucket{l="b"}[1h])))') == {
        "a_bucket"
    }
