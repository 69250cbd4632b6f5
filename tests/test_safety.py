"""Circuit breaker with storm cooldown, exclusions, population and rolling windows."""

from __future__ import annotations

import dataclasses

from noderecover.core.safety import (
    BreakerState,
    breaker_step,
    breaker_wake,
    exclusion,
    in_population,
    prune,
    recent,
)
from noderecover.core.selectors import parse_selector
from noderecover.entry.config import Config, Threshold
from tests.builders import obs

CFG = Config(max_unhealthy=Threshold(40, True), storm_cooldown=300)


def test_breaker_opens_only_when_strictly_over_the_limit() -> None:
    assert not breaker_step(BreakerState(), 4, 10, 0, CFG).open  # 40% is not over 40%
    s = breaker_step(BreakerState(), 5, 10, 0, CFG)
    assert s.open and s.opened_at == 0


def test_breaker_stays_open_through_storm_cooldown() -> None:
    s = breaker_step(BreakerState(), 6, 10, 0, CFG)
    s = breaker_step(s, 2, 10, 100, CFG)  # count dropped at t=100
    assert s.open and s.below_since == 100 and breaker_wake(s, CFG) == 400
    s = breaker_step(s, 2, 10, 399, CFG)
    assert s.open
    s = breaker_step(s, 2, 10, 400, CFG)
    assert not s.open and breaker_wake(s, CFG) is None


def test_breaker_cooldown_restarts_when_count_rises_again() -> None:
    s = breaker_step(BreakerState(), 6, 10, 0, CFG)
    s = breaker_step(s, 2, 10, 100, CFG)
    s = breaker_step(s, 6, 10, 200, CFG)
    assert s.open and s.below_since is None and s.opened_at == 0
    s = breaker_step(s, 2, 10, 250, CFG)
    assert breaker_step(s, 2, 10, 549, CFG).open
    assert not breaker_step(s, 2, 10, 550, CFG).open


def test_absolute_count_threshold() -> None:
    cfg = dataclasses.replace(CFG, max_unhealthy=Threshold(2, False))
    assert not breaker_step(BreakerState(), 2, 1000, 0, cfg).open
    assert breaker_step(BreakerState(), 3, 1000, 0, cfg).open


def test_zero_percent_opens_on_any_unhealthy_node() -> None:
    cfg = dataclasses.replace(CFG, max_unhealthy=Threshold(0, True))
    assert breaker_step(BreakerState(), 1, 100, 0, cfg).open
    assert not breaker_step(BreakerState(), 0, 100, 0, cfg).open


def test_exclusion_reasons() -> None:
    assert exclusion(obs(), CFG) is None
    assert exclusion(obs(annotations={"noderecover.io/exclude": "TRUE"}), CFG) == (
        "excluded-annotation"
    )
    assert exclusion(obs(annotations={"noderecover.io/exclude": "false"}), CFG) is None
    cp = obs(labels={"node-role.kubernetes.io/control-plane": ""})
    assert exclusion(cp, CFG) == "excluded-control-plane"
    assert exclusion(cp, dataclasses.replace(CFG, exclude_control_plane=False)) is None


def test_population_follows_node_selector() -> None:
    cfg = dataclasses.replace(CFG, node_selector=parse_selector("pool in (db,web),!spot"))
    assert in_population(obs(cfg, labels={"pool": "db"}), cfg)
    assert not in_population(obs(cfg, labels={"pool": "db", "spot": "1"}), cfg)
    assert not in_population(obs(cfg, labels={"pool": "batch"}), cfg)
    assert in_population(obs(), CFG)


def test_rolling_windows() -> None:
    stamps = (0.0, 100.0, 3599.0, 3700.0)
    assert recent(stamps, 3700.0, 3600.0) == 2  # exactly one hour old is out
    assert prune(stamps, 3700.0, 3600.0) == (3599.0, 3700.0)
