"""The console's doors: login for every page and the WebSocket, passwords, roles, CSRF,
the audit log, and device-supplied text that must stay text (real chromium, real SQLite)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.browser import PASSWORD, Officer, chromium, console  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(90)

XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def stored_incident(db, site_name: str = "Old Bazaar", *, escalated: bool = False,
                    problems: tuple[str, ...] = ()) -> str:
    """An incident as the receiver stores it from a kiosk's alert (device text included)."""
    now = time.time()
    alert = p.Alert(device_id="pb-test-0001", alert_id=str(uuid.uuid4()), seq=1,
                    kind="emergency", pressed_at=iso8601(now - 1), pressed_mono=1.0,
                    age_ms=1000, announce=2 if escalated else 1, escalated=escalated,
                    presses=1, site=p.Site("site-1", site_name, 34.0, 71.5), firmware="0.1.0",
                    sent_at=iso8601(now))
    store = IncidentStore(db)
    try:
        store.record_alert(alert, iso8601(now), 1000.0, None, problems)
    finally:
        store.close()
    return alert.alert_id


def websocket_opens(page, url: str) -> bool:
    """Does a WebSocket from this page's origin (with its cookies) open?"""
    return page.evaluate("""(url) => new Promise((done) => {
        const ws = new WebSocket(url);
        ws.onopen = () => { ws.close(); done(true); };
        ws.onerror = () => done(false);
        ws.onclose = () => done(false);
    })""", url)


