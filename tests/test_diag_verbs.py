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
    """A kiosk not yet enrolled: its key and certificate do not exist."""
    path = directory / "kiosk.toml"
    path.write_text(f"""
[device]
id = "{device_id}"
site_id = "site"
site_name = "Test Bazaar"
lat = 34.0
lon = 71.5
state_dir = "state"

[broker]
host = "localhost"
ca = "{ca}"
cert = "pki/{device_id}.pem"
key = "pki/{device_id}.key"

[hal]
backend = "fake"
""")
    return path


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
