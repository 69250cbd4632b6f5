"""The cloud's word counts (issue 21, item 3): a Node carrying the cloud-controller-manager's
`node.cloudprovider.kubernetes.io/shutdown` taint is proven off. `auto` takes the
out-of-service path (taint, volumes detach, then the Node DELETE), no fence is run; the fresh
read before each write must still show the taint (gone: a sign of life, nothing forced).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noderecover.controller.writes import NOT_PROVEN_OFF, Evidence, Held, Step, WritePath
from noderecover.core.machine import Gates, Kind, Outcome, Phase, Record, decide
from noderecover.core.nodes import OUT_OF_SERVICE_KEY
from noderecover.core.proof import (
    NO_PROOF,
    SHUTDOWN,
    SHUTDOWN_TAINT_KEY,
    ProofKind,
    backed,
    fenced,
    proof_of,
    removal_mode,
)
from tests.builders import T0, obs
from tests.conftest import Harness, make_config
from tests.fakeapi import FakeKube

Start = Callable[..., Any]
WORKER = {"node-role.kubernetes.io/worker": ""}
SHUTDOWN_TAINT = {"key": SHUTDOWN_TAINT_KEY, "effect": "NoSchedule"}


def cluster(kube: FakeKube) -> None:
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for i in (1, 2, 3):
        kube.add_node(f"w{i}", labels=WORKER)


def shut_down(kube: FakeKube, node: str = "w1") -> None:
    """What the cloud-controller-manager does to a NotReady node whose instance is stopped."""
    cur = kube.get_node(node)
    assert cur is not None
    taints = [t for t in cur["spec"].get("taints") or [] if t["key"] != SHUTDOWN_TAINT_KEY]
    kube.patch_node(node, {"spec": {"taints": [*taints, SHUTDOWN_TAINT]}})


def untaint(kube: FakeKube, node: str = "w1") -> None:
    cur = kube.get_node(node)
    assert cur is not None
    taints = [t for t in cur["spec"].get("taints") or [] if t["key"] != SHUTDOWN_TAINT_KEY]
    kube.patch_node(node, {"spec": {"taints": taints}})


def oos_patches(kube: FakeKube, node: str = "w1") -> list[Any]:
    return [
        r
        for r in kube.requests_matching("PATCH", rf"^/api/v1/nodes/{node}$")
        if OUT_OF_SERVICE_KEY in str(r.body)
    ]


async def dead(kube: FakeKube, h: Harness, node: str = "w1") -> None:
    kube.set_kubelet_alive(node, False)
    kube.set_node_ready(node, "Unknown", "NodeStatusUnknown")
    shut_down(kube, node)
    await h.until(lambda: node in h.controller.records, advance=0.1, real_timeout=30)


async def test_auto_takes_the_out_of_service_path_for_a_node_the_cloud_shut_down(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    kube.add_volume_attachment("va-1", "w1", "pv-1")
    h: Harness = await harness_factory(grace=10, removal="auto")
    await dead(kube, h)
    await h.until(
        lambda: bool(oos_patches(kube)), advance=0.5, what="out-of-service taint", real_timeout=30
    )
    node = kube.get_node("w1")
    assert node is not None and node["spec"].get("taints")
    assert any(t["key"] == OUT_OF_SERVICE_KEY for t in node["spec"]["taints"])
    # The Node is kept until its volumes are gone (the attach/detach controller's part).
    await h.idle(3)
    assert kube.get_node("w1") is not None
    kube.remove_volume_attachment("va-1")
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="deleted", real_timeout=30)


async def test_the_shutdown_taint_replaces_the_fence(
    kube: FakeKube, harness_factory: Start, tmp_path: Any
) -> None:
    """A fence command that would fail is never run: the cloud already said the node is off."""
    cluster(kube)
    ran = tmp_path / "ran"
    fence = ("/bin/sh", "-c", f"touch {ran}; exit 1")
    h: Harness = await harness_factory(grace=10, removal="auto", fence_command=fence)
    await dead(kube, h)
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="removed", real_timeout=30)
    assert oos_patches(kube), "auto = both: tainted first"
    assert not ran.exists()


async def test_without_the_shutdown_taint_auto_deletes_only(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h: Harness = await harness_factory(grace=10, removal="auto")
    kube.set_kubelet_alive("w1", False)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: kube.get_node("w1") is None, advance=0.5, what="removed", real_timeout=30)
    assert not oos_patches(kube)


async def test_the_shutdown_taint_gone_in_the_fresh_read_is_a_sign_of_life(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The view still shows the taint; the read right before the taint does not: nothing is
    tainted or deleted, and the grace restarts (a flap)."""
    cluster(kube)
    h: Harness = await harness_factory(grace=10, removal="auto")
    changed: list[bool] = []

    def before_a_read() -> None:
        # Right before the first read of w1 once it is REMOVING (the evidence read before
        # its taint): waiting for the phase in the test raced the read and the taint.
        if h.controller.records["w1"].phase is Phase.REMOVING:
            kube.silence_watches()  # the view keeps the taint...
            untaint(kube)  # ...the API has none
            changed.append(True)
        else:
            kube.on_request("GET", r"^/api/v1/nodes/w1$", before_a_read)

    await dead(kube, h)
    kube.on_request("GET", r"^/api/v1/nodes/w1$", before_a_read)
    await h.until(lambda: bool(changed), advance=0.1, what="removing", real_timeout=30)
    await h.idle(60)
    assert not oos_patches(kube)
    assert kube.get_node("w1") is not None
    assert h.controller.records["w1"].flaps >= 1


