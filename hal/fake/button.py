"""A button you drive from code: tests, the simulator, scripted scenarios."""

from __future__ import annotations

from pinkbutton.hal.base import Button, ButtonEvent, HalError
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.debounce import StableLevelDebouncer


class FakeButton(Button):
    """Deterministic `Button`: raw edges come from `press()`/`release()`/`bounce()`.

    Edges are stamped with `clock.monotonic()`, so with a `FakeClock` the timing
    (and therefore the debounce outcome) is exact. Note on threads: the controls
    run on the caller's thread (the test or simulator driver); `wakeup` runs there
    too, exactly as a backend thread would call it.
    """

    def __init__(self, clock: Clock, debounce_s: float = 0.05, *, pin: int | None = None,
                 pressed: bool = False) -> None:
        self.pin = pin  # only so a simulator can tell buttons apart
        self._clock = clock
        # `pressed`: held down when opened (a stuck or shorted button), which a real backend
        # also reports as `is_pressed` at once, not as a press.
        self._debouncer = StableLevelDebouncer(debounce_s, initial_level=pressed)
        self._raw = pressed
        self._closed = False

    # -- Button -----------------------------------------------------------------

    def poll(self) -> list[ButtonEvent]:
        return self._debouncer.poll(self._clock.monotonic())

    def next_deadline(self) -> float | None:
        return self._debouncer.next_deadline()

    @property
    def is_pressed(self) -> bool:
        return self._debouncer.level

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    # -- test controls ------------------------------------------------------------

    @property
    def raw_pressed(self) -> bool:
        return self._raw

    def press(self) -> None:
        self._set_raw(True)

    def release(self) -> None:
        self._set_raw(False)

    def bounce(self, n: int, interval: float = 0.002) -> None:
        """`n` raw toggles, each `interval` after the previous, from the current raw level."""
        for _ in range(n):
            self._clock.sleep(interval)
            self._set_raw(not self._raw)

    def hold(self, s: float) -> None:
        """Press, keep it down for `s` seconds of clock time, release."""
        self.press()
        self._clock.sleep(s)
        self.release()

    def _set_raw(self, level: bool) -> None:
        if self._closed:
            raise HalError(f"fake button (pin {self.pin}) is closed")
        if level == self._raw:
            return  # not an edge
        self._raw = level
        self._debouncer.edge(level, self._clock.monotonic())
        if self.wakeup is not None:
            self.wakeup()


class FakeTamper(FakeButton):
    """The case's tamper switch: `is_pressed` means open. `set_open()` sets its raw level."""

    def set_open(self, is_open: bool) -> None:
        self._set_raw(is_open)
