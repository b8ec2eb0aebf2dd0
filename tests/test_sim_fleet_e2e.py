"""`pinkbutton-sim fleet` end to end: a real mosquitto over mTLS (tests/conftest.py), a real
control room receiver, the fleet as a user runs it (a subprocess, commands on its stdin, one
line per change on its stdout)."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pinkbutton.tools.pki import issue_fleet

from tests.test_e2e_alert import RunningRoom

ROOT = Path(__file__).resolve().parent.parent
PESHAWAR = ROOT / "examples" / "fleets" / "peshawar.toml"

pytestmark = pytest.mark.broker


class FleetProcess:
    """`pinkbutton-sim fleet` in a subprocess; its stdout lines are collected by a thread."""

    def __init__(self, fleet_file: Path, pki_dir: Path, state_dir: Path, port: int,
                 *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pinkbutton.simulator.cli", "fleet", str(fleet_file),
             "--pki", str(pki_dir), "--state-dir", str(state_dir),
             "--broker", f"localhost:{port}", "--exit-after", "170", *extra],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)

    def wait_line(self, *words: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if all(w in line for w in words):
                    return line
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no line with {words} within {timeout} s; last lines: "
                                     f"{self.lines[-15:]}; stderr: {self._stderr()}")
            try:
                self._new.get(timeout=min(left, 0.5))
            except queue.Empty:
                pass

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def quit(self, timeout: float = 30.0) -> int:
        self.send("quit")
        return self.proc.wait(timeout)

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read()[-2000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def short_dir() -> Iterator[Path]:
    """State under a short path: each kiosk's control socket must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pbf-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def room_fleet(db: Path) -> dict[str, str]:
    """`pinkbutton-controlroom fleet`: device id -> online/OFFLINE, as an officer reads it."""
    proc = subprocess.run([sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "fleet",
                           "--db", str(db)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return {}
    out = {}
    for line in proc.stdout.splitlines()[1:]:
        words = line.split()
        if len(words) >= 2:
            out[words[0]] = words[1]
    return out


def wait_room_online(db: Path, ids: list[str], timeout: float) -> dict[str, str]:
    end = time.monotonic() + timeout
    while True:
        seen = room_fleet(db)
        if all(seen.get(i) == "online" for i in ids):
            return seen
        if time.monotonic() > end:
            missing = [i for i in ids if seen.get(i) != "online"]
            raise AssertionError(f"{len(missing)} of {len(ids)} not online in the room: "
                                 f"{missing[:10]}")
        time.sleep(1.0)


SMALL = """
[fleet]
name = "Small town"
device_prefix = "pb-sf-"
pki = "unused"
state_dir = "unused"

[kiosk.health]
interval_s = 1.0
monitor_interval_s = 0.2
camera_covered_s = 1.0
button_stuck_s = 1.0

[kiosk.broker]
backoff_min_s = 0.1
backoff_max_s = 1.0

[[site]]
id = "bazaar"
name = "Small Bazaar"
kind = "market"
lat = 34.0079
lon = 71.5785

[[site]]
id = "covered"
name = "Covered Camera College"
kind = "college"
lat = 34.0040
lon = 71.4900
quirks.camera_covered = true

[[site]]
id = "stuck"
name = "Stuck Button Bus Stand"
kind = "bus_stand"
lat = 34.0205
lon = 71.5930
quirks.stuck_button = true

[[site]]
id = "flaky"
name = "Flaky Link Park"
kind = "park"
lat = 34.0010
lon = 71.5880
quirks.flaky_link = { loss = 0.05, latency_ms = 50 }

[[site]]
id = "slow"
name = "Slow Disk University"
kind = "university"
lat = 34.0006
lon = 71.4856
quirks.slow_disk = { delay_ms = 100 }

[[site]]
id = "quiet"
name = "Quiet Market"
kind = "market"
lat = 34.0125
lon = 71.5760
"""


def test_small_fleet_comes_online_presses_reach_the_room_and_quirks_show(
        tmp_path, pki_dir, broker):
    fleet_file = tmp_path / "small.toml"
    fleet_file.write_text(SMALL)
    issue_fleet(fleet_file, pki_dir)
    ids = [f"pb-sf-{s}" for s in ("bazaar", "covered", "stuck", "flaky", "slow", "quiet")]
    db = tmp_path / "room.db"
    with short_dir() as state, RunningRoom(pki_dir, broker, db, auto_ack=True) as room:
        fleet = FleetProcess(fleet_file, pki_dir, state, broker.port)
        try:
            fleet.wait_line("fleet: all 6 devices online", timeout=60)
            seen = wait_room_online(db, ids, timeout=30)
            # The session's broker is shared with earlier tests of this worker: their kiosks'
            # retained status messages list them in this room too. This fleet's are these six.
            assert sorted(d for d in seen if d.startswith("pb-sf-")) == sorted(ids)
            # a press typed as a command reaches the room and the officer's ack comes back
            fleet.send("press bazaar")
            fleet.wait_line("bazaar  pb-sf-bazaar  ", "ack by officer-1", timeout=30)
            fleet.wait_line("bazaar  pb-sf-bazaar  ", "indicator help_coming", timeout=10)
            alert = room.events.wait_for("alert", lambda d: d.get("device_id") == "pb-sf-bazaar",
                                         timeout=10)
            assert alert["new"]
            # so does one through the slow disk and one through the flaky link (bare site id)
            fleet.send("slow")
            fleet.send("press flaky")
            fleet.wait_line("slow  pb-sf-slow  ", "ack by officer-1", timeout=30)
            fleet.wait_line("flaky  pb-sf-flaky  ", "ack by officer-1", timeout=30)
            # quirks show on the fleet's lines and reach the room as fault events
            fleet.wait_line("covered  pb-sf-covered  ", "fault camera_covered", timeout=30)
            fleet.wait_line("stuck  pb-sf-stuck  ", "fault button_stuck", timeout=30)
            for device, fault in (("pb-sf-covered", "camera_covered"),
                                  ("pb-sf-stuck", "button_stuck")):
                end = time.monotonic() + 20
                # `fault NAME: why` when raised online, `faults: NAME` in the event that
                # reports the faults raised before the kiosk was connected
                while not any(device in line and fault in line and "fault" in line
                              for line in room.lines if line.startswith("EVENT")):
                    assert time.monotonic() < end, (device, fault, [x for x in room.lines if device in x])
                    time.sleep(0.2)
            # `hold SITE S`: held past button_stuck_s (1 s) it is stuck until released
            assert not any(line.startswith("quiet ") and "button" in line for line in fleet.lines)
            fleet.send("hold quiet 2.5")
            fleet.wait_line("quiet  pb-sf-quiet  ", "fault button_stuck", timeout=20)
            fleet.wait_line("quiet  pb-sf-quiet  ", "fault cleared button_stuck", timeout=20)
            # an unknown site is an answer, not a crash
            fleet.send("press nowhere")
            fleet.wait_line("fleet: no site 'nowhere'", timeout=10)
            assert fleet.quit() == 0
        finally:
            fleet.kill()


def test_fleet_in_worker_processes_comes_online_and_routes_presses(tmp_path, pki_dir, broker):
    fleet_file = tmp_path / "small.toml"
    fleet_file.write_text(SMALL)
    issue_fleet(fleet_file, pki_dir)
    ids = [f"pb-sf-{s}" for s in ("bazaar", "covered", "stuck", "flaky", "slow", "quiet")]
    db = tmp_path / "room.db"
    with short_dir() as state, RunningRoom(pki_dir, broker, db, auto_ack=True) as room:
        fleet = FleetProcess(fleet_file, pki_dir, state, broker.port, "--workers", "2")
        try:
            fleet.wait_line("fleet: all 6 devices online", "2 worker processes", timeout=60)
            wait_room_online(db, ids, timeout=30)
            # sites are dealt round-robin: bazaar to worker 1, covered to worker 2
            fleet.send("press covered")
            fleet.send("bazaar")
            for sid in ("covered", "bazaar"):
                fleet.wait_line(f"{sid}  pb-sf-{sid}  ", "ack by officer-1", timeout=30)
                room.events.wait_for("alert", lambda d, i=f"pb-sf-{sid}": d.get("device_id") == i,
                                     timeout=10)
            fleet.send("press nowhere")
            fleet.wait_line("fleet: no site 'nowhere'", timeout=10)
            assert fleet.quit() == 0
        finally:
            fleet.kill()


@pytest.mark.heavy
def test_all_68_devices_of_peshawar_come_online_in_the_room(tmp_path, pki_dir, broker):
    """Heavier: the shipped 68-site fleet in one process against the real broker and room
    (bounded: 90 s in all)."""
    start = time.monotonic()
    done = issue_fleet(PESHAWAR, pki_dir)
    ids = done.issued + done.kept
    assert len(ids) == 68
    db = tmp_path / "room.db"
    with short_dir() as state, RunningRoom(pki_dir, broker, db, auto_ack=True):
        fleet = FleetProcess(PESHAWAR, pki_dir, state, broker.port)
        try:
            fleet.wait_line("fleet: all 68 devices online", timeout=60)
            left = 85 - (time.monotonic() - start)
            seen = wait_room_online(db, ids, timeout=max(5.0, left - 10))
            assert sum(v == "online" for v in seen.values()) >= 68
            assert fleet.quit(timeout=20) == 0
        finally:
            fleet.kill()
    assert time.monotonic() - start < 90
