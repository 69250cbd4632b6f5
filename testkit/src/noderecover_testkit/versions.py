"""Pinned versions of the test control plane: the single source of truth.

Changing a pin changes :func:`pin_key`, so the next build goes into a new cache folder and
the old binaries are never mixed with the new ones.
"""

from __future__ import annotations

import re

#: ``k8s.io/kubernetes`` module version (kube-apiserver, kube-controller-manager,
#: kube-scheduler, kubectl).
K8S_VERSION = "v1.34.4"
#: ``go.etcd.io/etcd/server/v3`` module version.
ETCD_VERSION = "v3.6.16"
#: ``sigs.k8s.io/kwok`` module version.
KWOK_VERSION = "v0.8.0"

#: Binaries built from ``k8s.io/kubernetes/cmd/<name>``.
K8S_COMMANDS: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
)
#: Every binary the cache folder holds when it is complete.
ALL_BINARIES: tuple[str, ...] = ("etcd", *K8S_COMMANDS, "kwok")

_SEMVER = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


def _split(version: str) -> tuple[int, int, int]:
    m = _SEMVER.match(version)
    if m is None:
        raise ValueError(f"not a plain vMAJOR.MINOR.PATCH version: {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def k8s_major_minor() -> tuple[str, str]:
    """``("1", "34")`` for ``v1.34.4``: the gitMajor/gitMinor ldflags."""
    major, minor, _ = _split(K8S_VERSION)
    return str(major), str(minor)


def staging_version() -> str:
    """Version of the published staging modules (``k8s.io/api`` etc.): ``v0.34.4``."""
    _, minor, patch = _split(K8S_VERSION)
    return f"v0.{minor}.{patch}"


def pins() -> dict[str, str]:
    """All pins as a dict (written into the cache stamp file)."""
    return {"kubernetes": K8S_VERSION, "etcd": ETCD_VERSION, "kwok": KWOK_VERSION}


def pin_key() -> str:
    """Folder name for the binaries of this set of pins."""
    return f"k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"
