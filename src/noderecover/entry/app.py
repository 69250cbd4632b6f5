"""Wiring: kube client, watches, leader election, HTTP, events, signals. No decisions here."""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import socket
from pathlib import Path

import anyio

from noderecover import __version__
from noderecover.base.clock import Clock, SystemClock
from noderecover.base.metrics import BUILD_INFO
from noderecover.controller.reconciler import Controller
from noderecover.controller.writes import Writer
from noderecover.core.pauses import PauseLocation, cluster_pause_location, own_namespace
from noderecover.entry.config import BadFlag, Config
from noderecover.entry.httpserver import HttpServer
from noderecover.kube.client import KubeClient, Timeouts
from noderecover.kube.election import ElectionConfig, LeaderElector, default_identity
from noderecover.kube.events import EventRecorder
from noderecover.kube.kubeconfig import KubeconfigError, first_line, in_cluster, load_api_client
from noderecover.kube.lean import ApiClient

log = logging.getLogger("noderecover")

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


async def load_client(cfg: Config) -> ApiClient:
    """The ApiClient of --kubeconfig / --context (see kube.kubeconfig for the order).

    Raises BadFlag naming the kubeconfig when it cannot be read or parsed, when its server is
    not an http(s) URL, or when its exec credential plugin fails (a configuration error, not a
    retry: it would never get better). A well-formed but unreachable server is not checked
    here: that is retried with backoff.
    """
    if cfg.kubeconfig:
        where = cfg.source("kubeconfig")
    else:
        where = "KUBECONFIG" if os.environ.get("KUBECONFIG") else "--kubeconfig"
    try:
        return await load_api_client(cfg.kubeconfig, cfg.context, where)
    except KubeconfigError as exc:
        raise BadFlag(str(exc)) from None


def _os_reason(exc: OSError) -> str:
    """'Address already in use', 'Name or service not known'... (one line, no traceback)."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        return first_line(exc) if not exc.strerror else exc.strerror
    return os.strerror(exc.errno)


IDENTITY_MAX = 253


def check_identity(identity: str) -> None:
    """BadFlag unless the identity (POD_NAME, else hostname) can be a Lease holder and sit in
    the User-Agent header: 1-253 visible ASCII characters (no CR/LF, controls or spaces)."""
    where = "POD_NAME" if os.environ.get("POD_NAME", "").strip() else "the hostname (set POD_NAME)"
    bad = [c for c in identity if not "!" <= c <= "~"]
    if bad:
        raise BadFlag(
            f"{where}: identity {identity[:80]!r} has a character a header cannot carry "
            f"({bad[0]!r}); use visible ASCII, like a pod name"
        )
    if not 1 <= len(identity) <= IDENTITY_MAX:
        raise BadFlag(f"{where}: identity is longer than {IDENTITY_MAX} characters")


def _tune_gc() -> None:
    """The import-time heap (tens of thousands of objects; kubernetes_asyncio's generated
    modules are not among them: kube.lean) is never garbage: freeze it so the cyclic GC stops
    re-scanning it while LIST pages are parsed, and collect the young generation less often.
    Measured: initial sync of 5,000 nodes 3x faster (docs/benchmarks.md, bottleneck 3)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def pod_namespace() -> str | None:
    """The namespace this process runs in: POD_NAMESPACE, else its service account's; None
    outside a pod."""
    if ns := os.environ.get("POD_NAMESPACE"):
        return ns
    try:
        return SA_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def lease_namespace(cfg: Config) -> str:
    """Where the leader Lease lives (core.pauses.own_namespace: the plugin's rule too)."""
    return own_namespace(cfg.lease_namespace, pod_namespace())


def pause_location(cfg: Config) -> PauseLocation:
    """Where the cluster pause is read: next to the Lease, by the rule the plugin writes it
    with (core.pauses.cluster_pause_location). BadFlag when that namespace is not valid."""
    try:
        return cluster_pause_location(cfg.lease_namespace, pod_namespace())
    except ValueError as exc:
        raise BadFlag(f"{cfg.source('lease_namespace')} or POD_NAMESPACE: {exc}") from None


