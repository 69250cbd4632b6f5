"""Proof that a node is off: what lets a removal detach its volumes at once.

The out-of-service taint makes the attach/detach controller detach a node's volumes at once
(KEP-2268). It is safe only on a node that is really off: a partitioned node that still runs
may be writing to them. A `Proof` says why noderecover believes a node is off:

- `NONE`: nothing proves it. `--removal auto` deletes the Node only (the volume waits
  Kubernetes' 6 minutes); a force still needs the kubelet silent.
- `SHUTDOWN_TAINT`: the cloud-controller-manager put `node.cloudprovider.kubernetes.io/shutdown`
  on the Node: the cloud says the instance is stopped. No fence is needed. The proof must be
  in the fresh read made right before each destructive write (not only in the watch view): a
  read without the taint is evidence of life (the step stops; flap damping restarts the grace).
- `FENCED(provider)`: a fence provider (`command`, `redfish`, `aws`, `fence-agent`: the one
  configured for the node's pool) confirmed the machine off in this episode.
- `SELF_FENCED`: the node's agent (`noderecover agent`), present and healthy when its node
  went silent, was asked to fence it (`noderecover.io/fence-requested=<uid>/<bootID>` on the
  Node) and its Lease, the heartbeat Lease and the mark have stood still for the safe time
  (core.agent: `AgentGate.proven`). The mark must be in the fresh read before each write,
  and the agent's Lease is read again there (still unchanged).

`outlook` says which proof a node WILL get (the provider and what it is aimed at) or why it
will get none; `plan`, `why`, `status` and the controller's snapshot all show it from there
(one rule per fact).

A proof never replaces the kubelet-silent evidence: every force (grace-1 eviction,
force-delete, fence, taint, Node DELETE) still needs Ready=Unknown and a stale heartbeat
Lease in its fresh read. It replaces the fence, and it makes `auto` taint: `auto` is `both`
(taint, wait for the detach, delete the Node) when a node is proven off, `delete` otherwise.
Explicit modes (`delete`, `out-of-service`, `both`) are the operator's choice and stay as set.

Every site that acts on a proof matches `ProofKind` exhaustively (`assert_never`), so a new
kind of proof is listed by mypy wherever it needs a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from noderecover.core.agent import AgentGate, names_me
from noderecover.core.fencing import NoTarget, Provider, spec_error, target_for
from noderecover.core.nodes import ANN_FENCE_REQUESTED, NodeObs
from noderecover.core.settings import Config, Removal, RemovalMode

# Set by the cloud-controller-manager's node lifecycle controller on a NotReady node whose
# instance the cloud reports shut down (k8s.io/cloud-provider, ShutdownTaint); removed when
# the node is Ready again.
SHUTDOWN_TAINT_KEY = "node.cloudprovider.kubernetes.io/shutdown"


class ProofKind(StrEnum):
    NONE = "none"
    SHUTDOWN_TAINT = "shutdown-taint"
    FENCED = "fenced"
    SELF_FENCED = "self-fenced"


@dataclass(frozen=True, slots=True)
class Proof:
    """Why a node is believed off (see the module doc). `provider`: FENCED only."""

    kind: ProofKind = ProofKind.NONE
    provider: str = ""

    @property
    def proven(self) -> bool:
        """The node is proven off."""
        match self.kind:
            case ProofKind.NONE:
                return False
            case ProofKind.SHUTDOWN_TAINT | ProofKind.FENCED | ProofKind.SELF_FENCED:
                return True
            case _:  # pragma: no cover
                assert_never(self.kind)

    def __str__(self) -> str:
        if self.kind is ProofKind.FENCED:
            return f"fenced ({self.provider})" if self.provider else "fenced"
        return self.kind.value


NO_PROOF = Proof()
SHUTDOWN = Proof(ProofKind.SHUTDOWN_TAINT)
SELF_FENCED = Proof(ProofKind.SELF_FENCED)


def fenced(provider: str) -> Proof:
    return Proof(ProofKind.FENCED, provider)


def shut_down(obs: NodeObs) -> bool:
    """The Node carries the cloud's shutdown taint."""
    return obs.has_taint(SHUTDOWN_TAINT_KEY)


