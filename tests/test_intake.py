"""Per-device alert limits at the room (tools/controlroom/intake.py): the pure limiter at its
boundaries, the routing glue, the store's fold (with migration of an old database), and the
receiver's fold path with a real store (no broker: events are fed as the transport would)."""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware import transport as t
from pinkbutton.hal.clock import FakeClock, iso8601
from pinkbutton.tools.controlroom.intake import (
    FOLD_TURN,
    AlertIntake,
    Decision,
    DeviceLimiter,
    FloodReport,
    IntakeLimits,
    printable,
)
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.helpers import INCIDENTS_TABLE_BEFORE_ISSUE_9, Recorder, room_tls

A, B = "pb-test-0001", "pb-test-0002"
SITE = p.Site("s", "Site", 1.0, 2.0)
ACCEPT, FOLD, DROP = Decision.ACCEPT, Decision.FOLD, Decision.DROP


def alert(device: str = A, alert_id: str | None = None, presses: int = 1) -> p.Alert:
    now = iso8601(time.time())
    return p.Alert(device_id=device, alert_id=alert_id or str(uuid.uuid4()), seq=1,
                   kind="emergency", pressed_at=now, pressed_mono=1.0, age_ms=1, announce=1,
                   escalated=False, presses=presses, site=SITE, firmware="0.1.0", sent_at=now)


# -- DeviceLimiter (pure) ------------------------------------------------------------------------


def test_burst_is_accepted_and_the_next_message_folds():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=5))
    assert [lim.decide(A, 0.0) for _ in range(6)] == [ACCEPT] * 5 + [FOLD]


def test_another_device_is_not_affected_by_a_flooding_one():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=2, max_pending=10))
    for _ in range(50):
        lim.decide(A, 0.0)
    assert lim.decide(B, 0.0) is ACCEPT
    assert lim.decide(B, 0.0) is ACCEPT


def test_a_steady_flood_never_gets_back_to_the_normal_path():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=5, max_pending=10_000))
    got = [lim.decide(A, i / 1000) for i in range(10_000)]  # 1000/s for 10 s
    assert got.count(ACCEPT) == 5 and got[:5] == [ACCEPT] * 5


def test_back_to_normal_only_after_a_full_bucket_of_quiet_and_an_empty_fold_queue():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=5))
    for _ in range(5):
        assert lim.decide(A, 0.0) is ACCEPT
    assert lim.decide(A, 0.0) is FOLD  # tokens -1
    lim.served(A, "folded", "x")
    assert lim.decide(A, 0.5) is FOLD  # -1 + 0.5 - 1 = -1.5
    lim.served(A, "folded", "x")
    assert lim.decide(A, 6.75) is FOLD  # -1.5 + 6.25 = 4.75: not full yet; now 3.75
    assert lim.decide(A, 8.0) is FOLD  # 3.75 + 1.25 = 5: full, but one still waits to fold
    lim.served(A, "folded", "x")
    lim.served(A, "folded", "x")
    assert lim.decide(A, 9.0) is ACCEPT  # 4 + 1 = 5: full and nothing waiting


def test_debt_is_bounded_so_a_long_flood_recovers_in_bounded_time():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=5, max_pending=1))
    for i in range(100_000):
        lim.decide(A, i / 10_000)  # 10 s of 10 000/s, nothing served: drops
    now = 10.0 + 2 * 5 / 1.0  # burst / rate to pay the debt, burst / rate to fill
    lim.served(A, "folded")
    assert lim.decide(A, now - 0.01) is FOLD
    lim.served(A, "folded")
    assert lim.decide(A, now + 1.0) is ACCEPT


def test_over_max_pending_is_dropped_until_the_fold_path_catches_up():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=1, max_pending=3))
    assert lim.decide(A, 0.0) is ACCEPT
    assert [lim.decide(A, 0.0) for _ in range(5)] == [FOLD, FOLD, FOLD, DROP, DROP]
    assert lim.pending(A) == 3
    lim.served(A, "folded", "abc")
    assert lim.decide(A, 0.0) is FOLD


