"""hal/v4l2: the laptop webcam glue (PyAV) beyond the shared contract: the picture survives
the pixel-format and size conversion, and a missing device is a one-line DeviceFault."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pinkbutton.hal.base import DeviceFault, VideoFrame
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.v4l2 import V4l2Camera


def first_frame(source: str, width: int, height: int) -> VideoFrame:
    cam = V4l2Camera(Clock(), width, height, 30.0, device=source, input_format="lavfi")
    got: list[VideoFrame] = []
    done = threading.Event()

    def on_frame(frame: VideoFrame) -> None:
        got.append(frame)
        done.set()

    cam.on_frame = on_frame
    cam.start()
    try:
        assert done.wait(5.0), "no frame from the lavfi source"
    finally:
        cam.close()
    return got[0]


# BT.601 full range, which is what PyAV's reformat produces from RGB by default.
@pytest.mark.parametrize(("colour", "luma", "u", "v"), [
    ("white", 255, 128, 128), ("black", 0, 128, 128), ("0xFF0000", 76, 85, 255),
])
def test_solid_colour_in_rgb_arrives_as_the_right_i420(colour, luma, u, v):
    frame = first_frame(f"color=c={colour}:size=200x150:rate=30,format=rgb24", 320, 240)
    data = np.frombuffer(frame.data, np.uint8)
    assert (frame.width, frame.height, data.size) == (320, 240, 320 * 240 * 3 // 2)
    y_plane, u_plane, v_plane = data[: 320 * 240], data[320 * 240 : 320 * 300], data[320 * 300 :]
    assert abs(int(np.median(y_plane)) - luma) <= 2
    assert abs(int(np.median(u_plane)) - u) <= 2 and abs(int(np.median(v_plane)) - v) <= 2


def test_odd_width_padding_is_removed_row_by_row():
    # 330 is not a multiple of FFmpeg's line alignment: rows come padded, frames must not.
    frame = first_frame("testsrc2=size=330x250:rate=30", 330, 250)
    assert len(frame.data) == 330 * 250 * 3 // 2


def test_missing_device_is_one_line_device_fault(tmp_path):
    cam = V4l2Camera(Clock(), 640, 480, 15.0, device=str(tmp_path / "video9"))
    with pytest.raises(DeviceFault) as exc:
        cam.start()
    msg = str(exc.value)
    assert "\n" not in msg and "video9" in msg and msg.startswith("cannot open camera")


@pytest.mark.parametrize(("w", "h", "fps"), [(641, 480, 15.0), (640, 0, 15.0), (640, 480, 0)])
def test_bad_sizes_are_refused(w, h, fps):
    with pytest.raises(Exception, match="camera"):
        V4l2Camera(Clock(), w, h, fps)
