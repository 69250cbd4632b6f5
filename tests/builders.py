"""Small builders of raw API objects for pure unit tests."""

from __future__ import annotations

from typing import Any

from noderecover.core.nodes import NodeObs, format_time, parse_node
from noderecover.entry.config import Config

T0 = 1_800_000_000.0


def node_json(
    name: str = "w1",
    *,
    ready: str = "True",
    reason: str = "",
    since: float = T0 - 3600,
    uid: str | None = None,
    rv: str = "1",
    unschedulable: bool = False,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str | None] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podCIDR": "10.244.1.0/24"}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": uid or f"uid-{name}",
            "resourceVersion": rv,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            "annotations": {k: v for k, v in (annotations or {}).items() if v is not None},
        },
        "spec": spec,
        "status": {
            "conditions": [
                {
                    "type": "MemoryPressure",
                    "status": "False",
                    "lastTransitionTime": format_time(since),
                },
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "lastTransitionTime": format_time(since),
                },
            ]
        },
    }


def obs(cfg: Config | None = None, **kw: Any) -> NodeObs:
    cfg = cfg or Config()
    return parse_node(
        node_json(**kw),
        cfg.relevant_labels,
        frozenset({"Ready"} | {t for t, _ in cfg.unhealthy_conditions}),
    )


def pod_json(
    name: str = "web-1",
    *,
    namespace: str = "default",
    node: str = "w1",
    uid: str | None = None,
    owner_kind: str | None = "ReplicaSet",
    deleting: bool = False,
    mirror: bool = False,
) -> dict[str, Any]:
    """A pod as a LIST on `spec.nodeName=node` returns it (the fields the drain reads, and some)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "resourceVersion": "7",
        "labels": {"app": name},
        "annotations": {"kubernetes.io/config.mirror": "abc"} if mirror else {},
    }
    if owner_kind is not None:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner_kind, "name": "owner", "uid": "o1"},
            {"apiVersion": "v1", "kind": owner_kind, "name": "o", "uid": "o2", "controller": True},
        ]
    if deleting:
        meta["deletionTimestamp"] = format_time(T0 - 10)
        meta["deletionGracePeriodSeconds"] = 30
    return {
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "nginx"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
        "status": {"phase": "Running"},
    }
