"""The Helm chart's rendered objects, with default and non-default values, accepted by the real
API server (server-side apply, dry run): schemas, defaults and admission of kube-apiserver
1.34, not only `helm lint`. The ServiceMonitor and PrometheusRule are checked against the
Prometheus Operator's CRDs generated from its pinned API types (testkit build)."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from noderecover_testkit import build
from noderecover_testkit.cluster import TestCluster

from tests.charts import MANIFESTS, NAMESPACE, render
from tests.test_chart import NON_DEFAULT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def monitoring_crds(cluster: TestCluster) -> list[str]:
    """The ServiceMonitor and PrometheusRule CRDs, installed for real (dry-run of a custom
    object needs its CRD), and the noderecover namespace."""
    try:
        path = build.monitoring_crds()
    except build.BuildError as exc:
        pytest.fail(f"the Prometheus Operator CRDs could not be generated: {exc}")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    names = sorted(d["metadata"]["name"] for d in docs)
    assert names == [
        "prometheusrules.monitoring.coreos.com",
        "servicemonitors.monitoring.coreos.com",
    ]
    proc = cluster.kubectl("apply", "--server-side", "-f", str(path), check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr

    def established(name: str) -> bool:
        proc = cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}", "--timeout=5s", check=False
        )
        return proc.returncode == 0

    for name in names:
        cluster.wait_for(partial(established, name), 60, f"CRD {name} established")
    cluster.apply(yaml.safe_load((MANIFESTS / "base" / "namespace.yaml").read_text()))
    return names


def dry_run(cluster: TestCluster, docs: list[dict[str, Any]]) -> str:
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=helm-chart-test",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def applied(out: str) -> set[tuple[str, str]]:
    """(lower-case kind, name) of each object `kubectl apply` reported."""
    got = set()
    for line in out.splitlines():
        ref = line.split()[0]
        kind, _, name = ref.partition("/")
        got.add((kind.split(".")[0], name))
    return got


def test_default_chart_applies_server_side(
    cluster: TestCluster, monitoring_crds: list[str]
) -> None:
    docs = render()
    out = dry_run(cluster, docs)
    assert "(server dry run)" in out
    assert applied(out) == {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}


def test_non_default_chart_with_monitoring_applies_server_side(
    cluster: TestCluster, monitoring_crds: list[str], tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(NON_DEFAULT))
    docs = render("--values", str(values))
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    out = dry_run(cluster, docs)
    assert applied(out) == {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}


def test_chart_with_the_node_agent_applies_server_side(
    cluster: TestCluster, monitoring_crds: list[str]
) -> None:
    """agent.enabled: the DaemonSet (hostPath devices) and its RBAC are accepted. The test
    control plane runs kube-apiserver without --allow-privileged (kubeadm turns it on), so it
    refuses exactly the privileged flag the agent needs for the host's watchdog: checked, then
    the rest validated without it. Only the agent's objects: the rest of the chart has its own
    tests above."""
    docs = [
        d
        for d in render("--set", "agent.enabled=true")
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "noderecover-agent"
    ]
    assert len(docs) == 6
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    proc = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-",
        input=yaml.safe_dump(ds), check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        assert "securityContext.privileged: Forbidden: disallowed by cluster policy" in (
            proc.stderr
        ), proc.stderr
        del ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"]
    out = dry_run(cluster, docs)
    assert applied(out) == {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}


def test_the_dry_run_refuses_a_broken_object(
    cluster: TestCluster, monitoring_crds: list[str]
) -> None:
    """The server checks what it is given: a PrometheusRule whose rule has a wrong type and a
    Deployment with an unknown field are refused."""
    docs = render("--set", "prometheusRule.enabled=true")
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = ["not", "a", "duration"]
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(rule),
        check=False,
    )
    assert proc.returncode != 0, proc.stdout
    dep = next(d for d in docs if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["bogusField"] = 1
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump(dep),
        check=False,
    )
    assert proc.returncode != 0, proc.stdout
    assert NAMESPACE in dep["metadata"]["namespace"]


def test_kustomize_monitoring_components_apply_server_side(
    cluster: TestCluster, monitoring_crds: list[str], tmp_path: Path
) -> None:
    """The overlay of docs/install.md: manifests/ with the servicemonitor and prometheusrule
    components."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    components = MANIFESTS / "components"

    def rel(p: Path) -> str:  # kustomize takes relative paths only
        return os.path.relpath(p, overlay)

    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [rel(MANIFESTS)],
                "components": [
                    rel(components / "servicemonitor"),
                    rel(components / "prometheusrule"),
                ],
            }
        )
    )
    proc = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-k", str(overlay), check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for ref in (
        "servicemonitor.monitoring.coreos.com/noderecover",
        "prometheusrule.monitoring.coreos.com/noderecover",
        "deployment.apps/noderecover",
    ):
        assert ref in proc.stdout, proc.stdout


def test_helm_install_refuses_a_misspelt_value_and_takes_good_ones(
    cluster: TestCluster, tmp_path: Path
) -> None:
    """`helm install` against the real API server: the schema refuses `flags.grase` before
    anything reaches the cluster; the default values pass a server-side dry-run install."""
    from tests.charts import CHART, helm

    common = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", "nr-install"]
    bad = helm(
        "install", "nr", CHART, *common, "--create-namespace", "--dry-run=server",
        "--set", "flags.grase=1m",
    )  # fmt: skip
    assert bad.returncode != 0
    assert "additional properties 'grase' not allowed" in bad.stderr, bad.stderr
    # fullnameOverride: the session cluster may already hold the manifests' cluster-scoped
    # `noderecover` ClusterRole (the least-privilege kubeconfig other tests use), which helm
    # refuses to adopt, whichever test file ran first on this worker.
    good = helm(
        "install", "nr", CHART, *common, "--create-namespace", "--dry-run=server",
        "--set", "crds.install=false", "--set", "fullnameOverride=nr-install-check",
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "STATUS: pending-install" in good.stdout
