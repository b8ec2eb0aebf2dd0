"""Unit tests for the pure state machine: every declared mode change and every rule."""

from __future__ import annotations

import dataclasses
import re

import pytest
from pinkbutton.firmware import machine
from pinkbutton.firmware.machine import (
    BROKER_DENIED,
    EVENT_TYPES,
    TRANSITIONS,
    AlertDraft,
    AlertPublished,
    Boot,
    Command,
    Connected,
    Disconnected,
    FaultCleared,
    FaultRaised,
    Incident,
    InvalidTransition,
    Log,
    Mode,
    PersistAlert,
    Pressed,
    PublishAlert,
    PublishEvent,
    PublishStatus,
    Released,
    Resume,
    RunSelftest,
    SelftestDone,
    SetIndicator,
    Settings,
    StartStream,
    State,
    StopStream,
    Tick,
    TransitionTableError,
    initial_state,
    next_deadline,
    step,
    validate_transitions,
)
from pinkbutton.hal.base import Pattern

WALL = 1_700_000_000.0
NO_FAULTS: frozenset[str] = frozenset()


# --- helpers: reach each mode the way the runtime would, through step() ---------------------


def run(state: State, *events: object, now: float = 0.0) -> tuple[State, list[object]]:
    """Feed events at one instant; return the final state and all actions, in order."""
    actions: list[object] = []
    for event in events:
        state, more = step(state, event, now)
        actions += more
    return state, actions


def of(actions: list[object], kind: type) -> list[object]:
    return [action for action in actions if isinstance(action, kind)]


def idle(online: bool = True, faults: frozenset[str] = NO_FAULTS) -> State:
    events: list[object] = [Boot(), SelftestDone(faults)]
    if online:
        events.append(Connected())
    return run(initial_state(), *events)[0]


def alerting(online: bool = True, alert_id: str = "a1", at: float = 0.0) -> State:
    return run(idle(online), Pressed(alert_id, WALL), now=at)[0]


def streaming(at: float = 0.0) -> State:
    return run(alerting(at=at), AlertPublished("a1", ok=True), now=at)[0]


def acknowledged(at: float = 0.0) -> State:
    return run(streaming(at=at), Command("ack", "a1"), now=at)[0]


def cooldown(at: float = 0.0) -> State:
    return run(acknowledged(at=at), Command("end", "a1"), now=at)[0]


OLD_DRAFT = AlertDraft(
    alert_id="old", seq=7, kind="emergency", pressed_wall=WALL - 60, pressed_mono=-60.0,
    presses=1, announce=1, escalated=False, follows=None,
)


def booting() -> State:
    return initial_state()


def selftesting() -> State:
    return run(initial_state(), Boot())[0]


def faulted() -> State:
    return idle(faults=frozenset({"camera"}))


STATE_IN = {
    Mode.BOOT: booting,
    Mode.SELFTEST: selftesting,
    Mode.IDLE: idle,
    Mode.ALERTING: alerting,
    Mode.STREAMING: streaming,
    Mode.ACKNOWLEDGED: acknowledged,
    Mode.COOLDOWN: cooldown,
    Mode.FAULT: faulted,
}


def test_helpers_reach_the_mode_they_are_named_for() -> None:
    for mode, make in STATE_IN.items():
        assert make().mode is mode


# --- the transition table -------------------------------------------------------------------


