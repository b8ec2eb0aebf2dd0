"""What the operator's terminal shows, in words and rounded numbers.

Pure functions used by the receiver's lines (ALERT, EVENT, `list`) and by
`pinkbutton-controlroom report`: short incident ids that stay unique, a kiosk's location,
milliseconds and seconds rounded as an officer reads them, device events and timeline
entries as text (never a Python dict or a JSON blob), the state a kiosk is in from the
incident store. Every device-supplied string goes through `shown()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from pinkbutton.tools.controlroom.escape import shown

SHORT_ID = 8  # characters of an alert_id shown, unless another open incident shares them


def short_id(alert_id: str, others: Iterable[str]) -> str:
    """The shortest prefix of `alert_id`, at least SHORT_ID characters, that no other id in
    `others` starts with (never ending on a dash); the operator's verbs accept it."""
    rivals = [o for o in others if o != alert_id]
    n = min(SHORT_ID, len(alert_id))
    while n < len(alert_id) and (alert_id[n - 1] == "-"
                                 or any(o.startswith(alert_id[:n]) for o in rivals)):
        n += 1
    return alert_id[:n]


def location(lat: object, lon: object) -> str:
    """`location 34.00833,71.56806` (5 decimals: about a metre), or `no location`."""
    y, x = _num(lat), _num(lon)
    if y is None or x is None or not (-90 <= y <= 90 and -180 <= x <= 180):  # nan: False
        return "no location"
    return f"location {y:.5f},{x:.5f}"


def ms(value: float | None) -> str:
    """Milliseconds as read at a glance: `12 ms`, from a second on `1.2 s`; `?` unknown."""
    if value is None or not math.isfinite(value):
        return "?"
    if abs(value) < 999.5:
        return f"{value:.0f} ms"
    return seconds(value / 1000)


