"""The fence providers against real emulators, each started and stopped here on 127.0.0.1:
sushy-tools' Redfish emulator (fake driver: a power change applies 1-11 s after the request),
moto's EC2 server, and a pyghmi BMC driven by Debian's real fence_ipmilan; fence_redfish
through the Redfish emulator. What the machine's side says is read independently of the
provider under test (a raw Redfish GET, boto3 against moto, the BMC process's own state).

Failures are checked for their Blocked reason and for the credentials never showing up: not
in the error, not in any log record, not in the agent's command line.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest

from noderecover.base.clock import SystemClock
from noderecover.core.fencing import FenceAction, FenceSpec, Provider, Target
from noderecover.core.reasons import Blocked
from noderecover.fencing.agent import FenceAgent
from noderecover.fencing.aws import Aws
from noderecover.fencing.provider import Credentials, FenceError, PowerState
from noderecover.fencing.redfish import Redfish
from noderecover.fencing.runner import Fenced, fence_node
from tests.emulators import (
    Ec2,
    IpmiBmc,
    RedfishSystem,
    fence_agents_installed,
    free_port,
    ipmi_bmc,
    moto_server,
    sushy_emulator,
)

pytestmark = pytest.mark.emulators

PASSWORD = "Sup3r-s3cret-pw"
UUID_A = "aaaaaaaa-0000-4000-8000-00000000000a"
UUID_B = "bbbbbbbb-0000-4000-8000-00000000000b"
CLOCK = SystemClock()


@pytest.fixture
def agents() -> None:
    """Debian's fence agents and ipmitool (hack/test.sh installs them with apt): never a skip."""
    assert fence_agents_installed(), (
        "Debian's fence-agents and ipmitool are missing: hack/test.sh installs them "
        "(apt-get install fence-agents ipmitool)"
    )


def _fence(provider: Any, target: Target, creds: Credentials, timeout: float = 40.0) -> Fenced:
    import anyio

    async def go() -> Fenced:
        return await fence_node(
            provider,
            target,
            creds,
            FenceAction.OFF,
            timeout=timeout,
            clock=CLOCK,
            rng=random.Random(7),
        )

    return anyio.run(go)


def _fence_error(
    provider: Any, target: Target, creds: Credentials, timeout: float = 40.0
) -> FenceError:
    with pytest.raises(FenceError) as info:
        _fence(provider, target, creds, timeout)
    return info.value


