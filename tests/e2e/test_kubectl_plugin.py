"""`kubectl noderecover` on the real control plane, run through the real kubectl's plugin
discovery (`kubectl-noderecover` on PATH, as `pip install` puts it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.replicas import NAMESPACE, Replicas, wait

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
    assert "grace 300s" in why.stdout  # the Deployment's --grace, not the default 30s
    assert why.stderr == ""
    wj = json.loads(plugin(c, "why", node, "-o", "json").stdout)
    assert wj["settings"]["grace"] == "300s" and wj["gates"]["managed"] is True

    plan = plugin(c, "plan", "-o", "wide")
    assert plan.returncode == 0 and plan.stdout.split("\n")[0].split()[-1] == "VOLUMES"
    assert any(line.startswith("worker-1") for line in plan.stdout.splitlines())

    missing = plugin(c, "why", "no-such-node")
    assert (missing.returncode, missing.stderr) == (1, 'error: node "no-such-node" not found\n')
    bad = plugin(c, "status", "-o", "xml")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "-o/--output" in bad.stderr
    # Without the Deployment (another name): noderecover's defaults, and a note says so.
    other = plugin(c, "why", node, "--deployment", "elsewhere")
    assert other.returncode == 0 and "grace 30s" in other.stdout
    assert other.stderr.startswith("note: deployment noderecover/elsewhere not found")
