"""One grammar for every duration noderecover reads.

The flags of `noderecover run`/`plan` (and their NODERECOVER_* variables), the duration fields of
a NodeRecoveryPolicy (the CRD's `pattern`), the kubectl plugin (`--for`, `--request-timeout`)
and the chart's values.schema.json all take the same text: tests/test_durations.py checks that
the CRD's and the chart schema's patterns are `PATTERN`.

The grammar is Go's `time.ParseDuration` (what Kubernetes and kubectl use) without signs and
with the units ms, s, m and h, plus kubectl's bare integer number of seconds:
- `0`, or a whole number of seconds: `90` (kubectl's `--request-timeout=10` form);
- one or more parts of a decimal number and a unit: `90s`, `1m30s`, `1.5h`, `500ms`, `.5s`.
No spaces, no sign, no exponent, ASCII digits only; at most `MAX_DAYS` days. (A flag's value is
trimmed of surrounding ASCII whitespace first: a value from a YAML block ends with a newline.)
"""

from __future__ import annotations

import re

__all__ = ["MAX_DAYS", "MAX_SECONDS", "PATTERN", "format_duration", "parse_duration"]

MAX_DAYS = 365
MAX_SECONDS = MAX_DAYS * 86400.0  # longer is a typo (and overflows a Lease's int32 seconds)

# The whole text. Unit alternatives: "ms" before "m" (a pattern engine takes the first that
# matches). Written for RE2 (the API server's CRD validation, Helm's JSON schema) and Python.
PATTERN = r"^([0-9]+|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ms|h|m|s))+)$"
_WHOLE = re.compile(PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
EXAMPLES = "e.g. 90s, 5m, 1m30s, 500ms"


def parse_duration(text: object) -> float:
    """The duration `text` says, in seconds. ValueError (one line, naming the text) for
    anything outside the grammar, negative, or longer than MAX_DAYS."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration ({EXAMPLES})")
    if not text:
        raise ValueError(f"empty duration ({EXAMPLES})")
    if not text.isascii():
        raise ValueError(f"duration {text!r} has non-ASCII characters ({EXAMPLES})")
    if text.startswith("-"):
        raise ValueError(f"negative duration {text!r}")
    if not _WHOLE.match(text):
        raise ValueError(f"unparsable duration {text!r} ({EXAMPLES})")
    if text.isdigit():
        seconds = float(int(text))
    else:
        seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
    if seconds > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than {MAX_DAYS} days")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as the grammar writes them, shortest first: 30 -> "30s", 90 -> "1m30s",
    600 -> "10m", 0.5 -> "500ms", 0 -> "0s". parse_duration(format_duration(s)) == s for
    whole milliseconds."""
    if seconds < 0:
        raise ValueError(f"negative duration {seconds!r}")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    whole, rest_ms = divmod(ms, 1000)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "")
    if rest_ms:
        if out or s:
            out += f"{s}.{rest_ms:03d}".rstrip("0") + "s"
        else:
            out += f"{rest_ms}ms"
    elif s:
        out += f"{s}s"
    return out
