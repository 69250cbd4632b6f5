"""Property tests of the state machine (hypothesis): arbitrary sequences of observations, clock
steps, gates, action outcomes and failovers never break its safety invariants.

The world model is independent of the machine: the node's true health history (status
changes happen at observation instants, as a watch delivers them), what the executor would
have written on the Node, and the steps that succeeded in the current unhealthy episode. An
episode starts at the first unhealthy observation and ends once the node has been healthy
for `healthy_delay` (the machine's documented damping).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from noderecover.core.machine import (
    FORWARD,
    IN_FLIGHT,
    Action,
    Gates,
    Kind,
    Outcome,
    Phase,
    Record,
    annotations_for,
    complete,
    decide,
    kubelet_alive,
    resume,
)
from noderecover.core.nodes import (
    ANN_EXCLUDE,
    ANN_PHASE,
    ANN_PHASE_SINCE,
    ANN_UNHEALTHY_SINCE,
    OUR_ANNOTATIONS,
    OUT_OF_SERVICE_TAINT,
    NodeObs,
    format_time,
    parse_node,
    parse_time,
)
from noderecover.core.safety import exclusion
from noderecover.core.settings import Removal
from noderecover.entry.config import Config
from tests.builders import T0, node_json

UID = "uid-w1"
STATUSES = ("True", "False", "Unknown")
UNHEALTHY_SETS = (
    frozenset({("Ready", "False"), ("Ready", "Unknown")}),
    frozenset({("Ready", "Unknown")}),
)


def observe(
    cfg: Config,
    status: str,
    since: float,
    annotations: dict[str, str],
    *,
    unschedulable: bool = False,
    tainted: bool = False,
    excluded: bool = False,
) -> NodeObs:
    """The node as the controller would see it (through the real parser)."""
    ann: dict[str, str | None] = dict(annotations)
    if excluded:
        ann[ANN_EXCLUDE] = "true"
    raw = node_json(
        "w1",
        ready=status,
        since=since,
        uid=UID,
        unschedulable=unschedulable,
        annotations=ann,
        taints=[OUT_OF_SERVICE_TAINT] if tainted else None,
    )
    obs = parse_node(
        raw, cfg.relevant_labels, frozenset({"Ready"} | {t for t, _ in cfg.unhealthy_conditions})
    )
    assert obs.malformed is None
    return obs


def written(rec: Record) -> dict[str, str]:
    """What the executor leaves in the Node's annotations for `rec`."""
    return {k: v for k, v in annotations_for(rec).items() if v is not None}


@st.composite
def configs(draw: st.DrawFn) -> Config:
    return Config(
        grace=draw(st.sampled_from([0.0, 5.0, 60.0, 300.0])),
        healthy_delay=draw(st.sampled_from([0.0, 10.0, 30.0])),
        unhealthy_conditions=draw(st.sampled_from(UNHEALTHY_SETS)),
        removal=draw(st.sampled_from(list(Removal))),
        fence_command=draw(st.sampled_from([(), ("fence-it",)])),
        max_concurrent=draw(st.integers(1, 2)),
        max_removals_per_hour=draw(st.integers(1, 2)),
    )


GATES = st.one_of(
    st.just(Gates()),
    st.builds(
        Gates,
        fresh=st.booleans(),
        breaker_open=st.booleans(),
        in_flight=st.integers(0, 2),
        removals_last_hour=st.integers(0, 2),
        lease_renewing=st.booleans(),
    ),
)
# Boundaries matter most (a grace or delay just over or under, by less than a second).
DURATIONS = st.sampled_from(
    [0.0, 0.4, 1.0, 4.5, 4.9, 10.0, 29.9, 30.0, 59.0, 59.5, 59.9, 60.0, 61.0, 299.5, 301.0]
) | st.floats(min_value=0.0, max_value=700.0)


@dataclass(frozen=True)
class Observe:
    status: str | None  # None: unchanged
    dt: float
    gates: Gates
    excluded: bool
    outcome: Outcome
    took: float  # how long the action took (nothing is observed meanwhile)
    retry_in: float


