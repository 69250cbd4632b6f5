"""Control runs with attachable CSI volumes, WITHOUT noderecover: what each removal does to
the volume of a StatefulSet pod whose node died.

The module runs its own cluster with ``storage="csi"`` (see
:mod:`noderecover_testkit.volumes`): the seed StatefulSet's PVC binds a PersistentVolume of
an attachable CSI driver, the real attach/detach controller attaches it through a
VolumeAttachment that the test-side external attacher marks attached, and the test-side
kubelets report it in ``node.status.volumesInUse`` while the node lives. The tests do by hand,
right after the node went ``Ready=Unknown``, what a remediation does, and time when the pod is
really back: Running *and* its volume attached on the new node.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.replicas import Replicas, sa_kubeconfig
from noderecover_testkit.volumes import (
    ATTACHER_FINALIZER,
    CSI_DRIVER,
    OUT_OF_SERVICE_TAINT,
    RecoveryTimeline,
    attached_nodes,
    recovery_timeline,
    unique_volume_name,
    volume_attachment,
)

from tests.emulators import PowerReader, PowerWire

from .common import FAST, no_403, seed
from .conftest import forget_noderecover, running

pytestmark = pytest.mark.e2e

#: upstream maxWaitForUnmountDuration: how long the attach/detach controller keeps a volume
#: the dead kubelet last reported in use before it force-detaches it.
MAX_WAIT_FOR_UNMOUNT = 360.0


@pytest.fixture(scope="module")
def vcluster(testcluster_bin_dir: Path) -> Iterator[TestCluster]:
    c = TestCluster(bin_dir=testcluster_bin_dir, storage="csi")
    yield from running(c, "volumes")


@pytest.fixture
def vc(vcluster: TestCluster) -> Iterator[TestCluster]:
    vcluster.reset()
    forget_noderecover(vcluster)
    yield vcluster
    vcluster.reset()


def _seed_timeline(
    c: TestCluster,
    node: str,
    pod: dict[str, Any],
    pv: dict[str, Any],
    t: float,
    timeout: float,
    hold: float | None = None,
    on_poll: Callable[[RecoveryTimeline], None] | None = None,
) -> RecoveryTimeline:
    """The seed's `mysql-0` from `node` (its pod and PV as seeded), timed from `t`."""
    return recovery_timeline(
        c,
        "mysql-0",
        old_uid=pod["metadata"]["uid"],
        old_node=node,
        pv=pv["metadata"]["name"],
        start=t,
        timeout=timeout,
        hold=hold,
        on_poll=on_poll,
    )


def _seeded_and_attached(c: TestCluster) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """Seed StatefulSet Running with its CSI volume attached on its node and reported in
    use there; returns (node, pod, PV, the volume's unique name)."""
    node, _, pv = seed(c)
    assert pv["spec"]["csi"]["driver"] == CSI_DRIVER
    unique = unique_volume_name(CSI_DRIVER, pv["spec"]["csi"]["volumeHandle"])
    name = pv["metadata"]["name"]
    c.wait_for(lambda: attached_nodes(c, name) == {node: True}, 30, f"{name} attached on {node}")

    def reported() -> bool:
        st = (c.node(node) or {}).get("status", {})
        attached = [v["name"] for v in st.get("volumesAttached") or []]
        return unique in (st.get("volumesInUse") or []) and unique in attached

    c.wait_for(reported, 30, f"{unique} in volumesInUse and volumesAttached of {node}")
    pod = c.pod("mysql-0")
    assert pod is not None
    return node, pod, pv, unique


def _kill_and_wait_unknown(c: TestCluster, node: str, unique: str) -> float:
    """Power ``node`` off, wait for Ready=Unknown; check the dead kubelet's volumesInUse
    survived (kwok's heartbeats never wiped it); return the wall time T of Unknown."""
    t_kill = time.time()
    c.kill_node(node)
    c.wait_node_ready(node, "Unknown", timeout=60)
    t = time.time()
    print(f"\n[volumes] {node} Ready=Unknown {t - t_kill:.1f}s after its kubelet was killed")
    assert unique in (c.node(node) or {})["status"].get("volumesInUse", [])
    return t


