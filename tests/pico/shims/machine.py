# Test-only shim of MicroPython's rp2 `machine` for the unix port: Pin (with IRQ), WDT, RTC.
import sys
import time

import _pbshim


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._mode = mode
        self._v = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            self._v = value
        self._handler = None
        self._trigger = 0
        self._arrived = None  # for _pbshim: when the test's last change of this pin came
        self._ran_at = None  # ... and when the firmware's handler ran for it
        _pbshim.pins[id] = self

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        return None

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0

    def toggle(self):
        self._v = 1 - self._v

    def __call__(self, v=None):
        return self.value(v)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, hard=False):
        self._handler = handler
        self._trigger = trigger

    def _drive(self, level):
        old, self._v = self._v, level
        edge = Pin.IRQ_FALLING if old and not level else Pin.IRQ_RISING if level and not old else 0
        if self._handler is not None and edge & self._trigger:
            self._handler(self)


class WDT:
    """Checks, instead of resetting, that the watchdog is fed within its timeout."""

    def __init__(self, id=0, timeout=5000):
        self._timeout = timeout
        self._last = time.ticks_ms()
        print("shim: WDT started, timeout %d ms" % timeout)

    def feed(self):
        now = time.ticks_ms()
        gap = time.ticks_diff(now, self._last)
        if gap > self._timeout:
            print("shim: WDT would have reset the board: not fed for %d ms" % gap)
        self._last = now


class RTC:
    def datetime(self, value=None):
        if value is not None:
            return None  # the unix port's clock is the host's, already set
        y, mo, d, h, mi, s, wd, _ = time.gmtime()
        return (y, mo, d, wd, h, mi, s, 0)


def reset():
    print("shim: machine.reset()")
    sys.exit(3)


def unique_id():
    return b"\xe6\x61\x41\x04\x03\x2f\x2a\x2b"


def freq(hz=None):
    return 125_000_000


def idle():
    return None
