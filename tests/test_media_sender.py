"""MediaSender: drop policy and window on a fake link (assertions on what was published),
and end to end through a throttling proxy into a real broker."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.firmware.media.adaptation import LADDER, AdaptationController, VideoLevel
from pinkbutton.firmware.media.envelope import MAX_MESSAGE, MediaEnvelope, decode_envelope
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.firmware.media.sender import MediaSender
from pinkbutton.hal.clock import FakeClock

TOPIC = "pinkbutton/v1/dev/pb-test-0001/media/test-alert"


class FakeLink:
    """Stands in for the transport's publish(): records each message, hands out mids."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, int]] = []
        self.unacked: list[int] = []
        self.sender: MediaSender | None = None
        self.fail = False
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        if self.fail:
            raise RuntimeError("outgoing queue full")
        with self._lock:
            self.published.append((topic, payload, qos))
            mid = len(self.published)
            self.unacked.append(mid)
            return mid

    def ack_all(self) -> None:
        with self._lock:
            mids, self.unacked = self.unacked, []
        for mid in mids:
            self.sender.acked(mid)

    def envelopes(self) -> list[MediaEnvelope]:
        with self._lock:
            return [decode_envelope(p) for _, p, _ in self.published]


def make(link: FakeLink, clock: FakeClock, **kw) -> MediaSender:
    sender = MediaSender(link.publish, TOPIC, clock=clock, start_thread=False, **kw)
    link.sender = sender
    return sender


def audio(t_us: int) -> EncodedPacket:
    return EncodedPacket(Stream.AUDIO, b"a" * 60, t_us, 20_000, True)


def video(t_us: int, key: bool, size: int | None = None) -> EncodedPacket:
    return EncodedPacket(
        Stream.VIDEO, b"v" * (size or (15_000 if key else 3_000)), t_us, 66_666, key
    )


def drain(sender: MediaSender, link: FakeLink, rounds: int = 100) -> int:
    """Pump and acknowledge until nothing more goes; how many packets went."""
    done = 0
    for _ in range(rounds):
        n = sender.pump()
        link.ack_all()
        if not n and not link.unacked:
            return done
        done += n
    return done


def video_ok(envs: list[MediaEnvelope], submitted: list[EncodedPacket]) -> None:
    """Every delivered delta's chain back to its keyframe is complete."""
    delivered = {e.capture_us for e in envs if e.stream is Stream.VIDEO}
    vids = [p for p in submitted if p.is_video]
    for i, p in enumerate(vids):
        if p.keyframe or p.pts_us not in delivered:
            continue
        j = i - 1
        while j >= 0 and not vids[j].keyframe:
            assert vids[j].pts_us in delivered, f"delta {p.pts_us} sent after a hole"
            j -= 1
        assert j >= 0 and vids[j].pts_us in delivered, f"delta {p.pts_us} without its keyframe"


def test_envelopes_share_one_seq_counter_and_the_first_packet_is_the_origin() -> None:
    link, clock = FakeLink(), FakeClock()
    sender = make(link, clock)
    sender.submit(video(5_000_000, True, size=3_000), preroll=True)
    sender.submit(audio(5_010_000), preroll=True)
    sender.submit(video(5_066_666, False), preroll=False)
    assert drain(sender, link) == 3
    envs = link.envelopes()
    assert [e.seq for e in envs] == [0, 1, 2]
    assert [e.pts_us for e in envs] == [0, 10_000, 66_666]
    assert [e.capture_us for e in envs] == [5_000_000, 5_010_000, 5_066_666]
    assert [(e.stream, e.keyframe, e.preroll) for e in envs] == [
        (Stream.VIDEO, True, True),
        (Stream.AUDIO, True, True),
        (Stream.VIDEO, False, False),
    ]
    assert {(t, q) for t, _, q in link.published} == {(TOPIC, 1)}


def test_big_keyframe_goes_out_as_chunks_of_one_seq() -> None:
    link, clock = FakeLink(), FakeClock()
    sender = make(link, clock)
    sender.submit(video(0, True, size=150_000), preroll=False)
    sender.pump()
    envs = link.envelopes()
    assert len(envs) == 3
    assert all(len(p) <= MAX_MESSAGE for _, p, _ in link.published)
    assert {e.seq for e in envs} == {0}
    assert b"".join(e.payload for e in envs) == b"v" * 150_000


