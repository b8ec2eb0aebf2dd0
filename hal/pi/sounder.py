"""The kiosk's loudspeaker through PyAudio (ALSA): the sending half of the acoustic loop test.

A sine tone is written to an output stream in blocking mode and the stream is stopped, which
waits until PortAudio has played every buffer, so `play_tone()` returns once the tone has been
heard. The output is `media.speaker_device`: an index, (part of) an ALSA name such as "USB" or
"Headphones", or None for the system default. A GPIO buzzer is not used for this test: the
indicator's (active) buzzer sounds at its own pitch, which cannot be checked.
"""

from __future__ import annotations

import math
from typing import Any

from pinkbutton.hal.base import DeviceFault, HalError, Sounder, describe_error
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.pi.microphone import quiet_stderr, require_pyaudio

SAMPLE_RATE = 48000
AMPLITUDE = 0.5  # of full scale: clearly audible, no clipping in a small amplifier
FADE_S = 0.01  # ramps at both ends: no click, no splatter across the spectrum


def tone_pcm(freq_hz: float, seconds: float, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A sine of `freq_hz` as 16-bit mono PCM, faded in and out."""
    import numpy as np

    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = AMPLITUDE * np.sin(2 * np.pi * freq_hz * t)
    fade = min(n // 2, int(FADE_S * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * 32767).astype("<i2").tobytes()


class PyAudioSounder(Sounder):
    def __init__(self, clock: Clock, device: int | str | None = None) -> None:
        self._pyaudio = require_pyaudio()
        self._clock = clock
        self.device = device

    def play_tone(self, freq_hz: float, seconds: float) -> None:
        if not (math.isfinite(freq_hz) and 0 < freq_hz < SAMPLE_RATE / 2
                and math.isfinite(seconds) and seconds > 0):
            raise HalError(f"bad tone: {freq_hz} Hz for {seconds} s")
        pcm = tone_pcm(freq_hz, seconds)
        try:
            with quiet_stderr():
                pa = self._pyaudio.PyAudio()
        except Exception as exc:
            raise DeviceFault(f"cannot start PortAudio: {describe_error(exc)}") from None
        stream: Any = None
        try:
            with quiet_stderr():
                stream = pa.open(format=self._pyaudio.paInt16, channels=1, rate=SAMPLE_RATE,
                                 output=True, output_device_index=self._resolve(pa))
            stream.write(pcm)
            stream.stop_stream()  # returns once every buffer has been played
        except DeviceFault:
            raise
        except Exception as exc:
            raise DeviceFault(f"cannot play on the speaker: {describe_error(exc)}") from None
        finally:
            try:
                if stream is not None:
                    stream.close()
                with quiet_stderr():
                    pa.terminate()
            except Exception:  # noqa: BLE001, S110 - closing a broken library must not raise
                pass

    def _resolve(self, pa: Any) -> int | None:
        device = self.device
        if device is None or isinstance(device, int):
            return device
        outputs = []
        for index in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(index)
            if int(info.get("maxOutputChannels") or 0) > 0:
                outputs.append((index, str(info.get("name", ""))))
        for index, name in outputs:  # an exact name first, then a part of one
            if name == device:
                return index
        for index, name in outputs:
            if device.lower() in name.lower():
                return index
        known = ", ".join(repr(name) for _, name in outputs) or "none"
        raise DeviceFault(f"no output device named {device!r} (outputs: {known})")
