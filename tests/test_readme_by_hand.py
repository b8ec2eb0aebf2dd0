"""README's "Using the pieces by hand", followed line by line as a newcomer would.

The shell block is read from README.md itself, so the test breaks when the README stops
working. It runs in a copy of the top folder's examples/, from that folder, with the console
scripts of this venv on PATH. Two changes only, both forced by the test machine: port 8883
becomes a free ephemeral port (in the commands and in the copied sim.toml), and the webcam line
is left out (no camera here). The operator types into the control room and presses Enter in the
simulator through pseudo-terminals, as at a keyboard.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.broker import BrokerError, find_mosquitto, free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.broker


def by_hand_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Using the pieces by hand", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's by-hand section has no ```sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()
            if line.split("#", 1)[0].strip()]


#: Labelled fields of the room's ALERT line and of an incident line of `report`.
LABELS = ("seq", "latency", "location", "no", "evidence", "id", "presses", "announces")


def shape(line: str) -> list[str]:
    """The labels of a line's fields (two spaces apart), in order: what the README's sample
    output must share with a real run, whatever the values."""
    return [f.split()[0] for f in line.split("  ") if f.split() and f.split()[0] in LABELS]


def readme_sample_line(pattern: str) -> str:
    """The first line matching `pattern` (at its start) in the README's terminal section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## In the control room: the officer's terminal", 1)[1].split("\n## ")[0]
    return next(line for line in section.splitlines() if re.match(pattern, line))


class Proc:
    """A command of the README with a pseudo-terminal as its keyboard; stdout collected."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        os.close(slave)
        self.lines: list[str] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines:
                    if m := re.search(pattern, line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{self.proc.args[0]}: no line matching {pattern!r} "
                                         f"(exit code {self.proc.returncode}); output:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cv.wait(min(left, 0.5))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        os.close(self.master)


def test_readme_by_hand_section_gets_a_press_acknowledged(tmp_path: Path) -> None:
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.skip(f"real-broker test skipped: {exc}")
    lines = by_hand_lines()
    assert lines[0] == ". .venv/bin/activate"  # stands for: the venv's scripts on PATH
    port = str(free_port())
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    sim_toml = tmp_path / "examples" / "sim.toml"
    sim_toml.write_text(sim_toml.read_text().replace("port = 8883", f"port = {port}"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def argv(line: str) -> list[str]:
        words = shlex.split(line.replace("8883", port).rstrip("&").strip())
        return [sys.executable, *words[1:]] if words[0] == "python" else words

    started: list[Proc] = []
    try:
        for line in lines[1:]:
            if "--webcam" in line:
                continue
            words = argv(line)
            if line.startswith("pinkbutton-pki"):
                subprocess.run(words, cwd=tmp_path, env=env, check=True, timeout=60,
                               capture_output=True)
            elif line.endswith("&"):  # the broker, in the background
                started.append(broker := Proc(words, tmp_path, env))
                broker.wait_for(rf"^{port}$")
            elif words[:2] == ["pinkbutton-controlroom", "run"]:
                started.append(room := Proc(words, tmp_path, env))
                room.wait_for("control room listening")
            elif words[:2] == ["pinkbutton-sim", "run"]:
                started.append(sim := Proc(words, tmp_path, env))
                sim.wait_for("press Enter to press the button")
                sim.wait_for(r"connected")
                sim.type("\n")  # a press
                alert = room.wait_for(r"^ALERT .* id ([0-9a-f]{8})")
                alert_id = alert.group(1)
                assert shape(alert.string) == shape(readme_sample_line("ALERT  ")), alert.string
                room.type(f"ack {alert_id}\n")
                room.wait_for(rf"^ACK .* id {alert_id}")
                sim.wait_for(r"indicator\s+pattern=help_coming")
            elif words[:2] == ["pinkbutton-controlroom", "report"]:
                for proc in reversed(started):
                    proc.stop()
                report = subprocess.run(words, cwd=tmp_path, env=env, timeout=60,
                                        capture_output=True, text=True)
                assert report.returncode == 0, report.stderr
                assert report.stdout.startswith("1 incident(s) in controlroom.db"), report.stdout
                assert "pb-sim-0001" in report.stdout, report.stdout
                assert "acknowledged by control-room" in report.stdout, report.stdout
                incident = report.stdout.splitlines()[1]
                assert shape(incident) == shape(readme_sample_line(r"[0-9a-f]{8}-[0-9a-f]{4}-")), incident
            else:
                pytest.fail(f"README's by-hand section has a line this test does not know: {line}")
    finally:
        for proc in reversed(started):
            if proc.proc.poll() is None:
                proc.stop()