def test_every_page_action_download_and_the_websocket_need_a_login(tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    alert_id = stored_incident(db)
    c = console(db=db)
    c.add_user("op")
    anon = Officer(chromium, c)
    req = anon.context.request
    for path in ("/", f"/incident/{alert_id}", "/admin/users"):
        r = req.get(c.url + path, max_redirects=0)
        assert (r.status, r.headers.get("location")) == (303, "/login"), path
    for path in ("/api/queue", f"/incident/{alert_id}/evidence/x.mp4"):
        assert req.get(c.url + path, max_redirects=0).status == 401, path
    for verb in ("ack", "dispatch", "extend", "end"):
        assert req.post(f"{c.url}/incident/{alert_id}/{verb}", form={"csrf": "x"},
                        max_redirects=0).status == 401, verb
    anon.page.goto(c.url + "/login")
    assert not websocket_opens(anon.page, c.ws_url)
    assert "Old Bazaar" not in anon.page.content()

    anon.login("op")  # the same browser, logged in: now everything opens
    anon.page.wait_for_selector("#queue-body tr")
    assert websocket_opens(anon.page, c.ws_url)
    assert req.get(c.url + "/api/queue").status == 200
    assert anon.foreign_requests() == []
    anon.close()


def test_wrong_password_and_unknown_user_are_refused_and_audited(tmp_path, chromium, console):  # noqa: F811
    c = console(db=tmp_path / "room.db")
    c.add_user("op")
    officer = Officer(chromium, c)
    for user, password in (("op", "not the password"), ("nobody", PASSWORD)):
        page = officer.login(user, password)
        assert page.inner_text("#login-error") == "wrong user name or password"
        assert page.url.endswith("/login")
        assert not any(k["name"] == "pb_session" for k in officer.context.cookies())
    r = officer.context.request.post(c.url + "/login", form={"user": "op", "password": PASSWORD},
                                     max_redirects=0)
    assert r.status == 403  # no login-form token: a forged cross-site login
    page = officer.login("op")
    page.wait_for_selector("#queue")
    cookie = next(k for k in officer.context.cookies() if k["name"] == "pb_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    failed = [(r["user"], r["action"]) for r in c.audit()]
    assert failed == [("op", "login_failed"), ("nobody", "login_failed"), ("op", "login")]
    officer.close()


def test_operator_gets_403_on_admin_actions_and_an_admin_may(tmp_path, chromium, console):  # noqa: F811
    c = console(db=tmp_path / "room.db")
    c.add_user("op")
    c.add_user("boss", "admin")
    operator = Officer(chromium, c)
    page = operator.login("op")
    page.wait_for_selector("#queue")
    assert page.query_selector("a[href='/admin/users']") is None
    csrf = page.get_attribute("input[name=csrf]", "value")
    assert page.goto(c.url + "/admin/users").status == 403
    r = operator.context.request.post(c.url + "/admin/users", max_redirects=0, form={
        "csrf": csrf, "user": "mallory", "role": "admin", "password": PASSWORD})
    assert r.status == 403
    assert "mallory" not in [u.name for u in c.accounts.users()]
    operator.close()

    admin = Officer(chromium, c)
    page = admin.login("boss")
    page.click("a[href='/admin/users']")
    page.fill("input[name=user]", "sup-1")
    page.select_option("select[name=role]", "supervisor")
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/admin/users'] button")
    page.wait_for_selector("#users td:text('sup-1')")
    assert ("sup-1", "supervisor") in [(u.name, u.role) for u in c.accounts.users()]
    actions = [(r["user"], r["action"]) for r in c.audit()]
    assert ("op", "forbidden") in actions and ("boss", "user_add") in actions
    admin.close()


def test_post_without_the_csrf_token_is_refused(tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    alert_id = stored_incident(db)
    c = console(db=db)
    c.add_user("op")
    officer = Officer(chromium, c)
    page = officer.login("op")
    page.goto(f"{c.url}/incident/{alert_id}")
    csrf = page.get_attribute("input[name=csrf]", "value")
    assert csrf
    url = f"{c.url}/incident/{alert_id}/ack"
    req = officer.context.request  # carries the session cookie
    assert req.post(url, form={}, max_redirects=0).status == 403
    assert req.post(url, form={"csrf": "forged"}, max_redirects=0).status == 403
    assert req.post(c.url + "/logout", form={}, max_redirects=0).status == 403
    store = IncidentStore(db)
    try:
        assert store.commands_of(alert_id) == []
        assert req.post(url, form={"csrf": csrf}, max_redirects=0).status == 303
        assert [x["verb"] for x in store.commands_of(alert_id)] == ["ack"]
    finally:
        store.close()
    officer.close()


def test_device_text_renders_as_text_never_as_markup(tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    alert_id = stored_incident(db, XSS, problems=(f"site.name {XSS}",))
    c = console(db=db)
    c.add_user("op")
    officer = Officer(chromium, c)
    page = officer.login("op")
    row = page.wait_for_selector("#queue-body tr")
    assert XSS in row.inner_text()  # pushed as JSON, set with textContent
    assert page.query_selector("#queue-body script, #queue-body img") is None
    page.click("#queue-body tr a")
    page.wait_for_selector("#timeline li.tl-viewed")
    assert page.inner_text("#site-name") == XSS  # rendered by the template
    assert XSS in page.inner_text("#problems")
    assert XSS in page.inner_text("#timeline")  # re-rendered by the script from the push
    assert page.query_selector("main script, main img") is None
    assert officer.dialogs == [], "a device's site name ran as script"
    officer.close()
    assert alert_id


def test_escalated_alert_shows_on_the_supervisors_screen(tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    stored_incident(db, "Quiet Corner")
    stored_incident(db, "Night Market", escalated=True)
    c = console(db=db)
    c.add_user("op")
    c.add_user("sup", "supervisor")
    supervisor = Officer(chromium, c)
    page = supervisor.login("sup")
    page.wait_for_selector("#escalated-list li")
    assert [li.inner_text().split(" (")[0] for li in page.query_selector_all(
        "#escalated-list li")] == ["Night Market"]
    assert "alarm" in (page.get_attribute("#supervisor", "class") or "")
    escalated = page.query_selector_all("#queue-body tr.escalated")
    assert len(escalated) == 1 and "ESCALATED" in escalated[0].inner_text()
    supervisor.close()
    operator = Officer(chromium, c)
    page = operator.login("op")
    page.wait_for_selector("#queue-body tr.escalated")  # marked for the operator too
    assert page.query_selector("#supervisor") is None
    operator.close()


def test_evidence_files_with_their_sha256_download_and_the_download_is_audited(
        tmp_path, chromium, console):  # noqa: F811
    import hashlib

    db, evidence = tmp_path / "room.db", tmp_path / "evidence"
    alert_id, other = stored_incident(db), stored_incident(db, "Elsewhere")
    evidence.mkdir()
    base = f"pb-test-0001-{alert_id}"  # as the receiver and backfill name them
    complete = b"\x00\x00\x00\x18ftypiso6 complete evidence"
    (evidence / f"{base}.mp4").write_bytes(b"\x00\x00\x00\x18ftypiso6 live")
    (evidence / f"{base}.complete.mp4").write_bytes(complete)
    digest = hashlib.sha256(complete).hexdigest()
    (evidence / f"{base}.complete.json").write_text(json.dumps(
        {"alert_id": alert_id, "file": f"{base}.complete.mp4", "sha256": digest}))
    (evidence / f"pb-test-0001-{other}.mp4").write_bytes(b"another incident")
    c = console(db=db, evidence_dir=evidence)
    c.add_user("op")
    officer = Officer(chromium, c)
    page = officer.login("op")
    page.goto(f"{c.url}/incident/{alert_id}")
    rows = [[td.inner_text() for td in r.query_selector_all("td")]
            for r in page.query_selector_all("#evidence tbody tr")]
    assert [r[0] for r in rows] == [f"{base}.complete.json", f"{base}.complete.mp4",
                                                 f"{base}.mp4"]
    assert rows[1][3] == digest and rows[0][3] == rows[2][3] == ""
    link = page.get_attribute(f"#evidence a:text('{base}.complete.mp4')", "href")
    got = officer.context.request.get(c.url + link)
    assert got.status == 200 and got.body() == complete
    assert "attachment" in got.headers["content-disposition"]
    req = officer.context.request
    for name in (f"pb-test-0001-{other}.mp4", "..%2Froom.db", "room.db"):
        assert req.get(f"{c.url}/incident/{alert_id}/evidence/{name}").status == 404, name
    assert [(r["user"], r["alert_id"], r["detail"]) for r in c.audit("evidence_download")] == [
        ("op", alert_id, {"file": f"{base}.complete.mp4"})]
    officer.screenshot("evidence")
    officer.close()


def test_two_officers_see_the_same_incident_state(tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    alert_id = stored_incident(db, "Shared Square")
    c = console(db=db)
    c.add_user("ana")
    c.add_user("ben")
    ana, ben = Officer(chromium, c), Officer(chromium, c)
    ben_page = ben.login("ben")
    row = ben_page.wait_for_selector(f"#queue-body tr[data-alert-id='{alert_id}']")
    assert "not taken" in row.inner_text()
    ana_page = ana.login("ana")
    ana_page.click(f"#queue-body tr[data-alert-id='{alert_id}'] a")  # ana takes it
    ana_page.wait_for_selector("#timeline li.tl-viewed")
    ben_page.wait_for_selector(f"#queue-body tr.taken[data-alert-id='{alert_id}']",
                               timeout=10_000)  # pushed to ben's queue from the store
    assert "taken by ana" in ben_page.inner_text(f"#queue-body tr[data-alert-id='{alert_id}']")
    ana.close()
    ben.close()


def test_websocket_from_another_origin_is_refused_even_with_a_session(tmp_path, console):  # noqa: F811
    import ssl

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    c = console(db=tmp_path / "room.db")
    c.add_user("op")
    token = c.accounts.new_session("op")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    cookie = {"Cookie": f"pb_session={token}"}
    own = c.url  # the console's own origin: accepted
    with connect(c.ws_url, ssl=ctx, additional_headers=cookie | {"Origin": own},
                 open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "queue"
    for headers in (cookie | {"Origin": "https://evil.example"}, {"Origin": own}):
        with pytest.raises(InvalidStatus):
            connect(c.ws_url, ssl=ctx, additional_headers=headers, open_timeout=10)
