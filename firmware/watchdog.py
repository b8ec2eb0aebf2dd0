"""Internal watchdog for the long-running stages of the kiosk (capture, encode, publish).

Each stage thread calls `beat(name)` whenever it makes progress. The owner (the kiosk's state
thread) calls `check(now)` periodically: a stage silent for longer than its timeout is
reported through `on_stuck(name, silent_for)` and its `restart()` is called, at most once per
timeout period while it stays silent.

`healthy()` is what the kiosk asks before it sends systemd `WATCHDOG=1`: while any stage is
silent the pings stop, so if the internal restart does not bring the stage back within
systemd's `WatchdogSec=`, systemd kills and restarts the whole process. Choose `WatchdogSec=`
a few stage timeouts long, so an internal restart gets its chance first.

Note on threads: `beat` is called from stage threads; `register`, `unregister`, `check`,
`healthy` and `stages` from any thread. `on_stuck` and `restart` run on the thread that
called `check`, outside the lock (so a restart may call `beat` or `register`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pinkbutton.hal.clock import Clock

log = logging.getLogger("pinkbutton.watchdog")


@dataclass(slots=True)
class _Stage:
    timeout_s: float
    restart: Callable[[], None]
    last_beat: float
    last_restart: float | None = None
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class StageView:
    name: str
    timeout_s: float
    silent_for: float
    restarts: int
    healthy: bool


class StageWatchdog:
    def __init__(self, clock: Clock, on_stuck: Callable[[str, float], None]) -> None:
        self.clock = clock
        self.on_stuck = on_stuck
        self._lock = threading.Lock()
        self._stages: dict[str, _Stage] = {}

    def register(self, name: str, timeout_s: float, restart: Callable[[], None]) -> None:
        """Watch a stage; its timeout starts now (as if it had just beaten). Registering an
        existing name replaces its timeout and restart but keeps its restart count."""
        if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"stage {name!r}: timeout must be a positive number, not {timeout_s!r}")
        now = self.clock.monotonic()
        with self._lock:
            old = self._stages.get(name)
            self._stages[name] = _Stage(float(timeout_s), restart, now,
                                        restarts=old.restarts if old else 0)

    def unregister(self, name: str) -> None:
        """Stop watching a stage that was shut down on purpose."""
        with self._lock:
            self._stages.pop(name, None)

    def beat(self, name: str) -> None:
        """The stage made progress. Unknown names are ignored (a stage that outlives its
        registration must not crash)."""
        now = self.clock.monotonic()
        with self._lock:
            stage = self._stages.get(name)
            if stage is not None and now > stage.last_beat:
                stage.last_beat = now

    def check(self, now: float | None = None) -> list[str]:
        """Report and restart stuck stages; returns the names restarted by this call."""
        now = self.clock.monotonic() if now is None else now
        due: list[tuple[str, float, Callable[[], None]]] = []
        with self._lock:
            for name, s in self._stages.items():
                silent = now - s.last_beat
                if silent <= s.timeout_s:
                    continue
                if s.last_restart is not None and now - s.last_restart < s.timeout_s:
                    continue  # give the last restart a full period to show progress
                s.last_restart = now
                s.restarts += 1
                due.append((name, silent, s.restart))
        for name, silent, restart in due:
            log.error("stage %s made no progress for %.1f s: restarting it", name, silent)
            _call(f"on_stuck({name})", self.on_stuck, name, silent)
            _call(f"restart of stage {name}", restart)
        return [name for name, _, _ in due]

    def healthy(self, now: float | None = None) -> bool:
        """True when every stage has beaten within its timeout."""
        now = self.clock.monotonic() if now is None else now
        with self._lock:
            return all(now - s.last_beat <= s.timeout_s for s in self._stages.values())

    def restarts(self, name: str) -> int:
        with self._lock:
            stage = self._stages.get(name)
            return stage.restarts if stage else 0

    def stages(self, now: float | None = None) -> list[StageView]:
        now = self.clock.monotonic() if now is None else now
        with self._lock:
            return [
                StageView(name, s.timeout_s, max(0.0, now - s.last_beat), s.restarts,
                          now - s.last_beat <= s.timeout_s)
                for name, s in sorted(self._stages.items())
            ]


def _call(what: str, fn: Callable, *args) -> None:
    # A failing callback must not stop the owner's loop, nor the other stages' restarts.
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        log.error("%s failed: %s: %s", what, type(e).__name__, e)
