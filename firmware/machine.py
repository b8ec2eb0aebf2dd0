"""The kiosk's behaviour as one pure function: `step(state, event, now) -> (state, actions)`.

Nothing here does I/O, reads a clock, starts a thread or draws a random number. The runtime
feeds events in (button, transport, control-room commands, and a `Tick` whenever
`next_deadline(state)` has passed) and carries the returned actions out, in order. That keeps
every rule testable in microseconds and lets the simulator run thousands of kiosks at once.

`now` is always monotonic seconds. Wall time only enters on `Pressed.wall`, for the alert
stamp a human reads; alert ids also come in on `Pressed`, so `step` stays deterministic.

Which mode may follow which is declared once, in `TRANSITIONS`, and checked at import;
`step` raises `InvalidTransition` (a bug here, never bad input) for anything undeclared.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeGuard

from pinkbutton.hal.base import Pattern


class Mode(StrEnum):
    BOOT = "boot"
    SELFTEST = "selftest"
    IDLE = "idle"
    ALERTING = "alerting"  # alert durably queued, not yet acknowledged by the broker
    STREAMING = "streaming"  # broker confirmed the alert (PUBACK), no operator yet
    ACKNOWLEDGED = "acknowledged"  # an operator has seen it: "help coming"
    COOLDOWN = "cooldown"
    FAULT = "fault"


#: Modes in which `State.incident` is set (and only these).
INCIDENT_MODES = frozenset({Mode.ALERTING, Mode.STREAMING, Mode.ACKNOWLEDGED})

#: Fault added when the broker refuses our alert (PUBACK reason "Not authorized").
BROKER_DENIED = "broker_denied"


class InvalidTransition(Exception):
    """A handler produced a mode change that TRANSITIONS does not declare: a bug in this module."""


class TransitionTableError(ValueError):
    """The transition table is inconsistent (checked at import, and by tests on bad tables)."""


def _is_seconds(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Settings:
    ack_timeout_s: float = 30.0
    stream_s: float = 120.0
    cooldown_s: float = 10.0
    retry_s: float = 5.0
    max_extend_s: float = 600.0

    def __post_init__(self) -> None:
        # A zero period would make next_deadline() equal "now" after every Tick: the runtime
        # would spin. Cooldown is the exception: a zero cooldown simply ends on the next Tick.
        for name in ("ack_timeout_s", "stream_s", "retry_s", "max_extend_s"):
            value = getattr(self, name)
            if not (_is_seconds(value) and value > 0):
                raise ValueError(
                    f"Settings.{name} must be a positive number of seconds, not {value!r}"
                )
        if not (_is_seconds(self.cooldown_s) and self.cooldown_s >= 0):
            raise ValueError(f"Settings.cooldown_s must be >= 0 seconds, not {self.cooldown_s!r}")


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """Everything the alert message carries that the machine knows (site etc. are added later).

    `announce` is 1 for the first announcement and grows by one per re-announcement (escalation);
    `alert_id` never changes across retries or re-announcements. `follows` is the alert_id of the
    incident that had just ended when this press came during COOLDOWN, else None.
    """

    alert_id: str
    seq: int
    kind: str
    pressed_wall: float
    pressed_mono: float
    presses: int
    announce: int
    escalated: bool
    follows: str | None


@dataclass(frozen=True, slots=True)
class Incident:
    draft: AlertDraft
    delivered: bool  # the broker has PUBACKed it (or the room answered, which implies it)
    acked: bool
    dispatched: bool
    ack_deadline: float  # re-announce if no operator ack by then
    stream_deadline: float
    retry_at: float | None  # re-publish if still not delivered; only meaningful in ALERTING


@dataclass(frozen=True, slots=True)
class State:
    mode: Mode
    settings: Settings
    online: bool = False
    faults: frozenset[str] = frozenset()
    incident: Incident | None = None
    next_seq: int = 1
    cooldown_until: float | None = None
    last_alert_id: str | None = None

    def __post_init__(self) -> None:
        # Handlers rely on these; refusing a malformed State here keeps them short.
        if (self.incident is not None) != (self.mode in INCIDENT_MODES):
            must = "must" if self.mode in INCIDENT_MODES else "must not"
            raise ValueError(f"State in mode {self.mode} {must} have an incident")
        if self.mode is Mode.COOLDOWN and self.cooldown_until is None:
            raise ValueError("State in mode cooldown needs cooldown_until")


def initial_state(settings: Settings = Settings(), next_seq: int = 1) -> State:
    """Power-on state. `next_seq` lets the runtime continue numbering from its outbox."""
    if isinstance(next_seq, bool) or not isinstance(next_seq, int) or next_seq < 1:
        raise ValueError(f"next_seq must be an integer >= 1, not {next_seq!r}")
    return State(mode=Mode.BOOT, settings=settings, next_seq=next_seq)


# --- events (runtime -> machine) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Boot:
    """The runtime is up; the machine asks for the power-on self-test."""


@dataclass(frozen=True, slots=True)
class SelftestDone:
    faults: frozenset[str]  # faults the self-test raises (e.g. button_stuck); merged into state
    # The checks that failed (firmware/diag/inservice.py), a fault already raised included,
    # and one line on why; empty when every check passed.
    failed: frozenset[str] = frozenset()
    why: str = ""


#: The alert kind of a test (`pinkbutton-diag test-alert`, or `alert.kind = "test"` drills).
TEST_KIND = "test"


@dataclass(frozen=True, slots=True)
class Pressed:
    """A press of the button, or with `kind` "test" a test alert asked for over the control
    socket (`pinkbutton-diag test-alert`; the runtime asks only when no incident runs): the
    same incident, marked as a test, that the room never dispatches. A real press never
    joins a test incident (see _on_pressed)."""

    alert_id: str  # a fresh UUID made by the runtime; used only if this press starts an incident
    wall: float
    kind: str = "emergency"


@dataclass(frozen=True, slots=True)
class Released:
    pass


@dataclass(frozen=True, slots=True)
class Resume:
    """An alert the outbox still holds at startup (power loss, crash): carry on with it.

    Same alert_id, so the control room sees the same incident; the runtime sets
    `draft.pressed_mono` on this boot's clock from the wall-clock age.
    """

    draft: AlertDraft


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AlertPublished:
    """Outcome of a PublishAlert: ok=False when the broker refused it (e.g. "Not authorized")."""

    alert_id: str
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    """A control-room command: kind is ack | dispatched | end | selftest | extend."""

    kind: str
    alert_id: str | None = None  # None means "the current incident"
    extend_s: float | None = None
    operator: str | None = None


@dataclass(frozen=True, slots=True)
class FaultRaised:
    name: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FaultCleared:
    name: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Sent by the runtime at or after `next_deadline(state)`; harmless at any other time."""


