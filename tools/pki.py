"""Development PKI: a private CA plus broker, control-room and device certificates.

Everything is EC P-256 / SHA-256. The broker maps a client certificate's CN to the MQTT
username (``use_identity_as_username``), so a device's CN *is* its device id and the ACL
keys on it; that is why device ids are validated strictly here.

Files are written atomically (temp file + rename) so an interrupted run never leaves a
half-written key next to a cert that a broker would then fail to load. Private keys are
created 0600 from the first byte; they never exist with wider permissions. Directories the
tool creates are 0700 whatever the umask (an existing one is left as it is).

For a deployment, a kiosk's key never leaves the kiosk: `pinkbutton enroll` makes the key and
a CSR there, `sign` turns the CSR into its certificate here, `broker --host` issues the broker
certificate for its real names, and `revoke` puts a stolen kiosk's certificates on the CRL
(`DIR/crl.pem`) that the broker config (harness/broker.py) then uses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pinkbutton.firmware.cliargs import OneLineParser, add_version, int_in, quiet_on_closed_pipe
from pinkbutton.firmware.durable import private_dir
from pinkbutton.firmware.enroll import EnrollError, enroll

BROKER_CN = "pinkbutton-broker"
CONTROLROOM_CN = "controlroom"
WEB_CN = "pinkbutton-console"  # the web console's HTTPS certificate (`pinkbutton-pki web`)
BROKER_SANS = ("localhost", "127.0.0.1")
DEVICE_DAYS = 365  # a kiosk certificate: renewed yearly (docs/deploy.md), revocable any time
MAX_DEVICE_DAYS = 825
_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
# CNs become file names, so keep them to a portable, path-free alphabet.
_FILE_SAFE_CN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Certificates start slightly in the past so a device whose clock lags a little still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)


class PkiError(ValueError):
    """Bad input or unusable PKI state; the message is one line meant for a human."""


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def validate_device_id(device_id: str) -> str:
    if device_id == CONTROLROOM_CN:
        raise PkiError(f"device id {device_id!r} is reserved for the control room")
    if not DEVICE_ID_RE.match(device_id):
        raise PkiError(
            f"invalid device id {device_id!r}: use 2-63 chars of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return device_id


def ca_paths(pki_dir: Path) -> Issued:
    return Issued(cert=Path(pki_dir) / "ca.pem", key=Path(pki_dir) / "ca.key")


def broker_paths(pki_dir: Path) -> Issued:
    return _paths(Path(pki_dir), BROKER_CN)


def controlroom_paths(pki_dir: Path) -> Issued:
    return _paths(Path(pki_dir), CONTROLROOM_CN)


def web_paths(pki_dir: Path) -> Issued:
    return _paths(Path(pki_dir), WEB_CN)


def device_paths(pki_dir: Path, device_id: str) -> Issued:
    validate_device_id(device_id)
    return _paths(Path(pki_dir) / "devices", device_id)


def init_ca(
    pki_dir: Path,
    *,
    common_name: str = "Pink Button Dev CA",
    days: int = 3650,
    force: bool = False,
) -> Issued:
    paths = ca_paths(pki_dir)
    if not force and paths.cert.exists() and paths.key.exists():
        _load_ca(paths)  # fail loudly now if the existing pair is unusable
        return paths
    private_dir(Path(pki_dir), tighten=False)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before = _now() - _CLOCK_SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(paths, cert, key)
    return paths


def issue(
    pki_dir: Path,
    common_name: str,
    *,
    kind: Literal["server", "client"],
    out_dir: Path | None = None,
    sans: Sequence[str] = (),
    days: int = 825,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    ca: Issued | None = None,
    force: bool = False,
) -> Issued:
    if kind not in ("server", "client"):
        raise PkiError(f"kind must be 'server' or 'client', not {kind!r}")
    if not _FILE_SAFE_CN_RE.match(common_name):
        raise PkiError(f"invalid common name {common_name!r}: use letters, digits, '.', '_', '-'")
    ca_cert, ca_key = _load_ca(ca or ca_paths(pki_dir))
    paths = _paths(Path(out_dir) if out_dir is not None else Path(pki_dir), common_name)
    if not force and _existing_pair_is_ours(paths, ca_cert):
        return paths

    start = _as_utc(not_before) if not_before else _now() - _CLOCK_SKEW
    end = _as_utc(not_after) if not_after else start + dt.timedelta(days=days)
    if end <= start:
        raise PkiError(f"certificate for {common_name!r} would end before it starts")

    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf_builder(common_name, key.public_key(), ca_cert, ca_key, kind, start, end)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False
        )
    _write_pair(paths, builder.sign(ca_key, hashes.SHA256()), key)
    return paths


def init_dev_pki(pki_dir: Path, device_ids: Sequence[str] = ()) -> None:
    for device_id in device_ids:  # validate all before writing anything
        validate_device_id(device_id)
    pki_dir = Path(pki_dir)
    init_ca(pki_dir)
    issue(pki_dir, BROKER_CN, kind="server", sans=BROKER_SANS)
    issue(pki_dir, CONTROLROOM_CN, kind="client")
    for device_id in device_ids:
        issue_device(pki_dir, device_id)


def issue_device(pki_dir: Path, device_id: str, *, force: bool = False) -> Issued:
    validate_device_id(device_id)
    issued = issue(pki_dir, device_id, kind="client", out_dir=Path(pki_dir) / "devices",
                   force=force)
    _record_issued(Path(pki_dir), _read_cert(issued.cert))
    return issued


# Fleet files (simulator/fleetfile.py, read there in full): a device id is
# `[fleet] device_prefix` (default "pb-") + the site's id. Only that much is read here (tools
# never import the simulator); tests/test_sim_fleet.py checks both give the same ids.
FLEET_DEFAULT_PREFIX = "pb-"
#: A kept device certificate must have more than this many days left (as pinkbutton-diag).
FLEET_RENEW_DAYS = 30


@dataclass(frozen=True)
class FleetCerts:
    pki_dir: Path
    issued: list[str]
    kept: list[str]


def fleet_device_ids(fleet_file: Path) -> tuple[list[str], Path | None]:
    """The device ids of a fleet file and its `[fleet] pki` folder (None: not set)."""
    import tomllib

    try:
        data = tomllib.loads(Path(fleet_file).read_bytes().decode("utf-8"))
    except OSError as e:
        raise PkiError(f"{fleet_file}: cannot read fleet file: {e.strerror or e}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PkiError(f"{fleet_file}: not a TOML fleet file: {e}") from None
    head = data.get("fleet")
    sites = data.get("site")
    if not isinstance(head, dict) or not isinstance(sites, list) or not sites:
        raise PkiError(f"{fleet_file}: not a fleet file (needs [fleet] and [[site]] tables)")
    prefix = head.get("device_prefix", FLEET_DEFAULT_PREFIX)
    ids: list[str] = []
    for n, site in enumerate(sites, 1):
        sid = site.get("id") if isinstance(site, dict) else None
        if not isinstance(prefix, str) or not isinstance(sid, str):
            raise PkiError(f"{fleet_file}: site {n}: id: expected a string")
        device_id = prefix + sid
        try:
            validate_device_id(device_id)
        except PkiError as e:
            raise PkiError(f"{fleet_file}: site {n}: {e}") from None
        if device_id in ids:
            raise PkiError(f"{fleet_file}: site {n}: id {sid!r} is already site "
                           f"{ids.index(device_id) + 1}")
        ids.append(device_id)
    pki = head.get("pki")
    return ids, (Path(fleet_file).absolute().parent / pki if isinstance(pki, str) else None)


def issue_fleet(fleet_file: Path, pki_dir: Path | None = None, *,
                now: dt.datetime | None = None) -> FleetCerts:
    """Every device certificate of a fleet file (its `[fleet] pki` folder, or `pki_dir`),
    making the dev PKI (CA, broker, control room) first when the folder has none. Idempotent:
    a device whose key and certificate are there, signed by this CA and valid for more than
    FLEET_RENEW_DAYS, is kept."""
    ids, from_file = fleet_device_ids(fleet_file)
    directory = pki_dir if pki_dir is not None else from_file
    if directory is None:
        raise PkiError(f"{fleet_file}: [fleet] pki: missing (or give --pki DIR)")
    init_dev_pki(directory)
    ca_cert, _ = _load_ca(ca_paths(directory))
    horizon = _as_utc(now or _now()) + dt.timedelta(days=FLEET_RENEW_DAYS)
    issued, kept = [], []
    for device_id in ids:
        paths = device_paths(directory, device_id)
        fresh = (_existing_pair_is_ours(paths, ca_cert)
                 and _read_cert(paths.cert).not_valid_after_utc > horizon)
        if fresh:
            kept.append(device_id)
        else:
            issue_device(directory, device_id, force=True)
            issued.append(device_id)
    return FleetCerts(Path(directory), issued, kept)


@dataclass(frozen=True)
class DerFiles:
    cert: Path
    key: Path
    ca: Path


def write_der(pki_dir: Path, device_id: str, out_dir: Path) -> DerFiles:
    """A device's certificate, key and the CA as DER files for a small device (a Pico W:
    MicroPython's TLS takes DER bytes): OUT/ID.crt.der, OUT/ID.key.der (PKCS#8, 0600),
    OUT/ca.der. The key must be EC P-256 and match the certificate."""
    paths = device_paths(pki_dir, device_id)
    cert = _read_cert(paths.cert)
    try:
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(f"no such key: {paths.key}") from None
    except (ValueError, TypeError):
        raise PkiError(f"unreadable key: {paths.key}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise PkiError(f"{paths.key}: a small device needs an EC P-256 key (RSA and other "
                       f"curves are too slow or unsupported); reissue with --force")
    if key.public_key() != cert.public_key():
        raise PkiError(f"key {paths.key} does not match {paths.cert}")
    ca_cert, _ = _load_ca(ca_paths(pki_dir))
    out = private_dir(Path(out_dir), tighten=False)
    files = DerFiles(cert=out / f"{device_id}.crt.der", key=out / f"{device_id}.key.der",
                     ca=out / "ca.der")
    _atomic_write(files.key, key.private_bytes(serialization.Encoding.DER,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
    _atomic_write(files.cert, cert.public_bytes(serialization.Encoding.DER), 0o644)
    _atomic_write(files.ca, ca_cert.public_bytes(serialization.Encoding.DER), 0o644)
    return files


def crl_path(pki_dir: Path) -> Path:
    """The certificate revocation list; the broker config uses it once it exists."""
    return Path(pki_dir) / "crl.pem"


def sign_csr(pki_dir: Path, csr_file: Path, *, days: int = DEVICE_DAYS,
             out: Path | None = None) -> Path:
    """Sign a kiosk's CSR (made by `pinkbutton enroll`): a client certificate, CN = device id.

    The private key stayed on the kiosk; only the CSR came here, only the certificate goes back.
    Written to `out`, default `DIR/devices/<id>.pem` (where the control room's --device-certs
    looks), and recorded under `DIR/issued/` so `revoke` finds every certificate of a device."""
    if not 1 <= days <= MAX_DEVICE_DAYS:
        raise PkiError(f"--days must be between 1 and {MAX_DEVICE_DAYS}, got {days}")
    csr_file = Path(csr_file)
    try:
        csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"no such CSR: {csr_file}") from None
    except IsADirectoryError:
        raise PkiError(f"{csr_file} is a directory, not a CSR") from None
    except OSError as exc:
        raise PkiError(f"cannot read {csr_file}: {exc.strerror or exc}") from None
    except ValueError:
        raise PkiError(f"not a PEM certificate signing request: {csr_file}") from None
    if not csr.is_signature_valid:
        raise PkiError(f"{csr_file}: the CSR's signature does not match its key")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise PkiError(f"{csr_file}: the CSR must have exactly one CN, the device id")
    device_id = names[0].value
    try:
        validate_device_id(device_id)
    except PkiError as exc:
        raise PkiError(f"{csr_file}: CN: {exc}") from None
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or \
            public_key.curve.name != "secp256r1":
        raise PkiError(f"{csr_file}: only EC P-256 keys are signed (make one with "
                       "'pinkbutton enroll')")
    ca_cert, ca_key = _load_ca(ca_paths(pki_dir))
    start = _now() - _CLOCK_SKEW
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = _leaf_builder(device_id, public_key, ca_cert, ca_key, "client", start, end) \
        .sign(ca_key, hashes.SHA256())
    target = Path(out) if out is not None else device_paths(pki_dir, device_id).cert
    private_dir(target.parent, tighten=False)
    _atomic_write(target, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _record_issued(Path(pki_dir), cert)
    return target


def issue_broker(pki_dir: Path, hosts: Sequence[str], *, days: int = 825) -> Issued:
    """The broker's server certificate for its real host names/addresses (SANs); replaces
    the development one (localhost). Kiosks check `broker.host` against these names."""
    if not hosts:
        raise PkiError("give at least one --host: the name kiosks use in broker.host")
    for host in hosts:
        _check_host(host)
    return issue(pki_dir, BROKER_CN, kind="server", sans=list(dict.fromkeys(hosts)),
                 days=days, force=True)


def issue_web(pki_dir: Path, hosts: Sequence[str], *, days: int = 825,
              out_dir: Path | None = None) -> Issued:
    """The web console's HTTPS server certificate (`pinkbutton-controlroom serve`) for the
    names and addresses officers' browsers use (SANs); replaced on every call."""
    if not hosts:
        raise PkiError("give at least one --host: the name officers' browsers open")
    for host in hosts:
        _check_host(host)
    return issue(pki_dir, WEB_CN, kind="server", sans=list(dict.fromkeys(hosts)), days=days,
                 out_dir=out_dir, force=True)


