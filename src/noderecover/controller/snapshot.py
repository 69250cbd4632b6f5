"""What the controller knows and decided at one instant, frozen: what `plan` and the
kubectl plugin show (`Controller.snapshot()`), so they never read the controller's
internals (records, view indexes, policy source, breakers).

Per node: its evidence (Ready, conditions), how it is governed (POLICY column), and the last
decision (phase, action, blocked reason, why, next timer). Beside them: the breakers, the
pool states of policy status, and notes (pauses with their end, invalid policies, unknown
policies or pauses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from noderecover.controller.policies import PolicySource
from noderecover.controller.pools import Pools
from noderecover.controller.view import NodeView
from noderecover.core.agent import AgentGate
from noderecover.core.machine import Decision, Gates, Kind, Phase, node_proof, unhealthy
from noderecover.core.nodes import ANN_PHASE_SINCE, Condition, format_time, parse_time
from noderecover.core.policies import NO_POLICY, POLICY_CONFLICT, PoolState
from noderecover.core.proof import Outlook, SecretStates, outlook, proof_of, removal_mode
from noderecover.core.safety import BreakerState, exclusion, in_population
from noderecover.core.settings import Config

FLAGS = "(flags)"  # the POLICY column of a node the flags govern (no policy exists)
NONE = "-"  # the POLICY column of a node nothing governs


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node: what was seen of it and what was decided."""

    name: str
    uid: str
    ready: Condition | None  # its Ready condition (status, since), None without one
    conditions: tuple[Condition, ...]
    malformed: bool
    unhealthy: bool  # by the settings that govern it now
    excluded: str | None  # why it is excluded (control plane, label) by those settings
    removal_mode: str  # of those settings
    proof: str  # why the node is believed off (core.proof), as this read shows it
    removal: str  # the removal it would get with that proof
    outlook: Outlook  # the proof it will get, or why none (core.proof.outlook)
    selected: bool  # the flags: matches --node-selector (with policies: always)
    policy: str  # the policy governing it, FLAGS, or NONE
    ungoverned: str | None  # with policies: why none governs it (None: one does)
    phase_since: float | None  # wall time, from our annotation
    # The last decision; `decided` False: none was needed (healthy, nothing of ours on it).
    decided: bool = False
    phase: Phase | None = None
    unhealthy_since: float | None = None  # timeline
    action: Kind | None = None  # the step started now
    blocked: str | None = None  # why the next step is held
    why: str = ""
    next_at: float | None = None  # timeline: when its next step is due (a timer)
    # Its node agent (core.agent), None: no agent Lease. Mode (watchdog, sysrq), the safe
    # time (the larger of its and the controller's timing), why it is not relied on (None:
    # it is: the node gets the self-fence path).
    agent_mode: str | None = None
    agent_safe_time: float | None = None
    agent_not_relied_on: str | None = None

    @property
    def agent(self) -> str:
        """One cell: "-" without an agent, else mode/safe time, "(not relied on)" if so."""
        if self.agent_mode is None or self.agent_safe_time is None:
            return "-"
        text = f"{self.agent_mode}/{self.agent_safe_time:.0f}s"
        return text if self.agent_not_relied_on is None else f"{text} (not relied on)"


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float  # timeline
    nodes: tuple[NodeState, ...]  # every node in view, by name
    policy_mode: bool  # some NodeRecoveryPolicy exists
    breakers: Mapping[str, BreakerState]  # per pool
    global_breaker: BreakerState
    pool_states: Mapping[str, PoolState]  # per policy, as policy status reports them
    notes: tuple[str, ...]  # pauses (until when, why), invalid policies, unknown ones

    @property
    def pool_breaker_open(self) -> bool:
        """Some pool's circuit breaker is open."""
        return any(b.open for b in self.breakers.values())


def governed_by(view: NodeView, policies: PolicySource, name: str) -> tuple[str, str | None]:
    """(POLICY column, why no policy governs it or None)."""
    if not policies.active:
        return (FLAGS, None) if name in view.population else (NONE, None)
    pool = view.pool(name)
    if pool is not None:
        return pool, None
    gov = view.held.get(name)
    if gov is not None and gov.held == POLICY_CONFLICT:
        return NONE, f"{POLICY_CONFLICT}: selected by {', '.join(gov.matched)}"
    if gov is not None and gov.held is not None:
        return NONE, gov.why
    return NONE, f"{NO_POLICY}: no NodeRecoveryPolicy selects it (left alone)"


def notes(policies: PolicySource, now: float) -> tuple[str, ...]:
    found = []
    if (unknown := policies.unknown_why()) is not None:  # held as if paused
        found.append(f"{unknown}: every forward step is held")
    cluster = policies.cluster_pause
    if cluster is not None and cluster.active(now):
        found.append(
            f"cluster-wide pause until {format_time(cluster.until)}: {cluster.reason or '-'}"
        )
    for name, p in sorted(policies.policies.items()):
        if p.error is not None:
            found.append(f"policy {name}: INVALID, not applied (its nodes are held): {p.error}")
        elif p.pause is not None and p.pause.active(now):
            until = format_time(p.pause.until)
            found.append(f"policy {name}: paused until {until}: {p.pause.reason or '-'}")
    return tuple(found)


def take(
    now: float,
    cfg: Config,
    view: NodeView,
    policies: PolicySource,
    pools: Pools,
    decisions: Mapping[str, Decision],
    config_for: Callable[[str], Config],
    secrets: SecretStates | None = None,
    agent_for: Callable[[str, str], AgentGate | None] | None = None,
) -> Snapshot:
    """The snapshot at `now` (timeline) of a controller made of these parts; `agent_for(node,
    uid)`: its agent as the controller sees it (None: no agent Lease)."""
    nodes = []
    for name in sorted(view.nodes):
        obs = view.nodes[name]
        ncfg = config_for(name)
        policy, ungoverned = governed_by(view, policies, name)
        d = decisions.get(name)
        agent = agent_for(name, obs.uid) if agent_for is not None else None
        proof = (
            node_proof(d.record, obs, ncfg, Gates(agent=agent), now)
            if d is not None
            else proof_of(obs, None)
        )
        state = NodeState(
            name=name,
            uid=obs.uid,
            ready=obs.ready,
            conditions=obs.conditions,
            malformed=obs.malformed is not None,
            unhealthy=unhealthy(obs, ncfg),
            excluded=exclusion(obs, ncfg),
            removal_mode=ncfg.removal_mode,
            proof=str(proof),
            removal=removal_mode(ncfg, proof),
            outlook=outlook(ncfg, obs, proof, secrets or {}, agent),
            selected=policies.active or in_population(obs, cfg),
            policy=policy,
            ungoverned=ungoverned,
            phase_since=parse_time(obs.annotations.get(ANN_PHASE_SINCE)),
            agent_mode=agent.params.mode.value if agent is not None else None,
            agent_safe_time=agent.safe_time if agent is not None else None,
            agent_not_relied_on=agent.why_not if agent is not None else None,
        )
        if d is not None:
            state = dataclasses.replace(
                state,
                decided=True,
                phase=d.record.phase,
                unhealthy_since=d.record.unhealthy_since,
                action=d.action.kind if d.action is not None else None,
                blocked=d.blocked,
                why=d.why,
                next_at=d.wake_at,
            )
        nodes.append(state)
    return Snapshot(
        now=now,
        nodes=tuple(nodes),
        policy_mode=policies.active,
        breakers=MappingProxyType(dict(pools.breakers)),
        global_breaker=pools.global_breaker,
        pool_states=MappingProxyType(dict(pools.states)),
        notes=notes(policies, now),
    )
