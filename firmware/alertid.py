"""Alert ids that a restarted kiosk can recognise as its own.

The outbox commit comes before the publish, so a crash cannot leave the control room with an
alert the outbox lacks — unless the commit failed (disk full, outbox in memory only) and the
alert was published anyway, as it must be. The room's receipt or ack then reaches a restarted
kiosk that has no record of the alert. To take that incident back, the kiosk must tell its
own recent alert from any other id (an old incident acked late, one from another state dir):

an alert id is an RFC 9562 version 8 UUID laid out as
    48 bits  press time, ms of CLOCK_MONOTONIC (comparable across process restarts in a boot)
    42 bits  random (12 + 30, around the version and variant bits)
    32 bits  HMAC-SHA256(key, boot_id | ms | random), truncated
where `key` is 32 random bytes kept in the state dir (`alert-id.key`, created at first start).
`pressed_mono()` returns the press time of an id made with this key during this boot, and None
for anything else (a foreign id passes by chance once in 2^32, and must then also carry a press
time of the last `stream_s`). Ids are unique: 42 random bits per ms, keys random per kiosk. The
room sees an ordinary UUID.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import uuid
from pathlib import Path

from pinkbutton.firmware.durable import write_atomic

log = logging.getLogger("pinkbutton.kiosk")

KEY_FILE = "alert-id.key"
_MS_MASK = (1 << 48) - 1
_RAND_BITS = 42
_TAG_BITS = 32


class AlertIds:
    def __init__(self, key: bytes, boot_id: str | None) -> None:
        self._key = key
        self._boot = (boot_id or "").encode()

    @classmethod
    def open(cls, state_dir: Path, boot_id: str | None) -> AlertIds:
        """The key of this state dir, created on first use. One that cannot be read or
        written gives a random key for this process only: alerts work as before, only an
        ack for an alert a crash took out of the outbox is not recognised after a restart."""
        path = Path(state_dir) / KEY_FILE
        try:
            key = path.read_bytes()
            if len(key) == 32:
                return cls(key, boot_id)
        except OSError:
            pass
        key = os.urandom(32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, key)
        except OSError as e:
            log.warning("alert ids will not be recognised after a restart: cannot write %s: %s",
                        path, e)
        return cls(key, boot_id)

    def _tag(self, ms: int, rand: int) -> int:
        msg = self._boot + b"|" + ms.to_bytes(6, "big") + rand.to_bytes(6, "big")
        digest = hmac.new(self._key, msg, hashlib.sha256).digest()
        return int.from_bytes(digest[:4], "big")

    def new(self, pressed_mono: float) -> str:
        ms = int(pressed_mono * 1000) & _MS_MASK
        rand = int.from_bytes(os.urandom(6), "big") & ((1 << _RAND_BITS) - 1)
        rand_a, rand_b = rand >> 30, rand & ((1 << 30) - 1)
        value = ((ms << 80) | (0x8 << 76) | (rand_a << 64) | (0b10 << 62) | (rand_b << 32)
                 | self._tag(ms, rand))
        return str(uuid.UUID(int=value))

    def pressed_mono(self, alert_id: str) -> float | None:
        """When an alert id this kiosk made during this boot was pressed (monotonic s)."""
        try:
            value = uuid.UUID(alert_id).int
        except (ValueError, TypeError, AttributeError):
            return None
        if (value >> 76) & 0xF != 0x8 or (value >> 62) & 0b11 != 0b10:
            return None
        ms = value >> 80
        rand = (((value >> 64) & 0xFFF) << 30) | ((value >> 32) & ((1 << 30) - 1))
        tag = value & ((1 << _TAG_BITS) - 1)
        if not hmac.compare_digest(tag.to_bytes(4, "big"), self._tag(ms, rand).to_bytes(4, "big")):
            return None
        return ms / 1000
