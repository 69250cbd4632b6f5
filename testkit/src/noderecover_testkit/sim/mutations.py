"""The teeth check: revert one guard of the controller, expect the seeds to find it.

One table, keyed by issue 20's classes of hole. Each entry patches the CURRENT code of
src/noderecover (monkeypatches applied inside the worker process, by name) and returns an
undo. src/ is being refactored: an entry whose target moved fails loudly at `apply` (an
AttributeError), and must be re-pointed at the new write path.

A mutation counts as caught when it makes the seeds fail in a way the unmutated controller
does not on the same seeds: a (seed, invariant) pair not in the baseline. (The controller at
the branch point already violates several invariants: see REGRESSION_SEEDS.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Undo = Callable[[], None]


def _patch(owner: Any, name: str, value: Any) -> Undo:
    old = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, value)
    return lambda: setattr(owner, name, old)


def unknown_as_no() -> Undo:
    """1: the policy list counts as known even when its watch is stale or never listed."""
    from noderecover.controller.policies import PolicySource

    return _patch(PolicySource, "known", property(lambda self: True))


def decision_older_than_write() -> Undo:
    """2: the destructive step uses the Lease as last polled, not a fresh read."""
    from noderecover.controller.heartbeats import Heartbeats

    async def renewing_now(self: Any, name: str) -> bool:
        return bool(self.renewing(name))

    return _patch(Heartbeats, "renewing_now", renewing_now)


def liveness_scale() -> Undo:
    """3: a heartbeat Lease judged on a 1 s window, not its own renewal scale (a kubelet
    renewing every ~10 s looks stale between renewals)."""
    from noderecover.controller.heartbeats import Heartbeats

    def renewing(self: Any, name: str) -> bool:
        if not self._cfg.watch_node_leases:
            return False
        seen = self.leases.get(name)
        return seen is None or bool(self._clock.monotonic() - seen.changed_at < 1.0)

    return _patch(Heartbeats, "renewing", renewing)


def ownership_lost() -> Undo:
    """4: a restore forgets what we added (cordon, taint): it is never undone."""
    from noderecover.controller.executor import Executor

    orig = Executor._restore

    async def _restore(self: Any, action: Any, rec: Any) -> Any:
        return await orig(self, action, dataclasses.replace(rec, cordoned=False, tainted=False))

    return _patch(Executor, "_restore", _restore)


def stale_claims() -> Undo:
    """5: a cordon always claims the cordon as ours, even one already on the node."""
    from noderecover.controller.executor import Executor

    orig = Executor._cordon

    async def _cordon(self: Any, action: Any) -> Any:
        success = dataclasses.replace(action.success, cordoned=True)
        return await orig(self, dataclasses.replace(action, success=success))

    return _patch(Executor, "_cordon", _cordon)


def limits() -> Undo:
    """6: --max-concurrent and the hourly budget see nothing in flight."""
    from noderecover.controller import reconciler

    orig = getattr(reconciler, "decide")  # noqa: B009 (not re-exported: mypy)

    def decide(rec: Any, obs: Any, now: float, cfg: Any, gates: Any) -> Any:
        gates = dataclasses.replace(gates, in_flight=0, removals_last_hour=0)
        return orig(rec, obs, now, cfg, gates)

    return _patch(reconciler, "decide", decide)


def busy() -> Undo:
    """8: silent nodes' Leases re-read in a tight loop (every 50 ms)."""
    from noderecover.controller.heartbeats import Heartbeats

    init = Heartbeats.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._min_grace = lambda: 0.0

    undo1 = _patch(Heartbeats, "__init__", __init__)
    from noderecover.controller import heartbeats

    real_max = max

    def fast_max(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 2 and args[0] == 0.5:
            return 0.05
        return real_max(*args, **kwargs)

    undo2 = _patch(heartbeats, "max", fast_max) if hasattr(heartbeats, "max") else None
    heartbeats.max = fast_max  # type: ignore[attr-defined]

    def undo() -> None:
        undo1()
        if undo2 is not None:
            undo2()
        else:
            del heartbeats.max  # type: ignore[attr-defined]

    return undo


def clocks() -> Undo:
    """10: heartbeat Lease ages measured on the wall clock (a step makes a Lease look old)."""
    from noderecover.controller.heartbeats import Heartbeats

    init = Heartbeats.__init__

    class WallAsMonotonic:
        def __init__(self, clock: Any) -> None:
            self._c = clock

        def monotonic(self) -> float:
            return float(self._c.wall())

        def wall(self) -> float:
            return float(self._c.wall())

        async def sleep(self, seconds: float) -> None:
            await self._c.sleep(seconds)

    def __init__(self: Any, kube: Any, clock: Any, *args: Any, **kwargs: Any) -> None:
        init(self, kube, WallAsMonotonic(clock), *args, **kwargs)

    return _patch(Heartbeats, "__init__", __init__)


def leadership() -> Undo:
    """(4, failover between writes) the act-gate always says yes and writes have no deadline
    (the KubeClient's write deadline alone would stop a deposed leader's writes)."""
    from noderecover.entry.app import _StopGate
    from noderecover.kube.election import LeaderElector

    undo1 = _patch(_StopGate, "may_act", lambda self: True)
    undo2 = _patch(LeaderElector, "write_deadline", lambda self: None)

    def undo() -> None:
        undo2()
        undo1()

    return undo


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    fn: Callable[[], Undo]
    faults: str  # the swarm configuration that makes the class likely (--faults)
    expect: frozenset[str]  # the invariants that must catch it


def _m(name: str, fn: Callable[[], Undo], faults: str, *expect: str) -> Mutation:
    return Mutation(name, fn, faults, frozenset(expect))


# class -> mutation. 7 (the plugin) is not simulated.
MUTATIONS: dict[str, Mutation] = {
    "1": _m(
        "unknown-as-no",
        unknown_as_no,
        "pause,pause-unreadable,policy-churn",
        "paused",
        "max-concurrent",
        "removals-per-hour",
        "liveness",
    ),
    "2": _m(
        "decision-older-than-write",
        decision_older_than_write,
        "partition,slow,watch-lag",
        "kubelet-alive",
    ),
    "3": _m("liveness-scale", liveness_scale, "partition", "kubelet-alive"),
    "4": _m("ownership-lost", ownership_lost, "lost-reply,notready", "left-behind"),
    "4b": _m("leadership", leadership, "leader", "leadership"),
    "5": _m("stale-claims", stale_claims, "operator,watch-lag", "operator-change-undone"),
    "6": _m("limits", limits, "notready", "max-concurrent", "removals-per-hour"),
    "8": _m("busy", busy, "partition", "api-rate"),
    "10": _m("clocks", clocks, "wall-step,partition", "kubelet-alive"),
}
BY_NAME = {m.name: m.fn for m in MUTATIONS.values()}


def apply(name: str) -> Undo:
    return BY_NAME[name]()


def caught(m: Mutation, seeds: range, jobs: int = 2) -> list[tuple[int, str]]:
    """The (seed, invariant) pairs, of the invariants that should catch `m`, that fail with it
    and pass without it, on the same seeds under `m`'s swarm configuration."""
    from noderecover_testkit.sim.run import run_many

    base = set(run_many(seeds, jobs, faults=m.faults, echo=False).failures)
    got = set(run_many(seeds, jobs, faults=m.faults, mutation=m.name, echo=False).failures)
    return sorted((s, inv) for s, inv in got - base if inv in m.expect)


def check_all(seeds: int = 60, start: int = 0, jobs: int = 2) -> int:
    """Each mutation on its swarm configuration, against the unmutated code on the same seeds;
    0 when every one is caught."""
    rng = range(start, start + seeds)
    missed = 0
    for cls, m in MUTATIONS.items():
        new = caught(m, rng, jobs)
        status = "caught" if new else "MISSED"
        missed += not new
        print(f"class {cls:>3} {m.name:28} --faults {m.faults:36} {status}  {new[:4]}", flush=True)
    return 1 if missed else 0
