"""Property tests: random event sequences with non-decreasing time against the machine's rules.

Events are drawn as symbolic specs and resolved against the current state while the sequence
runs, so commands and publish results can target the current alert, another one, or none.
"""

from __future__ import annotations

import copy
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.firmware.machine import (
    INCIDENT_MODES,
    TRANSITIONS,
    Action,
    AlertDraft,
    AlertPublished,
    Boot,
    Command,
    Connected,
    Disconnected,
    FaultCleared,
    FaultRaised,
    Mode,
    PersistAlert,
    Pressed,
    PublishAlert,
    PublishEvent,
    Released,
    Resume,
    SelftestDone,
    SetIndicator,
    State,
    StopStream,
    Tick,
    initial_state,
    next_deadline,
    step,
)
from pinkbutton.hal.base import Pattern

FAULT_NAMES = ["camera", "mic", "tamper", "broker_denied"]
TARGETS = ["current", "other", None]

# Each event is one flat record (name plus every parameter any event might use; resolve()
# picks what it needs). Drawing the name with sampled_from over a weighted list keeps the mix
# close to those weights: presses, ticks, room commands and publish results move the machine,
# so they come up most; without that most sequences never leave the first modes.
EVENT_NAMES = (
    ["press"] * 3
    + ["tick"] * 4
    + ["command"] * 4
    + ["published"] * 2
    + ["release", "boot", "selftest_done", "connected", "disconnected", "fault", "clear"]
    + ["resume"]
)
EVENT_FIELDS = (
    EVENT_NAMES,
    ["ack", "dispatched", "end", "end", "selftest", "extend", "bogus"],  # command kind
    ["current", "current", "other", None],  # which alert a command/result names
    [True, False],  # publish ok / self-test found a fault
    FAULT_NAMES,
    [None, -1.0, 0.0, 30.0, 10_000.0],  # extend_s
    ["emergency", "emergency", "test"],  # press kind
)
event_specs = st.tuples(*(st.sampled_from(choices) for choices in EVENT_FIELDS))


# Most runs start from a booted kiosk (as in the field); some from power-on, where any event
# may still arrive before the self-test finishes.
def prelude(*names_and_faults: tuple[str, bool]) -> tuple:
    return tuple(
        (name, "ack", None, ok, "camera", None, "emergency") for name, ok in names_and_faults
    )


PRELUDES = (
    (),
    prelude(("boot", False)),  # self-test still running
    prelude(("boot", False), ("selftest_done", False)),
    prelude(("boot", False), ("selftest_done", False), ("connected", False)),
    prelude(("boot", False), ("selftest_done", True), ("connected", False)),
)
preludes = st.sampled_from(PRELUDES)

# How time moves before each event: by some seconds, or straight to the next deadline
# (so timers really fire and escalation, retries and cooldowns get exercised).
advances = st.one_of(
    st.floats(min_value=0.0, max_value=200.0, allow_nan=False), st.just("to_deadline")
)

sequences = st.builds(
    lambda prelude, rest: [(0.0, spec) for spec in prelude] + rest,
    preludes,
    st.lists(st.tuples(advances, event_specs), min_size=5, max_size=100),
)


def current_alert_id(state: State) -> str:
    return state.incident.draft.alert_id if state.incident else "none"


def resolve(spec: tuple, state: State, press_number: int, now: float) -> object:
    name, command, target, ok, fault, extend_s, kind = spec
    alert_id = {"current": current_alert_id(state), "other": "stale", None: None}[target]
    if name == "press":
        return Pressed(f"alert-{press_number}", wall=1e9 + now, kind=kind)
    if name == "resume":
        draft = AlertDraft(f"resumed-{press_number}-{now}", 1, kind, 1e9, 0.0, 1, 1, False, None)
        return Resume(draft)
    if name == "published":
        reason = "" if ok else "Not authorized"
        return AlertPublished(alert_id or current_alert_id(state), ok=ok, reason=reason)
    if name == "command":
        return Command(command, alert_id=alert_id, extend_s=extend_s, operator="op")
    if name == "selftest_done":
        return SelftestDone(frozenset({fault}) if ok else frozenset())
    if name == "fault":
        return FaultRaised(fault, "detail")
    if name == "clear":
        return FaultCleared(fault)
    simple = {
        "release": Released,
        "boot": Boot,
        "connected": Connected,
        "disconnected": Disconnected,
        "tick": Tick,
    }
    return simple[name]()


def advance(now: float, how: float | str, state: State) -> float:
    if how == "to_deadline":
        due = next_deadline(state)
        return now if due is None else max(now, due)
    return now + how


