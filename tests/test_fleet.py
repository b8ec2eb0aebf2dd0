"""`pinkbutton-controlroom fleet`: the room's last heartbeat and self-test of each kiosk, one
line per kiosk, device text escaped, certificate WARN under 30 days; an older database gains
the table on open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from pinkbutton.firmware import protocol as p
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.cli import fleet_line
from pinkbutton.tools.controlroom.store import IncidentStore


def beat(device: str, **kw) -> p.Health:
    fields = dict(device_id=device, seq=1, uptime_s=5.0, interval_s=10.0, state="idle",
                  online_since=None, queue_depth=0, disk_free_mb=812.4, temperature_c=48.25,
                  last_selftest=None, selftest_ok=None, faults=(), firmware="0.1.0",
                  at=iso8601(time.time()), cert_days_left=400)
    fields.update(kw)
    return p.Health(**fields)  # type: ignore[arg-type]


def fleet(store: IncidentStore, now: float) -> dict[str, str]:
    return {row.device_id: fleet_line(row, now) for row in store.fleet()}


def test_one_line_per_kiosk_warn_at_29_days_not_30(tmp_path):
    store = IncidentStore(tmp_path / "room.db")
    now = time.time()
    store.set_device("pb-a-0001", True, "idle", "0.1.0", iso8601(now - 60))
    store.record_heartbeat(beat("pb-a-0001", cert_days_left=30), iso8601(now - 3))
    store.record_heartbeat(beat("pb-a-0002", cert_days_left=29), iso8601(now - 3))
    store.record_selftest("pb-a-0002", iso8601(now - 100), False, "camera,disk",
                          "camera: fault camera_failed")
    lines = fleet(store, now)
    a, b = lines["pb-a-0001"], lines["pb-a-0002"]
    assert a.startswith("pb-a-0001  online  heartbeat 3 s ago  selftest never  firmware 0.1.0"), a
    assert "cert 30 d" in a and "WARN" not in a, a
    assert "temp 48.2 C" in a or "temp 48.3 C" in a, a
    assert "disk 812 MiB free" in a, a
    assert "cert 29 d WARN" in b, b
    assert "selftest FAILED" in b and "(camera,disk)" in b and "camera_failed" in b, b
    # A heartbeat that says a newer self-test passed wins over the older event.
    store.record_heartbeat(beat("pb-a-0002", last_selftest=iso8601(now - 1), selftest_ok=True),
                           iso8601(now))
    assert "selftest ok" in fleet(store, now)["pb-a-0002"]
    # Heartbeats stopped more than 2 intervals (+1 s) ago: OFFLINE, whatever was stored.
    assert "  OFFLINE  heartbeat 2 min ago" in fleet(store, now + 120)["pb-a-0001"]
    store.close()


def test_device_text_is_escaped(tmp_path):
    store = IncidentStore(tmp_path / "room.db")
    now = time.time()
    store.record_heartbeat(beat("pb-a-0003", firmware="1\x1b[2J\nx"), iso8601(now))
    store.record_selftest("pb-a-0003", iso8601(now), False, "cam\x1b]0;pwn\x07",
                          "line1\nline2\u202e")
    line = fleet(store, now)["pb-a-0003"]
    assert "\x1b" not in line and "\n" not in line and "\u202e" not in line and "\x07" not in line
    assert "\\x1b" in line and "firmware 1\\x1b[2J\\x0ax" in line.replace("\\n", "\\x0a"), line
    store.close()


def test_an_older_database_gains_the_fleet_table_and_keeps_its_devices(tmp_path):
    db = tmp_path / "old.db"
    IncidentStore(db).close()
    old = sqlite3.connect(db)  # as a room from before fleet left it
    old.execute("DROP TABLE device_health")
    old.execute("INSERT INTO devices VALUES ('pb-old-0001', 0, 'offline', '0.0.9', "
                "'2026-11-30T10:00:00.000Z')")
    old.commit()
    old.close()
    store = IncidentStore(db)
    [row] = store.fleet()
    assert (row.device_id, row.online, row.heartbeat) == ("pb-old-0001", False, None)
    assert "pb-old-0001  OFFLINE  heartbeat never  selftest never  firmware ?" in fleet_line(
        row, time.time())
    store.record_heartbeat(beat("pb-old-0001"), iso8601(time.time()))
    assert store.fleet()[0].heartbeat is not None
    store.close()


def test_fleet_cli_exit_codes(tmp_path):
    db = tmp_path / "room.db"
    store = IncidentStore(db)
    store.record_heartbeat(beat("pb-a-0001"), iso8601(time.time()))
    store.close()
    run = [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "fleet", "--db"]
    ok = subprocess.run([*run, str(db)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == f"1 kiosk(s) in {db}"
    assert ok.stdout.splitlines()[1].startswith("pb-a-0001  online  heartbeat")
    missing = subprocess.run([*run, str(tmp_path / "nope.db")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
