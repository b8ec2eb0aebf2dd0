"""End to end over a real mosquitto with mutual TLS: kiosk runtime (fake HAL only)
-> broker -> ControlRoomReceiver -> ack -> kiosk shows help_coming."""

from __future__ import annotations

import logging
import secrets
import threading
import time

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.transport import TlsFiles
from pinkbutton.hal.base import Pattern
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.pki import ca_paths, init_ca, issue

from tests.helpers import Recorder, RunningKiosk, room_tls, wait_until, write_kiosk_config

pytestmark = pytest.mark.broker


class RunningRoom:
    def __init__(self, pki_dir, broker, db, *, auto_ack=True, client_id=None,
                 device_certs=None, evidence_dir=None, group=None, limits=None):
        self.events = Recorder()
        self.lines: list[str] = []
        self.receiver = ControlRoomReceiver(
            host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=db,
            # Own client id: a room that reused one would resume the previous test's
            # persistent session and receive the alerts queued for it.
            client_id=client_id or f"room-{secrets.token_hex(4)}", auto_ack=auto_ack,
            operator="officer-1",
            device_certs=device_certs, out=self.lines.append, listeners=[self.events],
            evidence_dir=evidence_dir,
            # Own share group: rooms of earlier tests keep a live session for a while and
            # mosquitto would hand them a share of this test's alerts.
            group=group or f"room-{secrets.token_hex(4)}",
            limits=limits,
        )
        self.thread = threading.Thread(target=self.receiver.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.events.wait_for("connected")
        time.sleep(0.1)  # subscriptions acknowledged
        return self

    def __exit__(self, *exc):
        self.receiver.stop()
        self.thread.join(10)


@pytest.fixture
def room_db(tmp_path):
    return tmp_path / "room.db"


def test_press_reaches_control_room_and_ack_shows_help_coming(tmp_path, pki_dir, broker, room_db):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port)
    with RunningRoom(pki_dir, broker, room_db, device_certs=pki_dir / "devices") as room, \
            RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        persisted = kiosk.events.wait_for("persisted")
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
        got = room.events.wait_for("alert")
        assert got["alert_id"] == persisted["alert_id"] and got["new"]
        inc = wait_until(lambda: room.receiver.store.incident(persisted["alert_id"]))
        assert inc.device_id == "pb-test-0001" and inc.site_name == "Test Bazaar"
        assert inc.acked_by == "officer-1" and inc.latency_ms is not None
        # The durable write came before the kiosk showed "sending".
        order = [k for k, d in kiosk.events.items
                 if k == "persisted" or (k == "indicator" and d["pattern"] == "sending")]
        assert order[:2] == ["persisted", "indicator"]
        assert kiosk.indicator.pattern == Pattern.HELP_COMING
        assert any(line.startswith("ALERT  pb-test-0001  Test Bazaar") for line in room.lines)
    row = room.receiver.store  # closed after stop; reopen to check signature verification
    from pinkbutton.tools.controlroom.store import IncidentStore
    store = IncidentStore(room_db)
    sig = store._db.execute("SELECT signature_ok FROM incidents").fetchone()[0]
    store.close()
    assert sig == 1, "the device's ECDSA signature must verify at the control room"
    del row


def test_second_press_extends_incident_never_duplicates(tmp_path, pki_dir, broker, room_db):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0002")
    with RunningRoom(pki_dir, broker, room_db, auto_ack=False) as room, RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        first = kiosk.events.wait_for("delivered")
        kiosk.press()
        kiosk.press()
        time.sleep(0.5)
        assert len(kiosk.events.of("persisted")) == 1
        incidents = room.receiver.store.all_incidents()
        assert [i.alert_id for i in incidents] == [first["alert_id"]]


def test_unacknowledged_alert_is_reannounced_escalated_then_acked(tmp_path, pki_dir, broker,
                                                                   room_db):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0003",
                             alert={"ack_timeout_s": 0.6})
    with RunningRoom(pki_dir, broker, room_db, auto_ack=False) as room, RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        room.events.wait_for("alert", lambda d: d["announce"] >= 2, timeout=5)
        inc = wait_until(lambda: (i := room.receiver.store.incident(alert_id)) and i.escalated
                         and i, what="escalated incident stored")
        assert inc.announces >= 2
        assert len(room.receiver.store.all_incidents()) == 1
        assert any(line.startswith("ESCALATED  pb-test-0003") for line in room.lines)
        room.receiver.command(f"ack {alert_id[:8]}")
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
        time.sleep(0.3)  # an announcement already in flight when the ack landed may still arrive
        n = len(room.events.of("alert"))
        time.sleep(1.5)  # past two more ack timeouts: no further re-announcements
        assert len(room.events.of("alert")) == n


def test_malformed_cmd_payloads_are_rejected_and_state_survives(tmp_path, pki_dir, broker,
                                                                mqtt_client):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port)
    room = mqtt_client(pki_dir, "controlroom", broker)
    cmd_topic = p.topic("pb-test-0001", "cmd")
    bad = [b"not json", b"[]", b'{"v": 2, "type": "cmd"}', b'{"v": 1, "type": "cmd", "cmd": 5}',
           b'{"v":1,"type":"cmd","cmd":"ack","cmd_id":"x","sent_at":"t"}',
           b"{" + b" " * 20000 + b"}"]
    with RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        time.sleep(0.2)
        for payload in bad:
            room.publish(cmd_topic, payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while len(kiosk.events.of("cmd_rejected")) < len(bad) and time.monotonic() < deadline:
            time.sleep(0.05)
        reasons = [d["reason"] for d in kiosk.events.of("cmd_rejected")]
        assert len(reasons) == len(bad), reasons
        assert any("not valid JSON" in r for r in reasons)
        assert any("version 2" in r for r in reasons)
        assert any("over the" in r for r in reasons)
        # Still fully working afterwards.
        kiosk.press()
        kiosk.events.wait_for("delivered")
        assert kiosk.kiosk.state.mode == "streaming"


def test_publish_to_another_devices_topic_is_denied_and_reported(tmp_path, pki_dir, broker,
                                                                 room_db):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port)
    with RunningRoom(pki_dir, broker, room_db, auto_ack=False), RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        # A firmware bug (or tampering) tries to write as pb-test-0002.
        kiosk.kiosk._publish("alert", p.topic("pb-test-0002", "alert"), b"{}")
        denied = kiosk.events.wait_for("publish_denied")
        assert denied["topic"].endswith("pb-test-0002/alert")
        assert "authorized" in denied["reason"].lower()
        kiosk.press()  # its own alerts are unaffected
        kiosk.events.wait_for("delivered")


