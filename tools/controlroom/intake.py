"""Per-device limits on alerts at the control room: one device cannot flood the room.

A device (a stolen certificate, a firmware bug, a stuck button wired wrong) that sends alerts
far faster than a kiosk ever does must neither become hundreds of incidents nor delay another
kiosk's press. What a kiosk sends on `alert` is a handful of messages per incident (the first
announcement, re-announcements every few seconds until the receipt, escalations every 30 s,
a replay of unconfirmed alerts after a restart), so the room gives every device a token
bucket on its alert messages (`IntakeLimits.rate_per_s`, `burst`) and decides per message,
before anything is decoded, on the MQTT network thread (cheap: a dict look-up):

- ACCEPT: within the device's budget: the normal alert path (decode, store, receipt, ack).
- FOLD: over it: queued for the fold path, which the room's run thread serves a batch at a
  time behind everything else it has to do, devices in turns, so another device's alert
  never waits for more than one batch. There a new alert_id is folded into the device's
  open incident (its `presses` go up, the alert is kept in the `folded` table and
  receipted, so a kiosk stops re-announcing it), and a repeat of an alert_id the room
  already has is dropped.
- DROP: over the budget with `max_pending` alerts of this device already waiting: not read
  at all (a real kiosk re-announces what was not receipted).

Once over its budget a device stays on the fold path until its bucket is full again and
nothing of it waits to be folded (at most `2 * burst / rate_per_s` seconds without alerts:
the debt is bounded), so a steady flood never gets another incident through. Each interval (`summary_s`) the room writes one line per flooding device
with what was folded and dropped (`FloodReport.line()`, device text escaped).

`DeviceLimiter` is pure (the caller passes `now`); `AlertIntake` is the thread-safe glue
between the network thread and the run thread.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pinkbutton.firmware import protocol as p
from pinkbutton.firmware import transport as t

FOLD_TURN = ("fold", None)  # inbox item: the run thread serves one batch of the fold path
FOLD_BATCH = 20


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    rate_per_s: float = 2.0  # alert messages per second a device may send on the normal path
    burst: int = 10  # ... and at once (a kiosk replaying its outbox after a restart)
    max_pending: int = 500  # over-budget alerts of one device waiting for the fold path
    summary_s: float = 10.0  # one summary line per flooding device per interval

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and self.burst >= 1 and self.max_pending >= 1
                and self.summary_s > 0):
            raise ValueError(f"invalid intake limits {self}")


class Decision(enum.Enum):
    ACCEPT = "accept"
    FOLD = "fold"
    DROP = "drop"


@dataclass(slots=True)
class FloodReport:
    """What one device sent over its budget during one summary interval."""

    device_id: str
    interval_s: float
    over: int = 0  # alert messages over the budget (folded, duplicates and dropped)
    folded: int = 0  # new alert_ids folded into an open incident
    incidents: int = 0  # ... or that became the incident (the device had none open)
    duplicates: int = 0  # alert_ids the room already had: dropped
    rejected: int = 0  # malformed: dropped
    dropped: int = 0  # not read: the fold queue was full
    into: str | None = None  # the incident folded into last

    def line(self) -> str:
        into = f" into incident {self.into[:8]}" if self.into else ""
        return (f"alert flood from {printable(self.device_id)}: {self.over} alerts over its "
                f"limit in {self.interval_s:.0f} s: {self.folded} folded{into}, "
                f"{self.incidents} new incidents, {self.duplicates} duplicates dropped, "
                f"{self.rejected} rejected, {self.dropped} dropped unread (queue full)")


def printable(text: str, limit: int = 80) -> str:
    """Device-supplied text for one log line: no control characters, bounded length."""
    out = "".join(c if c.isprintable() and c not in "\\" else c.encode("unicode_escape")
                  .decode("ascii") for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


@dataclass(slots=True)
class _Device:
    tokens: float
    last: float
    flooding: bool = False
    pending: int = 0


@dataclass
class DeviceLimiter:
    """Token bucket per device id; pure: every call gets `now` (monotonic seconds)."""

    limits: IntakeLimits = field(default_factory=IntakeLimits)
    _devices: dict[str, _Device] = field(default_factory=dict)
    _reports: dict[str, FloodReport] = field(default_factory=dict)
    _interval_start: float | None = None

    def decide(self, device_id: str, now: float) -> Decision:
        lim = self.limits
        if self._interval_start is None:
            self._interval_start = now
        d = self._devices.get(device_id)
        if d is None:
            d = self._devices[device_id] = _Device(tokens=float(lim.burst), last=now)
        d.tokens = min(float(lim.burst), d.tokens + max(0.0, now - d.last) * lim.rate_per_s)
        d.last = now
        if d.flooding and d.tokens >= lim.burst and d.pending == 0:
            d.flooding = False  # quiet for a whole bucket: back on the normal path
        # Every message costs a token; the debt is bounded, so recovery takes at most
        # 2 * burst / rate seconds of quiet.
        d.tokens = max(d.tokens - 1.0, -float(lim.burst))
        if not d.flooding and d.tokens >= 0.0:
            return Decision.ACCEPT
        d.flooding = True
        report = self._report(device_id)
        report.over += 1
        if d.pending >= lim.max_pending:
            report.dropped += 1
            return Decision.DROP
        d.pending += 1
        return Decision.FOLD

    def served(self, device_id: str, outcome: str, into: str | None = None) -> None:
        """The fold path handled one alert of the device: outcome is `folded`, `incidents`
        (it became the device's open incident), `duplicates` or `rejected`."""
        d = self._devices.get(device_id)
        if d is not None and d.pending > 0:
            d.pending -= 1
        report = self._report(device_id)
        setattr(report, outcome, getattr(report, outcome) + 1)
        if into is not None:
            report.into = into

    def pending(self, device_id: str) -> int:
        d = self._devices.get(device_id)
        return 0 if d is None else d.pending

    def summary(self, now: float) -> list[FloodReport]:
        """Once per `summary_s`: the devices that went over their budget in the interval
        (an empty list in between and when nobody did)."""
        if self._interval_start is None or now - self._interval_start < self.limits.summary_s:
            return []
        reports = sorted(self._reports.values(), key=lambda r: r.device_id)
        for r in reports:
            r.interval_s = now - self._interval_start
        self._reports = {}
        self._interval_start = now
        # Forget devices that are back to normal, so the table does not grow for ever.
        for dev in [k for k, d in self._devices.items()
                    if not d.flooding and d.pending == 0
                    and d.tokens + (now - d.last) * self.limits.rate_per_s >= self.limits.burst]:
            del self._devices[dev]
        return reports

    def _report(self, device_id: str) -> FloodReport:
        r = self._reports.get(device_id)
        if r is None:
            r = self._reports[device_id] = FloodReport(device_id, self.limits.summary_s)
        return r


class AlertIntake:
    """Routes the transport's events: alerts through the limiter, everything else straight
    to the inbox. `offer` runs on the MQTT network thread and only counts and enqueues."""

    def __init__(self, limits: IntakeLimits, monotonic: Callable[[], float],
                 wall: Callable[[], float], inbox_put: Callable[[object], None]) -> None:
        self.limiter = DeviceLimiter(limits)
        self._monotonic = monotonic
        self._wall = wall
        self._put = inbox_put
        self._lock = threading.Lock()
        # Fold queue: one FIFO per device, served in turns (a device whose queue is not
        # empty is in _turns once), so one flooding device's backlog never holds up another
        # device's over-budget alerts for more than one batch.
        self._queues: dict[str, deque[tuple[bytes, float]]] = {}
        self._turns: deque[str] = deque()
        self._scheduled = False

    def offer(self, event: object) -> None:
        if not (isinstance(event, t.Message) and event.topic.endswith("/alert")):
            self._put(event)
            return
        try:
            device_id = p.parse_topic(event.topic).device_id
        except p.ProtocolError:
            self._put(event)  # the normal path rejects it, with the reason
            return
        schedule = False
        with self._lock:
            decision = self.limiter.decide(device_id, self._monotonic())
            if decision is Decision.FOLD:
                q = self._queues.get(device_id)
                if q is None:
                    q = self._queues[device_id] = deque()
                    self._turns.append(device_id)
                q.append((event.payload, self._wall()))
                schedule, self._scheduled = not self._scheduled, True
        if decision is Decision.ACCEPT:
            self._put(event)
        elif decision is Decision.FOLD and schedule:
            self._put(FOLD_TURN)

    def take(self, n: int = FOLD_BATCH) -> tuple[list[tuple[str, bytes, float]], bool]:
        """Run thread: up to n queued (device_id, payload, received wall time) of the device
        whose turn it is, and whether more wait (then the caller puts FOLD_TURN back at the
        end of its inbox)."""
        with self._lock:
            if not self._turns:
                self._scheduled = False
                return [], False
            device_id = self._turns.popleft()
            q = self._queues[device_id]
            batch = [(device_id, *q.popleft()) for _ in range(min(n, len(q)))]
            if q:
                self._turns.append(device_id)  # its next batch after the other devices'
            else:
                del self._queues[device_id]
            more = bool(self._turns)
            self._scheduled = more
        return batch, more

    def served(self, device_id: str, outcome: str, into: str | None = None) -> None:
        with self._lock:
            self.limiter.served(device_id, outcome, into)

    def summary(self) -> list[FloodReport]:
        with self._lock:
            return self.limiter.summary(self._monotonic())
