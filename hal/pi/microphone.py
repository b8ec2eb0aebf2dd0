"""Microphone through PyAudio (PortAudio): the Pi's USB mic, or a laptop's.

pyaudio is imported only when a PyAudioMicrophone is made, so `import hal` works
without PortAudio installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from pinkbutton.hal.base import (
    AudioChunk,
    BackendUnavailable,
    DeviceFault,
    HalError,
    Microphone,
    describe_error,
)
from pinkbutton.hal.clock import Clock

log = logging.getLogger(__name__)

_HINT = "pip install pyaudio (it builds against PortAudio: apt install portaudio19-dev)"


def require_pyaudio() -> ModuleType:
    """The pyaudio module, or BackendUnavailable with the install hint."""
    try:
        with quiet_stderr():  # some builds probe ALSA/JACK at import
            import pyaudio
    except ImportError as exc:
        raise BackendUnavailable(
            f"microphone needs pyaudio: {_HINT} (import failed: {exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop the kiosk
        raise BackendUnavailable(
            f"microphone library pyaudio is broken: {describe_error(exc)}"
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
        device: int | str | None = None,
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
        self.device = device  # None: the system default; an index; or a name
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
        try:
            with quiet_stderr():  # PortAudio's ALSA/JACK probing prints to fd 2
                pa = self._pyaudio.PyAudio()
        except Exception as exc:
            raise DeviceFault(f"cannot start PortAudio: {describe_error(exc)}") from None
        try:
            index = self._resolve_device(pa)
            with quiet_stderr():
                stream = pa.open(
                    format=self._pyaudio.paInt16,
                    channels=1,
                    rate=self.sample_rate,
                    input=True,
                    input_device_index=index,
                    frames_per_buffer=self.chunk_frames,
                    stream_callback=self._callback,
                    start=False,
                )
        except Exception as exc:
            _terminate_quietly(pa)
            if isinstance(exc, DeviceFault):
                raise
            raise DeviceFault(f"cannot open the microphone: {describe_error(exc)}") from None
        self._pa, self._stream = pa, stream
        self._stopping.clear()
        self._last_audio = self._clock.monotonic()
        try:
            stream.start_stream()
        except Exception as exc:
            self._pa = self._stream = None
            _close_quietly(stream)
            _terminate_quietly(pa)
            raise DeviceFault(f"cannot start the microphone: {describe_error(exc)}") from None
        self._watchdog = threading.Thread(target=self._watch, name="pyaudio-watchdog", daemon=True)
        self._watchdog.start()

    def _resolve_device(self, pa: Any) -> int | None:
        """`device`: None (the system default input), an index, or part of a device name."""
        device = self.device
        if device is None or isinstance(device, int):
            return device
        inputs = []
        for index in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(index)
            if int(info.get("maxInputChannels") or 0) > 0:
                inputs.append((index, str(info.get("name", ""))))
        for index, name in inputs:  # an exact name first, then a part of one
            if name == device:
                return index
        for index, name in inputs:
            if device.lower() in name.lower():
                return index
        known = ", ".join(repr(name) for _, name in inputs) or "none"
        raise DeviceFault(f"no input device named {device!r} (inputs: {known})")

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
            _terminate_quietly(pa)

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


# ALSA and JACK print "ALSA lib pcm.c:...: Unknown PCM cards.pcm.rear" and "Cannot connect to
# server socket" to fd 2 while PortAudio probes devices, every start: noise in the journal.
_NOISE = re.compile(
    rb"^(ALSA lib |Expression '.*' failed in|jack server|Cannot connect to server|"
    rb"JackShmReadWritePtr|attempt to connect to server failed|connect\(2\) call to)"
)
_stderr_lock = threading.Lock()


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Run a block with fd 2 captured; afterwards write back every line that is not ALSA/JACK
    probing noise (so a real error, or another thread's log line, still reaches the log)."""
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield  # no usable fd 2: nothing to keep quiet
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().splitlines(keepends=True)
                    if line.strip() and not _NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def _terminate_quietly(pa: Any) -> None:
    try:
        with quiet_stderr():
            pa.terminate()
    except Exception as exc:  # noqa: BLE001 - closing a broken library must not raise
        log.warning("microphone terminate failed: %s", describe_error(exc))


def _close_quietly(stream: Any) -> None:
    for step in ("stop_stream", "close"):
        try:
            getattr(stream, step)()
        except Exception as exc:  # noqa: BLE001
            log.warning("microphone %s failed: %s", step, describe_error(exc))
