"""Deterministic hardware for tests and the simulator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinkbutton.hal.base import HalError
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake.button import FakeButton, FakeTamper
from pinkbutton.hal.fake.indicator import FakeIndicator
from pinkbutton.hal.registry import Backend

if TYPE_CHECKING:  # numpy is needed only once a camera or microphone is made
    from pinkbutton.hal.fake.camera import FakeCamera
    from pinkbutton.hal.fake.microphone import FakeMicrophone

__all__ = ["FakeBackend", "FakeButton", "FakeIndicator", "FakeTamper"]

_CAMERA_MODES = ("ok", "covered", "frozen", "noise", "still")
_MICROPHONE_MODES = ("ok", "silent", "clipping")


class FakeBackend(Backend):
    """Makes fake devices and keeps them (`buttons`, `indicators`, `cameras`, `microphones`)
    so a simulator can drive them.

    Like real GPIO, a pin held by an open device cannot be opened again until it is closed.
    """

    name = "fake"

    def __init__(self, *, button_stuck: bool = False, camera_mode: str = "ok",
                 microphone_mode: str = "ok", tamper_open: bool = False) -> None:
        """The bad modes a technician's self-test must catch, set on every device made:
        `button_stuck` (held down from the start), `camera_mode` "covered" | "frozen" |
        "noise" | "still" (a static scene, noisy but not frozen), `microphone_mode` "silent" (dead) | "clipping", `tamper_open` (the case open from the start); "ok" is a working device."""
        if camera_mode not in _CAMERA_MODES:
            raise HalError(f"fake camera mode must be one of {', '.join(_CAMERA_MODES)}, "
                           f"not {camera_mode!r}")
        if microphone_mode not in _MICROPHONE_MODES:
            raise HalError(f"fake microphone mode must be one of {', '.join(_MICROPHONE_MODES)}, "
                           f"not {microphone_mode!r}")
        self.button_stuck = button_stuck
        self.camera_mode = camera_mode
        self.microphone_mode = microphone_mode
        self.tamper_open = tamper_open
        self.buttons: list[FakeButton] = []
        self.tampers: list[FakeTamper] = []
        self.indicators: list[FakeIndicator] = []
        self.cameras: list[FakeCamera] = []
        self.microphones: list[FakeMicrophone] = []

    def button(
        self, clock: Clock, pin: int, debounce_s: float = 0.05, active_low: bool = True
    ) -> FakeButton:
        # active_low is a wiring detail; a fake button has no wiring.
        self._claim(pin)
        button = FakeButton(clock, debounce_s, pin=pin, pressed=self.button_stuck)
        self.buttons.append(button)
        return button

    def tamper(
        self, clock: Clock, pin: int, debounce_s: float = 0.05, active_high: bool = True
    ) -> FakeTamper:
        # active_high is a wiring detail; a fake switch has no wiring.
        self._claim(pin)
        tamper = FakeTamper(clock, debounce_s, pin=pin, pressed=self.tamper_open)
        self.tampers.append(tamper)
        return tamper

    def indicator(self, clock: Clock, led_pin: int, buzzer_pin: int | None = None) -> FakeIndicator:
        if buzzer_pin == led_pin:
            raise HalError(f"LED and buzzer cannot share GPIO{led_pin}")
        self._claim(led_pin)
        if buzzer_pin is not None:
            self._claim(buzzer_pin)
        indicator = FakeIndicator(clock, led_pin=led_pin, buzzer_pin=buzzer_pin)
        self.indicators.append(indicator)
        return indicator

    def camera(
        self, clock: Clock, width: int = 640, height: int = 480, fps: float = 15.0
    ) -> FakeCamera:
        from pinkbutton.hal.fake.camera import FakeCamera

        camera = FakeCamera(clock, width, height, fps)
        mode = self.camera_mode
        camera.covered, camera.frozen, camera.noise, camera.still = (
            mode == "covered", mode == "frozen", mode == "noise", mode == "still")
        self.cameras.append(camera)
        return camera

    def microphone(
        self, clock: Clock, sample_rate: int = 48000, device: int | str | None = None
    ) -> FakeMicrophone:  # one fake microphone: `device` is accepted and ignored
        from pinkbutton.hal.fake.microphone import FakeMicrophone

        microphone = FakeMicrophone(clock, sample_rate)
        microphone.silent = self.microphone_mode == "silent"
        microphone.clipping = self.microphone_mode == "clipping"
        self.microphones.append(microphone)
        return microphone

    def _pins_in_use(self) -> set[int]:
        used = {b.pin for b in [*self.buttons, *self.tampers]
                if not b.closed and b.pin is not None}
        for ind in self.indicators:
            if not ind.closed:
                used.update(p for p in (ind.led_pin, ind.buzzer_pin) if p is not None)
        return used

    def _claim(self, pin: int) -> None:
        if pin in self._pins_in_use():
            raise HalError(f"GPIO{pin} is already in use")
