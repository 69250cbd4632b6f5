"""The in-process benchmarks' controller set-up, shared by the throughput and RSS benchmarks
(noderecover imports only: the RSS worker measures a process that imports what `noderecover
run` does and no more)."""

from __future__ import annotations

from noderecover.controller.reconciler import Controller
from noderecover.core.policies import parse_policy
from noderecover.entry.config import Config


def read_policies(ctrl: Controller, cfg: Config, count: int) -> None:
    """Give `ctrl` `count` policies p0..p<count-1> (each selecting nodes labelled pool=p<k>;
    none: the policies are absent), as if read, before any node: the nodes are parsed for
    what they select on."""
    if count:
        ctrl.policies.policies = {
            f"p{k}": parse_policy(
                {
                    "metadata": {"name": f"p{k}", "uid": f"uid-p{k}", "generation": 1},
                    "spec": {"nodeSelector": {"matchLabels": {"pool": f"p{k}"}}},
                },
                cfg,
            )
            for k in range(count)
        }
    else:
        ctrl.policies.absent = True
    ctrl._policies_changed()
