"""The cyclic garbage collector paused while a LIST is read (issue 24: 50,000 nodes synced in
at most 5 s).

A LIST of 50,000 Nodes is 100 pages of ~3.5 MB; parsing one creates ~75,000 containers, and
the view being filled keeps ~150,000 more. With the collector on, its young-generation
collections walk each page's objects while they are parsed, and its full collections walk the
growing view again and again: about a quarter of the sync's CPU (docs/benchmarks.md, section
8). Parsing JSON and building the view make no reference cycles, so nothing the collector
could free is made by the LIST: pausing it only postpones the work for whatever else runs
meanwhile, for as long as the LIST lasts (its requests have timeouts).

Invariants:
- Pauses nest (several watchers may LIST at once): the collector is off while at least one
  pause is open, and back to what it was before the first one once the last closes, whatever
  the way out (an exception, a cancellation).
- A collector someone else turned off stays off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


class _Pauses:
    depth = 0  # pauses open
    was_enabled = False  # the collector's state when the first one opened


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic GC off inside the block (nested blocks: until the outermost ends)."""
    if _Pauses.depth == 0:
        _Pauses.was_enabled = gc.isenabled()
        gc.disable()
    _Pauses.depth += 1
    try:
        yield
    finally:
        _Pauses.depth -= 1
        if _Pauses.depth == 0 and _Pauses.was_enabled:
            gc.enable()
