"""Crash-safe file writes: a reader after a power cut sees the old file or the new one, whole.

`write_atomic` writes a temp file beside the target, fsyncs it, renames it over the target
and fsyncs the directory (the rename itself is only durable once the directory entry is).
Used for the kiosk's evidence manifests and stream-seq record and the room's complete
evidence; the outbox gets the same from SQLite (WAL, synchronous=FULL).
"""

from __future__ import annotations

import os
from pathlib import Path


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


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    replace_durably(tmp, path)
