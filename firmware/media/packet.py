"""An encoded media packet: what flows from encoders to the pre-roll and the sinks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# Opus frame durations a kiosk may send (media.audio_frame_ms): one frame per MQTT message, so
# longer frames mean fewer messages (each costs ~100 bytes of envelope, MQTT and TLS, and a
# PUBACK) for up to 40 ms more voice latency. Here, not in encoder.py: the config checks them
# without importing PyAV.
OPUS_FRAME_MS = (20, 40, 60)
DEFAULT_OPUS_FRAME_MS = 20


class Stream(IntEnum):
    VIDEO = 1
    AUDIO = 2


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One H.264 access unit (Annex B, SPS/PPS in front of every keyframe) or one
    Opus packet (one frame: 20, 40 or 60 ms).

    `pts_us`: capture time on the device's monotonic clock, microseconds — the
    shared timeline of both streams. `duration_us`: how long it plays.
    """

    stream: Stream
    data: bytes
    pts_us: int
    duration_us: int
    keyframe: bool

    @property
    def is_video(self) -> bool:
        return self.stream is Stream.VIDEO