class RuleChecker:
    """Feeds a sequence through step() and checks every rule on every step and at the end."""

    def __init__(self) -> None:
        self.state, self.now = initial_state(), 0.0
        self.presses = self.presses_without_incident = 0
        self.persisted: list[PersistAlert] = []
        self.mode_changes: set[tuple[Mode, type, Mode]] = set()

    def feed(self, how: float | str, spec: tuple) -> None:
        state = self.state
        self.now = now = advance(self.now, how, state)
        event = resolve(spec, state, self.presses, now)
        before = copy.deepcopy(state)

        new_state, actions = step(state, event, now)  # must never raise InvalidTransition

        assert state == before, "step mutated its input"
        assert all(isinstance(action, Action) for action in actions), actions
        assert step(state, event, now) == (new_state, actions), "step is not deterministic"
        assert new_state.mode in TRANSITIONS[(state.mode, type(event))]
        assert (new_state.incident is not None) == (new_state.mode in INCIDENT_MODES)
        self.mode_changes.add((state.mode, type(event), new_state.mode))

        new_persists = [action for action in actions if isinstance(action, PersistAlert)]
        if isinstance(event, Pressed):
            self.presses += 1
            self.check_press(state, event, new_state, actions, new_persists)
        else:
            assert not new_persists
        self.persisted += new_persists

        if state.incident is not None and new_state.incident is None:
            # An incident only ends when the room says so or after an operator acknowledged it.
            ended_by_room = isinstance(event, Command) and event.kind == "end"
            assert ended_by_room or state.incident.acked
            assert StopStream(state.incident.draft.alert_id) in actions
        set_aside = (isinstance(event, Pressed) and state.incident is not None
                     and state.incident.draft.kind == "test" != event.kind)
        if set_aside:  # a real press during a test: the test's stream stops, a new incident
            assert StopStream(state.incident.draft.alert_id) in actions
        elif state.incident is not None and new_state.incident is not None:
            # Retries and re-announcements keep the alert's identity and sequence number.
            assert new_state.incident.draft.alert_id == state.incident.draft.alert_id
            assert new_state.incident.draft.seq == state.incident.draft.seq
        for action in actions:
            if isinstance(action, PublishAlert):
                assert action.draft.alert_id == current_alert_id(new_state)
                assert new_state.online
        if isinstance(event, Released) or (
            isinstance(event, Command)
            and event.alert_id is not None
            and event.alert_id != current_alert_id(state)
        ):
            # A release does nothing; nor does a command naming an alert other than the current.
            assert new_state == state
        if isinstance(event, Tick):
            # After a Tick nothing is overdue any more: the runtime never spins.
            due = next_deadline(new_state)
            assert due is None or due > now
        self.state = new_state

    def check_press(self, state, event, new_state, actions, new_persists) -> None:
        # A press is never ignored: it either starts the incident or counts in it.
        assert new_state.incident is not None
        if state.incident is None or (state.incident.draft.kind == "test" != event.kind):
            # (a real press during a test incident starts a real incident of its own)
            self.presses_without_incident += 1
            assert new_state.incident.draft.alert_id == event.alert_id
            # The alert is on disk before the kiosk shows "sending".
            assert actions.index(new_persists[0]) < actions.index(SetIndicator(Pattern.SENDING))
        else:
            draft = new_state.incident.draft
            assert draft.presses == state.incident.draft.presses + 1
            detail = {"alert_id": draft.alert_id, "presses": draft.presses}
            assert PublishEvent("pressed_again", detail) in actions

    def finish(self) -> None:
        assert len(self.persisted) == self.presses_without_incident
        ids = [action.draft.alert_id for action in self.persisted]
        assert len(set(ids)) == len(ids)
        seqs = [action.draft.seq for action in self.persisted]
        assert all(earlier < later for earlier, later in zip(seqs, seqs[1:], strict=False))


@settings(max_examples=300, deadline=None)
@given(sequences)
def test_random_sequences_keep_every_rule(sequence) -> None:
    checker = RuleChecker()
    for how, spec in sequence:
        checker.feed(how, spec)
    checker.finish()


def test_long_random_walks_keep_every_rule_and_cover_the_table() -> None:
    # Hypothesis favours short sequences, which rarely get deep into an incident; these
    # seeded walks are long, and must between them take every declared mode change.
    declared = {
        (mode, event_type, target)
        for (mode, event_type), targets in TRANSITIONS.items()
        for target in targets
        if target is not mode
    }
    taken: set[tuple[Mode, type, Mode]] = set()
    for seed in range(40):
        rng = random.Random(seed)
        checker = RuleChecker()
        for spec in rng.choice(PRELUDES):
            checker.feed(0.0, spec)
        for _ in range(400):
            how = "to_deadline" if rng.random() < 0.3 else rng.uniform(0.0, 40.0)
            spec = tuple(rng.choice(choices) for choices in EVENT_FIELDS)
            checker.feed(how, spec)
        checker.finish()
        taken |= checker.mode_changes
    assert declared - taken == set()


@settings(max_examples=100, deadline=None)
@given(sequences)
def test_replaying_a_sequence_gives_the_same_result(sequence) -> None:
    def replay() -> tuple[State, list[tuple]]:
        state, now, presses, trace = initial_state(), 0.0, 0, []
        for how, spec in sequence:
            now = advance(now, how, state)
            event = resolve(spec, state, presses, now)
            presses += isinstance(event, Pressed)
            state, actions = step(state, event, now)
            trace.append(actions)
        return state, trace

    assert replay() == replay()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=60.0, allow_nan=False), max_size=30))
def test_presses_while_idle_each_make_exactly_one_incident(gaps) -> None:
    state, now = initial_state(), 0.0
    state = step(state, Boot(), now)[0]
    state = step(state, SelftestDone(frozenset()), now)[0]
    incidents = []
    for number, gap in enumerate(gaps):
        now += gap
        state, actions = step(state, Pressed(f"p{number}", 0.0), now)
        incidents += [a.draft for a in actions if isinstance(a, PersistAlert)]
        if number % 3 == 2 and state.incident:  # the room ends some incidents
            state = step(state, Command("end"), now)[0]
        due = next_deadline(state)
        if due is not None and state.mode is Mode.COOLDOWN:
            state = step(state, Tick(), due)[0]
            now = max(now, due)
    assert [draft.seq for draft in incidents] == list(range(1, len(incidents) + 1))
    ends_followed_by_a_press = sum(1 for n in range(len(gaps) - 1) if n % 3 == 2)
    assert len(incidents) == (1 + ends_followed_by_a_press if gaps else 0)