def test_window_limits_unacknowledged_messages_and_acks_measure_rtt() -> None:
    link, clock = FakeLink(), FakeClock()
    sender = make(link, clock, max_inflight=3)
    for i in range(10):
        sender.submit(audio(i * 20_000), preroll=False)
    assert sender.pump() == 3
    assert sender.pump() == 0, "no room until something is acknowledged"
    clock.advance(0.120)
    link.ack_all()
    assert sender.pump() == 3
    stats = sender.stats()
    assert (stats.sent_audio, stats.inflight, stats.queue_packets) == (6, 3, 4)
    assert stats.rtt_ms == pytest.approx(120)
    assert len(link.published) == 6


def test_puback_racing_ahead_of_publish_returning_does_not_jam_the_window() -> None:
    clock = FakeClock()
    published = []
    sender: MediaSender

    def publish_acked_at_once(topic: str, payload: bytes, qos: int) -> int:
        published.append(payload)
        sender.acked(len(published))  # the network thread got the PUBACK first
        return len(published)

    sender = MediaSender(
        publish_acked_at_once, TOPIC, clock=clock, start_thread=False, max_inflight=2
    )
    for i in range(20):
        sender.submit(audio(i * 20_000), preroll=False)
    assert sender.pump() == 20
    assert len(published) == 20 and sender.stats().inflight == 0


def test_under_pressure_deltas_are_dropped_until_the_next_keyframe() -> None:
    link, clock = FakeLink(), FakeClock()
    sender = make(link, clock, max_inflight=2, pressure_delay_s=0.5)
    submitted: list[EncodedPacket] = []

    def feed(p: EncodedPacket) -> None:
        submitted.append(p)
        sender.submit(p, preroll=False)

    t = 0
    feed(video(t, True))
    for _ in range(3):  # the link stalls: nothing is acknowledged
        t += 66_000
        feed(video(t, False))
        feed(audio(t))
        sender.pump()
    clock.advance(1.0)  # the head of the queue has now waited too long
    for _ in range(4):
        t += 66_000
        feed(video(t, False))
        feed(audio(t))
    link.ack_all()  # the link is back; the rest of this GOP must still not go
    while sender.pump() or link.unacked:
        link.ack_all()
    t += 66_000
    feed(video(t, True))
    t += 66_000
    feed(video(t, False))
    while sender.pump() or link.unacked:
        link.ack_all()

    envs = link.envelopes()
    sent_video = [e.capture_us for e in envs if e.stream is Stream.VIDEO]
    sent_audio = [e.capture_us for e in envs if e.stream is Stream.AUDIO]
    assert sent_audio == [p.pts_us for p in submitted if p.stream is Stream.AUDIO]
    vids = [p for p in submitted if p.is_video]
    # keyframe + 3 deltas before the pressure, none of the 4 after it, then keyframe + delta.
    assert sent_video == [p.pts_us for p in vids[:4]] + [p.pts_us for p in vids[-2:]]
    video_ok(envs, submitted)
    seqs = [e.seq for e in envs]
    assert seqs == sorted(seqs), "packets leave in seq order"
    stats = sender.stats()
    assert (stats.dropped_video, stats.dropped_audio, stats.dropped_keyframes) == (4, 0, 0)


