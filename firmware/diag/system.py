"""The kiosk's own health, checked by the technician's self-test: SoC temperature, the clock
(synchronised, and not before the certificate's start: TLS needs a right clock), and the
broker's name in DNS.

Each check is bounded in time and says what it could not measure rather than guessing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

from pinkbutton.firmware.diag.checks import Check, failed, passed
from pinkbutton.firmware.health import read_temperature_c

TIMEDATECTL_TIMEOUT_S = 3.0
DNS_TIMEOUT_S = 5.0


def temperature_check(zone: str | Path, max_temp_c: float) -> Check:
    """The SoC temperature against `health.max_temp_c` (the running kiosk's over_temperature
    threshold). No readable sensor: passed, saying it was not measured."""
    c = read_temperature_c(zone)
    if c is None:
        return passed("temperature", f"not measured: no thermal sensor at {zone}")
    values = {"celsius": round(c, 1), "max_celsius": max_temp_c}
    if c > max_temp_c:
        return failed("temperature", f"SoC at {c:.1f} °C, over health.max_temp_c {max_temp_c:g} °C",
                      "check the enclosure's ventilation, the Pi's heatsink or fan, and direct "
                      "sun on the kiosk", values)
    return passed("temperature", f"SoC at {c:.1f} °C (limit {max_temp_c:g} °C)", values)


def ntp_synchronized(timeout_s: float = TIMEDATECTL_TIMEOUT_S) -> bool | str:
    """True/False from systemd (`timedatectl show -p NTPSynchronized`), or why it is unknown."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return "no timedatectl on this system"
    try:
        done = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"timedatectl did not answer ({type(e).__name__})"
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in ("yes", "no"):
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
        return f"timedatectl: {why[:120]}"
    return answer == "yes"


def clock_check(now: datetime, cert_not_before: datetime | None,
                synchronized: bool | str) -> Check:
    """Failed when the clock reads earlier than the kiosk certificate's start (a Pi has no
    battery clock: before NTP it restarts from an old time, and TLS then refuses every
    certificate) or when systemd says NTP has not synchronised it."""
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    if cert_not_before is not None and now < cert_not_before:
        return failed("clock", f"the clock reads {stamp}, before the certificate's start "
                      f"{cert_not_before:%Y-%m-%d}: not set from the network yet",
                      "let the kiosk reach an NTP server (UDP 123) or set the time by hand "
                      "(`timedatectl set-time`), then retry")
    if synchronized is False:
        return failed("clock", f"the clock reads {stamp} but is not synchronised (NTP)",
                      "check that the kiosk reaches an NTP server: `timedatectl timesync-status`")
    if synchronized is True:
        return passed("clock", f"{stamp}, synchronised (NTP)")
    return passed("clock", f"{stamp}; NTP status unknown ({synchronized})")


def dns_check(host: str, timeout_s: float = DNS_TIMEOUT_S) -> Check:
    """The broker's name resolves, within `timeout_s` (getaddrinfo on a worker thread: a
    resolver with no server can wait far longer)."""
    result: list[object] = []

    def resolve() -> None:
        try:
            result.append(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
        except OSError as e:
            result.append(e)

    start = time.monotonic()
    worker = threading.Thread(target=resolve, name="diag-dns", daemon=True)
    worker.start()
    worker.join(timeout_s)
    ms = (time.monotonic() - start) * 1000
    fix = "check /etc/resolv.conf and the router's DNS, or set broker.host to an IP address"
    if not result:
        return failed("dns", f"no answer for {host!r} within {timeout_s:g} s", fix)
    got = result[0]
    if isinstance(got, OSError):
        return failed("dns", f"cannot resolve {host!r}: {got.strerror or got}", fix)
    assert isinstance(got, list)
    addresses = sorted({str(info[4][0]) for info in got})
    return passed("dns", f"{host} -> {', '.join(addresses[:3])} in {ms:.0f} ms",
                  {"addresses": addresses, "ms": round(ms, 1)})
