"""Fault injection (issue 5): real mosquitto over mTLS, real SQLite, real processes.

Each test breaks one thing a kiosk meets in the field (power loss mid-send, a broker
crash, a stalled or slow link, a full or corrupt SD card, a clock step, a control room
restart) and checks the outcome that matters: the alert arrives, once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path

import av
import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.media.packet import Stream
from pinkbutton.firmware.outbox import Outbox
from pinkbutton.hal.base import Pattern
from pinkbutton.hal.stamp import read_stamp
from pinkbutton.tools.controlroom.backfill import PacketLog
from pinkbutton.tools.controlroom.media import ffprobe_summary
from pinkbutton.tools.controlroom.store import IncidentStore

from harness.netproxy import ThrottleProxy
from tests.fault_helpers import (
    ClockedKiosk,
    SimProcess,
    SkewClock,
    fill_disk,
    limit_file_size,
    pending_ids,
    small_tmpfs,
    state_dir,
    tune_config,
)
from tests.helpers import RunningKiosk, wait_until, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.timeout(60)]

DEVICE = "pb-test-0001"


def incidents_in(db) -> list:
    store = IncidentStore(db)
    try:
        return store.all_incidents()
    finally:
        store.close()


def is_help_coming(d: dict) -> bool:
    return d["pattern"] == "help_coming"


# -- 1. device killed between "alert committed" and PUBACK -----------------------------


def test_device_killed_before_puback_delivers_once_after_restart(tmp_path, pki_dir, fresh_broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE)
    outbox = state_dir(tmp_path, DEVICE) / "outbox.db"
    db = tmp_path / "room.db"
    with RunningRoom(pki_dir, fresh_broker, db, auto_ack=True) as room:
        with SimProcess(cfg, "--press-after", "2.5") as sim:
            sim.events.wait_for("connected", timeout=10)
            # SIGSTOP: connections stay up, the alert goes onto the wire, no PUBACK ever.
            fresh_broker.pause()
            try:
                persisted = sim.events.wait_for("persisted", timeout=10)
                sim.events.wait_for("alert_sent", timeout=2)
                time.sleep(0.2)  # past the fsync: the light says "sending"
                assert sim.events.of("delivered") == []
                sim.kill9()
            finally:
                fresh_broker.resume()
        alert_id = persisted["alert_id"]
        assert pending_ids(outbox) == [alert_id], "the committed alert must survive kill -9"
        # The broker may still route the orphaned PUBLISH to the room: the replay then
        # is a duplicate the room must fold into the same incident.
        with SimProcess(cfg, "--exit-after", "6") as sim:
            rc = sim.wait(20)
            assert rc == 0, sim.stderr()
        wait_until(
            lambda: room.receiver.store.incident(alert_id), timeout=5, what="incident stored"
        )
    replay = sim.events.of("replay")
    assert replay and replay[0]["count"] == 1, sim.events.items
    assert [d["alert_id"] for d in sim.events.of("receipt")] == [alert_id]
    assert sim.events.of("persisted") == [], "a replay must not create a second alert"
    assert sim.events.wait_for("indicator", is_help_coming, timeout=0)
    assert [i.alert_id for i in incidents_in(db)] == [alert_id]
    assert pending_ids(outbox) == []


# -- 2. broker kill -9 and restart mid-stream ------------------------------------------


@pytest.mark.timeout(120)
def test_broker_killed_mid_stream_alert_and_stream_resume(tmp_path, pki_dir, fresh_broker):
    """...and the media lost in the outage is backfilled from the kiosk's disk: the room's
    complete evidence has every seq, in order (issue 5 item 2)."""
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE)
    db, evidence = tmp_path / "room.db", tmp_path / "evidence"
    with (
        RunningRoom(pki_dir, fresh_broker, db, auto_ack=True, evidence_dir=evidence) as room,
        RunningKiosk(cfg, media=True) as kiosk,
    ):
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        kiosk.events.wait_for("indicator", is_help_coming)
        room.events.wait_for("media", lambda d: d["alert_id"] == alert_id and not d["preroll"])
        time.sleep(2.0)
        fresh_broker.kill()
        kiosk.events.wait_for("disconnected", timeout=5)
        time.sleep(3.0)  # long enough for the sender's drop policy to shed media
        restart_us = int(kiosk.clock.monotonic() * 1e6)
        fresh_broker.start()
        wait_until(
            lambda: len(kiosk.events.of("connected")) >= 2, timeout=10, what="kiosk reconnected"
        )
        room.events.wait_for(
            "media",
            lambda d: d["alert_id"] == alert_id and d["capture_us"] > restart_us,
            timeout=15,
        )
        assert kiosk.kiosk.state.mode == "acknowledged", "the stream must still be running"
        room.receiver.command(f"end {alert_id}")
        summary = room.events.wait_for("evidence", timeout=15)
        inc = wait_until(lambda: room.receiver.store.incident(alert_id), timeout=5)
        assert inc.acked_at is not None
        assert [i.alert_id for i in room.receiver.store.all_incidents()] == [alert_id]
        complete = room.events.wait_for(
            "evidence_complete", lambda d: d["alert_id"] == alert_id, timeout=45
        )
        local = state_dir(tmp_path, DEVICE) / "evidence" / alert_id
        wait_until(lambda: not local.exists(), timeout=10, what="kiosk deleted confirmed evidence")
        stream_end = kiosk.events.wait_for("stream_end")
    print(f"evidence after a broker kill: live {summary}; complete {complete}")
    assert all(a <= b for a, b in summary["gaps"]), summary["gaps"]
    assert summary["duration_s"] > 2.0, summary
    check_complete_evidence(complete, stream_end["seq_count"], summary["gaps"])
    manifest = json.loads(Path(complete["manifest"]).read_text())
    assert manifest["duration_s"] >= summary["duration_s"] - 0.1, "no shorter than the live file"
    line = f"evidence for {alert_id} complete: {stream_end['seq_count']} packets, 0 gaps"
    assert any(x.startswith(line) for x in room.lines), room.lines[-5:]


def check_complete_evidence(complete: dict, seq_count: int, live_gaps: list) -> None:
    """The complete file holds every seq 0..seq_count-1 in order: checked in the room's
    packet log, its manifest's SHA-256, ffprobe, and the timestamps drawn into the frames."""
    path, manifest = Path(complete["path"]), json.loads(Path(complete["manifest"]).read_text())
    assert complete["gaps"] == [] and manifest["gaps"] == []
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["packets"] == seq_count and manifest["last_seq"] == seq_count - 1
    # The sender's drop policy and the outage left holes in the live stream; backfill
    # filled exactly those.
    lost_live = sum(b - a + 1 for a, b in live_gaps)
    assert lost_live > 0, "the outage should have cost the live stream some packets"
    assert complete["backfilled"] >= lost_live, (complete["backfilled"], lost_live)
    log = PacketLog(path.parent / manifest["packet_log"])
    try:
        packets = list(log.in_order())
    finally:
        log.close()
    assert [rp.seq for rp in packets] == list(range(seq_count)), "a seq is missing"
    info = ffprobe_summary(path)
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "opus"
    first_key = next(rp.seq for rp in packets if rp.packet.stream is Stream.VIDEO
                     and rp.packet.keyframe)
    video = [rp.packet.pts_us for rp in packets
             if rp.packet.stream is Stream.VIDEO and rp.seq >= first_key]
    stamps = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            stamps.append(read_stamp(frame.to_ndarray(format="gray")))
    assert len(stamps) == len(video), "every video packet decodes into one frame"
    readable = [(s, v) for s, v in zip(stamps, video, strict=True) if s is not None]
    assert len(readable) >= 0.8 * len(stamps), "drawn timestamps must survive H.264"
    assert all(s == v for s, v in readable), "a frame is not the packet of its seq"
    steps = [b - a for (a, _), (b, _) in zip(readable, readable[1:], strict=False)]
    assert all(step > 0 for step in steps), "frames out of order or duplicated"


