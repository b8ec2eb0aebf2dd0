"""Fleet files (simulator/fleetfile.py), `pinkbutton-pki fleet`, the shipped fleets and the
flaky link: no broker needed. End to end: tests/test_sim_fleet_e2e.py."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pinkbutton.firmware.config import ConfigError
from pinkbutton.simulator.flakylink import FlakyLink
from pinkbutton.simulator.fleetfile import KINDS, load_fleet, parse_fleet
from pinkbutton.tools import pki

from tests.helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
PESHAWAR = ROOT / "examples" / "fleets" / "peshawar.toml"
CAMPUS = ROOT / "examples" / "fleets" / "campus.toml"

HEAD = """
[fleet]
name = "Test town"
device_prefix = "pb-t-"
pki = "pki"
state_dir = "state"
broker = "localhost:8883"
"""


def site(sid: str = "bazaar", kind: str = "market", lat: float = 34.0, lon: float = 71.5,
         extra: str = "") -> str:
    return (f'\n[[site]]\nid = "{sid}"\nname = "Site {sid}"\nkind = "{kind}"\n'
            f"lat = {lat}\nlon = {lon}\n{extra}")


def sim_fleet(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinkbutton.simulator.cli", "fleet", str(path),
                           "--exit-after", "0", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("body, words", [
    (site(kind="mall"), ["site 1 (bazaar)", "kind", "market, bus_stand", "'mall'"]),
    (site("a") + site("b") + site("a"), ["site 3 (a)", "id", "already site 1"]),
    (site(lat=91.5), ["site 1 (bazaar)", "lat", "between -90 and 90", "91.5"]),
    (site(lon=-181), ["lon", "between -180 and 180"]),
    (site(extra="quirks.laser_shark = true\n"), ["quirks", "unknown quirk 'laser_shark'",
                                                 "camera_covered"]),
    (site(extra="quirks.flaky_link = { loss = 1.5 }\n"), ["flaky_link loss", "between 0 and 0.9"]),
    (site(extra="colour = 'pink'\n"), ["site 1", "unknown key 'colour'"]),
    (site(sid="Qissa Khwani"), ["site 1 (Qissa Khwani)", "id", "a-z, 0-9"]),
    ("", ["no sites"]),
    (site() + "\n[kiosk.health]\ninterval_s = -1\n", ["[health] interval_s", "between"]),
    (site() + "\n[kiosk.broker]\nhost = 'evil'\n", ["[kiosk.broker] host", "set by the fleet"]),
    (site() + "\n[kiosk.device]\nid = 'x'\n", ["[kiosk.device]"]),
])
def test_bad_fleet_file_is_one_line_exit_2(tmp_path, body, words):
    bad = tmp_path / "bad.toml"
    bad.write_text(HEAD + body)
    assert_one_line_error(sim_fleet(bad), "bad.toml", *words)


def test_missing_fleet_section_and_bad_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(site())
    assert_one_line_error(sim_fleet(bad), "bad.toml", "missing [fleet]")
    bad.write_text("[fleet\n")
    assert_one_line_error(sim_fleet(bad), "bad.toml", "invalid TOML")
    assert_one_line_error(sim_fleet(tmp_path / "nowhere.toml"), "nowhere.toml", "cannot read")


def test_missing_certificates_say_how_to_make_them(tmp_path):
    good = tmp_path / "fleet.toml"
    good.write_text(HEAD + site())
    line = assert_one_line_error(sim_fleet(good), "fleet.toml", "site 1 (bazaar)")
    assert f"pinkbutton-pki fleet {good}" in line


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lat=st.floats(allow_nan=True, allow_infinity=True), kind=st.sampled_from([*KINDS, "zoo"]))
def test_any_latitude_and_kind_is_accepted_exactly_when_valid(lat, kind):
    import tomllib

    data = tomllib.loads(HEAD + site(kind=kind, lat=0.0))
    data["site"][0]["lat"] = lat
    valid = -90 <= lat <= 90 and kind in KINDS
    try:
        fleet = parse_fleet(data, Path("/nowhere/f.toml"), check_certificates=False)
    except ConfigError as e:
        assert not valid
        assert "\n" not in str(e) and ("lat" in str(e) or "kind" in str(e))
    else:
        assert valid and fleet.sites[0].config.device.lat == lat


def test_a_site_becomes_a_kiosk_config_with_fleet_media_defaults(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text(HEAD + "media = false\n" + site("plain") + site(
        "cam", extra="quirks.camera_covered = true\nquirks.stuck_button = true\n")
        + site("full", extra="media = true\n") + "\n[kiosk.health]\ninterval_s = 2.5\n")
    fleet = load_fleet(f, check_certificates=False)
    plain, cam, full = fleet.sites
    assert plain.device_id == "pb-t-plain" and plain.config.device.site_id == "plain"
    assert plain.config.broker.cert == tmp_path / "pki" / "devices" / "pb-t-plain.pem"
    assert plain.config.device.state_dir == tmp_path / "state" / "pb-t-plain"
    assert plain.config.health.interval_s == 2.5 and plain.config.hal.backend == "fake"
    assert (plain.config.media.video, plain.config.media.audio) == (False, False)
    # a covered camera needs a camera: video on, at the fleet's small size
    assert cam.config.media.video and not cam.config.media.audio
    assert (cam.config.media.width, cam.config.media.height, cam.config.media.fps) == (160, 120, 5)
    assert cam.quirks.camera_mode == "covered" and cam.quirks.stuck_button
    assert full.config.media.video and full.config.media.audio
    assert fleet.find("pb-t-cam") is cam and fleet.find("cam") is cam and fleet.find("x") is None


def test_shipped_peshawar_fleet_has_68_plausible_sites():
    fleet = load_fleet(PESHAWAR, check_certificates=False)
    assert len(fleet.sites) == 68
    assert {s.kind for s in fleet.sites} == set(KINDS)
    names = " ".join(s.name for s in fleet.sites)
    for place in ("Qissa Khwani", "Saddar", "Jinnah Park", "Wazir Bagh", "Girls",
                  "University of Peshawar", "Bus"):
        assert place in names, place
    for s in fleet.sites:  # in and around Peshawar
        assert 33.9 < s.lat < 34.1 and 71.4 < s.lon < 71.7, s.id
    quirky = {s.id: s.quirks for s in fleet.sites if s.quirks.names()}
    assert any(q.camera_covered for q in quirky.values())
    assert any(q.stuck_button for q in quirky.values())
    assert any(q.flaky_link for q in quirky.values())
    assert any(q.slow_disk_ms for q in quirky.values())
    # idle at a modest CPU: only the sites whose quirk needs a camera encode video
    assert sum(s.config.media.video or s.config.media.audio for s in fleet.sites) <= 4
    assert len(load_fleet(CAMPUS, check_certificates=False).sites) >= 5


@pytest.mark.parametrize("fleet_file", [PESHAWAR, CAMPUS])
def test_pki_reads_the_same_device_ids_as_the_simulator(fleet_file):
    ids, pki_dir = pki.fleet_device_ids(fleet_file)
    fleet = load_fleet(fleet_file, check_certificates=False)
    assert ids == [s.device_id for s in fleet.sites]
    assert pki_dir is not None and pki_dir.resolve() == fleet.pki.resolve()


def pki_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinkbutton.tools.pki", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_pki_fleet_issues_every_device_once_then_keeps_them(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text(HEAD + site("a") + site("b") + site("c"))
    first = pki_cli("fleet", str(f))
    assert first.returncode == 0, first.stderr
    assert "3 device certificate(s)" in first.stdout and "3 issued, 0 kept" in first.stdout
    devices = tmp_path / "pki" / "devices"
    before = {p.name: p.read_bytes() for p in devices.iterdir()}
    assert set(before) >= {"pb-t-a.pem", "pb-t-a.key", "pb-t-c.pem"}
    assert (devices / "pb-t-a.key").stat().st_mode & 0o777 == 0o600
    second = pki_cli("fleet", str(f))
    assert "0 issued, 3 kept" in second.stdout, second.stdout
    assert {p.name: p.read_bytes() for p in devices.iterdir()} == before
    # the simulator accepts what it made (certificates checked)
    assert len(load_fleet(f).sites) == 3


def test_pki_fleet_reissues_an_expiring_or_foreign_certificate(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text(HEAD + site("a") + site("b"))
    pki.issue_fleet(f)
    directory = tmp_path / "pki"
    # a: expires in 10 days; b: signed by another CA
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    pki.issue(directory, "pb-t-a", kind="client", out_dir=directory / "devices",
              not_after=soon, force=True)
    other = tmp_path / "other"
    pki.init_ca(other)
    pki.issue(other, "pb-t-b", kind="client", out_dir=directory / "devices", force=True)
    done = pki.issue_fleet(f)
    assert sorted(done.issued) == ["pb-t-a", "pb-t-b"] and done.kept == []
    assert pki.issue_fleet(f).kept == ["pb-t-a", "pb-t-b"]


def test_pki_fleet_bad_file_is_one_line_exit_2(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text(HEAD + site("a") + site("a"))
    assert_one_line_error(pki_cli("fleet", str(f)), "f.toml", "already site 1")
    f.write_text(HEAD + site("UPPER"))
    assert_one_line_error(pki_cli("fleet", str(f)), "f.toml", "site 1", "invalid device id")
    assert_one_line_error(pki_cli("fleet", str(tmp_path / "none.toml")), "none.toml")


def _echo_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_flaky_link_adds_latency_each_way_and_holds_lost_chunks_in_order():
    server, port = _echo_server()
    link = FlakyLink(("127.0.0.1", port), latency_ms=100, loss=0.0).start()
    try:
        with socket.create_connection(("127.0.0.1", link.port), timeout=10) as c:
            t0 = time.monotonic()
            c.sendall(b"ping")
            assert c.recv(16) == b"ping"
            assert time.monotonic() - t0 >= 0.2  # 100 ms there, 100 ms back
    finally:
        link.close()
        server.close()
    server, port = _echo_server()
    link = FlakyLink(("127.0.0.1", port), latency_ms=0, loss=0.5, seed=1).start()
    try:
        with socket.create_connection(("127.0.0.1", link.port), timeout=10) as c:
            got = b""
            for i in range(20):
                c.sendall(b"%02d" % i)
                time.sleep(0.01)
            while len(got) < 40:
                got += c.recv(64)
        assert got == b"".join(b"%02d" % i for i in range(20))  # nothing lost, order kept
        assert link.held > 0
    finally:
        link.close()
        server.close()


def _view_site(tmp_path, name: str = "Site [bold]x[/bold]"):
    f = tmp_path / "f.toml"
    f.write_text(HEAD + f'\n[[site]]\nid = "a"\nname = "{name}"\nkind = "park"\nlat = 1\nlon = 2\n')
    return load_fleet(f, check_certificates=False).sites[0]


def test_text_from_the_room_is_shown_escaped_on_the_fleets_lines(tmp_path):
    from pinkbutton.simulator.fleet import DeviceView

    said: list[str] = []
    view = DeviceView(_view_site(tmp_path), lambda _v, text: said.append(text))
    view("cmd", {"cmd": "ack", "alert_id": "0000abcd-1", "operator": "evil\x1b[2J\u202eofficer"})
    view("disconnected", {"reason": "bye\r\nFAKE LINE"})
    assert said and all("\x1b" not in t and "\u202e" not in t and "\n" not in t for t in said)
    assert "evil\\x1b[2J\\u202eofficer" in said[0]
    assert view.last == said[-1]


def test_the_table_shows_site_text_literally_not_as_markup(tmp_path):
    from pinkbutton.simulator.fleet import FleetRunner
    from pinkbutton.simulator.fleettable import render
    from rich.console import Console

    f = tmp_path / "f.toml"
    f.write_text(HEAD + site("a") + site("b", extra='quirks.stuck_button = true\n'))
    runner = FleetRunner(load_fleet(f, check_certificates=False), sys.stdout, lines=False)
    from pinkbutton.simulator.fleet import DeviceView

    for s in runner.fleet.sites:
        runner.views[s.id] = DeviceView(s, lambda _v, _t: None)
    runner.views["a"].last = "ack by [bold red]officer[/]"
    runner.views["b"].faults = ("button_stuck",)
    runner.views["a"].online = runner.views["b"].online = True
    console = Console(record=True, width=200, color_system=None)
    console.print(render(runner, height=40))
    text = console.export_text()
    assert "ack by [bold red]officer[/]" in text
    assert "Test town: 2 devices  2 online" in text
    # a device with a fault comes before a quiet one
    assert text.index("button_stuck") < text.index("ack by")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_press_that_never_reached_a_broker_exits_1_and_stays_in_the_outbox(tmp_path, workers):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]  # bound, never listening: every connect is refused
    f = tmp_path / "f.toml"
    f.write_text(HEAD + site("a") + site("b"))
    pki.issue_fleet(f)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pinkbutton.simulator.cli", "fleet", str(f),
         "--broker", f"127.0.0.1:{port}", "--exit-after", "120", "--workers", workers],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("press a\n")
        proc.stdin.flush()
        out = []
        for line in proc.stdout:  # bounded by --exit-after and the timeout below
            out.append(line)
            if line.startswith("a  pb-t-a  alert") and "written to the outbox" in line:
                break
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert any("written to the outbox" in line for line in out), out
    assert proc.returncode == 1, stderr
    assert "1 alert(s) not delivered before exit (kept in the outboxes)" in stderr
    assert "Traceback" not in stderr
    assert (tmp_path / "state" / "pb-t-a" / "outbox.db").exists()


def test_bad_overrides_are_one_line_exit_2_naming_the_option(tmp_path):
    f = tmp_path / "f.toml"
    f.write_text(HEAD + site("a"))
    pki.issue_fleet(f)
    assert_one_line_error(sim_fleet(f, "--broker", "nonsense"), "--broker", "'nonsense'")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(sim_fleet(f, "--state-dir", str(blocker / "state")), "f.toml",
                          "state_dir", "cannot make")


def test_a_worker_whose_parent_is_gone_stops(tmp_path):
    """A worker of --workers N reads its commands from the parent: the end of them (the parent
    died) stops it, so no kiosk runs on orphaned."""
    f = tmp_path / "f.toml"
    f.write_text(HEAD + site("a"))
    pki.issue_fleet(f)
    proc = subprocess.run(
        [sys.executable, "-m", "pinkbutton.simulator.cli", "fleet", str(f),
         "--broker", "127.0.0.1:9", "--worker-of", "a"],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == '{"undelivered": 0}'
