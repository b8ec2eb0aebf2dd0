"""Evidence over a link slower than the media (issue 9 item 6): the kiosk records everything,
the live stream carries what fits, and after the incident the kiosk's backlog drains for
longer than the room's old give-up window (5 NACKs x 4 s). The room must keep asking while
packets keep coming and end with complete evidence, 0 missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pinkbutton.tools.controlroom.backfill import PacketLog

from harness.netproxy import ThrottleProxy
from tests.fault_helpers import state_dir, tune_config
from tests.helpers import RunningKiosk, wait_until, write_kiosk_config
from tests.test_e2e_alert import RunningRoom
from tests.test_evidence import ffmpeg_errors

pytestmark = [pytest.mark.faults, pytest.mark.broker]

DEVICE = "pb-test-0001"
INCIDENT_S = 16.0  # alert.stream_s: the kiosk ends the stream itself
RATE_KBIT = 40  # each way; the media is ~125 kbit/s (100k video + 24k voice)
PREROLL_S = 2.0
OLD_GIVE_UP_S = 21.0  # settle 1 s + 5 NACKs x 4 s after stream_end


@pytest.mark.timeout(150)
def test_slow_link_backlog_longer_than_old_give_up_still_completes(tmp_path, pki_dir,
                                                                    fresh_broker):
    db, evidence = tmp_path / "room.db", tmp_path / "evidence"
    with (
        ThrottleProxy("127.0.0.1", fresh_broker.port) as proxy,
        RunningRoom(pki_dir, fresh_broker, db, auto_ack=True, evidence_dir=evidence) as room,
    ):
        cfg = write_kiosk_config(tmp_path, pki_dir, proxy.port, DEVICE,
                                 alert={"stream_s": INCIDENT_S})
        tune_config(cfg, keepalive_s=30)  # a queued PINGRESP must not cut the slow link
        with cfg.open("a") as f:
            f.write(f"\n[media]\nwidth = 320\nheight = 240\nfps = 5.0\nvideo_kbps = 100\n"
                    f"preroll_s = {PREROLL_S}\n")
        with RunningKiosk(cfg, media=True) as kiosk:
            kiosk.events.wait_for("connected")
            time.sleep(PREROLL_S + 0.5)
            proxy.set_rate(RATE_KBIT)
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            stream_end = kiosk.events.wait_for("stream_end", timeout=INCIDENT_S + 30)
            ended = time.monotonic()
            complete = room.events.wait_for(
                "evidence_complete", lambda d: d["alert_id"] == alert_id, timeout=100)
            drained_s = time.monotonic() - ended
            local = state_dir(tmp_path, DEVICE) / "evidence" / alert_id
            wait_until(lambda: not local.exists(), timeout=15,
                       what="kiosk deleted its confirmed evidence")
        live = room.events.wait_for("evidence", lambda d: alert_id in d["path"])
    seq_count = stream_end["seq_count"]
    print(f"slow link {RATE_KBIT} kbit/s, {INCIDENT_S:.0f} s incident: {seq_count} packets, "
          f"live file {live['duration_s']:.1f} s gaps {live['gaps']}, backfilled "
          f"{complete['backfilled']}, complete {drained_s:.1f} s after stream_end")
    assert complete["gaps"] == [] and complete.get("final"), complete
    assert drained_s > OLD_GIVE_UP_S, "the backlog must outlast the old give-up window"
    manifest = json.loads(Path(complete["manifest"]).read_text())
    assert manifest["gaps"] == [] and manifest["packets"] == seq_count
    log = PacketLog(Path(complete["path"]).parent / manifest["packet_log"])
    try:
        assert [rp.seq for rp in log.in_order()] == list(range(seq_count)), "0 missing"
    finally:
        log.close()
    assert complete["backfilled"] > seq_count // 3, "most of it came by backfill"
    assert ffmpeg_errors(Path(complete["path"])) == ""
    line = f"evidence for {alert_id} complete: {seq_count} packets, 0 gaps"
    assert any(x.startswith(line) for x in room.lines), room.lines[-5:]


@pytest.mark.timeout(90)
def test_given_up_evidence_resumes_at_the_next_heartbeat_listing_it(tmp_path, pki_dir,
                                                                    fresh_broker):
    """The room gave up (its NACKs were lost): the evidence is written INCOMPLETE and not
    confirmed, so the kiosk keeps its copy and lists the alert in its heartbeat's
    `evidence_pending`; that heartbeat makes the room ask again, and the evidence completes."""
    from pinkbutton.firmware.media.envelope import decode_envelope

    from tests.test_faults import lose_room_commands

    db, evidence = tmp_path / "room.db", tmp_path / "evidence"
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE,
                             alert={"stream_s": 4.0})
    with cfg.open("a") as f:
        f.write("\n[health]\ninterval_s = 1.0\n")
    with RunningRoom(pki_dir, fresh_broker, db, auto_ack=True, evidence_dir=evidence) as room:
        room.receiver.backfill.stall_s = 3.0
        lost = lose_room_commands(room.receiver, "nack")
        on_media, dropped = room.receiver._on_media, set()

        def lossy_media(device_id, alert_id, payload):  # the live stream loses seqs 60-89
            seq = decode_envelope(payload).seq
            if lost.kinds and 60 <= seq < 90:
                dropped.add(seq)
                return None
            return on_media(device_id, alert_id, payload)

        room.receiver._on_media = lossy_media
        with RunningKiosk(cfg, media=True) as kiosk:
            kiosk.events.wait_for("connected")
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            kiosk.events.wait_for("stream_end", timeout=30)
            given_up = room.events.wait_for("evidence_complete",
                                            lambda d: d["alert_id"] == alert_id, timeout=30)
            assert not given_up["final"] and given_up["gaps"] == [(60, 89)], given_up
            assert lost.lost > 0 and len(dropped) == 30
            assert any("INCOMPLETE" in x for x in room.lines), room.lines[-5:]
            local = state_dir(tmp_path, DEVICE) / "evidence" / alert_id
            assert local.exists(), "unconfirmed evidence must stay on the kiosk"
            lost.clear()
            beats = len(room.events.of("health"))
            final = room.events.wait_for(
                "evidence_complete", lambda d: d["alert_id"] == alert_id and d["final"],
                timeout=30)
            assert len(room.events.of("health")) > beats, "resumed by a heartbeat"
            wait_until(lambda: not local.exists(), timeout=15,
                       what="kiosk deleted its confirmed evidence")
            assert kiosk.events.of("disconnected") == [], "no reconnect: the heartbeat did it"
    assert final["gaps"] == [] and final["backfilled"] == 30, final
    assert ffmpeg_errors(Path(final["path"])) == ""


@pytest.mark.timeout(60)
def test_given_up_evidence_resumes_when_the_kiosk_comes_back_online(tmp_path, pki_dir,
                                                                     fresh_broker, mqtt_client):
    """A scripted kiosk (a plain MQTT client with the device's certificate) streams an
    incident with a hole and does not answer the NACKs: the room gives up (no new seq for
    stall_s) without confirming and stops asking. The kiosk's live `status` (it came back)
    makes the room ask again; the kiosk answers and the evidence completes."""
    import threading

    from pinkbutton.firmware import protocol as p

    from tests.test_backfill import envelopes
    from tests.test_controlroom import make_alert
    from tests.test_evidence import encode_audio, encode_video

    media = sorted(encode_video(frames=30) + encode_audio()[:100],
                   key=lambda x: (x.pts_us, x.stream))
    messages, lost = envelopes(media), set(range(40, 60))
    cmds, lock = [], threading.Lock()

    def on_message(_client, _userdata, msg) -> None:  # paho network thread
        with lock:
            cmds.append(p.decode_cmd(msg.payload))

    def asked() -> int:
        with lock:
            return sum(1 for c in cmds if c.cmd == "nack")

    with RunningRoom(pki_dir, fresh_broker, tmp_path / "room.db", auto_ack=True,
                     evidence_dir=tmp_path / "evidence") as room:
        room.receiver.backfill.stall_s = 1.0
        device = mqtt_client(pki_dir, DEVICE, fresh_broker)
        device.on_message = on_message
        device.subscribe(p.topic(DEVICE, "cmd"), qos=1)
        alert = make_alert(DEVICE)
        device.publish(p.topic(DEVICE, "alert"), p.encode_alert(alert), qos=1).wait_for_publish(5)
        room.events.wait_for("alert", lambda d: d["alert_id"] == alert.alert_id)

        def send(seqs) -> None:
            for seq in seqs:
                for m in messages[seq]:
                    device.publish(p.media_topic(DEVICE, alert.alert_id), m,
                                   qos=1).wait_for_publish(5)

        send(s for s in messages if s not in lost)
        end = p.DeviceEvent(DEVICE, "stream_end", "2026-12-01T00:00:00Z",
                            {"alert_id": alert.alert_id, "seq_count": len(messages)})
        device.publish(p.topic(DEVICE, "events"), p.encode_event(end), qos=1).wait_for_publish(5)
        given_up = room.events.wait_for("evidence_complete", timeout=20)
        assert not given_up["final"] and given_up["gaps"] == [(40, 59)], given_up
        before = asked()
        assert before >= 1
        time.sleep(2.0)
        assert asked() == before, "given up: no more asking while nothing comes"
        back = p.Status(DEVICE, True, "streaming", "0.1.0")
        device.publish(p.topic(DEVICE, "status"), p.encode_status(back), qos=1).wait_for_publish(5)
        wait_until(lambda: asked() > before, timeout=10, what="asked again after the status")
        send(sorted(lost))
        final = room.events.wait_for("evidence_complete", lambda d: d["final"], timeout=20)
        wait_until(lambda: any(c.cmd == "evidence_complete" for c in list(cmds)), timeout=10,
                   what="evidence_complete sent to the kiosk")
    assert final["gaps"] == [] and final["backfilled"] == len(lost), final
    assert ffmpeg_errors(Path(final["path"])) == ""
