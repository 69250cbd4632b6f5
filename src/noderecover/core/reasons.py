"""Every reason a step can be held for: one registry (docs/safety.md, "Blocked reasons").

A blocked reason is what `Decision.blocked`, the executor's BLOCKED results and the drain
report. For each one the registry says:
- `label`: the value of noderecover_blocked_total{reason=...} (the enum's value);
- `means`, `ends`: what holds the step and what ends the hold, in the operator's words; the
  NodeRecoverBlocked Event says both (`event`), so `kubectl describe node` tells what to do;
- `gate`: a controller-wide gate (stale watch, breaker, selector, pauses, policies), asked
  again before every destructive step and looked at again soon (the executor's short retry),
  or a hold of this one node (its kubelet, its pods, its volumes, its flaps, its budget).

tests/test_reasons.py checks this enum against that page's table, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Blocked(StrEnum):
    # Controller-wide gates.
    WATCH_STALE = "watch-stale"
    CIRCUIT_BREAKER = "circuit-breaker"
    EXCLUDED_SELECTOR = "excluded-selector"
    PAUSED = "paused"
    CLUSTER_PAUSED = "paused-cluster"
    PAUSE_UNKNOWN = "pause-unknown"
    POLICIES_UNKNOWN = "policies-unknown"
    NO_POLICY = "no-policy"
    POLICY_CONFLICT = "policy-conflict"
    POLICY_INVALID = "policy-invalid"
    # Holds of one node.
    MAX_CONCURRENT = "max-concurrent"
    MAX_REMOVALS = "max-removals-per-hour"
    HEARTBEAT_LEASE_RENEWING = "heartbeat-lease-renewing"
    KUBELET_ALIVE = "kubelet-alive"
    FLAPPING = "flapping"
    MALFORMED = "malformed-object"
    EXCLUDED_ANNOTATION = "excluded-annotation"
    EXCLUDED_CONTROL_PLANE = "excluded-control-plane"
    EXCLUDED_AUTOSCALER = "excluded-autoscaler"
    PDB_BLOCKED = "pod-disruption-budget"
    MULTIPLE_PDBS = "multiple-pdbs"
    PODS_TERMINATING = "pods-terminating"
    POD_FINALIZERS = "pod-finalizers"
    MALFORMED_POD = "malformed-pod"
    VOLUMES_ATTACHED = "volumes-attached"
    EVIDENCE_STALE = "evidence-stale"
    REMOVALS_UNKNOWN = "removals-unknown"
    REMOVAL_UNRECORDED = "removal-unrecorded"
    NOT_PROVEN_OFF = "not-proven-off"
    FENCE_NO_TARGET = "fence-no-target"
    FENCE_SECRET = "fence-secret"
    FENCE_UNREACHABLE = "fence-unreachable"
    FENCE_REFUSED = "fence-refused"
    FENCE_NOT_OFF = "fence-not-off"

    @property
    def label(self) -> str:
        """Its value of noderecover_blocked_total{reason}."""
        return self.value

    @property
    def gate(self) -> bool:
        """A controller-wide gate (True) or a hold of one node (False)."""
        return _INFO[self].gate

    @property
    def means(self) -> str:
        return _INFO[self].means

    @property
    def ends(self) -> str:
        return _INFO[self].ends

    @property
    def event(self) -> str:
        """The NodeRecoverBlocked Event's text: what holds, and what ends it."""
        info = _INFO[self]
        return f"{info.means}; {info.ends}"


@dataclass(frozen=True, slots=True)
class _Info:
    gate: bool
    means: str  # what holds the step
    ends: str  # what ends the hold


_GATE, _NODE = True, False

