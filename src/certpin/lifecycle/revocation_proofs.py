"""Verifying what a revocation source says about one certificate: OCSP responses (RFC 6960)
and CRLs (RFC 5280 §5-6.3), and reading a certificate's sources (AIA OCSP, CRL distribution
points). Pure: bytes in, an `Answer` out; `certpin.lifecycle.revocation` fetches, caches and
combines the answers (its docstring says what counts).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from certpin.core.times import iso

__all__ = [
    "SKEW",
    "Answer",
    "RevocationStatus",
    "build_ocsp_request",
    "crl_urls",
    "ocsp_urls",
    "verify_crl",
    "verify_ocsp",
]

RevocationStatus = Literal["good", "revoked", "unknown", "unreachable"]

#: clock skew allowed on thisUpdate/nextUpdate.
SKEW = dt.timedelta(minutes=5)
#: without nextUpdate, how old thisUpdate may be (RFC 5019 §4 leaves it to the client).
_NO_NEXT_UPDATE_AGE = dt.timedelta(days=1)


@dataclass(frozen=True)
class Answer:
    """What one source said about one certificate (before the sources are combined).

    Attributes:
        status: good/revoked/unknown (a source that answered), unreachable (it did not).
        reason: one sentence, naming the source.
        revoked_at, revocation_reason: for ``revoked``.
        this_update, next_update: the validity window of the answer, when it verified.
    """

    status: RevocationStatus
    reason: str
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None

    @property
    def definitive(self) -> bool:
        return self.status in ("good", "revoked")


# -- what a certificate says --------------------------------------------------------------------


def _ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The OCSP responder URLs of the certificate's Authority Information Access."""
    aia = _ext(cert, x509.AuthorityInformationAccess)
    if aia is None:
        return []
    return [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The URI full names of the certificate's CRL distribution points (any scheme)."""
    cdp = _ext(cert, x509.CRLDistributionPoints)
    if cdp is None:
        return []
    out = []
    for point in cdp:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                out.append(name.value)
    return out


def build_ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """A DER OCSP request for `cert` with a SHA-1 CertID (RFC 5019 §2.1.1), no nonce (RFC 5019
    §2.1.2: responders answer from pre-signed responses)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


# -- verifying an OCSP response -----------------------------------------------------------------


def _verify_signature(
    public_key: Any, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None
) -> None:
    """Raise InvalidSignature/UnsupportedAlgorithm unless `signature` by `public_key` verifies."""
    if isinstance(public_key, rsa.RSAPublicKey) and algorithm is not None:
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and algorithm is not None:
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, data)
    else:
        raise UnsupportedAlgorithm(f"signature by a {type(public_key).__name__} key")


def _responder_matches(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    # KeyHash: SHA-1 of the subjectPublicKey BIT STRING value (RFC 6960 §4.2.1), which is
    # exactly RFC 5280 §4.2.1.2's method (1) subject key identifier.
    digest = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    return response.responder_key_hash == digest


def _signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime
) -> tuple[x509.Certificate | None, str]:
    """The certificate that may sign this response: the issuer, or a responder certificate the
    issuer issued for OCSP signing (RFC 6960 §4.2.2.2). (None, why) when there is none."""
    if _responder_matches(response, issuer):
        return issuer, "the issuer"
    for cert in response.certificates:
        if not _responder_matches(response, cert):
            continue
        if cert.issuer != issuer.subject:
            return None, f"the responder {cert.subject.rfc4514_string()} was not issued by the CA"
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return None, f"the responder {cert.subject.rfc4514_string()} is not signed by the CA"
        eku = _ext(cert, x509.ExtendedKeyUsage)
        if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return None, (
                f"the responder {cert.subject.rfc4514_string()} lacks id-kp-OCSPSigning: "
                "it may not sign for the CA"
            )
        if not cert.not_valid_before_utc - SKEW <= now <= cert.not_valid_after_utc + SKEW:
            return None, f"the responder {cert.subject.rfc4514_string()} is not valid now"
        return cert, f"the delegated responder {cert.subject.rfc4514_string()}"
    return None, "signed by neither the issuer nor a responder certificate it delegated to"


def _cert_id_matches(
    single: ocsp.OCSPSingleResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> bool:
    if single.serial_number != cert.serial_number:
        return False
    try:
        # The builder computes the CertID hashes (issuer name, issuer key) for this algorithm.
        ask = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, single.hash_algorithm)
        request = ask.build()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return (
        request.issuer_name_hash == single.issuer_name_hash
        and request.issuer_key_hash == single.issuer_key_hash
    )


def _revoked(
    where: str,
    at: dt.datetime | None,
    reason_flag: x509.ReasonFlags | None,
    by: str,
    window: dict[str, Any],
) -> Answer:
    """The ``revoked`` answer of a verified OCSP response or CRL: `by` says which, `window`
    holds its ``this_update`` and ``next_update``."""
    reason = None if reason_flag is None else reason_flag.value
    because = f" ({reason})" if reason else ""
    return Answer(
        "revoked",
        f"{where}: REVOKED at {iso(at)}{because} ({by})",
        revoked_at=at,
        revocation_reason=reason,
        **window,
    )


def _window(
    this_update: dt.datetime, next_update: dt.datetime | None, now: dt.datetime, what: str
) -> str | None:
    """Why the thisUpdate/nextUpdate window does not contain `now`, or None when it does."""
    if this_update > now + SKEW:
        return f"{what} is not valid yet (thisUpdate {iso(this_update)})"
    if next_update is None:
        if now - this_update > _NO_NEXT_UPDATE_AGE:
            return f"{what} has no nextUpdate and is older than a day ({iso(this_update)})"
    elif now > next_update + SKEW:
        return f"{what} expired (nextUpdate {iso(next_update)})"
    return None


def verify_ocsp(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: dt.datetime,
    where: str,
) -> Answer:
    """What a DER OCSP response says about `cert` — ``unknown`` unless it verifies (module
    docstring). `where` names the source in the reason (``OCSP http://…``, ``stapled OCSP``)."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        return Answer("unknown", f"{where}: not an OCSP response ({exc})")
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return Answer("unknown", f"{where}: the responder answered {response.response_status.name}")
    try:
        signer, who = _signer(response, issuer, now)
        if signer is None:
            return Answer("unknown", f"{where}: response rejected: {who}")
        try:
            _verify_signature(
                signer.public_key(),
                response.signature,
                response.tbs_response_bytes,
                response.signature_hash_algorithm,
            )
        except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
            return Answer("unknown", f"{where}: response rejected: bad signature by {who}")
        for single in response.responses:
            if _cert_id_matches(single, cert, issuer):
                break
        else:
            return Answer("unknown", f"{where}: the response is about another certificate")
    except ValueError as exc:  # Defensive: a field cryptography cannot decode
        return Answer("unknown", f"{where}: malformed response ({exc})")
    this_update, next_update = single.this_update_utc, single.next_update_utc
    stale = _window(this_update, next_update, now, f"{where}: the response")
    if stale is not None:
        return Answer("unknown", stale)
    status = single.certificate_status
    window: dict[str, Any] = {"this_update": this_update, "next_update": next_update}
    if status is ocsp.OCSPCertStatus.GOOD:
        return Answer("good", f"{where}: good (signed by {who})", **window)
    if status is ocsp.OCSPCertStatus.REVOKED:
        return _revoked(
            where,
            single.revocation_time_utc,
            single.revocation_reason,
            f"signed by {who}",
            window,
        )
    return Answer("unknown", f"{where}: the responder does not know this certificate", **window)


# -- verifying a CRL ----------------------------------------------------------------------------


def verify_crl(
    der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime, where: str
) -> Answer:
    """What a DER (or PEM) CRL says about `cert` — ``unknown`` unless it verifies."""
    try:
        if der.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(der)
        else:
            crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        return Answer("unknown", f"{where}: not a CRL ({exc})")
    if crl.issuer != cert.issuer:
        return Answer("unknown", f"{where}: the CRL is issued by {crl.issuer.rfc4514_string()}")
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        return Answer("unknown", f"{where}: the CRL is not signed by the issuer")
    try:
        extensions = crl.extensions
    except ValueError as exc:
        return Answer("unknown", f"{where}: malformed CRL extensions ({exc})")
    for ext in extensions:
        if isinstance(ext.value, x509.DeltaCRLIndicator):
            return Answer("unknown", f"{where}: a delta CRL is not a complete list")
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            idp = ext.value
            partial = (
                idp.indirect_crl
                or idp.only_some_reasons is not None
                or idp.only_contains_attribute_certs
                or (idp.only_contains_ca_certs and not _is_ca(cert))
                or (idp.only_contains_user_certs and _is_ca(cert))
            )
            if partial:
                return Answer("unknown", f"{where}: the CRL does not cover this certificate")
        elif ext.critical:
            return Answer(
                "unknown", f"{where}: unknown critical CRL extension {ext.oid.dotted_string}"
            )
    last, next_ = crl.last_update_utc, crl.next_update_utc
    if next_ is None:
        return Answer("unknown", f"{where}: the CRL has no nextUpdate")
    stale = _window(last, next_, now, f"{where}: the CRL")
    if stale is not None:
        return Answer("unknown", stale)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    window: dict[str, Any] = {"this_update": last, "next_update": next_}
    if entry is None:
        return Answer("good", f"{where}: not on the issuer's CRL", **window)
    reason_ext = None
    try:
        reason_ext = entry.extensions.get_extension_for_class(x509.CRLReason).value
    except (x509.ExtensionNotFound, ValueError):
        pass
    return _revoked(
        where,
        entry.revocation_date_utc,
        None if reason_ext is None else reason_ext.reason,
        "on the issuer's CRL",
        window,
    )


def _is_ca(cert: x509.Certificate) -> bool:
    bc = _ext(cert, x509.BasicConstraints)
    return bool(bc is not None and bc.ca)
