"""Capped exponential backoff with jitter, so a fleet of kiosks that lost the
broker together does not reconnect in lock-step."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None):
        if not 0 < min_s <= max_s:
            raise ValueError("backoff needs 0 < min_s <= max_s")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        """Delay before the next attempt: half fixed, half random ("equal jitter")."""
        cap = min(self.max_s, self.min_s * (2**self.attempt))
        self.attempt += 1
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def reset(self) -> None:
        self.attempt = 0
