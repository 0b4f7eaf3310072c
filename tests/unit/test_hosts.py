"""Host names: normalisation and policy-key patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certpin import normalize_host
from certpin.core.hosts import HostError, HostPattern, PatternKind, is_public_suffix

# -- normalize_host --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("API.Example.COM", "api.example.com"),
        ("api.example.com.", "api.example.com"),  # fully-qualified form names the same host
        ("  api.example.com  ", "api.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE.", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("a-b.example", "a-b.example"),
        ("1.2.3.4", "1.2.3.4"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8:0:0:0:0:0:1]", "2001:db8::1"),
        ("2001:db8:0::1", "2001:db8::1"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_normalize(host: str, expected: str) -> None:
    assert normalize_host(host) == expected


def test_u_label_and_a_label_are_equal() -> None:
    assert normalize_host("bücher.example") == normalize_host("xn--bcher-kva.example")


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("", "empty host name"),
        ("   ", "empty host name"),
        (".", "empty host name"),
        ("a..b", "empty label"),
        (".a", "empty label"),
        ("a.b..", "empty label"),
        ("-a.example", "invalid label '-a'"),
        ("a-.example", "invalid label 'a-'"),
        ("exa mple.com", "invalid label"),
        ("a/b.example", "invalid label"),
        ("a" * 64 + ".example", "invalid label"),  # RFC 1035: 63 octets per label
        (".".join(["a" * 50] * 5) + ".com", "longer than 253"),
        ("[example.com]", "only an IPv6 address may be in brackets"),
        ("[1.2.3.4]", "only an IPv6 address may be in brackets"),
        ("[]", "only an IPv6 address may be in brackets"),
        ("ex\u00e4mple" + "x" * 70 + ".com", "longer than 63"),  # RFC 1035 §2.3.4
        ("ex\u00e4mple\u200b.com", "not in the form"),  # nameprep maps U+200B to nothing
    ],
)
def test_normalize_rejects(host: str, problem: str) -> None:
    with pytest.raises(HostError, match=problem):
        normalize_host(host)


def test_longest_valid_name() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    assert len(name) == 253
    assert normalize_host(name + ".") == name
    with pytest.raises(HostError, match="longer than 253"):
        normalize_host(name + "b")


@pytest.mark.parametrize("value", [None, 1, b"example.com"])
def test_normalize_rejects_non_strings(value: object) -> None:
    with pytest.raises(HostError, match="host must be a string"):
        normalize_host(value)  # type: ignore[arg-type]


def test_host_error_is_value_error() -> None:
    assert issubclass(HostError, ValueError)


HOSTISH = st.text(alphabet=st.sampled_from("abcXYZ019-_.[]:üÜßé\u3002 "), max_size=40)


@given(st.one_of(st.text(max_size=40), HOSTISH))
def test_normalize_is_idempotent(host: str) -> None:
    try:
        once = normalize_host(host)
    except HostError:
        return
    assert normalize_host(once) == once
    assert once == once.lower()
    assert not once.endswith(".")


@given(
    st.from_regex(r"\A[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?(\.[A-Za-z0-9_]{1,10}){0,4}\.?\Z")
)
def test_normalize_is_case_insensitive(host: str) -> None:
    results = set()
    for spelling in (host, host.upper(), host.lower()):
        try:
            results.add(normalize_host(spelling))
        except HostError:
            results.add(None)  # refused ("a.0" is no IPv4 address): refused in every case
    assert len(results) == 1


@given(st.text(max_size=40))
def test_normalize_raises_only_host_error(host: str) -> None:
    try:
        result = normalize_host(host)
    except HostError:
        return
    assert isinstance(result, str) and result


# -- HostPattern ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "kind", "base"),
    [
        ("Example.COM.", "example.com", PatternKind.EXACT, "example.com"),
        ("*.Example.com", "*.example.com", PatternKind.ONE_LABEL, "example.com"),
        ("**.example.com.", "**.example.com", PatternKind.ANY_LABELS, "example.com"),
        (
            "*.bücher.example",
            "*.xn--bcher-kva.example",
            PatternKind.ONE_LABEL,
            "xn--bcher-kva.example",
        ),
        ("127.0.0.1", "127.0.0.1", PatternKind.EXACT, "127.0.0.1"),
        ("[::1]", "::1", PatternKind.EXACT, "::1"),
    ],
)
def test_pattern_parse(key: str, text: str, kind: PatternKind, base: str) -> None:
    assert HostPattern.parse(key) == HostPattern(text, kind, base)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("*", "wildcard is only allowed"),
        ("*.*.example.com", "wildcard is only allowed"),
        ("a.*.example.com", "wildcard is only allowed"),
        ("*example.com", "wildcard is only allowed"),
        ("***.example.com", "wildcard is only allowed"),
        ("*.", "empty host name"),
        ("**.", "empty host name"),
        ("*.1.2.3.4", "wildcards do not apply to IP addresses"),
        ("**.[::1]", "wildcards do not apply to IP addresses"),
        ("a..b", "empty label"),
    ],
)
def test_pattern_rejects(key: str, problem: str) -> None:
    with pytest.raises(HostError, match=problem):
        HostPattern.parse(key)


def test_pattern_rejects_non_string() -> None:
    with pytest.raises(HostError, match="domain key must be a string"):
        HostPattern.parse(5)  # type: ignore[arg-type]


# -- public suffixes -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["com", "uk", "co.uk", "github.io", "herokuapp.com", "localhost"])
def test_public_suffixes(host: str) -> None:
    assert is_public_suffix(host)


@pytest.mark.parametrize("host", ["example.com", "example.co.uk", "me.github.io", "uk.example"])
def test_not_public_suffixes(host: str) -> None:
    assert not is_public_suffix(host)


@pytest.mark.parametrize(
    "host", ["faß.example", "ςa.example", "a\u200db.example", "a\u200cb.example"]
)
def test_idna_deviation_characters_refused(host: str) -> None:
    # IDNA 2003 maps ß to "ss", IDNA 2008 keeps it (xn--fa-hia): clients would disagree.
    with pytest.raises(HostError, match="A-label"):
        normalize_host(host)


def test_deviation_a_label_is_the_way_to_write_it() -> None:
    assert normalize_host("XN--FA-HIA.example") == "xn--fa-hia.example"


@pytest.mark.parametrize("host", ["xn--zz.example", "xn--.example", "xn--abc-.example"])
def test_invalid_a_labels_refused(host: str) -> None:
    with pytest.raises(HostError, match="A-label"):
        normalize_host(host)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "example.com"),
        ("example.com", "example.com"),
        ("*.api.example.co.uk", "example.co.uk"),
        ("**.example.github.io", "example.github.io"),
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("API.Bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_registrable_domain(host: str, expected: str) -> None:
    from certpin.core.hosts import registrable_domain

    assert registrable_domain(host) == expected
