"""Live video and voice for the browser: fragmented MP4 over a WebSocket into Media Source
Extensions (static/live.js), H.264 + Opus exactly as the kiosk encoded them.

Three pieces, one concept (the live view of an incident's media):

- `LiveMux`: the evidence muxer (tools/controlroom/media.py `Evidence`: seq order, gaps, video
  from a keyframe, one frame grid, timestamps from the device's pts) writing into memory
  instead of a file, one fragment per packet (`frag_every_frame`: a picture is sent as soon
  as the next packet arrives, not a whole GOP later). `Fragmenter` cuts the bytes into the
  init segment (ftyp + moov) and media fragments (moof + mdat), and tells the fragments that
  begin with a video keyframe (where a viewer can start) from the others.
- `LiveHub`: what the receiver feeds (`feed`/`end`/`close`, the receiver's `viewer` hook).
  `feed` only puts the packet on a bounded queue (never blocks: when full the packet is
  dropped and the live view waits for the next keyframe, the evidence is not affected); one
  hub thread muxes and hands the fragments to the watchers. Per incident it keeps the init
  segment and the fragments from the first keyframe of the pre-roll (bounded by bytes: beyond
  it, from a later keyframe). A watcher gets the init segment and then the fragments from
  the first keyframe (`start`, and `auto` while the incident is young, so a viewer who opens
  the incident at the press sees the pre-roll) or from the newest keyframe (`live`, and
  `auto` later). Each watcher has its own bounded queue: a slow one is dropped, never the
  receiver slowed.
- `live_route(hub, authorize)`: a Starlette WebSocketRoute, `/live/{alert_id}?from=auto|start|
  live`. `authorize(websocket)` (the app's login check, may be async) decides first;
  refused -> closed with 1008. Messages: text `{"type": "stream", "mime": ..., "from": ...}`,
  then binary init segment and fragments; text `{"type": "end"}` when the incident's stream
  ended; `{"type": "dropped"}` and close code 1013 for a watcher that fell too far behind.

Note on threads: `feed`/`end`/`close` run on the receiver's run thread; muxing runs on the
"live-hub" thread; `watch`/`unwatch`/`Watcher.take` on the web server's event loop thread.
One lock guards the incidents and the watchers; muxing happens outside it.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import json
import logging
import queue
import re
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from pinkbutton.firmware.media.envelope import ReceivedPacket
from pinkbutton.firmware.media.packet import Stream
from pinkbutton.hal.clock import Clock
from pinkbutton.tools.controlroom.media import Evidence

log = logging.getLogger("pinkbutton.controlroom.live")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# One fragment per packet; an empty moov up front; fragment offsets from their own moof, as MSE
# wants them (ISO BMFF byte stream format).
LIVE_MOVFLAGS = "frag_every_frame+empty_moov+default_base_moof"
# LiveMux orders the two streams by capture time itself (see there): one stream's packets wait
# at most this much media time for the other's (an Opus frame is up to 60 ms, a picture at
# 5 fps 200 ms)...
HOLD_US = 300_000
# ...and the muxer's own interleaving stays on too (it holds a packet until every stream has
# one; 10 s by default, so a stopped stream must not hold the other that long): with it at
# 1 µs or 100 ms, under a CPU hog test_web_live's viewers fell 3-4 s behind in about half the
# runs (at 500 ms, as before LiveMux's ordering, none in 8). A stopped microphone therefore
# delays the pictures by up to about HOLD_US + MAX_INTERLEAVE_US.
MAX_INTERLEAVE_US = 500_000
ALERT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STARTS = ("auto", "start", "live")

_SAMPLE_NON_SYNC = 0x0001_0000  # ISO/IEC 14496-12 sample_flags: sample_is_non_sync_sample


# ---- fMP4 bytes ------------------------------------------------------------------------------


def _boxes(data: bytes | bytearray, start: int = 0, end: int | None = None
           ) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, box end) of each complete box in data[start:end]."""
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, i)
        header = 8
        if size == 1:  # 64-bit size
            if i + 16 > end:
                return
            size = struct.unpack_from(">Q", data, i + 8)[0]
            header = 16
        if size < header or i + size > end:
            return
        yield kind, i + header, i + size
        i += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, a, b in _boxes(data, start, end):
        if k == kind:
            return a, b
    return None


