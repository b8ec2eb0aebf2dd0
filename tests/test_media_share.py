"""Media follows its incident in a share group (issue 13, item 5): several receivers share
one group, one incident store and one evidence store. Whichever receiver takes the alert and
whichever gets the kiosk's `stream_end`, the incident's evidence is recorded once, by its
owner, and confirmed complete; the owner killed mid-incident, another receiver takes it over
and the kiosk's backfill fills in what the dead one had not written. Real mosquitto, real
SQLite, real PyAV; only camera and microphone are fake."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest
from pinkbutton.tools.controlroom.backfill import RECORD

from tests.fault_helpers import state_dir
from tests.helpers import RunningKiosk, wait_until, write_kiosk_config
from tests.test_e2e_alert import RunningRoom
from tests.test_evidence import ffmpeg_errors

pytestmark = [pytest.mark.broker]

DEVICE = "pb-test-0003"


def media_config(cfg: Path, preroll_s: float = 1.0) -> None:
    with cfg.open("a") as f:
        f.write(f"\n[media]\nwidth = 320\nheight = 240\nfps = 5.0\nvideo_kbps = 100\n"
                f"preroll_s = {preroll_s}\n")


def log_records(path: Path) -> list[int]:
    """Every record's seq in a packet log, in file order, duplicates included (PacketLog
    itself keeps the first of each)."""
    data, seqs, at = path.read_bytes(), [], 0
    while at + RECORD.size <= len(data):
        seq, _stream, _flags, _cap, _pts, _dur, length = RECORD.unpack_from(data, at)
        at += RECORD.size + length
        if at > len(data):
            raise AssertionError(f"{path.name}: torn record at seq {seq}")
        seqs.append(seq)
    assert at == len(data), f"{path.name}: {len(data) - at} trailing bytes"
    return seqs


def evidence_files(evidence: Path, alert_id: str) -> list[str]:
    return sorted(p.name for p in evidence.glob(f"*{alert_id}*"))


def assert_confirmed_once(evidence: Path, device: str, alert_id: str, seq_count: int) -> dict:
    """One live file, one packet log holding every seq exactly once, the complete file and
    its manifest: 0 missing, the manifest's hash is the file's."""
    import hashlib

    base = f"{device}-{alert_id}"
    files = evidence_files(evidence, alert_id)
    assert f"{base}.complete.mp4" in files and f"{base}.complete.json" in files, files
    records = log_records(evidence / f"{base}.packets")
    assert sorted(records) == list(range(seq_count)), (
        f"packet log: {len(records)} records for {seq_count} seqs, "
        f"{len(records) - len(set(records))} written twice")
    manifest = json.loads((evidence / f"{base}.complete.json").read_text())
    assert manifest["gaps"] == [] and manifest["packets"] == seq_count, manifest
    digest = hashlib.sha256((evidence / f"{base}.complete.mp4").read_bytes()).hexdigest()
    assert manifest["sha256"] == digest
    assert ffmpeg_errors(evidence / f"{base}.complete.mp4") == ""
    return manifest


@pytest.mark.timeout(90)
def test_two_receivers_in_a_share_group_record_and_confirm_an_incident_once(
        tmp_path, pki_dir, broker):
    """The defect (before evidence owners): media is not shared, so both receivers saw it;
    with one store both wrote the incident's evidence (the same live file, every packet twice
    in one packet log), and `stream_end` went to either receiver. Now the receiver that took
    the alert owns the evidence and gets `stream_end` over its direct events subscription;
    the other feeds its live view only."""
    group, db, evidence = f"share-{secrets.token_hex(3)}", tmp_path / "room.db", \
        tmp_path / "evidence"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, DEVICE, alert={"stream_s": 4.0})
    media_config(cfg)
    from pinkbutton.tools.controlroom.web.live import LiveHub

    rooms = [RunningRoom(pki_dir, broker, db, evidence_dir=evidence, group=group,
                         client_id=f"{group}-{n}") for n in "ab"]
    hubs = []
    for room in rooms:  # each receiver's live view (the console's LiveHub), whoever records
        room.receiver.viewer = LiveHub()
        hubs.append(room.receiver.viewer)
        # Not a takeover test (see below): a receiver stalled by a loaded host must not lose
        # its lease here.
        room.receiver.evidence_lease_s = 60.0
    with rooms[0] as a, rooms[1] as b:
        time.sleep(0.3)  # both share-group SUBACKs in
        with RunningKiosk(cfg, media=True) as kiosk:
            kiosk.events.wait_for("connected")
            time.sleep(1.5)  # a pre-roll
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            stream_end = kiosk.events.wait_for("stream_end", timeout=30)
            local = state_dir(tmp_path, DEVICE) / "evidence" / alert_id
            took = [n for n, r in (("a", a), ("b", b))
                    if any(d["alert_id"] == alert_id and d["new"] for d in r.events.of("alert"))]
            confirmed = wait_until(
                lambda: [n for n, r in (("a", a), ("b", b)) for d in r.events.of(
                    "evidence_complete") if d["alert_id"] == alert_id and d["final"]],
                timeout=30, what="the evidence confirmed")
            wait_until(lambda: not local.exists(), timeout=15,
                       what="the kiosk deleted its confirmed evidence")
            time.sleep(1.0)  # a second confirmation (or a second writer) would show by now
            got_end = [n for n, r in (("a", a), ("b", b))
                       if any(d["kind"] == "stream_end" for d in r.events.of("event"))]
            print(f"alert taken by {took}, stream_end shown by {got_end}")
            for hub in hubs:
                assert hub.flush()
            live = [hub.stats(alert_id) for hub in hubs]
    print(f"live views: {live}")
    for stats in live:  # both live views were fed and ended, the recorder's and the other's
        assert stats["fragments"] > 0 and stats["ended"], live
    print(f"confirmed by {confirmed}; files {evidence_files(evidence, alert_id)}")
    assert len(confirmed) == 1, confirmed
    base = f"{DEVICE}-{alert_id}"
    assert evidence_files(evidence, alert_id) == sorted(
        [f"{base}.mp4", f"{base}.packets", f"{base}.complete.mp4", f"{base}.complete.json"])
    assert_confirmed_once(evidence, DEVICE, alert_id, stream_end["seq_count"])


@pytest.mark.timeout(120)
def test_owner_killed_mid_incident_the_other_receiver_completes_the_evidence(
        tmp_path, pki_dir, broker):
    """The receiver that took the alert (a `pinkbutton-controlroom run` process) records the
    evidence; it is killed with SIGKILL mid-stream. The other receiver of the group, which
    had only been standing by, takes the incident over once the owner's lease runs out,
    continues its packet log, and the kiosk's backfill fills in what nobody wrote while the
    owner was dead: complete, 0 missing, confirmed, the kiosk's copy deleted."""
    import signal
    import subprocess
    import sys

    from tests.test_controlroom import ROOT, LineReader

    group, db, evidence = f"kill-{secrets.token_hex(3)}", tmp_path / "room.db", \
        tmp_path / "evidence"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, DEVICE, alert={"stream_s": 12.0})
    media_config(cfg)
    victim = subprocess.Popen(
        [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run", "--host", "localhost",
         "--port", str(broker.port), "--pki", str(pki_dir), "--db", str(db), "--evidence",
         str(evidence), "--auto-ack", "--client-id", f"{group}-dead", "--group", group,
         "--exit-after", "110"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        out, err = LineReader(victim.stdout), LineReader(victim.stderr)
        err.wait_for("connected to broker", timeout=30)
        with RunningKiosk(cfg, media=True) as kiosk:
            kiosk.events.wait_for("connected")
            time.sleep(1.5)  # a pre-roll
            kiosk.press()  # the victim is the only receiver yet: it takes the alert
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            out.wait_for(f"ALERT  {DEVICE}", timeout=10)
            from pinkbutton.tools.controlroom.store import IncidentStore

            shared = IncidentStore(db)  # the victim stored the alert and claimed its evidence
            try:
                owner = wait_until(lambda: shared.evidence_owner(alert_id), timeout=10,
                                   what="the victim's claim")
            finally:
                shared.close()
            assert owner[0] == f"{group}-dead"
            with RunningRoom(pki_dir, broker, db, evidence_dir=evidence, group=group,
                             client_id=f"{group}-live") as survivor:
                survivor.events.wait_for("connected")
                time.sleep(2.5)  # the victim records; the survivor stands by
                packets = evidence / f"{DEVICE}-{alert_id}.packets"
                before = len(log_records(packets)) if packets.exists() else 0
                assert before > 0, "the owner was recording"
                assert survivor.events.of("first_media") == [], "the survivor did not record"
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                killed = time.monotonic()
                taken = survivor.events.wait_for("evidence_taken_over",
                                                 lambda d: d["alert_id"] == alert_id,
                                                 timeout=20)
                took_s = time.monotonic() - killed
                stream_end = kiosk.events.wait_for("stream_end", timeout=30)
                complete = survivor.events.wait_for(
                    "evidence_complete", lambda d: d["alert_id"] == alert_id and d["final"],
                    timeout=45)
                local = state_dir(tmp_path, DEVICE) / "evidence" / alert_id
                wait_until(lambda: not local.exists(), timeout=15,
                           what="the kiosk deleted its confirmed evidence")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    seq_count = stream_end["seq_count"]
    print(f"owner killed after {before} packets; taken over {took_s:.1f} s later "
          f"({taken['events']} events kept); {seq_count} packets, backfilled "
          f"{complete['backfilled']}")
    assert complete["gaps"] == [] and complete["backfilled"] > 0, complete
    assert_confirmed_once(evidence, DEVICE, alert_id, seq_count)
    base = f"{DEVICE}-{alert_id}"
    assert f"{base}.part2.mp4" in evidence_files(evidence, alert_id), "the survivor's live part"
    assert any("taken over" in line for line in survivor.lines)


def test_evidence_owner_lease_in_the_store(db_target):
    """The store's evidence_owners row (SQLite file, then PostgreSQL): the first claim wins,
    a running lease is respected, an expired one is taken, a renewal keeps it, a confirmed
    one is never taken again."""
    from pinkbutton.tools.controlroom.store import IncidentStore

    a, b = IncidentStore(db_target), IncidentStore(db_target)
    try:
        assert b.claim_evidence("x", "b", 100.0, 5.0, take_absent=False) == "absent"
        assert a.claim_evidence("x", "a", 100.0, 5.0) == "mine"
        assert b.claim_evidence("x", "b", 104.0, 5.0) == "other"
        assert a.renew_evidence(["x", "y"], "a", 104.0, 5.0) == {"x"}
        assert b.claim_evidence("x", "b", 108.9, 5.0) == "other", "renewed until 109"
        assert b.claim_evidence("x", "b", 109.1, 5.0) == "mine", "expired: taken over"
        assert a.renew_evidence(["x"], "a", 109.2, 5.0) == set(), "a learns it lost it"
        assert a.claim_evidence("x", "a", 110.0, 5.0) == "other"
        b.finish_evidence("x", "b")
        assert a.claim_evidence("x", "a", 1000.0, 5.0) == "done"
        assert b.evidence_owner("x") == ("b", 114.1, True)
    finally:
        a.close()
        b.close()


def test_three_receivers_one_owner_a_stalled_owner_is_replaced_and_stops_writing(
        tmp_path, pki_dir):
    """Three receivers on one store and one evidence directory, driven message by message on
    one fake clock (no broker: each gets what the broker would give it). The alert's
    receiver owns the evidence; the others stand by. The owner stalls past its lease: one
    other receiver (exactly one) takes the incident over and continues the packet log; the
    stalled owner, back, finds its lease gone and writes nothing more. The evidence is
    completed once, every seq once in the packet log."""
    from pinkbutton.firmware import protocol as p
    from pinkbutton.firmware import transport as t
    from pinkbutton.hal.clock import FakeClock, iso8601
    from pinkbutton.tools.controlroom.receiver import EVIDENCE_EVENTS_ID, ControlRoomReceiver

    from tests.helpers import Recorder, room_tls
    from tests.test_backfill import envelopes
    from tests.test_controlroom import make_alert
    from tests.test_evidence import encode_audio, encode_video

    clock, db, evidence = FakeClock(), tmp_path / "room.db", tmp_path / "evidence"
    rooms, events = {}, {}
    for n in "abc":
        events[n] = Recorder()
        rooms[n] = ControlRoomReceiver(
            host="localhost", port=1, tls=room_tls(pki_dir), db_path=db, client_id=f"room-{n}",
            evidence_dir=evidence, clock=clock, out=lambda _line: None, listeners=[events[n]])
    try:
        alert = make_alert(DEVICE, seq=1)
        aid = alert.alert_id
        rooms["a"]._handle(t.Message(p.topic(DEVICE, "alert"), p.encode_alert(alert), False))
        media = sorted(encode_video(frames=30) + encode_audio()[:100],
                       key=lambda x: (x.pts_us, x.stream))
        msgs = envelopes(media)
        count, half = len(msgs), len(msgs) // 2

        def feed(names: str, seqs: range) -> None:
            for seq in seqs:
                for m in msgs[seq]:
                    for n in names:
                        rooms[n]._handle(t.Message(p.media_topic(DEVICE, aid), m, False))

        def leases(names: str) -> None:
            for n in names:
                rooms[n]._evidence_leases()

        feed("abc", range(half))
        clock.advance(1.0)
        leases("abc")
        assert rooms["a"].store.evidence_owner(aid)[0] == "room-a"
        assert [rooms[n]._role[aid] for n in "abc"] == ["mine", "other", "other"]
        records = log_records(evidence / f"{DEVICE}-{aid}.packets")
        assert sorted(records) == list(range(half)), "the owner alone wrote"

        clock.advance(6.0)  # room-a stalls past its 5 s lease
        leases("bc")
        taken = [n for n in "bc" if events[n].of("evidence_taken_over")]
        assert len(taken) == 1, taken
        new = taken[0]
        feed("bc", range(half, count))
        leases("a")  # room-a is back: its lease is gone
        assert rooms["a"]._role[aid] == "other" and not rooms["a"].recorder.is_open(aid)
        feed("a", range(half, count))  # what it still gets, it does not write
        end = p.DeviceEvent(DEVICE, "stream_end", iso8601(clock.wall()),
                            {"alert_id": aid, "seq_count": count})
        for n in "abc":  # the direct copy, to every receiver
            rooms[n]._handle(t.Message(p.topic(DEVICE, "events"), p.encode_event(end), False,
                                       (EVIDENCE_EVENTS_ID,)))
        clock.advance(1.5)
        for n in "abc":
            rooms[n].backfill.tick(force=True)
        done = [n for n in "abc" for d in events[n].of("evidence_complete") if d["final"]]
        assert done == [new], done
        assert sorted(log_records(evidence / f"{DEVICE}-{aid}.packets")) == list(range(count))
        assert rooms["a"].store.evidence_owner(aid)[0] == f"room-{new}"
        assert rooms["a"].store.evidence_owner(aid)[2], "done: never taken again"
        leases("abc")
        clock.advance(10.0)
        leases("abc")
        assert all(not events[n].of("evidence_taken_over") for n in "abc" if n != new)
    finally:
        for room in rooms.values():
            room.recorder.close_all()
            room.backfill.close_all()
            room.store.close()
