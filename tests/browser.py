"""Browser-test fixtures for the web console (Playwright driving Debian's chromium).

Import the fixtures into a test module (`from tests.browser import chromium, console  #
noqa: F401`). `console()` starts the console (HTTPS, a certificate from the test PKI) on
127.0.0.1 at an ephemeral port over a store file; `Officer` is a logged-in browser context
that records every request the page makes, so a test can assert nothing left the machine.
Screenshots go to $PINKBUTTON_SCREENSHOTS when it is set (the issue's notes use them).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.pki import issue_web

from tests.helpers import Recorder, room_tls

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # the alert chime plays without a click (an officer clicks "sound on" once)
                 "--autoplay-policy=no-user-gesture-required"]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    """One headless chromium per test module (a few seconds to start on a loaded machine)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser test skipped: no {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True, timeout=60_000)
    except Exception:
        pw.stop()
        raise
    yield browser
    browser.close()
    pw.stop()


class RunningConsole:
    """The console app served by uvicorn on a thread, HTTPS on 127.0.0.1:<ephemeral>."""

    def __init__(self, db: Path, pki_dir: Path, work: Path, evidence_dir: Path | None = None,
                 poll_s: float = 0.25, live_hub=None) -> None:
        from pinkbutton.tools.controlroom.web.accounts import Accounts
        from pinkbutton.tools.controlroom.web.app import create_app
        from pinkbutton.tools.controlroom.web.serve import ConsoleThread

        self.db = db
        cert = issue_web(pki_dir, ["127.0.0.1", "localhost"], out_dir=work)
        self.accounts = Accounts(db)  # the test's own connection (users, audit checks)
        self.app = create_app(db, evidence_dir, poll_s=poll_s, live_hub=live_hub)
        self._thread = ConsoleThread(self.app, certfile=cert.cert, keyfile=cert.key)
        self.url = self._thread.url
        self.ws_url = self.url.replace("https://", "wss://") + "/ws"

    def add_user(self, name: str, role: str = "operator", password: str = PASSWORD) -> str:
        self.accounts.add_user(name, role, password)
        return name

    def audit(self, action: str | None = None) -> list[dict]:
        rows = self.accounts.audit_rows()
        return [r for r in rows if action is None or r["action"] == action]

    def __enter__(self) -> RunningConsole:
        self._thread.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        # Let closed browsers' WebSockets finish closing first: uvicorn's shutdown trips
        # over one that is half closed (an exception on its thread, nothing worse).
        end = time.monotonic() + 3
        while self.app.console.clients and time.monotonic() < end:
            time.sleep(0.05)
        self._thread.__exit__(*exc)
        self.accounts.close()


@pytest.fixture
def console(tmp_path: Path, pki_dir: Path) -> Iterator[Callable[..., RunningConsole]]:
    """Factory: console(db=..., evidence_dir=..., live_hub=...) -> a started RunningConsole."""
    made: list[RunningConsole] = []

    def start(db: Path | None = None, evidence_dir: Path | None = None,
              live_hub=None) -> RunningConsole:
        work = tmp_path / f"console-{len(made)}"
        work.mkdir()
        c = RunningConsole(db or tmp_path / "room.db", pki_dir, work, evidence_dir,
                           live_hub=live_hub)
        made.append(c.__enter__())
        return c

    yield start
    for c in made:
        c.__exit__(None, None, None)


class Officer:
    """A browser context of its own (own cookies) on a console; records every request."""

    def __init__(self, chromium, console: RunningConsole) -> None:
        self.console = console
        self.context = chromium.new_context(ignore_https_errors=True)  # the test CA
        self.context.set_default_timeout(20_000)
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def login(self, user: str, password: str = PASSWORD):
        self.page.goto(self.console.url + "/login")
        self.page.fill("input[name=user]", user)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        return self.page

    def foreign_requests(self) -> list[str]:
        """Requests to anything but the console's own origin (must stay empty)."""
        host = re.escape(self.console.url.split("://", 1)[1])
        local = re.compile(rf"^(https|wss)://{host}(/|$)")
        return [u for u in self.requests if not local.match(u)]

    def screenshot(self, name: str) -> None:
        where = os.environ.get("PINKBUTTON_SCREENSHOTS")
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def wait_js(page, function: str, arg=None, timeout: float = 10.0):
    """Poll a JS function in the page until it returns something truthy (that value).
    Playwright's wait_for_function builds its predicate with `new Function`, which the
    console's Content-Security-Policy (no 'unsafe-eval') refuses; evaluate() is not
    affected."""
    end = time.monotonic() + timeout
    while True:
        value = page.evaluate(function, arg)
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{function} not true within {timeout} s")
        time.sleep(0.05)


class RoomThread:
    """A ControlRoomReceiver on its own thread (own client id and share group)."""

    def __init__(self, pki_dir: Path, broker, db: Path, **kw) -> None:
        self.events = Recorder()
        self.lines: list[str] = []
        self.receiver = ControlRoomReceiver(
            host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=db,
            client_id=f"room-{secrets.token_hex(4)}", group=f"room-{secrets.token_hex(4)}",
            out=self.lines.append, listeners=[self.events], **kw)
        self.thread = threading.Thread(target=self.receiver.run, daemon=True)

    def __enter__(self) -> RoomThread:
        self.thread.start()
        self.events.wait_for("connected", timeout=20)
        time.sleep(0.1)  # subscriptions acknowledged
        return self

    def __exit__(self, *exc) -> None:
        self.receiver.stop()
        self.thread.join(10)
