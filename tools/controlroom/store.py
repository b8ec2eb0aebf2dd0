"""The control room's incident store: SQLite (WAL, synchronous=FULL), or PostgreSQL shared by
several receivers (`--db postgresql://...`; the dialect differences are in db.py).

One row per alert_id, whatever number of times the alert is announced, so
duplicates from retries, re-announcements or several receivers collapse into
one incident. Every change is also appended to a timeline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pinkbutton.firmware.protocol import Alert, Health
from pinkbutton.tools.controlroom.db import (
    DatabaseError,
    connect,
    db_target,
    notify_ddl,
    redacted,
)

log = logging.getLogger("pinkbutton.store")

# seq, lat and lon are NULL when a flagged alert's body did not give them; `problems` is
# the JSON list of what was wrong with the body (NULL: nothing). See docs/protocol.md.
INCIDENTS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    alert_id      TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL,
    seq           INTEGER,
    kind          TEXT NOT NULL,
    site_id       TEXT NOT NULL,
    site_name     TEXT NOT NULL,
    lat           REAL,
    lon           REAL,
    firmware      TEXT NOT NULL,
    follows       TEXT,
    pressed_at    TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    latency_ms    REAL,
    announces     INTEGER NOT NULL DEFAULT 1,
    presses       INTEGER NOT NULL DEFAULT 1,
    escalated     INTEGER NOT NULL DEFAULT 0,
    signature_ok  INTEGER,
    acked_at      TEXT,
    acked_by      TEXT,
    dispatched_at TEXT,
    ended_at      TEXT,
    folded        INTEGER NOT NULL DEFAULT 0,
    problems      TEXT,
    dispatch_unit TEXT,
    dispatch_note TEXT,
    dispatched_by TEXT,
    ended_by      TEXT,
    disposition   TEXT,
    first_viewed_at TEXT,
    first_viewed_by TEXT
);
"""
# Columns added after the table first shipped, with their types: _migrate() adds the ones a
# database lacks (ALTER TABLE ADD COLUMN keeps every row).
ADDED_COLUMNS = (
    ("folded", "INTEGER NOT NULL DEFAULT 0"),
    # The web console (issue 12): the last dispatch (every one is in the timeline), who
    # ended the incident and how it turned out, who opened it first.
    ("dispatch_unit", "TEXT"), ("dispatch_note", "TEXT"), ("dispatched_by", "TEXT"),
    ("ended_by", "TEXT"), ("disposition", "TEXT"),
    ("first_viewed_at", "TEXT"), ("first_viewed_by", "TEXT"),
)
#: How an ended incident turned out (the console's end button; the accountability report).
DISPOSITIONS = ("genuine", "false_alarm", "test", "prank", "technical")
#: What an officer can ask a receiver to do through the store's `commands` table
#: (`selftest`: the fleet page's button; alert_id "", args {"device_id"}).
COMMAND_VERBS = ("ack", "dispatch", "extend", "end", "selftest")
INCIDENTS_INDEX = "CREATE INDEX IF NOT EXISTS incidents_device ON incidents(device_id, ended_at);"
SCHEMA = INCIDENTS_TABLE.format(name="incidents") + INCIDENTS_INDEX + """
CREATE TABLE IF NOT EXISTS folded (
    alert_id     TEXT PRIMARY KEY,
    into_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    pressed_at   TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    signature_ok INTEGER,
    presses      INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS timeline (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id  TEXT NOT NULL,
    at        TEXT NOT NULL,
    what      TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS timeline_alert ON timeline(alert_id, id);
CREATE TABLE IF NOT EXISTS devices (
    device_id  TEXT PRIMARY KEY,
    online     INTEGER NOT NULL,
    state      TEXT NOT NULL,
    firmware   TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS device_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  TEXT NOT NULL,
    at         TEXT NOT NULL,
    online     INTEGER NOT NULL,
    reason     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS device_log_device ON device_log(device_id, id);
CREATE TABLE IF NOT EXISTS device_health (
    device_id        TEXT PRIMARY KEY,
    heartbeat_at     TEXT,
    heartbeat        TEXT,
    selftest_at      TEXT,
    selftest_ok      INTEGER,
    selftest_failed  TEXT NOT NULL DEFAULT '',
    selftest_why     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS commands (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id    TEXT NOT NULL,
    verb        TEXT NOT NULL,
    args        TEXT NOT NULL DEFAULT '{}',
    by          TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    claimed_by  TEXT,
    done_at     TEXT,
    result      TEXT
);
CREATE INDEX IF NOT EXISTS commands_open ON commands(id) WHERE claimed_by IS NULL;
"""
# PostgreSQL only: the row order SQLite's rowid gives (newest incident of a device, folded
# alerts in order), and the NOTIFY triggers behind data_version().
PG_SCHEMA = """
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS rowid BIGINT GENERATED BY DEFAULT AS IDENTITY;
ALTER TABLE folded ADD COLUMN IF NOT EXISTS rowid BIGINT GENERATED BY DEFAULT AS IDENTITY;
""" + notify_ddl("incidents", "folded", "timeline", "devices", "device_log", "device_health",
                 "commands")