# One scenario per declared mode change: (start, event, now, expected mode).
MODE_CHANGES = [
    (booting, Boot(), 0.0, Mode.SELFTEST),
    (selftesting, SelftestDone(NO_FAULTS), 0.0, Mode.IDLE),
    (selftesting, SelftestDone(frozenset({"mic"})), 0.0, Mode.FAULT),
    (idle, SelftestDone(frozenset({"mic"})), 0.0, Mode.FAULT),
    (booting, Pressed("p", WALL), 0.0, Mode.ALERTING),
    (selftesting, Pressed("p", WALL), 0.0, Mode.ALERTING),
    (idle, Pressed("p", WALL), 0.0, Mode.ALERTING),
    (faulted, Pressed("p", WALL), 0.0, Mode.ALERTING),
    (cooldown, Pressed("p", WALL), 1.0, Mode.ALERTING),
    (alerting, AlertPublished("a1", ok=True), 0.0, Mode.STREAMING),
    (alerting, Command("ack", "a1"), 0.0, Mode.ACKNOWLEDGED),
    (alerting, Command("end", "a1"), 0.0, Mode.COOLDOWN),
    (streaming, Command("ack"), 0.0, Mode.ACKNOWLEDGED),
    (streaming, Command("end"), 0.0, Mode.COOLDOWN),
    (acknowledged, Command("end", "a1"), 0.0, Mode.COOLDOWN),
    (acknowledged, Tick(), 120.0, Mode.COOLDOWN),
    (cooldown, Tick(), 10.0, Mode.IDLE),
    (lambda: run(cooldown(), FaultRaised("tamper"))[0], Tick(), 10.0, Mode.FAULT),
    (idle, FaultRaised("camera"), 0.0, Mode.FAULT),
    (faulted, FaultCleared("camera"), 0.0, Mode.IDLE),
    (booting, Resume(OLD_DRAFT), 0.0, Mode.ALERTING),
    (selftesting, Resume(OLD_DRAFT), 0.0, Mode.ALERTING),
    (idle, Resume(OLD_DRAFT), 0.0, Mode.ALERTING),
    (faulted, Resume(OLD_DRAFT), 0.0, Mode.ALERTING),
    (cooldown, Resume(OLD_DRAFT), 1.0, Mode.ALERTING),
    # a real press during a test incident (pinkbutton-diag test-alert) starts a real one
    (lambda: run(idle(), Pressed("t", WALL, "test"), AlertPublished("t", ok=True))[0],
     Pressed("p", WALL), 0.0, Mode.ALERTING),
    (lambda: run(idle(), Pressed("t", WALL, "test"), Command("ack", "t"))[0],
     Pressed("p", WALL), 0.0, Mode.ALERTING),
]


@pytest.mark.parametrize(("make", "event", "now", "expected"), MODE_CHANGES)
def test_declared_mode_change(make, event, now, expected) -> None:
    state = make()
    new_state, _ = step(state, event, now)
    assert new_state.mode is expected
    assert expected in TRANSITIONS[(state.mode, type(event))]


def test_every_declared_mode_change_has_a_scenario() -> None:
    declared = {
        (mode, event_type, target)
        for (mode, event_type), targets in TRANSITIONS.items()
        for target in targets
        if target is not mode
    }
    covered = {(make().mode, type(event), expected) for make, event, _, expected in MODE_CHANGES}
    assert declared == covered


def test_table_covers_every_mode_and_event_type() -> None:
    assert {mode for mode, _ in TRANSITIONS} == set(Mode)
    assert len(TRANSITIONS) == len(Mode) * len(EVENT_TYPES)


def test_pairs_not_listed_as_mode_changes_may_only_stay() -> None:
    assert TRANSITIONS[(Mode.STREAMING, Tick)] == {Mode.STREAMING}
    assert TRANSITIONS[(Mode.ALERTING, Pressed)] == {Mode.ALERTING}
    assert TRANSITIONS[(Mode.BOOT, Boot)] == {Mode.SELFTEST}


def test_validator_accepts_the_real_table() -> None:
    assert validate_transitions(TRANSITIONS, EVENT_TYPES) is None
    assert validate_transitions(TRANSITIONS, EVENT_TYPES, start=Mode.BOOT) is None
    # It checks reachability from the given start: nothing leads back to BOOT or SELFTEST.
    with pytest.raises(TransitionTableError) as info:
        validate_transitions(TRANSITIONS, EVENT_TYPES, start=Mode.IDLE)
    assert str(info.value) == "modes not reachable from idle: boot, selftest"


def _broken(change) -> dict:
    table = dict(TRANSITIONS)
    change(table)
    return table


def _make_cooldown_unreachable(table: dict) -> None:
    for key, targets in table.items():
        if key[0] is not Mode.COOLDOWN and Mode.COOLDOWN in targets:
            table[key] = frozenset(targets - {Mode.COOLDOWN}) or frozenset({key[0]})


