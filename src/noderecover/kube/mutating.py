"""The one door to the API server's mutating verbs (POST, PUT, PATCH, DELETE).

`KubeClient.request` is the transport; this module is the only place in the runtime package
that hands it a mutating method. Who may import it is a contract (`lint-imports`, see
pyproject.toml): the controller's write path (`controller.writes`, which asks every gate right
before each write), the leader elector (its own Lease: the leadership itself), and the
operator's kubectl plugin (an operator's tool, not the controller). A test
(tests/test_write_path_lint.py) checks that no other module passes a mutating method to
`request`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from noderecover.kube.client import JSON

Mutating = Literal["POST", "PUT", "PATCH", "DELETE"]


class Transport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] | None = None,
        body: JSON | list[JSON] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON: ...


async def send(
    kube: Transport,
    method: Mutating,
    path: str,
    *,
    body: JSON | list[JSON] | None = None,
    content_type: str = "application/json",
    query: Sequence[tuple[str, str]] | None = None,
    timeout: float | None = None,
) -> JSON:
    """One mutating call (bounded by the client's timeouts and write deadline)."""
    return await kube.request(
        method, path, query=query, body=body, content_type=content_type, timeout=timeout
    )
