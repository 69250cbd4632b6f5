"""The grace of a silent node counts from its last heartbeat we saw (issue 21, item 4).

kube-controller-manager marks a node Ready=Unknown node-monitor-grace (40-50 s) after its last
heartbeat. With the heartbeat history (a watch of kube-node-lease, `--grace-from-heartbeat`),
the grace counts from the last change of the node's Lease that noderecover saw, not from the
NotReady. These tests attack the rule first: a Lease that keeps renewing, a Ready=True in the
fresh read, a Lease only first seen; then the gain: a heartbeat older than the grace at the
NotReady removes at once (after the evidence read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from noderecover.base.clock import FakeClock
from noderecover.controller.heartbeats import Heartbeats
from noderecover.core.machine import Gates, Kind, Phase, Record, decide
from noderecover.core.nodes import ANN_UNHEALTHY_SINCE, parse_time
from tests.builders import T0, obs
from tests.conftest import Harness, make_config
from tests.fakeapi import FakeKube

Start = Callable[..., Any]
WORKER = {"node-role.kubernetes.io/worker": ""}


def cluster(kube: FakeKube) -> None:
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for i in (1, 2, 3):
        kube.add_node(f"w{i}", labels=WORKER)
        kube.add_node_lease(f"w{i}")


def forces(kube: FakeKube, node: str = "w1") -> list[Any]:
    """Every write that acts as if the kubelet were gone."""
    evict_dead = [
        r
        for r in kube.requests_matching("POST", r"/eviction$")
        if r.body["deleteOptions"].get("gracePeriodSeconds") == 1
    ]
    force_deletes = kube.requests_matching("DELETE", r"/pods/")
    node_deletes = kube.requests_matching("DELETE", rf"^/api/v1/nodes/{node}$")
    taints = [
        r
        for r in kube.requests_matching("PATCH", rf"^/api/v1/nodes/{node}$")
        if "out-of-service" in str(r.body)
    ]
    return evict_dead + force_deletes + node_deletes + taints


def cordoned(kube: FakeKube, node: str = "w1") -> bool:
    n = kube.get_node(node)
    return n is not None and bool(n["spec"].get("unschedulable"))


async def heartbeats(h: Harness, node: str, seconds: float, every: float = 10.0) -> None:
    """The node's kubelet renews its Lease every `every` seconds for `seconds`."""
    t = 0.0
    while t < seconds:
        await h.idle(every)
        h.kube.renew_node_lease(node)
        t += every


async def start(harness_factory: Start, **kw: object) -> Harness:
    cfg: dict[str, object] = dict(grace=30, watch_node_leases=True, drain_timeout=60)
    cfg.update(kw)
    h: Harness = await harness_factory(**cfg)
    history = h.controller.heartbeats.history
    await h.until(lambda: h.controller.heartbeats.history_fresh() or not history, real_timeout=30)
    return h


# -- attacks: never force on a live kubelet -------------------------------------------------


async def test_a_lease_renewing_while_ready_unknown_never_forces(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A partitioned kubelet: Ready=Unknown for 5 minutes, its Lease renewed every 10 s."""
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    h = await start(harness_factory)
    await heartbeats(h, "w1", 60)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await heartbeats(h, "w1", 300)
    assert not forces(kube)
    assert not cordoned(kube), "a renewing Lease holds even the cordon"
    assert h.controller.blocked.get("w1") == "heartbeat-lease-renewing"


async def test_a_stopped_lease_with_ready_true_in_the_fresh_read_never_forces(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The view says Ready=Unknown and the Lease stopped long ago, but the fresh read before
    each step says Ready=True: nothing is written."""
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    h = await start(harness_factory)
    await heartbeats(h, "w1", 30)
    await h.idle(60)  # the Lease stops: 60 s without a heartbeat

    def alive_again() -> None:
        kube.silence_watches()  # the view keeps Ready=Unknown...
        kube.set_node_ready("w1", "True")  # ...the API says Ready=True

    # Right before the first fresh read of the node (the grace, counted from the last
    # heartbeat 60 s ago, is over at once: the cordon comes as soon as NotReady is seen).
    kube.on_request("GET", r"^/api/v1/nodes/w1$", alive_again)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: "w1" in h.controller.records, advance=0.2, real_timeout=30)
    await h.idle(180)
    assert not forces(kube)
    assert not cordoned(kube)
    # It tried, on the view, and the fresh read stopped it.
    assert kube.requests_matching("GET", r"^/api/v1/nodes/w1$")


