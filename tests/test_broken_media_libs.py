"""Issue 11 item 3: a broken camera or audio library never stops the kiosk.

On a Pi, `pip install` can pull a numpy newer than Raspberry Pi OS's, and then `import picamera2`
dies with "ValueError: numpy.dtype size changed"; PortAudio can raise anything when it starts.
Whatever a media library raises, at import or when opened, becomes fault `camera_failed` /
`mic_failed` and the button keeps alerting.

The broken libraries here are real modules on sys.path (a `picamera2` package that raises at
import, a `pyaudio` whose PyAudio() raises), not mocks of our own code; the end-to-end test runs
the pi backend (gpiozero MockFactory pins), a real mosquitto over mTLS and a real control room.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from pinkbutton.firmware.app import Kiosk, open_media_devices
from pinkbutton.firmware.config import load_config
from pinkbutton.hal.base import BackendUnavailable, DeviceFault
from pinkbutton.hal.clock import Clock

from tests.helpers import Recorder, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

NUMPY_ERROR = ("numpy.dtype size changed, may indicate binary incompatibility. "
               "Expected 96 from C header, got 88 from PyObject")

BROKEN_PICAMERA2 = f'''
import numpy  # the real one: the failure is in the compiled extension that follows
raise ValueError({NUMPY_ERROR!r})
'''

# A pyaudio that imports, chatters on fd 2 as ALSA/JACK do while PortAudio probes devices,
# then fails to start (or, with OPEN_FAILS, starts and fails to open a stream).
BROKEN_PYAUDIO = '''
import os
paInt16 = 8
paContinue = 0
paInputOverflow = 2
START_FAILS = True
NOISE = (b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear\\n"
         b"ALSA lib pcm_dmix.c:1032:(snd_pcm_dmix_open) unable to open slave\\n"
         b"Cannot connect to server socket err = No such file or directory\\n"
         b"jack server is not running or cannot be started\\n")
class PyAudio:
    def __init__(self):
        os.write(2, NOISE)
        os.write(2, b"portaudio: something a person should see\\n")
        if START_FAILS:
            raise RuntimeError("Invalid sample rate [PaErrorCode -9997]")
    def get_device_count(self):
        return 2
    def get_device_info_by_index(self, index):
        return [{"name": "bcm2835 Headphones: - (hw:0,0)", "maxInputChannels": 0},
                {"name": "USB PnP Sound Device: Audio (hw:1,0)", "maxInputChannels": 1}][index]
    def open(self, **kwargs):
        os.write(2, NOISE)
        raise OSError(-9996, "Invalid input device (no default output device)")
    def terminate(self):
        pass
'''


@pytest.fixture
def broken_libs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Real `picamera2` and `pyaudio` modules that fail, first on sys.path."""
    libs = tmp_path / "libs"
    (libs / "picamera2").mkdir(parents=True)
    (libs / "picamera2" / "__init__.py").write_text(BROKEN_PICAMERA2)
    (libs / "pyaudio.py").write_text(BROKEN_PYAUDIO)
    monkeypatch.syspath_prepend(str(libs))
    for name in ("picamera2", "pyaudio"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return libs


def test_picamera2_raising_valueerror_at_import_is_backend_unavailable(broken_libs) -> None:
    from pinkbutton.hal.pi.camera import PiCamera

    with pytest.raises(BackendUnavailable) as info:
        PiCamera(Clock(), 640, 480, 15.0)
    message = str(info.value)
    assert "\n" not in message
    assert "picamera2 is broken: ValueError: numpy.dtype size changed" in message
    assert "pip uninstall numpy" in message


def test_pyaudio_failing_to_start_is_a_device_fault_without_alsa_noise(
        broken_libs, capfd: pytest.CaptureFixture[str]) -> None:
    from pinkbutton.hal.pi.microphone import PyAudioMicrophone

    mic = PyAudioMicrophone(Clock())
    with pytest.raises(DeviceFault, match=r"^cannot start PortAudio: RuntimeError: Invalid sample"):
        mic.start()
    err = capfd.readouterr().err
    assert "portaudio: something a person should see" in err  # real messages still get out
    for noise in ("ALSA lib", "Cannot connect to server", "jack server"):
        assert noise not in err


def test_pyaudio_open_error_and_unknown_device_name_are_device_faults(
        broken_libs, capfd: pytest.CaptureFixture[str]) -> None:
    import pyaudio
    from pinkbutton.hal.pi.microphone import PyAudioMicrophone

    pyaudio.START_FAILS = False  # pyright: ignore[reportAttributeAccessIssue]  # the broken stand-in
    with pytest.raises(DeviceFault, match=r"cannot open the microphone: OSError: .*Invalid input"):
        PyAudioMicrophone(Clock(), device="usb").start()  # found by part of its name
    with pytest.raises(DeviceFault, match=r"no input device named 'webcam' \(inputs: 'USB PnP"):
        PyAudioMicrophone(Clock(), device="webcam").start()
    assert "ALSA lib" not in capfd.readouterr().err


def test_open_media_devices_turns_any_exception_into_a_fault(tmp_path, pki_dir) -> None:
    class Exploding:
        def camera(self, *args, **kwargs):
            raise ValueError("numpy.dtype size changed")

        def microphone(self, *args, **kwargs):
            raise KeyError("pa_device")

    config = load_config(write_kiosk_config(tmp_path, pki_dir, 1883))
    camera, microphone, faults = open_media_devices(Exploding(), Clock(), config)
    assert camera is None and microphone is None
    assert faults == [("camera_failed", "ValueError: numpy.dtype size changed"),
                      ("mic_failed", "KeyError: 'pa_device'")]


@pytest.mark.broker
def test_kiosk_with_broken_picamera2_and_pyaudio_still_alerts_end_to_end(
        tmp_path, pki_dir, broker, broken_libs) -> None:
    from gpiozero.pins.mock import MockFactory
    from pinkbutton.hal.pi import PiBackend

    config = load_config(write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0001"))
    assert config.media.video and config.media.audio
    factory = MockFactory()
    backend = PiBackend(pin_factory=factory)
    clock = Clock()
    h = config.hal
    button = backend.button(clock, h.button_pin, h.debounce_ms / 1000, h.button_active_low)
    indicator = backend.indicator(clock, h.led_pin, h.buzzer_pin)
    # What run_kiosk does: the camera cannot even be imported; the microphone fails on start.
    camera, microphone, faults = open_media_devices(backend, clock, config)
    assert camera is None and microphone is not None
    assert [name for name, _ in faults] == ["camera_failed"]
    events = Recorder()
    with RunningRoom(pki_dir, broker, tmp_path / "room.db", auto_ack=True) as room:
        kiosk = Kiosk(config, button, indicator, clock=clock, camera=camera,
                      microphone=microphone, listeners=[events])
        for name, why in faults:
            kiosk.report_fault(name, why)
        thread = threading.Thread(target=kiosk.run, name="kiosk-under-test", daemon=True)
        thread.start()
        try:
            events.wait_for("connected", timeout=20)
            for name, words in (("camera_failed", "numpy.dtype size changed"),
                                ("mic_failed", "Invalid sample rate")):
                fault = room.events.wait_for(
                    "event", lambda d, n=name: d["kind"] == "fault"
                    and d["detail"].get("name") == n, timeout=20)
                assert words in fault["detail"]["detail"]
            pin = factory.pin(h.button_pin)
            pin.drive_low()  # pressed: the button shorts the pulled-up pin to ground
            time.sleep(0.15)
            pin.drive_high()
            alert_id = events.wait_for("persisted", timeout=20)["alert_id"]
            room_alert = room.events.wait_for(
                "alert", lambda d: d["alert_id"] == alert_id, timeout=20)
            events.wait_for("indicator", lambda d: d["pattern"] == "help_coming", timeout=20)
            assert room_alert["device_id"] == "pb-test-0001"
            assert {"camera_failed", "mic_failed"} <= kiosk.state.faults
        finally:
            kiosk.stop()
            thread.join(10)
    assert not thread.is_alive()


@pytest.mark.broker
def test_pinkbutton_run_with_broken_media_libraries_keeps_running(
        tmp_path, pki_dir, broker, broken_libs) -> None:
    """The real entry point (`pinkbutton run`, pi backend on gpiozero's mock pins): it comes
    up, reports both faults to the room, stays up, and stops cleanly on SIGTERM; no traceback."""
    import os
    import signal
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0002")
    env = {**os.environ, "PYTHONPATH": f"{broken_libs}{os.pathsep}{repo}",
           "GPIOZERO_PIN_FACTORY": "mock"}
    env.pop("NOTIFY_SOCKET", None)
    with RunningRoom(pki_dir, broker, tmp_path / "room.db", auto_ack=True) as room:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pinkbutton.firmware.cli", "run", "--config", str(cfg), "--hal", "pi"],
            cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        try:
            for name in ("camera_failed", "mic_failed"):
                room.events.wait_for(
                    "event", lambda d, n=name: d["kind"] == "fault"
                    and d["device_id"] == "pb-test-0002"
                    and d["detail"].get("name") == n, timeout=30)
            assert proc.poll() is None  # still running: the button is still served
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert "Traceback" not in err and "ALSA lib" not in err
    assert "camera_failed: camera library picamera2 is broken: ValueError: numpy.dtype" in err
