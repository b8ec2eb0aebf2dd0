"""LocalStore: each incident's media, recorded on the kiosk's own disk for backfill.

Why: the live stream loses media on a bad link (the sender's drop policy, a broker restart).
What was lost can still reach the control room later if the kiosk kept it: every media packet
of an incident is appended here, as the exact envelope messages the sender makes, so a resent
packet is byte-identical to the original and the room de-duplicates it by seq.

Layout, under `state_dir/evidence/`:
  {alert_id}/seg-000000.bin ...   records: 4-byte big-endian length + one envelope message
  {alert_id}/seg-000007.bin.part  the segment being written (not in the manifest yet)
  {alert_id}/manifest.json        every sealed segment: seqs, capture times, bytes, SHA-256
A segment is sealed after ~1 s of capture time (or 256 packets, or 4 MiB): fsync, rename to
.bin, then the manifest is replaced atomically (temp file, fsync, rename, fsync of the
directory). A segment is served only if its bytes still hash to the manifest's SHA-256. After
a crash, a leftover .part is salvaged up to its last whole packet (every chunk there). When
the kiosk restarted mid-incident and streams the alert again, the new run goes on at a higher seq
(firmware/media/seqlease.py) and is appended to the same recording (`last_seq` tells where the
earlier run stopped).

Retention: an incident's evidence stays until the control room confirms it has every seq
(`evidence_complete`), then it is deleted at once (video of a public place is not kept longer
than needed; the room holds the complete copy). The disk budget (`media.evidence_budget_mb`)
is enforced on every write: confirmed leftovers go first (oldest first); unconfirmed evidence
is never deleted: when it alone fills the budget, local recording of the incident stops and a
fault is raised, while live streaming goes on. The pre-roll is not written until a press: it
reaches this store only as the first packets of the incident's stream.

Note on threads: `begin`/`append`/`finish`/`confirm` only enqueue (append runs on the media
encoder thread under the sender's lock: it must not touch the disk); one writer thread
("media-evidence") does all writing and deleting. `read` runs on the resend thread: it reads
only sealed segments, which are immutable, and takes the lock just to list them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from pinkbutton.firmware.durable import open_private, private_dir, write_atomic
from pinkbutton.firmware.media.envelope import MediaError, decode_envelope
from pinkbutton.hal.clock import Clock, iso8601

log = logging.getLogger("pinkbutton.media.evidence")

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
RECORD = struct.Struct(">I")
SEGMENT_S = 1.0
SEGMENT_PACKETS = 256
SEGMENT_BYTES = 4 * 1024 * 1024
MAX_BACKLOG_BYTES = 16 * 1024 * 1024  # waiting for the writer thread (a stalled SD card)
MAX_RECORD = 65536  # one envelope message

FaultSink = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Segment:
    file: str
    first_seq: int
    last_seq: int
    packets: int
    first_capture_us: int
    last_capture_us: int
    bytes: int
    sha256: str


@dataclass(slots=True)
class _Open:
    """The segment being written."""

    file: str
    handle: BinaryIO
    hasher: hashlib._Hash  # hashlib.sha256()'s type (typeshed's name; annotations are not evaluated)
    first_seq: int
    first_capture_us: int
    last_seq: int = -1
    last_capture_us: int = 0
    packets: int = 0
    bytes: int = 0


@dataclass(slots=True)
class _Incident:
    name: str  # directory name: the alert_id, or alert_id~N for an unreadable earlier one
    alert_id: str
    created_at: str
    state: str = "recording"  # recording | closed | truncated | failed | interrupted
    confirmed: bool = False
    segments: list[Segment] = field(default_factory=list)
    open: _Open | None = None
    next_index: int = 0
    bad: set[str] = field(default_factory=set)  # segments whose hash did not match


class LocalStore:
    def __init__(
        self,
        directory: Path | str,
        budget_bytes: int,
        *,
        on_fault: FaultSink,
        clock: Clock | None = None,
        segment_s: float = SEGMENT_S,
        segment_packets: int = SEGMENT_PACKETS,
        start_thread: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.budget_bytes = budget_bytes
        self.clock = clock or Clock()
        self.segment_s = segment_s
        self.segment_packets = segment_packets
        self._on_fault = on_fault
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._backlog = 0
        self._incidents: dict[str, _Incident] = {}
        self._used = 0
        self._faulted: set[tuple[str, str]] = set()
        self._closed = False
        private_dir(self.directory)  # incident media: 0700 directories, 0600 files
        self._load()
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="media-evidence", daemon=True)
            self._thread.start()

    # -- any thread: enqueue ------------------------------------------------------------

    def begin(self, alert_id: str) -> None:
        self._put(("begin", alert_id))

    def append(self, alert_id: str, seq: int, capture_us: int, messages: list[bytes]) -> None:
        """Record one media packet (all its envelope messages). Never blocks."""
        size = sum(len(m) for m in messages)
        with self._lock:
            if self._closed:
                return
            if self._backlog + size > MAX_BACKLOG_BYTES:
                overflow = True
            else:
                overflow = False
                self._backlog += size
        if overflow:
            self._fault(alert_id, "evidence_write_behind",
                        f"disk too slow: media of alert {alert_id} not recorded locally")
            return
        self._queue.put(("append", alert_id, seq, capture_us, messages, size))

    def finish(self, alert_id: str) -> None:
        """The incident's stream ended: seal what is open."""
        self._put(("finish", alert_id))

    def confirm(self, alert_id: str) -> None:
        """The control room has all of it: delete it (and any copy kept aside)."""
        self._put(("confirm", alert_id))

    def sync(self, alert_id: str | None = None, timeout: float = 5.0) -> bool:
        """Wait until everything enqueued so far is on disk; with `alert_id`, its open
        segment is sealed too, so `read` can serve the newest packets."""
        done = threading.Event()
        self._put(("sync", alert_id, done))
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Seal every open segment and stop the writer thread."""
        self._put(("stop",))
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self.run_pending()

    # -- any thread: read ------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    def last_seq(self, alert_id: str) -> int | None:
        """The highest seq recorded of `alert_id` (sealed or salvaged), None if none: where
        a stream resumed after a restart must go on from (read at start, before recording)."""
        with self._lock:
            inc = self._incidents.get(alert_id)
            if inc is None or inc.confirmed:
                return None
            seqs = [s.last_seq for s in inc.segments]
            if inc.open is not None and inc.open.packets:
                seqs.append(inc.open.last_seq)
            return max(seqs, default=None)

    def pending(self, limit: int | None = None) -> list[str]:
        """Alert ids whose evidence is here and not confirmed by the room, oldest first
        (the heartbeat's `evidence_pending`: the room asks again for what it lacks)."""
        with self._lock:
            incs = sorted((i for i in self._incidents.values() if not i.confirmed),
                          key=lambda i: i.created_at)
        ids = list(dict.fromkeys(i.alert_id for i in incs))
        return ids if limit is None else ids[:limit]

    def manifest(self, alert_id: str) -> dict | None:
        with self._lock:
            inc = self._incidents.get(alert_id)
            return None if inc is None else self._manifest_dict(inc)

    def read(self, alert_id: str, wanted: Iterable[int]) -> Iterator[tuple[int, list[bytes]]]:
        """The recorded messages of each wanted seq, in seq order. Seqs that were never
        recorded, or whose segment fails its SHA-256 check, are simply not yielded."""
        want = set(wanted)
        with self._lock:
            inc = self._incidents.get(alert_id)
            if inc is None or inc.confirmed:
                return
            segments = list(inc.segments)
            bad = inc.bad
        directory = self.directory / alert_id
        for seg in segments:
            if seg.file in bad or not any(seg.first_seq <= s <= seg.last_seq for s in want):
                continue
            data = self._verified(directory / seg.file, seg)
            if data is None:
                with self._lock:
                    bad.add(seg.file)
                self._fault(alert_id, "evidence_corrupt",
                            f"{alert_id}/{seg.file} does not match its SHA-256: not served")
                continue
            for seq, messages in _packets(data):
                if seq in want:
                    yield seq, messages

    @staticmethod
    def _verified(path: Path, seg: Segment) -> bytes | None:
        try:
            data = path.read_bytes()
        except OSError as e:
            log.error("cannot read %s: %s", path, e)
            return None
        if len(data) != seg.bytes or hashlib.sha256(data).hexdigest() != seg.sha256:
            return None
        return data

    # -- writer thread ---------------------------------------------------------------------

    def _put(self, op: tuple) -> None:
        self._queue.put(op)

    def _run(self) -> None:
        while self._step(self._queue.get()):
            pass

    def run_pending(self) -> None:
        """Do what is queued on the caller's thread (tests without the writer thread)."""
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                return
            if not self._step(op):
                return

    def _step(self, op: tuple) -> bool:
        try:
            match op:
                case ("append", alert_id, seq, capture_us, messages, size):
                    with self._lock:
                        self._backlog -= size
                    self._append(alert_id, seq, capture_us, messages, size)
                case ("begin", alert_id):
                    self._begin(alert_id)
                case ("finish", alert_id):
                    self._finish(alert_id, "closed")
                case ("confirm", alert_id):
                    self._confirm(alert_id)
                case ("sync", alert_id, done):
                    inc = self._incidents.get(alert_id) if alert_id else None
                    if inc is not None and inc.open is not None:
                        self._seal(inc)
                        self._write_manifest(inc)
                    done.set()
                case ("stop",):
                    for inc in list(self._incidents.values()):
                        if inc.state == "recording":
                            self._finish(inc.alert_id, "interrupted")
                    with self._lock:
                        self._closed = True
                    return False
        except Exception:  # the writer must outlive any single failure
            log.exception("local evidence: internal error on %s", op[0])
        return True

    def _begin(self, alert_id: str) -> None:
        path = self.directory / alert_id
        old = self._incidents.get(alert_id)
        if old is not None and old.state == "recording":
            return  # the same stream asked twice
        if old is not None and not old.confirmed:
            # An earlier run of this alert (the kiosk restarted mid-incident): the new run
            # goes on from the seq after it (firmware/media/seqlease.py), so both runs are
            # one recording, served and confirmed together. A truncated or failed run tries
            # again: the budget or the disk may allow it now.
            old.state = "recording"
            self._write_manifest(old)
            return
        if path.exists():
            # A directory that did not load (unreadable manifest): kept aside as it is,
            # until this alert is confirmed.
            n = 1
            while (self.directory / f"{alert_id}~{n}").exists():
                n += 1
            renamed = self.directory / f"{alert_id}~{n}"
            try:
                path.rename(renamed)
            except OSError as e:
                self._fault(alert_id, "evidence_write_failed", f"cannot keep earlier run: {e}")
                return
            if old is not None:
                with self._lock:
                    del self._incidents[alert_id]
                    old.name = renamed.name
                    self._incidents[renamed.name] = old
        inc = _Incident(alert_id, alert_id, iso8601(self.clock.wall()))
        try:
            private_dir(path)
        except OSError as e:
            self._fault(alert_id, "evidence_write_failed", f"cannot record {alert_id}: {e}")
            return
        with self._lock:
            self._incidents[alert_id] = inc
        self._write_manifest(inc)

    def _append(self, alert_id: str, seq: int, capture_us: int, messages: list[bytes],
                size: int) -> None:
        inc = self._incidents.get(alert_id)
        if inc is None or inc.state != "recording":
            return
        need = size + RECORD.size * len(messages)
        if not self._make_room(need, alert_id):
            self._seal(inc)
            inc.state = "truncated"
            self._write_manifest(inc)
            self._fault(alert_id, "evidence_budget_full",
                        f"{self.budget_bytes // (1024 * 1024)} MiB of unconfirmed evidence: "
                        f"alert {alert_id} no longer recorded locally from seq {seq}")
            return
        try:
            seg = inc.open
            if seg is not None and seg.packets and seq != seg.last_seq and (
                capture_us - seg.first_capture_us >= self.segment_s * 1e6
                or seg.packets >= self.segment_packets
                or seg.bytes >= SEGMENT_BYTES
            ):
                self._seal(inc)
                self._write_manifest(inc)
                seg = None
            if seg is None:
                name = f"seg-{inc.next_index:06d}.bin"
                inc.next_index += 1
                handle = open_private(self.directory / alert_id / f"{name}.part", "wb")
                seg = inc.open = _Open(name, handle, hashlib.sha256(), seq, capture_us)
            for message in messages:
                record = RECORD.pack(len(message)) + message
                seg.handle.write(record)
                seg.hasher.update(record)
                seg.bytes += len(record)
            with self._lock:
                self._used += need
            if seq != seg.last_seq:
                seg.packets += 1
            seg.last_seq, seg.last_capture_us = seq, capture_us
        except OSError as e:
            self._fail(inc, e)

    def _seal(self, inc: _Incident) -> None:
        seg, inc.open = inc.open, None
        if seg is None:
            return
        directory = self.directory / inc.name
        try:
            seg.handle.flush()
            os.fsync(seg.handle.fileno())
            seg.handle.close()
            os.rename(directory / f"{seg.file}.part", directory / seg.file)
        except OSError as e:
            with contextlib.suppress(OSError):
                seg.handle.close()
            self._fail(inc, e)
            return
        inc.segments.append(Segment(
            seg.file, seg.first_seq, seg.last_seq, seg.packets, seg.first_capture_us,
            seg.last_capture_us, seg.bytes, seg.hasher.hexdigest(),
        ))

    def _finish(self, alert_id: str, state: str) -> None:
        inc = self._incidents.get(alert_id)
        if inc is None or inc.state != "recording":
            return
        self._seal(inc)
        if inc.state == "recording":
            inc.state = state
        self._write_manifest(inc)

    def _fail(self, inc: _Incident, error: OSError) -> None:
        inc.state = "failed"
        seg, inc.open = inc.open, None
        if seg is not None:
            with contextlib.suppress(OSError):
                seg.handle.close()
        self._fault(inc.alert_id, "evidence_write_failed",
                    f"local evidence of alert {inc.alert_id} stopped: {error}")
        with contextlib.suppress(OSError):
            self._write_manifest(inc)

    def _confirm(self, alert_id: str) -> None:
        for name, inc in list(self._incidents.items()):
            if inc.alert_id != alert_id:
                continue
            if inc.state == "recording":
                log.warning("evidence of %s confirmed while still recording: kept", alert_id)
                continue
            inc.confirmed = True
            with contextlib.suppress(OSError):
                self._write_manifest(inc)  # a crash in the middle: deleted at next start
            self._delete(name)
        log.info("evidence of alert %s confirmed by the control room: deleted locally", alert_id)

    def _make_room(self, need: int, alert_id: str) -> bool:
        if self._used + need <= self.budget_bytes:
            return True
        # Only evidence the room has confirmed may go: oldest first.
        confirmed = sorted(
            (i for i in self._incidents.values() if i.confirmed), key=lambda i: i.created_at
        )
        for inc in confirmed:
            self._delete(inc.name)
            if self._used + need <= self.budget_bytes:
                return True
        return False

    def _delete(self, name: str) -> None:
        path = self.directory / name
        size = _tree_size(path)
        shutil.rmtree(path, ignore_errors=True)
        with self._lock:
            self._incidents.pop(name, None)
            self._used -= size - _tree_size(path)

    def _write_manifest(self, inc: _Incident) -> None:
        directory = self.directory / inc.name
        tmp = directory / f"{MANIFEST}.tmp"
        data = json.dumps(self._manifest_dict(inc), indent=1, sort_keys=True).encode()
        before = _size(directory / MANIFEST) + _size(tmp)
        try:
            write_atomic(directory / MANIFEST, data)
        except OSError as e:
            if inc.state != "failed":
                self._fail(inc, e)
            return
        finally:
            with self._lock:
                self._used += _size(directory / MANIFEST) + _size(tmp) - before

    @staticmethod
    def _manifest_dict(inc: _Incident) -> dict:
        segs = inc.segments
        return {
            "version": MANIFEST_VERSION,
            "alert_id": inc.alert_id,
            "created_at": inc.created_at,
            "state": inc.state,
            "confirmed": inc.confirmed,
            "first_seq": segs[0].first_seq if segs else None,
            "last_seq": max(s.last_seq for s in segs) if segs else None,
            "packets": sum(s.packets for s in segs),
            "bytes": sum(s.bytes for s in segs),
            "segments": [asdict(s) for s in segs],
        }

    def _fault(self, alert_id: str, name: str, detail: str) -> None:
        key = (alert_id, name)
        with self._lock:
            if key in self._faulted:
                return  # once per incident: the disk will not get better every packet
            self._faulted.add(key)
        log.error("%s: %s", name, detail)
        self._on_fault(name, detail)

    # -- startup -----------------------------------------------------------------------------

    def _load(self) -> None:
        for path in sorted(p for p in self.directory.iterdir() if p.is_dir()):
            try:
                inc = self._load_one(path)
            except (OSError, ValueError, KeyError, TypeError) as e:
                # Unreadable, but maybe not yet confirmed: kept (and counted), never deleted.
                log.error("local evidence %s is unreadable, kept as it is: %s", path.name, e)
                inc = None
            if inc is not None and inc.confirmed:
                shutil.rmtree(path, ignore_errors=True)
                continue
            if inc is not None:
                self._incidents[inc.name] = inc
        self._used = _tree_size(self.directory)
        if self._incidents:
            log.info("local evidence: %d unconfirmed incident(s), %d bytes",
                     len(self._incidents), self._used)

    def _load_one(self, path: Path) -> _Incident | None:
        with contextlib.suppress(FileNotFoundError):
            (path / f"{MANIFEST}.tmp").unlink()
        m = json.loads((path / MANIFEST).read_text())
        alert_id = str(m["alert_id"])
        inc = _Incident(path.name, alert_id, str(m["created_at"]), m["state"], m["confirmed"] is True)
        inc.segments = [Segment(**s) for s in m["segments"]]
        if inc.confirmed:
            return inc
        listed = {s.file for s in inc.segments}
        for part in sorted(path.glob("seg-*.bin.part")):
            seg = _salvage(part) if part.name[:-5] not in listed else None
            if seg is not None:
                inc.segments.append(seg)
                log.warning("local evidence %s: salvaged %s (seqs %d-%d) after a crash",
                            path.name, seg.file, seg.first_seq, seg.last_seq)
            else:
                part.unlink(missing_ok=True)
        inc.segments.sort(key=lambda s: s.first_seq)
        numbers = [int(s.file[4:10]) for s in inc.segments]
        inc.next_index = max(numbers, default=-1) + 1
        if inc.state == "recording":
            inc.state = "interrupted"
        self._write_manifest(inc)
        return inc


def _packets(data: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """(seq, messages) of a segment's records; stops at the first torn or invalid one."""
    seq, messages = None, []
    for message in _records(data):
        env_seq = decode_envelope(message).seq
        if seq is not None and env_seq != seq:
            yield seq, messages
            messages = []
        seq = env_seq
        messages.append(message)
    if seq is not None:
        yield seq, messages


def _records(data: bytes, valid_only: bool = False) -> Iterator[bytes]:
    pos = 0
    while pos + RECORD.size <= len(data):
        (length,) = RECORD.unpack_from(data, pos)
        end = pos + RECORD.size + length
        if length > MAX_RECORD or end > len(data):
            return
        message = data[pos + RECORD.size : end]
        if valid_only:
            try:
                decode_envelope(message)
            except MediaError:
                return
        yield message
        pos = end


def _salvage(part: Path) -> Segment | None:
    """Keep the whole packets of a segment a crash left open; the torn tail goes.

    A packet is whole when all its chunks are there, in order: a kill between the chunks of
    a keyframe leaves valid records of a packet that is not, and serving it would be
    evidence one chunk short."""
    data = part.read_bytes()
    kept, seqs, captures = 0, [], []
    pos, due, seq = 0, 0, None  # end of the records read; the chunk due next, of which seq
    for message in _records(data, valid_only=True):
        env = decode_envelope(message)
        if env.chunk_index != due or (due and env.seq != seq):
            break  # a packet cut short: from here on nothing is kept
        seq = env.seq
        pos += RECORD.size + len(message)
        due = (due + 1) % env.chunk_count
        if due == 0:  # this packet is whole
            kept = pos
            if not seqs or seqs[-1] != seq:
                seqs.append(seq)
                captures.append(env.capture_us)
    if not seqs:
        return None
    with open(part, "r+b") as f:
        f.truncate(kept)
        f.flush()
        os.fsync(f.fileno())
    final = part.with_name(part.name[:-5])
    os.rename(part, final)
    return Segment(final.name, seqs[0], seqs[-1], len(seqs), captures[0], captures[-1], kept,
                   hashlib.sha256(data[:kept]).hexdigest())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tree_size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(_size(p) for p in path.rglob("*") if p.is_file())


