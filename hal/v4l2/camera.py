"""A webcam (or any FFmpeg input device) through PyAV, delivering I420 frames.

For simulated buttons on laptops: `pinkbutton-sim run --webcam /dev/video0` streams a real
picture through the real encoder and protocol. PyAV's wheels carry FFmpeg's `v4l2` input
device; the same class opens any FFmpeg input (`lavfi` test sources in the contract tests),
so the capture glue is tested on machines without a camera.

Frames are converted to tightly packed I420 at the requested size when the device delivers
something else (many webcams only offer YUYV or MJPEG).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pinkbutton.hal.base import Camera, DeviceFault, HalError, VideoFrame, describe_error
from pinkbutton.hal.clock import Clock

log = logging.getLogger(__name__)


class V4l2Camera(Camera):
    """Frames from `device` (opened by `start()` with FFmpeg input format `input_format`).

    Note on threads: a "v4l2-camera" thread blocks in the demuxer and calls on_frame /
    on_failure; they must only enqueue. A frame's pts is the injected clock when it was
    decoded. The end of the input (a webcam unplugged, a finite test source) is a failure.
    """

    def __init__(
        self,
        clock: Clock,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        *,
        device: str = "/dev/video0",
        input_format: str = "v4l2",
        options: dict[str, str] | None = None,
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise HalError(f"camera size must be positive and even, got {width}x{height}")
        if fps <= 0:
            raise HalError(f"camera fps must be positive, got {fps}")
        self._clock = clock
        self.width, self.height, self.fps = width, height, fps
        self.device, self.input_format = device, input_format
        if options is None and input_format == "v4l2":
            options = {"video_size": f"{width}x{height}", "framerate": f"{fps:g}"}
        self._options = dict(options or {})
        self._container: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._failed = False
        self.frames_captured = 0

    def start(self) -> None:
        if self._failed:
            raise DeviceFault(f"camera {self.device} has failed; make a new V4l2Camera to retry")
        if self._thread is not None:
            return
        import av.error  # the kiosk image on a Pi never needs this path

        try:
            container = av.open(self.device, format=self.input_format, options=self._options)
            stream = container.streams.video[0]
        except (av.error.FFmpegError, OSError, IndexError) as exc:
            raise DeviceFault(f"cannot open camera {self.device}: {describe_error(exc)}") from None
        stream.thread_type = "AUTO"
        self._container = container
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(container, stream), name="v4l2-camera", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)  # the demuxer returns within a frame period
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception as exc:  # noqa: BLE001 - closing must not raise on the way out
                log.warning("closing camera %s failed: %s", self.device, describe_error(exc))

    def _run(self, container: Any, stream: Any) -> None:
        try:
            for frame in container.decode(stream):
                if self._stopping.is_set():
                    return
                self._deliver(self._to_i420(frame))
        except Exception as exc:  # noqa: BLE001 - any capture error ends the camera, reported
            if not self._stopping.is_set():
                self._fail(f"camera {self.device} capture failed: {describe_error(exc)}")
            return
        if not self._stopping.is_set():
            self._fail(f"camera {self.device} stream ended")

    def _to_i420(self, frame: Any) -> VideoFrame:
        pts_us = int(self._clock.monotonic() * 1e6)
        if (frame.format.name, frame.width, frame.height) != ("yuv420p", self.width, self.height):
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        planes = []
        for i, (w, h) in enumerate(
            ((self.width, self.height),) + ((self.width // 2, self.height // 2),) * 2
        ):
            plane = frame.planes[i]
            raw = bytes(plane)
            if plane.line_size == w:
                planes.append(raw[: w * h])
            else:  # rows padded for alignment: keep w bytes of each
                planes.append(
                    b"".join(raw[r * plane.line_size : r * plane.line_size + w] for r in range(h))
                )
        self.frames_captured += 1
        return VideoFrame(b"".join(planes), self.width, self.height, pts_us)

    def _deliver(self, frame: VideoFrame) -> None:
        if self.on_frame is not None:
            try:
                self.on_frame(frame)
            except Exception:
                log.exception("camera frame consumer raised")

    def _fail(self, reason: str) -> None:
        self._failed = True
        self._stopping.set()
        if self.on_failure is not None:
            self.on_failure(reason)