_INFO: dict[Blocked, _Info] = {
    Blocked.WATCH_STALE: _Info(
        _GATE,
        "the node watch is not fresh (first LIST not complete, or no progress for "
        "--watch-silence): no destructive step on a stale view",
        "ends when the watch makes progress again (an event, a bookmark or a completed LIST)",
    ),
    Blocked.CIRCUIT_BREAKER: _Info(
        _GATE,
        "a circuit breaker is open: more nodes are unhealthy than --max-unhealthy across the "
        "whole cluster, or than the policy's maxUnhealthy in its pool, counting recent "
        "removals; no new cordon, drain or removal",
        "ends when the count has stayed at or below the limit for --storm-cooldown",
    ),
    Blocked.EXCLUDED_SELECTOR: _Info(
        _GATE,
        "the node no longer matches --node-selector: only a restore may happen",
        "ends when the node matches the selector again",
    ),
    Blocked.PAUSED: _Info(
        _GATE,
        "the node's NodeRecoveryPolicy is paused (spec.paused)",
        "ends at the pause's `until`, or when it is removed (kubectl noderecover resume)",
    ),
    Blocked.CLUSTER_PAUSED: _Info(
        _GATE,
        "noderecover is paused cluster-wide (ConfigMap noderecover-pause)",
        "ends at its `until` (at most 7 days after its creation), or when the ConfigMap "
        "is deleted (kubectl noderecover resume)",
    ),
    Blocked.PAUSE_UNKNOWN: _Info(
        _GATE,
        "a pause object could not be read (denied, server error, timeout): an unknown "
        "pause counts as a pause",
        "ends when a read of it succeeds (then the pause, if there is one, decides)",
    ),
    Blocked.POLICIES_UNKNOWN: _Info(
        _GATE,
        "the NodeRecoveryPolicy list is not known (not read yet, or its reads fail)",
        "ends when a LIST of the policies succeeds",
    ),
    Blocked.NO_POLICY: _Info(
        _GATE,
        "policies exist and none selects this node: it is left alone",
        "ends when a NodeRecoveryPolicy selects the node",
    ),
    Blocked.POLICY_CONFLICT: _Info(
        _GATE,
        "two or more NodeRecoveryPolicies select this node: none is applied",
        "ends when exactly one policy selects it (the policies' Degraded condition names them)",
    ),
    Blocked.POLICY_INVALID: _Info(
        _GATE,
        "the NodeRecoveryPolicy selecting this node cannot be applied (its Ready condition "
        "says why)",
        "ends when the policy is fixed",
    ),
    Blocked.MAX_CONCURRENT: _Info(
        _NODE,
        "--max-concurrent remediations are in progress on other nodes",
        "ends when one of them is removed or restored (a held remediation keeps its slot)",
    ),
    Blocked.MAX_REMOVALS: _Info(
        _NODE,
        "the hourly removal budget (--max-removals-per-hour) is spent: the node stays "
        "cordoned and drained, and keeps its --max-concurrent slot",
        "ends when the oldest removal of the last hour is an hour old",
    ),
    Blocked.HEARTBEAT_LEASE_RENEWING: _Info(
        _NODE,
        "Ready=Unknown, but the node's heartbeat Lease (kube-node-lease) is being renewed: "
        "its kubelet is alive, so it is not cordoned",
        "ends when the Lease stays unchanged for the longer of the grace and its own "
        "leaseDurationSeconds, or the node is healthy again",
    ),
    Blocked.KUBELET_ALIVE: _Info(
        _NODE,
        "the kubelet is alive (it posts status, or renews its heartbeat Lease): no "
        "force-delete, fence or removal; the node stays cordoned, drained by eviction only, "
        "and keeps its --max-concurrent slot",
        "ends when the kubelet goes silent (Ready=Unknown, Lease unchanged for the longer of "
        "the grace and its leaseDurationSeconds), "
        "or the node is healthy for --healthy-delay and is restored",
    ),
    Blocked.FLAPPING: _Info(
        _NODE,
        "the node showed health within the last grace (a flap): no drain, fence or removal; "
        "it stays cordoned and keeps its slot",
        "ends when it has been unhealthy for a whole grace since its last flap, or healthy "
        "for --healthy-delay (restored)",
    ),
    Blocked.MALFORMED: _Info(
        _NODE,
        "the Node object cannot be read safely (noderecover_malformed_objects_total says "
        "what): it is neither remediated nor restored",
        "ends when the object is well-formed again",
    ),
    Blocked.EXCLUDED_ANNOTATION: _Info(
        _NODE,
        "the node is opted out (annotation noderecover.io/exclude=true)",
        "ends when the annotation is removed",
    ),
    Blocked.EXCLUDED_CONTROL_PLANE: _Info(
        _NODE,
        "a control-plane node (node-role.kubernetes.io/control-plane or master label) is "
        "never remediated",
        "ends only with --no-exclude-control-plane, or without the label",
    ),
    Blocked.EXCLUDED_AUTOSCALER: _Info(
        _NODE,
        "the cluster autoscaler or Karpenter is taking this node away (its taint): it is theirs",
        "ends when their taint is gone",
    ),
    Blocked.PDB_BLOCKED: _Info(
        _NODE,
        "an eviction was refused by a PodDisruptionBudget (429)",
        "ends when the budget allows the disruption (the eviction is retried)",
    ),
    Blocked.MULTIPLE_PDBS: _Info(
        _NODE,
        "a pod is covered by more than one PodDisruptionBudget: the API server refuses to evict it",
        "ends when at most one PodDisruptionBudget selects the pod, or the pod is gone",
    ),
    Blocked.PODS_TERMINATING: _Info(
        _NODE,
        "the kubelet is alive and has not finished its pods within --drain-timeout; "
        "nothing is forced on a live kubelet; the node keeps its slot",
        "ends when the pods are gone, or the kubelet goes silent (the drain is retried)",
    ),
    Blocked.POD_FINALIZERS: _Info(
        _NODE,
        "a pod force-deleted once is still listed: its finalizers hold it (noderecover "
        "never removes finalizers); the drain goes on without it",
        "ends when whatever owns the finalizers removes them",
    ),
    Blocked.MALFORMED_POD: _Info(
        _NODE,
        "a pod on the node cannot be read safely: it is never evicted or force-deleted, "
        "and the node is not removed while it is listed",
        "ends when the pod is readable or gone",
    ),
    Blocked.VOLUMES_ATTACHED: _Info(
        _NODE,
        "--removal out-of-service/both: the node's VolumeAttachments did not detach within "
        "--detach-timeout after the out-of-service taint; the Node is kept, tainted",
        "ends when they detach (is the CSI driver's external-attacher running?)",
    ),
    Blocked.REMOVALS_UNKNOWN: _Info(
        _GATE,
        "the removals earlier leaders made (their NodeRecoverRemoving and NodeRecoverRemoved "
        "Events) could not be "
        "read on taking the lead: the hourly removal budget is unknown, so no out-of-service "
        "taint or Node DELETE",
        "ends when a read of those Events succeeds (retried every 10 s)",
    ),
    Blocked.REMOVAL_UNRECORDED: _Info(
        _NODE,
        "the removal's intent (a NodeRecoverRemoving Event, which a later leader counts "
        "against the hourly removal budget) could not be written: no out-of-service taint "
        "or Node DELETE without it",
        "ends when the Event is written (retried with backoff)",
    ),
    Blocked.NOT_PROVEN_OFF: _Info(
        _NODE,
        "--removal auto was about to put the out-of-service taint on a node whose fresh read "
        "does not prove it off (no fence confirmed, no cloud shutdown taint): not written (a "
        "safety net behind the decision, which never asks for it)",
        "ends at the next decision, made on a new read (a proof, or a removal by Node DELETE only)",
    ),
    Blocked.EVIDENCE_STALE: _Info(
        _NODE,
        "a destructive write was asked for on a read older than the write path allows (a "
        "bug: slow work between the read that decides and the write): not written",
        "ends at the next attempt, decided on a new read (report it: it is a bug)",
    ),
    Blocked.FENCE_NO_TARGET: _Info(
        _NODE,
        "the fresh read of the node does not say what to fence (no spec.providerID for aws; no "
        "noderecover.io/fence-address annotation and no address template, or a label the "
        "template reads is missing): not fenced, the Node is kept, no out-of-service taint",
        "ends when the node carries what its provider needs (retried with backoff)",
    ),
    Blocked.FENCE_SECRET: _Info(
        _NODE,
        "the fence credentials cannot be had: the Secret the policy (or --fence-config) names "
        "is missing, unreadable or lacks a key, or a key clashes with the spec: not fenced, "
        "the Node is kept, no out-of-service taint",
        "ends when the Secret is readable and complete (retried with backoff)",
    ),
    Blocked.FENCE_UNREACHABLE: _Info(
        _NODE,
        "the fence device (BMC, cloud API, fence agent, --fence-command) did not answer within "
        "its timeout or could not be reached: the node is not proven off, the Node is kept, "
        "no out-of-service taint",
        "ends when a fence succeeds (retried with backoff)",
    ),
    Blocked.FENCE_REFUSED: _Info(
        _NODE,
        "the fence device refused (wrong credentials, no such machine, a non-zero exit of the "
        "agent or the command): the node is not proven off, the Node is kept, no "
        "out-of-service taint",
        "ends when a fence succeeds (fix the credentials or the address; retried with backoff)",
    ),
    Blocked.FENCE_NOT_OFF: _Info(
        _NODE,
        "the power-off was accepted but the power state never read back Off within the "
        "fence timeout: the node is not proven off, the Node is kept, no out-of-service taint",
        "ends when a fence is confirmed Off (retried with backoff)",
    ),
}

# The controller-wide gates: a step they stop is looked at again soon.
GATES = frozenset(b for b in Blocked if b.gate)


def blocked(reason: str) -> Blocked | None:
    """The registered reason with this value, or None."""
    try:
        return Blocked(reason)
    except ValueError:
        return None


def metric_label(reason: str) -> str:
    """The noderecover_blocked_total{reason} value of a reason (itself if unregistered)."""
    b = blocked(reason)
    return b.label if b is not None else reason


def event_text(reason: str) -> str:
    """What holds and what ends it (a generic sentence for an unregistered reason)."""
    b = blocked(reason)
    return b.event if b is not None else "will proceed when it clears"
