"""AdaptationController: a pure function of (queue, RTT, time) with hysteresis."""

from __future__ import annotations

import dataclasses

import pytest
from pinkbutton.firmware.media.adaptation import LADDER, AdaptationController, VideoLevel


def run(
    ctrl: AdaptationController,
    seconds: float,
    queue: int,
    rtt: float | None,
    start: float,
    tick: float = 0.25,
) -> tuple[float, list[tuple[float, VideoLevel]]]:
    """Feed a constant observation every `tick` s; returns (end time, changes)."""
    changes = []
    now = start
    while now < start + seconds - 1e-9:
        level = ctrl.update(queue, rtt, now)
        if level is not None:
            changes.append((now, level))
        now += tick
    return now, changes


def test_ladder_trades_bitrate_then_fps_then_resolution() -> None:
    assert LADDER[0] == VideoLevel(640, 480, 15, 500)
    assert LADDER[-1] == VideoLevel(320, 240, 5, 100)
    assert [lv.bitrate_kbps for lv in LADDER] == sorted(
        (lv.bitrate_kbps for lv in LADDER), reverse=True
    )
    # Every level is a video-only description: there is nothing audio in it to change.
    assert {f.name for f in dataclasses.fields(VideoLevel)} == {
        "width",
        "height",
        "fps",
        "bitrate_kbps",
    }


def test_good_link_stays_at_the_top() -> None:
    ctrl = AdaptationController()
    _, changes = run(ctrl, 30, queue=0, rtt=20, start=0)
    assert changes == []
    assert ctrl.level == LADDER[0]


def test_growing_queue_steps_down_fast_one_rung_per_hold() -> None:
    ctrl = AdaptationController(down_hold_s=1.0)
    _, changes = run(ctrl, 2.2, queue=100_000, rtt=50, start=10)
    assert [lv for _, lv in changes] == [LADDER[1], LADDER[2], LADDER[3]]
    assert [t for t, _ in changes] == [10, 11, 12]  # first step on the first bad sample


def test_rising_rtt_alone_steps_down() -> None:
    ctrl = AdaptationController()
    assert ctrl.update(0, 100, 0.0) is None
    assert ctrl.update(0, 900, 0.25) == LADDER[1]


def test_never_below_the_floor() -> None:
    ctrl = AdaptationController(down_hold_s=0.5)
    _, changes = run(ctrl, 60, queue=10**7, rtt=10_000, start=0)
    assert len(changes) == len(LADDER) - 1
    assert ctrl.level == LADDER[-1] and ctrl.at_floor


def test_steps_up_only_after_a_sustained_good_period() -> None:
    ctrl = AdaptationController(up_after_s=5.0, down_hold_s=1.0)
    now, _ = run(ctrl, 4.1, queue=100_000, rtt=900, start=0)
    bottom = ctrl.index
    assert bottom == 4
    # Good for 4.5 s: not yet.
    now, changes = run(ctrl, 4.5, queue=0, rtt=30, start=now)
    assert changes == []
    # A single mediocre sample (between the thresholds) restarts the good period.
    assert ctrl.update(20_000, 30, now) is None
    now, changes = run(ctrl, 4.9, queue=0, rtt=30, start=now + 0.25)
    assert changes == []
    now, changes = run(ctrl, 0.5, queue=0, rtt=30, start=now)
    assert [lv for _, lv in changes] == [LADDER[bottom - 1]]
    # One rung per good period, not all the way back at once.
    now, changes = run(ctrl, 4.5, queue=0, rtt=30, start=now)
    assert changes == []
    now, changes = run(ctrl, 20, queue=0, rtt=None, start=now)
    assert [lv for _, lv in changes] == [LADDER[2], LADDER[1], LADDER[0]]


def test_up_then_bad_again_steps_down_immediately() -> None:
    ctrl = AdaptationController(start_index=3, up_after_s=2.0, down_hold_s=1.0)
    now, changes = run(ctrl, 2.5, queue=0, rtt=10, start=0)
    assert [lv for _, lv in changes] == [LADDER[2]]
    assert ctrl.update(0, 5_000, now + 1.0) == LADDER[3]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        AdaptationController(ladder=[])
    with pytest.raises(ValueError, match="start_index"):
        AdaptationController(start_index=5)
    with pytest.raises(ValueError, match="low must not exceed high"):
        AdaptationController(queue_low_bytes=10, queue_high_bytes=5)