def test_device_id_not_matching_certificate_is_denied_and_stays_alerting(
        tmp_path, pki_dir, broker):
    # Config says pb-test-0002 but presents pb-test-0001's certificate: every publish is denied.
    from pinkbutton.tools.pki import device_paths
    other = device_paths(pki_dir, "pb-test-0001")
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0002", cert=other.cert,
                             key=other.key)
    with RunningKiosk(cfg, check_certificates=False) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        kiosk.events.wait_for("publish_denied", lambda d: d["topic"].endswith("/alert"))
        time.sleep(0.1)
        assert kiosk.kiosk.state.mode == "alerting"
        assert "broker_denied" in kiosk.kiosk.state.faults
        assert kiosk.indicator.pattern == Pattern.SENDING
        assert kiosk.events.of("delivered") == []


def test_kiosk_with_wrong_ca_refuses_broker_and_retries(tmp_path, pki_dir, broker):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    ca = init_ca(foreign, common_name="Somebody Else CA")
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, ca=ca.cert)
    with RunningKiosk(cfg, check_certificates=False) as kiosk:
        first = kiosk.events.wait_for("connect_failed")
        kiosk.events.wait_for("connect_failed", lambda d: d is not first, timeout=5)
        fails = kiosk.events.of("connect_failed")
        assert "certificate rejected" in fails[0]["reason"]
        assert f"signed by a different CA than broker.ca {ca.cert}" in fails[0]["reason"]
        assert all(f["retry_in"] > 0 for f in fails)
        assert kiosk.events.of("connected") == []


@pytest.mark.parametrize("when", ["expired", "not_yet_valid"])
def test_broker_refuses_kiosk_with_invalid_certificate(tmp_path, pki_dir, broker, when):
    import datetime as dt
    now = dt.datetime.now(dt.UTC)
    span = ((now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if when == "expired"
            else (now + dt.timedelta(days=1), now + dt.timedelta(days=30)))
    out = tmp_path / "bad"
    out.mkdir()
    bad = issue(pki_dir, "pb-test-0001", kind="client", out_dir=out, not_before=span[0],
                not_after=span[1], force=True)
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, cert=bad.cert, key=bad.key)
    with RunningKiosk(cfg, check_certificates=False) as kiosk:
        fail = kiosk.events.wait_for("connect_failed")
        assert "refused our certificate" in fail["reason"]
        kiosk.press()  # still recorded durably while it cannot connect
        kiosk.events.wait_for("persisted")
        assert kiosk.kiosk.state.mode == "alerting"
        # It keeps trying, with backoff, and never gets through.
        kiosk.events.wait_for("connect_failed", lambda d: d is not fail, timeout=5)
        fails = kiosk.events.of("connect_failed")
        assert all(f["retry_in"] > 0 for f in fails)
        assert kiosk.events.of("connected") == []


def test_room_with_a_foreign_ca_certificate_is_refused_and_retries(tmp_path, pki_dir, broker,
                                                                   caplog):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    init_ca(foreign, common_name="Somebody Else CA")
    impostor = issue(foreign, "controlroom", kind="client", out_dir=foreign)
    room = ControlRoomReceiver(
        host="localhost", port=broker.port,
        tls=TlsFiles(ca_paths(pki_dir).cert, impostor.cert, impostor.key),
        db_path=tmp_path / "room.db", client_id=f"room-{secrets.token_hex(4)}",
        out=lambda line: None,
    )
    thread = threading.Thread(target=room.run, daemon=True)
    with caplog.at_level(logging.DEBUG, logger="pinkbutton"):
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while room._connect_log.attempts < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            room.stop()
            thread.join(10)
    assert room._connect_log.attempts >= 2, "the room gave up instead of retrying"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "refused our certificate" in errors[0], errors
    assert all("\n" not in e for e in errors)
    assert not room.transport.connected


def test_press_while_broker_down_is_delivered_once_after_restart(tmp_path, pki_dir, fresh_broker,
                                                                 room_db):
    # Short ack timeout: after a broker restart mosquitto 2.0 may route the first
    # alert before the room's shared subscription is back; the re-announcement of an
    # unacknowledged alert is what makes that a delay, never a loss.
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, alert={"ack_timeout_s": 1.0})
    with RunningRoom(pki_dir, fresh_broker, room_db, auto_ack=True), RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        fresh_broker.stop()
        kiosk.events.wait_for("disconnected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        assert kiosk.indicator.pattern == Pattern.SENDING
        fresh_broker.start()
        kiosk.events.wait_for("delivered", timeout=15)
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming", timeout=15)
    from pinkbutton.tools.controlroom.store import IncidentStore
    store = IncidentStore(room_db)
    assert [i.alert_id for i in store.all_incidents()] == [alert_id]
    store.close()
