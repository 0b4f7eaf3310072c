"""Revocation checks against real parts on loopback: ``openssl ocsp``, ``openssl s_server
-status_file`` and a CRL over HTTP. Every passing case has its failing twin."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from certpin.lifecycle.revocation import (
    RevocationCache,
    Staple,
    check_chain,
    verify_ocsp,
)
from certpin.lifecycle.staple import check_live, fetch_staple
from lifecycle._revocation import (
    CA,
    OPENSSL,
    CRLServer,
    free_port,
    ocsp_responder,
    ocsp_response_file,
    tls_server,
)

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def _now() -> dt.datetime:
    # Read per use: `openssl ocsp` stamps its answers with the real time, and a whole-suite run
    # outlasts the 5 minutes of skew allowed around it.
    return dt.datetime.now(dt.UTC)


def _check(leaf_der: bytes, ca: CA, now: dt.datetime | None = None, **kw: object):  # type: ignore[no-untyped-def]
    (result,) = check_chain(
        [leaf_der, ca.der], now or _now(), cache=RevocationCache(), timeout=5, **kw
    )  # type: ignore[arg-type]
    return result


# -- OCSP responder --------------------------------------------------------------------------


@pytest.mark.parametrize("revoked", [False, True])
def test_ocsp_good_and_revoked(tmp_path: Path, revoked: bool) -> None:
    ca, port = CA(), free_port()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{port}/")
    lists = {"revoked": [leaf.cert]} if revoked else {"good": [leaf.cert]}
    with ocsp_responder(tmp_path, ca, port=port, **lists):  # type: ignore[arg-type]
        result = _check(leaf.der, ca)
    assert result.source == "ocsp"
    if revoked:
        assert result.status == "revoked"
        assert result.revocation_reason == "keyCompromise"
        assert result.revoked_at is not None
    else:
        assert result.status == "good"
        assert result.next_update is not None


def test_ocsp_unknown_certificate(tmp_path: Path) -> None:
    ca, port = CA(), free_port()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{port}/")
    other = ca.issue()
    with ocsp_responder(tmp_path, ca, port=port, good=[other.cert]):
        result = _check(leaf.der, ca)
    assert result.status == "unknown"
    assert "does not know this certificate" in result.reason


def test_ocsp_expired_response_is_not_good(tmp_path: Path) -> None:
    """The responder's answer is good but its nextUpdate (1 day) has passed at `now`."""
    ca, port = CA(), free_port()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{port}/")
    with ocsp_responder(tmp_path, ca, port=port, good=[leaf.cert], ndays=1):
        fresh = _check(leaf.der, ca)
        later = _check(leaf.der, ca, now=_now() + dt.timedelta(days=2))
    assert fresh.status == "good"
    assert later.status == "unknown"
    assert "expired (nextUpdate" in later.reason


@pytest.mark.parametrize("signer_kind", ["delegated", "other-ca", "no-eku"])
def test_ocsp_signer(tmp_path: Path, signer_kind: str) -> None:
    ca, port = CA(), free_port()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{port}/")
    if signer_kind == "delegated":
        signer = ca.issue("OCSP responder", ocsp_signing=True)
    elif signer_kind == "other-ca":
        signer = CA("Rogue CA").issue("OCSP responder", ocsp_signing=True)
    else:
        signer = ca.issue("not a responder")  # serverAuth only
    with ocsp_responder(tmp_path, ca, port=port, good=[leaf.cert], signer=signer):
        result = _check(leaf.der, ca)
    if signer_kind == "delegated":
        assert result.status == "good"
        assert "delegated responder" in result.reason
    else:
        assert result.status == "unknown"
        assert "response rejected" in result.reason


def test_ocsp_unreachable_is_not_good(tmp_path: Path) -> None:
    ca = CA()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{free_port()}/")
    result = _check(leaf.der, ca)
    assert result.status == "unreachable"
    assert "unreachable" in result.reason


def test_no_source_is_unknown() -> None:
    ca = CA()
    result = _check(ca.issue().der, ca)
    assert result.status == "unknown"
    assert "no OCSP responder" in result.reason


def test_response_for_another_certificate_is_rejected(tmp_path: Path) -> None:
    ca = CA()
    leaf, other = ca.issue(), ca.issue()
    der = ocsp_response_file(tmp_path, ca, other).read_bytes()
    answer = verify_ocsp(der, leaf.cert, ca.cert, _now(), "stapled OCSP")
    assert answer.status == "unknown" and "another certificate" in answer.reason
    assert verify_ocsp(der, other.cert, ca.cert, _now(), "stapled OCSP").status == "good"


def test_deadline_bounds_a_silent_responder(tmp_path: Path) -> None:
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        ca = CA()
        leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{silent.getsockname()[1]}/")
        start = time.monotonic()
        (result,) = check_chain([leaf.der, ca.der], _now(), timeout=30, deadline=1.0)
        assert time.monotonic() - start < 5
    finally:
        silent.close()
    assert result.status == "unreachable"


