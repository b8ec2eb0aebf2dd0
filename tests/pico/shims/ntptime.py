# Test-only shim of micropython-lib's `ntptime` (frozen into the Pico W firmware): the unix
# port's clock is the host's, so settime() only says it was asked (PB_SHIM_NTP_FAIL: it fails).
import os

host = "pool.ntp.org"
timeout = 1


def settime():
    if os.getenv("PB_SHIM_NTP_FAIL"):
        raise OSError(110)
    print("shim: ntptime.settime() from %s" % host)