def fence_requested(obs: NodeObs) -> bool:
    """The Node carries our fence mark for its agent, naming this very Node (its uid) and the
    boot its kubelet reports now - the agent's own rule (core.agent.names_me). A mark for an
    earlier boot was fenced already; the boot running now must be asked again, or its agent,
    vouched for by its peers, would never fence while we waited."""
    return names_me(obs.annotations.get(ANN_FENCE_REQUESTED), obs.uid, obs.boot_id)


def proof_of(obs: NodeObs, fenced_by: str | None, self_fenced: bool = False) -> Proof:
    """The proof a read of the node gives, with a fence confirmed in this episode
    (`fenced_by`: its provider, None: not fenced) and its agent's (`self_fenced`: the
    controller's `AgentGate.proven`; it counts only with the mark in this read). The cloud's
    word comes first: it needs no fence."""
    if shut_down(obs):
        return SHUTDOWN
    if fenced_by is not None:
        return fenced(fenced_by)
    if self_fenced and fence_requested(obs):
        return SELF_FENCED
    return NO_PROOF


def backed(proof: Proof, fresh: NodeObs) -> bool:
    """The fresh read still backs `proof`: a shutdown taint must be on the node in it; a
    fence is the provider's confirmed power state (not visible on the Node); a self-fence
    needs our mark, for this Node's uid, in it (the agent's Lease is the write path's read)."""
    match proof.kind:
        case ProofKind.NONE | ProofKind.FENCED:
            return True
        case ProofKind.SHUTDOWN_TAINT:
            return shut_down(fresh)
        case ProofKind.SELF_FENCED:
            return fence_requested(fresh)
        case _:  # pragma: no cover
            assert_never(proof.kind)


def needs_fence(cfg: Config, proof: Proof, agent: bool = False) -> bool:
    """A fence is configured, or the node has an agent relied on to fence itself (`agent`),
    and nothing proves the node off yet: nothing is forced before it is."""
    return (cfg.fencing or agent) and not proof.proven


def removal_mode(cfg: Config, proof: Proof) -> RemovalMode:
    """The removal done for a node with `proof`: `auto` is `both` when the node is proven off
    (or will be: a fence is configured and runs first), else `delete`; explicit modes stay."""
    if cfg.removal is Removal.AUTO and proof.proven:
        return RemovalMode.BOTH
    return cfg.removal_mode  # auto: both with a fence (it runs first), else delete


def taints(cfg: Config, proof: Proof) -> bool:
    """The removal of a node with `proof` puts the out-of-service taint on it."""
    return removal_mode(cfg, proof).taints


# -- which proof a node will get ------------------------------------------------------------

# A Secret's state as last read: name -> None (read, fine) or why it cannot be used; a name
# absent: not read yet (the fence reads it first).
SecretStates = Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class Outlook:
    """Which proof a node gets if it dies now, or why it gets none.

    `kind`: the proof it would get (NONE: none); `provider`: who fences ("" without a
    fence); `target`: what the proof is about (the BMC address, the EC2 instance id, the
    taint key, the fence command); `why`: one line, for `why` and the snapshot."""

    kind: ProofKind
    provider: str = ""
    target: str = ""
    why: str = ""

    @property
    def short(self) -> str:
        """For a table column: `none`, `shutdown-taint`, `<provider>: <target>`."""
        if self.kind is ProofKind.FENCED:
            return f"{self.provider}: {self.target or 'fenced'}"
        return self.kind.value

    def data(self) -> dict[str, str]:
        """For -o json/yaml."""
        return {
            "proof": self.kind.value,
            "provider": self.provider,
            "target": self.target,
            "why": self.why,
        }

    def __str__(self) -> str:
        match self.kind:
            case ProofKind.NONE:
                return f"none: {self.why}"
            case ProofKind.SHUTDOWN_TAINT:
                return f"shutdown-taint ({self.target})"
            case ProofKind.FENCED:
                if not self.target:  # the fence ran already
                    return f"fenced by {self.provider}: {self.why}"
                return f"fence by {self.provider} at {self.target}"
            case ProofKind.SELF_FENCED:
                if not self.target:  # the agent fenced it already
                    return f"self-fenced: {self.why}"
                return f"self-fence by its agent ({self.target})"
            case _:  # pragma: no cover
                assert_never(self.kind)


