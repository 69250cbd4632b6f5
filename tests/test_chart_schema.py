"""The chart's values.schema.json: made from noderecover's own flag table (one rule for what a
flag takes), and enforced by the pinned helm, so a misspelt key or a bad value fails at
`helm template`/`lint`/`install`, not as a CrashLoop on `unrecognized arguments`. The
`helm install` against the real API server is in tests/e2e/test_chart_dry_run.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from noderecover_testkit import chartschema

from noderecover.core.durations import PATTERN
from noderecover.entry.config import Kind, opts
from tests.charts import CHART, helm, render

pytestmark = pytest.mark.tools  # the pinned helm

SCHEMA = CHART / "values.schema.json"


def test_the_schema_file_is_made_from_the_flag_table() -> None:
    """Regenerate it with
    python -m noderecover_testkit.chartschema > charts/noderecover/values.schema.json"""
    assert SCHEMA.read_text() == chartschema.render()


def test_every_duration_flag_takes_the_one_grammar() -> None:
    flags = json.loads(SCHEMA.read_text())["properties"]["flags"]["properties"]
    durations = [o.flag.removeprefix("--") for o in opts() if o.kind is Kind.DURATION]
    assert len(durations) >= 10
    for name in durations:
        assert {"type": "string", "pattern": PATTERN} in flags[name]["anyOf"], name


def template(tmp_path: Path, values: dict[str, Any]) -> Any:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return helm("template", "nr", CHART, "--namespace", "noderecover", "--values", str(path))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"flags": {"grase": "1m"}}, "additional properties 'grase' not allowed"),
        ({"flagz": {}}, "additional properties 'flagz' not allowed"),
        ({"image": {"tg": "1"}}, "additional properties 'tg' not allowed"),
        ({"serviceAccount": {"craete": False}}, "additional properties 'craete' not allowed"),
        ({"flags": {"grace": "5x"}}, "/flags/grace"),
        ({"flags": {"grace": "-5s"}}, "/flags/grace"),
        ({"flags": {"drain-timeout": "1.5"}}, "/flags/drain-timeout"),
        ({"flags": {"removal": "explode"}}, "/flags/removal"),
        ({"flags": {"max-concurrent": 0}}, "/flags/max-concurrent"),
        ({"flags": {"max-unhealthy": "40 percent"}}, "/flags/max-unhealthy"),
        ({"flags": {"dry-run": "yes"}}, "/flags/dry-run"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"prometheusRule": {"runbookBaseURL": "docs/runbooks.md"}}, "/prometheusRule"),
        ({"fencing": {"config": {"agnet": "fence_ipmilan"}}}, "/fencing/config"),
        ({"fencing": {"config": {"provider": "ipmi"}}}, "/fencing/config/provider"),
        ({"fencing": {"config": {"aws": {"regoin": "x"}}}}, "/fencing/config/aws"),
    ],
)
def test_a_bad_value_fails_at_helm_template_and_lint(
    tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    proc = template(tmp_path, values)
    assert proc.returncode != 0, proc.stdout[:300]
    assert "don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert complaint in proc.stderr, proc.stderr
    lint = helm("lint", "--strict", CHART, "--values", str(tmp_path / "values.yaml"))
    assert lint.returncode != 0


@pytest.mark.parametrize(
    "flags",
    [
        {"grace": "90"},
        {"grace": 90},
        {"grace": "1m30s", "drain-timeout": "500ms", "healthy-delay": ".5s"},
        {"grace": None, "kubeconfig": None, "fence-command": ""},
        {"max-unhealthy": 3, "max-concurrent": "2", "removal": "both", "dry-run": True},
        {"max-unhealthy": "12.5%"},
    ],
)
def test_good_values_render(tmp_path: Path, flags: dict[str, Any]) -> None:
    proc = template(tmp_path, {"flags": flags})
    assert proc.returncode == 0, proc.stderr


def test_the_crd_is_kept_on_uninstall_and_the_chart_states_its_kubernetes_versions() -> None:
    crds = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert crds
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"].startswith(">=1.28")


def test_service_account_and_rbac_can_be_brought_by_the_user() -> None:
    docs = render(
        "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops-sa",
        "--set", "rbac.create=false",
    )  # fmt: skip
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role"}
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    proc = helm("template", "nr", CHART, "--set", "serviceAccount.create=false")
    assert proc.returncode != 0 and "serviceAccount.name" in proc.stderr


def test_a_named_service_account_is_the_one_bound() -> None:
    docs = render("--set", "serviceAccount.name=nr-sa")
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["name"] == "nr-sa"
    for d in docs:
        if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}:
            assert [s["name"] for s in d["subjects"]] == ["nr-sa"]


def test_name_override_names_every_object() -> None:
    docs = render("--set", "nameOverride=recover")
    names = {d["metadata"]["name"] for d in docs if d["kind"] != "CustomResourceDefinition"}
    assert names and all(n.startswith("recover") for n in names), names


def test_fence_tooling_can_be_mounted(tmp_path: Path) -> None:
    values = {
        "extraVolumes": [{"name": "fence", "secret": {"secretName": "bmc", "defaultMode": 320}}],
        "extraVolumeMounts": [{"name": "fence", "mountPath": "/opt/fence", "readOnly": True}],
        "initContainers": [{"name": "agent", "image": "busybox", "command": ["true"]}],
        "flags": {"fence-command": "/opt/fence/off.sh"},
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    (dep,) = [d for d in render("--values", str(path)) if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"] == values["extraVolumes"]
    assert pod["initContainers"] == values["initContainers"]
    (c,) = pod["containers"]
    assert c["volumeMounts"] == values["extraVolumeMounts"]
    assert "--fence-command=/opt/fence/off.sh" in c["args"]


def test_the_default_providers_settings_are_mounted_as_its_fence_config(tmp_path: Path) -> None:
    """fencing.config (spec.fence's shape, the CRD's schema) becomes a ConfigMap mounted
    read-only and given as --fence-config; noderecover parses what it holds; the Secrets of
    flags.fence-secret and config.secretName join the RBAC's; a change rolls the pods."""
    from noderecover.core.fencing import FenceSpec, Provider, parse_fence_spec

    config = {
        "agent": "fence_ipmilan",
        "secretName": "ipmi-creds",
        "sharedParameters": {"--lanplus": "", "--cipher": "3"},
    }
    flags: dict[str, str] = {"fence-provider": "fence-agent", "fence-secret": "bmc"}
    values = {"flags": flags, "fencing": {"config": config}}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render("--values", str(path))
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["name"] == "noderecover-fence-config"
    raw = json.loads(cm["data"]["fence.json"])
    spec = parse_fence_spec(raw, "fence config", FenceSpec(Provider.FENCE_AGENT))
    assert spec.agent == "fence_ipmilan" and spec.secret_name == "ipmi-creds"
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "--fence-config=/etc/noderecover/fence/fence.json" in c["args"]
    assert {"name": "fence-config", "mountPath": "/etc/noderecover/fence", "readOnly": True} in c[
        "volumeMounts"
    ]
    assert {"name": "fence-config", "configMap": {"name": cm["metadata"]["name"]}} in pod["volumes"]
    (role,) = [
        d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("election")
    ]
    (secrets,) = [r for r in role["rules"] if r["resources"] == ["secrets"]]
    assert secrets["resourceNames"] == ["noderecover-fence", "bmc", "ipmi-creds"]
    assert secrets["verbs"] == ["get"]
    checksum = dep["spec"]["template"]["metadata"]["annotations"]["checksum/fence-config"]
    config["agent"] = "fence_redfish"
    path.write_text(yaml.safe_dump(values))
    (dep2,) = [d for d in render("--values", str(path)) if d["kind"] == "Deployment"]
    assert dep2["spec"]["template"]["metadata"]["annotations"]["checksum/fence-config"] != checksum
    # The operator's own --fence-config wins: no second flag.
    flags["fence-config"] = "/opt/mine.json"
    path.write_text(yaml.safe_dump(values))
    (dep3,) = [d for d in render("--values", str(path)) if d["kind"] == "Deployment"]
    args = dep3["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--fence-config")] == ["--fence-config=/opt/mine.json"]