class NotHandled:
    pass


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (_broken(lambda t: t.pop((Mode.IDLE, Tick))), "(idle, Tick) is not declared"),
        (_broken(lambda t: t.update({(Mode.IDLE, Tick): {"idle"}})), "is not a Mode"),
        (_broken(lambda t: t.update({(Mode.IDLE, Tick): set()})), "no target"),
        (_broken(lambda t: t.update({("resting", Tick): {Mode.IDLE}})), "is not a Mode"),
        (_broken(lambda t: t.update({(Mode.IDLE, NotHandled): {Mode.IDLE}})), "no handler"),
        (
            {k: v for k, v in TRANSITIONS.items() if k[0] is not Mode.FAULT},
            "mode fault has no transitions",
        ),
        (_broken(_make_cooldown_unreachable), "not reachable from boot: cooldown"),
    ],
)
def test_validator_rejects_a_broken_table(table, message) -> None:
    with pytest.raises(TransitionTableError, match=re.escape(message)):
        validate_transitions(table, EVENT_TYPES)


def test_step_refuses_a_mode_change_the_table_does_not_declare(monkeypatch) -> None:
    def buggy(state, event, now):
        return dataclasses.replace(state, mode=Mode.FAULT), []

    monkeypatch.setitem(machine._HANDLERS, Released, buggy)
    with pytest.raises(InvalidTransition, match="idle --Released--> fault"):
        step(idle(), Released(), 0.0)


def test_step_rejects_something_that_is_not_an_event() -> None:
    with pytest.raises(TypeError, match="not a machine event"):
        step(idle(), "pressed", 0.0)


# --- boot and self-test -----------------------------------------------------------------------


def test_boot_starts_the_selftest_with_the_indicator_off() -> None:
    state, actions = step(initial_state(), Boot(), 0.0)
    assert state.mode is Mode.SELFTEST
    assert actions == (SetIndicator(Pattern.OFF), RunSelftest())


def test_initial_state_is_boot_and_keeps_the_sequence() -> None:
    state = initial_state(Settings(retry_s=2.0), next_seq=42)
    assert (state.mode, state.next_seq, state.settings.retry_s) == (Mode.BOOT, 42, 2.0)
    assert not state.online and state.incident is None and state.faults == NO_FAULTS


def test_selftest_pass_goes_idle() -> None:
    state, actions = run(selftesting(), SelftestDone(NO_FAULTS))
    assert state.mode is Mode.IDLE
    assert SetIndicator(Pattern.IDLE) in actions
    assert PublishStatus(Mode.IDLE) in actions


def test_selftest_failure_goes_fault_and_reports_it() -> None:
    state, actions = run(selftesting(), SelftestDone(frozenset({"camera", "mic"})))
    assert state.mode is Mode.FAULT
    assert state.faults == {"camera", "mic"}
    assert SetIndicator(Pattern.FAULT) in actions
    assert PublishEvent("fault", {"faults": "camera,mic"}) in actions
    assert PublishEvent("selftest", {"ok": False, "faults": "camera,mic"}) in actions


def test_failed_checks_make_the_selftest_not_ok_and_are_named_without_new_faults() -> None:
    idle_with_fault = dataclasses.replace(selftesting(), faults=frozenset({"camera_failed"}))
    state, actions = run(idle_with_fault, SelftestDone(NO_FAULTS, frozenset({"camera", "disk"}),
                                                       "camera: fault camera_failed"))
    assert state.faults == {"camera_failed"} and state.mode is Mode.FAULT
    assert actions[0] == PublishEvent("selftest", {
        "ok": False, "faults": "", "failed": "camera,disk", "why": "camera: fault camera_failed"})
    state, actions = run(selftesting(), SelftestDone(NO_FAULTS, frozenset({"certificate"}), "x"))
    assert state.mode is Mode.IDLE and state.faults == NO_FAULTS  # reported, not a fault
    assert actions[0].as_dict()["ok"] is False


def test_selftest_command_runs_when_idle_or_faulted() -> None:
    for state in (idle(), faulted()):
        assert run(state, Command("selftest"))[1] == [RunSelftest()]


@pytest.mark.parametrize("make", [alerting, streaming, acknowledged, cooldown, selftesting])
def test_selftest_command_is_deferred_otherwise(make) -> None:
    state = make()
    new_state, actions = run(state, Command("selftest"))
    assert new_state == state
    assert not of(actions, RunSelftest)
    assert "deferred" in of(actions, Log)[0].message


def test_selftest_result_when_idle_can_raise_a_fault() -> None:
    state, actions = run(idle(), SelftestDone(frozenset({"mic"})))
    assert state.mode is Mode.FAULT
    assert SetIndicator(Pattern.FAULT) in actions


