"""Shared fixtures: throwaway PKIs and loopback TLS servers (see tests/_support/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.pki import PKI, PKIFiles, make_pki, write_pki_files
from _support.servers import TLSServer

_ENV_VARS = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    *(
        name
        for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
        for name in (base, base.lower())
    ),
)


@pytest.fixture(autouse=True)
def _clean_tls_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may pick up the developer's CA bundle or proxy settings."""
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pki() -> PKI:
    """root -> intermediate -> leaf for localhost and 127.0.0.1 (P-256)."""
    return make_pki()


@pytest.fixture
def rogue_pki() -> PKI:
    """An unrelated PKI for the same hostnames: what a MITM would present."""
    return make_pki(root_name="Rogue Root CA", intermediate_name="Rogue Intermediate")


@pytest.fixture
def tmp_pki_files(pki: PKI, tmp_path: Path) -> PKIFiles:
    """``pki`` on disk: ``.root_ca``, ``.certfile`` (leaf+intermediate), ``.keyfile``."""
    return write_pki_files(pki, tmp_path / "pki")


@pytest.fixture
def rogue_pki_files(rogue_pki: PKI, tmp_path: Path) -> PKIFiles:
    return write_pki_files(rogue_pki, tmp_path / "rogue-pki")


@pytest.fixture
def server(tmp_pki_files: PKIFiles) -> Iterator[TLSServer]:
    """HTTPS server on 127.0.0.1 serving ``pki``'s leaf + intermediate (root not sent)."""
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as srv:
        yield srv


@pytest.fixture
def rogue_server(rogue_pki_files: PKIFiles) -> Iterator[TLSServer]:
    """HTTPS server on 127.0.0.1 serving ``rogue_pki``'s leaf + intermediate."""
    with TLSServer(rogue_pki_files.certfile, rogue_pki_files.keyfile) as srv:
        yield srv