def codecs_of(init: bytes) -> tuple[int | None, str]:
    """(video track id or None, MIME type with the RFC 6381 codecs) of an init segment: the
    avc1 string comes from the avcC the muxer built from the kiosk's SPS."""
    video_track, codecs = None, []
    moov = _child(init, 0, len(init), b"moov")
    for kind, a, b in _boxes(init, *moov) if moov else ():
        if kind != b"trak":
            continue
        tkhd, mdia = _child(init, a, b, b"tkhd"), _child(init, a, b, b"mdia")
        if tkhd is None or mdia is None:
            continue
        version = init[tkhd[0]]
        track_id = struct.unpack_from(">I", init, tkhd[0] + (20 if version == 1 else 12))[0]
        hdlr = _child(init, *mdia, b"hdlr")
        handler = init[hdlr[0] + 8 : hdlr[0] + 12] if hdlr else b""
        body = init[a:b]
        if handler == b"vide" and (at := body.find(b"avcC")) >= 0:
            video_track = track_id
            codecs.append("avc1." + body[at + 5 : at + 8].hex())  # profile, flags, level
        elif handler == b"soun" and b"Opus" in body:
            codecs.append("opus")
    return video_track, f'video/mp4; codecs="{",".join(codecs)}"'


def starts_with_keyframe(moof: bytes, video_track: int | None) -> bool:
    """Whether a fragment can start playback: its video run begins with a sync sample (a
    fragment without video counts only when the stream has no video at all)."""
    if video_track is None:
        return True
    for kind, a, b in _boxes(moof, 8):
        if kind != b"traf":
            continue
        tfhd, trun = _child(moof, a, b, b"tfhd"), _child(moof, a, b, b"trun")
        if tfhd is None or trun is None:
            continue
        tf_flags = int.from_bytes(moof[tfhd[0] + 1 : tfhd[0] + 4], "big")
        if struct.unpack_from(">I", moof, tfhd[0] + 4)[0] != video_track:
            continue
        default = None
        at = tfhd[0] + 8
        for bit, size in ((0x01, 8), (0x02, 4), (0x08, 4), (0x10, 4)):
            at += size if tf_flags & bit else 0
        if tf_flags & 0x20:
            default = struct.unpack_from(">I", moof, at)[0]
        tr_flags = int.from_bytes(moof[trun[0] + 1 : trun[0] + 4], "big")
        at = trun[0] + 8 + (4 if tr_flags & 0x01 else 0)
        if tr_flags & 0x04:
            flags = struct.unpack_from(">I", moof, at)[0]
        elif tr_flags & 0x400:
            at += (4 if tr_flags & 0x100 else 0) + (4 if tr_flags & 0x200 else 0)
            flags = struct.unpack_from(">I", moof, at)[0]
        else:
            flags = default
        return flags is not None and not flags & _SAMPLE_NON_SYNC
    return False


@dataclass(frozen=True)
class Fragment:
    data: bytes  # moof + mdat
    key: bool  # playback can start here


