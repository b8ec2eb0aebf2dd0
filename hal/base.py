"""Hardware interfaces shared by every backend (fake, pi).

Backends implement these; firmware and simulator only ever see these types.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass


class HalError(Exception):
    """Base of every hardware-layer error."""


class BackendUnavailable(HalError):
    """The chosen backend cannot run here (vendor library or hardware missing)."""


class UnknownBackend(HalError):
    """No backend by that name."""


class DeviceFault(HalError):
    """A device that was working has failed (camera gone, mic dead...)."""


class Pattern(enum.StrEnum):
    """Named indicator patterns; backends map them to LED/buzzer behaviour."""

    OFF = "off"
    IDLE = "idle"
    SENDING = "sending"
    DELIVERED = "delivered"
    HELP_COMING = "help_coming"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class ButtonEvent:
    """A debounced change of the button.

    `at` is the monotonic time the level changed and then stayed put (the real
    press time), `confirmed_at` the time debounce accepted it (at + stable time).
    """

    pressed: bool
    at: float
    confirmed_at: float


class Button(abc.ABC):
    """A debounced push button.

    Raw edges arrive on whatever thread the backend uses; debounce is by stable
    level on the injected clock. The owner calls `poll()` from its own thread
    (at or after `next_deadline()`, or after `wakeup` fires) to collect events.
    """

    #: Called (from the backend's thread) on every raw edge so the owner can wake
    #: up and poll; it must only enqueue or set an event.
    wakeup: Callable[[], None] | None = None

    @abc.abstractmethod
    def poll(self) -> list[ButtonEvent]:
        """Debounced events confirmed since the last poll, oldest first."""

    @abc.abstractmethod
    def next_deadline(self) -> float | None:
        """Monotonic time at which a pending edge could be confirmed, or None."""

    @property
    @abc.abstractmethod
    def is_pressed(self) -> bool:
        """The debounced level."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Indicator(abc.ABC):
    """The kiosk's LED (and optional buzzer), driven by named patterns."""

    @abc.abstractmethod
    def show(self, pattern: Pattern) -> None: ...

    @property
    @abc.abstractmethod
    def pattern(self) -> Pattern: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class Camera(abc.ABC):
    """Video source (implemented with the A/V work)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...


class Microphone(abc.ABC):
    """Audio source (implemented with the A/V work)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...