def test_selftest_result_keeps_faults_it_cannot_see() -> None:
    state = run(faulted(), FaultRaised(BROKER_DENIED))[0]
    state = run(state, SelftestDone(NO_FAULTS))[0]
    assert state.mode is Mode.FAULT
    assert BROKER_DENIED in state.faults


# --- pressing -----------------------------------------------------------------------------------


def test_press_starts_an_incident_with_actions_in_order() -> None:
    state, actions = step(idle(), Pressed("a1", WALL), 100.0)
    draft = AlertDraft(
        alert_id="a1",
        seq=1,
        kind="emergency",
        pressed_wall=WALL,
        pressed_mono=100.0,
        presses=1,
        announce=1,
        escalated=False,
        follows=None,
    )
    assert actions == (
        PersistAlert(draft),
        SetIndicator(Pattern.SENDING),
        PublishAlert(draft),
        PublishStatus(Mode.ALERTING),
        StartStream("a1"),
    )
    assert state.mode is Mode.ALERTING
    assert state.next_seq == 2
    assert state.incident == Incident(
        draft=draft,
        delivered=False,
        acked=False,
        dispatched=False,
        ack_deadline=130.0,
        stream_deadline=220.0,
        retry_at=105.0,
    )


def test_press_kind_is_carried_into_the_draft() -> None:
    state = run(idle(), Pressed("t1", WALL, kind="test"))[0]
    assert state.incident.draft.kind == "test"


@pytest.mark.parametrize("make", [booting, selftesting, idle, faulted, cooldown])
def test_persist_precedes_sending_indicator_in_every_mode_without_incident(make) -> None:
    _, actions = run(make(), Pressed("p", WALL), now=5.0)
    persist = actions.index(PersistAlert(of(actions, PersistAlert)[0].draft))
    assert persist == 0
    assert actions.index(SetIndicator(Pattern.SENDING)) == persist + 1


def test_press_offline_persists_without_publishing_then_connected_publishes() -> None:
    state, actions = run(idle(online=False), Pressed("a1", WALL), now=1.0)
    assert state.mode is Mode.ALERTING
    assert len(of(actions, PersistAlert)) == 1
    assert not of(actions, PublishAlert)

    state, actions = run(state, Connected(), now=3.0)
    assert state.online
    assert actions == [PublishStatus(Mode.ALERTING), PublishAlert(state.incident.draft)]
    assert state.incident.draft.alert_id == "a1"
    assert state.incident.retry_at == 8.0


@pytest.mark.parametrize("make", [alerting, streaming, acknowledged])
def test_second_press_extends_the_incident_and_never_starts_another(make) -> None:
    state = make()
    before = state.incident
    state, actions = run(state, Pressed("ignored-id", WALL + 50), now=50.0)
    assert state.mode is make().mode
    assert not of(actions, PersistAlert) and not of(actions, PublishAlert)
    assert state.incident.draft.alert_id == "a1"
    assert state.incident.draft.presses == 2
    assert state.incident.stream_deadline == 170.0  # max(120, 50 + 120)
    assert state.next_seq == before.draft.seq + 1
    assert actions == [PublishEvent("pressed_again", {"alert_id": "a1", "presses": 2})]


def test_second_press_never_shortens_the_stream() -> None:
    state = run(streaming(), Command("extend", extend_s=300.0))[0]  # deadline 420
    state = run(state, Pressed("x", WALL), now=10.0)[0]
    assert state.incident.stream_deadline == 420.0


@pytest.mark.parametrize("mode", list(Mode))
def test_release_changes_nothing(mode) -> None:
    state = STATE_IN[mode]()
    assert step(state, Released(), 1.0) == (state, ())


# --- delivery ---------------------------------------------------------------------------------


def test_puback_moves_to_streaming() -> None:
    state, actions = run(alerting(), AlertPublished("a1", ok=True))
    assert state.mode is Mode.STREAMING
    assert state.incident.delivered and state.incident.retry_at is None
    assert actions == [SetIndicator(Pattern.DELIVERED), PublishStatus(Mode.STREAMING)]


