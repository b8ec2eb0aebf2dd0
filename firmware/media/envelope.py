"""The binary media envelope: one MQTT message on pinkbutton/v1/dev/{device}/media/{alert_id}.

Big-endian header (38 bytes) then a payload chunk:
  magic b"PB" | version | stream | flags (bit0 keyframe, bit1 pre-roll) | reserved |
  chunk_index | chunk_count | seq | capture_us | pts_us | duration_us | payload_len | payload
A message is at most MAX_MESSAGE bytes; bigger packets (keyframes) are split into chunks
sharing one seq. seq counts media packets per alert across both streams, so gaps are visible.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict
from dataclasses import dataclass

from pinkbutton.firmware.media.packet import EncodedPacket, Stream

log = logging.getLogger(__name__)

MEDIA_MAGIC = b"PB"
MEDIA_VERSION = 1
MAX_MESSAGE = 65536
HEADER = struct.Struct(">2sBBBBHHIQqII")
MAX_CHUNK_PAYLOAD = MAX_MESSAGE - HEADER.size

FLAG_KEYFRAME = 0x01
FLAG_PREROLL = 0x02


class MediaError(ValueError):
    """A media message that cannot be used; the message is a one-line reason."""


@dataclass(frozen=True)
class MediaEnvelope:
    stream: Stream
    keyframe: bool
    preroll: bool
    chunk_index: int
    chunk_count: int
    seq: int
    capture_us: int
    pts_us: int
    duration_us: int
    payload: bytes


@dataclass(frozen=True)
class ReceivedPacket:
    """A whole media packet as reassembled at the receiver."""

    seq: int
    packet: EncodedPacket  # pts_us here is the device capture time (capture_us)
    pts_us: int  # relative to the incident's media origin
    preroll: bool


def encode_packet(
    pkt: EncodedPacket, seq: int, origin_us: int, preroll: bool = False,
    chunk_payload: int | None = None,
) -> list[bytes]:
    """The messages carrying `pkt` (one, or several chunks when it exceeds MAX_MESSAGE, or
    `chunk_payload` bytes when given)."""
    data = pkt.data
    size = min(chunk_payload or MAX_CHUNK_PAYLOAD, MAX_CHUNK_PAYLOAD)
    count = max(1, -(-len(data) // size))
    if count > 0xFFFF:
        raise ValueError(f"media packet of {len(data)} bytes is too big to envelope")
    flags = (FLAG_KEYFRAME if pkt.keyframe else 0) | (FLAG_PREROLL if preroll else 0)
    messages = []
    for index in range(count):
        chunk = data[index * size : (index + 1) * size]
        header = HEADER.pack(
            MEDIA_MAGIC,
            MEDIA_VERSION,
            int(pkt.stream),
            flags,
            0,
            index,
            count,
            seq,
            pkt.pts_us,
            pkt.pts_us - origin_us,
            pkt.duration_us,
            len(chunk),
        )
        messages.append(header + chunk)
    return messages


def decode_envelope(data: bytes) -> MediaEnvelope:
    """Parse one message; raises MediaError with a one-line reason for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MediaError(f"media message must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE:
        raise MediaError(f"media message oversize: {len(data)} bytes > {MAX_MESSAGE}")
    if len(data) < HEADER.size:
        raise MediaError(f"media message too short: {len(data)} bytes < {HEADER.size}-byte header")
    (magic, version, stream, flags, _reserved, index, count, seq, capture_us, pts_us, duration_us,
     payload_len) = HEADER.unpack_from(data)  # fmt: skip
    if magic != MEDIA_MAGIC:
        raise MediaError(f"bad media magic {magic!r}")
    if version != MEDIA_VERSION:
        raise MediaError(f"unknown media version {version}")
    if stream not in (Stream.VIDEO, Stream.AUDIO):
        raise MediaError(f"unknown media stream {stream}")
    if payload_len != len(data) - HEADER.size:
        raise MediaError(
            f"media length mismatch: header says {payload_len}, got {len(data) - HEADER.size}"
        )
    if count == 0 or index >= count:
        raise MediaError(f"bad chunk numbering: index {index} of {count}")
    return MediaEnvelope(
        stream=Stream(stream),
        keyframe=bool(flags & FLAG_KEYFRAME),
        preroll=bool(flags & FLAG_PREROLL),
        chunk_index=index,
        chunk_count=count,
        seq=seq,
        capture_us=capture_us,
        pts_us=pts_us,
        duration_us=duration_us,
        payload=data[HEADER.size :],
    )


class _Partial:
    __slots__ = ("first", "chunks", "size")

    def __init__(self, first: MediaEnvelope) -> None:
        self.first = first
        self.chunks: dict[int, bytes] = {}
        self.size = 0


class Reassembler:
    """Joins chunks back into packets, in any arrival order; duplicates are ignored.

    Bounded: incomplete packets more than `max_seq_window` seqs behind the newest seen, or
    beyond `max_pending_bytes` in total, are dropped (and logged). One per alert.
    """

    def __init__(self, max_seq_window: int = 256, max_pending_bytes: int = 4 * 1024 * 1024) -> None:
        self.max_seq_window = max_seq_window
        self.max_pending_bytes = max_pending_bytes
        self._pending: OrderedDict[int, _Partial] = OrderedDict()
        self._pending_bytes = 0
        self._done: OrderedDict[int, None] = OrderedDict()  # recently completed seqs
        self._newest_seq = -1
        self.dropped_incomplete = 0
        self.duplicates = 0
        self.late = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def add(self, env: MediaEnvelope) -> ReceivedPacket | None:
        """The whole packet when `env` completes it, else None."""
        if env.seq in self._done:
            self.duplicates += 1
            return None
        if env.seq < self._newest_seq - self.max_seq_window:
            self.late += 1  # its siblings (if any) were already dropped
            return None
        self._newest_seq = max(self._newest_seq, env.seq)
        if env.chunk_count == 1:
            self._remember_done(env.seq)
            return self._packet(env, env.payload)
        part = self._pending.get(env.seq)
        if part is None:
            part = self._pending[env.seq] = _Partial(env)
        elif _shape(part.first) != _shape(env):
            raise MediaError(
                f"chunk {env.chunk_index} of seq {env.seq} disagrees with its siblings"
            )
        if env.chunk_index in part.chunks:
            self.duplicates += 1
            return None
        part.chunks[env.chunk_index] = env.payload
        part.size += len(env.payload)
        self._pending_bytes += len(env.payload)
        if len(part.chunks) == env.chunk_count:
            self._forget(env.seq)
            self._remember_done(env.seq)
            payload = b"".join(part.chunks[i] for i in range(env.chunk_count))
            return self._packet(part.first, payload)
        self._evict()
        return None

    def _evict(self) -> None:
        horizon = self._newest_seq - self.max_seq_window
        for seq in [s for s in self._pending if s < horizon]:
            self._drop(seq, "too far behind")
        while self._pending_bytes > self.max_pending_bytes and self._pending:
            self._drop(min(self._pending), "over the reassembly memory bound")

    def _drop(self, seq: int, why: str) -> None:
        part = self._forget(seq)
        self.dropped_incomplete += 1
        log.warning(
            "media seq %d dropped incomplete (%d of %d chunks): %s",
            seq,
            len(part.chunks),
            part.first.chunk_count,
            why,
        )

    def _forget(self, seq: int) -> _Partial:
        part = self._pending.pop(seq)
        self._pending_bytes -= part.size
        return part

    def _remember_done(self, seq: int) -> None:
        self._done[seq] = None
        while len(self._done) > self.max_seq_window:
            self._done.popitem(last=False)

    @staticmethod
    def _packet(env: MediaEnvelope, payload: bytes) -> ReceivedPacket:
        pkt = EncodedPacket(env.stream, payload, env.capture_us, env.duration_us, env.keyframe)
        return ReceivedPacket(env.seq, pkt, env.pts_us, env.preroll)


def _shape(env: MediaEnvelope) -> tuple:
    return (env.stream, env.keyframe, env.preroll, env.chunk_count, env.capture_us, env.pts_us)