def revoke_device(pki_dir: Path, device_id: str, *, now: dt.datetime | None = None) -> list[int]:
    """Add every certificate issued to `device_id` to `DIR/crl.pem` (made if missing).

    Returns the serial numbers newly revoked. The broker must be restarted to read the CRL."""
    validate_device_id(device_id)
    pki_dir = Path(pki_dir)
    ca_cert, ca_key = _load_ca(ca_paths(pki_dir))
    now = _as_utc(now) if now else _now()
    found = {c.serial_number: c for c in _certificates_of(pki_dir, device_id, ca_cert)}
    if not found:
        raise PkiError(f"no certificate of device {device_id!r} issued by the CA in {pki_dir}")
    revoked = _load_crl(pki_dir, ca_cert, ca_key)
    already = {r.serial_number for r in revoked}
    new = sorted(serial for serial in found if serial not in already)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _CLOCK_SKEW)
        # OpenSSL refuses every client once a CRL's nextUpdate has passed, so the list is
        # valid as long as the CA is; revoking again re-issues it.
        .next_update(ca_cert.not_valid_after_utc)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False)
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    for serial in new:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    # World-readable like the certificates: mosquitto reads it as its own user.
    _atomic_write(crl_path(pki_dir), crl.public_bytes(serialization.Encoding.PEM), 0o644)
    return new


