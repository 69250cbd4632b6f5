"""Every Kubernetes API call noderecover makes, as (apiGroup, resource, verb, namespace): one
table, the source of `manifests/base/rbac.yaml`.

Kept honest by tests/test_rbac.py both ways: the manifests grant exactly this table; every
request noderecover makes to the fake API server in the unit suite maps (`permission_of`) to
an entry here, and every entry here is requested at least once in that suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OWN_NAMESPACE = "<own>"  # the namespace noderecover runs in (its leader Lease)
CLUSTER = ""  # cluster-scoped, or all namespaces: a ClusterRole


@dataclass(frozen=True, order=True, slots=True)
class Permission:
    group: str  # "" = core
    resource: str  # "pods/eviction" for a subresource
    verb: str  # get list watch create update patch delete
    namespace: str = CLUSTER


API_CALLS: Mapping[Permission, str] = {
    Permission("", "nodes", "list"): "watching: the initial LIST and every re-list; plan",
    Permission("", "nodes", "watch"): "watching: the node watch",
    Permission("", "nodes", "get"): "remediation: the fresh read before each destructive step",
    Permission("", "nodes", "patch"): "remediation: annotations, cordon, taint",
    Permission("", "nodes", "delete"): "remediation: removal (with uid/resourceVersion guard)",
    Permission("", "pods", "list"): "draining: the pods on the node (spec.nodeName)",
    Permission("", "pods", "delete"): "draining: force-delete after --drain-timeout",
    Permission("", "pods/eviction", "create"): "draining: the Eviction API",
    Permission("coordination.k8s.io", "leases", "get", OWN_NAMESPACE): "election",
    Permission("coordination.k8s.io", "leases", "create", OWN_NAMESPACE): "election",
    Permission("coordination.k8s.io", "leases", "update", OWN_NAMESPACE): "election",
    Permission("coordination.k8s.io", "leases", "list", OWN_NAMESPACE): (
        "controller: the node agents' Leases, LIST then every re-list (controller/agents.py)"
    ),
    Permission("coordination.k8s.io", "leases", "watch", OWN_NAMESPACE): (
        "controller: the node agents' Leases, a watch (their presence and timing)"
    ),
    Permission("coordination.k8s.io", "leases", "get", "kube-node-lease"): (
        "controller: the heartbeat Lease of a silent node (--watch-node-leases)"
    ),
    Permission("coordination.k8s.io", "leases", "list", "kube-node-lease"): (
        "controller: the heartbeat history, LIST then every re-list (--grace-from-heartbeat)"
    ),
    Permission("coordination.k8s.io", "leases", "watch", "kube-node-lease"): (
        "controller: the heartbeat history, a watch of every node's Lease (--grace-from-heartbeat)"
    ),
    Permission("noderecover.io", "noderecoverypolicies", "list"): (
        "policies: the initial LIST and every re-list; plan"
    ),
    Permission("noderecover.io", "noderecoverypolicies", "watch"): "policies: the policy watch",
    Permission("apiextensions.k8s.io", "customresourcedefinitions", "list"): (
        "policies: is the CRD installed, a LIST of that one CRD (granted by resourceNames)"
    ),
    Permission("apiextensions.k8s.io", "customresourcedefinitions", "watch"): (
        "policies: is the CRD installed, a watch of that one CRD (granted by resourceNames)"
    ),
    Permission("noderecover.io", "noderecoverypolicies/status", "patch"): (
        "policies: the leader writes each policy's status"
    ),
    Permission("", "configmaps", "get", OWN_NAMESPACE): (
        "plan: the cluster-wide pause (ConfigMap noderecover-pause), one read"
    ),
    Permission("", "configmaps", "list", OWN_NAMESPACE): (
        "policies: the cluster-wide pause, a LIST of that one ConfigMap (granted by resourceNames)"
    ),
    Permission("", "configmaps", "watch", OWN_NAMESPACE): (
        "policies: the cluster-wide pause, a watch of that one ConfigMap (granted by resourceNames)"
    ),
    Permission("", "secrets", "get", OWN_NAMESPACE): (
        "fencing: the fence credentials, the one Secret the configuration names (granted by "
        "resourceNames)"
    ),
    Permission("storage.k8s.io", "volumeattachments", "list"): (
        "removal: the node's volumes (wait for detach, warnings); plan"
    ),
    Permission("", "persistentvolumes", "get"): (
        "removal: the claim of a volume still attached to a removed node (its waiting pods)"
    ),
    Permission("", "events", "create"): (
        "events: a new Event (Nodes: in default; pods waiting for a volume: in theirs)"
    ),
    Permission("", "events", "patch"): "events: a repeated Event's count",
    Permission("", "events", "list", "default"): (
        "controller: a new leader reads earlier NodeRecoverRemoving and NodeRecoverRemoved Events "
        "(removal budget)"
    ),
}

# `noderecover agent` (the DaemonSet, its own ServiceAccount and User-Agent
# noderecover-agent/...): manifests/components/agent/rbac.yaml grants exactly this.
AGENT_API_CALLS: Mapping[Permission, str] = {
    Permission("coordination.k8s.io", "leases", "get", OWN_NAMESPACE): "agent: its own Lease",
    Permission("coordination.k8s.io", "leases", "create", OWN_NAMESPACE): (
        "agent: its own Lease, the first time"
    ),
    Permission("coordination.k8s.io", "leases", "update", OWN_NAMESPACE): (
        "agent: renewal of its own Lease (the self-check)"
    ),
    Permission("coordination.k8s.io", "leases", "list", OWN_NAMESPACE): (
        "agent: the other agents' addresses (their Leases' annotations)"
    ),
    Permission("", "nodes", "get"): (
        "agent: its own Node's fence mark, and a peer's Node when that peer asks"
    ),
}

_METHOD_VERB = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def permission_of(method: str, path: str, query: Mapping[str, str]) -> Permission | None:
    """The (group, resource, verb, namespace) an API request needs, like the API server's
    RequestInfo; None for a path that is not a resource request."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = CLUSTER
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    resource = rest[0] if len(rest) < 3 else f"{rest[0]}/{rest[2]}"
    item = len(rest) >= 2
    if method == "GET":
        watch = query.get("watch") in {"true", "1"}
        verb = "watch" if watch else ("get" if item else "list")
    elif method == "DELETE" and not item:
        verb = "deletecollection"
    elif method in _METHOD_VERB:
        verb = _METHOD_VERB[method]
    else:
        return None
    return Permission(group, resource, verb, namespace)


def declared(needed: Permission, table: Mapping[Permission, str] = API_CALLS) -> Permission | None:
    """The `table` entry that grants `needed`: same namespace first, then a cluster-wide
    grant, then the own-namespace one (whatever namespace it runs in); None if none does."""
    same = [
        p
        for p in table
        if (p.group, p.resource, p.verb) == (needed.group, needed.resource, needed.verb)
    ]
    for scope in (needed.namespace, CLUSTER, OWN_NAMESPACE):
        for p in same:
            if p.namespace == scope:
                return p
    return None
