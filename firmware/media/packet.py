"""An encoded media packet: what flows from encoders to the pre-roll and the sinks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


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