# -- 2b. kiosk kill -9 mid-incident: the resumed stream joins the same evidence ----------


@pytest.mark.timeout(150)
def test_kiosk_killed_mid_incident_evidence_spans_both_runs(tmp_path, pki_dir, fresh_broker):
    """A kiosk process killed mid-stream resumes the incident when it starts again: its new
    stream goes on after the first run's seqs and on its media timeline, so the room's live
    and complete evidence hold frames captured before the kill and after the restart, in
    order, and the evidence still completes (the kiosk deletes its local copy)."""
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE)
    db, evidence = tmp_path / "room.db", tmp_path / "evidence"
    local_root = state_dir(tmp_path, DEVICE) / "evidence"
    with RunningRoom(pki_dir, fresh_broker, db, auto_ack=False, evidence_dir=evidence) as room:
        # The kiosk resumes an incident after a restart while the room's receipt has not
        # reached it (firmware/app.py _replay_outbox): the receipts are lost until the kill.
        lose_receipts = lose_room_commands(room.receiver, "receipt")
        with SimProcess(cfg, "--press-after", "1", media=True) as first:
            alert_id = first.events.wait_for("persisted", timeout=20)["alert_id"]
            room.events.wait_for("media", lambda d: d["alert_id"] == alert_id
                                 and not d["preroll"], timeout=20)
            time.sleep(3.0)
            killed_us = int(time.monotonic() * 1e6)  # CLOCK_MONOTONIC: the kiosk's clock
            first.kill9()
        assert first.events.of("receipt") == [] and lose_receipts.lost, "receipt got through"
        lose_receipts.clear()
        seen_before = max(d["seq"] for d in room.events.of("media")
                          if d["alert_id"] == alert_id)
        with SimProcess(cfg, media=True) as second:
            assert second.events.wait_for("replay", timeout=20)["count"] == 1
            after = room.events.wait_for(
                "media", lambda d: d["alert_id"] == alert_id and d["capture_us"] > killed_us,
                timeout=30,
            )
            assert after["seq"] > seen_before, "the resumed stream must not reuse seqs"
            time.sleep(3.0)
            room.receiver.command(f"end {alert_id}")
            stream_end = second.events.wait_for("stream_end", timeout=15)
            live = room.events.wait_for("evidence", timeout=15)
            complete = room.events.wait_for(
                "evidence_complete", lambda d: d["alert_id"] == alert_id, timeout=60
            )
            wait_until(lambda: not (local_root / alert_id).exists(), timeout=15,
                       what="kiosk deleted its confirmed local evidence")
        assert [i.alert_id for i in room.receiver.store.all_incidents()] == [alert_id]
    print(f"kiosk restart: stream_end {stream_end}; live {live}; complete {complete}")
    seq_count = stream_end["seq_count"]
    assert seq_count > after["seq"]
    # Every seq is in the complete evidence, except those the restarted kiosk skipped.
    assert complete["gaps"] == [] and len(complete["skipped"]) == 1, complete
    (skip_a, skip_b), = complete["skipped"]
    assert seen_before < skip_a <= skip_b < after["seq"]
    manifest = json.loads(Path(complete["manifest"]).read_text())
    assert manifest["sha256"] == hashlib.sha256(Path(complete["path"]).read_bytes()).hexdigest()
    assert manifest["last_seq"] == seq_count - 1 and manifest["gaps"] == []
    log = PacketLog(Path(complete["path"]).parent / manifest["packet_log"])
    try:
        packets = list(log.in_order())
    finally:
        log.close()
    assert [rp.seq for rp in packets] == [
        s for s in range(seq_count) if not skip_a <= s <= skip_b
    ]
    # Both runs on one media timeline: every video packet becomes a frame of the file (the
    # muxer drops a packet whose pts does not rise), and the drawn capture times rise.
    video = [rp for rp in packets if rp.packet.stream is Stream.VIDEO]
    stamps = drawn_stamps(Path(complete["path"]))
    assert len(stamps) >= 0.8 * len(video), (len(stamps), len(video))
    assert sum(1 for _ in decoded_frames(Path(complete["path"]))) == len(video)
    check_spans_restart(stamps, killed_us, "complete file")
    # The live file (as streamed) has the resumed media too.
    live_stamps = drawn_stamps(Path(live["path"]))
    check_spans_restart(live_stamps, killed_us, "live file")
    resumed_live = [s for s in live_stamps if s > killed_us]
    resumed_sent = [rp for rp in video if rp.packet.pts_us > killed_us]
    assert len(resumed_live) >= 0.8 * len(resumed_sent), (len(resumed_live), len(resumed_sent))
    for path in (Path(live["path"]), Path(complete["path"])):
        info = ffprobe_summary(path)
        assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "opus", info


