"""Teeth: with one guard reverted, the simulation's seeds find it (issue 20, per class)."""

from __future__ import annotations

import os

import pytest
from noderecover_testkit.sim.mutations import MUTATIONS
from noderecover_testkit.sim.run import run_many

SEEDS = range(int(os.environ.get("NODERECOVER_SIM_MUTATION_SEEDS", "24")))


@pytest.fixture(scope="module")
def baseline() -> set[tuple[int, str]]:
    return set(run_many(SEEDS, jobs=2, echo=False).failures)


@pytest.mark.parametrize("cls", sorted(MUTATIONS))
def test_mutation_is_caught(cls: str, baseline: set[tuple[int, str]]) -> None:
    name, _fn = MUTATIONS[cls]
    got = set(run_many(SEEDS, jobs=2, mutation=name, echo=False).failures)
    assert got - baseline, f"class {cls} ({name}): no seed found the reverted guard"
