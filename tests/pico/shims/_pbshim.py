# Test-only: the simulated world of the Pico W shims (never copied to a Pico).
#
# A thread reads control lines from stdin, as a test (tests/pico/device.py) writes them:
#   pin ID LEVEL   drive input pin ID to LEVEL (0/1); its IRQ handler runs via micropython.schedule,
#                  as a soft IRQ does on the RP2040
#   wifi down|up   the access point disappears / comes back (WLAN.isconnected() follows)
import _thread
import os
import sys

import micropython

pins = {}
wifi = {"up": os.getenv("PB_SHIM_WIFI") != "down",
        "join_ms": int(os.getenv("PB_SHIM_JOIN_MS") or "300")}


def _drive(pin_level):
    pin, level = pin_level
    pin._drive(level)


def _reader():
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        words = line.split()
        if len(words) == 3 and words[0] == "pin":
            key = int(words[1]) if words[1].isdigit() else words[1]
            pin = pins.get(key)
            if pin is not None:
                micropython.schedule(_drive, (pin, int(words[2])))
        elif len(words) == 2 and words[0] == "wifi":
            wifi["up"] = words[1] == "up"


_thread.start_new_thread(_reader, ())
