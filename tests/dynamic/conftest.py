"""Fixtures for dynamic pinning: signing keys, policies, a real HTTPS bundle server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _dyn import BACKUP, BundleHost, policy_doc

from _support.pki import PKI, PKIFiles, make_pki, spki_pin, write_pki_files
from certpin import Policy
from certpin.dynamic import FileSigner
from certpin.dynamic.jws import generate_private_key


@pytest.fixture(params=["ES256", "Ed25519"])
def signer(request: pytest.FixtureRequest) -> FileSigner:
    return FileSigner(generate_private_key(request.param))


@pytest.fixture
def es256() -> FileSigner:
    return FileSigner(generate_private_key("ES256"))


@pytest.fixture(scope="session")
def bundle_pki() -> PKI:
    return make_pki(
        ("localhost", "127.0.0.1"), root_name="Bundle Root", intermediate_name="Bundle CA"
    )


@pytest.fixture
def bundle_files(bundle_pki: PKI, tmp_path: Path) -> PKIFiles:
    return write_pki_files(bundle_pki, tmp_path / "bundle-pki")


@pytest.fixture
def bundle_host(bundle_files: PKIFiles, tmp_path: Path) -> Iterator[BundleHost]:
    directory = tmp_path / "www"
    directory.mkdir()
    host = BundleHost(bundle_files, directory)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def bootstrap(bundle_pki: PKI) -> Policy:
    """The static fallback: pins the bundle host (localhost) to its intermediate + a backup."""
    return Policy.from_dict(
        policy_doc({"localhost": [spki_pin(bundle_pki.intermediate.cert), BACKUP]}),
        source="bootstrap",
    )