def seconds(value: float | None) -> str:
    """`1.2 s`, `42.0 s`, `3 min 5 s`, `2 h 3 min`; `?` unknown."""
    if value is None or not math.isfinite(value):
        return "?"
    if abs(value) < 59.95:
        return f"{value:.1f} s"
    s = round(value)
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def value_text(value: object, limit: int = 200) -> str:
    """One detail value as text: numbers rounded, lists joined, objects as compact JSON;
    strings (device-supplied) escaped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "?"
        return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}".removesuffix(".0")
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "-"
    if isinstance(value, str):
        return shown(value, limit)
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return shown(", ".join(str(v) for v in value), limit)
    return shown(json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False), limit)


def fields_text(detail: Mapping, skip: Iterable[str] = (), zeros: bool = True) -> str:
    """The remaining fields of a detail as `name value, name value` (names escaped too); a
    number named `*_ms` or `*_s` as a duration (`rtt 2 ms`); without `zeros`, fields that
    are 0 are left out."""
    skip = set(skip)
    parts = []
    for k, v in list(detail.items())[:24]:
        if k in skip or v is None or (not zeros and v == 0 and not isinstance(v, bool)):
            continue
        name = shown(str(k), 64)
        number = _num(v)
        if number is not None and name.endswith("_ms"):
            parts.append(f"{name[:-3]} {ms(number)}")
        elif number is not None and name.endswith("_s"):
            parts.append(f"{name[:-2]} {seconds(number)}")
        else:
            parts.append(f"{name} {value_text(v)}")
    return ", ".join(parts)


def _ranges(value: object) -> str:
    if not isinstance(value, list):
        return value_text(value)
    out = []
    for r in value[:20]:
        if isinstance(r, list | tuple) and len(r) == 2:
            out.append(f"{value_text(r[0])}-{value_text(r[1])}" if r[0] != r[1]
                       else value_text(r[0]))
        else:
            out.append(value_text(r))
    return ", ".join(out) + (f" (+{len(value) - 20} more)" if len(value) > 20 else "")


def _incident(detail: Mapping) -> str:
    aid = detail.get("alert_id")
    return f" (incident {shown(aid[:SHORT_ID])})" if isinstance(aid, str) else ""


def event_text(kind: str, detail: Mapping) -> str:
    """A device event (`events` topic) as one line of words, e.g. `fault camera_failed: could
    not open /dev/video0`, `selftest failed: camera, microphone (camera: fault ...)`."""
    d = detail if isinstance(detail, Mapping) else {}
    k = shown(kind, 64)
    if kind == "fault":
        if isinstance(d.get("name"), str):
            why = f": {value_text(d['detail'], 300)}" if d.get("detail") else ""
            return f"fault {shown(d['name'], 64)}{why}"
        if d.get("faults"):
            return f"faults: {value_text(d['faults'], 300)}"
    if kind == "fault_cleared" and isinstance(d.get("name"), str):
        return f"fault cleared: {shown(d['name'], 64)}"
    if kind == "selftest":
        if d.get("ok") is True:
            return "selftest passed"
        names = d.get("failed") or d.get("faults") or "?"
        if isinstance(names, str):
            names = [x.strip() for x in names.split(",") if x.strip()] or "?"
        why = f" ({value_text(d['why'], 500)})" if d.get("why") else ""
        return f"selftest failed: {value_text(names)}{why}"
    if kind == "pressed_again" and isinstance(d.get("presses"), int):
        return f"pressed again: {d['presses']} presses{_incident(d)}"
    if kind == "stream_end":  # the sender's counters; those at 0 (nothing dropped) left out
        rest = fields_text(d, skip=("alert_id",), zeros=False)
        return f"stream ended{_incident(d)}" + (f": {rest}" if rest else "")
    if kind == "backfill":
        parts = [f"{name} {value_text(d[name])}" for name in ("requested", "resent")
                 if d.get(name) is not None]
        if d.get("unavailable"):
            parts.append(f"unavailable {_ranges(d['unavailable'])}")
        return f"backfill{_incident(d)}" + (f": {', '.join(parts)}" if parts else "")
    rest = fields_text(d)
    return f"{k}: {rest}" if rest else k


def timeline_text(what: str, detail: Mapping) -> str:
    """One entry of an incident's timeline (store.timeline) as words."""
    d = detail if isinstance(detail, Mapping) else {}
    if what in ("received", "duplicate", "escalated"):
        words = {"received": "received", "duplicate": "announced again",
                 "escalated": "escalated: not acknowledged"}[what]
        parts = [words]
        if isinstance(d.get("announce"), int):
            parts.append(f"announce #{d['announce']}")
        if what == "received" or d.get("latency_ms") is not None:
            parts.append(f"latency {ms(_num(d.get('latency_ms')))}")
        text = ", ".join(parts)
        problems = d.get("problems")
        if problems:
            listed = "; ".join(map(str, problems)) if isinstance(problems, list) else problems
            text += f"; FLAGGED: {value_text(listed, 1000)}"
        return text
    if what == "acked":
        return f"acknowledged by {shown(d['by'], 64)}" if d.get("by") else "acknowledged"
    if what in ("dispatched", "ended"):
        return what + (f" by {shown(d['by'], 64)}" if d.get("by") else "")
    if what == "folded":
        n = d.get("alerts")
        first, last = d.get("first"), d.get("last")
        span = ""
        if isinstance(first, str) and isinstance(last, str):
            span = (f" ({shown(first[:SHORT_ID])})" if first == last else
                    f" ({shown(first[:SHORT_ID])} … {shown(last[:SHORT_ID])})")
        return f"{value_text(n)} more alert(s) of the device folded in{span}"
    if what in ("first_media", "first_keyframe"):
        label = "first media" if what == "first_media" else "first keyframe"
        value = _num(d.get("ms"))
        sign = "+" if value is not None and value >= 0 else ""
        return f"{label} {sign}{ms(value)} after the alert was received"
    if what == "events_not_kept":
        return (f"more device events than {value_text(d.get('after'))}: the rest were shown, "
                "not kept")
    if what == "event":
        kind = d.get("kind")
        inner = d.get("detail")
        return event_text(kind if isinstance(kind, str) else "?",
                          inner if isinstance(inner, Mapping) else {})
    rest = fields_text(d)
    return f"{shown(what, 64)}" + (f": {rest}" if rest else "")


def device_state(open_acked: bool | None) -> str:
    """A kiosk's state as the incident store knows it: `alerting` (an open incident nobody
    acknowledged), `acknowledged`, or `idle` (no open incident; None)."""
    if open_acked is None:
        return "idle"
    return "acknowledged" if open_acked else "alerting"


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
