"""What the console's pages show, from the incident store: plain dicts, JSON-ready.

Text in them is device-supplied (site names, device ids, problems) and untrusted: the
templates escape it (Jinja autoescape) and the page's script only ever sets textContent.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pinkbutton.tools.controlroom.receiver import parse_iso
from pinkbutton.tools.controlroom.store import FleetRow, IncidentStore

DISPOSITION_LABELS = {"genuine": "genuine emergency", "false_alarm": "false alarm",
                      "test": "test", "prank": "prank", "technical": "technical fault"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # as evidence file names
_TITLES = {
    "pressed": "Button pressed", "received": "Alert received", "escalated":
    "Escalated: not acknowledged in time", "duplicate": "Announced again",
    "folded": "More presses folded in", "first_media": "First media",
    "first_keyframe": "First picture", "viewed": "Viewed", "acked": "Acknowledged",
    "dispatched": "Dispatched", "extended": "Streaming extended", "ended": "Ended",
}


def signature(row: dict) -> str:
    ok = row.get("signature_ok")
    return "not checked" if ok is None else ("verified" if ok else "NOT VERIFIED")


def pressed_ts(row: dict) -> float | None:
    """The press on the room's clock: arrival minus the measured latency (the kiosk's own
    wall clock may be off); else the device's pressed_at."""
    received = parse_iso(row["received_at"])
    if received is not None and row.get("latency_ms") is not None:
        return received - row["latency_ms"] / 1000
    return parse_iso(row["pressed_at"])


def health(row: FleetRow | None, now: float) -> dict:
    if row is None:
        return {"online": None, "text": "no heartbeat yet", "ok": None}
    beat = row.heartbeat or {}
    hb = parse_iso(row.heartbeat_at) if row.heartbeat_at else None
    age = None if hb is None else max(0.0, now - hb)
    interval = beat.get("interval_s")
    online = row.online
    if age is not None and isinstance(interval, int | float) and age > 2 * interval + 1:
        online = False
    faults = [str(f) for f in beat.get("faults") or []][:8]
    parts = ["?" if online is None else ("online" if online else "OFFLINE")]
    if age is not None:
        parts.append(f"heartbeat {age:.0f} s ago")
    if row.selftest_ok is False:
        parts.append(f"self-test FAILED ({row.selftest_failed or '?'})")
    if faults:
        parts.append("faults: " + ", ".join(faults))
    ok = bool(online) and row.selftest_ok is not False and not faults
    return {"online": online, "text": "  ".join(parts), "ok": ok}


def incident_summary(row: dict, fleet: dict[str, FleetRow], now: float) -> dict:
    return {
        "alert_id": row["alert_id"], "device_id": row["device_id"],
        "site_id": row["site_id"], "site_name": row["site_name"], "kind": row["kind"],
        "pressed_ts": pressed_ts(row), "received_at": row["received_at"],
        "lat": row["lat"], "lon": row["lon"], "presses": row["presses"],
        "announces": row["announces"], "signature": signature(row),
        "problems": row["problems"], "escalated": bool(row["escalated"]),
        "acked_at": row["acked_at"], "acked_by": row["acked_by"],
        "dispatched_at": row["dispatched_at"], "dispatch_unit": row["dispatch_unit"],
        "ended_at": row["ended_at"], "disposition": row["disposition"],
        "taken_by": row["first_viewed_by"], "taken_at": row["first_viewed_at"],
        "health": health(fleet.get(row["device_id"]), now),
    }


def queue(store: IncidentStore, now: float | None = None) -> dict:
    """Every open incident, newest first, and those escalated without an ack."""
    now = time.time() if now is None else now
    fleet = {r.device_id: r for r in store.fleet()}
    rows = store.incident_rows("WHERE ended_at IS NULL ORDER BY received_at DESC, rowid DESC")
    items = [incident_summary(r, fleet, now) for r in rows]
    return {"type": "queue", "now": now, "incidents": items,
            "escalated": [i["alert_id"] for i in items if i["escalated"] and not i["acked_at"]]}