def test_one_summary_per_interval_with_the_counts():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=1, max_pending=2, summary_s=10.0))
    for _ in range(5):
        lim.decide(A, 0.0)  # 1 accepted, 2 folded, 2 dropped
    lim.served(A, "folded", "11112222-aaaa")
    lim.served(A, "duplicates")
    lim.decide(B, 1.0)  # within budget: no report for B
    assert lim.summary(9.99) == []
    (r,) = lim.summary(10.0)
    assert (r.device_id, r.over, r.folded, r.duplicates, r.dropped, r.into) == (
        A, 4, 1, 1, 2, "11112222-aaaa")
    assert r.line() == (
        "alert flood from pb-test-0001: 4 alerts over its limit in 10 s: 1 folded into "
        "incident 11112222, 0 new incidents, 1 duplicates dropped, 0 rejected, "
        "2 dropped unread (queue full)")
    assert lim.summary(15.0) == []  # next interval not over yet
    assert lim.summary(20.0) == []  # nothing over the limit in it


def test_summary_forgets_devices_back_to_normal():
    lim = DeviceLimiter(IntakeLimits(rate_per_s=1.0, burst=2, summary_s=1.0))
    lim.decide(A, 0.0)
    lim.decide(B, 0.0)
    for _ in range(3):
        lim.decide(B, 0.0)
    lim.summary(5.0)
    assert set(lim._devices) == {B}  # B has folds pending


def test_device_text_in_the_line_is_escaped():
    line = FloodReport("evil\n\x1b[31mred", 10.0, over=1).line()
    assert "\n" not in line and "\x1b" not in line and "evil\\n\\x1b[31mred" in line
    assert printable("x" * 100).endswith("...") and len(printable("x" * 100)) == 83


@pytest.mark.parametrize("bad", [dict(rate_per_s=0.0), dict(burst=0), dict(max_pending=0),
                                 dict(summary_s=-1.0), dict(rate_per_s=float("nan"))])
def test_invalid_limits_are_refused(bad):
    with pytest.raises(ValueError, match="invalid intake limits"):
        IntakeLimits(**bad)


# -- AlertIntake (routing) -----------------------------------------------------------------------


def test_intake_routes_alerts_through_the_limiter_and_everything_else_straight():
    inbox: list[object] = []
    clock = [0.0]
    intake = AlertIntake(IntakeLimits(rate_per_s=1.0, burst=1), lambda: clock[0],
                         lambda: 1000.0, inbox.append)
    status = t.Message(p.topic(A, "status"), b"{}", True)
    first = t.Message(p.topic(A, "alert"), b"first", False)
    bad_topic = t.Message("pinkbutton/v1/dev/NOT_VALID/alert", b"x", False)
    intake.offer(status)
    intake.offer(first)
    intake.offer(bad_topic)  # the normal path rejects it with its reason
    for k in range(3):
        intake.offer(t.Message(p.topic(A, "alert"), f"over {k}".encode(), False))
    intake.offer(t.Connected(False))
    assert inbox == [status, first, bad_topic, FOLD_TURN, t.Connected(False)]  # one turn for three
    batch, more = intake.take(2)
    assert batch == [(A, b"over 0", 1000.0), (A, b"over 1", 1000.0)] and more
    batch, more = intake.take(2)
    assert batch == [(A, b"over 2", 1000.0)] and not more
    intake.offer(t.Message(p.topic(A, "alert"), b"again", False))
    assert inbox[-1] == FOLD_TURN and inbox.count(FOLD_TURN) == 2  # scheduled anew


def test_fold_queue_serves_devices_in_turns():
    inbox: list[object] = []
    intake = AlertIntake(IntakeLimits(rate_per_s=1.0, burst=1), lambda: 0.0, lambda: 5.0,
                         inbox.append)
    for k in range(7):
        intake.offer(t.Message(p.topic(A, "alert"), f"a{k}".encode(), False))
    for k in range(3):
        intake.offer(t.Message(p.topic(B, "alert"), f"b{k}".encode(), False))
    turns = []
    while True:
        batch, more = intake.take(2)
        turns.append(b" ".join(payload for _, payload, _ in batch).decode())
        if not more:
            break
    # A's backlog came first, yet B's over-budget alerts wait for one batch of A's at a time.
    assert turns == ["a1 a2", "b1 b2", "a3 a4", "a5 a6"]
    assert intake.take(2) == ([], False)


