"""`kubectl noderecover` without a cluster: its YAML, its reading of the Deployment, its
usage errors, and its answers against the fake API server."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from noderecover.core.nodes import parse_time
from noderecover.core.pauses import parse_cluster_pause
from noderecover.core.proof import ProofKind
from noderecover.entry import kubectl
from noderecover.entry.config import BadFlag
from noderecover.entry.output import Output, emit, to_yaml
from noderecover.entry.plan import Preview, preview, write_plan
from tests.conftest import client_for
from tests.fakeapi import FakeKube

# Text from every Unicode category but surrogates (not encodable), with the characters YAML
# treats specially drawn often: its line breaks (U+0085, U+2028, U+2029), the BOM, controls.
TEXT = st.text(
    st.characters(exclude_categories=["Cs"])
    | st.sampled_from("\u2028\u2029\ufeff\x85\r\n\t :#'\"-"),
    max_size=20,
)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(TEXT.filter(bool), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500)
@given(JSONISH)
def test_yaml_output_reads_back_as_the_same_data(data: Any) -> None:
    out = io.StringIO()
    emit({"data": data}, [], Output("yaml"), out)
    assert yaml.safe_load(out.getvalue()) == {"data": data}


@pytest.mark.parametrize(
    "text",
    [
        "true",
        "no",
        "1e3",
        "-x",
        "0x10",
        "a: b",
        "null",
        "",
        " x",
        "a\u2028b",
        "\u2029",
        "\ufeffx",
        "nel\x85",
    ],
)
def test_yaml_quotes_what_yaml_would_misread(text: str) -> None:
    assert yaml.safe_load(to_yaml({"k": text, text or "e": [text]})) == {
        "k": text,
        text or "e": [text],
    }


def test_yaml_is_kubectls_block_style_in_insertion_order() -> None:
    data = {"nodes": [{"node": "w1", "ready": "Unknown", "volumes": []}], "b": {}, "a": "ü"}
    assert to_yaml(data) == ("nodes:\n- node: w1\n  ready: Unknown\n  volumes: []\nb: {}\na: ü\n")


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
    with pytest.raises(SystemExit) as e:
        kubectl.main(["--request-timeout", "0", "status"])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --request-timeout: must be")


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("10", 10.0), ("1m30s", 90.0)])
def test_request_timeout_takes_kubectls_forms(text: str, seconds: float) -> None:
    assert kubectl.parser().parse_args(["--request-timeout", text, "status"]).request_timeout == (
        seconds
    )


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
    assert kubectl._status(p, cfg, leader, Output("json"), out) == 0
    data = json.loads(out.getvalue())
    assert [n["node"] for n in data["nodes"]] == ["w1"]
    assert data["nodes"][0]["phase"] == "Suspect" and data["removal"] == "delete"
    out = io.StringIO()
    assert kubectl._why(p, cfg, "w1", Output(), out, io.StringIO()) == 0
    text = out.getvalue()
    assert "Ready=Unknown" in text and "grace 10m" in text and "exclusion: none" in text
    err = io.StringIO()
    assert kubectl._why(p, cfg, "nope", Output(), io.StringIO(), err) == 1
    assert err.getvalue() == 'error: node "nope" not found\n'


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ({"duration": "0s", "until": None}, "longer than 0s"),
        ({"duration": "soon", "until": None}, "--for: "),
        ({"duration": "169h", "until": None}, "at most 7 days"),
        ({"duration": None, "until": "2000-01-01T00:00:00Z"}, "not in the future"),
        ({"duration": None, "until": "tomorrow"}, "not an RFC 3339 time"),
        ({"duration": None, "until": "2027-01-23T08:00:00Z"}, "at most 7 days"),
    ],
)
def test_a_pause_must_end_by_itself_and_soon(flags: dict[str, Any], error: str) -> None:
    with pytest.raises(BadFlag, match=error):
        kubectl.pause_until(argparse.Namespace(**flags), 1_800_000_000.0)


def test_a_pause_ends_when_asked() -> None:
    now = 1_800_000_000.0  # the API server's time
    assert kubectl.pause_until(argparse.Namespace(duration="90m", until=None), now) == now + 5400
    at = argparse.Namespace(duration=None, until="2027-01-15T08:10:00Z")
    assert kubectl.pause_until(at, now) == now + 600
    assert kubectl.pause_until(argparse.Namespace(duration="1.5s", until=None), now) == now + 2


def test_a_fence_program_that_exists_only_in_the_image_is_shown_as_deployed() -> None:
    """The Deployment's --fence-command names a program in the image: the plugin shows the
    deployed settings (fenced: removal both, its grace), not local defaults because the
    program is missing on this laptop."""
    args = ["--fence-command=/opt/fence/only-in-the-image --node {node}", "--grace=2m"]
    cfg = kubectl.settings_from(args, {}, opts())
    assert cfg.fence_command[0] == "/opt/fence/only-in-the-image"
    assert cfg.grace == 120 and cfg.removal_mode == "both"
    # `noderecover run` on this machine still refuses it, naming the flag.
    with pytest.raises(BadFlag, match=r"--fence-command: .* does not exist"):
        from noderecover.entry.cli import parser
        from noderecover.entry.config import build_config

        build_config(parser().parse_args(["run", *args]), environ={})


PLUGIN_UA = "kubectl-noderecover/test"  # the operator's calls, not the controller's
CM = "/api/v1/namespaces/noderecover/configmaps/noderecover-pause"


def cmd(command: str, **kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "command": command,
        "namespace": "noderecover",
        "deployment": "noderecover",
        "policy": None,
        "kubeconfig": None,
        "context": None,
        "request_timeout": 10.0,
        "output": Output(),
    }
    if command == "pause":
        base.update(duration="10m", until=None, reason="upgrade")
    return argparse.Namespace(**{**base, **kw})


async def plugin(kube: FakeKube, opts: argparse.Namespace) -> tuple[int, str, str]:
    """`kubectl noderecover` against the fake API: (exit code, stdout, stderr)."""
    client = client_for(kube, user_agent=PLUGIN_UA)
    out, err = io.StringIO(), io.StringIO()
    try:
        code = await kubectl.command(client, opts, out, err)
    finally:
        await client.close()
    return code, out.getvalue(), err.getvalue()


def pause_of(kube: FakeKube, ns: str = "noderecover") -> dict[str, Any] | None:
    obj: dict[str, Any] | None = kube.stores["configmaps"].objects.get((ns, "noderecover-pause"))
    return obj


async def test_pause_and_resume_write_what_the_controller_reads(kube: FakeKube) -> None:
    code, out, _ = await plugin(kube, cmd("pause"))
    assert code == 0 and out.startswith("paused until "), out
    obj = pause_of(kube)
    assert obj is not None and obj["data"]["reason"] == "upgrade"
    pause, warning = parse_cluster_pause(obj, time.time())
    assert pause is not None and warning is None
    assert 590 <= pause.until - time.time() <= 602
    code, out, _ = await plugin(kube, cmd("resume"))
    assert (code, pause_of(kube)) == (0, None)
    code, out, _ = await plugin(kube, cmd("resume"))
    assert code == 0 and out.startswith("not paused (no cluster-wide pause"), out


async def test_replacing_a_pause_never_passes_through_no_pause(kube: FakeKube) -> None:
    """Today's pause is updated in place (the same object, resourceVersion-guarded): there
    is no moment without a pause, and its own start (`since`), not the object's creation,
    caps it at 7 days."""
    assert (await plugin(kube, cmd("pause", duration="1h")))[0] == 0
    first = pause_of(kube)
    assert first is not None
    assert (await plugin(kube, cmd("pause", duration="2h", reason="longer")))[0] == 0
    second = pause_of(kube)
    assert second is not None and second["metadata"]["uid"] == first["metadata"]["uid"]
    assert second["data"]["reason"] == "longer" and second["data"]["since"]
    assert kube.count("DELETE", f"^{CM}$") == 0
    history = [e.type for e in kube.stores["configmaps"].history]
    assert history == ["ADDED", "MODIFIED"], history
    # The update is guarded by what was read: a change in between is read again, not lost.
    kube.on_request(
        "PUT",
        f"^{CM}$",
        lambda: kube.set_configmap(
            "noderecover", "noderecover-pause", {"until": "2999-01-01T00:00:00Z", "reason": "x"}
        ),
    )
    code, _, _ = await plugin(kube, cmd("pause", duration="3h", reason="third"))
    assert code == 0 and (pause_of(kube) or {})["data"]["reason"] == "third"
    assert kube.count("PUT", f"^{CM}$") == 3  # the conflicting write was retried


@pytest.mark.parametrize("skew", [-7200.0, +7200.0])
async def test_for_counts_on_the_api_servers_clock_not_the_workstations(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    """A laptop clock two hours off neither shortens nor stretches `--for 10m`."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    code, _, _ = await plugin(kube, cmd("pause", duration="10m"))
    monkeypatch.undo()
    assert code == 0
    obj = pause_of(kube)
    assert obj is not None
    pause, _ = parse_cluster_pause(obj, time.time())
    assert pause is not None and 598 <= pause.until - time.time() <= 602, pause


