"""The script's side of the RSS rows of bench/pass_throughput.py (``--rss``), in a process of
its own, run by $LIBERATOR_PYTHON (the sync `kubernetes` client: docs/benchmarks.md, Setup).

What the script holds at the top of every poll: one ``list_node()`` result (V1NodeList of
V1Node models), read with its own client and kubeconfig loader (`baseline_liberator`'s
imports, `config.load_kube_config` and `client.CoreV1Api()` as its `main`). Prints one JSON
line: VmRSS and VmHWM (/proc/self/status) after the imports, and while holding the list.

    $LIBERATOR_PYTHON -m bench.liberator_rss KUBECONFIG     # from the repository's root
"""

from __future__ import annotations

import json
import sys
import time

from kubernetes import client, config

from bench import baseline_liberator  # the script's module: its imports (sync kubernetes client)
from bench.common import status_mib  # standard library only


def main() -> int:
    config.load_kube_config(config_file=sys.argv[1])  # as its main
    v1 = client.CoreV1Api()
    before = status_mib()
    t0 = time.perf_counter()
    ret = v1.list_node(watch=False)  # as baseline_liberator.node_monitor
    wall = time.perf_counter() - t0
    after = status_mib()
    print(
        json.dumps(
            {
                "nodes": len(ret.items),
                "rss_before_mib": before["VmRSS"],
                "rss_mib": after["VmRSS"],
                "hwm_mib": after["VmHWM"],
                "list_s": wall,
                "script": baseline_liberator.__name__,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
