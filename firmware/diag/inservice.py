"""The self-test of a running kiosk: at boot, daily and on the room's `cmd selftest`.

The same checks as `pinkbutton-diag selftest` where they need no one at the kiosk (button not
stuck, camera picture, microphone level, disk, certificate), using the analyses of `checks.py`
on what the RUNNING media pipeline captured (the camera is never opened a second time), and
the kiosk's current faults: a `camera_failed` fault fails the `camera` check, so a self-test
never reports `ok` with a broken camera. `daily_due()` spreads the daily run over the fleet.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from pinkbutton.firmware.diag.checks import (
    Check,
    camera_check,
    certificate_check,
    disk_check,
    failed,
    microphone_check,
    passed,
)
from pinkbutton.hal.base import AudioChunk, VideoFrame

#: Faults that belong to one check: the check fails, naming the fault.
# Running faults that a check names as its own (the others fail the generic "faults" check).
FAULT_CHECKS = {
    "button_stuck": "button",
    "camera_failed": "camera", "camera_covered": "camera", "camera_frozen": "camera",
    "mic_failed": "microphone", "mic_dead": "microphone",
}
_FIX = {
    "button": "look for a jammed button or a short on its GPIO wire",
    "camera": "check the camera ribbon cable; `pinkbutton-diag selftest` on site shows more",
    "microphone": "check the USB microphone and `media.mic_device`",
}


def run_checks(
    *,
    button_pressed: bool,
    faults: Iterable[str],
    frames: Sequence[VideoFrame] | None,
    audio: Sequence[AudioChunk] | None,
    state_dir: Path,
    cert_not_after: datetime | None,
    now: datetime,
) -> list[Check]:
    """One `Check` per part. `frames`/`audio` are what the running pipeline captured just
    now; None when the kiosk has no such device in use (then the check is left out unless a
    fault names it)."""
    faults = set(faults)
    checks = [failed("button", "reads pressed during the self-test (stuck or shorted)",
                     _FIX["button"]) if button_pressed else
              _by_fault("button", faults) or passed("button", "not stuck")]
    checks += _device("camera", faults, frames, camera_check)
    checks += _device("microphone", faults, audio, microphone_check)
    checks.append(disk_check(state_dir))
    if cert_not_after is None:
        checks.append(failed("certificate", "cannot read the kiosk's certificate",
                             "check broker.cert in the config"))
    else:
        checks.append(certificate_check(cert_not_after, now))
    other = sorted(f for f in faults if f not in FAULT_CHECKS)
    if other:
        checks.append(failed("faults", f"raised: {', '.join(other)}",
                             "see the kiosk's log (journalctl -u pinkbutton)"))
    return checks


def _by_fault(name: str, faults: set[str]) -> Check | None:
    raised = sorted(f for f, check in FAULT_CHECKS.items() if check == name and f in faults)
    return failed(name, f"fault {', '.join(raised)}", _FIX[name]) if raised else None


def _device(name: str, faults: set[str], captured, analyse) -> list[Check]:
    by_fault = _by_fault(name, faults)
    if by_fault is not None:
        return [by_fault]
    if captured is None:
        return []
    return [analyse(captured)]


# -- when the daily self-test runs ----------------------------------------------------------


def device_offset_s(device_id: str, spread_s: float) -> float:
    """A fixed offset in [0, spread_s) from the device id, so a fleet configured with one
    time does not test (and publish) all at once; the same kiosk always gets the same one."""
    if spread_s <= 0:
        return 0.0
    digest = int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "big")
    return float(digest % int(spread_s)) if spread_s >= 1 else 0.0


def next_daily(after_wall: float, at: tuple[int, int], offset_s: float,
               tz: tzinfo | None = None) -> float:
    """The first wall time strictly after `after_wall` that is local time `at` plus
    `offset_s` (local time zone, or `tz`). Called again with the time it ran, it gives the
    next day's."""
    if not math.isfinite(after_wall):
        raise ValueError("after_wall must be finite")
    # Naive local time when no tz is given: .timestamp() then applies the system's rules,
    # daylight saving included, on each day.
    local = datetime.fromtimestamp(after_wall, tz)
    best = math.inf
    for days in (-1, 0, 1, 2):  # an offset near a day can push yesterday's time past now
        day = (local + timedelta(days=days)).date()
        base = datetime(day.year, day.month, day.day, at[0], at[1], tzinfo=local.tzinfo)
        when = base.timestamp() + offset_s
        if when > after_wall:
            best = min(best, when)
    return best
