"""Encoders against real PyAV decoding: keyframes, SPS/PPS, no B-frames, bitrate cap, Opus timing."""

from __future__ import annotations

import logging
import math

import av
import numpy as np
import pytest
from av.video.frame import PictureType
from pinkbutton.firmware.config import MediaConfig
from pinkbutton.firmware.media.encoder import AudioEncoder, VideoEncoder, nal_types
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.hal.base import AudioChunk, VideoFrame

FRAME_US_15 = round(1_000_000 / 15)


def moving_frame(index: int, width: int = 640, height: int = 480, fps: float = 15) -> VideoFrame:
    """I420: dark Y with a textured vertical bar that moves 8 px per frame, flat U/V 128."""
    y = np.full((height, width), 40, dtype=np.uint8)
    x = (index * 8) % (width - 48)
    bar = np.add.outer(np.arange(height), np.arange(48)) % 64 * 3 + 40
    y[:, x : x + 48] = bar.astype(np.uint8)
    chroma = np.full(width * height // 2, 128, dtype=np.uint8)
    pts_us = 5_000_000 + round(index * 1e6 / fps)
    return VideoFrame(y.tobytes() + chroma.tobytes(), width, height, pts_us)


def sine_chunk(start_sample: int, frames: int, rate: int = 48000, base_us: int = 5_000_000):
    t = np.arange(start_sample, start_sample + frames) / rate
    pcm = (np.sin(2 * math.pi * 440 * t) * 12000).astype("<i2")
    return AudioChunk(pcm.tobytes(), rate, base_us + round(start_sample * 1e6 / rate))


def decode_h264(packets: list[EncodedPacket]) -> list[av.VideoFrame]:
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for pkt in packets:
        frames += ctx.decode(av.Packet(pkt.data))
    frames += ctx.decode(None)
    return frames


def encode_frames(enc: VideoEncoder, count: int, **kw) -> list[EncodedPacket]:
    out = []
    for i in range(count):
        out += enc.encode(moving_frame(i, **kw))
    return out + enc.flush()


def assert_keyframe_layout(pkt: EncodedPacket) -> None:
    types = nal_types(pkt.data)
    assert 5 in types, f"keyframe without an IDR slice: {types}"
    idr = types.index(5)
    assert 7 in types[:idr] and 8 in types[:idr], f"SPS/PPS missing before IDR: {types}"


@pytest.fixture(scope="module")
def ten_seconds() -> list[EncodedPacket]:
    return encode_frames(VideoEncoder(640, 480, 15, 500, 1.0, codec="libx264"), 150)


def test_every_frame_decodes_in_capture_order(ten_seconds):
    assert len(ten_seconds) == 150
    assert [p.pts_us for p in ten_seconds] == [moving_frame(i).pts_us for i in range(150)]
    frames = decode_h264(ten_seconds)
    assert len(frames) == 150
    assert (frames[0].width, frames[0].height) == (640, 480)


def test_keyframe_every_second_with_sps_pps(ten_seconds):
    keys = [i for i, p in enumerate(ten_seconds) if p.keyframe]
    assert keys == list(range(0, 150, 15))
    for i in keys:
        assert_keyframe_layout(ten_seconds[i])
    assert all(5 not in nal_types(p.data) for p in ten_seconds if not p.keyframe)
    assert all(p.stream is Stream.VIDEO and p.duration_us == FRAME_US_15 for p in ten_seconds)


def test_decodable_from_any_keyframe(ten_seconds):
    # A receiver joining mid-stream (or the pre-roll's first keyframe) needs nothing earlier.
    frames = decode_h264(ten_seconds[45:60])
    assert len(frames) == 15


def test_no_b_frames_decode_order_is_presentation_order(ten_seconds):
    ctx = av.CodecContext.create("h264", "r")
    decoded_pts = []
    for n, pkt in enumerate(ten_seconds):
        packet = av.Packet(pkt.data)
        packet.pts = n
        for frame in ctx.decode(packet):
            decoded_pts.append(frame.pts)
            assert frame.pict_type in (PictureType.I, PictureType.P), frame.pict_type
    decoded_pts += [f.pts for f in ctx.decode(None)]
    # Each packet yields its own picture immediately: no reordering delay, no B-frames.
    assert decoded_pts == list(range(150))


def test_bitrate_stays_under_cap(ten_seconds):
    total_bits = sum(len(p.data) for p in ten_seconds) * 8
    kbps = total_bits / 10 / 1000
    assert kbps <= 500, f"{kbps:.0f} kbit/s over a 500 kbit/s cap"
    # Any 1 s window stays within cap + one VBV buffer.
    for start in range(0, 150 - 15):
        window = sum(len(p.data) for p in ten_seconds[start : start + 15]) * 8
        assert window <= 2 * 500_000


def test_busy_scene_still_capped():
    rng = np.random.default_rng(7)
    enc = VideoEncoder(320, 240, 15, 150, 1.0, codec="libx264")
    packets = []
    for i in range(150):
        y = rng.integers(0, 256, (240, 320), dtype=np.uint8).tobytes()
        frame = VideoFrame(y + bytes([128]) * (320 * 240 // 2), 320, 240, i * FRAME_US_15)
        packets += enc.encode(frame)
    packets += enc.flush()
    kbps = sum(len(p.data) for p in packets) * 8 / 10 / 1000
    # Pure noise is the worst case; the VBV initial buffer allows at most one bufsize extra.
    assert kbps <= 150 * 1.1, f"{kbps:.0f} kbit/s over a 150 kbit/s cap"


def test_reconfigure_gives_keyframe_at_new_size_and_rate():
    enc = VideoEncoder(640, 480, 15, 500, 1.0, codec="libx264")
    before = [p for i in range(20) for p in enc.encode(moving_frame(i))]
    enc.reconfigure(width=320, height=240, fps=10, bitrate_kbps=150)
    # The camera still delivers 640x480: the encoder scales.
    after = [p for i in range(20, 50) for p in enc.encode(moving_frame(i))] + enc.flush()
    assert after[0].keyframe
    assert_keyframe_layout(after[0])
    assert [i for i, p in enumerate(after) if p.keyframe] == [0, 10, 20]
    assert after[0].duration_us == 100_000
    frames = decode_h264(after)
    assert len(frames) == 30 and (frames[0].width, frames[0].height) == (320, 240)
    assert len(decode_h264(before)) == 20
    assert before[-1].pts_us < after[0].pts_us


def test_force_keyframe():
    enc = VideoEncoder(320, 240, 15, 150, 1.0, codec="libx264")
    out = [p for i in range(5) for p in enc.encode(moving_frame(i, 320, 240))]
    enc.force_keyframe()
    out += enc.encode(moving_frame(5, 320, 240)) + enc.flush()
    assert [i for i, p in enumerate(out) if p.keyframe] == [0, 5]
    assert_keyframe_layout(out[5])
    assert len(decode_h264(out[5:])) == 1


def test_auto_falls_back_to_libx264_and_says_why(caplog):
    with caplog.at_level(logging.INFO, logger="pinkbutton.firmware.media.encoder"):
        enc = VideoEncoder(320, 240, 15, codec="auto")
    assert enc.codec_name == "libx264", "this machine has no /dev/video11 hardware encoder"
    lines = [r.getMessage() for r in caplog.records]
    assert any("libx264" in m and "h264_v4l2m2m unavailable" in m for m in lines), lines


def test_unknown_codec_is_a_one_line_value_error():
    with pytest.raises(ValueError) as err:
        VideoEncoder(640, 480, 15, codec="h265_magic")
    assert "h265_magic" in str(err.value) and "\n" not in str(err.value)


def test_wrong_frame_size_is_one_line_error():
    enc = VideoEncoder(320, 240, 15, codec="libx264")
    with pytest.raises(ValueError, match="I420 320x240 needs"):
        enc.encode(VideoFrame(b"\x00" * 10, 320, 240, 0))


# -- Opus ----------------------------------------------------------------------------------------


def encode_audio(seconds: float, chunk_frames: int = 1024, frame_ms: int = 20
                 ) -> list[EncodedPacket]:
    enc = AudioEncoder(48000, 24, frame_ms=frame_ms)
    out, start = [], 0
    while start < seconds * 48000:
        out += enc.encode(sine_chunk(start, chunk_frames))
        start += chunk_frames
    return out


@pytest.mark.parametrize("frame_ms", [20, 40, 60])
def test_opus_packets_are_one_frame_each_and_evenly_timed(frame_ms):
    packets = encode_audio(2.0, frame_ms=frame_ms)
    # 94 chunks of 1024 = 96256 samples -> whole frames only (100 of 20 ms, 50 of 40, 33 of 60)
    assert len(packets) == 96256 // (48 * frame_ms)
    assert packets[0].pts_us == 5_000_000
    step = frame_ms * 1000
    assert all(b.pts_us - a.pts_us == step for a, b in zip(packets, packets[1:], strict=False))
    assert all(p.duration_us == step and p.keyframe and p.stream is Stream.AUDIO
               for p in packets)


def test_a_kiosk_sends_20_ms_opus_frames_unless_told_otherwise():
    # The console's live view is tuned for them (docs/protocol.md: 40 and 60 ms for weak links).
    assert AudioEncoder().frame_samples == 960
    assert MediaConfig().audio_frame_ms == 20


def test_opus_frames_other_than_20_40_60_ms_are_refused():
    with pytest.raises(ValueError, match="20, 40 or 60 ms, got 10 ms"):
        AudioEncoder(frame_ms=10)


@pytest.mark.parametrize("frame_ms", [20, 40, 60])
def test_opus_decodes_to_frames_of_the_chosen_duration(frame_ms):
    packets = encode_audio(1.0, frame_ms=frame_ms)
    ctx = av.CodecContext.create("opus", "r")
    ctx.sample_rate = 48000
    ctx.layout = "mono"
    sizes = []
    for pkt in packets:
        sizes += [f.samples for f in ctx.decode(av.Packet(pkt.data))]
    assert len(sizes) == len(packets)
    assert set(sizes) == {48 * frame_ms}


@pytest.mark.parametrize("frame_ms", [20, 60])
def test_opus_bitrate_near_24k(frame_ms):
    packets = encode_audio(5.0, frame_ms=frame_ms)
    kbps = sum(len(p.data) for p in packets) * 8 / (len(packets) * frame_ms / 1000) / 1000
    assert 20 <= kbps <= 27, kbps


def test_opus_flush_pads_the_tail_and_capture_gap_resyncs():
    enc = AudioEncoder(frame_ms=20)
    out = enc.encode(sine_chunk(0, 1500))  # 1 full frame + 540 samples
    assert len(out) == 1 and out[0].pts_us == 5_000_000
    # A 200 ms hole in capture: the partial frame is padded and timing restarts.
    out += enc.encode(sine_chunk(1500 + 9600, 960))
    out += enc.flush()
    pts = [p.pts_us for p in out]
    assert pts[:2] == [5_000_000, 5_020_000]
    assert 5_000_000 + round((1500 + 9600) * 1e6 / 48000) in pts


def test_opus_rejects_other_sample_rate():
    with pytest.raises(ValueError, match="16000 Hz, encoder expects 48000"):
        AudioEncoder().encode(AudioChunk(b"\x00\x00" * 320, 16000, 0))


@pytest.mark.parametrize("frame_ms", [20, 60])
def test_opus_carries_the_captured_signal(frame_ms):
    # What goes in comes out: the decoded audio has the input tone's pitch and loudness.
    packets = encode_audio(1.0, frame_ms=frame_ms)
    ctx = av.CodecContext.create("opus", "r")
    ctx.sample_rate = 48000
    ctx.layout = "mono"
    pcm = np.concatenate([
        f.to_ndarray().astype(np.float64).reshape(-1) for pkt in packets
        for f in ctx.decode(av.Packet(pkt.data))
    ])[4800:]  # past the codec's start-up
    if np.abs(pcm).max() <= 1.0:  # a float decoder output: scale to s16
        pcm = pcm * 32767
    spectrum = np.abs(np.fft.rfft(pcm))
    peak_hz = np.argmax(spectrum) * 48000 / len(pcm)
    assert abs(peak_hz - 440) < 10, peak_hz
    rms = np.sqrt(np.mean(pcm**2))
    assert 0.5 < rms / (12000 / np.sqrt(2)) < 1.5, rms


# Issue 9 item 12: the cap held over every 1 s window, the first second included (x264's
# VBV starts 90% full by default: 857 kbit/s in the first second for a 500 kbit/s cap).
CAP_TOLERANCE = 1.05  # rate control is a model, not a hard limit: 5% stated slack


def test_busy_picture_holds_the_cap_over_every_one_second_window():
    rng = np.random.default_rng(7)
    enc = VideoEncoder(640, 480, 15, 500, 1.0, codec="libx264")
    sizes = []
    for i in range(60):  # 4 s of noise: the encoder wants far more than the cap
        y = rng.integers(0, 256, (480, 640), dtype=np.uint8).tobytes()
        frame = VideoFrame(y + bytes([128]) * (640 * 480 // 2), 640, 480, i * FRAME_US_15)
        sizes += [len(p.data) for p in enc.encode(frame)]
    sizes += [len(p.data) for p in enc.flush()]
    assert len(sizes) == 60
    windows = [sum(sizes[i : i + 15]) * 8 / 1000 for i in range(len(sizes) - 14)]
    worst = max(range(len(windows)), key=windows.__getitem__)
    assert windows[worst] <= 500 * CAP_TOLERANCE, (
        f"{windows[worst]:.0f} kbit/s in the 1 s from frame {worst} (cap 500)")
    # Still spends what it may: a busy picture is not starved.
    assert sum(sizes) * 8 / 4 / 1000 >= 0.8 * 500
