"""The node agent's decisions, pure: fence my node now or not, and what the controller may
conclude from an agent's Lease.

Time is plain seconds on ONE monotonic timeline per caller: the agent's own for `step`, the
controller's for `self_fenced` (when it first received each record). No wall clock, no I/O.

The agent (`step`):
- Healthy = this check reached the API server (its Lease written, its Node read) and the Node
  carries no fence mark naming this Node's uid. A healthy check never fences, whatever the
  peers answered or any other annotation said.
- Marked = the Node's annotation `noderecover.io/fence-requested` names the Node's own
  `metadata.uid` and, when it names one, this boot of the machine (`<uid>/<bootID>`, the
  kubelet's status.nodeInfo.bootID the controller read; the agent compares the kernel's
  boot_id) - read by this agent, or by a peer that could reach the API server and says so for
  this uid. A mark naming another uid (another Node of the same name) is ignored, and so is a
  mark for an earlier boot: that boot was fenced (a node rebooted by its agent comes back
  while the mark is still on its Node; it must not reboot again and again).
- Isolated = no contact for `isolation_timeout`, where contact is a healthy check or a peer
  that reached the API server and read this very Node (same uid) without a mark. A peer that
  cannot reach the API server either never vouches: a partition may hold several nodes that
  still see each other, and the controller on the other side counts on each of them fencing.
- The contact time is when the check (or the peer round) STARTED: an answer that arrives
  later may describe the world before a mark was written, so it must not push the isolation
  clock past the moment it could have seen that world.
- An agent never fenced its node before its first contact since it started (a node that
  boots into a partition is not rebooted again and again: nothing of it runs that the
  controller could have replaced - its pods did not survive the reboot).
- Fencing is final: once decided, the watchdog is never fed again.

The controller (`safe_time`, `self_fenced`, `merged`): see each function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

from noderecover.core import durations
from noderecover.core.nodes import ANN_FENCE_REQUESTED

FENCE_REQUESTED = ANN_FENCE_REQUESTED  # on the Node: value = the Node's uid

# The agent's Lease: coordination.k8s.io/v1 in the controller's namespace.
LEASE_PREFIX = "noderecover-agent-"
AGENT_LABEL = "app.kubernetes.io/component"
AGENT_LABEL_VALUE = "noderecover-agent"
ANN_MODE = "noderecover.io/agent-mode"
ANN_ISOLATION = "noderecover.io/agent-isolation-timeout"
ANN_WATCHDOG = "noderecover.io/agent-watchdog-timeout"
ANN_INTERVAL = "noderecover.io/agent-check-interval"
ANN_SLACK = "noderecover.io/agent-slack"
ANN_ADDRESS = "noderecover.io/agent-address"

# Added to every safe time: the controller's own observation lag and clock-rate differences.
SAFE_TIME_MARGIN = 10.0
# The controller never assumes a node fenced sooner than this after it went silent.
DEFAULT_SAFE_TIME_FLOOR = 60.0

MAX_NODE_NAME = 253 - len(LEASE_PREFIX)


class Mode(Enum):
    """How the agent stops its node."""

    WATCHDOG = "watchdog"  # stop feeding /dev/watchdog: the (hardware or soft) dog reboots
    SYSRQ = "sysrq"  # write 'b' to /proc/sysrq-trigger: immediate reboot, no sync
    TEST = "test"  # the test harness's action (stop the kwok node), never in a cluster


def lease_name(node: str) -> str:
    return LEASE_PREFIX + node


def mark_value(uid: str, boot_id: str = "") -> str:
    """The fence mark the controller writes: the Node's uid, and the boot it is meant for when
    its kubelet reported one."""
    return f"{uid}/{boot_id}" if boot_id else uid


def mark_uid(mark: str | None) -> str | None:
    """The Node uid a fence mark names (None: no mark)."""
    return None if mark is None else mark.split("/", 1)[0]


def names_me(mark: str | None, uid: str | None, boot_id: str) -> bool:
    """The mark asks THIS boot of the Node `uid` to fence: its uid, and its boot id when it
    names one (`boot_id`: the kernel's, "" when the agent could not read it: then a mark
    naming a boot is taken as naming this one - fencing is the safe side)."""
    if mark is None or uid is None or not uid:
        return False
    named_uid, _, named_boot = mark.partition("/")
    if named_uid != uid:
        return False
    return not named_boot or not boot_id or named_boot == boot_id


@dataclass(frozen=True, slots=True)
class AgentParams:
    """The timing an agent runs with and publishes on its Lease (seconds).

    `slack` bounds how long one check can take beyond the interval (API request timeout +
    peer round timeout): a decision is made at most that long after its check started.
    """

    isolation_timeout: float
    watchdog_timeout: float
    check_interval: float
    slack: float
    mode: Mode = Mode.WATCHDOG

    def annotations(self, address: str = "") -> dict[str, str]:
        out = {
            ANN_MODE: self.mode.value,
            ANN_ISOLATION: durations.format_duration(self.isolation_timeout),
            ANN_WATCHDOG: durations.format_duration(self.watchdog_timeout),
            ANN_INTERVAL: durations.format_duration(self.check_interval),
            ANN_SLACK: durations.format_duration(self.slack),
        }
        if address:
            out[ANN_ADDRESS] = address
        return out


def params_of(annotations: Mapping[str, object]) -> AgentParams | None:
    """The parameters an agent published on its Lease; None when any is missing or not a
    duration of the one grammar (then the controller treats the node as agent-less)."""
    try:
        values = [
            annotations[key] for key in (ANN_ISOLATION, ANN_WATCHDOG, ANN_INTERVAL, ANN_SLACK)
        ]
        mode = Mode(annotations[ANN_MODE])
    except (KeyError, ValueError, TypeError):
        return None
    parsed: list[float] = []
    for value in values:
        if not isinstance(value, str):
            return None
        try:
            parsed.append(durations.parse_duration(value))
        except ValueError:
            return None
    iso, wd, interval, slack = parsed
    return AgentParams(iso, wd, interval, slack, mode)


def merged(agent: AgentParams, controller: AgentParams) -> AgentParams:
    """Agent and controller disagree about the timeouts (config drift): the larger of each
    wins, so the controller never waits less than the agent needs, nor less than it was told."""
    return AgentParams(
        isolation_timeout=max(agent.isolation_timeout, controller.isolation_timeout),
        watchdog_timeout=max(agent.watchdog_timeout, controller.watchdog_timeout),
        check_interval=max(agent.check_interval, controller.check_interval),
        slack=max(agent.slack, controller.slack),
        mode=agent.mode,  # how the node fences is the agent's fact, not a setting
    )


def safe_time(params: AgentParams, floor: float = DEFAULT_SAFE_TIME_FLOOR) -> float:
    """How long after the last sign of the agent (its Lease, and the fence mark) its node is
    certainly off: isolation timeout + watchdog timeout + check interval + slack + margin,
    never below `floor`.

    Why each term: the agent's last contact is at most that moment; it decides to fence at
    the first check after `isolation_timeout` (checks start every `check_interval`, and a
    decision comes at most `slack` after its check started); from then on the watchdog is not
    fed and reboots the node within `watchdog_timeout` (sysrq: at once). The margin covers
    the controller's observation lag. Infinite or NaN inputs give infinity (never safe)."""
    total = (
        params.isolation_timeout
        + params.watchdog_timeout
        + params.check_interval
        + params.slack
        + SAFE_TIME_MARGIN
    )
    if math.isnan(total) or any(
        v < 0
        for v in (
            params.isolation_timeout,
            params.watchdog_timeout,
            params.check_interval,
            params.slack,
        )
    ):
        return math.inf
    return max(total, floor)