@dataclass(frozen=True)
class Failover:
    """A new leader: the in-memory record is lost, the next one resumes from the Node."""

    dt: float


STEPS = st.one_of(
    st.builds(
        Observe,
        status=st.sampled_from([None, None, None, *STATUSES]),
        dt=DURATIONS,
        gates=GATES,
        excluded=st.sampled_from([False, False, False, True]),
        outcome=st.sampled_from(
            [Outcome.OK] * 4 + [Outcome.FAILED, Outcome.HEALTHY, Outcome.NEEDS_FENCE]
        ),
        took=st.sampled_from([0.0, 1.0, 30.0]) | st.floats(0.0, 120.0),
        retry_in=st.floats(0.0, 120.0),
    ),
    st.builds(Failover, dt=DURATIONS),
)


@dataclass
class World:
    cfg: Config
    now: float = T0
    status: str = "True"
    transition: float = T0 - 3600  # when `status` began (lastTransitionTime)
    unschedulable: bool = False
    admin_cordon: bool = False  # an operator's cordon: never ours to undo
    tainted: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    rec: Record = field(default_factory=lambda: Record(uid=UID))
    # Ground truth.
    episode: float | None = None  # start of the current unhealthy episode
    healthy_from: float | None = T0 - 3600
    done: set[Kind] = field(default_factory=set)  # forward steps that succeeded this episode
    our_cordon: bool = False  # the node is unschedulable because we cordoned it
    our_taint: bool = False  # the out-of-service taint is there because we added it
    actions: list[Kind] = field(default_factory=list)

    def sick(self) -> bool:
        return ("Ready", self.status) in self.cfg.unhealthy_conditions

    def obs(self, excluded: bool = False) -> NodeObs:
        return observe(
            self.cfg,
            self.status,
            self.transition,
            self.annotations,
            unschedulable=self.unschedulable,
            tainted=self.tainted,
            excluded=excluded,
        )

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.status, self.transition = status, self.now
        if self.sick():
            if self.healthy_from is not None and self.now - self.healthy_from >= (
                self.cfg.healthy_delay
            ):
                self.episode = None  # it had recovered: a new episode
            self.healthy_from = None
            if self.episode is None:
                self.episode, self.done = self.now, set()
        else:
            if self.healthy_from is None:
                self.healthy_from = self.now
            if self.now - self.healthy_from >= self.cfg.healthy_delay:
                self.episode = None

    def check(self, action: Action | None, gates: Gates, obs: NodeObs, excluded: bool) -> None:
        """The invariants, for one decision."""
        if action is None:
            return
        cfg, kind = self.cfg, action.kind
        if kind in FORWARD:
            assert self.sick(), "forward step for a node observed healthy"
            assert gates.fresh and not gates.breaker_open, "forward step through a closed gate"
            assert not excluded, "forward step on an excluded node"
            assert self.episode is not None and self.now >= self.episode + cfg.grace, (
                f"{kind} after {self.now - (self.episode or self.now)}s < grace {cfg.grace}s"
            )
        if kind is Kind.CORDON:
            assert gates.in_flight < cfg.max_concurrent
            assert not (obs.silent and gates.lease_renewing)
        if kind is Kind.DRAIN:
            assert Kind.CORDON in self.done, "drain of a node not cordoned in this episode"
        if kind is Kind.FENCE:
            assert cfg.fencing
        if kind is Kind.REMOVE:
            assert Kind.DRAIN in self.done, "removal without a drain in this episode"
            assert not cfg.fencing or Kind.FENCE in self.done, "removal without fencing"
            assert gates.removals_last_hour < cfg.max_removals_per_hour
        if kind is Kind.RESTORE or (kind is Kind.PERSIST and action.success.phase is Phase.HEALTHY):
            assert not self.sick() and self.healthy_from is not None
            assert self.now >= self.healthy_from + cfg.healthy_delay, "restore before healthy-delay"
        if kind is Kind.PERSIST and action.success.phase is Phase.SUSPECT:
            assert self.sick()

    def perform(self, action: Action, record: Record, step: Observe) -> bool:
        """Like controller._start + Executor.perform + complete. False once the node is gone."""
        current = action.persist if action.persist is not None else record
        outcome = step.outcome
        if action.kind is Kind.DRAIN and action.persist is not None:
            self.annotations = written(action.persist)  # written before draining
        gone = False
        if outcome is Outcome.OK:
            match action.kind:
                case Kind.PERSIST | Kind.FENCE:
                    self.annotations = written(action.success)  # nothing else is touched
                case Kind.CORDON:
                    self.annotations = written(action.success)
                    if not self.unschedulable:
                        self.unschedulable = self.our_cordon = True
                case Kind.REMOVE:
                    gone = self.cfg.removal != "out-of-service"
                    if not gone:
                        self.our_taint = self.our_taint or not self.tainted
                        self.tainted = True
                        self.annotations = written(action.success)
                case Kind.RESTORE:
                    if current.cordoned and self.unschedulable:
                        assert self.our_cordon, "uncordoned a cordon that was not ours"
                        self.unschedulable = self.our_cordon = False
                    if current.tainted and self.tainted:
                        assert self.our_taint, "removed a taint that was not ours"
                        self.tainted = self.our_taint = False
                    self.annotations = {}
            self.done.add(action.kind)
            if action.success.phase is Phase.HEALTHY:
                assert not self.our_cordon, "our cordon left behind on a recovered node"
                assert not self.our_taint, "our taint left behind on a recovered node"
        self.now += step.took
        if outcome is Outcome.HEALTHY:
            self.set_status("True")  # the executor's fresh read found it healthy: it is
        self.rec = complete(current, action, outcome, self.now, step.retry_in)
        self.actions.append(action.kind)
        return not gone


