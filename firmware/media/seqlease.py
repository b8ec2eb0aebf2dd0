"""SeqLease: media seqs and media time that survive a kiosk restart mid-incident.

Why: a kiosk killed mid-incident (kill -9, watchdog, power cut) resumes the same alert when it
starts again. Its new stream must not reuse a seq the first run already sent (the control room
de-duplicates by seq and would drop the new media as copies), and its presentation times must
go on rising (an MP4 track cannot go back in time).

How: before the sender publishes seq `s`, a tiny record (`next_seq` > `s`) is durable on disk
(temp file, fsync, rename). Seqs are reserved in blocks, so this costs one small write per
`block` packets, refreshed half a block ahead. So no run ever published a seq at or above its
record's `next_seq`; a resumed run starts at `max(next_seq, last recorded seq + 1)` (the local
evidence store may have recorded packets the sender never got to publish). The seqs between
what this kiosk still holds and the new start are reported to the room as `skipped`: unused,
or captured in the last instants before the kill and neither sent nor recorded.

The record also keeps the incident's media origin (the capture time that is pts 0) with the
kernel's boot id and the wall time of that origin. After a process restart (same boot) the
monotonic clock goes on, so the same origin keeps pts rising. After a reboot the monotonic
clock starts again: the wall clock maps the new captures onto the incident's timeline, never
below the last pts the record knew of (a wrong RTC must not send media back in time).

Note on threads: `resume` runs on the kiosk's state thread at stream start; `reserve` on the
media sender's thread, never under the sender's lock (it may wait for the disk).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pinkbutton.firmware.durable import private_dir, write_atomic
from pinkbutton.firmware.outbox import BOOT_ID
from pinkbutton.hal.clock import Clock

log = logging.getLogger("pinkbutton.media.seqlease")

BLOCK = 1024  # seqs per reservation: ~15 s of 15 fps video + Opus
RECORD_VERSION = 1
RESUME_PTS_MARGIN_US = 1_000_000  # after a reboot: past the last pts the record knew of

FaultSink = Callable[[str, str], None]


@dataclass(frozen=True)
class ResumePoint:
    """Where a stream of `alert_id` starts: seq, skipped seqs, and how to pick its origin."""

    first_seq: int
    resumed: bool  # an earlier run of this alert existed (restart mid-incident)
    skipped: tuple[int, int] | None  # inclusive seqs this kiosk cannot give the room
    origin_us: int | None  # the incident's origin (same boot); None: the first packet's
    # Another boot: origin = first capture - pts_at_wall(first capture's wall time).
    origin_wall: float | None = None
    pts_floor_us: int = 0

    def origin_for(self, first_capture_us: int, clock: Clock) -> int:
        """The origin for a run whose first packet was captured at `first_capture_us`."""
        if self.origin_us is not None:
            return self.origin_us
        if self.origin_wall is None:
            return first_capture_us
        captured_wall = clock.wall() - (clock.monotonic() - first_capture_us / 1e6)
        pts = int((captured_wall - self.origin_wall) * 1e6)
        return first_capture_us - max(pts, self.pts_floor_us + RESUME_PTS_MARGIN_US)


class SeqLease:
    """The durable seq reservation and media origin of the stream being sent."""

    def __init__(self, path: Path | str, alert_id: str, *, clock: Clock | None = None,
                 on_fault: FaultSink = lambda name, why: None, block: int = BLOCK,
                 boot_id: str | None = BOOT_ID) -> None:
        self.path = Path(path)
        self.alert_id = alert_id
        self.clock = clock or Clock()
        self.block = block
        self.boot_id = boot_id
        self._on_fault = on_fault
        self._durable = 0  # seqs below this may be published
        self._written = False
        self._failed = False

    # -- state thread -----------------------------------------------------------------------

    def resume(self, recorded_last: int | None = None, seq_floor: int = 0) -> ResumePoint:
        """Read the record left by an earlier run of this alert. `recorded_last` is the last
        seq the local evidence store holds of it; `seq_floor` a seq known to be unused."""
        rec = self._read()
        if rec is None and recorded_last is None and seq_floor == 0:
            return ResumePoint(0, False, None, None)
        bound = rec["next_seq"] if rec else 0
        first = max(bound, (recorded_last if recorded_last is not None else -1) + 1, seq_floor)
        # The store holds 0..recorded_last (recording runs ahead of publishing); the record
        # says the sender was about to publish `last_seq + 1`. Beyond both: unknown.
        held = max(recorded_last if recorded_last is not None else -1,
                   rec["last_seq"] if rec else -1, seq_floor - 1)
        skipped = (held + 1, first - 1) if first - 1 >= held + 1 else None
        self._durable = first  # nothing at or above `first` may go out before a new record
        if rec is None or rec.get("origin_us") is None:
            return ResumePoint(first, True, skipped, None)
        if rec.get("boot_id") == self.boot_id and self.boot_id is not None:
            return ResumePoint(first, True, skipped, int(rec["origin_us"]))
        return ResumePoint(first, True, skipped, None, origin_wall=float(rec["origin_wall"]),
                           pts_floor_us=int(rec.get("last_pts_us", 0)))

    # -- sender thread ----------------------------------------------------------------------

    def reserve(self, seq: int, origin_us: int, pts_us: int) -> None:
        """Called before publishing `seq` (pts `pts_us`): makes sure a record covering it is
        on disk, writing the next block when half of this one is used."""
        if self._written and seq < self._durable - self.block // 2:
            return
        if self._failed and seq < self._durable:
            return
        self._durable = max(self._durable, seq + self.block)
        self._written = True
        now_mono, now_wall = self.clock.monotonic(), self.clock.wall()
        record = {
            "v": RECORD_VERSION, "alert_id": self.alert_id, "next_seq": self._durable,
            "last_seq": seq - 1, "origin_us": origin_us, "last_pts_us": pts_us,
            "origin_wall": now_wall - (now_mono - origin_us / 1e6), "boot_id": self.boot_id,
        }
        try:
            _write_atomic(self.path, json.dumps(record, sort_keys=True).encode())
            self._failed = False
        except OSError as e:
            # Live media matters more than seq continuity after a crash: go on, say so.
            if not self._failed:
                log.error("media seq record %s not written: %s", self.path, e)
                self._on_fault("media_seq_record_failed", f"cannot write {self.path}: {e}")
            self._failed = True

    # -- helpers ----------------------------------------------------------------------------

    def _read(self) -> dict | None:
        try:
            rec = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("media seq record %s unreadable, ignored: %s", self.path, e)
            return None
        ok = (isinstance(rec, dict) and rec.get("alert_id") == self.alert_id
              and type(rec.get("next_seq")) is int and type(rec.get("last_seq")) is int
              and rec["next_seq"] >= 0)
        return rec if ok else None


def _write_atomic(path: Path, data: bytes) -> None:
    private_dir(path.parent)
    write_atomic(path, data)