def test_over_budget_drops_oldest_gop_deltas_then_audio_then_keyframes() -> None:
    link, clock = FakeLink(), FakeClock()
    # A stalled window (one message in flight) and a 60 KB queue; pressure never kicks in.
    sender = make(link, clock, max_inflight=1, max_queue_bytes=60_000, pressure_delay_s=1e9)
    sender.submit(audio(0), preroll=False)
    sender.pump()  # in flight, never acknowledged
    t = 0
    for _gop in range(2):
        for i in range(5):
            t += 66_000
            sender.submit(video(t, i == 0, size=10_000 if i == 0 else 5_000), preroll=False)
            sender.submit(audio(t), preroll=False)
    # 2 x (10 K + 4 x 5 K) + 10 x audio = 60 K + headers: GOP 1's deltas went first.
    s = sender.stats()
    assert (s.dropped_video, s.dropped_audio) == (4, 0)
    t += 66_000
    sender.submit(video(t, True, size=30_000), preroll=False)  # forces out GOP 2's deltas
    s = sender.stats()
    assert (s.dropped_video, s.dropped_audio, s.dropped_keyframes) == (8, 0, 0)
    t += 66_000
    sender.submit(video(t, True, size=9_000), preroll=False)  # now only audio can yield
    s = sender.stats()
    assert (s.dropped_keyframes, s.dropped_audio) == (0, 2), "just enough audio, oldest first"
    for _ in range(3):
        t += 66_000
        sender.submit(video(t, True, size=25_000), preroll=False)
    s = sender.stats()
    assert s.dropped_audio == 10, "audio goes before any keyframe"
    assert s.dropped_keyframes >= 1 and s.queue_bytes <= 60_000
    sender.max_inflight = 100
    link.ack_all()
    while sender.pump() or link.unacked:
        link.ack_all()
    envs = link.envelopes()
    assert all(e.keyframe for e in envs if e.stream is Stream.VIDEO)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "k", "d", "d", "d", "ack", "tick", "pump"]), min_size=1, max_size=120
    ),
    st.integers(min_value=20_000, max_value=120_000),
)
def test_any_schedule_keeps_video_decodable_and_audio_until_last(script, budget) -> None:
    link, clock = FakeLink(), FakeClock()
    sender = make(link, clock, max_inflight=4, max_queue_bytes=budget, pressure_delay_s=0.3)
    submitted: list[EncodedPacket] = []
    t = 0
    for step in script:
        t += 20_000
        if step in ("a", "k", "d"):
            p = audio(t) if step == "a" else video(t, step == "k")
            submitted.append(p)
            sender.submit(p, preroll=False)
        elif step == "ack":
            link.ack_all()
        elif step == "tick":
            clock.advance(0.2)
        else:
            sender.pump()
        s = sender.stats()
        assert s.queue_bytes <= budget
        if s.dropped_audio:
            assert s.dropped_video > 0, "audio dropped while video was there to drop"
    sender.max_inflight = 10**6
    while sender.pump() or link.unacked:
        link.ack_all()
    envs = link.envelopes()
    video_ok(envs, submitted)
    s = sender.stats()
    assert s.sent_video + s.dropped_video == sum(p.is_video for p in submitted)
    assert s.sent_audio + s.dropped_audio == sum(not p.is_video for p in submitted)
    seqs = [e.seq for e in envs]
    assert seqs == sorted(seqs)


def test_a_failed_publish_is_counted_and_breaks_only_its_gop() -> None:
    link, clock = FakeLink(), FakeClock()
    sender = make(link, clock)
    sender.submit(video(0, True), preroll=False)
    sender.pump()
    link.fail = True
    sender.submit(video(66_000, False), preroll=False)
    sender.pump()
    link.fail = False
    sender.submit(video(132_000, False), preroll=False)  # after a hole: must not go
    sender.submit(audio(132_000), preroll=False)
    sender.submit(video(198_000, True), preroll=False)
    sender.pump()
    envs = link.envelopes()
    assert [(e.stream, e.capture_us) for e in envs] == [
        (Stream.VIDEO, 0),
        (Stream.AUDIO, 132_000),
        (Stream.VIDEO, 198_000),
    ]
    s = sender.stats()
    assert (s.publish_errors, s.dropped_video) == (1, 2)


def test_sender_thread_adapts_and_reports_levels() -> None:
    link = FakeLink()
    levels: list[VideoLevel] = []
    ctrl = AdaptationController(
        queue_high_bytes=20_000, queue_low_bytes=1_000, down_hold_s=0.1, up_after_s=0.3
    )
    sender = MediaSender(
        link.publish,
        TOPIC,
        max_inflight=2,
        controller=ctrl,
        on_level=levels.append,
        adapt_interval_s=0.02,
        pressure_delay_s=60,
    )
    link.sender = sender
    try:
        sender.submit(video(0, True), preroll=False)
        for i in range(10):  # nothing acknowledged: the queue and the oldest wait grow
            sender.submit(video(i * 66_000, False), preroll=False)
        deadline = time.monotonic() + 3
        while LADDER[2] not in levels and time.monotonic() < deadline:
            time.sleep(0.02)
        assert levels[:2] == [LADDER[1], LADDER[2]]
        while (not sender.wait_idle(0.05) or levels[-1] != LADDER[0]) and (
            time.monotonic() < deadline + 3
        ):
            link.ack_all()  # the link recovers
        assert levels[-2:] == [LADDER[1], LADDER[0]]
        assert sender.level == LADDER[0]
        assert sender.stats().sent_video == 11
    finally:
        sender.close()
    assert sender._thread is not None and not sender._thread.is_alive()