# -- IncidentStore.fold_alerts -------------------------------------------------------------------


def test_fold_goes_into_the_newest_open_incident_and_counts_presses(tmp_path):
    store = IncidentStore(tmp_path / "room.db")
    try:
        old, new = alert(), alert()
        store.record_alert(old, "2026-11-23T10:00:00.000Z", 1.0, True)
        store.record_alert(new, "2026-11-23T10:00:05.000Z", 1.0, True)
        store.record_alert(alert(B), "2026-11-23T10:00:06.000Z", 1.0, True)
        folds = [alert() for _ in range(3)]
        into, folded = store.fold_alerts(A, [(a, "2026-11-23T10:00:07.000Z", True)
                                             for a in [*folds, folds[0], new]])
        assert into == new.alert_id and folded == [a.alert_id for a in folds]
        assert store.folded_into(new.alert_id) == folded
        assert all(store.known(a.alert_id) for a in folds) and not store.known(str(uuid.uuid4()))
        inc = store.incident(new.alert_id)
        assert (inc.presses, inc.folded) == (4, 3)
        # The kiosk's own count of presses (3) and the folded alerts add up.
        store.record_alert(alert(alert_id=new.alert_id, presses=3), "2026-11-23T10:00:08.000Z",
                           1.0, True)
        assert store.incident(new.alert_id).presses == 6
        assert store.timeline(new.alert_id)[1][1:] == (
            "folded", {"alerts": 3, "first": folds[0].alert_id, "last": folds[2].alert_id})
        assert store.fold_alerts(A, [(folds[1], "x", True)]) == (new.alert_id, [])
        store.mark(new.alert_id, "ended", "2026-11-23T10:01:00.000Z")
        store.mark(old.alert_id, "ended", "2026-11-23T10:01:00.000Z")
        assert store.fold_alerts(A, [(alert(), "x", True)]) == (None, [])  # none open
    finally:
        store.close()


OLD_SCHEMA = INCIDENTS_TABLE_BEFORE_ISSUE_9 + """
CREATE TABLE timeline (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL,
    at TEXT NOT NULL, what TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');
INSERT INTO incidents(alert_id, device_id, seq, kind, site_id, site_name, lat, lon, firmware,
    pressed_at, received_at, presses)
VALUES ('3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b', 'pb-test-0001', 7, 'emergency', 's', 'Site',
    1.0, 2.0, '0.1.0', '2026-11-23T09:00:00.000Z', '2026-11-23T09:00:00.100Z', 2);
"""


def test_a_database_of_the_previous_version_is_migrated(tmp_path):
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(OLD_SCHEMA)
    db.close()
    store = IncidentStore(tmp_path / "old.db")
    try:
        old = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
        inc = store.incident(old)
        assert (inc.presses, inc.folded) == (2, 0)
        into, folded = store.fold_alerts(A, [(alert(), "2026-11-23T09:00:01.000Z", None)])
        assert into == old and len(folded) == 1
        assert store.incident(old).presses == 3
    finally:
        store.close()
    IncidentStore(tmp_path / "old.db").close()  # and opening it again is a no-op


# -- the receiver's fold path (real store and codecs, no broker) ---------------------------------


