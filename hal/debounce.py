"""Stable-level debouncing, shared by every button backend.

A change counts only once the raw level has stayed put for `stable_s`. The
debouncer never reads a clock and never starts a thread: callers pass `now`, so
the same code runs on a Pi, in the simulator at 100x speed, and in tests.
"""

from __future__ import annotations

import threading

from pinkbutton.hal.base import ButtonEvent


class StableLevelDebouncer:
    """Turns raw level changes into debounced `ButtonEvent`s.

    Note on threads: `edge()` is called from the backend's thread (gpiozero's
    callback thread on a Pi) while `poll()`, `next_deadline()` and `level` are
    called from the owner thread, so every method takes `_lock`. Nothing slow
    happens under the lock.
    """

    def __init__(self, stable_s: float = 0.05, initial_level: bool = False) -> None:
        if stable_s < 0:
            raise ValueError(f"debounce time must be >= 0 s, got {stable_s}")
        self._stable_s = stable_s
        self._lock = threading.Lock()
        self._level = initial_level  # debounced
        self._raw = initial_level
        self._run_start = 0.0  # time of the raw edge that started the current raw run
        self._confirmed: list[ButtonEvent] = []

    @property
    def stable_s(self) -> float:
        return self._stable_s

    @property
    def level(self) -> bool:
        """The debounced level as of the last `edge()`/`poll()`."""
        with self._lock:
            return self._level

    def edge(self, level: bool, now: float) -> None:
        """Record that the raw input is now `level` (a repeat of the raw level is ignored)."""
        with self._lock:
            if level == self._raw:
                return
            # The run that ends here may already have been long enough; confirm it
            # now, or a later poll would see only the newest run and lose it.
            self._settle(now)
            self._raw = level
            self._run_start = now

    def poll(self, now: float) -> list[ButtonEvent]:
        """Changes confirmed by `now` and not yet returned, oldest first."""
        with self._lock:
            self._settle(now)
            confirmed, self._confirmed = self._confirmed, []
            return confirmed

    def next_deadline(self) -> float | None:
        """When `poll()` has something to return (possibly already past), or None."""
        with self._lock:
            if self._confirmed:
                return self._confirmed[0].confirmed_at
            if self._raw != self._level:
                return self._run_start + self._stable_s
            return None

    def _settle(self, now: float) -> None:
        # Compare against run_start + stable_s (not now - run_start) so that a
        # poll at exactly next_deadline() confirms, whatever the float rounding.
        if self._raw == self._level:
            return  # nothing pending: an edge back to the debounced level cancels
        deadline = self._run_start + self._stable_s
        if now >= deadline:
            self._confirmed.append(
                ButtonEvent(pressed=self._raw, at=self._run_start, confirmed_at=deadline)
            )
            self._level = self._raw
