"""An indicator that remembers what it showed, for tests and the simulator."""

from __future__ import annotations

from pinkbutton.hal.base import HalError, Indicator, Pattern
from pinkbutton.hal.clock import Clock


class FakeIndicator(Indicator):
    """Records every pattern shown as `(monotonic time, pattern)` in `history`."""

    def __init__(
        self, clock: Clock, *, led_pin: int | None = None, buzzer_pin: int | None = None
    ) -> None:
        self.led_pin = led_pin
        self.buzzer_pin = buzzer_pin
        self.history: list[tuple[float, Pattern]] = []
        self._clock = clock
        self._pattern = Pattern.OFF
        self._closed = False

    def show(self, pattern: Pattern) -> None:
        if self._closed:
            raise HalError(f"fake indicator (LED pin {self.led_pin}) is closed")
        pattern = Pattern(pattern)  # a plain "idle" string is fine; a typo is not
        self._pattern = pattern
        self.history.append((self._clock.monotonic(), pattern))

    @property
    def pattern(self) -> Pattern:
        return self._pattern

    def patterns(self) -> list[Pattern]:
        """The patterns shown so far, in order."""
        return [pattern for _, pattern in self.history]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        # A closed LED is dark; repeated close() is harmless.
        self._pattern = Pattern.OFF
        self._closed = True
