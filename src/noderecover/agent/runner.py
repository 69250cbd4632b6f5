"""The node agent's imperative shell: checks, its Lease, peers over HTTP, the reboot action.

Every decision is `noderecover.core.agent.step`; this module only observes and acts.

Invariants:
- One check every `check_interval` (started on a fixed schedule; a slow check delays the
  next one, never skips the decision). The API part of a check is bounded by the API timeout
  as a whole, the peer round by the peer timeout: a decision comes at most `slack` =
  api timeout + peer timeout after its check started (the `slack` the Lease publishes).
- The action is armed (the watchdog device opened) at the first check that reached the API
  server, never before: a node that boots into a partition is not rebooted again and again,
  and an agent restarted while cut off (after a crash) does not feed the dog its crashed
  predecessor left armed - the node reboots within the watchdog timeout, as the controller's
  safe time assumes.
- The watchdog is fed by its own task every min(check interval, watchdog timeout / 3), and
  only while the check loop is alive (its last start is younger than interval + slack + 1 s)
  and no fence was decided: a hung loop reboots the node like a fence does.
- A check loop that stalls (its last start older than interval + slack + 1 s) is logged once
  with where it waits (the await chain of its task): the dog is no longer fed from then on.
- Once a fence is decided it is final: the action fires once, feeding stops for good. With a
  watchdog, if the node is still up 5 s after the watchdog's timeout, the sysrq trigger (when
  present) reboots it (a dog that does not bite).
- A peer's question is answered from a live read of the asked Node, only while this agent's
  own last check reached the API server; otherwise "apiReachable": false.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
from aiohttp import web

from noderecover.agent.reboot import RebootAction, fire_sysrq
from noderecover.base.clock import Clock, call_within
from noderecover.core import agent as core
from noderecover.core.agent import AgentParams, AgentState, Answer, Check, Decision, Why
from noderecover.core.nodes import format_micro_time
from noderecover.kube import mutating
from noderecover.kube.client import JSON, ApiError, Conflict, KubeClient, NotFound

log = logging.getLogger("noderecover.agent")

PEER_PATH = "/peer/v1/nodes/"
PEER_REFRESH = 60.0  # seconds between two reads of the other agents' addresses
PEER_CONCURRENCY = 8  # questions from peers answered at once (more: 503)
FALLBACK_AFTER = 5.0  # a watchdog that did not bite this long after its timeout: sysrq
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

AskPeer = Callable[[str, str, float], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    node: str
    namespace: str
    params: AgentParams
    api_timeout: float
    peer_timeout: float
    max_peers: int = 5
    static_peers: tuple[str, ...] = ()
    advertise: str = ""  # host:port the other agents reach this one at ("" = not published)
    sysrq_fallback: Path | None = None  # watchdog mode: sysrq trigger if the dog does not bite
    boot_id: str = ""  # the kernel's boot_id: a fence mark for an earlier boot is ignored


def await_chain(task: asyncio.Task[Any] | None) -> list[str]:
    """Where a task waits: file:line function of each coroutine it awaits, outermost first."""
    out: list[str] = []
    coro: Any = task.get_coro() if task is not None and not task.done() else None
    while coro is not None and len(out) < 50:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            out.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def valid_node_name(name: str) -> bool:
    return len(name) <= core.MAX_NODE_NAME and bool(_NODE_NAME.fullmatch(name))


async def http_ask(
    session: aiohttp.ClientSession, address: str, node: str, timeout: float
) -> object:
    """GET http://<address>/peer/v1/nodes/<node>: the decoded JSON, or None on any failure."""
    url = f"http://{address}{PEER_PATH}{node}"
    try:
        with anyio.fail_after(timeout + 0.5):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    return None
                body = await resp.content.read(64 * 1024)
    except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError, ValueError):
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


