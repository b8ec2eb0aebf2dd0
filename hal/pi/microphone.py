"""Microphone through PyAudio (PortAudio): the Pi's USB mic, or a laptop's.

pyaudio is imported only when a PyAudioMicrophone is made, so `import hal` works
without PortAudio installed.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any

from firmware.clock import Clock
from hal.base import (
    AudioChunk,
    BackendUnavailable,
    DeviceFault,
    HalError,
    Microphone,
    describe_error,
)

log = logging.getLogger(__name__)

_HINT = "pip install pyaudio (it builds against PortAudio: apt install portaudio19-dev)"


def require_pyaudio() -> ModuleType:
    """The pyaudio module, or BackendUnavailable with the install hint."""
    try:
        import pyaudio
    except ImportError as exc:
        raise BackendUnavailable(
            f"microphone needs pyaudio: {_HINT} (import failed: {exc})"
        ) from None
    return pyaudio


class PyAudioMicrophone(Microphone):
    """Mono 16-bit capture in PortAudio callback mode, `chunk_ms` per callback.

    A watchdog notices a dead microphone (stream no longer active, or no audio for
    `stall_s`, e.g. a USB mic pulled out) and reports it once via on_failure.

    Note on threads: PortAudio calls `_callback` on its own audio thread; it only
    builds an AudioChunk and calls on_audio (which must only enqueue). The
    watchdog runs on a "pyaudio-watchdog" thread and calls on_failure there.
    """

    def __init__(
        self,
        clock: Clock,
        sample_rate: int = 48000,
        chunk_ms: int = 20,
        device_index: int | None = None,
        *,
        stall_s: float = 1.0,
    ) -> None:
        if sample_rate <= 0 or chunk_ms <= 0 or sample_rate * chunk_ms % 1000:
            raise HalError(f"bad audio format: {sample_rate} Hz in {chunk_ms} ms chunks")
        self._pyaudio = require_pyaudio()
        self._clock = clock
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.chunk_frames = sample_rate * chunk_ms // 1000
        self.device_index = device_index
        self._stall_s = stall_s
        self._pa: Any = None
        self._stream: Any = None
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._last_audio = 0.0  # clock time of the last callback; read by the watchdog
        self._failed = False
        self.chunks_captured = 0
        self.overflows = 0

    def start(self) -> None:
        if self._failed:
            raise DeviceFault("microphone has failed; make a new PyAudioMicrophone to retry")
        if self._stream is not None:
            return
        pa = self._pyaudio.PyAudio()
        try:
            stream = pa.open(
                format=self._pyaudio.paInt16,
                channels=1,
                rate=self.sample_rate,
                input=True,
                input_device_index=self.device_index,
                frames_per_buffer=self.chunk_frames,
                stream_callback=self._callback,
                start=False,
            )
        except Exception as exc:
            pa.terminate()
            raise DeviceFault(f"cannot open the microphone: {describe_error(exc)}") from None
        self._pa, self._stream = pa, stream
        self._stopping.clear()
        self._last_audio = self._clock.monotonic()
        stream.start_stream()
        self._watchdog = threading.Thread(target=self._watch, name="pyaudio-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stopping.set()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=5.0)
        stream, self._stream = self._stream, None
        pa, self._pa = self._pa, None
        if stream is not None:
            for step in (stream.stop_stream, stream.close):
                try:
                    step()
                except Exception as exc:
                    log.warning("microphone %s failed: %s", step.__name__, describe_error(exc))
        if pa is not None:
            pa.terminate()

    def _callback(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int):
        # PortAudio's audio thread: build the chunk, hand it over, nothing else.
        now = self._clock.monotonic()
        self._last_audio = now
        if status & self._pyaudio.paInputOverflow:
            self.overflows += 1  # samples were lost before this buffer; timing still holds
        if in_data and self.on_audio is not None:
            pts_us = int(round(now * 1e6)) - frame_count * 1_000_000 // self.sample_rate
            try:
                self.on_audio(AudioChunk(in_data, self.sample_rate, pts_us))
            except Exception:
                log.exception("microphone audio consumer raised")
        self.chunks_captured += 1
        return (None, self._pyaudio.paContinue)

    def _watch(self) -> None:
        poll = min(0.25, self._stall_s / 2)
        while not self._stopping.wait(poll):
            stream = self._stream
            if stream is None:
                return
            try:
                active = stream.is_active()
            except Exception as exc:
                self._fail(f"microphone stream error: {describe_error(exc)}")
                return
            if not active:
                self._fail("microphone stream stopped")
                return
            silent_for = self._clock.monotonic() - self._last_audio
            if silent_for > self._stall_s:
                self._fail(f"microphone delivered no audio for {silent_for:.1f} s")
                return

    def _fail(self, reason: str) -> None:
        if self._failed or self._stopping.is_set():
            return
        self._failed = True
        self.stop()  # on the watchdog thread: closes the stream, skips joining itself
        if self.on_failure is not None:
            self.on_failure(reason)
