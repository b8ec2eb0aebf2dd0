"""`pinkbutton-sim scenario FILE` as a user runs it (a subprocess): every shipped scenario
passes on a real mosquitto, control room and fleet; a scenario written to fail exits 1 and
says which expectation failed; a bad file exits 2 with one line. The cut link
(simulator/flakylink.py) and the broker's PKI layout are checked here too."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pinkbutton.simulator import broker as sim_broker
from pinkbutton.simulator.flakylink import FlakyLink
from pinkbutton.tools import pki

from tests.helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "examples" / "scenarios").glob("*.toml"))
# setup (<= 90 s on a loaded machine) + a timeline of <= 30 s + the teardown
SCENARIO_TIMEOUT_S = 200


def scenario(path: Path, *args: str, timeout: float = SCENARIO_TIMEOUT_S):
    try:
        return subprocess.run([sys.executable, "-m", "pinkbutton.simulator.cli", "scenario",
                               str(path), *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        raise AssertionError(f"{path.name} still running after {timeout} s; output: "
                             f"{(out or '')[-3000:]}") from None


def test_the_five_scenarios_of_issue_13_ship():
    assert [p.stem for p in SHIPPED] == ["district-outage", "outage-press", "receiver-failover",
                                         "single-press", "ten-presses"]


@pytest.mark.broker
@pytest.mark.timeout(SCENARIO_TIMEOUT_S + 20)
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenario_passes(path: Path):
    proc = scenario(path, "--json")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    expects = [r for r in records if r["type"] == "expect"]
    steps = [r for r in records if r["type"] == "step"]
    summary = records[-1]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert summary["type"] == "summary" and summary["ok"], summary
    assert expects and all(r["ok"] for r in expects), expects
    assert all(r["ok"] for r in steps), steps
    assert summary["passed"] == summary["total"] == len(expects)
    # every timed expectation says how long it took, inside its window
    for r in expects:
        assert r["measured_s"] is not None and r["measured_s"] >= 0, r
    assert summary["timeline_s"] <= 30.5


FAILING = """
[scenario]
name = "impossible"
max_s = 8

[fleet]
name = "One stall"
device_prefix = "pb-scf-"

[kiosk.health]
interval_s = 1.0

[[site]]
id = "stall"
name = "A stall"
kind = "market"
lat = 34.0
lon = 71.5

[[site]]
id = "kiosk"
name = "Another stall"
kind = "market"
lat = 34.0
lon = 71.5

[[step]]
at = 0.5
action = "press stall"

[[step]]
at = 0.5
expect = "alert_received stall within 6"

[[step]]
at = 0.5
expect = "alert_received kiosk within 2"   # nobody pressed it

[[step]]
at = 1.0
action = "broker_restart"

[[step]]
at = 1.0
expect = "incidents == 2 within 4"
"""


@pytest.mark.broker
@pytest.mark.timeout(SCENARIO_TIMEOUT_S + 20)
def test_a_failed_expectation_exits_1_and_says_which(tmp_path):
    path = tmp_path / "impossible.toml"
    path.write_text(FAILING)
    proc = scenario(path)
    assert proc.returncode == 1, (proc.stdout, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("PASS") and "alert_received stall within 6" in line
               for line in lines), lines
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert any("alert_received kiosk within 2" in line and "not within 2 s: kiosk" in line
               for line in failed), lines
    assert any("incidents == 2 within 4" in line and "1 incident(s), expected 2" in line
               for line in failed), lines
    assert any(line.startswith("ok") and "broker_restart" in line and "back after" in line
               for line in lines), lines
    assert lines[-1].startswith("FAIL  impossible: 1 of 3 expectations passed"), lines[-1]
    assert "failed: alert_received kiosk within 2; incidents == 2 within 4" in lines[-1]


GOOD_HEAD = """
[scenario]
name = "t"
max_s = 10

[fleet]
name = "Town"

