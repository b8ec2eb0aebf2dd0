"""The hardware self-test run directly on the HAL backend, while the firmware is stopped.

Each device is opened as the kiosk opens it (the acoustic loop opens the speaker and the
microphone together), exercised for a bounded time, closed, and judged
by `firmware.diag.checks`. A device that cannot be opened or raises is a failed check naming
the error, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pinkbutton.firmware.config import Config, ConfigError, verify_certificates
from pinkbutton.firmware.diag.checks import (
    LOOP_TONE_HZ,
    LOOP_TONE_S,
    Check,
    camera_check,
    certificate_check,
    disk_check,
    failed,
    microphone_check,
    passed,
    tone_check,
)
from pinkbutton.firmware.diag.network import network_check
from pinkbutton.firmware.diag.system import (
    clock_check,
    dns_check,
    ntp_synchronized,
    temperature_check,
)
from pinkbutton.firmware.health import THERMAL_ZONE
from pinkbutton.hal.base import AudioChunk, Pattern, VideoFrame, describe_error
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.registry import Backend

CAMERA_FRAMES = 5
CAMERA_TIMEOUT_S = 10.0  # a Pi camera can take seconds to start streaming
AUDIO_S = 1.0


def camera_selftest(backend: Backend, clock: Clock, config: Config,
                    snapshot: Path | None = None) -> list[Check]:
    m = config.media
    frames: list[VideoFrame] = []
    failures: list[str] = []
    try:
        camera = backend.camera(clock, m.width, m.height, m.fps)
    except Exception as e:  # noqa: BLE001 - any library error is the camera's failure
        return [failed("camera", f"cannot open the camera: {describe_error(e)}",
                       "check the camera ribbon cable and `rpicam-hello --list-cameras`")]
    camera.on_frame = frames.append
    camera.on_failure = failures.append
    timeout = max(CAMERA_TIMEOUT_S, 3 * CAMERA_FRAMES / m.fps)
    try:
        end = time.monotonic() + timeout
        camera.start()
        while len(frames) < CAMERA_FRAMES and not failures and time.monotonic() < end:
            time.sleep(0.02)
    except Exception as e:  # noqa: BLE001
        failures.append(describe_error(e))
    finally:
        try:
            camera.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken camera may fail too
            pass
    if failures:
        return [failed("camera", f"camera failed: {failures[0]}",
                       "check the camera ribbon cable, then reboot the kiosk")]
    got = frames[:CAMERA_FRAMES]
    checks = [camera_check(got)]
    if snapshot is not None:
        checks.append(_snapshot(got[-1] if got else None, snapshot))
    return checks


def _snapshot(frame: VideoFrame | None, path: Path) -> Check:
    from pinkbutton.firmware.diag.snapshot import SnapshotError, write_snapshot

    if frame is None:
        return failed("snapshot", "no frame to save", "fix the camera first")
    try:
        write_snapshot(frame, path)
    except (SnapshotError, OSError) as e:
        return failed("snapshot", f"cannot write {path}: {e}", "choose a writable .png or .jpg path")
    return passed("snapshot", f"frame saved to {path} ({frame.width}x{frame.height})")


def microphone_selftest(backend: Backend, clock: Clock, config: Config) -> list[Check]:
    chunks: list[AudioChunk] = []
    failures: list[str] = []
    try:
        mic = backend.microphone(clock, 48000)
    except Exception as e:  # noqa: BLE001
        return [failed("microphone", f"cannot open the microphone: {describe_error(e)}",
                       "check the USB microphone and `arecord -l`")]
    mic.on_audio = chunks.append
    mic.on_failure = failures.append

    def heard() -> float:
        return sum(len(c.samples) // 2 for c in chunks) / mic.sample_rate

    try:
        end = time.monotonic() + AUDIO_S + 4.0
        mic.start()
        while heard() < AUDIO_S and not failures and time.monotonic() < end:
            time.sleep(0.02)
    except Exception as e:  # noqa: BLE001
        failures.append(describe_error(e))
    finally:
        try:
            mic.close()
        except Exception:  # noqa: BLE001, S110
            pass
    if failures:
        return [failed("microphone", f"microphone failed: {failures[0]}",
                       "check the USB microphone and `arecord -l`")]
    return [microphone_check(list(chunks))]


#: Audio heard before the tone (the input settles) and kept from the tone's start (the
#: output's latency): the FFT sees only the tone's steady part.
LOOP_WARMUP_S = 0.2
LOOP_SKIP_S = 0.1


def loop_selftest(backend: Backend, clock: Clock, config: Config) -> list[Check]:
    """The acoustic loop: the speaker (`media.speaker_device`) plays LOOP_TONE_HZ for
    LOOP_TONE_S while the microphone records; `checks.tone_check` measures what it heard.
    No check without a configured speaker or with audio off."""
    m = config.media
    if m.speaker_device is None or not m.audio:
        return []
    name = "acoustic loop"
    chunks: list[AudioChunk] = []
    failures: list[str] = []
    try:
        mic = backend.microphone(clock, 48000, device=m.mic_device)
    except Exception as e:  # noqa: BLE001
        return [failed(name, f"cannot open the microphone: {describe_error(e)}",
                       "check the USB microphone and `arecord -l`")]
    try:
        sounder = backend.sounder(clock, m.speaker_device)
    except Exception as e:  # noqa: BLE001
        mic.close()
        return [failed(name, f"cannot open the speaker {m.speaker_device!r}: "
                       f"{describe_error(e)}", "check media.speaker_device and `aplay -l`")]
    mic.on_audio = chunks.append
    mic.on_failure = failures.append

    def heard_until() -> float:  # clock time the audio so far reaches
        last = chunks[-1] if chunks else None
        return -1.0 if last is None else last.pts_us / 1e6 + last.frames / last.sample_rate

    start = end = 0.0
    try:
        mic.start()
        deadline = time.monotonic() + 4.0
        first = clock.monotonic()
        while (heard_until() < first + LOOP_WARMUP_S and not failures
               and time.monotonic() < deadline):
            time.sleep(0.01)
        start = clock.monotonic()
        sounder.play_tone(LOOP_TONE_HZ, LOOP_TONE_S)
        end = clock.monotonic()
        deadline = time.monotonic() + 2.0
        while heard_until() < end and not failures and time.monotonic() < deadline:
            time.sleep(0.01)
    except Exception as e:  # noqa: BLE001
        failures.append(describe_error(e))
    finally:
        for device in (mic, sounder):
            try:
                device.close()
            except Exception:  # noqa: BLE001, S110
                pass
    if failures:
        return [failed(name, f"loop test failed: {failures[0]}",
                       "check the speaker (media.speaker_device, `aplay -l`) and the microphone")]
    during = [c for c in chunks if c.pts_us / 1e6 >= start + LOOP_SKIP_S
              and c.pts_us / 1e6 + c.frames / c.sample_rate <= end + 1e-6]
    if sum(c.frames for c in during) < 0.1 * 48000:  # a late microphone: all of the tone
        during = [c for c in chunks if c.pts_us / 1e6 + c.frames / c.sample_rate > start
                  and c.pts_us / 1e6 < end]
    return [tone_check(during)]


def button_selftest(backend: Backend, clock: Clock, config: Config,
                    press_timeout_s: float | None, say: Callable[[str], None]) -> list[Check]:
    """Stuck: pressed as soon as it is opened. With `press_timeout_s`, the technician must
    press (and release) it within that time."""
    h = config.hal
    try:
        button = backend.button(clock, h.button_pin, h.debounce_ms / 1000, h.button_active_low)
    except Exception as e:  # noqa: BLE001
        return [failed("button", f"cannot open GPIO{h.button_pin}: {describe_error(e)}",
                       "is the firmware still running? check hal.button_pin")]
    try:
        time.sleep(2 * h.debounce_ms / 1000)
        button.poll()
        if button.is_pressed:
            return [failed("button", f"stuck: GPIO{h.button_pin} reads pressed with nobody "
                           "pressing it", "free the jammed button or look for a short in "
                           "its wiring (or hal.button_active_low is wrong)")]
        if press_timeout_s is None:
            return [passed("button", f"GPIO{h.button_pin} not stuck (press test skipped: "
                           "give --press-timeout S)")]
        say(f"press the button now (within {press_timeout_s:g} s) ...")
        start = time.monotonic()
        end = start + press_timeout_s
        pressed_at = None
        while time.monotonic() < end:
            for ev in button.poll():
                if ev.pressed and pressed_at is None:
                    pressed_at = time.monotonic()
                elif not ev.pressed and pressed_at is not None:
                    return [passed("button", f"press and release seen on GPIO{h.button_pin} "
                                   f"after {pressed_at - start:.1f} s")]
            time.sleep(0.01)
        if pressed_at is not None:
            return [failed("button", f"pressed but never released within {press_timeout_s:g} s",
                           "the button sticks when pressed: free or replace it")]
        return [failed("button", f"no press seen on GPIO{h.button_pin} within "
                       f"{press_timeout_s:g} s", "check the button's wiring to "
                       f"GPIO{h.button_pin} and ground (or press it next time)")]
    finally:
        button.close()


#: How long the indicator shows each pattern: long enough to see a blink and hear a beep.
INDICATOR_STEP_S = 0.4


def indicator_selftest(backend: Backend, clock: Clock, config: Config,
                       step_s: float = INDICATOR_STEP_S) -> list[Check]:
    """Drives the LED (and buzzer) through every pattern the kiosk uses, then off; each one
    read back from the driver. The technician watches and listens."""
    h = config.hal
    parts = f"LED GPIO{h.led_pin}" + (f" and buzzer GPIO{h.buzzer_pin}"
                                      if h.buzzer_pin is not None else "")
    try:
        indicator = backend.indicator(clock, h.led_pin, h.buzzer_pin)
    except Exception as e:  # noqa: BLE001
        return [failed("indicator", f"cannot open the {parts}: {describe_error(e)}",
                       "is the firmware still running? check hal.led_pin / hal.buzzer_pin")]
    shown: list[str] = []
    try:
        for pattern in [*(p for p in Pattern if p is not Pattern.OFF), Pattern.OFF]:
            indicator.show(pattern)
            if indicator.pattern is not pattern:
                return [failed("indicator", f"{parts}: asked for {pattern.value}, the driver "
                               f"shows {indicator.pattern.value}",
                               "check the LED/buzzer wiring and hal.led_pin / hal.buzzer_pin")]
            shown.append(pattern.value)
            time.sleep(step_s)
    except Exception as e:  # noqa: BLE001
        return [failed("indicator", f"{parts} failed: {describe_error(e)}",
                       "check the LED/buzzer wiring and hal.led_pin / hal.buzzer_pin")]
    finally:
        try:
            indicator.close()
        except Exception:  # noqa: BLE001, S110
            pass
    ask = "see each one (and hear the buzzer)" if h.buzzer_pin is not None else "see each one"
    return [passed("indicator", f"{parts} cycled through {', '.join(shown)}: did you {ask}?",
                   {"patterns": shown})]


def certificate_selftest(config: Config, now: datetime | None = None) -> Check:
    now = now or datetime.now(UTC)
    try:
        status = verify_certificates(config, now=now)
    except ConfigError as e:
        return failed("certificate", str(e), "fix the file it names (pinkbutton-pki)")
    return certificate_check(status.not_after, now)


def run_selftest(config: Config, backend: Backend, *, press_timeout_s: float | None = None,
                 snapshot: Path | None = None, network_timeout_s: float | None = None,
                 say: Callable[[str], None] = print, thermal_zone: str | Path = THERMAL_ZONE,
                 now: datetime | None = None,
                 ntp: Callable[[], bool | str] = ntp_synchronized) -> list[Check]:
    clock = Clock()
    checks = button_selftest(backend, clock, config, press_timeout_s, say)
    checks += indicator_selftest(backend, clock, config)
    if config.media.video or snapshot is not None:
        checks += camera_selftest(backend, clock, config, snapshot)
    if config.media.audio:
        checks += microphone_selftest(backend, clock, config)
        checks += loop_selftest(backend, clock, config)
    checks.append(disk_check(config.device.state_dir))
    checks.append(temperature_check(thermal_zone, config.health.max_temp_c))
    now = now or datetime.now(UTC)
    checks.append(clock_check(now, _cert_not_before(config), ntp()))
    checks.append(certificate_selftest(config, now))
    checks.append(dns_check(config.broker.host))
    checks.append(network_check(config, network_timeout_s))
    return checks


def _cert_not_before(config: Config) -> datetime | None:
    """The kiosk certificate's start, read without judging it (the certificate check does)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(config.broker.cert.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_before_utc
