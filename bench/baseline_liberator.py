# coding: UTF-8
"""The seed's "liberator" (shared/seed/statefulset-takeover.md, main.py), kept faithful.

The baseline noderecover is benchmarked against. Same logic as the original: list all nodes
every 5 s with the synchronous ``kubernetes`` client, count consecutive polls that saw a
node's Ready condition not "True" (the first sighting is count 0), delete the node once the
count passes 3 (so on the 5th NotReady poll, ~20 s), reset the count on one Ready poll.

Changed, and only for running it outside a pod with today's client:
- ``--kubeconfig PATH`` loads that kubeconfig instead of the in-cluster config;
- ``--interval SECONDS`` (default 5, the original) for benchmarking;
- ``flush=True`` on the prints so a benchmark can timestamp them from a pipe;
- ``delete_node(name, body=body)``: kubernetes 37's generated API takes ``body`` by
  keyword only (``delete_node(name, body)`` fails validation there);
- ``conditions or ()``: a node kwok has not initialised yet has no conditions, and the
  original would die on it with a TypeError (it only catches ApiException).

Its user agent is the client's default (``OpenAPI-Generator/<version>/python``), distinct
from noderecover's. Needs ``pip install kubernetes`` (the sync client; see docs/benchmarks.md).

    python bench/baseline_liberator.py --kubeconfig ~/.kube/config
"""

from __future__ import annotations

import argparse
import signal
import sys
from time import sleep
from types import FrameType
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

uk_node: dict[str, int] = {}  # key: name of a node whose state went unknown, value: count


## stop-request signal handler
def handler(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


## delete a node
def node_delete(v1: Any, name: str) -> None:
    body = client.V1DeleteOptions()
    try:
        v1.delete_node(name, body=body)  # was (name, body): body is keyword-only in v37
        print(f"delete node {name} done", flush=True)
    except ApiException as e:
        print(f"Exception when calling CoreV1Api->delete_node: {e}\n", flush=True)


## watch the nodes
def node_monitor(v1: Any) -> None:
    try:
        ret = v1.list_node(watch=False)
        for i in ret.items:
            n_name = i.metadata.name
            for j in i.status.conditions or ():  # `or ()`: a node not initialised yet
                if j.type == "Ready" and j.status != "True":
                    if n_name in uk_node:
                        uk_node[n_name] += 1
                    else:
                        uk_node[n_name] = 0
                    print(f"unknown {n_name}  count={uk_node[n_name]}", flush=True)
                    # the counter passed 3: delete the node
                    if uk_node[n_name] > 3:
                        del uk_node[n_name]
                        node_delete(v1, i.metadata.name)
                # Ready even once: reset the counter
                if j.type == "Ready" and j.status == "True" and n_name in uk_node:
                    del uk_node[n_name]
    except ApiException as e:
        print(f"Exception when calling CoreV1Api->list_node: {e}\n", flush=True)


## main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig to load")
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval (s)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, handler)  # signal handling
    config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    # ^ credentials (was: config.load_incluster_config())
    v1 = client.CoreV1Api()  # instantiate
    # monitoring loop
    while True:
        node_monitor(v1)
        sleep(args.interval)  # poll interval


if __name__ == "__main__":
    sys.exit(main())
