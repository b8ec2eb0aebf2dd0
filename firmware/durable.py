"""Crash-safe, private file writes: a reader after a power cut sees the old file or the new
one, whole; and no other local user reads incident data.

`write_atomic` writes a temp file beside the target, fsyncs it, renames it over the target
and fsyncs the directory (the rename itself is only durable once the directory entry is).
Used for the kiosk's evidence manifests and stream-seq record and the room's complete
evidence; the outbox gets the same from SQLite (WAL, synchronous=FULL).

Incident data (outbox, evidence, the room's database) lives in 0700 directories as 0600
files whatever the process umask: `private_dir`, `private_file`, `open_private` and
`write_atomic` set the mode explicitly (created with it, never wider, then chmod, since a
umask only ever removes bits).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: Path, path: Path) -> None:
    """Rename an already written and fsynced `tmp` over `path`, durably."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Make directory `path` (and any missing parents) 0700. An existing `path` is tightened
    to 0700 when `tighten` (best effort: a directory someone else owns is left as it is);
    existing parents are never touched."""
    path = Path(path)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileNotFoundError:
        private_dir(path.parent, tighten=False)
        try:
            path.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            pass
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path)) from None
        if tighten:
            try:
                os.chmod(path, PRIVATE_DIR)
            except OSError:
                pass
        return path
    os.chmod(path, PRIVATE_DIR)  # made by us: exactly 0700, whatever the umask
    return path


def open_private(path: Path, mode: str = "wb"):
    """`open(path, mode)` for "wb", "ab" or "a+b", the file 0600 (also an existing one)."""
    flags = {"wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "a+b": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode]
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def private_file(path: Path) -> None:
    """Create `path` empty if missing, and make it 0600 (an existing file keeps its bytes)."""
    open_private(path, "ab").close()


def private_sqlite(path: Path) -> None:
    """Before sqlite3.connect: the database file 0600. SQLite creates its -wal, -shm and
    -journal files with the database file's mode; ones an older version left are tightened."""
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            os.chmod(f"{path}{suffix}", PRIVATE_FILE)
        except FileNotFoundError:
            pass


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    replace_durably(tmp, path)
