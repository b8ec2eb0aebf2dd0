"""Everything dies at once (issue 9 item 10): kiosk, broker and control room are killed
together mid-stream (a power cut at a site that hosts all three, or a test of the worst
case) and started again. The kiosk resumes the incident, the broker redelivers what it had
queued for the room, the room continues the evidence in a new live part file. Every
evidence file, every part and the complete file, must decode with 0 errors."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from tests.fault_helpers import REPO, SimProcess
from tests.helpers import wait_until, write_kiosk_config
from tests.test_evidence import ffmpeg_errors

pytestmark = [pytest.mark.faults, pytest.mark.broker]

DEVICE = "pb-test-0001"
STALL_S = 2.5  # the room stalls this long before the cut: the broker queues media for it


class RoomProcess:
    """`pinkbutton-controlroom run` as a real process that can be SIGKILLed; its stdout lines
    are kept in a file."""

    def __init__(self, pki_dir: Path, port: int, db: Path, evidence: Path, group: str,
                 out: Path) -> None:
        self.out = out
        self._file = open(out, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run", "--host", "localhost",
             "--port", str(port), "--pki", str(pki_dir), "--db", str(db), "--evidence",
             str(evidence), "--auto-ack", "--client-id", "room-restart", "--group", group,
             "--session-expiry", "3600", "--log-level", "info"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._file, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._file.close()


def live_bytes(evidence: Path) -> int:
    return sum(f.stat().st_size for f in evidence.glob("*.mp4") if ".complete" not in f.name)


@pytest.mark.timeout(150)
def test_kiosk_broker_and_room_killed_together_every_evidence_file_decodes(
        tmp_path, pki_dir, fresh_broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE,
                             alert={"stream_s": 16.0})
    db, evidence, out = tmp_path / "room.db", tmp_path / "evidence", tmp_path / "room.out"
    group = f"g-{secrets.token_hex(4)}"
    room = RoomProcess(pki_dir, fresh_broker.port, db, evidence, group, out)
    kiosk = SimProcess(cfg, "--press-after", "1", media=True)
    try:
        alert_id = kiosk.events.wait_for("persisted", timeout=30)["alert_id"]
        wait_until(lambda: live_bytes(evidence) > 100_000, timeout=30, what="live media")
        # The room falls behind just before the cut (a busy host): the broker holds media
        # queued for it, and saves that queue (autosave 1 s).
        os.kill(room.proc.pid, signal.SIGSTOP)
        time.sleep(STALL_S)
        # The cut: all three at the same instant.
        os.kill(kiosk.proc.pid, signal.SIGKILL)
        os.kill(room.proc.pid, signal.SIGKILL)
        fresh_broker.kill()
        kiosk.wait(5)
        room.stop(signal.SIGKILL)
        before = sorted(f.name for f in evidence.glob("*.mp4"))
        fresh_broker.start()
        room = RoomProcess(pki_dir, fresh_broker.port, db, evidence, group, out)
        kiosk = SimProcess(cfg, media=True)
        kiosk.events.wait_for("stream_end", timeout=60)
        wait_until(lambda: f"evidence for {alert_id} complete" in room.text()
                   or f"evidence for {alert_id} INCOMPLETE" in room.text(), timeout=60,
                   what="complete evidence written")
        assert f"evidence for {alert_id} complete: " in room.text(), room.text()[-2000:]
    finally:
        kiosk.__exit__(None, None, None)
        room.stop()
    files = sorted(evidence.glob("*.mp4"))
    names = [f.name for f in files]
    print(f"evidence before the cut {before}, after {names}")
    assert any(".part2" in n for n in names), names
    assert any(n.endswith(".complete.mp4") for n in names), names
    errors = {f.name: ffmpeg_errors(f) for f in files}
    assert all(e == "" for e in errors.values()), errors
    for f in files:  # every part starts at a keyframe
        with av.open(str(f)) as c:
            first = next(p for p in c.demux(video=0) if p.size)
        assert first.is_keyframe, f.name
