"""MediaSender: envelopes an alert's media packets and publishes them under a drop policy.

Why a queue of its own (and not paho's): paho's queue is FIFO with no idea what a keyframe
is. Here packets wait until a small window of un-acknowledged QoS 1 messages has room, so the
backlog of a slow link builds up where the policy can act on it, not in socket buffers.

Drop policy (docs/protocol.md):
  1. Pressure (the oldest queued packet has waited more than `pressure_delay_s`): a new delta
     frame is dropped, and so is every further delta until the next keyframe — a delta after
     a hole would not decode. Keyframes and audio are still queued.
  2. Over `max_queue_bytes`: drop the queued deltas of the oldest GOP that still has some
     (the tail of a GOP, so what was sent of it stays decodable); repeat.
  3. Still over: drop the oldest queued audio (last resort for voice).
  4. Still over with only keyframes left: drop the oldest keyframe (memory must stay bounded;
     logged as a warning, counted in `dropped_keyframes`).
Deltas before the first keyframe are dropped too: nothing could decode them.

Two lanes (issue 9 item 7, live first): what the pipeline hands over on StartStream (the
pre-roll snapshot, `preroll=True`) and the video deltas after it up to the first live keyframe
go to the *behind* lane; everything else to the *live* lane. The behind lane is published only
while the live lane is empty, with few bytes in flight (about `behind_delay_s` of the link's
measured rate), in small chunks, so a live packet never waits long behind it: the officer sees
the present first. The behind lane is never dropped (it is the evidence of the seconds before
the press), is not counted in `max_queue_bytes` (its size is the pre-roll's, bounded by
RAM), and what it still holds when the stream stops is handed to the Resender from the local
recording (`take_behind`). Within each lane packets keep the order they were submitted in
(seq order); across lanes, pre-roll seqs arrive after live ones.

Note on threads: `submit()` runs on the media encoder thread, `acked()` on whichever thread
sees the PUBACK (the transport's network thread: it only takes our lock, never calls paho),
publishing, adaptation and `on_level` run on this sender's own thread ("media-sender").
`publish` is never called with our lock held: paho calls on_publish -> acked() while holding
its own lock, so holding ours across publish() could deadlock.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pinkbutton.firmware.media.adaptation import AdaptationController, VideoLevel
from pinkbutton.firmware.media.envelope import HEADER, encode_packet
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.hal.clock import Clock

log = logging.getLogger("pinkbutton.media.sender")

Publish = Callable[[str, bytes, int], int]  # (topic, payload, qos) -> mid
# (seq, capture_us, messages): every enveloped packet, before the drop policy (local evidence)
Recorder = Callable[[int, int, list[bytes]], None]
# (seq, origin_us, pts_us): called before publishing seq, may wait for the disk (SeqLease)
Reserve = Callable[[int, int, int], None]

_EARLY_ACK_TTL_S = 5.0  # a PUBACK that beat publish() returning; older ones are stale mids
_RTT_SAMPLES = 64


_STALE_S = 0.3  # queued longer than this counts as link pressure for adaptation
BEHIND_CHUNK = 4096  # payload bytes per message of the behind lane: live can cut in between
_BEHIND_MIN_INFLIGHT = 4096  # the behind lane may always have this much in flight...
_RATE_HORIZON_S = 1.0  # ...or `behind_delay_s` of the rate acknowledged over this horizon


@dataclass(slots=True)
class _Item:
    stream: Stream
    keyframe: bool
    gop: int  # which keyframe this video packet depends on (0: none seen yet)
    seq: int
    messages: list[bytes]
    size: int
    submitted: float  # clock.monotonic()
    last: bool = True  # the behind lane queues each chunk alone: False for all but the last


@dataclass(frozen=True, slots=True)
class SenderStats:
    sent_video: int  # packets fully handed to publish
    sent_audio: int
    dropped_video: int  # by the policy (and publish failures)
    dropped_audio: int
    dropped_keyframes: int  # subset of dropped_video: only under rule 4
    queue_packets: int
    queue_bytes: int
    bytes_sent: int
    inflight: int  # QoS 1 messages not yet acknowledged
    rtt_ms: float | None  # smoothed PUBACK round trip
    level: VideoLevel | None
    publish_errors: int
    seq_count: int = 0  # seqs given out: the stream's last seq is seq_count - 1
    sent_behind: int = 0  # of sent_video + sent_audio: from the behind lane (pre-roll)
    behind_packets: int = 0  # still waiting in the behind lane


class MediaSender:
    def __init__(
        self,
        publish: Publish,
        topic: str,
        *,
        max_queue_bytes: int = 512_000,
        clock: Clock | None = None,
        pressure_delay_s: float = 1.0,
        max_inflight: int = 32,
        max_inflight_bytes: int = 32_000,
        inflight_timeout_s: float = 30.0,
        controller: AdaptationController | None = None,
        on_level: Callable[[VideoLevel], None] | None = None,
        adapt_interval_s: float = 0.25,
        start_thread: bool = True,
        recorder: Recorder | None = None,
        first_seq: int = 0,
        origin_for: Callable[[int], int] | None = None,
        resumed: bool = False,
        reserve: Reserve | None = None,
        behind_delay_s: float = 0.1,
    ) -> None:
        """`first_seq`, `origin_for` (first capture time -> media origin) and `resumed`
        continue an alert's stream after a kiosk restart (firmware/media/seqlease.py): seqs
        go on where the earlier run stopped, pts on the incident's timeline, and the new
        run's buffered seconds are not flagged as pre-roll (they were captured after the
        press). `reserve` makes each seq durable before it is published."""
        self._publish = publish
        self._recorder = recorder
        self._origin_for = origin_for
        self._resumed = resumed
        self._reserve = reserve
        self.topic = topic
        self.max_queue_bytes = max_queue_bytes
        self.clock = clock or Clock()
        self.pressure_delay_s = pressure_delay_s
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight_timeout_s = inflight_timeout_s
        self.controller = controller
        self.on_level = on_level
        self.adapt_interval_s = adapt_interval_s
        self.behind_delay_s = behind_delay_s

        self._cv = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        # The pre-roll lane: sent only while the live lane is empty, never dropped.
        self._behind: collections.deque[_Item] = collections.deque()
        self._live_keyframe_seen = False  # the live lane starts at a keyframe
        self._acks: collections.deque[tuple[float, int]] = collections.deque()  # (at, bytes)
        self._queue_bytes = 0
        self._seq = first_seq
        self._origin_us: int | None = None
        self._gop = 0
        # True when a delta of the current GOP was lost (drop the rest of it), and before the
        # first keyframe (nothing to decode a delta against).
        self._skip_deltas = True
        self._inflight: dict[int, tuple[float, int]] = {}  # mid -> (sent at, bytes)
        self._inflight_bytes = 0
        self._early_acks: dict[int, float] = {}
        self._rtt_samples: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=_RTT_SAMPLES
        )  # (acked at, rtt s)
        self._rtt_ewma: float | None = None
        self._last_adapt: float | None = None
        self._closed = False
        self._counts = collections.Counter()
        self._thread: threading.Thread | None = None
        self.on_beat: Callable[[], None] = lambda: None  # sender-thread progress (watchdog)
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="media-sender", daemon=True)
            self._thread.start()

    # -- encoder thread -----------------------------------------------------------

    def submit(self, pkt: EncodedPacket, preroll: bool) -> None:
        """Envelope `pkt` (next seq) and queue it: pre-roll (and the deltas that continue
        its last GOP) in the behind lane, the rest in the live lane under the drop policy."""
        with self._cv:
            if self._closed:
                return
            if self._origin_us is None:
                # The incident's media origin (pts 0): this first packet, or the earlier run's.
                origin_for = self._origin_for
                self._origin_us = pkt.pts_us if origin_for is None else origin_for(pkt.pts_us)
            seq = self._seq
            self._seq += 1
            if pkt.is_video and not preroll:
                self._live_keyframe_seen |= pkt.keyframe
            # A live delta before the first live keyframe decodes only after the pre-roll's
            # keyframe: it goes behind with it (the live lane starts at a keyframe).
            behind = preroll or (
                pkt.is_video and not self._live_keyframe_seen and self._gop > 0
            )
            messages = encode_packet(pkt, seq, self._origin_us, preroll and not self._resumed,
                                     chunk_payload=BEHIND_CHUNK if behind else None)
            if self._recorder is not None:
                # Even what the policy drops below is kept locally: backfill can send it later.
                self._recorder(seq, pkt.pts_us, messages)
            if pkt.is_video and pkt.keyframe:
                self._gop += 1
                self._skip_deltas = False
            now = self.clock.monotonic()
            item = _Item(
                pkt.stream, pkt.keyframe, self._gop, seq, messages, sum(map(len, messages)), now
            )
            if behind:
                # One entry per chunk: live media can go between the chunks of a big keyframe.
                for n, message in enumerate(messages):
                    self._behind.append(_Item(
                        pkt.stream, pkt.keyframe, self._gop, seq, [message], len(message), now,
                        last=n == len(messages) - 1,
                    ))
                self._cv.notify_all()
                return
            if pkt.is_video and not pkt.keyframe:
                if self._skip_deltas:
                    self._count_drop(item)
                    return
                if self._under_pressure(now):
                    self._skip_deltas = True
                    self._count_drop(item)
                    return
            self._queue.append(item)
            self._queue_bytes += item.size
            self._enforce_budget()
            self._cv.notify_all()

    # -- PUBACK thread ----------------------------------------------------------------

    def acked(self, mid: int) -> None:
        """The broker acknowledged `mid`: frees window room and yields an RTT sample."""
        now = self.clock.monotonic()
        with self._cv:
            if self._settle_inflight(mid, now):
                return
            # Either not ours, or the PUBACK beat publish() returning on our thread.
            self._early_acks[mid] = now
            if len(self._early_acks) > 4 * self.max_inflight:
                self._early_acks.pop(next(iter(self._early_acks)))

    def ack_if_inflight(self, mid: int) -> bool:
        """`acked` for a mid known to be ours (in flight); False, recording nothing,
        for any other. The transport's network thread calls it: never while holding our lock
        across a publish, so it cannot deadlock with paho's."""
        with self._cv:
            return self._settle_inflight(mid, self.clock.monotonic())

    def _settle_inflight(self, mid: int, now: float) -> bool:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return False
        self._settle(entry, now)
        self._cv.notify_all()
        return True

    # -- any thread ---------------------------------------------------------------------

    @property
    def level(self) -> VideoLevel | None:
        return self.controller.level if self.controller else None

    def stats(self) -> SenderStats:
        with self._cv:
            c = self._counts
            return SenderStats(
                sent_video=c["sent_video"], sent_audio=c["sent_audio"],
                dropped_video=c["dropped_video"], dropped_audio=c["dropped_audio"],
                dropped_keyframes=c["dropped_keyframes"],
                queue_packets=len(self._queue), queue_bytes=self._queue_bytes,
                bytes_sent=c["bytes_sent"], inflight=len(self._inflight),
                rtt_ms=None if self._rtt_ewma is None else self._rtt_ewma * 1000,
                level=self.level, publish_errors=c["publish_errors"], seq_count=self._seq,
                sent_behind=c["sent_behind"],
                behind_packets=sum(1 for i in self._behind if i.last),
            )  # fmt: skip

    def backlogged(self) -> bool:
        """Live media is waiting (queued, or the in-flight window half full): backfill
        must hold back so that it never delays live audio. The behind lane counts too: it
        is sent by this sender and must not be sent twice."""
        with self._cv:
            return bool(self._queue) or bool(self._behind) or (
                2 * len(self._inflight) >= self.max_inflight
                or 2 * self._inflight_bytes >= self.max_inflight_bytes
            )

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything queued was published and acknowledged (or timeout)."""
        with self._cv:
            return self._cv.wait_for(
                lambda: not self._queue and not self._behind and not self._inflight, timeout
            )

    def take_behind(self, seqs: set[int] | None = None) -> list[int]:
        """Remove the behind lane's packets (those in `seqs`, or all) and return their seqs:
        the Resender sends them from the local recording instead (a `nack` for them, or
        the stream stopped before they went)."""
        with self._cv:
            taken = [i for i in self._behind if seqs is None or i.seq in seqs]
            for item in taken:
                self._behind.remove(item)
            self._cv.notify_all()
            return sorted({i.seq for i in taken})

    def behind_seqs(self) -> set[int]:
        with self._cv:
            return {i.seq for i in self._behind}

    def close(self, timeout: float = 2.0) -> None:
        """Stop the sender thread; what is still queued is discarded."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.on_beat()
            with self._cv:
                if self._closed:
                    return
                if self._lane_with_room() is None:
                    self._cv.wait(self.adapt_interval_s)
                if self._closed:
                    return
            self.pump()
            self.adapt()

    def pump(self) -> int:
        """Publish queued packets while the window has room; returns how many (a packet of
        the behind lane counts when its last chunk went).
        (The sender thread's step; tests without the thread call it directly.)"""
        done = 0
        while True:
            with self._cv:
                self._expire_inflight(self.clock.monotonic())
                lane = self._lane_with_room()
                if lane is None:
                    return done
                item = lane.popleft()
                if lane is self._queue:
                    self._queue_bytes -= item.size
                origin = self._origin_us or 0
            if self._reserve is not None:
                # Outside the lock: this may wait for the disk (once per block of seqs).
                pts = decode_pts(item.messages[0])
                self._reserve(item.seq, origin, pts)
            sent_at = self.clock.monotonic()
            mids: list[int] = []
            error = None
            for message in item.messages:
                try:
                    mids.append(self._publish(self.topic, message, 1))
                except Exception as e:  # the transport's reason; the thread must live on
                    error = e
                    break
            with self._cv:
                for mid, message in zip(mids, item.messages, strict=False):
                    early = self._early_acks.pop(mid, None)
                    if early is not None and early >= sent_at - _EARLY_ACK_TTL_S:
                        self._rtt_sample(early, max(0.0, early - sent_at))
                    else:
                        self._inflight[mid] = (sent_at, len(message))
                        self._inflight_bytes += len(message)
                self._counts["bytes_sent"] += sum(len(m) for m in item.messages[: len(mids)])
                if error is None:
                    if item.last:  # a packet counts once, with its last chunk
                        kind = "sent_audio" if item.stream is Stream.AUDIO else "sent_video"
                        self._counts[kind] += 1
                        self._counts["sent_behind"] += lane is self._behind
                        done += 1
                else:
                    self._counts["publish_errors"] += 1
                    if lane is self._behind:
                        # Recorded locally: the room's nack fetches it (never dropped here).
                        log.warning("pre-roll seq %d not published: %s", item.seq, error)
                        continue
                    self._count_drop(item)
                    if item.stream is Stream.VIDEO:
                        self._break_gop(item.gop)
                    log.warning("media seq %d not published: %s", item.seq, error)

    def adapt(self) -> VideoLevel | None:
        """Every `adapt_interval_s`: feed the controller; report a new level to `on_level`."""
        if self.controller is None:
            return None
        now = self.clock.monotonic()
        with self._cv:
            if self._last_adapt is not None and now - self._last_adapt < self.adapt_interval_s:
                return None
            since = self._last_adapt if self._last_adapt is not None else float("-inf")
            self._last_adapt = now
            recent = [rtt for at, rtt in self._rtt_samples if at > since]
            rtt = sum(recent) / len(recent) if recent else None
            if self._inflight:
                # A stalled link acknowledges nothing: the oldest wait is the RTT we know of.
                oldest = now - min(sent for sent, _ in self._inflight.values())
                rtt = oldest if rtt is None else max(rtt, oldest)
            # Pressure is what the link is not draining: a pre-roll burst that leaves in
            # milliseconds on a good link must not cost video quality.
            queue_bytes = sum(i.size for i in self._queue if now - i.submitted > _STALE_S)
        level = self.controller.update(queue_bytes, None if rtt is None else rtt * 1000, now)
        if level is not None:
            log.info(
                "video level -> %s (queue %d B, rtt %s)",
                level,
                queue_bytes,
                "-" if rtt is None else f"{rtt * 1000:.0f} ms",
            )
            if self.on_level is not None:
                self.on_level(level)
        return level

    # -- helpers (lock held) ----------------------------------------------------------

    def _lane_with_room(self) -> collections.deque[_Item] | None:
        """The lane whose head may be published now: live first; behind only when the live
        lane is empty and little is in flight (a live packet must not queue behind it)."""
        if self._queue:
            return self._queue if self._room_for(self._queue[0], self.max_inflight_bytes) else None
        if self._behind and self._room_for(self._behind[0], self._behind_budget()):
            return self._behind
        return None

    def _room_for(self, item: _Item, max_bytes: int) -> bool:
        if not self._inflight:
            return True  # a packet bigger than the window must still go, alone
        return (
            len(self._inflight) + len(item.messages) <= self.max_inflight
            and self._inflight_bytes + item.size <= max_bytes
        )

    def _behind_budget(self) -> int:
        """Bytes in flight the behind lane may fill: `behind_delay_s` of the rate the link
        acknowledged lately (so a live packet waits about that long behind it), at least
        _BEHIND_MIN_INFLIGHT, at most the window."""
        rate = 0.0
        if len(self._acks) >= 2:
            span = max(self._acks[-1][0] - self._acks[0][0], 0.05)
            rate = sum(size for _, size in self._acks) / span
        return int(min(self.max_inflight_bytes,
                       max(_BEHIND_MIN_INFLIGHT, rate * self.behind_delay_s)))

    def _under_pressure(self, now: float) -> bool:
        return bool(self._queue) and now - self._queue[0].submitted > self.pressure_delay_s

    def _enforce_budget(self) -> None:
        while self._queue_bytes > self.max_queue_bytes:
            deltas = [i for i in self._queue if i.stream is Stream.VIDEO and not i.keyframe]
            if deltas:
                self._break_gop(deltas[0].gop)
                continue
            audio = next((i for i in self._queue if i.stream is Stream.AUDIO), None)
            victim = audio or self._queue[0]
            if victim.stream is Stream.VIDEO:
                log.warning("media queue full of keyframes: dropping seq %d", victim.seq)
                self._counts["dropped_keyframes"] += 1
                if victim.gop == self._gop:
                    self._skip_deltas = True
            self._remove(victim)

    def _break_gop(self, gop: int) -> None:
        """Drop every queued delta of `gop` (and its future ones if it is the current GOP)."""
        for item in [
            i for i in self._queue if i.gop == gop and i.stream is Stream.VIDEO and not i.keyframe
        ]:
            self._remove(item)
        if gop == self._gop:
            self._skip_deltas = True

    def _remove(self, item: _Item) -> None:
        self._queue.remove(item)
        self._queue_bytes -= item.size
        self._count_drop(item)

    def _count_drop(self, item: _Item) -> None:
        self._counts["dropped_audio" if item.stream is Stream.AUDIO else "dropped_video"] += 1

    def _settle(self, entry: tuple[float, int], now: float) -> None:
        sent_at, size = entry
        self._inflight_bytes -= size
        self._rtt_sample(now, now - sent_at)
        self._acks.append((now, size))
        while self._acks and self._acks[0][0] < now - _RATE_HORIZON_S:
            self._acks.popleft()

    def _rtt_sample(self, at: float, rtt: float) -> None:
        self._rtt_samples.append((at, rtt))
        self._rtt_ewma = rtt if self._rtt_ewma is None else 0.8 * self._rtt_ewma + 0.2 * rtt

    def _expire_inflight(self, now: float) -> None:
        # A PUBACK lost with a session (clean restart) would otherwise close the window forever.
        for mid, (sent_at, size) in list(self._inflight.items()):
            if now - sent_at > self.inflight_timeout_s:
                del self._inflight[mid]
                self._inflight_bytes -= size
        for mid, at in list(self._early_acks.items()):
            if now - at > _EARLY_ACK_TTL_S:
                del self._early_acks[mid]


def decode_pts(message: bytes) -> int:
    """The pts_us field of an envelope message this sender made."""
    return HEADER.unpack_from(message)[9]