def self_fenced(
    agent_lease_seen: float | None,
    heartbeat_lease_seen: float | None,
    now: float,
    params: AgentParams | None,
    *,
    marked_seen: float | None,
    floor: float = DEFAULT_SAFE_TIME_FLOOR,
) -> bool:
    """The controller's proof that a node with an agent has stopped itself.

    Arguments are times on the CONTROLLER's monotonic clock: when it first received the
    current (unchanged since) record of the agent's Lease, of the node's heartbeat Lease, and
    of the fence mark it put on the Node (None: not seen / no mark). True only when all three
    have stood still for the safe time of `params` (None: no agent parameters: False).

    Why the mark is required: an agent cut off from the API server but not from its peers
    keeps running while they vouch for it, and its Lease stands still all the same; only
    once its node is marked do those peers answer "marked" instead, and the agent fences. So
    the safe time counts from the later of the mark and the last Lease change."""
    if params is None or agent_lease_seen is None or heartbeat_lease_seen is None:
        return False
    if marked_seen is None:
        return False
    wait = safe_time(params, floor)
    if math.isinf(wait):
        return False
    since = max(agent_lease_seen, heartbeat_lease_seen, marked_seen)
    return now - since >= wait


# ------------------------------------------------------------------- the controller's view

# An agent is relied on only once it has renewed its Lease for this many of its Lease windows
# (leaseDurationSeconds: 3 check intervals, 15 s by default: 60 s) without a gap longer than
# one window (+ GAP_TOLERANCE): a crash-looping agent, restarted with the kubelet's back-off
# (10 s, 20 s, 40 s, ...), never is, and neither is one that just started.
AGENT_SETTLE_WINDOWS = 4
# Watch delivery lag allowed on top of an agent Lease's duration before a gap counts.
GAP_TOLERANCE = 5.0