async def test_a_failed_pause_exits_non_zero_and_keeps_the_pause_there_was(
    kube: FakeKube,
) -> None:
    assert (await plugin(kube, cmd("pause", duration="1h", reason="first")))[0] == 0
    kube.fail_next("PUT", f"^{CM}$", 500)
    code, out, err = await plugin(kube, cmd("pause", duration="2h", reason="second"))
    errors = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert code == 1 and out == "" and len(errors) == 1 and errors[0].startswith("error: "), err
    assert (pause_of(kube) or {})["data"]["reason"] == "first", "the old pause was lost"
    kube.fail_next("POST", "configmaps$", 403)  # cannot read the server's clock
    code, out, err = await plugin(kube, cmd("pause", duration="2h"))
    assert code == 1 and out == "" and "API server's clock" in err, err


async def test_an_empty_policy_is_bad_usage_not_a_cluster_pause(kube: FakeKube) -> None:
    code, out, err = await plugin(kube, cmd("pause", policy=""))
    assert (code, out) == (2, "") and err.startswith("error: --policy: "), err
    assert pause_of(kube) is None and kube.requests == []
    assert kubectl.main(["pause", "--for", "1h", "--policy", ""]) == 2
    assert kubectl.main(["resume", "--policy", ""]) == 2


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["pause", "--for", "1h", "--policy", "../../api/v1/nodes/w1"], "--policy"),
        (["resume", "--policy", "Gpu"], "--policy"),
        (["pause", "--for", "1h", "-n", "kube-system/configmaps"], "--namespace"),
        (["status", "-n", "a b"], "--namespace"),
        (["plan", "--deployment", "x/../y"], "--deployment"),
        (["resume", "--namespace", ""], "--namespace"),
    ],
)
def test_names_are_checked_before_any_url_is_built(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kubectl.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: ") and err.count("\n") == 1, err


async def test_a_policy_that_does_not_exist_is_a_clear_failure(kube: FakeKube) -> None:
    kube.install_policies()
    for opts in (cmd("resume", policy="nope"), cmd("pause", policy="nope")):
        code, out, err = await plugin(kube, opts)
        assert (code, out) == (1, "")
        assert err == 'error: noderecoverypolicy "nope" not found\n'


async def test_pause_and_resume_one_policy(kube: FakeKube) -> None:
    kube.install_policies()
    kube.add_policy("gpu", {"nodeSelector": {"matchLabels": {"pool": "gpu"}}})
    code, out, _ = await plugin(kube, cmd("pause", policy="gpu", reason="driver update"))
    assert code == 0 and out.startswith("noderecoverypolicy/gpu paused until"), out
    spec = (kube.get_policy("gpu") or {})["spec"]
    assert spec["paused"]["reason"] == "driver update"
    assert 590 <= (parse_time(spec["paused"]["until"]) or 0) - time.time() <= 602
    assert spec["nodeSelector"] == {"matchLabels": {"pool": "gpu"}}  # the rest untouched
    assert [p["metadata"]["name"] for p in kube.stores["noderecoverypolicies"].objects.values()]
    assert len(kube.stores["noderecoverypolicies"].objects) == 1  # the clock probe: dry run
    code, _, _ = await plugin(kube, cmd("resume", policy="gpu"))
    assert code == 0 and "paused" not in (kube.get_policy("gpu") or {})["spec"]
    assert not kube.stores["configmaps"].objects  # a policy pause is not the cluster's


# -- one rule for where the pause lives: the plugin writes where the controller reads ---------
MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "base" / "deployment.yaml"


def deployment_as_deployed(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """manifests/base/deployment.yaml (the chart renders the same object: tests/test_chart.py),
    with extra `run` flags or NODERECOVER_* variables (the chart's `flags:`/`extraEnv`)."""
    dep: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [*container["args"], *args]
    container["env"] = [*container["env"], *({"name": k, "value": v} for k, v in env.items())]
    return dep


@pytest.mark.parametrize(
    ("args", "env", "where"),
    [
        ([], {}, "noderecover"),  # as deployed by the manifests and the chart's defaults
        (["--lease-namespace=ops"], {}, "ops"),  # the chart's flags.lease-namespace
        ([], {"NODERECOVER_LEASE_NAMESPACE": "ops"}, "ops"),  # extraEnv
    ],
)
async def test_the_plugins_pause_is_where_the_controller_reads_it(
    kube: FakeKube,
    harness_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    where: str,
) -> None:
    from noderecover.core.policies import CLUSTER_PAUSED
    from noderecover.entry import app
    from noderecover.entry.cli import parser as run_parser
    from noderecover.entry.config import build_config

    dep = deployment_as_deployed(args, env)
    kube.add_deployment("noderecover", dep)
    code, out, err = await plugin(kube, cmd("pause", duration="1h"))
    assert code == 0 and err == "", err
    assert f"configmap {where}/noderecover-pause" in out
    # The controller, configured as that Deployment runs it: its args and env, in its pod.
    container = dep["spec"]["template"]["spec"]["containers"][0]
    monkeypatch.setenv("POD_NAMESPACE", "noderecover")  # the Deployment's fieldRef
    cfg = build_config(
        run_parser().parse_args(["run", *container["args"][1:]]),
        environ={**env, "POD_NAMESPACE": "noderecover"},
    )
    loc = app.pause_location(cfg)
    assert loc.namespace == where
    for n in ("w1", "w2", "w3"):
        kube.add_node(n)
    h = await harness_factory(grace=5, namespace=loc.namespace)
    await h.until(lambda: h.controller.policy_hold("w1") == CLUSTER_PAUSED, advance=0.5)


async def test_without_its_deployment_the_plugin_says_where_it_pauses(kube: FakeKube) -> None:
    code, out, err = await plugin(kube, cmd("pause", namespace="team-a"))
    assert code == 0 and "configmap team-a/noderecover-pause" in out
    assert err.startswith("note: deployment team-a/noderecover not found; the pause goes ")


async def test_status_says_when_the_pause_cannot_be_read(kube: FakeKube) -> None:
    """The preview decides as the controller would: an unreadable pause holds, and says so."""
    kube.add_node("w1", "Unknown")
    for n in ("w2", "w3", "w4"):
        kube.add_node(n)
    kube.fail_next("GET", f"^{CM}$", 403)
    code, out, _ = await plugin(kube, cmd("status", output=Output("json")))
    assert code == 0
    data = json.loads(out)
    assert any("cluster pause unknown" in n for n in data["notes"]), data["notes"]


async def test_output_name_and_jsonpath(kube: FakeKube) -> None:
    """-o name: kubectl's `node/NAME` a line; -o jsonpath=...: kubectl's template, over the
    data of -o json."""
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    kube.add_node("w1", "Unknown", last_transition_time=old)
    for n in range(2, 6):
        kube.add_node(f"w{n}")

    def output(text: str) -> Output:
        opts = kubectl.parser().parse_args(["plan", "-o", text])
        assert isinstance(opts.output, Output)
        return opts.output

    code, out, _ = await plugin(kube, cmd("plan", output=output("name")))
    assert (code, out) == (0, "node/w1\nnode/w2\nnode/w3\nnode/w4\nnode/w5\n")
    code, out, _ = await plugin(kube, cmd("status", output=output("name")))
    assert (code, out) == (0, "node/w1\n")
    code, out, _ = await plugin(kube, cmd("why", node="w3", output=output("name")))
    assert (code, out) == (0, "node/w3\n")
    template = 'jsonpath={range .nodes[*]}{.node}{"\\t"}{.phase}{"\\n"}{end}'
    code, out, _ = await plugin(kube, cmd("status", output=output(template)))
    assert (code, out) == (0, "w1\tSuspect\n")
    code, out, _ = await plugin(kube, cmd("plan", output=output("jsonpath={.nodes[*].node}")))
    assert (code, out) == (0, "w1 w2 w3 w4 w5")
    why = output("jsonpath={.node} {.gates.managed} {.settings.grace} {.conditions[0].type}")
    code, out, _ = await plugin(kube, cmd("why", node="w1", output=why))
    assert (code, out) == (0, "w1 true 30s Ready")
    # A template that does not apply to the data: kubectl's "error executing", one line, 1.
    code, out, err = await plugin(kube, cmd("plan", output=output("jsonpath={.nodes[0].node[0]}")))
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "error: jsonpath '{.nodes[0].node[0]}': string is not array or slice"
    )


@pytest.mark.parametrize(
    "template",
    ["{.nodes", "{.nodes[?(@.ready)]}", "{range .nodes[*]}", "{end}", '{"\\q"}', "{..node}"],
)
def test_a_bad_template_is_one_line_exit_2(
    template: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["plan"], ["status"], ["why", "w1"]):
        with pytest.raises(SystemExit) as exc:
            kubectl.parser().parse_args([*command, "-o", f"jsonpath={template}"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: argument -o/--output: jsonpath template: "), err
        assert err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exc:
        kubectl.parser().parse_args(["why", "w1", "-o", "wide"])
    assert exc.value.code == 2 and "unknown output format 'wide'" in capsys.readouterr().err


def test_help_says_which_commands_read_and_which_write() -> None:
    """Not "read-only" for a plugin whose pause and resume write."""
    text = " ".join(kubectl.parser().format_help().split())
    assert "read-only" not in text
    assert "(status, why, plan: they only read), and pausing it (pause, resume: they write)" in text
    sub = next(a for a in kubectl.parser()._actions if isinstance(a, argparse._SubParsersAction))
    said = {c.dest: c.help or "" for c in sub._choices_actions}
    assert said.keys() == {"status", "plan", "why", "pause", "resume"}
    assert all(said[c].endswith("(reads only)") for c in ("status", "plan", "why")), said
    assert said["pause"].startswith("write a pause") and said["resume"].endswith("(writes)")


async def test_plan_why_and_status_say_which_proof_a_node_will_get(kube: FakeKube) -> None:
    """The proof each node would get comes from core.proof.outlook, with the fence Secret
    read once by the preview: missing, then present."""
    kube.add_node("w1", "Unknown", annotations={"noderecover.io/fence-address": "https://bmc-1"})
    kube.add_node("w2", "Unknown")  # no BMC address
    for n in range(3, 7):
        kube.add_node(f"w{n}")
    cfg = kubectl.settings_from(
        ["--grace=10m", "--fence-provider=redfish", "--fence-secret=bmc"], {}, opts()
    )

    async def look() -> Preview:
        client = client_for(kube)
        try:
            return await preview(client, cfg, namespace="noderecover")
        finally:
            await client.close()

    p = await look()
    by = {r.node: r for r in p.reports}
    w1, w2 = by["w1"].outlook, by["w2"].outlook
    assert w1 is not None and w2 is not None
    assert w1.kind is ProofKind.NONE and "Secret noderecover/bmc not found" in w1.why
    assert w2.kind is ProofKind.NONE and "no BMC address" in w2.why
    kube.set_secret("noderecover", "bmc", {"username": "admin", "password": "pw"})
    p = await look()
    out = io.StringIO()
    assert kubectl._why(p, cfg, "w1", Output(), out, io.StringIO()) == 0
    assert "Proof it will get: fence by redfish at BMC https://bmc-1\n" in out.getvalue()
    out = io.StringIO()
    leader = {"lease": "noderecover/noderecover", "holder": "a", "renewedSecondsAgo": 1.0}
    assert kubectl._status(p, cfg, leader, Output("json"), out) == 0
    nodes = {n["node"]: n for n in json.loads(out.getvalue())["nodes"]}
    assert nodes["w1"]["proofOutlook"] == {
        "proof": "fenced",
        "provider": "redfish",
        "target": "BMC https://bmc-1",
        "why": "fence through redfish (BMC https://bmc-1)",
    }
    assert nodes["w2"]["proofOutlook"]["proof"] == "none"
    out = io.StringIO()
    assert kubectl._status(p, cfg, leader, Output("wide"), out) == 0
    header, *rows = out.getvalue().splitlines()[2:]
    assert header.split()[-1] == "PROOF"
    assert any(r.startswith("w1 ") and r.endswith("redfish: BMC https://bmc-1") for r in rows)
    out = io.StringIO()
    write_plan(p, cfg, Output("wide"), out)
    assert "PROOF" in out.getvalue().splitlines()[0]
    assert [r.method for r in kube.requests if r.method != "GET"] == []
