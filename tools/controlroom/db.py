"""The control room's database connection: SQLite (a file, the embedded default for one
receiver) or PostgreSQL (a `postgresql://` URL, shared by several receivers on different hosts).

The store (store.py) and the console's accounts (web/accounts.py) write their SQL once, with
`?` placeholders and the syntax both engines accept (INSERT ... ON CONFLICT, RETURNING); what
differs goes through this layer: placeholders, DDL types (AUTOINCREMENT, REAL, BLOB), scalar
MAX vs GREATEST, JSON access, row locks, transactions (BEGIN IMMEDIATE vs BEGIN), an advisory
lock for schema changes, and the console's change poll (SQLite's PRAGMA data_version; on
PostgreSQL a counter of NOTIFYs that triggers send at commit). One connection per object, used
by one thread at a time (a lock keeps a transaction whole if two threads share it).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pinkbutton.firmware.cliargs import redact_urls
from pinkbutton.firmware.durable import private_dir, private_sqlite

URL_SCHEMES = ("postgresql://", "postgres://")
#: The channel the PostgreSQL triggers notify on every committed change (see notify_ddl).
CHANGES_CHANNEL = "pinkbutton_changed"


class DatabaseError(Exception):
    """The database cannot be opened; one line naming it (the URL without its password)."""


def is_url(target: Path | str) -> bool:
    """`--db` names a PostgreSQL database (else a SQLite file)."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def db_target(target: Path | str) -> Path | str:
    """What `--db` names, as the store takes it: a URL stays a string, a file a Path."""
    return target if is_url(target) else Path(target)


def redacted(target: Path | str) -> str:
    """The database for a message: a URL without its password."""
    return redact_urls(str(target))


def connect(target: Path | str) -> Database:
    """A connection to the database `target` names (a file path or a postgresql:// URL)."""
    if is_url(target):
        return PostgresDatabase(str(target))
    return SqliteDatabase(Path(target))


class Database:
    """One connection. SQL is written with `?` placeholders."""

    dialect = ""
    #: Raised on a UNIQUE/PRIMARY KEY violation.
    integrity_errors: tuple[type[Exception], ...] = ()
    #: Any database error.
    errors: tuple[type[Exception], ...] = ()
    #: Appended to a SELECT that reads rows it will update (row locks on PostgreSQL).
    for_update = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def execute(self, sql: str, args: tuple | list = ()) -> Any:
        raise NotImplementedError

    def script(self, sql: str) -> None:
        """Several statements without parameters (schema)."""
        raise NotImplementedError

    @contextmanager
    def tx(self) -> Iterator[None]:
        raise NotImplementedError
        yield

    def schema_lock(self) -> None:
        """Inside tx(): one process at a time creates or migrates the schema."""

    def columns(self, table: str) -> list[str]:
        raise NotImplementedError

    def data_version(self) -> int:
        """Changes when another connection committed to the database since the last call."""
        raise NotImplementedError

    def greatest(self, a: str, b: str) -> str:
        raise NotImplementedError

    def json_text(self, column: str, key: str) -> str:
        """SQL for the text of `key` in the JSON object stored in `column`."""
        raise NotImplementedError

    def ddl(self, sql: str) -> str:
        """SQLite DDL as this engine takes it."""
        return sql

    def close(self) -> None:
        raise NotImplementedError


class SqliteDatabase(Database):
    dialect = "sqlite"
    integrity_errors = (sqlite3.IntegrityError,)
    errors = (sqlite3.Error, OSError)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            # Incident data: the database files 0600; a directory made for them 0700 (an
            # existing one, e.g. the operator's cwd, is left as it is).
            private_dir(path.parent, tighten=False)
            private_sqlite(path)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        except (OSError, sqlite3.Error) as e:
            raise DatabaseError(f"{path}: {e}") from None

    def execute(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def script(self, sql: str) -> None:
        with self._lock:
            self._db.executescript(sql)

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One transaction, so one fsync per change (autocommit would fsync per statement)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def columns(self, table: str) -> list[str]:
        return [row[1] for row in self.execute(f"PRAGMA table_info({table})")]

    def data_version(self) -> int:
        return self.execute("PRAGMA data_version").fetchone()[0]

    def greatest(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})"

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def close(self) -> None:
        self._db.close()