def describe(cert_file: Path, *, now: dt.datetime | None = None) -> list[str]:
    """Human-readable summary lines for `pinkbutton-pki show`."""
    cert = _read_cert(Path(cert_file))
    now = now or _now()
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    if now < start:
        state = "NOT YET VALID"
    elif now > end:
        state = "EXPIRED"
    else:
        state = "valid"
    return [
        f"subject:   {cert.subject.rfc4514_string()}",
        f"issuer:    {cert.issuer.rfc4514_string()}",
        f"valid:     {start.isoformat()} .. {end.isoformat()} ({state})",
        f"sans:      {', '.join(sans) if sans else '-'}",
        f"days left: {(end - now).days}",
    ]


# --- internals ---------------------------------------------------------------------------------


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL_RE.match(label) for label in labels):
        raise PkiError(f"invalid --host {host!r}: a DNS name (letters, digits, '-', '.') or "
                       "an IP address")


def _leaf_builder(common_name: str, public_key: ec.EllipticCurvePublicKey,
                  ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                  kind: Literal["server", "client"], start: dt.datetime,
                  end: dt.datetime) -> x509.CertificateBuilder:
    eku = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )


def _record_issued(pki_dir: Path, cert: x509.Certificate) -> None:
    """Keep a copy of every device certificate by serial: `revoke` must find old ones too."""
    directory = private_dir(pki_dir / "issued", tighten=False)
    _atomic_write(directory / f"{cert.serial_number:x}.pem",
                  cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _certificates_of(pki_dir: Path, device_id: str,
                     ca_cert: x509.Certificate) -> list[x509.Certificate]:
    candidates = [device_paths(pki_dir, device_id).cert]
    issued = pki_dir / "issued"
    if issued.is_dir():
        candidates += sorted(issued.glob("*.pem"))
    found = []
    for path in candidates:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            cert.verify_directly_issued_by(ca_cert)
        except (OSError, ValueError, TypeError, InvalidSignature):
            continue
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if names and names[0].value == device_id:
            found.append(cert)
    return found


def _load_crl(pki_dir: Path, ca_cert: x509.Certificate,
              ca_key: ec.EllipticCurvePrivateKey) -> list[x509.RevokedCertificate]:
    path = crl_path(pki_dir)
    if not path.exists():
        return []
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except ValueError:
        raise PkiError(f"{path} is not a PEM CRL; move it away to start a new one") from None
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_key.public_key()):
        raise PkiError(f"{path} was not signed by the CA in {pki_dir}")
    return list(crl)


