"""A real Kubernetes control plane (built from the Go module proxy) for end-to-end tests.

``python -m noderecover_testkit build`` builds the pinned binaries into the cache;
``python -m noderecover_testkit up`` runs a cluster until Ctrl-C. Import
:class:`~noderecover_testkit.cluster.TestCluster` from ``.cluster`` (it needs the
``cryptography`` package; ``build`` needs only the standard library).
"""

from .versions import ETCD_VERSION, K8S_VERSION, KWOK_VERSION

__all__ = ["ETCD_VERSION", "K8S_VERSION", "KWOK_VERSION"]
