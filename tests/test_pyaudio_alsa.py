"""The real PyAudio capture path, fed from a file through ALSA.

ALSA's `file` PCM plugin reads capture data from `infile` (format "raw": bytes as
they are, at whatever rate/format the stream opens with) over a `null` slave. A
temporary HOME with an .asoundrc makes that the default device, so PortAudio and
PyAudioMicrophone run unmodified. The null slave is not paced by a clock: buffers
arrive as fast as PortAudio asks, so this checks data and plumbing, not timing.

Each capture runs in a subprocess: ALSA reads its config once per process, and
PortAudio's device probing chatters on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pinkbutton.hal.base import BackendUnavailable
from pinkbutton.hal.clock import Clock

ROOT = Path(__file__).resolve().parent.parent

CAPTURE = textwrap.dedent(
    """
    import json, sys, threading, time
    from pinkbutton.hal.clock import Clock
    from pinkbutton.hal.pi.microphone import PyAudioMicrophone

    mode, out = sys.argv[1], sys.argv[2]
    device = sys.argv[3] if len(sys.argv) > 3 else None
    mic = PyAudioMicrophone(Clock(), 48000, chunk_ms=20, stall_s=0.3, device=device)
    chunks, threads, failures = [], set(), []
    enough = threading.Event()
    blocked = threading.Event()

    def on_audio(chunk):
        threads.add(threading.current_thread().name)
        if mode == "stall" and not blocked.is_set():
            blocked.set()
            time.sleep(1.0)  # the device goes quiet: no callback for a second
        chunks.append(chunk)
        if sum(c.frames for c in chunks) >= 48000:
            enough.set()

    def on_failure(reason):
        failures.append((reason, threading.current_thread().name))
        enough.set()

    mic.on_audio, mic.on_failure = on_audio, on_failure
    mic.start()
    enough.wait(5.0)
    mic.stop()
    with open(out + ".raw", "wb") as f:
        f.write(b"".join(c.samples for c in chunks))
    json.dump({
        "sizes": sorted({len(c.samples) for c in chunks}),
        "rates": sorted({c.sample_rate for c in chunks}),
        "pts": [c.pts_us for c in chunks],
        "threads": sorted(threads),
        "failures": failures,
        "main": threading.main_thread().name,
    }, open(out, "w"))
    """
)


def _known_signal() -> np.ndarray:
    """0.25 s of seeded noise: found in the capture only if it came through bit-exact."""
    return np.random.default_rng(4).integers(-20000, 20000, 12000).astype("<i2")


def _run_capture(tmp_path: Path, mode: str, device: str | None = None) -> tuple[dict, bytes]:
    pytest.importorskip("pyaudio", reason="pyaudio not installed (pip install pyaudio)")
    infile = tmp_path / "in.raw"
    infile.write_bytes(_known_signal().tobytes())
    home = tmp_path / "home"
    home.mkdir()
    # With a device name, the known signal is on that named PCM and the default is silence.
    pcm = f"pcm.{device}" if device else "pcm.!default"
    (home / ".asoundrc").write_text(
        f"{pcm} {{\n"
        "  type file\n"
        '  slave.pcm "null"\n'
        '  file "/dev/null"\n'
        f'  infile "{infile}"\n'
        '  format "raw"\n'
        "}\n"
        + ('pcm.!default {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
           '  infile "/dev/zero"\n  format "raw"\n}\n' if device else "")
    )
    out = tmp_path / "result.json"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", CAPTURE, mode, str(out), *([device] if device else [])],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        pytest.fail(f"capture subprocess exited {proc.returncode}:\n{tail}")
    return json.loads(out.read_text()), Path(f"{out}.raw").read_bytes()


def test_pyaudio_captures_the_known_signal_through_alsa(tmp_path: Path) -> None:
    result, captured = _run_capture(tmp_path, "normal")
    assert result["failures"] == []
    assert result["sizes"] == [1920] and result["rates"] == [48000]  # 20 ms mono s16
    assert len(captured) >= 96000
    at = captured.find(_known_signal().tobytes())
    assert at >= 0 and at % 2 == 0, "the file's samples did not come through intact"
    pts = result["pts"]
    assert all(b >= a for a, b in zip(pts, pts[1:], strict=False))
    assert result["threads"] and result["main"] not in result["threads"]


def test_pyaudio_mic_device_by_name_captures_that_device(tmp_path: Path) -> None:
    # media.mic_device = "pinkbutton_usb": the named input, not the (silent) default.
    result, captured = _run_capture(tmp_path, "normal", device="pinkbutton_usb")
    assert result["failures"] == []
    assert _known_signal().tobytes() in captured


def test_pyaudio_mic_that_goes_quiet_is_reported_once(tmp_path: Path) -> None:
    result, _ = _run_capture(tmp_path, "stall")
    assert len(result["failures"]) == 1
    reason, thread = result["failures"][0]
    assert reason.startswith("microphone delivered no audio for") and "\n" not in reason
    assert thread == "pyaudio-watchdog"


def test_pyaudio_missing_names_both_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    from pinkbutton.hal.pi.microphone import PyAudioMicrophone

    monkeypatch.setitem(sys.modules, "pyaudio", None)
    with pytest.raises(BackendUnavailable, match="pip install pyaudio.*portaudio19-dev"):
        PyAudioMicrophone(Clock())


NOISY = textwrap.dedent(
    """
    import sys
    import pyaudio
    from pinkbutton.hal.clock import Clock
    from pinkbutton.hal.base import DeviceFault
    from pinkbutton.hal.pi.microphone import PyAudioMicrophone

    pyaudio.PyAudio().terminate()  # unguarded: ALSA/JACK print their probing noise
    print("=== PyAudioMicrophone from here", file=sys.stderr, flush=True)
    try:
        PyAudioMicrophone(Clock()).start()
    except DeviceFault as exc:
        print(f"fault: {exc}", file=sys.stderr, flush=True)
    """
)


def test_pyaudio_alsa_jack_noise_stays_out_of_the_log(tmp_path: Path) -> None:
    pytest.importorskip("pyaudio", reason="pyaudio not installed (pip install pyaudio)")
    home = tmp_path / "home"
    home.mkdir()
    # A default input on a sound card that does not exist: ALSA complains on every probe.
    (home / ".asoundrc").write_text("pcm.!default {\n  type hw\n  card 9\n}\n")
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    proc = subprocess.run([sys.executable, "-c", NOISY], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-500:]
    before, _, after = proc.stderr.partition("=== PyAudioMicrophone from here\n")
    assert "ALSA lib" in before  # the library does chatter here...
    assert "ALSA lib" not in after and "jack server" not in after  # ...but not through us
    assert after.startswith("fault: cannot open the microphone: ")  # the fault itself is kept
