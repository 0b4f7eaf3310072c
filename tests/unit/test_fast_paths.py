"""The loading fast paths (canonical pins and hosts, pre-validated rules) agree with the general
paths they shortcut, and refuse what those refuse."""

from __future__ import annotations

import base64
import dataclasses
import gc

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


# Shaped like the canonical form (51 characters, a zero-low-bits last character, "=") but not
# base64: binascii's strict mode refuses them and the general parser gives the error. Explicit,
# because the property test above reaches this branch only by chance.
@pytest.mark.parametrize(
    "body",
    ["A" * 41 + "!" + "A", "A" * 20 + "=" + "A" * 21 + "A", "A" * 41 + "\u00e9A", "-" * 42 + "A"],
)
def test_fast_path_refuses_canonical_shaped_non_base64(body: str) -> None:
    text = "sha256/" + body + "="
    assert len(text) == 51
    with pytest.raises(PinFormatError, match="sha256/"):
        _parse_cached.__wrapped__(text)


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


# -- the whole-rule fast path ----------------------------------------------------------------------

_PINS = [str(Pin(bytes([i]) * 32)) for i in range(3)]
_VALUES = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-1, 1),
    st.sampled_from(["", "sha256/x", _PINS[0]]),
    st.lists(st.sampled_from([*_PINS, "sha256/bad", "sha512/" + "A" * 86 + "==", 7]), max_size=3),
)
_FIELDS = st.sampled_from(
    ["pins", "include_subdomains", "enforce", "allow_single_pin", "expires", "leaf_pins", "x"]
)
_KEYS = st.sampled_from(
    ["api.example.com", "API.example.com", "*.example.com", "com", "co.uk", "10.0.0.1", "a..b"]
)


@given(_KEYS, st.dictionaries(_FIELDS, _VALUES, max_size=4))
def test_plain_rule_fast_path_equals_the_general_path(key: str, body: dict[str, object]) -> None:
    from certpin._policy import _parse_rule, _plain_rule

    fast = _plain_rule(key, body)
    try:
        general = _parse_rule(key, body, "<test>")
    except PolicyError:
        assert fast is None  # what the general path refuses, the fast path never accepts
        return
    if fast is not None:
        rule, kind, base = general
        assert (kind, base) == (PatternKind.EXACT, key)
        for f in dataclasses.fields(DomainRule):
            assert getattr(fast, f.name) == getattr(rule, f.name), f.name
        assert type(fast) is DomainRule


def test_plain_rules_and_general_rules_mix_in_one_policy() -> None:
    doc = {
        "domains": {
            "a.example.com": {"pins": _PINS[:2]},  # fast path
            "*.example.com": {"pins": _PINS[1:]},  # general path (wildcard)
            "B.example.com": {"pins": _PINS[:2], "enforce": False},  # general (not canonical)
            "c.example.com": {"pins": _PINS[:2], "expires": "2030-01-01"},  # general (expires)
        }
    }
    from certpin._policy import _plain_rule

    assert _plain_rule("a.example.com", doc["domains"]["a.example.com"]) is not None
    policy = Policy.from_dict(doc)
    assert set(policy.domains) == {
        "a.example.com",
        "*.example.com",
        "b.example.com",
        "c.example.com",
    }
    assert policy.lookup("x.example.com") is policy.domains["*.example.com"]
    assert policy.lookup("a.example.com") is policy.domains["a.example.com"]
    assert policy == Policy(domains=dict(policy.domains))  # the same table built the slow way
    with pytest.raises(PolicyError, match="same rule"):
        Policy.from_dict({"domains": {"A.example.com": {"pins": _PINS[:2]}, **doc["domains"]}})


# -- the collector pause during loading ----------------------------------------------------------


class _Probe(dict):  # type: ignore[type-arg]
    """A rule body that records whether the cyclic GC was on while it was read."""

    seen: list[bool] = []

    def get(self, *args: object) -> object:
        _Probe.seen.append(gc.isenabled())
        return super().get(*args)  # type: ignore[call-overload]


def test_gc_is_paused_while_loading_and_restored_after() -> None:
    assert gc.isenabled()
    _Probe.seen = []
    Policy.from_dict({"domains": {"a.example.com": _Probe(pins=_PINS[:2])}})
    assert _Probe.seen and not any(_Probe.seen)
    assert gc.isenabled()
    with pytest.raises(PolicyError):  # restored on errors too
        Policy.from_dict({"domains": {"a.example.com": _Probe(pins=["sha256/bad"])}})
    assert gc.isenabled()


def test_gc_left_off_by_the_program_stays_off() -> None:
    gc.disable()
    try:
        Policy.from_dict({"domains": {"a.example.com": {"pins": _PINS[:2]}}})
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nested_loads_re_enable_gc_once_at_the_outermost_end() -> None:
    from certpin._policy import _no_gc

    with _no_gc:
        Policy.from_dict({"domains": {"a.example.com": {"pins": _PINS[:2]}}})
        assert not gc.isenabled()  # the inner load did not switch it back on
    assert gc.isenabled()