class Agent:
    def __init__(
        self,
        kube: KubeClient,
        clock: Clock,
        settings: AgentSettings,
        action: RebootAction,
        *,
        ask_peer: AskPeer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self.settings = settings
        self.params = settings.params
        self.action = action
        self._ask_peer = ask_peer
        self._rng = rng or random.Random()
        ns = settings.namespace
        self._leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        self._lease_path = f"{self._leases}/{core.lease_name(settings.node)}"
        self._lease: JSON | None = None
        self.state = AgentState(boot_id=settings.boot_id)
        self.decision: Decision | None = None
        self.checks = 0
        self.renewals = 0
        self._tick = clock.monotonic()
        self._last_ok: float | None = None  # monotonic start of the last check that reached it
        self._discovered: tuple[str, ...] = ()
        self._peers_read: float | None = None
        self._fired = False
        self.armed = False  # the action was armed (at the first check that reached the API)
        self._answering = anyio.Semaphore(PEER_CONCURRENCY)
        self.ready = anyio.Event()
        self._loop_task: asyncio.Task[Any] | None = None
        self.stalls = 0  # times the check loop was seen stalled (the dog then starves)

    # ----- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Check forever (until cancelled); feed the watchdog alongside."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._feeder)
            await self._loop(tg)

    async def _loop(self, tg: anyio.abc.TaskGroup) -> None:
        interval = self.params.check_interval
        self._loop_task = asyncio.current_task()
        while True:
            started = self._clock.monotonic()
            self._tick = started
            decision = await self.check_once()
            self.ready.set()
            if decision.fence and not self._fired:
                self._fired = True
                if self.settings.sysrq_fallback is not None and self.action.timeout > 0:
                    tg.start_soon(self._fallback, self.settings.sysrq_fallback)
            await self._clock.sleep(max(0.0, started + interval - self._clock.monotonic()))

    async def check_once(self) -> Decision:
        """One check and its decision (fires the action on the first fence decision). The
        action is armed (a watchdog opened) at the first check that reached the API server,
        before its decision: a mark read then is fenced by the dog like any other fence.
        Raises RebootError when it cannot be armed (the agent exits 1)."""
        started = self._clock.monotonic()
        check = await self._observe(started)
        if check.api_ok and not self.armed:
            self.action.arm()
            self.armed = True
            log.info("%s armed at the first contact with the API server", self.action.mode.value)
        before = self.state
        self.state, decision = core.step(self.state, check, self._clock.monotonic(), self.params)
        self.decision = decision
        self.checks += 1
        self._log(before, decision)
        if decision.fence and before.fenced is None:
            self._fence(decision)
        return decision

    def _fence(self, decision: Decision) -> None:
        log.critical(
            "FENCING node %s: %s (no contact for %.1fs); mode %s",
            self.settings.node,
            decision.why.value,
            decision.isolated_for,
            self.action.mode.value,
        )
        self.action.fence(decision.why.value)

    async def _fallback(self, trigger: Path) -> None:
        await self._clock.sleep(self.action.timeout + FALLBACK_AFTER)
        log.critical("the watchdog did not reboot the node: sysrq through %s", trigger)
        fire_sysrq(trigger)

    async def _feeder(self) -> None:
        every = min(self.params.check_interval, self.params.watchdog_timeout / 3)
        every = max(every, 0.05)
        stale = self.params.check_interval + self.params.slack + 1.0
        reported = False
        while True:
            idle = self._clock.monotonic() - self._tick
            alive = idle <= stale
            if self.state.fenced is None and alive:
                self.action.feed()
            if not alive and not reported and self.state.fenced is None:
                self.stalls += 1
                log.error(
                    "check loop stalled: no check started for %.1fs (bound %.1fs); the %s is "
                    "no longer fed. It waits in: %s",
                    idle,
                    stale,
                    self.action.mode.value,
                    " <- ".join(await_chain(self._loop_task)) or "(not started)",
                )
            reported = not alive
            await self._clock.sleep(every)

    def _log(self, before: AgentState, decision: Decision) -> None:
        level = logging.DEBUG
        if before.api_ok != self.state.api_ok or decision.fence:
            level = logging.WARNING
        if decision.why is Why.FENCED:
            level = logging.DEBUG
        log.log(
            level,
            "check: api=%s decision=%s isolated_for=%.1fs",
            "ok" if self.state.api_ok else "unreachable",
            decision.why.value,
            decision.isolated_for,
        )

    # ----- observing ------------------------------------------------------------------------

    async def _observe(self, started: float) -> Check:
        node_json: JSON | None = None
        try:
            node_json = await call_within(self._clock, self.settings.api_timeout, self._api_part)
        except (ApiError, TimeoutError) as exc:
            log.info("API server not reachable: %s", exc)
        if node_json is not None:
            self._last_ok = started
            uid, mark = core.node_mark(node_json) if node_json else (None, None)
            return Check(started, True, uid, mark)
        answers: tuple[Answer, ...] = ()
        if self.state.node_uid is not None and self.state.fenced is None:
            answers = await self._ask_peers()
        return Check(started, False, peers=answers)

    async def _api_part(self) -> JSON:
        """Renew the Lease, then read the Node. {} when the Node does not exist (reachable,
        nothing to read). Raises ApiError when the API server cannot be reached."""
        await self._renew()
        try:
            node = await self._kube.request(
                "GET", f"/api/v1/nodes/{self.settings.node}", timeout=self.settings.api_timeout
            )
        except NotFound:
            node = {}
        if self._peers_due():
            await self._refresh_peers()
        return node

    # ----- the Lease --------------------------------------------------------------------------

    async def _renew(self) -> None:
        lease = self._lease
        if lease is not None:
            try:
                self._lease = await self._put(lease)
                self.renewals += 1
                return
            except (Conflict, NotFound):
                self._lease = None
        try:
            current = await self._kube.request(
                "GET", self._lease_path, timeout=self.settings.api_timeout
            )
        except NotFound:
            self._lease = await mutating.send(
                self._kube,
                "POST",
                self._leases,
                body=self._written(None),
                timeout=self.settings.api_timeout,
            )
            self.renewals += 1
            return
        self._lease = await self._put(current)
        self.renewals += 1

    async def _put(self, lease: JSON) -> JSON:
        return await mutating.send(
            self._kube,
            "PUT",
            self._lease_path,
            body=self._written(lease),
            timeout=self.settings.api_timeout,
        )

    def _written(self, lease: JSON | None) -> JSON:
        now = format_micro_time(self._clock.wall())
        meta: dict[str, Any] = dict((lease or {}).get("metadata") or {})
        meta["name"] = core.lease_name(self.settings.node)
        meta["namespace"] = self.settings.namespace
        labels = dict(meta.get("labels") or {})
        labels[core.AGENT_LABEL] = core.AGENT_LABEL_VALUE
        labels["app.kubernetes.io/name"] = "noderecover"
        meta["labels"] = labels
        annotations = dict(meta.get("annotations") or {})
        annotations.update(self.params_published().annotations(self.settings.advertise))
        if not self.settings.advertise:
            annotations.pop(core.ANN_ADDRESS, None)
        meta["annotations"] = annotations
        spec: dict[str, Any] = dict((lease or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.settings.node or not spec.get("acquireTime"):
            spec["acquireTime"] = now
        spec["holderIdentity"] = self.settings.node
        spec["leaseDurationSeconds"] = max(1, math.ceil(3 * self.params.check_interval))
        spec["renewTime"] = now
        body: JSON = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta}
        body["spec"] = spec
        return body

    def params_published(self) -> AgentParams:
        """The parameters with the action's real timeout (the driver may have changed it),
        rounded up to the millisecond (published durations never understate)."""
        p = replace(self.params, watchdog_timeout=self.action.timeout, mode=self.action.mode)

        def up(x: float) -> float:
            return math.ceil(x * 1000) / 1000

        return replace(
            p,
            isolation_timeout=up(p.isolation_timeout),
            watchdog_timeout=up(p.watchdog_timeout),
            check_interval=up(p.check_interval),
            slack=up(p.slack),
        )

    # ----- peers --------------------------------------------------------------------------------

    def _peers_due(self) -> bool:
        if self._peers_read is None:
            return True
        return self._clock.monotonic() - self._peers_read >= PEER_REFRESH

    async def _refresh_peers(self) -> None:
        """The other agents' addresses from their Leases (kept while the API is unreachable)."""
        self._peers_read = self._clock.monotonic()
        try:
            found = await self._kube.request(
                "GET",
                self._leases,
                query=[("labelSelector", f"{core.AGENT_LABEL}={core.AGENT_LABEL_VALUE}")],
                timeout=self.settings.api_timeout,
            )
        except ApiError as exc:
            log.info("could not read the other agents' Leases: %s", exc)
            return
        addresses = []
        for item in found.get("items") or []:
            if not isinstance(item, dict):
                continue
            ann = (item.get("metadata") or {}).get("annotations") or {}
            address = ann.get(core.ANN_ADDRESS) if isinstance(ann, dict) else None
            if isinstance(address, str) and address and address != self.settings.advertise:
                addresses.append(address)
        self._discovered = tuple(sorted(set(addresses)))

    @property
    def peers(self) -> list[str]:
        own = self.settings.advertise
        return sorted({p for p in (*self.settings.static_peers, *self._discovered) if p != own})

    async def _ask_peers(self) -> tuple[Answer, ...]:
        peers = self.peers
        self._rng.shuffle(peers)
        chosen = peers[: self.settings.max_peers]
        if not chosen or self._ask_peer is None:
            return ()
        reports: list[Answer] = []
        node, uid, timeout = self.settings.node, self.state.node_uid, self.settings.peer_timeout
        ask = self._ask_peer

        async def one(address: str) -> None:
            data = await ask(address, node, timeout)
            reports.append(core.judge(core.parse_peer_report(data), node, uid, self.state.boot_id))

        with anyio.move_on_after(timeout + 1.0):
            async with anyio.create_task_group() as tg:
                for address in chosen:
                    tg.start_soon(one, address)
        return tuple(reports)

    async def answer(self, node: str) -> JSON:
        """What this agent tells a peer asking about `node`."""
        fresh = self.params.check_interval * 2 + self.params.slack
        if (
            self._last_ok is None
            or not self.state.api_ok
            or self._clock.monotonic() - self._last_ok > fresh
        ):
            return core.peer_report(node, None)
        timeout = min(self.settings.api_timeout, self.settings.peer_timeout / 2)
        try:
            got = await call_within(
                self._clock,
                timeout,
                lambda: self._kube.request("GET", f"/api/v1/nodes/{node}", timeout=timeout),
            )
        except NotFound:
            return core.peer_report(node, {})
        except (ApiError, TimeoutError):
            return core.peer_report(node, None)
        return core.peer_report(node, got)

    # ----- HTTP -----------------------------------------------------------------------------------

    async def handle_peer(self, request: web.Request) -> web.Response:
        node = request.match_info.get("node", "")
        if not valid_node_name(node):
            return _json(400, {"error": "not a node name"})
        if self._answering.statistics().tasks_waiting >= PEER_CONCURRENCY:
            return _json(503, {"error": "busy"})
        async with self._answering:
            return _json(200, await self.answer(node))

    async def handle_status(self, request: web.Request) -> web.Response:
        return _json(200, self.status())

    def status(self) -> JSON:
        d = self.decision
        p = self.params_published()
        last = self.state.last_contact
        return {
            "node": self.settings.node,
            "mode": self.action.mode.value,
            "apiReachable": self.state.api_ok,
            "decision": d.why.value if d else "starting",
            "fencing": self.state.fenced is not None,
            "isolatedForSeconds": round(d.isolated_for, 3) if d else 0.0,
            "lastContactSecondsAgo": (
                None if last is None else round(self._clock.monotonic() - last, 3)
            ),
            "nodeUID": self.state.node_uid or "",
            "peers": self.peers,
            "lease": f"{self.settings.namespace}/{core.lease_name(self.settings.node)}",
            "params": {
                "isolationTimeoutSeconds": p.isolation_timeout,
                "watchdogTimeoutSeconds": p.watchdog_timeout,
                "checkIntervalSeconds": p.check_interval,
                "slackSeconds": p.slack,
                "safeTimeSeconds": core.safe_time(p),
            },
        }

    def routes(self) -> Sequence[tuple[str, Callable[[web.Request], Awaitable[web.Response]]]]:
        return [(PEER_PATH + "{node}", self.handle_peer), ("/status", self.handle_status)]

    # ----- health -----------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        stale = self.params.check_interval + self.params.slack + 5.0
        idle = self._clock.monotonic() - self._tick
        if idle > stale:
            return False, f"no check for {idle:.0f}s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        if not self.ready.is_set():
            return False, "first check not done"
        return True, "ok"


def _json(status: int, body: JSON) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
