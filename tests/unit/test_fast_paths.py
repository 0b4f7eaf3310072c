"""The loading fast paths (canonical pins and hosts, pre-validated rules) agree with the general
paths they shortcut, and refuse what those refuse."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certpin import DomainRule, Pin, PinFormatError, Policy, PolicyError
from certpin._hosts import Pattern, PatternKind, _parse_pattern, normalize_host
from certpin._pins import _parse, _parse_cached
from certpin._policy import _RuleBuilder

LABEL = st.from_regex(r"[a-z0-9_][a-z0-9_-]{0,10}[a-z_]|[a-z_]", fullmatch=True)


@given(st.lists(LABEL, min_size=1, max_size=5))
def test_canonical_host_fast_path_equals_general_path(labels: list[str]) -> None:
    host = ".".join(labels)
    # A trailing dot forces the general path; both readings name the same host.
    assert normalize_host(host) == normalize_host(host + ".") == host.strip(".")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),  # A-label: checked, general path
        ("API.example.com", "api.example.com"),
        ("example.co1", "example.co1"),  # ends in a digit: the address parse is tried first
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_non_canonical_hosts_take_the_general_path(host: str, expected: str) -> None:
    assert normalize_host(host) == expected


@pytest.mark.parametrize("host", ["xn--zz.example", "-a.example", "a-.example", "a" * 64 + ".com"])
def test_fast_path_does_not_admit_invalid_hosts(host: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(host)


@given(st.binary(min_size=32, max_size=32))
def test_canonical_pin_fast_path_equals_general_path(digest: bytes) -> None:
    text = "sha256/" + base64.b64encode(digest).decode()
    fast, general = _parse_cached.__wrapped__(text), _parse(text)
    assert fast == general == Pin(digest)
    assert type(fast) is Pin and hash(fast) == hash(Pin(digest))


# Characters around the fast path's edges: the alphabet, "=", URL-safe base64, whitespace,
# non-ASCII.
_EDGE = st.sampled_from(list("AEIMQUYcgkosw048BzZ09+/=-_ \n\té\u0660"))


@given(st.lists(_EDGE, min_size=44, max_size=44))
def test_pin_fast_path_accepts_and_refuses_exactly_what_the_parser_does(chars: list[str]) -> None:
    text = "sha256/" + "".join(chars)
    try:
        general: Pin | None = _parse(text)
    except PinFormatError:
        general = None
    if general is None:
        with pytest.raises(PinFormatError):
            _parse_cached.__wrapped__(text)
    else:
        assert _parse_cached.__wrapped__(text) == general


@pytest.mark.parametrize("last", "BCDFHJ")  # unused bits set: not canonical
def test_fast_path_leaves_non_canonical_pins_to_the_general_error(last: str) -> None:
    text = "sha256/" + "A" * 42 + last + "="
    with pytest.raises(PinFormatError, match="not canonical"):
        Pin.parse(text)


def test_pattern_builder_equals_the_dataclass() -> None:
    built = _parse_pattern.__wrapped__("*.Example.COM")
    assert built == Pattern("*.example.com", PatternKind.ONE_LABEL, "example.com")
    assert type(built) is Pattern
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.text = "x"  # type: ignore[misc]


def test_validated_rule_equals_a_rule_built_in_code() -> None:
    pins = (Pin(b"\x01" * 32), Pin(b"\x02" * 32))
    fast = _RuleBuilder("a.example", pins, (), (), True, None, False, ("https://r/",), True).done()
    slow = DomainRule(
        "a.example",
        pins=pins,
        include_subdomains=True,
        enforce=False,
        report_uris=("https://r/",),
        allow_single_pin=True,
    )
    # Every field (a new one missing from the builder would raise AttributeError here).
    for f in dataclasses.fields(DomainRule):
        assert getattr(fast, f.name) == getattr(slow, f.name), f.name
    assert fast == slow and hash(fast) == hash(slow) and type(fast) is DomainRule
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.enforce = True  # type: ignore[misc]


def test_from_dict_rules_equal_rules_built_in_code() -> None:
    a, b = str(Pin(b"\x01" * 32)), str(Pin(b"\x02" * 32))
    policy = Policy.from_dict({"domains": {"API.example.com": {"pins": [a, b]}}})
    assert policy.domains["api.example.com"] == DomainRule(
        "api.example.com", pins=(Pin.parse(a), Pin.parse(b))
    )


def test_code_built_rules_still_validate_themselves() -> None:
    with pytest.raises(PolicyError, match="backup pin"):
        DomainRule("a.example", pins=(Pin(b"\x01" * 32),))
    with pytest.raises(PolicyError, match="canonical form"):
        DomainRule("A.example", pins=(Pin(b"\x01" * 32), Pin(b"\x02" * 32)))


@pytest.mark.parametrize("flag", ["include_subdomains", "enforce", "allow_single_pin"])
def test_each_flag_is_named_when_not_a_boolean(flag: str) -> None:
    a, b = str(Pin(b"\x01" * 32)), str(Pin(b"\x02" * 32))
    with pytest.raises(PolicyError, match=rf'domains\."a\.example"\.{flag}.*got 1'):
        Policy.from_dict({"domains": {"a.example": {"pins": [a, b], flag: 1}}})


def test_the_same_pin_twice_is_no_backup() -> None:
    a = str(Pin(b"\x01" * 32))
    with pytest.raises(PolicyError, match="backup pin"):
        Policy.from_dict({"domains": {"a.example": {"pins": [a, a]}}})


def test_a_bad_pin_is_located_by_index() -> None:
    a, b = str(Pin(b"\x01" * 32)), str(Pin(b"\x02" * 32))
    with pytest.raises(PolicyError, match=r'domains\."a\.example"\.ca_pins\[2\]'):
        Policy.from_dict({"domains": {"a.example": {"ca_pins": [a, b, "sha256/nope"]}}})
