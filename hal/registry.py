"""Choosing a hardware backend by name: config, or PINKBUTTON_HAL=fake|pi.

The fake is never picked silently: with neither a configured name nor the
environment variable set, `get_backend` refuses, so a kiosk with a broken config
does not come up "working" on simulated hardware.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from pinkbutton.hal.base import Button, Camera, HalError, Indicator, Microphone, UnknownBackend
from pinkbutton.hal.clock import Clock

log = logging.getLogger(__name__)

ENV_VAR = "PINKBUTTON_HAL"


class Backend:
    """A family of devices (fake, pi): buttons, indicators, cameras, mics for the firmware."""

    name: str = "?"

    def button(
        self, clock: Clock, pin: int, debounce_s: float = 0.05, active_low: bool = True
    ) -> Button:
        raise NotImplementedError(f"HAL backend {self.name!r} has no button")

    def indicator(self, clock: Clock, led_pin: int, buzzer_pin: int | None = None) -> Indicator:
        raise NotImplementedError(f"HAL backend {self.name!r} has no indicator")

    def tamper(
        self, clock: Clock, pin: int, debounce_s: float = 0.05, active_high: bool = True
    ) -> Button:
        """The case's tamper switch as a debounced input: `is_pressed` means open.
        `active_high`: the pin reads high while open (pulled up, so a cut wire reads open)."""
        raise NotImplementedError(f"HAL backend {self.name!r} has no tamper switch")

    def camera(
        self, clock: Clock, width: int = 640, height: int = 480, fps: float = 15.0
    ) -> Camera:
        raise NotImplementedError(f"HAL backend {self.name!r} has no camera")

    def microphone(
        self, clock: Clock, sample_rate: int = 48000, device: int | str | None = None
    ) -> Microphone:
        raise NotImplementedError(f"HAL backend {self.name!r} has no microphone")


BackendFactory = Callable[..., Backend]

_factories: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory(**options)` available as backend `name` (replaces an earlier one)."""
    _factories[name] = factory


def known_backends() -> list[str]:
    return sorted(_factories)


def get_backend(
    name: str | None = None, *, env: Mapping[str, str] = os.environ, **options: Any
) -> Backend:
    """The backend `PINKBUTTON_HAL` names, else `name` (from the config).

    `options` go to the backend's factory, e.g. `pin_factory=MockFactory()` for `pi`.
    """
    from_env = (env.get(ENV_VAR) or "").strip().lower() or None
    if from_env is not None:
        if name is not None and from_env != name:
            report = log.warning if from_env == "fake" else log.info
            report("%s=%s overrides the configured HAL backend %r", ENV_VAR, from_env, name)
        name = from_env
    if name is None:
        raise HalError(
            "no HAL backend chosen: set hal.backend in the config or PINKBUTTON_HAL=fake|pi"
        )
    try:
        factory = _factories[name]
    except KeyError:
        known = ", ".join(known_backends())
        raise UnknownBackend(f"unknown HAL backend {name!r} (known: {known})") from None
    return factory(**options)


# The built-in backends are imported only when asked for, so choosing `fake`
# never touches gpiozero and `import hal` stays cheap.


def _fake_backend(**options: Any) -> Backend:
    from pinkbutton.hal.fake import FakeBackend

    return FakeBackend(**options)


def _pi_backend(**options: Any) -> Backend:
    from pinkbutton.hal.pi import PiBackend

    return PiBackend(**options)


register_backend("fake", _fake_backend)
register_backend("pi", _pi_backend)
