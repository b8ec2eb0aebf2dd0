"""Self-tests in operation (issue 11 item 2), end to end over the real broker and mTLS: a
kiosk whose camera failed to open reports a failed self-test naming the camera (not `ok`),
its heartbeat says so with the certificate's days left, the room stores it and `fleet` shows
it; `selftest DEVICE|all` typed in the room runs the self-test on the kiosk again."""

from __future__ import annotations

import contextlib
import io
import threading

import pytest
from pinkbutton.firmware.app import Kiosk, open_media_devices
from pinkbutton.firmware.config import load_config
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.tools.controlroom import cli as room_cli

from tests.helpers import Recorder, RunningKiosk, wait_until, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]


class BrokenCameraBackend(FakeBackend):
    """A camera library that blows up on open, as picamera2 can on a Pi."""

    def camera(self, *args, **kwargs):
        raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")


def selftests_of(room: RunningRoom, device: str) -> list[dict]:
    return [e["detail"] for e in room.events.of("event")
            if e["device_id"] == device and e["kind"] == "selftest"]


def fleet_output(db) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert room_cli.main(["fleet", "--db", str(db)]) == 0
    return out.getvalue().splitlines()


def test_a_failed_camera_fails_the_selftest_by_name_and_the_fleet_shows_it(
        tmp_path, pki_dir, fresh_broker):
    device = "pb-test-0001"
    cfg_path = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, device)
    cfg_path.write_text(cfg_path.read_text() + "\n[health]\ninterval_s = 0.5\n")
    config = load_config(cfg_path)
    clock = Clock()
    backend = BrokenCameraBackend()
    # As run_kiosk() builds it: the camera fault is raised before the kiosk runs.
    camera, microphone, faults = open_media_devices(backend, clock, config)
    assert camera is None and [f for f, _ in faults] == ["camera_failed"]
    events = Recorder()
    kiosk = Kiosk(config, backend.button(clock, 17, 0.05), backend.indicator(clock, 27),
                  clock=clock, listeners=[events], camera=None, microphone=microphone)
    for name, why in faults:
        kiosk.report_fault(name, why)
    db = tmp_path / "room.db"
    thread = threading.Thread(target=kiosk.run, daemon=True)
    with RunningRoom(pki_dir, fresh_broker, db) as room:
        thread.start()
        try:
            detail = wait_until(lambda: selftests_of(room, device), 30, "selftest event")[0]
            assert detail["ok"] is False, detail
            assert "camera" in detail["failed"].split(","), detail
            assert "camera_failed" in detail["why"], detail
            assert "microphone" not in detail["failed"], detail  # the mic works
            beat = room.events.wait_for(
                "health", lambda d: d["device_id"] == device, timeout=15)
            assert "camera_failed" in beat["faults"]
            wait_until(lambda: room.receiver.store.fleet()
                       and room.receiver.store.fleet()[0].heartbeat
                       and room.receiver.store.fleet()[0].heartbeat["selftest_ok"] is False,
                       15, "a heartbeat after the self-test")
            lines = fleet_output(db)  # read beside the running room (SQLite WAL)
        finally:
            kiosk.stop()
            thread.join(10)
    assert lines[0].startswith("1 kiosk(s)")
    line = lines[1]
    assert line.startswith(f"{device}  online  heartbeat "), line
    assert "selftest FAILED" in line and "(camera)" in line, line
    assert "firmware " in line and "cert " in line and "cert ?" not in line, line
    days = int(line.split("cert ")[1].split(" d")[0])
    assert days > 30 and "WARN" not in line, line  # the test PKI's certificates are fresh
    print(line)


def test_selftest_typed_in_the_room_runs_it_on_the_kiosk(tmp_path, pki_dir, fresh_broker):
    device = "pb-test-0002"
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, device)
    cfg.write_text(cfg.read_text() + "\n[media]\nwidth = 320\nheight = 240\nfps = 10.0\n")
    with RunningRoom(pki_dir, fresh_broker, tmp_path / "room.db") as room, \
            RunningKiosk(cfg, media=True) as kiosk:
        first = wait_until(lambda: selftests_of(room, device), 30, "boot selftest")[0]
        # Camera and microphone judged on the running pipeline's captures: all good.
        assert first == {"ok": True, "faults": ""}, first
        kiosk.events.wait_for("health", timeout=15)  # the room knows the kiosk now
        wait_until(lambda: room.receiver.store.fleet(), 10, "kiosk in the fleet")
        room.receiver.command("selftest all")
        wait_until(lambda: len(selftests_of(room, device)) >= 2, 30, "selftest on command")
        assert any("SELFTEST asked of 1 kiosk(s): pb-test-0002" in ln for ln in room.lines)
        room.receiver.command(f"selftest {device}")
        wait_until(lambda: len(selftests_of(room, device)) >= 3, 30, "selftest on command")
        assert len(kiosk.events.of("selftest")) == 3
        assert all(e["ok"] for e in kiosk.events.of("selftest"))
        room.receiver.command("selftest Bad\x1b[2J")
        wait_until(lambda: any("is not a device id" in ln for ln in room.lines), 5)
        assert not any("\x1b" in ln for ln in room.lines)