# SQLite DDL -> PostgreSQL: identity keys, double precision, bytea; text compares byte-wise
# (COLLATE "C") as in SQLite, so ISO timestamps and alert_id prefix ranges order the same.
_PG_DDL = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
)


def notify_ddl(*tables: str) -> str:
    """PostgreSQL triggers: every statement that changes one of `tables` notifies
    CHANGES_CHANNEL, delivered when its transaction commits (the console's change poll)."""
    out = [f"""CREATE OR REPLACE FUNCTION pinkbutton_changed() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN PERFORM pg_notify('{CHANGES_CHANNEL}', ''); RETURN NULL; END $$;"""]
    for t in tables:
        out.append(f"CREATE OR REPLACE TRIGGER {t}_changed AFTER INSERT OR UPDATE OR DELETE "
                   f"ON {t} FOR EACH STATEMENT EXECUTE FUNCTION pinkbutton_changed();")
    return "\n".join(out)


class PostgresDatabase(Database):
    dialect = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise DatabaseError(f"{redacted(url)}: PostgreSQL needs psycopg: pip install "
                                "'pinkbutton[room]'") from None
        self.integrity_errors = (psycopg.errors.IntegrityError,)
        self.errors = (psycopg.Error, OSError)
        self.url = url
        self._changes = 0
        self._listening = False
        self._closed = False
        self._depth = 0  # open transactions: never reconnect inside one
        try:
            self._db = self._connect()
        except psycopg.Error as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise DatabaseError(f"{redacted(url)}: {first}") from None

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        conn.add_notify_handler(self._notified)
        return conn

    def _conn(self) -> Any:
        """The connection; a new one when the last was lost (the server restarted, a standby
        was promoted: a multi-host URL with target_session_attrs=read-write finds the new
        primary). The call that met the lost connection has failed already; an alert it
        carried is re-announced by its kiosk until a receipt comes (docs/scaling.md)."""
        if (self._db.broken or self._db.closed) and not self._closed and not self._depth:
            self._db.close()
            self._db = self._connect()
            self._listening = False
            self._changes += 1  # what changed meanwhile is unknown: the console refreshes
        return self._db

    def _notified(self, _n: object) -> None:
        self._changes += 1

    def execute(self, sql: str, args: tuple | list = ()) -> Any:
        with self._lock:
            return self._conn().execute(_placeholders(sql), tuple(args))  # pyright: ignore[reportArgumentType]

    def script(self, sql: str) -> None:
        with self._lock:
            self._conn().execute(sql.encode())  # no parameters: several statements in one go

    @contextmanager
    def tx(self) -> Iterator[None]:
        with self._lock, self._conn().transaction():
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    def schema_lock(self) -> None:
        # Two receivers starting at once: CREATE TABLE IF NOT EXISTS is not safe concurrently
        # (it can fail on the catalog's unique index); the second waits for the first's commit.
        self.execute("SELECT pg_advisory_xact_lock(?)", (0x50696E6B,))  # "Pink"

    def columns(self, table: str) -> list[str]:
        rows = self.execute("SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = current_schema() AND table_name = ? "
                            "ORDER BY ordinal_position", (table,))
        return [r[0] for r in rows]

    def data_version(self) -> int:
        with self._lock:
            conn = self._conn()
            if not self._listening:
                conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                self._listening = True
            conn.execute("SELECT 1")  # delivers the notifications received meanwhile
            return self._changes

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})"

    def json_text(self, column: str, key: str) -> str:
        return f"(({column})::jsonb ->> '{key}')"

    def ddl(self, sql: str) -> str:
        for pattern, replacement in _PG_DDL:
            sql = pattern.sub(replacement, sql)
        return sql

    def close(self) -> None:
        self._closed = True
        self._db.close()


def _placeholders(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal % doubled). The SQL of this package has
    no `?` inside string literals."""
    return sql.replace("%", "%%").replace("?", "%s")
