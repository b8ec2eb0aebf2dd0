"""Development PKI: a private CA plus broker, control-room and device certificates.

Everything is EC P-256 / SHA-256. The broker maps a client certificate's CN to the MQTT
username (``use_identity_as_username``), so a device's CN *is* its device id and the ACL
keys on it; that is why device ids are validated strictly here.

Files are written atomically (temp file + rename) so an interrupted run never leaves a
half-written key next to a cert that a broker would then fail to load. Private keys are
created 0600 from the first byte; they never exist with wider permissions. Directories the
tool creates are 0700 whatever the umask (an existing one is left as it is).
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

from firmware.cliargs import OneLineParser, add_version
from firmware.durable import private_dir

BROKER_CN = "pinkbutton-broker"
CONTROLROOM_CN = "controlroom"
BROKER_SANS = ("localhost", "127.0.0.1")
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
    eku = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            # ca_key's public half is ca_cert's key (_load_ca checked), typed as EC.
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
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
    return issue(pki_dir, device_id, kind="client", out_dir=Path(pki_dir) / "devices", force=force)


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
    p_show = sub.add_parser("show", help="print a certificate's subject, validity and SANs")
    p_show.add_argument("file", type=Path, metavar="FILE", help="a PEM certificate")
    return parser


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
        else:
            print("\n".join(describe(args.file)))
    except PkiError as exc:  # bad input or PKI state: no CA, not a certificate, missing file
        print(f"pinkbutton-pki: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # "cannot write /proc/foo/ca.pem: No such file or directory"
        where = f" {exc.filename}" if exc.filename else ""
        print(f"pinkbutton-pki: error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
