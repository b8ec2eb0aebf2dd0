"""Durable record of alerts: SQLite in WAL mode with synchronous=FULL.

An alert is committed here before the kiosk shows "sending", so a crash after
the press cannot lose it. It stays pending through retries, restarts and power
loss until the control room's application-level receipt (not the broker's
PUBACK, which only says the broker has it). Owned by the kiosk's state thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from pinkbutton.firmware.durable import private_dir, private_sqlite
from pinkbutton.firmware.machine import AlertDraft

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id     TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL UNIQUE,
    draft        TEXT NOT NULL,
    created_wall REAL NOT NULL,
    delivered    INTEGER NOT NULL DEFAULT 0,
    received     INTEGER NOT NULL DEFAULT 0,
    boot_id      TEXT,
    ended        INTEGER NOT NULL DEFAULT 0
);
"""


class OutboxError(Exception):
    """The outbox cannot be opened or written (disk full, read-only, corrupt)."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


# The kernel's id of this boot: monotonic time is comparable only within one boot.
BOOT_ID = _boot_id()


def _looks_corrupt(e: OutboxError) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("not a database", "malformed", "integrity check", "corrupt"))


class Outbox:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        memory = str(path) == ":memory:"
        try:
            if not memory:  # incident data: state_dir 0700, database files 0600
                private_dir(self.path.parent)
                private_sqlite(self.path)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            (check,) = self._db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}
            if "received" not in columns:  # outbox written by firmware 0.1.0 before receipts
                self._db.execute("ALTER TABLE alerts ADD COLUMN received INTEGER NOT NULL DEFAULT 0")
            if "boot_id" not in columns:
                self._db.execute("ALTER TABLE alerts ADD COLUMN boot_id TEXT")
            if "ended" not in columns:
                self._db.execute("ALTER TABLE alerts ADD COLUMN ended INTEGER NOT NULL DEFAULT 0")
        except (OSError, sqlite3.Error) as e:
            raise OutboxError(f"cannot open outbox {self.path}: {e}") from None

    @classmethod
    def open_or_recover(cls, path: Path) -> tuple[Outbox, str | None]:
        """Open the outbox; if it is corrupt, move it aside and start a new one; if the disk
        cannot hold one at all, keep it in memory. Returns (outbox, fault or None): the
        kiosk reports the fault and keeps working — alerts are never blocked by the disk."""
        try:
            return cls(path), None
        except OutboxError as first:
            if not _looks_corrupt(first) or not Path(path).exists():
                return cls(":memory:"), f"outbox unavailable, alerts kept in memory only: {first}"
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = Path(f"{path}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                os.replace(src, Path(f"{moved}{suffix}"))
        try:
            return cls(path), f"outbox was corrupt; moved to {moved.name} and recreated"
        except OutboxError as second:
            return cls(":memory:"), f"outbox unavailable, alerts kept in memory only: {second}"

    def put(self, draft: AlertDraft, wall: float) -> None:
        """Commit an alert durably (fsync'd by SQLite before this returns)."""
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO alerts(alert_id, seq, draft, created_wall, boot_id) "
                "VALUES (?,?,?,?,?)",
                (draft.alert_id, draft.seq, json.dumps(asdict(draft)), wall, BOOT_ID),
            )
        except sqlite3.Error as e:
            raise OutboxError(f"cannot write alert {draft.alert_id} to {self.path}: {e}") from None

    def mark_delivered(self, alert_id: str) -> None:
        """The broker has it (PUBACK). It stays pending until the room's receipt."""
        try:
            self._db.execute("UPDATE alerts SET delivered=1 WHERE alert_id=?", (alert_id,))
        except sqlite3.Error as e:
            raise OutboxError(f"cannot update outbox {self.path}: {e}") from None

    def mark_received(self, alert_id: str) -> bool:
        """The control room has stored it (application-level receipt): it leaves the outbox.
        True when this changed something."""
        try:
            cur = self._db.execute(
                "UPDATE alerts SET received=1, delivered=1 WHERE alert_id=? AND received=0",
                (alert_id,))
        except sqlite3.Error as e:
            raise OutboxError(f"cannot update outbox {self.path}: {e}") from None
        return cur.rowcount == 1

    def mark_ended(self, alert_id: str) -> None:
        """The incident is over (ended by the room, or its stream time ran out): a restart
        must not resume it."""
        try:
            self._db.execute("UPDATE alerts SET ended=1 WHERE alert_id=?", (alert_id,))
        except sqlite3.Error as e:
            raise OutboxError(f"cannot update outbox {self.path}: {e}") from None

    def knows(self, alert_id: str) -> bool:
        """Whether this alert was ever committed here (pending, received or ended)."""
        row = self._db.execute("SELECT 1 FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        return row is not None

    def open_incident(self) -> tuple[AlertDraft, bool] | None:
        """The newest alert, if the control room has it but its incident was never ended
        (the kiosk died mid-incident), with whether it was pressed during this boot."""
        row = self._db.execute(
            "SELECT draft, boot_id, received, ended FROM alerts ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None or not row[2] or row[3]:
            return None
        return AlertDraft(**json.loads(row[0])), row[1] is not None and row[1] == BOOT_ID

    def pending(self) -> list[AlertDraft]:
        """Alerts the control room has not confirmed, oldest first."""
        return [d for d, _ in self.pending_with_boot()]

    def pending_with_boot(self) -> list[tuple[AlertDraft, bool]]:
        """Pending alerts, each with whether it was pressed during this boot (then its
        pressed_mono is still on the current monotonic clock)."""
        rows = self._db.execute("SELECT draft, boot_id FROM alerts WHERE received=0 ORDER BY seq")
        return [(AlertDraft(**json.loads(d)), b is not None and b == BOOT_ID) for d, b in rows]

    def next_seq(self) -> int:
        (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM alerts").fetchone()
        return last + 1

    def close(self) -> None:
        self._db.close()