@dataclass(frozen=True, slots=True)
class AgentSeen:
    """One agent's Lease as the controller saw it. Times: the controller's timeline (when it
    RECEIVED each record, never the Lease's renewTime, another host's clock)."""

    params: AgentParams | None  # as published; None: missing or unreadable
    changed_at: float  # when its current record was first received
    # The first change of the current run of renewals, each within `window` +
    # GAP_TOLERANCE of the last; None: no change seen yet (a first read is not a renewal).
    steady_since: float | None
    window: float  # its leaseDurationSeconds
    # The last renewal of the latest run that lasted `settle_time` or more (None: none did).
    # A later run (renewals after a gap: a flapping link, a restart) never undoes it: what
    # counts is whether the agent was healthy when its node went silent.
    settled_until: float | None = None
    # Its renewTime, on the NODE's wall clock (the agent's), None: unreadable. Compared only
    # with the heartbeat Lease's renewTime, written by the kubelet on the same clock.
    renew_wall: float | None = None


def settle_time(window: float) -> float:
    """How long an agent must renew without a gap to be relied on."""
    return AGENT_SETTLE_WINDOWS * window


def settled(seen: AgentSeen, now_changed: float) -> float | None:
    """`settled_until` after a change received at `now_changed` (the shell's bookkeeping)."""
    run = None if seen.steady_since is None else now_changed - seen.steady_since
    if run is not None and run >= settle_time(seen.window):
        return now_changed
    return seen.settled_until


def not_relied_on(
    seen: AgentSeen | None,
    heartbeat_at: float | None,
    heartbeat_renew_wall: float | None = None,
) -> str | None:
    """Why the controller must not count on this node's agent to fence it (None: it may).

    It may only when the agent was present and healthy when its node went silent: parameters
    it can read, and a run of renewals seen without a gap for `settle_time` that lasted until
    no earlier than the node's last heartbeat minus its Lease window (+ the margin): an agent
    that stopped (crashed, removed, stopped cleanly: a clean stop disarms the watchdog) before
    its kubelet went silent fences nothing, and a crash-looping one never settles.

    Without history of renewals (a controller that started, or took over, after the node went
    silent: its Lease only first read), the node's own clock answers "was it renewing when its
    kubelet went silent": its renewTime against the heartbeat Lease's renewTime
    (`heartbeat_renew_wall`), both written on that node. Holding would wait forever (the Lease
    of a fenced agent never changes again); taking the node as agent-less would force a node
    whose agent may be up, vouched for by its peers. Steadiness cannot be judged then, so this
    holds for a watchdog agent only: a renewal means its dog was armed, and a crashed agent's
    dog bites. A sysrq agent is never relied on: a crashed or hung one fences nothing, with or
    without history."""
    if seen is None:
        return "no agent"
    if seen.params is None:
        return "its agent's Lease has no readable parameters"
    if seen.params.mode is Mode.SYSRQ:
        # A sysrq reboot needs the agent's own process running: one that crashed or hung
        # within its window before the silence (which no history tells apart from one that
        # renewed) fences nothing. Only a watchdog is proof: its dog bites a dead agent.
        return "its agent reboots by sysrq, no watchdog: a crashed or hung agent fences nothing"
    late = "its agent stopped renewing before its kubelet went silent"
    if seen.settled_until is None:
        if seen.steady_since is not None:
            steady = seen.changed_at - seen.steady_since
            settle = settle_time(seen.window)
            return f"its agent renewed steadily for only {steady:.0f}s (< {settle:.0f}s)"
        if seen.renew_wall is None or heartbeat_renew_wall is None:
            return "its agent's Lease was not seen renewing"
        if seen.renew_wall + seen.window + SAFE_TIME_MARGIN < heartbeat_renew_wall:
            return late + " (by the node's clock)"
        return None
    if heartbeat_at is None:
        return "its heartbeat Lease was not seen"
    if seen.settled_until + seen.window + SAFE_TIME_MARGIN < heartbeat_at:
        return late
    return None


