"""`noderecover plan` against the fake API server: read-only, and says why."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from pathlib import Path

import yaml

from noderecover.entry.config import Config
from noderecover.entry.output import Output
from noderecover.entry.plan import Preview, plan_rows, preview, write_plan
from noderecover.kube.client import KubeClient
from tests.conftest import client_for, make_config
from tests.fakeapi import FakeKube


async def plan_of(
    client: KubeClient, cfg: Config, namespace: str | None = None
) -> tuple[list[tuple[str, ...]], bool, Preview]:
    """The plan's rows, whether a circuit breaker would be open, the whole preview."""
    p = await preview(client, cfg, namespace=namespace)
    return plan_rows(p), p.breaker_open, p


async def test_plan_is_read_only_and_explains(kube: FakeKube) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    kube.add_node(
        "cp",
        "Unknown",
        labels={"node-role.kubernetes.io/control-plane": ""},
        last_transition_time=old,
    )
    kube.add_node("w1", "Unknown", last_transition_time=old)
    kube.add_node("w2", "False", last_transition_time=dt.datetime.now(dt.UTC))
    for n in range(3, 9):
        kube.add_node(f"w{n}")
    kube.add_node(
        "opt-out",
        "Unknown",
        annotations={"noderecover.io/exclude": "true"},
        last_transition_time=old,
    )
    client = client_for(kube)
    try:
        rows, breaker, p = await plan_of(client, make_config(grace=60))
    finally:
        await client.close()
    by_node = {r[0]: r for r in rows}
    assert by_node["w1"][3:5] == ("Suspect", "cordon")
    assert by_node["w1"][2].startswith("10m") or by_node["w1"][2].startswith("9m")
    assert by_node["w2"][4] == "wait" and "within grace" in by_node["w2"][5]
    assert by_node["cp"][4] == "blocked" and by_node["cp"][5] == "excluded-control-plane"
    assert by_node["opt-out"][5] == "excluded-annotation"
    assert by_node["w3"][3:5] == ("Healthy", "nothing")
    assert breaker is False
    assert [r.method for r in kube.requests if r.method != "GET"] == []
    out = io.StringIO()
    write_plan(p, make_config(grace=60), Output(), out)
    text = out.getvalue()
    assert text.splitlines()[0].split()[:3] == ["NODE", "READY", "UNHEALTHY"]
    assert "circuit breaker: closed" in text


async def test_plan_shows_the_breaker(kube: FakeKube) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    for n in range(4):
        kube.add_node(f"w{n}", "Unknown", last_transition_time=old)
    client = client_for(kube)
    try:
        rows, breaker, _ = await plan_of(client, make_config())
    finally:
        await client.close()
    assert breaker is True
    assert {r[5] for r in rows} == {"circuit-breaker"}


async def test_plan_names_the_volumes_a_removal_would_hold(kube: FakeKube) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    kube.add_node("w1", "Unknown", last_transition_time=old)
    for n in range(2, 6):
        kube.add_node(f"w{n}")
    kube.add_volume_attachment("va-1", "w1", "pv-data")
    kube.add_volume_attachment("va-2", "w2", "pv-other")  # a healthy node's: not mentioned
    client = client_for(kube)
    try:
        rows, _, _ = await plan_of(client, make_config(grace=60))  # auto, no fence: delete
        by_node = {r[0]: r for r in rows}
        assert "1 volume(s) attached (pv-data)" in by_node["w1"][5]
        assert "held up to 6m" in by_node["w1"][5]
        assert "volume" not in by_node["w2"][5]
        rows, _, _ = await plan_of(client, make_config(grace=60, fence_command=("true",)))
        assert "kept until they detach" in {r[0]: r for r in rows}["w1"][5]
        kube.fail_next("GET", "^/apis/storage.k8s.io/v1/volumeattachments$", 403)
        rows, _, _ = await plan_of(client, make_config(grace=60))  # plan still answers
        assert {r[0]: r for r in rows}["w1"][4] == "cordon"
    finally:
        await client.close()
    assert [r.method for r in kube.requests if r.method != "GET"] == []