class _StopGate:
    """The act-gate: leadership (if elected) and not shutting down."""

    def __init__(self, elector: LeaderElector | None) -> None:
        self._elector = elector
        self.stopping = False

    def may_act(self) -> bool:
        if self.stopping:
            return False
        return self._elector is None or self._elector.may_act()


class _Health:
    def __init__(
        self,
        controller: Controller,
        elector: LeaderElector | None,
        clock: Clock,
        retry_period: float,
    ) -> None:
        self._c = controller
        self._e = elector
        self._clock = clock
        self._retry = retry_period

    def readiness(self) -> tuple[bool, str]:
        return self._c.readiness()

    def liveness(self) -> tuple[bool, str]:
        ok, why = self._c.liveness()
        if not ok:
            return ok, why
        if self._e is not None:
            idle = self._clock.monotonic() - self._e.last_activity
            if idle > max(60.0, 10 * self._retry):
                return False, f"leader elector idle for {idle:.0f}s"
        return True, "ok"


async def run(cfg: Config, clock: Clock | None = None) -> int:
    """`noderecover run`: returns the exit code."""
    clock = clock or SystemClock()
    BUILD_INFO.info({"version": __version__})
    identity = default_identity()
    check_identity(identity)
    api = await load_client(cfg)
    _tune_gc()
    identity = default_identity()
    timeouts = Timeouts(request=cfg.api_timeout, stream_read=cfg.watch_silence)
    kube = KubeClient(api, timeouts, identity)
    elect = cfg.leader_elect if cfg.leader_elect is not None else in_cluster()
    elector: LeaderElector | None = None
    if elect:
        ecfg = ElectionConfig(
            lease_name=cfg.lease_name,
            lease_namespace=lease_namespace(cfg),
            lease_duration=cfg.lease_duration,
            renew_deadline=cfg.renew_deadline,
            retry_period=cfg.retry_period,
        )
        # The elector's own Lease calls are bounded by its renew deadline; every other write
        # (controller, Event recorder) ends before the Lease could pass. Both wrap one ApiClient.
        elector = LeaderElector(kube, clock, ecfg, identity, random.Random())
        kube = KubeClient(
            api, timeouts, identity, clock=clock, write_deadline=elector.write_deadline
        )
        # The Lease is released only once no write of ours can still be applied.
        elector.writes_abandoned_at = kube.writes_abandoned_at
    gate = _StopGate(elector)
    # Events go through the write path's writer: leadership asked right before each one.
    events = EventRecorder(Writer(kube, gate.may_act), clock, identity, may_write=gate.may_act)
    controller = Controller(
        kube, clock, cfg, gate=gate, events=events, namespace=pause_location(cfg).namespace
    )
    http = HttpServer(cfg.http_bind, _Health(controller, elector, clock, cfg.retry_period), clock)
    try:
        await http.start()
    except OSError as exc:  # socket.gaierror included: a name that does not resolve
        await kube.close()
        raise BadFlag(
            f"{cfg.source('http_bind')}: cannot bind {cfg.http_bind}: {_os_reason(exc)}"
        ) from None
    log.info(
        "noderecover %s starting: identity=%s leader-elect=%s dry-run=%s grace=%gs removal=%s",
        __version__,
        identity,
        elect,
        cfg.dry_run,
        cfg.grace,
        cfg.removal
        if cfg.removal.value == cfg.removal_mode.value
        else f"{cfg.removal} ({cfg.removal_mode})",
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_signals, tg.cancel_scope, gate, controller, cfg)
            tg.start_soon(controller.watch)
            tg.start_soon(events.run)
            if elector is not None:
                tg.start_soon(elector.run, controller.lead)
            else:
                tg.start_soon(controller.lead)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await http.stop()
            await kube.close()
    log.info("noderecover stopped")
    return 0


async def _signals(
    scope: anyio.CancelScope, gate: _StopGate, controller: Controller, cfg: Config
) -> None:
    """SIGTERM/SIGINT: no new writes, let in-flight calls finish (bounded), then stop all."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping", signal.Signals(signum).name)
            gate.stopping = True
            with anyio.move_on_after(cfg.api_timeout + 1.0):
                await controller.wait_idle()
            scope.cancel()
            return