Event = (
    Boot
    | SelftestDone
    | Pressed
    | Released
    | Resume
    | Connected
    | Disconnected
    | AlertPublished
    | Command
    | FaultRaised
    | FaultCleared
    | Tick
)


# --- actions (machine -> runtime), to be carried out in the order returned -------------------

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class SetIndicator:
    pattern: Pattern


@dataclass(frozen=True, slots=True)
class PersistAlert:
    """Write the alert durably (outbox) before anything else shows or sends it."""

    draft: AlertDraft


@dataclass(frozen=True, slots=True)
class PublishAlert:
    """Send the alert now. Retries and re-announcements reuse the same alert_id."""

    draft: AlertDraft


@dataclass(frozen=True, slots=True)
class PublishStatus:
    mode: Mode


@dataclass(frozen=True, slots=True)
class PublishEvent:
    """Publish on the `events` topic.

    `detail` is a tuple of (key, value) pairs sorted by key, with scalar values (str, int,
    float, bool, None): hashable, and equal however it was built. A Mapping is accepted and
    converted, so `PublishEvent("fault", {"name": "camera"})` works; `as_dict()` gives it back.
    """

    kind: str
    # What the constructor takes; always the sorted tuple once built (__post_init__).
    detail: tuple[tuple[str, Scalar], ...] | Mapping[str, Scalar] = ()

    def __post_init__(self) -> None:
        pairs = list(self.detail.items() if isinstance(self.detail, Mapping) else self.detail)
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"PublishEvent {self.kind!r} detail repeats a key: {keys}")
        for key, value in pairs:
            if not isinstance(key, str) or not isinstance(value, Scalar):
                raise TypeError(
                    f"PublishEvent {self.kind!r} detail {key!r} must map str to a scalar"
                )
        object.__setattr__(self, "detail", tuple(sorted(pairs, key=lambda pair: pair[0])))

    def as_dict(self) -> dict[str, Scalar]:
        return dict(self.detail)


