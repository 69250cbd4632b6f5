"""Where the API server and the credentials come from: in-cluster, or a kubeconfig file.

Order: an explicit kubeconfig path; else, in a pod (KUBERNETES_SERVICE_HOST set), the
ServiceAccount; else the first file of $KUBECONFIG; else ~/.kube/config.

A configuration that can never work raises KubeconfigError with one line naming where it
came from: a file that cannot be read or parsed, a file it names that is missing, an exec
credential plugin that is missing, a server that is not an http(s) URL. A well-formed but
unreachable server is not checked here: that is retried with backoff.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from noderecover.kube.lean import ApiClient, Configuration
from noderecover.kube.lean import config as kconfig

IN_CLUSTER = "in-cluster config (KUBERNETES_SERVICE_HOST/_PORT)"


class KubeconfigError(Exception):
    """The configuration cannot work (one line, naming where it came from)."""


def in_cluster() -> bool:
    """Running in a pod: the API server's Service is in the environment."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


async def load_api_client(
    kubeconfig: str | None, context: str | None, where: str = "--kubeconfig"
) -> ApiClient:
    """An ApiClient from `kubeconfig`, in-cluster config, $KUBECONFIG or ~/.kube/config.

    `where`: how errors name the kubeconfig (the flag or variable it came from).
    """
    conf = Configuration()
    if kubeconfig is None and in_cluster():
        try:
            kconfig.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
        except Exception as exc:  # ConfigException: token/CA file missing, host/port empty
            raise KubeconfigError(f"{IN_CLUSTER}: {first_line(exc)}") from None
        check_server(conf.host, IN_CLUSTER)
        return ApiClient(conf)
    path = (
        kubeconfig
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or str(Path.home() / ".kube" / "config")
    )
    if not os.access(path, os.R_OK):
        raise KubeconfigError(f"{where}: cannot read {path}")
    # The loader logs its own error line before raising (an exec plugin that is missing, say):
    # the one line about it is ours.
    loader_log = logging.getLogger("kubernetes_asyncio.config.kube_config")
    was_disabled, loader_log.disabled = loader_log.disabled, True
    try:
        await kconfig.load_kube_config(
            config_file=path, context=context, client_configuration=conf, persist_config=False
        )
    except FileNotFoundError as exc:
        if exc.filename:  # a file the kubeconfig names (certificate-authority, ...)
            why = f"{exc.strerror}: {exc.filename}"
        else:  # starting the exec credential plugin: the error names no file
            why = f"exec credential plugin not found ({exc.strerror or exc})"
        raise KubeconfigError(f"{where}: {path}: {why}") from None
    except Exception as exc:  # the loader raises many types for bad files
        raise KubeconfigError(f"{where}: {path}: {first_line(exc)}") from None
    finally:
        loader_log.disabled = was_disabled
    check_server(conf.host, f"{where}: {path}")
    return ApiClient(conf)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def check_server(host: str | None, where: str) -> None:
    """KubeconfigError unless the API server address is an absolute http(s) URL with a host."""
    host = host or ""
    ok = host.isascii() and host.isprintable() and not any(c.isspace() for c in host)
    try:
        url = urlsplit(host)
        ok = ok and url.scheme in {"http", "https"} and bool(url.hostname)
        _ = url.port  # ValueError when not a number in 0-65535
    except ValueError:
        ok = False
    if not ok:
        raise KubeconfigError(f"{where}: cluster server {host[:100]!r} is not an http(s) URL")
