"""A real Kubernetes control plane (built from the Go module proxy) for end-to-end tests.

``python -m noderecover.testcluster build`` builds the pinned binaries into the cache;
``python -m noderecover.testcluster up`` runs a cluster until Ctrl-C. Import
:class:`~noderecover.testcluster.cluster.TestCluster` from ``.cluster`` (it needs the
``cryptography`` package; ``build`` needs only the standard library).
"""

from .versions import ETCD_VERSION, K8S_VERSION, KWOK_VERSION

__all__ = ["ETCD_VERSION", "K8S_VERSION", "KWOK_VERSION"]
