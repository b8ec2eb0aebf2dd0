"""Hardware abstraction: button, indicator, camera, microphone.

Firmware and simulator use only these types plus `get_backend()`; vendor
libraries (gpiozero...) are imported by the `pi` backend only when it is chosen.
"""

from pinkbutton.hal.base import (
    BackendUnavailable,
    Button,
    ButtonEvent,
    Camera,
    DeviceFault,
    HalError,
    Indicator,
    Microphone,
    Pattern,
    UnknownBackend,
)
from pinkbutton.hal.debounce import StableLevelDebouncer
from pinkbutton.hal.registry import Backend, get_backend, known_backends, register_backend

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Button",
    "ButtonEvent",
    "Camera",
    "DeviceFault",
    "HalError",
    "Indicator",
    "Microphone",
    "Pattern",
    "StableLevelDebouncer",
    "UnknownBackend",
    "get_backend",
    "known_backends",
    "register_backend",
]
