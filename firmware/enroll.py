"""Enrolment on the kiosk: the device's private key is made here and never leaves it.

`enroll()` creates the key (EC P-256, 0600, in a 0700 directory) unless one is already there,
and a certificate signing request with CN = device id. Only the CSR travels to the control
room (`pinkbutton-pki sign`); only the certificate comes back. Renewal is the same call: the
existing key is kept (so nothing private moves), a new CSR is written and signed before the
old certificate expires; `new_key=True` rotates the key as well.

Used by `pinkbutton-pki csr` and, through `add_enroll_arguments()` and `enroll_config()` (one
implementation, the same options), by both `pinkbutton enroll --config FILE` and
`pinkbutton-diag enroll --config FILE`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pinkbutton.firmware import protocol
from pinkbutton.firmware.durable import private_dir, replace_durably

if TYPE_CHECKING:
    from pinkbutton.firmware.config import Config

RESERVED_IDS = frozenset({"controlroom"})  # the control room's own identity


class EnrollError(ValueError):
    """Bad input or an unusable key file; the message is one line naming the problem."""


@dataclass(frozen=True)
class Enrolled:
    key: Path
    csr: Path
    new_key: bool  # False: an existing key was reused (renewal)


def check_device_id(device_id: str) -> str:
    if device_id in RESERVED_IDS:
        raise EnrollError(f"device id {device_id!r} is reserved for the control room")
    if not protocol.DEVICE_ID_RE.match(device_id):
        raise EnrollError(
            f"invalid device id {device_id!r}: use 2-63 chars of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return device_id


def enroll(device_id: str, key_path: Path, csr_path: Path, *, new_key: bool = False) -> Enrolled:
    """Make (or reuse) the private key at `key_path` and write a CSR for it at `csr_path`."""
    check_device_id(device_id)
    key_path, csr_path = Path(key_path), Path(csr_path)
    created = new_key or not key_path.exists()
    if created:
        key = ec.generate_private_key(ec.SECP256R1())
        private_dir(key_path.parent, tighten=False)
        _write(key_path, key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ), 0o600)
    else:
        key = _load_key(key_path)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    private_dir(csr_path.parent, tighten=False)
    _write(csr_path, csr.public_bytes(serialization.Encoding.PEM), 0o644)
    return Enrolled(key=key_path, csr=csr_path, new_key=created)


def add_enroll_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `pinkbutton enroll` and `pinkbutton-diag enroll` (the same verb)."""
    parser.add_argument("--config", required=True, metavar="FILE", type=Path,
                        help="the kiosk TOML config: the key goes to [broker] key, the CSR "
                             "next to [broker] cert (same name, .csr)")
    parser.add_argument("--new-key", action="store_true",
                        help="replace an existing key (default: keep it, as for a renewal)")


def enroll_config(file: Path, new_key: bool = False) -> tuple[Config, Enrolled]:
    """`enroll()` for the kiosk that `file` configures: the key at `[broker] key`, the CSR
    beside `[broker] cert` (same name, `.csr`). Raises ConfigError for an unreadable config or
    an unusable key (exit 2), OSError when a file cannot be written."""
    from pinkbutton.firmware.config import ConfigError, load_config

    config = load_config(file, check_certificates=False)  # no certificate yet: that is the point
    broker = config.broker
    try:
        done = enroll(config.device.id, broker.key, broker.cert.with_suffix(".csr"),
                      new_key=new_key)
    except EnrollError as e:
        raise ConfigError(f"{file}: [broker] key: {e}") from None
    return config, done


def next_step(config: Config, done: Enrolled) -> str:
    """What the installer does with the CSR."""
    return (f"at the control room, pinkbutton-pki sign PKI_DIR {done.csr.name}; copy the "
            f"certificate back to {config.broker.cert}; then pinkbutton check-config "
            f"{config.path}")


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        exposed = path.stat().st_mode & 0o007
        data = path.read_bytes()
    except OSError as exc:
        raise EnrollError(f"cannot read key {path}: {exc.strerror or exc}") from None
    if exposed:
        raise EnrollError(f"{path} is accessible to every user; run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise EnrollError(f"key {path} is encrypted; the kiosk needs an unencrypted key") from None
    except ValueError:
        raise EnrollError(f"{path} is not a PEM private key (--new-key replaces it)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise EnrollError(f"key {path} is not an EC P-256 key (--new-key replaces it)")
    return key


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)  # exactly this, whatever the umask (a CSR is public)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    replace_durably(tmp, path)