def check_spans_restart(stamps: list[int], killed_us: int, what: str) -> None:
    before = [s for s in stamps if s < killed_us]
    resumed = [s for s in stamps if s > killed_us]
    assert len(before) >= 15 and len(resumed) >= 15, (what, len(before), len(resumed))
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False)), f"{what}: out of order"


class lose_room_commands:  # noqa: N801 - reads as what it does
    """Fault injection: the room's `kinds` commands are lost on their way to the kiosk
    (counted in `lost`) until `clear()`."""

    def __init__(self, receiver, *kinds: str) -> None:
        self.kinds, self.lost = set(kinds), 0
        self._send = send = receiver._send

        def lossy(kind, *args, **kw):
            if kind in self.kinds:
                self.lost += 1
                return None
            return send(kind, *args, **kw)

        receiver._send = lossy

    def clear(self) -> None:
        self.kinds = set()


def decoded_frames(path: Path):
    with av.open(str(path)) as container:
        yield from container.decode(video=0)


def drawn_stamps(path: Path) -> list[int]:
    """The capture times drawn into the decodable frames of an evidence file, in file order."""
    stamps = (read_stamp(f.to_ndarray(format="gray")) for f in decoded_frames(path))
    return [s for s in stamps if s is not None]


# -- 3. black hole and slow link through a loopback proxy ------------------------------


