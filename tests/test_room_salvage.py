"""The room never discards an alert from an authenticated device's alert topic (issue 9
items 1, 3, 4), end to end over the real mosquitto with mTLS: crafted bodies are published
raw with the device's own certificate; the room stores one flagged incident each, shows it
escaped on one line, and receipts it whenever the body gave an alert_id."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pinkbutton.firmware import protocol as p
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.helpers import Recorder, room_tls, wait_until
from tests.test_controlroom import device_key, make_alert

pytestmark = pytest.mark.broker
DEVICE = "pb-test-0001"


class Room:
    """A receiver checking signatures, its output kept as a strict UTF-8 terminal would."""

    def __init__(self, pki_dir, broker, db):
        self.events = Recorder()
        self.lines: list[str] = []
        self.receiver = ControlRoomReceiver(
            host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=db,
            client_id=f"salvage-{secrets.token_hex(4)}", group=f"salvage-{secrets.token_hex(4)}",
            operator="officer-1", device_certs=pki_dir / "devices", out=self._print,
            listeners=[self.events])
        self.thread = threading.Thread(target=self.receiver.run, daemon=True)

    def _print(self, line: str) -> None:
        line.encode("utf-8")  # what print() to a UTF-8 terminal does: raises on a surrogate
        self.lines.append(line)

    def __enter__(self):
        self.thread.start()
        self.events.wait_for("connected")
        time.sleep(0.2)  # subscriptions acknowledged
        return self

    def __exit__(self, *exc):
        self.receiver.stop()
        self.thread.join(10)


class Device:
    """The device's own MQTT client: publishes raw bytes on its alert topic, keeps its cmds."""

    def __init__(self, mqtt_client, pki_dir, broker, device=DEVICE):
        self.device = device
        self.cmds = Recorder()
        self.client = mqtt_client(pki_dir, device, broker)
        self.client.on_message = lambda _c, _u, msg: self.cmds("cmd", _cmd(msg.payload))
        self.client.subscribe(p.topic(device, "cmd"), qos=1)
        time.sleep(0.2)

    def publish(self, payload: bytes, leaf: str = "alert") -> None:
        self.client.publish(p.topic(self.device, leaf), payload, qos=1).wait_for_publish(5)


def _cmd(payload: bytes) -> dict:
    c = p.decode_cmd(payload)
    return {"cmd": c.cmd, "alert_id": c.alert_id, "operator": c.operator}


def signed(body: dict, key) -> bytes:
    """Sign a body exactly as the kiosk does: canonical JSON without `signature`."""
    body = {k: v for k, v in body.items() if k != "signature"}
    canonical = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    sig = key.sign(canonical.encode(), ec.ECDSA(hashes.SHA256()))
    return json.dumps({**body, "signature": base64.b64encode(sig).decode()}).encode()


def body_of(alert: p.Alert) -> dict:
    return json.loads(p.encode_alert(alert))


def crafted(case: str, pki_dir) -> tuple[bytes, str]:
    """(payload, a word the incident's problems must contain)."""
    key = device_key(pki_dir, DEVICE)
    body = body_of(make_alert(DEVICE))
    if case == "over_long_name":  # what a kiosk with a 257-character site_name announced
        body["site"]["name"] = "Qissa Khwani " + "N" * 300
        return signed(body, key), "'site.name' is longer than 256"
    if case == "bad_signature":
        return signed(body, device_key(pki_dir, "pb-test-0002")), "signature"
    if case == "lone_surrogate":
        body["site"]["name"] = "Ba\ud800zaar"
        return json.dumps(body).encode(), "lone surrogate"  # ensure_ascii: "\ud800" escape
    if case == "unknown_version":
        body["v"] = 2
        return signed(body, key), "unsupported protocol version 2"
    if case == "non_json":
        return b"\x1b[2J\x00 not json \xff", "not valid JSON"
    if case == "missing_alert_id":
        del body["alert_id"]
        return signed(body, key), "alert_id"
    raise AssertionError(case)


