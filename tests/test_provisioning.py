"""Issue 11 item 4: provisioning without moving private keys.

The kiosk makes its key and a CSR (`pinkbutton enroll`, firmware/enroll.py); the control room
signs the CSR (`pinkbutton-pki sign`), issues the broker certificate for real host names
(`pinkbutton-pki broker`) and revokes a stolen kiosk (`pinkbutton-pki revoke`), which the real
mosquitto then refuses at the TLS handshake."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pinkbutton.firmware.enroll import EnrollError, enroll
from pinkbutton.tools.pki import (
    broker_paths,
    ca_paths,
    crl_path,
    device_paths,
    init_dev_pki,
    revoke_device,
    sign_csr,
)

from harness.broker import BrokerError, Mosquitto, _mqtt311_connect, _recv_exactly, find_mosquitto
from tests.helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent


def run(module: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT)


def pki(*args: object) -> subprocess.CompletedProcess:
    return run("pinkbutton.tools.pki", *args)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_dev_pki(directory)
    return directory


def kiosk_config(directory: Path, ca: Path, device_id: str = "pb-new-0001") -> Path:
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


# --- on the kiosk: the key is made there and stays there -------------------------------------


def test_enroll_makes_a_private_key_and_a_csr_and_keeps_the_key_on_renewal(tmp_path) -> None:
    key, csr = tmp_path / "k" / "pb-dev-0001.key", tmp_path / "k" / "pb-dev-0001.csr"
    first = enroll("pb-dev-0001", key, csr)
    assert first.new_key and mode(key) == 0o600 and mode(key.parent) == 0o700
    request = x509.load_pem_x509_csr(csr.read_bytes())
    assert request.is_signature_valid
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pb-dev-0001"
    public = request.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"

    key_bytes = key.read_bytes()
    again = enroll("pb-dev-0001", key, csr)  # renewal: same key, new CSR
    assert not again.new_key and key.read_bytes() == key_bytes
    assert x509.load_pem_x509_csr(csr.read_bytes()).public_key() == public
    rotated = enroll("pb-dev-0001", key, csr, new_key=True)
    assert rotated.new_key and key.read_bytes() != key_bytes and mode(key) == 0o600

    with pytest.raises(EnrollError, match="invalid device id 'Bad_Id'"):
        enroll("Bad_Id", key, csr)
    with pytest.raises(EnrollError, match="reserved for the control room"):
        enroll("controlroom", key, csr)
    key.chmod(0o644)
    with pytest.raises(EnrollError, match="accessible to every user"):
        enroll("pb-dev-0001", key, csr)


def test_enroll_sign_copy_back_check_config_round_trip(tmp_path, ca_dir) -> None:
    """The whole provisioning path through the three commands; only public files move."""
    kiosk = tmp_path / "kiosk"
    kiosk.mkdir()
    ca_copy = kiosk / "ca.pem"
    ca_copy.write_bytes(ca_paths(ca_dir).cert.read_bytes())
    config = kiosk_config(kiosk, ca_copy)

    out = run("pinkbutton.firmware.cli", "enroll", "--config", config)
    assert out.returncode == 0, out.stderr
    key, csr = kiosk / "pki/pb-new-0001.key", kiosk / "pki/pb-new-0001.csr"
    assert mode(key) == 0o600 and "pinkbutton-pki sign" in out.stdout

    # The control room gets only the CSR.
    room_csr = tmp_path / "inbox" / "pb-new-0001.csr"
    room_csr.parent.mkdir()
    room_csr.write_bytes(csr.read_bytes())
    signed = pki("sign", ca_dir, room_csr)
    assert signed.returncode == 0, signed.stderr
    cert = device_paths(ca_dir, "pb-new-0001").cert
    assert f"cert: {cert}" in signed.stdout
    assert not device_paths(ca_dir, "pb-new-0001").key.exists()  # no private key at the room
    issued = load(cert)
    assert issued.not_valid_after_utc - issued.not_valid_before_utc == dt.timedelta(days=365)
    eku = issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]

    (kiosk / "pki/pb-new-0001.pem").write_bytes(cert.read_bytes())  # copied back
    checked = run("pinkbutton.firmware.cli", "check-config", config)
    assert checked.returncode == 0, checked.stderr
    assert "device pb-new-0001" in checked.stdout and "(364 days)" in checked.stdout

    # Renewal: enroll again keeps the key; the new certificate matches it too.
    key_bytes = key.read_bytes()
    assert run("pinkbutton.firmware.cli", "enroll", "--config", config).returncode == 0
    assert key.read_bytes() == key_bytes
    assert pki("sign", ca_dir, csr, "--days", 30, "--out", kiosk / "pki/pb-new-0001.pem"
               ).returncode == 0
    assert "(29 days)" in run("pinkbutton.firmware.cli", "check-config", config).stdout


def test_enroll_cli_errors_are_one_line(tmp_path, ca_dir) -> None:
    assert_one_line_error(run("pinkbutton.firmware.cli", "enroll", "--config", tmp_path / "missing.toml"),
                          "missing.toml", "cannot read config")
    kiosk = tmp_path / "kiosk"
    (kiosk / "pki").mkdir(mode=0o700, parents=True)
    config = kiosk_config(kiosk, ca_paths(ca_dir).cert)
    (kiosk / "pki/pb-new-0001.key").write_text("not a key")
    (kiosk / "pki/pb-new-0001.key").chmod(0o600)
    assert_one_line_error(run("pinkbutton.firmware.cli", "enroll", "--config", config),
                          "[broker] key", "not a PEM private key", "--new-key")
    assert run("pinkbutton.firmware.cli", "enroll", "--config", config, "--new-key").returncode == 0
    assert_one_line_error(run("pinkbutton.firmware.cli", "enroll"), "--config")


def test_pki_csr_verb_writes_key_and_csr(tmp_path) -> None:
    out = pki("csr", "--id", "pb-dev-0002", "--out", tmp_path / "dev")
    assert out.returncode == 0, out.stderr
    assert mode(tmp_path / "dev/pb-dev-0002.key") == 0o600
    assert (tmp_path / "dev/pb-dev-0002.csr").exists()
    assert_one_line_error(pki("csr", "--id", "Not Valid", "--out", tmp_path), "invalid device id")


# --- at the control room: sign, broker, revoke ------------------------------------------------


def _csr(tmp_path: Path, cn: str, key=None, name: str = "x.csr") -> Path:
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .sign(key, hashes.SHA256()))
    path = tmp_path / name
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("cn", "key", "words"),
    [
        ("Bad_Id", None, ("CN", "invalid device id 'Bad_Id'")),
        ("controlroom", None, ("CN", "reserved for the control room")),
        ("pb-dev-0003", "rsa", ("only EC P-256 keys",)),
        ("pb-dev-0003", "p384", ("only EC P-256 keys",)),
    ],
)
def test_sign_refuses_a_bad_csr(tmp_path, ca_dir, cn, key, words) -> None:
    private = {None: None, "rsa": rsa.generate_private_key(65537, 2048),
               "p384": ec.generate_private_key(ec.SECP384R1())}[key]
    assert_one_line_error(pki("sign", ca_dir, _csr(tmp_path, cn, private)), *words)
    assert not (ca_dir / "devices" / f"{cn}.pem").exists()


def test_sign_usage_errors(tmp_path, ca_dir) -> None:
    good = _csr(tmp_path, "pb-dev-0004")
    assert_one_line_error(pki("sign", ca_dir, tmp_path / "nope.csr"), "no such CSR")
    (tmp_path / "junk.csr").write_text("junk")
    assert_one_line_error(pki("sign", ca_dir, tmp_path / "junk.csr"), "not a PEM certificate")
    assert_one_line_error(pki("sign", ca_dir, good, "--days", 0), "--days", "between 1 and 825")
    assert_one_line_error(pki("sign", tmp_path / "no-ca", good), "no CA at")
    assert_one_line_error(pki("sign", ca_dir), "CSR")


def test_broker_certificate_for_real_host_names(ca_dir) -> None:
    out = pki("broker", ca_dir, "--host", "broker.police.example", "--host", "10.20.0.5")
    assert out.returncode == 0, out.stderr
    cert = load(broker_paths(ca_dir).cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.police.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.20.0.5"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert mode(broker_paths(ca_dir).key) == 0o600
    assert_one_line_error(pki("broker", ca_dir, "--host", "bad host!"), "invalid --host")
    assert_one_line_error(pki("broker", ca_dir), "--host")
    assert_one_line_error(pki("broker", ca_dir, "--host", "x.example", "--days", "many"),
                          "--days", "not a whole number")


def test_revoke_lists_every_certificate_of_the_device_once(tmp_path, ca_dir) -> None:
    first = sign_csr(ca_dir, _csr(tmp_path, "pb-dev-0005"))
    serial_1 = load(first).serial_number
    serial_2 = load(sign_csr(ca_dir, _csr(tmp_path, "pb-dev-0005", name="y.csr"))).serial_number
    other = load(sign_csr(ca_dir, _csr(tmp_path, "pb-dev-0006", name="z.csr"))).serial_number
    out = pki("revoke", ca_dir, "pb-dev-0005")
    assert out.returncode == 0, out.stderr
    crl = x509.load_pem_x509_crl(crl_path(ca_dir).read_bytes())
    ca_public = load(ca_paths(ca_dir).cert).public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(ca_public)
    assert {r.serial_number for r in crl} == {serial_1, serial_2}  # the renewed one too
    assert mode(crl_path(ca_dir)) == 0o644  # mosquitto reads it as its own user
    assert revoke_device(ca_dir, "pb-dev-0005") == []  # again: nothing new, nothing lost
    revoke_device(ca_dir, "pb-dev-0006")
    crl = x509.load_pem_x509_crl(crl_path(ca_dir).read_bytes())
    assert {r.serial_number for r in crl} == {serial_1, serial_2, other}
    assert_one_line_error(pki("revoke", ca_dir, "pb-never-seen"), "no certificate of device")
    assert_one_line_error(pki("revoke", ca_dir, "NOPE"), "invalid device id")


# --- on the real broker: a revoked kiosk is cut off -------------------------------------------


def _mqtt_connect(port: int, ca: Path, cert: Path, key: Path) -> None:
    """mTLS handshake plus MQTT CONNECT; returns on CONNACK 'accepted', raises otherwise."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(_mqtt311_connect(f"revoke-test-{cert.stem}"))
            connack = _recv_exactly(tls, 4)  # TLS 1.3: the server's verdict arrives here
            assert connack[0] == 0x20 and connack[3] == 0, connack.hex()
            tls.sendall(b"\xe0\x00")


