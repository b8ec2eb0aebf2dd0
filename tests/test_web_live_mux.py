"""The live view's remuxer and hub (tools/controlroom/web/live.py) without a browser: real
H.264 + Opus packets (encoded once with PyAV) remuxed into fragmented MP4 in memory, read back
with PyAV and ffmpeg; the hub's start points, bounds and end."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import av
import pytest
from pinkbutton.firmware.media.envelope import ReceivedPacket
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.hal.clock import FakeClock
from pinkbutton.tools.controlroom.web import live
from pinkbutton.tools.controlroom.web.live import Fragment, LiveHub, LiveMux, Watcher

from tests.test_evidence import as_received, encode_audio, encode_video

FPS = 15


@pytest.fixture(scope="module")
def media() -> list[EncodedPacket]:
    """4 s of video (a keyframe a second) and audio, in capture order."""
    video = encode_video(frames=4 * FPS)
    audio = encode_audio()[: 4 * 50]
    return sorted(video + audio, key=lambda p: (p.pts_us, p.stream))


@pytest.fixture(scope="module")
def incident(media) -> list[ReceivedPacket]:
    return as_received(media)


def remux(packets: list[ReceivedPacket]) -> tuple[LiveMux, list[Fragment]]:
    mux = LiveMux("a1", clock=FakeClock())
    out: list[Fragment] = []
    for rp in packets:
        mux.feed(rp)
        out += mux.fragments.take()
    mux.close()
    return mux, out + mux.fragments.take()


def nal_units(annex_b: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (start codes of 3 or 4 bytes)."""
    parts = annex_b.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p for p in parts if p]


