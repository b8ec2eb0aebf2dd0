"""Raspberry Pi backend (gpiozero, picamera2, pyaudio).

Vendor libraries are imported only when a Pi device is made, so `import hal` (and
the fake backend) work on any laptop without them.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from pinkbutton.hal.base import BackendUnavailable, Button, Camera, HalError, Indicator, Microphone
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.registry import Backend

__all__ = ["PiBackend", "require_gpiozero", "gpio_error"]


def require_gpiozero() -> ModuleType:
    """The gpiozero module, or BackendUnavailable with the install hint."""
    try:
        import gpiozero
    except ImportError as exc:
        raise BackendUnavailable(
            f"HAL backend 'pi' needs gpiozero: pip install gpiozero (import failed: {exc})"
        ) from None
    # gpiozero warns once per pin library it tries; when none works our one-line
    # BackendUnavailable says so, and on a working Pi the fallbacks are noise.
    warnings.filterwarnings("ignore", category=gpiozero.PinFactoryFallback)
    return gpiozero


def gpio_error(what: str, exc: Exception) -> HalError:
    """One-line HAL error for a gpiozero failure while opening `what`."""
    import gpiozero

    if isinstance(exc, gpiozero.BadPinFactory):
        return BackendUnavailable(f"HAL backend 'pi' found no GPIO driver for {what}: {exc}")
    return HalError(f"cannot open {what}: {exc}")


class PiBackend(Backend):
    """Buttons and indicators on real GPIO (or gpiozero's MockFactory in tests), the camera
    through picamera2, the microphone through PyAudio (the ALSA default input, or `device`).

    `pin_factory=None` lets gpiozero choose (GPIOZERO_PIN_FACTORY or its default).
    """

    name = "pi"

    def __init__(self, pin_factory: Any = None) -> None:
        require_gpiozero()  # fail at selection time, not at the first press
        self.pin_factory = pin_factory

    def button(
        self, clock: Clock, pin: int, debounce_s: float = 0.05, active_low: bool = True
    ) -> Button:
        from pinkbutton.hal.pi.button import PiButton

        return PiButton(clock, pin, debounce_s, active_low, pin_factory=self.pin_factory)

    def tamper(
        self, clock: Clock, pin: int, debounce_s: float = 0.05, active_high: bool = True
    ) -> Button:
        from pinkbutton.hal.pi.button import PiTamper

        return PiTamper(clock, pin, debounce_s, active_high, pin_factory=self.pin_factory)

    def indicator(self, clock: Clock, led_pin: int, buzzer_pin: int | None = None) -> Indicator:
        from pinkbutton.hal.pi.indicator import PiIndicator

        return PiIndicator(clock, led_pin, buzzer_pin, pin_factory=self.pin_factory)

    def camera(
        self, clock: Clock, width: int = 640, height: int = 480, fps: float = 15.0
    ) -> Camera:
        from pinkbutton.hal.pi.camera import PiCamera

        return PiCamera(clock, width, height, fps)

    def microphone(
        self, clock: Clock, sample_rate: int = 48000, device: int | str | None = None
    ) -> Microphone:
        from pinkbutton.hal.pi.microphone import PyAudioMicrophone

        return PyAudioMicrophone(clock, sample_rate, device=device)
