"""Issue 4 end to end: a simulated incident's video and voice, from the fake camera
and microphone through the real pipeline, MQTT (mTLS) and the control room, into
an evidence MP4 that ffprobe and PyAV read back."""

from __future__ import annotations

import time

import av
import pytest
from pinkbutton.hal.stamp import read_stamp
from pinkbutton.tools.controlroom.cli import main as controlroom_main
from pinkbutton.tools.controlroom.media import ffprobe_summary
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.controlroom.terminal import ms as rounded_ms

from tests.helpers import RunningKiosk, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

pytestmark = pytest.mark.broker

PREROLL_S = 5.0
LIVE_S = 5.0
FPS = 15.0
KEYFRAME_S = 1.0  # [media] keyframe_interval_s default


def first_stamp_us(path) -> int:
    with av.open(path) as container:
        for frame in container.decode(video=0):
            stamp = read_stamp(frame.to_ndarray(format="gray"))
            assert stamp is not None, "first frame's drawn timestamp unreadable"
            return stamp
    raise AssertionError(f"{path}: no video frame")


@pytest.fixture(scope="module")
def incident(tmp_path_factory, pki_dir, broker):
    """Run one ~10 s incident (5 s pre-roll + 5 s live) and return what came out.

    The kiosk ends the stream itself LIVE_S after the press (alert.stream_s, acked at once),
    so the live part does not depend on how fast an `end` command crosses a busy host."""
    tmp = tmp_path_factory.mktemp("media-e2e")
    cfg = write_kiosk_config(tmp, pki_dir, broker.port, "pb-test-0002",
                             alert={"stream_s": LIVE_S})
    evidence_dir = tmp / "evidence"
    with RunningRoom(pki_dir, broker, tmp / "room.db", auto_ack=True, evidence_dir=evidence_dir,
                     client_id="room-media") as room, RunningKiosk(cfg, media=True) as kiosk:
        kiosk.events.wait_for("connected")
        time.sleep(PREROLL_S + 0.7)  # let the pre-roll fill
        kiosk.press()
        press_us = int(kiosk.events.wait_for("pressed")["at"] * 1e6)
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
        kiosk.events.wait_for("stream_end", timeout=LIVE_S + 15)
        evidence = room.events.wait_for("evidence", timeout=15)
        first_media = room.events.wait_for("first_media")
        faults = kiosk.kiosk.state.faults
    return {"alert_id": alert_id, "press_us": press_us, "evidence": evidence,
            "first_media": first_media, "faults": faults, "room_lines": room.lines,
            "db": tmp / "room.db"}


def test_evidence_has_h264_and_opus_of_the_right_length(incident):
    info = ffprobe_summary(incident["evidence"]["path"])
    assert info["video"]["codec"] == "h264"
    assert (info["video"]["width"], info["video"]["height"]) == (640, 480)
    assert info["audio"]["codec"] == "opus"
    # The pre-roll the kiosk sent, read from the first decoded frame's drawn capture time:
    # by design it covers PREROLL_S from the keyframe at or before it (up to one GOP more).
    preroll = (incident["press_us"] - first_stamp_us(incident["evidence"]["path"])) / 1e6
    assert PREROLL_S - 0.1 <= preroll <= PREROLL_S + KEYFRAME_S + 0.2, preroll
    expected = preroll + LIVE_S
    assert abs(info["duration_s"] - expected) <= 0.1 * expected, (info["duration_s"], expected)
    assert incident["evidence"]["gaps"] == []
    assert abs(incident["evidence"]["preroll_s"] - preroll) < 0.5  # room: up to start_stream
    assert incident["faults"] == frozenset()
    assert incident["first_media"]["keyframe"], "the pre-roll must start with a keyframe"


def test_decoded_frames_carry_their_capture_times_in_order_across_the_seam(incident):
    stamps, keyframe_first = [], None
    with av.open(incident["evidence"]["path"]) as container:
        for frame in container.decode(video=0):
            if keyframe_first is None:
                keyframe_first = frame.key_frame
            y = frame.to_ndarray(format="gray")
            stamps.append(read_stamp(y))
    assert keyframe_first, "first decoded frame must be a keyframe"
    readable = [s for s in stamps if s is not None]
    assert len(readable) >= 0.95 * len(stamps), "drawn timestamps must survive H.264"
    # Pre-roll present: the first frame was captured before the press.
    assert readable[0] < incident["press_us"] - 3.5e6
    assert readable[-1] > incident["press_us"] + 3.5e6
    # Order and the seam: strictly increasing, no duplicate, no hole of more than one frame.
    # Between two readable stamps, the frames decoded in between whose stamp was unreadable
    # (allowed above) are there, not a hole: each step is judged per decoded frame.
    at = [(i, s) for i, s in enumerate(stamps) if s is not None]
    steps = [(b - a, j - i) for (i, a), (j, b) in zip(at, at[1:], strict=False)]
    assert all(step > 0 for step, _n in steps), "frames out of order or duplicated"
    frame_us = 1e6 / FPS
    hole, frames = max(steps, key=lambda s: s[0] - s[1] * frame_us)
    assert hole < (frames + 1.5) * frame_us, (
        f"a gap of {hole / 1000:.0f} ms in the video across {frames} decoded frame(s)")


def test_room_reports_the_evidence_file(incident):
    lines = [x for x in incident["room_lines"] if x.startswith("EVIDENCE")]
    assert lines and incident["alert_id"] in lines[0] and "gaps none" in lines[0]


def test_room_reports_and_stores_first_media_and_keyframe_times(incident, capsys):
    ev = incident["evidence"]
    media_ms, key_ms = ev["first_media_ms"], ev["first_keyframe_ms"]
    # The pre-roll is published right after the press, so both follow the alert closely
    # (bounds generous for a busy host; the point is that they are measured and sane).
    assert 0 <= media_ms <= key_ms < 5000, ev
    line = next(x for x in incident["room_lines"] if x.startswith("EVIDENCE"))
    assert f"first media {media_ms:+d} ms, first keyframe {key_ms:+d} ms" in line, line
    store = IncidentStore(incident["db"])
    try:
        timeline = store.timeline(incident["alert_id"])
    finally:
        store.close()
    whats = [what for _, what, _ in timeline]
    assert {what: d["ms"] for _, what, d in timeline if what.startswith("first_")} == {
        "first_media": media_ms, "first_keyframe": key_ms}
    # Noted when they happened (after the alert was received), each once.
    assert whats.index("received") < whats.index("first_media") <= whats.index("first_keyframe")
    assert whats.count("first_media") == whats.count("first_keyframe") == 1
    capsys.readouterr()
    assert controlroom_main(["report", "--db", str(incident["db"])]) == 0
    report = capsys.readouterr().out
    assert f"first media +{rounded_ms(media_ms)} after" in report, report  # "+12 ms", "+1.2 s"
    assert f"first keyframe +{rounded_ms(key_ms)} after" in report, report
