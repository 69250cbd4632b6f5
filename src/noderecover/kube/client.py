"""A thin, bounded Kubernetes API client over kubernetes_asyncio's ApiClient.

Why not the generated CoreV1Api models: deserialising a Node into V1Node costs ~0.6 ms,
plain JSON ~0.01 ms, and we keep only a few fields per node. kubernetes_asyncio still does
what it is good at: kubeconfig / in-cluster loading, TLS, bearer-token refresh.

Invariants:
- Every call has a deadline: `timeout` (total) for requests, connect + per-read timeouts for
  streams. kubernetes_asyncio >= 32 has no default timeout, so nothing here is unbounded.
- Non-2xx answers raise `ApiError` with the HTTP code, the Status reason and Retry-After;
  `api_error` (the one place an error is built from a status) picks the subclass callers
  catch: NotFound (404), Conflict (409), Gone (410), Invalid (422), TooManyRequests (429).
  Callers outside this module tell errors apart by type, never by comparing `code`, which
  stays for metrics and messages.
- Transport failures and timeouts raise `ApiError` with code 0, so callers retry one type.
- With a `write_deadline` (the leader's: the monotonic time before which its Lease cannot pass
  to another replica), every write (any method but GET) ends by that deadline: its timeout
  is min(its own, what is left), computed right before it is sent and enforced on the
  injected clock too; with nothing left it is not sent at all (`WriteRefused`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import anyio
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from noderecover import USER_AGENT
from noderecover.base.clock import Clock, SystemClock, call_within
from noderecover.base.metrics import API_ERRORS

JSON = dict[str, Any]
_T = TypeVar("_T")

# Methods that change nothing: never bounded by the write deadline.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# ApiError reasons of a watch stream that broke mid-line (see `stream`).
TRUNCATED = "TruncatedEvent"
LINE_TOO_LONG = "LineTooLong"


class ApiError(Exception):
    """A failed API call: `code` is the HTTP status, 0 when there was no answer."""

    def __init__(
        self,
        code: int,
        reason: str = "",
        message: str = "",
        retry_after: float | None = None,
        verb: str = "",
        path: str = "",
    ) -> None:
        super().__init__(f"{verb} {path}: {code} {reason} {message}".strip())
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth retrying with backoff: no answer, throttled, or a server-side error."""
        return self.code in {0, 429} or self.code >= 500


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class Conflict(ApiError):
    """409: a precondition (uid, resourceVersion) failed, or the object already exists."""


class Gone(ApiError):
    """410: a resourceVersion or continue token is too old (events were lost)."""


class Invalid(ApiError):
    """422: the request was refused as invalid; for a JSON patch, a failed `test` op too."""


class TooManyRequests(ApiError):
    """429: throttled, or an eviction refused by a PodDisruptionBudget."""