async def test_a_lease_only_first_seen_gives_no_heartbeat_time(
    kube: FakeKube, harness_factory: Start
) -> None:
    """A Lease listed but never seen changing says nothing about when the kubelet last beat:
    the grace counts from the NotReady, as without history."""
    cluster(kube)
    h = await start(harness_factory)
    await h.idle(120)  # nothing renews w1's Lease: only its first read
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: "w1" in h.controller.records, advance=0.2, real_timeout=30)
    notready = h.controller.timeline.now()
    await h.until(
        lambda: cordoned(kube), advance=0.5, what="cordoned after the grace", real_timeout=30
    )
    assert h.controller.timeline.now() - notready >= 30.0


async def test_a_stale_history_watch_gives_no_heartbeat_time() -> None:
    clock = FakeClock(start_wall=T0)
    cfg = make_config(watch_node_leases=True, watch_silence=90.0)
    from noderecover.base.clock import Timeline

    hb = Heartbeats(object(), clock, Timeline(clock), cfg)  # type: ignore[arg-type]
    hb._resync([("w1", ("1", "a", 40.0))])
    hb.watcher.synced = True
    hb.watcher.last_progress = clock.monotonic()
    assert hb.last_change("w1") is None  # first seen: no change observed
    clock.advance(10)
    hb._event("MODIFIED", "w1", ("2", "b", 40.0))
    hb.watcher.last_progress = clock.monotonic()
    assert hb.last_change("w1") == pytest.approx(T0 + 10)
    hb._event("MODIFIED", "w1", ("2", "b", 40.0))  # same resourceVersion: no change
    clock.advance(5)
    assert hb.last_change("w1") == pytest.approx(T0 + 10)
    clock.advance(90)  # the watch made no progress for --watch-silence
    assert hb.last_change("w1") is None
    off = Heartbeats(
        object(),  # type: ignore[arg-type]
        clock,
        Timeline(clock),
        make_config(watch_node_leases=True, grace_from_heartbeat=False),
    )
    assert not off.history and off.last_change("w1") is None


def test_a_lease_still_renewing_turns_stale_after_now_never_at_now() -> None:
    """The timer that decides a held node again when its Lease turns stale (controller.agenda)
    must be later than now while `renewing` says it renews: a remainder below the timeline's
    resolution (~0.2 us at the wall scale) once rounded to now, the timer was dropped as past,
    and the node stayed held `heartbeat-lease-renewing` until its hold's Event was due again."""
    from noderecover.base.clock import Timeline

    clock = FakeClock(start_wall=T0)
    cfg = make_config(watch_node_leases=True, grace=25.0)
    hb = Heartbeats(object(), clock, Timeline(clock), cfg)  # type: ignore[arg-type]
    timeline = Timeline(clock)
    hb._note("w1", "a", 20.0, "1")
    hb._note("w1", "b", 20.0, "2")  # a renewal seen
    clock.advance(25.0 - 1e-9)
    assert hb.renewing("w1", force=False)
    stale = hb.stale_at("w1", force=False)
    assert stale is not None and stale > timeline.now()
    clock.advance(1e-6)
    assert not hb.renewing("w1", force=False)


# -- the gain: the grace counts from the last heartbeat ---------------------------------------


