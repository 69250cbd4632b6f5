"""NodeRecoveryPolicy objects: parsed and validated into a Config, and which one governs a node.

Pure: functions of raw JSON (as the API server returned it), the flag Config and the clock.

A policy is the flag Config with the fields its spec sets replaced (`parse_policy`); a field
the spec leaves out keeps the flag's value. `parse_policy` is total: whatever the object
looks like it returns a Policy, with `error` set (one line) when it cannot be applied. An
invalid policy is never half-applied: its nodes are held (`policy-invalid`), nothing of its
spec is used.

Which policy governs a node (`govern`), when at least one policy exists:
- exactly one policy selects it: that one (if it is invalid, the node is held);
- two or more select it: none. The node is held (`policy-conflict`) and every one of those
  policies reports the conflict on its status. No precedence rule: two owners is an
  operator's mistake to fix, and guessing could apply the wrong durations or gates;
- none selects it: left alone (`no-policy`), like a node outside --node-selector.
With no policy at all the flags are the one policy for the nodes --node-selector selects.

Pauses expire by themselves: `spec.paused.until` is required (the schema refuses a pause
without it), and a pause whose time has passed is no pause; an `until` is another party's
wall time and is compared with the current wall clock. A `spec.paused` that cannot be read
makes the policy invalid: its nodes are held, never taken as not paused. The cluster-wide
pause (where it lives, its format, how long a read of it is believed) is core.pauses' rule;
while it is unknown every node is held (`pause-unknown`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from noderecover.core import durations
from noderecover.core.fencing import (
    FenceAction,
    FenceSpec,
    Provider,
    parse_fence_spec,
    spec_error,
)
from noderecover.core.nodes import format_time, parse_time
from noderecover.core.pauses import Pause
from noderecover.core.reasons import Blocked
from noderecover.core.selectors import (
    Requirement,
    Selector,
    SelectorIndex,
    key_error,
    value_error,
)
from noderecover.core.settings import REMOVAL_MODES, Config, Removal, Threshold

GROUP = "noderecover.io"
VERSION = "v1alpha1"
PLURAL = "noderecoverypolicies"
KIND = "NodeRecoveryPolicy"
POLICIES_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


# Blocked reasons (core.reasons; noderecover_blocked_total{reason}, Events, plan).
PAUSED = Blocked.PAUSED  # the node's policy is paused
CLUSTER_PAUSED = Blocked.CLUSTER_PAUSED  # the cluster-wide pause
PAUSE_UNKNOWN = Blocked.PAUSE_UNKNOWN  # a pause object could not be read: held until it is
POLICY_CONFLICT = Blocked.POLICY_CONFLICT  # selected by two or more policies
NO_POLICY = Blocked.NO_POLICY  # policies exist, none selects the node
POLICY_INVALID = Blocked.POLICY_INVALID  # the one policy selecting it cannot be applied
POLICIES_UNKNOWN = Blocked.POLICIES_UNKNOWN  # the policy list is not (or no longer) known
HOLD_REASONS: frozenset[str] = frozenset(
    {
        PAUSED,
        CLUSTER_PAUSED,
        PAUSE_UNKNOWN,
        POLICY_CONFLICT,
        NO_POLICY,
        POLICY_INVALID,
        POLICIES_UNKNOWN,
    }
)

CONDITION_STATUSES = ("True", "False", "Unknown")
MAX_DURATION = durations.MAX_SECONDS
MAX_CONDITIONS = 16
MAX_REMEDIATING_LISTED = 20  # status.remediating lists at most this many nodes

_PERCENT = re.compile(r"([0-9]{1,3})%")
_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


def parse_duration(text: object, field: str) -> float:
    """'90s', '5m', '1h30m' -> seconds (the grammar of core/durations.py, the flags' too);
    ValueError naming the field otherwise."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def label_selector(obj: object) -> Selector:
    """A metav1.LabelSelector (matchLabels, matchExpressions) -> Selector; ValueError."""
    if obj is None:
        return Selector()
    if not isinstance(obj, Mapping):
        raise ValueError("spec.nodeSelector: not an object")
    reqs: list[Requirement] = []
    labels = obj.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise ValueError("spec.nodeSelector.matchLabels: not an object")
    for k, v in sorted(labels.items()):
        if not isinstance(v, str) or (why := key_error(k) or value_error(v)) is not None:
            raise ValueError(f"spec.nodeSelector.matchLabels[{k!r}]: invalid ({why or 'type'})")
        reqs.append(Requirement(k, "=", frozenset({v})))
    exprs = obj.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise ValueError("spec.nodeSelector.matchExpressions: not a list")
    for i, e in enumerate(exprs):
        where = f"spec.nodeSelector.matchExpressions[{i}]"
        if not isinstance(e, Mapping):
            raise ValueError(f"{where}: not an object")
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if not isinstance(key, str) or (why := key_error(key)) is not None:
            raise ValueError(f"{where}.key: {key!r} is not a label key")
        if op not in _OPERATORS:
            raise ValueError(f"{where}.operator: {op!r} is not In, NotIn, Exists, DoesNotExist")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{where}.values: not a list of strings")
        if any(value_error(v) is not None for v in values):
            raise ValueError(f"{where}.values: not valid label values")
        if op in ("In", "NotIn") and not values:
            raise ValueError(f"{where}: {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"{where}: {op} takes no values")
        reqs.append(Requirement(key, _OPERATORS[op], frozenset(values)))
    return Selector(tuple(reqs))


def _int(spec: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    v = spec.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise ValueError(f"spec.{key}: {v!r} is not an integer in [{low}, {high}]")
    return v


def _threshold(v: object) -> Threshold:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000:
        return Threshold(float(v), False, round_up=True)
    if isinstance(v, str) and (m := _PERCENT.fullmatch(v)) and int(m.group(1)) <= 100:
        return Threshold(float(m.group(1)), True, round_up=True)
    raise ValueError(f"spec.maxUnhealthy: {v!r} is neither a count >= 0 nor a percent 0%-100%")


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    uid: str = ""
    generation: int = 0
    selector: Selector | None = None  # None: unreadable (it selects nothing)
    cfg: Config | None = None  # None: invalid (see `error`)
    pause: Pause | None = None
    error: str | None = None
    status: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def valid(self) -> bool:
        return self.cfg is not None and self.error is None


def _conditions(raw: object, base: Config) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CONDITIONS:
        raise ValueError(f"spec.unhealthyConditions: a list of 1 to {MAX_CONDITIONS} items")
    graces: list[tuple[str, str, float]] = []
    for i, c in enumerate(raw):
        where = f"spec.unhealthyConditions[{i}]"
        if not isinstance(c, Mapping):
            raise ValueError(f"{where}: not an object")
        ctype, status = c.get("type"), c.get("status")
        if not isinstance(ctype, str) or not re.fullmatch(
            r"[A-Za-z0-9][-A-Za-z0-9_.]{0,62}", ctype
        ):
            raise ValueError(f"{where}.type: {ctype!r} is not a condition type")
        if status not in CONDITION_STATUSES:
            raise ValueError(f"{where}.status: {status!r} is not True, False or Unknown")
        if (ctype, status) == ("Ready", "True"):
            raise ValueError(f"{where}: Ready=True is the healthy state, not an unhealthy one")
        if any((ctype, status) == (t, s) for t, s, _ in graces):
            raise ValueError(f"{where}: {ctype}={status} is listed twice")
        if status in ("True", "False") and any(
            t == ctype and {s, status} == {"True", "False"} for t, s, _ in graces
        ):
            raise ValueError(
                f"{where}: {ctype} listed both True and False makes every node unhealthy"
            )
        graces.append((ctype, status, parse_duration(c.get("duration"), f"{where}.duration")))
    return {
        "unhealthy_conditions": frozenset((t, s) for t, s, _ in graces),
        "condition_graces": tuple(graces),
        "grace": min(d for _, _, d in graces),
    }


def _overrides(spec: Mapping[str, Any], base: Config, selector: Selector) -> dict[str, Any]:
    out: dict[str, Any] = {"node_selector": selector}
    out.update(_conditions(spec.get("unhealthyConditions"), base))
    for key, dest in (
        ("healthyDelay", "healthy_delay"),
        ("drainTimeout", "drain_timeout"),
        ("stormCooldown", "storm_cooldown"),
    ):
        if spec.get(key) is not None:
            out[dest] = parse_duration(spec[key], f"spec.{key}")
    if (removal := spec.get("removal")) is not None:
        if removal not in REMOVAL_MODES:
            raise ValueError(f"spec.removal: {removal!r} is not one of {', '.join(REMOVAL_MODES)}")
        out["removal"] = Removal(removal)
    if (fencing := spec.get("fencing")) is not None:
        if not isinstance(fencing, bool):
            raise ValueError(f"spec.fencing: {fencing!r} is not true or false")
        if fencing and not base.fence_command:
            # A policy never names a command: whoever may write policies must not be able to
            # run programs in the controller. It can only use (or not) the flag's command.
            raise ValueError("spec.fencing: true needs noderecover's --fence-command")
        out["fence_command"] = base.fence_command if fencing else ()
        if not fencing:
            out["fence"] = FenceSpec()
    if (fence := spec.get("fence")) is not None:
        if spec.get("fencing") is False:
            raise ValueError("spec.fence: set while spec.fencing is false")
        parsed = parse_fence_spec(fence, "spec.fence", base.fence)
        if parsed.provider is Provider.COMMAND and not base.fence_command:
            # A policy never names a command: it can only use (or not) the flag's command.
            raise ValueError("spec.fence.provider: command needs noderecover's --fence-command")
        if parsed.provider is None and not base.fence_command:
            raise ValueError("spec.fence.provider: no provider here, and none by flag")
        if (why := spec_error(parsed)) is not None:
            raise ValueError(f"spec.fence: {why}")
        if parsed.provider is Provider.AWS and parsed.action is FenceAction.REBOOT:
            raise ValueError("spec.fence.action: aws stops the instance: use off")
        out["fence"] = parsed
    mu = spec.get("maxUnhealthy")
    out["max_unhealthy"] = (
        _threshold(mu) if mu is not None else dataclasses.replace(base.max_unhealthy, round_up=True)
    )
    if (mc := _int(spec, "maxConcurrent", 1, 1000)) is not None:
        out["max_concurrent"] = mc
    if (mr := _int(spec, "maxRemovalsPerHour", 0, 10_000)) is not None:
        out["max_removals_per_hour"] = mr
    return out


def _pause(raw: object) -> Pause | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError("spec.paused: not an object")
    until = parse_time(raw.get("until"))
    if until is None:
        raise ValueError(f"spec.paused.until: {raw.get('until')!r} is not an RFC 3339 time")
    reason = raw.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError("spec.paused.reason: not a string")
    return Pause(until, reason[:256])


def parse_policy(raw: Mapping[str, Any], base: Config) -> Policy:
    """A NodeRecoveryPolicy object -> Policy (never raises; `error` says what is wrong)."""
    meta = raw.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else ""
    uid = meta.get("uid") if isinstance(meta.get("uid"), str) else ""
    gen = meta.get("generation")
    generation = gen if isinstance(gen, int) and not isinstance(gen, bool) else 0
    status = raw.get("status")
    status = status if isinstance(status, Mapping) else {}
    policy = Policy(name=str(name), uid=str(uid), generation=generation, status=status)
    spec = raw.get("spec")
    if not isinstance(spec, Mapping):
        return dataclasses.replace(policy, error="spec: missing or not an object")
    try:
        selector = label_selector(spec.get("nodeSelector"))
    except ValueError as exc:
        return dataclasses.replace(policy, error=str(exc))
    policy = dataclasses.replace(policy, selector=selector)
    try:
        pause = _pause(spec.get("paused"))
        cfg = dataclasses.replace(base, **_overrides(spec, base, selector))
    except ValueError as exc:
        return dataclasses.replace(policy, error=str(exc))
    return dataclasses.replace(policy, cfg=cfg, pause=pause)


def needed_keys(policies: Iterable[Policy]) -> tuple[frozenset[str], frozenset[str]]:
    """Label keys and condition types the policies read (kept when parsing Nodes)."""
    labels: set[str] = set()
    conditions: set[str] = set()
    for p in policies:
        if p.selector is not None:
            labels |= p.selector.keys
        if p.cfg is not None:
            conditions |= {t for t, _ in p.cfg.unhealthy_conditions}
            labels |= p.cfg.fence.labels  # the fence address template's
    return frozenset(labels), frozenset(conditions)


@dataclass(frozen=True, slots=True)
class Governance:
    """Which policy governs a node: `policy` (None: none), or why it is held."""

    policy: str | None
    held: str | None = None
    why: str = ""
    matched: tuple[str, ...] = ()  # every policy whose selector selects the node


def govern(policies: Mapping[str, Policy], labels: Mapping[str, str]) -> Governance:
    """The overlap rule (see the module doc). `policies` must not be empty."""
    matched = tuple(
        sorted(
            n for n, p in policies.items() if p.selector is not None and p.selector.matches(labels)
        )
    )
    return _governance(policies, matched)


class PolicyIndex:
    """`govern` for many policies: the policies are filed by the label keys (and values)
    their selectors require (core.selectors.SelectorIndex), so a node is tried only against
    those it may match; same answer as `govern`, conflicts and invalid policies included."""

    def __init__(self, policies: Mapping[str, Policy]) -> None:
        self.policies = dict(policies)
        self._index = SelectorIndex(
            {n: p.selector for n, p in policies.items() if p.selector is not None}
        )

    def govern(self, labels: Mapping[str, str]) -> Governance:
        return _governance(self.policies, tuple(self._index.matching(labels)))

    def changed_since(self, old: PolicyIndex | None) -> set[str] | None:
        """The policies whose nodes may have changed since `old` (added, removed, another
        selector, valid or not); None: all of them (no `old`)."""
        if old is None:
            return None
        before, after = old.policies, self.policies
        return {
            n
            for n in before.keys() | after.keys()
            if n not in before
            or n not in after
            or before[n].selector != after[n].selector
            or before[n].valid != after[n].valid
            or before[n].error != after[n].error
        }

    def selecting(self, names: set[str]) -> SelectorIndex:
        """The index of the selectors of the policies `names` alone."""
        return SelectorIndex(
            {
                n: p.selector
                for n, p in self.policies.items()
                if n in names and p.selector is not None
            }
        )


def _governance(policies: Mapping[str, Policy], matched: tuple[str, ...]) -> Governance:
    """The overlap rule, given the policies whose selectors select the node (sorted)."""
    if not matched:
        return Governance(None, NO_POLICY, "no NodeRecoveryPolicy selects it: left alone")
    if len(matched) > 1:
        return Governance(
            None,
            POLICY_CONFLICT,
            f"selected by {len(matched)} policies ({', '.join(matched)}): refused",
            matched,
        )
    name = matched[0]
    if not policies[name].valid:
        return Governance(
            None, POLICY_INVALID, f"policy {name} is invalid: {policies[name].error}", matched
        )
    return Governance(name, None, f"policy {name}", matched)


def pause_hold(
    policy: Pause | None, cluster: Pause | None, now: float, *, cluster_known: bool = True
) -> str | None:
    """The pause reason holding a node of a policy with pause `policy`, or None. `now`: the
    current wall time (a pause's `until` is another party's wall time). `cluster_known`:
    False while the cluster-wide pause cannot be read: that holds like a pause."""
    if not cluster_known:
        return PAUSE_UNKNOWN
    if cluster is not None and cluster.active(now):
        return CLUSTER_PAUSED
    if policy is not None and policy.active(now):
        return PAUSED
    return None


# -- status -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolState:
    """What the controller counted for one policy in the last pass."""

    matched: int = 0
    unhealthy: int = 0
    breaker_open: bool = False
    remediating: tuple[tuple[str, str, str], ...] = ()  # (node, phase, blocked reason or "")
    conflicts: tuple[str, ...] = ()  # nodes also selected by another policy
    conflicting_policies: tuple[str, ...] = ()


def _condition(
    ctype: str, status: bool, reason: str, message: str, old: Mapping[str, Any], now: float
) -> dict[str, Any]:
    value = "True" if status else "False"
    previous = old.get(ctype)
    since = (
        previous.get("lastTransitionTime")
        if isinstance(previous, Mapping) and previous.get("status") == value
        else None
    )
    return {
        "type": ctype,
        "status": value,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": since if isinstance(since, str) else format_time(now),
    }


def policy_status(
    policy: Policy,
    state: PoolState,
    cluster: Pause | None,
    now: float,
    *,
    cluster_known: bool = True,
) -> dict[str, Any]:
    """The status subresource of a policy (a merge-patch body's `status`); `now`: the wall
    clock's."""
    old_conditions = policy.status.get("conditions")
    old: dict[str, Mapping[str, Any]] = {
        str(c.get("type")): c
        for c in (old_conditions if isinstance(old_conditions, list) else [])
        if isinstance(c, Mapping)
    }
    hold = pause_hold(policy.pause, cluster, now, cluster_known=cluster_known)
    blocked = sorted({b for _, _, b in state.remediating if b})
    if policy.error is not None:
        ready = _condition("Ready", False, "Invalid", policy.error, old, now)
    else:
        ready = _condition("Ready", True, "Applied", "the spec is applied", old, now)
    if hold == PAUSE_UNKNOWN:
        paused = _condition(
            "Paused",
            True,
            "PauseUnknown",
            "the cluster-wide pause cannot be read: held as paused until it can",
            old,
            now,
        )
    elif hold == CLUSTER_PAUSED and cluster is not None:
        paused = _condition(
            "Paused",
            True,
            "ClusterPaused",
            f"cluster-wide pause until {format_time(cluster.until)}: {cluster.reason}",
            old,
            now,
        )
    elif hold == PAUSED and policy.pause is not None:
        paused = _condition(
            "Paused",
            True,
            "Paused",
            f"until {format_time(policy.pause.until)}: {policy.pause.reason}",
            old,
            now,
        )
    else:
        paused = _condition("Paused", False, "NotPaused", "", old, now)
    problems = []
    if state.conflicts:
        problems.append(
            f"{len(state.conflicts)} node(s) also selected by "
            f"{', '.join(state.conflicting_policies)}: not remediated "
            f"({', '.join(state.conflicts[:5])})"
        )
    if state.breaker_open:
        problems.append("circuit breaker open: too many unhealthy nodes in this pool")
    if blocked:
        problems.append(f"remediation held: {', '.join(blocked)}")
    reason = (
        "Conflict"
        if state.conflicts
        else "BreakerOpen"
        if state.breaker_open
        else "Blocked"
        if blocked
        else "OK"
    )
    degraded = _condition("Degraded", bool(problems), reason, "; ".join(problems), old, now)
    remediating = sorted(state.remediating)[:MAX_REMEDIATING_LISTED]
    return {
        "observedGeneration": policy.generation,
        "nodesMatched": state.matched,
        "nodesUnhealthy": state.unhealthy,
        "nodesInRemediation": len(state.remediating),
        "breakerOpen": state.breaker_open,
        "paused": hold is not None,
        "remediating": [
            {"node": n, "phase": ph, **({"blocked": b} if b else {})} for n, ph, b in remediating
        ],
        "conditions": [ready, paused, degraded],
    }


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether writing `new` over `old` changes anything (transition times aside)."""

    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(s)
        conds = out.get("conditions")
        if isinstance(conds, list):
            out["conditions"] = [
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in conds
                if isinstance(c, Mapping)
            ]
        return out

    return strip(old) != strip(new)
