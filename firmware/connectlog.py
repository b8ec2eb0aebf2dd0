"""ConnectFailureLog: how the kiosk and the control room log broker connect failures.

Both retry forever with backoff, so logging every attempt at ERROR floods the log (and the
SD card) during a long outage. The first failure and every change of reason are logged at
ERROR, then a reminder every `reminder_s` with the number of attempts; the rest at DEBUG. A
technician reading the log still sees the cause, and when it changed.

Note on threads: used from one thread only (the kiosk's state thread, the room's run thread).
"""

from __future__ import annotations

import logging

from pinkbutton.hal.clock import Clock

REMINDER_S = 60.0


class ConnectFailureLog:
    def __init__(self, logger: logging.Logger, clock: Clock,
                 reminder_s: float = REMINDER_S) -> None:
        self.logger = logger
        self.clock = clock
        self.reminder_s = reminder_s
        self.attempts = 0  # failed attempts since the last successful connect
        self._reason = ""
        self._logged_at = float("-inf")

    def failed(self, reason: str, retry_in: float) -> bool:
        """Log one failed attempt; True when it was logged at ERROR."""
        self.attempts += 1
        now = self.clock.monotonic()
        if reason != self._reason or now - self._logged_at >= self.reminder_s:
            more = f" ({self.attempts} attempts so far)" if self.attempts > 1 else ""
            self.logger.error("%s; retrying in %.1f s%s", reason, retry_in, more)
            self._reason, self._logged_at = reason, now
            return True
        self.logger.debug("%s; retrying in %.1f s", reason, retry_in)
        return False

    def connected(self) -> None:
        """The link is up: the next outage starts over (its first failure is an ERROR)."""
        self.attempts = 0
        self._reason = ""
        self._logged_at = float("-inf")
