"""Which nodes a reconcile pass decides: those that changed, and those whose time came.

A pass costs what changed, not the cluster (issue 24). Invariants:
- Every input of a node's decision that can change is either an event that marks the node
  dirty (`touch`: its Node, its heartbeat Lease, its record or action, its tombstone), a
  fact of its pool whose change re-decides the pool's nodes (breaker, slots, removals:
  `Pools.limits`), a cluster-wide fact whose change makes the next pass a full one
  (`Controller._facts`: watch freshness, policies known, pauses, the wall clock's drift...),
  or a time: every time a decision depends on (its `wake_at`, its Lease turning stale, its
  start-up allowance ending, its removal leaving the breaker window) is a timer here, so a
  node not decided again misses no deadline.
- A full pass decides every node that can need a decision (as before issue 24) and resets
  the counts; it runs on taking the lead, after a re-list or a policy change, when a
  cluster-wide fact changed, and whenever a preview asks (`Controller.decide_all`).
- The gates at the write (controller.writes, `Controller.hold`) are asked as before: this
  only chooses which nodes a pass decides again, never what a write may do.
"""

from __future__ import annotations

import heapq
import math


class Agenda:
    def __init__(self) -> None:
        self.dirty: set[str] = set()  # nodes to decide again in the next pass
        self.full = True  # the next pass decides every node
        self._heap: list[tuple[float, str]] = []
        self._at: dict[str, float] = {}  # node -> its earliest pending timer
        # Nodes a pass decides (the candidates), by pool (None: no pool), as last decided.
        self._pool_of: dict[str, str | None] = {}
        self.members: dict[str | None, set[str]] = {}

    def touch(self, name: str) -> None:
        self.dirty.add(name)

    def at(self, name: str, when: float) -> None:
        """Decide `name` again at `when` (timeline) at the latest."""
        if when < self._at.get(name, math.inf):
            self._at[name] = when
            heapq.heappush(self._heap, (when, name))

    def due(self, now: float) -> None:
        """The nodes whose timer came: dirty."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, name = heapq.heappop(heap)
            if self._at.get(name) == when:
                del self._at[name]
                self.dirty.add(name)

    def next_at(self) -> float:
        """The earliest pending timer (inf: none)."""
        heap = self._heap
        while heap and self._at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # superseded by an earlier one that fired
        return heap[0][0] if heap else math.inf

    def take(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def place(self, name: str, candidate: bool, pool: str | None) -> None:
        """Whether `name` is a candidate now, and in which pool."""
        if name in self._pool_of:
            old = self._pool_of[name]
            if candidate and old == pool:
                return
            self.members[old].discard(name)
            del self._pool_of[name]
        if candidate:
            self._pool_of[name] = pool
            self.members.setdefault(pool, set()).add(name)

    def reset(self) -> None:
        """Forget the candidates (a full pass places them all again)."""
        self._pool_of = {}
        self.members = {}