@dataclass(frozen=True, slots=True)
class RunSelftest:
    pass


@dataclass(frozen=True, slots=True)
class StartStream:
    alert_id: str


@dataclass(frozen=True, slots=True)
class StopStream:
    alert_id: str


@dataclass(frozen=True, slots=True)
class Log:
    level: str  # debug | info | warning | error
    message: str


Action = (
    SetIndicator
    | PersistAlert
    | PublishAlert
    | PublishStatus
    | PublishEvent
    | RunSelftest
    | StartStream
    | StopStream
    | Log
)

# --- the transition table --------------------------------------------------------------------

EVENT_TYPES: tuple[type, ...] = (
    Boot,
    SelftestDone,
    Pressed,
    Released,
    Resume,
    Connected,
    Disconnected,
    AlertPublished,
    Command,
    FaultRaised,
    FaultCleared,
    Tick,
)

# Every event can arrive in every mode (a press, a tick, a stray command), so every
# (mode, event type) pair is declared. The pairs listed here may change the mode, to exactly
# the modes listed; every other pair must leave the mode as it is.
_MODE_CHANGES: dict[tuple[Mode, type], set[Mode]] = {
    (Mode.BOOT, Boot): {Mode.SELFTEST},
    (Mode.SELFTEST, SelftestDone): {Mode.IDLE, Mode.FAULT},
    (Mode.IDLE, SelftestDone): {Mode.IDLE, Mode.FAULT},  # self-test on command
    # A press is never ignored: with no incident running it always starts one.
    (Mode.BOOT, Pressed): {Mode.ALERTING},
    (Mode.SELFTEST, Pressed): {Mode.ALERTING},
    (Mode.IDLE, Pressed): {Mode.ALERTING},
    (Mode.FAULT, Pressed): {Mode.ALERTING},
    (Mode.COOLDOWN, Pressed): {Mode.ALERTING},
    # ... and a real press during a test incident starts a real one (see _on_pressed).
    (Mode.STREAMING, Pressed): {Mode.STREAMING, Mode.ALERTING},
    (Mode.ACKNOWLEDGED, Pressed): {Mode.ACKNOWLEDGED, Mode.ALERTING},
    # An alert still in the outbox at startup becomes the incident again.
    (Mode.BOOT, Resume): {Mode.ALERTING},
    (Mode.SELFTEST, Resume): {Mode.ALERTING},
    (Mode.IDLE, Resume): {Mode.ALERTING},
    (Mode.FAULT, Resume): {Mode.ALERTING},
    (Mode.COOLDOWN, Resume): {Mode.ALERTING},
    (Mode.ALERTING, AlertPublished): {Mode.ALERTING, Mode.STREAMING},
    (Mode.ALERTING, Command): {Mode.ALERTING, Mode.ACKNOWLEDGED, Mode.COOLDOWN},
    (Mode.STREAMING, Command): {Mode.STREAMING, Mode.ACKNOWLEDGED, Mode.COOLDOWN},
    (Mode.ACKNOWLEDGED, Command): {Mode.ACKNOWLEDGED, Mode.COOLDOWN},
    # Only an acknowledged incident may end by itself; see _tick_incident.
    (Mode.ACKNOWLEDGED, Tick): {Mode.ACKNOWLEDGED, Mode.COOLDOWN},
    (Mode.COOLDOWN, Tick): {Mode.COOLDOWN, Mode.IDLE, Mode.FAULT},
    (Mode.IDLE, FaultRaised): {Mode.FAULT},
    (Mode.FAULT, FaultCleared): {Mode.FAULT, Mode.IDLE},
}

