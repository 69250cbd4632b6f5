"""Teeth: with one guard reverted, the simulation's seeds find it (issue 20, per class).

Each class runs on its own swarm configuration and seeds (mutations.MUTATIONS: the fault kinds
that make it likely, ~40 seeds, ~15-25 s on 2 cores) and counts as caught only by the
invariants meant to catch it, on a seed that the unmutated controller passes. The guards the
simulation cannot see yet are listed in mutations.UNSEEN, with why; the soak runs every entry
on more seeds: `python -m noderecover_testkit.sim --mutations --seeds 300 --unseen`.
"""

from __future__ import annotations

import dataclasses

import pytest
from noderecover_testkit.sim.mutations import MUTATIONS, UNSEEN, apply, caught


@pytest.mark.parametrize("cls", sorted(MUTATIONS))
def test_mutation_is_caught(cls: str) -> None:
    m = MUTATIONS[cls]
    new = caught(m)
    assert new, (
        f"class {cls} ({m.name}, --faults {m.faults}, seeds {m.seeds.start}-{m.seeds.stop - 1}):"
        " no seed found the reverted guard"
    )


@pytest.mark.parametrize("cls", sorted({**MUTATIONS, **UNSEEN}))
def test_mutation_applies(cls: str) -> None:
    """Every entry still finds the guard it reverts (it fails loudly once the code moved)."""
    m = {**MUTATIONS, **UNSEEN}[cls]
    apply(m.name)()


def test_planted_markers_are_caught_by_the_every_fault_seed_that_found_them() -> None:
    """5b (an annotation write carrying an ownership marker) is in UNSEEN for the swarm's CI
    seeds; the every-fault seed that found it catches its reversal (and passes without it)."""
    from noderecover_testkit.sim.world import FAULT_KINDS

    m = dataclasses.replace(UNSEEN["5b"], faults=",".join(FAULT_KINDS))
    assert caught(m, range(332191, 332192), jobs=1) == [(332191, "operator-change-undone")]
