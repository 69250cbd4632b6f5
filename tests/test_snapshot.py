"""The Snapshot (controller/snapshot.py): what `plan` and the kubectl plugin read instead of
the controller's internals, frozen at one instant."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from noderecover.base.clock import FakeClock
from noderecover.controller.reconciler import Controller
from noderecover.controller.snapshot import FLAGS, NONE
from noderecover.core.machine import Kind
from noderecover.core.safety import BreakerState
from noderecover.core.selectors import parse_selector
from tests.builders import T0, obs
from tests.conftest import make_config

SRC = Path(__file__).resolve().parents[1] / "src" / "noderecover"


def controller(**cfg: object) -> Controller:
    no_client: Any = None
    c = Controller(no_client, FakeClock(start_wall=T0), make_config(**cfg))
    c.view.resync([(f"n{i}", obs(c.cfg, name=f"n{i}")) for i in range(4)])
    c.node_watcher.synced = True
    c.policies.absent = True
    c._policies_changed()
    return c


def test_the_snapshot_holds_each_node_and_its_last_decision() -> None:
    c = controller()
    c.view.event("MODIFIED", "n1", obs(c.cfg, name="n1", ready="Unknown"))
    c.decide_all()
    snap = c.snapshot()
    assert snap.now == c.timeline.now()
    assert [n.name for n in snap.nodes] == ["n0", "n1", "n2", "n3"]
    by_name = {n.name: n for n in snap.nodes}
    sick = by_name["n1"]
    d = c.decisions["n1"]
    assert sick.unhealthy and sick.decided and sick.phase is d.record.phase
    assert sick.action is Kind.PERSIST and sick.next_at == d.wake_at and sick.why == d.why
    assert sick.uid == "uid-n1" and sick.ready is not None and sick.ready.status == "Unknown"
    assert sick.policy == FLAGS and sick.ungoverned is None and sick.selected
    assert sick.removal_mode == c.cfg.removal_mode and sick.excluded is None
    healthy = by_name["n0"]
    assert not healthy.decided and not healthy.unhealthy and healthy.phase is None
    assert not snap.policy_mode and not snap.pool_breaker_open and not snap.notes


def test_a_node_outside_the_node_selector_is_not_selected() -> None:
    c = controller(node_selector=parse_selector("pool=a"))
    c.view.event("MODIFIED", "n0", obs(c.cfg, name="n0", labels={"pool": "a"}))
    snap = c.snapshot()
    by_name = {n.name: n for n in snap.nodes}
    assert by_name["n0"].selected and by_name["n0"].policy == FLAGS
    assert not by_name["n1"].selected and by_name["n1"].policy == NONE


def test_the_snapshot_is_frozen_and_a_copy() -> None:
    c = controller()
    c.decide_all()
    snap = c.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.now = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.nodes[0].why = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.breakers[""] = BreakerState()  # type: ignore[index]
    # Later passes (and the controller's own state) do not change it.
    c.pools.breakers[""] = BreakerState(open=True, opened_at=T0)
    c.pools.global_breaker = BreakerState(open=True, opened_at=T0)
    assert not snap.pool_breaker_open and not snap.global_breaker.open
    assert c.snapshot().pool_breaker_open


def test_plan_and_the_plugin_read_the_snapshot_not_the_controller() -> None:
    """entry/plan.py builds a Controller only to ask it for a preview (a Snapshot);
    everything it shows comes from the Snapshot, and kubectl.py reads plan's Preview only."""
    tree = ast.parse((SRC / "entry" / "plan.py").read_text())
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "Controller"]
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and n.attr == "preview"
        and isinstance(n.value, ast.Call)
        and isinstance(n.value.func, ast.Name)
        and n.value.func.id == "Controller"
    ]
    assert len(uses) == 1 and len(calls) == 1  # the one `Controller(...).preview()`
    for path in (SRC / "entry" / "plan.py", SRC / "entry" / "kubectl.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "noderecover.controller"
            ):
                names = {(node.module, a.name) for a in node.names}
                assert names <= {
                    ("noderecover.controller.reconciler", "Controller"),
                    ("noderecover.controller.snapshot", "Snapshot"),
                }, (path.name, names)