[[site]]
id = "a"
name = "A"
kind = "market"
lat = 34.0
lon = 71.5
"""
EXPECT = '\n[[step]]\nat = 1.0\nexpect = "alert_received a within 2"\n'


def step(text: str, at: float = 1.0, key: str = "action") -> str:
    return f'\n[[step]]\nat = {at}\n{key} = "{text}"\n'


@pytest.mark.parametrize("body, words", [
    (GOOD_HEAD + step("press b") + EXPECT, ["step 1 (at 1)", "no site or district 'b'"]),
    (GOOD_HEAD + step("explode a") + EXPECT, ["step 1", "unknown action 'explode'", "press"]),
    (GOOD_HEAD + step("alert_received a within 9.5", key="expect"),
     ["step 1", "ends at 10.5 s, after max_s 10"]),
    (GOOD_HEAD + step("alert_received a", key="expect"), ["step 1", "within SECONDS"]),
    (GOOD_HEAD + step("receiver_kill 2") + EXPECT, ["step 1", "receiver must be a number "
                                                    "from 1 to 1"]),
    (GOOD_HEAD + step("hold a forever") + EXPECT, ["the hold must be a number"]),
    (GOOD_HEAD + step("camera_cover a") + EXPECT, ["site a has no camera"]),
    (GOOD_HEAD + step("incidents = 1", key="expect"), ["incidents == N"]),
    (GOOD_HEAD + step("press a", at=11.0) + EXPECT, ["step 1 at", "between 0 and 10"]),
    (GOOD_HEAD + step("press a"), ["no expectation"]),
    (GOOD_HEAD, ["no timeline"]),
    (GOOD_HEAD + '\n[room]\nreceivers = 3\n' + EXPECT, ["[room] receivers", "1, or 2"]),
    (GOOD_HEAD + '\n[districts]\nnorth = ["a", "z"]\n' + EXPECT,
     ["[districts] north", "no site 'z'"]),
    (GOOD_HEAD + '\n[[step]]\nat = 1.0\naction = "press a"\nexpect = "no_duplicates"\n',
     ["step 1", "one of action or expect"]),
    (GOOD_HEAD.replace('max_s = 10', 'max_s = 6000') + EXPECT, ["max_s", "between 1 and 600"]),
    (GOOD_HEAD.replace('kind = "market"', 'kind = "mall"') + EXPECT, ["site 1 (a)", "kind"]),
    (GOOD_HEAD + "\n[weather]\nrain = true\n" + EXPECT, ["unknown section [weather]"]),
    ("[scenario\n", ["invalid TOML"]),
    (GOOD_HEAD.replace('[fleet]\nname = "Town"', '[fleet]\nname = "Town"\n[scenario2]'),
     ["unknown section [scenario2]"]),
])
def test_a_bad_scenario_file_is_one_line_and_exit_2(tmp_path, body, words):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    line = assert_one_line_error(scenario(path, timeout=60), *words)
    assert str(path) in line


def test_a_missing_scenario_file_is_one_line_and_exit_2(tmp_path):
    assert_one_line_error(scenario(tmp_path / "none.toml", timeout=60), "cannot read")


def test_a_scenario_may_name_a_fleet_file_and_override_its_kiosk_settings(tmp_path):
    from pinkbutton.simulator.scenariofile import load_scenario

    path = tmp_path / "campus.toml"
    path.write_text(f'[scenario]\nname = "campus"\nmax_s = 20\n'
                    f'fleet = "{ROOT / "examples" / "fleets" / "campus.toml"}"\n'
                    '[kiosk.health]\ninterval_s = 1.0\n[districts]\nnorth = ["library"]\n'
                    + step("link_down north") + EXPECT.replace(" a ", " main-gate "))
    s = load_scenario(path, pki=tmp_path / "pki", state_dir=tmp_path / "state")
    assert all(site.config.health.interval_s == 1.0 for site in s.fleet.sites)
    # the fleet file's own settings stay where the scenario does not set them
    assert all(site.config.health.camera_covered_s == 10.0 for site in s.fleet.sites)
    assert s.steps[0].sites == ("library",)
    assert s.fleet.pki == tmp_path / "pki"


def test_the_broker_module_knows_the_pki_layout_tools_pki_makes(tmp_path):
    d = tmp_path / "pki"
    assert d / sim_broker.CA_NAME == pki.ca_paths(d).cert
    for name, issued in ((sim_broker.BROKER_NAME, pki.broker_paths(d)),
                         (sim_broker.CONTROLROOM_NAME, pki.controlroom_paths(d))):
        assert sim_broker._pair(d, name) == (issued.cert, issued.key)
    assert d / sim_broker.CRL_NAME == pki.crl_path(d)


def test_a_cut_link_drops_its_connections_and_refuses_new_ones_until_restored():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    link = FlakyLink(server.getsockname()).start()
    try:
        client = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        upstream, _ = server.accept()
        client.sendall(b"ping")
        assert upstream.recv(4) == b"ping"
        link.cut()
        assert client.recv(16) == b""  # the kiosk's side is closed at once
        upstream.settimeout(5)
        assert upstream.recv(16) == b""  # and the broker's: it publishes the Last Will
        refused = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        refused.settimeout(5)
        assert refused.recv(16) == b""
        link.restore()
        again = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        upstream2, _ = server.accept()
        again.sendall(b"pong")
        assert upstream2.recv(4) == b"pong"
        for s in (client, upstream, refused, again, upstream2):
            s.close()
    finally:
        link.close()
        server.close()


def test_scenario_verb_has_help():
    proc = subprocess.run([sys.executable, "-m", "pinkbutton.simulator.cli", "scenario", "-h"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "--json" in proc.stdout and "--keep" in proc.stdout


CAMERA = """
[scenario]
name = "camera"
max_s = 20

[fleet]
name = "One camera"
device_prefix = "pb-scc-"

[kiosk.health]
interval_s = 1.0
monitor_interval_s = 0.2
camera_covered_s = 1.0

[[site]]
id = "gate"
name = "Gate"
kind = "university"
lat = 34.0
lon = 71.5
media = true

[[step]]
at = 0.5
action = "camera_cover gate"

[[step]]
at = 0.5
expect = "camera_fault gate within 8"

[[step]]
at = 9.0
action = "camera_uncover gate"

[[step]]
at = 9.0
expect = "camera_fault_cleared gate within 8"
"""


@pytest.mark.broker
@pytest.mark.timeout(SCENARIO_TIMEOUT_S + 20)
def test_a_covered_camera_is_shown_in_the_room_and_cleared(tmp_path):
    path = tmp_path / "camera.toml"
    path.write_text(CAMERA)
    proc = scenario(path)
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-2000:])
    lines = proc.stdout.splitlines()
    measured = [float(line.split()[-2]) for line in lines if line.startswith("PASS ")
                and "camera_fault" in line]
    assert len(measured) == 2, lines
    assert measured[0] >= 1.0  # the kiosk waits camera_covered_s before it calls it a fault


def test_a_stalled_link_keeps_its_connection_and_delivers_after_restore():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    link = FlakyLink(server.getsockname()).start()
    try:
        client = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        upstream, _ = server.accept()
        link.stall()
        client.sendall(b"held")
        upstream.settimeout(0.6)
        with pytest.raises(TimeoutError):  # nothing moves, nothing is closed
            upstream.recv(4)
        link.restore()
        upstream.settimeout(5)
        assert upstream.recv(4) == b"held"
        upstream.sendall(b"back")
        assert client.recv(4) == b"back"
        client.close()
        upstream.close()
    finally:
        link.close()
        server.close()
