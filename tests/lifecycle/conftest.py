"""Fixtures for the lifecycle tests: the PKI's chain on disk, spare keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support.pki import PKIFiles


@pytest.fixture
def chain_args(tmp_pki_files: PKIFiles) -> list[str]:
    """``--chain localhost=<leaf+intermediate> --cafile <root>``: the root is not in the file."""
    return [
        "--chain",
        f"localhost={tmp_pki_files.certfile}",
        "--cafile",
        str(tmp_pki_files.root_ca),
    ]


@pytest.fixture
def root_ca(tmp_pki_files: PKIFiles) -> Path:
    return tmp_pki_files.root_ca


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
