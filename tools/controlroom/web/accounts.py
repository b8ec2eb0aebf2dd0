"""Officers' accounts, server-side sessions and the append-only audit log of the console.

They live in the incident database (the same SQLite file or PostgreSQL database, their own
tables), so several web processes share them. Passwords: scrypt (salt per user, parameters stored with the hash),
compared in constant time; a login for an unknown name costs the same scrypt. Sessions: a
random token in an HttpOnly cookie; the database keeps only its SHA-256, so a copy of the
database opens no session. The audit table refuses UPDATE and DELETE (triggers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.db import DatabaseError, connect, db_target, redacted

ROLES = ("operator", "supervisor", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# scrypt cost: 16 MiB and ~50 ms per check on a server core; stored per user, so raising it
# later keeps every existing hash usable.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 1 << 14, 8, 1, 32
SESSION_S = 12 * 3600  # an officer's shift; then log in again

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    salt        BLOB NOT NULL,
    hash        BLOB NOT NULL,
    kdf         TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    disabled    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    "user"       TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    "user"    TEXT NOT NULL,
    action    TEXT NOT NULL,
    alert_id  TEXT,
    detail    TEXT NOT NULL DEFAULT '{}'
);
"""
SQLITE_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
PG_TRIGGERS = """
CREATE OR REPLACE FUNCTION pinkbutton_audit_append_only() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION pinkbutton_audit_append_only();
"""


class AccountError(ValueError):
    """Bad input (name, role, password) or an impossible change; one line for a human."""


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    role: str
    csrf: str


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    created_at: str
    disabled: bool


def hash_password(password: str, salt: bytes, kdf: str = "") -> bytes:
    n, r, p, length = SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN
    if kdf:  # "scrypt:n:r:p:len", as stored with the hash
        _, *nums = kdf.split(":")
        n, r, p, length = (int(x) for x in nums)
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p,
                          dklen=length, maxmem=64 * 1024 * 1024)


def kdf_name() -> str:
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{SCRYPT_LEN}"


def check_password(password: str, salt: bytes, stored: bytes, kdf: str) -> bool:
    return hmac.compare_digest(hash_password(password, salt, kdf), stored)


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise AccountError(f"user name {name!r}: 1-64 of letters, digits, '.', '_', '-'")
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def validate_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


class Accounts:
    """One connection; use it from one thread at a time."""

    def __init__(self, path: Path | str) -> None:
        """`path`: a SQLite file, or a postgresql:// URL (tools/controlroom/db.py)."""
        self.path = db_target(path)
        try:
            self._db = connect(self.path)
        except DatabaseError as e:
            raise AccountError(f"cannot open account database {e}") from None
        try:
            if self._db.dialect == "postgresql":
                with self._db.tx():
                    self._db.schema_lock()
                    self._db.script(self._db.ddl(SCHEMA) + PG_TRIGGERS)
            else:
                self._db.script(SCHEMA + SQLITE_TRIGGERS)
        except self._db.errors as e:
            self._db.close()
            raise AccountError(f"cannot open account database {redacted(self.path)}: "
                               f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
                               ) from None
        self._dummy = (secrets.token_bytes(16), kdf_name())  # for unknown names

    def close(self) -> None:
        self._db.close()

    # -- users --------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str) -> None:
        validate_name(name)
        validate_role(role)
        validate_password(password)
        salt = secrets.token_bytes(16)
        try:
            self._db.execute(
                "INSERT INTO users(name, role, salt, hash, kdf, created_at) VALUES (?,?,?,?,?,?)",
                (name, role, salt, hash_password(password, salt), kdf_name(),
                 iso8601(time.time())))
        except self._db.integrity_errors:
            raise AccountError(f"user {name!r} exists already") from None

    def users(self) -> list[User]:
        rows = self._db.execute("SELECT name, role, created_at, disabled FROM users ORDER BY name")
        return [User(n, r, c, bool(d)) for n, r, c, d in rows]

    def credentials(self, name: str) -> tuple[bytes, bytes, str] | None:
        """(salt, hash, kdf) of an enabled user, else None."""
        row = self._db.execute("SELECT salt, hash, kdf FROM users WHERE name=? AND disabled=0",
                               (name,)).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]), row[2])

    def verify(self, name: str, password: str) -> bool:
        """The password is this enabled user's. Costs one scrypt whether the name exists
        or not (no user-name oracle by timing)."""
        creds = self.credentials(name)
        if creds is None or len(password) > MAX_PASSWORD:
            salt, kdf = self._dummy
            check_password(password[:MAX_PASSWORD], salt, b"\0" * SCRYPT_LEN, kdf)
            return False
        return check_password(password, *creds)

    # -- sessions -----------------------------------------------------------------

    def new_session(self, user: str) -> str:
        """A fresh session for a user whose password was just checked: its cookie token."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        self._db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        self._db.execute(
            'INSERT INTO sessions(token_sha256, "user", csrf, created_at, expires) '
            "VALUES (?,?,?,?,?)",
            (_digest(token), user, secrets.token_urlsafe(32), iso8601(now), now + SESSION_S))
        return token

    def session(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        row = self._db.execute(
            'SELECT s."user", u.role, s.csrf FROM sessions s JOIN users u ON u.name = s."user" '
            "WHERE s.token_sha256=? AND s.expires >= ? AND u.disabled=0",
            (_digest(token), time.time())).fetchone()
        return None if row is None else Session(*row)

    def end_session(self, token: str | None) -> None:
        if token:
            self._db.execute("DELETE FROM sessions WHERE token_sha256=?", (_digest(token),))

    # -- audit ----------------------------------------------------------------------

    def audit(self, user: str, action: str, alert_id: str | None = None,
              detail: dict | None = None) -> None:
        self._db.execute('INSERT INTO audit(at, "user", action, alert_id, detail) '
                         "VALUES (?,?,?,?,?)",
                         (iso8601(time.time()), user, action, alert_id,
                          json.dumps(detail or {})))

    def audit_rows(self, alert_id: str | None = None) -> list[dict]:
        where, args = ("WHERE alert_id=?", (alert_id,)) if alert_id else ("", ())
        cur = self._db.execute(
            f'SELECT id, at, "user", action, alert_id, detail FROM audit {where} ORDER BY id',
            args)
        return [{"id": i, "at": at, "user": u, "action": a, "alert_id": aid,
                 "detail": json.loads(d)} for i, at, u, a, aid, d in cur]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
