"""H.264 and Opus encoders (PyAV) producing EncodedPackets on the shared µs timeline.

Note on threads: an encoder is not thread-safe. Only the media pipeline's encoder thread
calls it; capture callbacks never do (they only enqueue).
"""

from __future__ import annotations

import logging
from collections import deque
from fractions import Fraction
from typing import cast

import av
import av.video.frame
import numpy as np
from pinkbutton.firmware.media.packet import (
    DEFAULT_OPUS_FRAME_MS,
    OPUS_FRAME_MS,
    EncodedPacket,
    Stream,
)
from pinkbutton.hal.base import AudioChunk, VideoFrame

log = logging.getLogger(__name__)

VIDEO_CODECS = ("auto", "libx264", "h264_v4l2m2m")
# x264's constant-quality target; the VBV cap below is what bounds the bitrate. Constant
# quality spends almost nothing on a still scene, which matters on metered mobile links.
_X264_CRF = 26
# The VBV buffer (1 s of the cap) starts nearly empty, not x264's default 90% full: a full
# buffer lets the first second after every (re)open spend almost twice the cap (857 kbit/s
# measured for 500). Every (re)open then starts with a small keyframe that later ones refine.
_VBV_INIT = 0.1
_VBV_MAXRATE_SHARE = 0.9


class EncoderUnavailable(RuntimeError):
    """The requested encoder cannot run here (no hardware, library missing)."""


def nal_types(annexb: bytes) -> list[int]:
    """NAL unit types of an Annex B byte stream, in order (start codes 00 00 01 / 00 00 00 01)."""
    types = []
    i = annexb.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(annexb):
        types.append(annexb[i + 3] & 0x1F)
        i = annexb.find(b"\x00\x00\x01", i + 3)
    return types


def _split_parameter_sets(annexb: bytes) -> bytes:
    """The SPS/PPS NAL units (with start codes) at the front of a keyframe, or b""."""
    out = bytearray()
    starts = []
    i = annexb.find(b"\x00\x00\x01")
    while i != -1:
        begin = i - 1 if i > 0 and annexb[i - 1] == 0 else i
        starts.append((begin, i + 3))
        i = annexb.find(b"\x00\x00\x01", i + 3)
    for n, (begin, body) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(annexb)
        if body < len(annexb) and annexb[body] & 0x1F in (7, 8):
            out += annexb[begin:end]
    return bytes(out)


def libx264_options(keyint: int, bitrate_kbps: int) -> dict[str, str]:
    """libx264's private options for our stream (also what the bench gives the ffmpeg CLI)."""
    return {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "forced-idr": "1",
        "crf": str(_X264_CRF),
        "x264-params": (
            f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:"
            f"repeat-headers=1:vbv-maxrate={vbv_maxrate_kbps(bitrate_kbps)}:"
            f"vbv-bufsize={bitrate_kbps}:vbv-init={_VBV_INIT}"
        ),
    }


def vbv_maxrate_kbps(bitrate_kbps: int) -> int:
    """x264's VBV rate for a cap: a little under it, so that every 1 s window stays under
    the cap (x264's rate control overshoots its model by a few percent on a busy picture)."""
    return max(1, round(bitrate_kbps * _VBV_MAXRATE_SHARE))


def _i420_frame(frame: VideoFrame) -> av.VideoFrame:
    expected = frame.width * frame.height * 3 // 2
    if len(frame.data) != expected:
        raise ValueError(
            f"video frame is {len(frame.data)} bytes, I420 {frame.width}x{frame.height} "
            f"needs {expected}"
        )
    plane = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height * 3 // 2, frame.width)
    try:
        # No copy: the picture wraps the captured bytes (immutable, kept alive by the frame).
        # A tenth of from_ndarray's cost, which was ~15% of the encode CPU at 640x480.
        return av.VideoFrame.from_numpy_buffer(plane, format="yuv420p")
    except ValueError:  # a layout PyAV cannot wrap as is: copy it
        return av.VideoFrame.from_ndarray(plane, format="yuv420p")


