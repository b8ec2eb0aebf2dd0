"""Media pipeline: capture -> bounded raw queue -> encoder thread -> pre-roll and the active sink.

Note on threads:
- Capture callbacks (`_on_frame`, `_on_audio`, `_on_*_failure`) run on the camera's and the
  microphone's threads. They only enqueue.
- Everything else happens on the one "media-encoder" thread: encoding, pushing into the
  pre-roll, calling the sink and `on_fault`, reconfiguring the encoder. Public methods
  (`start_stream`, `stop_stream`, `request_keyframe`, `set_video_level`) enqueue a control
  item for it. Because that thread alone moves packets, `start_stream` gets a seam with no gap
  and no duplicate: the snapshot holds exactly what was encoded before the item, the live
  stream exactly what comes after.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pinkbutton.firmware.media.encoder import AudioEncoder, VideoEncoder
from pinkbutton.firmware.media.packet import EncodedPacket
from pinkbutton.firmware.media.preroll import PreRollBuffer
from pinkbutton.hal.base import AudioChunk, Camera, HalError, Microphone, VideoFrame, describe_error
from pinkbutton.hal.clock import Clock

log = logging.getLogger(__name__)

#: Receives every packet of an active stream; the bool says "from the pre-roll".
PacketSink = Callable[[EncodedPacket, bool], None]
FaultSink = Callable[[str, str], None]


@dataclass(frozen=True)
class _Failure:
    kind: str  # "camera_failed" | "mic_failed"
    reason: str


@dataclass
class PipelineStats:
    frames_in: int = 0
    frames_dropped: int = 0  # raw queue full (encoder too slow): oldest frame dropped
    frames_skipped: int = 0  # camera faster than the encoder's frame rate
    chunks_in: int = 0
    chunks_dropped: int = 0  # only if the encoder thread stalls for many seconds
    video_packets: int = 0
    audio_packets: int = 0
    encode_errors: int = 0


class MediaPipeline:
    def __init__(
        self,
        camera: Camera | None,
        microphone: Microphone | None,
        video: VideoEncoder | None,
        audio: AudioEncoder | None,
        preroll: PreRollBuffer,
        *,
        on_fault: FaultSink,
        clock: Clock | None = None,
        max_video_queue: int = 8,
        max_audio_queue: int = 1500,
    ) -> None:
        self.camera, self.microphone = camera, microphone
        self.video, self.audio = video, audio
        self.preroll = preroll
        self.on_fault = on_fault
        self.clock = clock or Clock()
        self.max_video_queue = max_video_queue
        # Audio is never dropped for video's sake; this cap (30 s of 20 ms chunks) only keeps
        # a stalled encoder thread from eating the RAM.
        self.max_audio_queue = max_audio_queue
        self.stats = PipelineStats()
        self._cond = threading.Condition()
        self._raw: deque[VideoFrame | AudioChunk | _Failure] = deque()
        self._video_queued = 0
        self._audio_queued = 0
        self._control: deque[tuple[str, Any]] = deque()
        self._video_on = camera is not None and video is not None
        self._audio_on = microphone is not None and audio is not None
        self._thread: threading.Thread | None = None
        # The latest captures with their arrival time, for the running kiosk's self-test
        # (firmware/diag/inservice.py): it must not open the camera a second time.
        self._recent_video: deque[tuple[float, VideoFrame]] = deque(maxlen=5)
        self._recent_audio: deque[tuple[float, AudioChunk]] = deque(maxlen=50)
        # Encoder-thread state.
        self._sink: PacketSink | None = None
        self._next_frame_due_us: int | None = None
        self.on_beat: Callable[[], None] = lambda: None  # encoder-thread progress (watchdog)

    @property
    def queued(self) -> tuple[int, int]:
        """(raw video frames, raw audio chunks) waiting for the encoder thread."""
        with self._cond:
            return self._video_queued, self._audio_queued

    # -- lifecycle (owner thread) -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="media-encoder", daemon=True)
        self._thread.start()
        if self._video_on:
            assert self.camera is not None  # _video_on needs a camera
            self.camera.on_frame = self._on_frame
            self.camera.on_failure = self._on_camera_failure
            self._start_device(self.camera, "camera_failed")
        if self._audio_on:
            assert self.microphone is not None  # _audio_on needs a microphone
            self.microphone.on_audio = self._on_audio
            self.microphone.on_failure = self._on_mic_failure
            self._start_device(self.microphone, "mic_failed")

    def _start_device(self, device: Camera | Microphone, fault: str) -> None:
        try:
            device.start()
        except Exception as exc:  # noqa: BLE001 - any library failure, not only HalError
            # Degrade, never block the alert: the other stream goes on.
            why = str(exc) if isinstance(exc, HalError) else describe_error(exc)
            self._enqueue_failure(fault, why.splitlines()[0] if why else fault)

    def stop(self) -> None:
        """Stop capture, encode what is queued, flush the encoders (to the sink if streaming)."""
        if self._thread is None:
            return
        for device in (self.camera, self.microphone):
            if device is not None:
                try:
                    device.stop()
                except HalError as exc:
                    log.warning("stopping %s: %s", type(device).__name__, exc)
        self._enqueue_control("stop", None)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            log.error("media encoder thread did not stop within 10 s")
        self._thread = None

    # -- control (any thread; executed on the encoder thread) --------------------------------

    def start_stream(self, sink: PacketSink) -> None:
        """Send the pre-roll snapshot to `sink` (flag True), then every later packet (False),
        starting with a keyframe."""
        self._enqueue_control("start_stream", sink)

    def stop_stream(self) -> None:
        self._enqueue_control("stop_stream", None)

    def request_keyframe(self) -> None:
        self._enqueue_control("keyframe", None)

    def set_video_level(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        bitrate_kbps: int | None = None,
    ) -> None:
        level = dict(width=width, height=height, fps=fps, bitrate_kbps=bitrate_kbps)
        self._enqueue_control("level", level)

    def _enqueue_control(self, kind: str, arg: Any) -> None:
        with self._cond:
            self._control.append((kind, arg))
            self._cond.notify()

    def recent(self, since: float) -> tuple[list[VideoFrame], list[AudioChunk]]:
        """The last few frames and about 1 s of audio that arrived at or after monotonic
        `since` (any thread)."""
        with self._cond:
            return ([f for at, f in self._recent_video if at >= since],
                    [c for at, c in self._recent_audio if at >= since])

    # -- capture callbacks (capture threads: enqueue only) ------------------------------------

    def _on_frame(self, frame: VideoFrame) -> None:
        with self._cond:
            if not self._video_on:
                return
            self.stats.frames_in += 1
            self._recent_video.append((self.clock.monotonic(), frame))
            if self._video_queued >= self.max_video_queue:
                self._drop_oldest(VideoFrame)
                self._video_queued -= 1
                self.stats.frames_dropped += 1
            self._raw.append(frame)
            self._video_queued += 1
            self._cond.notify()

    def _on_audio(self, chunk: AudioChunk) -> None:
        with self._cond:
            if not self._audio_on:
                return
            self.stats.chunks_in += 1
            self._recent_audio.append((self.clock.monotonic(), chunk))
            if self._audio_queued >= self.max_audio_queue:
                self._drop_oldest(AudioChunk)
                self._audio_queued -= 1
                self.stats.chunks_dropped += 1
                log.warning("media encoder stalled: dropped the oldest raw audio chunk")
            self._raw.append(chunk)
            self._audio_queued += 1
            self._cond.notify()

    def _drop_oldest(self, kind: type) -> None:
        for i, item in enumerate(self._raw):
            if isinstance(item, kind):
                del self._raw[i]
                return

    def _on_camera_failure(self, reason: str) -> None:
        self._enqueue_failure("camera_failed", reason)

    def _on_mic_failure(self, reason: str) -> None:
        self._enqueue_failure("mic_failed", reason)

    def _enqueue_failure(self, kind: str, reason: str) -> None:
        # Queued behind the media captured before it, so that media is still encoded.
        with self._cond:
            if kind == "camera_failed":
                was_on, self._video_on = self._video_on, False
            else:
                was_on, self._audio_on = self._audio_on, False
            if was_on:
                self._raw.append(_Failure(kind, reason))
                self._cond.notify()

    # -- the encoder thread -------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while True:
            self.on_beat()
            with self._cond:
                while not self._control and not self._raw and not stopping:
                    self._cond.wait(1.0)
                    self.on_beat()  # idle is not stuck
                if self._control:
                    kind, arg = self._control.popleft()
                    item = None
                elif self._raw:
                    kind, arg = "raw", None
                    item = self._raw.popleft()
                    if isinstance(item, VideoFrame):
                        self._video_queued -= 1
                    elif isinstance(item, AudioChunk):
                        self._audio_queued -= 1
                else:  # stopping and everything queued is done
                    break
            if kind == "stop":
                stopping = True
            elif isinstance(item, _Failure):
                self._device_failed(item)
            elif kind == "raw":
                assert item is not None  # "raw" always comes with its item
                self._encode(item)
            else:
                try:
                    self._handle_control(kind, arg)
                except Exception:  # e.g. a bad level: log it, keep the media flowing
                    log.exception("media control %r failed", kind)
        self._deliver(self._flush_video() + self._flush_audio())

    def _handle_control(self, kind: str, arg: Any) -> None:
        if kind == "start_stream":
            self._sink = arg
            for pkt in self.preroll.snapshot():
                self._send(pkt, True)
            # Live starts at a keyframe: a room that shows live media before the pre-roll
            # has crossed a slow link (the sender sends live first) decodes it at once.
            if self.video is not None:
                self.video.force_keyframe()
        elif kind == "stop_stream":
            self._sink = None
        elif kind == "keyframe":
            if self.video is not None:
                self.video.force_keyframe()
        elif kind == "level":
            if self.video is not None:
                self.video.reconfigure(**arg)

    def _device_failed(self, failure: _Failure) -> None:
        # Video stops and audio goes on (or the reverse): flush what the dead stream had.
        video = failure.kind == "camera_failed"
        self._deliver(self._flush_video() if video else self._flush_audio())
        self._fault(failure.kind, failure.reason)

    def _fault(self, kind: str, reason: str) -> None:
        try:
            self.on_fault(kind, reason)
        except Exception:
            log.exception("on_fault(%s) raised", kind)

    def _encode(self, item: VideoFrame | AudioChunk) -> None:
        try:
            if isinstance(item, VideoFrame):
                if self.video is None or not self._frame_due(item.pts_us):
                    return
                packets = self.video.encode(item)
            else:
                if self.audio is None:
                    return
                packets = self.audio.encode(item)
        except Exception as exc:  # a bad frame must not kill the thread that carries audio
            self.stats.encode_errors += 1
            log.warning("encoding %s failed: %s", type(item).__name__, exc)
            return
        self._deliver(packets)

    def _frame_due(self, pts_us: int) -> bool:
        # Drop frames when the camera runs faster than the encoder's (adapted) frame rate.
        assert self.video is not None  # _encode checked
        interval = round(1e6 / self.video.fps)
        due = self._next_frame_due_us
        if due is not None and pts_us < due - interval // 4:
            self.stats.frames_skipped += 1
            return False
        base = pts_us if due is None else max(due, pts_us - interval // 2)
        self._next_frame_due_us = base + interval
        return True

    def _flush_video(self) -> list[EncodedPacket]:
        return self.video.flush() if self.video is not None else []

    def _flush_audio(self) -> list[EncodedPacket]:
        return self.audio.flush() if self.audio is not None else []

    def _deliver(self, packets: list[EncodedPacket]) -> None:
        for pkt in packets:
            if pkt.is_video:
                self.stats.video_packets += 1
            else:
                self.stats.audio_packets += 1
            self.preroll.push(pkt)
            if self._sink is not None:
                self._send(pkt, False)

    def _send(self, pkt: EncodedPacket, preroll: bool) -> None:
        try:
            assert self._sink is not None  # callers check; inside the try as a None sink always was
            self._sink(pkt, preroll)
        except Exception:
            log.exception("media sink raised; packet dropped")
