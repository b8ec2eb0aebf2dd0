"""One device flooding the room (issue 9 item 5): per-device limits at the control room.

End to end on the real broker: a device publishes ~1000 signed alerts in ~1 s with its real
certificate (mosquitto_pub, a process of its own) while another device's kiosk presses.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from pinkbutton.firmware import protocol as p
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.intake import IntakeLimits
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.pki import ca_paths, device_paths

from tests.helpers import Recorder, RunningKiosk, room_tls, wait_until, write_kiosk_config

SITE = p.Site("flood-site", "Flood Bazaar", 34.0, 71.5)
FLOOD = 1000


def signed_alerts(pki_dir, device_id: str, n: int) -> list[bytes]:
    key = serialization.load_pem_private_key(
        device_paths(pki_dir, device_id).key.read_bytes(), password=None)
    now = iso8601(time.time())
    return [p.encode_alert(p.Alert(
        device_id=device_id, alert_id=str(uuid.uuid4()), seq=i + 1, kind="emergency",
        pressed_at=now, pressed_mono=100.0, age_ms=5, announce=1, escalated=False, presses=1,
        site=SITE, firmware="0.1.0", sent_at=now), key) for i in range(n)]


def flood(pki_dir, broker, device_id: str, payloads: list[bytes], seconds: float) -> None:
    """mosquitto_pub -l with the device's own certificate: one QoS 1 alert per line, the
    lines written in ten slices over `seconds`."""
    dev = device_paths(pki_dir, device_id)
    proc = subprocess.Popen(
        ["mosquitto_pub", "-h", "localhost", "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
         "-t", p.topic(device_id, "alert"), "-l", "--cafile", str(ca_paths(pki_dir).cert),
         "--cert", str(dev.cert), "--key", str(dev.key)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        step = max(1, len(payloads) // 10)
        for i in range(0, len(payloads), step):
            proc.stdin.write(b"".join(x + b"\n" for x in payloads[i:i + step]))
            proc.stdin.flush()
            time.sleep(seconds / 10)
        proc.stdin.close()
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def accounted(db, device_id: str, events: Recorder) -> int:
    store = IncidentStore(db)
    try:
        incidents = [i for i in store.all_incidents() if i.device_id == device_id]
        folded = sum(len(store.folded_into(i.alert_id)) for i in incidents)
    finally:
        store.close()
    dropped = sum(d["dropped"] for d in events.of("flood") if d["device_id"] == device_id)
    return len(incidents) + folded + dropped


@pytest.mark.broker
def test_one_device_flooding_does_not_hold_back_another_kiosk(
        tmp_path, pki_dir, broker, caplog):
    if shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto_pub not installed")
    caplog.set_level(logging.INFO, logger="pinkbutton.controlroom")
    flooder, kiosk_id = "pb-test-0002", "pb-test-0001"
    payloads = signed_alerts(pki_dir, flooder, FLOOD)
    events = Recorder()
    room = ControlRoomReceiver(
        host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=tmp_path / "room.db",
        client_id=f"flood-{uuid.uuid4().hex[:6]}", group=f"flood-{uuid.uuid4().hex[:6]}",
        auto_ack=True, device_certs=pki_dir / "devices", out=lambda _line: None,
        listeners=[events], limits=IntakeLimits(summary_s=1.0))
    room_thread = threading.Thread(target=room.run, name="room-under-test", daemon=True)
    room_thread.start()
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, kiosk_id)
    try:
        with RunningKiosk(cfg) as kiosk:
            events.wait_for("status", lambda d: d["device_id"] == kiosk_id, timeout=15)
            flooding = threading.Thread(
                target=flood, args=(pki_dir, broker, flooder, payloads, 1.0), daemon=True)
            flooding.start()
            events.wait_for("alert", lambda d: d["device_id"] == flooder, timeout=15)
            time.sleep(0.3)  # the flood is on
            t0 = time.monotonic()
            kiosk.button.press()  # held until the receipt: the alert goes out after debounce
            kiosk.events.wait_for("persisted", timeout=10)
            alert_id = kiosk.events.of("persisted")[0]["alert_id"]
            got = events.wait_for("alert", lambda d: d["alert_id"] == alert_id, timeout=30)
            room_ms = (time.monotonic() - t0) * 1000
            kiosk.events.wait_for("receipt", lambda d: d["alert_id"] == alert_id, timeout=30)
            receipt_ms = (time.monotonic() - t0) * 1000
            kiosk.button.release()
            assert got["new"] is True
            flooding.join(40)
            assert not flooding.is_alive()
            # Every flooded alert is accounted for: an incident, folded into one, or counted
            # as dropped unread in a summary line.
            wait_until(lambda: accounted(tmp_path / "room.db", flooder, events) >= FLOOD,
                       timeout=30, what="every flooded alert accounted for")
            time.sleep(1.5)  # one more summary interval: nothing else may turn up
            assert accounted(tmp_path / "room.db", flooder, events) == FLOOD
    finally:
        room.stop()
        room_thread.join(20)
    print(f"press -> incident at room {room_ms:.0f} ms, -> receipt at kiosk {receipt_ms:.0f} ms")
    # Includes the 50 ms debounce: ~55 ms during this flood. Before the limits the room
    # handled the flood first: 830-945 ms on the same machine (the issue saw 1.2 s).
    assert room_ms < 400, f"press took {room_ms:.0f} ms to reach the room during the flood"
    assert receipt_ms < 800, f"receipt came {receipt_ms:.0f} ms after the press"
    store = IncidentStore(tmp_path / "room.db")
    try:
        mine = [i for i in store.all_incidents() if i.device_id == kiosk_id]
        theirs = [i for i in store.all_incidents() if i.device_id == flooder]
    finally:
        store.close()
    assert [i.alert_id for i in mine] == [alert_id]
    # The device's burst (IntakeLimits.burst) goes the normal way; everything after it folds.
    assert 1 <= len(theirs) <= IntakeLimits().burst, f"{len(theirs)} incidents from the flood"
    assert max(i.presses for i in theirs) > 1
    assert sum(i.presses for i in theirs) == len(theirs) + sum(i.folded for i in theirs)
    summary = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("alert flood from pb-test-0002")]
    assert len(summary) >= 1 and all("\n" not in s for s in summary)