def _s16_mono_frame(pcm: bytes, samples: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
    try:
        frame.planes[0].update(pcm)  # one copy, no numpy round trip: ~15% of our Opus CPU
    except ValueError:  # the plane is padded for alignment at this frame size
        array = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(array, format="s16", layout="mono")
    return frame


class VideoEncoder:
    """H.264 in Annex B with SPS/PPS on every keyframe, no B-frames, bitrate capped.

    Output packets come out in capture order (no reordering), one per input frame;
    `pts_us` is the captured frame's.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 15,
        bitrate_kbps: int = 500,
        keyframe_interval_s: float = 1.0,
        codec: str = "auto",
    ) -> None:
        if codec not in VIDEO_CODECS:
            raise ValueError(f"unknown video encoder {codec!r} (choose {', '.join(VIDEO_CODECS)})")
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"video size must be positive and even, got {width}x{height}")
        if fps <= 0 or bitrate_kbps <= 0 or keyframe_interval_s <= 0:
            raise ValueError("fps, bitrate_kbps and keyframe_interval_s must be positive")
        self.width, self.height, self.fps = width, height, fps
        self.bitrate_kbps = bitrate_kbps
        self.keyframe_interval_s = keyframe_interval_s
        self.codec_name = self._choose_codec(codec)
        self._ctx: av.VideoCodecContext | None = None
        self._frame_index = 0
        self._pts_by_index: dict[int, int] = {}
        self._force_key = False
        self._parameter_sets = b""  # last SPS/PPS seen, for codecs that send them only once
        self._pending: list[EncodedPacket] = []  # drained from a closed encoder, not yet returned

    # -- codec choice -------------------------------------------------------------------------

    def _choose_codec(self, codec: str) -> str:
        if codec == "libx264":
            return codec
        reason = self._probe(codec="h264_v4l2m2m")
        if reason is None:
            return "h264_v4l2m2m"
        if codec == "h264_v4l2m2m":
            raise EncoderUnavailable(f"h264_v4l2m2m unavailable: {reason}")
        log.info("video encoder auto: using libx264 (h264_v4l2m2m unavailable: %s)", reason)
        return "libx264"

    def _probe(self, codec: str) -> str | None:
        """None if `codec` opens and encodes a test frame here, else a one-line reason."""
        try:
            ctx = self._open(codec)
            black = bytes(self.width * self.height) + bytes([128]) * (self.width * self.height // 2)
            frame = _i420_frame(VideoFrame(black, self.width, self.height, 0))
            frame.pts = 0
            ctx.encode(frame)
            ctx.encode(None)
        except Exception as exc:  # any failure means "not usable here"
            return f"{type(exc).__name__}: {exc}".splitlines()[0]
        return None

    def _open(self, codec: str) -> av.VideoCodecContext:
        # The codec name is only known at run time, so PyAV's stubs cannot pick the video overload.
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(codec, "w"))
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        # Frame-index time base: x264's rate control sees exactly the configured rate.
        rate = Fraction(self.fps).limit_denominator(1001)
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        keyint = max(1, round(self.fps * self.keyframe_interval_s))
        ctx.gop_size = keyint
        ctx.max_b_frames = 0
        ctx.bit_rate = self.bitrate_kbps * 1000
        if codec == "libx264":
            ctx.options = libx264_options(keyint, self.bitrate_kbps)
        ctx.open()
        return ctx

    # -- encoding -----------------------------------------------------------------------------

    def reconfigure(
        self,
        *,
        bitrate_kbps: int | None = None,
        fps: float | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        """Change the level; the encoder is reopened so the next frame is a keyframe."""
        new = (
            width or self.width,
            height or self.height,
            fps or self.fps,
            bitrate_kbps or self.bitrate_kbps,
        )
        if new == (self.width, self.height, self.fps, self.bitrate_kbps):
            return
        if new[0] % 2 or new[1] % 2:
            raise ValueError(f"video size must be even, got {new[0]}x{new[1]}")
        self._pending.extend(self._close())
        self.width, self.height, self.fps, self.bitrate_kbps = new

    def force_keyframe(self) -> None:
        self._force_key = True

    def encode(self, frame: VideoFrame) -> list[EncodedPacket]:
        if self._ctx is None:
            self._ctx = self._open(self.codec_name)
        picture = _i420_frame(frame)
        if (frame.width, frame.height) != (self.width, self.height):
            picture = picture.reformat(width=self.width, height=self.height, format="yuv420p")
        picture.pts = self._frame_index
        self._pts_by_index[self._frame_index] = frame.pts_us
        self._frame_index += 1
        if self._force_key:
            picture.pict_type = av.video.frame.PictureType.I
            self._force_key = False
        out, self._pending = self._pending, []
        out.extend(self._convert(self._ctx.encode(picture)))
        return out

    def flush(self) -> list[EncodedPacket]:
        out, self._pending = self._pending, []
        out.extend(self._close())
        return out

    def _close(self) -> list[EncodedPacket]:
        if self._ctx is None:
            return []
        out = self._convert(self._ctx.encode(None))
        self._ctx = None
        self._frame_index = 0
        self._pts_by_index.clear()
        return out

    def _convert(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        frame_us = round(1e6 / self.fps)
        for packet in packets:
            pts_us = self._pts_by_index.pop(packet.pts, None) if packet.pts is not None else None
            if pts_us is None:
                log.warning("video encoder returned a packet for an unknown frame; dropped")
                continue
            data = bytes(packet)
            if packet.is_keyframe:
                data = self._with_parameter_sets(data)
            out.append(EncodedPacket(Stream.VIDEO, data, pts_us, frame_us, packet.is_keyframe))
        return out

    def _with_parameter_sets(self, data: bytes) -> bytes:
        # Hardware encoders may send SPS/PPS once (or only in extradata); a receiver joining
        # at any keyframe needs them, so put the last seen ones in front when missing.
        found = _split_parameter_sets(data)
        if found:
            self._parameter_sets = found
            return data
        if not self._parameter_sets and self._ctx is not None and self._ctx.extradata:
            self._parameter_sets = _split_parameter_sets(bytes(self._ctx.extradata))
        return self._parameter_sets + data


class AudioEncoder:
    """Opus, mono, one packet per `frame_ms` (20, 40 or 60); pts_us is the capture time of the
    packet's first sample.

    Timing follows a sample clock anchored at the first chunk, so continuous audio gets
    exactly `frame_ms` spacing; a capture gap (chunk pts off by more than 5 ms) re-anchors it.
    """

    _RESYNC_US = 5000

    def __init__(self, sample_rate: int = 48000, bitrate_kbps: int = 24,
                 frame_ms: int = DEFAULT_OPUS_FRAME_MS) -> None:
        if sample_rate not in (8000, 12000, 16000, 24000, 48000):
            raise ValueError(f"Opus needs 8/12/16/24/48 kHz, got {sample_rate} Hz")
        if frame_ms not in OPUS_FRAME_MS:
            raise ValueError(f"Opus frames here are 20, 40 or 60 ms, got {frame_ms} ms")
        self.sample_rate = sample_rate
        self.bitrate_kbps = bitrate_kbps
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self.codec_name = "libopus"
        self._ctx: av.AudioCodecContext | None = None
        self._buffer = bytearray()
        self._buffer_pts_us: int | None = None  # capture time of _buffer[0]
        self._fed = 0  # samples fed to the codec since open, for its own pts
        self._pts_queue: deque[int] = deque()  # pts_us of frames fed, in order
        self._last_pts_us: int | None = None

    def _open(self) -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = self.sample_rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = self.bitrate_kbps * 1000
        # Constrained VBR: unconstrained libopus overshoots 24k by ~50% on tonal input.
        ctx.options = {"frame_duration": str(self.frame_ms), "application": "voip", "vbr": "constrained"}
        ctx.open()
        return ctx

    def _samples_to_us(self, samples: int) -> int:
        return round(samples * 1_000_000 / self.sample_rate)

    def encode(self, chunk: AudioChunk) -> list[EncodedPacket]:
        if chunk.sample_rate != self.sample_rate:
            raise ValueError(
                f"audio chunk is {chunk.sample_rate} Hz, encoder expects {self.sample_rate} Hz"
            )
        if self._buffer_pts_us is not None:
            expected = self._buffer_pts_us + self._samples_to_us(len(self._buffer) // 2)
            if abs(chunk.pts_us - expected) > self._RESYNC_US:
                # A capture gap: finish what we have, then restart the sample clock.
                out = self._drain_buffer(pad=True)
                self._buffer_pts_us = chunk.pts_us
                self._buffer += chunk.samples[: len(chunk.samples) // 2 * 2]
                return out + self._drain_buffer(pad=False)
        else:
            self._buffer_pts_us = chunk.pts_us
        self._buffer += chunk.samples[: len(chunk.samples) // 2 * 2]
        return self._drain_buffer(pad=False)

    def flush(self) -> list[EncodedPacket]:
        out = self._drain_buffer(pad=True)
        if self._ctx is not None:
            out += self._convert(self._ctx.encode(None), trailing=True)
            self._ctx = None
            self._fed = 0
            self._pts_queue.clear()
        self._buffer_pts_us = None
        self._last_pts_us = None
        return out

    def _drain_buffer(self, *, pad: bool) -> list[EncodedPacket]:
        out: list[EncodedPacket] = []
        frame_bytes = self.frame_samples * 2
        if pad and len(self._buffer) % frame_bytes:
            # Pad the last partial frame with silence rather than lose captured audio.
            self._buffer += bytes(frame_bytes - len(self._buffer) % frame_bytes)
        while len(self._buffer) >= frame_bytes:
            assert self._buffer_pts_us is not None
            if self._ctx is None:
                self._ctx = self._open()
            frame = _s16_mono_frame(bytes(self._buffer[:frame_bytes]), self.frame_samples)
            frame.sample_rate = self.sample_rate
            frame.pts = self._fed
            self._fed += self.frame_samples
            self._pts_queue.append(self._buffer_pts_us)
            del self._buffer[:frame_bytes]
            self._buffer_pts_us += self._samples_to_us(self.frame_samples)
            out += self._convert(self._ctx.encode(frame), trailing=False)
        if not self._buffer and pad:
            self._buffer_pts_us = None
        return out

    def _convert(self, packets: list[av.Packet], *, trailing: bool) -> list[EncodedPacket]:
        out = []
        frame_us = self._samples_to_us(self.frame_samples)
        for packet in packets:
            if self._pts_queue:
                pts_us = self._pts_queue.popleft()
            elif trailing and self._last_pts_us is not None:
                # libopus emits its look-ahead tail on flush; it continues the last frame.
                pts_us = self._last_pts_us + frame_us
            else:
                log.warning("audio encoder returned a packet for an unknown frame; dropped")
                continue
            self._last_pts_us = pts_us
            out.append(EncodedPacket(Stream.AUDIO, bytes(packet), pts_us, frame_us, True))
        return out
