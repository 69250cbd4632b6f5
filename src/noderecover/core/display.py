"""What the command line prints, as text: ages and tables (kubectl's look)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["COLUMN_GAP", "format_age", "table"]

COLUMN_GAP = "   "  # kubectl's tables: three spaces between columns


def format_age(seconds: float | None) -> str:
    """A time span for a table cell: "45s", "5m03s", "2h07m"; "-" for none (or not finite).
    A negative span (a clock ahead of ours) is "0s"."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(max(0.0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns as wide as their widest cell, a line each (header first), no
    trailing blanks."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        COLUMN_GAP.join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *rows]
    ]
    return "".join(line + "\n" for line in lines)
