"""The chart's values.schema.json, made from noderecover's own flag table.

    python -m noderecover_testkit.chartschema > charts/noderecover/values.schema.json

Helm checks values against it at `helm install`, `upgrade`, `template` and `lint`: a misspelt key
(`flags.grase`) or a bad duration (`flags.grace: 5x`) fails there, not as a CrashLoop on
`unrecognized arguments`. The flags' part comes from `noderecover.entry.config.opts()` (one
entry per flag, with its kind) and the duration pattern is `noderecover.core.durations.PATTERN`,
so the chart and noderecover share one rule; tests/test_chart_schema.py checks that the file is
what this module makes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from noderecover.core.durations import PATTERN
from noderecover.entry.agentconfig import agent_opts
from noderecover.entry.config import Kind, opts

JSONSchema = dict[str, Any]

# A flag's value may be left out: null or "" (the chart renders nothing, noderecover's default
# applies).
_UNSET: list[JSONSchema] = [{"type": "null"}, {"const": ""}]
_DURATION: JSONSchema = {"type": "string", "pattern": PATTERN}
_WHOLE_SECONDS: JSONSchema = {"type": "integer", "minimum": 0}


def flag_schema(kind: Kind, choices: tuple[str, ...] = ()) -> JSONSchema:
    """The values a flag of this kind may take in `flags:`."""
    match kind:
        case Kind.DURATION:
            # `grace: 30` renders --grace=30: whole seconds, as the grammar takes them.
            return {"anyOf": [_DURATION, _WHOLE_SECONDS, *_UNSET]}
        case Kind.COUNT:
            return {
                "anyOf": [
                    {"type": "integer", "minimum": 1},
                    {"type": "string", "pattern": "^[0-9]+$"},
                    *_UNSET,
                ]
            }
        case Kind.THRESHOLD:
            return {
                "anyOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "pattern": r"^([0-9]+|[0-9]+(\.[0-9]+)?%)$"},
                    *_UNSET,
                ]
            }
        case Kind.BOOLEAN:
            return {"anyOf": [{"type": "boolean"}, {"type": "null"}]}
        case Kind.CHOICE:
            return {"anyOf": [{"enum": list(choices)}, *_UNSET]}
        case Kind.TEXT:
            return {"type": ["string", "null"]}


def _obj(properties: dict[str, JSONSchema], **extra: Any) -> JSONSchema:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


_ANY_OBJECT: JSONSchema = {"type": "object"}
_STRING_MAP: JSONSchema = {"type": "object", "additionalProperties": {"type": "string"}}
_LIST_OF_OBJECTS: JSONSchema = {"type": "array", "items": {"type": "object"}}
_NULLABLE_LIST: JSONSchema = {"type": ["array", "null"], "items": {"type": "object"}}
_K8S_NAME: JSONSchema = {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"}


# The policy CRD as the chart ships it: `fencing.config` takes exactly what a policy's
# spec.fence takes (one schema for both).
POLICY_CRD = (
    Path(__file__).resolve().parents[3]
    / "charts"
    / "noderecover"
    / "files"
    / "crds"
    / "crd-noderecoverypolicy.yaml"
)


def _closed(s: JSONSchema) -> JSONSchema:
    """`s` with every object of named properties closed (a misspelt key is refused)."""
    out = {k: v for k, v in s.items() if k != "description"}
    if "properties" in out:
        out["properties"] = {k: _closed(v) for k, v in out["properties"].items()}
        out["additionalProperties"] = False
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _closed(out["additionalProperties"])
    return out


def fence_schema() -> JSONSchema:
    """The CRD's spec.fence schema (served version), closed, as `fencing.config` takes it."""
    crd = yaml.safe_load(POLICY_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("served"))
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return _closed(spec["properties"]["fence"])


def schema() -> JSONSchema:
    flags = {opt.flag.removeprefix("--"): flag_schema(opt.kind, opt.choices) for opt in opts()}
    # `noderecover agent`'s flags; --node-name comes from the pod (spec.nodeName).
    agent_flags = {
        opt.flag.removeprefix("--"): flag_schema(opt.kind, opt.choices)
        for opt in agent_opts()
        if opt.flag != "--node-name"
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "noderecover chart values",
        "description": "Made by `python -m noderecover_testkit.chartschema`: do not edit.",
        **_obj(
            {
                # Helm passes `global` to every chart of an umbrella chart.
                "global": _ANY_OBJECT,
                "nameOverride": {**_K8S_NAME, "maxLength": 52},
                "fullnameOverride": {**_K8S_NAME, "maxLength": 52},
                "image": _obj(
                    {
                        "repository": {"type": "string", "minLength": 1},
                        "tag": {"type": "string"},
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    }
                ),
                "imagePullSecrets": _LIST_OF_OBJECTS,
                "replicaCount": {"type": "integer", "minimum": 1},
                "revisionHistoryLimit": {"type": "integer", "minimum": 0},
                "flags": _obj(flags),
                "extraArgs": {"type": "array", "items": {"type": "string"}},
                "extraEnv": _LIST_OF_OBJECTS,
                "extraVolumes": _LIST_OF_OBJECTS,
                "extraVolumeMounts": _LIST_OF_OBJECTS,
                "initContainers": _LIST_OF_OBJECTS,
                "serviceAccount": _obj(
                    {
                        "create": {"type": "boolean"},
                        "name": _K8S_NAME,
                        "annotations": _STRING_MAP,
                    }
                ),
                "rbac": _obj({"create": {"type": "boolean"}}),
                # The Secrets the fence credentials may be read from (GET by name).
                "fencing": _obj(
                    {
                        "secretNames": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                "maxLength": 253,
                            },
                        },
                        "config": fence_schema(),
                    }
                ),
                "priorityClassName": {"type": "string"},
                "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                "podAnnotations": _STRING_MAP,
                "podLabels": _STRING_MAP,
                "podSecurityContext": _ANY_OBJECT,
                "securityContext": _ANY_OBJECT,
                "resources": _ANY_OBJECT,
                "nodeSelector": _STRING_MAP,
                "tolerations": _LIST_OF_OBJECTS,
                "affinity": {"type": ["object", "null"]},
                "topologySpreadConstraints": _NULLABLE_LIST,
                "podDisruptionBudget": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "minAvailable": {"type": ["integer", "string"]},
                    }
                ),
                "service": _obj({"enabled": {"type": "boolean"}}),
                "serviceMonitor": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "interval": {"type": "string"},
                        "labels": _STRING_MAP,
                    }
                ),
                "prometheusRule": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "labels": _STRING_MAP,
                        "runbookBaseURL": {"type": "string", "pattern": "^https?://"},
                    }
                ),
                "agent": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "flags": _obj(agent_flags),
                        "hostWatchdogDevice": {"type": "string", "pattern": "^/"},
                        "priorityClassName": {"type": "string"},
                        "tolerations": _LIST_OF_OBJECTS,
                        "nodeSelector": _STRING_MAP,
                        "resources": _ANY_OBJECT,
                    }
                ),
                "crds": _obj({"install": {"type": "boolean"}}),
            }
        ),
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
