"""The console's Starlette application: login, the alert queue, the incident view, officers'
actions, evidence downloads, user management and one WebSocket that pushes changes.

State comes from the incident store (the SQLite file the receivers write), never from this
process's memory: a poller checks the database's `data_version` every `poll_s` and pushes a
fresh queue (and the open incident) to every browser when anything changed. An officer's
action is queued in the store's `commands` table; a receiver carries it out (publishes the
`cmd` to the kiosk) the way its terminal's `ack`/`end` does.

Every page, action, download and the WebSocket needs a session (pages redirect to /login,
the rest answer 401); every POST carries the session's CSRF token; user management is for
admins only (403). Device-supplied text is escaped by Jinja's autoescape and set with
textContent by the page's script; a Content-Security-Policy allows only this origin's own
scripts, styles and connections (nothing is loaded from anywhere else).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.db import db_target
from pinkbutton.tools.controlroom.store import DISPOSITIONS, IncidentStore
from pinkbutton.tools.controlroom.web import views
from pinkbutton.tools.controlroom.web.accounts import (
    MAX_PASSWORD,
    ROLES,
    AccountError,
    Accounts,
    Session,
    check_password,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

log = logging.getLogger("pinkbutton.console")

HERE = Path(__file__).parent
SESSION_COOKIE = "pb_session"
LOGIN_COOKIE = "pb_login"  # double-submit CSRF token of the login form (no session yet)
MAX_UNIT, MAX_NOTE = 100, 1000
EXTEND_RANGE = (10.0, 600.0)
SELFTEST_ROLES = ("supervisor", "admin")  # may ask a kiosk to test itself (the fleet page)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; media-src 'self' blob:; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")


class SecurityHeaders:
    """Adds the CSP and friends to every HTTP response (pure ASGI: WebSockets untouched)."""

    def __init__(self, app) -> None:
        self.app = app
        self.console: Console | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message = message | {"headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(eq=False)
class Client:
    ws: WebSocket
    token: str
    incident: str | None
    fleet: bool = False  # the map or the fleet page: also gets views.fleet()


@dataclass
class Console:
    db_path: Path | str  # a SQLite file or a postgresql:// URL
    evidence_dir: Path | None
    secure: bool
    poll_s: float
    store: IncidentStore | None = None
    accounts: Accounts | None = None
    clients: set[Client] = field(default_factory=set)
    dirty: bool = False

    @property
    def st(self) -> IncidentStore:
        assert self.store is not None  # opened by the lifespan
        return self.store

    @property
    def acc(self) -> Accounts:
        assert self.accounts is not None
        return self.accounts


def create_app(db_path: Path | str, evidence_dir: Path | None = None, *, secure: bool = True,
               poll_s: float = 0.25, live_hub=None, extra_routes: Sequence[BaseRoute] = (),
               public_report: bool = False, map_tiles: Path | None = None):
    """The ASGI app. `secure`: served over HTTPS (cookies get Secure). `live_hub`: the
    receiver's `LiveHub` (tools/controlroom/web/live.py; None: no live view, e.g. a console
    without a receiver in its process): its WebSocket `/live/{alert_id}` is served behind
    the same login, and the incident view plays it (static/live.js). `extra_routes`: routes
    of later console modules; they can use `app.state.session_of(conn)` to require a login.
    `public_report`: also serve the public accountability report without a login (web/report.py).
    `map_tiles`: a directory of z/x/y.png tiles for the map (None: the bundled outline)."""
    console = Console(db_target(db_path), Path(evidence_dir) if evidence_dir else None, secure,
                      poll_s)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)

    def render(name: str, code: int = 200, **ctx) -> HTMLResponse:
        ctx.setdefault("roles", ROLES)
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=code)

    def session_of(conn: HTTPConnection) -> Session | None:
        return console.acc.session(conn.cookies.get(SESSION_COOKIE))

    def csrf_ok(session: Session, form) -> bool:
        given = form.get("csrf")
        return isinstance(given, str) and hmac.compare_digest(given.encode(),
                                                              session.csrf.encode())

    def error(status: int, message: str, session: Session | None = None) -> HTMLResponse:
        return render("error.html", status, session=session, status=status, message=message)

    # -- login ----------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        return login_form(None)

    def login_form(message: str | None, status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        resp = render("login.html", status, login_csrf=token, message=message, session=None)
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, secure=console.secure,
                        samesite="strict", path="/login")
        return resp

    async def login(request: Request) -> Response:
        form = await request.form()
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        given = form.get("csrf")
        if not cookie or not isinstance(given, str) or not hmac.compare_digest(
                given.encode(), cookie.encode()):
            return error(403, "login form expired or forged: reload the page and log in again")
        name, password = form.get("user"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return login_form("give a user name and a password", 400)
        creds = console.acc.credentials(name)
        if creds is None:
            await run_in_threadpool(console.acc.verify, name, password)  # same cost
            ok = False
        else:
            ok = len(password) <= MAX_PASSWORD and await run_in_threadpool(
                check_password, password, *creds)
        if not ok:
            console.acc.audit(name[:64], "login_failed")
            return login_form("wrong user name or password", 401)
        token = console.acc.new_session(name)
        console.acc.audit(name, "login")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, secure=console.secure,
                        samesite="strict", path="/")
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    async def logout(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        if not csrf_ok(session, await request.form()):
            return error(403, "missing or wrong CSRF token", session)
        console.acc.end_session(request.cookies.get(SESSION_COOKIE))
        console.acc.audit(session.user, "logout")
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # -- pages ------------------------------------------------------------------------

    async def queue_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        return render("queue.html", session=session)

    async def queue_json(request: Request) -> Response:
        if session_of(request) is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        return JSONResponse(views.queue(console.st))

    async def incident_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        alert_id = request.path_params["alert_id"]
        if console.st.incident(alert_id) is None:
            return error(404, "no such incident", session)
        if console.st.viewed(alert_id, iso8601(time.time()), session.user):
            console.dirty = True
        console.acc.audit(session.user, "view_incident", alert_id)
        view = views.incident(console.st, alert_id, console.evidence_dir)
        assert view is not None  # checked above
        return render("incident.html", session=session, view=view, inc=view["incident"],
                      live=live_hub is not None, dispositions=[(d, views.DISPOSITION_LABELS[d]) for d in DISPOSITIONS])

    async def action(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        form = await request.form()
        if not csrf_ok(session, form):
            return error(403, "missing or wrong CSRF token", session)
        alert_id, verb = request.path_params["alert_id"], request.path_params["verb"]
        inc = console.st.incident(alert_id)
        if inc is None:
            return error(404, "no such incident", session)
        if inc.ended_at is not None:
            return error(409, "this incident has ended", session)
        args: dict = {}
        if verb == "dispatch":
            unit, note = str(form.get("unit") or "").strip(), str(form.get("note") or "").strip()
            if not unit or len(unit) > MAX_UNIT or len(note) > MAX_NOTE:
                return error(400, f"dispatch: a unit (1-{MAX_UNIT} characters) and a note of "
                                  f"at most {MAX_NOTE}", session)
            args = {"unit": unit, "note": note}
        elif verb == "extend":
            try:
                seconds = float(str(form.get("seconds") or "60"))
            except ValueError:
                seconds = -1.0
            if not EXTEND_RANGE[0] <= seconds <= EXTEND_RANGE[1]:
                return error(400, f"extend: {EXTEND_RANGE[0]:.0f} to {EXTEND_RANGE[1]:.0f} "
                                  "seconds", session)
            args = {"seconds": seconds}
        elif verb == "end":
            disposition = form.get("disposition")
            if disposition not in DISPOSITIONS:
                return error(400, f"end: choose a disposition ({', '.join(DISPOSITIONS)})",
                             session)
            args = {"disposition": disposition}
        elif verb != "ack":
            return error(404, "no such action", session)
        command_id = console.st.queue_command(alert_id, verb, args, session.user,
                                              iso8601(time.time()))
        console.acc.audit(session.user, verb, alert_id, args | {"command": command_id})
        console.dirty = True
        return RedirectResponse(f"/incident/{alert_id}", status_code=303)

    async def evidence_file(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        alert_id, name = request.path_params["alert_id"], request.path_params["name"]
        rows = console.st.incident_rows("WHERE alert_id=?", (alert_id,))
        files = {f["name"] for f in views.evidence(console.evidence_dir, rows[0])} if rows \
            else set()
        if name not in files or console.evidence_dir is None:
            return error(404, "no such evidence file", session)
        console.acc.audit(session.user, "evidence_download", alert_id, {"file": name})
        media = {"mp4": "video/mp4", "json": "application/json"}.get(name.rsplit(".", 1)[-1],
                                                                     "application/octet-stream")
        return FileResponse(console.evidence_dir / name, media_type=media, filename=name)

    # -- admin --------------------------------------------------------------------------

    def admin(request: Request) -> tuple[Session | None, Response | None]:
        session = session_of(request)
        if session is None:
            return None, RedirectResponse("/login", status_code=303)
        if session.role != "admin":
            console.acc.audit(session.user, "forbidden", None, {"path": request.url.path})
            return None, error(403, "only an admin can manage officers' accounts", session)
        return session, None

    async def users_page(request: Request) -> Response:
        session, refused = admin(request)
        if refused is not None:
            return refused
        return render("users.html", session=session, users=console.acc.users(), message=None)

    async def users_add(request: Request) -> Response:
        session, refused = admin(request)
        if refused is not None:
            return refused
        assert session is not None
        form = await request.form()
        if not csrf_ok(session, form):
            return error(403, "missing or wrong CSRF token", session)
        name, role = str(form.get("user") or ""), str(form.get("role") or "")
        try:
            await run_in_threadpool(console.acc.add_user, name, role,
                                    str(form.get("password") or ""))
        except AccountError as e:
            return render("users.html", 400, session=session, users=console.acc.users(),
                          message=str(e))
        console.acc.audit(session.user, "user_add", None, {"user": name, "role": role})
        return RedirectResponse("/admin/users", status_code=303)

    # -- the map and the fleet page (issue 12 items 4, 5) -----------------------------------

    async def map_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        return render("map.html", session=session, tiles=map_tiles is not None)

    async def map_tile(request: Request) -> Response:
        """z/x/y.png from --map-tiles (ints only: no path leaves the directory)."""
        if session_of(request) is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        z, x, y = (request.path_params[k] for k in ("z", "x", "y"))
        path = None if map_tiles is None else map_tiles / str(z) / str(x) / f"{y}.png"
        if path is None or not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type="image/png")

    async def fleet_page(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        return render("fleet.html", session=session, asked=request.query_params.get("asked"),
                      can_selftest=session.role in SELFTEST_ROLES)

    async def fleet_json(request: Request) -> Response:
        if session_of(request) is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        return JSONResponse(views.fleet(console.st))

    async def fleet_selftest(request: Request) -> Response:
        """A supervisor's or admin's "run self-test": a `selftest` command in the store's
        commands table (a receiver sends `cmd selftest` to the kiosk) and an audit row."""
        session = session_of(request)
        if session is None:
            return JSONResponse({"error": "log in first"}, status_code=401)
        form = await request.form()
        if not csrf_ok(session, form):
            return error(403, "missing or wrong CSRF token", session)
        device_id = request.path_params["device_id"]
        if session.role not in SELFTEST_ROLES:
            console.acc.audit(session.user, "forbidden", None, {"path": request.url.path})
            return error(403, "only a supervisor or an admin can run a kiosk's self-test",
                         session)
        if device_id not in {r.device_id for r in console.st.fleet()}:
            return error(404, "no such kiosk", session)
        command_id = console.st.queue_command("", "selftest", {"device_id": device_id},
                                              session.user, iso8601(time.time()))
        console.acc.audit(session.user, "selftest", None,
                          {"device_id": device_id, "command": command_id})
        console.dirty = True
        return RedirectResponse(f"/fleet?asked={quote(device_id)}", status_code=303)

    # -- the WebSocket ---------------------------------------------------------------------

    def ws_allowed(ws: WebSocket) -> bool:
        """A logged-in officer's browser on this console's own page (a foreign Origin is
        refused: cross-site WebSocket hijacking)."""
        origin, host = ws.headers.get("origin"), ws.headers.get("host", "")
        return session_of(ws) is not None and (origin is None
                                               or origin.split("://", 1)[-1] == host)

    async def ws_endpoint(ws: WebSocket) -> None:
        if not ws_allowed(ws):
            await ws.close(code=4401)  # before accept: the handshake is refused (HTTP 403)
            return
        await ws.accept()
        incident = ws.query_params.get("incident") or None
        client = Client(ws, ws.cookies.get(SESSION_COOKIE, ""), incident,
                        ws.query_params.get("view") == "fleet")
        console.clients.add(client)
        try:
            await push(client, views.queue(console.st))
            while True:
                await ws.receive_text()  # nothing expected; keeps the close visible
        except WebSocketDisconnect:
            pass
        finally:
            console.clients.discard(client)

    async def push(client: Client, queue: dict) -> None:
        if console.acc.session(client.token) is None:  # logged out or expired meanwhile
            console.clients.discard(client)
            with contextlib.suppress(Exception):
                await client.ws.close(code=4401)
            return
        await client.ws.send_text(json.dumps(queue))
        if client.incident:
            view = views.incident(console.st, client.incident, console.evidence_dir)
            if view is not None:
                await client.ws.send_text(json.dumps(view))
        if client.fleet:  # the map and the fleet page
            await client.ws.send_text(json.dumps(views.fleet(console.st)))

    async def poller() -> None:
        last, pushed = -1, 0.0
        while True:
            await asyncio.sleep(console.poll_s)
            try:
                version = console.st.data_version()
                if version == last and not console.dirty and time.monotonic() - pushed < 5:
                    continue
                last, console.dirty, pushed = version, False, time.monotonic()
                if not console.clients:
                    continue
                queue = views.queue(console.st)
                for client in list(console.clients):
                    try:
                        await push(client, queue)
                    except Exception:  # noqa: BLE001 - a gone browser
                        console.clients.discard(client)
            except Exception:  # noqa: BLE001 - a busy database: next turn
                log.exception("console poll failed")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        console.store = IncidentStore(console.db_path)
        console.accounts = Accounts(console.db_path)
        task = asyncio.create_task(poller())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            console.store.close()
            console.accounts.close()

    live: list[BaseRoute] = []
    if live_hub is not None:
        from pinkbutton.tools.controlroom.web.live import live_route

        live.append(live_route(live_hub, ws_allowed))
    # -- the accountability report (issue 12 item 6): tools/controlroom/web/report.py --
    from pinkbutton.tools.controlroom.web.report import report_routes

    report = report_routes(console, session_of, lambda *a: console.acc.audit(*a),
                           public=public_report)
    # -- end of the accountability report --
    routes: list[BaseRoute] = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", queue_page, methods=["GET"]),
        Route("/api/queue", queue_json, methods=["GET"]),
        Route("/incident/{alert_id}", incident_page, methods=["GET"]),
        Route("/incident/{alert_id}/evidence/{name}", evidence_file, methods=["GET"]),
        Route("/incident/{alert_id}/{verb}", action, methods=["POST"]),
        Route("/admin/users", users_page, methods=["GET"]),
        Route("/admin/users", users_add, methods=["POST"]),
        WebSocketRoute("/ws", ws_endpoint),
        # the map and the fleet page (issue 12 items 4, 5)
        Route("/map", map_page, methods=["GET"]),
        Route("/map-tiles/{z:int}/{x:int}/{y:int}.png", map_tile, methods=["GET"]),
        Route("/fleet", fleet_page, methods=["GET"]),
        Route("/api/fleet", fleet_json, methods=["GET"]),
        Route("/fleet/{device_id}/selftest", fleet_selftest, methods=["POST"]),
        *live,  # the live view's WebSocket (tools/controlroom/web/live.py), behind the login
        *report,  # the accountability report (web/report.py): /report, /report.csv, public
        *extra_routes,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    app.state.session_of = session_of
    wrapped = SecurityHeaders(app)
    wrapped.console = console  # the open WebSockets (`clients`), for tests and shutdown
    return wrapped
