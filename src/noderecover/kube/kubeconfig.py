"""Where the API server and the credentials come from: in-cluster, or a kubeconfig file.

Order: an explicit kubeconfig path; else, in a pod (KUBERNETES_SERVICE_HOST set), the
ServiceAccount; else the first file of $KUBECONFIG; else ~/.kube/config. A file that cannot be
read or parsed raises KubeconfigError, whose message (one line, naming the file) the entry
points report against their flag.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client import ApiClient, Configuration


class KubeconfigError(Exception):
    """The kubeconfig cannot be read or parsed (one line, naming the file)."""


def in_cluster() -> bool:
    """Running in a pod: the API server's Service is in the environment."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


async def load_api_client(kubeconfig: str | None, context: str | None) -> ApiClient:
    """An ApiClient from `kubeconfig`, in-cluster config, $KUBECONFIG or ~/.kube/config.

    Raises KubeconfigError when the kubeconfig cannot be read or parsed.
    """
    conf = Configuration()
    if kubeconfig is None and in_cluster():
        kconfig.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
        return ApiClient(conf)
    path = (
        kubeconfig
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or str(Path.home() / ".kube" / "config")
    )
    if not os.access(path, os.R_OK):
        raise KubeconfigError(f"cannot read {path}")
    try:
        await kconfig.load_kube_config(
            config_file=path, context=context, client_configuration=conf, persist_config=False
        )
    except Exception as exc:  # the loader raises many types for bad files
        raise KubeconfigError(f"{path}: {str(exc).splitlines()[0][:200]}") from None
    return ApiClient(conf)