def proxied_config(tmp_path, pki_dir, proxy, **alert):
    cfg = write_kiosk_config(tmp_path, pki_dir, proxy.port, DEVICE, alert=alert or None)
    return tune_config(cfg, keepalive_s=2, connect_timeout_s=2.0)


def test_black_hole_is_detected_and_alert_delivered_after(tmp_path, pki_dir, fresh_broker):
    db = tmp_path / "room.db"
    with (
        ThrottleProxy("127.0.0.1", fresh_broker.port) as proxy,
        RunningRoom(pki_dir, fresh_broker, db, auto_ack=True) as room,
    ):
        cfg = proxied_config(tmp_path, pki_dir, proxy)
        with RunningKiosk(cfg) as kiosk:
            kiosk.events.wait_for("connected")
            time.sleep(0.3)  # subscription to cmd acknowledged
            proxy.blackhole(True)
            started = time.monotonic()
            wait_until(
                lambda: kiosk.events.of("disconnected") or kiosk.events.of("connect_failed"),
                timeout=3 * 2 + 1,
                what="dead link noticed",
            )
            noticed_s = time.monotonic() - started
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "sending")
            assert kiosk.indicator.pattern == Pattern.SENDING
            proxy.blackhole(False)
            kiosk.events.wait_for("delivered", timeout=15)
            kiosk.events.wait_for("receipt", timeout=10)
            kiosk.events.wait_for("indicator", is_help_coming, timeout=10)
            inc = wait_until(lambda: room.receiver.store.incident(alert_id), timeout=5)
            assert inc.acked_at is not None
            assert [i.alert_id for i in room.receiver.store.all_incidents()] == [alert_id]
    assert noticed_s <= 7, noticed_s