# -- end to end: real transport, throttling proxy, real broker --------------------------------


class SyntheticSource:
    """Audio (60 B every 20 ms) and H.264-sized video (1 s GOP, keyframe = 5 deltas) at the
    current level's rate — 15 KB keyframes and 3 KB deltas at 640x480@15 500k — as an
    encoder that the sender's on_level reconfigures would produce (keyframe after a change)."""

    def __init__(self, sender: MediaSender) -> None:
        self.sender = sender
        self.level = LADDER[0]
        self.level_changed = False
        self.submitted: list[EncodedPacket] = []
        self.levels: list[tuple[float, VideoLevel]] = []  # (time.monotonic(), level)

    def on_level(self, level: VideoLevel) -> None:  # sender thread
        self.levels.append((time.monotonic(), level))
        self.level, self.level_changed = level, True

    def run(self, seconds: float) -> None:
        # time.monotonic() is what the sender's Clock() reads too: one timeline.
        start = time.monotonic()
        next_audio = next_video = start
        frame_in_gop = 0
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                return
            if next_audio <= now:
                self._submit(EncodedPacket(Stream.AUDIO, b"o" * 60, _us(next_audio), 20_000, True))
                next_audio += 0.020
            if next_video <= now:
                level = self.level
                if self.level_changed:
                    self.level_changed, frame_in_gop = False, 0
                per_second = 57_000 * level.bitrate_kbps / 500
                delta = int(per_second / (level.fps + 4))
                key = frame_in_gop == 0
                frame_in_gop = (frame_in_gop + 1) % level.fps
                self._submit(
                    EncodedPacket(
                        Stream.VIDEO,
                        b"h" * (5 * delta if key else delta),
                        _us(next_video),
                        int(1e6 / level.fps),
                        key,
                    )
                )
                next_video += 1 / level.fps
            time.sleep(max(0.0, min(next_audio, next_video) - time.monotonic()))

    def _submit(self, pkt: EncodedPacket) -> None:
        self.submitted.append(pkt)
        self.sender.submit(pkt, preroll=False)


def _us(scheduled: float) -> int:
    # Stamp the scheduled capture instant, as a real capture clock does: if this thread is
    # descheduled for a moment (a busy CI box) packets go late, but the timeline has no hole.
    return int(scheduled * 1e6)


