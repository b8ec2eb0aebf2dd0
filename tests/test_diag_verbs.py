"""`pinkbutton-diag`'s verbs beyond check-config/selftest/status (issue 11 item 1): `enroll`
(the same code and options as `pinkbutton enroll`), `logs`, `test-alert`. Exit codes and the
JSON document asserted for each."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from pinkbutton.tools.pki import ca_paths

from tests.helpers import assert_one_line_error
from tests.test_provisioning import kiosk_config

ROOT = Path(__file__).resolve().parent.parent


def diag(*argv: object, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinkbutton.firmware.diag.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def firmware(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinkbutton.firmware.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=60)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- enroll ------------------------------------------------------------------------------------


def new_kiosk_config(directory: Path, ca: Path, device_id: str = "pb-new-0009") -> Path:
    """A kiosk not yet enrolled: its key and certificate do not exist (the provisioning
    tests' config)."""
    return kiosk_config(directory, ca, device_id)


def test_diag_enroll_makes_the_key_and_csr_and_keeps_the_key_on_renewal(tmp_path, pki_dir):
    cfg = new_kiosk_config(tmp_path, ca_paths(pki_dir).cert)
    key, csr = tmp_path / "pki/pb-new-0009.key", tmp_path / "pki/pb-new-0009.csr"
    proc = diag("enroll", "--config", cfg, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and [c["name"] for c in doc["checks"]] == ["key", "csr"]
    assert doc["enroll"]["key"] == str(key) and doc["enroll"]["csr"] == str(csr)
    assert doc["enroll"]["new_key"] is True and "pinkbutton-pki sign" in doc["enroll"]["next"]
    assert mode(key) == 0o600 and mode(key.parent) == 0o700
    request = x509.load_pem_x509_csr(csr.read_bytes())
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pb-new-0009"

    key_bytes = key.read_bytes()
    human = diag("enroll", "--config", cfg)  # renewal: the key stays
    assert human.returncode == 0, human.stderr
    assert key.read_bytes() == key_bytes
    lines = human.stdout.splitlines()
    assert lines[0] == f"✓ key: {key} (kept, 0600: it never leaves this kiosk)"
    assert lines[1] == f"✓ csr: {csr} (CN pb-new-0009)"
    assert lines[2].startswith("next: at the control room, pinkbutton-pki sign PKI_DIR")
    # --new-key as in `pinkbutton enroll`
    assert diag("enroll", "--config", cfg, "--new-key").returncode == 0
    assert key.read_bytes() != key_bytes


def test_diag_enroll_and_pinkbutton_enroll_are_one_implementation(tmp_path, pki_dir):
    cfg = new_kiosk_config(tmp_path, ca_paths(pki_dir).cert)
    key = tmp_path / "pki/pb-new-0009.key"
    assert firmware("enroll", "--config", cfg).returncode == 0
    made = key.read_bytes()
    # diag keeps the key `pinkbutton enroll` made (same files, same renewal rule) ...
    assert diag("enroll", "--config", cfg).returncode == 0 and key.read_bytes() == made
    # ... and refuses a bad key with the same one line, exit 2
    key.write_text("not a key")
    for proc in (diag("enroll", "--config", cfg), firmware("enroll", "--config", cfg)):
        assert_one_line_error(proc, "[broker] key", "not a PEM private key", "--new-key")
    assert_one_line_error(diag("enroll", "--config", tmp_path / "missing.toml", "--json"),
                          "missing.toml", "cannot read config")
    assert_one_line_error(diag("enroll"), "--config")
    # the same options in both --help texts
    for flag in ("--config", "--new-key"):
        assert flag in diag("enroll", "--help").stdout
        assert flag in firmware("enroll", "--help").stdout


# -- logs ----------------------------------------------------------------------------------------
# journalctl is the system's edge: a fake one on PATH records its arguments and prints what a
# real one prints in each case.

FAKE_JOURNALCTL = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_ARGS"
case "$FAKE_MODE" in
  text) printf '2026-12-01T08:00:00+0000 kiosk pinkbutton[812]: INFO pinkbutton.app: boot\\n'
        printf '2026-12-01T08:00:01+0000 kiosk pinkbutton[812]: operator \\033[2Jmallory\\n' ;;
  json) printf '{"__REALTIME_TIMESTAMP":"1764576000123456","PRIORITY":"6","MESSAGE":"boot","_PID":"812"}\\n'
        printf '{"__REALTIME_TIMESTAMP":"1764576001000000","PRIORITY":"3","MESSAGE":[104,105,255],"_PID":"812"}\\n' ;;
  empty) echo '-- No entries --' ;;
  nojournal) echo 'No journal files were found.' >&2 ;;
  badsince) echo 'Failed to parse timestamp: yesterdayish' >&2; exit 1 ;;
