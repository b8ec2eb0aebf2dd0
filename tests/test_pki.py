"""tools/pki.py: the dev CA and the certificates the broker and devices authenticate with."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from pinkbutton.tools.pki import (
    BROKER_CN,
    Issued,
    PkiError,
    broker_paths,
    ca_paths,
    controlroom_paths,
    device_paths,
    init_ca,
    init_dev_pki,
    issue,
)

from tests.helpers import assert_one_line_error

REPO_ROOT = Path(__file__).resolve().parent.parent


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def dev_pki(tmp_path: Path) -> Path:
    init_dev_pki(tmp_path, ["pb-0001", "pb-0002"])
    return tmp_path


def test_dev_pki_layout_and_permissions(dev_pki: Path) -> None:
    pairs = [
        ca_paths(dev_pki),
        broker_paths(dev_pki),
        controlroom_paths(dev_pki),
        device_paths(dev_pki, "pb-0001"),
        device_paths(dev_pki, "pb-0002"),
    ]
    assert device_paths(dev_pki, "pb-0001") == Issued(
        dev_pki / "devices" / "pb-0001.pem", dev_pki / "devices" / "pb-0001.key"
    )
    for pair in pairs:
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600, pair.key
        assert stat.S_IMODE(pair.cert.stat().st_mode) == 0o644, pair.cert
    leftovers = [p.name for p in dev_pki.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_broker_cert_verifies_as_tls_server_for_localhost_and_loopback_ip(dev_pki: Path) -> None:
    ca = load(ca_paths(dev_pki).cert)
    server = load(broker_paths(dev_pki).cert)
    assert common_name(server) == BROKER_CN
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert eku(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = PolicyBuilder().store(Store([ca]))
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = builder.build_server_verifier(name).verify(server, [])
        assert chain[-1] == ca


def openssl_verify(ca: Path, cert: Path, purpose: str) -> subprocess.CompletedProcess[str]:
    # cryptography's client verifier insists on a SAN (web PKI profile); OpenSSL checks what
    # mosquitto itself checks.
    return subprocess.run(
        ["openssl", "verify", "-purpose", purpose, "-CAfile", str(ca), str(cert)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_client_certs_carry_identity_as_cn_and_verify_as_tls_clients(dev_pki: Path) -> None:
    ca_file = ca_paths(dev_pki).cert
    for identity, paths in [
        ("controlroom", controlroom_paths(dev_pki)),
        ("pb-0001", device_paths(dev_pki, "pb-0001")),
    ]:
        cert = load(paths.cert)
        assert common_name(cert) == identity
        assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        cert.verify_directly_issued_by(load(ca_file))
        result = openssl_verify(ca_file, paths.cert, "sslclient")
        assert result.returncode == 0, result.stdout + result.stderr


def test_certs_are_bound_to_their_role(dev_pki: Path) -> None:
    ca_file = ca_paths(dev_pki).cert
    assert openssl_verify(ca_file, broker_paths(dev_pki).cert, "sslclient").returncode != 0
    assert (
        openssl_verify(ca_file, device_paths(dev_pki, "pb-0001").cert, "sslserver").returncode != 0
    )


def test_reinit_is_idempotent_and_adds_new_devices(dev_pki: Path) -> None:
    before = {p: p.read_bytes() for p in dev_pki.rglob("*") if p.is_file()}
    init_dev_pki(dev_pki, ["pb-0001", "pb-0003"])
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was rewritten"
    assert device_paths(dev_pki, "pb-0003").cert.exists()


def test_new_ca_forces_fresh_leaf_certs(dev_pki: Path) -> None:
    old_device = device_paths(dev_pki, "pb-0001").cert.read_bytes()
    init_ca(dev_pki, force=True)
    init_dev_pki(dev_pki, ["pb-0001"])
    new_ca = load(ca_paths(dev_pki).cert)
    device = device_paths(dev_pki, "pb-0001").cert
    assert device.read_bytes() != old_device
    load(device).verify_directly_issued_by(new_ca)


def test_foreign_ca_signs_certs_the_dev_ca_does_not_accept(dev_pki: Path, tmp_path: Path) -> None:
    foreign = init_ca(tmp_path / "foreign", common_name="Someone Else CA")
    issued = issue(dev_pki, "pb-0001", kind="client", out_dir=tmp_path / "rogue", ca=foreign)
    rogue = load(issued.cert)
    rogue.verify_directly_issued_by(load(foreign.cert))
    with pytest.raises(ValueError):
        rogue.verify_directly_issued_by(load(ca_paths(dev_pki).cert))


def test_validity_window_can_be_set_for_expired_and_future_certs(dev_pki: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = issue(
        dev_pki,
        "pb-expired",
        kind="client",
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    future = issue(dev_pki, "pb-future", kind="client", not_before=now + dt.timedelta(days=2))
    assert load(expired.cert).not_valid_after_utc < now
    future_cert = load(future.cert)
    assert future_cert.not_valid_before_utc > now
    # default length (825 days) counts from the requested start
    span = future_cert.not_valid_after_utc - future_cert.not_valid_before_utc
    assert span == dt.timedelta(days=825)


def test_window_that_ends_before_it_starts_is_refused(dev_pki: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(PkiError, match="end before it starts"):
        issue(dev_pki, "pb-0009", kind="client", not_before=now, not_after=now)


def test_issue_without_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="pinkbutton-pki init"):
        issue(tmp_path, "pb-0001", kind="client")


@pytest.mark.parametrize(
    "bad_id",
    ["", "a", "PB-0001", "-pb", "pb_0001", "pb.0001", "../etc", "p" * 64, "controlroom"],
)
def test_bad_device_ids_are_refused_before_anything_is_written(tmp_path: Path, bad_id: str) -> None:
    with pytest.raises(PkiError):
        init_dev_pki(tmp_path, ["pb-0001", bad_id])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PkiError):
        device_paths(tmp_path, bad_id)


@pytest.mark.parametrize("good_id", ["ab", "0b", "pb-0001", "p" * 63])
def test_good_device_ids_are_accepted(tmp_path: Path, good_id: str) -> None:
    assert device_paths(tmp_path, good_id).cert.name == f"{good_id}.pem"


# --- CLI -----------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinkbutton.tools.pki", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_init_device_and_show(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    result = run_cli("init", str(pki), "--device", "pb-0001")
    assert result.returncode == 0, result.stderr
    assert device_paths(pki, "pb-0001").cert.exists()

    result = run_cli("device", str(pki), "pb-0002")
    assert result.returncode == 0, result.stderr
    assert str(device_paths(pki, "pb-0002").cert) in result.stdout

    result = run_cli("show", str(broker_paths(pki).cert))
    assert result.returncode == 0, result.stderr
    assert "CN=pinkbutton-broker" in result.stdout
    assert "CN=Pink Button Dev CA" in result.stdout
    assert "localhost, 127.0.0.1" in result.stdout
    assert "days left: 82" in result.stdout  # 824 or 825 depending on the hour


def test_cli_show_marks_expired_certificates(tmp_path: Path) -> None:
    init_ca(tmp_path)
    now = dt.datetime.now(dt.UTC)
    old = issue(
        tmp_path,
        "pb-old",
        kind="client",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=3),
    )
    result = run_cli("show", str(old.cert))
    assert result.returncode == 0, result.stderr
    assert "EXPIRED" in result.stdout
    assert "days left: -" in result.stdout


def test_cli_bad_device_id_fails_with_one_line(tmp_path: Path) -> None:
    run_cli("init", str(tmp_path))
    result = run_cli("device", str(tmp_path), "Bad_Id")
    assert_one_line_error(result, code=2)  # a usage error, refused before touching any file
    assert "invalid device id" in result.stderr
    result = run_cli("init", str(tmp_path / "other"), "--device", "controlroom")
    assert_one_line_error(result, code=2)
    assert "reserved for the control room" in result.stderr
    assert not (tmp_path / "other").exists()


def test_cli_unwritable_directory_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("init", str(blocker / "pki"))
    assert_one_line_error(result, code=1)
    assert "cannot write" in result.stderr and str(blocker) in result.stderr
    assert "[Errno" not in result.stderr


def test_cli_device_without_ca_fails_with_one_line(tmp_path: Path) -> None:
    result = run_cli("device", str(tmp_path / "nothing"), "pb-0001")
    assert_one_line_error(result, code=2)
    assert "no CA" in result.stderr


def test_cli_show_of_non_certificate_fails_with_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert_one_line_error(run_cli("show", str(junk)), "not a PEM certificate", code=2)
    assert_one_line_error(run_cli("show", str(tmp_path / "missing.pem")), "missing.pem", code=2)


@pytest.mark.parametrize("args", [(), ("frobnicate",), ("init",), ("device", "dir-only")])
def test_cli_usage_errors_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    assert_one_line_error(run_cli(*args), code=2)
