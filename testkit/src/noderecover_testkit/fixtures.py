"""Kubernetes objects and timestamps as the API server writes them, for tests and benchmarks.

`make_node` is the one realistic Node (~7 KB): the shape kube-apiserver returns for a
kubelet-registered cloud node - labels, annotations, managedFields (kubelet,
kube-controller-manager), the four kubelet conditions, capacity/allocatable, addresses,
nodeInfo and a list of cached images. Deterministic: a name gives the same bytes every time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from noderecover.core.nodes import format_micro_time, format_time

JSON = dict[str, Any]

T0 = "2026-11-20T08:00:00Z"

_IMAGES = [
    ("registry.k8s.io/kube-proxy", "v1.34.1", 30_000_000),
    ("docker.io/calico/node", "v3.30.3", 150_000_000),
    ("docker.io/calico/cni", "v3.30.3", 95_000_000),
    ("registry.k8s.io/coredns/coredns", "v1.12.1", 22_000_000),
    ("registry.k8s.io/pause", "3.10.1", 320_000),
    ("quay.io/prometheus/node-exporter", "v1.9.1", 12_000_000),
    ("docker.io/library/mysql", "8.4.6", 230_000_000),
    ("docker.io/library/postgres", "17.6", 160_000_000),
    ("docker.io/library/nginx", "1.29.1", 72_000_000),
    ("registry.k8s.io/ingress-nginx/controller", "v1.13.2", 110_000_000),
    ("docker.io/fluent/fluent-bit", "4.0.7", 40_000_000),
    ("registry.k8s.io/sig-storage/csi-node-driver-registrar", "v2.14.0", 11_000_000),
    ("registry.k8s.io/sig-storage/livenessprobe", "v2.16.0", 10_000_000),
    ("docker.io/library/redis", "8.2.1", 50_000_000),
]

# condition type -> the kubelet's healthy reason and message
CONDITIONS = {
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    "Ready": ("KubeletReady", "kubelet is posting ready status"),
}


def rfc3339(t: dt.datetime | None = None) -> str:
    """metav1.Time of ``t`` (default now): second precision, 'Z'."""
    return format_time((t or dt.datetime.now(dt.UTC)).timestamp())


def micro_rfc3339(t: dt.datetime | None = None) -> str:
    """metav1.MicroTime of ``t`` (default now): exactly six fractional digits, 'Z'."""
    return format_micro_time((t or dt.datetime.now(dt.UTC)).timestamp())


def _managed(manager: str, when: str, fields: JSON, **extra: str) -> JSON:
    return {
        "manager": manager,
        "operation": "Update",
        "apiVersion": "v1",
        "time": when,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        **extra,
    }


def _managed_fields(when: str) -> list[JSON]:
    kubelet_meta: JSON = {
        "f:metadata": {
            "f:annotations": {
                ".": {},
                "f:node.alpha.kubernetes.io/ttl": {},
                "f:volumes.kubernetes.io/controller-managed-attach-detach": {},
            },
            "f:labels": {
                ".": {},
                "f:beta.kubernetes.io/arch": {},
                "f:beta.kubernetes.io/os": {},
                "f:kubernetes.io/arch": {},
                "f:kubernetes.io/hostname": {},
                "f:kubernetes.io/os": {},
            },
        },
        "f:spec": {"f:providerID": {}},
    }
    kcm_spec: JSON = {
        "f:spec": {"f:podCIDR": {}, "f:podCIDRs": {".": {}, 'v:"192.168.0.0/24"': {}}}
    }
    kubelet_status: JSON = {
        "f:status": {
            "f:allocatable": {"f:cpu": {}, "f:memory": {}},
            "f:capacity": {"f:cpu": {}, "f:memory": {}},
            "f:conditions": {
                f'k:{{"type":"{t}"}}': {
                    "f:lastHeartbeatTime": {},
                    "f:lastTransitionTime": {},
                    "f:message": {},
                    "f:reason": {},
                    "f:status": {},
                }
                for t in CONDITIONS
            },
            "f:images": {},
            "f:nodeInfo": {"f:bootID": {}, "f:machineID": {}, "f:systemUUID": {}},
        }
    }
    return [
        _managed("kubelet", when, kubelet_meta),
        _managed("kube-controller-manager", when, kcm_spec),
        _managed("kubelet", when, kubelet_status, subresource="status"),
    ]


def _conditions(ready: str, heartbeat: str) -> list[JSON]:
    out = []
    for ctype, (ok_reason, ok_msg) in CONDITIONS.items():
        status, reason, msg = "False", ok_reason, ok_msg
        if ctype == "Ready":
            status = ready
            if ready == "Unknown":
                reason, msg = "NodeStatusUnknown", "Kubelet stopped posting node status."
            elif ready == "False":
                reason, msg = "KubeletNotReady", "container runtime network not ready"
        out.append(
            {
                "type": ctype,
                "status": status,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": T0,
                "reason": reason,
                "message": msg,
            }
        )
    return out


def make_node(
    name: str,
    *,
    ready: str | None = "True",
    heartbeat: str = T0,
    resource_version: int | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    unschedulable: bool = False,
    ip: str | None = None,
) -> JSON:
    """The realistic Node ``name``.

    ``ready``: the Ready status of its conditions, with the lifecycle taints of a not-Ready
    node; None: no conditions and no taints (for a caller that writes them itself).
    ``ip``: its InternalIP (default: derived from the name).
    """
    n = int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)
    ip = ip or f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255 or 1}"
    zone = f"eu-west-1{'abc'[n % 3]}"
    instance = f"i-0{n:015x}"
    metadata: JSON = {
        "name": name,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "creationTimestamp": T0,
        "labels": {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/instance-type": "m6i.xlarge",
            "beta.kubernetes.io/os": "linux",
            "failure-domain.beta.kubernetes.io/region": "eu-west-1",
            "failure-domain.beta.kubernetes.io/zone": zone,
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "m6i.xlarge",
            "topology.kubernetes.io/region": "eu-west-1",
            "topology.kubernetes.io/zone": zone,
            **(labels or {}),
        },
        "annotations": {
            "alpha.kubernetes.io/provided-node-ip": ip,
            "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
            "csi.volume.kubernetes.io/nodeid": json.dumps(
                {"ebs.csi.aws.com": instance}, separators=(",", ":")
            ),
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            **(annotations or {}),
        },
        "managedFields": _managed_fields(heartbeat),
    }
    if resource_version is not None:
        metadata["resourceVersion"] = str(resource_version)
    spec: JSON = {
        "podCIDR": f"192.168.{n % 250}.0/24",
        "podCIDRs": [f"192.168.{n % 250}.0/24"],
        "providerID": f"aws:///{zone}/{instance}",
    }
    if unschedulable:
        spec["unschedulable"] = True
    if ready not in (None, "True"):
        key = (
            "node.kubernetes.io/unreachable"
            if ready == "Unknown"
            else "node.kubernetes.io/not-ready"
        )
        spec["taints"] = [
            {"key": key, "effect": "NoSchedule", "timeAdded": heartbeat},
            {"key": key, "effect": "NoExecute", "timeAdded": heartbeat},
        ]
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "capacity": {
                "cpu": "4",
                "ephemeral-storage": "104845292Ki",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": "16069060Ki",
                "pods": "110",
            },
            "allocatable": {
                "cpu": "3920m",
                "ephemeral-storage": "95551679124",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": "15048132Ki",
                "pods": "110",
            },
            "conditions": [] if ready is None else _conditions(ready, heartbeat),
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "InternalDNS", "address": name},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hashlib.md5(name.encode()).hexdigest(),
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
                "kernelVersion": "6.8.0-1036-aws",
                "osImage": "Ubuntu 24.04.3 LTS",
                "containerRuntimeVersion": "containerd://2.1.4",
                "kubeletVersion": "v1.34.1",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [
                {
                    "names": [
                        f"{img}@sha256:{hashlib.sha256(img.encode()).hexdigest()}",
                        f"{img}:{tag}",
                    ],
                    "sizeBytes": size,
                }
                for img, tag, size in _IMAGES
            ],
        },
    }
