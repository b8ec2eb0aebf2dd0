"""The kiosk's local evidence store (firmware/media/localstore.py): segments and manifest,
SHA-256, disk budget, confirmation, and what survives a kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from pinkbutton.firmware.media.envelope import MAX_CHUNK_PAYLOAD, decode_envelope, encode_packet
from pinkbutton.firmware.media.localstore import MANIFEST, LocalStore
from pinkbutton.firmware.media.packet import EncodedPacket, Stream

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
A1 = "11111111-1111-4111-8111-111111111111"
A2 = "22222222-2222-4222-8222-222222222222"
A3 = "33333333-3333-4333-8333-333333333333"
T0 = 5_000_000_000


class Faults:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def __call__(self, name: str, detail: str) -> None:
        self.items.append((name, detail))

    def names(self) -> list[str]:
        return [n for n, _ in self.items]


def packet(seq: int, *, size: int = 300, step_us: int = 20_000,
           chunky: bool = True) -> tuple[int, int, list[bytes]]:
    """(seq, capture_us, messages) as the sender would record them; with `chunky` every
    10th is a big keyframe that needs two chunks."""
    big = chunky and seq % 10 == 0
    data = bytes([seq % 251]) * (MAX_CHUNK_PAYLOAD + 100 if big else size)
    stream = Stream.VIDEO if big else Stream.AUDIO
    pkt = EncodedPacket(stream, data, T0 + seq * step_us, step_us, big)
    return seq, pkt.pts_us, encode_packet(pkt, seq, T0)


def store(tmp_path: Path, budget: int = 50_000_000, **kw) -> tuple[LocalStore, Faults]:
    faults = Faults()
    return LocalStore(tmp_path / "evidence", budget, on_fault=faults, start_thread=False,
                      **kw), faults


def record(s: LocalStore, alert_id: str, seqs, **kw) -> dict[int, list[bytes]]:
    out = {}
    for seq in seqs:
        seq, capture, messages = packet(seq, **kw)
        s.append(alert_id, seq, capture, messages)
        out[seq] = messages
    s.run_pending()
    return out


def test_segments_manifest_and_sha256_and_byte_identical_reads(tmp_path):
    s, faults = store(tmp_path)
    s.begin(A1)
    sent = record(s, A1, range(120))  # 120 x 20 ms = 2.4 s of capture time
    s.finish(A1)
    s.run_pending()
    directory = tmp_path / "evidence" / A1
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["alert_id"] == A1 and manifest["state"] == "closed"
    assert not manifest["confirmed"]
    segs = manifest["segments"]
    assert len(segs) == 3, "one segment per second of capture time"
    assert [s_["first_seq"] for s_ in segs] == [0, 50, 100]
    assert segs[-1]["last_seq"] == 119 and manifest["packets"] == 120
    for seg in segs:
        data = (directory / seg["file"]).read_bytes()
        assert len(data) == seg["bytes"]
        assert hashlib.sha256(data).hexdigest() == seg["sha256"]
        assert seg["last_capture_us"] - seg["first_capture_us"] < 1_000_000
    assert not list(directory.glob("*.part")) and not list(directory.glob("*.tmp"))
    got = dict(s.read(A1, [0, 1, 10, 55, 119, 500]))
    assert sorted(got) == [0, 1, 10, 55, 119], "seqs never recorded are not yielded"
    for seq, messages in got.items():
        assert messages == sent[seq], f"seq {seq} must be resent byte for byte"
    assert len(got[10]) == 2 and all(decode_envelope(m).seq == 10 for m in got[10])
    assert faults.items == []


def test_confirm_deletes_the_incident_and_frees_its_bytes(tmp_path):
    s, _ = store(tmp_path)
    s.begin(A1)
    record(s, A1, range(30))
    s.finish(A1)
    s.run_pending()
    used = s.used_bytes
    assert used > 30 * 300
    s.confirm(A1)
    s.run_pending()
    assert not (tmp_path / "evidence" / A1).exists()
    assert s.used_bytes == 0
    assert list(s.read(A1, range(30))) == []


def test_budget_evicts_confirmed_first_and_never_unconfirmed(tmp_path):
    s, faults = store(tmp_path, budget=120_000)
    # A1: confirmed but its deletion did not happen (crash in between): only its flag is set.
    s.begin(A1)
    record(s, A1, range(1, 10), size=5000, chunky=False)
    s.finish(A1)
    s.run_pending()
    inc = s._incidents[A1]
    inc.confirmed = True
    s._write_manifest(inc)
    s.begin(A2)  # unconfirmed: must survive whatever happens next
    record(s, A2, range(1, 10), size=5000, chunky=False)
    s.finish(A2)
    s.begin(A3)
    record(s, A3, range(1, 40), size=5000, chunky=False)
    s.finish(A3)
    s.run_pending()
    assert not (tmp_path / "evidence" / A1).exists(), "confirmed evidence goes first"
    assert (tmp_path / "evidence" / A2).exists(), "unconfirmed evidence is never deleted"
    assert len(dict(s.read(A2, range(1, 10)))) == 9
    assert faults.names() == ["evidence_budget_full"], faults.items
    m3 = s.manifest(A3)
    assert m3["state"] == "truncated" and 10 < m3["packets"] < 39
    assert s.used_bytes <= 120_000
    # What was recorded before the budget ran out is still served.
    assert len(dict(s.read(A3, range(1, 40)))) == m3["packets"]


def test_a_corrupt_segment_is_detected_by_its_hash_and_not_served(tmp_path):
    s, faults = store(tmp_path)
    s.begin(A1)
    record(s, A1, range(120))
    s.finish(A1)
    s.run_pending()
    seg = s.manifest(A1)["segments"][1]
    path = tmp_path / "evidence" / A1 / seg["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit-pattern in the middle: still parses
    path.write_bytes(bytes(data))
    got = dict(s.read(A1, range(120)))
    assert set(got) == set(range(120)) - set(range(seg["first_seq"], seg["last_seq"] + 1))
    assert faults.names() == ["evidence_corrupt"]


def test_restart_salvages_whole_records_of_the_open_segment_and_drops_the_torn_one(tmp_path):
    s, _ = store(tmp_path)
    s.begin(A1)
    sent = record(s, A1, range(75))  # segment 1 (seqs 50..74) is still open
    part = next((tmp_path / "evidence" / A1).glob("*.part"))
    s._incidents[A1].open.handle.flush()
    with open(part, "ab") as f:  # the kill came in the middle of the next record
        f.write(b"\x00\x00\x01\x00PB\x01")
    del s  # no close: as after kill -9
    s2, _ = store(tmp_path)
    m = s2.manifest(A1)
    assert m["state"] == "interrupted"
    assert [x["last_seq"] for x in m["segments"]] == [49, 74]
    got = dict(s2.read(A1, range(80)))
    assert sorted(got) == list(range(75)) and got[70] == sent[70]
    for seg in m["segments"]:
        data = (tmp_path / "evidence" / A1 / seg["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == seg["sha256"]
    # A new stream of the same alert (kiosk restarted mid-incident) goes on after the last
    # recorded seq, in the same recording: both runs are served and confirmed together.
    assert s2.last_seq(A1) == 74
    s2.begin(A1)
    resumed = record(s2, A1, range(200, 230))
    s2.finish(A1)
    s2.run_pending()
    m = s2.manifest(A1)
    assert m["state"] == "closed" and m["first_seq"] == 0 and m["last_seq"] == 229
    assert [x["file"] for x in m["segments"]] == ["seg-000000.bin", "seg-000001.bin",
                                                 "seg-000002.bin"]
    got = dict(s2.read(A1, [10, 74, 75, 199, 200, 229]))
    assert got == {10: sent[10], 74: sent[74], 200: resumed[200], 229: resumed[229]}
    assert [p.name for p in (tmp_path / "evidence").iterdir()] == [A1], "one recording"
    s2.confirm(A1)
    s2.run_pending()
    assert not any((tmp_path / "evidence").iterdir())
    assert s2.last_seq(A1) is None


def test_confirmed_leftovers_and_temp_files_are_cleaned_at_start(tmp_path):
    s, _ = store(tmp_path)
    s.begin(A1)
    record(s, A1, range(5))
    s.finish(A1)
    s.run_pending()
    manifest = tmp_path / "evidence" / A1 / MANIFEST
    m = json.loads(manifest.read_text())
    m["confirmed"] = True  # confirmed, then the power went before the delete
    manifest.write_text(json.dumps(m))
    (tmp_path / "evidence" / A2).mkdir()
    (tmp_path / "evidence" / A2 / MANIFEST).write_text("{not json")  # unreadable: kept
    s2, _ = store(tmp_path)
    assert not (tmp_path / "evidence" / A1).exists()
    assert (tmp_path / "evidence" / A2).exists()
    assert s2.used_bytes > 0


KILLED_WRITER = """
import sys, time
from pinkbutton.firmware.media.localstore import LocalStore
from tests.test_localstore import packet
store = LocalStore(sys.argv[1], 10**9, on_fault=lambda n, d: None, segment_packets=20)
store.begin(sys.argv[2])
seq = 0
while True:
    store.append(sys.argv[2], *packet(seq, size=2000))
    seq += 1
    time.sleep(0.001)
