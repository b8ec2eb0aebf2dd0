"""Fault detection while the kiosk runs (issue 11 item 5), the pure part: `firmware/monitor.py`'s
detectors fed with timestamped observations on a fake timeline, each hold time checked at its
exact boundary and 1 ms before it, each hysteresis band, and the frame / audio statistics on
real pictures and sound from the fake HAL in its good and bad modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pinkbutton.firmware.monitor import (
    BUTTON_STUCK,
    CAMERA_COVERED,
    CAMERA_FROZEN,
    MIC_DEAD,
    OVER_TEMPERATURE,
    TAMPER,
    FrameSample,
    Monitor,
    MonitorSettings,
    Transition,
    audio_level_dbfs,
    sample_frame,
)
from pinkbutton.hal.base import AudioChunk, VideoFrame
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend

MS = 0.001
T0 = 1000.0  # an arbitrary monotonic origin: boundaries must hold away from zero too
SETTINGS = MonitorSettings(button_stuck_s=10.0, camera_covered_s=30.0, camera_frozen_s=20.0,
                           mic_dead_s=15.0, max_temp_c=80.0, clear_s=2.0)


def names(transitions: list[Transition]) -> list[tuple[str, bool]]:
    return [(t.name, t.raised) for t in transitions]


def sample(mean: float = 100.0, std: float = 30.0, changed: float | None = 0.5) -> FrameSample:
    return FrameSample(mean=mean, std=std, changed=changed, pixels=np.zeros((1, 1), np.uint8))


# -- button_stuck: held for button_stuck_s, cleared on release --------------------------------


def test_button_held_raises_exactly_at_the_hold_time_not_1_ms_before():
    mon = Monitor(SETTINGS)
    assert mon.button(T0, True) == []
    assert mon.next_deadline() == T0 + 10.0
    assert mon.poll(T0 + 10.0 - MS) == []
    [t] = mon.poll(T0 + 10.0)
    assert (t.name, t.raised) == (BUTTON_STUCK, True) and "10 s" in t.detail
    assert mon.active == {BUTTON_STUCK}
    assert mon.poll(T0 + 60.0) == [] and mon.next_deadline() is None  # raised once


def test_button_released_before_the_hold_time_raises_nothing_and_restarts_the_count():
    mon = Monitor(SETTINGS)
    mon.button(T0, True)
    assert mon.button(T0 + 10.0 - MS, False) == []
    assert mon.poll(T0 + 10.0) == [] and mon.next_deadline() is None
    mon.button(T0 + 11.0, True)
    assert mon.poll(T0 + 21.0 - MS) == []
    assert names(mon.poll(T0 + 21.0)) == [(BUTTON_STUCK, True)]


def test_stuck_button_is_cleared_at_once_on_release():
    mon = Monitor(SETTINGS)
    mon.button(T0, True)
    mon.poll(T0 + 10.0)
    assert names(mon.button(T0 + 12.0, False)) == [(BUTTON_STUCK, False)]
    assert mon.active == frozenset()


def test_an_observation_past_the_deadline_raises_without_a_poll():
    mon = Monitor(SETTINGS)
    mon.button(T0, True)
    assert names(mon.button(T0 + 10.0, True)) == [(BUTTON_STUCK, True)]


def test_a_fault_raised_elsewhere_is_adopted_and_cleared_by_this_detector():
    """The self-test raises button_stuck when the button reads pressed; the monitor clears it
    on release (it used to stay raised forever)."""
    mon = Monitor(SETTINGS)
    mon.button(T0, True)
    assert mon.adopt(T0 + 1.0, BUTTON_STUCK) == []
    assert mon.poll(T0 + 10.0) == []  # already raised: not raised twice
    assert names(mon.button(T0 + 11.0, False)) == [(BUTTON_STUCK, False)]


def test_adopting_a_fault_whose_condition_is_already_gone_clears_it_at_once():
    mon = Monitor(SETTINGS)
    mon.button(T0, False)
    assert names(mon.adopt(T0 + 1.0, BUTTON_STUCK)) == [(BUTTON_STUCK, False)]


def test_adopting_an_unknown_fault_is_ignored():
    assert Monitor(SETTINGS).adopt(T0, "camera_failed") == []


# -- tamper: raised when open, cleared when closed, no hold ---------------------------------


def test_tamper_raised_at_once_when_open_and_cleared_when_closed():
    mon = Monitor(SETTINGS)
    assert mon.tamper(T0, False) == []
    assert names(mon.tamper(T0 + 1.0, True)) == [(TAMPER, True)]
    assert mon.tamper(T0 + 2.0, True) == []
    assert names(mon.tamper(T0 + 3.0, False)) == [(TAMPER, False)]


# -- over_temperature: above max, cleared below max - 5 -----------------------------------------


def test_over_temperature_raised_above_max_and_cleared_only_below_max_minus_5():
    mon = Monitor(SETTINGS)
    assert mon.temperature(T0, 80.0) == []  # at max: not above it
    [t] = mon.temperature(T0 + 1, 80.1)
    assert (t.name, t.raised) == (OVER_TEMPERATURE, True) and "80.1" in t.detail
    assert mon.temperature(T0 + 2, 79.0) == []  # in the band: stays raised
    assert mon.temperature(T0 + 3, 75.0) == []  # max - 5 is not below it
    assert names(mon.temperature(T0 + 4, 74.9)) == [(OVER_TEMPERATURE, False)]
    assert mon.temperature(T0 + 5, 79.9) == []  # in the band: stays cleared


def test_an_unreadable_temperature_changes_nothing():
    mon = Monitor(SETTINGS)
    mon.temperature(T0, 90.0)
    assert mon.temperature(T0 + 1, None) == [] and mon.active == {OVER_TEMPERATURE}


# -- camera_covered: dark and featureless for camera_covered_s ------------------------------------


def test_covered_raised_at_the_hold_time_not_1_ms_before_and_cleared_after_clear_s():
    mon = Monitor(SETTINGS)
    covered = sample(mean=16.0, std=0.0, changed=0.0)
    assert mon.frame(T0, covered) == []
    assert mon.frame(T0 + 30.0 - MS, covered) == []
    [t] = mon.frame(T0 + 30.0, covered)
    assert (t.name, t.raised) == (CAMERA_COVERED, True) and "16/255" in t.detail
    # Uncovered: cleared once it has stayed uncovered for clear_s.
    assert mon.frame(T0 + 40.0, sample()) == []
    assert mon.frame(T0 + 42.0 - MS, sample()) == []
    assert names(mon.frame(T0 + 42.0, sample())) == [(CAMERA_COVERED, False)]


def test_a_bright_moment_restarts_the_covered_count():
    mon = Monitor(SETTINGS)
    covered = sample(mean=16.0, std=0.0, changed=0.0)
    mon.frame(T0, covered)
    mon.frame(T0 + 20.0, sample())
    mon.frame(T0 + 21.0, covered)
    assert mon.frame(T0 + 51.0 - MS, covered) == []
    assert names(mon.frame(T0 + 51.0, covered)) == [(CAMERA_COVERED, True)]


def test_covered_has_a_hysteresis_band():
    """Just above the covered threshold is not "uncovered": a lens under thin tape that
    flickers around the threshold does not raise and clear the fault every few seconds."""
    mon = Monitor(SETTINGS)
    mon.frame(T0, sample(mean=16.0, std=0.0))
    mon.frame(T0 + 30.0, sample(mean=16.0, std=0.0))
    band = sample(mean=26.0, std=3.0)  # above COVERED_MEAN (24), within the margin
    assert mon.frame(T0 + 31.0, band) == [] and mon.frame(T0 + 40.0, band) == []
    assert mon.active == {CAMERA_COVERED}
    # ... and a band sample does not count towards raising either.
    fresh = Monitor(SETTINGS)
    fresh.frame(T0, band)
    assert fresh.frame(T0 + 100.0, band) == [] and fresh.active == frozenset()


def test_a_dark_scene_with_features_is_not_covered():
    mon = Monitor(SETTINGS)
    night = sample(mean=18.0, std=20.0)  # street lights in the dark
    mon.frame(T0, night)
    assert mon.frame(T0 + 100.0, night) == []


# -- camera_frozen: the picture does not change at all for camera_frozen_s -----------------------


def test_frozen_raised_at_the_hold_time_not_1_ms_before_and_cleared_when_it_moves():
    mon = Monitor(SETTINGS)
    frozen = sample(changed=0.0)
    assert mon.frame(T0, frozen) == []
    assert mon.frame(T0 + 20.0 - MS, frozen) == []
    [t] = mon.frame(T0 + 20.0, frozen)
    assert (t.name, t.raised) == (CAMERA_FROZEN, True) and "20 s" in t.detail
    assert mon.frame(T0 + 21.0, sample(changed=0.6)) == []
    assert mon.frame(T0 + 22.0, sample(changed=0.015)) == []  # in the band: clear restarts
    assert mon.frame(T0 + 23.0, sample(changed=0.6)) == []
    assert mon.frame(T0 + 25.0 - MS, sample(changed=0.6)) == []
    assert names(mon.frame(T0 + 25.0, sample(changed=0.6))) == [(CAMERA_FROZEN, False)]


def test_a_flat_picture_cannot_be_judged_frozen():
    """A covered (black, featureless) picture is the same every time: that is camera_covered,
    not a second fault."""
    mon = Monitor(SETTINGS)
    black = sample(mean=16.0, std=0.0, changed=0.0)
    mon.frame(T0, black)
    assert names(mon.frame(T0 + 30.0, black)) == [(CAMERA_COVERED, True)]
    assert CAMERA_FROZEN not in mon.active


def test_the_first_sample_has_nothing_to_compare_with():
    mon = Monitor(SETTINGS)
    mon.frame(T0, sample(changed=None))
    assert mon.frame(T0 + 100.0, sample(changed=None)) == []


# -- mic_dead: below the floor for mic_dead_s -----------------------------------------------


def test_mic_dead_raised_at_the_hold_time_not_1_ms_before_and_cleared_after_clear_s():
    mon = Monitor(SETTINGS)
    assert mon.audio(T0, -math.inf) == []  # digital silence
    assert mon.audio(T0 + 15.0 - MS, -80.0) == []  # below the floor counts as dead too
    [t] = mon.audio(T0 + 15.0, -math.inf)
    assert (t.name, t.raised) == (MIC_DEAD, True) and "15 s" in t.detail
    assert mon.audio(T0 + 16.0, -72.0) == []  # in the band (floor -75 + 6 dB)
    assert mon.audio(T0 + 30.0, -72.0) == [] and mon.active == {MIC_DEAD}
    assert mon.audio(T0 + 31.0, -30.0) == []
    assert mon.audio(T0 + 33.0 - MS, -69.0) == []  # -69 dBFS: floor + 6 dB is alive
    assert names(mon.audio(T0 + 33.0, -69.0)) == [(MIC_DEAD, False)]


def test_no_audio_observed_changes_nothing():
    mon = Monitor(SETTINGS)
    mon.audio(T0, -math.inf)
    assert mon.audio(T0 + 100.0, None) == [] and mon.active == frozenset()


# -- sampled faults are decided on observations, never on a stale one --------------------------


def test_sampled_faults_do_not_raise_on_poll_alone():
    """A camera that stops delivering frames (camera_failed) leaves its last sample behind:
    that stale sample must not raise camera_covered later."""
    mon = Monitor(SETTINGS)
    mon.frame(T0, sample(mean=16.0, std=0.0))
    mon.audio(T0, -math.inf)
    assert mon.poll(T0 + 1000.0) == [] and mon.next_deadline() is None


def test_several_faults_at_once_are_independent():
    mon = Monitor(SETTINGS)
    mon.button(T0, True)
    mon.tamper(T0, True)
    mon.temperature(T0, 95.0)
    assert mon.active == {TAMPER, OVER_TEMPERATURE}
    assert names(mon.poll(T0 + 10.0)) == [(BUTTON_STUCK, True)]
    assert names(mon.tamper(T0 + 11.0, False)) == [(TAMPER, False)]
    assert mon.active == {BUTTON_STUCK, OVER_TEMPERATURE}


def test_settings_are_validated():
    with pytest.raises(ValueError, match="button_stuck_s"):
        MonitorSettings(button_stuck_s=0.0)
    with pytest.raises(ValueError, match="max_temp_c"):
        MonitorSettings(max_temp_c=math.nan)


# -- statistics on real pictures and sound from the fake HAL --------------------------------------

W, H = 640, 480


def camera_frames(mode: str, n: int = 3) -> list[VideoFrame]:
    camera = FakeBackend(camera_mode=mode).camera(Clock(), W, H, 15.0)
    return [camera.capture_one() for _ in range(n)]


def samples_of(frames: list[VideoFrame]) -> list[FrameSample]:
    out: list[FrameSample] = []
    for f in frames:
        out.append(sample_frame(f, out[-1] if out else None))
    return out


def test_sample_is_a_small_grid_of_the_luma():
    s = sample_frame(camera_frames("ok", 1)[0], None)
    assert s.changed is None
    assert max(s.pixels.shape) <= 80 and s.pixels.dtype == np.uint8


@pytest.mark.parametrize("mode", ["ok", "noise", "still"])
def test_a_working_camera_is_neither_covered_nor_frozen(mode):
    """`still`: a static scene with sensor noise and nothing moving, the case a loose
    tolerance would call frozen."""
    mon = Monitor(SETTINGS)
    for i, s in enumerate(samples_of(camera_frames(mode, 40))):
        assert mon.frame(T0 + i, s) == [], (mode, i, s.mean, s.std, s.changed)
    assert mon.active == frozenset()


def test_the_fake_covered_camera_is_covered_and_the_frozen_one_frozen():
    covered, frozen = samples_of(camera_frames("covered")), samples_of(camera_frames("frozen", 4))
    mon = Monitor(SETTINGS)
    for i, s in enumerate(covered):
        mon.frame(T0 + 15.0 * i, s)
    assert mon.active == {CAMERA_COVERED}
    assert frozen[1].changed == 0.0 and frozen[2].changed == 0.0
    mon = Monitor(SETTINGS)
    for i, s in enumerate(frozen):
        mon.frame(T0 + 10.0 * i, s)
    assert mon.active == {CAMERA_FROZEN}


def test_a_still_noisy_scene_changes_many_sampled_pixels():
    still = samples_of(camera_frames("still", 3))
    assert still[1].changed is not None and still[1].changed > 0.2, still[1].changed
    assert abs(still[1].mean - still[2].mean) < 1.0  # and yet nothing moves


def mic_chunks(mode: str, seconds: float = 1.0) -> list[AudioChunk]:
    mic = FakeBackend(microphone_mode=mode).microphone(Clock(), 48000)
    return [mic.capture_one() for _ in range(int(seconds / 0.02))]


def test_audio_level_of_the_fake_microphone_in_each_mode():
    ok = audio_level_dbfs(mic_chunks("ok"))
    assert ok is not None and -25 < ok < -15, ok
    assert audio_level_dbfs(mic_chunks("silent")) == -math.inf
    assert audio_level_dbfs([]) is None
    # A floor of hiss well under a live microphone's: still dead.
    rng = np.random.default_rng(1)
    hiss = AudioChunk(samples=rng.normal(0, 3, 48000).astype("<i2").tobytes(),
                      sample_rate=48000, pts_us=0)
    level = audio_level_dbfs([hiss])
    assert level is not None and level < -75, level


# -- exact thresholds, band edges, details -------------------------------------------------------


@pytest.mark.parametrize(("mean", "std", "covered"), [
    (23.9, 5.9, True), (24.0, 0.0, None), (16.0, 6.0, None),  # at a threshold: the band
    (27.9, 7.9, None), (28.0, 0.0, False), (16.0, 8.0, False),  # at the band's far edge: good
])
def test_covered_thresholds_and_band_edges(mean, std, covered):
    mon = Monitor(SETTINGS)
    mon.frame(T0, sample(mean=16.0, std=0.0, changed=None))
    mon.frame(T0 + 30.0, sample(mean=16.0, std=0.0, changed=None))  # raised
    mon.frame(T0 + 31.0, sample(mean=mean, std=std, changed=None))
    cleared = mon.frame(T0 + 40.0, sample(mean=mean, std=std, changed=None))
    assert (cleared == []) is (covered is not False), cleared
    fresh = Monitor(SETTINGS)
    fresh.frame(T0, sample(mean=mean, std=std, changed=None))
    raised = fresh.frame(T0 + 30.0, sample(mean=mean, std=std, changed=None))
    assert (raised != []) is (covered is True), raised


@pytest.mark.parametrize(("changed", "std", "frozen"), [
    (0.0099, 30.0, True), (0.01, 30.0, None), (0.0199, 30.0, None), (0.02, 30.0, False),
    (0.0, 6.0, True), (0.0, 5.99, None),  # spread at COVERED_STD is a picture to judge
])
def test_frozen_thresholds_and_band_edges(changed, std, frozen):
    mon = Monitor(SETTINGS)
    mon.frame(T0, sample(changed=0.0))
    mon.frame(T0 + 20.0, sample(changed=0.0))  # raised
    mon.frame(T0 + 21.0, sample(mean=100.0, std=std, changed=changed))
    cleared = mon.frame(T0 + 30.0, sample(mean=100.0, std=std, changed=changed))
    assert (cleared == []) is (frozen is not False), cleared
    fresh = Monitor(SETTINGS)
    fresh.frame(T0, sample(mean=100.0, std=std, changed=changed))
    raised = fresh.frame(T0 + 20.0, sample(mean=100.0, std=std, changed=changed))
    assert (raised != []) is (frozen is True), raised


@pytest.mark.parametrize(("level", "dead"), [(-75.01, True), (-75.0, None), (-69.01, None),
                                               (-69.0, False)])
def test_mic_thresholds_and_band_edges(level, dead):
    mon = Monitor(SETTINGS)
    mon.audio(T0, -math.inf)
    mon.audio(T0 + 15.0, -math.inf)  # raised
    mon.audio(T0 + 16.0, level)
    cleared = mon.audio(T0 + 30.0, level)
    assert (cleared == []) is (dead is not False), cleared
    fresh = Monitor(SETTINGS)
    fresh.audio(T0, level)
    assert (fresh.audio(T0 + 15.0, level) != []) is (dead is True)


def test_details_say_what_was_seen_and_a_clear_has_none():
    mon = Monitor(SETTINGS)
    [silence] = (mon.audio(T0, -math.inf), mon.audio(T0 + 15.0, -math.inf))[1]
    assert silence.detail == "microphone silent (digital silence, below -75 dBFS) for 15 s"
    [cleared] = (mon.audio(T0 + 16.0, -20.0), mon.audio(T0 + 18.0, -20.0))[1]
    assert cleared.detail == ""
    mon.audio(T0 + 20.0, -80.4)
    [hiss] = mon.audio(T0 + 35.0, -80.4)
    assert hiss.detail == "microphone silent (-80 dBFS, below -75 dBFS) for 15 s"
    [opened] = mon.tamper(T0, True)
    assert opened.detail == "tamper switch open: the case is open"
    [closed] = mon.tamper(T0 + 1, False)
    assert closed.detail == ""


def test_adopt_touches_only_the_named_fault_and_needs_an_observation_to_clear():
    mon = Monitor(SETTINGS)
    mon.button(T0, True)
    assert mon.adopt(T0 + 1.0, TAMPER) == [] and mon.active == {TAMPER}
    # Never observed: adopted and kept until an observation says it is over.
    fresh = Monitor(SETTINGS)
    assert fresh.adopt(T0, BUTTON_STUCK) == [] and fresh.active == {BUTTON_STUCK}
    assert fresh.poll(T0 + 100.0) == []
    assert names(fresh.button(T0 + 101.0, False)) == [(BUTTON_STUCK, False)]


def test_settings_bounds():
    MonitorSettings(button_stuck_s=0.5, camera_covered_s=0.0, max_temp_c=-10.0)  # all fine
    with pytest.raises(ValueError, match=r"mic_dead_s must be a finite number >= 0, not -1"):
        MonitorSettings(mic_dead_s=-1)
    with pytest.raises(ValueError, match=r"max_temp_c must be a finite number, not inf"):
        MonitorSettings(max_temp_c=math.inf)


def test_changed_is_the_fraction_of_the_grid_that_differs():
    w, h = 80, 60  # small enough to be its own grid
    first = VideoFrame(bytes(w * h) + bytes([128]) * (w * h // 2), w, h, 0)
    half = bytes([200]) * (w * h // 2) + bytes(w * h // 2)
    second = VideoFrame(half + bytes([128]) * (w * h // 2), w, h, 1)
    a = sample_frame(first, None)
    b = sample_frame(second, a)
    assert a.pixels.shape == (h, w) and b.changed == 0.5 and b.mean == 100.0


def test_audio_level_is_rms_without_dc_over_every_sample():
    quiet_then_loud = np.concatenate([np.zeros(24000), np.tile([1000, -1000], 12000)]) + 5000
    chunk = AudioChunk(samples=quiet_then_loud.astype("<i2").tobytes(), sample_rate=48000,
                       pts_us=0)
    level = audio_level_dbfs([chunk])
    # DC 5000 removed; silence, then ±1000: RMS 1000/√2 over the whole second.
    assert level == pytest.approx(20 * math.log10(1000 / math.sqrt(2) / 32768))
    # An odd trailing byte (a torn read) is left out, not an exception on the sampler.
    odd = AudioChunk(samples=b"\x10\x00\x10", sample_rate=48000, pts_us=0)
    assert audio_level_dbfs([odd]) == -math.inf