def _force_delete(c: TestCluster, pod: dict[str, Any]) -> None:
    status, body = c.api(
        "DELETE",
        "/api/v1/namespaces/default/pods/mysql-0",
        {"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}},
    )
    assert status == 200, body


def _report(label: str, tl: RecoveryTimeline) -> None:
    print(f"\n[volumes] {label}: {tl.summary()}")
    if tl.multi_attach_message:
        print(f"[volumes]   {tl.multi_attach_message}")


def test_control_delete_node_holds_the_volume_for_six_minutes(vc: TestCluster) -> None:
    """Force-delete the pod and DELETE the Node (noderecover's default removal, done by
    hand): the new pod runs elsewhere at once, but its volume stays attached to the dead
    node - the dead kubelet's last volumesInUse keeps it "mounted" there, and only the
    6-minute maxWaitForUnmountDuration frees it. 60 s after the new pod was created it is
    still not attached, and the pod has a Multi-Attach warning."""
    t_wall = time.monotonic()
    node, pod, pv, unique = _seeded_and_attached(vc)
    t = _kill_and_wait_unknown(vc, node, unique)
    _force_delete(vc, pod)
    status, body = vc.api("DELETE", f"/api/v1/nodes/{node}")
    assert status == 200, body
    tl = _seed_timeline(
        vc,
        node,
        pod,
        pv,
        t,
        timeout=90,
        hold=60,
    )
    _report("force-delete pod + DELETE Node", tl)
    assert tl.created is not None and tl.running is not None, tl.summary()
    assert tl.node not in (None, node)
    assert tl.attached is None, f"attached within 60 s: {tl.summary()}"
    assert tl.old_va_gone is None, f"old VolumeAttachment released early: {tl.summary()}"
    assert attached_nodes(vc, pv["metadata"]["name"]) == {node: True}
    assert tl.multi_attach_count >= 1, f"no Multi-Attach warning; events: {tl.events}"
    print(
        f"[volumes] still held {time.time() - t - tl.created:.1f}s after the new pod was "
        f"created (force-detach due {MAX_WAIT_FOR_UNMOUNT:.0f}s after T); wall "
        f"{time.monotonic() - t_wall:.1f}s"
    )


@pytest.mark.parametrize("finalizer", [False, True], ids=["plain", "attacher-finalizer"])
def test_control_out_of_service_taint_frees_the_volume_in_seconds(
    vc: TestCluster, finalizer: bool
) -> None:
    """Out-of-service taint on the dead node, then force-delete the pod, Node kept: the
    attach/detach controller detaches at once and the volume is attached on the new node
    within seconds (facts file: 0.81-1.02 s after T). With ``finalizer`` the external
    attacher puts its finalizer on the VolumeAttachments, as a real one does, and the old
    one goes only once it removed it."""
    t_wall = time.monotonic()
    assert vc.attacher is not None
    vc.attacher.finalizer = finalizer
    try:
        _out_of_service(vc, finalizer)
    finally:
        vc.attacher.finalizer = False
    print(f"[volumes] wall {time.monotonic() - t_wall:.1f}s")


def _out_of_service(vc: TestCluster, finalizer: bool) -> None:
    assert vc.attacher is not None
    node, pod, pv, unique = _seeded_and_attached(vc)
    old_va = volume_attachment(vc, pv["metadata"]["name"], node)
    assert old_va is not None
    assert (ATTACHER_FINALIZER in (old_va["metadata"].get("finalizers") or [])) == finalizer
    t = _kill_and_wait_unknown(vc, node, unique)
    vc.request(
        "PATCH",
        f"/api/v1/nodes/{node}",
        [{"op": "add", "path": "/spec/taints/-", "value": OUT_OF_SERVICE_TAINT}],
        content_type="application/json-patch+json",
    )
    _force_delete(vc, pod)
    tl = _seed_timeline(
        vc,
        node,
        pod,
        pv,
        t,
        timeout=30,
    )
    _report(f"out-of-service taint + force-delete pod, Node kept (finalizer {finalizer})", tl)
    assert tl.back is not None, tl.summary()
    assert tl.node not in (None, node)
    assert tl.old_va_gone is not None and tl.old_va_gone <= tl.back
    assert tl.back < 5.0, tl.summary()
    released = vc.attacher.released.get(old_va["metadata"]["name"])
    assert (released is not None) == finalizer
    if released is not None:
        print(f"[volumes] attacher released the old VolumeAttachment at {released - t:.2f}s")


# ----------------------------------------------------------------- noderecover, volumes real
@pytest.fixture
def vnr(vc: TestCluster, tmp_path: Path) -> Iterator[Replicas]:
    """noderecover replicas on the CSI cluster, with the manifests' RBAC only."""
    reps = Replicas(vc, sa_kubeconfig(vc, tmp_path / "sa-kubeconfig"), tmp_path)
    try:
        yield reps
    finally:
        reps.close()
        print("\n" + reps.tails(40))
    no_403(*reps.started)


def _events(c: TestCluster, selector: str, namespace: str = "default") -> list[dict[str, Any]]:
    return [
        e
        for e in c.request(
            "GET", f"/api/v1/namespaces/{namespace}/events", query={"fieldSelector": selector}
        )["items"]
        if e.get("reportingComponent") == "noderecover"
    ]


def test_noderecover_fenced_both_gets_the_volume_back_in_seconds(vnr: Replicas) -> None:
    """--fence-command set, --removal auto (= both): the node is tainted out-of-service, the
    Node is deleted only once its VolumeAttachment is gone, and mysql-0 is back (Running,
    its volume attached on the new node) within seconds of the remediation - not 6 minutes."""
    c = vnr.cluster
    node, pod, pv, unique = _seeded_and_attached(c)
    r = vnr.start("replica-a", *FAST, "--fence-command", "true", "--detach-timeout", "60s")
    deleted: list[float] = []

    def poll(tl: RecoveryTimeline) -> None:
        if not deleted and c.node(node) is None:
            deleted.append(time.time() - tl.start)

    t = _kill_and_wait_unknown(c, node, unique)
    tl = _seed_timeline(
        c,
        node,
        pod,
        pv,
        t,
        timeout=90,
        on_poll=poll,
    )
    _report("noderecover --fence-command true (auto: both)", tl)
    assert tl.back is not None and tl.node not in (None, node), tl.summary()
    # The fence, the forces and the taint wait until the node's heartbeat Lease has stayed
    # unchanged for its own leaseDurationSeconds (40 s, from when it was first seen silent:
    # a Lease renewed on its own schedule is alive whatever the grace), then cordon + drain
    # (1 s eviction, then forced) + taint + detach/attach.
    assert tl.back < 40 + 15, tl.summary()
    c.wait_for(lambda: c.node(node) is None, 30, f"{node} deleted")
    poll(tl)
    assert tl.old_va_gone is not None and deleted and tl.old_va_gone <= deleted[0], (
        f"Node deleted at {deleted} before its VolumeAttachment was gone: {tl.summary()}"
    )
    assert r.metric("noderecover_actions_total", action="taint", result="ok") == 1
    # Followed to the new node (a LIST every 2 s while a volume is tracked).
    c.wait_for(lambda: r.metric("noderecover_volume_reattach_seconds_count") == 1, 15, "re-attach")
    print(f"[volumes] node deleted {deleted[0]:.2f}s after T")


def test_noderecover_delete_mode_warns_the_node_and_the_waiting_pod(vnr: Replicas) -> None:
    """A partitioned node that still runs (its heartbeats cut from the API server, its pods
    running: the control plane cannot tell it from a dead one), no provider configured:
    --removal auto has no proof, so it is delete (core.proof), which cannot free the volume.
    Nothing is detached - no out-of-service taint, no write of noderecover to a
    VolumeAttachment (API audit log), the old VolumeAttachment still attached - the Node is
    removed, the new pod waits (Multi-Attach), and noderecover says so on the Node and on
    that pod."""
    c = vnr.cluster
    node, pod, pv, unique = _seeded_and_attached(c)
    since = len(c.audit_events())
    r = vnr.start("replica-a", *FAST, "--removal", "auto")
    t = _kill_and_wait_unknown(c, node, unique)
    c.wait_for(lambda: c.node(node) is None, 60, f"{node} deleted")
    tl = _seed_timeline(
        c,
        node,
        pod,
        pv,
        t,
        timeout=30,
        hold=20,
    )
    _report("noderecover defaults (auto: delete)", tl)
    assert tl.running is not None and tl.attached is None, tl.summary()
    assert tl.multi_attach_count >= 1, tl.events
    on_node = c.wait_for(
        lambda: _events(c, f"involvedObject.name={node},reason=NodeRecoverVolumesAttached"),
        30,
        "the Node's warning",
    )
    assert pv["metadata"]["name"] in on_node[0]["message"] and "6 minutes" in on_node[0]["message"]
    on_pod = c.wait_for(
        lambda: _events(c, f"involvedObject.uid={tl.uid},reason=NodeRecoverVolumesAttached"),
        30,
        "the waiting pod's warning",
    )
    assert on_pod[0]["involvedObject"]["name"] == "mysql-0" and on_pod[0]["type"] == "Warning"
    assert r.metric("noderecover_actions_total", action="delete", result="ok") == 1
    assert r.metric("noderecover_actions_total", action="taint", result="ok") == 0
    assert attached_nodes(c, pv["metadata"]["name"]) == {node: True}, "the volume left"
    writes = _noderecover_writes(c, since)
    assert any(e["objectRef"].get("resource") == "nodes" and e["verb"] == "delete" for e in writes)
    for e in writes:
        assert e["objectRef"].get("resource") != "volumeattachments", e
        if e["objectRef"].get("resource") == "nodes":  # (Events may name the taint)
            assert OUT_OF_SERVICE_TAINT["key"] not in json.dumps(e.get("requestObject")), e


# ------------------------------------------------- fence providers against a real emulator
FENCE_SECRET = "noderecover-fence"
BMC_PASSWORD = "e2e-Bmc-pw-7"
BMC_UUID = "eeeeeeee-0000-4000-8000-0000000000e1"
AWS_KEY = "e2e-Aws-secret-key-3"
AWS_KEY_ID = "AKIDE2EFENCE"


def _bmc_power(url: str) -> str:
    """The emulator's own answer about the machine (a raw GET)."""
    import base64
    import json
    import urllib.request

    req = urllib.request.Request(f"{url}/redfish/v1/Systems/{BMC_UUID}")
    token = base64.b64encode(f"admin:{BMC_PASSWORD}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as reply:
        return str(json.load(reply)["PowerState"])


def _fence_setup(
    c: TestCluster, node: str, url: str, password: str, data: dict[str, str] | None = None
) -> None:
    """The node's BMC address on the Node (none with `url` ""), the credentials in
    noderecover's namespace (`data`, else username admin and `password`; none with
    `data` {})."""
    if url:
        c.request(
            "PATCH",
            f"/api/v1/nodes/{node}",
            {"metadata": {"annotations": {"noderecover.io/fence-address": url}}},
            content_type="application/merge-patch+json",
        )
    c.api("DELETE", f"/api/v1/namespaces/noderecover/secrets/{FENCE_SECRET}")
    if data == {}:
        return
    c.request(
        "POST",
        "/api/v1/namespaces/noderecover/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": FENCE_SECRET, "namespace": "noderecover"},
            "stringData": data or {"username": "admin", "password": password},
        },
    )


