"""Rules of the state machine pinned at their boundaries (issue 15: what mutation testing showed
no test noticed). Each test names the rule; limits are checked exactly at the limit and one
step past it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.machine import (
    AlertDraft,
    AlertPublished,
    Boot,
    Command,
    Connected,
    Log,
    Mode,
    Pressed,
    PublishAlert,
    PublishStatus,
    Resume,
    SelftestDone,
    SetIndicator,
    Settings,
    StartStream,
    State,
    StopStream,
    Tick,
    initial_state,
    next_deadline,
    step,
)
from hal.base import Pattern

WALL = 1_700_000_000.0
S = Settings(ack_timeout_s=30.0, stream_s=120.0, cooldown_s=10.0, retry_s=5.0)
DRAFT = AlertDraft(
    alert_id="old", seq=7, kind="emergency", pressed_wall=WALL - 60, pressed_mono=-60.0,
    presses=1, announce=1, escalated=False, follows=None,
)
T = 5.0  # when the kiosk resumes


def idle(settings: Settings = S, online: bool = True) -> State:
    state = initial_state(settings)
    events = [Boot(), SelftestDone(frozenset())] + ([Connected()] if online else [])
    for event in events:
        state, _ = step(state, event, 0.0)
    return state


def resumed(online: bool = True) -> tuple[State, tuple]:
    return step(idle(online=online), Resume(DRAFT), T)


# --- resuming an alert after a restart -----------------------------------------------------------


def test_a_resumed_alert_is_announced_again_with_every_action_in_order() -> None:
    state, actions = resumed()
    draft = state.incident.draft
    assert draft == AlertDraft(
        alert_id="old", seq=7, kind="emergency", pressed_wall=WALL - 60, pressed_mono=-60.0,
        presses=1, announce=2, escalated=False, follows=None,
    )
    assert actions == (
        SetIndicator(Pattern.SENDING),
        PublishAlert(draft),
        PublishStatus(Mode.ALERTING),
        StartStream("old"),
        Log("warning", "resuming the incident of alert old (seq 7) after a restart"),
    )
    assert (state.mode, state.online, state.cooldown_until) == (Mode.ALERTING, True, None)
    assert state.incident.delivered is False and state.incident.acked is False
    assert state.incident.dispatched is False


def test_a_resumed_alert_offline_publishes_status_but_not_the_alert() -> None:
    state, actions = resumed(online=False)
    assert actions == (
        SetIndicator(Pattern.SENDING),
        PublishStatus(Mode.ALERTING),
        StartStream("old"),
        Log("warning", "resuming the incident of alert old (seq 7) after a restart"),
    )


def test_a_resumed_alert_keeps_a_higher_next_seq() -> None:
    state = initial_state(S, next_seq=50)
    state, _ = step(step(state, Boot(), 0.0)[0], SelftestDone(frozenset()), 0.0)
    state, _ = step(state, Resume(DRAFT), T)
    assert state.next_seq == 50, "numbering never goes back"
    state, _ = step(idle(), Resume(DRAFT), T)
    assert state.next_seq == 8, "numbering goes on after the resumed alert"


def test_a_resumed_alert_is_republished_after_retry_s() -> None:
    state, _ = resumed()
    assert state.incident.retry_at == T + S.retry_s
    assert next_deadline(state) == T + S.retry_s
    before, actions = step(state, Tick(), T + S.retry_s - 0.001)
    assert actions == () and before == state
    state, actions = step(state, Tick(), T + S.retry_s)
    assert actions == (PublishAlert(state.incident.draft),)
    assert state.incident.retry_at == T + 2 * S.retry_s


def test_a_resumed_unacknowledged_alert_escalates_after_ack_timeout_s_not_before() -> None:
    state, _ = resumed()
    state, _ = step(state, AlertPublished("old", ok=True), T)
    assert state.incident.ack_deadline == T + S.ack_timeout_s
    assert next_deadline(state) == T + S.ack_timeout_s
    _, actions = step(state, Tick(), T + S.ack_timeout_s - 0.001)
    assert actions == ()
    state, actions = step(state, Tick(), T + S.ack_timeout_s)
    assert [a.draft.announce for a in actions if isinstance(a, PublishAlert)] == [3]
    assert state.incident.draft.escalated


def test_a_resumed_acknowledged_incident_streams_for_stream_s() -> None:
    state, _ = resumed()
    state, _ = step(state, Command("ack", "old"), T + 1)
    assert state.incident.stream_deadline == T + S.stream_s
    assert next_deadline(state) == T + S.stream_s
    kept, actions = step(state, Tick(), T + S.stream_s - 0.001)
    assert kept == state and actions == ()
    state, actions = step(state, Tick(), T + S.stream_s)
    assert state.mode is Mode.COOLDOWN and actions[0] == StopStream("old")


# --- settings: what is a valid period ---------------------------------------------------------


PERIODS = ("ack_timeout_s", "stream_s", "retry_s", "max_extend_s")


@pytest.mark.parametrize("name", PERIODS)
@pytest.mark.parametrize("value", [0.001, 0.5, 1, 1.0, 2.5, 1e9])
def test_settings_accept_any_positive_period_including_sub_second(name, value) -> None:
    assert getattr(Settings(**{name: value}), name) == value


@pytest.mark.parametrize("name", PERIODS)
@pytest.mark.parametrize("value", [0, 0.0, -0.001, -1, math.nan, math.inf, True, "5", None])
def test_settings_refuse_a_period_that_is_not_positive_and_finite(name, value) -> None:
    with pytest.raises(ValueError) as info:
        Settings(**{name: value})
    assert str(info.value) == f"Settings.{name} must be a positive number of seconds, not {value!r}"


@pytest.mark.parametrize("value", [0, 0.0, 0.001, 10])
def test_settings_accept_a_zero_or_positive_cooldown(value) -> None:
    assert Settings(cooldown_s=value).cooldown_s == value


@pytest.mark.parametrize("value", [-0.001, -1, math.nan, math.inf, False, "0"])
def test_settings_refuse_a_negative_or_non_numeric_cooldown(value) -> None:
    with pytest.raises(ValueError) as info:
        Settings(cooldown_s=value)
    assert str(info.value) == f"Settings.cooldown_s must be >= 0 seconds, not {value!r}"


def test_a_zero_cooldown_ends_on_the_next_tick() -> None:
    settings = Settings(cooldown_s=0)
    state, _ = step(idle(settings), Pressed("a1", WALL), 1.0)
    state, _ = step(state, Command("end", "a1"), 2.0)
    assert state.mode is Mode.COOLDOWN and next_deadline(state) == 2.0
    state, actions = step(state, Tick(), 2.0)
    assert state.mode is Mode.IDLE
    assert actions == (SetIndicator(Pattern.IDLE), PublishStatus(Mode.IDLE))


@settings(max_examples=60, deadline=None)
@given(period=st.floats(min_value=1e-3, max_value=1e6, allow_nan=False),
       cooldown=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_settings_keep_every_valid_value_as_given(period, cooldown) -> None:
    s = Settings(ack_timeout_s=period, stream_s=period, cooldown_s=cooldown, retry_s=period,
                 max_extend_s=period)
    assert (s.ack_timeout_s, s.stream_s, s.cooldown_s, s.retry_s, s.max_extend_s) == (
        period, period, cooldown, period, period)


# --- the stream of an unacknowledged alert is kept on --------------------------------------------


def test_an_unacknowledged_stream_is_kept_on_with_one_log_and_nothing_else() -> None:
    settings = Settings(ack_timeout_s=1000.0, stream_s=120.0)
    state, _ = step(idle(settings), Pressed("a1", WALL), 0.0)
    state, _ = step(state, AlertPublished("a1", ok=True), 0.0)
    assert next_deadline(state) == 120.0
    _, actions = step(state, Tick(), 119.999)
    assert actions == ()
    state, actions = step(state, Tick(), 120.0)
    assert actions == (Log("info", "stream for a1 kept on: no ack yet"),)
    assert state.mode is Mode.STREAMING and state.incident.stream_deadline == 240.0