class Fragmenter:
    """The muxer's output file: collects the bytes and cuts them into the init segment and
    fragments. Not thread-safe: the hub thread writes and takes."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.init: bytes | None = None
        self.video_track: int | None = None
        self.mime = ""
        self._pre_init = b""  # ftyp (and whatever else) before the moov
        self._moof: bytes | None = None
        self._out: list[Fragment] = []

    def write(self, data: bytes) -> int:
        self._buf += data
        while True:
            box = next(_boxes(self._buf), None)
            if box is None:
                return len(data)
            kind, _, end = box
            raw = bytes(self._buf[:end])
            del self._buf[:end]
            if self.init is None:
                self._pre_init += raw
                if kind == b"moov":
                    self.init = self._pre_init
                    self.video_track, self.mime = codecs_of(self.init)
            elif kind == b"moof":
                self._moof = raw
            elif kind == b"mdat" and self._moof is not None:
                self._out.append(Fragment(self._moof + raw,
                                          starts_with_keyframe(self._moof, self.video_track)))
                self._moof = None
            # anything else after the init (an mfra at the end) is not for a live viewer

    def take(self) -> list[Fragment]:
        out, self._out = self._out, []
        return out


class LiveMux(Evidence):
    """The evidence muxer (reorder, gaps, keyframes, frame grid, device pts) into memory, one
    fragment per packet. `fragments.init` and `fragments.take()` are the output.

    Packets reach the muxer in capture order across the two streams. The kiosk sends an Opus
    packet when its frame is complete (20-60 ms after its first sample: media.audio_frame_ms),
    so in seq order it follows the pictures captured meanwhile. With `frag_every_frame`,
    FFmpeg's MP4 muxer gives a picture whose fragment is cut by an earlier-captured audio
    packet a duration of 0; the browser's Media Source then sees a decode discontinuity at the
    next picture and drops every picture up to the next keyframe (seen with 60 ms frames:
    about one picture a second shown). So a packet waits until the other stream's media
    reaches past its capture time (the Opus frame that covers a picture, the picture that
    covers an audio frame: what comes next of either stream is captured later), at most
    HOLD_US of one stream's media (a microphone that stops must not stop the pictures)."""

    def __init__(self, alert_id: str, *, reorder_window: int = 32,
                 clock: Clock | None = None) -> None:
        super().__init__(Path(f"live-{alert_id}"), reorder_window=reorder_window,
                         clock=clock or Clock(), alert_id=alert_id)
        self.fragments = Fragmenter()
        self._held: list[ReceivedPacket] = []  # capture order (pts)
        self._reach: dict[Stream, int] = {}  # per stream: the end of its newest packet

    def _write(self, rp: ReceivedPacket) -> None:
        if self._video is None or self._audio is None:  # one stream: nothing to interleave
            super()._write(rp)
            return
        stream = rp.packet.stream
        end = rp.pts_us + max(rp.packet.duration_us, 0)
        self._reach[stream] = max(self._reach.get(stream, end), end)
        bisect.insort(self._held, rp, key=lambda r: r.pts_us)
        held = self._held
        while held:
            first = held[0]
            other = Stream.AUDIO if first.packet.stream is Stream.VIDEO else Stream.VIDEO
            if (self._reach.get(other, first.pts_us) <= first.pts_us
                    and held[-1].pts_us - first.pts_us <= HOLD_US):
                break
            super()._write(held.pop(0))

    def _flush_writes(self) -> None:
        held, self._held = self._held, []
        for rp in held:
            super()._write(rp)

    def _open_container(self) -> Any:
        return av.open(self.fragments, "w", format="mp4",
                       options={"movflags": LIVE_MOVFLAGS, "flush_packets": "1",
                                "max_interleave_delta": str(MAX_INTERLEAVE_US)})


# ---- watchers --------------------------------------------------------------------------------

Item = tuple[str, "str | bytes"]  # ("text", json) or ("bytes", fMP4)


