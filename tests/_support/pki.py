"""Build throwaway X.509 PKIs with ``cryptography`` for tests.

Unlike trustme, this gives control over key types and lets a certificate be re-issued with
the same key (the key pin stays constant while the certificate pin changes), which is what
pinning tests need.

Everything produced here is accepted by OpenSSL 3.0 (Python's ``ssl``) as a server chain.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA",
    "KEY_TYPES",
    "PKI",
    "KeyType",
    "Leaf",
    "PKIFiles",
    "PrivateKey",
    "PublicKey",
    "cert_sha256",
    "make_key",
    "make_pki",
    "new_root",
    "pems",
    "spki_der",
    "spki_pin",
    "write_pki_files",
]

KeyType = Literal["rsa2048", "rsa3072", "p256", "p384", "p521", "ed25519", "ed448"]
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "p256": ec.SECP256R1,
    "p384": ec.SECP384R1,
    "p521": ec.SECP521R1,
}

DEFAULT_LIFETIME = dt.timedelta(days=365)
DEFAULT_BACKDATE = dt.timedelta(days=1)


def make_key(kind: KeyType = "p256") -> PrivateKey:
    """Generate a fresh private key of the given type."""
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind]())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}; expected one of {KEY_TYPES}")


def _as_key(key: KeyType | PrivateKey) -> PrivateKey:
    return make_key(key) if isinstance(key, str) else key


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519/Ed448 sign without a separate digest; RSA and ECDSA use SHA-256.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _validity(
    not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    """Default to now-1d .. now+365d, keeping the window well-formed if only one end is given.

    ``not_after`` in the past (expired cert) pulls the default ``not_before`` back;
    ``not_before`` in the future (not-yet-valid cert) pushes the default ``not_after`` out.
    """
    now = _now()
    if not_before is not None:
        not_before = _utc(not_before)
    if not_after is not None:
        not_after = _utc(not_after)
    if not_before is None:
        not_before = now - DEFAULT_BACKDATE
        if not_after is not None and not_after <= not_before:
            not_before = not_after - dt.timedelta(days=30)
    if not_after is None:
        not_after = max(now, not_before) + DEFAULT_LIFETIME
    if not_after <= not_before:
        raise ValueError(f"not_after ({not_after}) must be after not_before ({not_before})")
    return not_before, not_after


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certpin tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _san_entry(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        return x509.DNSName(hostname)


def _key_usage(*, ca: bool, key: PrivateKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        # keyEncipherment only makes sense for RSA (TLS 1.2 RSA key transport).
        key_encipherment=(not ca) and isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(eq=False)
class CA:
    """A certificate authority (root if ``parent`` is None, intermediate otherwise)."""

    cert: x509.Certificate
    key: PrivateKey
    parent: CA | None = None

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def name(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else self.cert.subject.rfc4514_string()

    def pem(self) -> bytes:
        return _pem(self.cert)

    def der(self) -> bytes:
        return _der(self.cert)

    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def chain_to_root(self) -> list[CA]:
        """``[self, parent, ..., root]``."""
        chain: list[CA] = []
        node: CA | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain

    @property
    def root(self) -> CA:
        return self.chain_to_root()[-1]

    def write(self, path: Path | str) -> Path:
        """Write this CA certificate (PEM) to ``path`` (a file, or a directory to put it in)."""
        path = Path(path)
        if path.is_dir():
            path = path / f"{_slug(self.name)}-{self.cert.serial_number:x}.pem"
        path.write_bytes(self.pem())
        return path

    def _builder(
        self,
        subject: x509.Name,
        public_key: PublicKey,
        not_before: dt.datetime | None,
        not_after: dt.datetime | None,
    ) -> x509.CertificateBuilder:
        start, end = _validity(not_before, not_after)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )

    def _sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self.key, _hash_for(self.key))

    def issue_intermediate(
        self,
        name: str = "Test Intermediate",
        key: KeyType | PrivateKey = "p256",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> CA:
        """Issue a subordinate CA signed by this CA (pass an existing key to re-issue it)."""
        private_key = _as_key(key)
        builder = (
            self._builder(_name(name), private_key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True, key=private_key), critical=True)
        )
        return CA(cert=self._sign(builder), key=private_key, parent=self)

    def issue_leaf(
        self,
        *hostnames: str,
        key: KeyType | PrivateKey = "p256",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        cn: str | None = None,
    ) -> Leaf:
        """Issue a TLS server certificate for ``hostnames`` (DNS names, wildcards or IPs)."""
        if not hostnames:
            raise ValueError("issue_leaf() needs at least one hostname")
        private_key = _as_key(key)
        builder = (
            self._builder(
                _name(cn if cn is not None else hostnames[0]),
                private_key.public_key(),
                not_before,
                not_after,
            )
            .add_extension(
                x509.SubjectAlternativeName([_san_entry(h) for h in hostnames]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False, key=private_key), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        return Leaf(cert=self._sign(builder), key=private_key, issuer=self)


def new_root(
    name: str = "Test Root CA",
    key: KeyType | PrivateKey = "p256",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CA:
    """Create a self-signed root CA (pass an existing key to re-issue a root with the same key)."""
    private_key = _as_key(key)
    public_key = private_key.public_key()
    start, end = _validity(not_before, not_after)
    subject = _name(name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True, key=private_key), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    )
    cert = builder.sign(private_key, _hash_for(private_key))
    return CA(cert=cert, key=private_key, parent=None)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "cert"


@dataclass(eq=False)
class Leaf:
    """An end-entity (server) certificate with its key and issuing CA."""

    cert: x509.Certificate
    key: PrivateKey
    issuer: CA

    @property
    def hostnames(self) -> list[str]:
        san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        ]

    @property
    def root(self) -> CA:
        return self.issuer.root

    @property
    def intermediates(self) -> list[CA]:
        """The issuing CAs below the root, nearest first (empty if issued by the root)."""
        return [ca for ca in self.issuer.chain_to_root() if not ca.is_root]

    def der(self) -> bytes:
        return _der(self.cert)

    def pem(self) -> bytes:
        return _pem(self.cert)

    def key_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM private key."""
        return _key_pem(self.key)

    def chain(self, include_root: bool = True) -> list[x509.Certificate]:
        """Leaf first, then intermediates (then the root if asked)."""
        cas = self.issuer.chain_to_root() if include_root else self.intermediates
        return [self.cert, *(ca.cert for ca in cas)]

    def chain_pem(self, include_root: bool = False) -> bytes:
        """Leaf + intermediates (+ root) concatenated as PEM, the way a server serves it."""
        return b"".join(_pem(c) for c in self.chain(include_root))

    def chain_der(self, include_root: bool = True) -> list[bytes]:
        """DER certificates, leaf first."""
        return [_der(c) for c in self.chain(include_root)]

    def write(self, directory: Path | str, include_root: bool = False) -> tuple[Path, Path]:
        """Write ``(certfile, keyfile)`` for ``SSLContext.load_cert_chain`` into ``directory``.

        File names include the serial number, so several leaves can share a directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = (
            f"{_slug(self.hostnames[0] if self.hostnames else 'leaf')}-{self.cert.serial_number:x}"
        )
        certfile = directory / f"{stem}-chain.pem"
        keyfile = directory / f"{stem}-key.pem"
        certfile.write_bytes(self.chain_pem(include_root=include_root))
        keyfile.write_bytes(self.key_pem())
        return certfile, keyfile

    def reissue(
        self,
        *,
        issuer: CA | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Leaf:
        """A new certificate for the same names with the SAME key (same SPKI pin), issued by
        ``issuer`` (default: the same CA). The certificate (and its hash) differs."""
        return (issuer or self.issuer).issue_leaf(
            *self.hostnames, key=self.key, not_before=not_before, not_after=not_after
        )


@dataclass(eq=False)
class PKI:
    """root -> intermediate -> leaf."""

    root: CA
    intermediate: CA
    leaf: Leaf


def make_pki(
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    key: KeyType = "p256",
    root_name: str = "Test Root CA",
    intermediate_name: str = "Test Intermediate",
) -> PKI:
    """A root, one intermediate and a leaf for ``hostnames``, all with ``key``-type keys."""
    root = new_root(root_name, key=key)
    intermediate = root.issue_intermediate(intermediate_name, key=key)
    leaf = intermediate.issue_leaf(*hostnames, key=key)
    return PKI(root=root, intermediate=intermediate, leaf=leaf)


@dataclass
class PKIFiles:
    """Paths of a PKI written to disk (see :func:`write_pki_files`)."""

    directory: Path
    root_ca: Path  # root certificate PEM (a client's cafile)
    certfile: Path  # leaf + intermediate PEM (root NOT included), for load_cert_chain
    keyfile: Path  # leaf key, PKCS#8 PEM
    intermediate_ca: Path = field(default_factory=Path)
    leaf_cert: Path = field(default_factory=Path)  # the leaf certificate alone


def write_pki_files(pki: PKI, directory: Path | str) -> PKIFiles:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = pki.leaf.write(directory, include_root=False)
    root_ca = directory / "root-ca.pem"
    root_ca.write_bytes(pki.root.pem())
    intermediate_ca = directory / "intermediate-ca.pem"
    intermediate_ca.write_bytes(pki.intermediate.pem())
    leaf_cert = directory / "leaf.pem"
    leaf_cert.write_bytes(pki.leaf.pem())
    return PKIFiles(
        directory=directory,
        root_ca=root_ca,
        certfile=certfile,
        keyfile=keyfile,
        intermediate_ca=intermediate_ca,
        leaf_cert=leaf_cert,
    )


def _public_key(obj: object) -> PublicKey:
    if isinstance(obj, Leaf | CA):
        return obj.cert.public_key()  # type: ignore[return-value]
    if isinstance(obj, x509.Certificate):
        return obj.public_key()  # type: ignore[return-value]
    if isinstance(obj, bytes | bytearray | memoryview):
        data = bytes(obj)
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
        return cert.public_key()  # type: ignore[return-value]
    if isinstance(
        obj,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        return obj.public_key()
    if isinstance(
        obj,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        return obj
    raise TypeError(f"cannot get a public key from {type(obj).__name__}")


def spki_der(cert_or_key: object) -> bytes:
    """DER SubjectPublicKeyInfo of a certificate (object, PEM or DER bytes), Leaf/CA or key."""
    return _public_key(cert_or_key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_pin(cert_or_key: object) -> str:
    """``"sha256/<base64>"`` of the SPKI: the HPKP pin, computed independently of certpin."""
    digest = hashlib.sha256(spki_der(cert_or_key)).digest()
    return "sha256/" + base64.b64encode(digest).decode("ascii")


def cert_sha256(cert: x509.Certificate | Leaf | CA | bytes) -> str:
    """Hex SHA-256 fingerprint of the whole DER certificate (for certificate pinning tests)."""
    if isinstance(cert, Leaf | CA):
        cert = cert.cert
    if isinstance(cert, x509.Certificate):
        cert = _der(cert)
    elif cert.lstrip().startswith(b"-----"):
        cert = _der(x509.load_pem_x509_certificate(cert))
    return hashlib.sha256(cert).hexdigest()


def pems(certs: Iterable[x509.Certificate | Leaf | CA]) -> bytes:
    """Concatenate certificates (or Leaf/CA objects) as PEM, e.g. for a cafile bundle."""
    out = []
    for c in certs:
        out.append(c.pem() if isinstance(c, Leaf | CA) else _pem(c))
    return b"".join(out)
