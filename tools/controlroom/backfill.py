"""Evidence backfill, control-room side: find what the live stream lost, ask the kiosk for it
(`nack`), and write the complete evidence once every seq is here.

The live `.mp4` (tools/controlroom/media.py) is written in arrival order as the incident
streams, so that it is viewable at once; a packet that arrives later cannot be put back into
it. So every whole packet is also appended to a per-incident packet log
(`<device>-<alert>.packets`, next to the evidence, any order, survives a room restart). When
the stream has ended and the log holds every seq from 0 to the stream's last, the packets are
muxed again in seq order into `<device>-<alert>.complete.mp4` (temp file, fsync, rename) and
`<device>-<alert>.complete.json` records its SHA-256 (both put into the evidence store,
tools/controlroom/evidence_store.py: by default this directory, under these names; a store
elsewhere also gets the packet log and live parts once confirmed); the kiosk is told
`evidence_complete` and may delete its copy. The live file stays as it is: what was seen while it happened.

NACK policy: a missing seq is asked for once a later seq has been here for `settle_s` (the
reorder window of a healthy link is far shorter), and the tail once `settle_s` after the
kiosk's `stream_end` (which carries `seq_count`). Unanswered seqs are asked again every
`retry_s` for as long as the kiosk makes progress: the room gives up only after `stall_s`
without a single new seq (a slow link may need minutes to drain the kiosk's backlog; a count
of attempts would give up while it is still sending). Seqs the kiosk reports it never recorded
(its `backfill` event, `unavailable`) are not asked again; the evidence is then complete with
those gaps, and still confirmed (the kiosk has nothing more to give). A kiosk restarted
mid-incident goes on at a higher seq and reports the seqs in between as `skipped`: they are
not asked for and not gaps (the complete manifest lists them apart).

Giving up is not final: the incomplete evidence is written (INCOMPLETE), the kiosk is not told
`evidence_complete` (it keeps its copy), and the incident stays dormant here. It wakes up when
an asked-for seq still arrives, when the kiosk comes back online (`status`), or when its
heartbeat lists the alert in `evidence_pending` (`resume`): then the room asks again, and
writes the complete evidence once every seq is here.

Note on threads: the receiver's run thread calls everything.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import struct
from collections.abc import Callable, Collection, Container, Iterator
from dataclasses import dataclass
from pathlib import Path

from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.durable import open_private, private_dir
from pinkbutton.firmware.media.envelope import MediaEnvelope, Reassembler, ReceivedPacket
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.hal.clock import Clock, iso8601
from pinkbutton.tools.controlroom.evidence_store import (
    EvidenceStore,
    EvidenceStoreError,
    LocalEvidenceStore,
)
from pinkbutton.tools.controlroom.media import Evidence, EvidenceError

log = logging.getLogger("pinkbutton.controlroom.backfill")

# seq, stream, flags (bit0 keyframe, bit1 pre-roll), capture_us, pts_us, duration_us, length
RECORD = struct.Struct(">IBBQqII")
MAX_PACKET = 16 * 1024 * 1024
HOLD_S = 10.0  # media before its alert is kept this long...
MAX_HELD = 2_000  # ...this many packets per alert...
MAX_HELD_ALERTS = 64  # ...for this many alerts
MAX_SKIPPED = 65_536  # seqs a restarted kiosk may declare unused, per incident
MAX_DORMANT = 64  # incomplete incidents kept ready to resume (their packet logs stay open)
SendCmd = Callable[[str, str, str, "tuple[tuple[int, int], ...] | None"], None]


def missing_ranges(
    have: Container[int], first: int, last: int, *, max_ranges: int | None = None,
    max_seqs: int | None = None, skip: Container[int] = (),
) -> list[tuple[int, int]]:
    """Inclusive ranges of the seqs in first..last that are neither in `have` nor in `skip`,
    ascending; at most `max_ranges` ranges and `max_seqs` seqs (the first ones)."""
    out: list[tuple[int, int]] = []
    total = 0
    for seq in range(first, last + 1):
        if seq in have or seq in skip:
            continue
        if max_seqs is not None and total >= max_seqs:
            break
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        elif max_ranges is not None and len(out) >= max_ranges:
            break
        else:
            out.append((seq, seq))
        total += 1
    return out


def group_ranges(seqs: list[int], *, max_ranges: int, max_seqs: int) -> list[tuple[int, int]]:
    """Ascending seqs as inclusive ranges, cut to the first max_ranges / max_seqs."""
    out: list[tuple[int, int]] = []
    for n, seq in enumerate(seqs):
        if n >= max_seqs:
            break
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        elif len(out) >= max_ranges:
            break
        else:
            out.append((seq, seq))
    return out


class PacketLog:
    """Append-only file of one incident's whole packets, in arrival order, with an index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offsets: dict[int, int] = {}
        private_dir(path.parent)
        self._file = open_private(path, "a+b")  # evidence: 0600; closed in close()
        self._load()

    def __contains__(self, seq: object) -> bool:
        return seq in self._offsets

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def seqs(self) -> Collection[int]:
        return self._offsets

    def add(self, rp: ReceivedPacket) -> bool:
        """Append `rp` unless its seq is already here; False for a duplicate."""
        if rp.seq in self._offsets:
            return False
        pkt = rp.packet
        flags = (1 if pkt.keyframe else 0) | (2 if rp.preroll else 0)
        self._file.seek(0, os.SEEK_END)
        offset = self._file.tell()
        self._file.write(RECORD.pack(rp.seq, int(pkt.stream), flags, pkt.pts_us, rp.pts_us,
                                     max(pkt.duration_us, 0), len(pkt.data)) + pkt.data)
        self._file.flush()
        self._offsets[rp.seq] = offset
        return True

    def in_order(self) -> Iterator[ReceivedPacket]:
        for seq in sorted(self._offsets):
            self._file.seek(self._offsets[seq])
            rp = self._read_one()
            if rp is not None:
                yield rp

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def _load(self) -> None:
        self._file.seek(0)
        offset = 0
        while True:
            rp = self._read_one()
            if rp is None:
                break
            self._offsets.setdefault(rp.seq, offset)
            offset = self._file.tell()
        # A torn last record (the room died mid-write) is cut off; it will be asked again.
        self._file.truncate(offset)

    def _read_one(self) -> ReceivedPacket | None:
        head = self._file.read(RECORD.size)
        if len(head) < RECORD.size:
            return None
        seq, stream, flags, capture_us, pts_us, duration_us, length = RECORD.unpack(head)
        if stream not in (Stream.VIDEO, Stream.AUDIO) or length > MAX_PACKET:
            return None
        data = self._file.read(length)
        if len(data) < length:
            return None
        pkt = EncodedPacket(Stream(stream), data, capture_us, duration_us, bool(flags & 1))
        return ReceivedPacket(seq, pkt, pts_us, bool(flags & 2))


