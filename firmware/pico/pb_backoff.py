# Capped exponential backoff with equal jitter (as firmware/backoff.py on the kiosk).
import random


class Backoff:
    def __init__(self, first_ms, cap_ms):
        self.first_ms = first_ms
        self.cap_ms = cap_ms
        self.failures = 0

    def next_ms(self):
        delay = min(self.cap_ms, self.first_ms << min(self.failures, 16))
        self.failures += 1
        half = delay // 2
        return half + random.getrandbits(16) % (half + 1)

    def reset(self):
        self.failures = 0
