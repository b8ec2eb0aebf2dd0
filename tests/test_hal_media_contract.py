"""One contract, every media backend: what the pipeline may rely on from a Camera and a Microphone.

Cameras: the fake, the pi backend's picamera2 glue driven by tests/fake_picamera2.py
(a stand-in module with padded buffers and failures on demand), and the laptop webcam glue
(hal/v4l2, PyAV) over an FFmpeg lavfi test source. Microphones: the fake
here; the PyAudio one runs through a real ALSA device in test_pyaudio_alsa.py.
Then what is particular to each: the fake's stamp and test controls on a FakeClock,
the picamera2 glue's buffer handling, and the stamp surviving a real H.264 encode.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pytest
from pinkbutton.hal.base import (
    AudioChunk,
    BackendUnavailable,
    Camera,
    DeviceFault,
    HalError,
    Microphone,
    VideoFrame,
)
from pinkbutton.hal.clock import Clock, FakeClock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.hal.fake.camera import FakeCamera
from pinkbutton.hal.fake.microphone import FakeMicrophone, tone_samples
from pinkbutton.hal.registry import Backend
from pinkbutton.hal.stamp import BLACK, draw_stamp, read_stamp

from tests import fake_picamera2
from tests.fake_picamera2 import Picamera2, expected_i420

W, H = 320, 240


def y_plane(frame: VideoFrame) -> np.ndarray:
    return np.frombuffer(frame.data, np.uint8)[: frame.width * frame.height].reshape(
        frame.height, frame.width
    )


@dataclass
class Collector:
    """Gathers callbacks from a capture thread, with the names of the threads they ran on."""

    items: list = field(default_factory=list)
    threads: set = field(default_factory=set)
    failures: list = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_item(self, item) -> None:
        with self.cond:
            self.items.append(item)
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def on_failure(self, reason: str) -> None:
        with self.cond:
            self.failures.append(reason)
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


# -- camera contract --------------------------------------------------------------------


@dataclass
class CameraDriver:
    name: str
    open: Callable[[], Camera]
    break_it: Callable[[Camera], None]  # make the running camera fail


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Picamera2]]:
    Picamera2.reset()
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    yield Picamera2
    Picamera2.reset()


def _fake_camera_driver(_: type[Picamera2]) -> CameraDriver:
    return CameraDriver(
        "fake", lambda: FakeCamera(Clock(), W, H, fps=60.0), lambda cam: cam.fail("lens gone")
    )


def _pi_camera_driver(module: type[Picamera2]) -> CameraDriver:
    from pinkbutton.hal.pi.camera import PiCamera

    def break_it(_: Camera) -> None:
        module.fail_after = 0  # the next capture_request raises

    module.stride = W + 64  # padded rows, as libcamera delivers them
    return CameraDriver("pi", lambda: PiCamera(Clock(), W, H, fps=60.0), break_it)


def _v4l2_camera_driver(_: type[Picamera2]) -> CameraDriver:
    from pinkbutton.hal.v4l2 import V4l2Camera

    # No webcam in CI: the same PyAV capture path over FFmpeg's lavfi test source, paced
    # like a device, in another size and pixel format (so the conversion runs too). It
    # ends after 1 s: for this backend the end of the input is the failure.
    source = "testsrc2=size=352x288:rate=60:duration=1,format=yuyv422,realtime"
    return CameraDriver(
        "v4l2",
        lambda: V4l2Camera(Clock(), W, H, fps=60.0, device=source, input_format="lavfi"),
        lambda cam: None,
    )


@pytest.fixture(
    params=[_fake_camera_driver, _pi_camera_driver, _v4l2_camera_driver], ids=["fake", "pi", "v4l2"]
)
def camera_driver(request, fake_module) -> CameraDriver:
    return request.param(fake_module)


@pytest.fixture
def running_camera(camera_driver: CameraDriver) -> Iterator[tuple[Camera, Collector]]:
    camera = camera_driver.open()
    sink = Collector()
    camera.on_frame = sink.on_item
    camera.on_failure = sink.on_failure
    camera.start()
    yield camera, sink
    camera.close()


def test_camera_frames_have_the_configured_size_and_rising_pts(running_camera) -> None:
    camera, sink = running_camera
    assert sink.wait(lambda: len(sink.items) >= 5)
    frames = list(sink.items[:5])
    for frame in frames:
        assert (frame.width, frame.height) == (W, H) == (camera.width, camera.height)
        assert len(frame.data) == W * H * 3 // 2
    pts = [f.pts_us for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts


def test_camera_calls_back_on_a_capture_thread(running_camera) -> None:
    _, sink = running_camera
    assert sink.wait(lambda: len(sink.items) >= 2)
    assert threading.main_thread().name not in sink.threads
    assert sink.threads


def test_camera_stop_stops_frames(running_camera) -> None:
    camera, sink = running_camera
    assert sink.wait(lambda: len(sink.items) >= 2)
    camera.stop()
    count = len(sink.items)
    time.sleep(0.1)
    assert len(sink.items) == count


def test_camera_failure_is_reported_once_and_stops_frames(camera_driver, running_camera) -> None:
    camera, sink = running_camera
    assert sink.wait(lambda: len(sink.items) >= 2)
    camera_driver.break_it(camera)
    assert sink.wait(lambda: sink.failures)
    time.sleep(0.1)
    count = len(sink.items)
    time.sleep(0.1)
    assert len(sink.items) == count
    assert len(sink.failures) == 1
    reason = sink.failures[0]
    assert reason.strip() and "\n" not in reason
    assert threading.main_thread().name not in sink.threads
    with pytest.raises(DeviceFault):
        camera.start()


# -- microphone contract --------------------------------------------------------------------


@pytest.fixture(params=["fake"])
def running_mic(request) -> Iterator[tuple[Microphone, Collector]]:
    mic = FakeMicrophone(Clock(), 48000, chunk_ms=20)
    sink = Collector()
    mic.on_audio = sink.on_item
    mic.on_failure = sink.on_failure
    mic.start()
    yield mic, sink
    mic.close()


def test_mic_chunks_are_mono_s16_with_back_to_back_pts(running_mic) -> None:
    mic, sink = running_mic
    assert sink.wait(lambda: len(sink.items) >= 5)
    chunks: list[AudioChunk] = list(sink.items[:5])
    for chunk in chunks:
        assert chunk.sample_rate == mic.sample_rate == 48000
        assert chunk.frames == 960 and len(chunk.samples) == 1920
    pts = [c.pts_us for c in chunks]
    assert [b - a for a, b in zip(pts, pts[1:], strict=False)] == [20_000] * 4
    assert threading.main_thread().name not in sink.threads


def test_mic_stop_stops_chunks(running_mic) -> None:
    mic, sink = running_mic
    assert sink.wait(lambda: len(sink.items) >= 2)
    mic.stop()
    count = len(sink.items)
    time.sleep(0.1)
    assert len(sink.items) == count


def test_mic_failure_is_reported_once(running_mic) -> None:
    mic, sink = running_mic
    assert sink.wait(lambda: len(sink.items) >= 2)
    mic.fail("mic unplugged")
    mic.fail("again")
    assert sink.wait(lambda: sink.failures)
    time.sleep(0.1)
    assert sink.failures == ["mic unplugged"]
    assert threading.main_thread().name not in sink.threads
    count = len(sink.items)
    time.sleep(0.1)
    assert len(sink.items) == count


# -- the backends make them ------------------------------------------------------------------


def test_backends_make_cameras_and_microphones(fake_module) -> None:
    from pinkbutton.hal.pi import PiBackend
    from pinkbutton.hal.pi.camera import PiCamera

    clock = FakeClock()
    fake = FakeBackend()
    cam = fake.camera(clock, 160, 120, 5.0)
    mic = fake.microphone(clock, 16000)
    assert (cam.width, cam.height, cam.fps) == (160, 120, 5.0)
    assert mic.sample_rate == 16000
    assert fake.cameras == [cam] and fake.microphones == [mic]
    pi_cam = PiBackend().camera(clock, 160, 120, 5.0)
    assert isinstance(pi_cam, PiCamera) and (pi_cam.width, pi_cam.fps) == (160, 5.0)
    with pytest.raises(NotImplementedError, match="no camera"):
        Backend().camera(clock)
    with pytest.raises(NotImplementedError, match="no microphone"):
        Backend().microphone(clock)


# -- the stamp ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 1_767_225_600_123_456, 2**64 - 1, 0xA5A5_5A5A_0F0F_F0F0])
def test_stamp_round_trips(value: int) -> None:
    y = np.full((480, 640), 90, np.uint8)
    draw_stamp(y, value)
    assert read_stamp(y) == value


def test_stamp_absent_or_damaged_reads_none() -> None:
    assert read_stamp(np.full((480, 640), BLACK, np.uint8)) is None
    assert read_stamp(np.random.default_rng(1).integers(0, 256, (480, 640), np.uint8)) is None
    y = np.zeros((480, 640), np.uint8)
    draw_stamp(y, 123456789)
    y[0:16, 16 * 20 : 16 * 21] = 255 - y[0:16, 16 * 20 : 16 * 21]  # flip one value bit
    assert read_stamp(y) is None
    assert read_stamp(np.zeros((8, 640), np.uint8)) is None  # too small to hold one
    with pytest.raises(ValueError, match="64 bits"):
        draw_stamp(np.zeros((480, 640), np.uint8), 2**64)
    with pytest.raises(ValueError, match="too small"):
        draw_stamp(np.zeros((480, 40), np.uint8), 5)


def test_stamp_survives_libx264_at_500_kbits_and_a_downscale() -> None:
    av = pytest.importorskip("av", reason="PyAV is needed to encode")
    clock = FakeClock()
    camera = FakeCamera(clock, 640, 480, 15.0)
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 640, 480, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 15), Fraction(15)
    encoder.bit_rate = 500_000
    encoder.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": "keyint=15:vbv-maxrate=500:vbv-bufsize=500",
    }
    decoder = av.CodecContext.create("h264", "r")
    sent, read, scaled, encoded_bytes = [], [], [], 0

    def decode(packets) -> None:
        nonlocal encoded_bytes
        for packet in packets:
            encoded_bytes += packet.size
            for picture in decoder.decode(packet):
                plane = picture.planes[0]
                y = np.frombuffer(plane, np.uint8).reshape(480, plane.line_size)[:, :640]
                read.append(read_stamp(np.ascontiguousarray(y)))
                small = picture.reformat(width=320, height=240).planes[0]
                ys = np.frombuffer(small, np.uint8).reshape(240, small.line_size)[:, :320]
                scaled.append(read_stamp(np.ascontiguousarray(ys)))

    for i in range(30):
        frame = camera.capture_one()
        sent.append(frame.pts_us)
        picture = av.VideoFrame.from_ndarray(
            np.frombuffer(frame.data, np.uint8).reshape(480 * 3 // 2, 640), format="yuv420p"
        )
        picture.pts = i
        decode(encoder.encode(picture))
        clock.advance(1 / 15)
    decode(encoder.encode(None))
    assert encoded_bytes * 8 / 2.0 < 600_000  # it really was squeezed to ~500 kbit/s
    assert read == sent
    assert scaled == sent


# -- the fake camera ------------------------------------------------------------------------


def test_fake_camera_stamps_each_frame_with_its_pts() -> None:
    clock = FakeClock(start=1234.5)
    camera = FakeCamera(clock, W, H, 15.0)
    got: list[VideoFrame] = []
    camera.on_frame = got.append
    first = camera.capture_one()
    clock.advance(0.25)
    second = camera.capture_one()
    assert got == [first, second]
    assert first.pts_us == 1_234_500_000 and second.pts_us == 1_234_750_000
    assert [read_stamp(y_plane(f)) for f in (first, second)] == [first.pts_us, second.pts_us]
    assert y_plane(first)[100:].tobytes() != y_plane(second)[100:].tobytes()  # the bar moved
    assert camera.frames_captured == 2


def test_fake_camera_is_deterministic_on_a_fake_clock() -> None:
    runs = []
    for _ in range(2):
        clock = FakeClock()
        camera = FakeCamera(clock, W, H, 15.0)
        frames = []
        for _ in range(3):
            frames.append(camera.capture_one())
            clock.advance(1 / 15)
        runs.append(frames)
    assert runs[0] == runs[1]


def test_fake_camera_covered_is_black_without_stamp() -> None:
    camera = FakeCamera(FakeClock(), W, H)
    camera.covered = True
    frame = camera.capture_one()
    y = y_plane(frame)
    assert len(frame.data) == W * H * 3 // 2
    assert int(y.max()) == BLACK and read_stamp(y) is None
    assert set(frame.data[W * H :]) == {128}


def test_fake_camera_frozen_repeats_the_picture_and_its_stamp() -> None:
    clock = FakeClock()
    camera = FakeCamera(clock, W, H)
    before = camera.capture_one()
    camera.frozen = True
    clock.advance(0.5)
    stuck = camera.capture_one()
    assert stuck.data == before.data and stuck.pts_us > before.pts_us
    assert read_stamp(y_plane(stuck)) == before.pts_us  # how the far end spots a hung sensor
    camera.frozen = False
    clock.advance(0.5)
    live = camera.capture_one()
    assert read_stamp(y_plane(live)) == live.pts_us


def test_fake_camera_noise_is_random_with_a_stamp() -> None:
    clock = FakeClock()
    camera = FakeCamera(clock, W, H)
    camera.noise = True
    a = camera.capture_one()
    clock.advance(0.1)
    b = camera.capture_one()
    assert read_stamp(y_plane(a)) == a.pts_us and read_stamp(y_plane(b)) == b.pts_us
    below = y_plane(a)[64:]
    assert below.std() > 50 and a.data[W * H :] != b.data[W * H :]


def test_fake_camera_fail_while_stopped_reports_once_then_refuses() -> None:
    camera = FakeCamera(FakeClock(), W, H)
    failures: list[str] = []
    camera.on_failure = failures.append
    camera.fail("sensor gone")
    camera.fail("twice")
    assert failures == ["sensor gone"] and camera.failure == "sensor gone"
    with pytest.raises(DeviceFault, match="sensor gone"):
        camera.capture_one()
    with pytest.raises(DeviceFault):
        camera.start()
    camera.repair()
    assert read_stamp(y_plane(camera.capture_one())) is not None


def test_fake_camera_thread_follows_a_fake_clock() -> None:
    clock = FakeClock()
    camera = FakeCamera(clock, W, H, fps=10.0)
    sink = Collector()
    camera.on_frame = sink.on_item
    start = clock.monotonic()
    camera.start()
    try:
        assert sink.wait(lambda: len(sink.items) == 1)  # the first frame at start
        with pytest.raises(HalError, match="started"):
            camera.capture_one()
        time.sleep(0.05)
        assert len(sink.items) == 1  # fake time stands still: no more frames
        for n in range(2, 5):
            clock.advance(0.1)
            assert sink.wait(lambda n=n: len(sink.items) == n)
        clock.advance(10.0)  # a jump: missed frames are dropped, not burst out
        assert sink.wait(lambda: len(sink.items) == 5)
        time.sleep(0.05)
    finally:
        camera.stop()
    pts = [f.pts_us for f in sink.items]
    assert pts[:4] == [round((start + 0.1 * i) * 1e6) for i in range(4)]
    assert len(sink.items) == 5 and pts[4] == round((start + 10.3) * 1e6)


def test_fake_camera_paces_to_fps_on_a_real_clock() -> None:
    camera = FakeCamera(Clock(), 160, 120, fps=50.0)
    sink = Collector()
    camera.on_frame = sink.on_item
    camera.start()
    assert sink.wait(lambda: len(sink.items) >= 16)
    camera.stop()
    pts = [f.pts_us for f in sink.items[:16]]
    mean_interval = (pts[-1] - pts[0]) / 15
    assert 16_000 < mean_interval < 26_000, mean_interval  # 20 ms nominal


def test_fake_camera_rejects_bad_settings() -> None:
    with pytest.raises(HalError, match="even"):
        FakeCamera(FakeClock(), 641, 480)
    with pytest.raises(HalError, match="fps"):
        FakeCamera(FakeClock(), 640, 480, fps=0)


# -- the fake microphone ---------------------------------------------------------------------


def test_fake_mic_capture_one_is_the_chunk_that_just_ended() -> None:
    clock = FakeClock(start=50.0)
    mic = FakeMicrophone(clock, 48000, chunk_ms=20)
    got: list[AudioChunk] = []
    mic.on_audio = got.append
    chunks = []
    for _ in range(10):  # 200 ms: one burst on, one off
        clock.advance(0.02)
        chunks.append(mic.capture_one())
    assert got == chunks
    assert [c.pts_us for c in chunks] == [50_000_000 + 20_000 * i for i in range(10)]
    samples = np.frombuffer(b"".join(c.samples for c in chunks), "<i2")
    assert np.array_equal(samples, tone_samples(0, 9600, 48000))
    on, off = samples[:4800], samples[4800:]
    assert not off.any() and on.std() > 4000
    spectrum = np.abs(np.fft.rfft(on))
    assert round(np.argmax(spectrum) * 48000 / len(on)) == 440


def test_fake_mic_silent_and_fail() -> None:
    clock = FakeClock()
    mic = FakeMicrophone(clock)
    mic.silent = True
    clock.advance(0.02)
    assert mic.capture_one().samples == bytes(1920)
    failures: list[str] = []
    mic.on_failure = failures.append
    mic.fail("dead")
    assert failures == ["dead"]
    with pytest.raises(DeviceFault, match="dead"):
        mic.capture_one()


def test_fake_mic_thread_delivers_a_short_backlog_on_a_fake_clock() -> None:
    clock = FakeClock()
    mic = FakeMicrophone(clock, 16000, chunk_ms=20)
    sink = Collector()
    mic.on_audio = sink.on_item
    start = clock.monotonic()
    mic.start()
    try:
        time.sleep(0.05)
        assert sink.items == []  # the first chunk is complete only 20 ms in
        clock.advance(0.1)  # a short stall: all five chunks still arrive, back to back
        assert sink.wait(lambda: len(sink.items) == 5)
    finally:
        mic.stop()
    assert [c.pts_us for c in sink.items] == [round((start + 0.02 * i) * 1e6) for i in range(5)]


# -- the picamera2 glue ---------------------------------------------------------------------


def _pi_frames(module: type[Picamera2], count: int, **knobs) -> tuple[list[VideoFrame], Collector]:
    from pinkbutton.hal.pi.camera import PiCamera

    for name, value in knobs.items():
        setattr(module, name, value)
    camera = PiCamera(Clock(), W, H, fps=30.0)
    sink = Collector()
    camera.on_frame = sink.on_item
    camera.on_failure = sink.on_failure
    camera.start()
    sink.wait(lambda: len(sink.items) >= count or bool(sink.failures))
    camera.stop()
    return list(sink.items), sink


@pytest.mark.parametrize(
    "stride,tail", [(None, 0), (W + 64, 0), (W + 64, 4096), (None, 512)], ids=str
)
def test_pi_camera_unpads_rows_and_copies_before_release(fake_module, stride, tail) -> None:
    frames, _ = _pi_frames(fake_module, 3, stride=stride, tail_padding=tail)
    assert len(frames) >= 3
    # The fake overwrites a buffer on release: equal data proves the copy came first.
    for index, frame in enumerate(frames):
        assert frame.data == expected_i420(W, H, index), f"frame {index}"
    cam = fake_module.instances[0]
    assert all(r.released for r in cam.requests)
    for index in range(len(frames)):
        assert cam.calls.index(("make_buffer", index)) < cam.calls.index(("release", index))


def test_pi_camera_configures_yuv420_at_size_and_fps(fake_module) -> None:
    _pi_frames(fake_module, 1)
    cam = fake_module.instances[0]
    assert (
        "create_video_configuration",
        {"size": (W, H), "format": "YUV420"},
        {"FrameRate": 30.0},
    ) in cam.calls
    assert [c[0] for c in cam.calls[-2:]] == ["stop", "close"]
    assert cam.closed


def test_pi_camera_releases_even_when_the_copy_fails(fake_module) -> None:
    frames, sink = _pi_frames(fake_module, 5, make_buffer_fails_at=2)
    assert len(frames) == 2
    assert len(sink.failures) == 1 and "failed to map buffer" in sink.failures[0]
    cam = fake_module.instances[0]
    assert all(r.released for r in cam.requests) and len(cam.requests) == 3
    assert cam.closed


def test_pi_camera_too_short_buffer_is_a_failure(fake_module) -> None:
    from pinkbutton.hal.pi.camera import i420_from_padded

    frames, sink = _pi_frames(fake_module, 5, stride=W + 64, short_by=100)
    assert frames == [] and len(sink.failures) == 1
    assert "does not hold" in sink.failures[0]
    with pytest.raises(DeviceFault, match="stride 400"):
        i420_from_padded(bytes(W * H), W, H, 400)


def test_pi_camera_that_will_not_open_is_one_line(fake_module) -> None:
    from pinkbutton.hal.pi.camera import PiCamera

    fake_module.fail_open = True
    camera = PiCamera(Clock(), W, H, 15.0)
    with pytest.raises(DeviceFault, match="cannot open the camera: Camera __init__"):
        camera.start()


def test_pi_camera_without_picamera2_names_the_fix(monkeypatch) -> None:
    from pinkbutton.hal.pi.camera import PiCamera

    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(BackendUnavailable, match="apt install python3-picamera2.*system-site"):
        PiCamera(Clock(), W, H, 15.0)