@pytest.mark.broker
def test_end_to_end_through_a_throttled_link(broker, pki_dir, mqtt_client) -> None:
    from pinkbutton.firmware import transport as t
    from pinkbutton.firmware.media.envelope import Reassembler
    from pinkbutton.firmware.protocol import media_topic
    from pinkbutton.hal.clock import Clock
    from pinkbutton.tools.pki import ca_paths, device_paths

    from harness.netproxy import ThrottleProxy

    topic = media_topic("pb-test-0001", str(uuid.uuid4()))
    room = mqtt_client(pki_dir, "controlroom", broker)
    arrived: list[bytes] = []
    room.on_message = lambda _c, _u, msg: arrived.append(bytes(msg.payload))  # paho thread
    subscribed = threading.Event()
    room.on_subscribe = lambda *_a: subscribed.set()
    room.subscribe(topic, qos=1)
    assert subscribed.wait(5)

    clock = Clock()
    holder: dict[str, MediaSender] = {}
    connected = threading.Event()

    def on_event(event) -> None:  # transport network thread: route PUBACKs, nothing else
        if isinstance(event, t.PublishResult):
            holder["sender"].acked(event.mid)
        elif isinstance(event, t.Connected):
            connected.set()

    dev = device_paths(pki_dir, "pb-test-0001")
    with ThrottleProxy("127.0.0.1", broker.port) as proxy:
        transport = t.MqttTransport(
            client_id=f"pb-test-0001-media-{uuid.uuid4().hex[:6]}",
            host="localhost",
            port=proxy.port,
            tls=t.TlsFiles(ca_paths(pki_dir).cert, dev.cert, dev.key),
            on_event=on_event,
            keepalive_s=10,
            session_expiry_s=30,
        )
        controller = AdaptationController(down_hold_s=0.5, up_after_s=1.0)
        sender = MediaSender(transport.publish, topic, clock=clock, controller=controller)
        holder["sender"] = sender
        source = SyntheticSource(sender)
        sender.on_level = source.on_level
        transport.start()
        try:
            assert connected.wait(5), "device transport did not connect through the proxy"
            feeder = threading.Thread(target=source.run, args=(14.0,), daemon=True)
            t0 = time.monotonic()
            feeder.start()
            time.sleep(3.0)
            proxy.set_rate(200)
            throttled_at = time.monotonic()
            time.sleep(4.0)
            proxy.set_rate(100)
            time.sleep(4.0)
            proxy.set_rate(None)
            recovered_at = time.monotonic()
            feeder.join(5)
            assert sender.wait_idle(6), f"sender did not drain: {sender.stats()}"
            stats = sender.stats()
            expected = stats.sent_audio + stats.sent_video
            deadline = time.monotonic() + 5
            while len({decode_envelope(p).seq for p in list(arrived)}) < expected:
                assert time.monotonic() < deadline, "control room did not get everything"
                time.sleep(0.05)
        finally:
            sender.close()
            transport.stop()
    print(
        f"\nsender stats: {stats}\nlevels: "
        f"{[(round(at - t0, 1), str(lv)) for at, lv in source.levels]}"
    )

    reassembler = Reassembler()
    packets = [r for r in (reassembler.add(decode_envelope(p)) for p in arrived) if r]
    envs = [decode_envelope(p) for p in arrived]

    # Voice: no hole over 100 ms anywhere, from the first to the last submitted packet.
    sent_audio = [p.pts_us for p in source.submitted if p.stream is Stream.AUDIO]
    got_audio = sorted(r.packet.pts_us for r in packets if r.packet.stream is Stream.AUDIO)
    assert got_audio[0] == sent_audio[0] and got_audio[-1] == sent_audio[-1]
    worst_gap = max(b - a - 20_000 for a, b in zip(got_audio, got_audio[1:], strict=False))
    assert worst_gap <= 100_000, f"audio gap of {worst_gap / 1000:.0f} ms"

    # Video: every keyframe arrived whole, and no delta arrived after a hole in its chain.
    keys_sent = {p.pts_us for p in source.submitted if p.is_video and p.keyframe}
    keys_got = {r.packet.pts_us for r in packets if r.packet.is_video and r.packet.keyframe}
    assert keys_sent <= keys_got, f"{len(keys_sent - keys_got)} keyframes lost"
    video_ok(envs, source.submitted)
    assert stats.dropped_video > 0, "the throttled link should have cost some deltas"

    # Adaptation: down while throttled, back up after the link recovered.
    downs = [lv for at, lv in source.levels if throttled_at <= at < recovered_at]
    ups = [lv for at, lv in source.levels if at >= recovered_at]
    assert downs and LADDER.index(downs[-1]) > 0, "no step down under 200/100 kbit/s"
    floor_reached = max(LADDER.index(lv) for lv in downs)
    assert ups and LADDER.index(ups[-1]) < floor_reached, "no step up after recovery"


# -- issue 9 item 7: live media ahead of the pre-roll ------------------------------------------


class SlowLink(FakeLink):
    """A FIFO link of `rate` bytes/s on the fake clock: a message is acknowledged when its
    last byte has crossed; `done[mid]` is that time."""

    def __init__(self, clock: FakeClock, rate: float) -> None:
        super().__init__()
        self.clock, self.rate = clock, rate
        self.wire: list[tuple[int, int]] = []  # (mid, bytes left)
        self.done: dict[int, float] = {}

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        mid = super().publish(topic, payload, qos)
        self.wire.append((mid, len(payload) + 60))  # + MQTT/TLS/TCP overhead, roughly
        return mid

    def run(self, dt: float) -> None:
        budget = self.rate * dt
        while self.wire and budget > 0:
            mid, left = self.wire[0]
            if left > budget:
                self.wire[0] = (mid, left - budget)
                return
            budget -= left
            self.wire.pop(0)
            self.done[mid] = self.clock.monotonic()
            self.sender.acked(mid)


