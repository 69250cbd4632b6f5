"""Log formats: one JSON object or one `ts level logger msg key=value` line per record."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from noderecover.base.logs import decision, setup_logging

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    out = io.StringIO()
    yield out
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_json_lines_carry_extras(stream: io.StringIO) -> None:
    setup_logging("json", "info", stream)
    log = logging.getLogger("noderecover.test")
    decision(log, "node-1", "Draining", "evict", "NotReady for 60s", pods=3, name="mysql-0")
    log.debug("hidden at info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    rec = orjson.loads(lines[0])
    assert re.fullmatch(TS, rec["ts"])
    assert rec["level"] == "info" and rec["logger"] == "noderecover.test"
    assert rec["msg"] == "evict node-1: NotReady for 60s"
    assert rec["node"] == "node-1" and rec["phase"] == "Draining"
    assert rec["action"] == "evict" and rec["reason"] == "NotReady for 60s"
    assert rec["pods"] == 3
    assert rec["name_"] == "mysql-0"  # 'name' would clash with LogRecord.name


def test_json_exception_and_odd_values_stay_on_one_line(stream: io.StringIO) -> None:
    setup_logging("json", "debug", stream)
    log = logging.getLogger("noderecover.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed\nbadly", extra={"obj": object(), "when": 1.5})
    [line] = stream.getvalue().splitlines()
    rec = orjson.loads(line)
    assert rec["level"] == "error" and rec["msg"] == "failed\nbadly"
    assert "ValueError: boom" in rec["exc"] and rec["when"] == 1.5
    assert rec["obj"].startswith("<object")


def test_text_format(stream: io.StringIO) -> None:
    setup_logging("text", "debug", stream)
    log = logging.getLogger("noderecover.test")
    decision(log, "node-1", "Grace", "wait", "grace period running", left="30s")
    log.info("plain", extra={"note": 'has "quotes" and spaces'})
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(
        TS + r" INFO noderecover\.test wait node-1: grace period running "
        r"node=node-1 phase=Grace action=wait reason=\"grace period running\" left=30s",
        first,
    ), first
    assert second.endswith(r'plain note="has \"quotes\" and spaces"'), second


def test_setup_is_idempotent_and_keeps_foreign_handlers(stream: io.StringIO) -> None:
    root = logging.getLogger()
    foreign = len(root.handlers)
    setup_logging("text", "info", stream)
    setup_logging("json", "warning", stream)
    assert len(root.handlers) == foreign + 1
    logging.getLogger("noderecover.test").info("not shown")
    logging.getLogger("noderecover.test").warning("shown")
    [line] = stream.getvalue().splitlines()
    assert orjson.loads(line)["msg"] == "shown"


@pytest.mark.parametrize(
    ("fmt", "level", "match"), [("xml", "info", "format"), ("json", "loud", "level")]
)
def test_bad_format_or_level(fmt: str, level: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"unknown log {match}"):
        setup_logging(fmt, level)


def test_fence_libraries_never_log_below_warning(stream: io.StringIO) -> None:
    """At --log-level debug botocore logs each request's headers (the access key id in the
    Authorization header) and sushy/urllib3 their requests: those loggers stay at warning."""
    setup_logging("json", "debug", stream)
    logging.getLogger("botocore.endpoint").debug("Sending http request: Credential=AKIDLEAK/")
    logging.getLogger("sushy.connector").debug("HTTP request: POST")
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
    logging.getLogger("botocore.auth").warning("clock skew")
    logging.getLogger("noderecover.fencing").debug("ours")
    text = stream.getvalue()
    assert "AKIDLEAK" not in text and "HTTP request" not in text and "Starting new" not in text
    assert "clock skew" in text and "ours" in text
