"""Fault detection while the kiosk runs: detectors fed with timestamped observations.

Pure: no clock, no threads, no I/O. The runtime feeds observations (the button's and the
tamper switch's debounced levels, statistics of one camera frame and of the microphone's
audio about once a second, the SoC temperature) with the monotonic time they were made, and
gets back `Transition`s: a fault raised or cleared. Each fault has a raise hold (the condition
must last that long), a clear hold, and a hysteresis band between "bad" and "good" in which
nothing changes, so a value that hovers at a threshold does not flap.

Level inputs (button, tamper) are known at every moment, so their holds also end by time
alone: `poll(now)` at `next_deadline()`. Sampled inputs (camera, microphone, temperature) are
decided only when a new observation arrives: a camera that stopped delivering must not raise
`camera_covered` later from its last, stale frame (that is `camera_failed`'s business).

The picture statistics reuse the thresholds of `pinkbutton-diag`'s camera and microphone
checks (firmware/diag/checks.py), so "covered" and "silent" mean the same thing on site and
in operation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from pinkbutton.firmware.diag.checks import COVERED_MEAN, COVERED_STD, SILENT_DBFS, dbfs
from pinkbutton.hal.base import AudioChunk, VideoFrame

BUTTON_STUCK = "button_stuck"
CAMERA_COVERED = "camera_covered"
CAMERA_FROZEN = "camera_frozen"
MIC_DEAD = "mic_dead"
TAMPER = "tamper"
OVER_TEMPERATURE = "over_temperature"
FAULTS = (BUTTON_STUCK, CAMERA_COVERED, CAMERA_FROZEN, MIC_DEAD, TAMPER, OVER_TEMPERATURE)

#: The sampled luma grid's longer side (pixels): every n-th pixel, not an average, so a still
#: scene's sensor noise stays visible (averaging would smooth it into a "frozen" picture).
SAMPLE_SIDE = 80
#: Frozen: fewer than this fraction of the sampled pixels changed at all since the previous
#: sample. A hung sensor repeats its buffer exactly (0 %); a still real scene's noise moves
#: most pixels by a level or more. Not frozen again at twice that.
FROZEN_CHANGED = 0.01
UNFROZEN_CHANGED = 0.02
#: Uncovered again only this far (luma levels) above the covered thresholds.
COVERED_MARGIN = 4.0
COVERED_STD_MARGIN = 2.0
#: A dead microphone is alive again only this far (dB) above the silence floor.
MIC_MARGIN_DB = 6.0
#: Over-temperature is cleared only below max_temp_c minus this.
TEMP_MARGIN_C = 5.0


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    raised: bool  # False: cleared
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorSettings:
    button_stuck_s: float = 10.0  # held this long: stuck
    camera_covered_s: float = 30.0
    camera_frozen_s: float = 30.0
    mic_dead_s: float = 30.0
    max_temp_c: float = 80.0
    clear_s: float = 2.0  # camera and microphone: good this long before their fault clears

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low = -math.inf if f.name == "max_temp_c" else 0.0
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= low):
                raise ValueError(f"{f.name} must be a finite number"
                                 f"{' >= 0' if low == 0 else ''}, not {value!r}")
        if self.button_stuck_s <= 0:
            raise ValueError(f"button_stuck_s must be > 0, not {self.button_stuck_s!r}")


# -- statistics (run on a sampling thread, never on the state thread) --------------------------


@dataclass(frozen=True, slots=True, eq=False)
class FrameSample:
    """One frame reduced to a small grid of its luma: mean, spread, and the fraction of grid
    pixels that changed since the previous sample (None for the first)."""

    mean: float
    std: float
    changed: float | None
    pixels: np.ndarray


def sample_frame(frame: VideoFrame, previous: FrameSample | None) -> FrameSample:
    """A few thousand luma pixels of an I420 frame (a view, no copy of the frame)."""
    step = max(1, -(-max(frame.width, frame.height) // SAMPLE_SIDE))
    y = np.frombuffer(frame.data, dtype=np.uint8, count=frame.width * frame.height)
    grid = np.ascontiguousarray(y.reshape(frame.height, frame.width)[::step, ::step])
    changed = None
    if previous is not None and previous.pixels.shape == grid.shape:
        changed = float(np.count_nonzero(grid != previous.pixels)) / grid.size
    return FrameSample(mean=float(grid.mean()), std=float(grid.std()), changed=changed,
                       pixels=grid)


def audio_level_dbfs(chunks: Sequence[AudioChunk]) -> float | None:
    """RMS level (DC removed) of the chunks in dBFS, -inf for digital silence, None for no
    audio at all."""
    data = b"".join(c.samples for c in chunks)
    samples = np.frombuffer(data, dtype="<i2", count=len(data) // 2).astype(np.float64)
    if samples.size == 0:
        return None
    return dbfs(float(np.sqrt(np.mean((samples - samples.mean()) ** 2))))


# -- detectors ------------------------------------------------------------------------------------


class _Hold:
    """One fault: raised once the condition was bad for `raise_s`, cleared once it was good for
    `clear_s`. `None` (in the hysteresis band, or cannot tell) keeps the current status and
    restarts the count towards the other one."""

    def __init__(self, name: str, raise_s: float, clear_s: float) -> None:
        self.name, self.raise_s, self.clear_s = name, raise_s, clear_s
        self.active = False
        self._since: float | None = None  # the opposite condition began then
        self._detail = ""
        self._last: bool | None = None  # the last observation

    def observe(self, now: float, bad: bool | None, detail: str = "") -> Transition | None:
        self._last = bad
        if bad is None or bad == self.active:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        if bad:
            self._detail = detail
        return self.poll(now)

    def deadline(self) -> float | None:
        if self._since is None:
            return None
        return self._since + (self.clear_s if self.active else self.raise_s)

    def poll(self, now: float) -> Transition | None:
        due = self.deadline()
        if due is None or now < due:
            return None
        self.active, self._since = not self.active, None
        return Transition(self.name, self.active, self._detail if self.active else "")

    def adopt(self, now: float) -> Transition | None:
        """The fault was raised elsewhere (the self-test): from now on it is ours to clear,
        counting from `now` if its condition is already good."""
        self.active, self._since = True, None
        return self.observe(now, self._last, self._detail)


class Monitor:
    """Every running-fault detector of one kiosk. Owned by one thread (the state thread)."""

    def __init__(self, settings: MonitorSettings = MonitorSettings()) -> None:
        s = self.settings = settings
        self._button = _Hold(BUTTON_STUCK, s.button_stuck_s, 0.0)
        self._tamper = _Hold(TAMPER, 0.0, 0.0)
        self._covered = _Hold(CAMERA_COVERED, s.camera_covered_s, s.clear_s)
        self._frozen = _Hold(CAMERA_FROZEN, s.camera_frozen_s, s.clear_s)
        self._mic = _Hold(MIC_DEAD, s.mic_dead_s, s.clear_s)
        self._temp = _Hold(OVER_TEMPERATURE, 0.0, 0.0)
        self._all = (self._button, self._tamper, self._covered, self._frozen, self._mic,
                     self._temp)
        self._levels = (self._button, self._tamper)  # known at every moment: held by time

    @property
    def active(self) -> frozenset[str]:
        return frozenset(d.name for d in self._all if d.active)

    def button(self, at: float, pressed: bool) -> list[Transition]:
        held = f"button held down for {self.settings.button_stuck_s:g} s (stuck or shorted)"
        return _list(self._button.observe(at, pressed, held))

    def tamper(self, at: float, is_open: bool) -> list[Transition]:
        return _list(self._tamper.observe(at, is_open, "tamper switch open: the case is open"))

    def frame(self, at: float, s: FrameSample) -> list[Transition]:
        covered: bool | None = s.mean < COVERED_MEAN and s.std < COVERED_STD
        if not covered and s.mean < COVERED_MEAN + COVERED_MARGIN \
                and s.std < COVERED_STD + COVERED_STD_MARGIN:
            covered = None  # the band: neither covered nor clearly uncovered
        frozen: bool | None = None  # a featureless picture looks the same every time
        if s.changed is not None and s.std >= COVERED_STD:
            frozen = (True if s.changed < FROZEN_CHANGED
                      else False if s.changed >= UNFROZEN_CHANGED else None)
        return _list(
            self._covered.observe(at, covered, f"covered or black: mean luminance "
                                  f"{s.mean:.0f}/255 for {self.settings.camera_covered_s:g} s"),
            self._frozen.observe(at, frozen, f"frozen: the picture has not changed for "
                                 f"{self.settings.camera_frozen_s:g} s"),
        )

    def audio(self, at: float, level_dbfs: float | None) -> list[Transition]:
        if level_dbfs is None:
            return []
        dead: bool | None = (True if level_dbfs < SILENT_DBFS
                             else False if level_dbfs >= SILENT_DBFS + MIC_MARGIN_DB else None)
        shown = "digital silence" if level_dbfs == -math.inf else f"{level_dbfs:.0f} dBFS"
        return _list(self._mic.observe(
            at, dead, f"microphone silent ({shown}, below {SILENT_DBFS:g} dBFS) for "
                      f"{self.settings.mic_dead_s:g} s"))

    def temperature(self, at: float, celsius: float | None) -> list[Transition]:
        if celsius is None:
            return []
        top = self.settings.max_temp_c
        hot: bool | None = (True if celsius > top
                            else False if celsius < top - TEMP_MARGIN_C else None)
        return _list(self._temp.observe(at, hot, f"SoC at {celsius:.1f} °C, above {top:g} °C"))

    def poll(self, now: float) -> list[Transition]:
        """Holds of the level inputs that ended by time alone."""
        return _list(*(d.poll(now) for d in self._levels))

    def next_deadline(self) -> float | None:
        due = [d for d in (h.deadline() for h in self._levels) if d is not None]
        return min(due) if due else None

    def adopt(self, now: float, name: str) -> list[Transition]:
        """`name` was raised by someone else (the self-test's button_stuck): this detector
        clears it when its condition is good, at once if it is good already."""
        for d in self._levels:
            if d.name == name and not d.active:
                return _list(d.adopt(now))
        return []


def _list(*transitions: Transition | None) -> list[Transition]:
    return [t for t in transitions if t is not None]
