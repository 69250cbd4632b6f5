"""noderecover's side of the RSS rows of bench/pass_throughput.py (``--rss``), in a process
of its own: what `noderecover run` imports and does before its first LIST (the kubeconfig's
ApiClient, `entry.app._tune_gc`), then the node watcher's LIST of the loopback API server
(pages of 500, through `KubeClient` and aiohttp, as against a real one) and the first pass;
then one JSON line: VmRSS and VmHWM (/proc/self/status) after the imports, and after the
sync with the N nodes held, and the sync's wall and CPU time.

    python -m bench.rss_worker KUBECONFIG POLICIES

Only the standard library and noderecover are imported (not bench.nodegen nor the testkit:
they are not in a deployed process).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bench.common import status_mib
from bench.controllers import read_policies
from noderecover.base.clock import SystemClock
from noderecover.controller.reconciler import Controller
from noderecover.entry import app  # everything `noderecover run` imports
from noderecover.entry.config import Config
from noderecover.kube.client import KubeClient, Timeouts
from noderecover.kube.kubeconfig import load_api_client


async def sync(kubeconfig: str, policies: int) -> dict[str, object]:
    cfg = Config()
    api = await load_api_client(kubeconfig, None, "bench")
    app._tune_gc()  # as app.run, right after loading the client and before any LIST
    kube = KubeClient(api, Timeouts(request=cfg.api_timeout), "bench")
    ctrl = Controller(kube, SystemClock(), cfg)
    read_policies(ctrl, cfg, policies)
    before = status_mib()
    c0, t0 = time.process_time(), time.perf_counter()
    await ctrl.node_watcher._list()
    ctrl.node_watcher.last_progress = time.monotonic() + 3600
    ctrl.decide_all()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = status_mib()
    nodes = len(ctrl.nodes)
    await kube.close()
    return {
        "nodes": nodes,
        "rss_before_mib": before["VmRSS"],
        "rss_mib": after["VmRSS"],
        "hwm_mib": after["VmHWM"],
        "sync_s": wall,
        "sync_cpu_s": cpu,
    }


def main() -> int:
    kubeconfig, policies = sys.argv[1], int(sys.argv[2])
    print(json.dumps(asyncio.run(sync(kubeconfig, policies))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
