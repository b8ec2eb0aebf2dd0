"""The stable-level debouncer on its own: no clock, no threads, just times."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.hal.base import ButtonEvent
from pinkbutton.hal.debounce import StableLevelDebouncer

T0 = 1000.0
STABLE = 0.05


def test_clean_press_is_confirmed_after_stable_time_with_the_edge_time():
    deb = StableLevelDebouncer(STABLE)
    deb.edge(True, T0)
    assert deb.poll(T0 + 0.049) == []
    assert deb.level is False
    assert deb.poll(T0 + STABLE) == [ButtonEvent(pressed=True, at=T0, confirmed_at=T0 + STABLE)]
    assert deb.level is True
    assert deb.poll(T0 + 1) == []


def test_glitch_shorter_than_stable_time_gives_nothing():
    deb = StableLevelDebouncer(STABLE)
    deb.edge(True, T0)
    deb.edge(False, T0 + 0.03)
    assert deb.poll(T0 + 1) == []
    assert deb.level is False
    assert deb.next_deadline() is None


def test_bounce_burst_then_stable_level_gives_exactly_one_event_from_the_last_edge():
    deb = StableLevelDebouncer(STABLE)
    level = False
    t = T0
    for _ in range(7):  # odd count: ends pressed
        t += 0.002
        level = not level
        deb.edge(level, t)
        assert deb.poll(t) == []
    assert deb.poll(t + STABLE) == [ButtonEvent(True, at=t, confirmed_at=t + STABLE)]


def test_release_after_press_gives_a_release_event():
    deb = StableLevelDebouncer(STABLE)
    deb.edge(True, T0)
    deb.edge(False, T0 + 0.5)
    # Both runs were stable; one late poll returns both, oldest first.
    assert deb.poll(T0 + 1) == [
        ButtonEvent(True, at=T0, confirmed_at=T0 + STABLE),
        ButtonEvent(False, at=T0 + 0.5, confirmed_at=T0 + 0.5 + STABLE),
    ]
    assert deb.level is False


def test_edge_back_to_debounced_level_cancels_the_pending_change():
    deb = StableLevelDebouncer(STABLE, initial_level=True)
    deb.edge(False, T0)
    assert deb.next_deadline() == pytest.approx(T0 + STABLE)
    deb.edge(True, T0 + 0.01)
    assert deb.next_deadline() is None
    assert deb.poll(T0 + 1) == []
    assert deb.level is True


def test_next_deadline_tracks_the_latest_raw_edge_and_a_poll_there_confirms():
    deb = StableLevelDebouncer(STABLE)
    assert deb.next_deadline() is None
    deb.edge(True, T0)
    deb.edge(False, T0 + 0.01)
    deb.edge(True, T0 + 0.02)
    deadline = deb.next_deadline()
    assert deadline == T0 + 0.02 + STABLE
    assert len(deb.poll(deadline)) == 1
    assert deb.next_deadline() is None


def test_next_deadline_reports_confirmed_but_unpolled_events():
    deb = StableLevelDebouncer(STABLE)
    deb.edge(True, T0)
    deb.edge(False, T0 + 0.2)  # confirms the press inside edge()
    assert deb.next_deadline() == T0 + STABLE  # already due: poll now


def test_repeated_raw_level_is_not_an_edge():
    deb = StableLevelDebouncer(STABLE)
    deb.edge(True, T0)
    deb.edge(True, T0 + 0.04)  # must not restart the stable run
    assert deb.poll(T0 + STABLE) == [ButtonEvent(True, at=T0, confirmed_at=T0 + STABLE)]


def test_negative_stable_time_is_refused():
    with pytest.raises(ValueError, match="debounce time"):
        StableLevelDebouncer(-0.01)


# -- property: whatever the raw input, the output is a sane debounced signal -------------

gaps_ms = st.lists(st.integers(min_value=1, max_value=120), min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    gaps=gaps_ms,
    initial=st.booleans(),
    poll_every=st.one_of(st.none(), st.integers(min_value=1, max_value=60)),
)
def test_events_alternate_and_each_level_was_held_for_the_stable_time(gaps, initial, poll_every):
    edges: list[tuple[float, bool]] = []  # the raw input, as (time, level)
    level, t = initial, T0
    for gap in gaps:
        t += gap / 1000
        level = not level
        edges.append((t, level))

    def run(poll_step: float | None) -> tuple[list[ButtonEvent], StableLevelDebouncer]:
        deb = StableLevelDebouncer(STABLE, initial_level=initial)
        events: list[ButtonEvent] = []
        next_poll = T0
        for when, raw in edges:
            while poll_step is not None and next_poll <= when:
                polled = deb.poll(next_poll)
                assert all(e.confirmed_at <= next_poll for e in polled), "confirmed too early"
                events += polled
                next_poll += poll_step
            deb.edge(raw, when)
        return events + deb.poll(t + 1.0), deb

    events, deb = run(None)
    # Polls interleaved at arbitrary times must not change what comes out.
    if poll_every is not None:
        assert run(poll_every / 1000)[0] == events

    expected_level = initial
    for event in events:
        assert event.pressed is not expected_level, "events must alternate"
        expected_level = event.pressed
        assert event.confirmed_at == event.at + STABLE
        # `at` is a raw edge to this level, and the next raw edge came no sooner
        # than at + stable_s.
        index = edges.index((event.at, event.pressed))
        if index + 1 < len(edges):
            assert edges[index + 1][0] >= event.at + STABLE
    # Nothing stable is lost: after a long quiet spell the output follows the input.
    assert deb.level is level
    assert expected_level is level
    assert deb.next_deadline() is None


# --- pinned (issue 15) ----------------------------------------------------------------------


def test_the_default_debounce_time_is_50_ms() -> None:
    assert StableLevelDebouncer().stable_s == 0.05


def test_a_zero_debounce_time_is_valid_and_confirms_at_once() -> None:
    d = StableLevelDebouncer(stable_s=0.0)
    d.edge(True, 3.0)
    assert d.next_deadline() == 3.0
    assert d.poll(3.0) == [ButtonEvent(pressed=True, at=3.0, confirmed_at=3.0)]
    assert d.level is True


def test_a_negative_debounce_time_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"^debounce time must be >= 0 s, got -0.001$"):
        StableLevelDebouncer(stable_s=-0.001)