REDFISH = ("--fence-provider", "redfish", "--fence-secret", FENCE_SECRET, "--fence-timeout", "30s")


def test_noderecover_redfish_fence_gets_the_volume_back_in_seconds(
    vnr: Replicas, tmp_path: Path
) -> None:
    """--fence-provider redfish against sushy-tools' emulator (fake driver: Off 1-11 s after
    the ForceOff): the node's kubelet dies while its BMC still says On (a hung machine);
    noderecover reads the Secret (by name, the manifests' RBAC), ForceOffs the system named
    by the Node's annotation, reads it back Off, then taints, waits for the detach and
    deletes: mysql-0 is back within seconds of the fence, not 6 minutes."""
    from tests.emulators import RedfishSystem, redfish_power, sushy_emulator

    c = vnr.cluster
    seeded = _seeded_and_attached(c)
    node = seeded[0]
    (tmp_path / "bmc").mkdir()
    with sushy_emulator(
        tmp_path / "bmc", [RedfishSystem(BMC_UUID, node)], password=BMC_PASSWORD
    ) as bmc:
        _fence_setup(c, node, bmc.url, BMC_PASSWORD)
        power = redfish_power(bmc.url, BMC_UUID, "admin", BMC_PASSWORD)
        _fenced_back(vnr, seeded, "redfish", REDFISH, power, BMC_PASSWORD)
        assert _bmc_power(bmc.url) == "Off"


