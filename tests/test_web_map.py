"""The console's map (issue 12 item 4) in Debian's chromium: every kiosk a marker coloured by
its state, nothing loaded from outside the console (Leaflet and the outline are served by it),
device text stays text in the tooltip, a click opens the incident; and the incident view's
layout (video beside a big Acknowledge button on a wide screen, stacked on a narrow one)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.browser import Officer, RoomThread, chromium, console, wait_js  # noqa: F401
from tests.helpers import RunningKiosk, write_kiosk_config

pytestmark = pytest.mark.timeout(90)

XSS = "<img src=x onerror=alert(1)>"
COLOURS = {"alerting": "#e03131", "acknowledged": "#f08c00", "failing": "#7048e8",
           "offline": "#868e96", "idle": "#2f9e44"}


def heartbeat(device_id: str, *, faults: tuple[str, ...] = (), selftest_ok: bool | None = True,
              cert_days_left: int | None = 400, site: p.Site | None = None) -> p.Health:
    now = time.time()
    return p.Health(device_id=device_id, seq=1, uptime_s=60.0, interval_s=10.0, state="idle",
                    online_since=iso8601(now - 60), queue_depth=0, disk_free_mb=5000.0,
                    temperature_c=48.5, last_selftest=iso8601(now - 30),
                    selftest_ok=selftest_ok, faults=faults, firmware="0.1.0", at=iso8601(now),
                    cert_days_left=cert_days_left, **({"site": site} if site else {}))


def alert(store: IncidentStore, device_id: str, site_name: str, lat: float, lon: float) -> str:
    """An incident as the receiver stores it from the kiosk's alert."""
    now = time.time()
    a = p.Alert(device_id=device_id, alert_id=str(uuid.uuid4()), seq=1, kind="emergency",
                pressed_at=iso8601(now - 1), pressed_mono=1.0, age_ms=80, announce=1,
                escalated=False, presses=1, site=p.Site("site-" + device_id, site_name, lat, lon),
                firmware="0.1.0", sent_at=iso8601(now))
    store.record_alert(a, iso8601(now), 80.0, True)
    return a.alert_id


def seeded_fleet(db) -> dict[str, str]:
    """Five kiosks in five states, one kiosk never placed: {state: device_id}, and the
    alerting kiosk's incident as "incident". Real SQLite, as the receiver writes it."""
    store = IncidentStore(db)
    now = iso8601(time.time())
    try:
        kiosks = {"idle": "pb-psh-0001", "offline": "pb-psh-0002", "failing": "pb-psh-0003",
                  "acknowledged": "pb-psh-0004", "alerting": "pb-psh-0005"}
        for i, (st, dev) in enumerate(list(kiosks.items())):
            site = XSS if st == "alerting" else f"Bazaar {i + 1}"
            alert_id = alert(store, dev, site, 34.0 + i * 0.01, 71.55 + i * 0.01)
            store.set_device(dev, st != "offline", "idle", "0.1.0", now)
            store.record_heartbeat(heartbeat(dev, selftest_ok=st != "failing"), now)
            if st == "failing":
                store.record_selftest(dev, now, False, "camera", "covered or black")
            if st == "acknowledged":
                store.mark(alert_id, "acked", now, "officer-1")
            elif st == "alerting":
                kiosks["incident"] = alert_id
            else:
                store.mark(alert_id, "ended", now, "officer-1", "false_alarm")
        store.set_device("pb-psh-0009", True, "idle", "0.1.0", now)  # no alert: no position
        store.record_heartbeat(heartbeat("pb-psh-0009"), now)
    finally:
        store.close()
    return kiosks


def markers(page) -> dict[str, dict]:
    return page.evaluate("""() => { const out = {};
        for (const [id, m] of Object.entries(window.pbMap.markers)) {
            const e = m.getElement();
            out[id] = {cls: e.getAttribute('class'), fill: e.getAttribute('fill'),
                       state: m.pbKiosk.state}; }
        return out; }""")