@dataclass(frozen=True, slots=True)
class Incident:
    alert_id: str
    device_id: str
    seq: int | None  # None: a flagged alert's body did not give it
    kind: str
    site_name: str
    pressed_at: str
    received_at: str
    latency_ms: float | None
    announces: int
    presses: int
    escalated: bool
    acked_at: str | None
    acked_by: str | None
    ended_at: str | None
    folded: int = 0  # other alert_ids of the device folded into it (counted in presses)
    problems: tuple[str, ...] = ()  # what was wrong with the alert's body; () when nothing


@dataclass(frozen=True, slots=True)
class FleetRow:
    """What the room last knew of one kiosk (`pinkbutton-controlroom fleet`). Text fields
    are device-supplied: show them escaped."""

    device_id: str
    online: bool | None  # from status / heartbeat supervision; None: never judged
    state: str | None
    heartbeat_at: str | None  # when the room received the last heartbeat
    heartbeat: dict | None  # its fields, as decoded
    selftest_at: str | None
    selftest_ok: bool | None
    selftest_failed: str  # comma-separated check names
    selftest_why: str


@dataclass(frozen=True, slots=True)
class Command:
    """An officer's action queued by the web console for a receiver (store `commands`)."""
    id: int
    alert_id: str
    verb: str  # COMMAND_VERBS
    args: dict
    by: str
    created_at: str


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A kiosk as `list` shows it (issue 12): online from status/heartbeat supervision
    (None: never judged), its newest open incident (None: idle)."""

    device_id: str
    online: bool | None
    changed_at: str | None  # when online/offline last changed
    open_incident: Incident | None
    last_ended_at: str | None  # when its last incident ended (None: never)


class StoreError(Exception):
    pass


SCHEMA_ATTEMPTS = 5
DEADLOCK = "40P01"  # PostgreSQL's SQLSTATE for "deadlock detected"


class IncidentStore:
    def __init__(self, path: Path | str) -> None:
        """`path`: a SQLite file, or a postgresql:// URL (db.py)."""
        self.path = db_target(path)
        try:
            self._db = connect(self.path)
        except DatabaseError as e:
            raise StoreError(f"cannot open incident database {e}") from None
        try:
            if self._db.dialect == "postgresql":
                self._pg_schema()
            else:
                self._db.script(SCHEMA)
                self._migrate()
        except self._db.errors as e:
            self._db.close()
            raise StoreError(f"cannot open incident database {redacted(self.path)}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
                             ) from None

    def _pg_schema(self) -> None:
        """Create or migrate the schema. Two receivers starting at once: one does it, the
        other waits (the schema lock). A receiver already running can still deadlock with it
        (its transaction holds a table the trigger statements lock next, then wants one they
        hold): PostgreSQL ends one of the two, and if it is this one, it tries again (seen in
        the two-receiver test)."""
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                with self._db.tx():
                    self._db.schema_lock()
                    self._db.script(self._db.ddl(SCHEMA) + PG_SCHEMA)
                    self._migrate()
                return
            except self._db.errors as e:
                if getattr(e, "sqlstate", None) != DEADLOCK or attempt == SCHEMA_ATTEMPTS - 1:
                    raise
                log.warning("schema: deadlock with another receiver's transaction; again")
                time.sleep(0.1 * (attempt + 1))

    def _migrate(self) -> None:
        """A database from before flagged incidents: rebuild `incidents` with the nullable
        seq/lat/lon and every later column (SQLite cannot drop NOT NULL in place); a later
        one gains the columns it lacks (ADDED_COLUMNS)."""
        if "presses" not in self._db.columns("folded"):
            # before issue 12: each folded alert counted one press (and still does)
            self._db.execute("ALTER TABLE folded ADD COLUMN presses INTEGER NOT NULL DEFAULT 1")
        columns = self._db.columns("incidents")
        if "problems" in columns:
            for name, decl in ADDED_COLUMNS:
                if name not in columns:
                    self._db.execute(f"ALTER TABLE incidents ADD COLUMN {name} {decl}")
            return
        names = ", ".join(columns)
        with self._tx():
            self._db.execute(INCIDENTS_TABLE.format(name="incidents_migrating"))
            self._db.execute(f"INSERT INTO incidents_migrating({names}) "
                             f"SELECT {names} FROM incidents")
            self._db.execute("DROP TABLE incidents")
            self._db.execute("ALTER TABLE incidents_migrating RENAME TO incidents")
            self._db.execute(INCIDENTS_INDEX)

    def record_alert(self, a: Alert, received_at: str, latency_ms: float | None,
                     signature_ok: bool | None, problems: tuple[str, ...] = ()) -> bool:
        """Store an announcement. True when this alert_id is new (a new incident).

        `problems`: what was wrong with this announcement's body (a flagged alert, stored
        all the same); the incident keeps every distinct problem of every announcement."""
        with self._tx():
            if self._db.dialect == "postgresql":
                new = self._upsert_alert(a, received_at, latency_ms, signature_ok, problems)
            else:
                new = self._insert_or_update_alert(a, received_at, latency_ms, signature_ok,
                                                   problems)
            if problems and not new:
                row = self._db.execute("SELECT problems FROM incidents WHERE alert_id=?",
                                       (a.alert_id,)).fetchone()
                known = _problems(row[0])
                merged = known + tuple(x for x in dict.fromkeys(problems) if x not in known)
                if merged != known:
                    self._db.execute("UPDATE incidents SET problems=? WHERE alert_id=?",
                                     (json.dumps(list(merged)), a.alert_id))
            what = "received" if new else ("escalated" if a.escalated else "duplicate")
            detail = {"announce": a.announce, "latency_ms": latency_ms}
            if problems:
                detail["problems"] = list(problems)
            self._timeline(a.alert_id, received_at, what, detail)
        return new

    def _upsert_alert(self, a: Alert, received_at: str, latency_ms: float | None,
                      signature_ok: bool | None, problems: tuple[str, ...]) -> bool:
        """PostgreSQL: one atomic upsert, whichever receiver of a share group gets the
        announcement first; the row stays locked until commit (problems merge safely)."""
        row = self._db.execute(
            f"INSERT INTO incidents({_ALERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (alert_id) DO UPDATE SET "
            "announces=GREATEST(incidents.announces, excluded.announces), "
            f"presses=GREATEST(incidents.presses - {_FOLDED_PRESSES}, excluded.presses) + "
            f"{_FOLDED_PRESSES}, escalated=GREATEST(incidents.escalated, excluded.escalated) "
            "RETURNING (xmax = 0)",  # xmax 0: this statement inserted the row
            _alert_values(a, received_at, latency_ms, signature_ok, problems)).fetchone()
        return bool(row[0])

    def _insert_or_update_alert(self, a: Alert, received_at: str, latency_ms: float | None,
                                signature_ok: bool | None, problems: tuple[str, ...]) -> bool:
        """SQLite (BEGIN IMMEDIATE: one writer at a time): insert, else raise the counts."""
        cur = self._db.execute(
            f"INSERT OR IGNORE INTO incidents({_ALERT_COLUMNS}) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            _alert_values(a, received_at, latency_ms, signature_ok, problems))
        new = cur.rowcount == 1
        if not new:
            self._db.execute(
                "UPDATE incidents SET announces=MAX(announces, ?), "
                f"presses=MAX(presses - {_FOLDED_PRESSES}, ?) + {_FOLDED_PRESSES}, "
                "escalated=MAX(escalated, ?) WHERE alert_id=?",
                (a.announce, a.presses, int(a.escalated), a.alert_id),
            )
        return new

    def fold_alerts(self, device_id: str,
                    alerts: list[tuple[Alert, str, bool | None]]) -> tuple[str | None, list[str]]:
        """Fold new alerts of a device into its newest open incident, in one transaction:
        each is kept in `folded` (alert_id, seq, kind, press time, signature) and counts as a
        press of the incident. Returns (that incident's alert_id, the alert_ids folded now);
        alert_ids the room already has are skipped. (None, []) when the device has no open
        incident: nothing is stored then."""
        with self._tx():
            row = self._db.execute(
                "SELECT alert_id FROM incidents WHERE device_id=? AND ended_at IS NULL "
                "ORDER BY received_at DESC, rowid DESC LIMIT 1" + self._db.for_update,
                (device_id,)).fetchone()
            if row is None:
                return None, []
            into, folded, presses = row[0], [], 0
            for a, received_at, sig_ok in alerts:
                if a.device_id != device_id or self._db.execute(
                        "SELECT 1 FROM incidents WHERE alert_id=?", (a.alert_id,)).fetchone():
                    continue
                cur = self._db.execute(
                    "INSERT INTO folded(alert_id, into_id, device_id, seq, kind, pressed_at, "
                    "received_at, signature_ok, presses) VALUES (?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT DO NOTHING",
                    (a.alert_id, into, a.device_id, a.seq, a.kind, a.pressed_at, received_at,
                     _tri(sig_ok), max(1, a.presses)))
                if cur.rowcount == 1:
                    folded.append(a.alert_id)
                    presses += max(1, a.presses)  # every press of the folded alert counts
            if folded:
                self._db.execute("UPDATE incidents SET presses=presses + ?, folded=folded + ? "
                                 "WHERE alert_id=?", (presses, len(folded), into))
                self._timeline(into, alerts[-1][1], "folded",
                               {"alerts": len(folded), "first": folded[0], "last": folded[-1]})
        return into, folded

    def known(self, alert_id: str) -> bool:
        """The room has this alert_id, as an incident or folded into one."""
        return self._db.execute(
            "SELECT 1 FROM incidents WHERE alert_id=? UNION ALL "
            "SELECT 1 FROM folded WHERE alert_id=? LIMIT 1", (alert_id, alert_id)).fetchone() \
            is not None

    def folded_parent(self, alert_id: str) -> str | None:
        """The incident an alert_id was folded into (None: it was not folded)."""
        row = self._db.execute("SELECT into_id FROM folded WHERE alert_id=?",
                               (alert_id,)).fetchone()
        return None if row is None else row[0]

    def folded_into(self, alert_id: str) -> list[str]:
        """alert_ids folded into an incident, in the order they were folded."""
        rows = self._db.execute("SELECT alert_id FROM folded WHERE into_id=? ORDER BY rowid",
                                (alert_id,))
        return [r[0] for r in rows]

    def mark(self, alert_id: str, what: str, at: str, by: str | None = None,
             disposition: str | None = None) -> bool:
        """Set acked/dispatched/ended once; True when it changed something. An end keeps
        who ended the incident and, when given, its disposition (one of DISPOSITIONS)."""
        column = {"acked": "acked_at", "dispatched": "dispatched_at", "ended": "ended_at"}[what]
        if disposition is not None and (what != "ended" or disposition not in DISPOSITIONS):
            raise ValueError(f"disposition {disposition!r}: one of {', '.join(DISPOSITIONS)}"
                             " and only when ending")
        sets: list[str] = [f"{column}=?"]
        args: list[str | None] = [at]
        if what == "acked":
            sets.append("acked_by=?")
            args.append(by)
        elif what == "ended":
            sets += ["ended_by=?", "disposition=?"]
            args += [by, disposition]
        with self._tx():
            cur = self._db.execute(
                f"UPDATE incidents SET {', '.join(sets)} WHERE alert_id=? AND {column} IS NULL",
                (*args, alert_id),
            )
            if cur.rowcount:
                detail: dict = {"by": by} if by else {}
                if disposition is not None:
                    detail["disposition"] = disposition
                self._timeline(alert_id, at, what, detail)
        return cur.rowcount == 1

    def note(self, alert_id: str, at: str, what: str, detail: dict) -> None:
        with self._tx():
            self._timeline(alert_id, at, what, detail)

    # -- the web console (tools/controlroom/web) ------------------------------------

    def dispatch(self, alert_id: str, at: str, by: str, unit: str, note: str = "") -> bool:
        """A team sent: the incident keeps the latest unit, note and officer (dispatched_at
        is the first dispatch); every dispatch is a timeline entry. False: no such incident
        or it has ended."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE incidents SET dispatched_at=COALESCE(dispatched_at, ?), dispatch_unit=?,"
                " dispatch_note=?, dispatched_by=? WHERE alert_id=? AND ended_at IS NULL",
                (at, unit, note, by, alert_id))
            if cur.rowcount:
                self._timeline(alert_id, at, "dispatched", {"by": by, "unit": unit, "note": note})
        return cur.rowcount == 1

    def viewed(self, alert_id: str, at: str, by: str) -> bool:
        """An officer opened the incident: the first view of each officer is a timeline
        entry, the very first also kept on the incident. True when this officer's first."""
        with self._tx():
            if self._db.execute("SELECT 1 FROM incidents WHERE alert_id=?" + self._db.for_update,
                                (alert_id,)).fetchone() is None:
                return False
            seen = self._db.execute(
                "SELECT 1 FROM timeline WHERE alert_id=? AND what='viewed' AND "
                f"{self._db.json_text('detail', 'by')}=? LIMIT 1", (alert_id, by)).fetchone()
            if seen:
                return False
            self._db.execute("UPDATE incidents SET first_viewed_at=?, first_viewed_by=? "
                             "WHERE alert_id=? AND first_viewed_at IS NULL", (at, by, alert_id))
            self._timeline(alert_id, at, "viewed", {"by": by})
        return True

    def queue_command(self, alert_id: str, verb: str, args: dict, by: str, at: str) -> int:
        """An officer's action for a receiver to carry out (it publishes the `cmd`); returns
        the command's id. See ControlRoomReceiver._web_commands."""
        if verb not in COMMAND_VERBS:
            raise ValueError(f"command {verb!r}: one of {', '.join(COMMAND_VERBS)}")
        with self._tx():
            row = self._db.execute(
                "INSERT INTO commands(alert_id, verb, args, by, created_at) VALUES (?,?,?,?,?) "
                "RETURNING id", (alert_id, verb, json.dumps(args), by, at)).fetchone()
        return row[0]

    def claim_commands(self, worker: str, limit: int = 20) -> list[Command]:
        """Take the oldest unclaimed commands for `worker` (one receiver of possibly
        several: a command is claimed by exactly one)."""
        if self._db.execute("SELECT 1 FROM commands WHERE claimed_by IS NULL LIMIT 1"
                            ).fetchone() is None:
            return []  # the common case, without a write transaction
        # One statement: the claim is conditional (claimed_by still NULL), so two receivers
        # never take the same command. PostgreSQL: the oldest unclaimed rows are locked once
        # (a materialized CTE; a LIMIT in an IN subquery may be evaluated again) and rows
        # another receiver is claiming are skipped, not waited for.
        if self._db.dialect == "postgresql":
            sql = ("WITH picked AS MATERIALIZED (SELECT id FROM commands WHERE claimed_by IS "
                   "NULL ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED) UPDATE commands c SET "
                   "claimed_by=? FROM picked WHERE c.id = picked.id AND c.claimed_by IS NULL "
                   "RETURNING c.id, c.alert_id, c.verb, c.args, c.by, c.created_at")
            args: tuple = (limit, worker)
        else:  # BEGIN IMMEDIATE: one writer at a time
            sql = ("UPDATE commands SET claimed_by=? WHERE claimed_by IS NULL AND id IN "
                   "(SELECT id FROM commands WHERE claimed_by IS NULL ORDER BY id LIMIT ?) "
                   "RETURNING id, alert_id, verb, args, by, created_at")
            args = (worker, limit)
        with self._tx():
            rows = sorted(self._db.execute(sql, args).fetchall())
        return [Command(i, a, v, json.loads(args), by, at) for i, a, v, args, by, at in rows]

    def finish_command(self, command_id: int, at: str, result: str) -> None:
        with self._tx():
            self._db.execute("UPDATE commands SET done_at=?, result=? WHERE id=?",
                             (at, result, command_id))

    def commands_of(self, alert_id: str) -> list[dict]:
        """The incident's commands, oldest first, as dicts (claimed_by/done_at None while
        no receiver has carried one out)."""
        cur = self._db.execute(
            "SELECT id, verb, args, by, created_at, claimed_by, done_at, result FROM commands "
            "WHERE alert_id=? ORDER BY id", (alert_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) | {"args": json.loads(r[2])} for r in cur]

    def incident_rows(self, where: str = "", args: tuple = ()) -> list[dict]:
        """Incidents with every column, as dicts (the console's view; text fields are
        device-supplied)."""
        cur = self._db.execute(f"SELECT * FROM incidents {where}", args)
        names = [d[0] for d in cur.description]
        return [{k: v for k, v in zip(names, r, strict=True) if k != "rowid"}  # PostgreSQL's
                | {"problems": list(_problems(r[names.index("problems")]))} for r in cur]

    def data_version(self) -> int:
        """Changes when another connection (a receiver, another web process) committed to
        the database since the last call on this one: the console's cheap change poll."""
        return self._db.data_version()

    def set_device(self, device_id: str, online: bool, state: str, firmware: str,
                   at: str, reason: str = "") -> bool:
        """Record a device's status; True when its online/offline state changed (each
        change is also appended to device_log, with its reason)."""
        with self._tx():
            row = self._db.execute("SELECT online FROM devices WHERE device_id=?"
                                   + self._db.for_update, (device_id,)).fetchone()
            self._db.execute(
                "INSERT INTO devices(device_id, online, state, firmware, changed_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT(device_id) DO UPDATE SET online=excluded.online,"
                " state=excluded.state, firmware=excluded.firmware, changed_at=excluded.changed_at",
                (device_id, int(online), state, firmware, at),
            )
            changed = row is None or bool(row[0]) != online
            if changed:
                self._db.execute("INSERT INTO device_log(device_id, at, online, reason) "
                                 "VALUES (?,?,?,?)", (device_id, at, int(online), reason))
        return changed

    def record_heartbeat(self, h: Health, received_at: str) -> None:
        """Keep the device's last heartbeat (and its self-test verdict, until an event
        tells more)."""
        self.record_heartbeats([(h, received_at)])

    def record_heartbeats(self, beats: Sequence[tuple[Health, str]]) -> None:
        """Several devices' last heartbeats in one transaction (a receiver writes what came
        in the last second at once: one commit, not one per heartbeat), in device order, so
        two receivers updating the same rows take their row locks in the same order."""
        if not beats:
            return
        with self._tx():
            for h, received_at in sorted(beats, key=lambda b: b[0].device_id):
                fields = {k: v for k, v in asdict(h).items() if k != "evidence_pending"}
                self._db.execute(
                    "INSERT INTO device_health(device_id, heartbeat_at, heartbeat) "
                    "VALUES (?,?,?) ON CONFLICT(device_id) DO UPDATE SET "
                    "heartbeat_at=excluded.heartbeat_at, heartbeat=excluded.heartbeat",
                    (h.device_id, received_at, json.dumps(fields)))

    def record_selftest(self, device_id: str, at: str, ok: bool, failed: str,
                        why: str) -> None:
        """A `selftest` event: when, whether it passed, the failing checks and why."""
        with self._tx():
            self._db.execute(
                "INSERT INTO device_health(device_id, selftest_at, selftest_ok, selftest_failed,"
                " selftest_why) VALUES (?,?,?,?,?) ON CONFLICT(device_id) DO UPDATE SET "
                "selftest_at=excluded.selftest_at, selftest_ok=excluded.selftest_ok, "
                "selftest_failed=excluded.selftest_failed, selftest_why=excluded.selftest_why",
                (device_id, at, int(ok), failed, why))

    def fleet(self) -> list[FleetRow]:
        """Every kiosk the room has heard of, by id."""
        rows = self._db.execute(
            "SELECT ids.device_id, d.online, d.state, h.heartbeat_at, h.heartbeat, "
            "h.selftest_at, h.selftest_ok, h.selftest_failed, h.selftest_why FROM "
            "(SELECT device_id FROM devices UNION SELECT device_id FROM device_health) ids "
            "LEFT JOIN devices d ON d.device_id = ids.device_id "
            "LEFT JOIN device_health h ON h.device_id = ids.device_id ORDER BY ids.device_id")
        out = []
        for dev, online, state, hb_at, hb, st_at, st_ok, st_failed, st_why in rows:
            beat = json.loads(hb) if hb else None
            newer = beat.get("last_selftest") if beat is not None else None
            if beat is not None and newer and (st_at is None or newer > st_at):
                # a newer self-test than the stored event (its event not (yet) here)
                st_at, st_ok, st_failed, st_why = newer, beat.get("selftest_ok"), "", ""
            out.append(FleetRow(dev, None if online is None else bool(online), state, hb_at,
                                beat, st_at, None if st_ok is None else bool(st_ok),
                                st_failed or "", st_why or ""))
        return out

    def device_log(self, device_id: str) -> list[tuple[str, bool, str]]:
        """(at, online, reason) of every online/offline change of a device, oldest first."""
        rows = self._db.execute(
            "SELECT at, online, reason FROM device_log WHERE device_id=? ORDER BY id", (device_id,))
        return [(at, bool(o), reason) for at, o, reason in rows]

    def incident(self, alert_id: str) -> Incident | None:
        rows = self._incidents("WHERE alert_id=?", (alert_id,))
        return rows[0] if rows else None

    def find(self, prefix: str, open_only: bool = False) -> list[Incident]:
        """Incidents whose alert_id starts with `prefix` (taken literally: no wildcards)."""
        # The range lets SQLite use the primary key; substr() keeps the match exact.
        where = ("WHERE alert_id >= ? AND alert_id < ? AND substr(alert_id, 1, ?) = ?"
                 + (" AND ended_at IS NULL" if open_only else ""))
        return self._incidents(where + " ORDER BY received_at",
                               (prefix, prefix + "\U0010ffff", len(prefix), prefix))

    def open_incidents(self) -> list[Incident]:
        return self._incidents("WHERE ended_at IS NULL ORDER BY received_at", ())

    def all_incidents(self) -> list[Incident]:
        return self._incidents("ORDER BY received_at", ())

    def timeline(self, alert_id: str) -> list[tuple[str, str, dict]]:
        rows = self._db.execute(
            "SELECT at, what, detail FROM timeline WHERE alert_id=? ORDER BY id", (alert_id,))
        return [(at, what, json.loads(detail)) for at, what, detail in rows]

    def devices(self) -> list[tuple[str, bool, str, str]]:
        rows = self._db.execute(
            "SELECT device_id, online, state, changed_at FROM devices ORDER BY device_id")
        return [(d, bool(o), s, c) for d, o, s, c in rows]

    # -- the operator's terminal (issue 12): presses, device states, report window --------

    def pressed(self, device_id: str, alert_id: str, presses: int) -> str | None:
        """A kiosk's count of presses of one of its alerts (a `pressed_again` event, sent
        after the ack, when re-announcements stop): raised, never lowered, whether the alert
        is an incident or folded into one. Returns the incident it counts in (None: unknown
        alert of this device)."""
        with self._tx():
            row = self._db.execute("SELECT into_id, presses FROM folded WHERE alert_id=? AND "
                                   "device_id=?" + self._db.for_update,
                                   (alert_id, device_id)).fetchone()
            if row is not None:
                into, before = row
                if presses > before:
                    self._db.execute("UPDATE folded SET presses=? WHERE alert_id=?",
                                     (presses, alert_id))
                    self._db.execute("UPDATE incidents SET presses=presses + ? WHERE alert_id=?",
                                     (presses - before, into))
                return into
            cur = self._db.execute(
                f"UPDATE incidents SET presses={self._db.greatest(f'presses - {_FOLDED_PRESSES}', '?')}"
                f" + {_FOLDED_PRESSES} WHERE alert_id=? AND device_id=?",
                (presses, alert_id, device_id))
            return alert_id if cur.rowcount else None

    def incident_of(self, device_id: str, alert_id: str | None) -> str | None:
        """The incident a device's event belongs to: the one its alert_id names (or was
        folded into), else the device's newest open incident; None when it has none."""
        if alert_id is not None:
            inc = self.incident(self.folded_parent(alert_id) or alert_id)
            if inc is not None and inc.device_id == device_id:
                return inc.alert_id
        row = self._db.execute(
            "SELECT alert_id FROM incidents WHERE device_id=? AND ended_at IS NULL "
            "ORDER BY received_at DESC, rowid DESC LIMIT 1", (device_id,)).fetchone()
        return None if row is None else row[0]

    def device_states(self) -> list[DeviceState]:
        """Every kiosk the room knows (status or incident), with its newest open incident
        and when its last incident ended: what `list` shows, the same for every receiver
        sharing this database."""
        rows = self._db.execute(
            "SELECT ids.device_id, d.online, d.changed_at, "
            " (SELECT alert_id FROM incidents i WHERE i.device_id = ids.device_id AND "
            "  i.ended_at IS NULL ORDER BY received_at DESC, rowid DESC LIMIT 1), "
            " (SELECT MAX(ended_at) FROM incidents i WHERE i.device_id = ids.device_id) "
            "FROM (SELECT device_id FROM devices UNION SELECT device_id FROM incidents) ids "
            "LEFT JOIN devices d ON d.device_id = ids.device_id ORDER BY ids.device_id")
        out = []
        for dev, online, changed_at, open_id, ended_at in rows.fetchall():
            out.append(DeviceState(dev, None if online is None else bool(online), changed_at,
                                   self.incident(open_id) if open_id else None, ended_at))
        return out

    def location(self, alert_id: str) -> tuple[float | None, float | None]:
        """(lat, lon) the incident's alert gave (None: a flagged alert without them)."""
        row = self._db.execute("SELECT lat, lon FROM incidents WHERE alert_id=?",
                               (alert_id,)).fetchone()
        return (None, None) if row is None else (row[0], row[1])

    def incidents_received(self, since: str | None = None,
                           until: str | None = None) -> list[Incident]:
        """Incidents received in [since, until) (ISO 8601 UTC strings as the store keeps
        them; None: open-ended), oldest first."""
        return self._incidents("WHERE received_at >= ? AND received_at < ? ORDER BY received_at",
                               (since or "", until or "\uffff"))

    # -- evidence ownership (issue 13: media follows its incident in a share group) --------
    # One receiver of a share group owns an incident's evidence: it records and confirms it.
    # Its lease (wall clock, shared by every receiver of the store) is renewed while it
    # works; a lease left to expire (the owner died) is taken by another receiver. `done`:
    # confirmed complete, never taken again. Table made on first use; every statement is
    # one both engines take, and a claim is one conditional UPDATE (atomic on both).

    EVIDENCE_OWNERS = ("CREATE TABLE IF NOT EXISTS evidence_owners (alert_id TEXT PRIMARY "
                       "KEY, owner TEXT NOT NULL, lease_until REAL NOT NULL, "
                       "done INTEGER NOT NULL DEFAULT 0)")

    def _evidence_owners(self) -> None:
        if not getattr(self, "_owners_made", False):
            with self._tx():
                self._db.schema_lock()
                self._db.execute(self._db.ddl(self.EVIDENCE_OWNERS))
            self._owners_made = True

    def claim_evidence(self, alert_id: str, owner: str, now: float, lease_s: float, *,
                       take_absent: bool = True) -> str:
        """'mine' (claimed or renewed for `owner`), 'other' (another owner's lease runs),
        'done' (confirmed already), or 'absent' (no owner yet and not `take_absent`)."""
        self._evidence_owners()
        row = self._db.execute("SELECT owner, lease_until, done FROM evidence_owners WHERE "
                               "alert_id=?", (alert_id,)).fetchone()
        if row is not None and (row[2] or (row[0] != owner and row[1] >= now)):
            return "done" if row[2] else "other"  # the common case, without a write
        if row is None and not take_absent:
            return "absent"
        with self._tx():
            if take_absent:
                self._db.execute("INSERT INTO evidence_owners(alert_id, owner, lease_until) "
                                 "VALUES (?,?,?) ON CONFLICT (alert_id) DO NOTHING",
                                 (alert_id, owner, now + lease_s))
            cur = self._db.execute(
                "UPDATE evidence_owners SET owner=?, lease_until=? WHERE alert_id=? AND "
                "done=0 AND (owner=? OR lease_until < ?)",
                (owner, now + lease_s, alert_id, owner, now))
            if cur.rowcount:
                return "mine"
            row = self._db.execute("SELECT done FROM evidence_owners WHERE alert_id=?",
                                   (alert_id,)).fetchone()
        return "absent" if row is None else "done" if row[0] else "other"

    def renew_evidence(self, alert_ids: list[str], owner: str, now: float,
                       lease_s: float) -> set[str]:
        """Extend `owner`'s leases in one transaction; returns the ids still its own."""
        self._evidence_owners()
        if not alert_ids:
            return set()
        marks = ",".join("?" * len(alert_ids))
        with self._tx():
            self._db.execute(f"UPDATE evidence_owners SET lease_until=? WHERE owner=? AND "
                             f"done=0 AND alert_id IN ({marks})",
                             (now + lease_s, owner, *alert_ids))
            rows = self._db.execute(f"SELECT alert_id FROM evidence_owners WHERE owner=? "
                                    f"AND alert_id IN ({marks})", (owner, *alert_ids))
            return {r[0] for r in rows.fetchall()}

    def finish_evidence(self, alert_id: str, owner: str) -> None:
        """The evidence is confirmed complete: nobody takes it over again."""
        self._evidence_owners()
        with self._tx():
            self._db.execute("UPDATE evidence_owners SET done=1 WHERE alert_id=? AND owner=?",
                             (alert_id, owner))

    def evidence_owner(self, alert_id: str) -> tuple[str, float, bool] | None:
        """(owner, lease until, done) of the incident's evidence, or None."""
        self._evidence_owners()
        row = self._db.execute("SELECT owner, lease_until, done FROM evidence_owners WHERE "
                               "alert_id=?", (alert_id,)).fetchone()
        return None if row is None else (row[0], row[1], bool(row[2]))

    # -- end of evidence ownership ----------------------------------------------------------

    # -- the accountability report (issue 12 item 6; tools/controlroom/accountability.py) --

    def online_changes(self) -> list[tuple[str, str, bool]]:
        """(device_id, at, online) of every kiosk's online/offline change (device_log,
        written by the receiver's link supervision), each kiosk's oldest first."""
        rows = self._db.execute("SELECT device_id, at, online FROM device_log "
                                "ORDER BY device_id, id")
        return [(d, at, bool(o)) for d, at, o in rows]

    def device_sites(self) -> dict[str, tuple[str, str]]:
        """Each kiosk's (site_id, site_name) as its newest incident gave them."""
        rows = self._db.execute(
            "SELECT device_id, site_id, site_name FROM incidents i WHERE rowid = (SELECT "
            "rowid FROM incidents j WHERE j.device_id = i.device_id "
            "ORDER BY received_at DESC, rowid DESC LIMIT 1)")
        return {d: (s, n) for d, s, n in rows}

    # -- end of the accountability report's queries ---------------------------------------

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One transaction, so one fsync per change (autocommit would fsync per statement)."""
        with self._db.tx():
            yield

    def _incidents(self, where: str, args: tuple) -> list[Incident]:
        rows = self._db.execute(
            "SELECT alert_id, device_id, seq, kind, site_name, pressed_at, received_at, "
            f"latency_ms, announces, presses, escalated, acked_at, acked_by, ended_at, folded, "
            f"problems FROM incidents {where}", args)
        # pyright cannot count the positions after an unpacked row slice of unknown length.
        return [Incident(*r[:10], bool(r[10]), *r[11:15], _problems(r[15]))  # pyright: ignore[reportCallIssue]
                for r in rows]

    def _timeline(self, alert_id: str, at: str, what: str, detail: dict) -> None:
        self._db.execute("INSERT INTO timeline(alert_id, at, what, detail) VALUES (?,?,?,?)",
                         (alert_id, at, what, json.dumps(detail)))


_ALERT_COLUMNS = ("alert_id, device_id, seq, kind, site_id, site_name, lat, lon, firmware, "
                  "follows, pressed_at, received_at, latency_ms, announces, presses, escalated, "
                  "signature_ok, problems")


def _alert_values(a: Alert, received_at: str, latency_ms: float | None,
                  signature_ok: bool | None, problems: tuple[str, ...]) -> tuple:
    return (a.alert_id, a.device_id, a.seq, a.kind, a.site.id, a.site.name, a.site.lat,
            a.site.lon, a.firmware, a.follows, a.pressed_at, received_at, latency_ms,
            a.announce, a.presses, int(a.escalated), _tri(signature_ok),
            json.dumps(list(problems)) if problems else None)


# Presses of the alerts folded into an incident (a correlated subquery on `incidents`).
_FOLDED_PRESSES = ("(SELECT COALESCE(SUM(f.presses), 0) FROM folded f "
                   "WHERE f.into_id = incidents.alert_id)")


def _problems(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def _tri(v: bool | None) -> int | None:
    return None if v is None else int(v)
