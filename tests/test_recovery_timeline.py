"""The volume recovery timeline stamps each fact when the answer that showed it arrived, so a
detach caused by a write (the out-of-service taint, stamped by the API server's audit log when
the write completed) can never read as before that write: the demo's "by the out-of-service
taint" needs taint <= detach (CI once read the detach 10 ms before the taint, the poll having
been stamped before its request was sent)."""

from __future__ import annotations

import time
from typing import Any, cast

from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.volumes import VOLUME_ATTACHMENTS, recovery_timeline

PV = "pv-0"


class SlowCluster:
    """Answers as an API server would: the state changes while a request is in flight (the
    detach happens on the server after the request was sent, before the answer comes back)."""

    def __init__(self) -> None:
        self.detached_at: float | None = None
        self.polls = 0

    def get(self, path: str) -> dict[str, Any]:
        return {
            "metadata": {"uid": "new", "name": "mysql-0"},
            "spec": {"nodeName": "w2"},
            "status": {"phase": "Running"},
        }

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        assert method == "GET"
        if path != VOLUME_ATTACHMENTS:  # the new pod's Events: none
            return {"items": []}
        self.polls += 1
        time.sleep(0.02)  # on the wire
        if self.polls == 2:  # the write that detaches lands on the server now
            self.detached_at = time.time()
        time.sleep(0.02)  # the answer on its way back
        items = [] if self.detached_at is not None else [_va("w1")]
        return {"items": [*items, _va("w2")]}


def _va(node: str) -> dict[str, Any]:
    return {
        "spec": {"nodeName": node, "source": {"persistentVolumeName": PV}},
        "status": {"attached": True},
    }


def test_a_detach_is_never_stamped_before_the_server_made_it() -> None:
    c = SlowCluster()
    start = time.time()
    tl = recovery_timeline(
        cast(TestCluster, c),
        "mysql-0",
        old_uid="old",
        old_node="w1",
        pv=PV,
        start=start,
        timeout=5,
        hold=0.5,
    )
    assert c.detached_at is not None and tl.old_va_gone is not None
    assert start + tl.old_va_gone >= c.detached_at
    assert tl.running is not None and tl.attached is not None