def test_revoked_device_is_refused_by_the_broker_other_devices_still_connect(tmp_path) -> None:
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.skip(f"real-broker test skipped: {exc}")
    pki_dir = tmp_path / "pki"
    init_dev_pki(pki_dir)
    devices = {}
    for device_id in ("pb-stolen-01", "pb-honest-01"):  # provisioned the new way
        key, csr = tmp_path / device_id / "d.key", tmp_path / device_id / "d.csr"
        enroll(device_id, key, csr)
        devices[device_id] = (sign_csr(pki_dir, csr, out=tmp_path / device_id / "d.pem"), key)
    ca = ca_paths(pki_dir).cert
    with Mosquitto(tmp_path / "broker", pki_dir) as broker:
        assert "crlfile" not in (tmp_path / "broker/mosquitto.conf").read_text()
        for cert, key in devices.values():
            _mqtt_connect(broker.port, ca, cert, key)

        assert pki("revoke", pki_dir, "pb-stolen-01").returncode == 0
        broker.restart()
        conf = (tmp_path / "broker/mosquitto.conf").read_text()
        assert f"crlfile {crl_path(pki_dir).resolve()}" in conf

        # mosquitto drops the connection at the handshake (no TLS alert: EOF or a reset).
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _mqtt_connect(broker.port, ca, *devices["pb-stolen-01"])
        _mqtt_connect(broker.port, ca, *devices["pb-honest-01"])  # the others are unaffected
    log = broker.log_path.read_text()
    assert "certificate verify failed" in log, log
    # It connected once, before the revocation, and never after.
    assert log.count("u'pb-stolen-01')") == 1 and log.count("u'pb-honest-01')") == 2, log
