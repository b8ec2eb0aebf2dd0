"""A microphone that hears a known signal: 440 Hz bursts, 100 ms on, 100 ms off.

A known signal lets tests (and the control room) check that audio arrived intact
and lined up with the video; `tone_samples` reproduces it for comparison.
"""

from __future__ import annotations

import functools

import numpy as np
from pinkbutton.hal.base import AudioChunk, FailureSink, HalError, Microphone
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake.paced import PacedSource
from pinkbutton.hal.fake.sounder import AcousticPath

TONE_HZ = 440.0
BURST_S = 0.1  # tone for BURST_S, silence for BURST_S, repeat
AMPLITUDE = 8000


def tone_samples(first_sample: int, count: int, sample_rate: int) -> np.ndarray:
    """The fake microphone's signal, samples [first_sample, first_sample+count), int16."""
    period = _one_period(sample_rate)
    index = np.arange(first_sample, first_sample + count, dtype=np.int64) % len(period)
    return period[index]


@functools.cache
def _one_period(sample_rate: int) -> np.ndarray:
    """One burst and one silence: the signal repeats after it exactly (2 * BURST_S * TONE_HZ
    is a whole number of cycles), so a chunk is a slice of this instead of a sine computed
    for every sample (the fake microphone was a simulated streaming kiosk's largest cost)."""
    burst = int(BURST_S * sample_rate)
    index = np.arange(2 * burst, dtype=np.int64)
    tone = AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * index / sample_rate)
    period = np.where(index < burst, tone, 0.0).astype(np.int16)
    period.flags.writeable = False
    return period


class FakeMicrophone(PacedSource, Microphone):
    """Deterministic `Microphone` producing `chunk_ms` chunks of the tone-burst signal.

    `start()` runs a capture thread on `clock`; `capture_one()` returns the chunk
    that ends now (pts = now - chunk duration), for FakeClock tests. The signal
    continues from one chunk to the next (`samples_captured` is the running
    sample index). Test controls: `silent` (zeros: a dead microphone), `clipping` (the
    signal overdriven to full scale, as a gain set far too high), `fail(reason)`. With an
    `air` (hal.fake.sounder.AcousticPath) it also hears what a FakeSounder plays, unless
    `deaf` (its own signal, but nothing from the air: a blocked or disconnected capsule).

    Note on threads: on_audio/on_failure run on the "fake-microphone" thread when
    started, on the caller's thread for `capture_one()` (and `fail()` while stopped).
    """

    def __init__(self, clock: Clock, sample_rate: int = 48000, chunk_ms: int = 20) -> None:
        if sample_rate <= 0 or chunk_ms <= 0 or sample_rate * chunk_ms % 1000:
            raise HalError(f"bad audio format: {sample_rate} Hz in {chunk_ms} ms chunks")
        # A real mic buffers; after a short stall it delivers the backlog, only a
        # long one (a FakeClock jump) loses audio.
        super().__init__(
            clock, chunk_ms / 1000, "fake-microphone", max_late_s=1.0, first_after_s=chunk_ms / 1000
        )
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.chunk_frames = sample_rate * chunk_ms // 1000
        self.silent = False
        self.clipping = False
        self.air: AcousticPath | None = None
        self.deaf = False
        self.samples_captured = 0
        self.chunks_captured = 0

    # -- Microphone ---------------------------------------------------------------------

    def start(self) -> None:
        PacedSource.start(self)

    def stop(self) -> None:
        PacedSource.stop(self)

    def capture_one(self) -> AudioChunk:
        """The chunk whose last sample is captured now; given to on_audio too, and returned."""
        if self.running:
            raise HalError("capture_one() is for a stopped microphone; this one is started")
        self._check_usable()
        chunk = self._capture(self._clock.monotonic())
        if self.on_audio is not None:
            self.on_audio(chunk)
        return chunk

    # -- internals ------------------------------------------------------------------------

    def _failure_sink(self) -> FailureSink | None:
        return self.on_failure

    def _tick(self, now: float, due: float) -> None:
        # `due` not `now`: chunks are back to back in time even when the thread runs late.
        chunk = self._capture(due)
        if self.on_audio is not None:
            self.on_audio(chunk)

    def _capture(self, end: float) -> AudioChunk:
        n = self.chunk_frames
        if self.silent:
            samples = bytes(2 * n)
        else:
            tone = tone_samples(self.samples_captured, n, self.sample_rate)
            heard = None if self.air is None or self.deaf else self.air.sound(
                end - self.chunk_ms / 1000, n, self.sample_rate)
            if heard is not None:
                tone = np.clip(tone + heard, -32768, 32767).astype(np.int16)
            if self.clipping:  # 8x gain: every tone peak is cut flat at full scale
                tone = np.clip(tone.astype(np.int32) * 8, -32768, 32767)
            samples = tone.astype("<i2").tobytes()
        self.samples_captured += n
        self.chunks_captured += 1
        pts_us = int(round(end * 1e6)) - self.chunk_ms * 1000
        return AudioChunk(samples=samples, sample_rate=self.sample_rate, pts_us=pts_us)
