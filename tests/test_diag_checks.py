"""pinkbutton-diag's analyses, each threshold in its good and bad modes, on real numbers:
frames and audio from the fake HAL in each of its modes, a real filesystem, real dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pinkbutton.firmware.diag.checks import (
    camera_check,
    certificate_check,
    disk_check,
    microphone_check,
)
from pinkbutton.firmware.diag.cli import render, shown
from pinkbutton.hal.base import AudioChunk, HalError, VideoFrame
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend

W, H = 320, 240


def frames(mode: str, n: int = 4) -> list[VideoFrame]:
    camera = FakeBackend(camera_mode=mode).camera(Clock(), W, H, 15.0)
    return [camera.capture_one() for _ in range(n)]


def flat_frame(y_values: np.ndarray) -> VideoFrame:
    """An I420 frame with the given luma plane and neutral chroma."""
    chroma = np.full(W * H // 2, 128, dtype=np.uint8)
    data = y_values.astype(np.uint8).tobytes() + chroma.tobytes()
    return VideoFrame(data=data, width=W, height=H, pts_us=0)


def audio(mode: str, seconds: float = 0.5) -> list[AudioChunk]:
    mic = FakeBackend(microphone_mode=mode).microphone(Clock(), 48000)
    return [mic.capture_one() for _ in range(int(seconds / 0.02))]


def pcm(samples: np.ndarray) -> list[AudioChunk]:
    return [AudioChunk(samples=samples.astype("<i2").tobytes(), sample_rate=48000, pts_us=0)]


# -- camera ----------------------------------------------------------------------------------


def test_working_camera_passes_with_its_figures():
    check = camera_check(frames("ok"))
    assert check.ok, check
    assert check.name == "camera" and "mean luminance" in check.detail and check.fix is None


def test_covered_camera_fails_as_covered():
    check = camera_check(frames("covered"))
    assert not check.ok
    assert "covered or black" in check.detail and "uncover the lens" in check.fix


def test_frozen_camera_fails_as_frozen():
    check = camera_check(frames("frozen"))
    assert not check.ok
    assert check.detail.startswith("frozen: 4 frames"), check.detail


def test_noisy_camera_is_not_frozen_nor_blurred():
    assert camera_check(frames("noise")).ok


def test_dark_and_bright_pictures_fail_with_the_luminance():
    rng = np.random.default_rng(1)
    dark = flat_frame(rng.integers(20, 50, W * H))  # textured, so not "covered"
    bright = flat_frame(rng.integers(225, 256, W * H))
    assert "too dark" in camera_check([dark]).detail
    assert "too bright" in camera_check([bright]).detail


def test_out_of_focus_picture_fails_and_the_same_picture_sharp_passes():
    # The fake camera's picture, blurred by a 9x9 box: same light, no edges left.
    sharp = frames("ok", 1)[0]
    y = np.frombuffer(sharp.data, np.uint8, W * H).reshape(H, W).astype(np.float64)
    k = np.ones(9) / 9
    padded = np.pad(y, 4, mode="edge")  # no dark border for the blur to draw an edge at
    blurred = np.apply_along_axis(lambda r: np.convolve(r, k, "valid"), 1, padded)
    blurred = np.apply_along_axis(lambda c: np.convolve(c, k, "valid"), 0, blurred)
    check = camera_check([flat_frame(blurred)])
    assert not check.ok and "out of focus" in check.detail, check
    assert camera_check([sharp]).ok


def test_no_frames_fails():
    assert not camera_check([]).ok


def test_unknown_fake_mode_is_refused():
    with pytest.raises(HalError, match="camera mode"):
        FakeBackend(camera_mode="smashed")


# -- microphone ------------------------------------------------------------------------------


def test_working_microphone_passes_with_its_level():
    check = microphone_check(audio("ok"))
    assert check.ok, check
    assert "dBFS" in check.detail


def test_dead_microphone_fails_as_silent():
    check = microphone_check(audio("silent"))
    assert not check.ok and check.detail.startswith("silent"), check


def test_clipping_microphone_fails_with_the_fraction():
    check = microphone_check(audio("clipping"))
    assert not check.ok and check.detail.startswith("clipping:"), check
    assert "alsamixer" in check.fix


def test_dc_offset_fails_and_a_small_offset_passes():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 300, 24000)
    assert "DC offset" in microphone_check(pcm(noise + 5000)).detail
    assert microphone_check(pcm(noise + 200)).ok


def test_faint_noise_floor_is_not_silence():
    rng = np.random.default_rng(3)
    assert microphone_check(pcm(rng.normal(0, 20, 24000))).ok  # about -64 dBFS


# -- disk, certificate, output ---------------------------------------------------------------


def test_disk_check_reads_the_real_filesystem(tmp_path):
    ok = disk_check(tmp_path / "not-yet" / "state")  # nearest existing folder is used
    assert ok.ok and str(tmp_path) in ok.detail
    short = disk_check(tmp_path, min_free_bytes=1 << 62)
    assert not short.ok and "need" in short.detail


def test_certificate_days_left():
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert certificate_check(now + timedelta(days=400), now).ok
    soon = certificate_check(now + timedelta(days=29, hours=1), now)
    assert not soon.ok and "certificate expires in 29 days" in soon.detail
    assert certificate_check(now + timedelta(days=30, hours=1), now).ok
    gone = certificate_check(now - timedelta(days=1), now)
    assert not gone.ok and "expired on" in gone.detail


def test_human_output_escapes_text_and_colours_only_when_asked():
    check = camera_check(frames("covered"))
    hostile = type(check)("camera", False, "site \x1b[2J\u202eevil\nline", "fix \x07")
    plain = render([hostile], colour=False)
    assert "\x1b" not in plain and "\u202e" not in plain and "\n" not in plain
    assert "\\x1b[2J\\u202eevil\\x0aline" in plain and plain.startswith("✗ camera:")
    assert shown("Qissa Khwani — ✓") == "Qissa Khwani — ✓"  # ordinary text untouched
    coloured = render([check], colour=True)
    assert coloured.startswith("\x1b[31m✗\x1b[0m camera:")
