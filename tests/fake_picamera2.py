"""A stand-in `picamera2` module, enough to drive hal.pi.camera without a Pi.

It models what our glue depends on: YUV420 buffers whose rows are padded to a
stride (as libcamera does), requests that must be released (a buffer is reused
after release, so a late read sees garbage), capture errors on demand, and a
frame period. Every call is recorded in `Picamera2.calls` for the tests.

Use: `monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)`, then set the
class-level knobs (`Picamera2.stride`, `Picamera2.fail_after`, ...) per test.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class CameraError(RuntimeError):
    """What the fake raises for a capture failure (picamera2 raises RuntimeError-ish)."""


class CompletedRequest:
    def __init__(self, camera: Picamera2, buffer: np.ndarray, index: int) -> None:
        self._camera = camera
        self._buffer = buffer
        self.index = index
        self.released = False

    def make_buffer(self, name: str) -> np.ndarray:
        assert name == "main", name
        if self.released:
            raise RuntimeError("make_buffer after release")
        self._camera.calls.append(("make_buffer", self.index))
        if Picamera2.make_buffer_fails_at == self.index:
            raise CameraError("failed to map buffer")
        # Like picamera2: a numpy array over the (mapped) buffer. Here it is a view,
        # so anyone who reads it after release() sees the buffer being reused.
        return self._buffer

    def release(self) -> None:
        self._camera.calls.append(("release", self.index))
        self.released = True
        self._buffer[:] = 0xEE  # libcamera refills it with a later frame

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": self.index * 66_666_000, "FrameDuration": 66_666}


class Picamera2:
    # Knobs for the next camera the test opens (class level: the glue makes the instance).
    stride: int | None = None  # None: rows exactly `width` bytes long
    tail_padding = 0  # extra bytes after the V plane
    short_by = 0  # bytes missing at the end (a buffer smaller than its stride says)
    fail_after: int | None = None  # capture_request raises after this many frames
    fail_open = False
    make_buffer_fails_at: int | None = None  # make_buffer raises for this frame index
    period_s = 0.005
    instances: list[Picamera2] = []

    def __init__(self) -> None:
        if Picamera2.fail_open:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.calls: list[tuple] = [("init",)]
        self.config: dict | None = None
        self.started = False
        self.closed = False
        self.requests: list[CompletedRequest] = []
        self._frames = 0
        self._lock = threading.Lock()
        Picamera2.instances.append(self)

    @classmethod
    def reset(cls) -> None:
        cls.stride, cls.tail_padding, cls.fail_after, cls.fail_open = None, 0, None, False
        cls.make_buffer_fails_at = None
        cls.short_by = 0
        cls.period_s = 0.005
        cls.instances = []

    def create_video_configuration(self, main=None, controls=None, **kwargs) -> dict:
        self.calls.append(("create_video_configuration", main, controls))
        return {"use_case": "video", "main": dict(main or {}), "controls": dict(controls or {})}

    def configure(self, config: dict) -> None:
        self.calls.append(("configure", config))
        self.config = config

    def stream_configuration(self, name: str = "main") -> dict:
        width, height = self.config["main"]["size"]
        stride = Picamera2.stride or width
        return {"size": (width, height), "format": "YUV420", "stride": stride}

    def start(self) -> None:
        self.calls.append(("start",))
        self.started = True

    def stop(self) -> None:
        self.calls.append(("stop",))
        self.started = False

    def close(self) -> None:
        self.calls.append(("close",))
        self.closed = True

    def capture_request(self) -> CompletedRequest:
        if not self.started:
            raise RuntimeError("Camera is not running")
        time.sleep(Picamera2.period_s)
        with self._lock:
            if Picamera2.fail_after is not None and self._frames >= Picamera2.fail_after:
                raise CameraError("Device timed out; force restart")
            index = self._frames
            self._frames += 1
        request = CompletedRequest(self, self.frame_buffer(index), index)
        self.requests.append(request)
        self.calls.append(("capture_request", index))
        return request

    def frame_buffer(self, index: int) -> np.ndarray:
        """Frame `index` as libcamera lays it out: padded rows, then padding after V."""
        width, height = self.config["main"]["size"]
        y, u, v = expected_planes(width, height, index)
        stride = Picamera2.stride or width
        ypad = np.full((height, stride), 0x55, np.uint8)
        ypad[:, :width] = y
        cpad = []
        for plane in (u, v):
            padded = np.full((height // 2, stride // 2), 0x55, np.uint8)
            padded[:, : width // 2] = plane
            cpad.append(padded.reshape(-1))
        tail = np.full(Picamera2.tail_padding, 0x55, np.uint8)
        whole = np.concatenate([ypad.reshape(-1), *cpad, tail])
        return whole[: whole.size - Picamera2.short_by]


def expected_planes(width: int, height: int, index: int) -> tuple[np.ndarray, ...]:
    """The picture content of frame `index` (distinct per frame and per plane)."""
    rows = np.arange(height, dtype=np.int64)[:, None]
    cols = np.arange(width, dtype=np.int64)[None, :]
    y = ((rows * 7 + cols * 3 + index) % 200 + 20).astype(np.uint8)
    u = np.full((height // 2, width // 2), (60 + index) % 256, np.uint8)
    v = np.full((height // 2, width // 2), (180 + index) % 256, np.uint8)
    return y, u, v


def expected_i420(width: int, height: int, index: int) -> bytes:
    return b"".join(p.tobytes() for p in expected_planes(width, height, index))
