"""Helpers shared by the benchmarks: timing, tables, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence


def status_mib() -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of this process, MiB (Linux /proc). Standard library only:
    the script's RSS worker imports it in the script's own venv."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def median_rate(
    run: Callable[[], int], *, repeat: int = 5, min_seconds: float = 0.5
) -> tuple[float, list[float]]:
    """Call ``run`` (which returns how many items it processed) until ``min_seconds`` have
    passed, ``repeat`` times; return the median items/second and every run's rate."""
    rates = []
    for _ in range(repeat):
        items = 0
        t0 = time.perf_counter()
        while True:
            items += run()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        rates.append(items / elapsed)
    return statistics.median(rates), rates


def median_time(run: Callable[[], object], *, repeat: int = 5) -> tuple[float, list[float]]:
    """Median wall time of ``repeat`` calls of ``run``, and every call's time."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def numeric(text: str) -> bool:
        t = text.replace(",", "").replace(".", "").replace("x", "").replace("%", "").strip()
        return t.lstrip("-+~").isdigit()

    align = [
        numeric(cells[0][i]) if cells else False for i in range(len(headers))
    ]  # by the first row
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    out.append(
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a else ("-" * (w + 2))
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    for r in cells:
        out.append(
            "| "
            + " | ".join(
                c.rjust(w) if a else c.ljust(w) for c, w, a in zip(r, widths, align, strict=True)
            )
            + " |"
        )
    return "\n".join(out)


def machine() -> str:
    """One line describing the machine and its load right now."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"