def test_slow_link_still_delivers_within_bound(tmp_path, pki_dir, fresh_broker):
    db = tmp_path / "room.db"
    with (
        ThrottleProxy("127.0.0.1", fresh_broker.port) as proxy,
        RunningRoom(pki_dir, fresh_broker, db, auto_ack=True) as room,
    ):
        cfg = proxied_config(tmp_path, pki_dir, proxy)
        with RunningKiosk(cfg) as kiosk:
            kiosk.events.wait_for("connected")
            time.sleep(0.3)
            proxy.set_rate(30)  # 30 kbit/s each way: a bad 2G link
            started = time.monotonic()
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            kiosk.events.wait_for("delivered", timeout=10)
            kiosk.events.wait_for("indicator", is_help_coming, timeout=10)
            took = time.monotonic() - started
            assert [i.alert_id for i in room.receiver.store.all_incidents()] == [alert_id]
    assert took < 5.0, f"press -> help_coming took {took:.1f} s over 30 kbit/s"


# -- 4. disk full ------------------------------------------------------------------------


def test_disk_full_on_tmpfs_alert_still_delivered_and_fault_reported(
    tmp_path, pki_dir, fresh_broker
):
    device_state = state_dir(tmp_path, DEVICE)
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE)
    db = tmp_path / "room.db"
    with small_tmpfs(device_state, "256k") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers it")
        with RunningRoom(pki_dir, fresh_broker, db, auto_ack=True) as room:
            # The outbox opens on a healthy disk, then the disk fills before the press.
            with SimProcess(cfg, "--press-after", "2.5", "--exit-after", "6") as sim:
                sim.events.wait_for("connected", timeout=10)
                assert fill_disk(device_state) > 0
                rc = sim.wait(20)
            check_delivered_with_fault(sim, rc, room, "outbox_write_failed")
    assert len(incidents_in(db)) == 1


def test_file_size_limit_alert_still_delivered_and_fault_reported(tmp_path, pki_dir, fresh_broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE)
    db = tmp_path / "room.db"
    with RunningRoom(pki_dir, fresh_broker, db, auto_ack=True) as room:
        # No file of the device may grow past 4 KiB: SQLite cannot even start its WAL.
        with SimProcess(
            cfg, "--press-after", "1", "--exit-after", "5", preexec_fn=limit_file_size(4096)
        ) as sim:
            rc = sim.wait(20)
        check_delivered_with_fault(sim, rc, room, "outbox_damaged")
    assert len(incidents_in(db)) == 1


def check_delivered_with_fault(sim, rc, room, fault) -> None:
    alert_id = sim.events.wait_for("persisted", timeout=0)["alert_id"]
    assert rc == 0, sim.stderr()
    assert [d["alert_id"] for d in sim.events.of("delivered")] == [alert_id]
    wait_until(lambda: room.receiver.store.incident(alert_id), timeout=5, what="incident stored")
    room.events.wait_for("event", lambda d: d["kind"] == "fault", timeout=5)
    faults = [line for line in room.lines if line.startswith("EVENT") and " fault " in line]
    assert any(fault in line for line in faults), faults


# -- 5. corrupt SQLite outbox ------------------------------------------------------------


