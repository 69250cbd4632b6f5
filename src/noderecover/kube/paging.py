"""One paginated LIST of a collection: pages of `page_size` items, chained by continue tokens.

Rules (for every caller: the node watcher, the drainer's pod LIST):
- Each page is checked before the caller sees it: `items` is a list (absent or null only
  where the caller says it reads as none), `metadata` an object, `metadata.continue` absent,
  null or a string. Anything else raises BadList: the answer is garbled, never "no items".
- A 410 Gone on a continue token (it expired mid-pagination) starts the LIST over from the
  first page; the caller is told (`first`) to drop what earlier pages gave. A 410 on a first
  page is the caller's to handle (it is raised, as a Gone).
- At most `max_pages` requests per LIST, restarts included: a LIST that pages further is
  garbled (a token loop) and raises BadList.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from noderecover.kube.client import ApiError, Gone, KubeClient

# 50,000 objects in pages of 500.
MAX_PAGES = 100


class BadList(ApiError):
    """A LIST answer that cannot be read as one (code 0, reason "BadList")."""

    def __init__(self, what: str, path: str) -> None:
        super().__init__(0, "BadList", what, verb="LIST", path=path)


async def list_pages(
    kube: KubeClient,
    path: str,
    on_page: Callable[[list[Any], bool], None],
    *,
    page_size: int,
    query: Sequence[tuple[str, str]] = (),
    null_items: bool = False,
    max_pages: int = MAX_PAGES,
) -> Mapping[str, Any]:
    """LIST `path` page by page; returns the metadata of the last page.

    `on_page(items, first)` gets each page's items as they arrive; `first` is True on the
    first page, and again on the first page of a LIST started over (drop what came before).
    `null_items`: an absent or null `items` reads as no items (else it is a BadList).
    Raises BadList, or the ApiError of a failed request.
    """
    cont = ""
    for _ in range(max_pages):
        params = [*query, ("limit", str(page_size))]
        if cont:
            params.append(("continue", cont))
        try:
            body = await kube.request("GET", path, query=params)
        except Gone:
            if not cont:
                raise
            cont = ""  # the continue token expired: start the LIST over
            continue
        # A real list always has both (`KubeClient.request` wraps a bare JSON array as
        # {"items": [...]}: no metadata, so that is no list either).
        items, meta = body.get("items"), body.get("metadata")
        if items is None and null_items:
            items = []
        if not isinstance(items, list) or not isinstance(meta, Mapping):
            raise BadList("items is not a list or metadata not an object", path)
        nxt = meta.get("continue")
        if nxt is not None and not isinstance(nxt, str):
            raise BadList("metadata.continue is not a string", path)
        on_page(items, not cont)
        if not nxt:
            return meta
        cont = nxt
        # The page is not kept while the next one is read (50,000 Nodes: 3.5 MB of JSON, and
        # ~13 MB of objects, a page).
        del body, items, meta
    raise BadList(f"more than {max_pages} pages", path)
