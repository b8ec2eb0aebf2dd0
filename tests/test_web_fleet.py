"""The console's fleet page (issue 12 item 5) in Debian's chromium: one row per kiosk with
online/offline, last heartbeat, last self-test and its failing checks, certificate days left
(WARN under 30) and firmware, sortable, device text as text; a supervisor's "run self-test"
goes through the commands table to the kiosk (a covered camera fails it, end to end over the
real broker); an operator is refused (403)."""

from __future__ import annotations

import time

import pytest
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.browser import Officer, RoomThread, chromium, console, wait_js  # noqa: F401
from tests.helpers import RunningKiosk, write_kiosk_config
from tests.test_web_map import XSS, alert, heartbeat

pytestmark = pytest.mark.timeout(90)


def seeded(db) -> None:
    store = IncidentStore(db)
    now = iso8601(time.time())
    try:
        for dev, site, days in (("pb-psh-0001", "Qissa Khwani", 400), ("pb-psh-0002", XSS, 12),
                                ("pb-psh-0003", "Saddar", 200)):
            alert_id = alert(store, dev, site, 34.0, 71.5)
            store.mark(alert_id, "ended", now, "officer-1", "test")
            store.set_device(dev, True, "idle", "0.1.0", now)
            store.record_heartbeat(heartbeat(dev, cert_days_left=days,
                                             selftest_ok=dev != "pb-psh-0003"), now)
        store.record_selftest("pb-psh-0003", now, False, "camera,microphone",
                              "camera: covered or black; microphone: silent")
    finally:
        store.close()


def row_of(page, device: str):
    """The kiosk's row as a locator: every push re-renders the table, so an element handle
    would go stale; a locator finds the row again each time."""
    row = page.locator(f"#fleet-body tr[data-device-id='{device}']")
    row.wait_for()
    return row


def post_selftest(page, device: str) -> int:
    """The self-test POST with the page's own CSRF token (the logout form's)."""
    return page.evaluate("""(dev) => { const f = new FormData();
        f.append('csrf', document.querySelector('input[name=csrf]').value);
        return fetch('/fleet/' + dev + '/selftest', {method: 'POST', body: f,
                     redirect: 'manual'}).then((r) => r.status); }""", device)


