"""Is a certificate of a verified chain revoked? OCSP (RFC 6960) and CRLs (RFC 5280 §5-6.3).

For each certificate of the verified chain that has its issuer in the chain (every one but the
root), the sources are tried in order and the first *definitive* answer (good or revoked) wins:

1. the OCSP response the server stapled (leaf only; `certpin.lifecycle.staple` gets it);
2. the OCSP responder named in the certificate's Authority Information Access (POST, RFC 6960
   A.1; a SHA-1 CertID, as RFC 5019 §2.1.1 asks of clients);
3. the CRL distribution points (http/https; ldap is skipped).

An answer counts only when it verifies (`verify_ocsp`, `verify_crl`, in
`certpin.lifecycle.revocation_proofs`): an OCSP response signed by
the issuer itself or by a responder certificate the issuer issued with id-kp-OCSPSigning
(RFC 6960 §4.2.2.2), a CertID that names this certificate and issuer, thisUpdate not in the
future and nextUpdate not past (RFC 5019 §4: a response past nextUpdate is not used); a CRL
signed by the issuer, for the issuer's name, complete (no delta, no partition), current.

Nothing here ever says ``good`` without such an answer: no source is ``unknown``, sources that
could not be reached are ``unreachable``, a response that does not verify or says "unknown" is
``unknown`` with the reason. Every fetch goes through `certpin._io.http` with a timeout, a body
cap and what is left of one overall deadline. Verified responses are cached in-process until
their nextUpdate (`RevocationCache`, bounded), so a monitor round or many endpoints behind one
CA fetch a CRL once.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509

from certpin._io import http
from certpin.core.pins import Pin
from certpin.core.times import iso
from certpin.lifecycle.revocation_proofs import (
    SKEW,
    Answer,
    RevocationStatus,
    build_ocsp_request,
    crl_urls,
    ocsp_urls,
    verify_crl,
    verify_ocsp,
)

__all__ = [
    "DEADLINE",
    "MAX_CRL_SIZE",
    "MAX_OCSP_SIZE",
    "NEXT_STEP",
    "SKEW",
    "Answer",
    "Revocation",
    "RevocationCache",
    "RevocationStatus",
    "Staple",
    "build_ocsp_request",
    "check_chain",
    "crl_urls",
    "ocsp_urls",
    "revoked_pins",
    "verify_crl",
    "verify_ocsp",
]

Source = Literal["staple", "ocsp", "crl"]

#: seconds the revocation checks of one chain may take in all (each fetch is also bounded by
#: the caller's per-request timeout).
DEADLINE = 15.0
#: the largest OCSP response read (a real one is 300 bytes to a few kB).
MAX_OCSP_SIZE = 64 * 1024
#: the largest CRL read.
MAX_CRL_SIZE = 16 * 1024 * 1024
#: the playbook's step when a pinned certificate is revoked (docs/rotation.md).
NEXT_STEP = "rotate to the backup key (docs/rotation.md, 'The emergency exit')"


@dataclass(frozen=True)
class Revocation:
    """The revocation status of one certificate of a verified chain.

    Attributes:
        position: chain position (0 = leaf).
        subject: the certificate's subject (display).
        der: the certificate.
        status: ``good``, ``revoked``, ``unknown`` or ``unreachable`` — never ``good`` without a
            verified answer.
        source: ``staple``, ``ocsp`` or ``crl`` that gave `status`; None when none did.
        url: the responder or CRL URL of `source` (None for a staple).
        reason: why, in one sentence.
        tried: one line per source tried, in order (``staple: none stapled``, …).
    """

    position: int
    subject: str
    der: bytes = field(repr=False)
    status: RevocationStatus
    source: Source | None
    url: str | None
    reason: str
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    tried: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "subject": self.subject,
            "status": self.status,
            "source": self.source,
            "url": self.url,
            "reason": self.reason,
            "revoked_at": iso(self.revoked_at),
            "revocation_reason": self.revocation_reason,
            "this_update": iso(self.this_update),
            "next_update": iso(self.next_update),
            "tried": list(self.tried),
        }


@dataclass(frozen=True)
class Staple:
    """The server's stapled OCSP response for the leaf, or why there is none.

    Attributes:
        response: the DER OCSP response, or None.
        note: what happened (``none stapled``, ``not checked (pip install …)``, …).
    """

    response: bytes | None
    note: str


NO_STAPLE = Staple(None, "not requested")


# -- the cache ----------------------------------------------------------------------------------


class RevocationCache:
    """Verified OCSP responses and CRLs (DER) by URL and certificate, until their nextUpdate.

    Bounded: at most `size` entries, the oldest dropped first. Entries are re-verified on use
    (cheap), so the cache only saves the fetch. Thread-safe (the monitor checks in threads).
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._items: collections.OrderedDict[str, tuple[bytes, dt.datetime]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: str, now: dt.datetime) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if now > item[1]:
                del self._items[key]
                return None
            return item[0]

    def put(self, key: str, der: bytes, until: dt.datetime | None) -> None:
        if until is None:
            return  # no nextUpdate: not cacheable
        with self._lock:
            self._items[key] = (der, until)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