CASES = ["over_long_name", "bad_signature", "lone_surrogate", "unknown_version", "non_json",
         "missing_alert_id"]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_alert_body_still_makes_one_flagged_incident(case, tmp_path, pki_dir, broker,
                                                           mqtt_client):
    payload, word = crafted(case, pki_dir)
    readable_id = json.loads(payload).get("alert_id") if case != "non_json" else None
    db = tmp_path / "room.db"
    with Room(pki_dir, broker, db) as room:
        device = Device(mqtt_client, pki_dir, broker)
        device.publish(payload)
        device.publish(payload)  # a retry of the same body: still one incident
        wait_until(lambda: len(room.events.of("alert")) >= 2, timeout=15, what="both handled")
        incidents = room.receiver.store.all_incidents()
        assert len(incidents) == 1, incidents
        inc = incidents[0]
        assert inc.device_id == DEVICE and inc.kind == "emergency"
        assert inc.problems and any(word in x for x in inc.problems), inc.problems
        if readable_id is not None:
            assert inc.alert_id == readable_id
            device.cmds.wait_for("cmd", lambda d: d == {"cmd": "receipt", "alert_id": readable_id,
                                                        "operator": None}, timeout=10)
        else:
            time.sleep(0.5)
            assert device.cmds.of("cmd") == []  # no id the device would know: no receipt
        alert_lines = [x for x in room.lines if x.startswith("ALERT")]
        assert len(alert_lines) == 1 and "FLAGGED" in alert_lines[0], room.lines
        assert f"id {inc.alert_id[:8]}" in alert_lines[0]
        # The operator can act on it like on any incident.
        room.receiver.command(f"ack {inc.alert_id[:8]}")
        wait_until(lambda: any(x.startswith("ACK") for x in room.lines), what="ack shown")
    assert all("\n" not in x and "\x1b" not in x and "\x00" not in x for x in room.lines)
    store = IncidentStore(db)
    try:
        assert store.incident(inc.alert_id).acked_by == "officer-1"
    finally:
        store.close()


def test_a_forged_line_in_device_text_stays_on_its_own_line(tmp_path, pki_dir, broker,
                                                              mqtt_client):
    forged = "Bazaar\nACK    pb-test-0001  Bazaar  by officer-x  id 00000000\r\x1b[1A\u202e"
    alert = make_alert(DEVICE)
    body = body_of(alert)
    body["site"]["name"] = forged
    event = {"v": 1, "type": "event", "device_id": DEVICE, "kind": "fault\nACK by officer-x",
             "at": "2026-11-23T09:00:00Z", "detail": {"name": "cam\x1b[31m", "x": "\u2066\n"}}
    with Room(pki_dir, broker, tmp_path / "room.db") as room:
        device = Device(mqtt_client, pki_dir, broker)
        device.publish(signed(body, device_key(pki_dir, DEVICE)))
        device.publish(json.dumps(event).encode(), leaf="events")
        room.events.wait_for("alert")
        room.events.wait_for("event")
        device.cmds.wait_for("cmd", lambda d: d["cmd"] == "receipt")
        room.receiver.command(f"ack {alert.alert_id[:8]}")
        room.receiver.command("list")
        device.cmds.wait_for("cmd", lambda d: d["cmd"] == "ack")
        wait_until(lambda: any(x.startswith("  ") for x in room.lines), what="list shown")
    text = "\n".join(room.lines)
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text and "\u2066" not in text
    acks = [x for x in room.lines if x.startswith("ACK")]
    assert len(acks) == 1 and acks[0].endswith("by officer-1  id " + alert.alert_id[:8]), acks
    assert "Bazaar\\nACK    pb-test-0001" in acks[0]
    (shown_event,) = [x for x in room.lines if x.startswith("EVENT")]
    assert "fault\\nACK by officer-x" in shown_event and "cam\\x1b[31m" in shown_event
    # A valid body: not flagged, just shown safely.
    (alert_line,) = [x for x in room.lines if x.startswith("ALERT")]
    assert "FLAGGED" not in alert_line and "Bazaar\\nACK" in alert_line


