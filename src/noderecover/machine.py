"""The per-node remediation state machine: pure functions of (record, observation, now).

    Healthy --unhealthy--> Suspect --grace--> Cordoned --> Draining --> Removing --> Removed
       ^                     |  (gates)          |            |            |            |
       +---- healthy for healthy_delay: restore (uncordon/untaint only what we did) ----+

`decide` returns at most one Action per call; the imperative shell performs it and feeds
the outcome back through `complete`. Nothing here does I/O or reads a clock.

Invariants:
- No forward step (cordon, drain, fence, remove) unless: the node is unhealthy now, not
  excluded, the watch is fresh, the circuit breaker is closed, and (to start) fewer than
  `max_concurrent` other remediations are in flight; removal also needs the hourly budget.
- Grace: remediation needs `grace` of *continuous* unhealthiness. It starts no earlier than
  `unhealthy_since + grace`, and no drain, fence or removal happens before
  `unhealthy_since + grace` either. A resumed record's `unhealthy_since` (Suspect and in
  flight) is never earlier than the node's current Ready transition, so a stale annotation
  from an older episode, or a flap no leader saw, cannot shorten the grace (see `resume`).
- Recovery: healthy continuously for `healthy_delay` -> restore. Only a cordon or taint that
  noderecover added is undone (`cordoned` / `tainted` record ownership).

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

Episodes. Removed is final for an episode while the node stays unhealthy: no remediation loop.
The episode is over when the node was seen healthy since (a flap), or its Ready condition
transitioned after the Removed `phase_since`, or the out-of-service taint we added is gone
(seen in a view that already has our Removed annotations, so not a lagging watch). An
unhealthy node whose episode is over starts a new one: Suspect, the grace starting at the
flap, or the new Ready transition, or now (never earlier than that transition); the cordon
and the taint stay ours only if still on the node; `fenced` is cleared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from noderecover.config import Config
from noderecover.nodes import (
    ANN_CORDONED,
    ANN_FENCED,
    ANN_PHASE,
    ANN_PHASE_SINCE,
    ANN_TAINTED,
    ANN_UNHEALTHY_SINCE,
    OUR_ANNOTATIONS,
    OUT_OF_SERVICE_KEY,
    NodeObs,
    format_time,
    parse_time,
)
from noderecover.safety import exclusion


class Phase(StrEnum):
    HEALTHY = "Healthy"
    SUSPECT = "Suspect"
    CORDONED = "Cordoned"
    DRAINING = "Draining"
    REMOVING = "Removing"
    REMOVED = "Removed"


# Phases in which a remediation is in flight (counted against --max-concurrent).
IN_FLIGHT = frozenset({Phase.CORDONED, Phase.DRAINING, Phase.REMOVING})

# Blocked reason: the node showed life (flapped) within the last grace; no destructive step.
FLAPPING = "flapping"


class Kind(StrEnum):
    PERSIST = "persist"  # write the phase annotations only
    CORDON = "cordon"
    DRAIN = "drain"
    FENCE = "fence"
    REMOVE = "remove"
    RESTORE = "restore"  # uncordon / untaint what we did, clear annotations


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"  # retry after backoff
    HEALTHY = "healthy"  # the re-read before a destructive step found the node healthy
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


@dataclass(frozen=True, slots=True)
class Gates:
    """Cluster-wide facts a decision needs, computed by the controller for this instant."""

    fresh: bool = True  # initial list complete and the node watch not stale
    breaker_open: bool = False
    in_flight: int = 0  # remediations in flight on OTHER nodes
    removals_last_hour: int = 0
    lease_renewing: bool = False  # this node's heartbeat Lease was renewed within the grace


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    node: str
    uid: str
    persist: Record | None  # annotations to write before/with the action
    success: Record  # the record once the action succeeded
    silent: bool = False  # Ready=Unknown: the kubelet is gone (drain short-cuts)
    may_force: bool = True  # force-deleting pods allowed (fenced, or no fencing configured)


@dataclass(frozen=True, slots=True)
class Decision:
    record: Record
    action: Action | None = None
    blocked: str | None = None
    why: str = ""
    wake_at: float | None = None  # re-evaluate no later than this (a timer)
    flapped: bool = False  # this decision saw a flap (the grace timer restarted)


def annotations_for(rec: Record) -> dict[str, str | None]:
    """The merge-patch value of our annotations for a record (None deletes a key)."""
    if rec.phase is Phase.HEALTHY:
        return dict.fromkeys(OUR_ANNOTATIONS)
    return {
        ANN_PHASE: rec.phase.value,
        ANN_PHASE_SINCE: format_time(rec.phase_since),
        ANN_UNHEALTHY_SINCE: format_time(rec.unhealthy_since or rec.phase_since),
        ANN_CORDONED: "true" if rec.cordoned else None,
        ANN_TAINTED: "true" if rec.tainted else None,
        ANN_FENCED: "true" if rec.fenced else None,
    }


def unhealthy(obs: NodeObs, cfg: Config) -> bool:
    return any((c.type, c.status) in cfg.unhealthy_conditions for c in obs.conditions)


def resume(obs: NodeObs) -> Record:
    """The record a (new) leader starts from: the annotations on the Node, sanity-checked."""
    ann = obs.annotations
    try:
        phase = Phase(ann.get(ANN_PHASE, Phase.HEALTHY.value))
    except ValueError:
        phase = Phase.HEALTHY
    if phase is Phase.HEALTHY:
        return Record(uid=obs.uid)
    since = parse_time(ann.get(ANN_UNHEALTHY_SINCE))
    phase_since = parse_time(ann.get(ANN_PHASE_SINCE)) or since or 0.0
    ready = obs.ready
    if since is None:
        since = phase_since
    if phase is not Phase.REMOVED and ready is not None and ready.since is not None:
        # The annotation may be left from an earlier episode (leader died before clearing it),
        # or the node flapped while no leader watched (a Ready transition after the cordon):
        # the grace never starts before the current Ready transition. (Removed: see `decide`.)
        since = max(since, ready.since)
    return Record(
        uid=obs.uid,
        phase=phase,
        phase_since=phase_since,
        unhealthy_since=since,
        cordoned=ann.get(ANN_CORDONED) == "true" and obs.unschedulable,
        tainted=ann.get(ANN_TAINTED) == "true",
        fenced=ann.get(ANN_FENCED) == "true",
    )


def _enter(rec: Record, phase: Phase, now: float, **changes: object) -> Record:
    return dataclasses.replace(rec, phase=phase, phase_since=now, **changes)  # type: ignore[arg-type]


def decide(rec: Record, obs: NodeObs, now: float, cfg: Config, gates: Gates) -> Decision:
    """The next step for one node. `rec` belongs to `obs.uid` (the caller resumes on change)."""
    sick = unhealthy(obs, cfg)

    if not sick:
        if rec.phase is Phase.HEALTHY:
            return Decision(rec)
        # Damping: count as recovered only after `healthy_delay` of continuous health.
        if rec.healthy_since is None:
            rec = dataclasses.replace(rec, healthy_since=now)
        ready_at = rec.healthy_since + cfg.healthy_delay  # type: ignore[operator]
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
            Action(kind, obs.name, obs.uid, None, Record(uid=obs.uid, phase_since=now)),
            why="node healthy again",
        )

    if rec.phase is Phase.HEALTHY:
        new = _enter(rec, Phase.SUSPECT, now, unhealthy_since=now, healthy_since=None)
        return Decision(
            rec,
            Action(Kind.PERSIST, obs.name, obs.uid, None, new),
            why=f"unhealthy ({_describe(obs)}), grace timer started",
            wake_at=now + cfg.grace,
        )

    if rec.phase is Phase.REMOVED:
        return _removed(rec, obs, now, cfg)

    if rec.healthy_since is not None:
        # A flap: healthy again, then unhealthy before it was restored. The grace timer
        # restarts now (persisted, so a new leader keeps it); see "Flap damping".
        new = dataclasses.replace(rec, healthy_since=None, unhealthy_since=now, flaps=rec.flaps + 1)
        damped = "grace timer restarted" if rec.phase is Phase.SUSPECT else "remediation held"
        return Decision(
            new,
            Action(Kind.PERSIST, obs.name, obs.uid, None, new),
            why=f"flapped ({new.flaps} since healthy): unhealthy again; {damped}",
            wake_at=now + cfg.grace,
            flapped=True,
        )

    if rec.retry_at > now:
        return Decision(rec, why="retrying after a failure", wake_at=rec.retry_at)

    start = rec.unhealthy_since if rec.unhealthy_since is not None else rec.phase_since
    deadline = start + cfg.grace
    if rec.phase is Phase.SUSPECT and now < deadline:
        return Decision(rec, why="within grace", wake_at=deadline)
    if rec.phase in IN_FLIGHT and now < deadline:
        # Showed life (flapped) within the last grace: nothing destructive until it has been
        # unhealthy for a whole grace again, or it is restored.
        return Decision(
            rec,
            blocked=FLAPPING,
            why=f"held: {FLAPPING} (unhealthy for less than the grace since the last flap)",
            wake_at=deadline,
        )

    blocked = _gate(rec, obs, cfg, gates)
    if blocked is not None:
        return Decision(rec, blocked=blocked, why=f"held: {blocked}")

    silent = obs.silent
    if rec.phase is Phase.SUSPECT:
        # Our own cordon carried over from an earlier episode stays ours.
        new = _enter(rec, Phase.CORDONED, now, cordoned=rec.cordoned or not obs.unschedulable)
        return Decision(
            rec,
            Action(Kind.CORDON, obs.name, obs.uid, None, new, silent=silent),
            why=f"unhealthy for {now - (rec.unhealthy_since or now):.0f}s >= grace",
        )
    if rec.phase in {Phase.CORDONED, Phase.DRAINING} and rec.fence_first and not rec.fenced:
        return Decision(
            rec,
            Action(
                Kind.FENCE,
                obs.name,
                obs.uid,
                None,
                dataclasses.replace(rec, fenced=True, fence_first=False),
            ),
            why="drain must force-delete pods: fencing first",
        )
    if rec.phase in {Phase.CORDONED, Phase.DRAINING}:
        draining = rec if rec.phase is Phase.DRAINING else _enter(rec, Phase.DRAINING, now)
        return Decision(
            rec,
            Action(
                Kind.DRAIN,
                obs.name,
                obs.uid,
                draining if rec.phase is not Phase.DRAINING else None,
                _enter(draining, Phase.REMOVING, now),
                silent=silent,
                may_force=rec.fenced or not cfg.fencing,
            ),
            why="cordoned; draining",
        )
    # Removing
    if cfg.fencing and not rec.fenced:
        return Decision(
            rec,
            Action(Kind.FENCE, obs.name, obs.uid, None, dataclasses.replace(rec, fenced=True)),
            why="fencing before removal",
        )
    done = _enter(rec, Phase.REMOVED, now, tainted=rec.tainted or cfg.removal != "delete")
    return Decision(
        rec,
        Action(Kind.REMOVE, obs.name, obs.uid, None, done, silent=silent),
        why=f"drained; removing ({cfg.removal})",
    )


def _removed(rec: Record, obs: NodeObs, now: float, cfg: Config) -> Decision:
    """An unhealthy node in Removed: wait, unless its episode is over (see "Episodes")."""
    ready = obs.ready
    transition = ready.since if ready is not None else None
    if transition is not None and transition <= rec.phase_since:
        transition = None  # no Ready transition since we removed it
    flapped = rec.healthy_since is not None
    taint_gone = (
        rec.tainted
        and not obs.has_taint(OUT_OF_SERVICE_KEY)
        # Only a view that already shows our Removed write: the taint went on before it.
        and obs.annotations.get(ANN_PHASE) == Phase.REMOVED.value
        and obs.annotations.get(ANN_PHASE_SINCE) == format_time(rec.phase_since)
    )
    if not (flapped or transition is not None or taint_gone):
        return Decision(rec, why="removed; waiting for the node to go away or come back")
    if flapped:
        start, cause = now, "flapped: healthy again, then unhealthy"
    elif transition is not None:
        start, cause = transition, "Ready changed since the removal"
    else:
        start, cause = now, "out-of-service taint removed by someone else"
    new = Record(
        uid=obs.uid,
        phase=Phase.SUSPECT,
        phase_since=now,
        unhealthy_since=start,
        cordoned=rec.cordoned and obs.unschedulable,
        tainted=rec.tainted and obs.has_taint(OUT_OF_SERVICE_KEY),
        flaps=rec.flaps + 1 if flapped else rec.flaps,
    )
    return Decision(
        dataclasses.replace(rec, healthy_since=None),
        Action(Kind.PERSIST, obs.name, obs.uid, new, new),
        why=f"removed, but {cause}: new episode, grace timer started",
        wake_at=start + cfg.grace,
        flapped=flapped,
    )


def _gate(rec: Record, obs: NodeObs, cfg: Config, gates: Gates) -> str | None:
    """The first safety gate that holds this forward step back, or None."""
    if (why := exclusion(obs, cfg)) is not None:
        return why
    if not gates.fresh:
        return "watch-stale"
    if gates.breaker_open:
        return "circuit-breaker"
    if rec.phase is Phase.SUSPECT:
        if obs.silent and gates.lease_renewing:
            return "heartbeat-lease-renewing"
        if gates.in_flight >= cfg.max_concurrent:
            return "max-concurrent"
    if rec.phase is Phase.REMOVING and gates.removals_last_hour >= cfg.max_removals_per_hour:
        return "max-removals-per-hour"
    return None


def complete(
    rec: Record, action: Action, outcome: Outcome, now: float, retry_in: float = 0.0
) -> Record:
    """The record after the shell performed `action` with `outcome`."""
    if outcome is Outcome.OK:
        return dataclasses.replace(action.success, failures=0, retry_at=0.0)
    if outcome is Outcome.NEEDS_FENCE:
        # The drain cannot finish without force: fence first, then drain again.
        base = action.persist or rec
        return dataclasses.replace(base, fence_first=True, retry_at=0.0)
    if outcome is Outcome.HEALTHY:
        # Fresh read says healthy: start the damping now, no retry penalty.
        return dataclasses.replace(rec, healthy_since=rec.healthy_since or now)
    return dataclasses.replace(rec, failures=rec.failures + 1, retry_at=now + retry_in)


def _describe(obs: NodeObs) -> str:
    r = obs.ready
    if r is None:
        return "no Ready condition"
    return f"Ready={r.status}" + (f" ({r.reason})" if r.reason else "")
