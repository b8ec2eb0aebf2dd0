"""One diagnostic result per check, and the pure analyses behind the hardware checks.

Every function here takes what a device delivered (frames, audio chunks, a path, a time) and
returns a `Check`; nothing here opens hardware, so each threshold is unit-tested with numbers.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pinkbutton.hal.base import AudioChunk, VideoFrame

#: A certificate with fewer days left than this is a failed check: renewing takes a visit.
CERT_WARN_DAYS = 30

# Camera thresholds on the luma plane (video range: black is 16, white 235).
COVERED_MEAN = 24.0  # a taped-over lens or a dead sensor: black ...
COVERED_STD = 6.0  # ... and featureless
DARK_MEAN = 40.0
BRIGHT_MEAN = 220.0
#: Variance of the 4-neighbour Laplacian below this: no edges anywhere, out of focus (the
#: fake camera's picture scores ~360, the same picture blurred over 9x9 pixels ~5).
FOCUS_MIN = 25.0

# Microphone thresholds, in dB relative to full scale (16-bit).
SILENT_DBFS = -75.0  # a dead or muted input: a live one has a noise floor well above this
CLIPPING_LIMIT = 32000  # |sample| at or above this counts as clipped
CLIPPING_MAX_FRACTION = 0.001
DC_MAX_FRACTION = 0.05  # mean sample beyond 5 % of full scale: a biased or broken input

MIN_FREE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    """`fix` says what the technician should try; None when the check passed. `values`: what
    a check measured, for --json (only checks that measure have it)."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    values: dict | None = None

    def as_json(self) -> dict:
        doc = asdict(self)
        if self.values is None:
            del doc["values"]
        return doc


def passed(name: str, detail: str, values: dict | None = None) -> Check:
    return Check(name, True, detail, None, values)


def failed(name: str, detail: str, fix: str, values: dict | None = None) -> Check:
    return Check(name, False, detail, fix, values)


# -- camera ----------------------------------------------------------------------------------


def luma(frame: VideoFrame) -> np.ndarray:
    """The Y plane of an I420 frame as a (height, width) float array."""
    y = np.frombuffer(frame.data, dtype=np.uint8, count=frame.width * frame.height)
    return y.reshape(frame.height, frame.width).astype(np.float32)


