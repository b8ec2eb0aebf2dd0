"""One simulated device: the real firmware's `Kiosk` on fake hardware.

`pinkbutton-sim run` (one kiosk) and `pinkbutton-sim fleet` (many) build their kiosks here,
so both run exactly the firmware a Raspberry Pi runs; only the button, indicator, camera and
microphone are `hal.fake`'s.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pinkbutton.firmware.app import Kiosk, Listener, open_media_devices
from pinkbutton.firmware.config import Config
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend, FakeButton, FakeIndicator

PRESS_HOLD_S = 0.15  # a person's press: well past the 50 ms debounce


@dataclass
class SimDevice:
    kiosk: Kiosk
    button: FakeButton
    indicator: FakeIndicator
    backend: FakeBackend

    def press(self, hold_s: float = PRESS_HOLD_S) -> None:
        """Any thread: raw edges only (down now, up after `hold_s`); the kiosk debounces."""
        self.button.press()
        release = threading.Timer(hold_s, self.button.release)
        release.daemon = True
        release.start()


def build_device(config: Config, clock: Clock, *, backend: FakeBackend | None = None,
                 listeners: list[Listener] | None = None, media: bool = True,
                 camera=None) -> SimDevice:
    """A Kiosk on `backend` (default: working fake hardware). `media=False`: no camera and no
    microphone; `camera`: use this camera instead of the fake one (a webcam)."""
    backend = backend or FakeBackend()
    h = config.hal
    button = backend.button(clock, h.button_pin, h.debounce_ms / 1000, h.button_active_low)
    indicator = backend.indicator(clock, h.led_pin, h.buzzer_pin)
    microphone, faults = None, []
    if media:
        fake_camera, microphone, faults = open_media_devices(backend, clock, config)
        camera = camera if camera is not None else fake_camera
    else:
        camera = None
    kiosk = Kiosk(config, button, indicator, clock=clock, listeners=listeners,
                  camera=camera, microphone=microphone)
    for name, why in faults:
        kiosk.report_fault(name, why)
    return SimDevice(kiosk, button, indicator, backend)
