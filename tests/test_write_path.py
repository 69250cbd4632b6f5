"""The write path's rules (controller/writes.py), each attacked on its own.

- A cordon or taint whose reply was lost is still recognised as ours (class 4).
- An operator's cordon, seen only in the fresh read or set between the read and the write,
  is never claimed, so never undone (class 5).
- A destructive write on evidence answered too long ago is refused (class 2), and a graceful
  eviction batch asks the gates before each eviction.
- A heartbeat Lease renewed on the kubelet's schedule is alive with any grace, 0 included
  (class 3).
- Annotation writes never remove an ownership marker (only a restore does, with what it
  marks), nor add one (only the cordon or taint it marks does, in the same patch).
- A held remediation keeps its --max-concurrent slot (class 6).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from noderecover.base.clock import FakeClock
from noderecover.controller.drainer import DrainContext, Drainer
from noderecover.controller.executor import Executor
from noderecover.controller.heartbeats import Heartbeats
from noderecover.controller.writes import (
    EVIDENCE_SLACK,
    Evidence,
    Held,
    StaleEvidence,
    Step,
    WritePath,
)
from noderecover.core.machine import Action, Kind, Outcome, Phase, Record
from noderecover.core.nodes import ANN_CORDONED, ANN_PHASE, ANN_TAINTED, parse_node
from noderecover.core.reasons import Blocked
from noderecover.kube.client import KubeClient, api_error
from tests.builders import T0
from tests.conftest import make_config
from tests.fakeapi import FakeKube

NODE = "w1"


class LoseReplies:
    """A client whose matching writes are applied by the server, then answer nothing (the
    reply is lost: a timeout after the write landed)."""

    def __init__(self, inner: KubeClient, method: str, times: int = 1) -> None:
        self.inner, self.method, self.left = inner, method, times

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        result = await self.inner.request(method, path, **kw)
        if method == self.method and self.left > 0:
            self.left -= 1
            raise api_error(0, "Timeout", "no answer (reply lost)", verb=method, path=path)
        return result

    @property
    def timeouts(self) -> Any:
        return self.inner.timeouts


def node_uid(kube: FakeKube) -> str:
    node = kube.get_node(NODE)
    assert node is not None
    return str(node["metadata"]["uid"])


def annots(kube: FakeKube) -> dict[str, str]:
    node = kube.get_node(NODE)
    assert node is not None
    return dict(node["metadata"].get("annotations") or {})


def unschedulable(kube: FakeKube) -> bool:
    node = kube.get_node(NODE)
    assert node is not None
    return bool(node["spec"].get("unschedulable"))


def cordon_action(uid: str, *, view_says_ours: bool = True) -> tuple[Action, Record]:
    rec = Record(uid, Phase.SUSPECT, T0 - 60, T0 - 60)
    success = Record(uid, Phase.CORDONED, T0, T0 - 60, cordoned=view_says_ours)
    return Action(Kind.CORDON, NODE, uid, None, success), rec


def restore_action(uid: str) -> Action:
    return Action(Kind.RESTORE, NODE, uid, None, Record(uid, phase_since=T0))


async def test_a_cordon_whose_reply_was_lost_is_ours_and_undone(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "False")
    uid = node_uid(kube)
    cfg = make_config(watch_node_leases=False)
    lossy: Any = LoseReplies(client, "PATCH")
    ex = Executor(lossy, FakeClock(start_wall=T0), cfg, lambda: True)
    action, rec = cordon_action(uid)
    first = await ex.perform(action, rec)
    assert first.outcome is Outcome.FAILED  # the reply was lost...
    assert unschedulable(kube) and annots(kube)[ANN_CORDONED] == "true"  # ...not the write
    again = await ex.perform(action, rec)
    assert (again.outcome, again.cordoned) == (Outcome.OK, True)  # recognised as ours
    # Whatever the record says (the in-memory one lost the cordon), the restore undoes it.
    kube.set_node_ready(NODE, "True")
    done = await ex.perform(restore_action(uid), rec)
    assert done.outcome is Outcome.OK
    assert not unschedulable(kube) and ANN_CORDONED not in annots(kube)


async def test_a_taint_whose_reply_was_lost_is_ours_and_undone(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "Unknown")
    uid = node_uid(kube)
    cfg = make_config(watch_node_leases=False, removal="out-of-service", detach_timeout=0)
    lossy: Any = LoseReplies(client, "PATCH")
    ex = Executor(lossy, FakeClock(start_wall=T0), cfg, lambda: True)
    rec = Record(uid, Phase.REMOVING, T0, T0 - 600, cordoned=True)
    done = Record(uid, Phase.REMOVED, T0, T0 - 600, cordoned=True, tainted=True)
    first = await ex.perform(Action(Kind.REMOVE, NODE, uid, None, done, silent=True), rec)
    assert first.outcome is Outcome.FAILED
    assert annots(kube)[ANN_TAINTED] == "true"  # the marker went on with the taint
    # A record that never learnt of it (a new leader, or `tainted` lost): the retry reads
    # our marker on the node and says the taint is ours.
    again = await ex.perform(Action(Kind.REMOVE, NODE, uid, None, done, silent=True), rec)
    assert (again.outcome, again.tainted) == (Outcome.OK, True)
    kube.set_node_ready(NODE, "True")
    assert (await ex.perform(restore_action(uid), rec)).outcome is Outcome.OK
    node = kube.get_node(NODE)
    assert node is not None
    keys = [t["key"] for t in node["spec"].get("taints") or []]
    assert "node.kubernetes.io/out-of-service" not in keys


async def test_an_operators_cordon_in_the_fresh_read_is_never_claimed(
    kube: FakeKube, client: KubeClient
) -> None:
    """The view said schedulable (so the decision thought the cordon would be ours); the
    fresh read shows the operator's cordon: not ours, never undone."""
    kube.add_node(NODE, "False", unschedulable=True)
    uid = node_uid(kube)
    ex = Executor(
        client, FakeClock(start_wall=T0), make_config(watch_node_leases=False), lambda: True
    )
    action, rec = cordon_action(uid, view_says_ours=True)
    result = await ex.perform(action, rec)
    assert (result.outcome, result.cordoned) == (Outcome.OK, False)
    assert ANN_CORDONED not in annots(kube)
    kube.set_node_ready(NODE, "True")
    assert (await ex.perform(restore_action(uid), rec)).outcome is Outcome.OK
    assert unschedulable(kube)  # the operator's cordon stays


