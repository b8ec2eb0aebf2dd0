"""`pinkbutton-controlroom run --view`: live H.264 piped to ffplay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from pinkbutton.firmware.media.encoder import VideoEncoder
from pinkbutton.firmware.media.envelope import ReceivedPacket
from pinkbutton.hal.base import VideoFrame
from pinkbutton.tools.controlroom.viewer import LiveViewer

ROOT = Path(__file__).resolve().parent.parent


def frames(n: int, w: int = 320, h: int = 240):
    for i in range(n):
        y = np.full((h, w), 60, np.uint8)
        y[:, (i * 7) % w : (i * 7) % w + 20] = 230
        uv = np.full(w * h // 2, 128, np.uint8)
        yield VideoFrame(y.tobytes() + uv.tobytes(), w, h, 1_000_000 + i * 66_666)


def test_viewer_pipes_decodable_video_from_a_keyframe(tmp_path):
    out = tmp_path / "seen.h264"
    fake = tmp_path / "ffplay"
    fake.write_text(f"#!/bin/sh\ncat > {out}\n")
    fake.chmod(0o755)
    enc = VideoEncoder(320, 240, 15, bitrate_kbps=300, keyframe_interval_s=1.0, codec="libx264")
    packets = [p for f in frames(45) for p in enc.encode(f)]
    viewer = LiveViewer(player=str(fake))
    # Join mid-GOP: the deltas before the next keyframe cannot be shown and are skipped.
    for seq, pkt in enumerate(packets[5:]):
        viewer.feed("a" * 8, ReceivedPacket(seq, pkt, pkt.pts_us, False))
    viewer.close()
    info = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(out)],
        capture_output=True, text=True, check=True).stdout)["streams"][0]
    assert (info["codec_name"], info["width"], info["height"]) == ("h264", 320, 240)
    assert int(info["nb_read_frames"]) == 30, "from the keyframe at frame 15 to the end"


def test_view_without_ffplay_is_a_usage_error(tmp_path, pki_dir):
    env = {**os.environ, "PATH": str(tmp_path)}  # no ffplay anywhere
    r = subprocess.run(
        [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run", "--pki", str(pki_dir), "--view",
         "--db", str(tmp_path / "x.db")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == "pinkbutton-controlroom: --view needs ffplay (apt-get install ffmpeg)"


def test_viewer_never_goes_back_to_preroll_that_came_behind_live(tmp_path):
    """Live first (issue 9 item 7): on a slow link the pre-roll arrives after live media with
    higher seqs; the viewer shows the present and does not jump back into the past."""
    out = tmp_path / "seen.h264"
    fake = tmp_path / "ffplay"
    fake.write_text(f"#!/bin/sh\ncat > {out}\n")
    fake.chmod(0o755)
    enc = VideoEncoder(320, 240, 15, bitrate_kbps=300, keyframe_interval_s=1.0, codec="libx264")
    packets = [p for f in frames(45) for p in enc.encode(f)]
    viewer = LiveViewer(player=str(fake))
    received = [ReceivedPacket(seq, pkt, pkt.pts_us, seq < 15) for seq, pkt in enumerate(packets)]
    for rp in received[15:] + received[:15]:  # live (from its keyframe) first, pre-roll after
        viewer.feed("a" * 8, rp)
    viewer.close()
    info = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(out)],
        capture_output=True, text=True, check=True).stdout)["streams"][0]
    assert int(info["nb_read_frames"]) == 30, "live only: the late pre-roll is not shown"