TRANSITIONS: Mapping[tuple[Mode, type[Event]], frozenset[Mode]] = MappingProxyType(
    {
        (mode, event_type): frozenset(_MODE_CHANGES.get((mode, event_type), {mode}))
        for mode in Mode
        for event_type in EVENT_TYPES
    }
)


def validate_transitions(
    table: Mapping[tuple[Mode, type], Iterable[Mode]],
    handled: Iterable[type],
    start: Mode = Mode.BOOT,
) -> None:
    """Raise TransitionTableError unless `table` is complete and consistent.

    Every key is (Mode, handled event type); every target is a Mode; every Mode has
    transitions; every (mode, handled event type) is declared; every Mode is reachable
    from `start`.
    """
    handled = tuple(handled)
    for (mode, event_type), targets in table.items():
        label = f"({mode!r}, {getattr(event_type, '__name__', event_type)})"
        if not isinstance(mode, Mode):
            raise TransitionTableError(f"{label}: {mode!r} is not a Mode")
        if event_type not in handled:
            raise TransitionTableError(f"{label}: no handler for that event type")
        targets = tuple(targets)
        if not targets:
            raise TransitionTableError(f"{label}: declares no target mode")
        for target in targets:
            if not isinstance(target, Mode):
                raise TransitionTableError(f"{label}: target {target!r} is not a Mode")
    sources = {mode for mode, _ in table}
    for mode in Mode:
        if mode not in sources:
            raise TransitionTableError(f"mode {mode} has no transitions declared")
    for mode in Mode:
        for event_type in handled:
            if (mode, event_type) not in table:
                raise TransitionTableError(f"({mode}, {event_type.__name__}) is not declared")
    reached, frontier = {start}, deque([start])
    while frontier:
        source = frontier.popleft()
        for (mode, _), targets in table.items():
            if mode is source:
                for target in set(targets) - reached:
                    reached.add(target)
                    frontier.append(target)
    unreachable = sorted(set(Mode) - reached)
    if unreachable:
        raise TransitionTableError(f"modes not reachable from {start}: {', '.join(unreachable)}")


# --- handlers: one per event type --------------------------------------------------------------

Result = tuple[State, list[Action]]


def _names(faults: Iterable[str]) -> str:
    return ",".join(sorted(faults))


def _enter_rest_mode(state: State) -> Result:
    """Leave SELFTEST/COOLDOWN/FAULT for IDLE, or FAULT while anything is still broken."""
    mode = Mode.FAULT if state.faults else Mode.IDLE
    pattern = Pattern.FAULT if state.faults else Pattern.IDLE
    return replace(state, mode=mode, cooldown_until=None), [
        SetIndicator(pattern),
        PublishStatus(mode),
    ]


def _on_boot(state: State, event: Boot, now: float) -> Result:
    if state.mode is not Mode.BOOT:
        return state, [Log("debug", f"boot ignored in {state.mode}")]
    return replace(state, mode=Mode.SELFTEST), [SetIndicator(Pattern.OFF), RunSelftest()]


def _on_selftest_done(state: State, event: SelftestDone, now: float) -> Result:
    # A self-test reports what it found broken; faults it cannot see (e.g. broker_denied)
    # stay until their own FaultCleared, so results are merged, never replaced.
    state = replace(state, faults=state.faults | event.faults)
    detail: dict[str, Scalar] = {"ok": not (event.faults or event.failed),
                                 "faults": _names(event.faults)}
    if event.failed:
        detail.update(failed=_names(event.failed), why=event.why)
    report = PublishEvent("selftest", detail)
    if state.mode is Mode.SELFTEST or (state.mode is Mode.IDLE and state.faults):
        state, actions = _enter_rest_mode(state)
        if state.mode is Mode.FAULT:
            actions.insert(1, PublishEvent("fault", {"faults": _names(state.faults)}))
        return state, [report, *actions]
    return state, [report]


