"""Two control-room receivers in one share group, one killed with SIGKILL (no DISCONNECT):
the survivor takes every later alert at once, on a real mosquitto over mTLS."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.tools.controlroom.intake import IntakeLimits
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.helpers import Recorder, RunningKiosk, room_tls, write_kiosk_config
from tests.test_controlroom import ROOT, LineReader, make_alert

DEVICE = "pb-test-0002"


@pytest.mark.broker
def test_killed_receiver_stops_taking_alerts_at_once(tmp_path, pki_dir, broker, mqtt_client):
    group = f"failover-{secrets.token_hex(3)}"
    victim = subprocess.Popen(
        [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run", "--host", "localhost",
         "--port", str(broker.port), "--pki", str(pki_dir), "--db", str(tmp_path / "dead.db"),
         "--no-evidence", "--client-id", f"{group}-dead", "--group", group,
         "--exit-after", "120"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    events = Recorder()
    survivor = ControlRoomReceiver(
        host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=tmp_path / "live.db",
        client_id=f"{group}-live", group=group, out=lambda _line: None, listeners=[events],
        # One device id stands for the presses of many kiosks here: lift its flood limit
        # (tests/test_flood.py covers that limit).
        limits=IntakeLimits(rate_per_s=1000, burst=1000),
    )
    thread = threading.Thread(target=survivor.run, daemon=True)
    thread.start()
    device = mqtt_client(pki_dir, DEVICE, broker)

    def send(seq: int) -> str:
        a = make_alert(DEVICE, seq=seq)
        device.publish(p.topic(DEVICE, "alert"), p.encode_alert(a), qos=1).wait_for_publish(5)
        return a.alert_id

    try:
        out, err = LineReader(victim.stdout), LineReader(victim.stderr)
        err.wait_for("connected to broker", timeout=30)
        events.wait_for("connected", timeout=30)
        time.sleep(0.5)  # both share-group SUBACKs in
        # Both really are members of the group: alerts go to the victim too.
        for seq in range(1, 41):
            send(seq)
            time.sleep(0.05)
            if any(f"ALERT  {DEVICE}" in line for line in out.lines):
                break
        out.wait_for(f"ALERT  {DEVICE}", timeout=10)
        victim.send_signal(signal.SIGKILL)  # the process vanishes: no DISCONNECT
        victim.wait(10)
        time.sleep(0.3)  # the broker reads the closed socket

        waits = []
        for seq in range(100, 120):
            t0 = time.monotonic()
            alert_id = send(seq)
            events.wait_for("alert", lambda d, a=alert_id: d["alert_id"] == a, timeout=1.0)
            waits.append(time.monotonic() - t0)
        print(f"20 alerts after the kill: max {max(waits) * 1000:.1f} ms")
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        survivor.stop()
        thread.join(10)


def start_receiver(pki_dir, broker, db, client_id: str, group: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run", "--host", "localhost",
         "--port", str(broker.port), "--pki", str(pki_dir), "--db", str(db), "--no-evidence",
         "--client-id", client_id, "--group", group, "--exit-after", "120"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.broker
def test_alert_pressed_while_the_room_is_down_reaches_it_when_it_restarts(
    tmp_path, pki_dir, broker
):
    """What a receiver's session (expiry 0) no longer keeps, the kiosk re-announces: an alert
    pressed between a kill -9 of the only receiver and its restart (same client id, same db)
    is stored and receipted soon after the restart, once."""
    group, db = f"restart-{secrets.token_hex(3)}", tmp_path / "room.db"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0001",
                             alert={"retry_s": 0.5, "ack_timeout_s": 600.0})
    procs = []
    try:
        with RunningKiosk(cfg) as kiosk:
            first = start_receiver(pki_dir, broker, db, f"{group}-room", group)
            procs.append(first)
            LineReader(first.stderr).wait_for("connected to broker", timeout=30)
            kiosk.events.wait_for("connected")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            kiosk.press()
            alert_id = kiosk.events.wait_for("delivered")["alert_id"]  # PUBACK: into the void
            time.sleep(1.0)  # two retry periods with nobody to receive them
            assert kiosk.events.of("receipt") == []
            second = start_receiver(pki_dir, broker, db, f"{group}-room", group)
            procs.append(second)
            out = LineReader(second.stdout)
            t0 = time.monotonic()
            assert kiosk.events.wait_for("receipt", timeout=30)["alert_id"] == alert_id
            print(f"receipt {time.monotonic() - t0:.2f} s after the restart began")
            out.wait_for("ALERT  pb-test-0001", timeout=10)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    room = IncidentStore(db)
    try:
        assert [i.alert_id for i in room.all_incidents()] == [alert_id]
    finally:
        room.close()
