"""The controller side of the node agent (issue 23, item 2), attacked rule by rule.

Pure core first (core.agent's `not_relied_on` and `AgentGate`, core.proof, machine.decide with
plain numbers as time), then the shell on the fake API server with a fake clock
(controller/agents.py, the mark through the write path, the proven-off removal).

The rules:
- an agent is relied on only when it was present and healthy when its node went silent:
  readable parameters, steady renewals for AGENT_SETTLE, still renewing at the last
  heartbeat; a crash-looping agent's node is handled as agent-less (as today);
- a node with an agent relied on is never forced (force-delete, taint, Node DELETE) before
  it is proven off: the mark, then its agent Lease, heartbeat Lease and the mark unchanged
  for the safe time (the larger of the agent's and the controller's timing);
- the mark is written only through the write path, on a fresh read showing the kubelet
  silent; a healthy node is never marked;
- any sign of the agent after the mark restarts the wait.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from noderecover_testkit.fixtures import micro_rfc3339

from noderecover.controller.agents import AgentLeases, parse_agent_lease
from noderecover.core import agent as core
from noderecover.core.agent import (
    AgentGate,
    AgentParams,
    AgentSeen,
    Mode,
    not_relied_on,
)
from noderecover.core.machine import Gates, Kind, Phase, Record, decide
from noderecover.core.nodes import ANN_FENCE_REQUESTED
from noderecover.core.proof import SELF_FENCED, ProofKind, backed, needs_fence, proof_of
from noderecover.core.settings import RemovalMode
from tests.builders import T0, obs
from tests.conftest import Harness, make_config
from tests.fakeapi import FakeKube, merge_patch

Start = Callable[..., Any]
PARAMS = AgentParams(30.0, 30.0, 5.0, 8.0, Mode.WATCHDOG)  # safe time 83 s
SAFE = core.safe_time(PARAMS)
NS = "noderecover"
AGENT_SETTLE = core.settle_time(15.0)  # the Lease window of a 5 s check interval: 60 s
WORKER = {"node-role.kubernetes.io/worker": ""}


# ------------------------------------------------------------------ core: relied on or not


def steady(changed_at: float = 1000.0, run: float = 300.0, params: Any = PARAMS) -> AgentSeen:
    seen = AgentSeen(params, changed_at, changed_at - run, 15.0)
    return dataclasses.replace(seen, settled_until=core.settled(seen, changed_at))


def test_only_an_agent_present_and_healthy_at_the_silence_is_relied_on() -> None:
    assert not_relied_on(steady(), heartbeat_at=995.0) is None
    assert not_relied_on(None, 995.0) == "no agent"
    assert "parameters" in str(not_relied_on(steady(params=None), 995.0))
    never = AgentSeen(PARAMS, 1000.0, None, 15.0)  # only a first read: no renewal seen
    assert "not seen renewing" in str(not_relied_on(never, 995.0))
    # Crash-looping (or just started): renewals for less than the settle time.
    crash = steady(run=AGENT_SETTLE - 1)
    assert "steadily" in str(not_relied_on(crash, 995.0))
    assert not_relied_on(steady(run=AGENT_SETTLE), 995.0) is None
    # Settled once, then a new short run (renewals after a gap): still relied on, judged by
    # the settled run (life after a partition never downgrades the agent to agent-less).
    later = dataclasses.replace(steady(), changed_at=1500.0, steady_since=1500.0)
    assert not_relied_on(later, 995.0) is None
    # Stopped before its kubelet went silent (crashed, or stopped cleanly: the watchdog
    # disarmed): its last renewal more than its window + the margin before the heartbeat.
    gone = steady(changed_at=1000.0)
    assert not_relied_on(gone, 1000.0 + 15.0 + core.SAFE_TIME_MARGIN) is None
    assert "stopped renewing" in str(
        not_relied_on(gone, 1000.0 + 15.0 + core.SAFE_TIME_MARGIN + 0.1)
    )
    assert "heartbeat" in str(not_relied_on(steady(), None))


def test_a_sysrq_agent_is_never_relied_on_even_settled_and_renewing_at_the_silence() -> None:
    """A sysrq agent reboots its node only while its own process runs: one that crashed or
    hung within its window + the margin before the partition (what the history cannot tell
    apart from one renewing) fences nothing, so the node may still run its pods. Only a
    watchdog agent is proof (a crashed or hung agent's dog bites); a sysrq agent's node is
    handled as without an agent (its agent still reboots it when cut off)."""
    sysrq = dataclasses.replace(PARAMS, mode=Mode.SYSRQ)
    for seen in (
        steady(params=sysrq),
        steady(params=sysrq, run=AGENT_SETTLE * 10),
        dataclasses.replace(steady(params=sysrq), changed_at=1500.0, steady_since=1500.0),
    ):
        why = not_relied_on(seen, heartbeat_at=995.0)
        assert why is not None and "sysrq" in why, why
    assert not_relied_on(steady(params=PARAMS), heartbeat_at=995.0) is None


def gate(**kw: Any) -> AgentGate:
    base: dict[str, Any] = dict(
        params=PARAMS, why_not=None, lease_at=1000.0, heartbeat_at=995.0, marked_at=1010.0
    )
    base.update(kw)
    return AgentGate(**base)


def test_the_proof_needs_the_mark_and_counts_from_the_last_sign_of_life() -> None:
    g = gate()
    assert g.fenced_at() == 1010.0 + SAFE
    assert not g.proven(1010.0 + SAFE - 0.01)
    assert g.proven(1010.0 + SAFE)
    # No mark: never (a vouched agent stands still without fencing).
    assert not gate(marked_at=None).proven(1e9) and gate(marked_at=None).fenced_at() is None
    # The agent Lease changed after the mark: counted from that change.
    assert gate(lease_at=1100.0).fenced_at() == 1100.0 + SAFE
    # The heartbeat Lease too.
    assert not gate(heartbeat_at=1200.0).proven(1010.0 + SAFE + 100)
    # Not relied on (crash-looping...): never, whatever the time.
    bad = gate(why_not="its agent renewed steadily for only 10s")
    assert not bad.proven(1e9) and bad.fenced_at() is None


def test_the_safe_time_never_below_the_floor_and_drift_takes_the_larger() -> None:
    tiny = AgentParams(1.0, 1.0, 1.0, 1.0)
    assert gate(params=tiny, floor=60.0).safe_time == 60.0
    assert not gate(params=tiny, floor=60.0).proven(1010.0 + 59.9)
    controller = AgentParams(60.0, 45.0, 2.0, 0.0)
    m = core.merged(PARAMS, controller)
    assert (m.isolation_timeout, m.watchdog_timeout, m.check_interval, m.slack) == (
        60.0,
        45.0,
        5.0,
        8.0,
    )
    assert m.mode is Mode.WATCHDOG
    assert gate(params=m).safe_time == 60 + 45 + 5 + 8 + core.SAFE_TIME_MARGIN


def test_a_self_fence_is_backed_only_by_a_read_with_the_mark_for_this_uid() -> None:
    marked = obs(ready="Unknown", annotations={ANN_FENCE_REQUESTED: "uid-w1"})
    other = obs(ready="Unknown", annotations={ANN_FENCE_REQUESTED: "uid-of-another-w1"})
    plain = obs(ready="Unknown")
    assert proof_of(marked, None, self_fenced=True) == SELF_FENCED
    assert proof_of(other, None, self_fenced=True).kind is ProofKind.NONE
    assert proof_of(plain, None, self_fenced=True).kind is ProofKind.NONE
    assert proof_of(marked, None, self_fenced=False).kind is ProofKind.NONE
    assert backed(SELF_FENCED, marked) and not backed(SELF_FENCED, plain)
    assert not backed(SELF_FENCED, other)
    cfg = make_config(removal="auto")
    assert needs_fence(cfg, proof_of(plain, None), agent=True)
    assert not needs_fence(cfg, SELF_FENCED, agent=True)
    assert not needs_fence(cfg, proof_of(plain, None), agent=False)  # agent-less: as today


# ------------------------------------------------------------------ core: decide


NOW = T0
SILENT = dict(ready="Unknown", reason="NodeStatusUnknown", since=NOW - 600)


def removing() -> Record:
    return Record(
        uid="uid-w1",
        phase=Phase.REMOVING,
        phase_since=NOW - 100,
        unhealthy_since=NOW - 600,
        cordoned=True,
        transition=NOW - 600,
    )


def at(g: AgentGate | None) -> Gates:
    return Gates(agent=g, lease_renewing=False)


def test_decide_asks_the_agent_then_waits_then_removes_proven_off() -> None:
    cfg = make_config(removal="auto", grace=30)
    node = obs(**SILENT)  # type: ignore[arg-type]
    g = gate(lease_at=NOW - 300, heartbeat_at=NOW - 300, marked_at=None)
    d = decide(removing(), node, NOW, cfg, at(g))
    assert d.action is not None and d.action.kind is Kind.FENCE and d.action.request
    assert d.action.success.fenced is False  # a request proves nothing by itself
    # Marked: nothing before the safe time since the mark, a timer at its end.
    marked = obs(**SILENT, annotations={ANN_FENCE_REQUESTED: "uid-w1"})  # type: ignore[arg-type]
    g = dataclasses.replace(g, marked_at=NOW)
    for t in (NOW, NOW + SAFE / 2, NOW + SAFE - 0.5):
        d = decide(removing(), marked, t, cfg, at(g))
        assert d.action is None and d.wake_at == NOW + SAFE, d
        assert "waiting for its agent" in d.why
    d = decide(removing(), marked, NOW + SAFE, cfg, at(g))
    assert d.action is not None and d.action.kind is Kind.REMOVE
    assert d.action.proof == SELF_FENCED
    assert d.record.phase is Phase.REMOVING and d.action.success.tainted  # auto: both
    # Our write of the mark answered, the view not showing it yet: no proof (it must be in
    # the read), not asked twice.
    d = decide(removing(), node, NOW + SAFE, cfg, at(g))
    assert d.action is None and "waiting for its agent" in d.why
    # The mark gone (the shell forgot it: removed by someone): asked again, no removal.
    d = decide(removing(), node, NOW + SAFE, cfg, at(dataclasses.replace(g, marked_at=None)))
    assert d.action is not None and d.action.kind is Kind.FENCE and d.action.request


def test_decide_never_forces_a_node_whose_agent_is_relied_on_before_the_proof() -> None:
    """Draining: may_force is False until proven; a live kubelet is never marked."""
    cfg = make_config(removal="auto", grace=30)
    rec = dataclasses.replace(removing(), phase=Phase.DRAINING)
    node = obs(**SILENT)  # type: ignore[arg-type]
    g = gate(lease_at=NOW - 300, heartbeat_at=NOW - 300, marked_at=None)
    d = decide(rec, node, NOW, cfg, at(g))
    assert d.action is not None and d.action.kind is Kind.DRAIN and not d.action.may_force
    d = decide(dataclasses.replace(rec, fence_first=True), node, NOW, cfg, at(g))
    assert d.action is not None and d.action.request
    # The kubelet renews its Lease: never a fence request.
    live = Gates(agent=g, lease_renewing=True)
    d = decide(dataclasses.replace(rec, fence_first=True), node, NOW, cfg, live)
    assert d.action is None or not d.action.request
    d = decide(removing(), node, NOW, cfg, live)
    assert d.action is None and d.blocked == "kubelet-alive"


def test_decide_handles_a_node_without_an_agent_relied_on_as_today() -> None:
    cfg = make_config(removal="auto", grace=30)
    node = obs(**SILENT)  # type: ignore[arg-type]
    for g in (None, gate(why_not="its agent renewed steadily for only 20s")):
        d = decide(removing(), node, NOW, cfg, at(g))
        assert d.action is not None and d.action.kind is Kind.REMOVE
        assert d.action.proof.kind is ProofKind.NONE and not d.action.request
        rec = dataclasses.replace(removing(), phase=Phase.DRAINING)
        d = decide(rec, node, NOW, cfg, at(g))
        assert d.action is not None and d.action.may_force


def test_a_fence_provider_still_fences_when_the_node_also_has_an_agent() -> None:
    cfg = make_config(removal="auto", grace=30, fence_command=("/bin/true",))
    node = obs(**SILENT)  # type: ignore[arg-type]
    g = gate(lease_at=NOW - 300, heartbeat_at=NOW - 300, marked_at=None)
    d = decide(removing(), node, NOW, cfg, at(g))
    assert d.action is not None and d.action.kind is Kind.FENCE and not d.action.request


# ------------------------------------------------------------------ the shell: agent Leases


def agent_lease(node: str, rv: str, renew: str = "2026-01-01T00:00:00.000000Z") -> dict[str, Any]:
    return {
        "metadata": {
            "name": core.lease_name(node),
            "namespace": NS,
            "resourceVersion": rv,
            "labels": {core.AGENT_LABEL: core.AGENT_LABEL_VALUE},
            "annotations": PARAMS.annotations(),
        },
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 15, "renewTime": renew},
    }


def test_parse_keeps_agent_leases_only() -> None:
    assert parse_agent_lease(agent_lease("w1", "7")) == (
        "w1",
        "7",
        agent_lease("w1", "7")["spec"]["renewTime"],
        15.0,
        PARAMS,
    )
    leader = agent_lease("w1", "7")
    leader["metadata"]["labels"] = {}
    assert parse_agent_lease(leader) is None
    garbled = agent_lease("w1", "7")
    garbled["metadata"]["annotations"][core.ANN_ISOLATION] = "soon"
    parsed = parse_agent_lease(garbled)
    assert parsed is not None and parsed[4] is None  # unreadable: agent-less


def test_a_crash_looping_agent_never_settles() -> None:
    from noderecover.base.clock import FakeClock, Timeline

    clock = FakeClock(start_wall=T0)
    leases = AgentLeases(None, clock, Timeline(clock), make_config(), NS)  # type: ignore[arg-type]
    rv = 0

    def renew() -> None:
        nonlocal rv
        rv += 1
        o = parse_agent_lease(agent_lease("w1", str(rv)))
        assert o is not None
        leases.note(o)

    renew()
    # kubelet back-off between restarts: 10, 20, 40, 80, 160 s; a renewal per start.
    for gap in (10, 20, 40, 80, 160):
        clock.advance(gap)
        renew()
    seen = leases.seen("w1")
    assert seen is not None and "steadily" in str(not_relied_on(seen, seen.changed_at))
    # Then healthy: a renewal every 5 s for the settle time.
    for _ in range(int(AGENT_SETTLE / 5)):
        clock.advance(5)
        renew()
    seen = leases.seen("w1")
    assert seen is not None and not_relied_on(seen, seen.changed_at) is None


# ------------------------------------------------------------------ the shell: end to end


def add_agent_lease(kube: FakeKube, node: str, params: AgentParams = PARAMS) -> None:
    lease = agent_lease(node, "")
    del lease["metadata"]["resourceVersion"]
    lease["metadata"]["annotations"] = params.annotations()
    lease["spec"]["renewTime"] = micro_rfc3339(dt.datetime.now(dt.UTC))
    kube._create(kube.stores["leases"], lease)


def renew_agent_lease(kube: FakeKube, node: str) -> None:
    store = kube.stores["leases"]
    cur = store.get(NS, core.lease_name(node))
    new = merge_patch(cur, {"spec": {"renewTime": micro_rfc3339(dt.datetime.now(dt.UTC))}})
    kube._write(store, "MODIFIED", new, cur)


def cluster(kube: FakeKube) -> None:
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for i in (1, 2, 3):
        kube.add_node(f"w{i}", labels=WORKER)
        kube.add_node_lease(f"w{i}")
        add_agent_lease(kube, f"w{i}")


async def live(h: Harness, seconds: float, agents: bool = True) -> None:
    """Every kubelet renews every 10 s, every agent every 5 s, for `seconds`."""
    t = 0
    while t < seconds:
        await h.idle(5)
        t += 5
        for i in (1, 2, 3):
            if agents:
                renew_agent_lease(h.kube, f"w{i}")
            if t % 10 == 0:
                h.kube.renew_node_lease(f"w{i}")


def forces(kube: FakeKube, node: str = "w1") -> list[Any]:
    force_deletes = kube.requests_matching("DELETE", r"/pods/")
    node_deletes = kube.requests_matching("DELETE", rf"^/api/v1/nodes/{node}$")
    taints = [
        r
        for r in kube.requests_matching("PATCH", rf"^/api/v1/nodes/{node}$")
        if "out-of-service" in str(r.body) and "taints" in str(r.body)
    ]
    return force_deletes + node_deletes + taints


def marks(kube: FakeKube, node: str = "w1") -> list[Any]:
    return [
        r
        for r in kube.requests_matching("PATCH", rf"^/api/v1/nodes/{node}$")
        if ANN_FENCE_REQUESTED in str(r.body)
    ]


async def start(harness_factory: Start, **kw: object) -> Harness:
    cfg: dict[str, object] = dict(grace=5, watch_node_leases=True, drain_timeout=30)
    cfg.update(kw)
    h: Harness = await harness_factory(namespace=NS, **cfg)
    agents = h.controller.agents
    assert agents is not None
    await h.until(agents.synced, advance=0.2, real_timeout=30, what="agents synced")
    return h


async def silence_w1(h: Harness) -> float:
    """w1 partitioned: its kubelet and agent stop; Ready=Unknown. Returns the fake time."""
    t = h.clock.monotonic()
    h.kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    return t


async def test_a_partitioned_node_with_an_agent_is_marked_and_forced_only_after_the_safe_time(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    h = await start(harness_factory)
    await live(h, 90)
    gate = h.controller.agent_gate("w1", "uid-w1")
    assert gate is not None and gate.relied_on, gate
    await silence_w1(h)
    await h.until(lambda: bool(marks(kube)), advance=1.0, real_timeout=60, what="marked")
    marked_at = h.clock.monotonic()
    (req,) = marks(kube)
    node = kube.get_node("w1")
    assert node is not None
    uid, boot = node["metadata"]["uid"], node["status"]["nodeInfo"]["bootID"]
    # The mark names this Node and the boot its kubelet reported: a later boot ignores it.
    assert boot and req.body["metadata"]["annotations"][ANN_FENCE_REQUESTED] == f"{uid}/{boot}"
    assert "resourceVersion" in req.body["metadata"]  # guarded like every Node write
    assert not forces(kube), "nothing forced before the mark"
    # Nothing forced for the safe time after the mark, while w2 and w3 stay alive.
    t = 0.0
    while t + 5 < SAFE - 2:  # up to 80 s after the mark was seen (the safe time: 83 s)
        await h.idle(5)
        t += 5
        for i in (2, 3):
            renew_agent_lease(kube, f"w{i}")
            kube.renew_node_lease(f"w{i}")
        assert not forces(kube), f"forced {t:.0f}s after the mark (safe time {SAFE:.0f}s)"
    await h.until(lambda: bool(forces(kube)), advance=1.0, real_timeout=60, what="forced")
    assert h.clock.monotonic() - marked_at >= SAFE
    await h.until(
        lambda: bool(kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")),
        advance=1.0,
        real_timeout=60,
        what="w1 deleted",
    )
    # Proven off: auto tainted it out-of-service before the DELETE.
    taints = [
        r
        for r in kube.requests_matching("PATCH", r"^/api/v1/nodes/w1$")
        if "out-of-service" in str(r.body) and "taints" in str(r.body)
    ]
    assert taints, "auto takes the proven-off path: the out-of-service taint"


async def test_a_sign_of_the_agent_after_the_mark_restarts_the_wait(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h = await start(harness_factory)
    await live(h, 90)
    await silence_w1(h)
    await h.until(lambda: bool(marks(kube)), advance=1.0, real_timeout=60, what="marked")
    await h.idle(SAFE - 10)
    renew_agent_lease(kube, "w1")  # the agent renewed once more (a flapping link)
    await h.idle(SAFE - 10)
    assert not forces(kube)
    await h.until(lambda: bool(forces(kube)), advance=1.0, real_timeout=60, what="forced")


async def test_an_agent_lease_change_alone_has_the_node_decided_again(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A pass decides only what changed (issue 24): the agent's Lease moving is a change of
    its node. After the mark, one renewal of w1's agent and nothing else: the decision's
    wake time (when the proof can come) moves at once, not at the old timer."""
    cluster(kube)
    h = await start(harness_factory)
    await live(h, 90)
    await silence_w1(h)
    await h.until(lambda: bool(marks(kube)), advance=1.0, real_timeout=60, what="marked")
    await h.idle(10)
    before = h.controller.decisions["w1"].wake_at
    assert before is not None
    renew_agent_lease(kube, "w1")
    renewed = h.clock.monotonic()
    await h.until(
        lambda: (h.controller.decisions["w1"].wake_at or 0.0) > before,
        advance=0.1,
        real_timeout=30,
        what="decided again",
    )
    assert h.clock.monotonic() - renewed < 2.0


async def test_a_crash_looping_agents_node_is_handled_as_agent_less(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h = await start(harness_factory)
    # Kubelets renew; w1's agent renews only at its restarts, 20 s and more apart.
    t = 0
    for gap in (20, 40, 80):
        await h.idle(gap)
        t += gap
        renew_agent_lease(kube, "w1")
        for i in (1, 2, 3):
            kube.renew_node_lease(f"w{i}")
    gate = h.controller.agent_gate("w1", "uid-w1")
    assert gate is not None and not gate.relied_on
    await silence_w1(h)
    await h.until(lambda: bool(forces(kube)), advance=1.0, real_timeout=60, what="removed")
    assert not marks(kube), "no agent relied on: nothing asked of it"


async def test_config_drift_the_controllers_larger_timeouts_win(
    kube: FakeKube, harness_factory: Start
) -> None:
    cluster(kube)
    h = await start(harness_factory, agent_isolation_timeout=120.0)
    await live(h, 90)
    gate = h.controller.agent_gate("w1", "uid-w1")
    assert gate is not None
    assert gate.params.isolation_timeout == 120.0 and gate.params.watchdog_timeout == 30.0
    longer = gate.safe_time
    assert longer == SAFE + 90
    await silence_w1(h)
    await h.until(lambda: bool(marks(kube)), advance=1.0, real_timeout=60, what="marked")
    marked_at = h.clock.monotonic()
    await h.idle(SAFE + 10)
    assert not forces(kube), "the agent's shorter timeouts do not count"
    await h.until(lambda: bool(forces(kube)), advance=1.0, real_timeout=60, what="forced")
    assert h.clock.monotonic() - marked_at >= longer


@pytest.mark.parametrize("published", [AgentParams(100.0, 30.0, 5.0, 8.0)])
async def test_config_drift_the_agents_larger_timeouts_win(
    kube: FakeKube, harness_factory: Start, published: AgentParams
) -> None:
    kube.add_node("w1", labels=WORKER)
    kube.add_node_lease("w1")
    add_agent_lease(kube, "w1", published)
    h = await start(harness_factory)
    await h.idle(1)
    gate = h.controller.agent_gate("w1", "uid-w1")
    assert gate is not None and gate.params.isolation_timeout == 100.0
    assert gate.safe_time == core.safe_time(published)


def test_removal_mode_of_a_self_fenced_node_is_both() -> None:
    from noderecover.core.proof import removal_mode

    assert removal_mode(make_config(removal="auto"), SELF_FENCED) is RemovalMode.BOTH


# ------------------------------------------------------------------ plan, why, status


async def test_plan_why_and_status_show_each_nodes_agent(kube: FakeKube) -> None:
    """plan's AGENT column, -o json's `agent`, why's Agent line and status's AGENT column:
    which nodes have an agent, its mode and the safe time; a stale agent is not relied on."""
    import io

    from noderecover.entry import kubectl
    from noderecover.entry.output import Output
    from noderecover.entry.plan import plan_data, plan_rows, preview, write_plan
    from tests.conftest import client_for

    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    kube.add_node("w1", "Unknown", last_transition_time=old)
    kube.add_node("w2")
    kube.add_node("w3")
    for n in ("w1", "w2", "w3"):
        kube.add_node_lease(n, renew_time=old)
    add_agent_lease(kube, "w1")
    add_agent_lease(kube, "w2", AgentParams(30.0, 30.0, 5.0, 8.0, Mode.SYSRQ))
    store = kube.stores["leases"]
    cur = store.get(NS, core.lease_name("w2"))
    stale = micro_rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    kube._write(store, "MODIFIED", merge_patch(cur, {"spec": {"renewTime": stale}}), cur)
    cfg = make_config(grace=60, watch_node_leases=True)
    client = client_for(kube)
    try:
        p = await preview(client, cfg, namespace=NS)
    finally:
        await client.close()
    rows = {r[0]: r for r in plan_rows(p)}
    assert rows["w1"][-1] == f"watchdog/{SAFE:.0f}s", plan_data(p, cfg)["nodes"][0]
    assert rows["w2"][-1] == f"sysrq/{SAFE:.0f}s (not relied on)"
    assert rows["w3"][-1] == "-"
    out = io.StringIO()
    write_plan(p, cfg, Output(), out)
    assert out.getvalue().splitlines()[0].split()[-1] == "AGENT"
    nodes = {n["node"]: n for n in plan_data(p, cfg)["nodes"]}
    assert nodes["w1"]["agent"] == {
        "mode": "watchdog",
        "safeTimeSeconds": SAFE,
        "reliedOn": True,
        "notReliedOnBecause": None,
    }
    assert nodes["w2"]["agent"]["reliedOn"] is False
    assert "sysrq, no watchdog" in nodes["w2"]["agent"]["notReliedOnBecause"]
    assert nodes["w3"]["agent"] is None
    why = io.StringIO()
    assert kubectl._why(p, cfg, "w1", Output(), why, io.StringIO()) == 0
    assert "Agent: node agent (watchdog)" in why.getvalue()
    assert "1m23s" in why.getvalue() or "83s" in why.getvalue()
    why = io.StringIO()
    assert kubectl._why(p, cfg, "w3", Output(), why, io.StringIO()) == 0
    assert "Agent: no node agent" in why.getvalue()
    status = io.StringIO()
    leader = {"holder": "a", "renewedSecondsAgo": 1.0, "lease": "noderecover/noderecover"}
    assert kubectl._status(p, cfg, leader, Output(), status) == 0
    header, *lines = [x for x in status.getvalue().splitlines() if "NODE" in x or "w1" in x]
    assert "AGENT" in header.split() and any(f"watchdog/{SAFE:.0f}s" in x for x in lines)
    assert [r.method for r in kube.requests if r.method != "GET"] == []


def test_a_mark_we_wrote_outlives_a_lagging_view_for_a_bounded_time() -> None:
    """Our write's answer is in, the view does not show the mark yet: not asked twice; the
    view never shows it (removed at once by someone): forgotten after MARK_VIEW_LAG, so it
    is asked again rather than waited on for good. Once the view showed it, a view without
    it forgets it at once."""
    from noderecover.base.clock import FakeClock, Timeline
    from noderecover.controller.agents import MARK_VIEW_LAG

    clock = FakeClock(start_wall=T0)
    leases = AgentLeases(None, clock, Timeline(clock), make_config(), NS)  # type: ignore[arg-type]
    leases.mark_seen("w1", "u1", True, written=True)
    leases.mark_seen("w1", "u1", False)  # a lagging view
    assert "w1" in leases.marks
    clock.advance(MARK_VIEW_LAG + 1)
    leases.mark_seen("w1", "u1", False)
    assert "w1" not in leases.marks
    leases.mark_seen("w1", "u1", True, written=True)
    first = leases.marks["w1"][1]
    clock.advance(5)
    leases.mark_seen("w1", "u1", True)  # the view shows it: confirmed, first sighting kept
    assert leases.marks["w1"] == ("u1", first, True)
    leases.mark_seen("w1", "u1", False)  # then removed
    assert "w1" not in leases.marks
    leases.mark_seen("w1", "u2", True)  # another Node of that name
    leases.mark_seen("w1", "u1", False)
    assert leases.marks["w1"][0] == "u2"


def test_a_mark_for_an_earlier_boot_is_no_mark_for_the_controller_either() -> None:
    """The node rebooted (its kubelet reports a new boot) and went silent again while the
    old mark is still on it: that mark is not this boot's - its agent ignores it, so the
    controller must ask again, never count the old mark as part of a proof."""
    cfg = make_config(removal="auto", grace=30)
    uid = "uid-w1"
    old = obs(**SILENT, annotations={ANN_FENCE_REQUESTED: f"{uid}/boot-1"})  # type: ignore[arg-type]
    old = dataclasses.replace(old, boot_id="boot-2")
    g = gate(lease_at=NOW - 300, heartbeat_at=NOW - 300, marked_at=None)
    assert proof_of(old, None, self_fenced=True).kind is ProofKind.NONE
    assert not backed(SELF_FENCED, old)
    d = decide(removing(), old, NOW, cfg, at(g))
    assert d.action is not None and d.action.request
    same = dataclasses.replace(old, boot_id="boot-1")
    assert proof_of(same, None, self_fenced=True) == SELF_FENCED


def test_without_history_the_nodes_own_clock_says_whether_its_agent_was_renewing() -> None:
    """A controller that took over after the node went silent saw no renewal, only a first
    read: it neither waits forever (a fenced agent's Lease never changes again) nor forces a
    node whose agent may be up: it compares the agent's renewTime with the heartbeat Lease's,
    both written on that node's clock."""
    first = AgentSeen(PARAMS, 1000.0, None, 15.0, None, renew_wall=5000.0)
    assert not_relied_on(first, 1000.0, heartbeat_renew_wall=4990.0) is None
    assert not_relied_on(first, 1000.0, heartbeat_renew_wall=5000.0 + 25.0) is None
    late = not_relied_on(first, 1000.0, heartbeat_renew_wall=5000.0 + 25.1)
    assert late is not None and "node's clock" in late
    # No renewTime on either side: not relied on (handled as without an agent).
    assert "not seen renewing" in str(not_relied_on(first, 1000.0, None))
    nowall = dataclasses.replace(first, renew_wall=None)
    assert "not seen renewing" in str(not_relied_on(nowall, 1000.0, 4990.0))
    # sysrq: a crashed agent fences nothing; without history nothing shows it did not crash.
    sysrq = dataclasses.replace(first, params=dataclasses.replace(PARAMS, mode=Mode.SYSRQ))
    assert "sysrq" in str(not_relied_on(sysrq, 1000.0, 4990.0))
    # With history, the history decides (a crash loop seen is not excused by the clocks).
    crash = AgentSeen(PARAMS, 1000.0, 990.0, 15.0, None, renew_wall=5000.0)
    assert "steadily" in str(not_relied_on(crash, 1000.0, 4990.0))


def test_the_outlook_names_the_agents_self_fence_where_no_provider_fences() -> None:
    """core.proof.outlook, the one rule plan/why/status and the snapshot share: no provider
    and an agent relied on: the self-fence, with the mode and the safe time; an agent not
    relied on: no proof; a provider: the provider's fence still."""
    from noderecover.core.proof import outlook

    node = obs(**SILENT)  # type: ignore[arg-type]
    from noderecover.core.proof import NO_PROOF

    o = outlook(make_config(), node, NO_PROOF, {}, gate())
    assert o.kind is ProofKind.SELF_FENCED and o.provider == "agent"
    assert o.target == f"watchdog, safe time {SAFE:.0f}s" and "self-fence" in str(o)
    bad = gate(why_not="its agent renewed steadily for only 10s")
    assert outlook(make_config(), node, NO_PROOF, {}, bad).kind is ProofKind.NONE
    assert outlook(make_config(), node, NO_PROOF, {}, None).kind is ProofKind.NONE
    cmd = make_config(fence_command=("/bin/true",))
    assert outlook(cmd, node, NO_PROOF, {}, gate()).kind is ProofKind.FENCED
    done = outlook(make_config(), node, SELF_FENCED, {}, gate())
    assert done.kind is ProofKind.SELF_FENCED and str(done).startswith("self-fenced")
