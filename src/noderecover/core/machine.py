"""The per-node remediation state machine: pure functions of (record, observation, now).

    Healthy --unhealthy--> Suspect --grace--> Cordoned --> Draining --> Removing --> Removed
       ^                     |  (gates)          |            |            |            |
       +---- healthy for healthy_delay: restore (uncordon/untaint only what we did) ----+

`decide` returns at most one Action per call; the imperative shell performs it and feeds
the outcome back through `complete`. Nothing here does I/O or reads a clock.

Invariants (tests/test_machine_properties.py checks them on arbitrary sequences):
- No forward step (cordon, drain, fence, remove) unless: the node is unhealthy now, its
  object is well-formed, it is not excluded, the watch is fresh, the circuit breaker is
  closed, and (to start) fewer than `max_concurrent` other remediations are in flight;
  removal also needs the hourly budget.
- Grace: remediation needs `grace` of *continuous* unhealthiness: no forward step, in any
  phase, before `unhealthy_since + grace`, and `unhealthy_since` is never earlier than the
  node has provably been unhealthy. One exception, for a silent node (Ready=Unknown) whose
  episode started from Healthy while we knew its last sign of life (`Gates.heartbeat_at`:
  the last change of its heartbeat Lease we saw, or later the view showing it not silent):
  the grace counts from that moment (`Record.heartbeat_start`, in memory, cleared by a
  flap), because kube-controller-manager writes Ready=Unknown only node-monitor-grace after
  it. Every force still needs the Lease stale for its own leaseDurationSeconds in a fresh
  read.
- A malformed Node (`NodeObs.malformed`) is never acted on: no forward step, no restore, no
  annotation write.
- Recovery: healthy continuously for `healthy_delay` -> restore. Only a cordon or taint that
  noderecover added is undone (`cordoned` / `tainted` record ownership). An out-of-service
  taint already on the node when the removal would add it (an operator's, another tool's) is
  not ours: `tainted` stays False. The REMOVE action's success record says so from the view;
  the executor's fresh read is what counts (`complete(..., tainted=)`). Health for
  `healthy_delay` or longer ends the episode even when the restore did not happen (it failed,
  or is still pending): unhealthy again afterwards is a new episode with a new grace.
- Resuming (`resume`) can only delay a remediation, never bring it forward: the annotations
  are trusted only as far as the Node itself backs them (see `resume`).

Flap damping. A flap is an observation of health (`healthy_since` set: the watch, or the
re-read before a destructive step) followed by unhealthiness again before the node was
restored. Every flap is counted in `Record.flaps` (in memory; reset on restore), reported by
`Decision.flapped`, and restarts the grace timer: `unhealthy_since` becomes the moment of the
flap (persisted with a PERSIST, so a new leader keeps it). Per phase:
- Suspect: the cordon waits for a whole new grace. A node flapping faster than the grace is
  never cordoned.
- Cordoned, Draining, Removing: the cordon stays (ours, undone on restore; the node still
  counts against `max_concurrent`, so a flapping node keeps its slot rather than letting a
  second remediation start), but no drain, fence or removal until the node has been
  unhealthy for `grace` since its last flap: held with blocked reason `flapping`. A node
  flapping faster than the grace is never drained or removed; once healthy for
  `healthy_delay` it is restored (uncordoned) like any other.
- Removed: the episode rule below (a flap ends the episode).

Episodes. An episode starts in one place, `_new_episode` (why: `Start`); a flap restarts the
grace within an episode (`_flap`), keeping its phase, cordon and slot. Removed is final for an
episode while the node stays unhealthy: no remediation loop.
The episode is over when the node was seen healthy since (a flap), or its Ready condition
transitioned after the Removed `phase_since`, or the out-of-service taint we added is gone
(seen in a view that already has our Removed annotations, so not a lagging watch). An
unhealthy node whose episode is over starts a new one: Suspect, the grace starting at the
flap, or the new Ready transition, or now (never earlier than that transition); the cordon
and the taint stay ours only if still on the node; `fenced` is cleared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import assert_never

from noderecover.core.agent import AgentGate
from noderecover.core.nodes import (
    ANN_CORDONED,
    ANN_FENCED,
    ANN_PHASE,
    ANN_PHASE_SINCE,
    ANN_TAINTED,
    ANN_UNHEALTHY_SINCE,
    OUR_ANNOTATIONS,
    OUT_OF_SERVICE_KEY,
    Condition,
    NodeObs,
    format_time,
    parse_time,
)
from noderecover.core.proof import (
    NO_PROOF,
    Proof,
    fence_requested,
    needs_fence,
    proof_of,
    removal_mode,
    shut_down,
    taints,
)
from noderecover.core.reasons import Blocked
from noderecover.core.safety import exclusion
from noderecover.core.settings import Config


class Phase(StrEnum):
    HEALTHY = "Healthy"
    SUSPECT = "Suspect"
    CORDONED = "Cordoned"
    DRAINING = "Draining"
    REMOVING = "Removing"
    REMOVED = "Removed"


# Phases in which a remediation is in flight (counted against --max-concurrent).
IN_FLIGHT = frozenset({Phase.CORDONED, Phase.DRAINING, Phase.REMOVING})

# Blocked reasons (core.reasons has them all, with what each means and what ends it).
# The node showed life (flapped) within the last grace; no destructive step.
FLAPPING = Blocked.FLAPPING
# The freshest evidence (Ready=False: the kubelet posts status, or its heartbeat Lease
# renewing) says the kubelet is alive. No force-delete, fence or removal then; the node
# stays cordoned and drained by eviction (it keeps its slot).
KUBELET_ALIVE = Blocked.KUBELET_ALIVE
# A drained node waits for the hourly removal budget (its slot given back).
MAX_REMOVALS = Blocked.MAX_REMOVALS
# The node stopped matching --node-selector; only a restore may happen.
EXCLUDED_SELECTOR = Blocked.EXCLUDED_SELECTOR

# Why the fresh read before a step ended it: the node is healthy again.
HEALTHY_AGAIN = "healthy"

# The safety-gate reason of a node whose object cannot be read safely.
MALFORMED = Blocked.MALFORMED

# Resolution of a condition's lastTransitionTime (metav1.Time: whole seconds, truncated).
CONDITION_TIME_PRECISION = 1.0


class Kind(StrEnum):
    PERSIST = "persist"  # write the phase annotations only
    CORDON = "cordon"
    DRAIN = "drain"
    FENCE = "fence"
    REMOVE = "remove"
    RESTORE = "restore"  # uncordon / untaint what we did, clear annotations


# The steps that move a remediation forward (everything but annotations and restore).
FORWARD = frozenset({Kind.CORDON, Kind.DRAIN, Kind.FENCE, Kind.REMOVE})


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"  # retry after backoff
    HEALTHY = "healthy"  # the re-read before a destructive step found the node healthy
    BLOCKED = "blocked"  # a gate or the kubelet's liveness held the step: retry later
    NEEDS_FENCE = "needs-fence"  # drain must force-delete pods but the node is not fenced
    GONE = "gone"  # the node (with this uid) no longer exists


@dataclass(frozen=True, slots=True)
class Record:
    """What noderecover remembers of one node; the fields after `fenced` are in memory only."""

    uid: str
    phase: Phase = Phase.HEALTHY
    phase_since: float = 0.0
    unhealthy_since: float | None = None
    cordoned: bool = False  # we set spec.unschedulable: ours to undo
    tainted: bool = False  # we added the out-of-service taint: ours to remove
    fenced: bool = False
    # In memory only:
    fence_first: bool = False  # the drain needs to force-delete pods: fence before going on
    healthy_since: float | None = None
    retry_at: float = 0.0
    failures: int = 0
    flaps: int = 0  # flaps seen since the node was last Healthy (see "Flap damping")
    # The Ready lastTransitionTime this stretch of unhealthiness is judged from: a newer one
    # (seen in the view or in any fresh read) is a flap, even if no healthy state was seen.
    transition: float | None = None
    # Held for long (kubelet alive, drain blocked, removal budget). It KEEPS its
    # --max-concurrent slot (a slot is held from the cordon until removal or restore); shown
    # in status and logs only.
    parked: bool = False
    # The cloud's shutdown taint was seen on the node in this stretch of unhealthiness: its
    # disappearance (in the view or a fresh read) is a sign of life, a flap (core.proof).
    shutdown: bool = False
    # The last sign of life seen of a silent node whose episode started from Healthy (timeline;
    # `Gates.heartbeat_at` then): the grace counts from it when earlier than
    # `unhealthy_since`. Not persisted (a new leader counts from `unhealthy_since`), cleared by
    # a flap.
    heartbeat_start: float | None = None


@dataclass(frozen=True, slots=True)
class Gates:
    """Cluster-wide facts a decision needs, computed by the controller for this instant."""

    fresh: bool = True  # initial list complete and the node watch not stale
    breaker_open: bool = False
    in_flight: int = 0  # remediations in flight on OTHER nodes
    removals_last_hour: int = 0
    lease_renewing: bool = False  # this node's heartbeat Lease was renewed within the grace
    lease_renewal_seen: bool = False  # ...because we saw its renewTime change (not a first read)
    lease_stale_at: float | None = None  # when it counts as stale if it does not change
    # The last sign of life of the node seen by us (timeline): the last change of its
    # heartbeat Lease we observed, or later the last time the view showed it not silent. None:
    # unknown (no change of its Lease observed yet, Lease history off): the grace of a new
    # episode then counts from when the node is seen unhealthy.
    heartbeat_at: float | None = None
    managed: bool = True  # the node matches --node-selector
    startup_until: float | None = None  # a never-Ready node is still joining until then
    # A controller-wide hold on this node (pause, policy conflict, no or invalid policy:
    # core.policies), or None. Holds every forward step, never a restore.
    held: str | None = None
    # The node's agent (`noderecover agent`), as its Lease and our mark were seen; None: no
    # agent Lease. Relied on (core.agent.not_relied_on), it replaces the fence: nothing is
    # forced before it proves the node off (core.proof SELF_FENCED).
    agent: AgentGate | None = None


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    node: str
    uid: str
    persist: Record | None  # annotations to write before/with the action
    success: Record  # the record once the action succeeded
    silent: bool = False  # Ready=Unknown: the kubelet is gone (drain short-cuts)
    may_force: bool = True  # force-deleting pods allowed (fenced, or no fencing configured)
    transition: float | None = None  # Ready transition the step was decided on (see Record)
    # Why the node is believed off (core.proof); the fresh read before each write must back
    # it (a shutdown taint gone: the step stops, a flap).
    proof: Proof = NO_PROOF
    # FENCE only: ask the node's agent to fence it (write noderecover.io/fence-requested with
    # the Node's uid) instead of running a fence provider.
    request: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    record: Record
    action: Action | None = None
    blocked: str | None = None
    why: str = ""
    wake_at: float | None = None  # re-evaluate no later than this (a timer)
    flapped: bool = False  # this decision saw a flap (the grace timer restarted)


def annotations_for(rec: Record) -> dict[str, str | None]:
    """The merge-patch value of our annotations for a record (None deletes a key).

    Times are rounded up to the second (the annotation's precision): a resumed grace or
    drain timeout can come out a fraction of a second longer, never shorter.
    """
    if rec.phase is Phase.HEALTHY:
        return dict.fromkeys(OUR_ANNOTATIONS)
    since = rec.unhealthy_since if rec.unhealthy_since is not None else rec.phase_since
    return {
        ANN_PHASE: rec.phase.value,
        ANN_PHASE_SINCE: format_time(math.ceil(rec.phase_since)),
        ANN_UNHEALTHY_SINCE: format_time(math.ceil(since)),
        ANN_CORDONED: "true" if rec.cordoned else None,
        ANN_TAINTED: "true" if rec.tainted else None,
        ANN_FENCED: "true" if rec.fenced else None,
    }


def removal_intent(node: str, rec: Record) -> str:
    """The name of the Event that records the intent to remove `node` in this episode.

    Written (and acknowledged) before the episode's first out-of-service taint or Node
    DELETE; a new leader counts these Events against the hourly removal budget, so a removal
    whose own Event was never written (the leader died right after the DELETE) still counts.
    The name is a function of the Node's uid and the episode's start as its annotation
    carries it, so a retry, a lost reply or a new leader resuming the same removal names the
    same Event (409: already recorded) and it counts once.
    """
    since = rec.unhealthy_since if rec.unhealthy_since is not None else rec.phase_since
    key = f"{rec.uid}/{format_time(math.ceil(since))}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{node[:200]}.removal-{digest}"


def unhealthy(obs: NodeObs, cfg: Config) -> bool:
    return any((c.type, c.status) in cfg.unhealthy_conditions for c in obs.conditions)


def unhealthy_start(obs: NodeObs, cfg: Config) -> float | None:
    """Since when the Node itself shows it unhealthy without a break, or None if healthy.

    Each condition that makes the node unhealthy now has held its status since its
    lastTransitionTime, so the earliest of those is a time the node has been unhealthy
    since (it may have been unhealthy earlier, through conditions that changed since).
    metav1.Time has second precision (truncated): ':05' means a transition in [:05, :06),
    so the start taken is the end of that second.
    """
    starts = [
        c.since
        for c in obs.conditions
        if (c.type, c.status) in cfg.unhealthy_conditions and c.since is not None
    ]
    return min(starts) + CONDITION_TIME_PRECISION if starts else None


def resume(obs: NodeObs, now: float, cfg: Config) -> Record:
    """The record a (new) leader starts from: the annotations on the Node, sanity-checked.

    The annotations may be stale (a leader died before clearing them, the node recovered
    while no leader ran), garbled or forged into an impossible state. They are trusted only
    as far as the Node backs them:
    - a later phase (Cordoned...Removed) is resumed only when `unhealthy-since` is a valid
      past time and the node has provably been unhealthy since then (`unhealthy_start`);
      otherwise the remediation restarts at Suspect with a new grace, keeping only what is
      ours to undo (our cordon, our taint) - never `fenced`, which belonged to that episode;
    - Suspect's grace never starts before the node provably became unhealthy;
    - `phase-since` (the drain timeout counts from it) is used only when it is a valid time
      between `unhealthy-since` and now; otherwise the phase counts from now;
    - a node healthy now resumes with no unhealthy start at all: the next unhealthy
      observation starts a new grace.
    """
    ann = obs.annotations
    try:
        phase = Phase(ann.get(ANN_PHASE, Phase.HEALTHY.value))
    except ValueError:
        phase = Phase.HEALTHY
    if phase is Phase.HEALTHY or obs.malformed is not None:
        return Record(uid=obs.uid)
    # What the annotations say is ours to undo (a cordon only while the node is cordoned).
    ours = Record(
        uid=obs.uid,
        cordoned=ann.get(ANN_CORDONED) == "true" and obs.unschedulable,
        tainted=ann.get(ANN_TAINTED) == "true",
    )
    since = _past(parse_time(ann.get(ANN_UNHEALTHY_SINCE)), now)
    phase_since = _past(parse_time(ann.get(ANN_PHASE_SINCE)), now)
    start = unhealthy_start(obs, cfg)
    if start is None:
        # Healthy now: no start yet (the next unhealthy observation starts the grace).
        return _new_episode(ours, obs, now, None, Start.RESUMED)
    start = min(start, now)
    if phase is not Phase.SUSPECT and since is not None and start <= since:
        return dataclasses.replace(
            ours,
            phase=phase,
            phase_since=phase_since if phase_since is not None and phase_since >= since else now,
            unhealthy_since=since,
            fenced=ann.get(ANN_FENCED) == "true",
            transition=ready_since(obs),
        )
    return _new_episode(
        ours,
        obs,
        now,
        start if since is None else max(since, start),
        Start.RESUMED,
        phase_since=phase_since if phase is Phase.SUSPECT and phase_since is not None else now,
    )


def _past(t: float | None, now: float) -> float | None:
    """A timestamp usable as a start: valid and not in the future."""
    return t if t is not None and t <= now else None


def _enter(rec: Record, phase: Phase, now: float, **changes: object) -> Record:
    return dataclasses.replace(rec, phase=phase, phase_since=now, **changes)  # type: ignore[arg-type]


class Start(Enum):
    """Why an episode starts (see "Episodes"); what the new one keeps of the last depends on it."""

    UNHEALTHY = "a healthy node turned unhealthy"
    RECOVERED = "unhealthy again after it recovered but was not restored"
    REMOVED_FLAPPED = "removed, then healthy again, then unhealthy"
    REMOVED_READY_CHANGED = "removed, then its Ready condition changed"
    REMOVED_UNTAINTED = "removed, then its out-of-service taint was removed by someone else"
    RESUMED = "a leader resumed a remediation that the Node does not back past Suspect"


# Episodes that follow a removal (what `decide` says of each): the cordon and the taint stay
# ours only if still on the node.
_AFTER_REMOVAL = {
    Start.REMOVED_FLAPPED: "flapped: healthy again, then unhealthy",
    Start.REMOVED_READY_CHANGED: "Ready changed since the removal",
    Start.REMOVED_UNTAINTED: "out-of-service taint removed by someone else",
}


def _new_episode(
    rec: Record,
    obs: NodeObs,
    now: float,
    start: float | None,
    cause: Start,
    *,
    phase_since: float | None = None,
) -> Record:
    """The one place an episode starts: Suspect since `phase_since` (default `now`), the grace
    timed from `start` (None: from the next unhealthy observation), judged from the Ready
    transition the node shows now.

    Of the record it follows, only what is ours to undo carries over (our cordon, our taint:
    after a removal only if still on the node) and the flap count (a flap after the removal
    is one more). Nothing else belongs to the new episode: not `fenced`, not a pending fence,
    retry, failure count, parking or healthy stretch.
    """
    after_removal = cause in _AFTER_REMOVAL
    return Record(
        uid=obs.uid,
        phase=Phase.SUSPECT,
        phase_since=now if phase_since is None else phase_since,
        unhealthy_since=start,
        cordoned=rec.cordoned and (obs.unschedulable or not after_removal),
        tainted=rec.tainted and (obs.has_taint(OUT_OF_SERVICE_KEY) or not after_removal),
        flaps=rec.flaps + 1 if cause is Start.REMOVED_FLAPPED else rec.flaps,
        transition=ready_since(obs),
    )


# Phases of an episode that has not reached Removed: flaps, retries and the grace apply.
_UNDERWAY = frozenset({Phase.SUSPECT}) | IN_FLIGHT


def decide(rec: Record, obs: NodeObs, now: float, cfg: Config, gates: Gates) -> Decision:
    """The next step for one node. `rec` belongs to `obs.uid` (the caller resumes on change).

    What holds for every phase comes first: (1) an unreadable node, (2) health (damping,
    restore), (3) the end of an unrestored episode, then, while an episode is underway,
    (4) a flap and (5) a pending retry. Then (6) one handler per phase.
    """
    if obs.malformed is not None:
        # Unreadable health is neither unhealthy (no remediation) nor healthy (no restore).
        return Decision(
            rec,
            blocked=None if rec.phase is Phase.HEALTHY else MALFORMED,
            why=f"node object malformed ({obs.malformed}): not acted on",
        )
    if not unhealthy(obs, cfg):
        return _recovering(rec, obs, now, cfg)
    if (over := _episode_over(rec, obs, now, cfg)) is not None:
        return over
    if rec.phase in _UNDERWAY:
        # Healthy for less than healthy-delay, then unhealthy: a flap (Removed: `_removed`).
        if (flap := _flap(rec, obs, now, cfg)) is not None:
            return flap
        if rec.transition is None:
            rec = dataclasses.replace(rec, transition=ready_since(obs))
        if rec.unhealthy_since is None:
            # Resumed while the node was healthy: this observation starts the grace.
            rec = dataclasses.replace(rec, unhealthy_since=now)
        if shut_down(obs) and not rec.shutdown:
            rec = dataclasses.replace(rec, shutdown=True)
        if rec.retry_at > now:
            return Decision(rec, why="retrying after a failure", wake_at=rec.retry_at)
    match rec.phase:
        case Phase.HEALTHY:
            return _healthy(rec, obs, now, cfg, gates)
        case Phase.SUSPECT:
            return _suspect(rec, obs, now, cfg, gates)
        case Phase.CORDONED | Phase.DRAINING:
            return _draining(rec, obs, now, cfg, gates)
        case Phase.REMOVING:
            return _removing(rec, obs, now, cfg, gates)
        case Phase.REMOVED:
            return _removed(rec, obs, now, cfg)
        case _:  # pragma: no cover
            assert_never(rec.phase)


def _recovering(rec: Record, obs: NodeObs, now: float, cfg: Config) -> Decision:
    """A node that is not unhealthy: restored once healthy for `healthy_delay`."""
    if rec.phase is Phase.HEALTHY:
        return Decision(rec)
    # Damping: count as recovered only after `healthy_delay` of continuous health.
    healthy_since = rec.healthy_since if rec.healthy_since is not None else now
    rec = dataclasses.replace(rec, healthy_since=healthy_since)
    ready_at = healthy_since + cfg.healthy_delay
    if now < ready_at:
        return Decision(rec, why="healthy again, waiting healthy-delay", wake_at=ready_at)
    if rec.retry_at > now:
        return Decision(rec, why="restore failed, retrying", wake_at=rec.retry_at)
    # A Suspect node has nothing of ours on it but the annotations, unless it carried a
    # cordon or taint over from an earlier episode (see "Episodes").
    ours = rec.cordoned or rec.tainted
    kind = Kind.PERSIST if rec.phase is Phase.SUSPECT and not ours else Kind.RESTORE
    return Decision(
        rec,
        _act(kind, obs, Record(uid=obs.uid, phase_since=now)),
        why="node healthy again",
    )


def _episode_over(rec: Record, obs: NodeObs, now: float, cfg: Config) -> Decision | None:
    """Unhealthy after it recovered (healthy for healthy-delay) without being restored (the
    restore failed or is pending), or None: that episode is over. A new one starts, with a new
    grace; what is ours stays ours."""
    if (
        rec.phase is Phase.HEALTHY
        or rec.healthy_since is None
        or now - rec.healthy_since < cfg.healthy_delay
    ):
        return None
    new = _new_episode(rec, obs, now, now, Start.RECOVERED)
    return Decision(
        new,
        _act(Kind.PERSIST, obs, new, persist=new),
        why=f"unhealthy again after recovering ({_describe(obs)}), grace restarts",
        wake_at=now + cfg.grace,
    )


def _flap(rec: Record, obs: NodeObs, now: float, cfg: Config) -> Decision | None:
    """A flap (see "Flap damping"), or None: healthy again (or a Ready transition newer than
    the one this stretch started from: a watch burst may hide the healthy state), then
    unhealthy before it was restored. The episode goes on (phase, cordon, slot), but its
    grace timer restarts now (persisted, so a new leader keeps it)."""
    seen = ready_since(obs)
    newer = seen is not None and rec.transition is not None and seen > rec.transition
    # The cloud's shutdown taint seen, then gone: the instance is not stopped any more.
    untainted = rec.shutdown and not shut_down(obs)
    if rec.healthy_since is None and not newer and not untainted:
        return None
    newest = max((t for t in (seen, rec.transition) if t is not None), default=None)
    new = dataclasses.replace(
        rec,
        healthy_since=None,
        unhealthy_since=now,
        flaps=rec.flaps + 1,
        transition=newest,
        shutdown=False,
        heartbeat_start=None,
    )
    damped = "grace timer restarted" if rec.phase is Phase.SUSPECT else "remediation held"
    return Decision(
        new,
        _act(Kind.PERSIST, obs, new),
        why=f"flapped ({new.flaps} since healthy): unhealthy again; {damped}",
        wake_at=now + cfg.grace,
        flapped=True,
    )


def _healthy(rec: Record, obs: NodeObs, now: float, cfg: Config, gates: Gates) -> Decision:
    """Healthy, and unhealthy now: an episode starts (the record changes once the
    annotations saying so are written).

    Its grace counts from now, or, for a silent node (Ready=Unknown) whose last sign of life
    we saw (`Gates.heartbeat_at`: the last change of its heartbeat Lease, or later the view
    showing it not silent), from that moment: kube-controller-manager marks a node
    Ready=Unknown only node-monitor-grace (40-50 s) after its last heartbeat, and that wait
    is not added on top of the grace. Never later than now, never from a guess: unknown, it
    is now (today's rule)."""
    new = _new_episode(rec, obs, now, now, Start.UNHEALTHY)
    since = ""
    if obs.silent and gates.heartbeat_at is not None and gates.heartbeat_at < now:
        new = dataclasses.replace(new, heartbeat_start=gates.heartbeat_at)
        since = f" from the last heartbeat seen, {now - gates.heartbeat_at:.0f}s ago"
    return Decision(
        rec,
        _act(Kind.PERSIST, obs, new),
        why=f"unhealthy ({_describe(obs)}), grace timer started{since}",
        wake_at=grace_deadline(now, obs, cfg, new.heartbeat_start),
    )


def _suspect(rec: Record, obs: NodeObs, now: float, cfg: Config, gates: Gates) -> Decision:
    """Suspect: the grace, the start-up allowance, the gates, then the cordon."""
    deadline = _deadline(rec, obs, cfg, gates)
    if now < deadline:
        return Decision(rec, why="within grace", wake_at=deadline)
    if gates.startup_until is not None and now < gates.startup_until:
        # Never seen Ready and younger than --node-startup-timeout: still joining (CNI, image
        # pulls), not dead. Cluster API's nodeStartupTimeout.
        return Decision(
            rec,
            why="never Ready yet: within the node start-up allowance",
            wake_at=gates.startup_until,
        )
    if (held := _held(rec, obs, cfg, gates)) is not None:
        return held
    if obs.silent and gates.lease_renewing:
        # The heartbeat Lease has not been seen renewing, but not seen stale for a whole
        # grace either (first read after the grace started): a timer, not a hold.
        return Decision(
            rec,
            why="waiting for the heartbeat Lease to stay unchanged for the grace",
            wake_at=gates.lease_stale_at,
        )
    # Our own cordon carried over from an earlier episode stays ours.
    new = _enter(rec, Phase.CORDONED, now, cordoned=rec.cordoned or not obs.unschedulable)
    return Decision(
        rec,
        _act(Kind.CORDON, obs, new, silent=obs.silent, transition=rec.transition),
        why=f"unhealthy for {now - (rec.unhealthy_since or now):.0f}s >= grace",
    )


def _draining(rec: Record, obs: NodeObs, now: float, cfg: Config, gates: Gates) -> Decision:
    """Cordoned or Draining: the flap hold, the gates, then fence first (if the drain asked
    for it) or drain."""
    if (damped := _damped(rec, obs, now, cfg, gates)) is not None:
        return damped
    if (held := _held(rec, obs, cfg, gates)) is not None:
        return held
    # Fencing first is for forcing a dead kubelet's pods: never for a live kubelet (its drain
    # forces nothing; the executor's fresh read would hold the fence anyway), nor for a node
    # already proven off (the cloud's shutdown taint).
    alive = kubelet_alive(obs, gates.lease_renewing)
    proof = node_proof(rec, obs, cfg, gates, now)
    agent = relies_on_agent(gates)
    if rec.fence_first and needs_fence(cfg, proof, agent) and not alive:
        if not cfg.fencing:
            return _agent_fence(rec, obs, now, gates)
        return Decision(
            rec,
            _act(
                Kind.FENCE,
                obs,
                dataclasses.replace(rec, fenced=True, fence_first=False),
                transition=rec.transition,
            ),
            why="drain must force-delete pods: fencing first",
        )
    draining = rec if rec.phase is Phase.DRAINING else _enter(rec, Phase.DRAINING, now)
    return Decision(
        rec,
        _act(
            Kind.DRAIN,
            obs,
            _enter(draining, Phase.REMOVING, now),
            persist=draining if rec.phase is not Phase.DRAINING else None,
            silent=obs.silent,
            may_force=not needs_fence(cfg, proof, agent),
            transition=rec.transition,
            proof=proof,
        ),
        why="cordoned; draining" + (f" (proven off: {proof})" if proof.proven else ""),
    )


def _removing(rec: Record, obs: NodeObs, now: float, cfg: Config, gates: Gates) -> Decision:
    """Removing (drained): the flap hold, the gates, a silent kubelet, fencing (unless the node
    is proven off already), then removal (core.proof: `auto` taints only a node proven off)."""
    if (damped := _damped(rec, obs, now, cfg, gates)) is not None:
        return damped
    if (held := _held(rec, obs, cfg, gates)) is not None:
        return held
    # Only a node whose kubelet is gone. A live kubelet (Ready=False, or its heartbeat Lease
    # renewing) is left cordoned and drained (it keeps its slot).
    if not obs.silent or gates.lease_renewing:
        return Decision(
            dataclasses.replace(rec, parked=True),
            blocked=KUBELET_ALIVE,
            why=f"held: {KUBELET_ALIVE} (drained; removed only once its kubelet is silent)",
        )
    proof = node_proof(rec, obs, cfg, gates, now)
    if needs_fence(cfg, proof, relies_on_agent(gates)):
        if not cfg.fencing:
            return _agent_fence(rec, obs, now, gates)
        return Decision(
            rec,
            _act(Kind.FENCE, obs, dataclasses.replace(rec, fenced=True), transition=rec.transition),
            why="fencing before removal",
        )
    # The taint is ours only if we add it (or added it in an earlier episode).
    adds_taint = taints(cfg, proof) and not obs.has_taint(OUT_OF_SERVICE_KEY)
    done = _enter(rec, Phase.REMOVED, now, tainted=rec.tainted or adds_taint)
    return Decision(
        rec,
        _act(Kind.REMOVE, obs, done, silent=obs.silent, transition=rec.transition, proof=proof),
        why=f"drained; removing ({removal_mode(cfg, proof)}; proof: {proof})",
    )


def _removed(rec: Record, obs: NodeObs, now: float, cfg: Config) -> Decision:
    """An unhealthy node in Removed: wait, unless its episode is over (see "Episodes")."""
    ready = obs.ready
    transition = ready.since if ready is not None else None
    if transition is not None and transition <= rec.phase_since:
        transition = None  # no Ready transition since we removed it
    taint_gone = (
        rec.tainted
        and not obs.has_taint(OUT_OF_SERVICE_KEY)
        # Only a view that already shows our Removed write: the taint went on before it.
        and obs.annotations.get(ANN_PHASE) == Phase.REMOVED.value
        and obs.annotations.get(ANN_PHASE_SINCE) == format_time(rec.phase_since)
    )
    if rec.healthy_since is not None:
        start, cause = now, Start.REMOVED_FLAPPED
    elif transition is not None:
        start, cause = transition, Start.REMOVED_READY_CHANGED
    elif taint_gone:
        start, cause = now, Start.REMOVED_UNTAINTED
    else:
        return Decision(rec, why="removed; waiting for the node to go away or come back")
    new = _new_episode(rec, obs, now, start, cause)
    return Decision(
        dataclasses.replace(rec, healthy_since=None),
        _act(Kind.PERSIST, obs, new, persist=new),
        why=f"removed, but {_AFTER_REMOVAL[cause]}: new episode, grace timer started",
        wake_at=start + cfg.grace,
        flapped=cause is Start.REMOVED_FLAPPED,
    )


def _deadline(rec: Record, obs: NodeObs, cfg: Config, gates: Gates) -> float:
    """When this stretch of unhealthiness has lasted its grace (see `grace_deadline`)."""
    start = rec.unhealthy_since if rec.unhealthy_since is not None else rec.phase_since
    return grace_deadline(start, obs, cfg, rec.heartbeat_start)


def node_proof(
    rec: Record,
    obs: NodeObs,
    cfg: Config,
    gates: Gates | None = None,
    now: float | None = None,
) -> Proof:
    """The proof that the node is off, as `obs`, the record and (at `now`) its agent show it
    (core.proof); a fence is named by the provider `cfg` (the settings that govern the node)
    fences with."""
    provider = cfg.fence_provider
    agent = gates.agent if gates is not None else None
    self_fenced = agent is not None and now is not None and agent.proven(now)
    fenced_by = (provider.value if provider else "fence") if rec.fenced else None
    return proof_of(obs, fenced_by, self_fenced)


def relies_on_agent(gates: Gates) -> bool:
    """The node has an agent the controller counts on to fence it (core.agent)."""
    return gates.agent is not None and gates.agent.relied_on


def _agent_fence(rec: Record, obs: NodeObs, now: float, gates: Gates) -> Decision:
    """No fence provider, an agent relied on, the node not proven off: ask the agent to fence
    (the mark), then wait for the safe time since the mark and the last sign of it."""
    agent = gates.agent
    assert agent is not None
    # Asked already when the mark is in the view, or our write of it was answered (the view
    # lags): the mark is not written twice.
    if not fence_requested(obs) and agent.marked_at is None:
        return Decision(
            rec,
            _act(Kind.FENCE, obs, rec, transition=rec.transition, request=True),
            why="asking its agent to fence the node (noderecover.io/fence-requested)",
        )
    at = agent.fenced_at()
    wait = "" if at is None else f", proven off in {max(0.0, at - now):.0f}s"
    return Decision(
        rec,
        why=f"waiting for its agent to fence the node (safe time {agent.safe_time:.0f}s{wait})",
        wake_at=at,
    )


def _damped(rec: Record, obs: NodeObs, now: float, cfg: Config, gates: Gates) -> Decision | None:
    """In flight, the node showed life (flapped) within the last grace: nothing destructive
    until it has been unhealthy for a whole grace again, or it is restored."""
    deadline = _deadline(rec, obs, cfg, gates)
    if now >= deadline:
        return None
    return Decision(
        rec,
        blocked=FLAPPING,
        why=f"held: {FLAPPING} (unhealthy for less than the grace since the last flap)",
        wake_at=deadline,
    )


def _held(rec: Record, obs: NodeObs, cfg: Config, gates: Gates) -> Decision | None:
    """The decision of a forward step a safety gate holds back, or None (see `_gate`)."""
    blocked = _gate(rec, obs, cfg, gates)
    if blocked is None:
        return None
    # A drained node waiting on the hourly removal budget is parked (it keeps its slot:
    # nothing more happens to it before the budget frees).
    parked = blocked == MAX_REMOVALS or rec.parked
    return Decision(
        dataclasses.replace(rec, parked=parked), blocked=blocked, why=f"held: {blocked}"
    )


def _act(
    kind: Kind,
    obs: NodeObs,
    success: Record,
    *,
    persist: Record | None = None,
    silent: bool = False,
    may_force: bool = True,
    transition: float | None = None,
    proof: Proof = NO_PROOF,
    request: bool = False,
) -> Action:
    """An action on the node `obs` (its name and uid), with the record it leads to."""
    return Action(
        kind=kind,
        node=obs.name,
        uid=obs.uid,
        persist=persist,
        success=success,
        silent=silent,
        may_force=may_force,
        transition=transition,
        proof=proof,
        request=request,
    )


def grace_deadline(
    start: float, obs: NodeObs, cfg: Config, heartbeat_at: float | None = None
) -> float:
    """When a node unhealthy without a break since `start` may be remediated.

    Flags: `start + grace`. A policy gives each unhealthy condition its own duration
    (`cfg.condition_graces`): each condition the node shows now is timed from when it began
    (its lastTransitionTime, to the end of that second) but never from before `start` (the
    episode's start or last flap); the earliest of those deadlines counts. A condition
    showing for less than its own duration never triggers a remediation, however long
    another condition (with a longer duration) has been showing.

    `heartbeat_at`: the last sign of life seen of a silent node whose episode started then
    (`Record.heartbeat_start`): its silence (the flags' grace, a policy's Ready=Unknown
    duration) counts from it when earlier than `start`.
    """
    silent_from = start
    if heartbeat_at is not None and obs.silent:
        silent_from = min(start, heartbeat_at)
    if not cfg.condition_graces:
        return silent_from + cfg.grace

    def began(c: Condition) -> float:
        if silent_from < start and (c.type, c.status) == ("Ready", "Unknown"):
            return silent_from
        return max(start, (c.since or 0.0) + CONDITION_TIME_PRECISION)

    ends = [
        began(c) + seconds
        for c in obs.conditions
        if c.since is not None
        for ctype, status, seconds in cfg.condition_graces
        if (c.type, c.status) == (ctype, status)
    ]
    return min(ends) if ends else silent_from + cfg.grace


def _gate(rec: Record, obs: NodeObs, cfg: Config, gates: Gates) -> str | None:
    """The first safety gate that holds this forward step back, or None."""
    if not gates.managed:
        return EXCLUDED_SELECTOR
    if gates.held is not None:
        return gates.held
    if (why := exclusion(obs, cfg)) is not None:
        return why
    if not gates.fresh:
        return Blocked.WATCH_STALE
    if gates.breaker_open:
        return Blocked.CIRCUIT_BREAKER
    if rec.phase is Phase.SUSPECT:
        if obs.silent and gates.lease_renewing and gates.lease_renewal_seen:
            return Blocked.HEARTBEAT_LEASE_RENEWING
        if gates.in_flight >= cfg.max_concurrent:
            return Blocked.MAX_CONCURRENT
    if rec.phase is Phase.REMOVING and gates.removals_last_hour >= cfg.max_removals_per_hour:
        return MAX_REMOVALS
    return None


def complete(
    rec: Record,
    action: Action,
    outcome: Outcome,
    now: float,
    retry_in: float = 0.0,
    tainted: bool | None = None,
    transition: float | None = None,
) -> Record:
    """The record after the shell performed `action` with `outcome`.

    `tainted`: whether the out-of-service taint is ours, as the shell found out from its
    fresh read and its writes (None: it did not look). It overrides the action's guess
    whatever the outcome: a taint we added stays ours even if a later write failed.
    `transition`: the Ready lastTransitionTime of the shell's freshest read, when newer
    than the one the action was decided on (a flap the view has not shown yet).
    """
    new = _completed(rec, action, outcome, now, retry_in)
    if tainted is not None:
        new = dataclasses.replace(new, tainted=tainted)
    if transition is not None and transition > (new.transition or transition - 1):
        # Seen in a fresh read: a flap. Healthy-since now makes `decide` restart the grace.
        since = new.healthy_since if new.healthy_since is not None else now
        new = dataclasses.replace(new, healthy_since=since)
    return new


def _completed(
    rec: Record, action: Action, outcome: Outcome, now: float, retry_in: float
) -> Record:
    if outcome is Outcome.OK:
        return dataclasses.replace(action.success, failures=0, retry_at=0.0, parked=False)
    if outcome is Outcome.BLOCKED:
        # Held by a gate or a live kubelet: no failure, and no slot while it waits.
        base = action.persist or rec
        return dataclasses.replace(base, retry_at=now + retry_in, parked=True)
    if outcome is Outcome.NEEDS_FENCE:
        # The drain cannot finish without force: fence first, then drain again.
        base = action.persist or rec
        return dataclasses.replace(base, fence_first=True, retry_at=0.0)
    if outcome is Outcome.HEALTHY:
        # Fresh read says healthy: start the damping now, no retry penalty.
        since = rec.healthy_since if rec.healthy_since is not None else now
        return dataclasses.replace(rec, healthy_since=since)
    return dataclasses.replace(rec, failures=rec.failures + 1, retry_at=now + retry_in)


def ready_since(obs: NodeObs) -> float | None:
    """The Ready condition's lastTransitionTime (None without one)."""
    r = obs.ready
    return r.since if r is not None else None


def kubelet_alive(fresh: NodeObs, lease_renewing: bool) -> bool:
    """The evidence says the kubelet lives: it posts status (Ready is not Unknown), or its
    heartbeat Lease was renewed within the grace as observed by us."""
    return not fresh.silent or lease_renewing


def evidence_hold(fresh: NodeObs, transition: float | None, cfg: Config) -> str | None:
    """Why a fresh read of the node forbids a forward step now, or None.

    The read decides, never the view it replaced: malformed, healthy again, a Ready
    transition newer than the one the step was decided on (a flap), or an exclusion set
    since (annotation, control-plane label).
    """
    if fresh.malformed is not None:
        return MALFORMED
    if not unhealthy(fresh, cfg):
        return HEALTHY_AGAIN
    seen = ready_since(fresh)
    if transition is not None and seen is not None and seen > transition:
        return FLAPPING
    return exclusion(fresh, cfg)


def _describe(obs: NodeObs) -> str:
    r = obs.ready
    if r is None:
        return "no Ready condition"
    return f"Ready={r.status}" + (f" ({r.reason})" if r.reason else "")