@dataclass(frozen=True, slots=True)
class AgentGate:
    """What `machine.decide` needs of a node's agent (times: the controller's timeline)."""

    params: AgentParams  # the agent's, merged with the controller's (`merged`)
    why_not: str | None  # `not_relied_on`: None when the agent is counted on to fence
    lease_at: float  # its Lease's current record first received
    heartbeat_at: float | None  # the heartbeat Lease's current record first received
    marked_at: float | None  # our fence mark (this Node's uid) first seen; None: not marked
    floor: float = DEFAULT_SAFE_TIME_FLOOR

    @property
    def relied_on(self) -> bool:
        return self.why_not is None

    @property
    def safe_time(self) -> float:
        return safe_time(self.params, self.floor)

    def proven(self, now: float) -> bool:
        """The node has fenced itself (`self_fenced`), and its agent is relied on."""
        return self.relied_on and self_fenced(
            self.lease_at,
            self.heartbeat_at,
            now,
            self.params,
            marked_seen=self.marked_at,
            floor=self.floor,
        )

    def fenced_at(self) -> float | None:
        """When `proven` turns true if nothing changes (None: not before something does)."""
        if not self.relied_on or self.heartbeat_at is None or self.marked_at is None:
            return None
        wait = self.safe_time
        if math.isinf(wait):
            return None
        return max(self.lease_at, self.heartbeat_at, self.marked_at) + wait


# --------------------------------------------------------------------------------- the agent


class Answer(Enum):
    """What one peer's answer means for the asking agent."""

    VOUCH = "vouch"  # reached the API server, read my Node (my uid): not marked
    MARKED = "marked"  # reached the API server, read my Node (my uid): marked with my uid
    NO_API = "no-api"  # the peer cannot reach the API server either
    USELESS = "useless"  # no answer, garbage, or about another Node/uid


@dataclass(frozen=True, slots=True)
class PeerReport:
    """A peer's answer as received (the shell parses JSON into this, without judging it)."""

    api_reachable: bool
    node: str
    uid: str
    fence_requested: str


def judge(report: PeerReport | None, node: str, uid: str | None, boot_id: str = "") -> Answer:
    """What a peer's report says about my node (`node`, whose uid I last read as `uid`; this
    boot: `boot_id`)."""
    if report is None:
        return Answer.USELESS
    if not report.api_reachable:
        return Answer.NO_API
    if uid is None or report.node != node or report.uid != uid:
        return Answer.USELESS
    if names_me(report.fence_requested or None, uid, boot_id):
        return Answer.MARKED
    return Answer.VOUCH


@dataclass(frozen=True, slots=True)
class Check:
    """One self-check's observations. `started` is when it began, on the agent's clock."""

    started: float
    api_ok: bool
    node_uid: str | None = None  # from this check's Node read (api_ok only)
    fence_requested: str | None = None  # that Node's annotation, if any
    peers: tuple[Answer, ...] = ()  # asked only when api_ok is False


class Why(Enum):
    HEALTHY = "healthy"  # reached the API server, no mark
    NOT_ARMED = "not-armed"  # no contact yet since start
    VOUCHED = "vouched"  # no API server, a peer vouched
    COUNTING = "isolated"  # no API server, no vouch, the isolation timeout not reached
    MARKED = "marked"  # fence: the Node is marked with its own uid
    MARKED_BY_PEER = "marked-by-peer"  # fence: a peer read the mark for us
    ISOLATED = "isolation-timeout"  # fence: no contact for the isolation timeout
    FENCED = "fenced"  # fence decided earlier: final