def test_noderecover_redfish_wrong_password_is_a_visible_block_nothing_detached(
    vnr: Replicas, tmp_path: Path
) -> None:
    """The BMC refuses the credentials: fence-refused (Event, metric), the Node kept, no
    out-of-service taint, the volume still attached to the dead node."""
    from tests.emulators import RedfishSystem, sushy_emulator

    c = vnr.cluster
    node, _pod, pv, unique = _seeded_and_attached(c)
    (tmp_path / "bmc").mkdir()
    wrong = "Wr0ng-e2e-secret"
    with sushy_emulator(
        tmp_path / "bmc", [RedfishSystem(BMC_UUID, node)], password=BMC_PASSWORD
    ) as bmc:
        _fence_setup(c, node, bmc.url, wrong)
        r = vnr.start("replica-a", *FAST, *REDFISH)
        _kill_and_wait_unknown(c, node, unique)
        c.wait_for(
            lambda: (
                r.metric("noderecover_fences_total", provider="redfish", outcome="fence-refused")
                >= 1
            ),
            120,
            "a refused fence",
        )
        time.sleep(5)  # a wrong removal would come right after
        events = _events(c, f"involvedObject.name={node},reason=NodeRecoverFenceFailed")
        assert events and "fence-refused" in events[0]["message"], events
        assert all(wrong not in e["message"] for e in _events(c, f"involvedObject.name={node}"))
        n = c.node(node)
        assert n is not None
        assert not any(t["key"] == OUT_OF_SERVICE_TAINT["key"] for t in n["spec"].get("taints", []))
        assert attached_nodes(c, pv["metadata"]["name"]) == {node: True}
        assert _bmc_power(bmc.url) == "On"
        assert r.metric("noderecover_actions_total", action="taint", result="ok") == 0
        assert wrong not in r.log.read_text()


