"""A camera made of numpy: a moving pink bar with the capture time drawn in.

Frames are generated directly as I420 (no RGB, no conversion) because colour
conversion would cost more than encoding. Every frame carries its own `pts_us`
as a stamp (hal.stamp), so the far end can measure glass-to-glass latency and
tests can check that the right picture arrived.
"""

from __future__ import annotations

import numpy as np
from pinkbutton.hal.base import Camera, FailureSink, HalError, VideoFrame
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake.paced import PacedSource
from pinkbutton.hal.stamp import BLACK, draw_stamp

_BAR_Y, _BAR_U, _BAR_V = 170, 150, 200  # pink-ish in YUV


class FakeCamera(PacedSource, Camera):
    """Deterministic `Camera`.

    `start()` runs a capture thread at `fps` on `clock`; `capture_one()` makes a
    single frame synchronously (for FakeClock tests, camera not started).

    Test controls (plain attributes, read at every capture):
    `covered` all-black frames with no stamp (someone taped over the lens);
    `frozen` the previous picture again, stamp included (a hung sensor);
    `noise` random noise with the stamp on top; `still` a static scene through a noisy
    sensor (the same picture plus a little noise each time, no stamp: nothing in it moves,
    yet it is not frozen); `fail(reason)` the camera dies.
    `frames_captured` counts frames produced.

    Note on threads: on_frame/on_failure run on the "fake-camera" thread when
    started, on the caller's thread for `capture_one()` (and for `fail()` while
    stopped).
    """

    def __init__(self, clock: Clock, width: int = 640, height: int = 480, fps: float = 15.0):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise HalError(f"camera size must be positive and even, got {width}x{height}")
        if fps <= 0:
            raise HalError(f"camera fps must be positive, got {fps}")
        super().__init__(clock, 1.0 / fps, "fake-camera", max_late_s=1.0 / fps)
        self.width, self.height, self.fps = width, height, fps
        self.covered = False
        self.frozen = False
        self.noise = False
        self.still = False
        self.frames_captured = 0
        self._rng = np.random.default_rng(0)
        self._last: bytes | None = None
        rows = np.linspace(40, 120, height, dtype=np.float32)[:, None]
        cols = np.linspace(0, 40, width, dtype=np.float32)[None, :]
        self._background = (rows + cols).astype(np.uint8)  # soft gradient, cheap to encode
        self._bar_width = max(2, (width // 16) & ~1)
        self._bar_step = max(2, round(width / (2 * fps)) & ~1)  # crosses the picture in ~2 s

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3 // 2

    # -- Camera -----------------------------------------------------------------------

    def start(self) -> None:
        PacedSource.start(self)

    def stop(self) -> None:
        PacedSource.stop(self)

    def capture_one(self) -> VideoFrame:
        """One frame stamped `clock.monotonic()` now, given to on_frame too, and returned."""
        if self.running:
            raise HalError("capture_one() is for a stopped camera; this one is started")
        self._check_usable()
        frame = self._capture(self._clock.monotonic())
        if self.on_frame is not None:
            self.on_frame(frame)
        return frame

    # -- internals ------------------------------------------------------------------------

    def _failure_sink(self) -> FailureSink | None:
        return self.on_failure

    def _tick(self, now: float, due: float) -> None:
        frame = self._capture(now)
        if self.on_frame is not None:
            self.on_frame(frame)

    def _capture(self, now: float) -> VideoFrame:
        pts_us = int(now * 1e6)
        data = self._picture(pts_us)
        self.frames_captured += 1
        return VideoFrame(data=data, width=self.width, height=self.height, pts_us=pts_us)

    def _picture(self, pts_us: int) -> bytes:
        w, h = self.width, self.height
        if self.covered:
            return bytes([BLACK]) * (w * h) + bytes([128]) * (w * h // 2)
        if self.frozen and self._last is not None:
            return self._last
        if self.still:
            return self._still_picture()
        buf = np.empty(self.frame_bytes, dtype=np.uint8)
        y = buf[: w * h].reshape(h, w)
        u = buf[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
        v = buf[w * h * 5 // 4 :].reshape(h // 2, w // 2)
        if self.noise:
            buf[:] = self._rng.integers(0, 256, buf.size, dtype=np.uint8)
        else:
            y[:] = self._background
            u[:] = 128
            v[:] = 128
            x = (self.frames_captured * self._bar_step) % w
            y[:, x : x + self._bar_width] = _BAR_Y
            u[:, x // 2 : (x + self._bar_width) // 2] = _BAR_U
            v[:, x // 2 : (x + self._bar_width) // 2] = _BAR_V
        draw_stamp(y, pts_us)
        self._last = buf.tobytes()
        return self._last

    def _still_picture(self) -> bytes:
        """The background and a bar at a fixed place, plus sensor noise (σ 1.5 levels)."""
        w, h = self.width, self.height
        y = self._background.astype(np.float32)
        y[:, w // 3 : w // 3 + self._bar_width] = _BAR_Y
        y += self._rng.normal(0.0, 1.5, y.shape).astype(np.float32)
        luma = np.clip(np.rint(y), 0, 255).astype(np.uint8)
        self._last = luma.tobytes() + bytes([128]) * (w * h // 2)
        return self._last