def _no_secret_anywhere(
    err: BaseException | None, caplog: pytest.LogCaptureFixture, *secrets: str
) -> None:
    texts = [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    if err is not None:
        texts += [str(err), repr(err), getattr(err, "message", "")]
    for secret in secrets:
        assert not any(secret in t for t in texts), f"a credential leaked: {secret!r}"


def _redfish_power(url: str, uuid: str, user: str, password: str) -> str:
    """The emulator's own answer (a plain GET, not sushy)."""
    req = urllib.request.Request(f"{url}/redfish/v1/Systems/{uuid}")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as reply:
        return str(json.load(reply)["PowerState"])


# -- redfish (sushy) against sushy-tools ----------------------------------------------------


@pytest.fixture
def redfish(tmp_path: Path) -> Iterator[Any]:
    systems = [RedfishSystem(UUID_A, "node-a"), RedfishSystem(UUID_B, "node-b")]
    with sushy_emulator(tmp_path, systems, password=PASSWORD) as emulator:
        yield emulator


def _redfish_spec(uuid: str) -> FenceSpec:
    return FenceSpec(Provider.REDFISH, secret_name="bmc", system=f"/redfish/v1/Systems/{uuid}")


def test_redfish_forces_off_and_reads_it_back(
    redfish: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    creds = Credentials({"username": "admin", "password": PASSWORD})
    target = Target("node-a", "uid-a", address=redfish.url)
    assert _redfish_power(redfish.url, UUID_A, "admin", PASSWORD) == "On"
    done = _fence(Redfish(_redfish_spec(UUID_A), call_timeout=5), target, creds)
    assert done.state is PowerState.OFF
    # The emulator applies the change 1-11 s after the request: read back, not assumed.
    assert 0.5 < done.seconds < 20
    assert _redfish_power(redfish.url, UUID_A, "admin", PASSWORD) == "Off"
    # Only the system named: the other machine on that BMC is still on.
    assert _redfish_power(redfish.url, UUID_B, "admin", PASSWORD) == "On"
    _no_secret_anywhere(None, caplog, PASSWORD)


def test_redfish_wrong_password_is_a_refusal_and_leaks_nothing(
    redfish: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-but-secret"
    creds = Credentials({"username": "admin", "password": wrong})
    err = _fence_error(
        Redfish(_redfish_spec(UUID_A), call_timeout=5),
        Target("node-a", "uid-a", address=redfish.url),
        creds,
    )
    assert err.reason is Blocked.FENCE_REFUSED
    assert "401" in err.message
    assert _redfish_power(redfish.url, UUID_A, "admin", PASSWORD) == "On"
    _no_secret_anywhere(err, caplog, wrong, PASSWORD)


def test_redfish_no_such_system_is_refused(redfish: Any) -> None:
    creds = Credentials({"username": "admin", "password": PASSWORD})
    spec = _redfish_spec("cccccccc-0000-4000-8000-00000000000c")
    err = _fence_error(Redfish(spec, call_timeout=5), Target("n", "u", address=redfish.url), creds)
    assert err.reason is Blocked.FENCE_REFUSED


def test_redfish_power_off_disabled_on_the_bmc_is_refused(tmp_path: Path) -> None:
    """A BMC that refuses the power-off (SUSHY_EMULATOR_DISABLE_POWER_OFF: it answers 400)."""
    with sushy_emulator(
        tmp_path,
        [RedfishSystem(UUID_A, "node-a")],
        password=PASSWORD,
        extra="SUSHY_EMULATOR_DISABLE_POWER_OFF = True\n",
    ) as emu:
        creds = Credentials({"username": "admin", "password": PASSWORD})
        err = _fence_error(
            Redfish(_redfish_spec(UUID_A), call_timeout=5), Target("n", "u", address=emu.url), creds
        )
        assert err.reason is Blocked.FENCE_REFUSED
        assert _redfish_power(emu.url, UUID_A, "admin", PASSWORD) == "On"


def test_redfish_bmc_that_never_answers_is_unreachable_within_the_bound() -> None:
    """A BMC that accepts the connection and never answers: bounded, fence-unreachable."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    try:
        creds = Credentials({"username": "admin", "password": PASSWORD})
        start = time.monotonic()
        err = _fence_error(
            Redfish(_redfish_spec(UUID_A), call_timeout=1),
            Target("n", "u", address=f"http://127.0.0.1:{port}"),
            creds,
            timeout=6,
        )
        assert err.reason is Blocked.FENCE_UNREACHABLE
        assert time.monotonic() - start < 10
    finally:
        server.close()


def test_redfish_nothing_listening_is_unreachable() -> None:
    port = free_port()
    creds = Credentials({"username": "admin", "password": PASSWORD})
    err = _fence_error(
        Redfish(_redfish_spec(UUID_A), call_timeout=1),
        Target("n", "u", address=f"http://127.0.0.1:{port}"),
        creds,
        timeout=8,
    )
    assert err.reason is Blocked.FENCE_UNREACHABLE


# -- aws (boto3) against moto's EC2 server ---------------------------------------------------


def _ec2(server: Ec2) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=server.url,
        region_name=server.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _run_instance(ec2: Any) -> str:
    image = ec2.describe_images()["Images"][0]["ImageId"]
    reply = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    return str(reply["Instances"][0]["InstanceId"])


def _state(ec2: Any, instance: str) -> str:
    reply = ec2.describe_instances(InstanceIds=[instance])
    return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


@pytest.fixture
def ec2_server(tmp_path: Path) -> Iterator[Ec2]:
    with moto_server(tmp_path) as server:
        yield server


AWS_KEYS = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": PASSWORD}


def test_aws_stops_the_instance_named_by_the_provider_id(
    ec2_server: Ec2, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ec2 = _ec2(ec2_server)
    mine, other = _run_instance(ec2), _run_instance(ec2)
    spec = FenceSpec(Provider.AWS, endpoint=ec2_server.url)
    target = Target("node-a", "uid-a", instance=mine, provider_id=f"aws:///us-east-1a/{mine}")
    done = _fence(Aws(spec, call_timeout=5), target, Credentials(AWS_KEYS))
    assert done.state is PowerState.OFF
    assert _state(ec2, mine) == "stopped"
    assert _state(ec2, other) == "running"
    _no_secret_anywhere(None, caplog, PASSWORD)


def test_aws_builds_one_client_per_fence(ec2_server: Ec2, monkeypatch: pytest.MonkeyPatch) -> None:
    """check, stop and every confirm poll of one fence share a client (building one reads
    botocore's service model: 0.1-2 s each on a loaded node); other keys get their own."""
    built: list[str] = []
    real = boto3.session.Session.client

    def counting(self: Any, *args: Any, **kw: Any) -> Any:
        built.append(str(kw.get("aws_access_key_id")))
        return real(self, *args, **kw)

    monkeypatch.setattr(boto3.session.Session, "client", counting)
    ec2 = _ec2(ec2_server)
    built.clear()
    mine = _run_instance(ec2)
    spec = FenceSpec(Provider.AWS, endpoint=ec2_server.url)
    target = Target("node-a", "uid-a", instance=mine, provider_id=f"aws:///us-east-1a/{mine}")
    provider = Aws(spec, call_timeout=5)
    done = _fence(provider, target, Credentials(AWS_KEYS))
    assert done.state is PowerState.OFF
    assert built == [AWS_KEYS["aws_access_key_id"]]
    other = {**AWS_KEYS, "aws_access_key_id": "AKIDOTHER"}
    anyio.run(provider.check, target, Credentials(other))
    assert built == [AWS_KEYS["aws_access_key_id"], "AKIDOTHER"]


def test_aws_unknown_instance_is_refused(ec2_server: Ec2) -> None:
    spec = FenceSpec(Provider.AWS, endpoint=ec2_server.url)
    gone = "i-0123456789abcdef0"
    target = Target("node-a", "uid-a", instance=gone, provider_id=f"aws:///us-east-1a/{gone}")
    err = _fence_error(Aws(spec, call_timeout=5), target, Credentials(AWS_KEYS))
    assert err.reason is Blocked.FENCE_REFUSED
    assert "InvalidInstanceID" in err.message


def test_aws_endpoint_down_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    spec = FenceSpec(Provider.AWS, endpoint=f"http://127.0.0.1:{free_port()}")
    i = "i-0123456789abcdef0"
    target = Target("node-a", "uid-a", instance=i, provider_id=f"aws:///us-east-1a/{i}")
    err = _fence_error(Aws(spec, call_timeout=1), target, Credentials(AWS_KEYS), timeout=8)
    assert err.reason is Blocked.FENCE_UNREACHABLE
    _no_secret_anywhere(err, caplog, PASSWORD)


def test_aws_secret_without_keys_is_a_secret_block(ec2_server: Ec2) -> None:
    spec = FenceSpec(Provider.AWS, endpoint=ec2_server.url)
    i = _run_instance(_ec2(ec2_server))
    target = Target("node-a", "uid-a", instance=i, provider_id=f"aws:///us-east-1a/{i}")
    err = _fence_error(Aws(spec), target, Credentials({"aws_access_key_id": "x"}))
    assert err.reason is Blocked.FENCE_SECRET
    assert _state(_ec2(ec2_server), i) == "running"


# -- fence-agent: Debian's fence_ipmilan against a pyghmi BMC, fence_redfish against sushy-tools


def _ipmi_spec() -> FenceSpec:
    # medik8s' model: shared parameters, per-node parameters; the Secret adds the password.
    return FenceSpec(
        Provider.FENCE_AGENT,
        agent="fence_ipmilan",
        shared_parameters=(("--lanplus", ""), ("--cipher", "3"), ("--username", "admin")),
    )


def _ipmi_target(bmc: IpmiBmc, spec: FenceSpec) -> tuple[FenceSpec, Target]:
    spec = FenceSpec(
        spec.provider,
        agent=spec.agent,
        shared_parameters=spec.shared_parameters,
        node_parameters=(("--ipport", (("node-a", str(bmc.port)),)),),
    )
    return spec, Target("node-a", "uid-a", address="127.0.0.1")


class _Cmdlines:
    """Every command line of a fence agent seen in /proc while the fence runs."""

    def __init__(self, needle: str) -> None:
        self.needle = needle
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scan, daemon=True)

    def _scan(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                line = raw.replace(b"\0", b" ").decode(errors="replace")
                if self.needle in line:
                    self.seen.add(line)
            time.sleep(0.01)

    def __enter__(self) -> _Cmdlines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.usefixtures("agents")
def test_fence_ipmilan_powers_the_bmc_off_with_nothing_on_its_command_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ipmi_bmc(tmp_path, password=PASSWORD) as bmc:
        spec, target = _ipmi_target(bmc, _ipmi_spec())
        assert bmc.power == "on"
        with _Cmdlines("/usr/sbin/fence_ipmilan") as ps:
            done = _fence(FenceAgent(spec, timeout=30), target, Credentials({"password": PASSWORD}))
        assert done.state is PowerState.OFF
        assert bmc.power == "off"
        assert ps.seen, "the agent was never seen running"
        assert all(PASSWORD not in line and "--" not in line for line in ps.seen), ps.seen
    _no_secret_anywhere(None, caplog, PASSWORD)


@pytest.mark.usefixtures("agents")
def test_fence_ipmilan_wrong_password_is_refused_and_leaks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-but-secret"
    with ipmi_bmc(tmp_path, password=PASSWORD) as bmc:
        spec, target = _ipmi_target(bmc, _ipmi_spec())
        err = _fence_error(FenceAgent(spec, timeout=30), target, Credentials({"password": wrong}))
        assert err.reason in (Blocked.FENCE_REFUSED, Blocked.FENCE_UNREACHABLE)
        assert bmc.power == "on"
    _no_secret_anywhere(err, caplog, wrong, PASSWORD)


@pytest.mark.usefixtures("agents")
def test_fence_ipmilan_on_a_bmc_that_never_powers_off_is_not_off(tmp_path: Path) -> None:
    """The BMC accepts the power-off and the machine stays on (a provider that lies): the
    agent's own read-back catches it, and the node is not called off."""
    with ipmi_bmc(tmp_path, password=PASSWORD, ignore_off=True) as bmc:
        spec, target = _ipmi_target(bmc, _ipmi_spec())
        spec = FenceSpec(
            spec.provider,
            agent=spec.agent,
            shared_parameters=(*spec.shared_parameters, ("--power-timeout", "3")),
            node_parameters=spec.node_parameters,
        )
        err = _fence_error(
            FenceAgent(spec, timeout=30), target, Credentials({"password": PASSWORD})
        )
        assert err.reason is Blocked.FENCE_NOT_OFF
        assert bmc.power == "on"


@pytest.mark.usefixtures("agents")
def test_fence_redfish_through_the_emulator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    systems = [RedfishSystem(UUID_A, "node-a"), RedfishSystem(UUID_B, "node-b")]
    with sushy_emulator(tmp_path, systems, password=PASSWORD, tls=True) as emu:
        port = emu.url.rsplit(":", 1)[1]
        spec = FenceSpec(
            Provider.FENCE_AGENT,
            agent="fence_redfish",
            shared_parameters=(("--ipport", port), ("--ssl-insecure", "")),
            node_parameters=(("--systems-uri", (("node-a", f"/redfish/v1/Systems/{UUID_A}"),)),),
        )
        creds = Credentials({"username": "admin", "password": PASSWORD})
        done = _fence(
            FenceAgent(spec, timeout=60), Target("node-a", "uid-a", address="127.0.0.1"), creds, 90
        )
        assert done.state is PowerState.OFF
        # The emulator's own word (a raw GET over TLS, no verification: self-signed).
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for uuid, want in ((UUID_A, "Off"), (UUID_B, "On")):
            req = urllib.request.Request(f"{emu.url}/redfish/v1/Systems/{uuid}")
            token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
            with urllib.request.urlopen(req, timeout=5, context=ctx) as reply:
                assert json.load(reply)["PowerState"] == want
    _no_secret_anywhere(None, caplog, PASSWORD)


# -- the wire: an emulator's power-off stops the node's heartbeats ----------------------------


class _Kwoks:
    """The wire's side effects on a control plane (kill/revive a node's kwok), recorded. The
    e2e tests (tests/e2e/test_volumes.py) wire the real TestCluster."""

    def __init__(self, *nodes: str) -> None:
        self.alive = dict.fromkeys(nodes, True)
        self.calls: list[tuple[str, str]] = []

    def kill_node(self, name: str) -> None:
        self.alive[name] = False
        self.calls.append(("kill", name))

    def revive_node(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        self.alive[name] = True
        self.calls.append(("revive", name))

    def node_alive(self, name: str) -> bool:
        return self.alive[name]


def _until(check: Any, within: float, what: str) -> None:
    end = time.monotonic() + within
    while not check():
        assert time.monotonic() < end, f"not within {within:g}s: {what}"
        time.sleep(0.1)


@pytest.mark.usefixtures("agents")
def test_power_wire_stops_heartbeats_only_of_the_machine_powered_off(tmp_path: Path) -> None:
    """Each emulator wired to a node: a power-off through each one's own protocol (Redfish
    ForceOff, EC2 StopInstances, IPMI chassis power off by ipmitool) kills that node's
    heartbeats, and only that node's; powered on again, they come back. A machine still on
    (the other Redfish system, the other instance) is never touched."""
    import subprocess

    from tests.emulators import PowerWire, ec2_power, ipmi_power, redfish_power

    (tmp_path / "rf").mkdir()
    (tmp_path / "ipmi").mkdir()
    (tmp_path / "ec2").mkdir()
    systems = [RedfishSystem(UUID_A, "node-a"), RedfishSystem(UUID_B, "node-b")]
    with (
        sushy_emulator(tmp_path / "rf", systems, password=PASSWORD) as rf,
        ipmi_bmc(tmp_path / "ipmi", password=PASSWORD) as bmc,
        moto_server(tmp_path / "ec2") as server,
    ):
        ec2 = _ec2(server)
        mine, other = _run_instance(ec2), _run_instance(ec2)
        kwoks = _Kwoks("rf-a", "rf-b", "ipmi", "ec2", "ec2-other")
        with PowerWire(kwoks, period=0.1) as wire:
            wire.wire("rf-a", redfish_power(rf.url, UUID_A, "admin", PASSWORD))
            wire.wire("rf-b", redfish_power(rf.url, UUID_B, "admin", PASSWORD))
            wire.wire("ipmi", ipmi_power(bmc))
            wire.wire("ec2", ec2_power(server, mine))
            wire.wire("ec2-other", ec2_power(server, other))
            assert all(wire.power(n) == "on" for n in kwoks.alive), wire.changes
            assert kwoks.calls == []

            # Redfish ForceOff by a raw POST (the emulator applies it 1-11 s later).
            token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
            req = urllib.request.Request(
                f"{rf.url}/redfish/v1/Systems/{UUID_A}/Actions/ComputerSystem.Reset",
                data=json.dumps({"ResetType": "ForceOff"}).encode(),
                headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=5) as reply:
                assert reply.status in (200, 202, 204)
            ec2.stop_instances(InstanceIds=[mine], Force=True)
            ipmitool = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1"]
            ipmitool += ["-p", str(bmc.port), "-U", "admin", "-E"]
            env = {**os.environ, "IPMI_PASSWORD": PASSWORD}
            subprocess.run([*ipmitool, "chassis", "power", "off"], env=env, check=True, timeout=30)

            _until(lambda: not kwoks.alive["ipmi"] and not kwoks.alive["ec2"], 10, "ipmi, ec2")
            _until(lambda: not kwoks.alive["rf-a"], 20, "rf-a off")
            assert kwoks.alive["rf-b"] and kwoks.alive["ec2-other"], kwoks.calls
            assert sorted(kwoks.calls) == [("kill", "ec2"), ("kill", "ipmi"), ("kill", "rf-a")]
            off = [n for _, n, p in wire.changes if p == "off"]
            assert sorted(off) == ["ec2", "ipmi", "rf-a"]
            assert all(wire.off_at(n) is not None for n in off)
            assert wire.off_at("rf-b") is None

            # On again: the heartbeats come back (a reboot, an operator's power-on).
            subprocess.run([*ipmitool, "chassis", "power", "on"], env=env, check=True, timeout=30)
            ec2.start_instances(InstanceIds=[mine])
            _until(lambda: kwoks.alive["ipmi"] and kwoks.alive["ec2"], 10, "ipmi, ec2 on")
            assert ("revive", "ipmi") in kwoks.calls and ("revive", "ec2") in kwoks.calls
        assert not wire.errors, wire.errors