@given(configs(), st.booleans(), st.lists(STEPS, min_size=1, max_size=60))
def test_no_sequence_breaks_the_invariants(
    cfg: Config, admin_cordon: bool, steps: list[Observe | Failover]
) -> None:
    w = World(cfg, unschedulable=admin_cordon, admin_cordon=admin_cordon)
    for step in steps:
        w.now += step.dt
        if isinstance(step, Failover):
            w.rec = resume(w.obs(), w.now, cfg)
            continue
        if step.status is not None:
            w.set_status(step.status)
        else:
            w.set_status(w.status)
        obs = w.obs(step.excluded)
        d = decide(w.rec, obs, w.now, cfg, step.gates)
        assert d.record.uid == UID and (d.wake_at is None or d.wake_at >= w.now)
        w.check(d.action, step.gates, obs, step.excluded)
        if d.action is None:
            w.rec = d.record
        elif not w.perform(d.action, d.record, step):
            return
        annotations_for(w.rec)  # every reachable record can be written


def test_the_world_model_reaches_removal() -> None:
    """The property above is not vacuous: a plain dead node goes all the way."""
    cfg = Config(grace=60.0, fence_command=("fence-it",))
    w = World(cfg)
    step = Observe("Unknown", 0.0, Gates(), False, Outcome.OK, 1.0, 0.0)
    for _ in range(20):
        w.set_status("Unknown")
        obs = w.obs()
        d = decide(w.rec, obs, w.now, cfg, Gates())
        w.check(d.action, Gates(), obs, False)
        if d.action is None:
            w.rec, w.now = d.record, d.wake_at or w.now + 1
        elif not w.perform(d.action, d.record, step):
            break
    assert w.actions == [Kind.PERSIST, Kind.CORDON, Kind.DRAIN, Kind.FENCE, Kind.REMOVE]


# ------------------------------------------------------------------------- resume round trip
@st.composite
def persisted_records(draw: st.DrawFn) -> tuple[Record, float]:
    """A record as the machine persists it, and a Ready transition it is consistent with."""
    phase = draw(st.sampled_from([p for p in Phase if p is not Phase.HEALTHY]))
    since = T0 - draw(st.floats(min_value=2.0, max_value=1e6))
    phase_since = since + draw(st.floats(min_value=0.0, max_value=T0 - since))
    fenced = phase in IN_FLIGHT | {Phase.REMOVED} and draw(st.booleans())
    rec = Record(
        uid=UID,
        phase=phase,
        phase_since=phase_since,
        unhealthy_since=since,
        cordoned=draw(st.booleans()),
        tainted=draw(st.booleans()),
        fenced=fenced,
    )
    transition = since - draw(st.floats(min_value=1.0, max_value=1e6))
    return rec, transition


