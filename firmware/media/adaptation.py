"""Bandwidth adaptation: pick a video level from the send queue and the PUBACK round trip.

Pure (no clock, no threads): the sender calls `update(queue_bytes, rtt_ms, now)` a few times a
second and passes a new level to the encoder when one is returned. The ladder trades bitrate
first, then frame rate, then resolution, because officers verify a scene better from a sharp
slow picture than from a fast blurry one. Audio is never part of a level: voice is protected
by the sender's drop policy, not traded here.

Hysteresis: step down fast (the link is bad *now*, every second of backlog is latency), step
up slowly and one rung at a time (only after the link has been good for a while, so a level
that just failed is not retried every second).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VideoLevel:
    width: int
    height: int
    fps: int
    bitrate_kbps: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps} {self.bitrate_kbps}k"


LADDER: tuple[VideoLevel, ...] = (
    VideoLevel(640, 480, 15, 500),
    VideoLevel(640, 480, 15, 300),
    VideoLevel(640, 480, 10, 200),
    VideoLevel(320, 240, 10, 150),
    VideoLevel(320, 240, 5, 100),
)


class AdaptationController:
    """Chooses a rung of `ladder` (best first). Thresholds:

    - bad link: queue above `queue_high_bytes` or RTT above `rtt_high_ms` -> one rung down,
      at most every `down_hold_s` (time for the encoder change to show in the queue);
    - good link: queue at most `queue_low_bytes` and RTT at most `rtt_low_ms` (or no RTT
      sample yet) continuously for `up_after_s` -> one rung up;
    - in between: hold, and the good period starts over.
    """

    def __init__(
        self,
        ladder: Sequence[VideoLevel] = LADDER,
        *,
        start_index: int = 0,
        queue_high_bytes: int = 40_000,
        queue_low_bytes: int = 8_000,
        rtt_high_ms: float = 600.0,
        rtt_low_ms: float = 250.0,
        down_hold_s: float = 1.0,
        up_after_s: float = 5.0,
    ) -> None:
        if not ladder:
            raise ValueError("adaptation ladder is empty")
        if not 0 <= start_index < len(ladder):
            raise ValueError(f"start_index {start_index} outside a ladder of {len(ladder)}")
        if queue_low_bytes > queue_high_bytes or rtt_low_ms > rtt_high_ms:
            raise ValueError("adaptation thresholds: low must not exceed high")
        self.ladder = tuple(ladder)
        self.index = start_index
        self.queue_high_bytes, self.queue_low_bytes = queue_high_bytes, queue_low_bytes
        self.rtt_high_ms, self.rtt_low_ms = rtt_high_ms, rtt_low_ms
        self.down_hold_s, self.up_after_s = down_hold_s, up_after_s
        self._last_change: float | None = None
        self._good_since: float | None = None

    @property
    def level(self) -> VideoLevel:
        return self.ladder[self.index]

    @property
    def at_floor(self) -> bool:
        return self.index == len(self.ladder) - 1

    def update(self, queue_bytes: int, rtt_ms: float | None, now: float) -> VideoLevel | None:
        """Feed one observation; returns the new level when it changes, else None."""
        bad = queue_bytes > self.queue_high_bytes or (
            rtt_ms is not None and rtt_ms > self.rtt_high_ms
        )
        good = queue_bytes <= self.queue_low_bytes and (rtt_ms is None or rtt_ms <= self.rtt_low_ms)
        if bad:
            self._good_since = None
            held = self._last_change is not None and now - self._last_change < self.down_hold_s
            if held or self.at_floor:
                return None
            return self._move(+1, now)
        if not good:
            self._good_since = None
            return None
        if self._good_since is None:
            self._good_since = now
        recently_changed = self._last_change is not None and now - self._last_change < (
            self.up_after_s
        )
        if self.index == 0 or now - self._good_since < self.up_after_s or recently_changed:
            return None
        self._good_since = now  # the next rung up needs its own good period
        return self._move(-1, now)

    def _move(self, step: int, now: float) -> VideoLevel:
        self.index += step
        self._last_change = now
        return self.level
