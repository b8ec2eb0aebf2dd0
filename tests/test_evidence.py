"""EvidenceRecorder: real H.264 + Opus packets (encoded once with PyAV) muxed into fragmented MP4,
checked with ffprobe and by decoding the file back."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from pinkbutton.firmware.media.envelope import ReceivedPacket
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.hal.clock import FakeClock
from pinkbutton.tools.controlroom.media import EvidenceError, EvidenceRecorder, ffprobe_summary

W, H, FPS = 640, 480, 15
SECONDS = 10
PREROLL_S = 5
DEVICE_START_US = 5_000_000_000  # device monotonic µs at the first captured frame
FRAME_US = 1_000_000 // FPS
US = Fraction(1, 1_000_000)


def encode_video(
    width: int = W, height: int = H, frames: int = SECONDS * FPS
) -> list[EncodedPacket]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = US
    enc.framerate = FPS
    enc.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "x264-params": f"repeat-headers=1:keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0"
        ":bitrate=500:vbv-maxrate=500:vbv-bufsize=500",
    }
    # Moving diagonal stripes, made directly in I420 (no RGB conversion).
    yy, xx = np.mgrid[0 : height * 3 // 2, 0:width]
    base = ((xx + yy) % 256).astype(np.uint8)
    out = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(base + np.uint8(i * 4 % 256), format="yuv420p")
        frame.pts = i * FRAME_US
        frame.time_base = US
        for p in enc.encode(frame):
            out.append((p, bytes(p)))
    out += [(p, bytes(p)) for p in enc.encode(None)]
    return [
        EncodedPacket(Stream.VIDEO, data, DEVICE_START_US + p.pts, FRAME_US, p.is_keyframe)
        for p, data in out
    ]


def encode_audio(frame_ms: int = 20, start_s: float = 0.0, seconds: float = SECONDS
                 ) -> list[EncodedPacket]:
    """A 440 Hz tone as the kiosk sends it: one Opus frame of `frame_ms` per packet, `seconds`
    long from `start_s` into the incident."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48_000, "mono", "s16"
    enc.bit_rate = 24_000
    enc.time_base = Fraction(1, 48_000)
    enc.options = {"frame_duration": str(frame_ms), "application": "voip"}
    size, count = 48 * frame_ms, round(seconds * 1000 / frame_ms)
    t = np.arange(size * count) + round(start_s * 48_000)
    tone = (np.sin(2 * np.pi * 440 * t / 48_000) * 8000).astype(np.int16)
    out = []
    for i in range(count):
        frame = av.AudioFrame.from_ndarray(
            tone[i * size : (i + 1) * size].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48_000, i * size, enc.time_base
        for p in enc.encode(frame):
            out.append(bytes(p))
    # One packet per frame; their pts is the capture time of the frame's first sample.
    step, first = frame_ms * 1000, DEVICE_START_US + round(start_s * 1e6)
    return [EncodedPacket(Stream.AUDIO, data, first + i * step, step, True)
            for i, data in enumerate(out[:count])]


def as_received(packets: list[EncodedPacket]) -> list[ReceivedPacket]:
    """What the Reassembler would hand over: seq in send order, pts relative to the first."""
    origin = packets[0].pts_us
    preroll_end = DEVICE_START_US + PREROLL_S * 1_000_000
    return [
        ReceivedPacket(seq, p, p.pts_us - origin, p.pts_us < preroll_end)
        for seq, p in enumerate(packets)
    ]


def ffmpeg_errors(path: Path) -> str:
    """What `ffmpeg -v error` prints while decoding the whole file ('' = clean)."""
    r = subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-i", str(path),
                        "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    return (r.stderr + r.stdout).strip() or ("" if r.returncode == 0 else f"rc {r.returncode}")


@pytest.fixture(scope="module")
def media() -> list[EncodedPacket]:
    # Capture order: both streams interleaved by capture time, video first on a tie.
    packets = encode_video() + encode_audio()
    return sorted(packets, key=lambda p: (p.pts_us, p.stream))


@pytest.fixture(scope="module")
def incident(media) -> list[ReceivedPacket]:
    return as_received(media)


def record(directory: Path, packets, alert_id: str = "a1", **kw) -> tuple:
    rec = EvidenceRecorder(directory, clock=FakeClock(), **kw)
    rec.open(alert_id, "pb-0001")
    for rp in packets:
        rec.feed(alert_id, rp)
    return rec, rec.close(alert_id)


def demuxed(path: Path) -> list[tuple[str, int, int, bool]]:
    with av.open(str(path)) as c:
        return [
            (p.stream.type, p.pts, p.size, p.is_keyframe)
            for p in c.demux()
            if p.size  # skip the demuxer's empty flush packets
        ]


def decoded_video(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


@pytest.fixture(scope="module")
def full(tmp_path_factory, incident):
    """The 10 s incident fed in order. ffprobe runs mid-write twice: as soon as the file exists
    (its header must already be on disk, not in a write buffer) and after ~3 s of media."""
    rec = EvidenceRecorder(tmp_path_factory.mktemp("ev"), clock=FakeClock())
    rec.open("alert-1", "pb-0001")
    path = rec.summary("alert-1").path
    at_start = at_3s = None
    for rp in incident:
        rec.feed("alert-1", rp)
        if at_start is None and path.exists():
            at_start = ffprobe_summary(path)
        if at_3s is None and rp.pts_us >= 3_000_000:
            at_3s = ffprobe_summary(path)
    return (at_start, at_3s), rec.close("alert-1")


def test_full_incident_file_has_h264_and_opus_of_the_right_length(full):
    _, summary = full
    assert summary.path.name == "pb-0001-alert-1.mp4"
    probe = ffprobe_summary(summary.path)
    assert probe["video"]["codec"] == "h264"
    assert (probe["video"]["width"], probe["video"]["height"]) == (W, H)
    assert probe["audio"]["codec"] == "opus"
    assert probe["duration_s"] == pytest.approx(SECONDS, rel=0.1)


def test_full_incident_summary(full, incident):
    _, s = full
    assert s.video_packets == SECONDS * FPS
    assert s.audio_packets == SECONDS * 50
    assert s.gaps == []
    assert s.dropped_packets == 0
    assert (s.width, s.height) == (W, H)
    assert s.preroll_s == pytest.approx(PREROLL_S, abs=0.1)
    assert s.duration_s == pytest.approx(SECONDS, abs=0.1)
    assert s.first_media_at is not None and s.first_keyframe_at is not None
    assert s.closed


def test_audio_frames_of_20_and_then_60_ms_in_one_incident_make_one_gapless_track(tmp_path):
    """A kiosk restarted mid-incident with another media.audio_frame_ms: the room takes each
    packet's duration from its envelope; the track plays through the change."""
    video = encode_video()
    audio = encode_audio(20, 0.0, SECONDS / 2) + encode_audio(60, SECONDS / 2, SECONDS / 2)
    packets = sorted(video + audio, key=lambda p: (p.pts_us, p.stream))
    _rec, s = record(tmp_path, as_received(packets))
    assert s.gaps == [] and s.dropped_packets == 0
    assert s.audio_packets == len(audio) == SECONDS / 2 * 50 + round(SECONDS / 2 * 1000 / 60)
    assert ffmpeg_errors(s.path) == ""
    with av.open(str(s.path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples / 48_000 == pytest.approx(SECONDS, abs=0.1)


def test_first_decoded_frame_is_a_keyframe_and_every_frame_decodes(full):
    frames = decoded_video(full[1].path)
    assert frames[0].key_frame
    assert len(frames) == SECONDS * FPS
    assert (frames[0].width, frames[0].height) == (W, H)


def test_file_is_readable_while_being_written(full):
    (at_start, at_3s), _ = full
    for mid in (at_start, at_3s):
        assert mid is not None
        assert mid["video"]["codec"] == "h264"
        assert (mid["video"]["width"], mid["video"]["height"]) == (W, H)
        assert mid["audio"]["codec"] == "opus"
    # Every completed one-second fragment is playable before the incident ends.
    assert at_3s["duration_s"] == pytest.approx(3.0, abs=0.5)


def test_gap_in_seq_is_reported_exactly(tmp_path, incident):
    short = [rp for rp in incident if rp.pts_us < 3_000_000]
    lost = {40, 41, 42, 100}
    _, s = record(tmp_path, [rp for rp in short if rp.seq not in lost])
    assert s.gaps == [(40, 42), (100, 100)]
    assert ffprobe_summary(s.path)["video"]["codec"] == "h264"


def test_video_before_the_first_keyframe_is_dropped(tmp_path, media):
    # Join mid-GOP: the first 5 video packets are delta frames.
    start = media.index(
        next(p for p in media if p.is_video and p.pts_us >= 10 * FRAME_US + DEVICE_START_US)
    )
    window = [p for p in media[start:] if p.pts_us < DEVICE_START_US + 3_000_000]
    received = as_received(window)
    deltas_first = [p for p in window if p.is_video][:5]
    assert not any(p.keyframe for p in deltas_first)
    _, s = record(tmp_path, received)
    videos = [p for p in window if p.is_video]
    assert s.video_packets == len(videos) - 5
    assert s.dropped_packets == 5
    assert s.audio_packets == sum(1 for p in window if not p.is_video)
    frames = decoded_video(s.path)
    assert frames[0].key_frame
    assert len(frames) == len(videos) - 5


def test_out_of_order_arrivals_within_the_window_are_reordered(tmp_path, incident):
    short = [rp for rp in incident if rp.pts_us < 3_000_000]
    shuffled = []
    for i in range(0, len(short), 8):  # every block of 8 arrives backwards
        shuffled += reversed(short[i : i + 8])
    _, in_order = record(tmp_path / "a", short)
    _, reordered = record(tmp_path / "b", shuffled, reorder_window=16)
    assert reordered.gaps == []
    assert reordered.dropped_packets == 0
    assert demuxed(reordered.path) == demuxed(in_order.path)


def test_arrival_later_than_the_window_is_a_gap_and_dropped(tmp_path, incident):
    short = [rp for rp in incident if rp.pts_us < 2_000_000]
    late = replace(short[10], preroll=False)  # live media that was simply late
    arrivals = short[:10] + short[11:30] + [late] + short[30:]
    _, s = record(tmp_path, arrivals, reorder_window=8)
    assert s.gaps == [(10, 10)]
    # The late packet, and the video deltas after the gap up to the next keyframe (what is
    # missing may be a picture they refer to).
    after = [rp.packet for rp in short[11:] if rp.packet.is_video]
    waiting = next(i for i, p in enumerate(after) if p.keyframe)
    assert s.dropped_packets == 1 + waiting


def test_preroll_sent_behind_live_media_is_left_out_but_is_no_gap(tmp_path, incident):
    """Issue 9 item 7: on a slow link the kiosk sends live media ahead of the pre-roll. The
    live file shows the live part at once; the pre-roll that comes after it is not lost
    (the complete evidence has it), so it is neither a gap nor a drop here."""
    preroll = [rp for rp in incident if rp.preroll]
    live = [rp for rp in incident if not rp.preroll and rp.pts_us < 7_000_000]
    # A kiosk starts live media at a forced keyframe (its earlier deltas go behind, with the
    # pre-roll): the live part here starts at the first live keyframe too.
    first_key = next(i for i, rp in enumerate(live) if rp.packet.is_video and rp.packet.keyframe)
    live = live[first_key:]
    head = 12  # the first pre-roll packets crossed before the first live ones
    arrivals = preroll[:head] + live[:40] + preroll[head:] + live[40:]
    _, s = record(tmp_path, arrivals)
    assert s.gaps == [] and s.dropped_packets == 0, s
    behind = len(preroll) - head + first_key  # the live deltas before the keyframe went behind
    assert s.preroll_behind == behind
    # Pre-roll that never reached the live file (it came only after the file was closed,
    # through backfill) is not a gap of the live part either.
    _, early = record(tmp_path / "c", preroll[:head] + live)
    assert early.gaps == [] and early.preroll_behind == behind
    assert s.video_packets + s.audio_packets == head + len(live)
    frames = decoded_video(s.path)
    assert frames and frames[0].key_frame
    # A copy of a late pre-roll packet (QoS 1 redelivery) is a duplicate, not more pre-roll.
    _, twice = record(tmp_path / "b", arrivals + preroll[head:head + 3])
    assert twice.preroll_behind == s.preroll_behind and twice.dropped_packets == 3


def test_duplicates_are_written_once(tmp_path, incident):
    short = [rp for rp in incident if rp.pts_us < 2_000_000]
    _, once = record(tmp_path / "a", short)
    _, twice = record(tmp_path / "b", [x for rp in short for x in (rp, rp)])
    assert twice.dropped_packets == len(short)
    assert demuxed(twice.path) == demuxed(once.path)


def test_media_before_open_is_held_and_used(tmp_path, incident):
    short = [rp for rp in incident if rp.pts_us < 3_000_000]
    clock = FakeClock()
    rec = EvidenceRecorder(tmp_path, clock=clock, hold_s=5.0)
    early = short[: len(short) // 3]
    for rp in early:
        rec.feed("a1", rp)
    clock.advance(1.0)
    rec.open("a1", "pb-0001")
    for rp in short[len(early) :]:
        rec.feed("a1", rp)
    s = rec.close("a1")
    assert s.gaps == []
    assert s.video_packets + s.audio_packets == len(short)
    assert decoded_video(s.path)[0].key_frame


def test_held_media_is_dropped_with_one_log_line_when_no_alert_comes(tmp_path, incident, caplog):
    clock = FakeClock()
    rec = EvidenceRecorder(tmp_path, clock=clock, hold_s=5.0, max_held=10)
    for rp in incident[:25]:
        rec.feed("ghost", rp)
    clock.advance(5.1)
    with caplog.at_level(logging.WARNING, logger="pinkbutton.controlroom.media"):
        rec.expire_held()
        rec.expire_held()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["dropped 25 media packets for unknown alert ghost: no alert within 5.0 s"]
    rec.open("ghost", "pb-0001")
    s = rec.close("ghost")
    assert s.video_packets == s.audio_packets == 0
    assert not s.path.exists()


def test_preroll_seconds_count_only_flagged_media(tmp_path, incident):
    live_only = [replace(rp, preroll=False) for rp in incident if rp.pts_us < 2_000_000]
    _, s = record(tmp_path, live_only)
    assert s.preroll_s == 0.0
    assert s.duration_s == pytest.approx(2.0, abs=0.1)


def test_open_is_idempotent_and_close_reports_the_same_summary(tmp_path, incident):
    rec = EvidenceRecorder(tmp_path, clock=FakeClock())
    assert rec.open("a1", "pb-0001") is rec.open("a1", "pb-0001")
    for rp in incident[:40]:
        rec.feed("a1", rp)
    first = rec.close("a1")
    assert rec.close("a1") == first == rec.summary("a1")
    assert rec.close_all() == []
    with pytest.raises(EvidenceError, match="no evidence for alert nope"):
        rec.close("nope")


def test_unsafe_names_are_refused(tmp_path):
    rec = EvidenceRecorder(tmp_path)
    with pytest.raises(EvidenceError, match="not usable in a file name"):
        rec.open("../../etc/passwd", "pb-0001")


def test_ffprobe_summary_errors_are_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(EvidenceError, match="ffprobe cannot read"):
        ffprobe_summary(bad)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert os.environ["PATH"] == str(tmp_path)
    with pytest.raises(EvidenceError, match="ffprobe not found"):
        ffprobe_summary(bad)


def test_video_only_incident_with_a_resolution_step_down_decodes_at_both_sizes(tmp_path):
    # A dead microphone (no audio at all) and the adaptation ladder's 640x480 -> 320x240 step.
    big = encode_video(W, H, FPS)
    small = [replace(p, pts_us=p.pts_us + 1_000_000) for p in encode_video(320, 240, FPS)]
    _, s = record(tmp_path, as_received(big + small))
    assert (s.video_packets, s.audio_packets) == (2 * FPS, 0)
    probe = ffprobe_summary(s.path)
    assert probe["audio"] is None and probe["video"]["codec"] == "h264"
    sizes = [(f.width, f.height) for f in decoded_video(s.path)]
    assert sizes == [(W, H)] * FPS + [(320, 240)] * FPS


def test_audio_only_incident_is_recorded_when_no_keyframe_comes(tmp_path, media):
    # A dead camera: after AUDIO_ONLY_AFTER_S of audio without a keyframe the file starts.
    audio = [p for p in media if not p.is_video][: 4 * 50]
    _, s = record(tmp_path, as_received(audio))
    assert (s.video_packets, s.audio_packets) == (0, len(audio))
    assert s.first_keyframe_at is None
    probe = ffprobe_summary(s.path)
    assert probe["video"] is None and probe["audio"]["codec"] == "opus"
    assert probe["duration_s"] == pytest.approx(4.0, abs=0.2)


def check_every_delta_has_its_references(path: Path, media: list[EncodedPacket],
                                         origin_us: int) -> int:
    """Every video delta in the file comes right after the video packet it follows in the
    encoded stream (a P-frame refers to the picture before it), every run starts at a
    keyframe; returns the number of video packets."""
    index = {round(p.pts_us / 1000): i for i, p in enumerate(x for x in media if x.is_video)}
    with av.open(str(path)) as c:
        video = [(round(p.pts * p.time_base * 1_000_000), p.is_keyframe)
                 for p in c.demux(video=0) if p.size]
    previous = None
    for pts, key in video:
        i = index[round((origin_us + pts) / 1000)]  # in ms: the file is 90 kHz
        assert key or previous == i - 1, f"delta {i} written after {previous}: reference missing"
        previous = i
    return len(video)


def test_after_a_gap_video_waits_for_a_keyframe_and_every_frame_decodes(tmp_path, incident,
                                                                         media):
    """Issue 9 item 10: a part that starts with a keyframe, then loses packets (a broker lost
    its queue in a crash) must not write the deltas after the gap: their keyframe is not in
    the file, and decoding them against an older picture is wrong (ffmpeg reports it)."""
    short = [rp for rp in incident if rp.pts_us < 4_000_000]
    key_seqs = [rp.seq for rp in short if rp.packet.is_video and rp.packet.keyframe]
    # Lost: from just after the 2nd keyframe's GOP start to just after the 3rd keyframe...
    lost = set(range(key_seqs[1] + 10, key_seqs[2] + 1))
    # ...and a hole in the middle of the 4th GOP (maybe only audio: still waits).
    lost |= set(range(key_seqs[3] + 20, key_seqs[3] + 23))
    _, s = record(tmp_path, [rp for rp in short if rp.seq not in lost])
    assert [g for g in s.gaps] == sorted(
        [(key_seqs[1] + 10, key_seqs[2]), (key_seqs[3] + 20, key_seqs[3] + 22)])
    origin = DEVICE_START_US + short[0].pts_us
    written = check_every_delta_has_its_references(s.path, media, origin)
    assert written == s.video_packets == len(decoded_video(s.path))
    assert ffmpeg_errors(s.path) == ""


def test_a_stale_video_packet_is_dropped_and_so_are_the_deltas_that_need_it(tmp_path, incident,
                                                                            media):
    """A packet whose pts does not rise (a stale copy from before a restart) cannot be placed;
    a delta after it may refer to it, so video waits for the next keyframe."""
    short = [rp for rp in incident if rp.pts_us < 3_000_000]
    key_seqs = [rp.seq for rp in short if rp.packet.is_video and rp.packet.keyframe]
    victim = next(rp for rp in short if rp.seq > key_seqs[1] + 5 and rp.packet.is_video)
    stale = replace(victim, packet=replace(victim.packet, pts_us=victim.packet.pts_us),
                    pts_us=short[1].pts_us)  # a pts already passed
    fed = [stale if rp.seq == victim.seq else rp for rp in short]
    _, s = record(tmp_path, fed)
    origin = DEVICE_START_US + short[0].pts_us
    check_every_delta_has_its_references(s.path, media, origin)
    assert ffmpeg_errors(s.path) == ""


def test_jittered_capture_times_are_written_on_the_frame_grid_and_decode_cleanly(tmp_path,
                                                                                  media):
    """Capture times jitter (a camera callback runs late, the next one on time): two frames
    less than a frame interval apart fall on the same 1/fps tick and ffmpeg reports
    non-monotonic DTS. The file places video on its frame grid, less than a frame from its
    capture time; every frame is written and decodes, and ffmpeg prints nothing."""
    late = {i: 40_000 if i % 4 == 1 else 0 for i in range(200)}  # every 4th frame 40 ms late
    jittered, n = [], 0
    for p in media:
        if p.is_video and p.pts_us < DEVICE_START_US + 4_000_000:
            p = replace(p, pts_us=p.pts_us + late[n])
            n += 1
        jittered.append(p)
    window = [p for p in jittered if p.pts_us < DEVICE_START_US + 4_000_000]
    _, s = record(tmp_path, as_received(window))
    videos = [p for p in window if p.is_video]
    assert s.video_packets == len(videos) == len(decoded_video(s.path))
    assert ffmpeg_errors(s.path) == ""
    with av.open(str(s.path)) as c:
        assert c.streams.video[0].guessed_rate == FPS, "one grid: players see 15 fps"
        written = [p.pts * p.time_base * 1_000_000 for p in c.demux(video=0) if p.size]
    first = videos[0].pts_us
    for w, p in zip(written, videos, strict=True):
        assert abs(w - (p.pts_us - first)) < FRAME_US, (w, p.pts_us - first)


def test_a_restarted_camera_on_another_phase_stays_on_the_files_grid(tmp_path, media):
    """A kiosk restarted mid-incident captures on a new phase of its frame clock (here 23 ms
    later, after 2.6 s without media), with jittered capture times: the file keeps one grid,
    so players still see 15 fps and ffmpeg decodes it without a complaint."""
    cut = DEVICE_START_US + 30 * FRAME_US  # a keyframe: the resumed run starts with one
    shifted = [p if p.pts_us < cut else replace(p, pts_us=p.pts_us + 2_623_000)
               for p in media if p.pts_us < DEVICE_START_US + 6_000_000]
    first_after = next(p for p in shifted if p.pts_us >= cut)
    assert first_after.is_video and first_after.keyframe
    n = 0
    for i, p in enumerate(shifted):  # and its callbacks jitter: every 4th frame 40 ms late
        if p.is_video:
            if n % 4 == 3:
                shifted[i] = replace(p, pts_us=p.pts_us + 40_000)
            n += 1
    _, s = record(tmp_path, as_received(shifted))
    assert s.video_packets == sum(1 for p in shifted if p.is_video)
    assert ffmpeg_errors(s.path) == ""
    with av.open(str(s.path)) as c:
        assert c.streams.video[0].guessed_rate == FPS