def test_denied_publish_stays_alerting_raises_broker_denied_and_retries() -> None:
    state, actions = run(alerting(), AlertPublished("a1", ok=False, reason="Not authorized"))
    assert state.mode is Mode.ALERTING
    assert BROKER_DENIED in state.faults
    [error] = [log for log in of(actions, Log) if log.level == "error"]
    assert "Not authorized" in error.message
    assert "device.id" in error.message and "CN" in error.message
    assert PublishEvent("fault", {"name": BROKER_DENIED, "detail": "Not authorized"}) in actions

    state, actions = run(state, Tick(), now=5.0)
    assert actions == [PublishAlert(state.incident.draft)]
    assert state.incident.retry_at == 10.0


def test_accepted_publish_clears_broker_denied() -> None:
    state = run(alerting(), AlertPublished("a1", ok=False, reason="Not authorized"))[0]
    state, actions = run(state, AlertPublished("a1", ok=True))
    assert state.mode is Mode.STREAMING
    assert BROKER_DENIED not in state.faults
    assert PublishEvent("fault_cleared", {"name": BROKER_DENIED}) in actions


def test_publish_result_for_another_alert_is_ignored() -> None:
    state = alerting()
    new_state, actions = run(state, AlertPublished("old", ok=True))
    assert new_state == state
    assert [log.level for log in actions] == ["debug"]


def test_publish_result_without_incident_is_ignored() -> None:
    state = idle()
    assert run(state, AlertPublished("a1", ok=False))[0] == state


@pytest.mark.parametrize("make", [streaming, acknowledged])
def test_reannouncement_delivered_later_changes_no_mode(make) -> None:
    state = make()
    new_state, _ = run(state, AlertPublished("a1", ok=True))
    assert new_state == state


def test_retry_waits_for_retry_at_and_republishes_the_same_draft() -> None:
    state = alerting()
    assert run(state, Tick(), now=4.9) == (state, [])
    state, actions = run(state, Tick(), now=5.0)
    assert actions == [PublishAlert(alerting().incident.draft)]
    assert state.incident.retry_at == 10.0


def test_retry_offline_only_pushes_the_retry_time() -> None:
    state = run(alerting(), Disconnected("network down"))[0]
    state, actions = run(state, Tick(), now=5.0)
    assert actions == []
    assert state.incident.retry_at == 10.0


def test_disconnect_keeps_the_mode_and_warns() -> None:
    for make in (idle, alerting, streaming):
        state, actions = run(make(), Disconnected("keepalive timeout"))
        assert not state.online and state.mode is make().mode
        assert actions == [Log("warning", "broker connection lost: keepalive timeout")]


def test_connect_outside_alerting_only_publishes_status() -> None:
    state = run(streaming(), Disconnected())[0]
    state, actions = run(state, Connected())
    assert state.online
    assert actions == [PublishStatus(Mode.STREAMING)]


# --- escalation -------------------------------------------------------------------------------


def test_no_operator_ack_reannounces_every_30_s_with_the_same_alert_id() -> None:
    state = streaming()
    assert next_deadline(state) == 30.0
    state, actions = run(state, Tick(), now=30.0)
    [published] = of(actions, PublishAlert)
    assert published.draft.alert_id == "a1"
    assert published.draft.announce == 2 and published.draft.escalated
    assert [log.level for log in of(actions, Log)] == ["warning"]
    assert state.incident.ack_deadline == 60.0
    assert state.mode is Mode.STREAMING

    state, actions = run(state, Tick(), now=60.0)
    assert of(actions, PublishAlert)[0].draft.announce == 3
    assert state.incident.ack_deadline == 90.0


def test_escalation_while_alerting_counts_as_the_retry() -> None:
    state = run(alerting(), Tick(), now=5.0)[0]
    state = run(state, Tick(), now=25.0)[0]  # retries at 5, 10, ... keep going
    state, actions = run(state, Tick(), now=30.0)
    assert len(of(actions, PublishAlert)) == 1
    assert state.incident.retry_at == 35.0


def test_escalation_offline_is_published_on_reconnect() -> None:
    state = run(alerting(online=False), Tick(), now=30.0)[0]
    assert state.incident.draft.announce == 2
    _, actions = run(state, Connected(), now=31.0)
    assert of(actions, PublishAlert)[0].draft.escalated


def test_acknowledged_incident_never_escalates() -> None:
    state = acknowledged()
    new_state, actions = run(state, Tick(), now=90.0)
    assert not of(actions, PublishAlert)
    assert new_state.incident.draft.announce == 1


# --- control-room commands --------------------------------------------------------------------


