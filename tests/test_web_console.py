"""The web console end to end: a real kiosk (fake HAL) presses over a real mosquitto (mTLS),
a real receiver stores the incident in SQLite, the console (HTTPS) shows it in Debian's
chromium driven by Playwright, and the officer's ack/dispatch/end go back to the kiosk."""

from __future__ import annotations

import time

import pytest
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.browser import (  # noqa: F401 (fixtures)
    Officer,
    RoomThread,
    chromium,
    console,
    wait_js,
)
from tests.helpers import RunningKiosk, write_kiosk_config
from tests.test_web_auth import websocket_opens

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]


def test_press_row_then_ack_reaches_kiosk_dispatch_and_end_are_stored(
        tmp_path, pki_dir, broker, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0002")
    with RoomThread(pki_dir, broker, db, device_certs=pki_dir / "devices") as room, \
            RunningKiosk(cfg) as kiosk:
        c = console(db=db)
        c.add_user("officer-7")
        officer = Officer(chromium, c)
        page = officer.login("officer-7")
        page.wait_for_selector("#link-state.ok")
        kiosk.events.wait_for("connected")

        pressed = time.monotonic()
        kiosk.press()
        row = page.wait_for_selector("#queue-body tr", timeout=15_000)
        row_s = time.monotonic() - pressed
        assert row_s < 5, f"press -> row took {row_s:.1f} s"  # ~0.3 s on an idle machine
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        assert row.get_attribute("data-alert-id") == alert_id
        text = row.inner_text()
        for shown in ("Test Bazaar", "pb-test-0002", "emergency", "34.00000, 71.50000",
                      "verified", "WAITING", "not taken"):
            assert shown in text, (shown, text)
        assert "untaken" in (row.get_attribute("class") or "")  # flashing until taken
        wait_js(page, "() => window.pbConsole.beeps >= 1")  # the chime played
        since = page.inner_text("#queue-body tr .since")
        wait_js(page,  # time since the press ticks
                "(t) => document.querySelector('#queue-body tr .since').textContent !== t",
                since, timeout=5)
        officer.screenshot("queue")

        page.click("#queue-body tr a")  # the officer takes the alert
        page.wait_for_selector("#timeline li.tl-viewed")
        timeline = page.inner_text("#timeline")
        assert "Button pressed" in timeline and "Alert received" in timeline
        assert "Viewed by officer-7" in timeline

        page.click("#ack")
        kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming", timeout=15)
        page.wait_for_selector("#timeline li.tl-acked")
        page.fill("#unit", "Unit 7")
        page.fill("#note", "two officers on foot")
        page.click("#dispatch")
        page.wait_for_selector("#timeline li.tl-dispatched")
        assert "unit Unit 7: two officers on foot" in page.inner_text("#timeline")
        kiosk.events.wait_for("cmd", lambda d: d["cmd"] == "dispatched", timeout=15)
        page.fill("#seconds", "90")
        page.click("#extend")
        page.wait_for_selector("#timeline li.tl-extended")
        kiosk.events.wait_for("cmd", lambda d: d["cmd"] == "extend", timeout=15)
        page.select_option("#disposition", "false_alarm")
        page.click("#end")
        page.wait_for_selector("#timeline li.tl-ended")
        kiosk.events.wait_for("cmd", lambda d: d["cmd"] == "end", timeout=15)
        assert "disposition: false alarm" in page.inner_text("#timeline")
        assert "90 s more" in page.inner_text("#timeline li.tl-extended")
        assert not page.is_visible("#ack") and not page.is_visible("#extend")  # ended
        officer.screenshot("incident")
        assert room.events.of("web_command")

        page.goto(c.url + "/")  # ended: off the queue
        page.wait_for_selector("#link-state.ok")
        wait_js(page, "() => window.pbConsole.messages >= 1")
        assert page.query_selector_all("#queue-body tr") == []
        assert officer.foreign_requests() == [], "nothing may load from outside the console"
        officer.close()

    store = IncidentStore(db)
    try:
        inc = store.incident_rows("WHERE alert_id=?", (alert_id,))[0]
        whats = [w for _, w, _ in store.timeline(alert_id)]
        ended = [d for _, w, d in store.timeline(alert_id) if w == "ended"]
    finally:
        store.close()
    assert (inc["acked_by"], inc["dispatched_by"], inc["ended_by"], inc["first_viewed_by"]) == \
        ("officer-7",) * 4
    assert (inc["dispatch_unit"], inc["dispatch_note"], inc["disposition"]) == \
        ("Unit 7", "two officers on foot", "false_alarm")
    for what in ("received", "viewed", "acked", "dispatched", "extended", "ended"):
        assert what in whats, whats
    assert ended == [{"by": "officer-7", "disposition": "false_alarm"}]
    actions = [(r["user"], r["action"], r["alert_id"]) for r in c.audit()]
    for action in ("view_incident", "ack", "dispatch", "extend", "end"):
        assert ("officer-7", action, alert_id) in actions, actions
    assert ("officer-7", "login", None) in actions
    print(f"press -> row visible in the browser: {row_s * 1000:.0f} ms")


def test_the_incident_view_plays_the_kiosks_live_video_and_voice(tmp_path, pki_dir, broker,
                                                                  chromium, console):  # noqa: F811
    from pinkbutton.tools.controlroom.web.live import LiveHub

    db, evidence = tmp_path / "room.db", tmp_path / "evidence"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0003")
    cfg.write_text(cfg.read_text() + "\n[media]\npreroll_s = 1.0\n")
    hub = LiveHub()
    with RoomThread(pki_dir, broker, db, evidence_dir=evidence, viewer=hub), \
            RunningKiosk(cfg, media=True) as kiosk:
        c = console(db=db, evidence_dir=evidence, live_hub=hub)
        c.add_user("officer-7")
        officer = Officer(chromium, c)
        page = officer.login("officer-7")
        page.wait_for_selector("#link-state.ok")
        kiosk.events.wait_for("connected")
        time.sleep(1.5)  # the pre-roll fills
        kiosk.press()
        page.click("#queue-body tr a", timeout=15_000)
        page.wait_for_selector("#live-video")
        wait_js(page, "() => document.getElementById('live-video').currentTime > 2", timeout=30)
        video = page.evaluate("""() => { const v = document.getElementById('live-video');
            return {w: v.videoWidth, h: v.videoHeight, paused: v.paused,
                    mime: window.pbConsole.live.state.mime}; }""")
        assert (video["w"], video["h"], video["paused"]) == (640, 480, False), video
        assert "avc1" in video["mime"] and "opus" in video["mime"], video  # video and voice
        assert page.inner_text("#live-state") == "playing"
        officer.screenshot("incident-live")
        assert officer.foreign_requests() == []
        alert_id = page.get_attribute("body", "data-alert-id")
        live_url = f"{c.ws_url[:-3]}/live/{alert_id}"
        assert websocket_opens(page, live_url)
        officer.close()
        anon = Officer(chromium, c)  # the live view needs a login too
        anon.page.goto(c.url + "/login")
        assert not websocket_opens(anon.page, live_url)
        anon.close()