"""


def test_after_kill_9_every_served_segment_matches_its_hash(tmp_path):
    evidence = tmp_path / "evidence"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(evidence), A1], cwd=REPO)
    try:
        def sealed() -> int:
            try:
                return len(json.loads((evidence / A1 / MANIFEST).read_text())["segments"])
            except (OSError, ValueError):
                return 0

        wait_until(lambda: sealed() >= 5, timeout=30, what="five sealed segments")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    s, faults = store(tmp_path)
    m = s.manifest(A1)
    assert m["state"] == "interrupted" and len(m["segments"]) >= 5
    last = m["last_seq"]
    got = dict(s.read(A1, range(last + 1)))
    assert sorted(got) == list(range(last + 1)), "every recorded seq up to the kill is served"
    for seq in (0, last):
        assert got[seq] == packet(seq, size=2000)[2]
    assert faults.items == []
    time.sleep(0)  # nothing left running


def test_salvage_keeps_only_whole_packets_a_kill_between_two_chunks_drops_the_torn_packet(tmp_path):
    """A kill after the first chunk of a two-chunk keyframe reached the disk, before the second:
    each record is whole and valid, but the packet is not. Serving it would be evidence one
    chunk short; the salvage keeps the packets before it, whole, and drops the torn one."""
    s, _ = store(tmp_path)
    s.begin(A1)
    sent = record(s, A1, range(55))  # segment 1 (seqs 50..54) is still open
    _, _, keyframe = packet(60)
    assert len(keyframe) == 2
    part = next((tmp_path / "evidence" / A1).glob("*.part"))
    s._incidents[A1].open.handle.flush()
    with open(part, "ab") as f:  # chunk 0 of seq 60 written whole, chunk 1 never
        f.write(struct.pack(">I", len(keyframe[0])) + keyframe[0])
    del s  # no close: as after kill -9
    s2, faults = store(tmp_path)
    m = s2.manifest(A1)
    assert m["last_seq"] == 54 and s2.last_seq(A1) == 54, "the torn packet is not recorded"
    got = dict(s2.read(A1, range(70)))
    assert sorted(got) == list(range(55))
    assert all(got[seq] == sent[seq] for seq in got), "every served packet is whole"
    seg = m["segments"][-1]
    data = (tmp_path / "evidence" / A1 / seg["file"]).read_bytes()
    assert len(data) == seg["bytes"] and hashlib.sha256(data).hexdigest() == seg["sha256"]
    assert faults.items == []


def test_salvage_keeps_a_whole_multi_chunk_packet_at_the_end_of_the_torn_segment(tmp_path):
    s, _ = store(tmp_path)
    s.begin(A1)
    sent = record(s, A1, range(51))  # the open segment ends with seq 50, a two-chunk keyframe
    assert len(sent[50]) == 2
    s._incidents[A1].open.handle.flush()
    del s
    s2, _ = store(tmp_path)
    assert s2.last_seq(A1) == 50
    assert dict(s2.read(A1, [50])) == {50: sent[50]}


def test_unconfirmed_evidence_is_listed_as_pending_across_a_restart_until_confirmed(tmp_path):
    """What the heartbeat reports (`evidence_pending`): every incident the room has not
    confirmed, oldest first, kept across a restart; a confirmed one is deleted and gone."""
    s, _ = store(tmp_path)
    for alert_id in (A1, A2, A3):
        s.begin(alert_id)
        record(s, alert_id, range(5))
        s.finish(alert_id)
        s.run_pending()
    assert s.pending() == [A1, A2, A3] and s.pending(limit=2) == [A1, A2]
    s.confirm(A2)
    s.run_pending()
    assert s.pending() == [A1, A3]
    s.close()
    again, _ = store(tmp_path)
    assert again.pending() == [A1, A3]
    assert sorted(p.name for p in (tmp_path / "evidence").iterdir() if p.is_dir()) == [A1, A3]
    again.close()
