"""Media envelope: round trip, chunking, strict rejection, reassembly order/duplicates/bounds."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.firmware.media.envelope import (
    HEADER,
    MAX_MESSAGE,
    MEDIA_MAGIC,
    MEDIA_VERSION,
    MediaEnvelope,
    MediaError,
    Reassembler,
    decode_envelope,
    encode_packet,
)
from pinkbutton.firmware.media.packet import EncodedPacket, Stream


def video(size: int, pts_us: int = 2_000_000, keyframe: bool = True) -> EncodedPacket:
    data = bytes(random.Random(size).randbytes(size))
    return EncodedPacket(Stream.VIDEO, data, pts_us, 66_667, keyframe)


def header(**over) -> bytes:
    fields = dict(
        magic=MEDIA_MAGIC,
        version=MEDIA_VERSION,
        stream=1,
        flags=1,
        reserved=0,
        index=0,
        count=1,
        seq=7,
        capture_us=5,
        pts_us=1,
        duration_us=20_000,
        payload_len=3,
    )
    fields.update(over)
    return HEADER.pack(*fields.values())


def test_header_is_38_bytes_big_endian():
    assert HEADER.size == 38 and HEADER.format == ">2sBBBBHHIQqII"


def test_round_trip_single_message():
    pkt = EncodedPacket(Stream.AUDIO, b"opus!", 1_234_567, 20_000, True)
    [msg] = encode_packet(pkt, seq=3, origin_us=1_000_000, preroll=True)
    assert len(msg) == HEADER.size + 5
    env = decode_envelope(msg)
    assert env == MediaEnvelope(
        Stream.AUDIO, True, True, 0, 1, 3, 1_234_567, 234_567, 20_000, b"opus!"
    )
    received = Reassembler().add(env)
    assert received is not None
    assert received.packet == pkt and received.seq == 3 and received.pts_us == 234_567
    assert received.preroll


def test_pts_before_origin_is_negative_not_an_error():
    [msg] = encode_packet(video(10, pts_us=900), seq=0, origin_us=1000)
    assert decode_envelope(msg).pts_us == -100


def test_200k_keyframe_is_chunked_and_reassembled():
    pkt = video(200 * 1024)
    msgs = encode_packet(pkt, seq=42, origin_us=0)
    assert len(msgs) == 4
    assert all(len(m) <= MAX_MESSAGE for m in msgs)
    assert len(msgs[0]) == MAX_MESSAGE
    envs = [decode_envelope(m) for m in msgs]
    assert [e.chunk_index for e in envs] == [0, 1, 2, 3]
    assert {(e.seq, e.chunk_count, e.keyframe) for e in envs} == {(42, 4, True)}
    r = Reassembler()
    results = [r.add(e) for e in envs]
    assert results[:3] == [None, None, None]
    assert results[3] is not None and results[3].packet == pkt
    assert r.pending == 0 and r.pending_bytes == 0


def test_empty_payload_is_one_message():
    [msg] = encode_packet(EncodedPacket(Stream.VIDEO, b"", 0, 1, False), seq=0, origin_us=0)
    assert decode_envelope(msg).payload == b""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (header()[:37], "too short"),
        (header(magic=b"XX") + b"abc", "bad media magic"),
        (header(version=2) + b"abc", "unknown media version 2"),
        (header(stream=3) + b"abc", "unknown media stream 3"),
        (header(stream=0) + b"abc", "unknown media stream 0"),
        (header() + b"ab", "length mismatch"),
        (header() + b"abcd", "length mismatch"),
        (header(index=1, count=1) + b"abc", "index 1 of 1"),
        (header(index=0, count=0) + b"abc", "index 0 of 0"),
        (header(payload_len=MAX_MESSAGE) + bytes(MAX_MESSAGE), "oversize"),
    ],
)
def test_malformed_messages_raise_one_line_media_error(data, reason):
    with pytest.raises(MediaError, match=reason) as err:
        decode_envelope(data)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda h, t: h + t, st.just(header()), st.binary()))
def test_decode_arbitrary_bytes_raises_only_media_error(data):
    try:
        env = decode_envelope(data)
    except MediaError:
        return
    assert env.chunk_index < env.chunk_count and len(env.payload) == len(data) - HEADER.size


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(0, 300_000),
    seed=st.integers(0, 2**32),
    dup=st.integers(0, 3),
)
def test_reassembly_any_order_with_duplicates(size, seed, dup):
    pkt = video(size)
    envs = [decode_envelope(m) for m in encode_packet(pkt, seq=9, origin_us=0)]
    rng = random.Random(seed)
    arrivals = envs + [rng.choice(envs) for _ in range(dup)]
    rng.shuffle(arrivals)
    r = Reassembler()
    out = [x for x in (r.add(e) for e in arrivals) if x is not None]
    assert len(out) == 1 and out[0].packet == pkt
    assert r.pending == 0


def test_interleaved_packets_reassemble_independently():
    a, b = video(150_000, pts_us=1), video(70_000, pts_us=2, keyframe=False)
    ea = [decode_envelope(m) for m in encode_packet(a, seq=1, origin_us=0)]
    eb = [decode_envelope(m) for m in encode_packet(b, seq=2, origin_us=0)]
    r = Reassembler()
    order = [eb[1], ea[2], ea[0], eb[0], ea[1]]
    out = [x for x in (r.add(e) for e in order) if x is not None]
    assert [x.seq for x in out] == [2, 1]
    assert out[0].packet == b and out[1].packet == a


def test_incomplete_packets_far_behind_are_dropped(caplog):
    r = Reassembler(max_seq_window=10)
    first = decode_envelope(encode_packet(video(100_000), seq=0, origin_us=0)[0])
    assert r.add(first) is None and r.pending == 1
    for seq in range(1, 30):
        [m] = encode_packet(video(10, keyframe=False), seq=seq, origin_us=0)
        assert r.add(decode_envelope(m)) is not None
    small = encode_packet(video(100_000), seq=30, origin_us=0)
    r.add(decode_envelope(small[0]))
    assert r.pending == 1  # seq 0 is gone, seq 30 waits
    assert r.dropped_incomplete == 1
    assert "media seq 0 dropped incomplete (1 of 2 chunks)" in caplog.text
    # The missing chunk of seq 0 arriving late is ignored, not resurrected.
    late = decode_envelope(encode_packet(video(100_000), seq=0, origin_us=0)[1])
    assert r.add(late) is None and r.pending == 1


def test_memory_bound_on_pending_bytes():
    r = Reassembler(max_pending_bytes=300_000)
    for seq in range(20):
        first = encode_packet(video(200_000 + seq), seq=seq, origin_us=0)[0]
        r.add(decode_envelope(first))
        assert r.pending_bytes <= 300_000
    assert r.dropped_incomplete >= 15


def test_duplicate_of_a_completed_packet_is_ignored():
    r = Reassembler()
    [m] = encode_packet(video(10), seq=5, origin_us=0)
    assert r.add(decode_envelope(m)) is not None
    assert r.add(decode_envelope(m)) is None
    assert r.duplicates == 1


def test_chunks_that_disagree_are_rejected():
    msgs = encode_packet(video(100_000), seq=1, origin_us=0)
    r = Reassembler()
    r.add(decode_envelope(msgs[0]))
    forged = bytearray(msgs[1])
    struct.pack_into(">Q", forged, 14, 999)  # capture_us of another packet
    with pytest.raises(MediaError, match="disagrees"):
        r.add(decode_envelope(bytes(forged)))


# --- pinned at the boundaries (issue 15) -----------------------------------------------------


def single(seq: int, size: int = 10) -> MediaEnvelope:
    [m] = encode_packet(video(size, keyframe=False), seq=seq, origin_us=0)
    return decode_envelope(m)


def halves(seq: int, size: int = 100_000) -> list[MediaEnvelope]:
    return [decode_envelope(m) for m in encode_packet(video(size), seq=seq, origin_us=0)]


def test_live_packets_are_not_pre_roll_unless_marked() -> None:
    [live] = encode_packet(video(10), seq=1, origin_us=0)
    [pre] = encode_packet(video(10), seq=2, origin_us=0, preroll=True)
    assert live[4] & 0x02 == 0 and pre[4] & 0x02 == 0x02
    assert decode_envelope(live).preroll is False and decode_envelope(pre).preroll is True
    assert decode_envelope(live).keyframe is True
    r = Reassembler()
    assert r.add(decode_envelope(live)).preroll is False
    assert r.add(decode_envelope(pre)).preroll is True


def test_the_reserved_header_byte_is_sent_as_zero() -> None:
    for message in encode_packet(video(100_000), seq=1, origin_us=0, preroll=True):
        assert message[5] == 0


def test_a_packet_of_exactly_65535_chunks_is_enveloped_one_more_is_refused(monkeypatch) -> None:
    """The chunk count is 16 bits. Made cheap by a 1-byte chunk size: one chunk per byte."""
    from pinkbutton.firmware.media import envelope

    monkeypatch.setattr(envelope, "MAX_CHUNK_PAYLOAD", 1)
    pkt = EncodedPacket(Stream.VIDEO, bytes(0xFFFF), 0, 1, True)
    messages = encode_packet(pkt, seq=1, origin_us=0)
    assert len(messages) == 0xFFFF and decode_envelope(messages[-1]).chunk_count == 0xFFFF
    too_big = EncodedPacket(Stream.VIDEO, bytes(0x10000), 0, 1, True)
    with pytest.raises(ValueError, match=r"^media packet of 65536 bytes is too big to envelope$"):
        encode_packet(too_big, seq=1, origin_us=0)


def test_decode_errors_say_exactly_what_is_wrong() -> None:
    with pytest.raises(MediaError, match=r"^media message must be bytes, got str$"):
        decode_envelope("PB")
    with pytest.raises(MediaError, match=r"^media length mismatch: header says 3, got 2$"):
        decode_envelope(header() + b"ab")


def test_reassembler_defaults() -> None:
    r = Reassembler()
    assert (r.max_seq_window, r.max_pending_bytes) == (256, 4 * 1024 * 1024)
    assert (r.pending, r.pending_bytes, r.dropped_incomplete, r.duplicates, r.late) == (
        0, 0, 0, 0, 0)


def test_a_first_packet_with_seq_0_is_never_late_even_with_no_window() -> None:
    r = Reassembler(max_seq_window=0)
    assert r.add(single(0)).seq == 0 and r.late == 0


def test_a_chunk_exactly_max_seq_window_behind_is_taken_one_more_is_late() -> None:
    r = Reassembler(max_seq_window=10)
    r.add(single(20))
    at_edge, past_edge = halves(10), halves(9)
    assert r.add(at_edge[0]) is None and r.pending == 1 and r.late == 0
    assert r.add(at_edge[1]).seq == 10
    assert r.add(past_edge[0]) is None and r.add(past_edge[1]) is None
    assert (r.late, r.pending) == (2, 0), "each late chunk is counted once"


def test_duplicates_are_counted_one_by_one() -> None:
    r = Reassembler()
    a, b = halves(3)
    r.add(a)
    assert r.add(a) is None and r.duplicates == 1
    assert r.add(a) is None and r.duplicates == 2
    assert r.add(b).seq == 3
    assert r.add(b) is None and r.add(single(3)) is None and r.duplicates == 4


def test_the_completed_seq_window_evicts_the_oldest_and_keeps_exactly_the_window() -> None:
    r = Reassembler(max_seq_window=4)
    for seq in (1, 2, 3, 4):
        assert r.add(single(seq)) is not None
    assert r.add(single(1)) is None, "all four are remembered"
    assert r.add(single(5)) is not None
    assert r.add(single(5)) is None, "the newest is remembered, not evicted"
    assert r.add(single(2)) is None and r.duplicates == 3
    assert r.late == 0
    # seq 1 was the oldest: forgotten first (and not late: 1 >= 5 - 4), so it is taken again.
    assert r.add(single(1)) is not None


def test_an_incomplete_packet_exactly_at_the_horizon_is_kept_and_the_drop_is_logged(caplog) -> None:
    r = Reassembler(max_seq_window=10)
    r.add(halves(0)[0])
    r.add(halves(1)[0])
    r.add(halves(11)[0])  # horizon 1: seq 0 is behind it, seq 1 exactly at it
    assert r.pending == 2 and r.dropped_incomplete == 1
    assert [rec.getMessage() for rec in caplog.records] == [
        "media seq 0 dropped incomplete (1 of 2 chunks): too far behind"]


def test_pending_bytes_exactly_at_the_bound_are_kept_one_more_is_dropped(caplog) -> None:
    first = halves(1)[0]
    bound = len(first.payload)
    r = Reassembler(max_pending_bytes=bound)
    assert r.add(first) is None and (r.pending, r.pending_bytes) == (1, bound)
    r = Reassembler(max_pending_bytes=bound - 1)
    assert r.add(first) is None and (r.pending, r.pending_bytes, r.dropped_incomplete) == (0, 0, 1)
    assert [rec.getMessage() for rec in caplog.records] == [
        "media seq 1 dropped incomplete (1 of 2 chunks): over the reassembly memory bound"]
