"""Which kiosks are alive: the control room's link supervision, as pure bookkeeping.

Inputs are heartbeats (`health`), the retained `status` (including the broker's Last Will)
and the passage of time (`tick`); outputs are `Notice`s for the operator. No I/O, no threads:
the receiver's run thread owns a DeviceMonitor and passes `now` (monotonic seconds).

Rules:
- A device that has sent a heartbeat is OFFLINE once nothing (heartbeat or online status)
  has been heard for 2 of *its own* heartbeat intervals plus `grace_s`. Each heartbeat
  carries its sender's interval, so kiosks with different settings are judged fairly.
- An offline status (Last Will or a clean goodbye) marks it offline at once.
- A *retained* online status (replayed by the broker when the room subscribes) is a stored
  fact, not a sign of life: it introduces an unknown device but never revives one whose
  heartbeats stopped (its Last Will may simply not have fired yet).
- A device known only from its online status (firmware without heartbeats) stays online
  until its status says otherwise: there is no interval to judge it by.
- When an offline device is heard from again, a "back" notice says how long it was gone:
  since its last sign of life when heartbeats stopped, since the offline status otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from pinkbutton.firmware.protocol import Health
from pinkbutton.hal.clock import Clock

MISSED_BEATS = 2
DEFAULT_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # offline | online | back
    device_id: str
    reason: str
    at: float  # monotonic seconds when the monitor decided this
    gone_s: float | None = None  # back: how long it was gone; offline: silent for

    @property
    def text(self) -> str:
        if self.kind == "back":
            return f"{self.device_id} back online after {format_duration(self.gone_s or 0.0)}"
        if self.kind == "offline":
            return f"{self.device_id} OFFLINE: {self.reason}"
        return f"{self.device_id} online ({self.reason})"


@dataclass(frozen=True, slots=True)
class DeviceView:
    device_id: str
    online: bool | None  # None: heard of (e.g. a stale heartbeat) but state not known yet
    last_heartbeat: float | None  # monotonic, when the room received it
    interval_s: float | None
    state: str | None
    faults: tuple[str, ...]
    temperature_c: float | None
    queue_depth: int | None
    disk_free_mb: float | None
    uptime_s: float | None
    firmware: str | None
    offline_since: float | None
    offline_reason: str | None


@dataclass(slots=True)
class _Device:
    online: bool | None = None
    last_seen: float | None = None  # last sign of life: heartbeat or online status
    last_heartbeat: float | None = None
    health: Health | None = None
    state: str | None = None
    offline_since: float | None = None
    offline_reason: str | None = None


class DeviceMonitor:
    def __init__(self, clock: Clock, *, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.clock = clock
        self.grace_s = grace_s
        self._devices: dict[str, _Device] = {}

    def heartbeat(self, health: Health, now: float | None = None) -> list[Notice]:
        now = self._now(now)
        d = self._devices.setdefault(health.device_id, _Device())
        old = d.health
        if old is not None and health.seq == old.seq and health.uptime_s == old.uptime_s:
            return []  # the very same heartbeat again (a second route to us): not news
        d.health, d.last_heartbeat, d.state = health, now, health.state
        return self._alive(health.device_id, d, now, "heartbeat")

    def status(self, device_id: str, online: bool, now: float | None = None,
               state: str | None = None, retained: bool = False) -> list[Notice]:
        now = self._now(now)
        d = self._devices.setdefault(device_id, _Device())
        if state is not None:
            d.state = state
        if online:
            if retained and d.online is not None:
                return []  # replayed, not heard just now: no news about a known device
            return self._alive(device_id, d, now, "status online")
        if d.online is False:
            return []
        reason = "offline status (Last Will or shutdown)"
        return self._went_offline(device_id, d, now, since=now, reason=reason)

    def tick(self, now: float | None = None) -> list[Notice]:
        now = self._now(now)
        notices: list[Notice] = []
        for device_id, d in sorted(self._devices.items()):
            deadline = self._deadline(d)
            if d.online and deadline is not None and now > deadline:
                assert d.health is not None and d.last_seen is not None  # else no deadline
                interval = d.health.interval_s
                silent = now - d.last_seen
                reason = (f"no heartbeat for {format_duration(silent)} "
                          f"({MISSED_BEATS} missed, every {format_duration(interval)})")
                notices += self._went_offline(device_id, d, now, since=d.last_seen, reason=reason)
        return notices

    def next_deadline(self) -> float | None:
        """When `tick` could next mark a device offline (for the owner's wait timeout)."""
        due = [self._deadline(d) for d in self._devices.values() if d.online]
        due = [t for t in due if t is not None]
        return min(due) if due else None

    def devices(self) -> list[DeviceView]:
        return [self._view(device_id, d) for device_id, d in sorted(self._devices.items())]

    def device(self, device_id: str) -> DeviceView | None:
        d = self._devices.get(device_id)
        return None if d is None else self._view(device_id, d)

    # -- internals -------------------------------------------------------------

    @staticmethod
    def _view(device_id: str, d: _Device) -> DeviceView:
        h = d.health
        return DeviceView(
            device_id=device_id, online=d.online, last_heartbeat=d.last_heartbeat,
            interval_s=h.interval_s if h else None, state=d.state,
            faults=h.faults if h else (), temperature_c=h.temperature_c if h else None,
            queue_depth=h.queue_depth if h else None,
            disk_free_mb=h.disk_free_mb if h else None,
            uptime_s=h.uptime_s if h else None, firmware=h.firmware if h else None,
            offline_since=d.offline_since, offline_reason=d.offline_reason,
        )

    def _now(self, now: float | None) -> float:
        return self.clock.monotonic() if now is None else now

    def _deadline(self, d: _Device) -> float | None:
        if d.health is None or d.last_seen is None:
            return None  # never sent a heartbeat: nothing to miss
        return d.last_seen + MISSED_BEATS * d.health.interval_s + self.grace_s

    def _alive(self, device_id: str, d: _Device, now: float, how: str) -> list[Notice]:
        was = d.online
        d.online, d.last_seen = True, now
        if was is False:
            gone = max(0.0, now - d.offline_since) if d.offline_since is not None else None
            d.offline_since = d.offline_reason = None
            return [Notice("back", device_id, how, now, gone)]
        if was is None:
            return [Notice("online", device_id, how, now)]
        return []

    def _went_offline(self, device_id: str, d: _Device, now: float, *, since: float,
                      reason: str) -> list[Notice]:
        d.online, d.offline_since, d.offline_reason = False, since, reason
        return [Notice("offline", device_id, reason, now, max(0.0, now - since))]


def format_duration(seconds: float) -> str:
    """0.5 s, 42 s, 3 min 5 s, 2 h 3 min: what an operator reads at a glance."""
    if seconds < 9.95:
        return f"{max(0.0, round(seconds, 1)):g} s"
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
