"""A loudspeaker and the air between it and the fake microphone: the acoustic loop.

`FakeSounder.play_tone()` puts a tone into an `AcousticPath` for the time it plays (on the
injected clock); every `FakeMicrophone` made by the same `FakeBackend` adds what is in the air
during each chunk to its own signal. So the acoustic loop test measures a real signal path
(tone -> samples -> FFT), and its bad modes are physical: a silent speaker puts nothing into
the air, a deaf microphone hears its own signal but not the air.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinkbutton.hal.base import HalError, Sounder
from pinkbutton.hal.clock import Clock

if TYPE_CHECKING:  # numpy only once a microphone listens (import hal.fake stays light)
    import numpy as np

#: Peak amplitude of a played tone at the microphone (16-bit), louder than the fake
#: microphone's own 440 Hz bursts (8000), as a speaker a few cm from the microphone is.
TONE_AMPLITUDE = 12000


@dataclass(frozen=True, slots=True)
class _Tone:
    freq_hz: float
    start: float  # monotonic seconds on the clock
    end: float
    amplitude: float


class AcousticPath:
    """What is sounding when: tones added by sounders, sampled by microphones (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tones: list[_Tone] = []

    def add(self, freq_hz: float, start: float, end: float, amplitude: float) -> None:
        with self._lock:
            self._tones = [t for t in self._tones if t.end > start - 60.0] + [
                _Tone(freq_hz, start, end, amplitude)]

    def sound(self, start: float, count: int, sample_rate: int) -> np.ndarray | None:
        """The air's signal for `count` samples from monotonic time `start` (float64), or None
        when nothing sounds then."""
        import numpy as np

        with self._lock:
            tones = list(self._tones)
        end = start + count / sample_rate
        out = None
        for tone in tones:
            if tone.end <= start or tone.start >= end:
                continue
            t = start + np.arange(count, dtype=np.float64) / sample_rate
            on = (t >= tone.start) & (t < tone.end)
            wave = tone.amplitude * np.sin(2 * np.pi * tone.freq_hz * (t - tone.start)) * on
            out = wave if out is None else out + wave
        return out


class FakeSounder(Sounder):
    """Plays into `path` (nothing when `silent`: a dead speaker or amplifier). `played` lists
    every (freq_hz, seconds) asked for."""

    def __init__(self, clock: Clock, path: AcousticPath, *, silent: bool = False) -> None:
        self._clock = clock
        self._path = path
        self.silent = silent
        self.played: list[tuple[float, float]] = []
        self.closed = False

    def play_tone(self, freq_hz: float, seconds: float) -> None:
        if self.closed:
            raise HalError("fake sounder is closed")
        if not (math.isfinite(freq_hz) and freq_hz > 0 and math.isfinite(seconds) and seconds > 0):
            raise HalError(f"bad tone: {freq_hz} Hz for {seconds} s")
        start = self._clock.monotonic()
        if not self.silent:
            self._path.add(freq_hz, start, start + seconds, TONE_AMPLITUDE)
        self.played.append((freq_hz, seconds))
        self._clock.sleep(seconds)

    def close(self) -> None:
        self.closed = True
