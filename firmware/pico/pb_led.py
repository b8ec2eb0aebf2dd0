# LED patterns: the same states as the kiosk's indicator, plus the two the Pico shows while it
# gets online. (on_ms, off_ms): off_ms 0 is steady on, on_ms 0 is off.
import time

PATTERNS = {
    "off": (0, 1000),
    "joining": (100, 900),  # Wi-Fi not joined yet: one short blink a second
    "connecting": (100, 300),  # Wi-Fi up, no broker yet (or clock not set)
    "idle": (30, 2970),  # online and ready: a short blip every 3 s
    "sending": (80, 80),  # pressed; alert on flash, not yet confirmed by the broker
    "delivered": (500, 500),  # the broker has it
    "help_coming": (1, 0),  # an operator acknowledged: steady on
    "fault": (900, 100),  # bad settings or certificate: mostly on
}


class Led:
    def __init__(self, pin):
        self.pin = pin
        self.name = "off"
        self._on = False
        self._next = time.ticks_ms()
        pin.value(0)

    def show(self, name):
        """Returns True when the pattern changed."""
        if name == self.name:
            return False
        self.name = name
        self._next = time.ticks_ms()
        return True

    def tick(self, now):
        """Drive the pin; returns ms until the next change (at most 1000)."""
        on_ms, off_ms = PATTERNS[self.name]
        if on_ms == 0 or off_ms == 0:
            self._on = on_ms != 0
            self.pin.value(1 if self._on else 0)
            return 1000
        left = time.ticks_diff(self._next, now)
        if left > 0:
            return left
        self._on = not self._on
        self.pin.value(1 if self._on else 0)
        step = on_ms if self._on else off_ms
        self._next = time.ticks_add(now, step)
        return step
