"""`make bench`, media half: press -> first decodable frame, glass-to-glass, bitrates, encode CPU.

One run on loopback in a temp dir: a dev PKI, a real mosquitto (mTLS + ACL), the real Kiosk
runtime with the fake camera (640x480@15, capture time drawn into every frame) and fake mic,
and the reference ControlRoomReceiver recording evidence MP4s. The bench taps the room's
live-view seam (the `viewer` it hands every reassembled packet to, after the evidence
recorder) and decodes the video with PyAV on a thread of its own, so what it measures is a
frame a control-room viewer could actually show. Kiosk, room and bench share one machine and
one CLOCK_MONOTONIC, so `now - drawn capture time` is glass-to-glass (minus the display).

Live first (issue 9 item 7): one more kiosk + room pair reaches the broker through
tools/netproxy.ThrottleProxy; one incident per link rate (1 Mbit/s, 150 kbit/s) measures live
glass-to-glass in its first seconds, holes in the live voice, and whether the complete
evidence (complete.mp4, remuxed in seq order after backfill) holds the whole pre-roll,
read from the capture times drawn into its frames.

The encode-CPU rows run our encoders and the ffmpeg CLI with the same settings on the same
raw input, after the incident part has shut down (process CPU time counts every thread).

A benchmark reports; it does not fail. Exit 0 whether goals are met or missed, 1 only when
the setup itself fails (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import math
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import av
import av.error
import numpy as np
from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.cliargs import OneLineParser, positive_int
from pinkbutton.firmware.config import ConfigError, load_config
from pinkbutton.firmware.media.encoder import (
    DEFAULT_OPUS_FRAME_MS,
    AudioEncoder,
    VideoEncoder,
    libx264_options,
)
from pinkbutton.firmware.media.envelope import ReceivedPacket
from pinkbutton.firmware.media.packet import Stream
from pinkbutton.firmware.transport import TlsFiles, TransportError
from pinkbutton.hal.base import AudioChunk, VideoFrame
from pinkbutton.hal.clock import Clock, FakeClock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.hal.fake.camera import FakeCamera
from pinkbutton.hal.fake.microphone import FakeMicrophone
from pinkbutton.hal.stamp import read_stamp
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.pki import ca_paths, controlroom_paths

from harness.bench import BenchError, Rig, percentile, run_and_print, write_config
from harness.netproxy import ThrottleProxy

WIDTH, HEIGHT, FPS = 640, 480, 15
VIDEO_KBPS, AUDIO_KBPS = 500, 24
KEYFRAME_INTERVAL_S = 1.0
PREROLL_S = 5.0
SAMPLE_RATE = 48000
AUDIO_CHUNK_S = 0.020

DEFAULT_INCIDENTS = 5
DEFAULT_LIVE_S = 4.0
DEFAULT_CPU_FRAMES = 900  # one minute at 15 fps
DEADLINE_S = 200.0
STEP_TIMEOUT_S = 5.0
LINKS_KBPS = (1000, 150)  # the live-first incidents, through the throttling proxy
DEFAULT_LINK_LIVE_S = 10.0
LINK_TIME_S = 45.0  # what the live-first part may take at most (setup, fill, 2 incidents)
COMPLETE_TIMEOUT_S = 30.0  # stream end -> complete evidence, on the slow link

GOAL_FIRST_FRAME_MS = 300.0
GOAL_G2G_P50_MS = 150.0
GOAL_CPU_RATIO = 1.2
GOAL_LINK_G2G_P95_MS = {1000: 500.0, 150: 1000.0}

Progress = Callable[[str], None]


# -- the control room's live view, decoded ------------------------------------------------------


@dataclass
class _AlertTap:
    decoder: av.VideoCodecContext
    live_capture_us: set[int] = field(default_factory=set)
    first_decoded: float | None = None  # time.monotonic() after the first frame came out
    first_keyframe_arrived: float | None = None
    # Live part: payload bytes and the capture-time span each stream covers.
    live_bytes: dict[Stream, int] = field(default_factory=lambda: {s: 0 for s in Stream})
    live_span: dict[Stream, list[int]] = field(default_factory=dict)
    g2g_ms: list[float] = field(default_factory=list)
    live_audio_us: list[int] = field(default_factory=list)  # capture times, arrival order
    last_video_seq: int = -1  # the live view never goes back (pre-roll behind live)


class ViewTap:
    """Stands in as the receiver's `viewer`: feed() runs on the receiver's thread and only
    stamps and enqueues; a decode thread decodes each alert's video in arrival order.

    Decoding is single-threaded on purpose: FFmpeg's frame threads hold frames back (one per
    thread), which would add latency that is ours, not the stream's.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cv = threading.Condition()
        self._alerts: dict[str, _AlertTap] = {}
        self.g2g_ms: list[float] = []
        self.decode_errors = 0
        self.unreadable_stamps = 0
        self._thread = threading.Thread(target=self._run, name="bench-decode", daemon=True)
        self._thread.start()

    # receiver thread
    def feed(self, alert_id: str, rp: ReceivedPacket) -> None:
        self._queue.put((time.monotonic(), alert_id, rp))

    def end(self, alert_id: str) -> None:
        pass

    def close(self) -> None:
        pass

    # bench thread
    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(10)

    def first_decoded(self, alert_id: str, timeout: float) -> float | None:
        with self._cv:
            self._cv.wait_for(
                lambda: self._alerts.get(alert_id) is not None
                and self._alerts[alert_id].first_decoded is not None,
                timeout,
            )
            tap = self._alerts.get(alert_id)
            return tap.first_decoded if tap else None

    def live_kbps(self) -> dict[Stream, float]:
        """Live payload bits over the live capture time, summed over every incident."""
        with self._cv:
            out = {}
            for stream in Stream:
                bits = sum(t.live_bytes[stream] for t in self._alerts.values()) * 8
                span_us = sum(
                    t.live_span[stream][1] - t.live_span[stream][0]
                    for t in self._alerts.values()
                    if stream in t.live_span
                )
                out[stream] = bits / (span_us / 1e6) / 1000 if span_us > 0 else float("nan")
            return out

    def of_alert(self, alert_id: str) -> tuple[list[float], list[int]]:
        """(glass-to-glass ms of its live frames, capture times of its live audio)."""
        with self._cv:
            tap = self._alerts.get(alert_id)
            return ([], []) if tap is None else (list(tap.g2g_ms), list(tap.live_audio_us))

    def drain(self, timeout: float) -> None:
        """Wait until everything fed so far has been decoded."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    # decode thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            arrived, alert_id, rp = item
            try:
                self._one(arrived, alert_id, rp)
            except Exception as e:  # noqa: BLE001 - a bench thread must keep counting
                logging.getLogger("bench").error("decode thread: %s", e)

    def _one(self, arrived: float, alert_id: str, rp: ReceivedPacket) -> None:
        with self._cv:
            tap = self._alerts.get(alert_id)
            if tap is None:
                decoder = av.CodecContext.create("h264", "r")
                decoder.thread_count = 1
                tap = self._alerts[alert_id] = _AlertTap(decoder)
        pkt = rp.packet
        if not rp.preroll:
            with self._cv:
                if pkt.stream is Stream.AUDIO:
                    tap.live_audio_us.append(pkt.pts_us)
                tap.live_bytes[pkt.stream] += len(pkt.data)
                span = tap.live_span.setdefault(pkt.stream, [pkt.pts_us, pkt.pts_us])
                span[0] = min(span[0], pkt.pts_us)
                span[1] = max(span[1], pkt.pts_us + pkt.duration_us)
        if pkt.stream is not Stream.VIDEO:
            return
        if rp.seq <= tap.last_video_seq:
            return  # pre-roll that came behind live media: a viewer shows the present
        tap.last_video_seq = rp.seq
        if pkt.keyframe and tap.first_keyframe_arrived is None:
            tap.first_keyframe_arrived = arrived
        if not rp.preroll:
            tap.live_capture_us.add(pkt.pts_us)
        try:
            frames = tap.decoder.decode(av.Packet(pkt.data))
        except av.error.FFmpegError:
            self.decode_errors += 1
            return
        now = time.monotonic()
        for frame in frames:
            if tap.first_decoded is None:
                with self._cv:
                    tap.first_decoded = now
                    self._cv.notify_all()
            plane = frame.planes[0]
            # A VideoPlane has the buffer protocol; PyAV's stubs do not say so.
            y = np.frombuffer(cast(Any, plane), np.uint8).reshape(frame.height, plane.line_size)
            stamp = read_stamp(y[:, : frame.width])
            if stamp is None:
                self.unreadable_stamps += 1
            elif stamp in tap.live_capture_us:
                tap.live_capture_us.discard(stamp)
                self.g2g_ms.append((now * 1e6 - stamp) / 1000)
                with self._cv:
                    tap.g2g_ms.append(self.g2g_ms[-1])


# -- the rig ------------------------------------------------------------------------------------


class MediaRig(Rig):
    """harness.bench's rig with a camera and mic on the kiosk and evidence recording at the room."""

    def __init__(self, work_dir: Path, *, throttled: bool = False) -> None:
        """`throttled`: the kiosk reaches the broker through a ThrottleProxy (`self.proxy`)."""
        super().__init__(work_dir)
        self.tap = ViewTap()
        self._lock = threading.Condition()
        self.evidence: dict[str, dict] = {}
        self.complete: dict[str, dict] = {}  # alert_id -> the room's evidence_complete
        self.stream_ends = 0
        self.throttled = throttled
        self.proxy: ThrottleProxy | None = None

    def _on_kiosk(self, kind: str, data: dict) -> None:
        if kind == "stream_end":
            with self._lock:
                self.stream_ends += 1
                self._lock.notify_all()

    def _on_room(self, kind: str, data: dict) -> None:
        if kind == "evidence":
            with self._lock:
                # Named <device_id>-<alert_id>[.partN].mp4; the event carries no alert_id.
                self.evidence[Path(data["path"]).name] = dict(data)
                self._lock.notify_all()
        elif kind == "evidence_complete":
            with self._lock:
                self.complete[data["alert_id"]] = dict(data)
                self._lock.notify_all()

    def evidence_of(self, alert_id: str) -> dict | None:
        with self._lock:
            return next((e for n, e in self.evidence.items() if alert_id in n), None)

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(pred, timeout)

    def start_clients(self) -> None:
        assert self.broker is not None
        try:
            port = self.broker.port
            if self.throttled:
                self.proxy = ThrottleProxy("127.0.0.1", self.broker.port).start()
                port = self.proxy.port
            config = load_config(write_config(self.dir, self.pki, port))
            clock = Clock()
            backend = FakeBackend()
            camera = backend.camera(clock, WIDTH, HEIGHT, FPS)
            microphone = backend.microphone(clock, SAMPLE_RATE)
            self.kiosk = Kiosk(
                config,
                backend.button(clock, 17, 0.05),
                backend.indicator(clock, 27),
                clock=clock,
                listeners=[self.timings.on_kiosk, self._on_kiosk],
                camera=camera,
                microphone=microphone,
            )
            room = controlroom_paths(self.pki)
            self.room = ControlRoomReceiver(
                host="localhost",
                port=self.broker.port,
                tls=TlsFiles(ca_paths(self.pki).cert, room.cert, room.key),
                db_path=self.dir / "room.db",
                client_id="controlroom-bench-media",
                auto_ack=True,
                operator="bench",
                device_certs=self.pki / "devices",
                out=lambda line: None,
                listeners=[self.timings.on_room, self._on_room],
                evidence_dir=self.dir / "evidence",
                viewer=self.tap,
            )
        except (ConfigError, TransportError, OSError) as e:
            raise BenchError(f"cannot set up kiosk/control room: {e}") from None
        for name, target in (("bench-room", self.room.run), ("bench-kiosk", self.kiosk.run)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        t = self.timings
        if not t.wait(lambda: t.room_saw_device and t.idle >= 1, 15.0):
            raise BenchError("kiosk and control room did not both come up within 15 s")

    def close(self) -> None:
        super().close()
        if self.proxy is not None:
            self.proxy.close()
        self.tap.stop()


# -- results ------------------------------------------------------------------------------------


@dataclass
class CpuPair:
    """CPU seconds spent encoding `stream_s` seconds of media: ours and the ffmpeg CLI's."""

    ours_s: float
    ffmpeg_s: float
    stream_s: float

    def per_minute(self, seconds: float) -> float:
        return seconds * 60.0 / self.stream_s if self.stream_s > 0 else float("nan")

    @property
    def ratio(self) -> float:
        return self.ours_s / self.ffmpeg_s if self.ffmpeg_s > 0 else float("nan")


@dataclass
class LinkResult:
    """One incident over a throttled link (issue 9 item 7: live first, pre-roll behind)."""

    kbps: int
    live_s: float
    g2g_ms: list[float] = field(default_factory=list)  # live frames of the incident
    voice_frames: int = 0  # live Opus frames expected over the measured span (kiosk's default)
    voice_missing: int | None = None  # of those, never arrived live (None: not measured)
    preroll_s: float = float("nan")  # seconds before the press in the complete evidence
    complete_gaps: list | None = None  # None: no complete evidence came


@dataclass
class MediaResult:
    incidents: int  # requested
    first_frame_ms: list[float] = field(default_factory=list)
    g2g_ms: list[float] = field(default_factory=list)
    video_kbps: float = float("nan")
    audio_kbps: float = float("nan")
    video_cpu: CpuPair = field(default_factory=lambda: CpuPair(math.nan, math.nan, 0.0))
    audio_cpu: CpuPair = field(default_factory=lambda: CpuPair(math.nan, math.nan, 0.0))
    links: list[LinkResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("PASS" if met else "MISS")


def _le(value: float, goal: float) -> bool:
    return not math.isnan(value) and value <= goal  # NaN (nothing measured) never passes


def table_rows(r: MediaResult) -> list[tuple[str, str, str, str]]:
    """(metric, value, goal, verdict) per row; format_table aligns them."""
    first_p50, first_max = percentile(r.first_frame_ms, 50), percentile(r.first_frame_ms, 100)
    g50, g95 = percentile(r.g2g_ms, 50), percentile(r.g2g_ms, 95)
    v, a = r.video_cpu, r.audio_cpu
    return [
        (
            f"press -> first decodable frame (p50/max, n={len(r.first_frame_ms)})",
            f"{first_p50:.1f} / {first_max:.1f} ms",
            f"<= {GOAL_FIRST_FRAME_MS:g} ms",
            _verdict(_le(first_max, GOAL_FIRST_FRAME_MS)),
        ),
        (
            f"glass-to-glass p50 / p95 (n={len(r.g2g_ms)})",
            f"{g50:.1f} / {g95:.1f} ms",
            f"p50 <= {GOAL_G2G_P50_MS:g} ms",
            _verdict(_le(g50, GOAL_G2G_P50_MS)),
        ),
        (
            "video bitrate (live)",
            f"{r.video_kbps:.1f} kbit/s",
            f"<= {VIDEO_KBPS}",
            _verdict(_le(r.video_kbps, VIDEO_KBPS)),
        ),
        (
            "audio bitrate (live)",
            f"{r.audio_kbps:.1f} kbit/s",
            f"<= {AUDIO_KBPS}",
            _verdict(_le(r.audio_kbps, AUDIO_KBPS)),
        ),
        (
            "H.264 encode CPU s/min: ours / ffmpeg",
            f"{v.per_minute(v.ours_s):.2f} / {v.per_minute(v.ffmpeg_s):.2f} ({v.ratio:.2f}x)",
            f"<= {GOAL_CPU_RATIO:g}x",
            _verdict(_le(v.ratio, GOAL_CPU_RATIO)),
        ),
        (
            "Opus encode CPU s/min: ours / ffmpeg",
            f"{a.per_minute(a.ours_s):.2f} / {a.per_minute(a.ffmpeg_s):.2f} ({a.ratio:.2f}x)",
            f"<= {GOAL_CPU_RATIO:g}x",
            _verdict(_le(a.ratio, GOAL_CPU_RATIO)),
        ),
        *(row for kbps in LINKS_KBPS for row in link_rows(r, kbps)),
    ]


def link_rows(r: MediaResult, kbps: int) -> list[tuple[str, str, str, str]]:
    """Three rows per throttled link; a link not measured reads MISS."""
    lr = next((x for x in r.links if x.kbps == kbps), None) or LinkResult(kbps, math.nan)
    where = f"{kbps / 1000:g} Mbit/s" if kbps >= 1000 else f"{kbps} kbit/s"
    p95 = percentile(lr.g2g_ms, 95)
    goal = GOAL_LINK_G2G_P95_MS.get(kbps, math.nan)
    missing = lr.voice_missing
    gaps = lr.complete_gaps
    preroll_goal = PREROLL_S - 0.1
    return [
        (
            f"{where}: live glass-to-glass p95, first {lr.live_s:g} s (n={len(lr.g2g_ms)})",
            f"{p95:.0f} ms",
            f"<= {goal:g} ms",
            _verdict(_le(p95, goal)),
        ),
        (
            f"{where}: live voice, {DEFAULT_OPUS_FRAME_MS} ms frames missing",
            "-" if missing is None else f"{missing} of {lr.voice_frames}",
            "0",
            _verdict(missing == 0 and lr.voice_frames > 0),
        ),
        (
            f"{where}: complete evidence: pre-roll / gaps",
            f"{lr.preroll_s:.1f} s / "
            + ("none" if gaps == [] else "no complete file" if gaps is None else str(gaps)),
            f">= {preroll_goal:g} s / none",
            _verdict(gaps == [] and not math.isnan(lr.preroll_s)
                     and lr.preroll_s >= preroll_goal),
        ),
    ]


def format_table(r: MediaResult) -> str:
    rows = table_rows(r)
    head = ("metric", "value", "goal", "verdict")
    widths = [max(len(row[i]) for row in [*rows, head]) + 2 for i in range(3)]

    def line(row: Sequence[str]) -> str:
        return "".join(f"{cell:<{w}}" for cell, w in zip(row[:3], widths, strict=True)) + row[3]

    title = (
        f"Pink Button bench — media ({WIDTH}x{HEIGHT}@{FPS}, H.264 + Opus, loopback mTLS), "
        f"incidents={r.incidents}"
    )
    return "\n".join([title, line(head), *(line(row) for row in rows)] + [
        f"note: {n}" for n in r.notes
    ])


# -- incidents ----------------------------------------------------------------------------------


def measure_incidents(
    rig: MediaRig, incidents: int, live_s: float, deadline: float, progress: Progress
) -> tuple[list[float], list[str]]:
    """Press, first decodable frame at the room, `live_s` of live stream, end, back to idle."""
    first_ms: list[float] = []
    notes: list[str] = []
    assert rig.kiosk is not None and rig.room is not None
    t = rig.timings
    for i in range(incidents):
        if time.monotonic() + live_s + 2 > deadline:
            notes.append(f"deadline reached: {i} of {incidents} incidents measured")
            break
        before, idle_before = t.last_persisted, t.idle
        t0 = time.monotonic()
        rig.kiosk.press()
        if not t.wait(lambda b=before: t.last_persisted != b, STEP_TIMEOUT_S):
            notes.append(f"stopped after {i} incidents: press {i} was never persisted")
            break
        alert_id = t.last_persisted
        assert alert_id is not None
        first = rig.tap.first_decoded(alert_id, STEP_TIMEOUT_S)
        if first is None:
            notes.append(f"incident {i}: no decodable frame at the room in {STEP_TIMEOUT_S} s")
        else:
            first_ms.append((first - t0) * 1000)
        time.sleep(max(0.0, t0 + live_s - time.monotonic()))
        ends_before = rig.stream_ends
        rig.room.command(f"end {alert_id}")
        if not t.wait(lambda n=idle_before: t.idle > n, STEP_TIMEOUT_S):
            notes.append(f"stopped after incident {i}: the kiosk did not return to idle")
            break
        if not rig.wait(
            lambda a=alert_id, n=ends_before: rig.stream_ends > n and rig.evidence_of(a) is not None,
            STEP_TIMEOUT_S * 2,
        ):
            what = "stream end at kiosk" if rig.stream_ends <= ends_before else "evidence file"
            notes.append(f"stopped after incident {i}: no {what} within {STEP_TIMEOUT_S * 2} s")
            break
        gaps = (rig.evidence_of(alert_id) or {}).get("gaps")
        if gaps:
            notes.append(f"incident {i}: evidence has seq gaps {gaps}")
        shown = f"{first_ms[-1]:.0f} ms" if first is not None else "none"
        progress(f"incident {i + 1}/{incidents}: first decodable frame {shown}")
    return first_ms, notes


# -- live first over throttled links ------------------------------------------------------------


def measure_links(
    work: Path, links: Sequence[int], live_s: float, preroll_wait_s: float, deadline: float,
    progress: Progress,
) -> tuple[list[LinkResult], list[str]]:
    """One incident per link rate through the throttling proxy (the kiosk's side only)."""
    results: list[LinkResult] = []
    notes: list[str] = []
    work.mkdir(parents=True, exist_ok=True)
    with MediaRig(work, throttled=True) as rig:
        rig.start_broker()
        rig.start_clients()
        assert rig.kiosk is not None and rig.room is not None and rig.proxy is not None
        t = rig.timings
        for kbps in links:
            if time.monotonic() + preroll_wait_s + live_s + 5 > deadline:
                notes.append(f"deadline reached: {kbps} kbit/s link not measured")
                break
            rig.proxy.set_rate(kbps)
            progress(f"{kbps} kbit/s link: filling the pre-roll for {preroll_wait_s:.1f} s")
            time.sleep(preroll_wait_s)
            lr = LinkResult(kbps, live_s)
            results.append(lr)
            before, idle_before = t.last_persisted, t.idle
            press_us = time.monotonic() * 1e6
            rig.kiosk.press()
            if not t.wait(lambda b=before: t.last_persisted != b, STEP_TIMEOUT_S):
                notes.append(f"{kbps} kbit/s: the press was never persisted")
                break
            alert_id = t.last_persisted
            assert alert_id is not None
            time.sleep(max(0.0, press_us / 1e6 + live_s - time.monotonic()))
            rig.room.command(f"end {alert_id}")
            if not t.wait(lambda n=idle_before: t.idle > n, STEP_TIMEOUT_S * 2):
                notes.append(f"{kbps} kbit/s: the kiosk did not return to idle")
                break
            left = max(1.0, min(COMPLETE_TIMEOUT_S, deadline - time.monotonic()))
            rig.wait(lambda a=alert_id: a in rig.complete, left)
            rig.tap.drain(STEP_TIMEOUT_S)
            g2g, audio = rig.tap.of_alert(alert_id)
            lr.g2g_ms = g2g
            # Live voice from its first frame (what came before is pre-roll) to 1.5 s before
            # the end (the tail may be cut by the end and go as backfill).
            if audio:
                first_us, span_us = min(audio), (live_s - 1.5) * 1e6
                lr.voice_frames = round(span_us / (DEFAULT_OPUS_FRAME_MS * 1000))
                got = {a for a in audio if first_us <= a < first_us + span_us}
                lr.voice_missing = max(0, lr.voice_frames - len(got))
            done = rig.complete.get(alert_id)
            if done is None:
                notes.append(f"{kbps} kbit/s: no complete evidence within {left:.0f} s")
            else:
                lr.complete_gaps = [list(g) for g in done["gaps"]]
                first = _first_stamp(Path(done["path"]))
                if first is not None:
                    lr.preroll_s = (press_us - first) / 1e6
            progress(f"{kbps} kbit/s link: live p95 {percentile(lr.g2g_ms, 95):.0f} ms, "
                     f"voice missing {lr.voice_missing}, pre-roll {lr.preroll_s:.1f} s")
        rig.proxy.set_rate(None)
    return results, notes


def _first_stamp(path: Path) -> int | None:
    """Capture time drawn into the first decodable frame of `path`."""
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                stamp = read_stamp(frame.to_ndarray(format="gray"))
                if stamp is not None:
                    return stamp
    except (OSError, av.error.FFmpegError):
        return None
    return None


# -- encode CPU ---------------------------------------------------------------------------------


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run_ffmpeg(args: list[str]) -> float:
    """CPU seconds (user + sys) of one ffmpeg run; raises BenchError if it fails."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise BenchError("ffmpeg not found: apt-get install ffmpeg")
    before = _children_cpu()
    done = subprocess.run(
        [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(f"ffmpeg failed: {err[-1] if err else done.returncode}")
    return _children_cpu() - before


def x264_cli_options(options: dict[str, str]) -> list[str]:
    """ffmpeg CLI flags for the private x264 options our VideoEncoder opened libx264 with."""
    out: list[str] = []
    for key, value in options.items():
        out += [f"-{key}", value]
    return out


def _encode_in_child(kind: str, directory: Path, amount: int) -> tuple[float, int]:
    """Run our encoder in a fresh process (`--encode-cpu`): process CPU time counts every
    thread, and in this one the incident part's leftovers (paho, drain, decoder threads)
    would be counted as encoding."""
    done = subprocess.run(
        [sys.executable, "-m", "harness.bench_media", "--encode-cpu", kind, "--cpu-frames",
         str(amount), "--dir", str(directory)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    if done.returncode != 0:
        err = done.stderr.strip().splitlines()
        raise BenchError(f"{kind} encode run failed: {err[-1] if err else done.returncode}")
    cpu, size = done.stdout.split()
    return float(cpu), int(size)


def _encode_video(directory: Path, frames: int) -> tuple[float, int]:
    """Capture `frames` fake-camera frames to in.yuv and encode them; (CPU s, bytes)."""
    clock = FakeClock()
    camera = FakeCamera(clock, WIDTH, HEIGHT, FPS)
    encoder = VideoEncoder(
        WIDTH, HEIGHT, FPS, bitrate_kbps=VIDEO_KBPS, keyframe_interval_s=KEYFRAME_INTERVAL_S,
        codec="libx264",  # what the ffmpeg CLI runs; "auto" would pick hardware on a Pi 4
    )

    def capture() -> tuple[VideoFrame, bytes]:
        frame = camera.capture_one()
        clock.advance(1.0 / FPS)
        return frame, frame.data

    return _timed_encode(encoder, capture, frames, directory / "in.yuv")


def measure_video_cpu(directory: Path, frames: int) -> tuple[CpuPair, list[str]]:
    """Our VideoEncoder on `frames` fake-camera frames vs the ffmpeg CLI on the same frames."""
    ours, ours_bytes = _encode_in_child("video", directory, frames)
    raw = directory / "in.yuv"
    out = directory / "out.h264"
    keyint = round(FPS * KEYFRAME_INTERVAL_S)
    options = libx264_options(keyint, VIDEO_KBPS)  # exactly what VideoEncoder opens with
    theirs = _run_ffmpeg([
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS),
        "-i", str(raw),
        "-c:v", "libx264", "-b:v", f"{VIDEO_KBPS}k", "-g", str(keyint), "-bf", "0",
        *x264_cli_options(options),
        "-f", "h264", "-y", str(out),
    ])  # fmt: skip
    theirs_bytes = out.stat().st_size
    raw.unlink()
    note = (
        f"H.264 CPU over {frames} frames; output ours {ours_bytes / 1024:.0f} KiB, "
        f"ffmpeg {theirs_bytes / 1024:.0f} KiB (same settings: {options.get('x264-params')}, "
        f"crf {options.get('crf')})"
    )
    return CpuPair(ours, theirs, frames / FPS), [note]


def _encode_audio(directory: Path, chunks: int) -> tuple[float, int]:
    """Capture `chunks` fake-mic chunks to in.s16 and encode them; (CPU s, bytes)."""
    clock = FakeClock()
    mic = FakeMicrophone(clock, SAMPLE_RATE, chunk_ms=round(AUDIO_CHUNK_S * 1000))
    encoder = AudioEncoder(SAMPLE_RATE, bitrate_kbps=AUDIO_KBPS)

    def capture() -> tuple[AudioChunk, bytes]:
        clock.advance(AUDIO_CHUNK_S)
        chunk = mic.capture_one()
        return chunk, chunk.samples

    return _timed_encode(encoder, capture, chunks, directory / "in.s16")


def _timed_encode(
    encoder, capture: Callable[[], tuple], count: int, raw: Path
) -> tuple[float, int]:
    """Encode `count` captured items, writing their raw bytes to `raw` for the ffmpeg CLI;
    (CPU seconds spent in the encoder only, encoded bytes)."""
    ours, ours_bytes = 0.0, 0
    with raw.open("wb") as f:
        for _ in range(count):
            item, data = capture()
            f.write(data)
            t0 = time.process_time()
            packets = encoder.encode(item)
            ours += time.process_time() - t0
            ours_bytes += sum(len(p.data) for p in packets)
        t0 = time.process_time()
        packets = encoder.flush()
        ours += time.process_time() - t0
        ours_bytes += sum(len(p.data) for p in packets)
    return ours, ours_bytes


def measure_audio_cpu(directory: Path, seconds: float) -> tuple[CpuPair, list[str]]:
    """Our AudioEncoder on `seconds` of fake-mic audio vs the ffmpeg CLI (libopus) on it."""
    chunks = round(seconds / AUDIO_CHUNK_S)
    ours, ours_bytes = _encode_in_child("audio", directory, chunks)
    raw = directory / "in.s16"
    out = directory / "out.ogg"
    # The same options as AudioEncoder._open: the kiosk's frames, voip, constrained VBR.
    theirs = _run_ffmpeg([
        "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", str(raw),
        "-c:a", "libopus", "-b:a", f"{AUDIO_KBPS}k", "-frame_duration", str(DEFAULT_OPUS_FRAME_MS),
        "-application", "voip", "-vbr", "constrained",
        "-f", "ogg", "-y", str(out),
    ])  # fmt: skip
    raw.unlink()
    note = (
        f"Opus CPU over {chunks * AUDIO_CHUNK_S:.0f} s; output ours {ours_bytes / 1024:.0f} KiB, "
        f"ffmpeg {out.stat().st_size / 1024:.0f} KiB (ogg)"
    )
    return CpuPair(ours, theirs, chunks * AUDIO_CHUNK_S), [note]


# -- the whole run ------------------------------------------------------------------------------


def run_media_bench(
    incidents: int = DEFAULT_INCIDENTS,
    *,
    live_s: float = DEFAULT_LIVE_S,
    preroll_wait_s: float = PREROLL_S + 0.7,
    cpu_frames: int = DEFAULT_CPU_FRAMES,
    deadline_s: float = DEADLINE_S,
    links: Sequence[int] = LINKS_KBPS,
    link_live_s: float = DEFAULT_LINK_LIVE_S,
    progress: Progress = lambda line: None,
) -> MediaResult:
    start = time.monotonic()
    result = MediaResult(incidents)
    with tempfile.TemporaryDirectory(prefix="pinkbutton-bench-media-") as tmp:
        work = Path(tmp)
        with MediaRig(work) as rig:
            progress("setting up PKI and mosquitto (mTLS + ACL)")
            rig.start_broker()
            progress("starting kiosk (fake camera + mic) and control room (evidence on)")
            rig.start_clients()
            progress(f"filling the pre-roll for {preroll_wait_s:.1f} s")
            time.sleep(preroll_wait_s)
            # The CPU part needs time too; the incidents get what it leaves.
            incident_deadline = (start + deadline_s - 25.0 * cpu_frames / DEFAULT_CPU_FRAMES
                                 - (LINK_TIME_S + len(links) * link_live_s if links else 0.0))
            progress(f"incidents: {incidents} x {live_s:g} s live")
            first, notes = measure_incidents(rig, incidents, live_s, incident_deadline, progress)
            rig.tap.drain(STEP_TIMEOUT_S)
            result.first_frame_ms = first
            result.g2g_ms = list(rig.tap.g2g_ms)
            kbps = rig.tap.live_kbps()
            result.video_kbps, result.audio_kbps = kbps[Stream.VIDEO], kbps[Stream.AUDIO]
            result.notes += notes
            if rig.tap.decode_errors or rig.tap.unreadable_stamps:
                result.notes.append(
                    f"{rig.tap.decode_errors} packets failed to decode, "
                    f"{rig.tap.unreadable_stamps} decoded frames had no readable stamp"
                )
        if links:
            progress(f"live first: {', '.join(map(str, links))} kbit/s links through a proxy")
            link_deadline = time.monotonic() + LINK_TIME_S + len(links) * link_live_s
            result.links, notes = measure_links(work / "links", links, link_live_s,
                                                preroll_wait_s, link_deadline, progress)
            result.notes += notes
        progress(f"encode CPU: {cpu_frames} frames, ours and the ffmpeg CLI")
        result.video_cpu, notes = measure_video_cpu(work, cpu_frames)
        result.notes += notes
        progress(f"Opus CPU: {cpu_frames / FPS:.0f} s, ours and the ffmpeg CLI")
        result.audio_cpu, notes = measure_audio_cpu(work, cpu_frames / FPS)
        result.notes += notes
    progress(f"done in {time.monotonic() - start:.0f} s")
    return result


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m harness.bench_media", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument(
        "--incidents", type=positive_int, default=DEFAULT_INCIDENTS,
        help=f"incidents (default {DEFAULT_INCIDENTS})",
    )  # fmt: skip
    parser.add_argument(
        "--live", type=float, default=DEFAULT_LIVE_S,
        help=f"seconds of live stream per incident (default {DEFAULT_LIVE_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-frames", type=positive_int, default=DEFAULT_CPU_FRAMES,
        help=f"frames for the encode-CPU comparison (default {DEFAULT_CPU_FRAMES})",
    )  # fmt: skip
    parser.add_argument("--encode-cpu", choices=["video", "audio"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.encode_cpu is not None:  # the child of _encode_in_child
        encode = _encode_video if args.encode_cpu == "video" else _encode_audio
        cpu, size = encode(args.dir, args.cpu_frames)
        print(f"{cpu:.6f} {size}")
        return 0
    if not 0.5 <= args.live <= 30:
        parser.error(f"--live must be between 0.5 and 30 seconds, not {args.live:g}")
    return run_and_print(
        "bench-media",
        lambda progress: run_media_bench(
            args.incidents, live_s=args.live, cpu_frames=args.cpu_frames, progress=progress
        ),
        format_table,
    )


if __name__ == "__main__":
    sys.exit(main())