def test_receiver_folds_over_budget_alerts_receipts_them_and_summarises(tmp_path, pki_dir):
    events, lines, clock = Recorder(), [], FakeClock()
    room = ControlRoomReceiver(
        host="localhost", port=1, tls=room_tls(pki_dir), db_path=tmp_path / "room.db",
        out=lines.append, listeners=[events], clock=clock,
        limits=IntakeLimits(rate_per_s=1.0, burst=1, summary_s=10.0))

    def deliver(*alerts_or_bytes) -> None:
        for x in alerts_or_bytes:
            payload = x if isinstance(x, bytes) else p.encode_alert(x)
            device = A if isinstance(x, bytes) else x.device_id
            room.intake.offer(t.Message(p.topic(device, "alert"), payload, False))
        while not room._inbox.empty():
            room._handle(room._inbox.get())

    try:
        first, repeat = alert(), alert()
        deliver(first)  # within the budget: the incident
        over = [alert() for _ in range(120)]
        deliver(*over, repeat, repeat, first, b"not json")
        incidents = room.store.all_incidents()
        assert [i.alert_id for i in incidents] == [first.alert_id]
        assert incidents[0].presses == 1 + 121 and incidents[0].folded == 121
        receipts = {d["alert_id"] for d in events.of("cmd_sent") if d["cmd"] == "receipt"}
        assert receipts == {first.alert_id, repeat.alert_id} | {a.alert_id for a in over}
        assert room.intake.limiter.pending(A) == 0
        # The operator ends it: the next over-budget alert becomes the open incident (by
        # the normal path: shown, stored, receipted), the rest fold into it.
        room.end(first.alert_id, "officer")
        later = [alert() for _ in range(3)]
        deliver(*later)
        assert [i.alert_id for i in room.store.open_incidents()] == [later[0].alert_id]
        assert room.store.folded_into(later[0].alert_id) == [a.alert_id for a in later[1:]]
        assert any(line.startswith(f"ALERT  {A}") and later[0].alert_id[:8] in line
                   for line in lines)
        room._flood_summary()
        assert events.of("flood") == []  # once per interval
        clock.advance(10.0)
        room._flood_summary()
        (flood,) = events.of("flood")
        assert (flood["over"], flood["folded"], flood["duplicates"], flood["dropped"]) == (
            127, 123, 2, 0)
        summary = [line for line in lines if line.startswith("alert flood from")]
        assert summary == [
            f"alert flood from {A}: 127 alerts over its limit in 10 s: 123 folded into incident "
            f"{later[0].alert_id[:8]}, 1 new incidents, 2 duplicates dropped, 1 rejected, "
            "0 dropped unread (queue full)"]
        # Back within its budget, a folded alert that the kiosk still escalates (nobody
        # acknowledged it on its own) becomes an incident of its own.
        escalation = alert(alert_id=over[0].alert_id)
        deliver(escalation)
        assert room.store.incident(over[0].alert_id) is not None
    finally:
        room.store.close()


def test_a_folded_alert_is_acknowledged_with_the_incident_it_was_folded_into(tmp_path, pki_dir):
    """The kiosk shows its newest alert; if that one was folded, 'help is coming' must still
    reach it: the ack of the incident goes to every alert folded into it, an alert folded into
    an acknowledged incident is acked at once, and a re-announced folded alert is answered,
    not made a second incident."""
    events, clock = Recorder(), FakeClock()
    room = ControlRoomReceiver(
        host="localhost", port=1, tls=room_tls(pki_dir), db_path=tmp_path / "room.db",
        out=lambda _line: None, listeners=[events], clock=clock,
        limits=IntakeLimits(rate_per_s=1.0, burst=1, summary_s=10.0))

    def deliver(*alerts) -> None:
        for a in alerts:
            room.intake.offer(t.Message(p.topic(a.device_id, "alert"), p.encode_alert(a), False))
        while not room._inbox.empty():
            room._handle(room._inbox.get())

    def sent(cmd: str) -> list[str]:
        return [d["alert_id"] for d in events.of("cmd_sent") if d["cmd"] == cmd]

    try:
        first, before_ack, after_ack = alert(), alert(), alert()
        deliver(first, before_ack)
        assert room.store.folded_into(first.alert_id) == [before_ack.alert_id]
        assert sent("ack") == []
        assert room.acknowledge(first.alert_id, "officer-1")
        assert sent("ack") == [first.alert_id, before_ack.alert_id]
        deliver(after_ack)  # still over budget: folded into the acknowledged incident
        assert sent("ack") == [first.alert_id, before_ack.alert_id, after_ack.alert_id]
        clock.advance(30.0)  # back within budget: an escalation of a folded alert ...
        deliver(alert(alert_id=before_ack.alert_id))
        assert [i.alert_id for i in room.store.all_incidents()] == [first.alert_id]
        assert sent("ack")[-1] == before_ack.alert_id  # ... is answered with the ack again
        assert room.end(first.alert_id, "officer-1")
        assert sent("end") == [first.alert_id, before_ack.alert_id, after_ack.alert_id]
    finally:
        room.store.close()
