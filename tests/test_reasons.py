"""The registry of blocked reasons (core/reasons.py) against the docs' table (docs/safety.md,
"Blocked reasons"), both ways."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from noderecover.base.clock import FakeClock, Timeline
from noderecover.controller import executor
from noderecover.controller.reporting import Reporter
from noderecover.core import machine, pods, policies, reasons, safety, volumes
from noderecover.core.reasons import GATES, Blocked
from noderecover.core.settings import Config

SAFETY_PAGE = Path(__file__).resolve().parents[1] / "docs" / "safety.md"
ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (gate|node) \| (.+?) \| (.+?) \|$")


def readme_table() -> dict[str, tuple[str, str, str]]:
    """The rows of the "Blocked reasons" table of docs/safety.md: reason -> (scope, means, ends)."""
    text = SAFETY_PAGE.read_text(encoding="utf-8")
    section = text.split("\n## Blocked reasons\n", 1)[1].split("\n## ", 1)[0].split("\n### ")[0]
    rows: dict[str, tuple[str, str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        m = ROW.match(line)
        assert m is not None, f"a row of the table that does not parse: {line}"
        assert m[1] not in rows, f"{m[1]} is in the table twice"
        rows[m[1]] = (m[2], m[3].strip(), m[4].strip())
    return rows


def test_every_member_is_documented_and_every_documented_reason_is_a_member() -> None:
    table = readme_table()
    members = {b.value for b in Blocked}
    assert members - table.keys() == set(), "members missing from the docs' table"
    assert table.keys() - members == set(), "reasons in the docs' table that are no member"


@pytest.mark.parametrize("reason", list(Blocked), ids=str)
def test_each_reason_says_what_holds_and_what_ends_it(reason: Blocked) -> None:
    scope, means, ends = readme_table()[reason.value]
    assert scope == ("gate" if reason.gate else "node")
    assert means and ends
    assert reason.means.strip() and reason.ends.strip() and reason.event.strip()
    assert reason.means in reason.event and reason.ends in reason.event
    assert reason.label == reason.value  # the metric label operators' queries already use


def test_labels_are_unique_and_prometheus_friendly() -> None:
    labels = [b.label for b in Blocked]
    assert len(set(labels)) == len(labels)
    assert all(re.fullmatch(r"[a-z][a-z0-9-]*", label) for label in labels)


def test_the_gates_are_the_controller_wide_holds() -> None:
    assert {
        Blocked.WATCH_STALE,
        Blocked.CIRCUIT_BREAKER,
        Blocked.EXCLUDED_SELECTOR,
        Blocked.REMOVALS_UNKNOWN,
        *policies.HOLD_REASONS,
    } == GATES
    assert executor._GATE_REASONS == GATES
    assert Blocked.PAUSE_UNKNOWN in GATES and Blocked.POLICIES_UNKNOWN in GATES
    assert Blocked.NO_POLICY in GATES
    # A live kubelet's hold waits longer: not a gate.
    assert Blocked.PODS_TERMINATING not in GATES and Blocked.KUBELET_ALIVE not in GATES


def test_the_old_constant_names_are_the_members() -> None:
    assert machine.FLAPPING is Blocked.FLAPPING
    assert machine.KUBELET_ALIVE is Blocked.KUBELET_ALIVE
    assert machine.MAX_REMOVALS is Blocked.MAX_REMOVALS
    assert machine.EXCLUDED_SELECTOR is Blocked.EXCLUDED_SELECTOR
    assert machine.MALFORMED is Blocked.MALFORMED
    assert policies.PAUSED is Blocked.PAUSED
    assert policies.CLUSTER_PAUSED is Blocked.CLUSTER_PAUSED
    assert policies.PAUSE_UNKNOWN is Blocked.PAUSE_UNKNOWN
    assert policies.NO_POLICY is Blocked.NO_POLICY
    assert policies.POLICY_CONFLICT is Blocked.POLICY_CONFLICT
    assert policies.POLICY_INVALID is Blocked.POLICY_INVALID
    assert policies.POLICIES_UNKNOWN is Blocked.POLICIES_UNKNOWN
    assert pods.PDB_BLOCKED is Blocked.PDB_BLOCKED
    assert pods.PODS_TERMINATING is Blocked.PODS_TERMINATING
    assert pods.POD_FINALIZERS is Blocked.POD_FINALIZERS
    assert pods.MALFORMED_POD is Blocked.MALFORMED_POD
    assert pods.MULTIPLE_PDBS is Blocked.MULTIPLE_PDBS
    assert volumes.VOLUMES_ATTACHED is Blocked.VOLUMES_ATTACHED
    assert safety.EXCLUDED_AUTOSCALER is Blocked.EXCLUDED_AUTOSCALER
    # Members are strings: old comparisons and JSON keep working.
    reason: str = Blocked.FLAPPING
    assert reason == "flapping" and f"{reason}" == "flapping"
    assert json.dumps({"blocked": reason}) == '{"blocked": "flapping"}'


def test_lookup_of_an_unregistered_reason() -> None:
    assert reasons.blocked("kubelet-alive") is Blocked.KUBELET_ALIVE
    assert reasons.blocked("no-such-reason") is None
    assert reasons.metric_label("no-such-reason") == "no-such-reason"
    assert reasons.event_text("no-such-reason")


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def record(
        self,
        node: str,
        uid: str,
        reason: str,
        message: str,
        type: str = "Normal",
        *,
        kind: str = "Node",
        namespace: str = "",
    ) -> None:
        self.seen.append((node, reason, message))


@pytest.mark.parametrize("reason", list(Blocked), ids=str)
def test_the_event_of_a_hold_says_what_holds_and_what_ends_it(reason: Blocked) -> None:
    events = _Events()
    more = "policy gpu paused until 2030-01-01T00:00:00Z: upgrade"
    r = Reporter(Config(), Timeline(FakeClock()), events, explain=lambda _n, _r: more)
    r.hold("w1", "uid-1", "Cordoned", reason)
    ((node, event_reason, message),) = events.seen
    assert (node, event_reason) == ("w1", "NodeRecoverBlocked")
    assert message.startswith(f"Cordoned: next step held by '{reason.value}': {reason.means}")
    assert more in message and message.endswith(reason.ends)
    assert r.blocked == {"w1": reason}
