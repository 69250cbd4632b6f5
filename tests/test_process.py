"""Two real `noderecover run` processes against the fake API server: CLI, wiring, election,
HTTP endpoints and SIGTERM hand-over, end to end (sub-second timings; polls, no long sleeps)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest
from noderecover_testkit.processes import (
    child_env,
    free_port,
    metric_samples,
    replica_argv,
)

from tests.fakeapi import FakeKube


def kubeconfig(tmp: Path, server: str) -> Path:
    path = tmp / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: fake, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: u, user: {token: secret-token}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: u}}]\n"
        "current-context: fake\n"
    )
    return path


class Replica:
    def __init__(self, name: str, proc: anyio.abc.Process, port: int) -> None:
        self.name, self.proc, self.port = name, proc, port

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                f"http://127.0.0.1:{self.port}{path}", timeout=aiohttp.ClientTimeout(total=2)
            ) as r,
        ):
            return r.status, await r.text()

    async def leader(self) -> float:
        _, text = await self.get("/metrics")
        samples = metric_samples(text, "noderecover_leader")
        assert samples, "no noderecover_leader metric"
        return samples[0][1]


async def until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                if await pred():
                    return
            except (aiohttp.ClientError, OSError):
                pass
            await anyio.sleep(0.05)


@pytest.fixture
async def replicas(kube: FakeKube, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    cfg = kubeconfig(tmp_path, kube.base_url)
    out: list[Replica] = []
    for name in ("replica-a", "replica-b"):
        port = free_port()
        argv = replica_argv(
            cfg,
            port,
            "--leader-elect",
            "--lease-namespace",
            "default",
            "--lease-duration",
            "2s",
            "--renew-deadline",
            "1.5s",
            "--retry-period",
            "0.4s",
            "--grace",
            "0.5s",
            "--healthy-delay",
            "0.5s",
            "--drain-timeout",
            "0.5s",
            "--no-watch-node-leases",
            "--log-level",
            "debug",
        )
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: ASYNC230, SIM115 - test setup
        proc = await anyio.open_process(
            argv, stdout=log, stderr=log, env=child_env({"POD_NAME": name})
        )
        out.append(Replica(name, proc, port))
    try:
        yield out
    finally:
        for r in out:
            if r.proc.returncode is None:
                r.proc.kill()
            await r.proc.wait()
        for name in ("replica-a", "replica-b"):
            print(f"--- {name}\n" + (tmp_path / f"{name}.log").read_text()[-3000:])


async def test_two_replicas_one_acts_and_sigterm_hands_over(
    kube: FakeKube, replicas: list[Replica]
) -> None:
    kube.add_node("cp", labels={"node-role.kubernetes.io/control-plane": ""})
    for i in range(1, 5):
        kube.add_node(f"w{i}")
    kube.add_pod("mysql-0", "default", "w1", "StatefulSet", owner_name="mysql")

    async def all_ready() -> bool:
        return all([(await r.get("/readyz"))[0] == 200 for r in replicas])

    await until(all_ready, what="both ready")

    async def one_leader() -> bool:
        return sorted([await r.leader() for r in replicas]) == [0.0, 1.0]

    await until(one_leader, what="exactly one leader")
    lease = kube.get_lease("default", "noderecover")
    assert lease is not None
    holder = lease["spec"]["holderIdentity"]
    leader = next(r for r in replicas if r.name == holder)
    follower = next(r for r in replicas if r is not leader)
    assert await leader.leader() == 1.0 and await follower.leader() == 0.0

    kube.set_kubelet_alive("w1", False)
    kube.set_node_ready("w1", "Unknown", "NodeStatusUnknown")

    async def w1_gone() -> bool:
        return kube.get_node("w1") is None

    await until(w1_gone, what="w1 deleted")
    assert len(kube.requests_matching("DELETE", r"^/api/v1/nodes/w1$")) == 1
    assert kube.get_pod("default", "mysql-0") is None  # forced after the drain timeout
    for n in ("w2", "w3", "w4"):
        assert not (kube.get_node(n) or {})["spec"].get("unschedulable")

    status, body = await leader.get("/healthz")
    assert status == 200 and "ok" in body
    assert (await leader.get("/nope"))[0] == 404
    _, metrics = await leader.get("/metrics")
    assert 'noderecover_actions_total{action="delete",result="ok"} 1.0' in metrics
    assert "secret-token" not in metrics

    # SIGTERM the leader: it exits 0 and releases the Lease; the follower takes over fast.
    t0 = anyio.current_time()
    leader.proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(10):
        assert await leader.proc.wait() == 0

    async def follower_leads() -> bool:
        lease = kube.get_lease("default", "noderecover")
        return lease is not None and lease["spec"].get("holderIdentity") == follower.name

    await until(follower_leads, timeout=5, what="follower took over")
    handover = anyio.current_time() - t0
    assert handover < 2.0  # well before the 2 s lease would have expired unreleased
    await until(lambda: _is_leader(follower), what="follower metric")
    follower.proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(10):
        assert await follower.proc.wait() == 0


async def _is_leader(r: Replica) -> bool:
    return await r.leader() == 1.0


async def test_unreachable_api_server_is_retried_not_fatal(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    port = free_port()
    log = tmp_path / "r.log"
    with log.open("wb") as out:
        proc = await anyio.open_process(
            replica_argv(cfg, port),
            stdout=out,
            stderr=out,
            env=child_env(),
        )
        r = Replica("r", proc, port)
        try:

            async def not_ready() -> bool:
                return (await r.get("/readyz"))[0] == 503

            await until(not_ready, what="serving, not ready")

            async def retried() -> bool:
                return log.read_text().count("retrying in") >= 2

            await until(retried, what="two logged retries")
            assert proc.returncode is None  # still running
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