@dataclass(frozen=True)
class Completion:
    alert_id: str
    path: Path
    manifest: Path
    packets: int
    gaps: list[tuple[int, int]]
    backfilled: int
    sha256: str


class IncidentBackfill:
    """What one incident has and lacks, and when to ask again."""

    def __init__(self, alert_id: str, device_id: str, log_path: Path, *, settle_s: float,
                 retry_s: float, stall_s: float) -> None:
        self.alert_id = alert_id
        self.device_id = device_id
        self.log = PacketLog(log_path)
        self.settle_s = settle_s
        self.retry_s = retry_s
        self.stall_s = stall_s
        self.reassembler = Reassembler(max_seq_window=1 << 30)  # resent packets, any age
        self.highest = max(self.log.seqs, default=-1)
        self._marks: collections.deque[tuple[float, int]] = collections.deque()
        if self.highest >= 0:  # resumed after a room restart: those seqs arrived long ago
            self._marks.append((float("-inf"), self.highest))
        self.seq_count: int | None = None  # from the kiosk's stream_end
        self.ended_at: float | None = None
        self.asked: dict[int, tuple[float | None, int]] = {}  # seq -> (last asked, attempts)
        self.unavailable: set[int] = set()
        self.skipped: set[int] = set()  # seqs a restarted kiosk never used (its report)
        self.backfilled = 0
        self.last_packet_at: float | None = None
        self.resumed_at: float | None = None  # last time the room (re)started asking
        self.new_asked_at: float | None = None  # last time a seq was asked for the first time
        self.dormant = False  # gave up for now; resumed by progress, reconnect, heartbeat
        self.written: int | None = None  # packets in the complete file last written

    def on_packet(self, seq: int, now: float) -> None:
        self.last_packet_at = now
        # An asked-for seq still came after the room gave up: the kiosk is sending, go on.
        self.dormant = False
        if seq > self.highest:
            self.highest = seq
            self._marks.append((now, seq))

    def on_stream_end(self, seq_count: int, now: float) -> None:
        self.seq_count, self.ended_at = seq_count, now

    def resume(self, now: float) -> None:
        """Ask again for everything missing, now, and for as long as the kiosk makes
        progress (it reconnected, or says it still holds the evidence)."""
        self.dormant = False
        self.resumed_at = now
        for seq, (_, attempts) in self.asked.items():
            self.asked[seq] = (None, attempts)

    def stalled(self, now: float) -> bool:
        """No new seq for stall_s since the stream ended, the room last resumed, or first
        asked for a seq (the kiosk always gets stall_s to answer)."""
        if self.ended_at is None:
            return False
        since = max(t for t in (self.last_packet_at, self.ended_at, self.resumed_at,
                                self.new_asked_at) if t is not None)
        return now - since >= self.stall_s

    def due(self, now: float) -> tuple[tuple[int, int], ...]:
        """The ranges to NACK now (recorded as asked)."""
        upto = self._settled(now)
        if upto < 0 or self.dormant:
            return ()
        stalled = self.stalled(now)  # then only seqs never asked for are asked (once)
        candidates = missing_ranges(self.log.seqs, 0, upto, skip=self._not_coming())
        wanted: list[int] = []
        for a, b in candidates:
            for seq in range(a, b + 1):
                at, attempts = self.asked.get(seq, (None, 0))
                if (stalled and attempts) or (at is not None and now - at < self.retry_s):
                    continue
                wanted.append(seq)
        ranges = group_ranges(wanted, max_ranges=p.MAX_NACK_RANGES, max_seqs=p.MAX_NACK_SEQS)
        for a, b in ranges:
            for seq in range(a, b + 1):
                _, attempts = self.asked.get(seq, (None, 0))
                self.asked[seq] = (now, attempts + 1)
                if not attempts:
                    self.new_asked_at = now
        return tuple(ranges)

    def _settled(self, now: float) -> int:
        """Highest seq below which every missing seq counts as lost."""
        if self.seq_count is not None and self.ended_at is not None:
            if now - self.ended_at >= self.settle_s:
                return self.seq_count - 1
        while len(self._marks) >= 2 and self._marks[1][0] <= now - self.settle_s:
            self._marks.popleft()
        if self._marks and self._marks[0][0] <= now - self.settle_s:
            return self._marks[0][1] - 1
        return -1

    def finished(self, now: float) -> bool:
        """Every seq is here or reported unrecorded; or every missing seq was asked for and
        no new seq came for stall_s (given up for now: the incident goes dormant)."""
        if self.seq_count is None or self.ended_at is None or now - self.ended_at < self.settle_s:
            return False
        stalled = self.stalled(now)
        for seq in range(self.seq_count):
            if seq in self.log or seq in self.unavailable or seq in self.skipped:
                continue
            if not stalled or seq not in self.asked:
                return False
        return True

    def gaps(self) -> list[tuple[int, int]]:
        """Missing seqs, not counting those a restarted kiosk skipped."""
        last = self.seq_count - 1 if self.seq_count is not None else self.highest
        return missing_ranges(self.log.seqs, 0, last, skip=self.skipped)

    def skipped_ranges(self) -> list[tuple[int, int]]:
        """The skipped seqs that did not arrive (those that did were used after all)."""
        return group_ranges(sorted(s for s in self.skipped if s not in self.log),
                            max_ranges=MAX_SKIPPED, max_seqs=MAX_SKIPPED)

    def _not_coming(self) -> Container[int]:
        if not self.skipped:
            return self.unavailable
        return self.unavailable | self.skipped

    def all_given_up_are_unrecorded(self) -> bool:
        return all(seq in self.unavailable for a, b in self.gaps() for seq in range(a, b + 1))


