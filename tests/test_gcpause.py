"""base.gcpause: the cyclic GC off while a LIST is read, back as it was after, nested or not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from noderecover.base.gcpause import gc_paused


@pytest.fixture(autouse=True)
def gc_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_inside_and_on_again_after() -> None:
    gc.enable()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_nested_pauses_end_with_the_outermost_whatever_the_order_of_exit() -> None:
    gc.enable()
    outer, inner = gc_paused(), gc_paused()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # two LISTs at once: the first ends first
    assert not gc.isenabled(), "the other LIST is still being read"
    inner.__exit__(None, None, None)
    assert gc.isenabled()


def test_the_collector_is_back_after_an_exception() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("the LIST failed")
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
