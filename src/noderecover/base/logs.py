"""Logging: one line per record, as JSON objects or as `ts level logger msg key=value...`.

Fields passed with `extra=` (node, phase, action, reason, ...) become JSON keys or key=value
pairs, so every remediation decision can be found by node and phase.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

FORMATS = ("text", "json")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_HANDLER_MARK = "_noderecover_handler"


def _timestamp(created: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-01-02T03:04:05.678Z."""
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "msg", **extras, "exc"?} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c.isspace() or c in '"=\\' for c in text):
        return text
    return orjson.dumps(text).decode()  # quoted, escaped, still one line


class TextFormatter(logging.Formatter):
    """`ts LEVEL logger msg key=value ...`, one line (tracebacks follow on their own lines)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record.created),
            record.levelname,
            record.name,
            record.getMessage(),
        ]
        parts += [f"{k}={_text_value(v)}" for k, v in _extras(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Route the root logger to `stream` (stderr) in `fmt` at `level`. Idempotent."""
    fmt_key = fmt.strip().lower()
    if fmt_key not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    level_key = level.strip().lower()
    if level_key not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt_key == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    # Replace only a handler we installed before: test harnesses keep theirs.
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level_key])
    # Chatty libraries stay at warning unless we debug.
    quiet = logging.DEBUG if level_key == "debug" else logging.WARNING
    for name in ("aiohttp.access", "kubernetes_asyncio", "asyncio"):
        logging.getLogger(name).setLevel(max(quiet, LEVELS[level_key]))
    # The fence providers' libraries log each request's headers at debug (botocore: the
    # Authorization header with the access key id): never below warning, even when we debug.
    for name in FENCE_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, LEVELS[level_key]))


FENCE_LIBRARY_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "sushy")


def decision(
    logger: logging.Logger,
    node: str,
    phase: str,
    action: str,
    reason: str,
    *,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log one remediation decision with node, phase, action, reason (and `fields`) as extras."""
    extra: dict[str, Any] = {"node": node, "phase": phase, "action": action, "reason": reason}
    for key, value in fields.items():
        # LogRecord refuses extras that shadow its attributes (e.g. 'name'): suffix them.
        extra[f"{key}_" if key in _STANDARD else key] = value
    logger.log(level, "%s %s: %s", action, node, reason, extra=extra)
