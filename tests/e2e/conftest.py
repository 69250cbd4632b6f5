"""Session fixtures for the end-to-end tests against a real control plane.

``cluster`` starts one :class:`TestCluster` for the whole session (building the pinned
binaries first if the cache lacks them); ``clean_cluster`` resets it to its baseline before
and after a test. When a test that uses the cluster fails, the tails of every component's
log are attached to the report.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from noderecover_testkit import build
from noderecover_testkit.cluster import TestCluster
from noderecover_testkit.replicas import NAMESPACE, Replicas, sa_kubeconfig

from .ledger import Ledger, Row, table

_CLUSTER: list[TestCluster] = []
# The suite's ledger rows travel in the test reports' user_properties (under this key), so
# the table printed at the end holds every row whether the tests ran in this process or in
# pytest-xdist workers (the test command runs the e2e part on two).
_LEDGER_KEY = "noderecover-ledger-row"


@pytest.fixture(scope="session")
def testcluster_bin_dir() -> Path:
    """Folder of the pinned binaries; builds them if missing (fails if Go is absent)."""
    if not build.is_built() and shutil.which("go") is None:
        pytest.fail("test control plane not built and no Go toolchain to build it: install Go")
    t0 = time.monotonic()
    d = build.ensure_built()
    if time.monotonic() - t0 > 1:
        print(f"\n[e2e] built the control plane in {time.monotonic() - t0:.0f}s")
    return d


@pytest.fixture(scope="session")
def cluster(testcluster_bin_dir: Path) -> Iterator[TestCluster]:
    """One real control plane for the session (see TestCluster; stopped at the end)."""
    yield from running(TestCluster(bin_dir=testcluster_bin_dir), "e2e")


def running(c: TestCluster, label: str) -> Iterator[TestCluster]:
    """Start ``c``, yield it (its logs attached to failing tests' reports), stop it."""
    c.start()
    print(f"\n[{label}] cluster up in {c.start_seconds:.1f}s, kubeconfig {c.kubeconfig}")
    _CLUSTER.append(c)
    try:
        yield c
    finally:
        _CLUSTER.remove(c)
        c.stop()


@pytest.fixture
def clean_cluster(cluster: TestCluster) -> Iterator[TestCluster]:
    """The session cluster, reset to its baseline before and after the test."""
    cluster.reset()
    yield cluster
    cluster.reset()


def forget_noderecover(c: TestCluster) -> None:
    """Remove what earlier noderecover runs left in the cluster: the leader Lease, Events
    (a new leader seeds its removal budget and breaker window from NodeRecoverRemoved
    Events) and the ``noderecover.io/*`` annotations on Nodes."""
    c.api("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/noderecover")
    c.api("DELETE", "/api/v1/namespaces/default/events")
    for node in c.request("GET", "/api/v1/nodes")["items"]:
        ours = [
            k for k in node["metadata"].get("annotations") or {} if k.startswith("noderecover.io/")
        ]
        if ours:
            c.request(
                "PATCH",
                f"/api/v1/nodes/{node['metadata']['name']}",
                {"metadata": {"annotations": dict.fromkeys(ours)}},
            )


@pytest.fixture
def ledger_for(request: pytest.FixtureRequest) -> Iterator[Callable[[TestCluster], Ledger]]:
    """``ledger_for(cluster)`` starts the test's :class:`Ledger`; at teardown it is closed,
    added to the suite table and its invariants are asserted (all must be 0)."""
    started: list[Ledger] = []

    def start(c: TestCluster) -> Ledger:
        led = Ledger(c, request.node.name)
        started.append(led)
        return led

    yield start
    for led in started:
        row = led.close()
        request.node.user_properties.append((_LEDGER_KEY, dataclasses.asdict(row)))
        print(f"\n[ledger] {row.test}: faults {row.faults}; details {row.details}")
        assert not row.violations(), f"invariants broken: {row.violations()}: {row.details}"


@pytest.fixture(scope="session")
def sa_config(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kubeconfig of the noderecover ServiceAccount (RBAC of ``manifests/base`` only)."""
    return sa_kubeconfig(cluster, tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture
def led(clean_cluster: TestCluster, ledger_for: Callable[[TestCluster], Ledger]) -> Ledger:
    """The test's ledger on the session cluster, started once earlier noderecover state is
    forgotten (see :func:`forget_noderecover`)."""
    forget_noderecover(clean_cluster)
    return ledger_for(clean_cluster)


@pytest.fixture
def nr(
    clean_cluster: TestCluster, sa_config: Path, tmp_path: Path, led: Ledger
) -> Iterator[Replicas]:
    """noderecover replicas on the session cluster (least privilege), all killed at the end;
    the test's :func:`led` ledger is checked after them."""
    reps = Replicas(clean_cluster, sa_config, tmp_path)
    try:
        yield reps
    finally:
        reps.close()
        print("\n" + reps.tails(60))
    for r in reps.started:
        forbidden = [line for line in r.log_lines() if " 403 " in str(line.get("msg", ""))]
        assert not forbidden, f"{r.name} was refused by RBAC: {forbidden[:3]}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = [
        Row(**value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "teardown"
        for key, value in getattr(report, "user_properties", ())
        if key == _LEDGER_KEY
    ]
    if rows:
        terminalreporter.section("noderecover ledger (e2e faults and invariants)")
        terminalreporter.write_line(table(sorted(rows, key=lambda r: r.test)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _CLUSTER and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("testcluster logs (tails)", _CLUSTER[0].log_tails(25)))
    return report
