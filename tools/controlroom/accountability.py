"""The accountability report (issue 12, item 6): per site and per day / ISO week / month,
how many presses and incidents, how they turned out, how fast the room responded and how
long the kiosks were offline. Pure computation (`compute`) over rows read from the store
(`from_store`), plus its CSV and terminal renderings; the console's page draws it.

Definitions (docs/architecture.md, "Accountability report"):

- Periods are days, ISO weeks (Monday to Sunday, labelled `2026-W49`) or calendar months,
  in a time zone: UTC unless one is configured (`report --tz`, the page's `tz`). A range of
  dates covers every whole period from the one holding its first day to the one holding
  its last.
- An incident counts in the period and site of its press, on the room's clock: received_at
  minus the measured latency (the kiosk's own pressed_at when the latency is unknown).
- A test is an incident of kind `test` or ended with the disposition `test`: counted in
  `tests` only, never in incidents, presses, outcomes or response times.
- presses: every press of the incident (the kiosk's re-presses and every press of the
  alerts folded into it). genuine: disposition genuine; false alarms: false_alarm + prank;
  technical; undecided: no disposition yet (open, or ended without one).
- Response times are seconds from the press to the first view in the console, the
  acknowledgement and the first dispatch, over the incidents that had that step (how many
  did is given beside them). pXX is the nearest-rank percentile: the smallest observed
  value with at least XX % of the values at or below it, i.e. sorted[ceil(XX/100 * n) - 1];
  None for no value.
- Offline hours: a kiosk is offline from a recorded offline change (the receiver's link
  supervision, store `device_log`) to its next online change, or to `now`; each stretch is
  clipped to the period's edges (a night offline counts in both days). A site's hours are
  the sum over its kiosks; a kiosk belongs to the site of its newest incident, or to
  "(site unknown)" when it never raised one.

The public version carries site ids, names and numbers only: no officer names, dispatch
units or notes, device ids or evidence.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pinkbutton.tools.controlroom.escape import shown
from pinkbutton.tools.controlroom.terminal import seconds

PERIODS = ("day", "week", "month")
#: How many periods a report covers when no range is given (ending with the current one).
DEFAULT_SPAN = {"day": 14, "week": 12, "month": 12}
#: At most this many periods in one report (a year of days and then some).
MAX_PERIODS = 400
UNKNOWN_SITE = ("", "(site unknown)")
FALSE_ALARMS = ("false_alarm", "prank")

COLUMNS = ("site id", "site", "period", "period start", "incidents", "presses", "genuine",
           "false alarms", "technical", "undecided", "tests", "viewed", "view p50 s",
           "view p90 s", "acked", "ack p50 s", "ack p90 s", "dispatched", "dispatch p50 s",
           "dispatch p90 s", "offline h")
ALL_SITES = "(all sites)"


class ReportError(ValueError):
    """A bad period, range or time zone: one line naming the problem."""


@dataclass(frozen=True, slots=True)
class Period:
    label: str  # 2026-12-01, 2026-W49, 2026-12
    start: float  # UTC seconds, inclusive
    end: float  # exclusive


@dataclass(slots=True)
class Row:
    site_id: str  # "" for the all-sites total and the unknown site
    site_name: str
    period: Period
    incidents: int = 0
    presses: int = 0
    genuine: int = 0
    false_alarms: int = 0
    technical: int = 0
    undecided: int = 0
    tests: int = 0
    view_s: list[float] = field(default_factory=list)
    ack_s: list[float] = field(default_factory=list)
    dispatch_s: list[float] = field(default_factory=list)
    offline_s: float = 0.0

    @property
    def offline_h(self) -> float:
        return self.offline_s / 3600

    def times(self, step: str) -> tuple[int, float | None, float | None]:
        """(count, p50, p90) of the seconds from press to `step` (view, ack, dispatch)."""
        values = {"view": self.view_s, "ack": self.ack_s, "dispatch": self.dispatch_s}[step]
        return len(values), percentile(values, 50), percentile(values, 90)

    def cells(self) -> list:
        """The row's values in COLUMNS order (numbers unrounded but for the times)."""
        out: list = [self.site_id, self.site_name, self.period.label, iso(self.period.start),
                     self.incidents, self.presses, self.genuine, self.false_alarms,
                     self.technical, self.undecided, self.tests]
        for step in ("view", "ack", "dispatch"):
            n, p50, p90 = self.times(step)
            out += [n, _round(p50), _round(p90)]
        out.append(round(self.offline_h, 2))
        return out