class Watcher:
    """One browser's queue. `wake()` is supplied by the web side and must be callable from any
    thread (e.g. loop.call_soon_threadsafe(event.set))."""

    def __init__(self, alert_id: str, start: str, wake: Callable[[], None],
                 max_bytes: int) -> None:
        self.alert_id = alert_id
        self.start = start
        self.max_bytes = max_bytes
        self._wake = wake
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.has_init = False
        self.dropped = False  # fell more than max_bytes behind
        self.finished = False  # nothing more will come

    def push(self, items: list[Item], *, finish: bool = False, backlog: bool = False) -> None:
        """Queue items; `backlog` (what a new watcher starts with) is not held against the
        bound, which is for falling behind the live stream."""
        with self._lock:
            if self.finished:
                return
            for item in items:
                self._items.append(item)
                if not backlog:
                    self._bytes += len(item[1])
            if self._bytes > self.max_bytes:
                self.dropped = self.finished = True
                self._items.clear()
                self._items.append(("text", json.dumps({"type": "dropped",
                                                        "reason": "too far behind"})))
            self.finished |= finish
        self._wake()

    def take(self) -> list[Item]:
        with self._lock:
            out = list(self._items)
            self._items.clear()
            self._bytes = 0
            return out

    @property
    def done(self) -> bool:
        """Finished and everything taken."""
        with self._lock:
            return self.finished and not self._items


# ---- the hub ---------------------------------------------------------------------------------


@dataclass
class _Incident:
    alert_id: str
    mux: LiveMux | None = None
    init: bytes | None = None
    mime: str = ""
    fragments: deque[Fragment] = field(default_factory=deque)  # from a keyframe on
    retained: int = 0
    first_media_at: float | None = None  # monotonic
    audio_frame_us: int | None = None  # the kiosk's Opus frame (media.audio_frame_ms)
    last_activity: float = 0.0
    ended: bool = False
    watchers: set[Watcher] = field(default_factory=set)

    def newest_key(self) -> int:
        for i in range(len(self.fragments) - 1, -1, -1):
            if self.fragments[i].key:
                return i
        return 0


