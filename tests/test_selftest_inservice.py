"""The running kiosk's self-test (firmware/diag/inservice.py): its checks are truthful about
current faults, and the daily schedule (pure, fake wall times)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pinkbutton.firmware.diag.inservice import device_offset_s, next_daily, run_checks
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def captured(backend: FakeBackend, clock: Clock):
    """A few frames and 0.6 s of audio from fake devices, as the pipeline keeps them."""
    camera = backend.camera(clock, 160, 120, 15.0)
    mic = backend.microphone(clock, 48000)
    frames, audio = [], []
    camera.on_frame, mic.on_audio = frames.append, audio.append
    camera.start()
    mic.start()
    try:
        end = clock.monotonic() + 5
        while (len(frames) < 3 or len(audio) < 30) and clock.monotonic() < end:
            time.sleep(0.02)
    finally:
        camera.stop()
        mic.stop()
    return frames[:3], audio[:30]


def checks(**kw):
    args = dict(button_pressed=False, faults=(), frames=None, audio=None,
                state_dir=Path("/"),
                cert_not_after=NOW + timedelta(days=400), now=NOW)
    args.update(kw)
    return {c.name: c for c in run_checks(**args)}


def test_a_camera_failed_fault_fails_the_camera_check_even_without_frames():
    got = checks(faults={"camera_failed"})
    assert not got["camera"].ok and "camera_failed" in got["camera"].detail
    assert all(c.ok for name, c in got.items() if name != "camera")


def test_all_good_passes_and_other_faults_are_named():
    frames, audio = captured(FakeBackend(), Clock())
    got = checks(frames=frames, audio=audio)
    assert [n for n, c in got.items() if not c.ok] == [], got
    assert set(got) == {"button", "camera", "microphone", "disk", "certificate"}
    got = checks(frames=frames, audio=audio, faults={"stage_stuck", "mic_failed"})
    assert not got["microphone"].ok and "mic_failed" in got["microphone"].detail
    assert not got["faults"].ok and "stage_stuck" in got["faults"].detail


def test_covered_camera_silent_mic_stuck_button_and_old_certificate_fail():
    frames, audio = captured(FakeBackend(camera_mode="covered", microphone_mode="silent"),
                             Clock())
    got = checks(frames=frames, audio=audio, button_pressed=True,
                 cert_not_after=NOW + timedelta(days=29, hours=1))
    assert "covered" in got["camera"].detail and not got["camera"].ok
    assert "silent" in got["microphone"].detail and not got["microphone"].ok
    assert not got["button"].ok
    assert not got["certificate"].ok and "29 days" in got["certificate"].detail
    assert checks(frames=[], audio=[])["camera"].detail == "no frames delivered"


# -- daily schedule ---------------------------------------------------------------------------

PK = timezone(timedelta(hours=5))  # the kiosk's local time


def at(y, mo, d, h, mi, s=0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=PK).timestamp()


def test_daily_at_local_time_plus_offset_then_next_day_after_it_ran():
    offset = 17 * 60.0
    first = next_daily(at(2026, 12, 1, 1, 0), (3, 30), offset, PK)
    assert first == at(2026, 12, 1, 3, 47)
    # It ran a little late (busy kiosk): the next is tomorrow's, not today's again.
    assert next_daily(first + 2.5, (3, 30), offset, PK) == at(2026, 12, 2, 3, 47)
    # Exactly at the time: strictly after, so tomorrow.
    assert next_daily(first, (3, 30), offset, PK) == at(2026, 12, 2, 3, 47)
    # Booted after today's time: tomorrow.
    assert next_daily(at(2026, 12, 1, 9, 0), (3, 30), offset, PK) == at(2026, 12, 2, 3, 47)


def test_an_offset_past_midnight_is_not_skipped():
    # 23:30 + 50 min = 00:20 the next day; at 00:10 that one is still due today.
    assert next_daily(at(2026, 12, 2, 0, 10), (23, 30), 50 * 60.0, PK) == at(2026, 12, 2, 0, 20)


def test_the_offset_is_per_device_stable_and_within_the_spread():
    spread = 3600.0
    offsets = {d: device_offset_s(d, spread) for d in (f"pb-psh-{i:04d}" for i in range(200))}
    assert all(0 <= o < spread for o in offsets.values())
    assert len({int(o // 600) for o in offsets.values()}) == 6  # spread over every 10 min
    assert device_offset_s("pb-psh-0007", spread) == offsets["pb-psh-0007"]
    assert device_offset_s("pb-psh-0007", 0) == 0.0


def test_the_kiosk_runs_the_daily_selftest_when_due_then_schedules_tomorrow(tmp_path, pki_dir):
    from harness.broker import free_port
    from tests.helpers import RunningKiosk, wait_until, write_kiosk_config

    now = datetime.now()  # the kiosk's local time
    cfg = write_kiosk_config(tmp_path, pki_dir, free_port())  # no broker: runs offline
    cfg.write_text(cfg.read_text() + f'\n[health]\nselftest_at = "{now:%H:%M}"\n'
                   "selftest_spread_min = 0\n")
    with RunningKiosk(cfg) as kiosk:
        wait_until(lambda: kiosk.events.of("selftest"), 15, "boot selftest")
        k = kiosk.kiosk
        assert k._daily_next is not None and k._daily_next > time.time() + 22 * 3600
        k._daily_next = time.time() + 0.3  # as if today's time were reached
        wait_until(lambda: len(kiosk.events.of("selftest")) == 2, 15, "daily selftest")
        assert k._daily_next > time.time() + 22 * 3600  # tomorrow's, not again today
        time.sleep(1.0)
        assert len(kiosk.events.of("selftest")) == 2


@pytest.mark.parametrize(("fault", "check"), [
    ("camera_covered", "camera"), ("camera_frozen", "camera"), ("mic_dead", "microphone"),
])
def test_a_running_fault_fails_its_own_device_check_not_the_generic_one(fault, check):
    """A technician reading the self-test sees 'camera: fault camera_covered', not 'faults'."""
    frames, audio = captured(FakeBackend(), Clock())
    got = checks(frames=frames, audio=audio, faults={fault})
    assert not got[check].ok and fault in got[check].detail
    assert "faults" not in got
    assert [n for n, c in got.items() if not c.ok] == [check]