def avcc_nal_units(sample: bytes) -> list[bytes]:
    """The NAL units of an MP4 sample (4-byte big-endian lengths)."""
    out, i = [], 0
    while i < len(sample):
        n = int.from_bytes(sample[i : i + 4], "big")
        out.append(sample[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def demux(path: Path) -> tuple[list[bytes], list[bytes], list[str]]:
    video, audio = [], []
    with av.open(str(path)) as c:
        codecs = [s.codec_context.name for s in c.streams]
        for pkt in c.demux():
            if pkt.size == 0:
                continue
            (video if pkt.stream.type == "video" else audio).append(bytes(pkt))
    return video, audio, codecs


def ffmpeg_errors(path: Path) -> str:
    exe = shutil.which("ffmpeg")
    assert exe, "ffmpeg is needed (apt-get install ffmpeg)"
    r = subprocess.run([exe, "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60, check=False)
    return r.stderr.strip()


def test_remuxed_stream_is_h264_and_opus_with_the_kiosks_packet_bytes(tmp_path, media, incident):
    mux, fragments = remux(incident)
    init = mux.fragments.init
    assert init is not None and init[4:8] == b"ftyp"
    assert all(f.data[4:8] == b"moof" for f in fragments)
    path = tmp_path / "live.mp4"
    path.write_bytes(init + b"".join(f.data for f in fragments))
    video, audio, codecs = demux(path)
    assert codecs == ["h264", "opus"]
    sent_video = [p.data for p in media if p.stream is Stream.VIDEO]
    sent_audio = [p.data for p in media if p.stream is Stream.AUDIO]
    # No re-encoding: the same Opus packets, and the same H.264 NAL units (MP4 only swaps
    # the Annex B start codes for lengths).
    assert audio == sent_audio
    assert [avcc_nal_units(s) for s in video] == [nal_units(d) for d in sent_video]
    assert ffmpeg_errors(path) == ""


def test_codec_string_comes_from_the_kiosks_sps(incident):
    mux, _ = remux(incident[:40])
    sps = next(n for n in nal_units(incident[0].packet.data) if n[0] & 0x1F == 7)
    assert mux.fragments.mime == f'video/mp4; codecs="avc1.{sps[1:4].hex()},opus"'
    assert mux.fragments.video_track == 1


def test_fragments_marked_key_start_at_a_keyframe_and_decode_from_there(tmp_path, incident):
    mux, fragments = remux(incident)
    keys = [i for i, f in enumerate(fragments) if f.key]
    assert len(keys) == 4  # one a second
    assert keys[0] == 0
    # A viewer joining late: init segment + fragments from the newest keyframe.
    path = tmp_path / "late.mp4"
    assert mux.fragments.init is not None
    path.write_bytes(mux.fragments.init + b"".join(f.data for f in fragments[keys[-1]:]))
    assert ffmpeg_errors(path) == ""
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        assert frame.key_frame
        # Timestamps are the device's: 3 s after the first packet, not restarted at 0.
        assert frame.time == pytest.approx(3.0, abs=0.01)


def test_a_fragment_is_out_as_soon_as_the_next_packet_comes(incident):
    """Not a GOP later: live latency is one packet (one Opus frame), not one second."""
    mux = LiveMux("a1", clock=FakeClock())
    out = 0
    for rp in incident[:120]:
        mux.feed(rp)
        out += len(mux.fragments.take())
    assert mux.fragments.init is not None
    assert out >= 120 - 5  # one fragment a packet; a few wait for the interleaving


def video_samples(fragments: list[Fragment], track: int) -> list[tuple[int, int]]:
    """(decode time, duration) of each sample of `track`, from the moof boxes (tfhd default
    duration, tfdt; one sample per fragment: frag_every_frame)."""
    out = []
    for f in fragments:
        moof = live._child(f.data, 0, len(f.data), b"moof")
        assert moof is not None
        for kind, a, b in live._boxes(f.data, *moof):
            if kind != b"traf":
                continue
            tfhd, tfdt = live._child(f.data, a, b, b"tfhd"), live._child(f.data, a, b, b"tfdt")
            assert tfhd is not None and tfdt is not None
            flags = int.from_bytes(f.data[tfhd[0] + 1:tfhd[0] + 4], "big")
            if struct.unpack_from(">I", f.data, tfhd[0] + 4)[0] != track:
                continue
            at = tfhd[0] + 8 + (8 if flags & 1 else 0) + (4 if flags & 2 else 0)
            duration = struct.unpack_from(">I", f.data, at)[0] if flags & 8 else -1
            v1 = f.data[tfdt[0]] == 1
            start = struct.unpack_from(">Q" if v1 else ">I", f.data, tfdt[0] + 4)[0]
            out.append((start, duration))
    return out


@pytest.mark.parametrize("frame_ms", [20, 60])
def test_pictures_keep_their_durations_when_audio_comes_after_them(frame_ms):
    """In seq order an Opus packet follows the pictures captured during its frame (the kiosk
    sends it when the frame is complete). Muxed in that order, FFmpeg gave those pictures a
    duration of 0 and the browser dropped every picture up to the next keyframe (seen with
    60 ms frames: one picture a second). LiveMux feeds the muxer in capture order."""
    video = encode_video(frames=3 * FPS)
    audio = encode_audio(frame_ms, 0.0, 3.0)
    sent = sorted(video + audio, key=lambda p: (
        p.pts_us + (p.duration_us if p.stream is Stream.AUDIO else 0), p.stream))
    mux, fragments = remux(as_received(sent))
    track, _ = live.codecs_of(mux.fragments.init or b"")
    assert track is not None
    samples = video_samples(fragments, track)
    assert len(samples) == 3 * FPS
    step = 90_000 // FPS
    assert [d for _t, d in samples] == [step] * len(samples)
    assert [t for t, _d in samples] == [samples[0][0] + i * step for i in range(len(samples))]


def test_pictures_do_not_wait_long_for_a_microphone_that_stopped():
    """Audio stops after 1 s (a dead microphone): pictures keep coming out, at most HOLD_US
    and the muxer's own interleaving wait (MAX_INTERLEAVE_US) of video behind the newest
    (plus the picture that takes the span past it, the one that cuts its fragment,
    frag_every_frame, and the one just fed)."""
    video = encode_video(frames=3 * FPS)
    audio = encode_audio(60, 0.0, 1.0)
    sent = sorted(video + audio, key=lambda p: (
        p.pts_us + (p.duration_us if p.stream is Stream.AUDIO else 0), p.stream))
    mux = LiveMux("a1", clock=FakeClock())
    track = None
    for rp in as_received(sent):
        mux.feed(rp)
        fragments = mux.fragments.take()
        if track is None and mux.fragments.init:
            track, _ = live.codecs_of(mux.fragments.init)
        if rp.packet.stream is Stream.VIDEO and rp.pts_us > 2_000_000:
            assert track is not None
            out = video_samples(fragments, track)
            assert len(out) == 1, (rp.pts_us, out)  # one picture out for one in, held back
            held_us = rp.pts_us - out[0][0] * 100 // 9
            bound = live.HOLD_US + live.MAX_INTERLEAVE_US + 3 * 1_000_000 // FPS + 1000
            assert 0 < held_us <= bound, held_us


# ---- the hub ---------------------------------------------------------------------------------


class Collector:
    """A watcher's consumer: what it got, as the WebSocket would send it."""

    def __init__(self) -> None:
        self.woken = threading.Event()

    def wake(self) -> None:
        self.woken.set()


def drained(hub: LiveHub) -> None:
    assert hub.flush(30), "hub did not drain"


def kinds(items) -> list[str]:
    return ["text" if isinstance(p, str) else "bytes" for _, p in items]


def test_early_watcher_gets_everything_from_the_first_keyframe(incident):
    clock = FakeClock()
    hub = LiveHub(clock=clock)
    try:
        w = hub.watch("a1", "auto", lambda: None)  # before any media: the press
        for rp in incident:
            hub.feed("a1", rp)
        drained(hub)
        items = w.take()
        head = json.loads(str(items[0][1]))
        assert head["type"] == "stream" and head["from"] == "start"
        assert head["audio_frame_ms"] == 20  # the kiosk's Opus frame: the player's aim (live.js)
        assert bytes(items[1][1])[4:8] == b"ftyp"
        assert len(items) - 2 == hub.stats("a1")["fragments"] > 0
    finally:
        hub.close()


def test_late_watcher_starts_at_the_newest_keyframe_or_asks_for_the_start(incident):
    clock = FakeClock()
    hub = LiveHub(clock=clock, early_s=15.0)
    try:
        for rp in incident:
            hub.feed("a1", rp)
        drained(hub)
        total = hub.stats("a1")["fragments"]
        early = hub.watch("a1", "auto", lambda: None).take()
        assert '"from": "start"' in str(early[0][1]) and len(early) == 2 + total
        clock.advance(20.0)  # the incident is no longer young
        late = hub.watch("a1", "auto", lambda: None).take()
        assert '"from": "live"' in str(late[0][1])
        newest = [i for i, f in enumerate(hub._incidents["a1"].fragments) if f.key][-1]
        assert len(late) == 2 + total - newest
        review = hub.watch("a1", "start", lambda: None).take()
        assert len(review) == 2 + total
    finally:
        hub.close()


def test_end_reaches_watchers_and_later_ones_get_the_recording_then_end(incident):
    hub = LiveHub(clock=FakeClock())
    try:
        w = hub.watch("a1", "start", lambda: None)
        for rp in incident:
            hub.feed("a1", rp)
        hub.end("a1")
        drained(hub)
        items = w.take()
        assert items[-1] == ("text", '{"type": "end"}') and w.done
        after = hub.watch("a1", "start", lambda: None)
        got = after.take()
        assert kinds(got)[:2] == ["text", "bytes"] and got[-1] == ("text", '{"type": "end"}')
        assert after.done
    finally:
        hub.close()


def test_a_slow_watcher_is_dropped_and_never_slows_the_feed(incident):
    hub = LiveHub(clock=FakeClock(), watcher_bytes=64 * 1024)
    try:
        slow = hub.watch("a1", "start", lambda: None)  # never takes anything
        fast = Watcher("x", "start", lambda: None, 1 << 30)
        started = time.perf_counter()
        for rp in incident:
            hub.feed("a1", rp)
        feed_s = time.perf_counter() - started
        drained(hub)
        assert slow.dropped and slow.done is False  # one "dropped" message left to send
        assert slow.take() == [("text", '{"type": "dropped", "reason": "too far behind"}')]
        assert slow.done
        assert hub.stats("a1")["watchers"] == 0
        # feed only queues: 260 packets in far less than muxing them would take.
        assert feed_s < 0.5, feed_s
        assert fast.take() == []
    finally:
        hub.close()


def test_a_full_hub_queue_drops_packets_instead_of_blocking(incident):
    hub = LiveHub(clock=FakeClock(), queue_packets=5)
    gate = threading.Event()
    original = hub._feed

    def stuck_feed(alert_id, rp):  # the hub thread is busy (a slow muxer)
        gate.wait(10)
        original(alert_id, rp)

    hub._feed = stuck_feed  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        for rp in incident[:50]:
            hub.feed("a1", rp)
        assert time.perf_counter() - started < 0.5
        assert hub.dropped_packets >= 50 - 5 - 1
    finally:
        gate.set()
        hub.close()


def test_retained_media_is_bounded_and_still_starts_at_a_keyframe(incident):
    hub = LiveHub(clock=FakeClock(), retain_bytes=60_000)
    try:
        for rp in incident:
            hub.feed("a1", rp)
        drained(hub)
        inc = hub._incidents["a1"]
        assert inc.fragments[0].key
        total = sum(len(f.data) for f in inc.fragments)
        assert total == inc.retained
        # Trimmed a GOP at a time: at most one GOP (~1 s at this bitrate) over the bound.
        assert total < 60_000 + 100_000
        assert len(inc.fragments) < 4 * (FPS + 50)
    finally:
        hub.close()
