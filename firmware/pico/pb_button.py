# The button: an IRQ on both edges records (level, time) in a ring allocated once; the main loop
# replays the edges through a stable-level debouncer, so a press is counted even when the loop
# was busy (a TLS handshake) for its whole length.
import time

from machine import Pin
from micropython import const

_RING = const(16)


class Button:
    def __init__(self, pin_id, debounce_ms):
        self.debounce_ms = debounce_ms
        self.pin = Pin(pin_id, Pin.IN, Pin.PULL_UP)  # pressed = 0 (to ground)
        self._levels = bytearray(_RING)
        self._times = [time.ticks_ms()] * _RING
        self._head = 0
        self._tail = 0
        self.level = self.pin.value()
        self.since = time.ticks_ms()
        self.counted = self.level == 0  # held at boot: not a press until released once
        self.pin.irq(handler=self._irq, trigger=Pin.IRQ_FALLING | Pin.IRQ_RISING)

    def _irq(self, pin):  # soft IRQ: no allocation
        i = self._head % _RING
        self._levels[i] = pin.value()
        self._times[i] = time.ticks_ms()
        self._head += 1

    def poll(self, now):
        """Ticks-ms times of the presses confirmed since the last call (usually none)."""
        presses = None
        if self._head - self._tail > _RING:
            self._tail = self._head - _RING
        while self._tail != self._head:
            i = self._tail % _RING
            self._tail += 1
            level, at = self._levels[i], self._times[i]
            if level == self.level:
                continue
            if self.level == 0 and not self.counted and \
                    time.ticks_diff(at, self.since) >= self.debounce_ms:
                presses = (presses or []) + [self.since]
            self.level, self.since, self.counted = level, at, False
        if self.level == 0 and not self.counted and \
                time.ticks_diff(now, self.since) >= self.debounce_ms:
            self.counted = True
            presses = (presses or []) + [self.since]
        return presses or ()
