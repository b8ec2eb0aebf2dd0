"""`pinkbutton-sim fleet FILE --workers N`: the fleet's kiosks in N worker processes.

One Python process runs its threads one at a time (the GIL): past a few hundred devices the
kiosks of one process wait for each other. So the sites are dealt round-robin to N child
processes, each an ordinary `pinkbutton-sim fleet FILE` given its share (`--worker-of`),
running `FleetRunner` and writing JSON lines (one per change of one of its devices, and its
answers to commands). This parent keeps a `DeviceView` per site from them for the same table
or lines as one process shows, and hands each typed command to the worker that owns the site.

Note on threads: one reader thread per worker replaces a view's plain values and writes a
line under one lock; commands are written to the workers' stdin from the caller's thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from typing import TextIO

from pinkbutton.firmware.diag.cli import shown
from pinkbutton.simulator.fleet import DeviceView
from pinkbutton.simulator.fleetfile import Fleet

log = logging.getLogger("pinkbutton.sim.fleet")
STOP_S = 20.0  # each worker stops its kiosks (a few seconds) before it is killed


class WorkerFleet:
    """The same face as `FleetRunner` (views, message, command, start, stop) for the table."""

    def __init__(self, fleet: Fleet, out: TextIO, *, workers: int, lines: bool = True,
                 log_level: str = "warning") -> None:
        self.fleet = fleet
        self.out = out
        self.lines = lines
        self.log_level = log_level
        self.views = {s.id: DeviceView(s, lambda _v, _t: None) for s in fleet.sites}
        n = max(1, min(workers, len(fleet.sites)))
        self.groups = [[s.id for s in fleet.sites[i::n]] for i in range(n)]
        self.owner = {sid: i for i, group in enumerate(self.groups) for sid in group}
        self.procs: list[subprocess.Popen[str]] = []
        self.message = ""
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._all_online = False
        self.failed = ""  # why a worker ended badly (killed, or an error)
        self._undelivered = 0  # alerts the workers said were not delivered when they stopped

    def start(self) -> None:
        host, port = self.fleet.broker
        for group in self.groups:
            cmd = [sys.executable, "-m", "pinkbutton.simulator.cli", "fleet",
                   str(self.fleet.path), "--pki", str(self.fleet.pki),
                   "--state-dir", str(self.fleet.state_dir), "--broker", f"{host}:{port}",
                   "--log-level", self.log_level, "--worker-of", ",".join(group)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, bufsize=1)
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(proc,), name="fleet-worker-read",
                             daemon=True).start()
            threading.Thread(target=self._logs, args=(proc,), name="fleet-worker-log",
                             daemon=True).start()

    def stop(self) -> None:
        for proc in self.procs:
            self._send(proc, "quit")
        end = time.monotonic() + STOP_S
        for proc in self.procs:
            try:
                code = proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.failed = f"worker {proc.pid} did not stop within {STOP_S:g} s (killed)"
                continue
            if code not in (0, 1):  # 1: undelivered alerts, which it said as JSON
                self.failed = f"worker {proc.pid} ended with exit code {code} (its log is above)"

    def command(self, line: str) -> bool:
        words = line.split()
        if not words:
            return True
        verb = words[0].lower()
        if verb in ("quit", "exit", "q"):
            return False
        key = words[1] if verb in ("press", "hold") and len(words) >= 2 else words[0]
        site = self.fleet.find(key)
        if site is None or (verb not in ("press", "hold") and len(words) != 1):
            answer = (f"no site {key!r} in {self.fleet.name} (a site id or device id)"
                      if site is None and len(words) <= 3
                      else "commands: SITE | press SITE | hold SITE SECONDS | quit")
            self._answer(answer)
            return True
        self._send(self.procs[self.owner[site.id]], line.strip())  # the worker answers
        return True

    def online_count(self) -> int:
        return sum(v.online for v in self.views.values())

    def undelivered(self) -> int:
        return self._undelivered

    # -- from the workers ---------------------------------------------------------------------

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if "fleet" in msg:
                self._answer(str(msg["fleet"]))
                continue
            if isinstance(msg.get("undelivered"), int):
                with self._lock:
                    self._undelivered += msg["undelivered"]
                continue
            view = self.views.get(str(msg.get("site")))
            if view is None:
                continue
            view.online = bool(msg.get("online"))
            view.mode = str(msg.get("mode"))
            view.pattern = str(msg.get("pattern"))
            view.faults = tuple(str(f) for f in msg.get("faults") or ())
            view.presses = int(msg.get("presses") or 0)
            view.last = shown(msg.get("text"))
            self._write(f"{view.site.id}  {view.site.device_id}  {view.last}")
            if view.last == "online":
                with self._lock:
                    first = not self._all_online and self.online_count() == len(self.views)
                    self._all_online = self._all_online or first
                if first:
                    self._write(f"fleet: all {len(self.views)} devices online after "
                                f"{time.monotonic() - self._started:.1f} s "
                                f"({len(self.procs)} worker processes)")

    def _logs(self, proc: subprocess.Popen[str]) -> None:
        """A worker's log lines, through this process's logging (above the table)."""
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                log.warning("worker %d: %s", proc.pid, shown(line.rstrip("\n")))

    def _answer(self, text: str) -> None:
        self.message = shown(text)
        self._write(f"fleet: {self.message}")

    def _send(self, proc: subprocess.Popen[str], line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a worker that already ended
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def _write(self, line: str) -> None:
        if not self.lines:
            return
        with self._lock:
            with contextlib.suppress(ValueError, OSError):
                print(line, file=self.out, flush=True)