@given(persisted_records(), configs(), st.booleans())
def test_resume_of_written_annotations_round_trips(
    case: tuple[Record, float], cfg: Config, admin_cordon: bool
) -> None:
    rec, transition = case
    obs = observe(
        cfg,
        "Unknown",
        transition,
        written(rec),
        unschedulable=rec.cordoned or admin_cordon,
    )
    back = resume(obs, T0, cfg)
    # Times are written rounded up to the second: never earlier, less than a second later.
    assert rec.unhealthy_since is not None and back.unhealthy_since is not None
    assert 0 <= back.unhealthy_since - rec.unhealthy_since < 1
    assert 0 <= back.phase_since - rec.phase_since < 1 or back.phase_since == T0
    assert (back.uid, back.phase, back.cordoned, back.tainted, back.fenced) == (
        rec.uid,
        rec.phase,
        rec.cordoned,
        rec.tainted,
        rec.fenced,
    )
    # And what is written again from the resumed record is what was there.
    assert written(back) == written(rec) or back.phase_since == T0


def test_resume_of_a_healthy_record_is_healthy() -> None:
    cfg = Config()
    obs = observe(cfg, "Unknown", T0 - 100, written(Record(uid=UID)))
    assert resume(obs, T0, cfg) == Record(uid=UID)


# ---------------------------------------------------------------------- garbage annotations
LATER = [Phase.CORDONED, Phase.DRAINING, Phase.REMOVING, Phase.REMOVED]
# Mostly phases that would skip steps if trusted blindly; some Suspect, Healthy and garbage.
PHASE_VALUES = st.sampled_from(
    [p.value for p in LATER] * 3 + [Phase.SUSPECT.value, Phase.HEALTHY.value, "removing", ""]
)
FLAG_VALUES = st.sampled_from([None, "true", "true", "false", "TRUE", ""])
GARBAGE_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2027-01-15T08:00:00",
        "yesterday",
        "2027-13-01T00:00:00Z",
    ]
) | st.text(max_size=25)


@st.composite
def node_times(draw: st.DrawFn, transition: float) -> str | None:
    """An annotation time: mostly valid and close to the node's transition or to now (where
    trusting it wrongly would matter), sometimes absent, absurd or garbage."""
    kind = draw(st.sampled_from(["transition"] * 3 + ["now"] * 2 + ["absent", "garbage"]))
    if kind == "transition":
        offset = draw(st.sampled_from([-3600.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 30.0]))
        return format_time(transition + offset)
    if kind == "now":
        return format_time(T0 + draw(st.sampled_from([-1.0, 0.0, 1.0, 60.0, 1e6])))
    return None if kind == "absent" else draw(GARBAGE_TIMES)


@st.composite
def resumed_nodes(draw: st.DrawFn) -> tuple[float, dict[str, str]]:
    """(transition, annotations): a node unhealthy since `transition` (at most now) with
    whatever noderecover.io/ annotations a previous leader, a bug or a person left."""
    # Mostly within a grace of now: where acting too early is possible at all.
    ago = draw(
        st.sampled_from([0.0, 0.4, 0.9, 1.0, 1.5, 4.5, 30.5, 100.0, 3600.25]) | st.floats(0, 400)
    )
    transition = T0 - ago
    values = {
        ANN_PHASE: draw(PHASE_VALUES),
        ANN_UNHEALTHY_SINCE: draw(node_times(transition)),
        ANN_PHASE_SINCE: draw(node_times(transition)),
    }
    for key in OUR_ANNOTATIONS:
        if key not in values:
            values[key] = draw(FLAG_VALUES)
    return transition, {k: v for k, v in values.items() if v is not None}


