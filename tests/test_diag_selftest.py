"""`pinkbutton-diag selftest` on the fake HAL in its good and each bad mode, against the real
mosquitto over mTLS: exit code and the JSON document asserted for each."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import av
import pytest
from pinkbutton.firmware.config import load_config
from pinkbutton.firmware.diag.cli import main
from pinkbutton.firmware.diag.selftest import run_selftest
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.tools.pki import init_dev_pki, issue

from tests.helpers import RunningKiosk, wait_until, write_kiosk_config

DEVICE = "pb-test-0001"
NO_MEDIA = "\n[media]\nvideo = false\naudio = false\n"


def run(capsys, argv: list[str], backend=None) -> tuple[int, dict]:
    code = main([*argv, "--json"], backend=backend)
    out = capsys.readouterr().out
    return code, json.loads(out)


def by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


def config(tmp_path: Path, pki_dir: Path, port: int, *, media: bool = True, **kw) -> Path:
    path = write_kiosk_config(tmp_path, pki_dir, port, DEVICE, **kw)
    if not media:
        path.write_text(path.read_text() + NO_MEDIA)
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_everything_good_exits_0_with_every_check_named(capsys, tmp_path, pki_dir, broker):
    cfg = config(tmp_path, pki_dir, broker.port)
    code, doc = run(capsys, ["selftest", "--config", str(cfg)], FakeBackend())
    assert code == 0, doc
    assert doc["ok"] is True
    assert [c["name"] for c in doc["checks"]] == [
        "button", "indicator", "camera", "microphone", "disk", "temperature", "clock",
        "certificate", "dns", "network"]
    for c in doc["checks"]:
        assert set(c) - {"values"} == {"name", "ok", "detail", "fix"}, c  # values: measured
        assert c["ok"] and c["fix"] is None
    assert re.search(r"MQTT CONNACK \d+ ms", by_name(doc)["network"]["detail"])


@pytest.mark.parametrize(("backend", "name", "words"), [
    (FakeBackend(camera_mode="covered"), "camera", "covered or black"),
    (FakeBackend(camera_mode="frozen"), "camera", "frozen: 5 frames"),
    (FakeBackend(microphone_mode="silent"), "microphone", "silent"),
    (FakeBackend(microphone_mode="clipping"), "microphone", "clipping:"),
    (FakeBackend(button_stuck=True), "button", "stuck: GPIO17 reads pressed"),
], ids=["covered-camera", "frozen-camera", "dead-mic", "clipping-mic", "stuck-button"])
def test_each_bad_device_exits_1_and_is_named(capsys, tmp_path, pki_dir, broker, backend, name,
                                              words):
    cfg = config(tmp_path, pki_dir, broker.port)
    code, doc = run(capsys, ["selftest", "--config", str(cfg)], backend)
    assert code == 1
    assert doc["ok"] is False
    bad = [c for c in doc["checks"] if not c["ok"]]
    assert [c["name"] for c in bad] == [name], bad
    assert words in bad[0]["detail"] and bad[0]["fix"]


def test_button_pressed_within_the_timeout_passes(tmp_path, pki_dir, broker):
    cfg = load_config(config(tmp_path, pki_dir, broker.port, media=False))
    backend = FakeBackend()
    prompts: list[str] = []

    def technician(prompt: str) -> None:  # hears the prompt, then presses
        prompts.append(prompt)

        def press() -> None:
            time.sleep(0.2)
            backend.buttons[0].press()
            time.sleep(0.15)
            backend.buttons[0].release()

        threading.Thread(target=press, daemon=True).start()

    checks = {c.name: c for c in run_selftest(cfg, backend, press_timeout_s=10, say=technician)}
    assert prompts == ["press the button now (within 10 s) ..."]
    assert checks["button"].ok, checks["button"]
    assert checks["button"].detail.startswith("press and release seen on GPIO17 after ")
    assert all(c.ok for c in checks.values())


def test_button_pressed_but_never_released_fails(tmp_path, pki_dir, broker):
    cfg = load_config(config(tmp_path, pki_dir, broker.port, media=False))
    backend = FakeBackend()
    checks = run_selftest(cfg, backend, press_timeout_s=0.6,
                          say=lambda _prompt: backend.buttons[0].press())
    button = next(c for c in checks if c.name == "button")
    assert not button.ok and button.detail == "pressed but never released within 0.6 s"


def test_no_press_within_the_timeout_fails(capsys, tmp_path, pki_dir, broker):
    cfg = config(tmp_path, pki_dir, broker.port, media=False)
    started = time.monotonic()
    code, doc = run(capsys, ["selftest", "--config", str(cfg), "--press-timeout", "0.5"],
                    FakeBackend())
    assert code == 1
    button = by_name(doc)["button"]
    assert not button["ok"] and "no press seen on GPIO17 within 0.5 s" in button["detail"]
    assert time.monotonic() - started < 30


def test_broker_unreachable_fails_the_network_check(capsys, tmp_path, pki_dir):
    port = closed_port()
    cfg = config(tmp_path, pki_dir, port, media=False, host="127.0.0.1")
    code, doc = run(capsys, ["selftest", "--config", str(cfg)], FakeBackend())
    assert code == 1
    net = by_name(doc)["network"]
    assert not net["ok"]
    assert f"broker 127.0.0.1:{port} refused the connection" in net["detail"]
    assert [c["name"] for c in doc["checks"] if not c["ok"]] == ["network"]


def test_wrong_ca_says_signed_by_a_different_ca(capsys, tmp_path, pki_dir, broker):
    other = tmp_path / "other-pki"
    init_dev_pki(other, [DEVICE])
    cfg = config(tmp_path, pki_dir, broker.port, media=False, ca=other / "ca.pem")
    code, doc = run(capsys, ["selftest", "--config", str(cfg)], FakeBackend())
    assert code == 1
    net = by_name(doc)["network"]
    assert not net["ok"]
    assert f"signed by a different CA than broker.ca {other / 'ca.pem'}" in net["detail"]
    assert not by_name(doc)["certificate"]["ok"]  # our cert is not from that CA either


def test_certificate_expiring_within_30_days_fails(capsys, tmp_path, pki_dir, broker):
    short = issue(pki_dir, DEVICE, kind="client", out_dir=tmp_path / "short", days=10)
    cfg = config(tmp_path, pki_dir, broker.port, media=False, cert=short.cert, key=short.key)
    code, doc = run(capsys, ["selftest", "--config", str(cfg)], FakeBackend())
    assert code == 1
    cert = by_name(doc)["certificate"]
    assert not cert["ok"] and re.search(r"certificate expires in [89] days", cert["detail"])
    assert by_name(doc)["network"]["ok"]  # still valid today: the broker takes it


def test_snapshot_writes_a_picture_that_decodes(capsys, tmp_path, pki_dir, broker):
    cfg = config(tmp_path, pki_dir, broker.port)
    for name in ("frame.png", "frame.jpg"):
        out = tmp_path / name
        code, doc = run(capsys, ["selftest", "--config", str(cfg), "--snapshot", str(out)],
                        FakeBackend())
        assert code == 0, doc
        assert by_name(doc)["snapshot"]["ok"]
        with av.open(str(out)) as container:
            frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (640, 480)


def test_selftest_refuses_while_the_firmware_runs(capsys, tmp_path, pki_dir, broker):
    cfg = config(tmp_path, pki_dir, broker.port, media=False)
    backend = FakeBackend()
    with RunningKiosk(cfg) as kiosk:
        sock = kiosk.config.device.state_dir / "control.sock"
        wait_until(sock.exists, what="control socket")
        code, doc = run(capsys, ["selftest", "--config", str(cfg)], backend)
    assert code == 1
    assert [c["name"] for c in doc["checks"]] == ["firmware"]
    assert "the firmware is running" in doc["checks"][0]["detail"]
    assert backend.buttons == [] and backend.cameras == []  # no hardware touched


def test_human_output_one_line_per_check(capsys, tmp_path, pki_dir, broker):
    cfg = config(tmp_path, pki_dir, broker.port)
    code = main(["selftest", "--config", str(cfg)], backend=FakeBackend(camera_mode="covered"))
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(out) == 10 and "\x1b" not in "".join(out)  # not a terminal: no colour
    camera = [line for line in out if line.startswith("✗ camera: covered or black")]
    assert camera and " — try: uncover the lens" in camera[0]
    assert sum(line.startswith("✓ ") for line in out) == 9


def test_broker_refusing_our_certificate_is_named(capsys, tmp_path, pki_dir, broker):
    # The broker's CA is right, our certificate comes from another CA: the broker refuses
    # it (with TLS 1.3 after the handshake) and the check says so.
    other = tmp_path / "other-pki"
    init_dev_pki(other, [DEVICE])
    theirs = other / "devices"
    cfg = config(tmp_path, pki_dir, broker.port, media=False, cert=theirs / f"{DEVICE}.pem",
                 key=theirs / f"{DEVICE}.key")
    code, doc = run(capsys, ["selftest", "--config", str(cfg)], FakeBackend())
    assert code == 1
    net = by_name(doc)["network"]
    assert not net["ok"]
    assert "closed the connection before CONNACK: it probably refused our certificate" in (
        net["detail"]), net


class BrokenBackend(FakeBackend):
    """A camera library that raises on open (any exception, as picamera2 can) and a
    microphone that dies: the self-test names both, one line each, no traceback."""

    def camera(self, clock, width=640, height=480, fps=15.0):
        raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")

    def microphone(self, clock, sample_rate=48000):
        mic = super().microphone(clock, sample_rate)
        mic.fail("USB device unplugged")
        return mic


def test_camera_that_cannot_open_and_microphone_that_died(capsys, tmp_path, pki_dir, broker):
    cfg = config(tmp_path, pki_dir, broker.port)
    code, doc = run(capsys, ["selftest", "--config", str(cfg)], BrokenBackend())
    assert code == 1
    checks = by_name(doc)
    assert checks["camera"]["detail"] == ("cannot open the camera: ValueError: numpy.dtype size "
                                          "changed, may indicate binary incompatibility")
    assert not checks["microphone"]["ok"]
    assert "USB device unplugged" in checks["microphone"]["detail"]
    assert [c["name"] for c in doc["checks"] if not c["ok"]] == ["camera", "microphone"]
