"""SeqLease (firmware/media/seqlease.py): a stream resumed after a kiosk restart goes on
after every seq the earlier run could have sent, on the same media timeline."""

from __future__ import annotations

import json

from pinkbutton.firmware.media.envelope import decode_envelope
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.firmware.media.sender import MediaSender
from pinkbutton.firmware.media.seqlease import BLOCK, RESUME_PTS_MARGIN_US, SeqLease
from pinkbutton.hal.clock import FakeClock

A1 = "11111111-1111-4111-8111-111111111111"
A2 = "22222222-2222-4222-8222-222222222222"


def lease(path, alert_id=A1, clock=None, boot="boot-1", faults=None) -> SeqLease:
    return SeqLease(path, alert_id, clock=clock or FakeClock(), boot_id=boot,
                    on_fault=(lambda n, d: faults.append((n, d))) if faults is not None
                    else (lambda n, d: None))


def test_fresh_stream_starts_at_zero_and_reserves_a_block_ahead(tmp_path):
    path = tmp_path / "seq.json"
    first = lease(path)
    start = first.resume()
    assert (start.first_seq, start.resumed, start.skipped, start.origin_us) == (0, False, None,
                                                                                 None)
    first.reserve(0, 7_000_000, 0)
    assert json.loads(path.read_text())["next_seq"] == BLOCK
    before = path.read_bytes()
    for seq in range(1, BLOCK // 2):
        first.reserve(seq, 7_000_000, seq * 20_000)
    assert path.read_bytes() == before, "one write per half block, not per packet"
    first.reserve(BLOCK // 2, 7_000_000, 99)
    rec = json.loads(path.read_text())
    assert rec["next_seq"] == BLOCK // 2 + BLOCK and rec["last_seq"] == BLOCK // 2 - 1
    assert rec["alert_id"] == A1 and rec["origin_us"] == 7_000_000 and rec["boot_id"] == "boot-1"


def test_restart_goes_on_after_everything_the_earlier_run_could_have_sent(tmp_path):
    path = tmp_path / "seq.json"
    run1 = lease(path)
    run1.resume()
    for seq in range(600):
        run1.reserve(seq, 7_000_000, seq)
    bound = json.loads(path.read_text())["next_seq"]  # 512 + BLOCK
    # Killed: the evidence store holds up to seq 590 (recording runs ahead of sending).
    start = lease(path).resume(recorded_last=590)
    assert start.first_seq == bound and start.resumed
    assert start.skipped == (591, bound - 1)
    assert start.origin_us == 7_000_000, "same boot: the same media origin"
    assert start.origin_for(123, FakeClock()) == 7_000_000
    # The store may hold more than the record reserved (it records before publishing).
    assert lease(path).resume(recorded_last=bound + 40).first_seq == bound + 41
    # Restarting the stream in the same process: the old sender's count is a floor.
    assert lease(path).resume(seq_floor=bound + 7).first_seq == bound + 7


def test_the_resumed_run_writes_its_record_before_its_first_seq_goes_out(tmp_path):
    path = tmp_path / "seq.json"
    run1 = lease(path)
    run1.resume()
    run1.reserve(0, 5, 0)
    run2 = lease(path)
    start = run2.resume(recorded_last=10)
    run2.reserve(start.first_seq, 5, 10)
    assert json.loads(path.read_text())["next_seq"] == start.first_seq + BLOCK
    # A third run after a kill of the second never reuses the second's seqs.
    assert lease(path).resume(recorded_last=10).first_seq == start.first_seq + BLOCK


def test_a_record_of_another_alert_or_a_damaged_one_is_ignored(tmp_path):
    path = tmp_path / "seq.json"
    other = lease(path, A2)
    other.resume()
    other.reserve(0, 5, 0)
    assert lease(path).resume().first_seq == 0
    start = lease(path).resume(recorded_last=50)  # recorded, never published: no record
    assert (start.first_seq, start.resumed, start.skipped, start.origin_us) == (51, True, None,
                                                                                 None)
    path.write_text("{torn")
    assert lease(path).resume().first_seq == 0


def test_after_a_reboot_the_wall_clock_maps_the_new_run_onto_the_incidents_timeline(tmp_path):
    path = tmp_path / "seq.json"
    clock = FakeClock(start=1000.0, wall_start=1_800_000_000.0)
    run1 = lease(path, clock=clock, boot="boot-1")
    run1.resume()
    origin = int(990.0 * 1e6)  # pre-roll began 10 s before "now"
    run1.reserve(0, origin, 0)
    run1.reserve(BLOCK // 2, origin, 12_000_000)  # last pts the record knows: 12 s
    # Power cut; the Pi boots again 40 s later (wall) with its monotonic clock near zero.
    later = FakeClock(start=30.0, wall_start=1_800_000_040.0)
    start = lease(path, clock=later, boot="boot-2").resume()
    assert start.origin_us is None and start.origin_wall is not None
    first_capture = int(28.0 * 1e6)  # 2 s of new pre-roll
    origin2 = start.origin_for(first_capture, later)
    # Captured at wall 1_800_000_038 = 48 s after the origin's wall time.
    assert first_capture - origin2 == 48_000_000
    # An RTC that lost its battery: the wall clock says 1970; pts still go on rising.
    broken = FakeClock(start=30.0, wall_start=100.0)
    start = lease(path, clock=broken, boot="boot-2").resume()
    assert first_capture - start.origin_for(first_capture, broken) == (
        12_000_000 + RESUME_PTS_MARGIN_US)


def test_a_record_that_cannot_be_written_is_one_fault_and_the_stream_goes_on(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    faults: list = []
    bad = lease(tmp_path / "file" / "seq.json", faults=faults)
    bad.resume()
    for seq in range(3 * BLOCK):
        bad.reserve(seq, 0, seq)
    assert [name for name, _ in faults] == ["media_seq_record_failed"]


def video(t_us: int, key: bool) -> EncodedPacket:
    return EncodedPacket(Stream.VIDEO, b"v" * 100, t_us, 66_667, key)


def test_sender_resumes_seqs_origin_and_reserves_before_each_publish(tmp_path):
    published: list[bytes] = []
    reserved: list[tuple[int, int, int]] = []

    def publish(topic, payload, qos):
        # The record must already cover this seq when it goes out.
        assert reserved and reserved[-1][0] == decode_envelope(payload).seq
        published.append(payload)
        return len(published)

    sender = MediaSender(publish, "t", clock=FakeClock(), start_thread=False, first_seq=1500,
                         origin_for=lambda capture: 1_000_000, resumed=True,
                         reserve=lambda *a: reserved.append(a))
    sender.submit(video(4_000_000, True), True)  # the new run's buffered seconds
    sender.submit(video(4_066_667, False), False)
    sender.pump()
    envs = [decode_envelope(m) for m in published]
    assert [e.seq for e in envs] == [1500, 1501]
    assert [e.pts_us for e in envs] == [3_000_000, 3_066_667], "on the incident's timeline"
    assert not any(e.preroll for e in envs), "captured after the press: not pre-roll"
    assert reserved == [(1500, 1_000_000, 3_000_000), (1501, 1_000_000, 3_066_667)]
    assert sender.stats().seq_count == 1502
