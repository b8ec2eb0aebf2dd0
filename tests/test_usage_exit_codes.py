"""Usage and configuration errors of every command: exit 2, one line naming the problem, no
traceback (issue 9, item 12)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, write_kiosk_config

ROOT = Path(__file__).resolve().parent.parent


def run(module: str, *args: str, as_unprivileged: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, *args]
    if as_unprivileged and os.geteuid() == 0:
        # root reads any directory; without these two capabilities it obeys the mode bits.
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory unreadable")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_check_config_refuses_a_state_dir_that_is_a_file(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, 8883)
    (tmp_path / "state-pb-test-0001").write_text("not a directory\n")
    proc = run("pinkbutton.firmware.cli", "check-config", str(cfg))
    assert_one_line_error(proc, "state_dir", str(tmp_path / "state-pb-test-0001"),
                          "not a directory")


def test_check_config_refuses_a_state_dir_under_a_file(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, 8883)
    text = cfg.read_text().replace("state-pb-test-0001", "blocker/state")
    cfg.write_text(text)
    (tmp_path / "blocker").write_text("")
    proc = run("pinkbutton.firmware.cli", "check-config", str(cfg))
    assert_one_line_error(proc, "state_dir", "a parent is not a directory")


def test_check_config_accepts_a_state_dir_not_made_yet(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, 8883)
    proc = run("pinkbutton.firmware.cli", "check-config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "state-pb-test-0001").exists(), "check-config must not create it"


def test_controlroom_run_with_unreadable_pki_dir_exits_2(tmp_path):
    locked = tmp_path / "pki"
    locked.mkdir()
    locked.chmod(0)
    try:
        proc = run("pinkbutton.tools.controlroom.cli", "run", "--pki", str(locked),
                   "--db", str(tmp_path / "room.db"), as_unprivileged=True)
    finally:
        locked.chmod(0o700)
    assert_one_line_error(proc, str(locked / "ca.pem"), "permission denied")


def test_controlroom_run_with_db_a_directory_exits_2(tmp_path, pki_dir):
    db = tmp_path / "db-dir"
    db.mkdir()
    proc = run("pinkbutton.tools.controlroom.cli", "run", "--pki", str(pki_dir), "--db", str(db),
               "--port", "1")
    assert_one_line_error(proc, "--db", str(db), "is a directory")


def test_controlroom_report_with_db_a_directory_exits_2(tmp_path):
    proc = run("pinkbutton.tools.controlroom.cli", "report", "--db", str(tmp_path))
    assert_one_line_error(proc, "--db", str(tmp_path), "is a directory")