def _on_pressed(state: State, event: Pressed, now: float) -> Result:
    incident = state.incident
    if incident is None:
        return _start_incident(state, event, now)
    if incident.draft.kind == TEST_KIND and event.kind != TEST_KIND:
        # Someone needs help while a test runs: a real incident at once, never a press folded
        # into a test the room will not dispatch. The test's alert stays in the outbox until
        # the room confirms it; only its stream stops.
        test_id = incident.draft.alert_id
        new_state, actions = _start_incident(state, event, now)
        return new_state, [StopStream(test_id), *actions,
                           Log("warning", f"test alert {test_id} set aside: a real press")]
    # (A test during a real incident is refused by the runtime before it gets here.)
    return _press_again(state, now)


def _start_incident(state: State, event: Pressed, now: float) -> Result:
    settings = state.settings
    draft = AlertDraft(
        alert_id=event.alert_id,
        seq=state.next_seq,
        kind=event.kind,
        pressed_wall=event.wall,
        pressed_mono=now,
        presses=1,
        announce=1,
        escalated=False,
        follows=state.last_alert_id if state.mode is Mode.COOLDOWN else None,
    )
    incident = Incident(
        draft=draft,
        delivered=False,
        acked=False,
        dispatched=False,
        ack_deadline=now + settings.ack_timeout_s,
        stream_deadline=now + settings.stream_s,
        retry_at=now + settings.retry_s,
    )
    new_state = replace(
        state,
        mode=Mode.ALERTING,
        incident=incident,
        next_seq=state.next_seq + 1,
        cooldown_until=None,
    )
    # PersistAlert first: the alert is on disk before the kiosk shows "sending".
    actions: list[Action] = [PersistAlert(draft), SetIndicator(Pattern.SENDING)]
    if state.online:  # offline, the stored alert is published on Connected
        actions.append(PublishAlert(draft))
    actions += [PublishStatus(Mode.ALERTING), StartStream(draft.alert_id)]
    return new_state, actions


def _on_resume(state: State, event: Resume, now: float) -> Result:
    if state.incident is not None:
        return state, [Log("info", f"alert {event.draft.alert_id} stays in the outbox for "
                                   "redelivery: another incident is running")]
    settings = state.settings
    draft = replace(event.draft, announce=event.draft.announce + 1)
    incident = Incident(
        draft=draft,
        delivered=False,
        acked=False,
        dispatched=False,
        ack_deadline=now + settings.ack_timeout_s,
        stream_deadline=now + settings.stream_s,
        retry_at=now + settings.retry_s,
    )
    new_state = replace(
        state,
        mode=Mode.ALERTING,
        incident=incident,
        next_seq=max(state.next_seq, draft.seq + 1),
        cooldown_until=None,
    )
    # Already on disk: no PersistAlert, straight to "sending".
    actions: list[Action] = [SetIndicator(Pattern.SENDING)]
    if state.online:
        actions.append(PublishAlert(draft))
    actions += [PublishStatus(Mode.ALERTING), StartStream(draft.alert_id),
                Log("warning", f"resuming the incident of alert {draft.alert_id} (seq {draft.seq}) after a restart")]
    return new_state, actions


def _press_again(state: State, now: float) -> Result:
    incident = state.incident
    assert incident is not None  # _on_pressed comes here only during an incident
    draft = replace(incident.draft, presses=incident.draft.presses + 1)
    stream_deadline = max(incident.stream_deadline, now + state.settings.stream_s)
    incident = replace(incident, draft=draft, stream_deadline=stream_deadline)
    detail = {"alert_id": draft.alert_id, "presses": draft.presses}
    return replace(state, incident=incident), [PublishEvent("pressed_again", detail)]


def _on_released(state: State, event: Released, now: float) -> Result:
    return state, []


