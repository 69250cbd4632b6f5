"""The Helm chart (charts/noderecover) with the pinned helm: it lints, and its default rendering
is the kustomize install (manifests/) modulo Helm's labels: the same objects, RBAC rules equal,
the same Deployment (its args giving the same noderecover configuration); every flag of
`noderecover run` is a value with noderecover's default; non-default values reach the objects.
The server-side dry-run of the rendered objects is in tests/e2e/test_chart_dry_run.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from noderecover import __version__
from noderecover.entry.cli import parser
from noderecover.entry.config import Config, build_config
from tests.charts import (
    CHART,
    MANIFESTS,
    NAMESPACE,
    RULES,
    SERVICEMONITOR,
    by_key,
    helm,
    kustomize,
    render,
    render_text,
    run_flags,
    without_helm_labels,
)

pytestmark = pytest.mark.tools  # the pinned helm / promtool (see hack/test.sh)

#: Flags whose chart value is not noderecover's own default but what the kustomize Deployment
#: writes out (a pod's defaults): leader election (noderecover's default: on in a cluster)
#: and JSON logs.
DEPLOYMENT_OVERRIDES = {"leader-elect": True, "log-format": "json"}

RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(data, dict)
    return data


def kustomize_objects() -> dict[tuple[str, str, str], dict[str, Any]]:
    """manifests/ without the Namespace (Helm's: `helm install -n NS --create-namespace`)."""
    return by_key(d for d in kustomize(MANIFESTS) if d["kind"] != "Namespace")


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep


def container(dep: dict[str, Any]) -> dict[str, Any]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def config_of(args: list[str]) -> Config:
    """The configuration `noderecover run ARGS` starts with (no NODERECOVER_* variables)."""
    return build_config(parser().parse_args(["run", *args]), environ={})


# ----------------------------------------------------------------------------------- helm
def test_helm_is_the_pinned_version() -> None:
    from noderecover_testkit import versions

    proc = helm("version", "--short")
    assert proc.returncode == 0 and proc.stdout.startswith(versions.HELM_VERSION), proc


def test_helm_lint_strict_passes_with_default_and_other_values(tmp_path: Path) -> None:
    other = tmp_path / "values.yaml"
    other.write_text(yaml.safe_dump(NON_DEFAULT))
    for extra in ([], ["--values", str(other)]):
        proc = helm("lint", "--strict", CHART, *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


def test_helm_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The lint above can fail: a copy of the chart with a template error does not lint."""
    broken = tmp_path / "noderecover"
    import shutil

    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.nope.deeper }}\n")
    proc = helm("lint", "--strict", broken)
    assert proc.returncode != 0, proc.stdout


# --------------------------------------------------------------- defaults = kustomize install
def test_default_rendering_has_the_kustomize_objects() -> None:
    chart = by_key(render())
    assert sorted(chart) == sorted(kustomize_objects())


def test_every_object_carries_helm_labels_and_the_name_label() -> None:
    for d in render():
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "noderecover", d["metadata"]
        if d["kind"] == "CustomResourceDefinition":
            continue  # a byte copy of manifests/base/crd*.yaml (checked below): no Helm labels
        assert labels["app.kubernetes.io/managed-by"] == "Helm", d["metadata"]


def test_default_rbac_equals_the_kustomize_rbac() -> None:
    """Rules, bindings and subjects exactly (the kustomize RBAC is checked against the API
    calls noderecover makes by tests/test_rbac.py)."""
    chart = {k: without_helm_labels(v) for k, v in by_key(render()).items()}
    kust = kustomize_objects()
    rbac = [k for k, v in kust.items() if v["kind"] in RBAC_KINDS]
    assert len(rbac) == 9
    for k in rbac:
        assert chart[k] == kust[k], k


def test_pdb_and_service_equal_the_kustomize_ones() -> None:
    chart = {k: without_helm_labels(v) for k, v in by_key(render()).items()}
    kust = kustomize_objects()
    for k in [k for k in kust if k[0] in {"PodDisruptionBudget", "Service"}]:
        assert chart[k] == kust[k], k


def test_default_deployment_equals_the_kustomize_one() -> None:
    """All but labels and args equal; the args give the same configuration (order and
    spelling differ: the chart writes every flag)."""
    raw = deployment(render())
    assert raw["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == (
        "noderecover"
    )
    chart = without_helm_labels(raw)
    kust = deployment(list(kustomize_objects().values()))
    chart_args, kust_args = container(chart).pop("args"), container(kust).pop("args")
    assert chart == kust
    assert config_of(chart_args) == config_of(kust_args)


def test_the_deployment_check_sees_a_different_default() -> None:
    """The config comparison above can fail: a changed value gives another configuration."""
    chart_args = container(deployment(render("--set", "flags.grace=61s")))["args"]
    kust_args = container(deployment(list(kustomize_objects().values())))["args"]
    assert config_of(chart_args) != config_of(kust_args)


def test_image_tag_is_the_app_version_and_noderecover_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert container(deployment(render()))["image"].endswith(f":{__version__}")
    kust = container(deployment(list(kustomize_objects().values())))
    assert kust["image"] == container(deployment(render()))["image"]


# ------------------------------------------------------------------------ flags as values
def test_every_flag_of_run_is_a_chart_value() -> None:
    """Walks `noderecover run`'s parser: a new flag fails here until values.yaml has it."""
    flags = run_flags()
    assert {"grace", "dry-run", "http-bind"} <= set(flags)  # the walk finds the flags
    assert sorted(values()["flags"]) == sorted(flags)


def test_every_flag_value_defaults_to_noderecovers_default() -> None:
    """Each value alone, rendered as the chart renders it, gives noderecover's default (the
    documented Deployment overrides give what the kustomize Deployment writes)."""
    defaults = config_of([])
    rendered = {a.split("=")[0].removeprefix("--"): a for a in chart_default_args()}
    for name, value in values()["flags"].items():
        if value is None or value == "":
            assert not any(k in {name, f"no-{name}"} for k in rendered), name
            continue
        arg = rendered.get(name) or rendered[f"no-{name}"]
        got = config_of([arg])
        if name in DEPLOYMENT_OVERRIDES:
            assert value == DEPLOYMENT_OVERRIDES[name]
            continue
        assert got == defaults, f"{arg} is not noderecover's default"


def chart_default_args() -> list[str]:
    args = container(deployment(render()))["args"]
    assert isinstance(args, list)
    return args


def test_chart_defaults_are_noderecovers_defaults_but_the_deployment_overrides() -> None:
    leader = "--leader-elect" if DEPLOYMENT_OVERRIDES["leader-elect"] else "--no-leader-elect"
    expected = config_of([leader, f"--log-format={DEPLOYMENT_OVERRIDES['log-format']}"])
    assert config_of(chart_default_args()) == expected


#: Non-default values of every kind: durations, counts, a percent, booleans both ways,
#: null and empty values given, extra args, and the scheduling and image values.
NON_DEFAULT: dict[str, Any] = {
    "fullnameOverride": "nr",
    "image": {"repository": "registry.example/nr", "tag": "9.9.9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "replicaCount": 3,
    "flags": {
        "grace": "2m",
        "max-unhealthy": 3,
        "max-concurrent": 2,
        "dry-run": True,
        "exclude-control-plane": False,
        "node-selector": "role=db",
        "lease-namespace": "elsewhere",
        "http-bind": "0.0.0.0:9090",
        "log-format": "text",
        "unhealthy-conditions": "Ready=False,Ready=Unknown,NetworkUnavailable=True",
    },
    "extraArgs": ["--log-level=debug"],
    "extraEnv": [{"name": "NODERECOVER_REMOVAL", "value": "both"}],
    "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"memory": "400Mi"}},
    "nodeSelector": {"node-role.kubernetes.io/infra": ""},
    "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
    "priorityClassName": "infra-critical",
    "affinity": {},
    "topologySpreadConstraints": [],
    "podAnnotations": {"a": "b"},
    "podLabels": {"team": "sre"},
    "serviceAccount": {"annotations": {"iam": "role"}},
    "podDisruptionBudget": {"enabled": False},
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "prom"},
        "runbookBaseURL": "https://git.example/ops/runbooks/noderecover.md",
    },
}


@pytest.fixture(scope="module")
def non_default(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path = tmp_path_factory.mktemp("values") / "values.yaml"
    path.write_text(yaml.safe_dump(NON_DEFAULT))
    return render("--values", str(path))


def test_non_default_flags_reach_noderecover(non_default: list[dict[str, Any]]) -> None:
    c = container(deployment(non_default))
    cfg = config_of(c["args"])
    assert cfg.grace == 120 and cfg.max_concurrent == 2 and cfg.dry_run is True
    assert str(cfg.max_unhealthy) == "3" and cfg.exclude_control_plane is False
    assert cfg.lease_namespace == "elsewhere" and cfg.http_bind == "0.0.0.0:9090"
    assert ("NetworkUnavailable", "True") in cfg.unhealthy_conditions
    assert [r.key for r in cfg.node_selector.requirements] == ["role"]
    assert cfg.log_format == "text" and cfg.log_level == "debug"  # extraArgs come last
    assert c["args"][-1] == "--log-level=debug"
    assert {"name": "NODERECOVER_REMOVAL", "value": "both"} in c["env"]
    assert c["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]


def test_non_default_pod_values_reach_the_deployment(non_default: list[dict[str, Any]]) -> None:
    dep = deployment(non_default)
    pod = dep["spec"]["template"]
    c = container(dep)
    assert dep["metadata"]["name"] == "nr" and dep["spec"]["replicas"] == 3
    assert c["image"] == "registry.example/nr:9.9.9" and c["imagePullPolicy"] == "Always"
    assert c["resources"] == NON_DEFAULT["resources"]
    assert pod["spec"]["nodeSelector"] == NON_DEFAULT["nodeSelector"]
    assert pod["spec"]["tolerations"] == NON_DEFAULT["tolerations"]
    assert pod["spec"]["priorityClassName"] == "infra-critical"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["spec"]["serviceAccountName"] == "nr"
    assert "affinity" not in pod["spec"] and "topologySpreadConstraints" not in pod["spec"]
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["metadata"]["labels"]["team"] == "sre"


def test_non_default_objects(non_default: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in non_default}
    assert ("PodDisruptionBudget", "nr") not in kinds
    assert {("ServiceMonitor", "nr"), ("PrometheusRule", "nr"), ("Service", "nr-metrics")} <= kinds
    sa = next(d for d in non_default if d["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"iam": "role"}
    for d in non_default:
        if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}:
            assert d["subjects"] == [
                {"kind": "ServiceAccount", "name": "nr", "namespace": NAMESPACE}
            ]
    svc = next(d for d in non_default if d["kind"] == "Service")
    assert svc["spec"]["ports"][0]["port"] == 9090


def test_leader_election_and_lease_values_render_both_ways() -> None:
    args = container(deployment(render("--set", "flags.leader-elect=false")))["args"]
    assert "--no-leader-elect" in args and "--leader-elect" not in args
    assert config_of(args).leader_elect is False


# --------------------------------------------------------------- monitoring: one source each
def test_service_monitor_spec_equals_the_kustomize_component(
    non_default: list[dict[str, Any]],
) -> None:
    component = yaml.safe_load(SERVICEMONITOR.read_text())
    chart = next(d for d in non_default if d["kind"] == "ServiceMonitor")
    component["spec"]["endpoints"][0]["interval"] = NON_DEFAULT["serviceMonitor"]["interval"]
    assert chart["spec"] == component["spec"]
    assert chart["metadata"]["labels"]["release"] == "prom"
    default = render("--set", "serviceMonitor.enabled=true")
    sm = next(d for d in default if d["kind"] == "ServiceMonitor")
    assert sm["spec"] == yaml.safe_load(SERVICEMONITOR.read_text())["spec"]


def test_the_chart_rules_file_is_the_component_file() -> None:
    assert (CHART / "files" / "prometheusrule.yaml").read_bytes() == RULES.read_bytes()


def test_prometheus_rule_spec_equals_the_component(non_default: list[dict[str, Any]]) -> None:
    component = yaml.safe_load(RULES.read_text())
    default = render("--set", "prometheusRule.enabled=true")
    rule = next(d for d in default if d["kind"] == "PrometheusRule")
    assert rule["spec"] == component["spec"]
    # with a runbook base URL, only the runbook_url annotations change
    based = next(d for d in non_default if d["kind"] == "PrometheusRule")
    expected = copy.deepcopy(component["spec"])
    for group in expected["groups"]:
        for r in group["rules"]:
            _, _, anchor = r["annotations"]["runbook_url"].partition("#")
            base = NON_DEFAULT["prometheusRule"]["runbookBaseURL"]
            r["annotations"]["runbook_url"] = f"{base}#{anchor}"
    assert based["spec"] == expected


def test_monitoring_objects_are_off_by_default() -> None:
    docs = render()
    assert not {d["kind"] for d in docs} & {"ServiceMonitor", "PrometheusRule"}
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert all(d["spec"]["group"] == "noderecover.io" for d in crds)  # only our own
    assert "monitoring.coreos.com" not in render_text()


# ---------------------------------------------------------------------------------- CRDs
def test_the_chart_carries_every_crd_of_the_manifests() -> None:
    """manifests/base/crd*.yaml (noderecover's own CRDs, when it has some) have byte-equal
    copies in charts/noderecover/files/crds/, which the chart renders unless crds.install is
    false."""
    kust = {p.name: p.read_bytes() for p in (MANIFESTS / "base").glob("crd*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert chart == kust
    rendered = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert len(rendered) == len(kust)
    off = render("--set", "crds.install=false")
    assert not [d for d in off if d["kind"] == "CustomResourceDefinition"]


def test_the_crd_template_renders_a_crd_file(tmp_path: Path) -> None:
    """The CRD template works before the first CRD exists: a copy of the chart with one."""
    import shutil

    chart = tmp_path / "noderecover"
    shutil.copytree(CHART, chart)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "examples.noderecover.io"},
        "spec": {
            "group": "noderecover.io",
            "names": {"kind": "Example", "plural": "examples"},
            "scope": "Cluster",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    (chart / "files" / "crds" / "crd-example.yaml").write_text(yaml.safe_dump(crd))
    docs = render(chart=chart)
    assert [d for d in docs if d["metadata"]["name"] == "examples.noderecover.io"] == [crd]
    assert not [
        d
        for d in render("--set", "crds.install=false", chart=chart)
        if d["kind"] == "CustomResourceDefinition"
    ]


def test_the_kubectl_plugin_reads_the_charts_deployment(non_default: list[dict[str, Any]]) -> None:
    """`kubectl noderecover` takes the controller's settings from its Deployment: the chart's
    (named as the plugin's default with default values) gives it the chart's flags and env."""
    from noderecover.entry.kubectl import deployment_settings

    dep = deployment(render())
    assert dep["metadata"]["name"] == "noderecover"
    args, env = deployment_settings(dep)
    assert args == chart_default_args() and env == {}
    args, env = deployment_settings(deployment(non_default))
    assert args == container(deployment(non_default))["args"]
    assert env == {"NODERECOVER_REMOVAL": "both"}


# -------------------------------------------------------------------------------- the agent
AGENT_COMPONENT = MANIFESTS / "components" / "agent"


def agent_config_of(args: list[str]) -> Any:
    from noderecover.entry.agentconfig import build_agent_config

    return build_agent_config(
        parser().parse_args(["agent", *args]), environ={"NODERECOVER_NODE_NAME": "n1"}
    )


def test_the_agent_is_off_by_default() -> None:
    assert not [d for d in render() if "agent" in d["metadata"]["name"]]


def test_agent_enabled_renders_the_kustomize_component() -> None:
    """Same objects, RBAC exactly equal, the DaemonSet equal but for the args' order and
    spelling (the same agent configuration)."""
    chart = {
        k: without_helm_labels(v)
        for k, v in by_key(render("--set", "agent.enabled=true")).items()
        if "agent" in k[2]
    }
    kust = by_key(kustomize(AGENT_COMPONENT))
    assert sorted(chart) == sorted(kust)
    for k in kust:
        if k[0] != "DaemonSet":
            assert chart[k] == kust[k], k
    (ds_key,) = [k for k in kust if k[0] == "DaemonSet"]
    chart_c = chart[ds_key]["spec"]["template"]["spec"]["containers"][0]
    kust_c = kust[ds_key]["spec"]["template"]["spec"]["containers"][0]
    chart_args, kust_args = chart_c.pop("args"), kust_c.pop("args")
    assert chart[ds_key] == kust[ds_key]
    assert agent_config_of(chart_args) == agent_config_of(kust_args)
    other = render("--set", "agent.enabled=true", "--set", "agent.flags.agent-isolation-timeout=1m")
    (ds,) = [d for d in other if d["kind"] == "DaemonSet"]
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert agent_config_of(args).isolation_timeout == 60.0


def test_every_agent_flag_is_a_chart_value() -> None:
    from noderecover.entry.agentconfig import agent_opts

    flags = {o.flag.removeprefix("--") for o in agent_opts()} - {"node-name"}
    assert sorted(values()["agent"]["flags"]) == sorted(flags)


def test_agent_values_are_checked_at_install() -> None:
    for bad in ("agent.flags.agent-isolation-timeout=soon", "agent.flags.agent-reboot=kexec"):
        proc = helm("template", "noderecover", CHART, "--set", "agent.enabled=true", "--set", bad)
        assert proc.returncode != 0 and "agent" in proc.stderr, (bad, proc.stderr)
