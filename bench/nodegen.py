"""Synthetic, realistic Node JSON for the in-process benchmarks (~7 KB per node).

The shape of what kube-apiserver returns for a kubelet-registered cloud node: labels,
annotations, managedFields (kubelet, kube-controller-manager), the five kubelet conditions,
capacity/allocatable, addresses, nodeInfo and a list of cached images. Deterministic: node
``i`` is the same bytes on every run.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson

JSON = dict[str, Any]

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

_CONDITIONS = [
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "KubeletReady", "kubelet is posting ready status"),
]

T0 = "2026-11-20T08:00:00Z"


def _managed_fields(when: str) -> list[JSON]:
    return [
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": when,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
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
            },
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": when,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:spec": {"f:podCIDR": {}, "f:podCIDRs": {".": {}, 'v:"192.168.0.0/24"': {}}}
            },
        },
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": when,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
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
                        for t, _, _ in _CONDITIONS
                    },
                    "f:images": {},
                    "f:nodeInfo": {"f:bootID": {}, "f:machineID": {}, "f:systemUUID": {}},
                }
            },
            "subresource": "status",
        },
    ]


def make_node(i: int, *, ready: str = "True", rv: int = 1000, heartbeat: str = T0) -> JSON:
    """Node ``node-<i>`` with Ready=``ready``; ``rv`` its resourceVersion."""
    name = f"ip-10-{i >> 16 & 255}-{i >> 8 & 255}-{i & 255}.eu-west-1.compute.internal"
    n = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    conditions = []
    for ctype, ok_reason, ok_msg in _CONDITIONS:
        status, reason, msg = "False", ok_reason, ok_msg
        if ctype == "Ready":
            status = ready
            if ready == "Unknown":
                reason, msg = "NodeStatusUnknown", "Kubelet stopped posting node status."
            elif ready == "False":
                reason, msg = "KubeletNotReady", "container runtime network not ready"
        conditions.append(
            {
                "type": ctype,
                "status": status,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": T0,
                "reason": reason,
                "message": msg,
            }
        )
    spec: JSON = {
        "podCIDR": f"192.168.{n % 250}.0/24",
        "podCIDRs": [f"192.168.{n % 250}.0/24"],
        "providerID": f"aws:///eu-west-1a/i-0{n:015x}",
    }
    if ready != "True":
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
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "resourceVersion": str(rv),
            "creationTimestamp": T0,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/instance-type": "m6i.xlarge",
                "beta.kubernetes.io/os": "linux",
                "failure-domain.beta.kubernetes.io/region": "eu-west-1",
                "failure-domain.beta.kubernetes.io/zone": f"eu-west-1{'abc'[n % 3]}",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m6i.xlarge",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": f"eu-west-1{'abc'[n % 3]}",
                "node-role.kubernetes.io/worker": "",
            },
            "annotations": {
                "alpha.kubernetes.io/provided-node-ip": ip,
                "csi.volume.kubernetes.io/nodeid": orjson.dumps(
                    {"ebs.csi.aws.com": f"i-0{n:015x}"}
                ).decode(),
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "managedFields": _managed_fields(heartbeat),
        },
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
            "conditions": conditions,
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


def event_line(etype: str, node: JSON) -> bytes:
    """One line of a watch stream."""
    return orjson.dumps({"type": etype, "object": node})


def list_pages(nodes: list[bytes], page: int, rv: int = 5000) -> list[bytes]:
    """A NodeList body per page of ``page`` items (``nodes`` are serialised Nodes), with
    ``continue`` tokens like the API server's paginated LIST."""
    out = []
    for start in range(0, len(nodes), page):
        chunk = nodes[start : start + page]
        last = start + page >= len(nodes)
        meta = (
            b'{"resourceVersion":"%d"}' % rv
            if last
            else b'{"resourceVersion":"%d","continue":"tok-%d"}' % (rv, start + page)
        )
        out.append(
            b'{"kind":"NodeList","apiVersion":"v1","metadata":'
            + meta
            + b',"items":['
            + b",".join(chunk)
            + b"]}"
        )
    return out
