"""Fencing without emulators: the pure part (spec parsing, what is fenced, medik8s' fence
agent parameters), the runner's bounds, the command and fence-agent providers' process
discipline (argv, stdin, exit codes) with local programs, and the controller: a fence that
does not prove the node off is a visible block, the Node kept, nothing tainted or deleted,
no credential in any Event or log. Against real emulators: tests/test_fencing_emulators.py.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest
from noderecover_testkit.fixtures import make_node

from noderecover.base.clock import FakeClock, SystemClock
from noderecover.controller.writes import Held, Step, WritePath
from noderecover.core.fencing import (
    ANN_FENCE_ADDRESS,
    FenceAction,
    FenceSpec,
    NoTarget,
    Provider,
    Target,
    agent_options,
    agent_stdin,
    aws_instance_id,
    aws_region,
    parse_fence_spec,
    render_address,
    target_for,
)
from noderecover.core.machine import Phase
from noderecover.core.nodes import parse_node
from noderecover.core.policies import parse_policy
from noderecover.core.reasons import Blocked
from noderecover.core.settings import Config, Removal, RemovalMode
from noderecover.fencing.agent import FenceAgent
from noderecover.fencing.command import Command
from noderecover.fencing.provider import Credentials, FenceError, PowerState
from noderecover.fencing.registry import provider_for
from noderecover.fencing.runner import fence_node
from noderecover.kube.client import KubeClient
from tests.conftest import Harness, make_config
from tests.emulators import free_port
from tests.fakeapi import FakeKube
from tests.test_controller import Start, cluster, phase

PASSWORD = "Sup3r-s3cret-pw"


def node_obs(
    name: str = "w1",
    uid: str = "uid-1",
    provider_id: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Any:
    raw = make_node(name, ready="Unknown", labels=labels, annotations=annotations)
    raw["metadata"]["uid"] = uid
    raw["metadata"]["resourceVersion"] = "1"
    raw["spec"].pop("providerID", None)
    if provider_id is not None:
        raw["spec"]["providerID"] = provider_id
    return parse_node(raw, frozenset(labels or {}))


# -- the spec ------------------------------------------------------------------------------


def test_a_spec_field_left_out_keeps_the_flags_value() -> None:
    base = FenceSpec(Provider.REDFISH, secret_name="bmc", address_template="{name}-bmc")
    spec = parse_fence_spec({"action": "reboot"}, "spec.fence", base)
    assert spec.provider is Provider.REDFISH and spec.secret_name == "bmc"
    assert spec.action is FenceAction.REBOOT and spec.address_template == "{name}-bmc"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"provider": "ipmi"}, "spec.fence.provider: 'ipmi' is not one of"),
        ({"action": "halt"}, "spec.fence.action"),
        ({"secretName": "Bad_Name"}, "spec.fence.secretName"),
        ({"addressTemplate": "{node.__class__}"}, "only {name} and {label:KEY}"),
        ({"agent": "/bin/sh"}, "spec.fence.agent"),
        ({"agent": "fence_x; rm -rf /"}, "spec.fence.agent"),
        ({"sharedParameters": {"ip": "x"}}, "is not a parameter like --ip"),
        ({"sharedParameters": {"--ip": "a\nb"}}, "one-line"),
        ({"sharedParameters": {"--action": "on"}}, "is not off or reboot"),
        ({"nodeParameters": {"--ip": "x"}}, "not an object of node name to value"),
        ({"redfish": {"system": "/etc/passwd"}}, "is not /redfish/v1/Systems/"),
        ({"aws": {"region": "mars"}}, "is not a region"),
        ({"aws": {"endpoint": "file:///x"}}, "is not an http(s) URL"),
        ({"what": 1}, "unknown field 'what'"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_field(raw: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_fence_spec(raw, "spec.fence", FenceSpec())
    assert why in str(info.value) and "\n" not in str(info.value)


def policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "uid": "u"}, "spec": spec}


def test_a_policy_chooses_its_provider_over_the_flags() -> None:
    base = Config(fence=FenceSpec(Provider.AWS))
    p = parse_policy(
        policy(
            {"fence": {"provider": "redfish", "secretName": "bmc", "addressTemplate": "{name}"}}
        ),
        base,
    )
    assert p.cfg is not None and p.error is None
    assert p.cfg.fence_provider is Provider.REDFISH and p.cfg.removal_mode is RemovalMode.BOTH


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"fence": {"provider": "command"}}, "command needs noderecover's --fence-command"),
        ({"fence": {"provider": "redfish"}}, "needs secretName"),
        ({"fence": {"provider": "fence-agent"}}, "needs agent"),
        ({"fence": {"provider": "aws", "action": "reboot"}}, "aws stops the instance"),
        ({"fencing": False, "fence": {"provider": "aws"}}, "spec.fencing is false"),
        ({"fence": {"secretName": "x"}}, "no provider here, and none by flag"),
    ],
)
def test_a_policy_fence_that_cannot_work_makes_the_policy_invalid(
    spec: dict[str, Any], why: str
) -> None:
    p = parse_policy(policy(spec), Config())
    assert p.cfg is None and p.error is not None and why in p.error


def test_a_policy_may_turn_the_flags_fence_off() -> None:
    base = Config(fence=FenceSpec(Provider.AWS))
    p = parse_policy(policy({"fencing": False}), base)
    assert p.cfg is not None and not p.cfg.fencing and p.cfg.removal_mode is RemovalMode.DELETE


def test_the_address_template_labels_are_parsed_from_nodes() -> None:
    cfg = Config(fence=parse_fence_spec({"addressTemplate": "{label:bmc/ip}"}, "f", FenceSpec()))
    assert "bmc/ip" in cfg.relevant_labels


# -- removal modes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("removal", "fenced", "mode", "taints", "deletes"),
    [
        (Removal.AUTO, False, RemovalMode.DELETE, False, True),
        (Removal.AUTO, True, RemovalMode.BOTH, True, True),
        (Removal.DELETE, True, RemovalMode.DELETE, False, True),
        (Removal.OUT_OF_SERVICE, False, RemovalMode.OUT_OF_SERVICE, True, False),
        (Removal.BOTH, False, RemovalMode.BOTH, True, True),
    ],
)
def test_every_removal_mode_resolves_to_its_steps(
    removal: Removal, fenced: bool, mode: RemovalMode, taints: bool, deletes: bool
) -> None:
    cfg = Config(removal=removal, fence=FenceSpec(Provider.AWS) if fenced else FenceSpec())
    assert cfg.removal_mode is mode
    assert (mode.taints, mode.deletes) == (taints, deletes)


def test_an_unknown_removal_mode_never_reaches_a_removal() -> None:
    with pytest.raises(ValueError):
        Config(removal="nuke")  # type: ignore[arg-type]
    assert Config(removal="both").removal is Removal.BOTH  # type: ignore[arg-type]


# -- what is fenced ------------------------------------------------------------------------


def test_aws_targets_the_instance_of_the_fresh_reads_provider_id() -> None:
    spec = FenceSpec(Provider.AWS)
    t = target_for(spec, node_obs(provider_id="aws:///eu-west-1b/i-0abc"))
    assert (t.uid, t.instance) == ("uid-1", "i-0abc")
    assert aws_region(t.provider_id) == "eu-west-1"
    assert aws_instance_id("aws:////i-0def") == "i-0def"
    # A machine re-created under the name: another uid, another instance. The target is
    # whatever the fresh read shows, never the old machine by its name.
    again = target_for(spec, node_obs(uid="uid-2", provider_id="aws:///eu-west-1b/i-0new"))
    assert (again.uid, again.instance) == ("uid-2", "i-0new")


@pytest.mark.parametrize("pid", [None, "", "gce://p/z/n", "aws:///eu-west-1b/", "aws:///z/vol-1"])
def test_aws_without_a_usable_provider_id_has_no_target(pid: str | None) -> None:
    with pytest.raises(NoTarget):
        target_for(FenceSpec(Provider.AWS), node_obs(provider_id=pid))


def test_the_bmc_address_annotation_wins_over_the_template() -> None:
    spec = FenceSpec(Provider.REDFISH, address_template="https://{name}.bmc", secret_name="s")
    assert target_for(spec, node_obs()).address == "https://w1.bmc"
    t = target_for(spec, node_obs(annotations={ANN_FENCE_ADDRESS: "https://10.0.0.9"}))
    assert t.address == "https://10.0.0.9"


def test_the_template_reads_labels_and_a_missing_one_is_no_target() -> None:
    assert render_address("{label:rack}-{name}", "w1", {"rack": "r7"}) == "r7-w1"
    with pytest.raises(NoTarget, match="no label 'rack'"):
        render_address("{label:rack}-{name}", "w1", {})
    with pytest.raises(NoTarget):
        target_for(FenceSpec(Provider.REDFISH, secret_name="s"), node_obs())


# -- medik8s' fence agent parameters --------------------------------------------------------


def test_agent_options_follow_medik8s_precedence() -> None:
    spec = FenceSpec(
        Provider.FENCE_AGENT,
        agent="fence_ipmilan",
        shared_parameters=(("--lanplus", ""), ("--plug", "{{.NodeName}}"), ("--ipport", "623")),
        node_parameters=(("--ipport", (("w1", "6230"), ("w2", "6231"))),),
    )
    t = Target("w1", "uid-1", address="10.0.0.9")
    opts = agent_options(spec, t, {"username": "admin", "--password": PASSWORD}, FenceAction.OFF)
    assert opts == {
        "--lanplus": "",
        "--plug": "w1",
        "--ipport": "6230",
        "--ip": "10.0.0.9",
        "--password": PASSWORD,
        "--username": "admin",
        "--action": "off",
    }
    assert list(opts)[-1] == "--action"
    text = agent_stdin(opts)
    assert "lanplus=1\n" in text and f"password={PASSWORD}\n" in text and "action=off\n" in text
    with pytest.raises(ValueError, match="both in the Secret and in the spec"):
        agent_options(spec, t, {"ipport": "1"}, FenceAction.OFF)
    with pytest.raises(ValueError, match="not a fence agent parameter"):
        agent_options(spec, t, {"pass word": "x"}, FenceAction.OFF)


def test_credentials_show_keys_never_values() -> None:
    c = Credentials({"username": "admin", "password": PASSWORD})
    assert PASSWORD not in repr(c) and PASSWORD not in str(c) and "password" in repr(c)
    assert c.scrub(f"login admin:{PASSWORD} refused") == "login <redacted>:<redacted> refused"


# -- local programs: the command, a fence agent's process discipline -------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _run(coro: Any) -> Any:
    return anyio.run(lambda: coro)


def test_command_provider_keeps_the_fence_command_behaviour(tmp_path: Path) -> None:
    out = tmp_path / "env"
    ok = _script(
        tmp_path / "off",
        f'echo "$NODE_NAME $NODERECOVER_NODE_UID $NODERECOVER_FENCE_ACTION" > {out}\n',
    )
    target = Target("w1", "uid-1")

    async def go(argv: tuple[str, ...], timeout: float = 5.0) -> Any:
        return await fence_node(
            Command(argv, timeout),
            target,
            Credentials(),
            FenceAction.OFF,
            timeout=timeout + 1,
            clock=SystemClock(),
        )

    done = anyio.run(go, (str(ok),))
    assert done.state is PowerState.OFF and out.read_text().split() == ["w1", "uid-1", "off"]
    with pytest.raises(FenceError) as refused:
        anyio.run(go, ("false",))
    assert refused.value.reason is Blocked.FENCE_REFUSED and "exit 1" in refused.value.message
    with pytest.raises(FenceError) as slow:
        anyio.run(go, ("sleep", "5"), 0.3)
    assert slow.value.reason is Blocked.FENCE_UNREACHABLE


def test_a_fence_agent_gets_nothing_on_its_command_line(tmp_path: Path) -> None:
    """The agent is run by path with no argument; every option, the password included, on
    its standard input (what `ps` can never show)."""
    record = tmp_path / "record"
    _script(
        tmp_path / "fence_rec",
        f'echo "argc=$#" > {record}\ncat >> {record}\n'
        'grep -q "action=status" ' + str(record) + " && exit 2\nexit 0\n",
    )
    spec = FenceSpec(
        Provider.FENCE_AGENT, agent="fence_rec", shared_parameters=(("--lanplus", ""),)
    )
    agent = FenceAgent(spec, timeout=5, agent_dir=str(tmp_path))
    creds = Credentials({"password": PASSWORD})
    target = Target("w1", "uid-1", address="10.0.0.9")
    anyio.run(agent.fence, target, creds, FenceAction.OFF)
    lines = record.read_text().splitlines()
    assert lines[0] == "argc=0"
    assert set(lines[1:]) == {"lanplus=1", "ip=10.0.0.9", f"password={PASSWORD}", "action=off"}
    assert anyio.run(agent.confirm, target, creds) is PowerState.OFF


def test_a_fence_agent_that_cannot_power_off_is_not_off_and_leaks_nothing(tmp_path: Path) -> None:
    _script(
        tmp_path / "fence_stuck",
        'read x\necho "Failed: Timed out waiting to power OFF (password was $x)"\nexit 1\n',
    )
    spec = FenceSpec(Provider.FENCE_AGENT, agent="fence_stuck")
    agent = FenceAgent(spec, timeout=5, agent_dir=str(tmp_path))
    with pytest.raises(FenceError) as info:
        anyio.run(
            agent.fence,
            Target("w1", "u", address="a"),
            Credentials({"password": PASSWORD}),
            FenceAction.OFF,
        )
    assert info.value.reason is Blocked.FENCE_NOT_OFF
    assert PASSWORD not in info.value.message and PASSWORD not in str(info.value)


# -- the runner's bounds ------------------------------------------------------------------


@dataclasses.dataclass
class Scripted:
    """A provider whose answers the test scripts (the runner's logic; no wire protocol)."""

    kind: Provider = Provider.REDFISH
    errors: list[FenceError] = dataclasses.field(default_factory=list)
    states: list[PowerState] = dataclasses.field(default_factory=list)
    fences: int = 0

    def self_confirmed(self, action: FenceAction) -> bool:
        return False

    async def check(self, target: Target, creds: Credentials) -> None:
        if self.errors:
            raise self.errors.pop(0)

    async def fence(self, target: Target, creds: Credentials, action: FenceAction) -> None:
        self.fences += 1

    async def confirm(self, target: Target, creds: Credentials) -> PowerState:
        return self.states.pop(0) if self.states else PowerState.ON


def _runner(p: Scripted, timeout: float, tries: int = 3) -> Any:
    async def go() -> Any:
        return await fence_node(
            p,
            Target("w1", "u"),
            Credentials(),
            FenceAction.OFF,
            timeout=timeout,
            clock=SystemClock(),
            rng=random.Random(1),
            tries=tries,
            poll=0.05,
        )

    return anyio.run(go)


def test_the_runner_reads_back_until_off() -> None:
    p = Scripted(states=[PowerState.ON, PowerState.UNKNOWN, PowerState.OFF])
    done = _runner(p, timeout=5)
    assert done.state is PowerState.OFF and p.fences == 1


def test_never_off_is_not_off_within_the_bound() -> None:
    with pytest.raises(FenceError) as info:
        _runner(Scripted(), timeout=0.5)
    assert info.value.reason is Blocked.FENCE_NOT_OFF


def test_retryable_errors_are_retried_a_bounded_number_of_times() -> None:
    err = FenceError(Blocked.FENCE_UNREACHABLE, "down", retryable=True)
    p = Scripted(errors=[err, err], states=[PowerState.OFF])
    assert _runner(p, timeout=30).tries == 3
    with pytest.raises(FenceError) as info:
        _runner(Scripted(errors=[err, err, err, err]), timeout=30)
    assert info.value.reason is Blocked.FENCE_UNREACHABLE


def test_a_refusal_is_not_retried() -> None:
    p = Scripted(errors=[FenceError(Blocked.FENCE_REFUSED, "401")], states=[PowerState.OFF])
    with pytest.raises(FenceError):
        _runner(p, timeout=30)
    assert p.fences == 0


def test_the_registry_matches_every_provider(tmp_path: Path) -> None:
    kinds = {
        Provider.COMMAND: Config(fence_command=("true",)),
        Provider.REDFISH: Config(fence=FenceSpec(Provider.REDFISH, secret_name="s")),
        Provider.AWS: Config(fence=FenceSpec(Provider.AWS)),
        Provider.FENCE_AGENT: Config(fence=FenceSpec(Provider.FENCE_AGENT, agent="fence_x")),
    }
    assert set(kinds) == set(Provider)
    for kind, cfg in kinds.items():
        provider = provider_for(cfg)
        assert provider is not None and provider.kind is kind
    assert provider_for(Config()) is None


# -- in the controller ---------------------------------------------------------------------

NS = "noderecover"


async def _remediate(kube: FakeKube, harness_factory: Start, port: int) -> Harness:
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    spec = FenceSpec(
        Provider.REDFISH,
        secret_name="noderecover-fence",
        address_template=f"http://127.0.0.1:{port}",
    )
    h: Harness = await harness_factory(
        grace=5, drain_timeout=5, fence=spec, fence_timeout=3.0, namespace=NS
    )
    kube.set_node_ready("w1", "Unknown")
    return h


async def test_a_missing_secret_is_a_visible_block_and_the_node_is_kept(
    kube: FakeKube, harness_factory: Start, caplog: pytest.LogCaptureFixture
) -> None:
    h = await _remediate(kube, harness_factory, free_port())
    await h.until(
        lambda: h.controller.blocked.get("w1") == Blocked.FENCE_SECRET, advance=0.5, real_timeout=20
    )
    assert any(r == "NodeRecoverFenceFailed" for _, r, _ in h.events)
    assert any(r == "NodeRecoverBlocked" for _, r, _ in h.events)
    node = kube.get_node("w1")
    assert node is not None
    assert not any(
        t["key"] == "node.kubernetes.io/out-of-service" for t in node["spec"].get("taints", [])
    )
    assert not kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")
    assert kube.requests_matching("GET", rf"^/api/v1/namespaces/{NS}/secrets/noderecover-fence$")
    assert phase(h, "w1") is not Phase.REMOVED


async def test_an_unreachable_bmc_is_a_visible_block_with_no_credential_anywhere(
    kube: FakeKube, harness_factory: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kube.set_secret(NS, "noderecover-fence", {"username": "admin", "password": PASSWORD})
    h = await _remediate(kube, harness_factory, free_port())
    await h.until(
        lambda: h.controller.blocked.get("w1") == Blocked.FENCE_UNREACHABLE,
        advance=0.5,
        real_timeout=30,
    )
    fence_events = [m for _, r, m in h.messages if r == "NodeRecoverFenceFailed"]
    assert fence_events and "did not prove it off (fence-unreachable)" in fence_events[0]
    assert "no out-of-service taint" in fence_events[0]
    texts = [m for _, _, m in h.messages] + [r.getMessage() for r in caplog.records]
    assert not any(PASSWORD in t for t in texts)
    node = kube.get_node("w1")
    assert node is not None and node["metadata"]["uid"]
    assert not any(
        t["key"] == "node.kubernetes.io/out-of-service" for t in node["spec"].get("taints", [])
    )
    assert not kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")
    # The metric says which provider and why.
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        "noderecover_fences_total", {"provider": "redfish", "outcome": "fence-unreachable"}
    )
    assert value is not None and value >= 1


# -- the write path: the rule applied again right before the power request ------------------


@dataclasses.dataclass
class SlowCheck(Scripted):
    """A provider whose check takes (fake) time, during which `meanwhile` happens."""

    clock: FakeClock | None = None
    meanwhile: Any = None

    async def check(self, target: Target, creds: Credentials) -> None:
        assert self.clock is not None
        self.clock.advance(3.0)  # longer than EVIDENCE_SLACK
        if self.meanwhile is not None:
            self.meanwhile()


async def _fence_through_the_write_path(
    kube: FakeKube, client: KubeClient, meanwhile: Any
) -> tuple[SlowCheck, BaseException | None]:
    kube.add_node("w1", "Unknown")
    kube.patch_node("w1", {"spec": {"providerID": "aws:///eu-west-1a/i-0aaa"}})
    node = kube.get_node("w1")
    assert node is not None
    clock = FakeClock()
    writes = WritePath(client, clock, make_config(watch_node_leases=False), lambda: True)
    ev = await writes.evidence("w1", node["metadata"]["uid"], None, Step.FENCE)
    provider = SlowCheck(
        kind=Provider.AWS, states=[PowerState.OFF], clock=clock, meanwhile=meanwhile
    )
    try:
        await writes.fence(ev, provider, FenceSpec(Provider.AWS), Credentials(), 30.0)
    except (Held, FenceError) as exc:
        return provider, exc
    return provider, None


async def test_the_fence_is_sent_after_a_slow_check_only_on_a_new_read(
    kube: FakeKube, client: KubeClient
) -> None:
    provider, err = await _fence_through_the_write_path(kube, client, None)
    assert err is None and provider.fences == 1
    reads = kube.requests_matching("GET", r"^/api/v1/nodes/w1$")
    assert len(reads) == 2  # the evidence, and again after the 3 s check


async def test_a_node_back_during_the_check_is_not_fenced(
    kube: FakeKube, client: KubeClient
) -> None:
    provider, err = await _fence_through_the_write_path(
        kube, client, lambda: kube.set_node_ready("w1", "True")
    )
    assert isinstance(err, Held) and provider.fences == 0


async def test_another_machine_under_the_node_during_the_check_is_not_fenced(
    kube: FakeKube, client: KubeClient
) -> None:
    provider, err = await _fence_through_the_write_path(
        kube,
        client,
        lambda: kube.patch_node("w1", {"spec": {"providerID": "aws:///eu-west-1a/i-0bbb"}}),
    )
    assert isinstance(err, FenceError) and err.reason is Blocked.FENCE_NO_TARGET
    assert provider.fences == 0