@dataclass(frozen=True, slots=True)
class Report:
    kind: str  # day | week | month
    tz: str  # the time zone's name
    periods: list[Period]
    sites: list[tuple[str, str]]  # (site_id, name), by name
    rows: list[Row]  # site x period, sites by name then periods in order
    totals: list[Row]  # all sites, one per period
    public: bool
    incidents: list[dict]  # the internal version's incident list (empty when public)

    @property
    def since(self) -> date:
        return _local_date(self.periods[0].start, self.tz)

    @property
    def until(self) -> date:  # the last day covered
        return _local_date(self.periods[-1].end, self.tz) - timedelta(days=1)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: sorted(values)[ceil(p/100 * n) - 1]; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def zone(name: str | None) -> tzinfo:
    """A time zone by IANA name (None or 'UTC': UTC)."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"unknown time zone {shown(name, 64)!s} "
                          "(an IANA name such as Asia/Karachi, or UTC)") from None


def period_of(kind: str, day: date) -> date:
    """The first day of the period holding `day`."""
    if kind == "day":
        return day
    if kind == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if kind == "month":
        return day.replace(day=1)
    raise ReportError(f"unknown period {shown(kind, 32)}: one of {', '.join(PERIODS)}")


def _next(kind: str, first: date) -> date:
    if kind == "day":
        return first + timedelta(days=1)
    if kind == "week":
        return first + timedelta(days=7)
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def _label(kind: str, first: date) -> str:
    if kind == "week":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    return first.isoformat() if kind == "day" else first.strftime("%Y-%m")


def _midnight(day: date, tz: tzinfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def periods(kind: str, since: date, until: date, tz_name: str = "UTC") -> list[Period]:
    """Every period from the one holding `since` to the one holding `until` (both days
    included), with their edges as UTC seconds (local midnights of `tz_name`)."""
    tz = zone(tz_name)
    first = period_of(kind, since)
    if until < since:
        raise ReportError(f"the range ends ({until}) before it starts ({since})")
    out: list[Period] = []
    while first <= until:
        following = _next(kind, first)
        out.append(Period(_label(kind, first), _midnight(first, tz), _midnight(following, tz)))
        if len(out) > MAX_PERIODS:
            raise ReportError(f"more than {MAX_PERIODS} {kind}s: give a shorter range or a "
                              "longer period")
        first = following
    return out


def default_range(kind: str, now: float, tz_name: str = "UTC", since: date | None = None,
                  until: date | None = None) -> tuple[date, date]:
    """The range a report covers when a bound is missing: up to today (in `tz_name`), and
    DEFAULT_SPAN[kind] periods back from its end, that one included."""
    if until is None:
        until = max(_local_date(now, tz_name), since) if since else _local_date(now, tz_name)
    if since is None:
        since = period_of(kind, until)
        for _ in range(DEFAULT_SPAN[kind] - 1):
            since = period_of(kind, since - timedelta(days=1))
    return since, until


def parse_day(text: str, tz_name: str = "UTC") -> date:
    """`YYYY-MM-DD`, or an ISO time (UTC unless it says otherwise) taken as its day in the
    report's time zone."""
    text = text.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"not a date: {shown(text, 64)} (YYYY-MM-DD)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(zone(tz_name)).date()


def parse_ts(text: str | None) -> float | None:
    """The store's ISO 8601 times as UTC seconds (None: missing or unreadable)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local_date(ts: float, tz_name: str) -> date:
    return datetime.fromtimestamp(ts, zone(tz_name)).date()


def press_ts(row: dict) -> float | None:
    """The press on the room's clock (as the console shows it)."""
    received = parse_ts(row.get("received_at"))
    if received is not None and isinstance(row.get("latency_ms"), int | float):
        return received - row["latency_ms"] / 1000
    return parse_ts(row.get("pressed_at"))


