"""The accountability report (issue 12 item 6): the pure computation on known incidents
(percentiles, outcomes, tests apart, offline hours clipped to the periods' edges), the
store's reads with real SQLite (folded presses, kiosks' sites), the CSV (formula
escaping, the public version without officers, units or notes) and the terminal's
`report --period`."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.tools.controlroom import accountability as acc
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.helpers import assert_one_line_error

ROOM = [sys.executable, "-m", "pinkbutton.tools.controlroom.cli"]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def at(text: str) -> str:
    return text + "Z"


def incident(pressed: str, *, site: str = "s1", name: str = "Bazaar", kind: str = "emergency",
             disposition: str | None = None, view: float | None = None,
             ack: float | None = None, dispatch: float | None = None, presses: int = 1,
             device: str = "pb-1") -> dict:
    """An incident row as the store gives it: press at `pressed` (UTC), received 0.5 s
    later (latency 500 ms), steps `view`/`ack`/`dispatch` seconds after the press."""
    t = ts(pressed)

    def later(s: float | None) -> str | None:
        return None if s is None else acc.iso(t + s)[:-1] + ".000Z"

    return {"alert_id": str(uuid.uuid4()), "device_id": device, "site_id": site,
            "site_name": name, "kind": kind, "pressed_at": "1970-01-01T00:00:00Z",  # kiosk clock off
            "received_at": acc.iso(t)[:-1] + ".500Z", "latency_ms": 500.0, "presses": presses,
            "disposition": disposition, "first_viewed_at": later(view), "acked_at": later(ack),
            "dispatched_at": later(dispatch), "first_viewed_by": "officer-view",
            "acked_by": "officer-ack", "dispatched_by": "officer-disp",
            "dispatch_unit": "UNIT-SECRET", "dispatch_note": "NOTE-SECRET", "ended_by": None}


def test_percentiles_are_nearest_rank_on_known_inputs():
    assert acc.percentile([], 50) is None and acc.percentile([], 90) is None
    assert acc.percentile([7.5], 50) == acc.percentile([7.5], 90) == 7.5  # one incident
    ten = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]  # unsorted on purpose
    assert (acc.percentile(ten, 50), acc.percentile(ten, 90), acc.percentile(ten, 100)) == \
        (5, 9, 10)
    assert (acc.percentile([1, 2, 3, 4], 50), acc.percentile([1, 2, 3, 4], 90)) == (2, 4)
    assert (acc.percentile([30, 10], 50), acc.percentile([30, 10], 90)) == (10, 30)
    assert acc.percentile([1, 2, 3], 0) == 1


def test_periods_days_iso_weeks_months_and_a_time_zone():
    weeks = acc.periods("week", date(2026, 12, 30), date(2027, 1, 5))
    assert [w.label for w in weeks] == ["2026-W53", "2027-W01"]  # 2026 has 53 ISO weeks
    assert weeks[0].start == ts("2026-12-28T00:00:00")  # a Monday
    assert weeks[1].end == ts("2027-01-11T00:00:00")
    months = acc.periods("month", date(2026, 11, 15), date(2027, 1, 1))
    assert [(m.label, m.end - m.start) for m in months] == \
        [("2026-11", 30 * 86400), ("2026-12", 31 * 86400), ("2027-01", 31 * 86400)]
    days = acc.periods("day", date(2026, 12, 1), date(2026, 12, 1), "Asia/Karachi")
    assert [(d.label, d.start) for d in days] == [("2026-12-01", ts("2026-11-30T19:00:00"))]
    with pytest.raises(acc.ReportError, match="unknown time zone"):
        acc.zone("Mars/Olympus")
    with pytest.raises(acc.ReportError, match="before it starts"):
        acc.periods("day", date(2026, 12, 2), date(2026, 12, 1))
    with pytest.raises(acc.ReportError, match="more than 400"):
        acc.periods("day", date(2020, 1, 1), date(2026, 1, 1))


def test_outcomes_tests_apart_and_response_time_percentiles_per_site_and_day():
    rows = [
        incident("2026-12-01T08:00:00", disposition="genuine", view=4, ack=10, dispatch=60,
                 presses=3),
        incident("2026-12-01T09:00:00", disposition="false_alarm", view=6, ack=20),
        incident("2026-12-01T10:00:00", disposition="prank", ack=30),
        incident("2026-12-01T11:00:00", disposition="technical", ack=40),
        incident("2026-12-01T12:00:00"),  # open: undecided, never acked
        # tests: counted apart, never in the response times (their ack is instant)
        incident("2026-12-01T13:00:00", kind="test", ack=0.1, disposition="test"),
        incident("2026-12-01T14:00:00", disposition="test", ack=0.2, view=0.1),
        # the next day at another site: one incident
        incident("2026-12-02T23:59:00", site="s2", name="Station", disposition="genuine",
                 ack=90, dispatch=300),
        # outside the range: not counted anywhere
        incident("2026-12-03T00:00:00", disposition="genuine", ack=1),
        incident("2026-11-30T23:59:59", disposition="genuine", ack=1),
    ]
    report = acc.compute(rows, {}, {}, "day", date(2026, 12, 1), date(2026, 12, 2),
                         now=ts("2026-12-05T00:00:00"))
    assert report.sites == [("s1", "Bazaar"), ("s2", "Station")]
    by = {(r.site_id, r.period.label): r for r in report.rows}
    assert len(report.rows) == 4  # every site gets every period, empty ones included
    b1 = by["s1", "2026-12-01"]
    assert (b1.incidents, b1.presses, b1.genuine, b1.false_alarms, b1.technical,
            b1.undecided, b1.tests) == (5, 7, 1, 2, 1, 1, 2)
    assert b1.times("view") == (2, 4, 6)
    assert b1.times("ack") == (4, 20, 40)  # [10, 20, 30, 40]: p50 rank 2, p90 rank 4
    assert b1.times("dispatch") == (1, 60, 60)
    empty = by["s1", "2026-12-02"]
    assert (empty.incidents, empty.tests, empty.times("ack")) == (0, 0, (0, None, None))
    s2 = by["s2", "2026-12-02"]
    assert (s2.incidents, s2.genuine, s2.times("ack"), s2.times("dispatch")) == \
        (1, 1, (1, 90, 90), (1, 300, 300))
    assert by["s2", "2026-12-01"].incidents == 0
    total1, total2 = report.totals
    assert (total1.site_name, total1.incidents, total1.tests, total2.incidents) == \
        (acc.ALL_SITES, 5, 2, 1)
    assert total2.times("ack") == (1, 90, 90)
    # the press counts on the room's clock (received - latency), not the kiosk's pressed_at
    assert {d["pressed"] for d in report.incidents} >= {"2026-12-01T08:00:00Z"}


def test_offline_hours_are_clipped_to_the_periods_and_a_night_counts_in_both_days():
    changes = {
        "pb-1": [(ts("2026-11-30T12:00:00"), True),
                 (ts("2026-12-01T22:00:00"), False),  # offline across midnight ...
                 (ts("2026-12-02T03:00:00"), True),  # ... 2 h on the 1st, 3 h on the 2nd
                 (ts("2026-12-03T20:00:00"), False)],  # offline still: until `now`
        "pb-9": [(ts("2026-11-20T00:00:00"), False)],  # never alerted: site unknown
    }
    sites = {"pb-1": ("s1", "Bazaar")}
    report = acc.compute([], changes, sites, "day", date(2026, 12, 1), date(2026, 12, 4),
                         now=ts("2026-12-03T21:30:00"))
    by = {(r.site_id, r.period.label): r.offline_h for r in report.rows}
    assert by["s1", "2026-12-01"] == pytest.approx(2)
    assert by["s1", "2026-12-02"] == pytest.approx(3)
    assert by["s1", "2026-12-03"] == pytest.approx(1.5)  # up to now
    assert by["s1", "2026-12-04"] == 0  # the future is not offline time yet
    assert by["", "2026-12-01"] == pytest.approx(24)  # offline since before the range
    assert ("", "(site unknown)") in report.sites
    assert report.totals[0].offline_h == pytest.approx(26)
    # the same night in weeks: both days in one ISO week
    weekly = acc.compute([], changes, sites, "week", date(2026, 12, 1), date(2026, 12, 1),
                         now=ts("2026-12-03T21:30:00"))
    assert {r.site_id: round(r.offline_h, 3) for r in weekly.rows}["s1"] == 6.5
    assert acc.offline_seconds([], 0, 10, 100) == 0
    assert acc.offline_seconds([(5.0, False)], 0, 10, 100) == 5
    assert acc.offline_seconds([(-5.0, False), (3.0, True)], 0, 10, 100) == 3


def alert(device: str, site: p.Site, kind: str = "emergency", presses: int = 1) -> p.Alert:
    return p.Alert(device_id=device, alert_id=str(uuid.uuid4()), seq=1, kind=kind,
                   pressed_at="2026-12-01T08:00:00.000Z", pressed_mono=1.0, age_ms=2000,
                   announce=1, escalated=False, presses=presses, site=site,
                   firmware="0.1.0", sent_at="2026-12-01T08:00:02.000Z")


def test_from_a_real_store_folded_presses_count_and_offline_kiosks_belong_to_their_site(
        tmp_path):
    store = IncidentStore(tmp_path / "room.db")
    try:
        site = p.Site("s1", "Old Bazaar", 34.0, 71.5)
        first = alert("pb-1", site, presses=2)
        store.record_alert(first, "2026-12-01T08:00:02.000Z", 2000.0, True)
        into, folded = store.fold_alerts("pb-1", [(alert("pb-1", site, presses=3),
                                                   "2026-12-01T08:00:05.000Z", True)])
        assert into == first.alert_id and len(folded) == 1
        store.viewed(first.alert_id, "2026-12-01T08:00:05.000Z", "officer-1")
        store.mark(first.alert_id, "acked", "2026-12-01T08:00:12.000Z", "officer-1")
        store.dispatch(first.alert_id, "2026-12-01T08:01:00.000Z", "officer-1", "Unit 7")
        store.mark(first.alert_id, "ended", "2026-12-01T08:30:00.000Z", "officer-1", "genuine")
        test = alert("pb-1", site, kind="test")
        store.record_alert(test, "2026-12-01T09:00:02.000Z", 2000.0, True)
        store.set_device("pb-1", True, "idle", "0.1.0", "2026-12-01T00:00:00.000Z")
        store.set_device("pb-1", False, "offline", "0.1.0", "2026-12-01T10:00:00.000Z", "lwt")
        store.set_device("pb-1", True, "idle", "0.1.0", "2026-12-01T10:30:00.000Z")
        report = acc.from_store(store, "day", date(2026, 12, 1), date(2026, 12, 1),
                                now=ts("2026-12-02T00:00:00"))
    finally:
        store.close()
    (row,) = report.rows
    assert (row.site_name, row.incidents, row.presses, row.tests, row.genuine) == \
        ("Old Bazaar", 1, 5, 1, 1)  # 2 presses + 3 of the folded alert; the test apart
    assert (row.times("view"), row.times("ack"), row.times("dispatch")) == \
        ((1, 5, 5), (1, 12, 12), (1, 60, 60))  # from the press: received 08:00:02 - 2 s
    assert row.offline_h == pytest.approx(0.5)


def test_csv_escapes_formulas_and_the_public_version_names_no_officer_unit_or_note():
    rows = [incident("2026-12-01T08:00:00", name="=HYPERLINK(\"http://x\")",
                     disposition="genuine", ack=10, dispatch=30),
            incident("2026-12-01T09:00:00", site="s2", name="@SUM(A1)\u202e", ack=5)]
    for public in (False, True):
        report = acc.compute(rows, {}, {}, "week", date(2026, 12, 1), date(2026, 12, 1),
                             now=ts("2026-12-05T00:00:00"), public=public)
        text = acc.csv_text(report)
        table = list(csv.reader(io.StringIO(text)))
        assert tuple(table[0]) == acc.COLUMNS
        names = [r[1] for r in table[1:]]
        assert names == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)\\u202e", acc.ALL_SITES]
        assert table[1][2:7] == ["2026-W49", "2026-11-30T00:00:00Z", "1", "1", "1"]
        assert table[1][table[0].index("ack p50 s")] == "10.0"
        assert table[1][table[0].index("dispatch p90 s")] == "30.0"
        assert table[2][table[0].index("dispatch p50 s")] == ""  # none dispatched
    for secret in ("officer-", "UNIT-SECRET", "NOTE-SECRET", "pb-1"):
        assert secret not in text  # the public CSV (the last one)
        assert secret not in "\n".join(acc.text_lines(report))
    assert report.incidents == []
    assert acc.compute(rows, {}, {}, "week", date(2026, 12, 1), date(2026, 12, 1),
                       now=0).incidents[0]["unit"] == "UNIT-SECRET"  # internal: listed


def test_terminal_report_period_prints_the_table_public_csv_and_refuses_bad_usage(tmp_path):
    db = tmp_path / "room.db"
    store = IncidentStore(db)
    try:
        a = alert("pb-1", p.Site("s1", "Bazaar\x1b[2J", 34.0, 71.5))
        store.record_alert(a, "2026-12-01T08:00:02.000Z", 2000.0, True)
        store.mark(a.alert_id, "acked", "2026-12-01T08:00:12.500Z", "officer-secret")
        store.dispatch(a.alert_id, "2026-12-01T08:01:00.000Z", "officer-secret", "UNIT-X",
                       "NOTE-X")
    finally:
        store.close()
    out = subprocess.run([*ROOM, "report", "--db", str(db), "--period", "week", "--since",
                          "2026-12-01", "--until", "2026-12-06"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("accountability report per week (UTC), 2026-11-30 to 2026-12-06")
    assert "\x1b" not in out and "Bazaar\\x1b[2J" in out
    assert any("2026-W49" in line and "12.5 s / 12.5 s" in line
               and "1 min 0 s / 1 min 0 s" in line for line in lines), out
    public = subprocess.run([*ROOM, "report", "--db", str(db), "--public", "--period", "week",
                             "--csv", "--since", "2026-12-01", "--until", "2026-12-01"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    table = list(csv.reader(io.StringIO(public)))
    assert table[1][1:3] == ["Bazaar\\x1b[2J", "2026-W49"]
    assert table[1][table[0].index("ack p50 s")] == "12.5"
    for secret in ("officer-secret", "UNIT-X", "NOTE-X", "pb-1", a.alert_id):
        assert secret not in public
    for argv, problem in (
            (["--public"], "--public needs --period"),
            (["--tz", "UTC"], "--tz needs --period"),
            (["--period", "week", "--tz", "Mars/Olympus"], "unknown time zone"),
            (["--period", "fortnight"], "invalid choice"),
            (["--period", "day", "--since", "2000-01-01"], "more than 400 days")):
        r = subprocess.run([*ROOM, "report", "--db", str(db), *argv], capture_output=True,
                           text=True, timeout=60)
        assert_one_line_error(r, problem)