@settings(max_examples=max(400, settings().max_examples))
@given(
    configs(),
    resumed_nodes(),
    st.sampled_from(["False", "Unknown"]),
    st.booleans(),
    st.booleans(),
)
def test_garbage_annotations_never_shorten_the_grace_or_skip_steps(
    cfg: Config,
    node: tuple[float, dict[str, str]],
    status: str,
    unschedulable: bool,
    fail_first: bool,
) -> None:
    """Whatever is left in our annotations, the node is remediated no earlier than `grace`
    after it became unhealthy (`transition`; the Node shows it truncated to the second), a
    later phase is resumed only when its timestamps are valid and backed by the node, and
    `fenced` never outlives the phase it belonged to."""
    transition, annotations = node
    now = T0
    obs = observe(cfg, status, transition, annotations, unschedulable=unschedulable)
    sick = ("Ready", status) in cfg.unhealthy_conditions
    rec = resume(obs, now, cfg)
    assert rec.uid == UID
    for t in (rec.unhealthy_since, rec.phase_since):
        assert t is None or t <= now
    if rec.phase not in {Phase.HEALTHY, Phase.SUSPECT}:
        since = parse_time(annotations.get(ANN_UNHEALTHY_SINCE))
        assert sick and since is not None and since <= now
        assert since >= transition, "resumed a phase the node does not back"
        assert rec.unhealthy_since == since and rec.phase.value == annotations[ANN_PHASE]
        assert rec.phase_since >= since
        assert not rec.fenced or annotations.get("noderecover.io/fenced") == "true"
    else:
        assert not rec.fenced, "fenced kept from a phase that was not resumed"
    written(rec)
    # Step exactly to each time the machine asks to be woken: finds its earliest action.
    for _ in range(12):
        d = decide(rec, obs, now, cfg, Gates())
        if d.action is None:
            if d.wake_at is None:
                return
            rec, now = d.record, max(now, d.wake_at)
            continue
        if d.action.kind in FORWARD:
            assert sick
            assert now >= transition + cfg.grace, "grace shortened"
        current = d.action.persist or d.record
        outcome = Outcome.FAILED if fail_first else Outcome.OK
        fail_first = False
        rec = complete(current, d.action, outcome, now, retry_in=5.0)
        if d.action.kind is Kind.REMOVE:
            return


# ------------------------------------------------------------- one decision, any state at all
MOMENTS = st.sampled_from([T0 - 3600.0, T0 - 61.0, T0 - 60.0, T0 - 30.5, T0 - 1.0, T0, T0 + 5.0])
OPEN = Gates()
# Each gate that holds a forward step, closed on its own.
CLOSED_GATES = (
    Gates(fresh=False),
    Gates(breaker_open=True),
    Gates(managed=False),
)


@dataclass(frozen=True)
class Situation:
    rec: Record
    status: str
    since: float  # the Node's Ready lastTransitionTime
    unschedulable: bool
    tainted: bool
    excluded: bool
    gates: Gates


@st.composite
def situations(
    draw: st.DrawFn, statuses: tuple[str, ...], gates: st.SearchStrategy[Gates]
) -> Situation:
    """Any record at all, reachable or not (a resumed, failed-over or buggy one), with an
    observation: mostly consistent with it (the same Ready transition, past the grace,
    no retry pending, in flight, not fenced yet) so that the decision gets as far as a
    forward step as often as it can."""
    transition = draw(st.none() | MOMENTS)
    rec = Record(
        uid=UID,
        phase=draw(st.sampled_from([*IN_FLIGHT, *IN_FLIGHT, *IN_FLIGHT, *Phase])),
        phase_since=draw(MOMENTS),
        # Mostly long ago (past any grace); sometimes within one.
        unhealthy_since=draw(st.sampled_from([T0 - 3600.0] * 4 + [None]) | MOMENTS),
        cordoned=draw(st.booleans()),
        tainted=draw(st.booleans()),
        fenced=draw(st.sampled_from([False, False, False, True])),
        fence_first=draw(st.booleans()),
        healthy_since=draw(st.sampled_from([None] * 6 + [T0 - 61.0, T0 - 1.0])),
        retry_at=draw(st.sampled_from([0.0] * 6 + [T0 + 1.0])),
        failures=draw(st.integers(0, 3)),
        flaps=draw(st.integers(0, 2)),
        transition=transition,
        parked=draw(st.booleans()),
    )
    since = MOMENTS if transition is None else st.just(transition) | MOMENTS
    return Situation(
        rec,
        status=draw(st.sampled_from(statuses)),
        since=min(draw(since), T0),
        unschedulable=draw(st.booleans()),
        tainted=draw(st.booleans()),
        excluded=draw(st.sampled_from([False, False, False, True])),
        gates=draw(gates),
    )


