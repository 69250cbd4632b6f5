"""Local processes for tests, benchmarks and the demo: ports, the argv of a noderecover
replica, starting a logged child, reading its /metrics. Everything listens on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def replica_argv(kubeconfig: Path, http_port: int, *flags: str) -> list[str]:
    """`noderecover run` with this interpreter: only ``kubeconfig``'s credentials, HTTP on
    127.0.0.1:``http_port``, JSON logs, then ``flags``."""
    return [
        sys.executable,
        "-m",
        "noderecover",
        "run",
        "--kubeconfig",
        str(kubeconfig),
        "--http-bind",
        f"127.0.0.1:{http_port}",
        "--log-format",
        "json",
        *flags,
    ]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, without KUBECONFIG: a child reaches only
    the cluster its flags name."""
    env = {**os.environ, **(extra or {})}
    env.pop("KUBECONFIG", None)
    return env


def start(
    argv: list[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, stdout and stderr to ``log``, no stdin;
    ``env`` is added to :func:`child_env`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            cwd=cwd,
            start_new_session=True,
        )


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples named ``name`` in Prometheus text ``text``: (labels, value) each."""
    return [
        (dict(s.labels), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    ]


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 when absent)."""
    return sum(
        v
        for have, v in metric_samples(text, name)
        if all(have.get(k) == want for k, want in labels.items())
    )
