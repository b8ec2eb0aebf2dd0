"""Every command piped into `head` (its reader gone before it writes) stops quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = ["pinkbutton", "pinkbutton-sim", "pinkbutton-controlroom", "pinkbutton-pki",
            "pinkbutton-diag"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("args", [["--help"], ["--version"]], ids=["help", "version"])
def test_a_closed_pipe_is_no_traceback(command: str, args: list[str]) -> None:
    proc = subprocess.Popen([str(BIN / command), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -0`: gone before the command (still starting) writes
    _, err = proc.communicate(timeout=60)
    assert err.decode() == "", err.decode()
    assert proc.returncode in (0, 141)


def test_the_fleet_table_into_a_reader_that_left(tmp_path: Path) -> None:
    """The case a technician hit: `pinkbutton-controlroom fleet | head`."""
    db = tmp_path / "room.db"
    from pinkbutton.tools.controlroom.store import IncidentStore

    IncidentStore(db).close()
    proc = subprocess.Popen([str(BIN / "pinkbutton-controlroom"), "fleet", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err.decode() and "BrokenPipe" not in err.decode(), err.decode()
    assert proc.returncode in (0, 141)
