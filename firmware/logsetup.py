"""Log lines of `pinkbutton run`: a timestamp on a terminal or in a file, none in the journal.

Under systemd the kiosk's stderr is a stream to journald, which stamps every line itself: a
timestamp in the message would be a second one (`journalctl` showing the time twice). systemd
names that stream in $JOURNAL_STREAM as "DEVICE:INODE" (systemd.exec(5)); the variable is
inherited by children whose stderr may go elsewhere, so it counts only when it names the stream
the log is written to. Journal lines then start with the syslog priority "<N>", which journald
takes as the line's priority (SyslogLevelPrefix=yes, the default), so `journalctl -p warning
-u pinkbutton` shows the warnings and errors only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"

# syslog(3) priorities: 3 err, 4 warning, 6 info, 7 debug (critical is 2).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


def writes_to_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when `stream` is the journal stream systemd named in $JOURNAL_STREAM."""
    value = environ.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a file (io.StringIO)
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """No timestamp (journald adds its own); the syslog priority prefix journald reads."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno)
        if priority is None:  # a custom level: the nearest standard one below it
            priority = next((p for lvl, p in sorted(_PRIORITY.items(), reverse=True)
                             if record.levelno >= lvl), 7)
        # one journal entry per line: a traceback's lines carry the same priority
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def configure_logging(level: str, stream: TextIO | None = None,
                      environ: Mapping[str, str] | None = None) -> logging.Handler:
    """Root logging for the kiosk: journal format when `stream` (stderr) goes to journald."""
    out: TextIO = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    if writes_to_journal(out, os.environ if environ is None else environ):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
