"""Kiosk LED (and optional buzzer) on GPIO, driven by named patterns."""

from __future__ import annotations

import itertools
from typing import Any

from pinkbutton.hal.base import Indicator, Pattern
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.pi import gpio_error, require_gpiozero

#: Length of one LED step. Blinking runs on real time on purpose: it is what
#: people at the kiosk see, and gpiozero's source thread is the one clock it has.
STEP_S = 0.05

#: Each pattern as (lit, seconds) segments, repeated forever; None means "steady"
#: and is handled with on()/off() so the pin holds a level without a thread.
LED_SEGMENTS: dict[Pattern, tuple[tuple[bool, float], ...] | None] = {
    Pattern.OFF: None,
    Pattern.IDLE: ((True, 0.1), (False, 2.9)),  # short blink every 3 s: alive, not busy
    Pattern.SENDING: ((True, 0.1), (False, 0.1)),  # fast blink
    Pattern.DELIVERED: ((True, 1.0), (False, 1.0)),  # slow blink
    Pattern.HELP_COMING: None,  # solid on
    Pattern.FAULT: ((True, 0.1), (False, 0.1), (True, 0.1), (False, 0.7)),  # double blink
}

#: Two short beeps when help is on its way, so people who cannot see the LED know too.
BEEPS = {Pattern.HELP_COMING: (0.1, 0.1, 2)}  # on_time, off_time, count


def led_steps(segments: tuple[tuple[bool, float], ...]) -> list[bool]:
    """One LED level per STEP_S for one period of the pattern."""
    return [lit for lit, seconds in segments for _ in range(round(seconds / STEP_S))]


class PiIndicator(Indicator):
    """`Indicator` on `gpiozero.LED` (+ optional `gpiozero.Buzzer`)."""

    def __init__(
        self,
        clock: Clock,
        led_pin: int,
        buzzer_pin: int | None = None,
        pin_factory: Any = None,
    ) -> None:
        gpiozero = require_gpiozero()
        self._clock = clock  # not needed for timing (see STEP_S); kept for the common signature
        self._pattern = Pattern.OFF
        self._buzzer = None
        try:
            self._led = gpiozero.LED(led_pin, pin_factory=pin_factory)
        except gpiozero.GPIOZeroError as exc:
            raise gpio_error(f"LED on GPIO{led_pin}", exc) from None
        if buzzer_pin is not None:
            try:
                self._buzzer = gpiozero.Buzzer(buzzer_pin, pin_factory=pin_factory)
            except gpiozero.GPIOZeroError as exc:
                self._led.close()
                raise gpio_error(f"buzzer on GPIO{buzzer_pin}", exc) from None

    def show(self, pattern: Pattern) -> None:
        pattern = Pattern(pattern)
        # Stop whatever ran before: a source thread and a blink thread would fight.
        self._led.source = None
        self._led.off()
        segments = LED_SEGMENTS[pattern]
        if segments is None:
            if pattern is Pattern.HELP_COMING:
                self._led.on()
        else:
            self._led.source_delay = STEP_S
            self._led.source = itertools.cycle(led_steps(segments))
        if self._buzzer is not None:
            self._buzzer.off()
            if pattern in BEEPS:
                on_time, off_time, count = BEEPS[pattern]
                self._buzzer.blink(on_time=on_time, off_time=off_time, n=count, background=True)
        self._pattern = pattern

    @property
    def pattern(self) -> Pattern:
        return self._pattern

    @property
    def closed(self) -> bool:
        return self._led.closed

    def close(self) -> None:
        # Dark and silent first: gpiozero's close() stops the blink/source threads and
        # releases the pins but leaves them at their last level. Safe to call twice.
        for device in (self._led, self._buzzer):
            if device is not None and not device.closed:
                device.source = None
                device.off()
                device.close()
        self._pattern = Pattern.OFF