def is_test(row: dict) -> bool:
    return row.get("kind") == "test" or row.get("disposition") == "test"


def offline_seconds(changes: Iterable[tuple[float, bool]], start: float, end: float,
                    now: float) -> float:
    """Seconds offline within [start, min(end, now)) of one kiosk, from its online/offline
    changes (time, online) oldest first; offline until `now` when the last one is."""
    stop = min(end, now)
    total, since = 0.0, None
    for at, online in changes:
        if not online and since is None:
            since = at
        elif online and since is not None:
            total += max(0.0, min(at, stop) - max(since, start))
            since = None
    if since is not None:
        total += max(0.0, stop - max(since, start))
    return total


def compute(incidents: Sequence[dict], changes: dict[str, list[tuple[float, bool]]],
            device_sites: dict[str, tuple[str, str]], kind: str, since: date, until: date,
            tz_name: str = "UTC", now: float = 0.0, public: bool = False) -> Report:
    """The report over whole periods from `since` to `until` (days in `tz_name`).

    `incidents`: store incident rows (dicts with the incidents table's columns);
    `changes`: each kiosk's online/offline changes, (UTC seconds, online) oldest first;
    `device_sites`: each kiosk's (site_id, site_name), from its newest incident."""
    spans = periods(kind, since, until, tz_name)
    lo, hi = spans[0].start, spans[-1].end
    names: dict[str, str] = {}  # site_id -> the newest name seen
    cells: dict[tuple[str, int], Row] = {}
    totals = [Row("", ALL_SITES, p) for p in spans]
    detail: list[dict] = []

    def index(ts: float) -> int | None:
        if not lo <= ts < hi:
            return None
        return next(i for i, p in enumerate(spans) if p.start <= ts < p.end)

    def cell(site_id: str, i: int) -> Row:
        if (site_id, i) not in cells:
            cells[site_id, i] = Row(site_id, "", spans[i])
        return cells[site_id, i]

    for row in sorted(incidents, key=lambda r: r.get("received_at") or ""):
        pressed = press_ts(row)
        i = None if pressed is None else index(pressed)
        if i is None or pressed is None:
            continue
        site_id = str(row.get("site_id") or "")
        names[site_id] = str(row.get("site_name") or "") or UNKNOWN_SITE[1]
        for target in (cell(site_id, i), totals[i]):
            _count(target, row, pressed)
        if not public:
            detail.append(_incident_detail(row, pressed, spans[i].label))

    for device, device_changes in changes.items():
        site_id, site_name = device_sites.get(device, UNKNOWN_SITE)
        for i, p in enumerate(spans):
            gone = offline_seconds(device_changes, p.start, p.end, now)
            if gone > 0:
                names.setdefault(site_id, site_name)
                cell(site_id, i).offline_s += gone
                totals[i].offline_s += gone

    sites = sorted(names.items(), key=lambda s: (s[1].casefold(), s[0]))
    rows = []
    for site_id, name in sites:
        for i in range(len(spans)):
            r = cells.get((site_id, i)) or Row(site_id, "", spans[i])
            r.site_name = name
            rows.append(r)
    return Report(kind, tz_name if zone(tz_name) is not UTC else "UTC", spans, sites, rows,
                  totals, public, detail)


def _count(target: Row, row: dict, pressed: float) -> None:
    if is_test(row):
        target.tests += 1
        return
    target.incidents += 1
    target.presses += int(row.get("presses") or 1)
    disposition = row.get("disposition")
    if disposition == "genuine":
        target.genuine += 1
    elif disposition in FALSE_ALARMS:
        target.false_alarms += 1
    elif disposition == "technical":
        target.technical += 1
    else:
        target.undecided += 1
    for column, values in (("first_viewed_at", target.view_s), ("acked_at", target.ack_s),
                           ("dispatched_at", target.dispatch_s)):
        at = parse_ts(row.get(column))
        if at is not None:
            values.append(max(0.0, at - pressed))


