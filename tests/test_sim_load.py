"""`pinkbutton-sim load` (issue 13 item 4): a small real run (the mosquitto fixture, the room
as its own process, real kiosks, replayed media), its table, summary and plots; replay
encoders; bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pinkbutton.firmware.media.packet import Stream
from pinkbutton.hal.base import AudioChunk, VideoFrame
from pinkbutton.simulator.replay import ReplayAudioEncoder, ReplayVideoEncoder, clip

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def sim(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinkbutton.simulator.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.broker
@pytest.mark.timeout(200)  # ~30 s idle; bounded by sim()'s 150 s
def test_small_load_run_has_its_table_loses_nothing_and_draws_its_plots(
        tmp_path, pki_dir, broker):
    out = tmp_path / "load"
    proc = sim("load", "--idle", "20", "--streaming", "2", "--duration", "10", "--presses", "10",
               "--pki", str(pki_dir), "--broker", f"localhost:{broker.port}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout
    for label in ("press -> received", "button edge -> received", "first frame", "glass-to-glass", "CPU device side",
                  "CPU room", "RSS device side", "RSS room", "memory per idle device",
                  "lost 0, duplicated 0", "p50", "p95", "p99"):
        assert label in table, f"{label!r} not in the table:\n{table}"
    assert (out / "table.txt").read_text().strip() in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["unregistered"] == 0
    assert summary["alerts_written"] == summary["stored"] == 12  # 10 presses + 2 streams
    assert summary["press"]["n"] == 10
    assert 0 < summary["press"]["p99"] < 10_000
    # the room's latency runs from the button's edge: the debounce (50 ms) comes on top
    assert summary["edge"]["n"] == 10
    assert summary["edge"]["p50"] >= summary["press"]["p50"] + 40
    assert summary["first_frame"]["n"] == 2  # both streams reached the observer live
    assert summary["g2g"]["n"] > 10
    assert 0 < summary["mib_per_idle"] < 10
    assert any(s["streams"] == 2 for s in summary["samples"])
    assert all(s["cpu_room"] >= 0 and s["rss_room"] > 0 for s in summary["samples"])
    for name in ("latency_hist.png", "latency_over_time.png", "streams_cpu.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    assert "load: 100%" in proc.stderr  # the progress, as lines when not on a terminal


@pytest.mark.parametrize("args, words", [
    (["--idle", "-1"], "--idle: 0 to 3000"),
    (["--idle", "100000"], "--idle: 0 to 3000"),
    (["--streaming", "51"], "--streaming: 0 to 50"),
    (["--duration", "100000"], "--duration: 5 to 900"),
    (["--idle", "0", "--streaming", "0"], "nothing to load"),
    (["--idle", "0", "--streaming", "1", "--presses", "3"], "needs idle devices"),
    (["--presses", "1000000"], "--presses: 0 to 10000"),
    (["--broker", "nohostport"], "--broker"),
    (["--idle", "ten"], "invalid int value"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, pki_dir, args, words):
    proc = sim("load", "--pki", str(pki_dir), "--out", str(tmp_path / "o"), *args, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was made


def test_a_pki_without_ca_is_one_line_and_exit_2(tmp_path):
    proc = sim("load", "--pki", str(tmp_path), "--out", str(tmp_path / "o"), timeout=60)
    assert proc.returncode == 2 and "no ca.pem" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_replay_gives_clip_packets_with_the_capture_times_and_keyframes_on_request():
    c = clip(160, 120, 5.0, 100)
    assert c.video[0].keyframe and len(c.keyframes) >= 2
    video = ReplayVideoEncoder(c)
    frame = bytes(160 * 120 * 3 // 2)
    out = [video.encode(VideoFrame(frame, 160, 120, 1_000_000 + i * 200_000))[0]
           for i in range(len(c.video) + 3)]
    assert [p.pts_us for p in out] == [1_000_000 + i * 200_000 for i in range(len(out))]
    assert [p.data for p in out[:len(c.video)]] == [p.data for p in c.video]
    assert out[len(c.video)].keyframe  # round and round, from the clip's start
    video.encode(VideoFrame(frame, 160, 120, 0))  # somewhere inside a GOP
    video.force_keyframe()
    assert video.encode(VideoFrame(frame, 160, 120, 5))[0].keyframe
    audio = ReplayAudioEncoder(c)
    assert c.audio_frame_us == 20_000  # the kiosk's default Opus frame
    pcm = bytes(2 * 960)  # 20 ms at 48 kHz
    packets = [p for i in range(10) for p in audio.encode(AudioChunk(pcm, 48000, i * 20_000))]
    assert [p.pts_us for p in packets] == [i * 20_000 for i in range(10)]
    assert all(p.stream is Stream.AUDIO and p.data for p in packets)
    half = bytes(2 * 480)  # 10 ms chunks: one packet per two
    assert sum(len(audio.encode(AudioChunk(half, 48000, 0))) for _ in range(4)) == 2


def test_replay_follows_the_kiosks_audio_frame():
    c = clip(160, 120, 5.0, 100, audio_frame_ms=60)
    assert c.audio_frame_us == 60_000 and all(p.duration_us == 60_000 for p in c.audio)
    audio = ReplayAudioEncoder(c)
    pcm = bytes(2 * 960)  # 20 ms chunks: one 60 ms packet per three
    assert [len(audio.encode(AudioChunk(pcm, 48000, i * 20_000))) for i in range(6)] == [
        0, 0, 1, 0, 0, 1]
    assert audio.encode(AudioChunk(pcm, 48000, 120_000)) == []


def test_load_refuses_an_audio_frame_the_kiosk_cannot_send(tmp_path):
    proc = sim("load", "--pki", str(tmp_path), "--out", str(tmp_path / "o"),
               "--audio-frame-ms", "30", timeout=60)
    assert proc.returncode == 2 and "--audio-frame-ms: one of 20, 40, 60, got 30" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.broker
@pytest.mark.timeout(200)  # ~30 s idle; bounded by sim()'s 150 s
def test_two_receivers_on_postgresql_store_every_press_once_and_the_room_sums_both(
        tmp_path, pki_dir, broker, pg_url):
    out = tmp_path / "load"
    proc = sim("load", "--idle", "4", "--streaming", "0", "--duration", "5", "--presses", "4",
               "--receivers", "2", "--db", pg_url, "--pki", str(pki_dir),
               "--broker", f"localhost:{broker.port}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "room: 2 receivers, PostgreSQL" in proc.stdout
    assert "lost 0, duplicated 0" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["alerts_written"] == summary["stored"] == 4  # one press per kiosk
    assert summary["lost"] == 0 and summary["duplicated"] == 0 and summary["unregistered"] == 0
    assert summary["press"]["n"] == 4  # the latencies were read from PostgreSQL
    assert not (out / "room.db").exists()  # nothing went to SQLite
    # ALERT lines over both receivers: one per alert, whichever receiver took it
    lines = [line for i in (1, 2) for line in (out / f"room-{i}.out").read_text().splitlines()
             if line.startswith("ALERT ")]
    assert len(lines) == summary["room_alert_lines"] == 4
    # the room's column is both receivers: each one's RSS, and the sample is their sum
    each = summary["room_rss_mib"]
    assert len(each) == 2 and all(r > 10 for r in each)
    last = summary["samples"][-1]
    assert last["rss_room"] == pytest.approx(sum(each), abs=0.01)


@pytest.mark.parametrize("args, words", [
    (["--receivers", "2"], "--receivers 2: SQLite is the single-receiver store"),
    (["--receivers", "0"], "--receivers: 1 to 4"),
    (["--receivers", "5", "--db", "postgresql://u@127.0.0.1:1/x"], "--receivers: 1 to 4"),
    (["--db", "mysql://u@127.0.0.1/x"], "--db: a postgresql:// URL"),
    (["--db", "/tmp/room.db"], "--db: a postgresql:// URL"),
])
def test_bad_receivers_or_db_are_one_line_and_exit_2(tmp_path, pki_dir, args, words):
    proc = sim("load", "--pki", str(pki_dir), "--out", str(tmp_path / "o"), *args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_an_unreachable_database_is_one_line_and_exit_2_without_its_password(
        tmp_path, pki_dir):
    pytest.importorskip("psycopg")
    from harness.broker import free_port

    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/nothing"
    proc = sim("load", "--pki", str(pki_dir), "--out", str(tmp_path / "o"), "--receivers", "2",
               "--db", url, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--db postgresql://u:***@127.0.0.1" in lines[0], proc.stderr
    assert "secret" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_the_same_alert_announced_by_two_receivers_is_a_duplicate(tmp_path, monkeypatch):
    """The ALERT lines are counted over every receiver: a shared alert both receivers
    announced (a real duplicate) is one too many, not hidden by the share group."""
    from pinkbutton.simulator import load

    script = ("import sys, time; print('connected to broker', file=sys.stderr, flush=True); "
              "print('ALERT  pb-load-i0001  Load site i0001  panic  seq 1  id 0000abcd', "
              "flush=True); time.sleep(30)")
    monkeypatch.setattr(load, "ROOM_CMD", (sys.executable, "-c", script))
    tmp_path.joinpath("pki").mkdir()
    spec = load.LoadSpec(idle=1, streaming=0, duration_s=5, presses=0, out=tmp_path,
                         pki=tmp_path / "pki", broker=("127.0.0.1", 1), receivers=2,
                         db="postgresql://u@127.0.0.1:1/x")
    room = load.Room(spec, "t")
    try:
        room.wait_ready()
        for _ in range(100):  # bounded: 10 s
            if room.alert_lines >= 2:
                break
            time.sleep(0.1)
        assert len(room.pids) == 2 and room.alert_lines == 2
        assert load.duplicated(room.alert_lines, stored=1) == 1
        assert load.duplicated(room.alert_lines, stored=2) == 0
        assert [(tmp_path / f"room-{i}.log").exists() for i in (1, 2)] == [True, True]
    finally:
        room.stop()
    assert all(r.proc.poll() is not None for r in room.receivers)
