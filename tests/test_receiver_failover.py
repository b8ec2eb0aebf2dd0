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

from firmware import protocol as p
from tests.helpers import Recorder, room_tls
from tests.test_controlroom import ROOT, LineReader, make_alert
from tools.controlroom.receiver import ControlRoomReceiver

DEVICE = "pb-test-0002"


@pytest.mark.broker
def test_killed_receiver_stops_taking_alerts_at_once(tmp_path, pki_dir, broker, mqtt_client):
    group = f"failover-{secrets.token_hex(3)}"
    victim = subprocess.Popen(
        [sys.executable, "-m", "tools.controlroom.cli", "run", "--host", "localhost",
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
