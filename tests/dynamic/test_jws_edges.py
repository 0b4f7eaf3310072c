"""Edges of the JWS helpers: key reading, messages about hostile values, low-S."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certpin import ConfigurationError
from certpin.dynamic.jws import TrustedKey, brief, low_s


def _public_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_pem_public_key_is_read() -> None:
    assert TrustedKey.from_pem(_public_pem()).kid


def test_der_is_refused_where_pem_is_expected() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigurationError, match="DER given"):
        TrustedKey.from_pem(der)


def test_two_keys_in_one_pem_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="expected one"):
        TrustedKey.from_pem(_public_pem() + _public_pem())


def test_brief_describes_a_huge_integer_without_printing_it() -> None:
    text = brief(10**400)
    assert text.startswith("an integer of about") and len(text) < 60
    assert brief(12345) == "12345"


def test_low_s_leaves_other_lengths_alone() -> None:
    assert low_s(b"\x01" * 10) == b"\x01" * 10