def _fenced_back(
    vnr: Replicas,
    seeded: tuple[str, dict[str, Any], dict[str, Any], str],
    provider: str,
    flags: Sequence[str],
    read: PowerReader,
    secret: str,
) -> None:
    """The shared run of a provider that brings the volume back: the node's kubelet hangs
    (its heartbeats stop, its machine still on: the emulator says On), noderecover fences it
    through `provider`; the emulator is wired to the node (PowerWire), so the machine is
    seen Off by the test itself, independently of the provider's word, and that must come
    before the volume left the dead node. Then taint, detach, Node deleted; mysql-0 back."""
    c = vnr.cluster
    node, pod, pv, unique = seeded
    r = vnr.start("replica-a", *FAST, *flags, "--detach-timeout", "60s")
    with PowerWire(c) as wire:
        wire.wire(node, read)
        assert wire.power(node) == "on", wire.changes
        t = _kill_and_wait_unknown(c, node, unique)
        tl = _seed_timeline(
            c,
            node,
            pod,
            pv,
            t,
            timeout=120,
        )
    _report(f"noderecover fence provider {provider} (auto: both)", tl)
    assert tl.back is not None and tl.node not in (None, node), tl.summary()
    off = wire.off_at(node)
    assert off is not None, f"the machine was never seen off: {wire.changes} {wire.errors}"
    assert tl.old_va_gone is not None and off - t <= tl.old_va_gone, (
        f"the volume left {node} at {tl.old_va_gone}s, the machine was off at {off - t:.2f}s"
    )
    print(f"[volumes] {provider}: machine off {off - t:.2f}s, back {tl.back:.2f}s after Unknown")
    # As the --fence-command run's bound, plus the provider's own round trips.
    assert tl.back < 40 + 15 + 11, tl.summary()
    # No Multi-Attach wait: attached within seconds of leaving the dead node (a warning can
    # come only between the drain's force-delete and the taint, about a second).
    assert tl.attached is not None and tl.attached - tl.old_va_gone < 5, tl.summary()
    assert r.metric("noderecover_fences_total", provider=provider, outcome="ok") == 1
    assert r.metric("noderecover_actions_total", action="taint", result="ok") == 1
    c.wait_for(lambda: c.node(node) is None, 30, f"{node} deleted")
    assert secret not in r.log.read_text()


