"""Pre-roll: the last seconds of encoded media, in RAM, ready to send first when a press happens.

The snapshot always starts at a video keyframe (so the receiver can decode from its first
packet) and carries all audio captured from that keyframe's capture time on (so both streams
start together); apart from the keyframe in front, packets stay in push order.
To cover the full duration it anchors on the newest keyframe at or before newest - duration,
which means up to one GOP more than `duration_s` is kept.

Note on threads: only the media pipeline's encoder thread calls it.
"""

from __future__ import annotations

from collections import deque

from pinkbutton.firmware.media.packet import EncodedPacket


class PreRollBuffer:
    """Duration-based ring of encoded packets (never written to disk).

    Bounds: a keyframe older than `max_lookback_s` (default 2 x duration, at least 10 s) is not worth keeping
    as an anchor (a dead camera would otherwise pin audio forever): the snapshot then becomes
    audio only until the next keyframe. `max_packets`/`max_bytes` are hard caps on top.
    """

    def __init__(
        self,
        duration_s: float = 5.0,
        *,
        max_lookback_s: float | None = None,
        max_packets: int = 5000,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        # 0 is a site's choice of "no look-back": the snapshot is then just the current GOP
        # (from the newest keyframe), so the live stream still starts decodable.
        if not duration_s >= 0:
            raise ValueError(f"pre-roll duration must be 0 or more seconds, got {duration_s}")
        self.duration_s = duration_s
        # At least 10 s (the longest keyframe interval the config allows), so a short pre-roll
        # still finds its anchor keyframe.
        self.max_lookback_s = (
            max_lookback_s if max_lookback_s is not None else max(2 * duration_s, 10.0)
        )
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.clear()

    def clear(self) -> None:
        self._items: deque[tuple[int, EncodedPacket]] = deque()  # (push number, packet)
        self._keys: deque[tuple[int, EncodedPacket]] = deque()  # video keyframes in _items
        self._pushed = 0
        self._bytes = 0
        self._newest_us: int | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def push(self, pkt: EncodedPacket) -> None:
        self._pushed += 1
        self._items.append((self._pushed, pkt))
        self._bytes += len(pkt.data)
        if pkt.is_video and pkt.keyframe:
            self._keys.append((self._pushed, pkt))
        if self._newest_us is None or pkt.pts_us > self._newest_us:
            self._newest_us = pkt.pts_us
        self._prune()

    def snapshot(self) -> list[EncodedPacket]:
        """What to send first: the anchor keyframe, then in push order the video after it and
        all audio from its capture time on (or audio only, before any keyframe)."""
        if not self._items:
            return []
        if self._keys:
            key_no, key = self._keys[0]
            rest = [p for n, p in self._items if n != key_no and self._keep(n, p, key_no, key)]
            return [key, *rest]
        cutoff = self._cutoff()
        return [p for _, p in self._items if not p.is_video and p.pts_us >= cutoff]

    # -- internals ----------------------------------------------------------------------------

    def _cutoff(self) -> int:
        assert self._newest_us is not None
        return self._newest_us - round(self.duration_s * 1e6)

    @staticmethod
    def _keep(number: int, pkt: EncodedPacket, key_no: int, key: EncodedPacket) -> bool:
        # Audio goes by capture time, not push order: a camera's pipeline is slower than a
        # mic's, so audio captured with the keyframe is often pushed before it.
        return number >= key_no if pkt.is_video else pkt.pts_us >= key.pts_us

    def _prune(self) -> None:
        cutoff = self._cutoff()
        assert self._newest_us is not None  # push() set it (and _cutoff() checked)
        too_old = self._newest_us - round(self.max_lookback_s * 1e6)
        # Move the anchor to the newest keyframe that still covers the whole window.
        while len(self._keys) >= 2 and self._keys[1][1].pts_us <= cutoff:
            self._keys.popleft()
        if self._keys and self._keys[0][1].pts_us < too_old:
            self._keys.popleft()
        while len(self._items) > self.max_packets or self._bytes > self.max_bytes:
            number, _ = self._pop_front()
            if self._keys and self._keys[0][0] <= number:
                self._keys.popleft()  # the anchor itself went: the next keyframe takes over
        # Drop from the front what no snapshot can contain any more. Stale packets behind a
        # kept one (audio pushed slightly out of pts order) are filtered by snapshot() and
        # leave once they reach the front.
        while self._items:
            number, pkt = self._items[0]
            if self._keys:
                key_no, key = self._keys[0]
                if self._keep(number, pkt, key_no, key):
                    break
            elif not pkt.is_video and pkt.pts_us >= cutoff:
                break
            self._pop_front()

    def _pop_front(self) -> tuple[int, EncodedPacket]:
        number, pkt = self._items.popleft()
        self._bytes -= len(pkt.data)
        return number, pkt