@dataclass(frozen=True, slots=True)
class AgentState:
    last_contact: float | None = None  # start of the last check/round that made contact
    node_uid: str | None = None  # my Node's uid as last read from the API server
    fenced: Why | None = None  # the reason, once fencing was decided (final)
    api_ok: bool = False  # the last check reached the API server
    boot_id: str = ""  # this boot of the machine (the kernel's boot_id; "" unknown)


@dataclass(frozen=True, slots=True)
class Decision:
    fence: bool
    why: Why
    isolated_for: float  # seconds without contact (0 when in contact)


FENCE_REASONS = frozenset({Why.MARKED, Why.MARKED_BY_PEER, Why.ISOLATED, Why.FENCED})


def step(
    state: AgentState, check: Check, now: float, params: AgentParams
) -> tuple[AgentState, Decision]:
    """The agent's decision after one check, at `now` (its monotonic clock)."""
    if state.fenced is not None:
        return state, Decision(True, Why.FENCED, _since(state.last_contact, now))
    if check.api_ok:
        uid = check.node_uid or None
        state = replace(state, last_contact=check.started, node_uid=uid, api_ok=True)
        if names_me(check.fence_requested, uid, state.boot_id):
            return _fence(state, Why.MARKED, now)
        return state, Decision(False, Why.HEALTHY, 0.0)
    state = replace(state, api_ok=False)
    if state.last_contact is None or state.node_uid is None:
        return state, Decision(False, Why.NOT_ARMED, 0.0)
    if Answer.MARKED in check.peers:
        return _fence(state, Why.MARKED_BY_PEER, now)
    if Answer.VOUCH in check.peers:
        state = replace(state, last_contact=max(state.last_contact, check.started))
        return state, Decision(False, Why.VOUCHED, _since(state.last_contact, now))
    isolated = _since(state.last_contact, now)
    if isolated >= params.isolation_timeout:
        return _fence(state, Why.ISOLATED, now)
    return state, Decision(False, Why.COUNTING, isolated)


def _fence(state: AgentState, why: Why, now: float) -> tuple[AgentState, Decision]:
    return replace(state, fenced=why), Decision(True, why, _since(state.last_contact, now))


def _since(then: float | None, now: float) -> float:
    # A monotonic clock never runs back; if a caller's did, no time has passed (never fence
    # on a clock that moved backwards).
    return 0.0 if then is None else max(0.0, now - then)


# ------------------------------------------------------------------------------ peer answers


def peer_report(node: str, node_json: Mapping[str, object] | None) -> dict[str, object]:
    """The JSON a peer that reached the API server answers about `node` (None: no answer)."""
    if node_json is None:
        return {"apiReachable": False, "node": node, "uid": "", "fenceRequested": ""}
    meta = node_json.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    annotations = meta.get("annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}
    uid = meta.get("uid")
    mark = annotations.get(FENCE_REQUESTED)
    return {
        "apiReachable": True,
        "node": node,
        "uid": uid if isinstance(uid, str) else "",
        "fenceRequested": mark if isinstance(mark, str) else "",
    }


def parse_peer_report(data: object) -> PeerReport | None:
    """A peer's JSON answer, or None when it is not one (wrong types, missing keys)."""
    if not isinstance(data, Mapping):
        return None
    reachable = data.get("apiReachable")
    node, uid, mark = data.get("node"), data.get("uid"), data.get("fenceRequested")
    if not isinstance(reachable, bool):
        return None
    if not (isinstance(node, str) and isinstance(uid, str) and isinstance(mark, str)):
        return None
    return PeerReport(reachable, node, uid, mark)


def node_mark(node_json: Mapping[str, object]) -> tuple[str | None, str | None]:
    """(uid, fence mark) of a Node read from the API server (None where absent or not text)."""
    report = peer_report("", node_json)
    uid = report["uid"]
    mark = report["fenceRequested"]
    return (uid if isinstance(uid, str) and uid else None), (
        mark if isinstance(mark, str) and mark else None
    )
