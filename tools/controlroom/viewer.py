"""`--view`: show an incident's live video in ffplay while the evidence is recorded.

Writes the incident's H.264 access units (Annex B, SPS/PPS on every keyframe) to
ffplay's stdin as they arrive, starting at a keyframe so the picture decodes at
once. Video only: the evidence file carries the audio.

Note on threads: `feed` runs on the receiver's run thread; a broken pipe (the
operator closed the window) just stops the viewer.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from pinkbutton.firmware.media.envelope import ReceivedPacket
from pinkbutton.firmware.media.packet import Stream

log = logging.getLogger("pinkbutton.controlroom.viewer")


class ViewerUnavailable(Exception):
    pass


def find_player(name: str = "ffplay") -> str:
    found = shutil.which(name)
    if found is None:
        raise ViewerUnavailable(f"--view needs {name} (apt-get install ffmpeg)")
    return found


class LiveViewer:
    def __init__(self, player: str | None = None) -> None:
        self.player = player or find_player()
        self.alert_id: str | None = None
        self._proc: subprocess.Popen | None = None
        self._started = False  # a keyframe has been written
        self._last_seq = -1  # seq of the last packet written

    def feed(self, alert_id: str, rp: ReceivedPacket) -> None:
        if rp.packet.stream is not Stream.VIDEO:
            return
        if self.alert_id is None:
            self.alert_id = alert_id  # the first incident with media gets the window
        if alert_id != self.alert_id:
            return
        if not self._started and not rp.packet.keyframe:
            return
        if rp.seq <= self._last_seq:
            return  # pre-roll sent behind live media: the viewer shows the present
        self._last_seq = rp.seq
        if self._proc is None:
            self._proc = subprocess.Popen(
                [self.player, "-loglevel", "error", "-fflags", "nobuffer", "-framedrop",
                 "-window_title", f"Pink Button {alert_id[:8]}", "-f", "h264", "-"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        self._started = True
        assert self._proc.stdin is not None  # stdin=PIPE
        try:
            self._proc.stdin.write(rp.packet.data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            log.info("viewer closed")
            self.close()

    def end(self, alert_id: str) -> None:
        if alert_id == self.alert_id:
            self.close()
            self.alert_id = None

    def close(self) -> None:
        proc, self._proc, self._started = self._proc, None, False
        self._last_seq = -1
        if proc is None:
            return
        assert proc.stdin is not None  # stdin=PIPE
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.terminate()
