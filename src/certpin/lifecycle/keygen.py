"""Spare keys: pin the next key before any certificate for it exists.

`generate` writes three files into a directory:

- ``key.pem``: the private key, PKCS#8 PEM, mode 0600, encrypted when a passphrase is given;
- ``csr.pem``: a PKCS#10 request signed by the key (subject CN and SubjectAltNames as given),
  ready for the CA when the rotation comes;
- ``pin.txt``: the key's SPKI pin (``sha256/…``), for the policy's backup slot.

No file is ever overwritten: an existing one stops the run before anything is written. The pin is
computed from the CSR's SubjectPublicKeyInfo as encoded (the bytes ``certpin pin csr.pem`` and the
final certificate hash).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from certpin._errors import ConfigurationError
from certpin.core.pins import Pin

__all__ = ["KEY_TYPES", "GeneratedKey", "KeyType", "generate"]

KeyType = Literal["rsa2048", "rsa3072", "rsa4096", "p256", "p384", "ed25519"]
KEY_TYPES: tuple[str, ...] = get_args(KeyType)
#: the default: fast, small, and accepted by every TLS stack that matters.
DEFAULT_KEY_TYPE: KeyType = "p256"

KEY_FILE = "key.pem"
CSR_FILE = "csr.pem"
PIN_FILE = "pin.txt"


@dataclass(frozen=True)
class GeneratedKey:
    """What `generate` wrote."""

    key_type: str
    pin: Pin
    key_path: Path
    csr_path: Path
    pin_path: Path
    encrypted: bool


def _new_key(key_type: str) -> object:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigurationError(f"unknown key type {key_type!r}; expected one of {KEY_TYPES}")


def _san(name: str) -> object:
    from cryptography import x509

    from certpin.core.hosts import HostError, normalize_host

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    host = name[2:] if name.startswith("*.") else name
    try:
        normalize_host(host)
    except HostError as exc:
        raise ConfigurationError(f"--san {name!r}: {exc}") from None
    return x509.DNSName(name)


def generate(
    out_dir: str | os.PathLike[str],
    key_type: str = DEFAULT_KEY_TYPE,
    *,
    common_name: str | None = None,
    sans: Sequence[str] = (),
    passphrase: bytes | None = None,
) -> GeneratedKey:
    """Generate a spare key, its CSR and its pin into `out_dir` (created if missing, 0700).

    Args:
        out_dir: the directory for ``key.pem``, ``csr.pem`` and ``pin.txt``.
        key_type: one of `KEY_TYPES`.
        common_name: the CSR subject's CN (default: the first SAN, or an empty subject).
        sans: DNS names (``*.`` allowed) and IP addresses for the CSR's SubjectAltName.
        passphrase: encrypt the private key with it (PKCS#8, best available cipher).

    Raises:
        ConfigurationError: unknown key type, invalid name, empty passphrase, or one of the
            three files already exists (nothing is written then).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    from certpin.core.sources import load_sources

    if key_type not in KEY_TYPES:
        raise ConfigurationError(f"unknown key type {key_type!r}; expected one of {KEY_TYPES}")
    if passphrase is not None and not passphrase:
        raise ConfigurationError("the passphrase is empty")
    directory = Path(out_dir)
    paths = [directory / KEY_FILE, directory / CSR_FILE, directory / PIN_FILE]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ConfigurationError(
            f"refusing to overwrite {', '.join(existing)}: choose another --out directory"
        )
    names = [_san(n) for n in sans]
    cn = common_name if common_name is not None else (sans[0] if sans else None)
    if cn is not None and not 0 < len(cn) <= 64:
        raise ConfigurationError(f"--cn {cn!r}: a common name has 1 to 64 characters")

    key = _new_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names),  # type: ignore[arg-type]
            critical=False,
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    (source,) = load_sources(csr_pem, source=str(paths[1]))
    pin = source.pin

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_new(paths[0], key_pem, 0o600)
    _write_new(paths[1], csr_pem, 0o644)
    _write_new(paths[2], f"{pin}\n".encode("ascii"), 0o644)
    return GeneratedKey(key_type, pin, paths[0], paths[1], paths[2], passphrase is not None)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively with `mode` (never follows or replaces an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigurationError(f"refusing to overwrite {path}") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot create: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have cleared bits; a key must be exactly 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:  # Defensive: disk full and the like
        raise ConfigurationError(f"{path}: cannot write: {exc.strerror or exc}") from None
