"""Push button on a GPIO pin, debounced by us (gpiozero's bounce_time is not used)."""

from __future__ import annotations

from typing import Any

from pinkbutton.hal.base import Button, ButtonEvent
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.debounce import StableLevelDebouncer
from pinkbutton.hal.pi import gpio_error, require_gpiozero


class PiButton(Button):
    """`Button` on `gpiozero.DigitalInputDevice`.

    gpiozero's own `bounce_time` is left off: it is edge-lockout debouncing, its
    MockFactory ignores it, and it runs on wall time. We debounce by stable level
    on the injected clock instead, the same code the fake uses.

    `active_low=True` is the usual wiring: pin pulled up, the button shorts it to ground.
    A button already down when opened starts as pressed (no press event), so a
    stuck button shows up as `is_pressed` rather than as an alert.
    """

    _what = "button"
    _inverted = False  # True: the level we report is the pin's inactive one

    def __init__(
        self,
        clock: Clock,
        pin: int,
        debounce_s: float = 0.05,
        active_low: bool = True,
        pin_factory: Any = None,
    ) -> None:
        gpiozero = require_gpiozero()
        self.pin = pin
        self._clock = clock
        try:
            self._device = gpiozero.DigitalInputDevice(
                pin, pull_up=active_low, bounce_time=None, pin_factory=pin_factory
            )
        except gpiozero.GPIOZeroError as exc:
            raise gpio_error(f"{self._what} on GPIO{pin}", exc) from None
        self._debouncer = StableLevelDebouncer(debounce_s, initial_level=self._level())
        self._device.when_activated = self._on_activated
        self._device.when_deactivated = self._on_deactivated
        # An edge between reading the level and hooking the callbacks would be lost;
        # re-reading closes the gap (a repeat of the known level is ignored).
        self._debouncer.edge(self._level(), clock.monotonic())

    def _level(self) -> bool:
        return self._device.is_active != self._inverted

    # Note on threads: gpiozero runs these on its pin factory's event thread (the
    # test's own thread with MockFactory). They only record the edge and wake the owner.

    def _on_activated(self) -> None:
        self._raw_edge(not self._inverted)

    def _on_deactivated(self) -> None:
        self._raw_edge(self._inverted)

    def _raw_edge(self, level: bool) -> None:
        self._debouncer.edge(level, self._clock.monotonic())
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup()

    # -- Button -----------------------------------------------------------------

    def poll(self) -> list[ButtonEvent]:
        return self._debouncer.poll(self._clock.monotonic())

    def next_deadline(self) -> float | None:
        return self._debouncer.next_deadline()

    @property
    def is_pressed(self) -> bool:
        return self._debouncer.level

    @property
    def closed(self) -> bool:
        return self._device.closed

    def close(self) -> None:
        self._device.close()  # releases the pin; safe to call twice


class PiTamper(PiButton):
    """The case's tamper switch: `is_pressed` means open. The pin is pulled towards the open
    level (up when `active_high`, the pin reading high while open; down otherwise), so a cut
    wire reads open too. gpiozero calls the closed level "active" (pulled up: low)."""

    _what = "tamper switch"
    _inverted = True

    def __init__(self, clock: Clock, pin: int, debounce_s: float = 0.05,
                 active_high: bool = True, pin_factory: Any = None) -> None:
        super().__init__(clock, pin, debounce_s, active_low=active_high, pin_factory=pin_factory)