esac
"""


def fake_journalctl(tmp_path: Path, mode: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "journalctl"
    script.write_text(FAKE_JOURNALCTL)
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_ARGS": str(tmp_path / "args"),
            "FAKE_MODE": mode}


def journal_args(tmp_path: Path) -> list[str]:
    return (tmp_path / "args").read_text().splitlines()


def test_logs_runs_journalctl_for_the_unit_and_shows_the_lines_escaped(tmp_path):
    env = fake_journalctl(tmp_path, "text")
    proc = diag("logs", "-n", "20", "--since=-1h", env=env)
    assert proc.returncode == 0, proc.stderr
    assert journal_args(tmp_path) == ["-u", "pinkbutton", "-o", "short-iso", "-n", "20",
                                      "--no-pager", "--since", "-1h"]
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("pinkbutton.app: boot")
    assert lines[1].endswith("operator \\x1b[2Jmallory") and "\x1b" not in proc.stdout
    assert lines[2].startswith("✓ logs: 2 line(s) of unit pinkbutton from journald (journalctl")


def test_logs_json_gives_records(tmp_path):
    env = fake_journalctl(tmp_path, "json")
    proc = diag("logs", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert journal_args(tmp_path) == ["-u", "pinkbutton", "-o", "json", "-n", "50", "--no-pager"]
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["checks"][0]["name"] == "logs"
    assert doc["records"] == [
        {"time": "2025-12-01T08:00:00.123Z", "priority": 6, "level": "info", "message": "boot",
         "pid": 812},
        {"time": "2025-12-01T08:00:01.000Z", "priority": 3, "level": "err", "message": "hi\ufffd",
         "pid": 812}]


def test_logs_follow_passes_follow_and_streams_records(tmp_path):
    env = fake_journalctl(tmp_path, "json")
    proc = diag("logs", "--follow", "--json", "-n", "5", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert journal_args(tmp_path)[-1] == "--follow"
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["message"] for r in records] == ["boot", "hi\ufffd"]


def test_logs_without_journald_says_what_to_do(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    proc = diag("logs", "--json", env={"PATH": str(empty)})  # no journalctl at all
    assert proc.returncode == 1, proc.stderr
    check = json.loads(proc.stdout)["checks"][0]
    assert check["ok"] is False
    assert check["detail"] == "no journal here: journalctl is not installed"
    assert "2>>kiosk.log" in check["fix"] and "systemctl start pinkbutton" in check["fix"]

    env = fake_journalctl(tmp_path, "nojournal")  # journalctl there, no journal (a container)
    human = diag("logs", env=env)
    assert human.returncode == 1
    assert human.stdout.startswith("✗ logs: no journal here: journalctl found no journal files")
    assert "— try: the firmware logs to journald" in human.stdout

    proc = diag("logs", "--json", env=fake_journalctl(tmp_path, "empty"))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["checks"][0]["detail"] == "no log lines of unit pinkbutton"


def test_logs_bad_usage_exits_2_in_one_line(tmp_path):
    env = fake_journalctl(tmp_path, "badsince")
    assert_one_line_error(diag("logs", "--since", "yesterdayish", env=env),
                          "--since", "Failed to parse timestamp: yesterdayish")
    assert_one_line_error(diag("logs", "-n", "0"), "--lines", "at least 1")
