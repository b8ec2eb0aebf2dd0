"""Rules of the state machine pinned at their boundaries (issue 15: what mutation testing showed
no test noticed). Each test names the rule; limits are checked exactly at the limit and one
step past it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.firmware.machine import (
    AlertDraft,
    AlertPublished,
    Boot,
    Command,
    Connected,
    Disconnected,
    FaultCleared,
    FaultRaised,
    Log,
    Mode,
    Pressed,
    PublishAlert,
    PublishEvent,
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
from pinkbutton.hal.base import Pattern

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


# --- every log line: its level (the runtime maps it to a logging level) and its text ----------


def at(state: State, *events, now: float = 0.0) -> tuple[State, list]:
    actions: list = []
    for event in events:
        state, more = step(state, event, now)
        actions += more
    return state, actions


def alerting(online: bool = True, now: float = 0.0) -> State:
    return at(idle(online=online), Pressed("a1", WALL), now=now)[0]


def streaming(now: float = 0.0) -> State:
    return at(alerting(now=now), AlertPublished("a1", ok=True), now=now)[0]


def acked(now: float = 0.0) -> State:
    return at(streaming(now), Command("ack", "a1"), now=now)[0]


def logs(actions) -> list[tuple[str, str]]:
    return [(a.level, a.message) for a in actions if isinstance(a, Log)]


DENIED_HINT = "device.id must equal the CN of the device certificate (the broker ACL is per CN)"

LOG_LINES = [
    (lambda: idle(), Boot(), ("debug", "boot ignored in idle")),
    (lambda: alerting(), Resume(DRAFT),
     ("info", "alert old stays in the outbox for redelivery: another incident is running")),
    (lambda: idle(), Disconnected(),
     ("warning", "broker connection lost")),
    (lambda: idle(), Disconnected("eof"),
     ("warning", "broker connection lost: eof")),
    (lambda: alerting(), AlertPublished("zz", ok=True),
     ("debug", "publish result for zz ignored: not current")),
    (lambda: streaming(), AlertPublished("a1", ok=True), ("debug", "re-announcement of a1 delivered")),
    (lambda: alerting(), AlertPublished("a1", ok=False),
     ("error", f"broker refused alert a1: no reason given (will retry); {DENIED_HINT}")),
    (lambda: streaming(), AlertPublished("a1", ok=False, reason="Not authorized"),
     ("error", f"broker refused alert a1: Not authorized; {DENIED_HINT}")),
    (lambda: idle(), Command("selfdestruct"), ("warning", "unknown command 'selfdestruct' ignored")),
    (lambda: idle(), Command("ack", "a1"), ("info", "command ack ignored: no incident in idle")),
    (lambda: alerting(), Command("end", "zz"),
     ("warning", "command end for alert zz ignored: current is a1")),
    (lambda: alerting(), Command("selftest"),
     ("info", "selftest deferred: not run in alerting; ask again when idle")),
    (lambda: acked(), Command("ack", "a1"), ("debug", "alert a1 already acknowledged")),
    (lambda: acked(), Command("dispatched", "a1", operator="op7"),
     ("info", "alert a1: team dispatched by op7")),
    (lambda: acked(), Command("dispatched", "a1"), ("info", "alert a1: team dispatched")),
    (lambda: streaming(), Command("ack", "a1", operator="op7"), ("info", "alert a1 ack by op7")),
    (lambda: streaming(), Command("dispatched"), ("info", "alert a1 dispatched")),
    (lambda: streaming(), Command("extend", "a1", extend_s=0.5, operator="op"),
     ("info", "stream for alert a1 extended by 0.5 s by op")),
    (lambda: streaming(), Command("extend", "a1", extend_s=0),
     ("warning", "extend ignored: extend_s must be > 0, not 0")),
    (lambda: streaming(), Command("end", "a1", operator="op7"),
     ("info", "alert a1 ended by the control room by op7")),
    (lambda: streaming(), Command("end", "a1"), ("info", "alert a1 ended by the control room")),
    (lambda: idle(), FaultRaised("camera"),
     ("error", "fault camera")),
    (lambda: idle(), FaultRaised(
        "camera", "dead"), ("error", "fault camera: dead")),
    (lambda: idle(), FaultCleared("mic"),
     ("debug", "fault mic cleared but was not raised")),
]


@pytest.mark.parametrize("make,event,line", LOG_LINES)
def test_each_log_line_has_its_level_and_text(make, event, line) -> None:
    _, actions = step(make(), event, 1.0)
    assert logs(actions) == [line]


def test_the_end_of_an_acknowledged_stream_is_logged() -> None:
    state, actions = step(acked(), Tick(), S.stream_s)
    assert logs(actions) == [("info", "alert a1 ended: stream time is up")]


def test_an_escalation_says_how_long_since_the_press() -> None:
    state = streaming(now=100.0)
    _, actions = step(state, Tick(), 130.0)
    assert logs(actions) == [
        ("warning", "alert a1: no operator ack after 30 s, re-announcing (announce 2)")]


def test_an_offline_escalation_is_logged_even_when_the_retry_is_due_in_the_same_tick() -> None:
    state = alerting(online=False)
    state, actions = step(state, Tick(), 30.0)  # retry (due at 5) and escalation (30) at once
    assert actions == (
        Log("warning", "alert a1: no operator ack after 30 s, re-announcing (announce 2)"),)
    assert state.incident.retry_at == 30.0 + S.retry_s and state.incident.ack_deadline == 60.0


# --- state values the actions do not show ----------------------------------------------------


def test_an_acknowledged_alert_has_no_retry_pending() -> None:
    state, _ = step(alerting(), Command("ack", "a1"), 1.0)
    assert state.mode is Mode.ACKNOWLEDGED and state.incident.retry_at is None


def test_a_disconnect_sets_online_to_false() -> None:
    state, _ = step(idle(), Disconnected(),
                    1.0)
    assert state.online is False


def test_a_resume_in_cooldown_leaves_no_cooldown_behind() -> None:
    state, _ = at(streaming(), Command("end", "a1"), now=1.0)
    assert state.mode is Mode.COOLDOWN and state.cooldown_until == 1.0 + S.cooldown_s
    state, _ = step(state, Resume(DRAFT), 2.0)
    assert state.mode is Mode.ALERTING and state.cooldown_until is None


def test_a_sub_second_extend_is_applied() -> None:
    state, _ = step(streaming(), Command("extend", "a1", extend_s=0.5), 1.0)
    assert state.incident.stream_deadline == S.stream_s + 0.5


def test_a_selftest_that_finds_a_fault_when_idle_reports_in_order() -> None:
    _, actions = step(idle(), SelftestDone(frozenset({"mic", "camera"})), 1.0)
    assert actions == (
        PublishEvent("selftest", {"ok": False, "faults": "camera,mic"}),
        SetIndicator(Pattern.FAULT),
        PublishEvent("fault", {"faults": "camera,mic"}),
        PublishStatus(Mode.FAULT),
    )


def test_step_names_what_it_got_when_it_is_not_an_event() -> None:
    with pytest.raises(TypeError) as info:
        step(idle(), "pressed", 0.0)
    assert str(info.value) == "step() got str, which is not a machine event"


def test_a_broken_transition_table_is_refused_with_the_exact_pair_named() -> None:
    from pinkbutton.firmware.machine import (
        EVENT_TYPES,
        TRANSITIONS,
        TransitionTableError,
        validate_transitions,
    )

    def refused(change: dict, message: str) -> None:
        with pytest.raises(TransitionTableError) as info:
            validate_transitions({**TRANSITIONS, **change}, EVENT_TYPES)
        assert str(info.value) == message

    refused({(Mode.IDLE, Tick): {"idle"}}, "(<Mode.IDLE: 'idle'>, Tick): target 'idle' is not a Mode")
    refused({(Mode.IDLE, Tick): set()}, "(<Mode.IDLE: 'idle'>, Tick): declares no target mode")
    refused({(Mode.IDLE, "tick"): {Mode.IDLE}},
            "(<Mode.IDLE: 'idle'>, tick): no handler for that event type")
    refused({("resting", Tick): {Mode.IDLE}}, "('resting', Tick): 'resting' is not a Mode")
