"""Teeth: with one guard reverted, the simulation's seeds find it (issue 20, per class).

Each class runs on its own swarm configuration (mutations.MUTATIONS: the fault kinds that make
it likely) and counts as caught only by the invariants meant to catch it, on a seed that the
unmutated controller passes.
"""

from __future__ import annotations

import os

import pytest
from noderecover_testkit.sim.mutations import MUTATIONS, caught

SEEDS = range(int(os.environ.get("NODERECOVER_SIM_MUTATION_SEEDS", "40")))


@pytest.mark.parametrize("cls", sorted(MUTATIONS))
def test_mutation_is_caught(cls: str) -> None:
    m = MUTATIONS[cls]
    new = caught(m, SEEDS)
    assert new, f"class {cls} ({m.name}, --faults {m.faults}): no seed found the reverted guard"
