"""The image, built from the Dockerfile by buildah, running the takeover on the real control plane.

The image is built (or found in the cache) by ``noderecover_testkit.image``: a Debian bookworm
base made by mmdebstrap, then ``buildah build --build-arg BASE=<it>`` of the project's own
Dockerfile. The controller here is the image's entrypoint (``noderecover run``), run by
``buildah run`` in a working container of the image (chroot isolation, host network: the test
API server is on 127.0.0.1) as the image's non-root user, with only a kubeconfig of the
least-privilege ServiceAccount mounted in. It remediates a dead node as the seed scenario does.

The image also carries what the built-in fence providers need: run inside its filesystem as
its user, the ClusterLabs fence agents (Debian's fence-agents, and ipmitool for fence_ipmilan)
answer, and noderecover's own providers (redfish: sushy; aws: boto3; fence-agent) reach real
emulators on 127.0.0.1 (a pyghmi BMC, sushy-tools' Redfish emulator, moto's EC2 server).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from noderecover_testkit import image
from noderecover_testkit.processes import free_port
from noderecover_testkit.replicas import NAMESPACE, Replica, Replicas, Timeline, wait

from .common import FAST, PVC, no_403, seed

pytestmark = pytest.mark.e2e

KUBECONFIG_INSIDE = "/etc/noderecover/kubeconfig"


@pytest.fixture(scope="module")
def built() -> image.Built:
    """The image of this checkout (built now if the cache lacks it); its size printed."""
    t0 = time.monotonic()
    b = image.ensure_image()
    took = time.monotonic() - t0
    print(f"\n[image] {b.summary()}" + (f"; ready in {took:.0f}s" if took > 1 else " (cached)"))
    return b


@pytest.fixture
def container(built: image.Built) -> Iterator[str]:
    """A working container of the image (removed at the end)."""
    name = f"noderecover-e2e-{uuid.uuid4().hex[:8]}"
    image.buildah("from", "--pull-never", "--name", name, built.name)
    try:
        yield name
    finally:
        subprocess.run(
            image.buildah_argv("rm", name),
            capture_output=True,
            env=image.buildah_env(),
            check=False,
        )


def self_contained(kubeconfig: Path, out: Path) -> Path:
    """``kubeconfig`` with its CA file inlined: the container sees only this one file."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    for c in cfg["clusters"]:
        ca = Path(c["cluster"].pop("certificate-authority"))
        c["cluster"]["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    out.write_text(yaml.safe_dump(cfg))
    out.chmod(0o644)  # readable by the image's user
    return out


def controller_pid(r: Replica) -> int:
    """The pid of the controller process under ``buildah run`` (its process group)."""

    def find() -> int | None:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(int(d.name)) != r.proc.pid:
                    continue
                argv = (d / "cmdline").read_bytes().split(b"\0")
                # The script's shebang: the venv's python runs .../bin/noderecover (its
                # parent, buildah-chroot-exec, names the script too).
                if b"/bin/python" in argv[0] and argv[1].endswith(b"/bin/noderecover"):
                    return int(d.name)
        return None

    pid: int = wait(find, 10, "the controller process under buildah run")
    return pid


def test_image_takes_over_a_dead_nodes_statefulset_pod(
    nr: Replicas, container: str, built: image.Built, tmp_path: Path
) -> None:
    c = nr.cluster
    cfg = image.config(built.name)
    user, entrypoint = cfg["User"], cfg["Entrypoint"]
    assert entrypoint == ["noderecover", "run"]
    assert isinstance(user, str) and user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    node, pvc, _ = seed(c)
    kubeconfig = self_contained(nr.kubeconfig, tmp_path / "kubeconfig")
    port = free_port()
    argv = image.run_argv(
        container,
        user,
        [(kubeconfig, KUBECONFIG_INSIDE)],
        {"POD_NAME": "image-a"},
        [
            *entrypoint,
            "--kubeconfig",
            KUBECONFIG_INSIDE,
            "--http-bind",
            f"127.0.0.1:{port}",
            "--log-format",
            "json",
            "--leader-elect",
            "--lease-namespace",
            NAMESPACE,
            *FAST,
        ],
    )
    r = nr.start_argv("image-a", argv, port)
    assert nr.leader() is r
    # It runs from the image's filesystem, as the image's user, not from this checkout.
    pid = controller_pid(r)
    root = Path(f"/proc/{pid}/root")
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["Uid"].split()[0] == user.split(":")[0]
    assert (root / "opt/noderecover/bin/noderecover").is_file()
    print(f"[image] controller pid {pid}: exe {os.readlink(f'/proc/{pid}/exe')}")
    assert os.readlink(f"/proc/{pid}/exe").endswith("/usr/bin/python3.11")  # Debian's
    assert "bookworm" in (root / "etc/os-release").read_text()
    assert not (root / "work").exists() and not (root / "root/.cache").exists()

    tl = Timeline(c, node).start()
    c.kill_node(node)
    tl.mark("heartbeats stop (kwok killed)")
    try:
        moved = c.wait_pod_running("mysql-0", timeout=150, not_on=node)
        tl.mark(f"pod Running on another node ({moved['spec']['nodeName']})")
        wait(lambda: c.node(node) is None, 60, f"node {node} deleted")
        time.sleep(0.5)  # the timeline's next poll (every 0.2 s) sees it too
    finally:
        tl.stop()
        print(f"\ntimeline (seconds since the node died):\n{tl.render()}")
    order = ["heartbeats stop", "node cordoned", "node deleted"]
    times = [tl.at(k) for k in order]
    assert None not in times, tl.marks
    assert times == sorted(times), tl.marks  # type: ignore[type-var]
    assert [
        v["persistentVolumeClaim"]["claimName"]
        for v in moved["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ] == ["pvc-mysql-0"]
    assert c.get(PVC)["metadata"]["uid"] == pvc["metadata"]["uid"]
    assert not tl.cordoned_others
    assert r.metric("noderecover_actions_total", action="delete", result="ok") == 1
    assert r.metric("noderecover_leader") == 1
    no_403(r)
    # A clean stop, as a kubelet's SIGTERM to the container's process: the controller exits 0
    # and buildah run with it.
    os.kill(pid, signal.SIGTERM)
    assert r.proc.wait(30) == 0, nr.tails(20)


# ------------------------------------------------------------ what the fence providers need
PROBE_INSIDE = "/etc/noderecover/probe.json"
PASSWORD = "Im4ge-probe-pw"
UUID = "dddddddd-0000-4000-8000-00000000000d"

#: Run by the image's own interpreter (the controller's venv), as the image's user: each
#: built-in provider, as the controller builds it, against a real emulator on the host.
PROVIDERS_INSIDE = """
import json, sys
import anyio, boto3, sushy
from noderecover.core.fencing import FenceAction, FenceSpec, Provider, Target
from noderecover.fencing.agent import FenceAgent
from noderecover.fencing.aws import Aws
from noderecover.fencing.provider import Credentials
from noderecover.fencing.redfish import Redfish

p = json.load(open(sys.argv[1]))

async def main():
    out = {"sushy": sushy.__version__, "boto3": boto3.__version__}
    ipmi = FenceSpec(
        Provider.FENCE_AGENT,
        agent="fence_ipmilan",
        shared_parameters=(
            ("--lanplus", ""), ("--cipher", "3"), ("--username", "admin"),
            ("--ipport", str(p["ipmi_port"])),
        ),
    )
    node = Target("node-a", "uid-a", address="127.0.0.1")
    creds = Credentials({"password": p["password"]})
    out["fence_ipmilan before"] = (await FenceAgent(ipmi, 30).confirm(node, creds)).value
    await FenceAgent(ipmi, 30).fence(node, creds, FenceAction.OFF)
    out["fence_ipmilan after off"] = (await FenceAgent(ipmi, 30).confirm(node, creds)).value
    creds = Credentials({"username": "admin", "password": p["password"]})
    agent = FenceSpec(
        Provider.FENCE_AGENT,
        agent="fence_redfish",
        shared_parameters=(
            ("--ipport", p["redfish_port"]), ("--ssl-insecure", ""),
            ("--systems-uri", p["system"]),
        ),
    )
    out["fence_redfish"] = (await FenceAgent(agent, 60).confirm(node, creds)).value
    spec = FenceSpec(Provider.REDFISH, system=p["system"], verify_tls=False)
    bmc = Target("node-a", "uid-a", address=p["redfish_url"])
    out["redfish"] = (await Redfish(spec, 10).confirm(bmc, creds)).value
    spec = FenceSpec(Provider.AWS, endpoint=p["ec2_url"])
    vm = Target("node-a", "uid-a", instance=p["instance"],
                provider_id="aws:///us-east-1a/" + p["instance"])
    keys = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": p["password"]}
    out["aws"] = (await Aws(spec, 10).confirm(vm, Credentials(keys))).value
    print(json.dumps(out))

anyio.run(main)
"""


def _run_inside(
    container: str, user: str, command: list[str], volumes: list[tuple[Path, str]] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        image.run_argv(container, user, volumes or [], {}, command),
        capture_output=True,
        text=True,
        env=image.buildah_env(),
        timeout=180,
        check=False,
    )


def test_image_carries_what_the_fence_providers_need(
    container: str, built: image.Built, tmp_path: Path
) -> None:
    """Inside the image's filesystem, as its user: the fence agents and ipmitool run, and
    every built-in provider reaches its emulator (fence_ipmilan powers the BMC off)."""
    from tests.emulators import (
        RedfishSystem,
        ipmi_bmc,
        moto_server,
        sushy_emulator,
    )

    user = image.config(built.name)["User"]
    assert isinstance(user, str) and user.split(":")[0] != "0"
    for argv, want in (
        (["/usr/sbin/fence_ipmilan", "--version"], r"^\d+\.\d+"),
        (["/usr/sbin/fence_redfish", "--version"], r"^\d+\.\d+"),
        (["ipmitool", "-V"], r"^ipmitool version \d"),
    ):
        ran = _run_inside(container, user, argv)
        assert ran.returncode == 0, (argv, ran.stdout, ran.stderr)
        assert re.search(want, ran.stdout.strip()), (argv, ran.stdout)
        print(f"[image] {argv[0]}: {ran.stdout.strip().splitlines()[0]}")

    for d in ("bmc", "redfish", "ec2"):
        (tmp_path / d).mkdir()
    with (
        ipmi_bmc(tmp_path / "bmc", password=PASSWORD) as bmc,
        sushy_emulator(
            tmp_path / "redfish", [RedfishSystem(UUID, "node-a")], password=PASSWORD, tls=True
        ) as redfish,
        moto_server(tmp_path / "ec2") as ec2_server,
    ):
        ec2 = ec2_server.client()
        ami = ec2.describe_images()["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.micro")[
            "Instances"
        ][0]["InstanceId"]
        probe = tmp_path / "probe.json"
        probe.write_text(
            json.dumps(
                {
                    "password": PASSWORD,
                    "ipmi_port": bmc.port,
                    "redfish_url": redfish.url,
                    "redfish_port": redfish.url.rsplit(":", 1)[1],
                    "system": redfish.system_path(UUID),
                    "ec2_url": ec2_server.url,
                    "instance": instance,
                }
            )
        )
        probe.chmod(0o644)  # readable by the image's user
        assert bmc.power == "on"
        ran = _run_inside(
            container,
            user,
            ["/opt/noderecover/bin/python", "-c", PROVIDERS_INSIDE, PROBE_INSIDE],
            [(probe, PROBE_INSIDE)],
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        got = json.loads(ran.stdout.strip().splitlines()[-1])
        print(f"[image] the providers, run inside the image: {got}")
        assert got["fence_ipmilan before"] == "on"
        assert got["fence_ipmilan after off"] == "off"
        assert bmc.power == "off"  # the BMC's own side: the image's agent powered it off
        assert got["fence_redfish"] == got["redfish"] == got["aws"] == "on"
