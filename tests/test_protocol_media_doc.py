"""docs/protocol.md's media envelope table says what the wire carries: real encoders, the
real pre-roll buffer and sender, envelopes decoded back (issue 9, item 12)."""

from __future__ import annotations

import re
from pathlib import Path

from pinkbutton.firmware.media.encoder import AudioEncoder, VideoEncoder, nal_types
from pinkbutton.firmware.media.envelope import FLAG_KEYFRAME, decode_envelope
from pinkbutton.firmware.media.packet import Stream
from pinkbutton.firmware.media.preroll import PreRollBuffer
from pinkbutton.firmware.media.sender import MediaSender
from pinkbutton.hal.clock import FakeClock

from tests.test_media_encoder import moving_frame, sine_chunk

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def envelope_row(field: str) -> str:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith(f"| {_off(field)}")]
    assert len(rows) == 1, f"no single row for `{field}` in the envelope table"
    return rows[0]


def _off(field: str) -> str:
    return {"flags": "4 | 1 | `flags`", "pts_us": "22 | 8 | `pts_us`"}[field]


def wire_of_one_incident():
    """3 s of real H.264 + Opus into a 2 s pre-roll; the snapshot and 1 s of live media
    through a MediaSender; the envelopes it published, decoded."""
    video, audio = VideoEncoder(320, 240, 15, 150, 1.0, codec="libx264"), AudioEncoder()
    preroll = PreRollBuffer(2.0)
    live = []
    for i in range(60):  # 4 s at 15 fps, audio in 1/15 s chunks alongside
        frame = moving_frame(i, 320, 240)  # captured at 5 s + i / 15 s
        chunk = sine_chunk(i * 3200, 3200)
        packets = video.encode(frame) + audio.encode(chunk)
        for pkt in sorted(packets, key=lambda p: p.pts_us):
            (preroll.push if i < 45 else live.append)(pkt)
    published: list[bytes] = []
    sender = MediaSender(lambda _t, payload, _q: published.append(payload) or len(published),
                         "pinkbutton/v1/dev/pb-test-0001/media/x", clock=FakeClock(),
                         start_thread=False, max_inflight=10_000,
                         max_inflight_bytes=1 << 30, max_queue_bytes=1 << 30)
    snapshot = preroll.snapshot()
    for pkt in snapshot:
        sender.submit(pkt, preroll=True)
    for pkt in live:
        sender.submit(pkt, preroll=False)
    # Pump, acknowledging every message (the pre-roll goes behind live media, paced by what
    # the link has acknowledged), until nothing more goes.
    for _ in range(10_000):
        sent = sender.pump()
        for mid in range(1, len(published) + 1):
            sender.acked(mid)
        if not sent and not sender.behind_seqs():
            break
    return [decode_envelope(m) for m in published], len(snapshot)


def test_flag_bit_0_is_set_on_every_audio_envelope_and_the_doc_says_so():
    envs, _ = wire_of_one_incident()
    audio = [e for e in envs if e.stream is Stream.AUDIO]
    video = [e for e in envs if e.stream is Stream.VIDEO]
    assert audio and all(e.keyframe for e in audio), "an Opus packet decodes on its own"
    assert any(e.keyframe for e in video) and not all(e.keyframe for e in video)
    for e in video:
        types = nal_types(e.payload)
        assert e.keyframe == (5 in types and 7 in types), "bit 0 on video: IDR with SPS/PPS"
    assert FLAG_KEYFRAME == 0x01
    row = envelope_row("flags")
    assert re.search(r"audio[^|]*every", row), f"the doc must say audio sets bit 0: {row}"


def test_pre_roll_pts_start_at_0_and_the_doc_says_so():
    envs, n_preroll = wire_of_one_incident()
    pre = [e for e in envs if e.preroll]
    assert n_preroll > 0 and len({e.seq for e in pre}) == n_preroll
    first = min(pre, key=lambda e: e.seq)  # live goes first on the wire, the pre-roll behind
    assert first.pts_us == 0, "the first pre-roll packet is the origin"
    assert min(e.seq for e in envs) == first.seq, "the pre-roll has the first seqs"
    assert min(e.pts_us for e in envs) == 0, "no pts below the origin"
    assert all(e.pts_us > 1_000_000 for e in envs if not e.preroll), "live follows the pre-roll"
    row = envelope_row("pts_us")
    assert "negative" not in row, f"pre-roll pts are not negative: {row}"
    assert re.search(r"pre-roll[^|]*\b0\b", row), f"the doc must say pre-roll starts at 0: {row}"