def test_corrupt_outbox_is_quarantined_and_new_alerts_work(tmp_path, pki_dir, fresh_broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE)
    outbox = state_dir(tmp_path, DEVICE) / "outbox.db"
    outbox.parent.mkdir(parents=True)
    garbage = b"this SD card sector was scribbled on " * 300
    outbox.write_bytes(garbage)
    db = tmp_path / "room.db"
    with RunningRoom(pki_dir, fresh_broker, db, auto_ack=True) as room, RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        wait_until(
            lambda: "outbox_damaged" in kiosk.kiosk.state.faults,
            timeout=5,
            what="outbox_damaged fault",
        )
        room.events.wait_for("event", lambda d: d["kind"] == "fault", timeout=5)
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        kiosk.events.wait_for("receipt", timeout=10)
        kiosk.events.wait_for("indicator", is_help_coming, timeout=10)
        assert [i.alert_id for i in room.receiver.store.all_incidents()] == [alert_id]
    quarantined = list(outbox.parent.glob("outbox.db.corrupt-*"))
    assert [q.read_bytes() for q in quarantined if not q.name.endswith(("-wal", "-shm"))] == [
        garbage
    ]
    box = Outbox(outbox)  # the recreated outbox is a real, healthy database
    try:
        assert box.pending() == [] and box.next_seq() == 2
    finally:
        box.close()


# -- 6. wall clock jumps -----------------------------------------------------------------


def test_wall_clock_jumps_do_not_disturb_seq_ids_or_timers(
    tmp_path, pki_dir, fresh_broker, mqtt_client
):
    cfg = write_kiosk_config(
        tmp_path,
        pki_dir,
        fresh_broker.port,
        DEVICE,
        alert={"ack_timeout_s": 1.0, "cooldown_s": 0.5},
    )
    clock = SkewClock()
    db = tmp_path / "room.db"
    alerts: list[str] = []
    reannounce_after: list[float] = []
    wire: list[p.Alert] = []  # what the device actually sent, decoded
    spy = mqtt_client(pki_dir, "controlroom", fresh_broker)
    spy.on_message = lambda _c, _u, msg: wire.append(p.decode_alert(msg.payload))
    spy.subscribe(p.topic(DEVICE, "alert"), qos=1)
    time.sleep(0.2)
    with (
        RunningRoom(pki_dir, fresh_broker, db, auto_ack=False) as room,
        ClockedKiosk(cfg, clock) as kiosk,
    ):
        kiosk.events.wait_for("connected")
        for step, jump in enumerate((-3600.0, 7200.0, None)):
            kiosk.press()
            alert_id = kiosk.events.wait_for(
                "persisted", lambda d, seen=tuple(alerts): d["alert_id"] not in seen
            )["alert_id"]
            alerts.append(alert_id)
            first = kiosk.events.first_time(
                "alert_sent", lambda d, a=alert_id: d["alert_id"] == a and d["announce"] == 1
            )
            kiosk.events.wait_for(
                "alert_sent",
                lambda d, a=alert_id: d["alert_id"] == a and d["announce"] == 2,
                timeout=5,
            )
            second = kiosk.events.first_time(
                "alert_sent", lambda d, a=alert_id: d["alert_id"] == a and d["announce"] == 2
            )
            reannounce_after.append(second - first)
            room.events.wait_for("alert", lambda d, a=alert_id: d["alert_id"] == a)
            if jump is None:
                break
            room.receiver.command(f"end {alert_id}")
            kiosk.events.wait_for("mode", lambda d: d["to"] == "idle", timeout=10)
            clock.jump_wall(jump)
            del step
        latencies = [d["latency_ms"] for d in room.events.of("alert") if d["new"]]
        incidents = {i.alert_id: i for i in room.receiver.store.all_incidents()}
    seqs = [d["seq"] for d in kiosk.events.of("persisted")]
    assert len(set(alerts)) == 3
    assert seqs == sorted(seqs) and len(set(seqs)) == 3, seqs
    assert sorted(incidents) == sorted(alerts)
    assert [incidents[a].seq for a in alerts] == seqs
    # Timers follow monotonic time: the re-announcement comes ~ack_timeout_s after the press.
    assert all(0.7 <= s <= 2.5 for s in reannounce_after), reannounce_after
    # age_ms is measured on the monotonic clock, so it stays small through the jumps.
    first_sends = [a for a in wire if a.announce == 1]
    assert sorted(a.alert_id for a in first_sends) == sorted(alerts)
    assert all(0 <= a.age_ms < 1000 for a in first_sends), [a.age_ms for a in first_sends]
    # The device stamps pressed_at from its (jumped) wall clock; it is passed on as sent.
    pressed = [incidents[a].pressed_at for a in alerts]
    assert pressed[1] < pressed[0] < pressed[2], pressed
    # The room's latency must not trust a skewed device wall clock.
    assert len(latencies) == 3 and all(0 <= x < 5000 for x in latencies), latencies


