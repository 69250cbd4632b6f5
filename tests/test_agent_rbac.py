"""Least privilege for the node agent, both ways: manifests/components/agent/rbac.yaml grants
exactly noderecover.kube.permissions.AGENT_API_CALLS (tests/test_agent_runner.py checks that
every request the agent makes is one of them), and the DaemonSet runs as that account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from noderecover.kube.permissions import AGENT_API_CALLS, API_CALLS, Permission
from tests.test_rbac import granted

AGENT = Path(__file__).resolve().parent.parent / "manifests" / "components" / "agent"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((AGENT / name).read_text()) if d]


def test_agent_rbac_grants_exactly_the_agent_calls() -> None:
    grants = granted(docs("rbac.yaml"))
    assert sorted(grants - set(AGENT_API_CALLS)) == [], "granted, never declared as used"
    assert sorted(set(AGENT_API_CALLS) - grants) == [], "declared as used, not granted"


def test_the_agent_writes_nothing_but_leases() -> None:
    writes = {p for p in AGENT_API_CALLS if p.verb not in {"get", "list", "watch"}}
    assert {(p.group, p.resource) for p in writes} == {("coordination.k8s.io", "leases")}
    assert Permission("", "nodes", "patch") not in AGENT_API_CALLS
    # and nothing the controller may do, like deleting nodes or pods
    assert not {p for p in AGENT_API_CALLS if p.verb == "delete"}
    # nothing the controller's account lacks: the agent's rights are a subset of its
    assert set(AGENT_API_CALLS) - set(API_CALLS) == set()


def test_daemonset_runs_the_agent_with_its_account() -> None:
    (ds,) = [d for d in docs("daemonset.yaml") if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "noderecover-agent"
    (c,) = spec["containers"]
    assert c["command"] == ["noderecover", "agent"]
    assert {"operator": "Exists"} in spec["tolerations"]


def test_daemonset_args_are_the_agent_defaults() -> None:
    from noderecover.entry.agentconfig import AgentConfig, build_agent_config
    from noderecover.entry.cli import parser

    (ds,) = [d for d in docs("daemonset.yaml") if d["kind"] == "DaemonSet"]
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    cfg = build_agent_config(
        parser().parse_args(["agent", *c["args"]]), environ={"NODERECOVER_NODE_NAME": "n1"}
    )
    defaults = AgentConfig(node_name="n1")
    differ = {
        k
        for k in AgentConfig.__dataclass_fields__
        if k != "sources" and getattr(cfg, k) != getattr(defaults, k)
    }
    # the host's sysrq trigger is mounted under /host; JSON logs, as the Deployment writes
    assert differ == {"sysrq_trigger", "log_format"}
