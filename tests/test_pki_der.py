"""DER files for a small device (issue 14): `pinkbutton-pki device DIR ID --der OUT`.

MicroPython's TLS (mbedTLS on the Pico W) loads the certificate, key and CA as DER bytes; the key
must be EC P-256 (an RSA handshake is far too slow on the RP2040)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pinkbutton.tools.pki import PkiError, ca_paths, device_paths, init_dev_pki, write_der

from tests.helpers import assert_one_line_error


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pinkbutton.tools.pki", *args],
                          capture_output=True, text=True, timeout=60)


def test_der_files_are_the_device_pair_and_ca(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_dev_pki(pki, ["pb-pico-0001"])
    files = write_der(pki, "pb-pico-0001", tmp_path / "out")
    cert = x509.load_der_x509_certificate(files.cert.read_bytes())
    assert cert == x509.load_pem_x509_certificate(
        device_paths(pki, "pb-pico-0001").cert.read_bytes())
    key = serialization.load_der_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    ca = x509.load_der_x509_certificate(files.ca.read_bytes())
    assert ca == x509.load_pem_x509_certificate(ca_paths(pki).cert.read_bytes())
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert [p.name for p in (files.cert, files.key, files.ca)] == \
        ["pb-pico-0001.crt.der", "pb-pico-0001.key.der", "ca.der"]


def test_cli_device_der_writes_the_three_files(tmp_path: Path) -> None:
    pki, out = tmp_path / "pki", tmp_path / "pico"
    result = run_cli("init", str(pki))
    assert result.returncode == 0, result.stderr
    result = run_cli("device", str(pki), "pb-pico-0002", "--der", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == \
        ["ca.der", "pb-pico-0002.crt.der", "pb-pico-0002.key.der"]
    assert str(out / "pb-pico-0002.key.der") in result.stdout


def test_der_refuses_a_key_that_is_not_p256(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_dev_pki(pki, ["pb-pico-0003"])
    other = ec.generate_private_key(ec.SECP384R1())
    device_paths(pki, "pb-pico-0003").key.write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(PkiError, match="EC P-256"):
        write_der(pki, "pb-pico-0003", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_der_unwritable_target_fails_with_one_line(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_dev_pki(pki, ["pb-pico-0004"])
    (tmp_path / "file").write_text("x")
    result = run_cli("device", str(pki), "pb-pico-0004", "--der", str(tmp_path / "file" / "o"))
    assert_one_line_error(result, str(tmp_path / "file"), code=1)