def test_noderecover_aws_fence_gets_the_volume_back_in_seconds(
    vnr: Replicas, tmp_path: Path
) -> None:
    """`aws` against moto's EC2 server: the instance in the Node's spec.providerID
    (aws:///<zone>/<id>) is stopped through the endpoint the fence config names, with the
    Secret's keys, and read back `stopped`; another instance keeps running."""

    from tests.emulators import ec2_power, moto_server

    c = vnr.cluster
    (tmp_path / "ec2").mkdir()
    with moto_server(tmp_path / "ec2") as server, ThreadPoolExecutor(1) as pool:
        ec2 = server.client()

        def two_instances() -> list[str]:  # moto's first EC2 call takes ~10 s: meanwhile, seed
            image = ec2.describe_images()["Images"][0]["ImageId"]
            reply = ec2.run_instances(
                ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.micro"
            )
            return [i["InstanceId"] for i in reply["Instances"]]

        instances = pool.submit(two_instances)
        seeded = _seeded_and_attached(c)
        node = seeded[0]
        mine, other = instances.result(timeout=60)
        c.request(
            "PATCH",
            f"/api/v1/nodes/{node}",
            {"spec": {"providerID": f"aws:///us-east-1a/{mine}"}},
            content_type="application/merge-patch+json",
        )
        _fence_setup(
            c, node, "", "", {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_KEY}
        )
        config = tmp_path / "fence.json"
        config.write_text(
            json.dumps(
                {
                    "provider": "aws",
                    "secretName": FENCE_SECRET,
                    "aws": {"region": server.region, "endpoint": server.url},
                }
            )
        )
        flags = ("--fence-config", str(config), "--fence-timeout", "30s")
        _fenced_back(vnr, seeded, "aws", flags, ec2_power(server, mine), AWS_KEY)
        # Not even the key id (botocore logs request headers at debug; FAST runs at debug).
        assert AWS_KEY_ID not in vnr.started[0].log.read_text()
        state = ec2.describe_instances(InstanceIds=[other])["Reservations"][0]["Instances"][0]
        assert state["State"]["Name"] == "running"


def test_noderecover_fence_agent_ipmilan_gets_the_volume_back_in_seconds(
    vnr: Replicas, tmp_path: Path
) -> None:
    """`fence-agent` running Debian's real fence_ipmilan against the pyghmi BMC (medik8s'
    parameters: shared ones in the config, the BMC address from the Node's annotation as
    --ip, username and password from the Secret on the agent's stdin)."""
    from tests.emulators import fence_agents_installed, ipmi_bmc, ipmi_power

    assert fence_agents_installed(), "apt-get install fence-agents ipmitool (hack/test.sh)"
    c = vnr.cluster
    seeded = _seeded_and_attached(c)
    (tmp_path / "bmc").mkdir()
    with ipmi_bmc(tmp_path / "bmc", password=BMC_PASSWORD) as bmc:
        _fence_setup(c, seeded[0], "127.0.0.1", BMC_PASSWORD)
        config = tmp_path / "fence.json"
        shared = {"--lanplus": "", "--cipher": "3", "--ipport": str(bmc.port)}
        config.write_text(
            json.dumps(
                {
                    "provider": "fence-agent",
                    "agent": "fence_ipmilan",
                    "secretName": FENCE_SECRET,
                    "sharedParameters": shared,
                }
            )
        )
        flags = ("--fence-config", str(config), "--fence-timeout", "30s")
        _fenced_back(vnr, seeded, "fence-agent", flags, ipmi_power(bmc), BMC_PASSWORD)
        assert bmc.power == "off"


