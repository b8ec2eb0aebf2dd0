"""systemd's sd_notify protocol, without libsystemd.

Under `Type=notify` systemd passes `$NOTIFY_SOCKET`: a filesystem path or, with a leading
`@`, an abstract-namespace AF_UNIX datagram socket. Each notification is one datagram of
`KEY=value` lines. With `WatchdogSec=` it also passes `$WATCHDOG_USEC` (and `$WATCHDOG_PID`):
the service must send `WATCHDOG=1` more often than that or be killed and restarted.

Everything here is a no-op when not started by systemd (laptop, simulator, tests), and
nothing ever raises: a notification that cannot be sent must not take the kiosk down.
The first failure is logged as a warning, later ones at debug level.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger("pinkbutton.sdnotify")


class SdNotifier:
    """Safe to call from any thread."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._env = env
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self._warned = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self) -> bool:
        return self.notify("READY=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        # One line: a newline would start another KEY=value assignment.
        return self.notify("STATUS=" + " ".join(str(text).split()))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def notify(self, *lines: str) -> bool:
        """Send one datagram; True when it was sent (False when disabled or failed)."""
        if self._address is None:
            return False
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # Never block the caller (the kiosk's state thread): when the receiver's
                    # queue is full the datagram is dropped and reported, like any failure.
                    self._sock.setblocking(False)
                self._sock.sendto("\n".join(lines).encode(), self._address)
        except (OSError, UnicodeError) as e:
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "cannot notify systemd at %s: %s", self._env.get("NOTIFY_SOCKET"), e)
            self._warned = True
            return False
        return True

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half systemd's period), or None when systemd
        does not watch this process."""
        raw = self._env.get("WATCHDOG_USEC", "")
        try:
            usec = int(raw)
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid is not None and pid.strip() != str(os.getpid()):
            return None  # meant for another process (e.g. our parent)
        return usec / 1_000_000 / 2

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _address(value: str) -> str | bytes | None:
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    if value:
        log.warning("ignoring NOTIFY_SOCKET %r: only unix socket paths are supported", value)
    return None
