"""Bounded exponential backoff with jitter.

Every retry loop in noderecover draws its delays from a `Backoff`: the delay grows by
`factor` per failure up to `cap`, and the `jitter` fraction of it is random. The default
0.5 is "equal jitter" (half fixed, half random: never less than half the nominal delay);
1.0 would be "full jitter". Replicas and nodes so never retry in lockstep, and a delay is
never unbounded. `reset()` after a success.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    # Fraction of the delay that is randomised: 1.0 = full jitter, 0.0 = none.
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self, at_least: float = 0.0) -> float:
        """The delay before the next attempt; never below `at_least` (e.g. a Retry-After)."""
        raw = min(self.cap, self.base * (self.factor**self.failures))
        self.failures += 1
        delay = raw * (1.0 - self.jitter) + raw * self.jitter * self.rng.random()
        if at_least > 0.0:
            # Honour the server's hint, plus jitter on top so retries spread out.
            delay = max(delay, at_least + at_least * 0.2 * self.rng.random())
        return delay

    def reset(self) -> None:
        self.failures = 0
