"""`kubectl noderecover` on the real control plane, run through the real kubectl's plugin
discovery (`kubectl-noderecover` on PATH, as `pip install` puts it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.replicas import NAMESPACE, Replicas, wait

from noderecover.core import jsonpath
from noderecover.core.nodes import parse_time
from tests.test_output import CASES, DATA

from .common import FAST, ROOT, phase

pytestmark = pytest.mark.e2e

# The controller, as its Deployment says, holds a dead node in Suspect for 5 minutes.
SLOW = (*FAST, "--grace", "5m")


def plugin(c: TestCluster, *args: str, kubeconfig: bool = True) -> subprocess.CompletedProcess[str]:
    """`kubectl noderecover ARGS` with this venv's bin on PATH (the plugin is found there)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cfg = ["--kubeconfig", str(c.kubeconfig)] if kubeconfig else []
    cmd = [str(c.binary("kubectl")), "noderecover", *args, *cfg]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)


def kubectl_jsonpath(c: TestCluster | Path, data: dict[str, Any], template: str) -> str:
    """What the pinned kubectl prints for `data` and `-o jsonpath=template`: offline
    (`label --local` of an object carrying the data; the added label is not in it)."""
    kubectl = c.binary("kubectl") if isinstance(c, TestCluster) else c / "kubectl"
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "data"}, **data}
    proc = subprocess.run(
        [str(kubectl), "label", "--local", "-f", "-", "x=y", "-o", f"jsonpath={template}"],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": os.devnull},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(("template", "expected"), CASES)
def test_the_jsonpath_subset_prints_what_kubectl_prints(
    testcluster_bin_dir: Path, template: str, expected: str
) -> None:
    """tests/test_output.py's cases (recorded from kubectl), asked of the pinned kubectl."""
    assert kubectl_jsonpath(testcluster_bin_dir, DATA, template) == expected
    assert jsonpath.parse(template).render(DATA) == expected


def deployment(args: tuple[str, ...]) -> dict[str, Any]:
    """manifests/base/deployment.yaml with these `noderecover run` args and no replicas (the
    replicas run as local processes; the plugin reads the settings from the object)."""
    dep: dict[str, Any] = yaml.safe_load((ROOT / "manifests/base/deployment.yaml").read_text())
    dep["spec"]["replicas"] = 0
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["args"] = ["--leader-elect", *args]
    return dep


def test_status_why_and_plan_tell_what_the_controller_does(nr: Replicas) -> None:
    c = nr.cluster
    c.apply(deployment(SLOW))
    try:
        _check(c, nr)
    finally:
        c.request("DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/noderecover")


def _check(c: TestCluster, nr: Replicas) -> None:
    a = nr.start("replica-a", *SLOW)
    assert nr.leader() is a
    node = "worker-0"
    c.kill_node(node)
    wait(lambda: phase(c, node) == "Suspect", 60, f"{node} Suspect")

    st = plugin(c, "status", "-o", "json")
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert data["leader"]["holder"] == "replica-a" and data["leader"]["expired"] is False
    assert data["circuitBreaker"]["open"] is False
    mine = {n["node"]: n for n in data["nodes"]}
    assert mine[node]["phase"] == "Suspect" and mine[node]["next"] == "wait"
    assert 0 < mine[node]["nextInSeconds"] <= 300, mine[node]
    assert [n for n in mine if n != node] == []  # only the node in remediation
    # YAML says the same as JSON (kubectl's -o yaml), parsed by a real YAML parser.
    y = plugin(c, "status", "-o", "yaml")
    assert y.returncode == 0, y.stderr
    ydata = yaml.safe_load(y.stdout)
    assert ydata["nodes"][0]["node"] == node and ydata["leader"]["holder"] == "replica-a"

    table = plugin(c, "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("leader: replica-a, renewed")
    assert any(line.split()[:2] == [node, "Suspect"] for line in lines), table.stdout

    why = plugin(c, "why", node)
    assert why.returncode == 0, why.stderr
    assert f"Node {node}: Suspect" in why.stdout and "Ready=Unknown" in why.stdout
    assert "grace 5m" in why.stdout  # the Deployment's --grace, not the default 30s
    assert "Proof it will get: none: no fence provider configured" in why.stdout
    assert why.stderr == ""
    wj = json.loads(plugin(c, "why", node, "-o", "json").stdout)
    assert wj["settings"]["grace"] == "5m" and wj["gates"]["managed"] is True
    # -o name and -o jsonpath, as kubectl prints them: the real kubectl, given the plugin's
    # -o json, prints what the plugin's -o jsonpath prints.
    assert plugin(c, "status", "-o", "name").stdout == f"node/{node}\n"
    assert plugin(c, "why", node, "-o", "name").stdout == f"node/{node}\n"
    template = '{range .nodes[*]}{.node}{"\\t"}{.phase}{"\\t"}{.next}{"\\n"}{end}'
    printed = plugin(c, "plan", f"-o=jsonpath={template}")
    assert printed.returncode == 0, printed.stderr
    assert f"{node}\tSuspect\twait" in printed.stdout.splitlines()
    plan_json = json.loads(plugin(c, "plan", "-o", "json").stdout)
    assert kubectl_jsonpath(c, plan_json, template) == printed.stdout
    bad = plugin(c, "plan", "-o", "jsonpath={.nodes[?(@.ready)]}")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr

    plan = plugin(c, "plan", "-o", "wide")
    assert plan.returncode == 0 and plan.stdout.split("\n")[0].split()[-2:] == ["VOLUMES", "PROOF"]
    assert any(line.startswith("worker-1") for line in plan.stdout.splitlines())

    missing = plugin(c, "why", "no-such-node")
    assert (missing.returncode, missing.stderr) == (1, 'error: node "no-such-node" not found\n')
    bad = plugin(c, "status", "-o", "xml")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "-o/--output" in bad.stderr
    # Without the Deployment (another name): noderecover's defaults, and a note says so.
    other = plugin(c, "why", node, "--deployment", "elsewhere")
    assert other.returncode == 0 and "grace 30s" in other.stdout
    assert other.stderr.startswith("note: deployment noderecover/elsewhere not found")


def test_pause_holds_the_controller_until_resume(nr: Replicas) -> None:
    """`kubectl noderecover pause --for` writes the cluster-wide pause the controller obeys (a
    dead node is not cordoned), `status` shows it with its end, `resume` ends it at once."""
    c = nr.cluster
    cm_path = f"/api/v1/namespaces/{NAMESPACE}/configmaps/noderecover-pause"
    paused = plugin(c, "pause", "--for", "10m", "--reason", "kernel upgrade")
    assert paused.returncode == 0 and paused.stdout.startswith("paused until "), paused.stderr
    try:
        cm = c.get(cm_path)
        assert cm["data"]["reason"] == "kernel upgrade"
        # --for counted from the API server's clock (read by a dry-run create: nothing stored)
        assert 590 <= parse_time(cm["data"]["until"]) - time.time() <= 610  # type: ignore[operator]
        names = [i["metadata"]["name"] for i in c.get(cm_path.rsplit("/", 1)[0])["items"]]
        assert not [n for n in names if n.startswith("noderecover-clock-")], names
        # Paused again: the same object, updated in place (never through "no pause").
        again = plugin(c, "pause", "--for", "10m", "--reason", "kernel upgrade")
        assert again.returncode == 0, again.stderr
        assert c.get(cm_path)["metadata"]["uid"] == cm["metadata"]["uid"]
        nr.start("replica-a", *FAST)
        node = "worker-0"
        c.kill_node(node)
        c.wait_node_ready(node, "Unknown", timeout=60)
        time.sleep(5 + 10)  # FAST's grace, and then some: nothing may happen while paused
        assert phase(c, node) in (None, "Suspect"), phase(c, node)
        assert not (c.node(node) or {}).get("spec", {}).get("unschedulable")
        st = json.loads(plugin(c, "status", "-o", "json").stdout)
        assert any("kernel upgrade" in n for n in st["notes"]), st["notes"]
        resumed = plugin(c, "resume")
        assert resumed.returncode == 0 and resumed.stdout.startswith("resumed"), resumed.stderr
        wait(
            lambda: c.node(node) is None or phase(c, node) not in (None, "Suspect"),
            60,
            f"{node} remediated once resumed",
        )
    finally:
        c.api("DELETE", cm_path)
    again = plugin(c, "resume")
    assert again.returncode == 0 and again.stdout.startswith("not paused (no cluster-wide pause")
    empty = plugin(c, "pause", "--for", "1h", "--policy", "")
    assert empty.returncode == 2 and empty.stderr.startswith("error: --policy: "), empty.stderr
    too_long = plugin(c, "pause", "--for", "200h")
    assert too_long.returncode == 2 and "at most 7 days" in too_long.stderr
