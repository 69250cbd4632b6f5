"""`kubectl noderecover` without a cluster: its YAML, its reading of the Deployment, its
usage errors, and its answers against the fake API server."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from noderecover.entry import kubectl
from noderecover.entry.config import BadFlag
from noderecover.entry.plan import preview
from tests.conftest import client_for
from tests.fakeapi import FakeKube

JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(JSONISH)
def test_yaml_output_reads_back_as_the_same_data(data: Any) -> None:
    assert yaml.safe_load(kubectl.to_yaml(data)) == data


@pytest.mark.parametrize("text", ["true", "no", "1e3", "-x", "0x10", "a: b", "null", "", " x"])
def test_yaml_quotes_what_yaml_would_misread(text: str) -> None:
    assert yaml.safe_load(kubectl.to_yaml({"k": text})) == {"k": text}


def _dep(args: list[str], env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "args": ["--nope"]},
                        {"name": "noderecover", "args": args, "env": env or []},
                    ]
                }
            }
        }
    }


def opts(**kw: Any) -> argparse.Namespace:
    base = {"kubeconfig": None, "context": None, "request_timeout": 10.0}
    return argparse.Namespace(**{**base, **kw})


def test_settings_come_from_the_noderecover_container() -> None:
    env: list[dict[str, Any]] = [
        {"name": "NODERECOVER_DRAIN_TIMEOUT", "value": "2m"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODERECOVER_MAX_CONCURRENT", "valueFrom": {"secretKeyRef": {}}},  # not literal
    ]
    args, envs = kubectl.deployment_settings(_dep(["run", "--grace=45s", "--leader-elect"], env))
    assert args == ["--grace=45s", "--leader-elect"]
    assert envs == {"NODERECOVER_DRAIN_TIMEOUT": "2m"}
    cfg = kubectl.settings_from(args, envs, opts(kubeconfig="/k"))
    assert (cfg.grace, cfg.drain_timeout, cfg.kubeconfig) == (45, 120, "/k")
    assert cfg.dry_run and cfg.leader_elect is False  # the plugin never acts
    assert kubectl.deployment_settings({}) == ([], {})


def test_settings_that_do_not_parse_are_a_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BadFlag):
        kubectl.settings_from(["--grace=soon"], {}, opts())
    with pytest.raises(BadFlag):
        kubectl.settings_from(["--no-such-flag"], {}, opts())


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status", "-o", "xml"],
        ["why"],
        ["frobnicate"],
        ["--request-timeout", "soon", "status"],
        ["why", "n", "-o", "wide"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        kubectl.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_non_positive_request_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert kubectl.main(["--request-timeout", "0", "status"]) == 2
    assert capsys.readouterr().err.startswith("error: --request-timeout")


async def test_status_and_why_against_the_fake_api(kube: FakeKube) -> None:
    kube.add_node("w1", "Unknown")
    for n in range(2, 6):
        kube.add_node(f"w{n}")
    client = client_for(kube)
    cfg = kubectl.settings_from(["--grace=10m"], {}, opts())
    try:
        p = await preview(client, cfg)
    finally:
        await client.close()
    out = io.StringIO()
    leader = {"lease": "noderecover/noderecover", "holder": "a", "renewedSecondsAgo": 1.0}
    assert kubectl._status(p, cfg, leader, "json", out) == 0
    data = json.loads(out.getvalue())
    assert [n["node"] for n in data["nodes"]] == ["w1"]
    assert data["nodes"][0]["phase"] == "Suspect" and data["removal"] == "delete"
    out = io.StringIO()
    assert kubectl._why(p, cfg, "w1", "", out, io.StringIO()) == 0
    text = out.getvalue()
    assert "Ready=Unknown" in text and "grace 600s" in text and "exclusion: none" in text
    err = io.StringIO()
    assert kubectl._why(p, cfg, "nope", "", io.StringIO(), err) == 1
    assert err.getvalue() == 'error: node "nope" not found\n'


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ({"duration": "0s", "until": None}, "longer than 0s"),
        ({"duration": "soon", "until": None}, "--for: "),
        ({"duration": "169h", "until": None}, "at most 7 days"),
        ({"duration": None, "until": "2000-01-01T00:00:00Z"}, "not in the future"),
        ({"duration": None, "until": "tomorrow"}, "not an RFC 3339 time"),
    ],
)
def test_a_pause_must_end_by_itself_and_soon(flags: dict[str, Any], error: str) -> None:
    with pytest.raises(BadFlag, match=error):
        kubectl.pause_until(argparse.Namespace(**flags), 1_800_000_000.0)


def test_a_pause_ends_when_asked() -> None:
    now = 1_800_000_000.0
    assert kubectl.pause_until(argparse.Namespace(duration="90m", until=None), now) == now + 5400
    at = argparse.Namespace(duration=None, until="2027-01-15T08:10:00Z")
    assert kubectl.pause_until(at, now) == now + 600
    assert kubectl.pause_until(argparse.Namespace(duration="1.5s", until=None), now) == now + 2


PLUGIN_UA = "kubectl-noderecover/test"  # the operator's calls, not the controller's


async def test_pause_and_resume_write_what_the_controller_reads(kube: FakeKube) -> None:
    client = client_for(kube, user_agent=PLUGIN_UA)
    out = io.StringIO()
    cm = "/api/v1/namespaces/noderecover/configmaps/noderecover-pause"
    try:
        base = {"namespace": "noderecover", "policy": None, "reason": "upgrade"}
        pause = argparse.Namespace(command="pause", pause_until=1_800_000_600.0, **base)
        assert await kubectl._pause(client, pause, out, io.StringIO()) == 0
        obj = kube.stores["configmaps"].get("noderecover", "noderecover-pause")
        assert obj["data"] == {"until": "2027-01-15T08:10:00Z", "reason": "upgrade"}
        first_uid = obj["metadata"]["uid"]
        assert await kubectl._pause(client, pause, out, io.StringIO()) == 0  # again: re-created
        assert (
            kube.stores["configmaps"].get("noderecover", "noderecover-pause")["metadata"]["uid"]
            != first_uid
        )
        resume = argparse.Namespace(command="resume", namespace="noderecover", policy=None)
        assert await kubectl._pause(client, resume, out, io.StringIO()) == 0
        assert kube.count("DELETE", f"^{cm}$") == 3  # before each create, and the resume
        out = io.StringIO()
        assert await kubectl._pause(client, resume, out, io.StringIO()) == 0
        assert out.getvalue() == "not paused (no cluster-wide pause)\n"
    finally:
        await client.close()


async def test_pause_and_resume_one_policy(kube: FakeKube) -> None:
    kube.install_policies()
    kube.add_policy("gpu", {"nodeSelector": {"matchLabels": {"pool": "gpu"}}})
    client = client_for(kube, user_agent=PLUGIN_UA)
    out = io.StringIO()
    try:
        base = {"namespace": "noderecover", "policy": "gpu"}
        pause = argparse.Namespace(
            command="pause", pause_until=1_800_000_600.0, reason="driver update", **base
        )
        assert await kubectl._pause(client, pause, out, io.StringIO()) == 0
        spec = (kube.get_policy("gpu") or {})["spec"]
        assert spec["paused"] == {"until": "2027-01-15T08:10:00Z", "reason": "driver update"}
        assert spec["nodeSelector"] == {"matchLabels": {"pool": "gpu"}}  # the rest untouched
        resume = argparse.Namespace(command="resume", **base)
        assert await kubectl._pause(client, resume, out, io.StringIO()) == 0
        assert "paused" not in (kube.get_policy("gpu") or {})["spec"]
    finally:
        await client.close()
    assert not kube.stores["configmaps"].objects  # a policy pause is not the cluster's
