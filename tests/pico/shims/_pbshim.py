# Test-only: the simulated world of the Pico W shims (never copied to a Pico).
#
# A thread reads control lines from stdin, as a test (tests/pico/device.py) writes them:
#   pin ID LEVEL   drive input pin ID to LEVEL (0/1); its IRQ handler runs via micropython.schedule,
#                  as a soft IRQ does on the RP2040
#   wifi down|up   the access point disappears / comes back (WLAN.isconnected() follows)
import _thread
import os
import sys
import time

import micropython

pins = {}
wifi = {"up": os.getenv("PB_SHIM_WIFI") != "down",
        "join_ms": int(os.getenv("PB_SHIM_JOIN_MS") or "300")}


def _drive(pin_level):
    pin, level = pin_level
    pin._ran_at = time.ticks_ms()
    pin._drive(level)


def _schedule(pin, level, arrived):
    """Keep the gaps between a pin's changes as the test wrote them, even when the main loop
    runs the scheduled handler late (a loaded machine): a 100 ms press stays 100 ms long."""
    last_arrived = getattr(pin, "_arrived", None)
    if last_arrived is not None:
        for _ in range(5000):  # the previous change has reached the firmware (<= 5 s)
            if pin._ran_at is not None:
                break
            time.sleep_ms(1)
        if pin._ran_at is not None:
            wanted = time.ticks_diff(arrived, last_arrived)
            done = time.ticks_diff(time.ticks_ms(), pin._ran_at)
            if done < wanted:
                time.sleep_ms(wanted - done)
    pin._arrived = arrived
    pin._ran_at = None
    micropython.schedule(_drive, (pin, level))


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
                _schedule(pin, int(words[2]), time.ticks_ms())
        elif len(words) == 2 and words[0] == "wifi":
            wifi["up"] = words[1] == "up"


_thread.start_new_thread(_reader, ())
