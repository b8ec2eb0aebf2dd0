"""The receiver's run-thread queue: alerts never wait behind video.

Everything the network thread, the keyboard and the limiter hand the run thread goes into one
of two lanes. The bulk lane is media and the evidence events that must stay in order with it
(`stream_end`, `backfill`); the urgent lane is everything else (alerts, device events,
statuses, operator commands, the limiter's turns). `get()` returns the oldest urgent item
while there is one, else the oldest bulk item: each lane stays in its own order, and an alert
that arrives while twenty streams' packets wait is handled next, not after them.

Measured before this existed (`pinkbutton-sim load`, 100 idle + 20 streaming kiosks on one
2-core machine, 60 s): the single FIFO fell behind the streams and press -> received grew
to p50 1 s / p95 12 s; the media it holds is still recorded, later.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable


class Inbox:
    """Two FIFO lanes; `is_bulk(item)` picks the lane (called on the putting thread)."""

    def __init__(self, is_bulk: Callable[[object], bool]) -> None:
        self._is_bulk = is_bulk
        self._cv = threading.Condition(threading.Lock())
        self._urgent: collections.deque[object] = collections.deque()
        self._bulk: collections.deque[object] = collections.deque()

    def put(self, item: object) -> None:
        with self._cv:
            (self._bulk if self._is_bulk(item) else self._urgent).append(item)
            self._cv.notify()

    def get(self, timeout: float | None = None) -> object:
        """The next item, urgent first; raises queue.Empty after `timeout` s of nothing."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._urgent or self._bulk, timeout):
                raise queue.Empty
            return (self._urgent or self._bulk).popleft()

    def empty(self) -> bool:
        with self._cv:
            return not (self._urgent or self._bulk)

    def sizes(self) -> tuple[int, int]:
        """(urgent, bulk) items waiting."""
        with self._cv:
            return len(self._urgent), len(self._bulk)