def _incident_detail(row: dict, pressed: float, period: str) -> dict:
    """One incident as the internal page lists it (officers' names, unit, note: never in
    the public version)."""
    def after(column: str) -> float | None:
        at = parse_ts(row.get(column))
        return None if at is None else max(0.0, at - pressed)

    return {"alert_id": row.get("alert_id"), "site_name": row.get("site_name") or "",
            "period": period, "pressed": iso(pressed), "kind": row.get("kind"),
            "test": is_test(row), "disposition": row.get("disposition"),
            "presses": row.get("presses"), "viewed_by": row.get("first_viewed_by"),
            "to_view": after("first_viewed_at"), "acked_by": row.get("acked_by"),
            "to_ack": after("acked_at"), "dispatched_by": row.get("dispatched_by"),
            "unit": row.get("dispatch_unit"), "note": row.get("dispatch_note"),
            "to_dispatch": after("dispatched_at"), "ended_by": row.get("ended_by")}


def from_store(store, kind: str, since: date | None = None, until: date | None = None,
               tz_name: str = "UTC", now: float = 0.0, public: bool = False) -> Report:
    """Read what the report needs from an IncidentStore and compute it (default range:
    the last DEFAULT_SPAN periods up to `now`)."""
    if kind not in PERIODS:
        raise ReportError(f"unknown period {shown(kind, 32)}: one of {', '.join(PERIODS)}")
    zone(tz_name)
    since, until = default_range(kind, now, tz_name, since, until)
    spans = periods(kind, since, until, tz_name)
    # A press is never after its receipt: incidents received before the range cannot
    # count in it (alerts delivered late, e.g. after an outage, are kept by received_at).
    rows = store.incident_rows("WHERE received_at >= ?", (iso(spans[0].start - 1),))
    changes: dict[str, list[tuple[float, bool]]] = {}
    for device, at, online in store.online_changes():
        ts = parse_ts(at)
        if ts is not None:
            changes.setdefault(device, []).append((ts, online))
    return compute(rows, changes, store.device_sites(), kind, since, until, tz_name, now,
                   public)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def csv_text(report: Report) -> str:
    """The table as CSV: one row per site and period, then the all-sites totals. Text
    cells as the terminal's CSV writes them (escaped; never a spreadsheet formula)."""
    from pinkbutton.tools.controlroom.cli import _cell

    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(COLUMNS)
    for row in [*report.rows, *report.totals]:
        values = row.cells()
        out.writerow([_cell(v) if isinstance(v, str) else ("" if v is None else v)
                      for v in values])
    return buf.getvalue()


def text_lines(report: Report) -> list[str]:
    """The table for a terminal: rounded, device text through shown()."""
    head = (f"accountability report per {report.kind} ({report.tz}), {report.since} to "
            f"{report.until}{', public' if report.public else ''}: {len(report.sites)} "
            "site(s)")
    lines = [head, f"{'site':<24} {'period':<10} {'incid':>5} {'press':>5} {'genu':>4} "
                   f"{'false':>5} {'tech':>4} {'undec':>5} {'tests':>5}  {'view p50/p90':<22}"
                   f"  {'ack p50/p90':<22}  {'dispatch p50/p90':<22}  {'offline':>8}"]
    for row in [*report.rows, *report.totals]:
        name = shown(row.site_name, 24)
        times = []
        for step in ("view", "ack", "dispatch"):
            n, p50, p90 = row.times(step)
            times.append(f"{seconds(p50)} / {seconds(p90)}" if n else "-")
        lines.append(f"{name:<24} {row.period.label:<10} {row.incidents:>5} {row.presses:>5} "
                     f"{row.genuine:>4} {row.false_alarms:>5} {row.technical:>4} "
                     f"{row.undecided:>5} {row.tests:>5}  {times[0]:<22}  {times[1]:<22}  "
                     f"{times[2]:<22}  {row.offline_h:>6.1f} h")
    return lines