def test_fleet_rows_warn_sort_and_keep_device_text_as_text(tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    seeded(db)
    c = console(db=db)
    c.add_user("op-1")
    officer = Officer(chromium, c)
    page = officer.login("op-1")
    page.goto(c.url + "/fleet")
    page.wait_for_selector("#link-state.ok")
    wait_js(page, "() => window.pbFleet.messages >= 1")
    ok, warn, failed = (row_of(page, d) for d in ("pb-psh-0001", "pb-psh-0002", "pb-psh-0003"))
    text = ok.inner_text()
    for shown in ("pb-psh-0001", "Qissa Khwani", "online", "s ago", "ok ", "0.1.0", "400 days"):
        assert shown in text, (shown, text)
    assert "WARN" not in text and "warn-row" not in (ok.get_attribute("class") or "")
    assert warn.locator("td.cert").inner_text() == "12 days WARN"
    assert "warn" in (warn.locator("td.cert").get_attribute("class") or "")
    assert warn.locator(".site").inner_text() == XSS  # text, not an element
    assert page.query_selector_all("#fleet img") == [] and officer.dialogs == []
    cell = failed.locator("td.selftest")
    assert "FAILED" in cell.inner_text() and "(camera,microphone)" in cell.inner_text()
    assert "covered or black" in cell.inner_text()
    assert "warn" in (cell.get_attribute("class") or "") and "warn-row" in (
        failed.get_attribute("class") or "")
    assert page.query_selector_all("button.selftest-button") == []  # operator: no button
    officer.screenshot("fleet")

    def order() -> list[str]:
        return page.eval_on_selector_all("#fleet-body tr", "rs => rs.map(r => r.dataset.deviceId)")

    assert order()[0] == "pb-psh-0003"  # by state, most urgent first: failing before idle
    page.click("button.sort[data-key=cert_days_left]")
    assert order() == ["pb-psh-0002", "pb-psh-0003", "pb-psh-0001"]
    page.click("button.sort[data-key=cert_days_left]")  # again: the other way
    assert order() == ["pb-psh-0001", "pb-psh-0003", "pb-psh-0002"]
    page.click("button.sort[data-key=device_id]")
    assert order() == ["pb-psh-0001", "pb-psh-0002", "pb-psh-0003"]

    # An operator cannot run a self-test, even with a valid session and CSRF token.
    assert post_selftest(page, "pb-psh-0001") == 403
    assert [r["detail"] for r in c.audit("forbidden")] == [{"path": "/fleet/pb-psh-0001/selftest"}]
    assert c.audit("selftest") == []
    store = IncidentStore(db)
    try:
        assert store.claim_commands("nobody") == []  # nothing was queued
    finally:
        store.close()
    assert officer.foreign_requests() == []
    officer.close()


@pytest.mark.broker
def test_supervisor_runs_a_selftest_that_a_covered_camera_fails(tmp_path, pki_dir, broker,
                                                                 chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    device = "pb-test-0003"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, device)
    cfg.write_text(cfg.read_text() + "\n[media]\nwidth = 320\nheight = 240\nfps = 10.0\n"
                   "\n[health]\ninterval_s = 1.0\n")
    with RoomThread(pki_dir, broker, db) as room, RunningKiosk(cfg, media=True) as kiosk:
        c = console(db=db)
        c.add_user("sup-1", "supervisor")
        officer = Officer(chromium, c)
        page = officer.login("sup-1")
        page.goto(c.url + "/fleet")
        page.wait_for_selector("#link-state.ok")
        kiosk.events.wait_for("selftest", timeout=30)  # the boot self-test: all good
        wait_js(page, """(d) => { const r = document.querySelector(`#fleet-body tr[data-device-id='${d}']`);
            return r && r.querySelector('td.selftest').textContent.startsWith('ok ')
                   && r.querySelector('td.online').textContent === 'online'; }""", device,
                timeout=30)
        row = row_of(page, device)
        text = row.inner_text()
        assert "0.1.0" in text, text  # firmware from the heartbeat
        days = int(row.locator("td.cert").inner_text().split(" days")[0])
        assert days > 30 and "WARN" not in text, text  # the test PKI's fresh certificate

        assert kiosk.camera is not None
        kiosk.camera.covered = True  # tape over the lens
        before = len(kiosk.events.of("selftest"))
        row.locator("button.selftest-button").click()
        page.wait_for_selector("#asked")
        assert device in page.inner_text("#asked")
        kiosk.events.wait_for("cmd", lambda d: d["cmd"] == "selftest", timeout=20)
        wait_js(page, """(d) => { const r = document.querySelector(`#fleet-body tr[data-device-id='${d}']`);
            return r && r.querySelector('td.selftest').textContent.startsWith('FAILED'); }""",
                device, timeout=30)
        assert len(kiosk.events.of("selftest")) > before
        cell = row_of(page, device).locator("td.selftest")
        assert "camera" in cell.inner_text() and "warn" in (cell.get_attribute("class") or "")
        officer.screenshot("fleet-selftest-failed")
        assert any("SELFTEST asked of 1 kiosk(s): " + device in ln for ln in room.lines)
        assert officer.foreign_requests() == []
        officer.close()
    audit = c.audit("selftest")
    assert [(r["user"], r["detail"]["device_id"]) for r in audit] == [("sup-1", device)]
    store = IncidentStore(db)
    try:
        done = [r for r in store._db.execute("SELECT verb, by, result FROM commands")]
    finally:
        store.close()
    assert done == [("selftest", "sup-1", "done")]
