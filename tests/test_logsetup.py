"""Log lines of `pinkbutton run`: timestamped on a terminal or in a file, not under journald
(which stamps them itself), where they carry the syslog priority journald reads instead."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from pinkbutton.firmware.logsetup import JournalFormatter, writes_to_journal

from harness.broker import free_port
from tests.helpers import write_kiosk_config

ROOT = Path(__file__).resolve().parent.parent
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _journal_env(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_stream_counts_only_when_it_names_our_stream(tmp_path: Path) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    other.touch()
    with ours.open("w") as stream:
        assert writes_to_journal(stream, {"JOURNAL_STREAM": _journal_env(ours)})
        # inherited from a parent whose stderr was the journal, ours goes elsewhere
        assert not writes_to_journal(stream, {"JOURNAL_STREAM": _journal_env(other)})
        assert not writes_to_journal(stream, {})
        assert not writes_to_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not writes_to_journal(stream, {"JOURNAL_STREAM": "12:"})


def test_journal_lines_carry_the_syslog_priority_and_no_time() -> None:
    formatter = JournalFormatter()

    def line(level: int, msg: str) -> str:
        return formatter.format(logging.LogRecord("pinkbutton.kiosk", level, __file__, 1, msg,
                                                  None, None))

    assert line(logging.ERROR, "outbox full") == "<3>ERROR pinkbutton.kiosk: outbox full"
    assert line(logging.WARNING, "w") == "<4>WARNING pinkbutton.kiosk: w"
    assert line(logging.INFO, "i") == "<6>INFO pinkbutton.kiosk: i"
    assert line(logging.DEBUG, "d") == "<7>DEBUG pinkbutton.kiosk: d"
    assert line(logging.CRITICAL, "c").startswith("<2>")
    # a message of several lines is several journal entries, each with its priority
    assert line(logging.ERROR, "a\nb") == "<3>ERROR pinkbutton.kiosk: a\n<3>b"


def _run_kiosk_until_it_logs(tmp_path: Path, pki_dir: Path, journal: bool) -> list[str]:
    """`pinkbutton run` (fake HAL, no broker listening), stderr to a file; returns its lines
    once it has logged the failed connection, after SIGTERM."""
    cfg = write_kiosk_config(tmp_path, pki_dir, free_port())
    cfg.write_text(cfg.read_text() + "\n[media]\nvideo = false\naudio = false\n")
    err = tmp_path / "stderr"
    err.touch()
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    if journal:
        env["JOURNAL_STREAM"] = _journal_env(err)
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pinkbutton.firmware.cli", "run", "--config", str(cfg)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while "broker" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, f"nothing logged about the broker: {err.read_text()}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err.read_text().splitlines()


def test_pinkbutton_run_under_journald_logs_no_timestamp(tmp_path: Path, pki_dir: Path) -> None:
    lines = _run_kiosk_until_it_logs(tmp_path, pki_dir, journal=True)
    assert lines
    for line in lines:
        assert not TIMESTAMP.match(line), line
        assert re.match(r"^<[2-7]>(CRITICAL|ERROR|WARNING|INFO|DEBUG) pinkbutton", line), line


def test_pinkbutton_run_elsewhere_keeps_its_timestamps(tmp_path: Path, pki_dir: Path) -> None:
    lines = _run_kiosk_until_it_logs(tmp_path, pki_dir, journal=False)
    logged = [line for line in lines if " pinkbutton" in line]
    assert logged
    for line in logged:
        assert TIMESTAMP.match(line), line
