"""Incident data is private to the service user, whatever the umask (issue 9, item 11): the
kiosk's state_dir and the room's database and evidence are 0700 directories of 0600 files,
the PKI tool's directories 0700, and the room refuses a private key every user can read."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pinkbutton.firmware.outbox import Outbox
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.pki import ca_paths, controlroom_paths, device_paths, init_dev_pki

from tests.helpers import RunningKiosk, assert_one_line_error, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

ROOT = Path(__file__).resolve().parent.parent
UMASKS = [0o022, 0o000]


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(top: Path) -> dict[str, int]:
    """st_mode of `top` and of everything under it; entries that vanish while we walk are
    skipped."""
    found = {".": top.stat().st_mode}
    for path in top.rglob("*"):
        try:
            found[str(path.relative_to(top))] = path.stat().st_mode
        except FileNotFoundError:
            pass
    return found


def not_private(found: dict[str, int], top: Path) -> dict[str, str]:
    """Directories that are not 0700 and files that are not 0600, with their modes."""
    bad = {}
    for name, st_mode in found.items():
        want = 0o700 if stat.S_ISDIR(st_mode) else 0o600
        if stat.S_IMODE(st_mode) != want:
            bad[name] = f"{stat.S_IMODE(st_mode):04o} (want {want:04o})"
    return bad


# -- PKI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_pki_directories_are_0700_and_keys_0600(tmp_path, mask):
    pki = tmp_path / "new" / "pki"
    with umask(mask):
        init_dev_pki(pki, ["pb-modes-0001"])
    assert mode(tmp_path / "new") == 0o700
    assert mode(pki) == 0o700
    assert mode(pki / "devices") == 0o700
    for issued in (ca_paths(pki), controlroom_paths(pki), device_paths(pki, "pb-modes-0001")):
        assert mode(issued.key) == 0o600
        assert mode(issued.cert) == 0o644  # certificates are public


def test_pki_cli_makes_its_directory_0700_under_umask_000(tmp_path):
    pki = tmp_path / "cli-pki"
    proc = subprocess.run([sys.executable, "-c",
                           "import os, sys; os.umask(0); from tools.pki import main; "
                           "sys.exit(main(sys.argv[1:]))", "init", str(pki), "--device", "pb-x1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (mode(pki), mode(pki / "devices")) == (0o700, 0o700)


# -- kiosk outbox, room database ------------------------------------------------------------


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_outbox_state_dir_0700_and_database_files_0600(tmp_path, mask):
    state = tmp_path / "state"
    with umask(mask):
        box = Outbox(state / "outbox.db")
        box.next_seq()
        try:
            assert (state / "outbox.db-wal").exists()
            assert not_private(modes_under(state), state) == {}
        finally:
            box.close()


def test_outbox_tightens_a_state_dir_and_database_made_by_an_older_version(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    Outbox(state / "outbox.db").close()
    (state / "outbox.db").chmod(0o644)
    box = Outbox(state / "outbox.db")
    try:
        box.next_seq()
        assert not_private(modes_under(state), state) == {}
    finally:
        box.close()


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask{m:03o}")
def test_room_database_files_are_0600(tmp_path, mask):
    with umask(mask):
        s = IncidentStore(tmp_path / "room" / "incidents.db")
        try:
            files = list((tmp_path / "room").iterdir())
            assert any(p.name.endswith("-wal") for p in files), files
            assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
            assert mode(tmp_path / "room") == 0o700  # made by the store
        finally:
            s.close()


def test_room_refuses_a_private_key_every_user_can_read(tmp_path, pki_dir):
    key = tmp_path / "controlroom.key"
    shutil.copy(controlroom_paths(pki_dir).key, key)
    key.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run", "--pki",
                           str(pki_dir), "--key", str(key), "--db", str(tmp_path / "room.db")],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert_one_line_error(proc, "--key", str(key), "every user", "0644", "chmod 600")
    key.chmod(0o640)  # group access (root:pinkbutton 0640) is a sound setup: not refused
    proc = subprocess.run([sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run", "--pki",
                           str(pki_dir), "--key", str(key), "--db", str(tmp_path / "room.db"),
                           "--port", "1", "--exit-after", "0.5", "--no-evidence"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# -- end to end: a real incident with media, umask 000 -----------------------------------------


@pytest.mark.broker
def test_incident_files_of_kiosk_and_room_are_private_under_umask_000(tmp_path, pki_dir, broker):
    device = "pb-test-0003"
    with umask(0o000):
        cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, device,
                                 alert={"stream_s": 4.0})
        cfg.write_text(cfg.read_text() + "\n[media]\npreroll_s = 1.0\n")
        state, room_dir = tmp_path / f"state-{device}", tmp_path / "room"
        evidence = room_dir / "evidence"
        with RunningRoom(pki_dir, broker, room_dir / "room.db", auto_ack=True,
                         evidence_dir=evidence) as room, RunningKiosk(cfg, media=True) as kiosk:
            kiosk.events.wait_for("connected")
            time.sleep(1.5)  # some pre-roll
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            room.events.wait_for("media", lambda d: d["alert_id"] == alert_id, timeout=20)
            time.sleep(1.5)  # segments, manifest and the seq record on the kiosk's disk
            kiosk_modes = modes_under(state)
            done = room.events.wait_for("evidence_complete", timeout=30)
            room_modes = modes_under(room_dir)
    assert any("seg-" in n for n in kiosk_modes) and any("manifest" in n for n in kiosk_modes)
    assert any("stream-seq" in n for n in kiosk_modes), kiosk_modes
    assert not_private(kiosk_modes, state) == {}, kiosk_modes
    assert Path(done["path"]).name in {Path(n).name for n in room_modes}
    assert any(n.endswith(".packets") for n in room_modes), room_modes
    assert not_private(room_modes, room_dir) == {}, room_modes