def _decide(cfg: Config, sit: Situation) -> tuple[NodeObs, Kind | None]:
    obs = observe(
        cfg,
        sit.status,
        sit.since,
        written(sit.rec) if sit.rec.phase is not Phase.HEALTHY else {},
        unschedulable=sit.unschedulable,
        tainted=sit.tainted,
        excluded=sit.excluded,
    )
    d = decide(sit.rec, obs, T0, cfg, sit.gates)
    return obs, d.action.kind if d.action is not None else None


# Mostly with fencing configured (FENCE is then possible), Ready=False counting as unhealthy.
FENCING_CONFIGS = st.builds(
    lambda cfg, fence: dataclasses.replace(
        cfg, fence_command=fence, unhealthy_conditions=UNHEALTHY_SETS[0]
    ),
    configs(),
    st.sampled_from([("fence-it",), ("fence-it",), ()]),
)
# Alive: Ready=False (it posts status), or Ready=Unknown with its Lease renewing.
RENEWING = Gates(lease_renewing=True)
ALIVE = st.one_of(
    situations(("False",), st.sampled_from([OPEN, RENEWING])),
    situations(("Unknown",), st.just(RENEWING)),
)


@example(
    Config(grace=0.0, fence_command=("fence-it",)),
    Situation(
        Record(UID, Phase.DRAINING, T0 - 3600.0, T0 - 3600.0, cordoned=True, fence_first=True),
        status="False",
        since=T0 - 3600.0,
        unschedulable=True,
        tainted=False,
        excluded=False,
        gates=OPEN,
    ),
)
@example(
    Config(grace=60.0),
    Situation(
        Record(UID, Phase.REMOVING, T0 - 100.0, T0 - 3600.0, cordoned=True),
        status="False",
        since=T0 - 3600.0,
        unschedulable=True,
        tainted=False,
        excluded=False,
        gates=OPEN,
    ),
)
@settings(max_examples=max(600, settings().max_examples))
@given(FENCING_CONFIGS, ALIVE)
def test_no_fence_or_removal_is_decided_for_a_live_kubelet(cfg: Config, sit: Situation) -> None:
    """Whatever the record (any phase and flags, reachable or not): while
    `kubelet_alive(obs, gates.lease_renewing)`, `decide` returns neither FENCE nor REMOVE."""
    obs, kind = _decide(cfg, sit)
    assert kubelet_alive(obs, sit.gates.lease_renewing)
    assert kind not in (Kind.FENCE, Kind.REMOVE), f"{kind} decided for a live kubelet"


@settings(max_examples=max(600, settings().max_examples))
@given(
    FENCING_CONFIGS,
    situations(
        ("False", "Unknown"),
        st.builds(
            lambda closed, renewing: dataclasses.replace(closed, lease_renewing=renewing),
            st.sampled_from(CLOSED_GATES),
            st.booleans(),
        ),
    )
    | situations(("False", "Unknown"), st.just(OPEN)).map(
        lambda sit: dataclasses.replace(sit, excluded=True)
    ),
)
def test_no_forward_step_is_decided_through_a_closed_gate(cfg: Config, sit: Situation) -> None:
    """Whatever the record: with the watch stale, the circuit breaker open, the node out of
    --node-selector, or the node excluded, `decide` returns no forward step (cordon, drain,
    fence, remove)."""
    obs, kind = _decide(cfg, sit)
    closed = not sit.gates.fresh or sit.gates.breaker_open or not sit.gates.managed
    assert closed or exclusion(obs, cfg) is not None
    assert kind not in FORWARD, f"{kind} decided through a closed gate ({sit.gates})"
