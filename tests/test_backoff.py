"""Backoff: capped exponential growth with equal jitter, reset, argument checks."""

from __future__ import annotations

import random

import pytest
from pinkbutton.firmware.backoff import Backoff


def caps(min_s: float, max_s: float, n: int) -> list[float]:
    return [min(max_s, min_s * 2**i) for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_each_delay_lies_within_half_cap_and_cap(seed):
    b = Backoff(0.5, 30.0, random.Random(seed))
    for cap in caps(0.5, 30.0, 12):
        delay = b.next_delay()
        assert cap / 2 <= delay <= cap, (cap, delay)


def test_delays_grow_exponentially_then_stay_at_the_cap():
    b = Backoff(1.0, 16.0, random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    # Each cap doubles, and the intervals [cap/2, cap] touch, so the lower bounds grow as 2^n.
    assert [d >= c / 2 for d, c in zip(delays, caps(1.0, 16.0, 10), strict=True)] == [True] * 10
    assert delays[4] >= 8.0 > delays[0]
    assert all(8.0 <= d <= 16.0 for d in delays[4:]), delays


def test_the_cap_is_reached_and_never_exceeded_after_many_attempts():
    b = Backoff(0.1, 5.0, random.Random(2))
    delays = [b.next_delay() for _ in range(200)]
    assert max(delays) <= 5.0
    assert min(delays[10:]) >= 2.5


def test_jitter_differs_between_two_seeds():
    a = Backoff(0.5, 30.0, random.Random(1))
    b = Backoff(0.5, 30.0, random.Random(2))
    seq_a = [a.next_delay() for _ in range(8)]
    seq_b = [b.next_delay() for _ in range(8)]
    assert seq_a != seq_b


def test_same_seed_gives_the_same_delays():
    a = Backoff(0.5, 30.0, random.Random(7))
    b = Backoff(0.5, 30.0, random.Random(7))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]


def test_reset_starts_over_from_the_minimum():
    b = Backoff(1.0, 64.0, random.Random(3))
    for _ in range(6):
        b.next_delay()
    assert b.next_delay() >= 32.0
    b.reset()
    assert b.attempt == 0
    assert 0.5 <= b.next_delay() <= 1.0
    assert 1.0 <= b.next_delay() <= 2.0


def test_equal_min_and_max_gives_a_constant_band():
    b = Backoff(2.0, 2.0, random.Random(4))
    assert all(1.0 <= b.next_delay() <= 2.0 for _ in range(20))


@pytest.mark.parametrize("min_s,max_s", [(0, 1), (-1, 1), (2, 1), (0.0, 0.0)])
def test_bad_arguments_raise_value_error(min_s, max_s):
    with pytest.raises(ValueError, match="min_s"):
        Backoff(min_s, max_s)


# --- pinned (issue 15) ----------------------------------------------------------------------


class _Edge(random.Random):
    """A real Random whose jitter lands on one end of its range."""

    def __init__(self, top: bool) -> None:
        super().__init__(0)
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


def test_defaults_are_half_a_second_to_thirty_seconds() -> None:
    b = Backoff()
    assert (b.min_s, b.max_s, b.attempt) == (0.5, 30.0, 0)


@pytest.mark.parametrize("top", [False, True])
def test_the_jitter_spans_exactly_half_the_cap_to_the_whole_cap(top) -> None:
    b = Backoff(1.0, 8.0, _Edge(top))
    expected = [1.0, 2.0, 4.0, 8.0, 8.0] if top else [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [b.next_delay() for _ in range(5)] == expected
    assert b.attempt == 5


def test_bad_arguments_name_the_rule() -> None:
    with pytest.raises(ValueError, match=r"^backoff needs 0 < min_s <= max_s$"):
        Backoff(2.0, 1.0)
