"""The running kiosk's control socket and `pinkbutton-diag status`: a real Kiosk on fake
hardware, the real mosquitto over mTLS, a control room played by a real MQTT client."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.diag.cli import main
from pinkbutton.firmware.diag.control import NotRunning, request

from tests.helpers import RunningKiosk, assert_one_line_error, wait_until, write_kiosk_config

DEVICE = "pb-test-0002"
HOSTILE_OPERATOR = "officer \x1b[2J\u202eKHAN"


def kiosk_config(tmp_path: Path, pki_dir: Path, port: int) -> Path:
    path = write_kiosk_config(tmp_path, pki_dir, port, DEVICE)
    path.write_text(path.read_text() + "\n[media]\nvideo = false\naudio = false\n")
    return path


def started(kiosk: RunningKiosk) -> Path:
    sock = kiosk.config.device.state_dir / "control.sock"
    wait_until(sock.exists, what="control socket")
    return sock


def diag(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_control_socket_is_owner_only_and_removed_on_stop(tmp_path, pki_dir, broker):
    cfg = kiosk_config(tmp_path, pki_dir, broker.port)
    old = os.umask(0o000)  # whatever the umask, the socket is 0600 in a 0700 directory
    try:
        with RunningKiosk(cfg) as kiosk:
            sock = started(kiosk)
            mode = sock.stat().st_mode
            assert stat.S_ISSOCK(mode)
            assert stat.S_IMODE(mode) == 0o600
            assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)
    assert not sock.exists()


def test_status_of_a_running_kiosk_after_an_acknowledged_alert(capsys, tmp_path, pki_dir,
                                                                broker, mqtt_client):
    room = mqtt_client(pki_dir, "controlroom", broker)
    alerts: list[p.Alert] = []
    room.on_message = lambda _c, _u, msg: alerts.append(p.decode_alert(msg.payload))
    room.subscribe(p.topic(DEVICE, "alert"), qos=1)
    cfg = kiosk_config(tmp_path, pki_dir, broker.port)
    with RunningKiosk(cfg) as kiosk:
        started(kiosk)
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert = wait_until(lambda: alerts and alerts[0], what="alert at the room")
        for cmd in ("receipt", "ack"):
            c = p.Cmd(cmd=cmd, cmd_id=str(uuid.uuid4()), sent_at="2026-12-01T00:00:00.000Z",
                      alert_id=alert.alert_id, operator=HOSTILE_OPERATOR)
            room.publish(p.topic(DEVICE, "cmd"), p.encode_cmd(c), qos=1)
        kiosk.events.wait_for("mode", lambda d: d["to"] == "acknowledged")
        code, doc = diag(capsys, "status", "--config", str(cfg))
        human_code = main(["status", "--config", str(cfg)])
        human = capsys.readouterr().out
    assert code == 0, doc
    s = doc["status"]
    assert s["device_id"] == DEVICE and s["state"] == "acknowledged"
    assert s["broker_connected"] is True and s["outbox_depth"] == 0
    assert s["last_alert"]["alert_id"] == alert.alert_id
    assert s["last_alert"]["outcome"] == "acknowledged"
    assert s["last_alert"]["operator"] == HOSTILE_OPERATOR
    assert s["uptime_s"] > 0 and s["faults"] == []
    names = [c["name"] for c in doc["checks"]]
    assert names == ["firmware", "faults", "broker", "outbox", "last alert", "evidence",
                     "selftest", "certificate"]
    assert all(c["ok"] for c in doc["checks"])
    assert human_code == 0
    assert "\x1b" not in human and "\u202e" not in human  # the operator's text is escaped
    assert "acknowledged by officer \\x1b[2J\\u202eKHAN" in human
    assert human.splitlines()[0].startswith("✓ firmware: running for ")


def test_status_names_an_alert_the_room_has_not_confirmed(capsys, tmp_path, pki_dir, broker):
    cfg = kiosk_config(tmp_path, pki_dir, broker.port)  # no control room subscribed
    with RunningKiosk(cfg) as kiosk:
        started(kiosk)
        kiosk.events.wait_for("connected")
        kiosk.press()
        kiosk.events.wait_for("delivered")
        code, doc = diag(capsys, "status", "--config", str(cfg))
    assert code == 1
    bad = {c["name"]: c for c in doc["checks"] if not c["ok"]}
    assert list(bad) == ["outbox"]
    assert bad["outbox"]["detail"] == "1 alert(s) not yet confirmed by the control room"
    assert doc["status"]["last_alert"]["outcome"] == "delivered to the broker"


def test_status_without_firmware_says_not_running(tmp_path, pki_dir):
    cfg = kiosk_config(tmp_path, pki_dir, 1)
    proc = subprocess.run([sys.executable, "-m", "pinkbutton.firmware.diag.cli", "status", "--config",
                           str(cfg), "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert doc["checks"][0]["name"] == "firmware"
    assert doc["checks"][0]["detail"].startswith("not running (nothing answers on ")


def test_silent_clients_never_hold_up_an_alert(tmp_path, pki_dir, broker):
    cfg = kiosk_config(tmp_path, pki_dir, broker.port)
    with RunningKiosk(cfg) as kiosk:
        sock = started(kiosk)
        kiosk.events.wait_for("connected")
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
        try:
            for c in idle:  # connect, then say nothing: the server is busy for 3 x 2 s
                c.connect(str(sock))
            pressed = time.monotonic()
            kiosk.press(hold=0.1)
            kiosk.events.wait_for("delivered", timeout=5)
            assert time.monotonic() - pressed < 5.0  # well before the control thread is free
        finally:
            for c in idle:
                c.close()
        status = request(sock, "status", timeout_s=10)  # served again once they hang up
        assert status["last_alert"]["outcome"] == "delivered to the broker"


def test_stale_socket_is_replaced_and_bad_requests_are_refused(tmp_path, pki_dir, broker):
    cfg = kiosk_config(tmp_path, pki_dir, broker.port)
    state = tmp_path / f"state-{DEVICE}"
    state.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(state / "control.sock"))  # a kiosk that died left it behind
    with RunningKiosk(cfg):
        sock = state / "control.sock"

        def answers() -> dict | None:
            try:
                return request(sock, "status")
            except NotRunning:
                return None

        assert wait_until(answers, what="the kiosk serving")["device_id"] == DEVICE
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(5)
            c.connect(str(sock))
            c.sendall(b"not json\n")
            reply = json.loads(c.makefile().readline())
        assert reply == {"ok": False, "error": "unknown request (known: status, test-alert)"}


def test_bad_usage_and_bad_config_exit_2_in_one_line(tmp_path):
    def diag_cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pinkbutton.firmware.diag.cli", *argv],
                              capture_output=True, text=True, timeout=60)

    assert_one_line_error(diag_cli(), "usage error")
    assert_one_line_error(diag_cli("selftest"), "--config")
    assert_one_line_error(diag_cli("status", "--config", str(tmp_path / "none.toml")),
                          "none.toml", "cannot read config")
    assert_one_line_error(diag_cli("selftest", "--config", "x.toml", "--press-timeout", "0"),
                          "--press-timeout")
    assert_one_line_error(diag_cli("selftest", "--config", "x.toml", "--snapshot", "a.gif"),
                          ".png, .jpg or .jpeg")
    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\nid = 3\n")
    assert_one_line_error(diag_cli("check-config", str(bad), "--json"), "bad.toml")


def test_a_state_dir_deeper_than_a_socket_address_still_works(capsys, tmp_path, pki_dir, broker):
    deep = tmp_path / ("deep-" * 20)  # the socket path is over the 107 bytes of sun_path
    deep.mkdir()
    cfg = kiosk_config(deep, pki_dir, broker.port)
    with RunningKiosk(cfg) as kiosk:
        sock = started(kiosk)
        assert len(os.fsencode(sock)) > 107
        kiosk.events.wait_for("connected")
        code, doc = diag(capsys, "status", "--config", str(cfg))
    assert code == 0, doc
    assert doc["status"]["device_id"] == DEVICE


def test_status_names_a_fault_and_a_broker_it_cannot_reach(capsys, tmp_path, pki_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = kiosk_config(tmp_path, pki_dir, port)
    with RunningKiosk(cfg) as kiosk:
        started(kiosk)
        # The boot self-test first: a fault raised before it finishes fails it too (then
        # `selftest` is a failing check as well: test_status_names_the_checks_the_boot_...).
        kiosk.events.wait_for("selftest")
        kiosk.kiosk.report_fault("camera_failed", "ValueError: numpy.dtype size changed")
        kiosk.events.wait_for("mode", lambda d: d["to"] == "fault")
        code, doc = diag(capsys, "status", "--config", str(cfg))
    assert code == 1
    bad = {c["name"]: c["detail"] for c in doc["checks"] if not c["ok"]}
    assert bad == {"faults": "camera_failed", "broker": f"not connected to localhost:{port}"}
    assert doc["status"]["state"] == "fault"


def test_status_names_the_checks_the_boot_selftest_failed(capsys, tmp_path, pki_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there: the kiosk runs offline
    cfg = kiosk_config(tmp_path, pki_dir, port)
    kiosk = RunningKiosk(cfg)
    # As run_kiosk() does when the camera library fails: the fault comes before the boot.
    kiosk.kiosk.report_fault("camera_failed", "ValueError: numpy.dtype size changed")
    with kiosk:
        kiosk.events.wait_for("selftest")
        started(kiosk)  # the socket is made on its own thread: it may come after the event
        code, doc = diag(capsys, "status", "--config", str(cfg))
    assert code == 1
    bad = {c["name"]: c["detail"] for c in doc["checks"] if not c["ok"]}
    assert bad["selftest"].endswith("failed: camera"), bad
    assert doc["status"]["last_selftest_ok"] is False