def test_an_alert_id_of_another_devices_incident_makes_its_own_incident(tmp_path, pki_dir,
                                                                        broker, mqtt_client):
    first = make_alert(DEVICE)
    reuse = make_alert("pb-test-0002", first.alert_id)
    with Room(pki_dir, broker, tmp_path / "room.db") as room:
        a = Device(mqtt_client, pki_dir, broker)
        b = Device(mqtt_client, pki_dir, broker, "pb-test-0002")
        a.publish(p.encode_alert(first, device_key(pki_dir, DEVICE)))
        a.cmds.wait_for("cmd", lambda d: d["cmd"] == "receipt")
        for _ in range(2):  # a re-announcement folds into the same, second incident
            b.publish(p.encode_alert(reuse, device_key(pki_dir, "pb-test-0002")))
        wait_until(lambda: len(room.events.of("alert")) >= 3, what="all three handled")
        # B's alert is stored, so B may drop it from its outbox: the receipt names its id.
        b.cmds.wait_for("cmd", lambda d: d == {"cmd": "receipt", "alert_id": first.alert_id,
                                               "operator": None})
        incidents = {i.device_id: i for i in room.receiver.store.all_incidents()}
    assert len(incidents) == 2, incidents
    assert incidents[DEVICE].alert_id == first.alert_id and incidents[DEVICE].problems == ()
    assert incidents[DEVICE].announces == 1
    theirs = incidents["pb-test-0002"]
    assert theirs.alert_id != first.alert_id and any(DEVICE in x for x in theirs.problems)
    assert [x for x in room.lines if x.startswith("ALERT  pb-test-0002")][0].count("FLAGGED") == 1


def test_device_text_in_the_room_log_is_escaped(tmp_path, pki_dir, broker, mqtt_client, caplog):
    body = body_of(make_alert(DEVICE))
    body["kind"] = "drill\n2026-11-23 ERROR forged log line\u202e"
    caplog.set_level("WARNING", logger="pinkbutton.controlroom")
    room = Room(pki_dir, broker, tmp_path / "room.db")
    room.receiver = ControlRoomReceiver(  # recording evidence: subscribed to media/+ too
        host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=tmp_path / "r.db",
        client_id=f"salvage-{secrets.token_hex(4)}", group=f"salvage-{secrets.token_hex(4)}",
        device_certs=pki_dir / "devices", out=room._print, listeners=[room.events],
        evidence_dir=tmp_path / "evidence")
    room.thread = threading.Thread(target=room.receiver.run, daemon=True)
    with room:
        device = Device(mqtt_client, pki_dir, broker)
        device.publish(signed(body, device_key(pki_dir, DEVICE)))
        device.publish(b"x", leaf="media/\u202eevil\u2066")  # not a media envelope: rejected
        room.events.wait_for("alert")
        room.events.wait_for("rejected", lambda d: "evil" in d["topic"])
    messages = [r.getMessage() for r in caplog.records if r.name == "pinkbutton.controlroom"]
    assert any("flagged alert" in m for m in messages), messages
    assert any("rejected message" in m and "\\u202eevil\\u2066" in m for m in messages), messages
    for m in messages:
        assert "\n" not in m and "\u202e" not in m and "\u2066" not in m, m


def test_a_kiosk_configured_before_the_limit_is_receipted_and_acknowledged(
        tmp_path, pki_dir, broker, monkeypatch):
    """Issue 9 item 1 as it happened: a kiosk whose site_name (300 characters) passed an older
    check-config showed "delivered" while the room refused every announcement."""
    from dataclasses import replace

    from pinkbutton.hal.base import Pattern

    from tests import helpers
    from tests.helpers import RunningKiosk, write_kiosk_config

    real_load = helpers.load_config
    long_name = "Qissa Khwani Bazaar " + "N" * 280

    def load_unchecked(path, **kw):
        config = real_load(path, **kw)
        return replace(config, device=replace(config.device, site_name=long_name))

    monkeypatch.setattr(helpers, "load_config", load_unchecked)
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0003")
    room = Room(pki_dir, broker, tmp_path / "room.db")
    room.receiver.auto_ack = True
    with room, RunningKiosk(cfg) as kiosk:
        assert kiosk.config.device.site_name == long_name
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        kiosk.events.wait_for("receipt", lambda d: d["alert_id"] == alert_id, timeout=15)
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming", timeout=15)
        assert kiosk.indicator.pattern == Pattern.HELP_COMING
        inc = room.receiver.store.incident(alert_id)
        assert inc.site_name == long_name[:p.MAX_SITE_NAME] and inc.acked_by == "officer-1"
        assert inc.problems == ("field 'site.name' is longer than 256 characters",)
