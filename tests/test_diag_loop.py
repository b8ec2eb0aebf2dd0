"""The acoustic loop test (issue 11 item 1): the speaker plays a 2 kHz tone, the microphone must
hear it; an FFT measures the dominant frequency and its level above the noise floor.

The analysis with numbers first, then `pinkbutton-diag selftest` on the fake HAL, whose
sounder plays into the air its microphone hears (hal/fake/sounder.py), in the good and each
bad mode: silent speaker, deaf microphone, dead microphone. Exit code and JSON asserted."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from pinkbutton.firmware.config import ConfigError, load_config
from pinkbutton.firmware.diag.checks import tone_check
from pinkbutton.firmware.diag.cli import main
from pinkbutton.hal.base import AudioChunk
from pinkbutton.hal.clock import FakeClock
from pinkbutton.hal.fake import FakeBackend

from tests.helpers import write_kiosk_config

DEVICE = "pb-test-0001"
RATE = 48000


def chunks_of(signal: np.ndarray) -> list[AudioChunk]:
    pcm = np.clip(signal, -32768, 32767).astype("<i2").tobytes()
    step = 960 * 2  # 20 ms
    return [AudioChunk(pcm[i:i + step], RATE, i // 2 * 1_000_000 // RATE)
            for i in range(0, len(pcm), step)]


def sine(freq: float, amplitude: float, seconds: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * freq * t)


def noise(rms: float, seconds: float = 0.4) -> np.ndarray:
    return np.random.default_rng(7).normal(0, rms, int(seconds * RATE))


# -- the analysis -------------------------------------------------------------------------------


def test_a_tone_in_room_noise_is_measured():
    check = tone_check(chunks_of(sine(2003, 3000) + noise(300) + sine(100, 6000)))
    assert check.ok, check
    v = check.values
    assert v is not None and v["tone_hz"] == 2000
    assert abs(v["measured_hz"] - 2003) < 2  # interpolated between 2.5 Hz bins
    assert abs(v["level_dbfs"] - 20 * math.log10(3000 / math.sqrt(2) / 32768)) < 1.5
    assert v["snr_db"] > 30
    assert check.detail.startswith("2000 Hz tone heard 2003 Hz at -24 dBFS, ")
    assert check.as_json()["values"] == v


@pytest.mark.parametrize(("signal", "words"), [
    (sine(440, 8000) + noise(100), "the 2000 Hz tone was not heard: heard 440 Hz"),
    (sine(2000, 3000) + sine(1200, 9000), "was not heard: heard 1200 Hz"),
    (sine(2000, 20) + noise(200), "too faint"),
    (np.zeros(RATE // 2), "heard nothing while a 2000 Hz tone played (silence)"),
], ids=["other-tone", "louder-other-tone", "buried-in-noise", "silence"])
def test_no_tone_fails_naming_what_was_heard(signal, words):
    check = tone_check(chunks_of(signal))
    assert not check.ok and words in check.detail and check.fix, check
    assert check.values is not None and check.values["tone_hz"] == 2000


def test_nothing_delivered_fails():
    check = tone_check([])
    assert not check.ok and check.detail == "no audio delivered while the tone played"


# -- the fake HAL's acoustic path ----------------------------------------------------------------


def test_the_fake_microphone_hears_what_the_fake_sounder_plays():
    clock = FakeClock()
    backend = FakeBackend()
    mic = backend.microphone(clock, RATE)
    sounder = backend.sounder(clock)

    def capture(seconds: float) -> list[AudioChunk]:
        out = []
        for _ in range(round(seconds / 0.02)):
            clock.advance(0.02)
            out.append(mic.capture_one())
        return out

    before = capture(0.2)
    start = clock.monotonic()
    backend.air.add(2000, start, start + 0.2, 12000)  # what play_tone does, without sleeping
    during = capture(0.2)
    assert tone_check(before).values["measured_hz"] == pytest.approx(440, abs=3)
    assert tone_check(during).values["measured_hz"] == pytest.approx(2000, abs=3)
    assert tone_check(capture(0.2)).values["measured_hz"] == pytest.approx(440, abs=3)  # over
    start = clock.monotonic()
    sounder.play_tone(1000, 0.5)  # FakeClock: sleeping advances it
    assert clock.monotonic() == pytest.approx(start + 0.5) and sounder.played == [(1000, 0.5)]


# -- pinkbutton-diag selftest -------------------------------------------------------------------


def config(tmp_path: Path, pki_dir: Path, port: int, speaker: str | None = '"default"') -> Path:
    path = write_kiosk_config(tmp_path, pki_dir, port, DEVICE)
    media = "\n[media]\nvideo = false\n" + (f"speaker_device = {speaker}\n" if speaker else "")
    path.write_text(path.read_text() + media)
    return path


def run(capsys, cfg: Path, backend: FakeBackend) -> tuple[int, dict]:
    code = main(["selftest", "--config", str(cfg), "--json"], backend=backend)
    return code, json.loads(capsys.readouterr().out)


def test_loop_test_passes_with_frequency_and_level_in_the_json(capsys, tmp_path, pki_dir, broker):
    backend = FakeBackend()
    code, doc = run(capsys, config(tmp_path, pki_dir, broker.port), backend)
    assert code == 0, doc
    names = [c["name"] for c in doc["checks"]]
    assert names == ["button", "indicator", "microphone", "acoustic loop", "disk",
                     "temperature", "clock", "certificate", "dns", "network"]
    loop = doc["checks"][3]
    assert loop["ok"] is True and loop["fix"] is None
    assert set(loop["values"]) == {"tone_hz", "measured_hz", "level_dbfs", "snr_db"}
    assert loop["values"]["tone_hz"] == 2000
    assert abs(loop["values"]["measured_hz"] - 2000) < 5
    assert loop["values"]["level_dbfs"] == pytest.approx(-11.7, abs=1.5)  # 12000 peak
    assert loop["values"]["snr_db"] is None or loop["values"]["snr_db"] > 15
    assert loop["detail"].startswith("2000 Hz tone heard 2000 Hz at -12 dBFS")
    assert [s.played for s in backend.sounders] == [[(2000, 0.5)]]
    assert all(s.closed for s in backend.sounders)
    assert all(not m.running for m in backend.microphones)


@pytest.mark.parametrize(("backend", "bad", "words"), [
    (FakeBackend(sounder_mode="silent"), ["acoustic loop"],
     "the 2000 Hz tone was not heard: heard 440 Hz"),
    (FakeBackend(microphone_mode="deaf"), ["acoustic loop"],
     "the 2000 Hz tone was not heard: heard 440 Hz"),
    (FakeBackend(microphone_mode="silent"), ["microphone", "acoustic loop"],
     "heard nothing while a 2000 Hz tone played (silence)"),
], ids=["silent-speaker", "deaf-mic", "dead-mic"])
def test_silent_loop_exits_1_and_names_the_loop(capsys, tmp_path, pki_dir, broker, backend, bad,
                                                words):
    code, doc = run(capsys, config(tmp_path, pki_dir, broker.port), backend)
    assert code == 1
    assert doc["ok"] is False
    failing = [c for c in doc["checks"] if not c["ok"]]
    assert [c["name"] for c in failing] == bad
    loop = failing[-1]
    assert words in loop["detail"], loop
    assert "speaker" in loop["fix"] or "microphone" in loop["fix"]
    assert loop["values"]["tone_hz"] == 2000


def test_human_output_has_one_loop_line(tmp_path, pki_dir, broker, capsys):
    cfg = config(tmp_path, pki_dir, broker.port)
    code = main(["selftest", "--config", str(cfg)], backend=FakeBackend(sounder_mode="silent"))
    out = capsys.readouterr().out
    assert code == 1
    line = next(x for x in out.splitlines() if "acoustic loop" in x)
    assert line.startswith("✗ acoustic loop: the 2000 Hz tone was not heard: heard 440 Hz at ")
    assert "— try: check the speaker, its cable and volume" in line


def test_no_speaker_configured_no_loop_test(capsys, tmp_path, pki_dir, broker):
    code, doc = run(capsys, config(tmp_path, pki_dir, broker.port, speaker=None), FakeBackend())
    assert code == 0
    assert "acoustic loop" not in [c["name"] for c in doc["checks"]]


def test_speaker_device_is_validated(tmp_path, pki_dir):
    cfg = config(tmp_path, pki_dir, 8883, speaker='"USB"')
    assert load_config(cfg, check_certificates=False).media.speaker_device == "USB"
    for bad, words in (('""', "must not be empty"), ("true", "expected a device name"),
                       ("300", "between 0 and 255")):
        cfg = config(tmp_path, pki_dir, 8883, speaker=bad)
        with pytest.raises(ConfigError, match=r"\[media\] speaker_device: .*" + words):
            load_config(cfg, check_certificates=False)


# -- the Pi's sounder: PyAudio through ALSA -----------------------------------------------------

PLAY = """
import sys
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.pi.sounder import PyAudioSounder
PyAudioSounder(Clock(), sys.argv[1] if len(sys.argv) > 1 else None).play_tone(2000, 0.5)
"""


def test_the_pi_sounder_plays_the_tone_through_alsa(tmp_path):
    """ALSA's `file` PCM writes what PyAudio plays to a file (over a `null` slave): the tone
    that reaches the sound card is 2 kHz, 0.5 s, analysed by the same FFT."""
    pytest.importorskip("pyaudio", reason="pyaudio not installed (pip install pyaudio)")
    import os
    import subprocess
    import sys

    played = tmp_path / "played.raw"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        'pcm.pinkbutton_speaker {\n  type file\n  slave.pcm "null"\n'
        f'  file "{played}"\n  format "raw"\n}}\n')
    env = {**os.environ, "HOME": str(home)}
    env.pop("ALSA_CONFIG_PATH", None)
    proc = subprocess.run([sys.executable, "-c", PLAY, "pinkbutton_speaker"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-800:]
    pcm = played.read_bytes()
    samples = np.frombuffer(pcm, dtype="<i2")
    assert abs(samples.size - RATE // 2) < RATE // 10, samples.size  # about 0.5 s, mono s16
    check = tone_check(chunks_of(samples.astype(np.float64)))
    assert check.ok, check
    assert abs(check.values["measured_hz"] - 2000) < 2
    assert check.values["level_dbfs"] == pytest.approx(-9.0, abs=1.0)  # half of full scale

    bad = subprocess.run([sys.executable, "-c", PLAY, "no-such-speaker"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "no output device named 'no-such-speaker'" in bad.stderr


# -- in service: the running pipeline's microphone ----------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("sounder_mode", "failed"), [("ok", []), ("silent", ["acoustic loop"])])
def test_in_service_selftest_plays_the_tone_into_the_running_microphone(tmp_path, pki_dir, broker,
                                                                        sounder_mode, failed):
    """The boot self-test of a running kiosk (the same checks as daily and `cmd selftest`):
    the loop test uses the media pipeline's microphone, which is opened once."""
    from pinkbutton.firmware.app import Kiosk, open_sounder
    from pinkbutton.hal.clock import Clock

    from tests.helpers import Recorder, wait_until

    cfg = config(tmp_path, pki_dir, broker.port)
    cfg.write_text(cfg.read_text().replace("video = false\n", "video = true\n"))
    conf = load_config(cfg)
    clock = Clock()
    backend = FakeBackend(sounder_mode=sounder_mode)
    events = Recorder()
    kiosk = Kiosk(conf, backend.button(clock, 17, 0.05), backend.indicator(clock, 27),
                  clock=clock, listeners=[events],
                  camera=backend.camera(clock, conf.media.width, conf.media.height,
                                        conf.media.fps),
                  microphone=backend.microphone(clock, 48000),
                  sounder=open_sounder(backend, clock, conf))
    thread = threading.Thread(target=kiosk.run, name="kiosk-under-test", daemon=True)
    thread.start()
    try:
        done = events.wait_for("selftest", timeout=30)
        assert done["failed"] == failed, done
        assert done["ok"] is (not failed)
        assert [s.played for s in backend.sounders] == [[(2000, 0.5)]]
        assert len(backend.microphones) == 1  # never opened a second time
        status = wait_until(lambda: kiosk.control_status()["last_selftest_at"] and
                            kiosk.control_status())
        assert status["last_selftest_failed"] == failed
    finally:
        kiosk.stop()
        thread.join(10)


def test_in_service_checks_name_the_loop():
    from datetime import UTC, datetime

    from pinkbutton.firmware.diag.inservice import run_checks

    def checks(loop, faults=()):
        return {c.name: c for c in run_checks(
            button_pressed=False, faults=faults, frames=None, audio=chunks_of(sine(440, 8000)),
            loop=loop, state_dir=Path("/"), cert_not_after=datetime(2099, 1, 1, tzinfo=UTC),
            now=datetime(2026, 1, 1, tzinfo=UTC))}

    assert checks(chunks_of(sine(2000, 9000)))["acoustic loop"].ok
    heard_other = checks(chunks_of(sine(440, 8000)))["acoustic loop"]
    assert not heard_other.ok and "heard 440 Hz" in heard_other.detail
    broken = checks("DeviceFault: cannot play on the speaker: no device")["acoustic loop"]
    assert not broken.ok and broken.detail.startswith("the speaker could not play: DeviceFault")
    assert "acoustic loop" not in checks(None)
    assert "acoustic loop" not in checks(chunks_of(sine(440, 8000)), faults=("mic_failed",))