# -- CRL over HTTP -----------------------------------------------------------------------------


@pytest.mark.parametrize("revoked", [False, True])
def test_crl_good_and_revoked(revoked: bool) -> None:
    ca = CA()
    with CRLServer() as server:
        leaf = ca.issue(crl_url=server.url())
        server.files["/ca.crl"] = ca.crl([leaf.cert] if revoked else [])
        result = _check(leaf.der, ca)
    assert result.source == "crl"
    assert result.status == ("revoked" if revoked else "good")


def test_crl_wrong_signer_and_expired_are_not_good() -> None:
    ca, rogue = CA(), CA("Rogue")
    with CRLServer() as server:
        leaf = ca.issue(crl_url=server.url())
        server.files["/ca.crl"] = ca.crl([], signer=rogue.key)
        wrong = _check(leaf.der, ca)
        server.files["/ca.crl"] = ca.crl([], next_update=_now() - dt.timedelta(minutes=10))
        expired = _check(leaf.der, ca)
        del server.files["/ca.crl"]
        missing = _check(leaf.der, ca)
    assert wrong.status == "unknown" and "not signed by the issuer" in wrong.reason
    assert expired.status == "unknown" and "expired" in expired.reason
    assert missing.status == "unreachable" and "HTTP 404" in missing.reason


def test_crl_is_cached_until_next_update() -> None:
    ca = CA()
    cache = RevocationCache()
    with CRLServer() as server:
        leaf = ca.issue(crl_url=server.url())
        server.files["/ca.crl"] = ca.crl([], next_update=_now() + dt.timedelta(hours=2))
        for _ in range(3):
            check_chain([leaf.der, ca.der], _now(), cache=cache)
        assert server.requests == 1
        # past its nextUpdate the cached CRL is not used: fetched again
        check_chain([leaf.der, ca.der], _now() + dt.timedelta(hours=3), cache=cache)
        assert server.requests == 2


def test_ocsp_first_then_crl(tmp_path: Path) -> None:
    """An unreachable responder falls through to the CRL, which decides."""
    ca = CA()
    with CRLServer() as server:
        leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{free_port()}/", crl_url=server.url())
        server.files["/ca.crl"] = ca.crl([leaf.cert])
        result = _check(leaf.der, ca)
    assert result.status == "revoked" and result.source == "crl"
    assert any("unreachable" in line for line in result.tried)


# -- stapled response (openssl s_server -status_file) -----------------------------------------


@pytest.mark.parametrize("revoked", [False, True])
def test_staple_decides(tmp_path: Path, revoked: bool) -> None:
    pytest.importorskip("OpenSSL", reason="the revocation extra (pyOpenSSL) is not installed")
    ca = CA()
    # The AIA responder does not exist: only the staple can answer.
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{free_port()}/")
    status = ocsp_response_file(tmp_path, ca, leaf, revoked=revoked)
    with tls_server(tmp_path, ca, leaf, status_file=status) as port:
        results = check_live("127.0.0.1", port, "localhost", [leaf.der, ca.der], _now(), timeout=5)
    (result,) = results
    assert result.source == "staple"
    assert result.status == ("revoked" if revoked else "good")


def test_no_staple_falls_back_and_is_not_good(tmp_path: Path) -> None:
    pytest.importorskip("OpenSSL", reason="the revocation extra (pyOpenSSL) is not installed")
    ca = CA()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{free_port()}/")
    with tls_server(tmp_path, ca, leaf) as port:
        staple = fetch_staple("127.0.0.1", port, "localhost", 5)
        (result,) = check_live(
            "127.0.0.1", port, "localhost", [leaf.der, ca.der], _now(), timeout=5
        )
    assert staple == Staple(None, "none stapled")
    assert result.status == "unreachable"
    assert result.tried[0] == "staple: none stapled"


def test_staple_signed_by_a_stranger_is_rejected(tmp_path: Path) -> None:
    pytest.importorskip("OpenSSL", reason="the revocation extra (pyOpenSSL) is not installed")
    ca = CA()
    leaf = ca.issue(ocsp_url=f"http://127.0.0.1:{free_port()}/")
    rogue = CA("Rogue").issue("OCSP responder", ocsp_signing=True)
    status = ocsp_response_file(tmp_path, ca, leaf, signer=rogue)
    with tls_server(tmp_path, ca, leaf, status_file=status) as port:
        (result,) = check_live(
            "127.0.0.1", port, "localhost", [leaf.der, ca.der], _now(), timeout=5
        )
    assert result.status != "good"
    assert "response rejected" in result.tried[0]


def test_staple_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "OpenSSL", None)
    staple = fetch_staple("127.0.0.1", free_port(), "localhost", 1)
    assert staple.note == "not checked (pip install certpin[revocation])"
