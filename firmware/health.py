"""The kiosk's heartbeat: what goes on the `health` topic, and when.

`HealthReporter` only builds messages and keeps the schedule; the runtime's state thread
publishes them (QoS 0). Building never raises: a sensor that cannot be read is reported as
null, because a heartbeat that fails to go out would look exactly like a dead kiosk.
"""

from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.machine import State
from pinkbutton.firmware.version import FIRMWARE_VERSION
from pinkbutton.hal.clock import Clock, iso8601

log = logging.getLogger("pinkbutton.health")

THERMAL_ZONE = "/sys/class/thermal/thermal_zone0/temp"

# Outside this range a reading is a broken sensor, not a temperature.
_PLAUSIBLE_C = (-60.0, 200.0)


def read_temperature_c(path: str | Path = THERMAL_ZONE) -> float | None:
    """SoC temperature in °C from a Linux thermal zone (millidegrees), or None."""
    try:
        raw = Path(path).read_text().strip()
        celsius = int(raw) / 1000.0
    except (OSError, ValueError):
        return None
    if not _PLAUSIBLE_C[0] <= celsius <= _PLAUSIBLE_C[1]:
        return None
    return round(celsius, 1)


def disk_free_mb(path: str | Path) -> float | None:
    """Free space (MiB, available to this user) on the filesystem holding `path`, or None."""
    try:
        free = shutil.disk_usage(path).free
    except (OSError, ValueError):
        return None
    return round(free / (1024 * 1024), 1)


class HealthReporter:
    """Heartbeat schedule and payloads for one kiosk. Owned by the kiosk's state thread.

    The first heartbeat is due at once; later ones stay on a fixed grid of `interval_s`
    (a late loop does not stretch the period), skipping beats that are already past rather
    than sending a burst. A heartbeat built before it is due (the runtime sends one right
    after every connect) starts the grid again from that moment.
    """

    def __init__(
        self,
        device_id: str,
        interval_s: float,
        clock: Clock,
        state_dir: str | Path,
        *,
        thermal_zone: str | Path = THERMAL_ZONE,
        cert_not_after: float | None = None,
        site: p.Site | None = None,
    ) -> None:
        if not (isinstance(interval_s, int | float) and math.isfinite(interval_s)
                and 0 < interval_s <= p.MAX_HEALTH_INTERVAL_S):
            raise ValueError(f"heartbeat interval must be 0 < s <= 86400, not {interval_s!r}")
        self.device_id = device_id
        self.interval_s = float(interval_s)
        self.clock = clock
        self.state_dir = Path(state_dir)
        self.thermal_zone = thermal_zone
        self.cert_not_after = cert_not_after  # wall time (s) the kiosk's certificate expires
        self.site = site  # where the kiosk is (the room's map)
        self._started = clock.monotonic()
        self._next = self._started
        self._seq = 0
        self._online_since: str | None = None

    def due(self, now: float) -> bool:
        return now >= self._next

    def next_due(self) -> float:
        """Monotonic time of the next heartbeat (for the runtime's wait timeout)."""
        return self._next

    def link_changed(self, online: bool) -> None:
        """Call on connect/disconnect for an exact `online_since`; without it, `build` notices
        the change from `state.online` at heartbeat resolution."""
        if online and self._online_since is None:
            self._online_since = iso8601(self.clock.wall())
        elif not online:
            self._online_since = None

    def build(
        self,
        state: State,
        queue_depth: int,
        last_selftest: float | str | None,
        selftest_ok: bool | None,
        evidence_pending: Iterable[str] = (),
    ) -> p.Health:
        """The next heartbeat; advances seq and the schedule. `last_selftest` is a wall
        time (seconds) or an ISO string; `evidence_pending` the alerts whose local evidence
        the room has not confirmed (only valid UUIDs are sent, at most MAX_HEALTH_EVIDENCE)."""
        now = self.clock.monotonic()
        self._seq += 1
        if now < self._next:
            self._next = now + self.interval_s
        else:
            self._next += self.interval_s
            if self._next <= now:
                self._next = now + self.interval_s
        self.link_changed(state.online)
        return p.Health(
            device_id=self.device_id,
            seq=self._seq,
            uptime_s=round(max(0.0, now - self._started), 3),
            interval_s=self.interval_s,
            state=str(state.mode),
            online_since=self._online_since,
            queue_depth=_count(queue_depth),
            disk_free_mb=disk_free_mb(self.state_dir),
            temperature_c=read_temperature_c(self.thermal_zone),
            last_selftest=_stamp(last_selftest),
            selftest_ok=selftest_ok if isinstance(selftest_ok, bool) else None,
            faults=tuple(sorted(f[:64] for f in state.faults if f))[: p.MAX_HEALTH_FAULTS],
            firmware=FIRMWARE_VERSION,
            at=iso8601(self.clock.wall()),
            evidence_pending=_alert_ids(evidence_pending),
            cert_days_left=cert_days_left(self.cert_not_after, self.clock.wall()),
            site=self.site,
        )


def cert_days_left(not_after: float | None, now: float) -> int | None:
    """Whole days from wall time `now` until `not_after` (floored, as `certificate_check`
    counts them: negative once expired), within the protocol's range; None when unknown."""
    if not isinstance(not_after, int | float) or not math.isfinite(not_after):
        return None
    days = math.floor((not_after - now) / 86400)
    return max(-p.MAX_CERT_DAYS, min(p.MAX_CERT_DAYS, days))


def _alert_ids(values: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    try:
        for value in values:
            try:
                out.append(str(uuid.UUID(value)))
            except (TypeError, ValueError, AttributeError):
                continue  # never sent: the room would reject the whole heartbeat
            if len(out) >= p.MAX_HEALTH_EVIDENCE:
                break
    except Exception:  # noqa: BLE001 - building a heartbeat never raises
        log.warning("evidence_pending left out of the heartbeat", exc_info=True)
    return tuple(out)


def _count(value: object) -> int:
    try:
        return max(0, int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


def _stamp(value: float | str | None) -> str | None:
    if isinstance(value, str):
        try:  # the room rejects a heartbeat with a bad stamp: drop the stamp instead
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return value if len(value) <= 40 else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return iso8601(value)
        except (OverflowError, OSError, ValueError):
            return None
    return None
