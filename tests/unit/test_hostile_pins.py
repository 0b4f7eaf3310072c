"""Hostile pin strings: `Pin.parse` returns a `Pin` or raises `PinFormatError`, in time linear in
the text, and reads at most `MAX_PIN_LENGTH` characters (docs/policy.md, "Limits")."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from certpin import Pin, PinFormatError, Policy, PolicyError
from certpin.core.pins import MAX_PIN_LENGTH

DIGEST = bytes(range(32))
B64 = base64.b64encode(DIGEST).decode()
HEX512 = ":".join(f"{b:02X}" for b in bytes(range(64)))


def _parse_or_error(text: Any) -> Pin | PinFormatError:
    try:
        pin = Pin.parse(text)
    except PinFormatError as exc:
        assert "\n" not in str(exc) or "\n" in str(text)
        return exc
    assert isinstance(pin, Pin)
    return pin


def test_the_longest_notation_fits_the_cap() -> None:
    longest = "SHA512 Fingerprint=" + HEX512  # openssl x509 -fingerprint -sha512
    assert len(longest) == 210 < MAX_PIN_LENGTH
    assert Pin.parse(longest).algorithm == "sha512"


def test_a_pin_longer_than_the_cap_is_refused_unparsed() -> None:
    padded = f"sha256/{B64}".center(MAX_PIN_LENGTH)
    assert Pin.parse(padded) == Pin(DIGEST)  # at the cap: surrounding blanks are stripped
    with pytest.raises(PinFormatError) as info:
        Pin.parse(padded + " ")
    message = str(info.value)
    assert f"is {MAX_PIN_LENGTH + 1} characters long; a pin has at most {MAX_PIN_LENGTH}" in message
    assert len(message) < 400  # the text is not echoed whole


def test_a_long_pin_in_a_policy_is_a_located_policy_error() -> None:
    doc = {"domains": {"a.example": {"pins": [f"sha256/{B64}", "pin-sha256=" + " " * 10**6]}}}
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(doc)
    assert info.value.location == 'domains."a.example".pins[1]'
    assert "characters long" in info.value.problem


@pytest.mark.parametrize(
    "value",
    [[["x"]], 10**5000, b"sha256/", 1.5, None, {"pin": 1}],
    ids=["nested-list", "huge-int", "bytes", "float", "none", "dict"],
)
def test_a_pin_that_is_not_a_string_is_described_not_printed(value: Any) -> None:
    with pytest.raises(PinFormatError, match="pin must be a string, got ") as info:
        Pin.parse(value)
    assert len(str(info.value)) < 200


# -- fuzz ------------------------------------------------------------------------------------------

_NOTATION_PARTS = st.sampled_from(
    [
        "sha256/",
        "sha256//",
        "cert-sha256/",
        "sha384/",
        "sha1/",
        "md5/",
        "pin-sha256=",
        'pin-sha256="',
        '"',
        "SHA256 Fingerprint=",
        "sha-256:",
        "fingerprint",
        B64,
        B64[:-1],
        "=",
        ":",
        "AB:",
        " ",
        "\t",
        "\n",
        "\u00a0",
        "/",
        "\x00",
    ]
)


@given(st.lists(_NOTATION_PARTS, max_size=12).map("".join))
@settings(max_examples=1000, deadline=None)
def test_fuzz_pin_notations(text: str) -> None:
    _parse_or_error(text)


@given(st.text(max_size=600))
@settings(max_examples=500, deadline=None)
def test_fuzz_arbitrary_text(text: str) -> None:
    _parse_or_error(text)


@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=8)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=6,
    )
)
@settings(max_examples=300, deadline=None)
def test_fuzz_values_that_are_not_strings(value: Any) -> None:
    assert isinstance(_parse_or_error(value), PinFormatError)


# -- time linear in the text -----------------------------------------------------------------------

#: texts whose parse could be quadratic: two optional runs of spaces one regex could split in
#: many ways (what HPKP and hex-prefix notations had before the fix), and plain long runs.
_HOSTILE = {
    "hpkp spaces": lambda n: "pin-sha256=" + " " * n + '"x"y',
    "hpkp unquoted": lambda n: "pin-sha256=  " + "A" * n + '"',
    "hex prefix spaces": lambda n: "sha1" + " " * n + "z",
    "hex prefix around fingerprint": lambda n: (
        "sha-1" + " " * (n // 2) + "fingerprint" + " " * (n // 2)
    ),
    "long base64": lambda n: "sha256/" + "A" * n,
    "long curl form": lambda n: "sha256//" + "/" * n,
    "long hex": lambda n: "AB:" * (n // 3),
}


@pytest.mark.parametrize("shape", sorted(_HOSTILE))
def test_parse_is_linear_up_to_the_cap(shape: str) -> None:
    # 400 pins of n characters: the total grows with n, so a parse quadratic in one pin's
    # length grows 64x over the 8x range while a linear one grows 8x.
    make = _HOSTILE[shape]
    assert_near_linear(
        lambda texts: [_parse_or_error(t) for t in texts],
        lambda n: [make(n)] * 400,
        base=(MAX_PIN_LENGTH - 32) // 8,  # the largest texts stay under the cap
    )
    assert len(make((MAX_PIN_LENGTH - 32) // 8 * 8)) <= MAX_PIN_LENGTH
