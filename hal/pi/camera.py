"""Raspberry Pi camera through picamera2 (libcamera), delivering I420 frames.

picamera2 is imported only when a PiCamera is made. It comes from apt
(python3-picamera2) because it binds libcamera; a venv sees it only when made
with --system-site-packages.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any

import numpy as np
from pinkbutton.hal.base import (
    BackendUnavailable,
    Camera,
    DeviceFault,
    HalError,
    VideoFrame,
    describe_error,
)
from pinkbutton.hal.clock import Clock

log = logging.getLogger(__name__)

_HINT = "apt install python3-picamera2 and a venv with --system-site-packages"
_BROKEN_HINT = "is a pip-installed numpy newer than python3-numpy? pip uninstall numpy in the venv"


def require_picamera2() -> ModuleType:
    """The picamera2 module, or BackendUnavailable with the install hint."""
    try:
        import picamera2  # pyright: ignore[reportMissingImports]  # apt-only, absent off the Pi
    except ImportError as exc:
        raise BackendUnavailable(
            f"camera needs picamera2: {_HINT} (import failed: {exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop the kiosk
        # e.g. "ValueError: numpy.dtype size changed": a pip numpy newer than the apt one.
        raise BackendUnavailable(
            f"camera library picamera2 is broken: {describe_error(exc)} ({_BROKEN_HINT})"
        ) from None
    return picamera2


def i420_from_padded(buffer: bytes, width: int, height: int, stride: int) -> bytes:
    """Tightly packed I420 from a YUV420 buffer whose rows are `stride` bytes long.

    libcamera pads each luma row to `stride` bytes (chroma rows to stride/2), so
    e.g. 1296-wide frames arrive with 1344-byte rows; the encoder wants w-byte rows.
    """
    packed = width * height * 3 // 2
    if len(buffer) == packed:
        return bytes(buffer)
    cstride, cw, ch = stride // 2, width // 2, height // 2
    need = stride * height + 2 * cstride * ch
    if stride < width or len(buffer) < need:
        raise DeviceFault(
            f"camera buffer of {len(buffer)} bytes does not hold {width}x{height} YUV420 "
            f"with stride {stride}"
        )
    raw = np.frombuffer(buffer, dtype=np.uint8)
    y = raw[: stride * height].reshape(height, stride)[:, :width]
    u_start = stride * height
    v_start = u_start + cstride * ch
    u = raw[u_start:v_start].reshape(ch, cstride)[:, :cw]
    v = raw[v_start : v_start + cstride * ch].reshape(ch, cstride)[:, :cw]
    return b"".join((y.tobytes(), u.tobytes(), v.tobytes()))


class PiCamera(Camera):
    """picamera2 video stream, main stream YUV420 at (width, height), FrameRate = fps.

    The camera is opened by `start()` and released by `stop()`. The frame size is
    the one libcamera actually configured (it may round the request); `width` and
    `height` are updated to it.

    Note on threads: a "pi-camera" thread blocks in `capture_request()` and calls
    on_frame/on_failure; they must only enqueue. A frame's pts is the injected
    clock when the request completed.
    """

    def __init__(self, clock: Clock, width: int = 640, height: int = 480, fps: float = 15.0):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise HalError(f"camera size must be positive and even, got {width}x{height}")
        if fps <= 0:
            raise HalError(f"camera fps must be positive, got {fps}")
        self._module = require_picamera2()  # fail at selection time, not at the first alert
        self._clock = clock
        self.width, self.height, self.fps = width, height, fps
        self._picam2: Any = None
        self._stride = width
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._failed = False
        self.frames_captured = 0

    def start(self) -> None:
        if self._failed:
            raise DeviceFault("camera has failed; make a new PiCamera to retry")
        if self._thread is not None:
            return
        try:
            picam2 = self._module.Picamera2()
        except Exception as exc:
            raise DeviceFault(f"cannot open the camera: {exc}") from None
        try:
            config = picam2.create_video_configuration(
                main={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": self.fps},
            )
            picam2.configure(config)
            stream = picam2.stream_configuration("main")
            self.width, self.height = (int(n) for n in stream["size"])
            self._stride = int(stream.get("stride") or self.width)
            picam2.start()
        except Exception as exc:
            _close_quietly(picam2)
            raise DeviceFault(f"cannot start the camera: {exc}") from None
        self._picam2 = picam2
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pi-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # capture_request returns within a frame period, so this is short.
            thread.join(timeout=5.0)
        picam2, self._picam2 = self._picam2, None
        if picam2 is not None:
            _close_quietly(picam2)

    def _run(self) -> None:
        picam2 = self._picam2
        while not self._stopping.is_set():
            try:
                frame = self._capture(picam2)
            except Exception as exc:
                if self._stopping.is_set():
                    return  # stopping the camera under a pending capture is not a failure
                self._failed = True
                self._stopping.set()
                if self.on_failure is not None:
                    self.on_failure(f"camera capture failed: {describe_error(exc)}")
                return
            if self.on_frame is not None:
                try:
                    self.on_frame(frame)
                except Exception:
                    log.exception("camera frame consumer raised")

    def _capture(self, picam2: Any) -> VideoFrame:
        request = picam2.capture_request()
        try:
            pts_us = int(self._clock.monotonic() * 1e6)
            # Copy out before release: after release libcamera reuses the buffer.
            raw = bytes(request.make_buffer("main"))
        finally:
            request.release()
        data = i420_from_padded(raw, self.width, self.height, self._stride)
        self.frames_captured += 1
        return VideoFrame(data=data, width=self.width, height=self.height, pts_us=pts_us)


def _close_quietly(picam2: Any) -> None:
    for step in ("stop", "close"):
        try:
            getattr(picam2, step)()
        except Exception as exc:
            log.warning("camera %s failed: %s", step, describe_error(exc))