def _noderecover_writes(c: TestCluster, since: int) -> list[dict[str, Any]]:
    """noderecover's writes in the API server's audit log after entry `since`."""
    return [
        e
        for e in c.audit_events()[since:]
        if e.get("user", {}).get("username", "").startswith("system:serviceaccount:noderecover:")
    ]


def _nothing_detached(c: TestCluster, node: str, pv: str, since: int) -> None:
    """No out-of-service taint on `node`, its VolumeAttachment still there, and no write of
    noderecover (audit log) ever put the taint on or touched a VolumeAttachment."""
    n = c.node(node)
    assert n is not None, f"{node} was deleted"
    assert not any(t["key"] == OUT_OF_SERVICE_TAINT["key"] for t in n["spec"].get("taints", []))
    assert attached_nodes(c, pv) == {node: True}
    for e in _noderecover_writes(c, since):
        resource = e.get("objectRef", {}).get("resource")
        assert resource != "volumeattachments", e
        if resource == "nodes":  # (Events may name the taint)
            assert OUT_OF_SERVICE_TAINT["key"] not in json.dumps(e.get("requestObject")), e


def test_noderecover_fence_failures_are_visible_blocks_nothing_detached(vnr: Replicas) -> None:
    """Two fences that cannot prove the dead node off, in one run: first the Secret the
    configuration names does not exist (fence-secret); once it does, the BMC accepts the
    TCP connection and never answers (fence-unreachable, bounded by --fence-timeout). Each
    is a visible block - the blocked reason (NodeRecoverBlocked, noderecover_blocked_total),
    a NodeRecoverFenceFailed Warning with what failed, noderecover_fences_total by outcome -
    and nothing is detached: the Node kept, no
    out-of-service taint, the volume still attached to the dead node."""
    c = vnr.cluster
    node, _pod, pv, unique = _seeded_and_attached(c)
    silent = socket.socket()  # the kernel accepts (backlog); nobody ever reads or answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        _fence_setup(c, node, f"http://127.0.0.1:{silent.getsockname()[1]}", "", {})
        since = len(c.audit_events())
        r = vnr.start("replica-a", *FAST, *REDFISH[:4], "--fence-timeout", "5s")
        _kill_and_wait_unknown(c, node, unique)

        def fences(outcome: str) -> float:
            return r.metric("noderecover_fences_total", provider="redfish", outcome=outcome)

        c.wait_for(lambda: fences("fence-secret") >= 1, 120, "a fence blocked by no Secret")
        t_secret = time.monotonic()
        _fence_setup(c, node, "", BMC_PASSWORD)
        c.wait_for(lambda: fences("fence-unreachable") >= 1, 90, "a fence blocked by the BMC")
        print(
            f"\n[volumes] silent BMC: blocked {time.monotonic() - t_secret:.1f}s after the Secret"
        )
        events = _events(c, f"involvedObject.name={node},reason=NodeRecoverFenceFailed")
        text = " ".join(e["message"] for e in events)
        assert "(fence-secret)" in text and "(fence-unreachable)" in text, events
        assert all(e["type"] == "Warning" for e in events)
        # The blocked reason itself: the hold's Event and noderecover_blocked_total.
        held = _events(c, f"involvedObject.name={node},reason=NodeRecoverBlocked")
        said = " ".join(e["message"] for e in held)
        for reason in ("fence-secret", "fence-unreachable"):
            assert f"held by '{reason}'" in said, held
            assert r.metric("noderecover_blocked_total", reason=reason) >= 1
        assert fences("ok") == 0
        assert r.metric("noderecover_actions_total", action="taint", result="ok") == 0
        assert r.metric("noderecover_actions_total", action="delete", result="ok") == 0
        _nothing_detached(c, node, pv["metadata"]["name"], since)
        assert BMC_PASSWORD not in r.log.read_text() and BMC_PASSWORD not in text
    finally:
        silent.close()