@pytest.mark.parametrize("history", [True, False])
async def test_a_heartbeat_older_than_the_grace_at_notready_removes_at_once(
    kube: FakeKube, harness_factory: Start, history: bool
) -> None:
    """The kubelet dies; 45 s later (node-monitor-grace) the node turns Ready=Unknown. Its last
    heartbeat is older than the 30 s grace and the Lease's own 40 s: it is cordoned, drained
    and removed at once. Without history (`--no-grace-from-heartbeat`) the grace starts at the
    NotReady, and the Lease is first read then."""
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql", grace=30)
    h = await start(harness_factory, grace_from_heartbeat=history)
    await heartbeats(h, "w1", 60)
    kube.set_kubelet_alive("w1", False)
    await h.idle(45)  # no heartbeat since: node-monitor-grace
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(lambda: "w1" in h.controller.records, advance=0.1, real_timeout=30)
    notready = h.controller.timeline.now()
    step = 0.1 if history else 0.5
    await h.until(
        lambda: kube.get_node("w1") is None, advance=step, what="removed", real_timeout=60
    )
    took = h.controller.timeline.now() - notready
    if history:
        # At once: eviction, its 1 s grace, the force, the DELETE (the fake clock runs on while
        # the loop works: a loaded machine adds a little).
        assert took < 10.0, f"removed {took:.1f}s after NotReady"
        # The Node says when it was seen unhealthy (what a new leader resumes from: it counts
        # from there, never earlier); the grace counted from the heartbeat in memory.
        since = [
            r.body["metadata"]["annotations"].get(ANN_UNHEALTHY_SINCE)
            for r in kube.requests_matching("PATCH", r"^/api/v1/nodes/w1$")
            if isinstance(r.body, dict)
        ]
        first = parse_time(next(s for s in since if s))
        assert first is not None and first >= notready - 1
    else:
        assert took >= 30.0, f"removed {took:.1f}s after NotReady"
    # Every force was decided on a fresh read of the Node and its Lease made right before.
    order = [
        (r.method, r.path)
        for r in kube.requests
        if "/nodes/w1" in r.path or "/leases/w1" in r.path or "/pods/" in r.path
    ]
    delete = order.index(("DELETE", "/api/v1/nodes/w1"))
    before = order[:delete]
    assert ("GET", "/api/v1/nodes/w1") in before[-3:]
    assert ("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/w1") in (
        before[-3:]
    )
    assert kube.requests_matching("DELETE", r"/pods/mysql-0$")


async def test_a_renewal_after_notready_holds_the_force_again(
    kube: FakeKube, harness_factory: Start
) -> None:
    """Old heartbeat at the NotReady, then the Lease renews once (the kubelet is back on the
    API): no force until it stays unchanged for its own leaseDurationSeconds again."""
    cluster(kube)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")
    h = await start(harness_factory, grace=0)
    await heartbeats(h, "w1", 30)
    await h.idle(45)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    kube.renew_node_lease("w1")
    renewed = h.controller.timeline.now()
    await h.until(
        lambda: bool(forces(kube)), advance=0.5, what="forced once stale again", real_timeout=30
    )
    assert h.controller.timeline.now() - renewed >= 40.0


# -- the rule, in the pure state machine ----------------------------------------------------


def test_a_new_episode_of_a_silent_node_starts_at_its_last_heartbeat() -> None:
    cfg = make_config(grace=30)
    now = T0 + 100
    silent = obs(cfg, ready="Unknown")
    d = decide(Record(uid=silent.uid), silent, now, cfg, Gates(heartbeat_at=now - 45))
    assert d.action is not None and d.action.kind is Kind.PERSIST
    # Seen unhealthy now (persisted: a new leader resumes from it); the grace counts from
    # the heartbeat (in memory).
    assert d.action.success.unhealthy_since == now
    assert d.action.success.heartbeat_start == now - 45
    assert d.wake_at == now - 15
    # Never later than now, never from a heartbeat when Ready is not Unknown.
    d = decide(Record(uid=silent.uid), silent, now, cfg, Gates(heartbeat_at=now + 5))
    assert d.action is not None and d.action.success.heartbeat_start is None
    notready = obs(cfg, ready="False")
    d = decide(Record(uid=notready.uid), notready, now, cfg, Gates(heartbeat_at=now - 45))
    assert d.action is not None and d.action.success.heartbeat_start is None
    # Unknown: today's rule.
    d = decide(Record(uid=silent.uid), silent, now, cfg, Gates())
    assert d.action is not None and d.action.success.heartbeat_start is None
    assert d.wake_at == now + 30
    # Started at the heartbeat, the cordon comes at once (the grace is over).
    first = decide(Record(uid=silent.uid), silent, now, cfg, Gates(heartbeat_at=now - 45))
    assert first.action is not None
    rec = first.action.success
    assert rec.phase is Phase.SUSPECT
    d = decide(rec, silent, now, cfg, Gates(heartbeat_at=now - 45))
    assert d.action is not None and d.action.kind is Kind.CORDON
    # A flap (healthy again, then silent) forgets the heartbeat: a whole grace from the flap.
    healthy = obs(cfg, ready="True")
    rec = decide(d.action.success, healthy, now + 1, cfg, Gates()).record
    d = decide(rec, silent, now + 2, cfg, Gates(heartbeat_at=now - 45))
    assert d.flapped and d.record.heartbeat_start is None
    assert d.wake_at == now + 2 + 30


