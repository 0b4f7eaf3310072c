"""The platforms' lenient readings (certpin.formats._lenient), each with its failing twin."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from certpin import Pin
from certpin.formats import FormatError, ImportOptions
from certpin.formats._common import Notes
from certpin.formats._lenient import (
    did_you_mean,
    expired,
    placeholder_reason,
    platform_pin,
    unmatchable_domain,
)

PLATFORMS = ("android", "okhttp", "apple", "trustkit")
REAL = "7HIpactkIAq2Y49orFOOQKurWxmmSFZhBCoQYcRhJ3Y="


def _decode(text: str, platform: str) -> tuple[Pin, list[str]]:
    notes = Notes()
    pin = platform_pin(
        text, platform=platform, notes=notes, where="f.xml: line 3", source="f.xml", location="x"
    )
    return pin, notes.items


@pytest.mark.parametrize("platform", PLATFORMS)
def test_canonical_base64_decodes_without_a_warning(platform: str) -> None:
    pin, warnings = _decode(REAL, platform)
    assert str(pin) == "sha256/" + REAL
    assert warnings == []


@given(st.binary(min_size=32, max_size=32))
def test_every_digest_round_trips_on_every_platform(digest: bytes) -> None:
    text = base64.b64encode(digest).decode()
    for platform in PLATFORMS:
        assert _decode(text, platform) == (Pin(digest), [])


def test_unused_bits_are_dropped_with_a_warning_naming_the_canonical_form() -> None:
    # "B" * 43 + "=": the last digit carries 2 bits the decoder drops ("BBB…BA=" is canonical).
    text = "B" * 43 + "="
    for platform in PLATFORMS:
        pin, warnings = _decode(text, platform)
        assert pin.base64 == "B" * 42 + "A="
        assert len(warnings) == 1
        assert warnings[0].startswith("f.xml: line 3: pin 'BBBB")
        assert "B" * 42 + "A=" in warnings[0]


@pytest.mark.parametrize("platform", ["android", "okhttp"])
def test_missing_padding_is_accepted_where_the_platform_accepts_it(platform: str) -> None:
    pin, warnings = _decode(REAL.rstrip("="), platform)
    assert pin.base64 == REAL
    assert len(warnings) == 1


@pytest.mark.parametrize("platform", ["apple", "trustkit"])
def test_missing_padding_is_refused_where_the_platform_refuses_it(platform: str) -> None:
    with pytest.raises(FormatError, match="padding missing") as info:
        _decode(REAL.rstrip("="), platform)
    assert info.value.source == "f.xml"
    assert info.value.location == "x"


def test_android_skips_characters_outside_the_alphabet() -> None:
    # android.util.Base64: whitespace, "-", "_" and non-ASCII are skipped, not refused.
    text = REAL[:10] + " \n-_é" + REAL[10:]
    pin, warnings = _decode(text, "android")
    assert pin.base64 == REAL and len(warnings) == 1
    # okio refuses "é" (and reads "-"/"_" as digits); NSData refuses all of them.
    for platform in ("okhttp", "apple"):
        with pytest.raises(FormatError, match="not base64"):
            _decode(text, platform)


def test_okhttp_reads_the_url_safe_alphabet() -> None:
    digest = bytes([0xFB, 0xFF] * 16)
    url_safe = base64.urlsafe_b64encode(digest).decode()
    assert "-" in url_safe or "_" in url_safe
    assert _decode(url_safe, "okhttp")[0] == Pin(digest)
    # The twin: android skips "-" and "_", so the digest comes out short and the file fails.
    with pytest.raises(FormatError, match="decodes to 8 bytes"):
        _decode(url_safe, "android")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("AAAA=AAA", "'=' where a base64 digit"),
        ("A" * 42 + "=", "one '='"),
        (REAL + "A", "after the '=' padding"),
        ("A" * 41, "single base64 digit"),
    ],
)
def test_android_refuses_what_android_util_base64_refuses(text: str, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        _decode(text, "android")


def test_wrong_length_is_an_error_saying_what_the_platform_does() -> None:
    short = base64.b64encode(b"x" * 20).decode()
    with pytest.raises(FormatError, match="20 bytes.*Android rejects the file"):
        _decode(short, "android")
    with pytest.raises(FormatError, match="20 bytes.*can never match"):
        _decode(short, "okhttp")


def test_unknown_platform_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown platform"):
        _decode(REAL, "windows")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_decoders_are_linear(platform: str) -> None:
    def run(text: str) -> None:
        _decode(text, platform)

    assert_near_linear(run, lambda n: "A" * (n * 4) + " ", base=20_000)


# -- placeholders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "empty input"),
        ("A" * 43 + "=", "all zero bytes"),
        ("B" * 42 + "A=", "one repeated character"),
        ("/" * 42 + "8=", "one repeated character"),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopo=", "consecutive characters"),
        ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg=", "consecutive characters"),
        ("abcdABCDabcdABCDabcdABCDabcdABCDabcdABCDabc=", "short pattern"),
        (base64.b64encode(b"0123456789abcdef" * 2).decode(), "byte pattern"),
        (base64.b64encode(bytes(range(32))).decode(), "consecutive bytes"),
        (base64.b64encode(b"\x07" * 32).decode(), "one repeated"),
    ],
)
def test_placeholders_are_recognised(text: str, why: str) -> None:
    reason = placeholder_reason(Pin.parse("sha256/" + text))
    assert reason is not None and why in reason


def test_real_digests_are_not_placeholders() -> None:
    assert placeholder_reason(Pin.parse("sha256/" + REAL)) is None
    assert placeholder_reason(Pin(hashlib.sha256(b"a key").digest())) is None
    for _ in range(2000):
        assert placeholder_reason(Pin(os.urandom(32))) is None


# -- names, domains, expiry -----------------------------------------------------------------------


def test_did_you_mean() -> None:
    known = ["includeSubdomains", "expiration", "digest"]
    assert did_you_mean("includeSubDomains", known) == ' (did you mean "includeSubdomains"?)'
    assert did_you_mean("expiraton", known) == ' (did you mean "expiration"?)'
    assert did_you_mean("overridePins", known) == ""
    assert did_you_mean("digest", known) == ""
    assert did_you_mean("x" * 100_000, known) == ""


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("", "empty"),
        ("api.example.com/", "trailing '/'"),
        ("api.example.com/v1", "path"),
        ("https://api.example.com", "scheme"),
        ("api.example.com:443", "port"),
        ("api .example.com", "whitespace"),
        ("*.example.com", "wildcard"),
        ("api.example.com.", "ends with '.'"),
        (".example.com", "empty label"),
        ("api..example.com", "empty label"),
        ("bücher.example", "'ü'"),
        ("[::1]", "brackets"),
    ],
)
def test_unmatchable_domains(domain: str, why: str) -> None:
    reason = unmatchable_domain(domain)
    assert reason is not None and why in reason


@pytest.mark.parametrize(
    "domain",
    ["api.example.com", "API.Example.COM", "xn--bcher-kva.example", "10.0.0.1", "::1", "a_b.c"],
)
def test_matchable_domains(domain: str) -> None:
    assert unmatchable_domain(domain) is None


def test_expired_is_on_or_before_today() -> None:
    today = dt.date(2026, 3, 1)
    options = ImportOptions(today=today)
    assert expired(dt.date(2026, 2, 28), options)
    assert expired(today, options)
    assert not expired(dt.date(2026, 3, 2), options)
    # The default is the current UTC date.
    assert expired(dt.date(2000, 1, 1), ImportOptions())
    assert not expired(dt.date(9999, 1, 1), ImportOptions())