_CACHE = RevocationCache()


# -- fetching and deciding ----------------------------------------------------------------------


class _Clock:
    """One overall deadline shared by every fetch of a chain's check."""

    def __init__(self, timeout: float, deadline: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + deadline

    def left(self) -> float:
        return self.end - time.monotonic()


def _fetch(url: str, clock: _Clock, max_body: int, body: bytes | None = None) -> bytes:
    """GET (or POST `body` as an OCSP request) `url`; raises OSError with a short reason."""
    left = clock.left()
    if left <= 0:
        raise TimeoutError("the revocation deadline passed before this source was tried")
    context = ssl.create_default_context() if url.startswith("https://") else None
    headers = {"Accept": "application/ocsp-response" if body is not None else "*/*"}
    if body is not None:
        headers["Content-Type"] = "application/ocsp-request"
    try:
        answer = http.request(
            url,
            context=context,
            timeout=min(clock.timeout, left),
            max_body=max_body,
            method="POST" if body is not None else "GET",
            body=body,
            headers=headers,
            deadline=left,
        )
    except http.ERRORS as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
    if not answer.ok:
        raise OSError(f"HTTP {answer.status} {answer.reason}")
    if answer.truncated:
        raise OSError(f"the answer is larger than {max_body} bytes")
    return answer.body


def _key(kind: str, url: str, cert: x509.Certificate, issuer: x509.Certificate) -> str:
    if kind == "crl":
        return f"crl {url}"
    issuer_key = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    return f"ocsp {url} {base64.b64encode(issuer_key).decode()} {cert.serial_number}"


def _from_url(
    kind: Literal["ocsp", "crl"],
    url: str,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: dt.datetime,
    clock: _Clock,
    cache: RevocationCache,
) -> Answer:
    where = f"OCSP {url}" if kind == "ocsp" else f"CRL {url}"
    if not url.startswith(("http://", "https://")):
        return Answer("unreachable", f"{where}: only http and https are fetched")
    key = _key(kind, url, cert, issuer)
    verify = verify_ocsp if kind == "ocsp" else verify_crl
    cached = cache.get(key, now)
    if cached is not None:
        answer = verify(cached, cert, issuer, now, where)
        if answer.definitive:
            return answer
    try:
        if kind == "ocsp":
            der = _fetch(url, clock, MAX_OCSP_SIZE, build_ocsp_request(cert, issuer))
        else:
            der = _fetch(url, clock, MAX_CRL_SIZE)
    except OSError as exc:
        return Answer("unreachable", f"{where}: unreachable: {exc}")
    answer = verify(der, cert, issuer, now, where)
    if answer.definitive:
        cache.put(key, der, answer.next_update)
    return answer


def _check_one(
    position: int,
    cert_der: bytes,
    issuer_der: bytes,
    staple: Staple | None,
    now: dt.datetime,
    clock: _Clock,
    cache: RevocationCache,
) -> Revocation:
    cert = x509.load_der_x509_certificate(cert_der)
    issuer = x509.load_der_x509_certificate(issuer_der)
    subject = cert.subject.rfc4514_string()
    tried: list[str] = []
    answers: list[Answer] = []

    def done(answer: Answer, source: Source | None, url: str | None) -> Revocation:
        return Revocation(
            position,
            subject,
            cert_der,
            answer.status,
            source,
            url,
            answer.reason,
            answer.revoked_at,
            answer.revocation_reason,
            answer.this_update,
            answer.next_update,
            tuple(tried),
        )

    if staple is not None:
        if staple.response is None:
            tried.append(f"staple: {staple.note}")
        else:
            answer = verify_ocsp(staple.response, cert, issuer, now, "stapled OCSP")
            tried.append(answer.reason)
            if answer.definitive:
                return done(answer, "staple", None)
            answers.append(answer)
    sources: list[tuple[Literal["ocsp", "crl"], str]] = [("ocsp", u) for u in ocsp_urls(cert)]
    sources += [("crl", u) for u in crl_urls(cert)]
    for kind, url in sources:
        answer = _from_url(kind, url, cert, issuer, now, clock, cache)
        tried.append(answer.reason)
        if answer.definitive:
            return done(answer, kind, url)
        answers.append(answer)
    if not sources:
        tried.append("the certificate names no OCSP responder and no CRL distribution point")
    answered = [a for a in answers if a.status == "unknown"]
    if answered:
        return done(answered[-1], None, None)
    if answers:
        return done(
            Answer("unreachable", "no revocation source answered: " + answers[-1].reason),
            None,
            None,
        )
    return done(Answer("unknown", tried[-1]), None, None)


def check_chain(
    chain: Sequence[bytes],
    now: dt.datetime,
    *,
    staple: Staple | None = None,
    timeout: float = 5.0,
    deadline: float = DEADLINE,
    cache: RevocationCache | None = None,
) -> list[Revocation]:
    """The revocation status of every certificate of a *verified* chain but the last (the trust
    anchor has no issuer to ask): one `Revocation` per position, leaf first.

    Args:
        chain: the verified chain, leaf first (each certificate's issuer is the next one).
        now: the time the answers must be valid at.
        staple: the leaf's stapled response (`certpin.lifecycle.staple`), or None.
        timeout: seconds per socket operation of each fetch.
        deadline: seconds for all fetches together; sources not reached in time are
            ``unreachable``.
        cache: where verified answers are kept until nextUpdate (default: the process's).

    Never raises for a network or response problem: that is the certificate's status.
    """
    clock = _Clock(timeout, deadline)
    cache = _CACHE if cache is None else cache
    out = []
    for i in range(len(chain) - 1):
        out.append(
            _check_one(i, chain[i], chain[i + 1], staple if i == 0 else None, now, clock, cache)
        )
    return out


def revoked_pins(revocation: Revocation, pins: Sequence[Pin]) -> list[Pin]:
    """The pins among `pins` that name the revoked certificate (`Pin.matches`)."""
    if revocation.status != "revoked":
        return []
    return [pin for pin in pins if pin.matches(revocation.der)]


def alert(revocation: Revocation, pins: Sequence[Pin]) -> str | None:
    """The alert line for a revoked certificate that a pin covers, with the playbook's next
    step; None otherwise."""
    covering = revoked_pins(revocation, pins)
    if not covering:
        return None
    what = "leaf" if revocation.position == 0 else f"CA #{revocation.position}"
    return (
        f"the pinned {what} certificate {revocation.subject} is REVOKED "
        f"({revocation.reason}); pin {covering[0]} covers it: {NEXT_STEP}"
    )