def test_a_policys_ready_unknown_duration_counts_from_the_last_heartbeat() -> None:
    from noderecover.core.machine import grace_deadline

    cfg = make_config(grace=300, condition_graces=(("Ready", "Unknown", 30.0),))
    node = obs(cfg, ready="Unknown", since=T0)
    assert grace_deadline(T0 + 2, node, cfg) == T0 + 2 + 30
    assert grace_deadline(T0 + 2, node, cfg, heartbeat_at=T0 - 45) == T0 - 15
    # Not for a node that is not silent.
    ready_false = obs(cfg, ready="False", since=T0)
    assert grace_deadline(T0 + 2, ready_false, cfg, heartbeat_at=T0 - 45) == T0 + 2 + 300


# -- two pools, two graces, one incremental pass (issue 24) ----------------------------------


@pytest.mark.parametrize("beat_seen", [True, False], ids=["heartbeat-seen", "no-heartbeat-seen"])
async def test_two_pools_silent_together_each_counts_its_own_grace_from_the_heartbeat(
    kube: FakeKube, harness_factory: Start, beat_seen: bool
) -> None:
    """The e2e two-pools case on a fake clock, through the leader's incremental passes: a fast
    pool (Ready=Unknown 3 s) and a slow one (25 s) lose a node each at the same moment; the
    node controller marks them Ready=Unknown 10 s later (node-monitor-grace), while every other
    Lease keeps renewing (Lease events that mark other nodes dirty, pool gates that move when
    the fast node is cordoned). Each node is cordoned on its own pool's grace counted from its
    last heartbeat when a renewal was seen (`beat_seen`), else from the NotReady: the slow
    node never before that, and never on the fast pool's clock."""
    kube.install_policies()
    ready_unknown = {"type": "Ready", "status": "Unknown"}
    for pool, duration in (("fast", "3s"), ("slow", "25s")):
        kube.add_policy(
            pool,
            {
                "nodeSelector": {"matchLabels": {"pool": pool}},
                "unhealthyConditions": [{**ready_unknown, "duration": duration}],
            },
        )
    nodes = [f"{p}{i}" for p in ("f", "s") for i in (1, 2, 3)]
    for n in nodes:
        kube.add_node(n, labels={"pool": "fast" if n.startswith("f") else "slow"})
        kube.add_node_lease(n, duration=20)
    h = await start(harness_factory, grace=600)
    await h.until(lambda: len(h.controller.policies.policies) == 2, advance=0.5)
    step, every = 0.1, 50  # fake seconds per tick; ticks between two renewals (5 s)
    ticks = 0

    async def run(seconds: float, alive: list[str]) -> None:
        nonlocal ticks
        for _ in range(round(seconds / step)):
            h.clock.advance(step)
            ticks += 1
            if ticks % every == 0:
                for n in alive:
                    kube.renew_node_lease(n)
            for n in ("f1", "s1"):
                if n not in cordoned_at and cordoned(kube, n):
                    cordoned_at[n] = h.controller.timeline.now()
            await anyio.sleep(0.003)

    cordoned_at: dict[str, float] = {}
    await run(30.0 if beat_seen else 0.0, nodes)
    if beat_seen:
        await h.until(lambda: h.controller.heartbeats.last_change("s1") is not None)
    else:
        assert h.controller.heartbeats.last_change("s1") is None
    last_beat = h.controller.timeline.now()
    kube.set_kubelet_alive("f1", False)
    kube.set_kubelet_alive("s1", False)
    others = [n for n in nodes if n not in ("f1", "s1")]
    await run(10.0, others)  # node-monitor-grace: no heartbeat from f1, s1
    assert not cordoned_at
    kube.set_node_ready("f1", "Unknown", "NodeStatusUnknown")
    kube.set_node_ready("s1", "Unknown", "NodeStatusUnknown")
    notready = h.controller.timeline.now()
    await run(45.0, others)
    assert set(cordoned_at) == {"f1", "s1"}, (cordoned_at, h.controller.decisions.get("s1"))
    start_of_silence = last_beat if beat_seen else notready
    fast, slow = cordoned_at["f1"] - start_of_silence, cordoned_at["s1"] - start_of_silence
    if beat_seen:
        # The fast pool's 3 s were over at the NotReady: cordoned then.
        assert cordoned_at["f1"] - notready < 2.0, (fast, slow)
    else:
        assert 3.0 <= fast < 5.0, (fast, slow)
    assert 25.0 <= slow < 27.0, (fast, slow)