def timeline(store: IncidentStore, row: dict) -> list[dict]:
    """The incident's story: {at, what, title, by, text}, the press first."""
    out = [{"at": row["pressed_at"], "what": "pressed", "title": _TITLES["pressed"],
            "by": "", "text": f"at {row['site_name']} ({row['device_id']})"}]
    for at, what, detail in store.timeline(row["alert_id"]):
        by = str(detail.get("by") or "")
        if what == "dispatched":
            text = f"unit {detail.get('unit', '')}" + (f": {detail['note']}"
                                                       if detail.get("note") else "")
        elif what == "ended":
            d = detail.get("disposition")
            text = f"disposition: {DISPOSITION_LABELS.get(d, d)}" if d else ""
        elif what in ("first_media", "first_keyframe"):
            text = f"{detail.get('ms')} ms after the alert"
        elif what == "extended":
            seconds = detail.get("seconds")
            text = f"{seconds:g} s more" if isinstance(seconds, int | float) else ""
        elif what in ("received", "duplicate", "escalated"):
            lat = detail.get("latency_ms")
            text = f"announcement #{detail.get('announce')}" + (
                f", {lat:.0f} ms after the press" if isinstance(lat, int | float) else "")
            if detail.get("problems"):
                text += "; FLAGGED: " + "; ".join(str(x) for x in detail["problems"])
        else:
            text = ", ".join(f"{k} {v}" for k, v in detail.items() if k != "by")
        out.append({"at": at, "what": what, "title": _TITLES.get(what, what), "by": by,
                    "text": text})
    return out


def evidence(evidence_dir: Path | None, row: dict) -> list[dict]:
    """The incident's evidence files (what the receiver and backfill wrote) with the
    SHA-256 from the complete evidence's manifest."""
    if evidence_dir is None or not _SAFE_NAME.match(row["device_id"]) \
            or not _SAFE_NAME.match(row["alert_id"]):
        return []
    prefix = f"{row['device_id']}-{row['alert_id']}."
    try:
        names = sorted(p.name for p in evidence_dir.iterdir()
                       if p.name.startswith(prefix) and p.is_file())
    except OSError:
        return []
    hashes: dict[str, str] = {}
    for name in names:
        if name.endswith(".complete.json"):
            try:
                doc = json.loads((evidence_dir / name).read_text())
                hashes[str(doc.get("file"))] = str(doc.get("sha256"))
            except (OSError, ValueError):
                pass
    kinds = {".complete.mp4": "complete evidence (seq order, backfilled)",
             ".complete.json": "SHA-256 manifest of the complete evidence",
             ".mp4": "live recording (as streamed)", ".packets": "packet log"}
    out = []
    for name in names:
        kind = next((v for k, v in kinds.items() if name.endswith(k)), "file")
        try:
            size = (evidence_dir / name).stat().st_size
        except OSError:
            continue
        out.append({"name": name, "kind": kind, "bytes": size, "sha256": hashes.get(name)})
    return out


def incident(store: IncidentStore, alert_id: str, evidence_dir: Path | None,
             now: float | None = None) -> dict | None:
    rows = store.incident_rows("WHERE alert_id=?", (alert_id,))
    if not rows:
        return None
    now = time.time() if now is None else now
    fleet = {r.device_id: r for r in store.fleet() if r.device_id == rows[0]["device_id"]}
    return {"type": "incident", "now": now,
            "incident": incident_summary(rows[0], fleet, now) | {
                "dispatch_note": rows[0]["dispatch_note"], "ended_by": rows[0]["ended_by"],
                "firmware": rows[0]["firmware"]},
            "timeline": timeline(store, rows[0]),
            "commands": [{"verb": c["verb"], "by": c["by"], "at": c["created_at"],
                          "state": c["result"] or ("claimed" if c["claimed_by"] else "waiting")}
                         for c in store.commands_of(alert_id)],
            "evidence": evidence(evidence_dir, rows[0])}


# -- the map and the fleet page (issue 12 items 4 and 5) -------------------------------------
# One dict per kiosk from the same data as `pinkbutton-controlroom fleet` (store.fleet():
# the last heartbeat and self-test) plus the kiosk's open incident (store.device_states())
# and where it is: the site its heartbeat names (newer firmware: `site` in `health`), else
# its newest alert's; a kiosk known from neither is listed without a position.

#: Map/fleet states, most urgent first: a kiosk shows the first that applies.
KIOSK_STATES = ("alerting", "acknowledged", "offline", "failing", "idle")