def test_the_map_shows_every_kiosk_by_state_loads_nothing_from_outside_and_keeps_text_text(
        tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    kiosks = seeded_fleet(db)
    c = console(db=db)
    c.add_user("officer-1")
    officer = Officer(chromium, c)
    officer.context.set_default_timeout(30_000)
    page = officer.login("officer-1")
    page.goto(c.url + "/map")
    page.wait_for_selector("#link-state.ok")
    wait_js(page, "() => window.pbMap.messages >= 1 && window.pbMap.outline", timeout=30)
    shown = markers(page)
    assert set(shown) == {kiosks[s] for s in COLOURS}, shown  # pb-psh-0009 has no position
    for st, colour in COLOURS.items():
        m = shown[kiosks[st]]
        assert m["state"] == st and f"st-{st}" in m["cls"] and m["fill"] == colour, (st, m)
    assert "pb-psh-0009" in page.inner_text("#unplaced")

    # Device text stays text: the tooltip shows the site name as written, no <img> made.
    page.hover(f"path[data-device-id='{kiosks['alerting']}']")
    assert page.locator(".leaflet-tooltip .kiosk-tip .tip-site").inner_text() == XSS
    assert page.query_selector_all(".leaflet-tooltip img") == []
    assert officer.dialogs == []
    officer.screenshot("map")
    if os.environ.get("PINKBUTTON_SCREENSHOTS"):
        page.evaluate("() => { window.pbMap.map.setZoom(5, {animate: false}); }")
        time.sleep(0.5)
        officer.screenshot("map-region")  # the outline and the grid around the kiosks

    requests = list(officer.requests)
    assert any(u.endswith("/static/vendor/leaflet/leaflet.js") for u in requests), requests
    assert any(u.endswith("/countries-50m.geojson") for u in requests), requests
    assert officer.foreign_requests() == [], "nothing may load from outside the console"

    page.click(f"path[data-device-id='{kiosks['alerting']}']")  # opens its incident
    page.wait_for_url(f"**/incident/{kiosks['incident']}")
    page.goto(c.url + "/map")
    wait_js(page, "() => window.pbMap.messages >= 1")
    page.click(f"path[data-device-id='{kiosks['idle']}']")  # no incident: its fleet row
    page.wait_for_url(f"**/fleet#kiosk-{kiosks['idle']}")
    assert officer.dialogs == []
    assert officer.foreign_requests() == []
    officer.close()


@pytest.mark.broker
def test_a_press_turns_the_kiosks_marker_to_alerting_and_a_click_opens_the_incident(
        tmp_path, pki_dir, broker, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    device = "pb-test-0002"
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, device)
    with RoomThread(pki_dir, broker, db), RunningKiosk(cfg) as kiosk:
        c = console(db=db)
        c.add_user("officer-1")
        officer = Officer(chromium, c)
        page = officer.login("officer-1")
        page.goto(c.url + "/map")
        page.wait_for_selector("#link-state.ok")
        # Before any alert: the kiosk's heartbeat tells where it is (write_kiosk_config).
        before = wait_js(page, """(d) => { const m = window.pbMap.markers[d];
            return m && {state: m.pbKiosk.state, at: [m.getLatLng().lat, m.getLatLng().lng],
                         by: m.pbKiosk.located_by}; }""", device, timeout=30)
        assert before["at"] == [34.0, 71.5] and before["by"] == "heartbeat", before
        assert before["state"] != "alerting", before
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted", timeout=15)["alert_id"]
        wait_js(page, "(d) => { const m = window.pbMap.markers[d]; return m && "
                "m.pbKiosk.state === 'alerting'; }", device, timeout=15)
        m = markers(page)[device]
        assert "st-alerting" in m["cls"] and m["fill"] == COLOURS["alerting"], m
        officer.screenshot("map-alerting")
        page.click(f"path[data-device-id='{device}']")
        page.wait_for_url(f"**/incident/{alert_id}")
        page.wait_for_selector("#timeline li.tl-viewed")
        assert officer.foreign_requests() == []
        officer.close()


def test_map_tiles_from_the_control_rooms_own_directory_need_a_login(
        tmp_path, chromium, console):  # noqa: F811
    from pinkbutton.tools.controlroom.web.app import create_app
    from pinkbutton.tools.controlroom.web.serve import ConsoleThread

    tiles = tmp_path / "tiles"
    (tiles / "3" / "5").mkdir(parents=True)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    (tiles / "3" / "5" / "3.png").write_bytes(png)
    db = tmp_path / "room.db"
    seeded_fleet(db)
    c = console(db=db)  # for its accounts and certificate; a second app serves the tiles
    c.add_user("officer-1")
    app = create_app(db, None, secure=False, map_tiles=tiles)
    with ConsoleThread(app) as served:
        officer = Officer(chromium, c)
        req = officer.context.request
        assert req.get(served.url + "/map-tiles/3/5/3.png").status == 401  # no login
        officer.console = type("C", (), {"url": served.url})()
        page = officer.login("officer-1")
        page.wait_for_url(served.url + "/")
        got = req.get(served.url + "/map-tiles/3/5/3.png")
        assert got.status == 200 and got.body() == png
        assert req.get(served.url + "/map-tiles/3/5/4.png").status == 404
        assert req.get(served.url + "/map-tiles/3/5/..%2F..%2Fx.png").status == 404
        page.goto(served.url + "/map")
        wait_js(page, "() => window.pbMap.messages >= 1", timeout=30)
        assert page.get_attribute("body", "data-tiles") == "on"
        wait_js(page, "() => document.querySelectorAll('img.leaflet-tile').length > 0")
        host = served.url.split("://", 1)[1]
        assert [u for u in officer.requests if not u.startswith((f"http://{host}/",
                                                                 f"ws://{host}/"))] == []
        assert any("/map-tiles/" in u for u in officer.requests)
        assert not any("countries-50m" in u for u in officer.requests)  # tiles instead
        officer.close()


def boxes(page) -> dict[str, dict]:
    return page.evaluate("""() => { const r = (s) => { const b = document.querySelector(s)
            .getBoundingClientRect(); return {x: b.x, y: b.y, w: b.width, h: b.height}; };
        return {video: r('#live-player'), ack: r('#ack'), timeline: r('.timeline'),
                scroll: document.documentElement.scrollWidth,
                width: document.documentElement.clientWidth}; }""")


def test_incident_view_puts_video_beside_a_big_acknowledge_on_a_wide_screen(
        tmp_path, chromium, console):  # noqa: F811
    db = tmp_path / "room.db"
    kiosks = seeded_fleet(db)
    c = console(db=db)
    c.add_user("officer-1")
    officer = Officer(chromium, c)
    page = officer.login("officer-1")
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(f"{c.url}/incident/{kiosks['incident']}")
    page.wait_for_selector("#link-state.ok")
    b = boxes(page)
    assert b["ack"]["x"] >= b["video"]["x"] + b["video"]["w"], b  # side by side
    assert b["ack"]["y"] < b["video"]["y"] + b["video"]["h"], b
    assert b["ack"]["h"] >= 48 and b["ack"]["w"] >= 250, b  # big: cannot be missed
    assert b["timeline"]["y"] >= b["video"]["y"] + b["video"]["h"], b  # below
    officer.screenshot("incident-wide")
    page.set_viewport_size({"width": 420, "height": 900})  # a phone or a narrow window
    b = boxes(page)
    assert b["ack"]["y"] >= b["video"]["y"] + b["video"]["h"], b  # stacked
    assert b["scroll"] <= b["width"] + 1, b  # no sideways scrolling
    assert b["ack"]["w"] >= 300, b
    officer.close()


def test_serve_refuses_map_tiles_that_are_not_a_directory(tmp_path, capsys):
    from pinkbutton.tools.controlroom import cli as room_cli

    rc = room_cli.main(["serve", "--insecure-http", "--listen", "127.0.0.1:0", "--web-only",
                        "--db", str(tmp_path / "room.db"), "--pki", str(tmp_path),
                        "--map-tiles", str(tmp_path / "no-tiles")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"--map-tiles {tmp_path / 'no-tiles'}: no such directory" in err
    assert not (tmp_path / "room.db").exists()  # refused before anything was made


def test_map_and_fleet_need_a_login(tmp_path, chromium, console):  # noqa: F811
    from tests.test_web_auth import websocket_opens

    db = tmp_path / "room.db"
    seeded_fleet(db)
    c = console(db=db)
    anon = Officer(chromium, c)
    req = anon.context.request
    for path in ("/map", "/fleet"):
        r = req.get(c.url + path, max_redirects=0)
        assert (r.status, r.headers.get("location")) == (303, "/login"), path
    assert req.get(c.url + "/api/fleet").status == 401
    assert req.get(c.url + "/map-tiles/1/1/1.png").status == 401
    assert req.post(c.url + "/fleet/pb-psh-0001/selftest", form={"csrf": "x"}).status == 401
    anon.page.goto(c.url + "/login")
    assert not websocket_opens(anon.page, c.ws_url + "?view=fleet")
    anon.close()
