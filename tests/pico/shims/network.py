# Test-only shim of MicroPython's `network` for the unix port: a WLAN that joins after a delay
# (PB_SHIM_JOIN_MS) and drops when the test says `wifi down` (see _pbshim.py).
import time

import _pbshim

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = -3
STAT_NO_AP_FOUND = -2
STAT_CONNECT_FAIL = -1
STAT_GOT_IP = 3


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._joined_at = None

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        return None

    def config(self, *args, **kwargs):
        return None

    def connect(self, ssid=None, key=None, **kwargs):
        self._joined_at = time.ticks_add(time.ticks_ms(), _pbshim.wifi["join_ms"])

    def disconnect(self):
        self._joined_at = None

    def isconnected(self):
        if not _pbshim.wifi["up"]:
            self._joined_at = None
        return (self._active and self._joined_at is not None
                and time.ticks_diff(time.ticks_ms(), self._joined_at) >= 0)

    def status(self, param=None):
        if self.isconnected():
            return STAT_GOT_IP
        if not _pbshim.wifi["up"]:
            return STAT_NO_AP_FOUND
        return STAT_CONNECTING if self._joined_at is not None else STAT_IDLE

    def ifconfig(self, config=None):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
