"""Synthetic, realistic Node JSON for the in-process benchmarks (~7 KB per node).

Node ``i`` is :func:`noderecover_testkit.fixtures.make_node` under an EC2-style name with the
IP that name spells; the same bytes on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from noderecover_testkit.fixtures import T0
from noderecover_testkit.fixtures import make_node as make_named_node

JSON = dict[str, Any]

WORKER = {"node-role.kubernetes.io/worker": ""}


def make_node(
    i: int,
    *,
    ready: str = "True",
    rv: int = 1000,
    heartbeat: str = T0,
    labels: dict[str, str] | None = None,
) -> JSON:
    """Node number ``i`` with Ready=``ready``; ``rv`` its resourceVersion; ``labels`` beside
    the worker role's."""
    octets = f"{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
    name = f"ip-10-{octets.replace('.', '-')}.eu-west-1.compute.internal"
    return make_named_node(
        name,
        ready=ready,
        heartbeat=heartbeat,
        resource_version=rv,
        labels={**WORKER, **(labels or {})},
        ip=f"10.{octets}",
    )


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


class ListApi:
    """An in-memory API answering the Watcher's paginated LIST from prepared bodies (pages
    of `list_pages`)."""

    def __init__(self, pages: Sequence[bytes], page_size: int = 500) -> None:
        self.pages = pages
        self.page_size = page_size

    async def request(
        self, method: str, path: str, *, query: Sequence[tuple[str, str]] | None = None, **_: Any
    ) -> dict[str, Any]:
        cont = dict(query or ()).get("continue", "")
        index = int(cont.removeprefix("tok-")) // self.page_size if cont else 0
        parsed: dict[str, Any] = orjson.loads(self.pages[index])  # as KubeClient.request
        return parsed
