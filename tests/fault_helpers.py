"""Helpers for the fault-injection suite: a simulator subprocess that can be killed,
a clock whose wall time can jump, a kiosk on that clock, timestamped recorders,
config variants and a size-limited state directory."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.config import load_config
from pinkbutton.firmware.outbox import Outbox
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend

from tests.helpers import Recorder, RunningKiosk

REPO = Path(__file__).resolve().parent.parent


class SkewClock(Clock):
    """Real monotonic time, wall time shifted by a settable offset (an NTP step, an RTC
    that lost its battery). Timers must follow monotonic time only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def wall(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def jump_wall(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


class TimedRecorder(Recorder):
    """A Recorder that also remembers when (time.monotonic()) each event arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[float, str, dict]] = []

    def __call__(self, kind: str, data: dict) -> None:
        self.times.append((time.monotonic(), kind, dict(data)))
        super().__call__(kind, data)

    def first_time(self, kind: str, pred: Callable[[dict], bool] = lambda d: True) -> float:
        for at, k, d in list(self.times):
            if k == kind and pred(d):
                return at
        raise AssertionError(f"no {kind!r} event recorded")


class ClockedKiosk(RunningKiosk):
    """RunningKiosk on a clock of the test's choosing (RunningKiosk always uses Clock())."""

    def __init__(self, config_path: Path, clock: Clock) -> None:
        self.config = load_config(config_path)
        self.clock = clock
        backend = FakeBackend()
        self.button = backend.button(self.clock, 17, 0.05)
        self.indicator = backend.indicator(self.clock, 27)
        self.camera = self.microphone = None
        self.events = TimedRecorder()
        self.kiosk = Kiosk(
            self.config, self.button, self.indicator, clock=self.clock, listeners=[self.events]
        )
        self.thread = threading.Thread(target=self.kiosk.run, name="kiosk-under-test", daemon=True)


def tune_config(path: Path, **broker: object) -> Path:
    """Rewrite [broker] keys of a write_kiosk_config file (e.g. keepalive_s=2)."""
    lines = path.read_text().splitlines()
    out, in_broker = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if in_broker:
                out += [f"{k} = {v!r}" for k, v in broker.items()]
                broker = {}
            in_broker = stripped == "[broker]"
        key = stripped.split("=")[0].strip()
        if in_broker and key in broker:
            continue
        out.append(line)
    path.write_text("\n".join(out) + "\n")
    return path


def state_dir(config_dir: Path, device_id: str) -> Path:
    return config_dir / f"state-{device_id}"


def pending_ids(outbox_path: Path) -> list[str]:
    box = Outbox(outbox_path)
    try:
        return [d.alert_id for d in box.pending()]
    finally:
        box.close()


class SimProcess:
    """`python -m pinkbutton.simulator.cli run --json` as a real process; its JSON lines are
    collected by a reader thread into `events` (a Recorder)."""

    def __init__(self, config: Path, *args: str, preexec_fn=None, media: bool = False) -> None:
        """With `media`, the simulated camera (drawn capture times) and microphone run."""
        self.events = Recorder()
        self.stderr_path = config.parent / f"sim-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pinkbutton.simulator.cli",
                "run",
                "--config",
                str(config),
                "--json",
                *(() if media else ("--no-media",)),
                "--log-level",
                "info",
                *args,
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            preexec_fn=preexec_fn,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # e.g. the interactive banner; not an event
            kind = obj.pop("event", None)
            if kind:
                self.events(kind, obj)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.wait(5)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(2)
            self._stderr.close()
        return rc

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(5)


def limit_file_size(max_bytes: int) -> Callable[[], None]:
    """preexec_fn: files of the child cannot grow past max_bytes (EFBIG, not SIGXFSZ)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "256k") -> Iterator[bool]:
    """Mount a tmpfs of `size` on `directory`; yields False (nothing mounted) when this
    machine does not allow it (not root, no CAP_SYS_ADMIN)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
            capture_output=True,
            timeout=10,
        )
        mounted = done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=10)


def fill_disk(directory: Path) -> int:
    """Write filler files until the file system holding `directory` is full."""
    written = 0
    for name, chunk in (("filler", b"\0" * 4096), ("filler2", b"\0" * 64)):
        f = open(directory / name, "wb")  # noqa: SIM115 - closing may itself fail
        try:
            while True:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                f.close()
    return written
