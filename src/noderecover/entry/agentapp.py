"""Wiring of `noderecover agent`: client, reboot action, HTTP, signals. No decisions here."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import os
import random
import signal
import sys
from pathlib import Path

import aiohttp
import anyio

from noderecover import AGENT_USER_AGENT, __version__
from noderecover.agent import reboot
from noderecover.agent.runner import Agent, AgentSettings, http_ask
from noderecover.base.clock import Clock, SystemClock
from noderecover.core.agent import AgentParams, Mode
from noderecover.core.pauses import own_namespace
from noderecover.entry.agentconfig import AgentConfig
from noderecover.entry.app import _os_reason, pod_namespace
from noderecover.entry.config import BadFlag, parse_bind
from noderecover.entry.httpserver import HttpServer
from noderecover.kube.client import KubeClient, Timeouts
from noderecover.kube.kubeconfig import KubeconfigError, load_api_client

log = logging.getLogger("noderecover.agent")

EXIT_CANNOT_FENCE = 1


def action_for(cfg: AgentConfig) -> reboot.RebootAction:
    test_file = Path(cfg.test_fence_file) if cfg.test_fence_file else None
    return reboot.choose(
        cfg.reboot,
        Path(cfg.watchdog_device),
        Path(cfg.sysrq_trigger),
        cfg.watchdog_timeout,
        test_file=test_file,
        node=cfg.node_name,
    )


def read_boot_id(path: Path) -> str:
    """This boot's id (`--agent-boot-id-file`: the kernel's, one per kernel whatever the mount
    namespace; the kubelet reports the same as status.nodeInfo.bootID). "" when unreadable:
    a mark naming a boot is then taken as this one's."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        log.warning("cannot read the boot id %s: %s", path, exc.strerror)
        return ""
    return text if text and "/" not in text else ""


def advertise(cfg: AgentConfig, port: int) -> str:
    if cfg.advertise_address:
        return cfg.advertise_address
    ip = os.environ.get("POD_IP", "").strip()
    if not ip:
        return ""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


async def run_agent(cfg: AgentConfig, clock: Clock | None = None) -> int:
    """`noderecover agent`: returns the exit code (1: this node cannot be fenced)."""
    clock = clock or SystemClock()
    try:
        action = action_for(cfg)
        action.check()  # armed at the first check that reaches the API server (agent.runner)
    except reboot.RebootError as exc:
        print(f"noderecover: error: agent: cannot fence this node: {exc}", file=sys.stderr)
        return EXIT_CANNOT_FENCE
    where = cfg.source("kubeconfig") if cfg.kubeconfig else "--kubeconfig"
    try:
        api = await load_api_client(cfg.kubeconfig, cfg.context, where)
    except KubeconfigError as exc:
        action.disarm()
        raise BadFlag(str(exc)) from None
    kube = KubeClient(
        api, Timeouts(request=cfg.api_timeout), cfg.node_name, user_agent=AGENT_USER_AGENT
    )
    params = AgentParams(
        isolation_timeout=cfg.isolation_timeout,
        watchdog_timeout=action.timeout,
        check_interval=cfg.check_interval,
        slack=cfg.slack,
        mode=action.mode,
    )
    _, port = parse_bind(cfg.http_bind)
    fallback = Path(cfg.sysrq_trigger)
    has_fallback = fallback.exists()  # noqa: ASYNC240 - once, at start
    settings = AgentSettings(
        node=cfg.node_name,
        namespace=own_namespace(cfg.lease_namespace, pod_namespace()),
        params=params,
        api_timeout=cfg.api_timeout,
        peer_timeout=cfg.peer_timeout,
        max_peers=cfg.max_peers,
        static_peers=cfg.peers,
        advertise=advertise(cfg, port),
        sysrq_fallback=fallback if action.mode is Mode.WATCHDOG and has_fallback else None,
        boot_id=read_boot_id(Path(cfg.boot_id_file)),
    )
    async with aiohttp.ClientSession() as session:

        async def ask(address: str, node: str, timeout: float) -> object:
            return await http_ask(session, address, node, timeout)

        agent = Agent(kube, clock, settings, action, ask_peer=ask, rng=random.Random())
        http = HttpServer(cfg.http_bind, agent, clock, routes=agent.routes())
        try:
            await http.start()
        except OSError as exc:
            action.disarm()
            await kube.close()
            raise BadFlag(
                f"{cfg.source('http_bind')}: cannot bind {cfg.http_bind}: {_os_reason(exc)}"
            ) from None
        log.info(
            "noderecover agent %s on node %s: mode %s (%s), check every %gs, isolation "
            "timeout %gs, watchdog timeout %gs, Lease %s/noderecover-agent-%s, peers %s",
            __version__,
            cfg.node_name,
            action.mode.value,
            _device(cfg, action),
            cfg.check_interval,
            cfg.isolation_timeout,
            action.timeout,
            settings.namespace,
            cfg.node_name,
            ",".join(cfg.peers) or "from the agents' Leases",
        )
        cannot: list[BaseException] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_signals, tg.cancel_scope, agent)
                tg.start_soon(_dump_if_blocked, cfg.check_interval + cfg.slack + 1.0)
                tg.start_soon(agent.run)
        except* reboot.RebootError as group:
            cannot.extend(group.exceptions)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await http.stop()
                await kube.close()
    if cannot:
        print(f"noderecover: error: agent: cannot fence this node: {cannot[0]}", file=sys.stderr)
        return EXIT_CANNOT_FENCE
    return 0


def _device(cfg: AgentConfig, action: reboot.RebootAction) -> str:
    if isinstance(action, reboot.Watchdog):
        return str(action.device)
    if isinstance(action, reboot.Sysrq):
        return f"{action.trigger}: no watchdog device at {cfg.watchdog_device}"
    return f"test fence file {cfg.test_fence_file}"


async def _dump_if_blocked(seconds: float) -> None:
    """If the event loop itself stops (a blocking call), every thread's stack is printed to
    stderr after `seconds`, and again every `seconds` (faulthandler's own thread): the agent
    stalls silently nowhere (the runner logs a check loop that waits too long)."""
    with contextlib.suppress(io.UnsupportedOperation, ValueError):  # stderr without a fd
        try:
            while True:
                faulthandler.dump_traceback_later(seconds, repeat=True)
                await anyio.sleep(1.0)
        finally:
            faulthandler.cancel_dump_traceback_later()


async def _signals(scope: anyio.CancelScope, agent: Agent) -> None:
    """SIGTERM/SIGINT: a healthy agent disarms its watchdog (magic close) and exits; one that
    decided to fence, or cannot reach the API server, exits without disarming (the dog then
    reboots the node if the new agent does not feed it in time)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            healthy = agent.state.fenced is None and agent.state.api_ok
            log.info(
                "received %s: stopping (%s)",
                signal.Signals(signum).name,
                "watchdog disarmed" if healthy else "watchdog left armed",
            )
            if healthy:
                agent.action.disarm()
            scope.cancel()
            return
