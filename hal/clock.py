"""Injectable time source.

Everything that needs "now" takes a Clock, so tests and the simulator can run
time faster than the wall and the state machine never reads a clock itself.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Real time: monotonic for ordering and timers, wall for human-facing stamps."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock(Clock):
    """Manually advanced clock for tests. `sleep` advances time instead of blocking."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_767_225_600.0) -> None:
        self._lock = threading.Lock()  # advanced from test thread, read from HAL threads
        self._mono = start
        self._wall_offset = wall_start - start

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def wall(self) -> float:
        with self._lock:
            return self._mono + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._lock:
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock (NTP step, RTC reset); monotonic time is untouched."""
        with self._lock:
            self._wall_offset += seconds


def iso8601(wall: float) -> str:
    """UTC ISO 8601 with milliseconds, e.g. 2026-01-01T00:00:00.000Z."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