async def test_a_record_that_still_says_ours_never_undoes_an_unmarked_cordon(
    kube: FakeKube, client: KubeClient
) -> None:
    """Our restore went through but its reply was lost; the operator cordoned the node next;
    the retry's record still says the cordon is ours. Only the marker in the fresh read
    decides: none, so the operator's cordon stays (simulation seed 30287)."""
    kube.add_node(NODE, "True", unschedulable=True)  # the operator's: no marker
    uid = node_uid(kube)
    ex = Executor(
        client, FakeClock(start_wall=T0), make_config(watch_node_leases=False), lambda: True
    )
    rec = Record(uid, Phase.CORDONED, T0, T0 - 60, cordoned=True)
    assert (await ex.perform(restore_action(uid), rec)).outcome is Outcome.OK
    assert unschedulable(kube), "an operator's cordon was undone on the record's word"


async def test_an_operators_cordon_between_the_read_and_the_write_is_not_claimed(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "False")
    uid = node_uid(kube)
    ex = Executor(
        client, FakeClock(start_wall=T0), make_config(watch_node_leases=False), lambda: True
    )

    def operator_cordons() -> None:
        kube.patch_node(NODE, {"spec": {"unschedulable": True}})

    kube.on_request("PATCH", f"^/api/v1/nodes/{NODE}$", operator_cordons)
    action, rec = cordon_action(uid)
    result = await ex.perform(action, rec)
    assert result.outcome is Outcome.FAILED  # 409: the node changed since the read
    assert ANN_CORDONED not in annots(kube)
    again = await ex.perform(action, rec)  # decided on a new read: the operator's
    assert (again.outcome, again.cordoned) == (Outcome.OK, False)


async def test_a_destructive_write_on_old_evidence_is_refused(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "Unknown")
    uid = node_uid(kube)
    clock = FakeClock(start_wall=T0)
    writes = WritePath(client, clock, make_config(watch_node_leases=False), lambda: True)
    ev = await writes.evidence(NODE, uid, None, Step.CORDON)
    assert ev.stop is None
    before = kube.resource_version
    clock.advance(EVIDENCE_SLACK + 0.5)  # slow work between the read and the write
    with pytest.raises(StaleEvidence):
        await writes.cordon(ev, {ANN_PHASE: "Cordoned"})
    with pytest.raises(StaleEvidence):
        await writes.delete_node(ev)
    assert kube.resource_version == before and not unschedulable(kube)


