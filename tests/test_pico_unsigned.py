"""Alerts authenticated by the TLS client certificate only (issue 14: the Pico W has no ECDSA).

Protocol v1 marks them with the optional field `"auth": "tls"` and no `signature`. The room
accepts such an alert from the device's own topic as authenticated by its certificate (the
broker's ACL ties the topic to the certificate CN): not flagged, not a forgery; an alert with
neither a signature nor the marking is still flagged `signature missing`."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from pinkbutton.firmware import protocol as p

from tests.helpers import wait_until
from tests.test_controlroom import make_alert
from tests.test_room_salvage import DEVICE, Device, Room


def test_auth_tls_round_trips_and_is_left_out_when_unset() -> None:
    alert = dataclasses.replace(make_alert(DEVICE), auth="tls")
    body = json.loads(p.encode_alert(alert))
    assert body["auth"] == "tls" and "signature" not in body
    assert p.decode_alert(p.encode_alert(alert), topic_device=DEVICE).auth == "tls"
    kiosk = json.loads(p.encode_alert(make_alert(DEVICE)))
    assert "auth" not in kiosk  # the kiosk's bytes (and so its signatures) are unchanged


@pytest.mark.parametrize("value", ["psk", "", 1, True])
def test_another_auth_value_is_refused_and_salvage_ignores_it(value) -> None:
    body = json.loads(p.encode_alert(make_alert(DEVICE)))
    body["auth"] = value
    with pytest.raises(p.ProtocolError, match="auth"):
        p.decode_alert(json.dumps(body), topic_device=DEVICE)
    salvaged = p.salvage_alert(json.dumps(body).encode(), topic_device=DEVICE)
    assert salvaged.alert.auth is None and any("auth" in x for x in salvaged.problems)


def test_a_malformed_alert_keeps_its_auth_marking_when_salvaged() -> None:
    body = json.loads(p.encode_alert(dataclasses.replace(make_alert(DEVICE), auth="tls")))
    body["site"]["name"] = "N" * 300
    salvaged = p.salvage_alert(json.dumps(body).encode(), topic_device=DEVICE)
    assert salvaged.alert.auth == "tls"


@pytest.mark.broker
def test_room_accepts_an_unsigned_alert_marked_auth_tls(tmp_path, pki_dir, broker, mqtt_client):
    marked = dataclasses.replace(make_alert(DEVICE), auth="tls")
    bare = make_alert(DEVICE)  # unsigned, unmarked: still flagged
    with Room(pki_dir, broker, tmp_path / "room.db") as room:  # checks signatures
        device = Device(mqtt_client, pki_dir, broker)
        device.publish(p.encode_alert(marked))
        device.cmds.wait_for("cmd", lambda d: d == {"cmd": "receipt", "alert_id": marked.alert_id,
                                                    "operator": None}, timeout=10)
        device.publish(p.encode_alert(bare))
        wait_until(lambda: len(room.events.of("alert")) >= 2, timeout=15, what="both handled")
        ok = room.receiver.store.incident(marked.alert_id)
        flagged = room.receiver.store.incident(bare.alert_id)
    assert ok is not None and ok.problems == ()
    assert flagged is not None and flagged.problems == ("signature missing",)
    (line,) = [x for x in room.lines if x.startswith("ALERT") and marked.alert_id[:8] in x]
    assert "FLAGGED" not in line and "authenticated by certificate" in line, line
    db = sqlite3.connect(tmp_path / "room.db")
    try:
        (sig,) = db.execute("SELECT signature_ok FROM incidents WHERE alert_id=?",
                            (marked.alert_id,)).fetchone()
    finally:
        db.close()
    assert sig is None  # not checked: there is no signature by design, none failed