# --- limits pinned at their boundaries (issue 15) ------------------------------------------------


def test_default_thresholds_are_the_documented_ones() -> None:
    c = AdaptationController()
    assert (c.queue_high_bytes, c.queue_low_bytes, c.rtt_high_ms, c.rtt_low_ms,
            c.down_hold_s, c.up_after_s) == (40_000, 8_000, 600.0, 250.0, 1.0, 5.0)
    assert c.ladder == LADDER and c.index == 0 and c.level == LADDER[0]


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"^adaptation ladder is empty$"):
        AdaptationController(())
    with pytest.raises(ValueError, match=r"^start_index 5 outside a ladder of 5$"):
        AdaptationController(start_index=5)
    with pytest.raises(ValueError, match=r"^start_index -1 outside a ladder of 5$"):
        AdaptationController(start_index=-1)
    low_over_high = r"^adaptation thresholds: low must not exceed high$"
    with pytest.raises(ValueError, match=low_over_high):
        AdaptationController(queue_low_bytes=1001, queue_high_bytes=1000)
    with pytest.raises(ValueError, match=low_over_high):
        AdaptationController(rtt_low_ms=100.5, rtt_high_ms=100.0)


def test_low_equal_to_high_is_a_valid_threshold_pair() -> None:
    c = AdaptationController(queue_low_bytes=1000, queue_high_bytes=1000, rtt_low_ms=100.0,
                             rtt_high_ms=100.0, start_index=4)
    assert c.index == 4 and c.at_floor


@pytest.mark.parametrize("queue,rtt,down", [
    (40_000, None, False), (40_001, None, True),  # queue exactly at the high mark is not bad
    (0, 600.0, False), (0, 600.5, True),  # nor is an RTT exactly at it
])
def test_a_link_is_bad_only_above_the_high_marks(queue, rtt, down) -> None:
    c = AdaptationController()
    assert (c.update(queue, rtt, 0.0) == LADDER[1]) is down
    assert c.index == (1 if down else 0)


@pytest.mark.parametrize("queue,rtt,up", [
    (8_000, 250.0, True), (8_001, None, False), (0, 250.5, False), (8_000, None, True),
])
def test_a_link_is_good_at_or_below_the_low_marks(queue, rtt, up) -> None:
    c = AdaptationController(start_index=1)
    assert c.update(queue, rtt, 0.0) is None
    assert (c.update(queue, rtt, 5.0) == LADDER[0]) is up


def test_a_step_up_comes_exactly_up_after_s_after_the_good_period_began() -> None:
    c = AdaptationController(start_index=3)
    assert c.update(0, None, 1.0) is None
    assert c.update(0, None, 5.999) is None
    assert c.update(0, None, 6.0) == LADDER[2]
    # The next rung needs its own good period, counted from the step, not from the next sample.
    assert c.update(0, None, 10.999) is None
    assert c.update(0, None, 11.0) == LADDER[1]


def test_a_step_up_is_held_for_down_hold_s_against_a_new_step_down() -> None:
    c = AdaptationController(start_index=2)
    c.update(0, None, 0.0)
    assert c.update(0, None, 5.0) == LADDER[1]
    assert c.update(50_000, None, 5.999) is None, "just changed: the hold applies"
    assert c.update(50_000, None, 6.0) == LADDER[2]


def test_the_time_origin_does_not_matter() -> None:
    """Monotonic time may start anywhere, negative included: only differences count."""
    for origin in (-100.0, 0.0, 1e6):
        c = AdaptationController(start_index=1)
        assert c.update(50_000, None, origin) == LADDER[2]
        assert c.update(0, None, origin + 1) is None
        assert c.update(0, None, origin + 5.999) is None
        assert c.update(0, None, origin + 6.0) == LADDER[1], origin
