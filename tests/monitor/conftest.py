"""Fixtures for the endpoint monitor: policies, dead endpoints, a webhook receiver."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.pki import PKI, spki_pin
from monitor._helpers import WebhookReceiver, random_pin, write_policy


@pytest.fixture
def good_policy(tmp_path: Path, pki: PKI) -> Path:
    """127.0.0.1 pinned to ``pki``'s intermediate plus a backup pin."""
    rule = {"pins": [random_pin(), spki_pin(pki.intermediate)]}
    return write_policy(tmp_path / "good.json", {"127.0.0.1": rule})


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake but nobody ever answers the TLS one."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # never accept(): the backlog holds the connections, silent
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver
