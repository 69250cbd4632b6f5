"""Fencing, the pure part: which provider, with which settings, aimed at which machine.

No I/O here (the providers that talk to BMCs, cloud APIs and fence agents are
`noderecover.fencing`). This module:
- names the providers (`Provider`) and the actions (`FenceAction`);
- parses a fence spec (a NodeRecoveryPolicy's `spec.fence`, or the `--fence-config` file)
  into a `FenceSpec`, with one-line errors naming the field;
- says what is fenced (`target_for`): the machine's identity as read in the fresh evidence
  (the Node's uid with its providerID, or the BMC address from the node's annotation or a
  template over its name and labels) - never a name alone;
- builds a fence agent's options the way medik8s' fence-agents-remediation does
  (`agent_options`): shared parameters (`{{.NodeName}}` allowed), per-node parameters over
  them, Secret parameters last (a key both in the Secret and the spec is an error),
  `--action` off or reboot.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, assert_never

from noderecover import ANNOTATION_PREFIX
from noderecover.core.nodes import NodeObs

# Where a node's BMC address is read from first (a template is the fallback).
ANN_FENCE_ADDRESS = ANNOTATION_PREFIX + "fence-address"

AWS_PROVIDER_ID = re.compile(r"aws://(?:/[^/]*)?/(i-[^/]+)")
_TEMPLATE_PART = re.compile(r"\{(name|label:[^{}]+)\}")
_AGENT = re.compile(r"fence_[a-z0-9_]+")
_PARAM = re.compile(r"--[a-z0-9][-a-z0-9_]*")
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-[0-9]+")
NODE_NAME_PLACEHOLDER = "{{.NodeName}}"
AGENT_DIR = "/usr/sbin"  # fence agents are run from here only (medik8s' rule)


class Provider(StrEnum):
    """Who proves a node off. Matched exhaustively (`assert_never`) wherever it is used."""

    COMMAND = "command"  # --fence-command: the operator's program, exit 0 = off
    REDFISH = "redfish"  # ComputerSystem.Reset ForceOff, PowerState read back Off
    AWS = "aws"  # EC2 StopInstances Force, state read back `stopped`
    FENCE_AGENT = "fence-agent"  # a ClusterLabs fence agent, exit 0 = done


class FenceAction(StrEnum):
    OFF = "off"
    REBOOT = "reboot"


@dataclass(frozen=True, slots=True)
class FenceSpec:
    """How the nodes of a policy (or of the flags) are fenced. `provider` None: not fenced."""

    provider: Provider | None = None
    action: FenceAction = FenceAction.OFF
    secret_name: str = ""  # a Secret in noderecover's namespace ("" = none)
    address_template: str = ""  # "" = the node's noderecover.io/fence-address annotation only
    system: str = ""  # redfish: the ComputerSystem path ("" = the BMC's only system)
    verify_tls: bool = True  # redfish
    region: str = ""  # aws ("" = from the providerID's zone)
    endpoint: str = ""  # aws: endpoint URL ("" = the region's; set for VPC endpoints, tests)
    agent: str = ""  # fence-agent: fence_ipmilan, fence_redfish, ...
    shared_parameters: tuple[tuple[str, str], ...] = ()
    node_parameters: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    labels: frozenset[str] = field(default=frozenset(), compare=False)  # keys the template reads

    @property
    def enabled(self) -> bool:
        return self.provider is not None


@dataclass(frozen=True, slots=True)
class Target:
    """What one fence is aimed at, as the fresh read of the Node showed it."""

    node: str
    uid: str
    address: str = ""  # the BMC address (redfish, fence-agent)
    instance: str = ""  # the EC2 instance id (aws)
    provider_id: str = ""

    def __str__(self) -> str:
        what = self.instance or self.address or "(no address)"
        return f"node {self.node} (uid {self.uid}) at {what}"


class NoTarget(ValueError):
    """The fresh read of the node does not say what to fence (no address, no providerID)."""


# -- parsing ------------------------------------------------------------------------------


def _str(raw: Mapping[str, Any], key: str, where: str, default: str) -> str:
    v = raw.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise ValueError(f"{where}.{key}: {v!r} is not a string")
    if any(c in v for c in "\r\n\0"):
        raise ValueError(f"{where}.{key}: control characters are not allowed")
    return v


def _params(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: not an object")
    out = []
    for k, v in sorted(raw.items()):
        if not isinstance(k, str) or not _PARAM.fullmatch(k):
            raise ValueError(f"{where}: {k!r} is not a parameter like --ip")
        if k == "--action" and v not in (FenceAction.OFF, FenceAction.REBOOT):
            raise ValueError(f"{where}[--action]: {v!r} is not off or reboot")
        if not isinstance(v, str) or any(c in v for c in "\r\n\0"):
            raise ValueError(f"{where}[{k}]: not a one-line string")
        out.append((k, v))
    return tuple(out)


def _node_params(raw: object, where: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: not an object")
    out = []
    for k, per_node in sorted(raw.items()):
        if not isinstance(k, str) or not _PARAM.fullmatch(k):
            raise ValueError(f"{where}: {k!r} is not a parameter like --ip")
        if not isinstance(per_node, Mapping):
            raise ValueError(f"{where}[{k}]: not an object of node name to value")
        values = []
        for node, v in sorted(per_node.items()):
            if not isinstance(node, str) or not isinstance(v, str) or any(c in v for c in "\r\n\0"):
                raise ValueError(f"{where}[{k}]: not node names to one-line strings")
            values.append((node, v))
        out.append((k, tuple(values)))
    return tuple(out)


def template_labels(template: str) -> frozenset[str]:
    """The label keys an address template reads."""
    return frozenset(m[len("label:") :] for m in _TEMPLATE_PART.findall(template) if m != "name")


def check_template(template: str, where: str) -> None:
    rest = _TEMPLATE_PART.sub("", template)
    if "{" in rest or "}" in rest:
        raise ValueError(f"{where}: {template!r}: only {{name}} and {{label:KEY}} may be used")


def parse_fence_spec(raw: object, where: str, base: FenceSpec) -> FenceSpec:
    """A fence spec object -> FenceSpec; a field it leaves out keeps `base`'s value (the flags').
    ValueError naming the field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: not an object")
    known = {
        "provider",
        "action",
        "secretName",
        "addressTemplate",
        "redfish",
        "aws",
        "agent",
        "sharedParameters",
        "nodeParameters",
    }
    if unknown := sorted(set(raw) - known):
        raise ValueError(f"{where}: unknown field {unknown[0]!r}")
    provider = base.provider
    if (p := raw.get("provider")) is not None:
        try:
            provider = Provider(p)
        except ValueError:
            names = ", ".join(x.value for x in Provider)
            raise ValueError(f"{where}.provider: {p!r} is not one of {names}") from None
    action = base.action
    if (a := raw.get("action")) is not None:
        try:
            action = FenceAction(a)
        except ValueError:
            raise ValueError(f"{where}.action: {a!r} is not off or reboot") from None
    secret = _str(raw, "secretName", where, base.secret_name)
    if secret and (len(secret) > 253 or not _SECRET_NAME.fullmatch(secret)):
        raise ValueError(f"{where}.secretName: {secret!r} is not a Secret name")
    template = _str(raw, "addressTemplate", where, base.address_template)
    check_template(template, f"{where}.addressTemplate")
    spec = dataclasses.replace(
        base,
        provider=provider,
        action=action,
        secret_name=secret,
        address_template=template,
        labels=template_labels(template),
    )
    return _provider_fields(raw, where, spec)


def _provider_fields(raw: Mapping[str, Any], where: str, spec: FenceSpec) -> FenceSpec:
    out: dict[str, Any] = {}
    if (rf := raw.get("redfish")) is not None:
        if not isinstance(rf, Mapping) or set(rf) - {"system", "verifyTLS"}:
            raise ValueError(f"{where}.redfish: an object with system, verifyTLS")
        system = _str(rf, "system", f"{where}.redfish", spec.system)
        if system and not system.startswith("/redfish/v1/Systems/"):
            raise ValueError(f"{where}.redfish.system: {system!r} is not /redfish/v1/Systems/...")
        out["system"] = system
        if (v := rf.get("verifyTLS")) is not None:
            if not isinstance(v, bool):
                raise ValueError(f"{where}.redfish.verifyTLS: {v!r} is not true or false")
            out["verify_tls"] = v
    if (aws := raw.get("aws")) is not None:
        if not isinstance(aws, Mapping) or set(aws) - {"region", "endpoint"}:
            raise ValueError(f"{where}.aws: an object with region, endpoint")
        region = _str(aws, "region", f"{where}.aws", spec.region)
        if region and not _REGION.fullmatch(region):
            raise ValueError(f"{where}.aws.region: {region!r} is not a region like us-east-1")
        endpoint = _str(aws, "endpoint", f"{where}.aws", spec.endpoint)
        if endpoint and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint):
            raise ValueError(f"{where}.aws.endpoint: {endpoint!r} is not an http(s) URL")
        out.update(region=region, endpoint=endpoint)
    if (agent := raw.get("agent")) is not None:
        if not isinstance(agent, str) or not _AGENT.fullmatch(agent):
            raise ValueError(
                f"{where}.agent: {agent!r} is not a fence agent name like fence_ipmilan"
            )
        out["agent"] = agent
    if "sharedParameters" in raw:
        out["shared_parameters"] = _params(raw["sharedParameters"], f"{where}.sharedParameters")
    if "nodeParameters" in raw:
        out["node_parameters"] = _node_params(raw["nodeParameters"], f"{where}.nodeParameters")
    return dataclasses.replace(spec, **out) if out else spec


def spec_error(spec: FenceSpec) -> str | None:
    """What a spec lacks for its provider (None: complete). The caller names the field."""
    match spec.provider:
        case None | Provider.COMMAND | Provider.AWS:
            return None
        case Provider.REDFISH:
            if not spec.secret_name:
                return "redfish needs secretName (a Secret with username and password)"
            return None
        case Provider.FENCE_AGENT:
            if not spec.agent:
                return "fence-agent needs agent (e.g. fence_ipmilan)"
            return None
        case _:  # pragma: no cover
            assert_never(spec.provider)


# -- what is fenced -----------------------------------------------------------------------


def render_address(template: str, name: str, labels: Mapping[str, str]) -> str:
    """`{name}` and `{label:KEY}` replaced; NoTarget when a label is missing or empty."""

    def one(m: re.Match[str]) -> str:
        part = m.group(1)
        if part == "name":
            return name
        key = part[len("label:") :]
        value = labels.get(key, "")
        if not value:
            raise NoTarget(f"the node has no label {key!r} for the fence address template")
        return value

    return _TEMPLATE_PART.sub(one, template)


def aws_instance_id(provider_id: str) -> str:
    """`aws:///<zone>/<id>` (or `aws:////<id>`) -> the instance id; NoTarget otherwise."""
    m = AWS_PROVIDER_ID.fullmatch(provider_id)
    if m is None:
        raise NoTarget(f"spec.providerID {provider_id!r} is not aws:///<zone>/i-...")
    return m.group(1)


def aws_region(provider_id: str) -> str:
    """The region of an `aws:///<zone>/<id>` providerID ("" when it names no zone)."""
    m = re.fullmatch(r"aws:///([a-z]{2}(?:-[a-z0-9]+)+-[0-9]+)[a-z]?/i-[^/]+", provider_id)
    return m.group(1) if m else ""


def target_for(spec: FenceSpec, fresh: NodeObs) -> Target:
    """What to fence for the node as `fresh` (the evidence read) shows it. NoTarget when that
    read does not say (a fence is never aimed by the node's name alone)."""
    base = Target(fresh.name, fresh.uid, provider_id=fresh.provider_id)
    match spec.provider:
        case None | Provider.COMMAND:
            return base
        case Provider.AWS:
            if not fresh.provider_id:
                raise NoTarget("the node has no spec.providerID")
            return Target(
                fresh.name,
                fresh.uid,
                instance=aws_instance_id(fresh.provider_id),
                provider_id=fresh.provider_id,
            )
        case Provider.REDFISH | Provider.FENCE_AGENT:
            address = fresh.annotations.get(ANN_FENCE_ADDRESS, "")
            if not address and spec.address_template:
                address = render_address(spec.address_template, fresh.name, fresh.labels)
            if not address and spec.provider is Provider.REDFISH:
                raise NoTarget(
                    f"no BMC address: neither the annotation {ANN_FENCE_ADDRESS} nor an "
                    "addressTemplate"
                )
            if any(c.isspace() or c in "\0" for c in address):
                raise NoTarget("the BMC address has whitespace or control characters")
            return Target(fresh.name, fresh.uid, address=address, provider_id=fresh.provider_id)
        case _:  # pragma: no cover
            assert_never(spec.provider)


# -- fence agents (medik8s' parameter model) ------------------------------------------------


def agent_options(
    spec: FenceSpec, target: Target, secret: Mapping[str, str], action: FenceAction
) -> dict[str, str]:
    """The agent's options, `--key` -> value ("" for a flag without value), in medik8s'
    order: shared (with {{.NodeName}}), then this node's, then the Secret's; the address, if
    any and not given, as --ip; --action last. ValueError on a key set twice across the
    spec and the Secret."""
    opts: dict[str, str] = {}
    for k, v in spec.shared_parameters:
        opts[k] = v.replace(NODE_NAME_PLACEHOLDER, target.node)
    for k, per_node in spec.node_parameters:
        for node, v in per_node:
            if node == target.node:
                opts[k] = v
    if target.address and "--ip" not in opts:
        opts["--ip"] = target.address
    for raw_key, v in sorted(secret.items()):
        k = raw_key if raw_key.startswith("--") else f"--{raw_key}"
        if not _PARAM.fullmatch(k) or any(c in v for c in "\r\n\0"):
            raise ValueError(f"the Secret's key {raw_key!r} is not a fence agent parameter")
        if k in opts:
            raise ValueError(f"parameter {k} is set both in the Secret and in the spec")
        opts[k] = v
    wanted = opts.pop("--action", action.value)
    opts["--action"] = wanted if wanted in (FenceAction.OFF, FenceAction.REBOOT) else action.value
    return opts


def agent_stdin(opts: Mapping[str, str]) -> str:
    """The options as a fence agent reads them on standard input (`name=value` lines; a flag
    as `name=1`): nothing of them on the command line, so nothing in `ps`."""
    lines = []
    for k, v in opts.items():
        lines.append(f"{k[2:]}={v if v != '' else '1'}")
    return "\n".join(lines) + "\n"