def sharpness(y: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: high for edges, ~0 for a blur or a flat field."""
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(lap.var())


def camera_check(frames: Sequence[VideoFrame]) -> Check:
    """The first problem found, in the order a technician would fix them: no picture, covered,
    too dark or bright, frozen (identical frames), out of focus."""
    name = "camera"
    if not frames:
        return failed(name, "no frames delivered",
                      "check the camera ribbon cable and that the camera is enabled")
    y = luma(frames[-1])
    mean, std = float(y.mean()), float(y.std())
    size = f"{len(frames)} frames {frames[-1].width}x{frames[-1].height}"
    if mean < COVERED_MEAN and std < COVERED_STD:
        return failed(name, f"covered or black (mean luminance {mean:.0f}/255 over {size})",
                      "uncover the lens (tape, dirt, spray paint) or replace the camera")
    if mean < DARK_MEAN:
        return failed(name, f"too dark (mean luminance {mean:.0f}/255)",
                      "add light at the kiosk or clean the lens")
    if mean > BRIGHT_MEAN:
        return failed(name, f"too bright (mean luminance {mean:.0f}/255)",
                      "shade the lens from direct sun or a lamp")
    if len(frames) >= 2 and len({f.data for f in frames}) == 1:
        return failed(name, f"frozen: {size} are identical",
                      "restart the kiosk; if it stays frozen, reseat or replace the camera")
    focus = sharpness(y)
    if focus < FOCUS_MIN:
        return failed(name, f"out of focus (sharpness {focus:.0f}, need {FOCUS_MIN:.0f})",
                      "clean the lens (condensation, grease) or refocus it")
    return passed(name, f"{size}, mean luminance {mean:.0f}/255, sharpness {focus:.0f}")


# -- microphone ------------------------------------------------------------------------------


def dbfs(rms: float) -> float:
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def microphone_check(chunks: Sequence[AudioChunk]) -> Check:
    """Level (RMS), silence, clipping fraction and DC offset of what the microphone heard."""
    name = "microphone"
    if not chunks:
        return failed(name, "no audio delivered",
                      "check the USB microphone is plugged in and its ALSA device")
    samples = np.frombuffer(b"".join(c.samples for c in chunks), dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return failed(name, "no audio delivered",
                      "check the USB microphone is plugged in and its ALSA device")
    seconds = samples.size / chunks[0].sample_rate
    mean = float(samples.mean())
    level = dbfs(float(np.sqrt(np.mean((samples - mean) ** 2))))
    clipped = float(np.mean(np.abs(samples) >= CLIPPING_LIMIT))
    shown = f"level {level:.0f} dBFS over {seconds:.1f} s" if level > -math.inf else (
        f"all samples zero over {seconds:.1f} s")
    if abs(mean) > DC_MAX_FRACTION * 32768:
        return failed(name, f"DC offset {100 * mean / 32768:+.0f} % of full scale ({shown})",
                      "the input is biased: check the microphone wiring or replace it")
    if level < SILENT_DBFS:
        return failed(name, f"silent: {shown}",
                      "the microphone is dead or muted: check its cable and `alsamixer` capture")
    if clipped > CLIPPING_MAX_FRACTION:
        return failed(name, f"clipping: {100 * clipped:.1f} % of samples at full scale ({shown})",
                      "lower the capture gain in `alsamixer`")
    return passed(name, f"{shown}, clipping {100 * clipped:.2f} %, DC {mean:+.0f}")


# -- acoustic loop ---------------------------------------------------------------------------

LOOP_TONE_HZ = 2000.0
LOOP_TONE_S = 0.5
#: The measured peak may be this far off the tone (a speaker's or sound card's clock).
LOOP_TOLERANCE_HZ = 50.0
#: The tone must stand this far above the spectrum's noise floor (median power in the band).
LOOP_MIN_SNR_DB = 15.0
#: ... and be at least this loud at the microphone.
LOOP_MIN_LEVEL_DBFS = -60.0
#: Where the dominant frequency is looked for: above mains hum and traffic rumble.
LOOP_BAND_HZ = (200.0, 8000.0)


def tone_check(chunks: Sequence[AudioChunk], tone_hz: float = LOOP_TONE_HZ) -> Check:
    """The acoustic loop: `chunks` are what the microphone heard while the speaker played
    `tone_hz`. An FFT (Hann window) gives the dominant frequency in LOOP_BAND_HZ and its level
    (dBFS of the sine, from its peak bin) above the noise floor (median power of the band);
    it passes when that frequency is within LOOP_TOLERANCE_HZ of the tone, loud enough and
    LOOP_MIN_SNR_DB above the floor."""
    name = "acoustic loop"
    fix_speaker = ("check the speaker, its cable and volume (`alsamixer`, media.speaker_device) "
                   "and that nothing blocks the speaker or the microphone")
    if not chunks:
        return failed(name, "no audio delivered while the tone played",
                      "check the USB microphone is plugged in and its ALSA device")
    rate = chunks[0].sample_rate
    samples = np.frombuffer(b"".join(c.samples for c in chunks), dtype="<i2").astype(np.float64)
    if samples.size < rate // 20:
        return failed(name, f"only {samples.size} samples heard while the tone played",
                      "check the microphone (it stalls)")
    samples -= samples.mean()
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window))
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    band = (freqs >= LOOP_BAND_HZ[0]) & (freqs <= min(LOOP_BAND_HZ[1], rate / 2))
    power = spectrum ** 2
    if not band.any() or not power[band].any():
        return failed(name, f"heard nothing while a {tone_hz:.0f} Hz tone played (silence)",
                      "the microphone is dead or muted: fix the microphone check first",
                      {"tone_hz": tone_hz, "measured_hz": None, "level_dbfs": None,
                       "snr_db": None})
    idx = np.flatnonzero(band)
    peak = int(idx[np.argmax(power[idx])])
    # Parabolic interpolation on the log magnitude: a fraction of a bin.
    shift = 0.0
    if 0 < peak < spectrum.size - 1:
        a, b, c = np.log(spectrum[peak - 1:peak + 2] + 1e-12)
        if (den := a - 2 * b + c) != 0:
            shift = float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    measured = float(freqs[peak] + shift * (freqs[1] - freqs[0]))
    amplitude = 2 * float(spectrum[peak]) / float(window.sum())  # sine peak, full scale 32768
    level = dbfs(amplitude / math.sqrt(2))
    floor = float(np.median(power[idx]))
    snr = 10 * math.log10(float(power[peak]) / floor) if floor > 0 else math.inf
    values = {"tone_hz": tone_hz, "measured_hz": round(measured, 1),
              "level_dbfs": round(level, 1),
              "snr_db": round(snr, 1) if math.isfinite(snr) else None}
    above = f"{snr:.0f} dB" if math.isfinite(snr) else "far"
    heard = f"heard {measured:.0f} Hz at {level:.0f} dBFS, {above} above the noise floor"
    if abs(measured - tone_hz) > LOOP_TOLERANCE_HZ:
        return failed(name, f"the {tone_hz:.0f} Hz tone was not heard: {heard}",
                      fix_speaker, values)
    if level < LOOP_MIN_LEVEL_DBFS or snr < LOOP_MIN_SNR_DB:
        return failed(name, f"the {tone_hz:.0f} Hz tone is too faint: {heard} (need "
                      f"{LOOP_MIN_LEVEL_DBFS:.0f} dBFS, {LOOP_MIN_SNR_DB:.0f} dB)",
                      fix_speaker, values)
    return passed(name, f"{tone_hz:.0f} Hz tone {heard}", values)


# -- disk, certificate -----------------------------------------------------------------------


def disk_check(path: Path, min_free_bytes: int = MIN_FREE_BYTES) -> Check:
    """Free space where the outbox and local evidence live (the nearest existing folder)."""
    name = "disk"
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as e:
        return failed(name, f"cannot read free space of {where}: {e.strerror or e}",
                      "check that the SD card is mounted")
    free_mb, need_mb = usage.free / 2**20, min_free_bytes / 2**20
    detail = f"{free_mb:.0f} MiB free of {usage.total / 2**20:.0f} MiB at {where}"
    if usage.free < min_free_bytes:
        return failed(name, f"{detail} (need {need_mb:.0f} MiB)",
                      "free space on the SD card (old logs) or use a larger card")
    return passed(name, detail)


def certificate_check(not_after: datetime, now: datetime,
                      warn_days: int = CERT_WARN_DAYS) -> Check:
    """Days until the kiosk's certificate expires; under `warn_days` is a failure, because
    renewal takes a technician's visit and an expired kiosk can no longer alert."""
    name = "certificate"
    days = (not_after - now).days
    when = f"{not_after:%Y-%m-%d}"
    if days < 0:
        return failed(name, f"certificate expired on {when}",
                      "renew the kiosk's certificate now (pinkbutton-pki)")
    if days < warn_days:
        return failed(name, f"certificate expires in {days} days ({when})",
                      "renew the kiosk's certificate before it expires (pinkbutton-pki)")
    return passed(name, f"certificate valid until {when} ({days} days)")
