"""The cluster-wide pause's one rule (core.pauses, pure): where it lives, what it says, that
nothing unreadable is "no pause", and what a duration means."""

from __future__ import annotations

from typing import Any

import pytest

from noderecover.core.nodes import format_time
from noderecover.core.pauses import (
    DEFAULT_CLUSTER_PAUSE,
    FALLBACK_NAMESPACE,
    MAX_PAUSE,
    PAUSE_PROPAGATION_BOUND,
    PAUSE_READ_TIMEOUT,
    PAUSE_WATCH_SILENCE,
    PAUSE_WATCH_TIMEOUT,
    Pause,
    PauseLocation,
    cluster_pause_location,
    label_error,
    parse_cluster_pause,
    pause_data,
    resolve_until,
    subdomain_error,
)
from noderecover.core.policies import PAUSE_UNKNOWN, pause_hold
from tests.builders import T0


def _cm(data: Any, created: float | None = T0) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "noderecover-pause"}
    if created is not None:
        meta["creationTimestamp"] = format_time(created)
    return {"metadata": meta, "data": data}


def test_the_pause_lives_next_to_the_leader_lease() -> None:
    assert cluster_pause_location("ops", "noderecover") == PauseLocation("ops")
    assert cluster_pause_location(None, "noderecover") == PauseLocation("noderecover")
    assert cluster_pause_location("", "team-a") == PauseLocation("team-a")
    assert cluster_pause_location(None, None) == PauseLocation(FALLBACK_NAMESPACE)
    loc = cluster_pause_location(None, "noderecover")
    assert loc.path == "/api/v1/namespaces/noderecover/configmaps/noderecover-pause"
    with pytest.raises(ValueError, match="DNS-1123 label"):
        cluster_pause_location("../nodes", None)


@pytest.mark.parametrize("bad", ["", "A", "a/b", "a..b", "-a", "a" * 64, "a b", "%2e%2e"])
def test_a_namespace_must_be_a_dns_label(bad: str) -> None:
    assert label_error(bad) is not None


@pytest.mark.parametrize("bad", ["", "Gpu", "a/b", "a..b", "-a", "a" * 254, "..", "a?b"])
def test_an_object_name_must_be_a_dns_subdomain(bad: str) -> None:
    assert subdomain_error(bad) is not None


def test_good_names_pass() -> None:
    assert label_error("noderecover") is None and subdomain_error("gpu.pool-1") is None


def test_a_pause_that_exists_is_never_no_pause_however_unreadable() -> None:
    """Garbage where `until` should be, no `data` at all, no timestamps: still a pause."""
    now = T0 + 60
    for raw in (
        _cm({"until": "tomorrow"}),
        _cm(None),
        _cm("not a map"),
        _cm({"until": 12}),
        _cm({"until": "tomorrow"}, created=None),
        {"metadata": "garbage", "data": {"until": None}},
        {},
    ):
        pause, warning = parse_cluster_pause(raw, now)
        assert pause is not None and pause.active(now), raw
        assert warning, raw
    assert parse_cluster_pause(None, now) == (None, None)


def test_an_unreadable_until_pauses_an_hour_from_its_start() -> None:
    pause, _ = parse_cluster_pause(_cm({"until": "soon"}), T0 + 10)
    assert pause == Pause(T0 + DEFAULT_CLUSTER_PAUSE, "")


def test_a_replaced_pause_is_capped_from_its_own_start_not_the_objects_creation() -> None:
    """The plugin updates the object in place (never through "no pause"): `since` says when
    this pause began, so a ConfigMap created 6 days ago does not cut a new 2-day pause short."""
    created = T0 - 6 * 86400
    data = pause_data(T0 + 2 * 86400, "again", since=T0)
    pause, warning = parse_cluster_pause(_cm(data, created), T0 + 5)
    assert pause == Pause(T0 + 2 * 86400, "again") and warning is None
    # ...and `since` cannot stretch it: not before the creation, not after now.
    far = {"until": format_time(T0 + 30 * 86400), "since": format_time(T0 + 20 * 86400)}
    pause, warning = parse_cluster_pause(_cm(far, T0), T0 + 5)
    assert pause is not None and pause.until == T0 + 5 + MAX_PAUSE and warning
    early = {"until": format_time(T0 + 6 * 86400), "since": format_time(T0 - 30 * 86400)}
    pause, _ = parse_cluster_pause(_cm(early, T0), T0 + 5)
    assert pause is not None and pause.until == T0 + 6 * 86400


def test_a_duration_counts_from_the_servers_clock() -> None:
    server = T0 + 0.4
    assert resolve_until(5400, None, server, "--for") == T0 + 5401  # ceil: never shorter
    assert resolve_until(None, T0 + 600, server, "--until") == T0 + 600
    for seconds, until, match in (
        (0.0, None, "longer than 0s"),
        (8 * 86400, None, "at most 7 days"),
        (None, T0 - 1, "not in the future"),
        (None, T0 + 8 * 86400, "at most 7 days"),
    ):
        with pytest.raises(ValueError, match=match):
            resolve_until(seconds, until, server, "--x")


def test_the_propagation_bound_covers_a_silent_watch_and_a_list() -> None:
    # A quiet watch is proven current each time the server ends it at its timeoutSeconds
    # (PAUSE_WATCH_TIMEOUT jittered up to twice that, an integer): every such stream ends
    # before PAUSE_WATCH_SILENCE, after which a stream is hung and the ConfigMap LISTed
    # again; the answer is believed past that silence and that LIST's read.
    assert 2 * PAUSE_WATCH_TIMEOUT <= PAUSE_WATCH_SILENCE  # every timeout asked is < 2x
    assert PAUSE_PROPAGATION_BOUND >= PAUSE_WATCH_SILENCE + PAUSE_READ_TIMEOUT
    assert PAUSE_PROPAGATION_BOUND == 15.0  # docs/pauses.md states it


def test_an_unknown_pause_holds_like_a_pause() -> None:
    assert pause_hold(None, None, T0, cluster_known=False) == PAUSE_UNKNOWN
    assert pause_hold(Pause(T0 - 1, ""), None, T0, cluster_known=False) == PAUSE_UNKNOWN