# -- a drain a live Lease held is retried when the Lease turns stale --------------------------


async def test_a_drain_held_by_a_renewing_lease_is_retried_when_the_lease_turns_stale(
    kube: FakeKube, harness_factory: Start
) -> None:
    """The kubelet dies right after a renewal of a Lease with a 60 s duration; the node turns
    Ready=Unknown 10 s later and is cordoned at once (its 5 s grace counted from the heartbeat),
    but its Lease is fresh for a force (the longer of the grace and the Lease's duration): the
    drain treats it as a live kubelet and ends held `pods-terminating`. Its retry comes when
    the Lease turns stale (a timer), not after the live drain's fixed retry (30 s): without
    it, the retry at +45 s still found the Lease fresh and the next came at +75 s."""
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for i in (1, 2, 3):
        kube.add_node(f"w{i}", labels=WORKER)
        kube.add_node_lease(f"w{i}", duration=60)
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql", grace=30)
    h = await start(harness_factory, grace=5, drain_timeout=5)
    await heartbeats(h, "w1", 30)
    lease = kube.get_lease("kube-node-lease", "w1")
    assert lease is not None
    version = lease["metadata"]["resourceVersion"]
    await h.until(lambda: h.controller.heartbeats.leases["w1"].version == version)
    last = h.controller.heartbeats.last_change("w1")  # its last renewal, as seen
    assert last is not None
    kube.set_kubelet_alive("w1", False)
    await h.idle(10)  # node-monitor-grace
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")
    await h.until(
        lambda: h.controller.blocked.get("w1") == "pods-terminating",
        advance=0.1,
        what="held: the Lease is fresh for a force",
        real_timeout=30,
    )
    assert not forces(kube)
    retries: set[tuple[float, str | None]] = set()

    def forced() -> bool:
        rec = h.controller.records.get("w1")
        if rec is not None and rec.retry_at:
            retries.add((round(rec.retry_at - last, 2), h.controller.blocked.get("w1")))
        return bool(forces(kube))

    await h.until(forced, advance=0.1, what="forced", real_timeout=60)
    took = h.controller.timeline.now() - last
    # The retries: the live drain's (30 s after the first hold, the Lease still fresh), then
    # the Lease's stale time (its change seen + 60 s), never the fixed retry beyond it.
    assert max(retries)[0] <= 60.0 + 0.02, sorted(retries)
    assert 60.0 <= took < 70.0, f"first force {took:.1f}s after the last heartbeat"