@pytest.mark.parametrize("make", [alerting, streaming])
def test_ack_shows_help_coming(make) -> None:
    state, actions = run(make(), Command("ack", "a1", operator="op7"))
    assert state.mode is Mode.ACKNOWLEDGED
    assert state.incident.acked and state.incident.delivered
    assert actions[:2] == [SetIndicator(Pattern.HELP_COMING), PublishStatus(Mode.ACKNOWLEDGED)]
    assert "op7" in of(actions, Log)[0].message


def test_ack_without_alert_id_means_the_current_incident() -> None:
    assert run(streaming(), Command("ack"))[0].mode is Mode.ACKNOWLEDGED


def test_second_ack_changes_nothing() -> None:
    state = acknowledged()
    assert run(state, Command("ack"))[0] == state


def test_dispatched_acknowledges_and_records_dispatch() -> None:
    state, actions = run(streaming(), Command("dispatched", "a1"))
    assert state.mode is Mode.ACKNOWLEDGED
    assert state.incident.acked and state.incident.dispatched
    assert SetIndicator(Pattern.HELP_COMING) in actions


def test_dispatched_after_ack_only_records_dispatch() -> None:
    state, actions = run(acknowledged(), Command("dispatched", "a1"))
    assert state.mode is Mode.ACKNOWLEDGED and state.incident.dispatched
    assert not of(actions, SetIndicator)


@pytest.mark.parametrize("kind", ["ack", "dispatched", "end", "extend"])
def test_command_for_another_alert_is_ignored(kind) -> None:
    state = streaming()
    new_state, actions = run(state, Command(kind, "someone-else", extend_s=60.0))
    assert new_state == state
    assert [type(action) for action in actions] == [Log]


@pytest.mark.parametrize("kind", ["ack", "dispatched", "end", "extend"])
def test_command_without_incident_is_ignored(kind) -> None:
    for make in (idle, cooldown, faulted):
        state = make()
        new_state, actions = run(state, Command(kind, "a1", extend_s=60.0))
        assert new_state == state
        assert [type(action) for action in actions] == [Log]


def test_unknown_command_is_ignored() -> None:
    state = streaming()
    new_state, actions = run(state, Command("selfdestruct", "a1"))
    assert new_state == state
    assert "selfdestruct" in actions[0].message


def test_extend_adds_to_the_stream_deadline_capped() -> None:
    state = run(streaming(), Command("extend", "a1", extend_s=60.0))[0]
    assert state.incident.stream_deadline == 180.0
    state = run(state, Command("extend", extend_s=10_000.0))[0]
    assert state.incident.stream_deadline == 780.0  # + max_extend_s (600)


@pytest.mark.parametrize("extend_s", [None, 0.0, -5.0, float("nan")])
def test_extend_needs_a_positive_duration(extend_s) -> None:
    state = streaming()
    new_state, actions = run(state, Command("extend", "a1", extend_s=extend_s))
    assert new_state == state
    assert actions[0].level == "warning"


@pytest.mark.parametrize("make", [alerting, streaming, acknowledged])
def test_end_goes_to_cooldown(make) -> None:
    state, actions = run(make(), Command("end", "a1"), now=40.0)
    assert state.mode is Mode.COOLDOWN
    assert state.incident is None
    assert state.cooldown_until == 50.0
    assert state.last_alert_id == "a1"
    assert actions[:2] == [StopStream("a1"), PublishStatus(Mode.COOLDOWN)]


# --- stream time and cooldown -----------------------------------------------------------------


def test_acknowledged_incident_ends_when_the_stream_time_is_up() -> None:
    state = acknowledged()
    assert next_deadline(state) == 120.0
    assert run(state, Tick(), now=119.0) == (state, [])
    state, actions = run(state, Tick(), now=120.0)
    assert state.mode is Mode.COOLDOWN
    assert StopStream("a1") in actions


@pytest.mark.parametrize("make", [alerting, streaming])
def test_unacknowledged_alert_is_never_silently_ended(make) -> None:
    state = make()
    for now in range(0, 1000, 5):
        state, actions = run(state, Tick(), now=float(now))
        assert not of(actions, StopStream)
    assert state.mode in (Mode.ALERTING, Mode.STREAMING)
    assert state.incident.stream_deadline > 995.0