def _on_connected(state: State, event: Connected, now: float) -> Result:
    state = replace(state, online=True)
    actions: list[Action] = [PublishStatus(state.mode)]
    if state.mode is Mode.ALERTING:
        assert state.incident is not None  # ALERTING always has an incident
        actions.append(PublishAlert(state.incident.draft))
        incident = replace(state.incident, retry_at=now + state.settings.retry_s)
        state = replace(state, incident=incident)
    return state, actions


def _on_disconnected(state: State, event: Disconnected, now: float) -> Result:
    why = f": {event.reason}" if event.reason else ""
    return replace(state, online=False), [Log("warning", f"broker connection lost{why}")]


def _on_alert_published(state: State, event: AlertPublished, now: float) -> Result:
    incident = state.incident
    if incident is None or event.alert_id != incident.draft.alert_id:
        return state, [Log("debug", f"publish result for {event.alert_id} ignored: not current")]
    if not event.ok:
        return _publish_denied(state, event)
    state, actions = _clear_broker_denied(state)
    if state.mode is not Mode.ALERTING:
        return state, [*actions, Log("debug", f"re-announcement of {event.alert_id} delivered")]
    incident = replace(incident, delivered=True, retry_at=None)
    state = replace(state, mode=Mode.STREAMING, incident=incident)
    return state, [*actions, SetIndicator(Pattern.DELIVERED), PublishStatus(Mode.STREAMING)]


def _publish_denied(state: State, event: AlertPublished) -> Result:
    reason = event.reason or "no reason given"
    retry = " (will retry)" if state.mode is Mode.ALERTING else ""
    hint = "device.id must equal the CN of the device certificate (the broker ACL is per CN)"
    actions: list[Action] = [
        Log("error", f"broker refused alert {event.alert_id}: {reason}{retry}; {hint}")
    ]
    if BROKER_DENIED not in state.faults:
        actions.append(PublishEvent("fault", {"name": BROKER_DENIED, "detail": reason}))
    return replace(state, faults=state.faults | {BROKER_DENIED}), actions


def _clear_broker_denied(state: State) -> Result:
    """An accepted publish proves the broker takes our identity again."""
    if BROKER_DENIED not in state.faults:
        return state, []
    state = replace(state, faults=state.faults - {BROKER_DENIED})
    return state, [PublishEvent("fault_cleared", {"name": BROKER_DENIED})]


def _on_command(state: State, event: Command, now: float) -> Result:
    if event.kind == "selftest":
        return _cmd_selftest(state)
    handler = _INCIDENT_COMMANDS.get(event.kind)
    if handler is None:
        return state, [Log("warning", f"unknown command {event.kind!r} ignored")]
    incident = state.incident
    if incident is None:
        return state, [Log("info", f"command {event.kind} ignored: no incident in {state.mode}")]
    if event.alert_id is not None and event.alert_id != incident.draft.alert_id:
        current = incident.draft.alert_id
        message = f"command {event.kind} for alert {event.alert_id} ignored: current is {current}"
        return state, [Log("warning", message)]
    return handler(state, event, now)


def _cmd_selftest(state: State) -> Result:
    if state.mode in (Mode.IDLE, Mode.FAULT):
        return state, [RunSelftest()]
    return state, [Log("info", f"selftest deferred: not run in {state.mode}; ask again when idle")]


def _by(event: Command) -> str:
    return f" by {event.operator}" if event.operator else ""


def _cmd_ack(state: State, event: Command, now: float) -> Result:
    assert state.incident is not None  # _on_command checked there is an incident
    if state.incident.acked:
        return state, [Log("debug", f"alert {state.incident.draft.alert_id} already acknowledged")]
    return _acknowledge(state, event)


def _cmd_dispatched(state: State, event: Command, now: float) -> Result:
    assert state.incident is not None  # _on_command checked there is an incident
    state = replace(state, incident=replace(state.incident, dispatched=True))
    assert state.incident is not None
    if not state.incident.acked:
        return _acknowledge(state, event)
    return state, [
        Log("info", f"alert {state.incident.draft.alert_id}: team dispatched{_by(event)}")
    ]


