"""`pinkbutton-diag logs`: the kiosk's recent log from journald.

The kiosk runs as the systemd unit `pinkbutton` and logs to journald (no second timestamp), so
its log is `journalctl -u pinkbutton`. This builds that command line (`-o short-iso` for people,
`-o json` for `--json`, which becomes one record per line), runs it bounded in time (unless
following) and says what to do where there is no journal (a kiosk started by hand, a container).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pinkbutton.firmware.diag.checks import Check, failed, passed

UNIT = "pinkbutton"
RUN_TIMEOUT_S = 30.0
#: syslog priorities as journald stores them (PRIORITY=0..7).
LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_NO_JOURNAL_FIX = ("the firmware logs to journald when systemd runs it (sudo systemctl start "
                   "pinkbutton); started by hand (`pinkbutton run`), its log is on the terminal "
                   "that started it: redirect it to a file there (2>>kiosk.log)")


class LogsUsageError(ValueError):
    """journalctl refused an argument (a `--since` it cannot parse): exit 2."""


@dataclass(frozen=True, slots=True)
class LogResult:
    check: Check
    lines: list[str]  # -o short-iso lines, as journalctl printed them
    records: list[dict]  # --json: one dict per entry (see record())


def journal_command(lines: int, since: str | None = None, follow: bool = False,
                    as_json: bool = False, unit: str = UNIT) -> list[str]:
    cmd = ["journalctl", "-u", unit, "-o", "json" if as_json else "short-iso", "-n", str(lines),
           "--no-pager"]
    if since is not None:
        cmd += ["--since", since]
    if follow:
        cmd.append("--follow")
    return cmd


def record(entry: dict) -> dict:
    """One `journalctl -o json` entry as {time (ISO 8601 UTC), priority, level, message, pid}."""
    try:
        at = datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, UTC)
        time = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        time = None
    try:
        priority: int | None = int(entry.get("PRIORITY"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        priority = None
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald gives non-UTF-8 text as a list of bytes
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace")
    try:
        pid: int | None = int(entry.get("_PID"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pid = None
    return {"time": time, "priority": priority,
            "level": LEVELS[priority] if priority is not None and 0 <= priority < 8 else None,
            "message": "" if message is None else str(message), "pid": pid}


def _records(text_lines: Iterable[str]) -> list[dict]:
    out = []
    for line in text_lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(record(entry))
    return out


def _no_journal(why: str) -> Check:
    return failed("logs", f"no journal here: {why}", _NO_JOURNAL_FIX)


def _refused(cmd: list[str], stderr: str) -> Check | None:
    """A failed check for what journalctl said on stderr, or None when it is fine."""
    text = stderr.strip()
    if "No journal files were found" in text:
        return _no_journal("journalctl found no journal files (is systemd running?)")
    if "Failed to parse" in text:
        raise LogsUsageError(f"--since: journalctl cannot parse it: {text.splitlines()[-1]}")
    if text and "not seeing messages" in text:  # not in group adm/systemd-journal
        return failed("logs", "not allowed to read the kiosk's log",
                      "run as root (sudo) or as a member of group adm or systemd-journal")
    return None


def read_logs(lines: int, since: str | None = None, *, as_json: bool = False,
              unit: str = UNIT) -> LogResult:
    """The last `lines` entries (since `since`), bounded in time."""
    cmd = journal_command(lines, since, as_json=as_json, unit=unit)
    if shutil.which("journalctl") is None:
        return LogResult(_no_journal("journalctl is not installed"), [], [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                              timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return LogResult(failed("logs", f"journalctl gave no answer within {RUN_TIMEOUT_S:g} s",
                                "try fewer lines (-n) or a recent --since"), [], [])
    except OSError as e:
        return LogResult(_no_journal(f"cannot run journalctl: {e.strerror or e}"), [], [])
    refused = _refused(cmd, proc.stderr)
    if refused is not None:
        return LogResult(refused, [], [])
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return LogResult(failed("logs", f"journalctl failed: {last}",
                                "run the command by hand: " + " ".join(cmd)), [], [])
    out = [line for line in proc.stdout.splitlines() if line and line != "-- No entries --"]
    records = _records(out) if as_json else []
    count = len(records) if as_json else sum(not line.startswith("-- ") for line in out)
    if not count:
        return LogResult(failed("logs", f"no log lines of unit {unit}"
                                f"{' since ' + since if since else ''}",
                                f"is the firmware installed as a service? systemctl status "
                                f"{unit}"), [], [])
    return LogResult(passed("logs", f"{count} line(s) of unit {unit} from journald "
                            f"({' '.join(cmd)})"), [] if as_json else out, records)


def follow_logs(lines: int, since: str | None, *, as_json: bool, emit: Callable[[str], None],
                unit: str = UNIT) -> Check:
    """`journalctl --follow`: every line to `emit` (a JSON record per line with `as_json`)
    until journalctl ends or Ctrl-C."""
    cmd = journal_command(lines, since, follow=True, as_json=as_json, unit=unit)
    if shutil.which("journalctl") is None:
        return _no_journal("journalctl is not installed")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace")
    except OSError as e:
        return _no_journal(f"cannot run journalctl: {e.strerror or e}")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if as_json:
                for rec in _records([line]):
                    emit(json.dumps(rec))
            elif line:
                emit(line)
    except KeyboardInterrupt:
        pass  # the technician is done: the normal way to end --follow
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    refused = _refused(cmd, stderr)
    if refused is not None:
        return refused
    return passed("logs", f"followed unit {unit} ({' '.join(cmd)})")