def test_end_then_cooldown_then_idle() -> None:
    state = cooldown()
    assert next_deadline(state) == 10.0
    assert run(state, Tick(), now=9.0) == (state, [])
    state, actions = run(state, Tick(), now=10.0)
    assert state.mode is Mode.IDLE and state.cooldown_until is None
    assert actions == [SetIndicator(Pattern.IDLE), PublishStatus(Mode.IDLE)]


def test_press_during_cooldown_starts_a_new_incident_that_follows_the_last() -> None:
    state, actions = run(cooldown(), Pressed("a2", WALL + 5), now=5.0)
    assert state.mode is Mode.ALERTING
    draft = of(actions, PersistAlert)[0].draft
    assert (draft.alert_id, draft.seq, draft.follows) == ("a2", 2, "a1")
    assert state.cooldown_until is None


def test_press_after_cooldown_follows_nothing() -> None:
    state = run(cooldown(), Tick(), now=10.0)[0]
    state = run(state, Pressed("a2", WALL), now=11.0)[0]
    assert state.incident.draft.follows is None


def test_press_in_fault_still_alerts_and_returns_to_fault_after_cooldown() -> None:
    state, actions = run(faulted(), Pressed("a1", WALL))
    assert state.mode is Mode.ALERTING
    assert of(actions, PublishAlert)
    state = run(state, Command("end", "a1"), now=1.0)[0]
    state, actions = run(state, Tick(), now=11.0)
    assert state.mode is Mode.FAULT
    assert actions == [SetIndicator(Pattern.FAULT), PublishStatus(Mode.FAULT)]


# --- faults -----------------------------------------------------------------------------------


def test_fault_when_idle_goes_fault() -> None:
    state, actions = run(idle(), FaultRaised("camera", "no frames for 5 s"))
    assert state.mode is Mode.FAULT and state.faults == {"camera"}
    assert actions == [
        Log("error", "fault camera: no frames for 5 s"),  # the technician's log says why
        PublishEvent("fault", {"name": "camera", "detail": "no frames for 5 s"}),
        SetIndicator(Pattern.FAULT),
        PublishStatus(Mode.FAULT),
    ]


@pytest.mark.parametrize("make", [alerting, streaming, acknowledged, cooldown])
def test_fault_during_an_incident_changes_no_mode(make) -> None:
    state, actions = run(make(), FaultRaised("mic"))
    assert state.mode is make().mode
    assert "mic" in state.faults
    assert not of(actions, SetIndicator)


def test_clearing_the_last_fault_returns_to_idle() -> None:
    state = run(faulted(), FaultRaised("mic"))[0]
    state, actions = run(state, FaultCleared("camera"))
    assert state.mode is Mode.FAULT and state.faults == {"mic"}
    state, actions = run(state, FaultCleared("mic"))
    assert state.mode is Mode.IDLE
    assert actions == [
        PublishEvent("fault_cleared", {"name": "mic"}),
        SetIndicator(Pattern.IDLE),
        PublishStatus(Mode.IDLE),
    ]


def test_clearing_an_unknown_fault_changes_nothing() -> None:
    state = idle()
    new_state, actions = run(state, FaultCleared("tamper"))
    assert new_state == state
    assert [log.level for log in actions] == ["debug"]


# --- deadlines and ticks ----------------------------------------------------------------------


def test_next_deadline_per_mode() -> None:
    assert next_deadline(booting()) is None
    assert next_deadline(idle()) is None
    assert next_deadline(faulted()) is None
    assert next_deadline(alerting(at=100.0)) == 105.0  # retry
    assert next_deadline(streaming(at=100.0)) == 130.0  # ack escalation
    assert next_deadline(acknowledged(at=100.0)) == 220.0  # stream end
    assert next_deadline(cooldown(at=100.0)) == 110.0


@pytest.mark.parametrize("mode", list(Mode))
def test_tick_with_nothing_due_changes_nothing(mode) -> None:
    state = STATE_IN[mode]()
    due = next_deadline(state)
    now = 0.0 if due is None else due - 0.001
    assert step(state, Tick(), now) == (state, ())


# --- value types ------------------------------------------------------------------------------


def test_publish_event_detail_is_canonical_and_hashable() -> None:
    from_mapping = PublishEvent("fault", {"name": "camera", "detail": "x"})
    from_pairs = PublishEvent("fault", (("name", "camera"), ("detail", "x")))
    assert from_mapping == from_pairs
    assert hash(from_mapping) == hash(from_pairs)
    assert from_mapping.detail == (("detail", "x"), ("name", "camera"))
    assert from_mapping.as_dict() == {"name": "camera", "detail": "x"}