def outlook(
    cfg: Config,
    obs: NodeObs,
    proof: Proof,
    secrets: SecretStates,
    agent: AgentGate | None = None,
) -> Outlook:
    """The proof `obs`'s node will get with the settings `cfg` that govern it, `proof` being
    what it has already (`proof_of`), `secrets` what is known of the fence Secrets. One rule
    per fact, in this order: a proof it has; the cloud's shutdown taint; no provider; the
    provider's configuration incomplete; nothing to aim the fence at in this read of the
    Node; its Secret unusable; else the fence, with its target. Without a provider, a node
    agent relied on (`agent`, core.agent) gives the self-fence."""
    match proof.kind:
        case ProofKind.FENCED:
            return Outlook(ProofKind.FENCED, proof.provider, why="confirmed off in this episode")
        case ProofKind.SELF_FENCED:
            return Outlook(ProofKind.SELF_FENCED, "agent", why="its agent fenced it (safe time)")
        case ProofKind.SHUTDOWN_TAINT | ProofKind.NONE:
            pass
        case _:  # pragma: no cover
            assert_never(proof.kind)
    if shut_down(obs):
        return Outlook(
            ProofKind.SHUTDOWN_TAINT,
            target=SHUTDOWN_TAINT_KEY,
            why="the cloud-controller-manager says its instance is stopped: no fence needed",
        )
    provider = cfg.fence_provider
    if provider is None and agent is not None and agent.relied_on:
        mode = agent.params.mode.value
        return Outlook(
            ProofKind.SELF_FENCED,
            "agent",
            f"{mode}, safe time {agent.safe_time:.0f}s",
            f"its agent ({mode}) is asked to fence it; off {agent.safe_time:.0f}s after the "
            "mark and its last sign of life",
        )
    if provider is None:
        return Outlook(
            ProofKind.NONE,
            why="no fence provider configured for it (its policy's spec.fence, or "
            "--fence-provider / --fence-command); no shutdown taint",
        )
    name = provider.value
    if provider is Provider.COMMAND:
        if not cfg.fence_command:
            return Outlook(ProofKind.NONE, name, why="command needs --fence-command")
        return Outlook(ProofKind.FENCED, name, f"--fence-command {cfg.fence_command[0]}")
    if (error := spec_error(cfg.fence)) is not None:
        return Outlook(ProofKind.NONE, name, why=f"{name} is not configured: {error}")
    try:
        target = target_for(cfg.fence, obs)
    except NoTarget as exc:
        return Outlook(ProofKind.NONE, name, why=f"{name} has nothing to aim at: {exc}")
    secret = cfg.fence.secret_name
    if secret and (problem := secrets.get(secret)) is not None:
        return Outlook(ProofKind.NONE, name, why=f"{name}: its Secret cannot be used: {problem}")
    match provider:
        case Provider.AWS:
            where = f"instance {target.instance}"
        case Provider.REDFISH | Provider.FENCE_AGENT:
            where = f"BMC {target.address}" if target.address else "the agent's parameters"
            if cfg.fence.agent:
                where = f"{cfg.fence.agent}, {where}"
        case _:  # pragma: no cover
            assert_never(provider)
    return Outlook(ProofKind.FENCED, name, where, f"fence through {name} ({where})")