def _acknowledge(state: State, event: Command) -> Result:
    # The room can only acknowledge what it received, so the alert counts as delivered.
    assert state.incident is not None  # _on_command checked there is an incident
    incident = replace(state.incident, acked=True, delivered=True, retry_at=None)
    state = replace(state, mode=Mode.ACKNOWLEDGED, incident=incident)
    return state, [
        SetIndicator(Pattern.HELP_COMING),
        PublishStatus(Mode.ACKNOWLEDGED),
        Log("info", f"alert {incident.draft.alert_id} {event.kind}{_by(event)}"),
    ]


def _cmd_extend(state: State, event: Command, now: float) -> Result:
    extend_s = event.extend_s
    if not (_is_seconds(extend_s) and extend_s > 0):
        return state, [Log("warning", f"extend ignored: extend_s must be > 0, not {extend_s!r}")]
    added = min(extend_s, state.settings.max_extend_s)
    assert state.incident is not None  # _on_command checked there is an incident
    incident = replace(state.incident, stream_deadline=state.incident.stream_deadline + added)
    message = f"stream for alert {incident.draft.alert_id} extended by {added:g} s{_by(event)}"
    return replace(state, incident=incident), [Log("info", message)]


def _cmd_end(state: State, event: Command, now: float) -> Result:
    return _end_incident(state, now, f"ended by the control room{_by(event)}")


_INCIDENT_COMMANDS: dict[str, Callable[[State, Command, float], Result]] = {
    "ack": _cmd_ack,
    "dispatched": _cmd_dispatched,
    "end": _cmd_end,
    "extend": _cmd_extend,
}


def _end_incident(state: State, now: float, why: str) -> Result:
    assert state.incident is not None  # called only during an incident
    alert_id = state.incident.draft.alert_id
    state = replace(
        state,
        mode=Mode.COOLDOWN,
        incident=None,
        cooldown_until=now + state.settings.cooldown_s,
        last_alert_id=alert_id,
    )
    return state, [
        StopStream(alert_id),
        PublishStatus(Mode.COOLDOWN),
        Log("info", f"alert {alert_id} {why}"),
    ]


def _on_fault_raised(state: State, event: FaultRaised, now: float) -> Result:
    state = replace(state, faults=state.faults | {event.name})
    actions: list[Action] = [
        Log("error", f"fault {event.name}: {event.detail}" if event.detail else f"fault {event.name}"),
        PublishEvent("fault", {"name": event.name, "detail": event.detail}),
    ]
    if state.mode is Mode.IDLE:  # during an incident the fault waits for the cooldown to end
        state = replace(state, mode=Mode.FAULT)
        actions += [SetIndicator(Pattern.FAULT), PublishStatus(Mode.FAULT)]
    return state, actions


def _on_fault_cleared(state: State, event: FaultCleared, now: float) -> Result:
    if event.name not in state.faults:
        return state, [Log("debug", f"fault {event.name} cleared but was not raised")]
    state = replace(state, faults=state.faults - {event.name})
    actions: list[Action] = [PublishEvent("fault_cleared", {"name": event.name})]
    if state.mode is Mode.FAULT and not state.faults:
        state = replace(state, mode=Mode.IDLE)
        actions += [SetIndicator(Pattern.IDLE), PublishStatus(Mode.IDLE)]
    return state, actions


def _on_tick(state: State, event: Tick, now: float) -> Result:
    if state.mode is Mode.COOLDOWN:
        assert state.cooldown_until is not None  # State checks COOLDOWN has it
        if now >= state.cooldown_until:
            return _enter_rest_mode(state)
        return state, []
    if state.incident is not None:
        return _tick_incident(state, now)
    return state, []


