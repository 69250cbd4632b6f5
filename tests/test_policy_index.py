"""Policy classification through an index (issue 24): a node is tried only against the
policies whose selectors it may match. Properties: the index governs exactly as the linear
scan (`govern`), conflicts and invalid or unreadable policies included; and after a policy
change the view, classifying again only the nodes the changed policies may govern, is the view
a full re-index gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from noderecover.base.clock import FakeClock
from noderecover.controller.reconciler import Controller
from noderecover.core.policies import Policy, PolicyIndex, govern
from noderecover.core.selectors import Requirement, Selector
from noderecover.core.settings import Config
from tests.builders import T0, obs
from tests.conftest import make_config

KEYS = ["a", "b", "c"]
VALUES = ["x", "y", "z"]

requirement = st.builds(
    Requirement,
    st.sampled_from(KEYS),
    st.sampled_from(["=", "!=", "exists", "!exists", "in", "notin"]),
    st.frozensets(st.sampled_from(VALUES), min_size=1, max_size=3),
).map(
    # "=" and "!=" carry one value, "exists" and "!exists" none (as parse_selector makes them).
    lambda r: Requirement(
        r.key,
        r.op,
        frozenset(sorted(r.values)[:1])
        if r.op in ("=", "!=")
        else (frozenset() if r.op.endswith("exists") else r.values),
    )
)
selector = st.one_of(
    st.none(),  # unreadable: selects nothing
    st.lists(requirement, max_size=3).map(lambda rs: Selector(tuple(rs))),  # []: every node
)
# Reads every key, in every policy set of the second test: the keys the policies read stay
# the same (a change of them re-lists the nodes, and a re-list indexes every node anyway).
READS_ALL = Policy(
    name="all",
    selector=Selector(tuple(Requirement(k, "exists") for k in KEYS)),
    cfg=Config(),
)


@st.composite
def policy_sets(draw: st.DrawFn) -> dict[str, Policy]:
    names = draw(st.lists(st.sampled_from(list("pqrstuvw")), min_size=1, max_size=6, unique=True))
    out = {}
    for n in names:
        valid = draw(st.booleans()) or draw(st.booleans())
        out[n] = Policy(
            name=n,
            selector=draw(selector),
            cfg=Config() if valid else None,
            error=None if valid else f"{n} is broken",
        )
    return out


labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@settings(max_examples=500, deadline=None)
@given(policy_sets(), st.lists(labels, min_size=1, max_size=10))
def test_the_index_governs_as_the_linear_scan(
    policies: dict[str, Policy], nodes: list[Any]
) -> None:
    index = PolicyIndex(policies)
    for node in nodes:
        assert index.govern(node) == govern(policies, node), (policies, node)


class NoApi:
    async def request(self, *a: Any, **kw: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("no API call expected")


def view_state(c: Controller) -> tuple[Any, ...]:
    v = c.view
    return (
        dict(v.pool_of),
        {p: s for p, s in v.pools.items() if s},
        dict(v.held),
        set(v.population),
        set(v.watchlist),
    )


def with_policies(nodes: list[dict[str, str]], steps: list[dict[str, Policy]]) -> Controller:
    cfg = make_config(extra_labels=frozenset(KEYS))
    c = Controller(NoApi(), FakeClock(start_wall=T0), cfg)  # type: ignore[arg-type]
    c.view.resync([(f"n{i}", obs(c.cfg, name=f"n{i}", labels=lab)) for i, lab in enumerate(nodes)])
    c.node_watcher.synced = True
    for policies in steps:
        c.policies.policies = {**policies, "all": READS_ALL}
        c._policies_changed()
        assert c.view.keys_current
    return c


@settings(max_examples=100, deadline=None)
@given(st.lists(labels, min_size=1, max_size=12), st.lists(policy_sets(), min_size=1, max_size=4))
def test_a_policy_change_reclassifies_as_a_full_reindex(
    nodes: list[dict[str, str]], steps: list[dict[str, Policy]]
) -> None:
    stepped = with_policies(nodes, steps)
    fresh = with_policies(nodes, steps[-1:])
    assert view_state(stepped) == view_state(fresh)
