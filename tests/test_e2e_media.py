"""Issue 4 end to end: a simulated incident's video and voice, from the fake camera
and microphone through the real pipeline, MQTT (mTLS) and the control room, into
an evidence MP4 that ffprobe and PyAV read back."""

from __future__ import annotations

import time

import av
import pytest

from hal.stamp import read_stamp
from tests.helpers import RunningKiosk, write_kiosk_config
from tests.test_e2e_alert import RunningRoom
from tools.controlroom.media import ffprobe_summary

pytestmark = pytest.mark.broker

PREROLL_S = 5.0
LIVE_S = 5.0
FPS = 15.0


@pytest.fixture(scope="module")
def incident(tmp_path_factory, pki_dir, broker):
    """Run one ~10 s incident (5 s pre-roll + 5 s live) and return what came out."""
    tmp = tmp_path_factory.mktemp("media-e2e")
    cfg = write_kiosk_config(tmp, pki_dir, broker.port, "pb-test-0002")
    evidence_dir = tmp / "evidence"
    with RunningRoom(pki_dir, broker, tmp / "room.db", auto_ack=True, evidence_dir=evidence_dir,
                     client_id="room-media") as room, RunningKiosk(cfg, media=True) as kiosk:
        kiosk.events.wait_for("connected")
        time.sleep(PREROLL_S + 0.7)  # let the pre-roll fill
        press_us = int(kiosk.clock.monotonic() * 1e6)
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
        time.sleep(LIVE_S)
        room.receiver.command(f"end {alert_id}")
        evidence = room.events.wait_for("evidence", timeout=15)
        first_media = room.events.wait_for("first_media")
        kiosk.events.wait_for("stream_end", timeout=10)
        faults = kiosk.kiosk.state.faults
    return {"alert_id": alert_id, "press_us": press_us, "evidence": evidence,
            "first_media": first_media, "faults": faults, "room_lines": room.lines}


def test_evidence_has_h264_and_opus_of_the_right_length(incident):
    info = ffprobe_summary(incident["evidence"]["path"])
    assert info["video"]["codec"] == "h264"
    assert (info["video"]["width"], info["video"]["height"]) == (640, 480)
    assert info["audio"]["codec"] == "opus"
    expected = PREROLL_S + LIVE_S
    assert abs(info["duration_s"] - expected) <= 0.1 * expected + 0.5, info["duration_s"]
    assert incident["evidence"]["gaps"] == []
    assert abs(incident["evidence"]["preroll_s"] - PREROLL_S) < 1.2
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
    steps = [b - a for a, b in zip(readable, readable[1:], strict=False)]
    assert all(step > 0 for step in steps), "frames out of order or duplicated"
    frame_us = 1e6 / FPS
    assert max(steps) < 2.5 * frame_us, f"a gap of {max(steps) / 1000:.0f} ms in the video"


def test_room_reports_the_evidence_file(incident):
    lines = [x for x in incident["room_lines"] if x.startswith("EVIDENCE")]
    assert lines and incident["alert_id"] in lines[0] and "gaps none" in lines[0]