def _tick_incident(state: State, now: float) -> Result:
    incident = state.incident
    assert incident is not None  # _on_tick checked; _escalate and _retry keep it
    if incident.acked and now >= incident.stream_deadline:
        return _end_incident(state, now, "ended: stream time is up")
    actions: list[Action] = []
    if not incident.acked and now >= incident.ack_deadline:
        state, actions = _escalate(state, now)
    assert state.incident is not None
    retry_at = state.incident.retry_at
    if state.mode is Mode.ALERTING and retry_at is not None and now >= retry_at:
        state, more = _retry(state, now)
        actions += more
        assert state.incident is not None
    if now >= state.incident.stream_deadline:
        # Not acknowledged (acked ended above): an unacknowledged alert is never silently ended.
        incident = replace(state.incident, stream_deadline=now + state.settings.stream_s)
        state = replace(state, incident=incident)
        actions.append(Log("info", f"stream for {incident.draft.alert_id} kept on: no ack yet"))
    return state, actions


def _escalate(state: State, now: float) -> Result:
    settings, incident = state.settings, state.incident
    assert incident is not None  # called only during an incident
    draft = replace(incident.draft, announce=incident.draft.announce + 1, escalated=True)
    incident = replace(incident, draft=draft, ack_deadline=now + settings.ack_timeout_s)
    actions: list[Action] = []
    if state.online:
        actions.append(PublishAlert(draft))
        if state.mode is Mode.ALERTING:  # that publish is also this round's retry
            incident = replace(incident, retry_at=now + settings.retry_s)
    waited = now - draft.pressed_mono
    message = f"alert {draft.alert_id}: no operator ack after {waited:.0f} s, re-announcing"
    actions.append(Log("warning", f"{message} (announce {draft.announce})"))
    return replace(state, incident=incident), actions


def _retry(state: State, now: float) -> Result:
    assert state.incident is not None  # called only during an incident
    incident = replace(state.incident, retry_at=now + state.settings.retry_s)
    if not state.online:  # Connected will publish it
        return replace(state, incident=incident), []
    return replace(state, incident=incident), [PublishAlert(incident.draft)]


# Each handler takes its own event type (the key), so the value type cannot name it: Any.
_HANDLERS: dict[type, Callable[[State, Any, float], Result]] = {
    Boot: _on_boot,
    SelftestDone: _on_selftest_done,
    Pressed: _on_pressed,
    Released: _on_released,
    Resume: _on_resume,
    Connected: _on_connected,
    Disconnected: _on_disconnected,
    AlertPublished: _on_alert_published,
    Command: _on_command,
    FaultRaised: _on_fault_raised,
    FaultCleared: _on_fault_cleared,
    Tick: _on_tick,
}

validate_transitions(TRANSITIONS, _HANDLERS)
if set(_HANDLERS) != set(EVENT_TYPES):
    raise TransitionTableError("EVENT_TYPES and the handlers disagree")


# --- public entry points ------------------------------------------------------------------------


def step(state: State, event: Event, now: float) -> tuple[State, tuple[Action, ...]]:
    """Apply one event at monotonic time `now`; return the new state and the actions to run."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TypeError(f"step() got {type(event).__name__}, which is not a machine event")
    new_state, actions = handler(state, event, now)
    allowed = TRANSITIONS[(state.mode, type(event))]
    if new_state.mode not in allowed:
        raise InvalidTransition(
            f"{state.mode} --{type(event).__name__}--> {new_state.mode} is not in TRANSITIONS"
        )
    return new_state, tuple(actions)


def next_deadline(state: State) -> float | None:
    """Monotonic time at which the runtime should send the next Tick, or None if no timer runs.

    The stream runs from the press on (StartStream comes with the alert), so its deadline
    counts in every incident mode; while ALERTING it can only be pushed on, never end anything.
    """
    if state.mode is Mode.COOLDOWN:
        return state.cooldown_until
    incident = state.incident
    if incident is None:
        return None
    deadlines = [incident.stream_deadline]
    if not incident.acked:
        deadlines.append(incident.ack_deadline)
    if state.mode is Mode.ALERTING and incident.retry_at is not None:
        deadlines.append(incident.retry_at)
    return min(deadlines)