async def test_the_shutdown_taint_gone_from_the_view_is_a_flap(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h: Harness = await harness_factory(grace=30, removal="auto")
    await dead(kube, h)
    await h.until(lambda: h.controller.records["w1"].shutdown, advance=0.1, real_timeout=30)
    untaint(kube)
    await h.until(
        lambda: h.controller.records["w1"].flaps == 1, advance=0.1, what="flap", real_timeout=30
    )
    await h.idle(20)
    assert not oos_patches(kube)
    assert not kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")


# -- the pure parts ---------------------------------------------------------------------


def test_proofs_and_removal_modes() -> None:
    cfg = make_config(removal="auto")
    tainted = obs(cfg, ready="Unknown", taints=[SHUTDOWN_TAINT])
    plain = obs(cfg, ready="Unknown")
    assert proof_of(tainted, None) == SHUTDOWN
    assert proof_of(tainted, "command") == SHUTDOWN  # the cloud's word first
    assert proof_of(plain, "command") == fenced("command")
    assert proof_of(plain, None) == NO_PROOF and not NO_PROOF.proven
    assert str(fenced("redfish")) == "fenced (redfish)"
    assert backed(SHUTDOWN, tainted) and not backed(SHUTDOWN, plain)
    assert backed(NO_PROOF, plain) and backed(fenced("command"), plain)
    assert removal_mode(cfg, SHUTDOWN) == "both"
    assert removal_mode(cfg, NO_PROOF) == "delete"
    assert removal_mode(make_config(removal="auto", fence_command=("x",)), NO_PROOF) == "both"
    # Explicit modes are the operator's.
    for mode in ("delete", "out-of-service", "both"):
        assert removal_mode(make_config(removal=mode), SHUTDOWN) == mode
    assert {k.value for k in ProofKind} == {"none", "shutdown-taint", "fenced", "self-fenced"}


def test_decide_skips_the_fence_and_carries_the_proof() -> None:
    cfg = make_config(grace=10, removal="auto", fence_command=("fence",))
    node = obs(cfg, ready="Unknown", taints=[SHUTDOWN_TAINT])
    rec = Record(
        uid=node.uid, phase=Phase.REMOVING, phase_since=T0, unhealthy_since=T0 - 100, cordoned=True
    )
    d = decide(rec, node, T0 + 1, cfg, Gates())
    assert d.action is not None and d.action.kind is Kind.REMOVE
    assert d.action.proof == SHUTDOWN and d.action.success.tainted
    plain = obs(cfg, ready="Unknown")
    d = decide(rec, plain, T0 + 1, cfg, Gates())
    assert d.action is not None and d.action.kind is Kind.FENCE
    drained = Record(uid=node.uid, phase=Phase.CORDONED, unhealthy_since=T0 - 100, cordoned=True)
    d = decide(drained, node, T0 + 1, cfg, Gates())
    assert d.action is not None and d.action.kind is Kind.DRAIN
    assert d.action.may_force and d.action.proof == SHUTDOWN


class _Api:
    async def request(self, method: str, path: str, **kw: Any) -> Any:
        raise AssertionError("no request")


def test_auto_never_taints_without_a_proof_in_the_evidence() -> None:
    from noderecover.base.clock import FakeClock

    clock = FakeClock(start_wall=T0)
    cfg = make_config(removal="auto")
    wp = WritePath(_Api(), clock, cfg, lambda: True)  # type: ignore[arg-type]
    plain = obs(cfg, ready="Unknown")
    ev = Evidence(dead=True, fresh=plain, node="w1", uid=plain.uid, answered=clock.monotonic())
    for proof in (NO_PROOF, SHUTDOWN):  # none, or one the read does not back
        try:
            wp._allow(Step.TAINT, "w1", Evidence(**{**_fields(ev), "proof": proof}))
        except Held as held:
            assert held.reason == NOT_PROVEN_OFF
        else:
            raise AssertionError(f"tainted on {proof}")
    wp._allow(Step.TAINT, "w1", Evidence(**{**_fields(ev), "proof": fenced("command")}))
    wp._allow(Step.DELETE_NODE, "w1", ev)  # a DELETE needs no proof
    # Explicit out-of-service: the operator's choice.
    explicit = WritePath(_Api(), clock, make_config(removal="out-of-service"), lambda: True)  # type: ignore[arg-type]
    explicit._allow(Step.TAINT, "w1", ev)
    assert Outcome.HEALTHY  # (imported for readers: a lost proof stops a step as HEALTHY)


def _fields(ev: Evidence) -> dict[str, Any]:
    return {f: getattr(ev, f) for f in Evidence.__dataclass_fields__}


# -- which proof a node will get (plan, why, status; one function: core.proof.outlook) -----


def test_outlook_names_the_provider_and_its_target_or_why_none() -> None:
    from noderecover.core.fencing import ANN_FENCE_ADDRESS, FenceSpec, Provider
    from noderecover.core.proof import Outlook, outlook

    def look(cfg: Any, secrets: dict[str, str | None] | None = None, **kw: Any) -> Outlook:
        node = obs(cfg, ready="Unknown", **kw)
        return outlook(cfg, node, proof_of(node, None), secrets or {})

    none = make_config(removal="auto")
    o = look(none)
    assert o.kind is ProofKind.NONE and "no fence provider configured" in o.why
    assert str(o).startswith("none: ") and o.short == "none"
    # The cloud's word needs no provider.
    o = look(none, taints=[SHUTDOWN_TAINT])
    assert o.kind is ProofKind.SHUTDOWN_TAINT and o.target == SHUTDOWN_TAINT_KEY
    assert o.short == "shutdown-taint"
    o = look(make_config(fence_command=("/bin/fence-it", "x")))
    assert (o.kind, o.provider, o.target) == (
        ProofKind.FENCED,
        "command",
        "--fence-command /bin/fence-it",
    )

    redfish = make_config(fence=FenceSpec(Provider.REDFISH, secret_name="bmc"))
    o = look(redfish)
    assert o.kind is ProofKind.NONE and o.provider == "redfish"
    assert ANN_FENCE_ADDRESS in o.why  # no BMC address: neither annotation nor template
    addr = {ANN_FENCE_ADDRESS: "https://10.0.0.5"}
    o = look(redfish, annotations=addr)
    assert (o.kind, o.provider, o.target) == (ProofKind.FENCED, "redfish", "BMC https://10.0.0.5")
    assert o.data() == {
        "proof": "fenced",
        "provider": "redfish",
        "target": "BMC https://10.0.0.5",
        "why": "fence through redfish (BMC https://10.0.0.5)",
    }
    assert look(redfish, {"bmc": None}, annotations=addr).kind is ProofKind.FENCED
    o = look(redfish, {"bmc": "Secret noderecover/bmc not found"}, annotations=addr)
    assert o.kind is ProofKind.NONE and "Secret noderecover/bmc not found" in o.why
    # A template over the node's labels aims it; a label missing says which.
    templ = make_config(
        fence=FenceSpec(
            Provider.REDFISH,
            secret_name="bmc",
            address_template="https://{label:rack}-{name}.bmc",
            labels=frozenset({"rack"}),
        )
    )
    assert look(templ, labels={"rack": "r7"}).target == "BMC https://r7-w1.bmc"
    o = look(templ)
    assert o.kind is ProofKind.NONE and "'rack'" in o.why
    # Incomplete: redfish without a Secret.
    o = look(make_config(fence=FenceSpec(Provider.REDFISH)), annotations=addr)
    assert o.kind is ProofKind.NONE and "secretName" in o.why

    aws = make_config(fence=FenceSpec(Provider.AWS))
    o = look(aws)
    assert o.kind is ProofKind.NONE and "providerID" in o.why
    agent = make_config(
        fence=FenceSpec(Provider.FENCE_AGENT, agent="fence_ipmilan", secret_name="ipmi")
    )
    o = look(agent, annotations={ANN_FENCE_ADDRESS: "10.0.0.9"})
    assert o.target == "fence_ipmilan, BMC 10.0.0.9"
    # A fence already confirmed in this episode is named by its provider.
    node = obs(redfish, ready="Unknown")
    o = outlook(redfish, node, fenced("redfish"), {})
    assert (o.kind, o.provider) == (ProofKind.FENCED, "redfish")
    assert str(o) == "fenced by redfish: confirmed off in this episode"
    assert o.short == "redfish: fenced"


def test_aws_outlook_names_the_instance_from_the_provider_id() -> None:
    from noderecover.core.fencing import FenceSpec, Provider
    from noderecover.core.nodes import parse_node
    from noderecover.core.proof import outlook
    from tests.builders import node_json

    cfg = make_config(fence=FenceSpec(Provider.AWS))
    raw = node_json(ready="Unknown")
    raw["spec"]["providerID"] = "aws:///us-east-1a/i-0abc123"
    node = parse_node(raw, cfg.relevant_labels, frozenset({"Ready"}))
    o = outlook(cfg, node, proof_of(node, None), {})
    assert (o.kind, o.provider, o.target) == (ProofKind.FENCED, "aws", "instance i-0abc123")
    raw["spec"]["providerID"] = "gce://p/z/n"
    node = parse_node(raw, cfg.relevant_labels, frozenset({"Ready"}))
    o = outlook(cfg, node, proof_of(node, None), {})
    assert o.kind is ProofKind.NONE and "aws:///" in o.why


def test_a_fence_proof_is_named_by_the_provider_that_fenced() -> None:
    """The proof of a fenced node (the record says fenced) carries the provider of the
    settings governing it - not `command` for every provider."""
    from noderecover.core.fencing import FenceSpec, Provider
    from noderecover.core.machine import node_proof

    node = obs(make_config(), ready="Unknown")
    rec = Record(uid=node.uid, phase=Phase.REMOVING, phase_since=T0, fenced=True)
    for provider in Provider:
        cfg = make_config(fence=FenceSpec(provider, secret_name="s", agent="fence_x"))
        assert node_proof(rec, node, cfg) == fenced(provider.value)
    assert node_proof(rec, node, make_config(fence_command=("x",))) == fenced("command")
    unfenced = Record(uid=node.uid, phase=Phase.REMOVING, phase_since=T0)
    assert node_proof(unfenced, node, make_config(fence_command=("x",))) == NO_PROOF
