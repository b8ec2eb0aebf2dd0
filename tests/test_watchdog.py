"""StageWatchdog: stuck stages are reported and restarted, at most once per timeout."""

from __future__ import annotations

import threading

import pytest
from pinkbutton.firmware.watchdog import StageWatchdog
from pinkbutton.hal.clock import FakeClock


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.stuck: list[tuple[str, float]] = []
        self.restarted: list[str] = []
        self.wd = StageWatchdog(self.clock, lambda name, silent: self.stuck.append((name, silent)))

    def register(self, name: str, timeout: float = 5.0) -> None:
        self.wd.register(name, timeout, lambda: self.restarted.append(name))


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_a_beating_stage_is_never_restarted(h):
    h.register("encoder")
    for _ in range(20):
        h.clock.advance(4.9)
        h.wd.beat("encoder")
        assert h.wd.check() == []
        assert h.wd.healthy()
    assert h.stuck == [] and h.restarted == []


def test_a_silent_stage_is_reported_and_restarted_once_per_timeout(h):
    h.register("encoder", 5)
    h.clock.advance(5.0)
    assert h.wd.check() == [] and h.wd.healthy()  # exactly at the limit: still fine
    h.clock.advance(0.1)
    assert not h.wd.healthy()
    assert h.wd.check() == ["encoder"]
    assert h.stuck == [("encoder", pytest.approx(5.1))] and h.restarted == ["encoder"]
    h.clock.advance(4.0)
    assert h.wd.check() == []  # the restart gets a full period to show progress
    h.clock.advance(1.0)
    assert h.wd.check() == ["encoder"]
    assert h.wd.restarts("encoder") == 2


def test_a_restarted_stage_that_beats_again_is_healthy(h):
    h.register("sender", 2)
    h.clock.advance(3)
    h.wd.check()
    assert not h.wd.healthy()
    h.wd.beat("sender")
    assert h.wd.healthy()
    h.clock.advance(1.5)
    assert h.wd.check() == [] and h.restarted == ["sender"]


def test_only_the_stuck_stage_is_restarted(h):
    h.register("encoder", 5)
    h.register("sender", 5)
    h.clock.advance(6)
    h.wd.beat("sender")
    assert h.wd.check() == ["encoder"]
    views = {v.name: v for v in h.wd.stages()}
    assert not views["encoder"].healthy and views["encoder"].restarts == 1
    assert views["sender"].healthy and views["sender"].silent_for == 0


def test_unregistered_stages_are_not_watched_and_unknown_beats_are_ignored(h):
    h.register("sender", 1)
    h.wd.unregister("sender")
    h.wd.beat("sender")
    h.wd.beat("never-registered")
    h.clock.advance(100)
    assert h.wd.check() == [] and h.wd.healthy() and h.wd.stages() == []


def test_re_registering_restarts_the_timeout_and_keeps_the_count(h):
    h.register("sender", 1)
    h.clock.advance(2)
    h.wd.check()
    h.register("sender", 1)
    assert h.wd.healthy() and h.wd.restarts("sender") == 1


def test_failing_callbacks_do_not_stop_the_other_restarts(h, caplog):
    def broken(*_):
        raise RuntimeError("boom")

    wd = StageWatchdog(h.clock, broken)
    wd.register("a", 1, broken)
    wd.register("b", 1, lambda: h.restarted.append("b"))
    h.clock.advance(2)
    assert wd.check() == ["a", "b"]
    assert h.restarted == ["b"]
    assert "boom" in caplog.text


def test_restart_may_beat_and_register_without_deadlock(h):
    wd = StageWatchdog(h.clock, lambda *_: None)
    wd.register("a", 1, lambda: (wd.beat("a"), wd.register("b", 1, lambda: None)))
    h.clock.advance(2)
    assert wd.check() == ["a"]
    assert wd.healthy() and [v.name for v in wd.stages()] == ["a", "b"]


def test_beats_from_other_threads_are_seen(h):
    h.register("encoder", 1)
    stop = threading.Event()

    def stage() -> None:
        while not stop.is_set():
            h.wd.beat("encoder")
            stop.wait(0.001)

    t = threading.Thread(target=stage)
    t.start()
    try:
        for _ in range(50):
            h.clock.advance(0.5)
            for _ in range(500):  # until the stage thread has beaten at the new time
                if h.wd.stages()[0].silent_for == 0:
                    break
                stop.wait(0.01)
            h.wd.check()
    finally:
        stop.set()
        t.join(5)
    assert h.restarted == []


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), "5"])
def test_timeout_must_be_positive_and_finite(h, timeout):
    with pytest.raises(ValueError, match="timeout"):
        h.wd.register("x", timeout, lambda: None)