def test_publish_event_rejects_non_scalar_detail() -> None:
    with pytest.raises(TypeError, match="scalar"):
        PublishEvent("fault", {"names": ["a", "b"]})
    with pytest.raises(ValueError, match="repeats"):
        PublishEvent("fault", (("a", 1), ("a", 2)))


@pytest.mark.parametrize("field", ["ack_timeout_s", "stream_s", "retry_s", "max_extend_s"])
def test_settings_refuse_periods_that_would_spin(field) -> None:
    with pytest.raises(ValueError) as info:
        Settings(**{field: 0})
    assert str(info.value) == f"Settings.{field} must be a positive number of seconds, not 0"
    assert getattr(Settings(**{field: 0.25}), field) == 0.25, "a sub-second period is valid"


def test_settings_refuse_bad_cooldown_and_sequence() -> None:
    with pytest.raises(ValueError) as info:
        Settings(cooldown_s=-1)
    assert str(info.value) == "Settings.cooldown_s must be >= 0 seconds, not -1"
    assert Settings(cooldown_s=0).cooldown_s == 0, "a zero cooldown is valid"
    for bad in (0, -1, True, 1.0, "1"):
        with pytest.raises(ValueError) as info:
            initial_state(next_seq=bad)
        assert str(info.value) == f"next_seq must be an integer >= 1, not {bad!r}"
    assert initial_state(next_seq=1).next_seq == 1


def test_state_refuses_an_incident_mode_without_incident() -> None:
    with pytest.raises(ValueError) as info:
        State(mode=Mode.ALERTING, settings=Settings())
    assert str(info.value) == "State in mode alerting must have an incident"
    with pytest.raises(ValueError) as info:
        State(mode=Mode.IDLE, settings=Settings(), incident=alerting().incident)
    assert str(info.value) == "State in mode idle must not have an incident"
    with pytest.raises(ValueError) as info:
        State(mode=Mode.COOLDOWN, settings=Settings())
    assert str(info.value) == "State in mode cooldown needs cooldown_until"
    assert State(mode=Mode.COOLDOWN, settings=Settings(), cooldown_until=0.0).cooldown_until == 0.0


def test_values_are_frozen_and_slotted() -> None:
    state = alerting()
    samples = [
        state,
        state.settings,
        state.incident,
        state.incident.draft,
        *(cls.__new__(cls) for cls in EVENT_TYPES),
        SetIndicator(Pattern.IDLE),
        PublishEvent("x"),
        Log("info", "m"),
    ]
    for value in samples:
        assert not hasattr(value, "__dict__"), type(value).__name__
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.mode = Mode.IDLE
    with pytest.raises(dataclasses.FrozenInstanceError):
        Pressed("a", 0.0).alert_id = "b"


# --- resuming an alert left in the outbox ------------------------------------------------------


def test_resume_carries_on_with_the_same_alert_without_persisting_again() -> None:
    state, actions = step(idle(), Resume(OLD_DRAFT), 5.0)
    assert state.mode is Mode.ALERTING
    assert state.incident.draft.alert_id == "old"
    assert state.incident.draft.announce == 2
    assert state.next_seq == 8, "seq numbering continues after the resumed alert"
    assert of(actions, PersistAlert) == [], "already on disk"
    assert of(actions, SetIndicator) == [SetIndicator(Pattern.SENDING)]
    assert [a.draft.alert_id for a in of(actions, PublishAlert)] == ["old"]
    assert of(actions, StartStream) == [StartStream("old")]


def test_resume_offline_publishes_on_connect() -> None:
    state, actions = step(idle(online=False), Resume(OLD_DRAFT), 0.0)
    assert of(actions, PublishAlert) == []
    state, actions = step(state, Connected(), 1.0)
    assert [a.draft.alert_id for a in of(actions, PublishAlert)] == ["old"]


def test_resume_during_an_incident_leaves_the_incident_alone() -> None:
    state = alerting()
    new_state, actions = step(state, Resume(OLD_DRAFT), 1.0)
    assert new_state == state
    assert of(actions, PublishAlert) == [] and of(actions, Log)