def _online(row: FleetRow | None, now: float) -> tuple[bool | None, float | None]:
    """(online, heartbeat age in s) as `fleet` judges it: the stored verdict, overruled by
    a heartbeat older than 2 x its interval + 1 s (the room may not have been running to
    notice), and a fresh heartbeat counts for a kiosk never judged."""
    if row is None:
        return None, None
    beat = row.heartbeat or {}
    hb = parse_iso(row.heartbeat_at) if row.heartbeat_at else None
    age = None if hb is None else max(0.0, now - hb)
    online, interval = row.online, beat.get("interval_s")
    if age is not None and isinstance(interval, int | float):
        if age > 2 * interval + 1:
            online = False
        elif online is None:
            online = True
    return online, age


def kiosk_state(online: bool | None, open_acked: bool | None, failing: bool) -> str:
    """alerting (an open incident nobody acknowledged), acknowledged, offline (or never
    heard from), failing (a failed self-test or a fault raised), else idle."""
    if open_acked is not None:
        return "acknowledged" if open_acked else "alerting"
    if not online:
        return "offline"
    return "failing" if failing else "idle"


def fleet(store: IncidentStore, now: float | None = None) -> dict:
    """Every kiosk the room knows (status, heartbeat or alert), by device id."""
    from pinkbutton.tools.controlroom.cli import CERT_WARN_DAYS

    now = time.time() if now is None else now
    rows = {r.device_id: r for r in store.fleet()}
    states = {s.device_id: s for s in store.device_states()}
    newest = {r["device_id"]: r for r in store.incident_rows(
        "WHERE rowid IN (SELECT MAX(rowid) FROM incidents GROUP BY device_id)")}
    placed = {r["device_id"]: r for r in store.incident_rows(
        "WHERE rowid IN (SELECT MAX(rowid) FROM incidents WHERE lat IS NOT NULL AND "
        "lon IS NOT NULL GROUP BY device_id)")}
    kiosks = []
    for device_id in sorted(set(rows) | set(states)):
        row, st = rows.get(device_id), states.get(device_id)
        beat = (row.heartbeat if row else None) or {}
        online, age = _online(row, now)
        faults = [str(f) for f in beat.get("faults") or []][:16]
        selftest_ok = row.selftest_ok if row else None
        inc = st.open_incident if st else None
        days = beat.get("cert_days_left")
        days = days if isinstance(days, int) and not isinstance(days, bool) else None
        where = placed.get(device_id)
        last = newest.get(device_id)
        site = beat.get("site") if isinstance(beat.get("site"), dict) else None
        if site is not None and isinstance(site.get("lat"), int | float) \
                and isinstance(site.get("lon"), int | float):
            lat, lon, located = site["lat"], site["lon"], "heartbeat"
        elif where is not None:
            lat, lon, located = where["lat"], where["lon"], "alert"
        else:
            lat = lon = located = None
        state = kiosk_state(online, None if inc is None else inc.acked_at is not None,
                            selftest_ok is False or bool(faults))
        kiosks.append({
            "device_id": device_id,
            "site_name": str(site["name"]) if site and site.get("name") is not None
            else last["site_name"] if last else None,
            "lat": lat, "lon": lon, "located_by": located,
            "located_at": where["received_at"] if located == "alert" and where else None,
            "state": state, "online": online,
            "heartbeat_at": row.heartbeat_at if row else None, "heartbeat_age_s": age,
            "interval_s": beat.get("interval_s"),
            "selftest_at": row.selftest_at if row else None, "selftest_ok": selftest_ok,
            "selftest_failed": row.selftest_failed if row else "",
            "selftest_why": row.selftest_why if row else "",
            "faults": faults,
            "firmware": beat.get("firmware") or (last["firmware"] if last else None),
            "cert_days_left": days,
            "cert_warn": days is not None and days < CERT_WARN_DAYS,
            "temperature_c": beat.get("temperature_c"), "disk_free_mb": beat.get("disk_free_mb"),
            "incident": None if inc is None else inc.alert_id,
        })
    return {"type": "fleet", "now": now, "warn_days": CERT_WARN_DAYS, "kiosks": kiosks}
