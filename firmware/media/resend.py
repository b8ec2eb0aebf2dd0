"""Resender: answers the control room's `nack` from the local evidence store.

The room lists the media seqs it is missing; the recorded envelope messages of those seqs are
published again on the incident's own media topic, byte for byte as the first time, so the
room treats them like any other copy and de-duplicates by seq.

Live media comes first, always: a resend waits while the live sender has anything queued or
its in-flight window half full, has its own small window of unacknowledged messages (a slow
link slows it down by itself), and is capped by a token bucket (`rate_bytes_s`). The room asks
again for what is still missing, so a resend that gives up (publish error, shutdown) is safe.

After each request a report goes to `report(alert_id, detail)`: how many seqs were resent and
which were not recorded here at all (`unavailable`), so the room can stop asking for them.

Note on threads: `request` is called from the kiosk's state thread and `acked` from whoever
sees the PUBACK; both only take the lock. Reading the disk and publishing run on this class's
own thread ("media-resend"); `publish` is never called with the lock held.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from pinkbutton.firmware.media.localstore import LocalStore
from pinkbutton.hal.clock import Clock

log = logging.getLogger("pinkbutton.media.resend")

Publish = Callable[[str, bytes, int], int]
_EARLY_TTL_S = 5.0


class Resender:
    def __init__(
        self,
        publish: Publish,
        store: LocalStore,
        topic_for: Callable[[str], str],
        *,
        live_busy: Callable[[], bool] = lambda: False,
        report: Callable[[str, dict], None] = lambda alert_id, detail: None,
        rate_bytes_s: int = 128_000,
        max_inflight: int = 8,
        inflight_timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._publish = publish
        self.store = store
        self.topic_for = topic_for
        self.live_busy = live_busy
        self.report = report
        self.rate_bytes_s = rate_bytes_s
        self.max_inflight = max_inflight
        self.inflight_timeout_s = inflight_timeout_s
        self.clock = clock or Clock()
        self._cv = threading.Condition()
        self._requests: collections.deque[tuple[str, set[int]]] = collections.deque()
        self._queued: dict[str, set[int]] = {}  # seqs asked for and not yet handled
        self._inflight: dict[int, float] = {}  # mid -> sent at
        self._early: dict[int, float] = {}  # PUBACKs that beat publish() returning
        self._tokens = float(rate_bytes_s)
        self._refilled = self.clock.monotonic()
        self._closed = False
        self.resent = 0
        self._thread = threading.Thread(target=self._run, name="media-resend", daemon=True)
        self._thread.start()

    # -- other threads ---------------------------------------------------------------------

    def request(self, alert_id: str, ranges: tuple[tuple[int, int], ...]) -> None:
        with self._cv:
            queued = self._queued.setdefault(alert_id, set())
            wanted = {s for a, b in ranges for s in range(a, b + 1)} - queued
            if not wanted:
                return  # the room asked again for what is already on its way
            queued |= wanted
            self._requests.append((alert_id, wanted))
            self._cv.notify_all()

    def ack_if_inflight(self, mid: int) -> bool:
        """`acked` for a mid in flight; False, recording nothing, for any other."""
        with self._cv:
            return self._settle_inflight(mid)

    def acked(self, mid: int) -> bool:
        """True if `mid` was one of ours."""
        now = self.clock.monotonic()
        with self._cv:
            if self._settle_inflight(mid):
                return True
            if self._requests or self._inflight or self._busy:
                self._early[mid] = now
                while len(self._early) > 4 * self.max_inflight:
                    self._early.pop(next(iter(self._early)))
            return False

    def _settle_inflight(self, mid: int) -> bool:
        """(Lock held.) Frees `mid`'s window place if it is in flight."""
        if self._inflight.pop(mid, None) is None:
            return False
        self._cv.notify_all()
        return True

    def close(self, timeout: float = 2.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- resend thread -----------------------------------------------------------------------

    _busy = False

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closed or self._requests)
                if self._closed:
                    return
                alert_id, wanted = self._requests.popleft()
                self._busy = True
            try:
                self._serve(alert_id, wanted)
            except Exception:  # the thread must outlive one bad request
                log.exception("resend for %s failed", alert_id)
            finally:
                with self._cv:
                    self._busy = False
                    queued = self._queued.get(alert_id)
                    if queued is not None:
                        queued -= wanted
                        if not queued:
                            del self._queued[alert_id]

    def _serve(self, alert_id: str, wanted: set[int]) -> None:
        # The newest seqs may sit in the segment being written: seal it first.
        self.store.sync(alert_id)
        topic = self.topic_for(alert_id)
        found: set[int] = set()
        sent_bytes = 0
        complete = True
        for seq, messages in self.store.read(alert_id, wanted):
            found.add(seq)
            for message in messages:
                if not self._wait_turn(len(message)):
                    complete = False
                    break
                try:
                    mid = self._publish(topic, message, 1)
                except Exception as e:  # the transport's reason; the room will ask again
                    log.warning("resend of %s seq %d stopped: %s", alert_id, seq, e)
                    complete = False
                    break
                sent_bytes += len(message)
                with self._cv:
                    if self._early.pop(mid, None) is None:
                        self._inflight[mid] = self.clock.monotonic()
            if not complete:
                break
            self.resent += 1
        unavailable = _ranges(wanted - found) if complete else []
        log.info("resent %d of %d requested seqs of %s (%d bytes)%s", len(found), len(wanted),
                 alert_id, sent_bytes, f"; not recorded: {unavailable}" if unavailable else "")
        self.report(alert_id, {"alert_id": alert_id, "requested": len(wanted),
                               "resent": len(found) if complete else None,
                               "unavailable": [list(r) for r in unavailable[:64]]})

    def _wait_turn(self, size: int) -> bool:
        """Block until live media leaves room, the window has room and the token bucket
        allows `size` bytes; False when closing."""
        while True:
            with self._cv:
                if self._closed:
                    return False
                now = self.clock.monotonic()
                self._expire(now)
                self._tokens = min(
                    float(self.rate_bytes_s),
                    self._tokens + (now - self._refilled) * self.rate_bytes_s,
                )
                self._refilled = now
                ready = len(self._inflight) < self.max_inflight and (
                    self._tokens >= size or self._tokens >= self.rate_bytes_s
                )
                if ready and not self.live_busy():
                    self._tokens -= size
                    return True
                self._cv.wait(0.02)

    def _expire(self, now: float) -> None:
        # A PUBACK lost with a broker restart must not close the window for good.
        for mid, at in list(self._inflight.items()):
            if now - at > self.inflight_timeout_s:
                del self._inflight[mid]
        for mid, at in list(self._early.items()):
            if now - at > _EARLY_TTL_S:
                del self._early[mid]


def _ranges(seqs: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
