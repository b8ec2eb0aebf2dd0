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


def describe_error(exc: BaseException) -> str:
    """`Type: first line` of an exception from a device library, for a one-line fault."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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
    The tamper switch is one too (`Backend.tamper`): "pressed" means the case is open.
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


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One captured picture, planar YUV 4:2:0 (I420): Y (w*h), then U and V (w/2*h/2 each).

    `pts_us` is the capture time on the monotonic clock, in microseconds. Sources
    that can, draw it into the picture too (see hal.fake.camera) so glass-to-glass
    latency is measurable at the far end.
    """

    data: bytes
    width: int
    height: int
    pts_us: int


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Captured audio: signed 16-bit little-endian mono PCM.

    `pts_us` is the monotonic capture time of the first sample, in microseconds.
    """

    samples: bytes
    sample_rate: int
    pts_us: int

    @property
    def frames(self) -> int:
        return len(self.samples) // 2


FrameSink = Callable[[VideoFrame], None]
AudioSink = Callable[[AudioChunk], None]
FailureSink = Callable[[str], None]


class Camera(abc.ABC):
    """Video source producing I420 frames at `fps` into `on_frame`.

    Note on threads: `on_frame` and `on_failure` are called on the capture thread
    (the backend's); they must only enqueue — encoding never runs there.
    """

    on_frame: FrameSink | None = None
    #: Called once with a one-line reason when the camera stops working.
    on_failure: FailureSink | None = None

    width: int
    height: int
    fps: float

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def close(self) -> None:
        self.stop()


class Microphone(abc.ABC):
    """Audio source producing mono 16-bit chunks into `on_audio`.

    Note on threads: `on_audio` and `on_failure` run on the capture thread; they
    must only enqueue.
    """

    on_audio: AudioSink | None = None
    on_failure: FailureSink | None = None

    sample_rate: int

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def close(self) -> None:
        self.stop()