async def test_plan_says_which_policy_governs_each_node_and_why(kube: FakeKube) -> None:
    from noderecover.core.nodes import format_time

    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    kube.install_policies()
    kube.add_policy("gpu", {"nodeSelector": {"matchLabels": {"pool": "gpu"}}})
    kube.add_policy(
        "spot",
        {
            "nodeSelector": {"matchLabels": {"pool": "spot"}},
            "paused": {"until": format_time(dt.datetime.now(dt.UTC).timestamp() + 600)},
        },
    )
    kube.add_policy("broken", {"nodeSelector": {"matchLabels": {"pool": "x"}}, "removal": "no"})
    kube.add_policy("wide", {"nodeSelector": {"matchLabels": {"zone": "a"}}})
    for n in range(3):
        kube.add_node(f"g{n}", labels={"pool": "gpu"})
        kube.add_node(f"s{n}", labels={"pool": "spot"})
    kube.add_node("g-dead", "Unknown", labels={"pool": "gpu"}, last_transition_time=old)
    kube.add_node("s-dead", "Unknown", labels={"pool": "spot"}, last_transition_time=old)
    kube.add_node("both", "Unknown", labels={"pool": "gpu", "zone": "a"}, last_transition_time=old)
    kube.add_node("x1", labels={"pool": "x"})
    kube.add_node("stray")
    kube.set_configmap("noderecover", "noderecover-pause", {"until": "2000-01-01T00:00:00Z"})
    client = client_for(kube)
    try:
        rows, _, p = await plan_of(client, make_config(grace=60), namespace="noderecover")
        notes = p.notes
    finally:
        await client.close()
    by_node = {r[0]: r for r in rows}
    assert by_node["g-dead"][3:5] == ("Suspect", "cordon") and by_node["g-dead"][6] == "gpu"
    assert by_node["s-dead"][4:6] == ("blocked", "paused") and by_node["s-dead"][6] == "spot"
    assert by_node["both"][4] == "blocked" and "policy-conflict" in by_node["both"][5]
    assert "gpu, wide" in by_node["both"][5] and by_node["both"][6] == "-"
    assert by_node["stray"][6] == "-" and "no-policy" in by_node["stray"][5]
    assert by_node["x1"][6] == "-" and "invalid" in by_node["x1"][5]
    assert by_node["g0"][6] == "gpu"
    assert any(n.startswith("policy spot: paused until") for n in notes)
    assert any(n.startswith("policy broken: INVALID") for n in notes)
    assert not any("cluster-wide" in n for n in notes)  # that pause expired in 2000
    assert [r.method for r in kube.requests if r.method != "GET"] == []
    out = io.StringIO()
    write_plan(p, make_config(grace=60), Output(), out)
    assert out.getvalue().splitlines()[0].split()[-2:] == ["POLICY", "AGENT"]


async def test_noderecover_plan_prints_the_plugins_plan_data(
    kube: FakeKube, tmp_path: Path
) -> None:
    """`noderecover plan -o json|yaml|jsonpath=...|name` (the command line, its own event loop)
    prints the data `kubectl noderecover plan -o ...` prints: one function builds both."""
    import anyio

    from noderecover.entry import cli, kubectl

    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    kube.add_node("w1", "Unknown", last_transition_time=old)
    for n in range(2, 6):
        kube.add_node(f"w{n}")
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{kube.base_url}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
    )

    def main(*output: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli.main(["plan", "--grace=1m", "--kubeconfig", str(path), *output]) == 0
        return out.getvalue()

    data = json.loads(await anyio.to_thread.run_sync(main, "-o", "json"))
    as_yaml = yaml.safe_load(await anyio.to_thread.run_sync(main, "-o", "yaml"))
    assert as_yaml["nodes"][1:] == data["nodes"][1:]  # (w1's unhealthy-for grew meanwhile)
    assert [n["node"] for n in data["nodes"]] == ["w1", "w2", "w3", "w4", "w5"]
    w1 = data["nodes"][0]
    assert (w1["phase"], w1["next"], w1["policy"]) == ("Suspect", "cordon", "(flags)")
    assert data["circuitBreaker"] == {
        "open": False,
        "unhealthy": 1,
        "managed": 5,
        "maxUnhealthy": "40%",
    }
    template = '-o=jsonpath={range .nodes[*]}{.node}={.next}{"\\n"}{end}'
    assert (await anyio.to_thread.run_sync(main, template)).splitlines()[:2] == [
        "w1=cordon",
        "w2=nothing",
    ]
    assert (await anyio.to_thread.run_sync(main, "-o", "name")).splitlines()[0] == "node/w1"
    # The plugin's plan: the same keys, node by node.
    client = client_for(kube)
    try:
        cfg = kubectl.settings_from(["--grace=1m"], {}, kubectl.parser().parse_args(["plan"]))
        p = await preview(client, cfg)
    finally:
        await client.close()
    out = io.StringIO()
    assert kubectl._plan(p, cfg, Output("json"), out) == 0
    plugin = json.loads(out.getvalue())
    assert plugin.keys() == data.keys() and plugin["circuitBreaker"] == data["circuitBreaker"]
    assert [n.keys() for n in plugin["nodes"]] == [n.keys() for n in data["nodes"]]
    assert [(n["node"], n["next"]) for n in plugin["nodes"]] == [
        (n["node"], n["next"]) for n in data["nodes"]
    ]
