"""The operator's terminal (issue 12, item 8): what the receiver prints (ALERT with location,
evidence and a short id that stays unique, EVENT in words, `list` with the device states the
store gives) and `pinkbutton-controlroom report` (every press counted, rounded numbers,
readable events, --csv, --since/--until).

The receiver runs with the real store, codecs and evidence recorder; messages go through its
intake as the broker would hand them over (no broker: nothing here needs one), except the
last test, a kiosk pressed on a real mosquitto over mTLS.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware import transport as t
from pinkbutton.hal.clock import FakeClock, iso8601
from pinkbutton.tools.controlroom.intake import IntakeLimits
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.controlroom.terminal import short_id

from tests.helpers import assert_one_line_error, room_tls

ROOT = Path(__file__).resolve().parent.parent
A, B = "pb-test-0001", "pb-test-0002"
SITE = p.Site("psh-qk", "Qissa Khwani Bazaar", 34.0083312, 71.5680589)


def alert(clock: FakeClock, device: str = A, alert_id: str | None = None, *, seq: int = 1,
          presses: int = 1, announce: int = 1, escalated: bool = False,
          site: p.Site = SITE) -> p.Alert:
    wall = clock.wall()
    return p.Alert(device_id=device, alert_id=alert_id or str(uuid.uuid4()), seq=seq,
                   kind="emergency", pressed_at=iso8601(wall - 0.0123), pressed_mono=100.0,
                   age_ms=12, announce=announce, escalated=escalated, presses=presses,
                   site=site, firmware="0.1.0", sent_at=iso8601(wall - 0.002))


class Room:
    """A receiver whose messages the test hands over; its printed lines collected."""

    def __init__(self, tmp_path: Path, pki_dir: Path, *, db: Path | None = None,
                 evidence: bool = False, clock: FakeClock | None = None,
                 limits: IntakeLimits | None = None) -> None:
        self.lines: list[str] = []
        self.clock = clock or FakeClock()
        self.receiver = ControlRoomReceiver(
            host="localhost", port=1, tls=room_tls(pki_dir), db_path=db or tmp_path / "room.db",
            out=self.lines.append, clock=self.clock, operator="officer-1",
            evidence_dir=tmp_path / "evidence" if evidence else None, limits=limits)

    def deliver(self, device: str, leaf: str, payload: bytes, retain: bool = False) -> None:
        self.receiver.intake.offer(t.Message(p.topic(device, leaf), payload, retain))
        self.drain()

    def drain(self) -> None:
        while not self.receiver._inbox.empty():
            self.receiver._handle(self.receiver._inbox.get())

    def send(self, a: p.Alert) -> None:
        self.deliver(a.device_id, "alert", p.encode_alert(a))

    def event(self, device: str, kind: str, detail: dict) -> None:
        ev = p.DeviceEvent(device, kind, iso8601(self.clock.wall()), detail)
        self.deliver(device, "events", p.encode_event(ev))

    def type(self, line: str) -> list[str]:
        """Operator input; returns the lines it printed."""
        before = len(self.lines)
        self.receiver.command(line)
        self.drain()
        return self.lines[before:]

    def close(self) -> None:
        self.receiver.store.close()


@pytest.fixture
def room(tmp_path, pki_dir, db_target):  # a SQLite file, then PostgreSQL (tests/conftest.py)
    r = Room(tmp_path, pki_dir, db=db_target, evidence=True)
    yield r
    if r.receiver.recorder is not None:
        r.receiver.recorder.close_all()
    r.close()


def twin_ids(n: int = 2, shared: str = "0000002a54048") -> list[str]:
    """alert_ids sharing their first 13 hex digits, as the firmware's ids do when two kiosks
    booted together are pressed in the same millisecond range (firmware/alertid.py)."""
    return [str(uuid.UUID(shared + uuid.uuid4().hex[:32 - len(shared)])) for _ in range(n)]


def controlroom_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinkbutton.tools.controlroom.cli", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


# -- 1. the ALERT line -----------------------------------------------------------------------


def test_alert_line_shows_location_evidence_link_rounded_latency_and_short_id(room):
    a = alert(room.clock)
    room.send(a)
    (line,) = [x for x in room.lines if x.startswith("ALERT")]
    assert "location 34.00833,71.56806" in line, line
    assert f"evidence {A}-{a.alert_id}.mp4  " in line, line  # relative to the evidence dir
    rec = room.receiver.recorder
    assert rec.path_for(a.alert_id, A) == rec.directory / f"{A}-{a.alert_id}.mp4"
    assert re.search(r"  latency 1[23] ms  ", line), line  # 12.3 ms, rounded
    assert line.endswith(f"id {a.alert_id[:8]}"), line


def test_alert_without_location_says_so(tmp_path, pki_dir):
    r = Room(tmp_path, pki_dir)
    try:
        body = json.loads(p.encode_alert(alert(r.clock)))
        del body["site"]["lat"]
        r.deliver(A, "alert", json.dumps(body).encode())
        (line,) = [x for x in r.lines if x.startswith("ALERT")]
        assert "no location" in line and "evidence off" in line and "FLAGGED" in line, line
    finally:
        r.close()


def test_short_ids_grow_while_open_incidents_share_a_prefix_and_the_verbs_take_them(room):
    first, second = twin_ids()
    assert first[:8] == second[:8]
    room.send(alert(room.clock, A, first))
    room.send(alert(room.clock, B, second))
    lines = [x for x in room.lines if x.startswith("ALERT")]
    assert lines[0].endswith(f"id {first[:8]}")
    shown_second = re.search(r"id (\S+)$", lines[1]).group(1)
    assert second.startswith(shown_second) and not first.startswith(shown_second)
    assert len(shown_second) > 8, lines[1]
    # The first 8 characters now name two open incidents: refused, both listed by id.
    said = room.type(f"ack {first[:8]}")
    assert len(said) == 1 and said[0].startswith(f"ack: 2 incidents match {first[:8]}:"), said
    assert short_id(first, [second]) in said[0] and shown_second in said[0]
    assert room.receiver.store.incident(first).acked_at is None
    # The id as shown on the ALERT line is accepted, and the ACK line shows it too.
    said = room.type(f"ack {shown_second}")
    assert said == [f"ACK    {B}  Qissa Khwani Bazaar  by officer-1  id {shown_second}"], said
    assert room.receiver.store.incident(second).acked_by == "officer-1"
    listed = room.type("list")
    assert any(x.startswith(f"  {short_id(first, [second])}  {A}") for x in listed), listed
    # Once the second is ended, 8 characters name the first again (an ended incident
    # never makes an open one ambiguous).
    room.type(f"end {shown_second}")
    said = room.type(f"ack {first[:8]}")
    assert said == [f"ACK    {A}  Qissa Khwani Bazaar  by officer-1  id {first[:8]}"], said


def test_an_id_is_taken_literally_not_as_a_pattern(room):
    room.send(alert(room.clock))
    for typed in ("%", "_"):
        said = room.type(f"ack {typed}")
        assert said == [f"ack: no incident id starts with {typed}"], said
    assert room.receiver.store.open_incidents()[0].acked_at is None


def test_extend_takes_only_a_finite_positive_number_of_seconds(room):
    a = alert(room.clock)
    room.send(a)
    for bad in ("nan", "inf", "-5", "0", "soon"):
        said = room.type(f"extend {a.alert_id[:8]} {bad}")
        assert said == ["extend: seconds must be a number above 0, e.g. 60"], (bad, said)
    assert room.type(f"extend {a.alert_id[:8]} 90") == []  # sent: the kiosk answers, not us


# -- 2. device states follow the incident, from the store ----------------------------------------


def device_line(lines: list[str], device: str) -> str:
    (line,) = [x for x in lines if x.startswith(f"  device {device}  ")]
    return line


def test_list_shows_device_states_that_follow_ack_and_end_from_the_shared_store(tmp_path,
                                                                                 pki_dir,
                                                                                 db_target):
    db = db_target
    one, two = Room(tmp_path, pki_dir, db=db), Room(tmp_path, pki_dir, db=db)
    try:
        status = p.Status(A, True, "idle", "0.1.0", iso8601(one.clock.wall()))
        one.deliver(A, "status", p.encode_status(status))
        a = alert(one.clock)
        one.send(a)  # received by the first receiver of the share group
        for r in (one, two):  # the second sees it from the store it shares
            line = device_line(r.type("list"), A)
            assert re.fullmatch(rf"  device {A}  (online|\?)  alerting \(incident "
                                rf"{a.alert_id[:8]}\)  since \S+", line), line
        one.type(f"ack {a.alert_id[:8]}")
        line = device_line(two.type("list"), A)
        assert f"acknowledged (incident {a.alert_id[:8]})" in line, line
        two.type(f"end {a.alert_id[:8]}")  # ended by the other receiver
        line = device_line(one.type("list"), A)
        assert re.fullmatch(rf"  device {A}  online  idle  since \S+", line), line
        assert not [x for x in one.type("list") if a.alert_id[:8] in x]
    finally:
        one.close()
        two.close()


# -- 3. report: every press, rounded numbers, readable events, CSV, date window ------------------


def test_every_press_counts_pressed_again_after_the_ack_and_folded_alerts(tmp_path, pki_dir,
                                                                          db_target):
    r = Room(tmp_path, pki_dir, db=db_target,
             limits=IntakeLimits(rate_per_s=1.0, burst=1, summary_s=10.0))
    try:
        a = alert(r.clock)
        r.send(a)
        r.type(f"ack {a.alert_id[:8]}")  # the kiosk stops re-announcing: presses come as events
        r.event(A, "pressed_again", {"alert_id": a.alert_id, "presses": 2})
        r.event(A, "pressed_again", {"alert_id": a.alert_id, "presses": 3})
        r.event(A, "pressed_again", {"alert_id": a.alert_id, "presses": 2})  # late: no lower
        assert r.receiver.store.incident(a.alert_id).presses == 3
        # A device over its budget: an alert folded in with 2 presses of its own counts 2,
        # and its later presses count too.
        extra = alert(r.clock, presses=2)
        r.send(extra)
        inc = r.receiver.store.incident(a.alert_id)
        assert (inc.folded, inc.presses) == (1, 5), inc
        r.event(A, "pressed_again", {"alert_id": extra.alert_id, "presses": 4})
        assert r.receiver.store.incident(a.alert_id).presses == 7
        # A re-announcement of the incident's own alert keeps the folded presses on top.
        r.clock.advance(5.0)
        r.send(alert(r.clock, alert_id=a.alert_id, announce=2, presses=4))
        assert r.receiver.store.incident(a.alert_id).presses == 8
        r.send(alert(r.clock, B))
    finally:
        r.close()
    proc = controlroom_cli("report", "--db", str(db_target))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"2 incident(s) in {db_target}, 9 press(es) in all", out[0]
    assert "presses 8 (1 alert(s) folded in)" in out[1], out[1]
    assert "kiosk: pressed again: 3 presses" in proc.stdout, proc.stdout


def test_a_database_from_before_folded_presses_keeps_its_count(tmp_path):
    import sqlite3

    store = IncidentStore(tmp_path / "room.db")  # made as before issue 12, then downgraded
    clock = FakeClock()
    a, f1, f2 = alert(clock), alert(clock), alert(clock)
    store.record_alert(a, "2026-11-23T10:00:00.000Z", 1.0, None)
    store.fold_alerts(A, [(f1, "2026-11-23T10:00:01.000Z", None),
                          (f2, "2026-11-23T10:00:01.000Z", None)])
    store.close()
    db = sqlite3.connect(tmp_path / "room.db")
    db.executescript("ALTER TABLE folded DROP COLUMN presses; "
                     "UPDATE incidents SET presses = 3;")  # 1 + one per folded alert, as then
    db.close()
    store = IncidentStore(tmp_path / "room.db")
    try:
        assert store.incident(a.alert_id).presses == 3
        store.record_alert(replace(a, announce=2, presses=2), "2026-11-23T10:00:02.000Z", 1.0,
                           None)
        assert store.incident(a.alert_id).presses == 4  # 2 of its own + 1 + 1 folded
        assert store.pressed(A, f2.alert_id, 3) == a.alert_id
        assert store.incident(a.alert_id).presses == 6
    finally:
        store.close()


def test_report_is_rounded_readable_and_escaped(tmp_path, pki_dir):
    r = Room(tmp_path, pki_dir)
    try:
        a = alert(r.clock)
        r.send(a)
        r.clock.advance(30.0)
        r.send(replace(a, announce=2, escalated=True, sent_at=iso8601(r.clock.wall() - 0.002)))
        r.event(A, "fault", {"name": "camera_failed", "detail": "could not open /dev/video0"})
        r.event(A, "stream_end", {"alert_id": a.alert_id, "seq_count": 301, "rate": 0.123456,
                                  "dropped_video": 0, "rtt_ms": 2.358, "up_s": 75.2})
        r.event(A, "backfill", {"alert_id": a.alert_id, "requested": 5, "resent": 3,
                                "unavailable": [[7, 8], [12, 12]]})
        r.event(A, "selftest", {"ok": False, "failed": "camera,microphone",
                                "why": "camera: fault camera_failed\x1b[2J"})
        r.type(f"ack {a.alert_id[:8]}")
        r.type(f"end {a.alert_id[:8]}")
        r.event(A, "fault", {"name": "after the end"})  # not part of the incident
    finally:
        r.close()
    proc = controlroom_cli("report", "--db", str(tmp_path / "room.db"))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    out = text.splitlines()
    assert "location 34.00833,71.56806" in out[1], out[1]
    assert re.search(r"  latency 1[23] ms  ", out[1]), out[1]
    timeline = [line.strip().split("  ", 1)[1] for line in out[2:]]
    assert timeline == [
        "received, announce #1, latency " + re.search(r"latency (\d+ ms)", out[1]).group(1),
        "escalated: not acknowledged, announce #2, latency 30.0 s",
        "kiosk: fault camera_failed: could not open /dev/video0",
        "kiosk: stream ended (incident " + a.alert_id[:8] + "): rate 0.12, rtt 2 ms, seq_count 301, up 1 min 15 s",
        "kiosk: backfill (incident " + a.alert_id[:8] + "): requested 5, resent 3, "
        "unavailable 7-8, 12",
        "kiosk: selftest failed: camera, microphone (camera: fault camera_failed\\x1b[2J)",
        "acknowledged by officer-1",
        "ended by officer-1",
    ], out
    assert not re.search(r"[{}]|\[\[|\['|\w=\S|\d\.\d{4,}", "\n".join(timeline)), text
    assert "\x1b" not in text and "after the end" not in text


def test_device_events_kept_per_incident_are_bounded(tmp_path, pki_dir):
    r = Room(tmp_path, pki_dir)
    try:
        r.receiver.EVENTS_KEPT_PER_INCIDENT = 3
        a = alert(r.clock)
        r.send(a)
        for n in range(6):
            r.event(A, "pressed_again", {"alert_id": a.alert_id, "presses": n + 2})
        assert len([x for x in r.lines if x.startswith("EVENT")]) == 6  # all shown
        timeline = r.receiver.store.timeline(a.alert_id)
        assert [w for _, w, _ in timeline] == ["received", "event", "event", "event",
                                               "events_not_kept"]
        assert r.receiver.store.incident(a.alert_id).presses == 4
    finally:
        r.close()
    proc = controlroom_cli("report", "--db", str(tmp_path / "room.db"))
    assert "more device events than 3: the rest were shown, not kept" in proc.stdout, proc.stdout


def test_report_csv_one_row_per_incident_with_no_formula_and_a_date_window(tmp_path, pki_dir):
    r = Room(tmp_path, pki_dir)
    try:
        early = alert(r.clock, site=p.Site("s", "=HYPERLINK(\"http://x\")\n", 1.0, 2.0))
        r.send(early)  # 2026-01-01
        r.clock.advance(86400 * 2)
        late = alert(r.clock, B, presses=3)
        r.send(late)  # 2026-01-03
        r.type(f"ack {late.alert_id[:8]}")
    finally:
        r.close()
    db = str(tmp_path / "room.db")
    proc = controlroom_cli("report", "--db", db, "--csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["id", "device", "site", "kind", "pressed", "received", "acked", "ended",
                       "presses", "latency ms", "problems"]
    assert [row[0] for row in rows[1:]] == [early.alert_id, late.alert_id]
    assert rows[1][2] == "'=HYPERLINK(\"http://x\")\\n", rows[1]
    assert rows[2][1:4] == [B, "Qissa Khwani Bazaar", "emergency"]
    assert rows[2][6].startswith("2026-01-03T") and rows[2][7] == ""
    assert (rows[2][8], rows[2][10]) == ("3", "") and rows[2][9] in ("12", "13"), rows[2]
    # --until a day includes it; --since a time; a window with nothing in it.
    for window, expected in ((["--until", "2026-01-01"], [early.alert_id]),
                             (["--since", "2026-01-02T12:00"], [late.alert_id]),
                             (["--since", "2026-01-02", "--until", "2026-01-02"], [])):
        proc = controlroom_cli("report", "--db", db, "--csv", *window)
        assert proc.returncode == 0, proc.stderr
        assert [row[0] for row in csv.reader(io.StringIO(proc.stdout))][1:] == expected, window
    proc = controlroom_cli("report", "--db", db, "--since", "2026-01-02")
    assert proc.stdout.startswith(f"1 incident(s) in {db} since 2026-01-02, 3 press(es) in all")


@pytest.mark.parametrize("args, words", [
    (["--since", "yesterday"], ("--since", "not a date: 'yesterday'")),
    (["--until", "2026-13-01"], ("--until", "not a date")),
    (["--since", "2026-01-03", "--until", "2026-01-02"], ("--since 2026-01-03",
                                                          "not before --until 2026-01-02")),
])
def test_report_bad_date_is_one_line_exit_2(tmp_path, args, words):
    IncidentStore(tmp_path / "room.db").close()
    proc = controlroom_cli("report", "--db", str(tmp_path / "room.db"), *args)
    assert_one_line_error(proc, *words)


# -- 4. no dict or unrounded float on the terminal ---------------------------------------------


def test_event_lines_are_words_not_dicts(room):
    room.event(A, "fault", {"name": "camera_failed", "detail": "could not open /dev/video0"})
    room.event(A, "selftest", {"ok": True})
    room.event(A, "backfill", {"alert_id": str(uuid.uuid4()), "requested": 2, "resent": None,
                               "unavailable": [[1, 2]]})
    room.event(A, "new_kind", {"x": {"y": [1, 2]}, "t": 1.23456789, "ok": False, "n": 0})
    events = [x for x in room.lines if x.startswith("EVENT")]
    assert events[0] == f"EVENT  {A}  fault camera_failed: could not open /dev/video0"
    assert events[1] == f"EVENT  {A}  selftest passed"
    assert re.fullmatch(rf"EVENT  {A}  backfill \(incident [0-9a-f]{{8}}\): requested 2, "
                        r"unavailable 1-2", events[2]), events[2]
    assert events[3] == f'EVENT  {A}  new_kind: n 0, ok no, t 1.2, x {{"y":[1,2]}}', events[3]
    assert not any("'" in x or "True" in x for x in events)



# -- end to end: a kiosk on a real mosquitto over mTLS ------------------------------------------


@pytest.mark.broker
def test_kiosk_press_ack_press_again_end_as_the_officer_sees_it(tmp_path, pki_dir, broker):
    from tests.helpers import RunningKiosk, wait_until, write_kiosk_config
    from tests.test_e2e_alert import RunningRoom

    device = "pb-test-0003"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, device)
    db = tmp_path / "room.db"

    def typed(room, line: str) -> list[str]:
        before = len(room.lines)
        room.receiver.command(line)
        return wait_until(lambda: room.lines[before:], timeout=10, what=f"answer to {line!r}")

    with RunningRoom(pki_dir, broker, db, auto_ack=False, evidence_dir=tmp_path / "evidence") \
            as room, RunningKiosk(cfg, media=True) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        line = wait_until(lambda: [x for x in room.lines if x.startswith("ALERT")],
                          timeout=10, what="ALERT line")[0]
        assert "location 34.00000,71.50000" in line and line.endswith(f"id {alert_id[:8]}")
        assert f"alerting (incident {alert_id[:8]})" in device_line(typed(room, "list"), device)
        typed(room, f"ack {alert_id[:8]}")
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
        # A second press once the first is released (debounced): sent as a pressed_again event.
        wait_until(lambda: not kiosk.button.is_pressed, what="first press released")
        kiosk.press()
        wait_until(lambda: room.receiver.store.incident(alert_id).presses == 2, timeout=10,
                   what="second press counted")
        assert "acknowledged" in device_line(typed(room, "list"), device)
        typed(room, f"end {alert_id[:8]}")
        wait_until(lambda: device_line(typed(room, "list"), device).split("  ")[3] == "idle",
                   timeout=10, what="device idle after the end")
        room.events.wait_for("event", lambda d: d["kind"] == "stream_end", timeout=15)
        room.events.wait_for("evidence_complete", timeout=15)
    # The evidence the ALERT line named is the file written, shown once (the operator's end
    # and the kiosk's stream_end both close it).
    (evidence,) = [x for x in room.lines if x.startswith("EVIDENCE")]
    name = re.search(r"  evidence (\S+)  ", line).group(1)
    assert evidence.startswith(f"EVIDENCE  {tmp_path / 'evidence' / name}  "), (line, evidence)
    proc = controlroom_cli("report", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert "presses 2  announces 1" in proc.stdout.splitlines()[1], proc.stdout
    assert "kiosk: pressed again: 2 presses" in proc.stdout and "ended by officer-1" in proc.stdout
    # Noted once each, although media kept coming after the end (until the kiosk heard it).
    assert proc.stdout.count("first media +") == proc.stdout.count("first keyframe +") == 1, \
        proc.stdout
