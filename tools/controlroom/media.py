"""EvidenceRecorder: writes each incident's live media to a fragmented MP4 as it arrives.

The device sends H.264 access units (Annex B, SPS/PPS on every keyframe) and Opus packets;
the Reassembler turns envelopes back into `ReceivedPacket`s. Here they are put back in seq
order (a small reorder window), missing seqs are recorded as gaps, and the packets are muxed
without re-encoding into `<directory>/<device_id>-<alert_id>.mp4`.

The kiosk sends live media ahead of the pre-roll, so on a slow link pre-roll packets arrive
after live ones with higher seqs: this file (written as media arrives) then shows the live
part and leaves out the pre-roll that came too late for it (or only after the file was
closed); those seqs — every seq below the first live packet, and pre-roll that came late —
are counted in `preroll_behind`, not as gaps: the complete evidence in seq order has them
(tools/controlroom/backfill.py). The reorder window counts packets waiting, not seqs: on a
fast link the pre-roll still catches up with the first live packets and the file is whole.

Fragmented MP4 (empty moov, one fragment per keyframe, packets flushed as written) is used so
that the file on disk is a valid, playable recording at every moment: if the control room dies
mid-incident the evidence up to the last fragment survives, and an operator (or ffprobe) can
open it while it is still growing. No temp files: the final file is written directly.

Note on threads: the receiver's main thread calls every method; one lock still guards the
recorder so that a shutdown path may call `close_all()` from another thread.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import av.error
from pinkbutton.firmware.durable import private_dir, private_file
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.hal.clock import Clock

if TYPE_CHECKING:
    from pinkbutton.firmware.media.envelope import ReceivedPacket

log = logging.getLogger("pinkbutton.controlroom.media")

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
US = Fraction(1, 1_000_000)
VIDEO_TIME_BASE = Fraction(1, 90_000)
AUDIO_RATE = 48_000
# The mp4 muxer writes its moov only once every stream has a packet, so the set of streams must
# be known before the first byte: wait this long after the first keyframe for audio to show up
# (the pre-roll interleaves audio within a frame or two) before writing a video-only file...
VIDEO_ONLY_AFTER_S = 1.0
# ...and this long of audio without any keyframe before writing an audio-only file (camera dead).
AUDIO_ONLY_AFTER_S = 3.0
# Bound on what waits for that decision (a keyframe plus ~1 s at 500 kbit/s is far less).
MAX_STARTUP_PACKETS = 2_000
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class EvidenceError(RuntimeError):
    """One-line reason an evidence file cannot be written or inspected."""


@dataclass(frozen=True)
class EvidenceSummary:
    path: Path
    video_packets: int
    audio_packets: int
    gaps: list[tuple[int, int]]  # inclusive ranges of seqs that never arrived
    first_media_at: float | None  # wall time the first media packet arrived
    first_keyframe_at: float | None  # wall time the first (decodable) keyframe was written
    preroll_s: float  # seconds of written media flagged as pre-roll
    duration_s: float  # seconds of written media (first pts to last pts + duration)
    width: int | None
    height: int | None
    dropped_packets: int = 0  # video before the first keyframe, duplicates, too late, bad
    preroll_behind: int = 0  # pre-roll seqs not in this file: they came behind live media
    closed: bool = False
    alert_id: str = ""


@dataclass
class _Span:
    """Media time covered by a set of packets, in device µs."""

    start: int | None = None
    end: int | None = None

    def add(self, pts_us: int, duration_us: int) -> None:
        self.start = pts_us if self.start is None else min(self.start, pts_us)
        end = pts_us + max(duration_us, 0)
        self.end = end if self.end is None else max(self.end, end)

    @property
    def seconds(self) -> float:
        return 0.0 if self.start is None or self.end is None else (self.end - self.start) / 1e6


def frame_size(keyframe: bytes) -> tuple[int, int]:
    """Width and height of an Annex B keyframe, by decoding it once (robust to every SPS
    variant and to cropping, which a hand-written SPS parser would have to get right)."""
    ctx = av.CodecContext.create("h264", "r")
    try:
        frames = ctx.decode(av.Packet(keyframe)) + ctx.decode(None)
    except av.error.FFmpegError as e:
        raise EvidenceError(f"first keyframe does not decode: {e}") from None
    if not frames:
        raise EvidenceError("first keyframe does not decode to a picture")
    return frames[0].width, frames[0].height


class Evidence:
    """One incident's evidence file. Not thread-safe on its own: the recorder's lock guards it."""

    def __init__(self, path: Path, *, reorder_window: int, clock: Clock,
                 alert_id: str = "") -> None:
        self.path = path
        self.alert_id = alert_id
        self.reorder_window = max(1, reorder_window)
        self.clock = clock
        self._next_seq = 0
        self._pending: dict[int, ReceivedPacket] = {}
        self._gaps: list[tuple[int, int]] = []
        self._preroll_behind: set[int] = set()  # seqs in a gap that came late, as pre-roll
        self._first_live_seq: int | None = None  # lowest seq of media not flagged pre-roll
        self._startup: list[ReceivedPacket] = []  # waiting for the stream-set decision
        self._container: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._started = False
        self._closed = False
        self._origin_us = 0  # pts written as 0 in the file
        self._last_pts: dict[Stream, int] = {}
        self._video_packets = 0
        self._audio_packets = 0
        self._dropped = 0
        self._have_keyframe = False
        # A video packet is missing (a seq gap) or was not written: the deltas after it refer
        # to a picture this file does not have, so video waits for the next keyframe.
        self._video_needs_key = False
        # Video is written on one frame grid (see _video_time): base, step, last (1/90 000 s).
        self._grid: tuple[int, int, int] | None = None
        self._first_media_at: float | None = None
        self._first_keyframe_at: float | None = None
        self._written = _Span()
        self._preroll = _Span()
        self._width: int | None = None
        self._height: int | None = None

    # ---- seq order -------------------------------------------------------------------------

    def feed(self, rp: ReceivedPacket) -> None:
        if self._closed:
            self._dropped += 1
            return
        if self._first_media_at is None:
            self._first_media_at = self.clock.wall()
        if not rp.preroll and (self._first_live_seq is None or rp.seq < self._first_live_seq):
            self._first_live_seq = rp.seq
        if rp.seq < self._next_seq or rp.seq in self._pending:
            if rp.preroll and rp.seq not in self._preroll_behind and self._in_gap(rp.seq):
                self._preroll_behind.add(rp.seq)  # sent behind live media: not lost
                return
            self._dropped += 1  # duplicate (QoS 1 redelivery) or later than the window
            return
        self._pending[rp.seq] = rp
        self._drain()
        # A seq still missing while `reorder_window` later packets wait is not coming in
        # time: a gap (unless it turns out to be pre-roll that was sent behind live media).
        while len(self._pending) >= self.reorder_window:
            self._skip_to(min(self._pending))
            self._drain()

    def _drain(self) -> None:
        while self._next_seq in self._pending:
            self._deliver(self._pending.pop(self._next_seq))
            self._next_seq += 1

    def _skip_to(self, seq: int) -> None:
        self._gaps.append((self._next_seq, seq - 1))
        self._next_seq = seq
        self._video_needs_key = True  # what is missing may be a picture the next delta needs

    def _in_gap(self, seq: int) -> bool:
        return any(a <= seq <= b for a, b in reversed(self._gaps))

    def _lost(self) -> tuple[list[tuple[int, int]], int]:
        """(the gaps without the pre-roll seqs, how many pre-roll seqs were taken out): the
        pre-roll is every seq below the first live one, and what came late flagged so."""
        live_from = self._first_live_seq if self._first_live_seq is not None else -1
        if not self._preroll_behind and (not self._gaps or self._gaps[0][0] >= live_from):
            return list(self._gaps), 0
        out: list[tuple[int, int]] = []
        behind = 0
        for a, b in self._gaps:
            start = None
            for seq in range(a, b + 2):
                missing = seq <= b and seq >= live_from and seq not in self._preroll_behind
                behind += seq <= b and not missing
                if missing and start is None:
                    start = seq
                elif not missing and start is not None:
                    out.append((start, seq - 1))
                    start = None
        return out, behind

    # ---- media -----------------------------------------------------------------------------

    def _deliver(self, rp: ReceivedPacket) -> None:
        pkt = rp.packet
        if pkt.stream is Stream.VIDEO and not self._have_keyframe:
            if not pkt.keyframe:
                self._dropped += 1  # undecodable without the keyframe before it
                return
            self._have_keyframe = True
            try:
                self._width, self._height = frame_size(pkt.data)
            except EvidenceError as e:
                log.warning("%s: %s", self.path.name, e)
        if self._started:
            self._write(rp)
            return
        self._startup.append(rp)
        if self._ready_to_start() or len(self._startup) >= MAX_STARTUP_PACKETS:
            self._start()

    def _ready_to_start(self) -> bool:
        video = [r for r in self._startup if r.packet.stream is Stream.VIDEO]
        audio = [r for r in self._startup if r.packet.stream is Stream.AUDIO]
        if video and audio:
            return True
        if video:
            return (video[-1].pts_us - video[0].pts_us) / 1e6 >= VIDEO_ONLY_AFTER_S
        return bool(audio) and (audio[-1].pts_us - audio[0].pts_us) / 1e6 >= AUDIO_ONLY_AFTER_S

    def _start(self) -> None:
        has_video = any(r.packet.stream is Stream.VIDEO for r in self._startup)
        has_audio = any(r.packet.stream is Stream.AUDIO for r in self._startup)
        if not (has_video or has_audio):
            return
        try:
            self._container = self._open_container()
            if has_video:
                self._video = self._container.add_mux_stream(
                    "h264", width=self._width or 0, height=self._height or 0
                )
                self._video.time_base = VIDEO_TIME_BASE
            if has_audio:
                # An encoder-backed stream, never used to encode: opening it gives the muxer
                # the Opus header (dOps) that a bare mux stream would lack.
                self._audio = self._container.add_stream("libopus", rate=AUDIO_RATE, layout="mono")
        except (OSError, av.error.FFmpegError, ValueError) as e:
            # One line, then this incident's media is refused: retrying per packet would only
            # repeat the error 60 times a second.
            log.error("cannot create evidence file %s: %s", self.path, e)
            if self._container is not None:
                self._container.close()
                self._container = None
            self._dropped += len(self._startup)
            self._startup = []
            self._closed = True
            return
        self._started = True
        startup, self._startup = self._startup, []
        self._origin_us = min(r.pts_us for r in startup)
        for rp in startup:
            self._write(rp)

    def _open_container(self) -> Any:
        """The output the packets are muxed into: the evidence file (the live view,
        tools/controlroom/web/live.py, muxes the same way into memory)."""
        private_dir(self.path.parent)
        private_file(self.path)  # evidence is 0600: FFmpeg truncates it, keeps the mode
        # flush_packets: every packet reaches the file at once, so a reader sees each
        # fragment as soon as the muxer completes it.
        return av.open(
            str(self.path),
            "w",
            format="mp4",
            options={"movflags": MOVFLAGS, "flush_packets": "1"},
        )

    def _write(self, rp: ReceivedPacket) -> None:
        pkt: EncodedPacket = rp.packet
        video = pkt.stream is Stream.VIDEO
        stream = self._video if video else self._audio
        last = self._last_pts.get(pkt.stream)
        if video and self._video_needs_key:
            if not pkt.keyframe:
                self._dropped += 1  # its reference picture is not in this file
                return
            self._video_needs_key = False
        # MP4 needs strictly increasing timestamps per track; anything else (a stream that
        # appeared after the file started, a clock step, a stale packet from before a restart)
        # cannot be placed and is dropped.
        if (
            stream is None
            or rp.pts_us < self._origin_us
            or (last is not None and rp.pts_us <= last)
        ):
            self._dropped += 1
            self._video_needs_key |= video
            return
        out = av.Packet(pkt.data)
        out.stream = stream
        at = rp.pts_us - self._origin_us
        if video:
            out.time_base = VIDEO_TIME_BASE
            out.pts = out.dts = self._video_time(at, pkt)
            out.duration = round(max(pkt.duration_us, 0) * 9 / 100)
        else:
            out.time_base = US
            out.pts = out.dts = at
            out.duration = max(pkt.duration_us, 0)
        out.is_keyframe = pkt.keyframe
        try:
            self._container.mux(out)
        except av.error.FFmpegError as e:
            self._dropped += 1
            self._video_needs_key |= video
            log.warning("%s: packet seq %d not written: %s", self.path.name, rp.seq, e)
            return
        self._last_pts[pkt.stream] = rp.pts_us
        self._written.add(rp.pts_us, pkt.duration_us)
        if rp.preroll:
            self._preroll.add(rp.pts_us, pkt.duration_us)
        if pkt.stream is Stream.VIDEO:
            self._video_packets += 1
            if self._first_keyframe_at is None:
                self._first_keyframe_at = self.clock.wall()
        else:
            self._audio_packets += 1

    def _flush_writes(self) -> None:
        """Before the container closes: what a subclass still holds back from `_write`."""

    def _video_time(self, at: int, pkt: EncodedPacket) -> int:
        """Where a video frame captured at `at` (µs in the file) is written, in 1/90 000 s:
        on one frame grid for the whole file (its interval `duration_us` = 1/fps, phase of
        the file's first frame), in the slot of its capture time or the next free one, so
        less than a frame interval from its capture time (one more where the frame rate
        changes). Capture times jitter (a camera callback runs late, the next one on time):
        two frames less than an interval apart, or off the grid, fall on one tick of a
        player's or ffmpeg's 1/fps clock, which then reports non-monotonic DTS. The capture
        time itself stays in the packet log and in the picture (hal/stamp.py)."""
        at = round(at * 9 / 100)
        step = round(max(pkt.duration_us, 0) * 9 / 100)
        if self._grid is None:
            self._grid = (at, step, at)
            return at
        base, previous, last = self._grid
        if step <= 0:  # no frame interval known: only keep DTS rising
            out = max(at, last + 1)
            self._grid = (base, previous, out)
            return out
        # Its own slot: a frame up to 3/4 of an interval late keeps it (rounding would give
        # it the next frame's and push every later frame along).
        slot = math.floor((at - base) / step + 0.25)
        lowest = last + max(step, previous)  # the next free slot
        if base + slot * step < lowest:
            slot = -((base - lowest) // step)  # ceil((lowest - base) / step)
        out = base + slot * step
        self._grid = (base, step, out)
        return out

    # ---- end -------------------------------------------------------------------------------

    def close(self) -> EvidenceSummary:
        if self._closed:
            return self.summary()
        # Whatever is still waiting for a missing seq is written now, in order, with gaps.
        while self._pending:
            self._skip_to(min(self._pending))
            self._drain()
        if not self._started and self._startup:
            self._start()
        self._flush_writes()
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except av.error.FFmpegError as e:
                log.warning("%s: closing failed: %s", self.path.name, e)
            self._container = None
        return self.summary()

    def summary(self) -> EvidenceSummary:
        gaps, preroll_behind = self._lost()
        return EvidenceSummary(
            path=self.path,
            video_packets=self._video_packets,
            audio_packets=self._audio_packets,
            gaps=gaps,
            first_media_at=self._first_media_at,
            first_keyframe_at=self._first_keyframe_at,
            preroll_s=self._preroll.seconds,
            duration_s=self._written.seconds,
            width=self._width,
            height=self._height,
            dropped_packets=self._dropped,
            preroll_behind=preroll_behind,
            closed=self._closed,
            alert_id=self.alert_id,
        )


@dataclass
class _Held:
    first_at: float  # monotonic time the first held packet arrived
    packets: deque = field(default_factory=deque)
    overflow: int = 0


class EvidenceRecorder:
    """One `Evidence` per alert. Media that arrives before its alert is held (bounded, for
    `hold_s`) and written once `open` comes, else dropped with one log line."""

    def __init__(
        self,
        directory: Path | str,
        *,
        hold_s: float = 5.0,
        reorder_window: int = 32,
        max_held: int = 1_000,
        clock: Clock | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.hold_s = hold_s
        self.reorder_window = reorder_window
        self.max_held = max_held
        self.clock = clock or Clock()
        self._lock = threading.Lock()
        self._open: dict[str, Evidence] = {}
        self._closed: dict[str, EvidenceSummary] = {}
        self._held: dict[str, _Held] = {}

    def path_for(self, alert_id: str, device_id: str) -> Path:
        for what, name in (("device_id", device_id), ("alert_id", alert_id)):
            if not SAFE_NAME.match(name):
                raise EvidenceError(f"{what} {name!r} is not usable in a file name")
        return self.directory / f"{device_id}-{alert_id}.mp4"

    def open(self, alert_id: str, device_id: str) -> Evidence:
        with self._lock:
            self._expire_held()
            if alert_id in self._open:
                return self._open[alert_id]  # a retried alert: same incident, same file
            path = self.path_for(alert_id, device_id)
            part = 2
            while path.exists():  # a restarted control room continues in a new part
                path = path.with_name(f"{device_id}-{alert_id}.part{part}.mp4")
                part += 1
            ev = Evidence(
                path,
                reorder_window=self.reorder_window,
                clock=self.clock,
                alert_id=alert_id,
            )
            self._open[alert_id] = ev
            self._closed.pop(alert_id, None)
            held = self._held.pop(alert_id, None)
            if held is not None:
                for rp in held.packets:
                    ev.feed(rp)
            return ev

    def feed(self, alert_id: str, rp: ReceivedPacket) -> None:
        with self._lock:
            ev = self._open.get(alert_id)
            if ev is not None:
                ev.feed(rp)
                return
            if alert_id in self._closed:
                return  # stragglers after the incident ended
            self._expire_held()
            held = self._held.get(alert_id)
            if held is None:
                held = self._held[alert_id] = _Held(first_at=self.clock.monotonic())
            if len(held.packets) >= self.max_held:
                held.overflow += 1
                return
            held.packets.append(rp)

    def is_open(self, alert_id: str) -> bool:
        with self._lock:
            return alert_id in self._open

    def open_ids(self) -> list[str]:
        with self._lock:
            return list(self._open)

    def drop_held(self, alert_id: str) -> None:
        """Forget media held for an alert another receiver records (no warning)."""
        with self._lock:
            self._held.pop(alert_id, None)

    def expire_held(self) -> None:
        """Drop media whose alert did not come within hold_s (also done on every feed/open)."""
        with self._lock:
            self._expire_held()

    def _expire_held(self) -> None:
        now = self.clock.monotonic()
        for alert_id in [a for a, h in self._held.items() if now - h.first_at > self.hold_s]:
            held = self._held.pop(alert_id)
            log.warning(
                "dropped %d media packets for unknown alert %s: no alert within %.1f s",
                len(held.packets) + held.overflow,
                alert_id,
                self.hold_s,
            )

    def close(self, alert_id: str) -> EvidenceSummary:
        with self._lock:
            ev = self._open.pop(alert_id, None)
            if ev is None:
                if alert_id in self._closed:
                    return self._closed[alert_id]
                raise EvidenceError(f"no evidence for alert {alert_id}")
            summary = ev.close()
            self._closed[alert_id] = summary
            return summary

    def close_all(self) -> list[EvidenceSummary]:
        with self._lock:
            ids = list(self._open)
        return [self.close(a) for a in ids]

    def summary(self, alert_id: str) -> EvidenceSummary:
        with self._lock:
            if alert_id in self._open:
                return self._open[alert_id].summary()
            if alert_id in self._closed:
                return self._closed[alert_id]
        raise EvidenceError(f"no evidence for alert {alert_id}")


def ffprobe_summary(path: Path | str) -> dict:
    """What ffprobe sees in a media file: {"format", "duration_s", "streams": [{"type", "codec",
    "width", "height", "duration_s"}], "video": first video stream or None, "audio": ...}."""
    exe = shutil.which("ffprobe")
    if exe is None:
        raise EvidenceError("ffprobe not found on PATH (install ffmpeg)")
    cmd = [exe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        reason = (r.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise EvidenceError(f"ffprobe cannot read {path}: {reason}")
    data = json.loads(r.stdout or "{}")

    def seconds(v: Any) -> float | None:
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    streams = [
        {
            "type": s.get("codec_type"),
            "codec": s.get("codec_name"),
            "width": s.get("width"),
            "height": s.get("height"),
            "duration_s": seconds(s.get("duration")),
        }
        for s in data.get("streams", [])
    ]
    fmt = data.get("format", {})
    return {
        "format": fmt.get("format_name"),
        "duration_s": seconds(fmt.get("duration")),
        "streams": streams,
        "video": next((s for s in streams if s["type"] == "video"), None),
        "audio": next((s for s in streams if s["type"] == "audio"), None),
    }
