"""Pre-roll properties over synthetic interleaved audio/video packet streams (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.firmware.media.preroll import PreRollBuffer

VIDEO_US = 66_667
AUDIO_US = 20_000
T0 = 10_000_000


def make_stream(
    n_video: int, keyframes: set[int], n_audio: int, video_lag_us: int, audio_lag_us: int
) -> list[EncodedPacket]:
    """Packets in push order: each stream in pts order, merged by when its encoder finished."""
    timed = []
    for i in range(n_video):
        pkt = EncodedPacket(Stream.VIDEO, b"v%d" % i, T0 + i * VIDEO_US, VIDEO_US, i in keyframes)
        timed.append((pkt.pts_us + video_lag_us, 0, pkt))
    for j in range(n_audio):
        pkt = EncodedPacket(Stream.AUDIO, b"a%d" % j, T0 + j * AUDIO_US, AUDIO_US, True)
        timed.append((pkt.pts_us + AUDIO_US + audio_lag_us, 1, pkt))
    timed.sort(key=lambda t: (t[0], t[1]))
    return [p for _, _, p in timed]


@st.composite
def streams(draw):
    seconds = draw(st.floats(0.5, 14.0))
    n_video = draw(st.integers(0, int(seconds * 15)))
    n_audio = draw(st.integers(0, int(seconds * 50)))
    mode = draw(st.sampled_from(["gop", "random", "none"]))
    if mode == "gop":
        gop = draw(st.integers(1, 40))
        first = draw(st.integers(0, 20))
        keys = set(range(first, n_video, gop))
    elif mode == "random":
        keys = set(draw(st.sets(st.integers(0, max(0, n_video - 1)), max_size=12)))
    else:
        keys = set()
    lags = draw(st.tuples(st.integers(0, 150_000), st.integers(0, 150_000)))
    duration = draw(st.sampled_from([1.0, 2.5, 5.0]))
    return make_stream(n_video, keys, n_audio, *lags), duration


def check_snapshot(buf: PreRollBuffer, pushed: list[EncodedPacket]) -> None:
    snap = buf.snapshot()
    newest = max(p.pts_us for p in pushed)
    cutoff = newest - round(buf.duration_s * 1e6)
    too_old = newest - round(buf.max_lookback_s * 1e6)
    keys = [p for p in pushed if p.is_video and p.keyframe]
    usable_keys = [k for k in keys if k.pts_us >= too_old]

    # Packets come out in push order (a subsequence of what went in), except that the anchor
    # keyframe is moved in front of audio captured with it but pushed before it.
    position = {id(p): n for n, p in enumerate(pushed)}
    order = [position[id(p)] for p in snap[1:]]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert all(
        position[id(snap[0])] < position[id(p)] for p in snap if p.is_video and p is not snap[0]
    )

    if usable_keys:
        assert snap and snap[0].is_video and snap[0].keyframe, "snapshot must start at a keyframe"
        anchor = snap[0]
        assert all(p.pts_us >= anchor.pts_us for p in snap if not p.is_video), "audio too old"
        # Everything after the anchor is there: no hole for the live stream to miss.
        after = pushed[position[id(anchor)] :]
        assert [p for p in snap if p.is_video] == [p for p in after if p.is_video]
        audio_from_anchor = [p for p in pushed if not p.is_video and p.pts_us >= anchor.pts_us]
        assert [p for p in snap if not p.is_video] == audio_from_anchor
        if any(cutoff >= k.pts_us for k in usable_keys):
            assert anchor.pts_us <= cutoff, "snapshot must cover the whole duration"
    else:
        assert all(not p.is_video for p in snap), "no decodable video without a keyframe"
        if not keys:
            expected = [p for p in pushed if not p.is_video and p.pts_us >= cutoff]
            assert snap == expected


@settings(max_examples=150, deadline=None)
@given(streams())
def test_snapshot_properties_after_every_push(stream_and_duration):
    stream, duration = stream_and_duration
    buf = PreRollBuffer(duration)
    for n, pkt in enumerate(stream):
        buf.push(pkt)
        if n % 7 == 0 or n == len(stream) - 1:
            check_snapshot(buf, stream[: n + 1])


def test_long_run_memory_is_bounded():
    stream = make_stream(15 * 600, set(range(0, 15 * 600, 15)), 50 * 600, 30_000, 10_000)
    buf = PreRollBuffer(5.0)
    biggest = 0
    for pkt in stream:
        buf.push(pkt)
        biggest = max(biggest, len(buf))
    # 5 s + one GOP + push-order slack, for 15 video + 50 audio packets a second.
    assert biggest <= (5 + 1 + 0.5) * (15 + 50), biggest
    snap = buf.snapshot()
    span = stream[-1].pts_us - snap[0].pts_us
    assert 5_000_000 <= span <= 6_200_000


def test_hard_caps_hold_with_no_keyframes_ever_again():
    # One keyframe, then endless deltas: the anchor ages out and memory stays bounded.
    stream = make_stream(15 * 120, {0}, 50 * 120, 0, 0)
    buf = PreRollBuffer(5.0, max_packets=300)
    for pkt in stream:
        buf.push(pkt)
        assert len(buf) <= 300
    snap = buf.snapshot()
    assert snap and all(not p.is_video for p in snap)


def test_byte_cap():
    buf = PreRollBuffer(5.0, max_bytes=10_000)
    for i in range(100):
        buf.push(EncodedPacket(Stream.VIDEO, bytes(1000), i * VIDEO_US, VIDEO_US, i % 5 == 0))
        assert buf.bytes <= 10_000
    snap = buf.snapshot()
    assert snap[0].keyframe and snap[-1].pts_us == 99 * VIDEO_US


def test_audio_only_before_any_keyframe_and_clear():
    buf = PreRollBuffer(1.0)
    for pkt in make_stream(10, set(), 100, 0, 0):
        buf.push(pkt)
    snap = buf.snapshot()
    assert snap and all(not p.is_video for p in snap)
    assert snap[0].pts_us == T0 + 99 * AUDIO_US - 1_000_000
    buf.clear()
    assert buf.snapshot() == [] and len(buf) == 0


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_rejects_negative_duration(bad):
    with pytest.raises(ValueError, match="0 or more"):
        PreRollBuffer(bad)


def test_zero_duration_keeps_only_the_current_gop():
    buf = PreRollBuffer(0)
    gop_us = 1_000_000
    for i in range(45):  # 3 s at 15 fps, a keyframe every second
        buf.push(EncodedPacket(Stream.VIDEO, b"v", T0 + i * gop_us // 15, gop_us // 15,
                               keyframe=i % 15 == 0))
    snap = buf.snapshot()
    assert snap[0].keyframe and snap[0].pts_us == T0 + 2 * gop_us  # the newest keyframe
    assert len(snap) == 15
