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

#: ``helm.sh/helm/v3`` module version: ``helm`` for the chart tests (lint, template).
HELM_VERSION = "v3.22.0"
#: ``github.com/prometheus/prometheus`` module version: ``promtool`` for the alert rule and
#: dashboard tests. Module ``v0.3MM.P`` is Prometheus ``3.MM.P``.
PROMETHEUS_VERSION = "v0.316.0"
#: Go build tags of promtool: ``remove_all_sd`` drops the service-discovery plugins (cloud
#: SDKs: most of the build) that rule checks and rule unit tests never use.
PROMTOOL_TAGS: tuple[str, ...] = ("remove_all_sd", "netgo")

#: ``github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring`` module version:
#: the Prometheus Operator's API types, from which the ServiceMonitor and PrometheusRule CRDs
#: are generated for the chart's server-side dry-run (its root module is not on the proxy).
PROMETHEUS_OPERATOR_VERSION = "v0.95.2"
#: ``sigs.k8s.io/controller-tools`` module version: ``controller-gen``, which generates them.
CONTROLLER_TOOLS_VERSION = "v0.23.0"
#: The CRDs generated (plural names in ``monitoring.coreos.com``).
MONITORING_CRDS: tuple[str, ...] = ("servicemonitors", "prometheusrules")

#: Binaries built from ``k8s.io/kubernetes/cmd/<name>``.
K8S_COMMANDS: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
)
#: Every binary the cache folder holds when it is complete.
ALL_BINARIES: tuple[str, ...] = ("etcd", *K8S_COMMANDS, "kwok")

#: The chart and monitoring tools, in their own cache folder (:func:`tools_pin_key`): a new
#: helm or promtool pin never invalidates the control plane, nor the other way round.
TOOL_BINARIES: tuple[str, ...] = ("helm", "promtool")

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


def prometheus_release() -> str:
    """Prometheus release of the pinned module: ``v0.316.0`` -> ``3.16.0``."""
    major, minor, patch = _split(PROMETHEUS_VERSION)
    if major != 0 or minor < 300:
        raise ValueError(f"not a Prometheus 3.x module version: {PROMETHEUS_VERSION!r}")
    return f"{minor // 100}.{minor % 100}.{patch}"


def tool_pins() -> dict[str, str]:
    """The pins of the tools folder (written into its stamp file)."""
    return {
        "helm": HELM_VERSION,
        "prometheus": PROMETHEUS_VERSION,
        "promtool_tags": ",".join(PROMTOOL_TAGS),
        "prometheus_operator": PROMETHEUS_OPERATOR_VERSION,
        "controller_tools": CONTROLLER_TOOLS_VERSION,
    }


def tool_pin_key() -> str:
    """Folder name for the helm and promtool binaries of these pins."""
    return (
        f"tools_helm-{HELM_VERSION}_prometheus-{PROMETHEUS_VERSION}"
        f"_promop-{PROMETHEUS_OPERATOR_VERSION}"
    )


#: ``github.com/rhysd/actionlint`` module version: ``actionlint`` for the release workflow
#: (``.github/workflows/release.yml``). Its own cache folder (:func:`actionlint_pin_key`).
ACTIONLINT_VERSION = "v1.7.12"


def actionlint_pin_key() -> str:
    """Folder name for the actionlint binary of this pin."""
    return f"actionlint-{ACTIONLINT_VERSION}"


# ---------------------------------------------------------------------------- the image's base
# The test command builds the project's Dockerfile with buildah on a base made from Debian
# packages (registry base images cannot be pulled here): see image.py. The Debian snapshot
# service is not reachable from these machines, so the base is pinned by suite, sources and
# package list (the cache key); the package versions it got are recorded in its stamp.

#: Debian release of the base rootfs (its python3 is 3.11: the project needs >= 3.11).
DEBIAN_SUITE = "bookworm"
#: The apt sources of the base (the suite, its updates and its security updates).
DEBIAN_SOURCES: tuple[str, ...] = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
#: mmdebstrap variant: the Essential packages and apt (so a Dockerfile line can apt-get).
DEBIAN_VARIANT = "apt"
#: Packages on top of the variant: the interpreter and its venv module (pip for the build).
BASE_PACKAGES: tuple[str, ...] = ("python3", "python3-venv")
#: Debian packages of the host that build the image (installed with apt-get when missing).
IMAGE_HOST_PACKAGES: tuple[str, ...] = ("mmdebstrap", "buildah")


def base_pins() -> dict[str, str]:
    """The inputs of the base rootfs (its cache key)."""
    return {
        "suite": DEBIAN_SUITE,
        "sources": "|".join(DEBIAN_SOURCES),
        "variant": DEBIAN_VARIANT,
        "packages": ",".join(BASE_PACKAGES),
        "merged_usr": "hook",
        "excluded": "doc,man,locale,info",
    }