def _paths(directory: Path, name: str) -> Issued:
    return Issued(cert=directory / f"{name}.pem", key=directory / f"{name}.key")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _as_utc(moment: dt.datetime) -> dt.datetime:
    # Naive datetimes are taken as UTC rather than local time: certificates are always UTC.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _general_name(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"no such certificate: {path}") from None
    except ValueError:
        raise PkiError(f"not a PEM certificate: {path}") from None


def _load_ca(paths: Issued) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not paths.cert.exists() or not paths.key.exists():
        raise PkiError(
            f"no CA at {paths.cert.parent}: run 'pinkbutton-pki init {paths.cert.parent}'"
        )
    cert = _read_cert(paths.cert)
    try:
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise PkiError(f"unreadable CA key: {paths.key}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise PkiError(f"CA key {paths.key} does not match {paths.cert}")
    return cert, key


def _existing_pair_is_ours(paths: Issued, ca_cert: x509.Certificate) -> bool:
    """Reuse only a complete pair signed by this CA; a re-created CA gets fresh leaf certs."""
    if not paths.cert.exists() or not paths.key.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return key.public_key() == cert.public_key()


def _write_pair(paths: Issued, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    private_dir(paths.cert.parent, tighten=False)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a crash between the two renames leaves a pair that fails the reuse check
    # and is simply reissued.
    _atomic_write(paths.key, key_pem, 0o600)
    _atomic_write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if mode & 0o044:
            os.fchmod(fd, mode)  # public files: don't let a strict umask hide certs from brokers
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- CLI ---------------------------------------------------------------------------------------


def _device_id_arg(text: str) -> str:
    try:
        return validate_device_id(text)
    except PkiError as exc:  # a bad id is a usage error (exit 2), caught before any file work
        raise argparse.ArgumentTypeError(str(exc)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pinkbutton-pki", description=(__doc__ or "").partition("\n")[0])
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    p_init = sub.add_parser("init", help="create CA, broker, control-room (and device) certs")
    p_init.add_argument("dir", type=Path, metavar="DIR",
                        help="directory to create the PKI in (ca.key stays there: keep it private)")
    p_init.add_argument("--device", action="append", default=[], metavar="ID", type=_device_id_arg,
                        help="also issue a certificate for device ID (repeatable)")
    p_dev = sub.add_parser("device", help="issue a device client certificate")
    p_dev.add_argument("dir", type=Path, metavar="DIR", help="a PKI directory made by 'init'")
    p_dev.add_argument("id", type=_device_id_arg, metavar="ID",
                       help="device id: the certificate CN and MQTT user name")
    p_dev.add_argument("--force", action="store_true", help="replace an existing certificate")
    p_dev.add_argument("--der", type=Path, metavar="OUT", default=None,
                       help="also write ID.crt.der, ID.key.der (0600) and ca.der to OUT, for a "
                            "small device such as a Pico W (docs/deploy.md)")
    p_csr = sub.add_parser(
        "csr", help="make a device key and CSR (what 'pinkbutton enroll' does on a kiosk)")
    p_csr.add_argument("--id", required=True, type=_device_id_arg, metavar="ID",
                       help="device id: the CSR's CN")
    p_csr.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="where ID.key (0600, keep it on the kiosk) and ID.csr are written")
    p_csr.add_argument("--new-key", action="store_true",
                       help="replace an existing DIR/ID.key (default: reuse it, for a renewal)")
    p_sign = sub.add_parser("sign", help="sign a kiosk's CSR: its certificate (CN = device id)")
    p_sign.add_argument("dir", type=Path, metavar="DIR", help="a PKI directory made by 'init'")
    p_sign.add_argument("csr", type=Path, metavar="CSR",
                        help="the CSR from 'pinkbutton enroll' (EC P-256, CN = a device id)")
    p_sign.add_argument("--days", type=int_in(1, MAX_DEVICE_DAYS), default=DEVICE_DAYS,
                        help=f"validity in days (default {DEVICE_DAYS}; renew before it ends)")
    p_sign.add_argument("--out", type=Path, metavar="FILE", default=None,
                        help="certificate file to write (default DIR/devices/ID.pem)")
    for verb, what, who in (
            ("broker", "the broker certificate for its real host names",
             "kiosks use as broker.host"),
            ("web", "the web console's HTTPS certificate", "officers' browsers open")):
        p_server = sub.add_parser(verb, help=f"issue {what}")
        p_server.add_argument("dir", type=Path, metavar="DIR",
                              help="a PKI directory made by 'init'")
        p_server.add_argument("--host", action="append", required=True, metavar="NAME",
                              help=f"DNS name or IP address {who} (repeatable)")
        p_server.add_argument("--days", type=int_in(1, 3650), default=825,
                              help="validity in days (default 825)")
    p_revoke = sub.add_parser("revoke", help="revoke a device's certificates (DIR/crl.pem)")
    p_revoke.add_argument("dir", type=Path, metavar="DIR", help="a PKI directory made by 'init'")
    p_revoke.add_argument("id", type=_device_id_arg, metavar="ID",
                          help="the device to cut off (every certificate issued to it)")
    p_fleet = sub.add_parser(
        "fleet", help="every device certificate of a fleet file (pinkbutton-sim fleet)")
    p_fleet.add_argument("fleet", type=Path, metavar="FLEETFILE",
                         help="a fleet file (examples/fleets/peshawar.toml)")
    p_fleet.add_argument("--pki", type=Path, metavar="DIR", default=None,
                         help="the PKI folder (default: the fleet file's [fleet] pki)")
    p_show = sub.add_parser("show", help="print a certificate's subject, validity and SANs")
    p_show.add_argument("file", type=Path, metavar="FILE", help="a PEM certificate")
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "init":
            init_dev_pki(args.dir, args.device)
            print(f"CA:          {ca_paths(args.dir).cert}")
            print(f"broker:      {broker_paths(args.dir).cert}")
            print(f"controlroom: {controlroom_paths(args.dir).cert}")
            for device_id in args.device:
                print(f"device:      {device_paths(args.dir, device_id).cert}")
        elif args.command == "device":
            issued = issue_device(args.dir, args.id, force=args.force)
            print(f"cert: {issued.cert}")
            print(f"key:  {issued.key}")
            if args.der is not None:
                der = write_der(args.dir, args.id, args.der)
                print(f"der:  {der.cert} {der.key} {der.ca}")
        elif args.command == "csr":
            out = Path(args.out)
            done = enroll(args.id, out / f"{args.id}.key", out / f"{args.id}.csr",
                          new_key=args.new_key)
            print(f"key: {done.key} ({'new' if done.new_key else 'kept'})")
            print(f"csr: {done.csr}")
        elif args.command == "sign":
            cert = sign_csr(args.dir, args.csr, days=args.days, out=args.out)
            print(f"cert: {cert}")
            print("\n".join(describe(cert)))
        elif args.command == "broker":
            issued = issue_broker(args.dir, args.host, days=args.days)
            print(f"cert: {issued.cert}")
            print(f"key:  {issued.key}")
            print("\n".join(describe(issued.cert)))
        elif args.command == "web":
            issued = issue_web(args.dir, args.host, days=args.days)
            print(f"cert: {issued.cert}")
            print(f"key:  {issued.key}")
            print("\n".join(describe(issued.cert)))
        elif args.command == "revoke":
            serials = revoke_device(args.dir, args.id)
            done = ", ".join(f"{s:x}" for s in serials) or "none new (already revoked)"
            print(f"revoked {args.id}: serials {done}")
            print(f"crl: {crl_path(args.dir)} (restart the broker to apply it)")
        elif args.command == "fleet":
            done = issue_fleet(args.fleet, args.pki)
            print(f"fleet {args.fleet}: {len(done.issued) + len(done.kept)} device "
                  f"certificate(s) in {done.pki_dir / 'devices'}: {len(done.issued)} issued, "
                  f"{len(done.kept)} kept (valid)")
        else:
            print("\n".join(describe(args.file)))
    except (PkiError, EnrollError) as exc:  # bad input or PKI state: no CA, not a certificate, missing file
        print(f"pinkbutton-pki: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # "cannot write /proc/foo/ca.pem: No such file or directory"
        where = f" {exc.filename}" if exc.filename else ""
        print(f"pinkbutton-pki: error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