_BY_CODE: dict[int, type[ApiError]] = {
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def api_error(
    code: int,
    reason: str = "",
    message: str = "",
    retry_after: float | None = None,
    verb: str = "",
    path: str = "",
) -> ApiError:
    """The error for an answer with HTTP status `code` (0: no answer): the subclass of
    ApiError that callers catch for that status, else ApiError itself."""
    return _BY_CODE.get(code, ApiError)(code, reason, message, retry_after, verb, path)


def multiple_pdbs(exc: ApiError) -> bool:
    """An eviction refused because more than one PodDisruptionBudget selects the pod: the API
    server answers 500 with that message, and retrying cannot help until the PDBs change."""
    return exc.code == 500 and "more than one" in exc.message.lower()


class WriteRefused(ApiError):
    """A write not sent: no time is left before the Lease could pass to another replica.

    An ApiError (code 0, reason "LeaseDeadline") on purpose: every write path already treats
    an ApiError as a failed call - never a success, never an exception that escapes the
    leader's loop or the Event recorder (a bare draining.NotLeader would escape the latter).
    """

    def __init__(self, method: str, path: str) -> None:
        super().__init__(
            0, "LeaseDeadline", "no time left before the Lease could pass", None, method, path
        )


@dataclass(frozen=True, slots=True)
class Timeouts:
    request: float = 10.0  # total for one request/response
    connect: float = 5.0  # TCP+TLS connect for streams
    stream_read: float = 90.0  # max silence between two reads of a watch stream


def _retry_after(headers: Mapping[str, str], status: JSON | None) -> float | None:
    value = headers.get("Retry-After")
    if value is not None:
        with contextlib.suppress(ValueError):
            return float(value)
    if status:
        details = status.get("details") or {}
        seconds = details.get("retryAfterSeconds")
        if isinstance(seconds, int | float):
            return float(seconds)
    return None


def _error_from(
    verb: str, path: str, code: int, body: bytes, headers: Mapping[str, str]
) -> ApiError:
    status: JSON | None = None
    with contextlib.suppress(orjson.JSONDecodeError):
        parsed = orjson.loads(body) if body else None
        if isinstance(parsed, dict):
            status = parsed
    reason = str(status.get("reason", "")) if status else ""
    message = str(status.get("message", "")) if status else body[:200].decode("utf-8", "replace")
    return api_error(code, reason, message, _retry_after(headers, status), verb, path)


class KubeClient:
    """Bounded raw-JSON calls against one API server. Owns nothing but the ApiClient it wraps."""

    def __init__(
        self,
        api_client: Any,
        timeouts: Timeouts | None = None,
        identity: str = "",
        *,
        clock: Clock | None = None,
        write_deadline: Callable[[], float | None] | None = None,
        user_agent: str = "",
    ) -> None:
        self._api = api_client
        self.timeouts = timeouts or Timeouts()
        self._clock: Clock = clock or SystemClock()
        # Monotonic time (on `clock`) by which every write must have ended; None: no bound.
        self._write_deadline = write_deadline
        # Bounded writes (those with a deadline) in flight, and when the last one was
        # abandoned (cancelled, timed out, no answer): the server may still apply it.
        self._writes_in_flight = 0
        self._last_abandoned = float("-inf")
        # The identity in the User-Agent attributes each replica's requests in the API
        # server's audit log (both replicas share one ServiceAccount).
        agent = user_agent or USER_AGENT
        self._api.user_agent = f"{agent} ({identity})" if identity else agent

    async def close(self) -> None:
        await self._api.close()

    async def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] | None,
        body: JSON | list[JSON] | None,
        content_type: str,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            resp: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=list(query or []),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            API_ERRORS.labels(method.lower(), "0").inc()
            raise ApiError(0, type(exc).__name__, str(exc), None, method, path) from exc
        except RuntimeError as exc:
            # uvloop can leak a socket's fd when a connect is cancelled (our bounded calls
            # cancel connects during an API outage), and a later connect that gets the same
            # fd number fails with "File descriptor N is used by transport" (uvloop#653,
            # aiohappyeyeballs#93). Seen in the e2e API-server-restart test: it escaped here
            # and killed the leader. It is one failed request: retried with backoff like any
            # other; if the loop stayed broken, the watch goes stale and /healthz restarts us.
            API_ERRORS.labels(method.lower(), "0").inc()
            raise ApiError(0, "TransportError", str(exc)[:200], None, method, path) from exc
        return resp

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] | None = None,
        body: JSON | list[JSON] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        """One call; returns the decoded JSON body of a 2xx answer, raises ApiError otherwise.

        A write raises WriteRefused, unsent, when the write deadline has passed.
        """
        total = timeout if timeout is not None else self.timeouts.request
        deadline = None
        if self._write_deadline is not None and method.upper() not in READ_METHODS:
            deadline = self._write_deadline()
        if deadline is None:
            return await self._request(method, path, query, body, content_type, total, 1.0)
        # Right before sending: what is left before the Lease could pass bounds this write.
        now = self._clock.monotonic()
        if deadline - now <= 0:
            raise WriteRefused(method, path)
        total = min(total, deadline - now)
        self._writes_in_flight += 1
        answered = False
        try:
            result = await self._on_clock(
                now + total,
                # No slack on the whole-coroutine bound: the write must end by the deadline.
                lambda: self._request(method, path, query, body, content_type, total, 0.0),
            )
            answered = True
            return result
        except TimeoutError as exc:
            API_ERRORS.labels(method.lower(), "0").inc()
            why = f"no answer in {total:.3g}s (write deadline)"
            raise ApiError(0, "Timeout", why, None, method, path) from exc
        except ApiError as exc:
            answered = exc.code != 0  # the server answered: nothing of it is still pending
            raise
        finally:
            self._writes_in_flight -= 1
            if not answered:
                self._last_abandoned = self._clock.monotonic()

    def writes_abandoned_at(self) -> float:
        """When the last bounded write was abandoned (cancelled, timed out, no answer: the
        server may still apply it for a while); +inf while one is in flight, -inf if none
        ever was. The elector releases its Lease only once that is far enough behind."""
        return math.inf if self._writes_in_flight else self._last_abandoned

    async def _on_clock(self, end: float, call: Callable[[], Awaitable[_T]]) -> _T:
        """`await call()`, cancelled at monotonic time `end` of the injected clock
        (TimeoutError): the write deadline is measured on that clock, so the bound follows it."""
        return await call_within(self._clock, end - self._clock.monotonic(), call)

    async def _request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] | None,
        body: JSON | list[JSON] | None,
        content_type: str,
        total: float,
        slack: float,
    ) -> JSON:
        try:
            # Two bounds on purpose: aiohttp's covers the socket, anyio's the whole coroutine
            # (auth hooks included).
            with anyio.fail_after(total + slack):
                resp = await self._send(
                    method, path, query, body, content_type, aiohttp.ClientTimeout(total=total)
                )
                try:
                    data = await resp.read()
                finally:
                    resp.release()
        except TimeoutError as exc:
            API_ERRORS.labels(method.lower(), "0").inc()
            raise ApiError(0, "Timeout", f"no answer in {total}s", None, method, path) from exc
        except aiohttp.ClientError as exc:
            API_ERRORS.labels(method.lower(), "0").inc()
            raise ApiError(0, type(exc).__name__, str(exc), None, method, path) from exc
        if not 200 <= resp.status <= 299:
            API_ERRORS.labels(method.lower(), str(resp.status)).inc()
            raise _error_from(method, path, resp.status, data, resp.headers)
        if not data:
            return {}
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            API_ERRORS.labels(method.lower(), str(resp.status)).inc()
            raise api_error(resp.status, "BadBody", str(exc), None, method, path) from exc
        return parsed if isinstance(parsed, dict) else {"items": parsed}

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        query: Sequence[tuple[str, str]],
        *,
        read_timeout: float | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a streaming GET (a watch) and yield an iterator of its non-empty lines.

        A read that waits longer than `read_timeout` raises ApiError(0, "Timeout"): a stream
        can go silent without the TCP connection dropping. A stream that ends in the middle of
        a line raises ApiError(0, TRUNCATED) instead of yielding the fragment, and a line over
        the client's buffer limit (4 MiB with kubernetes_asyncio) ApiError(0, LINE_TOO_LONG).
        """
        read = read_timeout if read_timeout is not None else self.timeouts.stream_read
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.timeouts.connect,
            sock_connect=self.timeouts.connect,
            # A backstop only: the silence bound is `_lines`' own (anyio, below). Equal
            # values raced, and aiohttp's timeout surfaced as a generic error instead of
            # "Timeout" (a silent stream counted as a failure, with backoff).
            sock_read=read + 1.0,
        )
        bound = self.timeouts.connect + self.timeouts.request
        try:
            with anyio.fail_after(bound):
                resp = await self._send("GET", path, query, None, "application/json", timeout)
        except TimeoutError as exc:
            # Connected, but no response headers in time (a hung or overloaded server): one
            # failed attempt, retried with backoff - not a silent stream, and never an
            # exception that would end the watcher.
            API_ERRORS.labels("watch", "0").inc()
            why = f"no response in {bound:g}s"
            raise ApiError(0, "NoResponse", why, None, "WATCH", path) from exc
        try:
            if not 200 <= resp.status <= 299:
                try:
                    with anyio.fail_after(self.timeouts.request):
                        data = await resp.read()
                except (TimeoutError, aiohttp.ClientError):
                    data = b""
                API_ERRORS.labels("watch", str(resp.status)).inc()
                raise _error_from("WATCH", path, resp.status, data, resp.headers)
            yield _lines(resp, read, path)
        finally:
            resp.release()
            resp.close()


async def _lines(
    resp: aiohttp.ClientResponse, read_timeout: float, path: str
) -> AsyncIterator[bytes]:
    while True:
        try:
            with anyio.fail_after(read_timeout):
                line = await resp.content.readline()
        except TimeoutError as exc:
            raise ApiError(
                0, "Timeout", f"stream silent for {read_timeout}s", None, "WATCH", path
            ) from exc
        except aiohttp.ClientError as exc:
            raise ApiError(0, type(exc).__name__, str(exc), None, "WATCH", path) from exc
        except HttpProcessingError as exc:  # aiohttp's LineTooLong is not a ClientError
            raise ApiError(0, LINE_TOO_LONG, str(exc)[:200], None, "WATCH", path) from exc
        if not line:
            return  # server closed the stream (timeoutSeconds reached, or shutdown)
        if not line.endswith(b"\n") and line.strip():
            # The server (or a proxy) closed the stream in the middle of an event.
            raise ApiError(
                0, TRUNCATED, f"stream ended mid-event ({len(line)} bytes)", None, "WATCH", path
            )
        line = line.strip()
        if line:
            yield line


class NotLeader(Exception):
    """The act-gate said no: stop at once, do not count as a failure of the node."""
