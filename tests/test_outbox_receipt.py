"""Nothing lost: an alert leaves the kiosk's outbox only on the control room's receipt,
and a restarted kiosk replays what is still unconfirmed (same alert_id, one incident)."""

from __future__ import annotations

import pytest
from pinkbutton.firmware.outbox import Outbox
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.helpers import RunningKiosk, wait_until, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

pytestmark = pytest.mark.broker


def pending_ids(cfg_dir, device_id):
    box = Outbox(cfg_dir / f"state-{device_id}" / "outbox.db")
    try:
        return [d.alert_id for d in box.pending()]
    finally:
        box.close()


def test_broker_puback_alone_keeps_the_alert_pending(tmp_path, pki_dir, broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0001")
    with RunningKiosk(cfg) as kiosk:  # no control room listening: PUBACK, but no receipt
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("delivered")["alert_id"]
    assert pending_ids(tmp_path, "pb-test-0001") == [alert_id]


def test_restarted_kiosk_replays_unconfirmed_alert_once(tmp_path, pki_dir, broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0001")
    with RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("delivered")["alert_id"]
    # The kiosk "reboots" with a control room now listening.
    with RunningRoom(pki_dir, broker, tmp_path / "room.db", auto_ack=True) as room, \
            RunningKiosk(cfg) as kiosk:
        replay = kiosk.events.wait_for("replay")
        assert replay["count"] == 1
        got = kiosk.events.wait_for("receipt")
        assert got["alert_id"] == alert_id
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
        wait_until(lambda: room.receiver.store.incident(alert_id))
    assert pending_ids(tmp_path, "pb-test-0001") == []
    store = IncidentStore(tmp_path / "room.db")
    try:
        seen = [(i.alert_id, i.device_id, i.seq, i.pressed_at) for i in store.all_incidents()]
        assert [s[0] for s in seen if s[1] == "pb-test-0001"] == [alert_id], seen
    finally:
        store.close()


def test_receipt_removes_alert_from_outbox(tmp_path, pki_dir, broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0002")
    with RunningRoom(pki_dir, broker, tmp_path / "room.db", auto_ack=False), \
            RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("receipt")["alert_id"]
        assert kiosk.kiosk.state.mode == "streaming", "a receipt is not an operator ack"
    assert pending_ids(tmp_path, "pb-test-0002") == []
    assert alert_id


def test_delivered_alert_without_receipt_is_reannounced_before_the_ack_timeout(
    tmp_path, pki_dir, broker
):
    """The broker PUBACKs an alert nobody was subscribed to (or loses it when killed before
    persisting): the kiosk must not wait for the ack timeout's escalation to try again."""
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0003",
                             alert={"retry_s": 0.5, "ack_timeout_s": 600.0})
    with RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("delivered")["alert_id"]  # into the void
        with RunningRoom(pki_dir, broker, tmp_path / "room.db", auto_ack=False) as room:
            # Well before the 600 s ack timeout: a plain re-announcement, not an escalation.
            assert kiosk.events.wait_for("receipt", timeout=15)["alert_id"] == alert_id
            incident = wait_until(lambda: room.receiver.store.incident(alert_id))
            assert not incident.escalated
            assert kiosk.kiosk.state.mode == "streaming"
    assert pending_ids(tmp_path, "pb-test-0003") == []


def test_confirmed_incident_resumes_after_a_restart_until_the_room_ends_it(
    tmp_path, pki_dir, broker
):
    """A kiosk that stops mid-incident (crash, power cut, restart) after the room confirmed
    the alert takes the incident up again: the person is still there, the stream goes on."""
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0002")
    with RunningRoom(pki_dir, broker, tmp_path / "room.db", auto_ack=True) as room:
        with RunningKiosk(cfg) as kiosk:
            kiosk.events.wait_for("connected")
            kiosk.press()
            alert_id = kiosk.events.wait_for("receipt")["alert_id"]
            kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
        with RunningKiosk(cfg) as kiosk:
            started = kiosk.events.wait_for("stream_start")
            assert started["alert_id"] == alert_id
            # The room answers the re-announcement with its ack again: "help is coming".
            kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
            room.receiver.command(f"end {alert_id}")
            kiosk.events.wait_for("mode", lambda d: d["to"] == "cooldown")
        with RunningKiosk(cfg) as kiosk:  # ended: nothing to resume
            kiosk.events.wait_for("mode", lambda d: d["to"] == "idle")
            assert kiosk.events.of("stream_start") == []
        store = room.receiver.store
        assert [i.alert_id for i in store.all_incidents() if i.device_id == "pb-test-0002"] == [
            alert_id
        ]
