"""`pinkbutton-diag` as a technician runs it: a separate process, exit codes, JSON on stdout,
one ✓/✗ line per check, colour only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from pinkbutton.tools.pki import init_dev_pki, issue

from tests.helpers import assert_one_line_error, write_kiosk_config

DEVICE = "pb-test-0003"


def diag(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pinkbutton.firmware.diag.cli", *argv],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_check_config_good(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, 8883, DEVICE)
    proc = diag("check-config", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True
    assert [c["name"] for c in doc["checks"]] == ["config", "certificate"]
    assert re.search(r"certificate valid until \d{4}-\d\d-\d\d \(\d+ days\)",
                     doc["checks"][1]["detail"])


def test_check_config_certificate_expiring_is_a_failed_check(tmp_path, pki_dir):
    short = issue(pki_dir, DEVICE, kind="client", out_dir=tmp_path / "short", days=20)
    cfg = write_kiosk_config(tmp_path, pki_dir, 8883, DEVICE, cert=short.cert, key=short.key)
    proc = diag("check-config", str(cfg), "--json")
    assert proc.returncode == 1, proc.stderr
    cert = json.loads(proc.stdout)["checks"][1]
    assert cert["name"] == "certificate" and not cert["ok"]
    assert re.fullmatch(r"certificate expires in 19 days \(\d{4}-\d\d-\d\d\)", cert["detail"])
    human = diag("check-config", str(cfg))
    assert human.returncode == 1
    assert re.search(r"^✗ certificate: certificate expires in 19 days .* — try: renew",
                     human.stdout, re.M)


def test_check_config_certificate_from_another_ca_is_a_failed_check(tmp_path, pki_dir):
    other = tmp_path / "other"
    init_dev_pki(other, [DEVICE])
    cfg = write_kiosk_config(tmp_path, pki_dir, 8883, DEVICE, ca=other / "ca.pem")
    proc = diag("check-config", str(cfg), "--json")
    assert proc.returncode == 1
    cert = json.loads(proc.stdout)["checks"][1]
    assert not cert["ok"] and "is not signed by the CA in" in cert["detail"]


def test_check_config_unreadable_config_exits_2(tmp_path):
    assert_one_line_error(diag("check-config", str(tmp_path / "missing.toml")),
                          "missing.toml", "cannot read config")


def test_selftest_as_a_process_on_the_configured_fake_backend(tmp_path, pki_dir):
    # No broker here: every device check passes, the network check fails -> exit 1.
    cfg = write_kiosk_config(tmp_path, pki_dir, 1, DEVICE, host="127.0.0.1")
    proc = diag("selftest", "--config", str(cfg))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line[:2] for line in lines] == ["✓ "] * 9 + ["✗ "], lines
    assert lines[-1].startswith("✗ network: broker 127.0.0.1:1 refused the connection")
    assert "\x1b[" not in proc.stdout  # a pipe, not a terminal: no colour


def test_colour_only_on_a_terminal(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, 8883, DEVICE)
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "pinkbutton.firmware.diag.cli", "check-config",
                               str(cfg)], stdout=secondary, stderr=subprocess.PIPE, timeout=60)
        os.close(secondary)
        out = b""
        while True:
            try:
                piece = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not piece:
                break
            out += piece
    finally:
        os.close(primary)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[32m✓\x1b[0m config:" in out.decode()


def test_unknown_hal_backend_is_a_config_error(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, 1, DEVICE)
    assert_one_line_error(diag("selftest", "--config", str(cfg), env={"PINKBUTTON_HAL": "nope"}),
                          "[hal]", "unknown HAL backend 'nope'")


def test_json_document_is_the_only_stdout_even_with_the_press_prompt(tmp_path, pki_dir):
    cfg: Path = write_kiosk_config(tmp_path, pki_dir, 1, DEVICE, host="127.0.0.1")
    cfg.write_text(cfg.read_text() + "\n[media]\nvideo = false\naudio = false\n")
    proc = diag("selftest", "--config", str(cfg), "--press-timeout", "0.3", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)  # the prompt went to stderr
    assert "press the button now" in proc.stderr
    assert {c["name"]: c["ok"] for c in doc["checks"]} == {
        "button": False, "indicator": True, "disk": True, "temperature": True, "clock": True,
        "certificate": True, "dns": True, "network": False}