# -- 7. control room restarted mid-incident ----------------------------------------------


def test_control_room_restart_mid_incident_no_duplicate_evidence_continues(
    tmp_path, pki_dir, fresh_broker
):
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE)
    db, evidence = tmp_path / "room.db", tmp_path / "evidence"
    same = {
        "client_id": "room-fixed",
        "group": f"g-{secrets.token_hex(4)}",
        "evidence_dir": evidence,
        "auto_ack": False,
    }
    with RunningKiosk(cfg, media=True) as kiosk:
        kiosk.events.wait_for("connected")
        with RunningRoom(pki_dir, fresh_broker, db, **same) as room:
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            room.events.wait_for("alert", lambda d: d["alert_id"] == alert_id)
            room.events.wait_for("media", lambda d: d["alert_id"] == alert_id)
            time.sleep(2.0)
        first_files = sorted(evidence.rglob("*.mp4"))
        assert first_files, "the first room wrote no evidence"
        with RunningRoom(pki_dir, fresh_broker, db, **same) as room2:
            room2.receiver.command(f"ack {alert_id}")
            kiosk.events.wait_for("indicator", is_help_coming, timeout=10)
            room2.events.wait_for("media", lambda d: d["alert_id"] == alert_id, timeout=10)
            assert room2.events.of("alert") == [] or all(
                not d["new"] for d in room2.events.of("alert")
            )
            room2.receiver.command(f"end {alert_id}")
            room2.events.wait_for("evidence", timeout=15)
    incidents = incidents_in(db)
    assert [i.alert_id for i in incidents] == [alert_id]
    assert incidents[0].acked_by == "officer-1"
    files = sorted(evidence.rglob("*.mp4"))
    assert any(".part2" in f.name for f in files), files


def test_disk_full_after_press_receipt_still_stops_reannouncements(tmp_path, pki_dir, fresh_broker):
    device_state = state_dir(tmp_path, DEVICE)
    cfg = write_kiosk_config(
        tmp_path,
        pki_dir,
        fresh_broker.port,
        DEVICE,
        alert={"ack_timeout_s": 1.0, "retry_s": 0.5, "cooldown_s": 0.5},
    )
    db = tmp_path / "room.db"
    with small_tmpfs(device_state, "256k") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        with RunningKiosk(cfg) as kiosk:
            kiosk.events.wait_for("connected")
            kiosk.press()  # no room yet: committed and PUBACKed, not received
            alert_id = kiosk.events.wait_for("delivered")["alert_id"]
            assert fill_disk(device_state) > 0
            with RunningRoom(pki_dir, fresh_broker, db, auto_ack=True) as room:
                kiosk.events.wait_for("indicator", is_help_coming, timeout=10)
                room.receiver.command(f"end {alert_id}")
                kiosk.events.wait_for("mode", lambda d: d["to"] == "idle", timeout=10)
                sent = len(kiosk.events.of("alert_sent"))
                time.sleep(2.0)  # four retry_s periods
                again = len(kiosk.events.of("alert_sent")) - sent
        assert again == 0, f"{again} re-announcements of an alert the room has stored"
        assert [d["alert_id"] for d in kiosk.events.of("receipt")] == [alert_id]
