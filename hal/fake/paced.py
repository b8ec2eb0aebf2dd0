"""The capture thread shared by the fake camera and microphone.

A real sensor produces on its own clock and on its own thread; the fakes do the
same so the firmware's threading is exercised for real. The thread paces itself to
absolute deadlines on the injected clock (no drift from per-iteration sleeps). It
waits on an Event, never `clock.sleep`, so `stop()`/`fail()` take effect at once,
and with a FakeClock it simply produces whatever became due when the test
advanced the clock (it never advances the clock itself).
"""

from __future__ import annotations

import logging
import threading

from pinkbutton.hal.base import DeviceFault, FailureSink
from pinkbutton.hal.clock import Clock

log = logging.getLogger(__name__)


class PacedSource:
    """Calls `_tick(now, due)` once per `period` seconds of `clock` time on its own thread.

    `due` is the deadline the tick was scheduled for (<= now); the first is
    `first_after_s` after `start()`. When the thread
    falls more than `max_late_s` behind (a stalled host, a jump of a fake clock),
    the missed ticks are dropped rather than delivered in a burst.

    Note on threads: `_tick` and the failure callback run on the capture thread
    named `thread_name`; `start`/`stop`/`fail` may be called from any thread,
    `stop` even from a callback on the capture thread itself.
    """

    def __init__(
        self,
        clock: Clock,
        period_s: float,
        thread_name: str,
        max_late_s: float,
        first_after_s: float = 0.0,
    ) -> None:
        self._clock = clock
        self._first_after = first_after_s
        self._period = period_s
        self._thread_name = thread_name
        self._max_late = max_late_s
        self._lock = threading.Lock()  # guards _running/_failure/_reported across threads
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopping = False
        self._failure: str | None = None
        self._reported = False

    # -- for subclasses -------------------------------------------------------------

    def _tick(self, now: float, due: float) -> None:
        raise NotImplementedError

    def _failure_sink(self) -> FailureSink | None:
        raise NotImplementedError

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise DeviceFault(f"{self._thread_name} has failed: {self._failure}")

    # -- lifecycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def failure(self) -> str | None:
        """The reason given to `fail()`, or None while the source works."""
        return self._failure

    def start(self) -> None:
        with self._lock:
            self._check_usable()
            if self._running:
                return
            self._running = True
            self._stopping = False
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
            self._thread = None

    def fail(self, reason: str) -> None:
        """Test control: the device dies. Capture stops; on_failure(reason) is called once.

        With the thread running, the capture thread reports it (as a real backend
        would); otherwise it is reported here, on the caller's thread.
        """
        with self._lock:
            if self._failure is not None:
                return
            self._failure = reason
            report_here = not self._running
        self._wake.set()
        if report_here:
            self._report_failure()

    def repair(self) -> None:
        """Test control: the device works again (after `fail`); `start()` is allowed again."""
        with self._lock:
            self._failure = None
            self._reported = False

    # -- the capture thread ------------------------------------------------------------

    def _run(self) -> None:
        due = self._clock.monotonic() + self._first_after
        try:
            while not self._stopping and self._failure is None:
                now = self._clock.monotonic()
                if now < due:
                    # Bounded wait: with a FakeClock `due - now` is fake time, so poll.
                    self._wake.wait(min(due - now, self._period))
                    self._wake.clear()
                    continue
                if now - due > self._max_late:
                    due = now
                try:
                    self._tick(now, due)
                except Exception:
                    # A consumer bug must not silently kill capture; keep producing.
                    log.exception("%s: frame consumer raised", self._thread_name)
                due += self._period
        finally:
            with self._lock:
                self._running = False
                report = self._failure is not None
            if report:
                self._report_failure()

    def _report_failure(self) -> None:
        with self._lock:
            if self._reported or self._failure is None:
                return
            self._reported = True
            reason = self._failure
        sink = self._failure_sink()
        if sink is not None:
            sink(reason)