async def test_a_force_needs_evidence_of_a_silent_kubelet(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "False")  # the kubelet posts status: alive
    uid = node_uid(kube)
    writes = WritePath(
        client, FakeClock(start_wall=T0), make_config(watch_node_leases=False), lambda: True
    )
    ev = await writes.evidence(NODE, uid, None, Step.FORCE_DELETE)
    assert ev.stop is None and not ev.dead
    for write in (writes.delete_node(ev), writes.force_delete(ev, "default", "p", "uid-p")):
        with pytest.raises(Held) as held:
            await write
        assert held.value.reason == Blocked.KUBELET_ALIVE
    assert kube.get_node(NODE) is not None


class FlippingGates:
    """Open for the first `n` asks, then paused."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.asked: list[Step] = []

    def hold(self, node: str, step: Step) -> str | None:
        self.asked.append(step)
        self.left -= 1
        return None if self.left >= 0 else Blocked.CLUSTER_PAUSED


async def test_a_graceful_eviction_batch_asks_the_gates_before_each_eviction(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "False")
    for i in range(3):
        kube.add_pod(f"p{i}", "default", NODE, "StatefulSet", owner_name="x")
    clock = FakeClock(start_wall=T0)
    gates = FlippingGates(1)
    writes = WritePath(client, clock, make_config(), lambda: True, gates=gates)
    drainer = Drainer(client, clock, drain_timeout=3600, rng=random.Random(1), writes=writes)
    node = kube.get_node(NODE)
    assert node is not None
    fresh = parse_node(node, frozenset(), frozenset())

    async def evidence() -> Evidence:
        return Evidence(dead=False, fresh=fresh, node=NODE, answered=clock.monotonic())

    done = await drainer.drain(NODE, T0, True, DrainContext(evidence, lambda _r: None))
    assert (done.outcome, done.reason) == (Outcome.BLOCKED, Blocked.CLUSTER_PAUSED)
    assert kube.count("POST", r"/eviction$") == 1  # the pause stopped the batch at its next pod
    assert gates.asked == [Step.EVICT, Step.EVICT]


async def test_annotation_writes_never_remove_an_ownership_marker(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "False", annotations={ANN_CORDONED: "true"}, unschedulable=True)
    uid = node_uid(kube)
    writes = WritePath(client, FakeClock(start_wall=T0), make_config(), lambda: True)
    await writes.annotate(NODE, uid, {ANN_PHASE: "Suspect", ANN_CORDONED: None, ANN_TAINTED: None})
    assert annots(kube)[ANN_CORDONED] == "true" and annots(kube)[ANN_PHASE] == "Suspect"


async def test_annotation_writes_never_plant_an_ownership_marker(
    kube: FakeKube, client: KubeClient
) -> None:
    """Simulation seed 332191 (every fault kind): a record left from the last episode (its
    restore's answer seen late, the watch behind) still said `cordoned`; the next episode's
    first annotation write carried the marker onto a node nobody had cordoned; the operator
    cordoned it, the controller took that cordon for its own and undid it on recovery. A
    marker goes on only with what it marks (cordon, taint: one patch)."""
    kube.add_node(NODE, "Unknown")
    uid = node_uid(kube)
    writes = WritePath(client, FakeClock(start_wall=T0), make_config(), lambda: True)
    await writes.annotate(
        NODE, uid, {ANN_PHASE: "Suspect", ANN_CORDONED: "true", ANN_TAINTED: "true"}
    )
    assert annots(kube)[ANN_PHASE] == "Suspect"
    assert ANN_CORDONED not in annots(kube) and ANN_TAINTED not in annots(kube)
    # The operator cordons next; the node recovers: the restore leaves their cordon.
    kube.patch_node(NODE, {"spec": {"unschedulable": True}})
    kube.set_node_ready(NODE, "True")
    ex = Executor(
        client, FakeClock(start_wall=T0), make_config(watch_node_leases=False), lambda: True
    )
    rec = Record(uid, Phase.SUSPECT, T0, T0 - 60, cordoned=True)
    assert (await ex.perform(restore_action(uid), rec)).outcome is Outcome.OK
    assert unschedulable(kube), "an operator's cordon was undone"


async def test_a_lease_renewed_on_the_kubelets_schedule_is_alive_whatever_the_grace(
    kube: FakeKube, client: KubeClient
) -> None:
    kube.add_node(NODE, "Unknown")
    kube.add_node_lease(NODE, duration=40)
    clock = FakeClock(start_wall=T0)
    beats = Heartbeats(client, clock, None, make_config(grace=0, watch_node_leases=True))  # type: ignore[arg-type]
    base = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    for k in range(1, 8):  # renewed every 10 s: never stale, with a grace of 0
        assert await beats.renewing_now(NODE)
        clock.advance(10.0)
        kube.renew_node_lease(NODE, at=base + dt.timedelta(seconds=10 * k))
    # It stops: stale only once unchanged for its own leaseDurationSeconds.
    assert await beats.renewing_now(NODE)
    clock.advance(39.0)
    assert await beats.renewing_now(NODE)
    clock.advance(1.5)
    assert not await beats.renewing_now(NODE)


def test_a_held_remediation_keeps_its_slot() -> None:
    """A node cordoned and held (parked: a live kubelet, a budget) keeps its --max-concurrent
    slot until it is removed or restored: no second cordon beside it."""
    from noderecover.controller.reconciler import Controller
    from noderecover.entry.config import Config
    from tests.builders import obs

    cfg = Config(watch_node_leases=False, max_concurrent=1, grace=10)
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), cfg)
    held = obs(cfg, name="held", ready="False")
    dead = obs(cfg, name="dead", ready="Unknown")
    healthy = [(f"n{i}", obs(cfg, name=f"n{i}")) for i in range(8)]
    c.view.resync([*healthy, ("held", held), ("dead", dead)])
    c.node_watcher.synced = True
    c.policies.absent = True
    c._policies_changed()
    now = c.timeline.now()
    c.records["held"] = Record(
        held.uid, Phase.CORDONED, now - 100, now - 200, cordoned=True, parked=True
    )
    c.records["dead"] = Record(dead.uid, Phase.SUSPECT, now - 100, now - 100)
    c.decide_all()
    assert c.decisions["dead"].action is None
    assert c.decisions["dead"].blocked == Blocked.MAX_CONCURRENT
    assert c.hold("dead", Step.CORDON) == Blocked.MAX_CONCURRENT


class FailNodeReads:
    def __init__(self, inner: KubeClient) -> None:
        self.inner = inner

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        if method == "GET" and path == f"/api/v1/nodes/{NODE}":
            raise api_error(0, "Timeout", "no answer", verb=method, path=path)
        return await self.inner.request(method, path, **kw)


async def test_a_failed_evidence_read_is_a_plain_api_error_never_a_group(
    kube: FakeKube, client: KubeClient
) -> None:
    """The Node and Lease reads run at once; a failure of either is the ApiError the executor
    handles (FAILED, retried), never an exception group that would end the leader."""
    kube.add_node(NODE, "Unknown")
    kube.add_node_lease(NODE)
    uid = node_uid(kube)
    flaky: Any = FailNodeReads(client)
    cfg = make_config(watch_node_leases=True)
    ex = Executor(flaky, FakeClock(start_wall=T0), cfg, lambda: True)
    rec = Record(uid, Phase.REMOVING, T0, T0 - 600, cordoned=True)
    done = Record(uid, Phase.REMOVED, T0, T0 - 600, cordoned=True)
    result = await ex.perform(Action(Kind.REMOVE, NODE, uid, None, done, silent=True), rec)
    assert result.outcome is Outcome.FAILED and "Timeout" in result.detail


@pytest.mark.parametrize(("reason", "joining"), [("NodeStatusUnknown", False), ("", True)])
def test_a_restarted_controller_does_not_take_a_dead_young_node_for_a_joining_one(
    reason: str, joining: bool
) -> None:
    """A young node this process never saw Ready: `NodeStatusUnknown` says its kubelet posted
    status before and stopped (joined, now dead: no start-up allowance); without it, it may
    still be joining (found by the simulation: a replica restarted after the node died gave
    it the whole --node-startup-timeout, silently)."""
    from noderecover.controller.reconciler import Controller
    from noderecover.entry.config import Config
    from tests.builders import node_json

    cfg = Config(watch_node_leases=False)
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), cfg)
    raw = node_json("young", ready="Unknown", reason=reason, since=T0 - 30)
    from noderecover.core.nodes import format_time

    raw["metadata"]["creationTimestamp"] = format_time(T0 - 60)
    young = parse_node(raw, cfg.relevant_labels, frozenset({"Ready"}))
    assert young.created is not None
    assert (c.view.startup_until(young) is not None) is joining