def test_live_goes_ahead_of_the_preroll_and_the_whole_preroll_follows() -> None:
    """5 s of pre-roll (~240 kB, 30 kB keyframes) handed over at the press, then live media
    at ~85 kbit/s on a 150 kbit/s link: live packets cross within a fraction of a second from
    the start (before the fix they waited seconds behind the pre-roll; a pre-roll keyframe
    sent in one piece alone holds a live packet 1.6 s), the live lane starts at a keyframe,
    and every pre-roll seq is sent, whole, behind the live media."""
    clock = FakeClock()
    link = SlowLink(clock, rate=150_000 / 8)
    sender = make(link, clock)
    preroll = []
    for i in range(75):  # 5 s at 15 fps, a keyframe each second, with its audio
        t = i * 66_666
        preroll.append(video(t, i % 15 == 0, size=30_000 if i % 15 == 0 else 1_000))
        preroll += [audio(t + k * 20_000) for k in range(4) if t + k * 20_000 < (i + 1) * 66_666]
    for pkt in preroll:
        sender.submit(pkt, preroll=True)
    n_pre = len(preroll)
    live_seq: dict[int, float] = {}  # seq -> submitted at
    start_us, step = 5_000_000, 0.010
    frame = 0
    for tick in range(int(40 / step)):  # 40 s: live for 10 s, then the pre-roll's tail
        now_us = start_us + round(tick * step * 1e6)
        if tick < int(10 / step):
            if tick % 2 == 0:  # audio every 20 ms
                live_seq[sender.stats().seq_count] = clock.monotonic()
                sender.submit(audio(now_us), preroll=False)
            if now_us >= start_us + frame * 66_666:  # video at 15 fps; the forced keyframe first
                key = frame % 15 == 0
                live_seq[sender.stats().seq_count] = clock.monotonic()
                sender.submit(video(now_us, key, size=3_000 if key else 300), preroll=False)
                frame += 1
        sender.pump()
        clock.advance(step)
        link.run(step)
        sender.pump()

    envs = link.envelopes()
    mids_of: dict[int, list[int]] = {}
    for mid, env in enumerate(envs, start=1):
        mids_of.setdefault(env.seq, []).append(mid)
    # Live: every packet crossed the link soon after it was submitted.
    delays = sorted(max(link.done[m] for m in mids_of[seq]) - at for seq, at in live_seq.items()
                    if seq in mids_of)
    assert len(delays) == len(live_seq), "live packets were dropped on a link that has room"
    p95 = delays[int(0.95 * len(delays))]
    assert p95 <= 0.5 and delays[-1] <= 0.8, (p95, delays[-1])
    first_live_video = next(e for e in envs if e.seq >= n_pre and e.stream is Stream.VIDEO)
    assert first_live_video.keyframe, "the live lane must start at a keyframe"
    # Pre-roll: every seq went, each in its chunks, flagged, and mostly after live ones.
    pre = [e for e in envs if e.seq < n_pre]
    assert {e.seq for e in pre} == set(range(n_pre))
    assert all(e.preroll for e in pre)
    for seq in range(n_pre):
        chunks = [e for e in pre if e.seq == seq]
        assert sorted(e.chunk_index for e in chunks) == list(range(chunks[0].chunk_count))
    assert envs.index(first_live_video) < max(i for i, e in enumerate(envs) if e.seq < n_pre)
    stats = sender.stats()
    assert stats.dropped_video == stats.dropped_audio == 0
    assert stats.behind_packets == 0 and stats.sent_behind == n_pre


def test_a_preroll_bigger_than_the_send_queue_keeps_every_delta() -> None:
    """A busy picture at a high bitrate: 5 s of pre-roll (~360 kB) over a 100 kB queue
    budget. Before, the budget dropped every pre-roll delta (keyframes only); now the
    pre-roll waits behind live media, whole, and live media keeps its own budget."""
    link, clock = FakeLink(), FakeClock()
    sender = make(link, clock, max_queue_bytes=100_000)
    preroll = [video(i * 66_666, i % 15 == 0, size=20_000 if i % 15 == 0 else 4_000)
               for i in range(75)]
    for pkt in preroll:
        sender.submit(pkt, preroll=True)
    sender.submit(video(5_000_000, True), preroll=False)  # live starts at its keyframe
    sender.submit(audio(5_000_000), preroll=False)
    drain(sender, link)
    envs = link.envelopes()
    assert {e.seq for e in envs} == set(range(77)), "every pre-roll packet was sent"
    assert sender.stats().dropped_video == 0
    assert [e.seq for e in envs[:2]] == [75, 76], "live first"