class BackfillManager:
    def __init__(
        self,
        directory: Path | str,
        *,
        send_cmd: SendCmd,
        out: Callable[[str], None] = print,
        notify: Callable[[str, dict], None] = lambda kind, data: None,
        clock: Clock | None = None,
        settle_s: float = 1.0,
        retry_s: float = 4.0,
        stall_s: float = 20.0,
        tick_s: float = 0.25,
        idle_s: float = 3600.0,
        store: EvidenceStore | None = None,
    ) -> None:
        self.directory = Path(directory)
        # Where the finished evidence goes (tools/controlroom/evidence_store.py); the packet
        # logs and live files are working files in `directory`.
        self.store = store or LocalEvidenceStore(self.directory)
        self.send_cmd = send_cmd
        self.out = out
        self.notify = notify
        self.clock = clock or Clock()
        self.settle_s = settle_s
        self.retry_s = retry_s
        self.stall_s = stall_s
        self.tick_s = tick_s
        self.idle_s = idle_s
        self._incidents: dict[str, IncidentBackfill] = {}
        self._done: collections.OrderedDict[str, Completion] = collections.OrderedDict()
        self._last_tick = float("-inf")
        # Media that came before its alert (the pre-roll burst can overtake it): kept
        # briefly so it need not be asked for again once the alert opens the incident.
        self._held: dict[str, tuple[float, list[ReceivedPacket]]] = {}

    def open(self, alert_id: str, device_id: str, log_name: str) -> None:
        """Start (or, after a room restart, resume) the incident's packet log."""
        if alert_id in self._incidents or alert_id in self._done:
            return
        try:
            inc = self._incidents[alert_id] = IncidentBackfill(
                alert_id, device_id, self.directory / log_name, settle_s=self.settle_s,
                retry_s=self.retry_s, stall_s=self.stall_s,
            )
        except OSError as e:
            log.error("no backfill for %s: cannot open its packet log: %s", alert_id, e)
            return
        for rp in self._held.pop(alert_id, (0.0, []))[1]:
            self._add(inc, rp)

    def claims(self, alert_id: str, env: MediaEnvelope) -> bool:
        """True if `env` is handled here: a copy of a packet already logged, or a resent
        packet this room asked for. Everything else is live media for the caller."""
        if alert_id in self._done:
            return True  # stragglers after completion
        inc = self._incidents.get(alert_id)
        if inc is None:
            return False
        if env.seq in inc.log:
            return True
        if env.seq not in inc.asked:
            return False
        rp = inc.reassembler.add(env)
        if rp is not None and self._add(inc, rp):
            inc.backfilled += 1
            self.notify("backfilled", {"alert_id": alert_id, "seq": rp.seq})
        return True

    def record(self, alert_id: str, rp: ReceivedPacket) -> None:
        inc = self._incidents.get(alert_id)
        if inc is not None:
            self._add(inc, rp)
            return
        now = self.clock.monotonic()
        for stale in [a for a, (at, _) in self._held.items() if now - at > HOLD_S]:
            del self._held[stale]  # another receiver's incident, or no alert at all
        held = self._held.setdefault(alert_id, (now, []))[1]
        if len(held) < MAX_HELD and len(self._held) <= MAX_HELD_ALERTS:
            held.append(rp)

    def on_event(self, ev: p.DeviceEvent) -> None:
        alert_id = ev.detail.get("alert_id")
        inc = self._incidents.get(alert_id) if isinstance(alert_id, str) else None
        if inc is None:
            return
        if ev.kind == "stream_end":
            count = ev.detail.get("seq_count")
            if type(count) is int and 0 <= count <= p.MAX_MEDIA_SEQ + 1:
                inc.on_stream_end(count, self.clock.monotonic())
        elif ev.kind == "backfill":
            for a, b in _pairs(ev.detail.get("unavailable")):
                # Bounded by what we asked for: a bad report cannot blow up memory.
                inc.unavailable.update(s for s in range(a, b + 1) if s in inc.asked)
            for a, b in _pairs(ev.detail.get("skipped")):
                # A kiosk restarted mid-incident went on at a higher seq: these were unused
                # (or lost with the kill); not asked for, not counted as gaps. Bounded.
                room = MAX_SKIPPED - len(inc.skipped)
                inc.skipped.update(range(a, min(b, a + room - 1) + 1))

    def tick(self, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self._last_tick < self.tick_s:
            return
        self._last_tick = now
        for alert_id, inc in list(self._incidents.items()):
            if inc.dormant:
                continue
            ranges = inc.due(now)
            if ranges:
                count = sum(b - a + 1 for a, b in ranges)
                log.info("asking %s for %d missing media packets of %s: %s", inc.device_id,
                         count, alert_id, _fmt(ranges))
                self.send_cmd("nack", inc.device_id, alert_id, ranges)
                self.notify("nack", {"alert_id": alert_id, "ranges": [list(r) for r in ranges]})
            if inc.finished(now):
                self._complete(inc)
            elif inc.ended_at is None and now - (inc.last_packet_at or now) > self.idle_s:
                # Its stream_end never reached this room (lost, or another receiver of the
                # share group got it): the packet log stays on disk, the memory goes.
                log.warning("no stream_end for %s within %.0f s: backfill given up",
                            alert_id, self.idle_s)
                inc.log.close()
                del self._incidents[alert_id]

    def resume(self, device_id: str, alert_ids: Container[str] | None = None) -> int:
        """The kiosk came back online, or its heartbeat says it still holds evidence
        (`alert_ids`): ask again for what its dormant (given up) incidents lack. An incident
        is resumed at most once per stall_s. Returns how many were resumed."""
        now = self.clock.monotonic()
        resumed = 0
        for inc in self._incidents.values():
            if (not inc.dormant or inc.device_id != device_id
                    or (alert_ids is not None and inc.alert_id not in alert_ids)
                    or (inc.resumed_at is not None and now - inc.resumed_at < self.stall_s)):
                continue
            inc.resume(now)
            resumed += 1
            log.info("asking %s again for the missing media of %s", device_id, inc.alert_id)
        return resumed

    def tracking(self, alert_id: str) -> bool:
        return alert_id in self._incidents

    def tracked_ids(self) -> list[str]:
        return list(self._incidents)

    def drop_held(self, alert_id: str) -> None:
        """Forget media held for an alert another receiver records."""
        self._held.pop(alert_id, None)

    def drop(self, alert_id: str) -> None:
        """Stop tracking the incident without completing it (another receiver owns it now);
        its packet log stays on disk."""
        inc = self._incidents.pop(alert_id, None)
        if inc is not None:
            inc.log.close()

    def completion(self, alert_id: str) -> Completion | None:
        return self._done.get(alert_id)

    def close_all(self) -> None:
        for inc in self._incidents.values():
            inc.log.close()
        self._incidents.clear()

    # -- completion ------------------------------------------------------------------------

    def _add(self, inc: IncidentBackfill, rp: ReceivedPacket) -> bool:
        try:
            added = inc.log.add(rp)
        except OSError as e:
            log.error("packet log of %s: %s", inc.alert_id, e)
            return False
        if added:
            inc.on_packet(rp.seq, self.clock.monotonic())
        return added

    def _complete(self, inc: IncidentBackfill) -> None:
        gaps, skipped = inc.gaps(), inc.skipped_ranges()
        final = not gaps or inc.all_given_up_are_unrecorded()
        if not final:
            # Given up for now: the kiosk keeps its copy, the incident stays resumable.
            inc.dormant = True
            if inc.written == len(inc.log):
                return  # resumed in vain: the file written last time is still the truth
            self._limit_dormant(keep=inc)
        else:
            del self._incidents[inc.alert_id]
        base = inc.log.path.with_suffix("").name
        name, manifest_name = base + ".complete.mp4", base + ".complete.json"
        try:
            inc.log.sync()
            tmp = self.directory / (name + ".tmp")
            summary = _remux(inc.log, tmp, self.clock)
            digest, size = _sha256(tmp)
            self.store.put_file(name, tmp, keep=False)  # atomic: whole, or not there
        except (OSError, EvidenceError, EvidenceStoreError) as e:
            log.error("cannot write the complete evidence of %s: %s", inc.alert_id, e)
            if final:
                inc.log.close()
            return
        path = Path(self.store.location(name))
        manifest = Path(self.store.location(manifest_name))
        inc.written = len(inc.log)
        if final:
            inc.log.close()
        doc = {
            "alert_id": inc.alert_id, "device_id": inc.device_id, "file": path.name,
            "bytes": size, "sha256": digest, "packets": len(inc.log),
            "video_packets": summary.video_packets, "audio_packets": summary.audio_packets,
            "last_seq": (inc.seq_count or 0) - 1, "gaps": [list(g) for g in gaps],
            "backfilled": inc.backfilled, "duration_s": round(summary.duration_s, 3),
            "skipped": [list(r) for r in skipped],
            "packet_log": inc.log.path.name, "completed_at": iso8601(self.clock.wall()),
        }
        try:
            self.store.put(manifest_name, json.dumps(doc, indent=1, sort_keys=True).encode())
            if final:
                self._publish_working_files(base)
        except EvidenceStoreError as e:
            log.error("cannot store the evidence manifest of %s: %s", inc.alert_id, e)
            return
        done = Completion(inc.alert_id, path, manifest, len(inc.log), gaps, inc.backfilled,
                          digest)
        if final:
            self._done[inc.alert_id] = done
            while len(self._done) > 1000:
                self._done.popitem(last=False)
        restart = (f"; kiosk restarted, seqs {_fmt(skipped)} unused or lost with it"
                   if skipped else "")
        if not gaps:
            self.out(f"evidence for {inc.alert_id} complete: {len(inc.log)} packets, 0 gaps "
                     f"(backfilled {inc.backfilled}{restart})  {path}")
        else:
            self.out(f"evidence for {inc.alert_id} INCOMPLETE: {len(inc.log)} packets, "
                     f"{sum(b - a + 1 for a, b in gaps)} missing ({_fmt(gaps)}; backfilled "
                     f"{inc.backfilled}{restart})  {path}")
        # The kiosk may drop its copy when there is nothing more it could send: every seq is
        # here, or the kiosk itself said it never recorded the rest.
        if final:
            self.send_cmd("evidence_complete", inc.device_id, inc.alert_id, None)
        self.notify("evidence_complete", {
            "alert_id": inc.alert_id, "path": str(path), "manifest": str(manifest),
            "packets": len(inc.log), "gaps": gaps, "backfilled": inc.backfilled,
            "sha256": digest, "skipped": skipped, "final": final,
        })

    def _publish_working_files(self, base: str) -> None:
        """A store that is not this directory (S3) also gets the confirmed incident's live
        parts and packet log (kept here too); the local store has them in place already."""
        local = self.store.local_path(base + ".packets")
        if local is not None and local.parent.resolve() == self.directory.resolve():
            return
        for path in sorted(self.directory.glob(base + ".*")):
            if path.name.endswith((".packets", ".mp4")) and ".complete." not in path.name:
                self.store.put_file(path.name, path, keep=True)

    def _limit_dormant(self, keep: IncidentBackfill) -> None:
        """At most MAX_DORMANT given-up incidents stay resumable; the oldest beyond that is
        forgotten here (its packet log stays on disk, the kiosk keeps its copy)."""
        dormant = [i for i in self._incidents.values() if i.dormant and i is not keep]
        for old in dormant[: max(0, len(dormant) + 1 - MAX_DORMANT)]:
            log.warning("evidence of %s stays incomplete: too many incomplete incidents to "
                        "keep resuming", old.alert_id)
            old.log.close()
            del self._incidents[old.alert_id]


def _remux(packet_log: PacketLog, tmp: Path, clock: Clock):
    """The packet log in seq order into the local file `tmp` (fsynced); the caller puts it
    into the evidence store."""
    ev = Evidence(tmp, reorder_window=1 << 30, clock=clock)
    for rp in packet_log.in_order():
        ev.feed(rp)
    summary = ev.close()
    if not tmp.exists():
        raise EvidenceError(f"no media to write for {packet_log.path.stem}")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    return summary


def _sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _pairs(value) -> Iterator[tuple[int, int]]:
    """The well-formed [first, last] pairs of a report; anything else is ignored."""
    for pair in value if isinstance(value, list) else []:
        if (isinstance(pair, list) and len(pair) == 2
                and all(type(x) is int and 0 <= x <= p.MAX_MEDIA_SEQ for x in pair)
                and pair[0] <= pair[1]):
            yield pair[0], pair[1]


def _fmt(ranges) -> str:
    shown = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in list(ranges)[:8])
    return shown + (" ..." if len(ranges) > 8 else "")
