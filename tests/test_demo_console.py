"""`make demo` (harness/demo.py) with the web console, end to end: the real demo in a process
of its own (dev PKI, mosquitto, `pinkbutton-controlroom serve`, a simulated kiosk) prints the
console's URL and a login; Debian's chromium (Playwright) logs in with exactly what it printed
and sees the demo's incident in the queue. With `--hold` everything stays up until Ctrl-C
(SIGINT), then stops with the demo's exit code. The README's quick start shows the same lines.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.browser import (
    chromium,  # noqa: F401 - the module's browser fixture
    wait_js,
)

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"^    console: (https://127\.0\.0\.1:\d+/)  \(HTTPS, certificate from")
LOGIN_LINE = re.compile(r"^    login:   (\S+) / (\S+)  \(role (\w+); a new password every run\)$")
DEMO_TIMEOUT_S = 90.0  # the demo's own run is ~15 s on an idle machine


class Demo:
    """`python -m harness.demo --hold --dir DIR`, its output collected by a reader thread."""

    def __init__(self, work: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "harness.demo", "--hold", "--dir", str(work)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, cwd=ROOT, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not any(line.startswith(text) for line in self.lines):
            assert self.p.poll() is None, "the demo exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < end, f"no {text!r} within {timeout} s:\n" + "\n".join(
                self.lines)
            time.sleep(0.1)

    def match(self, pattern: re.Pattern) -> re.Match:
        found = [m for m in map(pattern.match, self.lines) if m]
        assert found, f"no line like {pattern.pattern!r}:\n" + "\n".join(self.lines)
        return found[0]

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        try:
            return self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            raise


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("demo"))
    try:
        d.wait_for("holding:", DEMO_TIMEOUT_S)
        yield d
    finally:
        d.stop()


def test_the_demo_prints_a_console_url_and_a_login_that_works(demo, chromium):  # noqa: F811
    url = demo.match(URL_LINE).group(1)
    user, password, role = demo.match(LOGIN_LINE).groups()
    assert role == "admin" and len(password) >= 12
    assert "demo: ok" in "\n".join(demo.lines)  # the press, the ack, the evidence, as before
    alert_id = demo.match(re.compile(r"^    alert (\S+)$")).group(1)
    context = chromium.new_context(ignore_https_errors=True)  # the demo's own CA
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        page.goto(url + "login")
        page.fill("input[name=user]", user)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(url)  # the queue, not the login form again
        assert page.query_selector("#queue-body") is not None
        # The demo's incident (ended from the room's side once the press was answered).
        page.goto(url + "incident/" + alert_id)
        wait_js(page, "() => document.getElementById('status').textContent === 'ended'",
                timeout=20)
        assert "Qissa Khwani Bazaar" in page.content()
        # A wrong password is refused: the printed one is what logs in.
        other = context.browser.new_context(ignore_https_errors=True) if context.browser else None
        assert other is not None
        try:
            wrong = other.new_page()
            wrong.goto(url + "login")
            wrong.fill("input[name=user]", user)
            wrong.fill("input[name=password]", password + "x")
            wrong.click("button[type=submit]")
            assert "wrong user name or password" in wrong.content()
        finally:
            other.close()
    finally:
        context.close()


def test_hold_keeps_it_up_until_ctrl_c_then_stops_everything(demo):
    url = demo.match(URL_LINE).group(1)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    time.sleep(1.0)
    assert demo.p.poll() is None, "--hold returned by itself"
    assert demo.stop() == 0
    assert demo.lines[-1] == "demo: stopping"
    import socket

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the console is gone with the demo


def test_readme_quick_start_shows_the_lines_the_demo_prints(demo):
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "DEMO_HOLD=1" in quick
    for pattern in (URL_LINE, LOGIN_LINE):
        in_readme = [line for line in quick.splitlines() if pattern.match(line)]
        assert in_readme, f"the README's quick start has no line like {pattern.pattern!r}"
        demo.match(pattern)
