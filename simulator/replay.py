"""Pre-encoded media replay for `pinkbutton-sim load`: stands in for the kiosk's encoders.

The expensive part of a streaming device is x264; twenty of them would measure the encoder,
not the path to the room. A replay encoder takes the place of `VideoEncoder` /
`AudioEncoder` in a kiosk's `MediaPipeline` (the encoder stage only): H.264 and Opus packets
encoded ONCE at start with PyAV from the fake camera and microphone (`Clip`), then handed
out in order, round and round, one per captured frame / Opus frame of audio (20-60 ms, the
kiosk's `media.audio_frame_ms`). Everything after the encoder is the kiosk's own: pre-roll,
MediaSender, envelopes, MQTT over mTLS.

Time: each replayed packet carries the capture time (`pts_us`) of the frame or audio chunk it
stands for, as the real encoder does, so the envelope's capture time is "when the fake
camera captured this frame". Glass-to-glass measured with replay is therefore capture ->
arrival minus the encode time (the picture drawn into the packet is the clip's, not this
frame's: its drawn stamp is not read).

Adaptation: `reconfigure` (a lower level on a slow link) only restarts at a keyframe; the
bitrate stays the clip's. This is a simulator component: a kiosk never runs it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pinkbutton.firmware.media.encoder import DEFAULT_OPUS_FRAME_MS, AudioEncoder, VideoEncoder
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.hal.base import AudioChunk, VideoFrame
from pinkbutton.hal.clock import FakeClock
from pinkbutton.hal.fake.camera import FakeCamera
from pinkbutton.hal.fake.microphone import FakeMicrophone

CLIP_S = 2.0  # encoded once: two keyframe intervals of video, the same of audio


@dataclass(frozen=True)
class Clip:
    """Packets encoded once; shared (read-only) by every replaying device."""

    width: int
    height: int
    fps: float
    video: tuple[EncodedPacket, ...]
    audio: tuple[EncodedPacket, ...]

    @property
    def audio_frame_us(self) -> int:
        return self.audio[0].duration_us

    @property
    def keyframes(self) -> tuple[int, ...]:
        return tuple(i for i, p in enumerate(self.video) if p.keyframe)


_clips: dict[tuple, Clip] = {}
_clips_lock = threading.Lock()


def clip(width: int, height: int, fps: float, video_kbps: int, audio_kbps: int = 24,
         keyframe_interval_s: float = 1.0, audio_frame_ms: int = DEFAULT_OPUS_FRAME_MS) -> Clip:
    """The clip for these settings, encoded with the firmware's own encoders on first use."""
    key = (width, height, fps, video_kbps, audio_kbps, keyframe_interval_s, audio_frame_ms)
    with _clips_lock:
        if key not in _clips:
            _clips[key] = _encode(*key)
        return _clips[key]


def _encode(width: int, height: int, fps: float, video_kbps: int, audio_kbps: int,
            keyframe_interval_s: float, audio_frame_ms: int) -> Clip:
    clock = FakeClock()
    camera = FakeCamera(clock, width, height, fps)
    camera.noise = True  # a busy scene: x264 spends its whole budget on it (bitrate as set)
    encoder = VideoEncoder(width, height, fps, bitrate_kbps=video_kbps,
                           keyframe_interval_s=keyframe_interval_s, codec="libx264")
    frames = max(1, round(CLIP_S * fps))
    video: list[EncodedPacket] = []
    for i in range(frames):
        f = camera.capture_one()
        clock.advance(1 / fps)
        video.extend(encoder.encode(VideoFrame(f.data, width, height, round(i * 1e6 / fps))))
    video.extend(encoder.flush())
    mic = FakeMicrophone(clock)
    audio_enc = AudioEncoder(mic.sample_rate, bitrate_kbps=audio_kbps, frame_ms=audio_frame_ms)
    audio: list[EncodedPacket] = []
    for i in range(round(CLIP_S * 1000 / mic.chunk_ms)):
        c = mic.capture_one()
        audio.extend(audio_enc.encode(AudioChunk(c.samples, c.sample_rate,
                                                 i * mic.chunk_ms * 1000)))
    audio.extend(audio_enc.flush())
    if not video or not video[0].keyframe or not audio:
        raise RuntimeError("replay clip: the encoders gave no keyframe first or no audio")
    return Clip(width, height, fps, tuple(video), tuple(audio))


class ReplayVideoEncoder:
    """`VideoEncoder`'s interface: one clip packet per frame, the frame's capture time."""

    codec_name = "replay"

    def __init__(self, c: Clip) -> None:
        self.clip = c
        self.width, self.height, self.fps = c.width, c.height, c.fps
        self._keys = c.keyframes
        self._next = 0
        self.packets = 0

    def force_keyframe(self) -> None:
        # the next packet is the start of a GOP: the one at or after the current position
        later = [k for k in self._keys if k >= self._next]
        self._next = later[0] if later else 0

    def reconfigure(self, **_level) -> None:
        self.force_keyframe()  # a reopened encoder starts with a keyframe; the bitrate stays

    def encode(self, frame: VideoFrame) -> list[EncodedPacket]:
        p = self.clip.video[self._next]
        self._next = (self._next + 1) % len(self.clip.video)
        self.packets += 1
        return [EncodedPacket(Stream.VIDEO, p.data, frame.pts_us, p.duration_us, p.keyframe)]

    def flush(self) -> list[EncodedPacket]:
        self._next = 0  # as a closed encoder: starts again with a keyframe
        return []


class ReplayAudioEncoder:
    """`AudioEncoder`'s interface: one clip Opus packet per Opus frame of captured audio (the
    clip's frame duration)."""

    codec_name = "replay"

    def __init__(self, c: Clip, sample_rate: int = 48000) -> None:
        self.clip = c
        self.sample_rate = sample_rate
        self._next = 0
        self._owed_us = 0  # captured audio not yet covered by a packet
        self._pts_us: int | None = None

    def encode(self, chunk: AudioChunk) -> list[EncodedPacket]:
        if self._pts_us is None or self._owed_us == 0:
            self._pts_us = chunk.pts_us
        self._owed_us += round(chunk.frames * 1e6 / chunk.sample_rate)
        out = []
        frame_us = self.clip.audio_frame_us
        while self._owed_us >= frame_us:
            p = self.clip.audio[self._next]
            self._next = (self._next + 1) % len(self.clip.audio)
            out.append(EncodedPacket(Stream.AUDIO, p.data, self._pts_us, frame_us, True))
            self._pts_us += frame_us
            self._owed_us -= frame_us
        return out

    def flush(self) -> list[EncodedPacket]:
        self._owed_us, self._pts_us = 0, None
        return []


def use_replay(pipeline, c: Clip) -> None:
    """Put replay encoders into a kiosk's `MediaPipeline` before it starts (kiosk.run)."""
    if pipeline.video is not None:
        pipeline.video = ReplayVideoEncoder(c)
    if pipeline.audio is not None:
        pipeline.audio = ReplayAudioEncoder(c)