class LiveHub:
    """Fans each incident's live fMP4 out to browser watchers. The receiver's `viewer` hook:
    `ControlRoomReceiver(..., viewer=hub)` calls `feed`, `end` and `close`."""

    def __init__(self, *, queue_packets: int = 4_000, retain_bytes: int = 32 << 20,
                 watcher_bytes: int = 4 << 20, early_s: float = 15.0,
                 linger_s: float = 120.0, idle_s: float = 600.0, max_incidents: int = 64,
                 clock: Clock | None = None) -> None:
        self.retain_bytes = retain_bytes
        self.watcher_bytes = watcher_bytes
        self.early_s = early_s
        self.linger_s = linger_s
        self.idle_s = idle_s
        self.max_incidents = max_incidents
        self.clock = clock or Clock()
        self.dropped_packets = 0  # fed while the hub's queue was full
        self._queue: queue.Queue = queue.Queue(maxsize=queue_packets)
        self._lock = threading.Lock()
        self._incidents: dict[str, _Incident] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="live-hub", daemon=True)
        self._thread.start()

    # -- the receiver's side (its run thread): never blocks ------------------------------------

    def feed(self, alert_id: str, rp: ReceivedPacket) -> None:
        try:
            self._queue.put_nowait(("feed", alert_id, rp))
        except queue.Full:
            if self.dropped_packets % 500 == 0:
                log.warning("live view behind: dropping media packets (%d so far)",
                            self.dropped_packets + 1)
            self.dropped_packets += 1

    def end(self, alert_id: str) -> None:
        self._put(("end", alert_id, None))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._put(("stop", "", None))
            self._thread.join(10)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything fed so far has been muxed and handed out (tests, shutdown)."""
        done = threading.Event()
        self._put(("sync", "", done))
        return done.wait(timeout)

    def _put(self, item: tuple) -> None:
        try:
            self._queue.put(item, timeout=5)  # not media: waits for room rather than be lost
        except queue.Full:
            log.error("live view: hub queue stuck, %s for %s lost", item[0], item[1])

    # -- the web side -----------------------------------------------------------------------

    def watch(self, alert_id: str, start: str, wake: Callable[[], None]) -> Watcher:
        """A new watcher of `alert_id`; `start` is auto, start or live (see the module doc)."""
        if start not in STARTS:
            raise ValueError(f"from must be one of {', '.join(STARTS)}, not {start!r}")
        with self._lock:
            inc = self._incident(alert_id)
            if start == "auto":
                young = (inc.first_media_at is None
                         or self.clock.monotonic() - inc.first_media_at <= self.early_s)
                start = "start" if young and not inc.ended else "live"
            w = Watcher(alert_id, start, wake, self.watcher_bytes)
            backlog: list[Item] = []
            if inc.init is not None:
                first = 0 if start == "start" else inc.newest_key()
                w.has_init = True
                backlog = [self._header(inc, start), ("bytes", inc.init),
                           *(("bytes", f.data) for f in list(inc.fragments)[first:])]
            if inc.ended:
                backlog.append(("text", json.dumps({"type": "end"})))
            if backlog:
                w.push(backlog, finish=inc.ended, backlog=True)
            if not w.finished:
                inc.watchers.add(w)
            return w

    def unwatch(self, w: Watcher) -> None:
        with self._lock:
            inc = self._incidents.get(w.alert_id)
            if inc is not None:
                inc.watchers.discard(w)
                if inc.first_media_at is None and not inc.watchers:
                    del self._incidents[w.alert_id]  # watched, never fed

    def stats(self, alert_id: str) -> dict:
        with self._lock:
            inc = self._incidents.get(alert_id)
            if inc is None:
                return {}
            return {"mime": inc.mime, "fragments": len(inc.fragments),
                    "retained_bytes": inc.retained, "watchers": len(inc.watchers),
                    "ended": inc.ended}

    # -- the hub thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                kind, alert_id, rp = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._expire()
                continue
            try:
                if kind == "stop":
                    break
                if kind == "feed":
                    self._feed(alert_id, rp)
                elif kind == "end":
                    self._end(alert_id)
                elif kind == "sync":
                    rp.set()
            except Exception:  # one bad packet must not end the live view
                log.exception("live view of %s: internal error", alert_id)
        with self._lock:
            ids = list(self._incidents)
        for alert_id in ids:
            self._end(alert_id)

    def _feed(self, alert_id: str, rp: ReceivedPacket) -> None:
        with self._lock:
            inc = self._incident(alert_id)
            now = self.clock.monotonic()
            inc.last_activity = now
            if inc.ended:
                return  # stragglers after the end
            if inc.first_media_at is None:
                inc.first_media_at = now
            if inc.audio_frame_us is None and rp.packet.stream is Stream.AUDIO:
                inc.audio_frame_us = rp.packet.duration_us
            if inc.mux is None:
                inc.mux = LiveMux(alert_id, clock=self.clock)
            mux = inc.mux
        mux.feed(rp)  # outside the lock: the web side never waits for PyAV
        self._publish(inc, mux)

    def _end(self, alert_id: str) -> None:
        with self._lock:
            inc = self._incidents.get(alert_id)
            if inc is None or inc.ended:
                return
            mux, inc.mux = inc.mux, None
        if mux is not None:
            mux.close()  # writes what waited for a missing seq
            self._publish(inc, mux)
        with self._lock:
            inc.ended = True
            inc.last_activity = self.clock.monotonic()
            for w in inc.watchers:
                w.push([("text", json.dumps({"type": "end"}))], finish=True)
            inc.watchers.clear()

    def _publish(self, inc: _Incident, mux: LiveMux) -> None:
        out = mux.fragments
        fresh = out.take()
        with self._lock:
            if inc.init is None and out.init is not None:
                inc.init, inc.mime = out.init, out.mime
                for w in inc.watchers:  # waiting since before the first media
                    w.has_init = True
                    w.push([self._header(inc, w.start), ("bytes", inc.init)])
            for f in fresh:
                if not inc.fragments and not f.key:
                    continue  # cannot start a viewer (the muxer starts video at a keyframe)
                inc.fragments.append(f)
                inc.retained += len(f.data)
            self._trim(inc)
            if fresh:
                items: list[Item] = [("bytes", f.data) for f in fresh]
                for w in list(inc.watchers):
                    w.push(items)
                    if w.dropped:
                        inc.watchers.discard(w)
                        log.info("live view of %s: a viewer fell too far behind, dropped",
                                 inc.alert_id)

    def _trim(self, inc: _Incident) -> None:
        """Keep the retained fragments under retain_bytes, always from a keyframe."""
        while inc.retained > self.retain_bytes:
            nxt = next((i for i, f in enumerate(inc.fragments) if i and f.key), None)
            if nxt is None:
                return  # one GOP: the newest keyframe is the live edge, kept
            for _ in range(nxt):
                inc.retained -= len(inc.fragments.popleft().data)

    def _incident(self, alert_id: str) -> _Incident:
        inc = self._incidents.get(alert_id)
        if inc is None:
            if len(self._incidents) >= self.max_incidents:
                self._evict_oldest()
            inc = self._incidents[alert_id] = _Incident(
                alert_id, last_activity=self.clock.monotonic())
        return inc

    def _evict_oldest(self) -> None:
        oldest = min(self._incidents.values(), key=lambda i: (not i.ended, i.last_activity))
        self._drop(oldest)

    def _drop(self, inc: _Incident) -> None:
        # Its muxer is left to the garbage collector: the hub thread may be using it now.
        self._incidents.pop(inc.alert_id, None)
        for w in inc.watchers:
            w.push([("text", json.dumps({"type": "end"}))], finish=True)

    def _expire(self) -> None:
        """Ended incidents after linger_s; silent ones (no stream_end came) after idle_s."""
        now = self.clock.monotonic()
        with self._lock:
            old = [i for i in self._incidents.values()
                   if (i.ended and now - i.last_activity > self.linger_s)
                   or (i.first_media_at is not None and now - i.last_activity > self.idle_s)]
            for inc in old:
                self._drop(inc)

    @staticmethod
    def _header(inc: _Incident, start: str) -> Item:
        head: dict[str, Any] = {"type": "stream", "alert_id": inc.alert_id, "mime": inc.mime,
                                "from": start}
        if inc.audio_frame_us:  # the player keeps further from the edge for longer frames
            head["audio_frame_ms"] = round(inc.audio_frame_us / 1000)
        return ("text", json.dumps(head))


# ---- the WebSocket route ---------------------------------------------------------------------

Authorize = Callable[[Any], "bool | Awaitable[bool]"]


def live_route(hub: LiveHub, authorize: Authorize, path: str = "/live/{alert_id}") -> Any:
    """A Starlette WebSocketRoute serving `hub` at `path` (which must have `{alert_id}`)."""
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def endpoint(websocket: WebSocket) -> None:
        allowed = authorize(websocket)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            await websocket.close(code=1008)  # policy violation: not logged in
            return
        alert_id = websocket.path_params.get("alert_id", "")
        start = websocket.query_params.get("from", "auto")
        if not ALERT_ID.match(alert_id) or start not in STARTS:
            await websocket.close(code=1008, reason="bad alert id or from")
            return
        await websocket.accept()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:
                pass  # the server's loop is gone

        watcher = hub.watch(alert_id, start, wake)
        # The browser sends nothing; reading still tells when it went away.
        gone = asyncio.ensure_future(websocket.receive())
        try:
            while True:
                waiting = asyncio.ensure_future(ready.wait())
                await asyncio.wait({gone, waiting}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    waiting.cancel()
                    if gone.result().get("type") == "websocket.disconnect":
                        return
                    gone = asyncio.ensure_future(websocket.receive())  # ignore what it said
                    continue
                ready.clear()
                for _kind, payload in watcher.take():
                    if isinstance(payload, bytes):
                        await websocket.send_bytes(payload)
                    else:
                        await websocket.send_text(payload)
                if watcher.done:
                    await websocket.close(code=1013 if watcher.dropped else 1000)
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            gone.cancel()
            hub.unwatch(watcher)

    return WebSocketRoute(path, endpoint)
