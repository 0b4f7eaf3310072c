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
from certpin.core.hosts import Pattern, PatternKind, _parse_pattern, normalize_host
from certpin.core.pins import _parse, _parse_cached
from certpin.core.policy import _RuleBuilder

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
    from certpin.core.policy import _parse_rule, _plain_rule

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
    from certpin.core.policy import _plain_rule

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
    from certpin.core.policy import _no_gc

    with _no_gc:
        Policy.from_dict({"domains": {"a.example.com": {"pins": _PINS[:2]}}})
        assert not gc.isenabled()  # the inner load did not switch it back on
    assert gc.isenabled()


# -- deferred rules: validated in bulk at load, built on first use ------------------------------


def _rule_by_rule(doc: dict[str, object]) -> Policy:
    """The policy `from_dict` must give, built by the rule-by-rule path alone."""
    from certpin.core.policy import _load_rules

    domains, table = _load_rules(doc["domains"], "<dict>")  # type: ignore[arg-type]
    return Policy._checked(domains, table, None, "allow", "<dict>")


def _outcome(load: object) -> object:
    try:
        policy = load()  # type: ignore[operator]
    except PolicyError as exc:
        return ("error", str(exc))
    assert isinstance(policy, Policy)
    return ("policy", dict(policy.domains))


_DEFERRABLE_KEYS = st.sampled_from(
    [
        "api.example.com",
        "b.example.com",
        "A.example.com",
        "*.example.com",
        "xn--zz.example",
        "10.0.0.1",
        "a-.example",
        "x" * 64 + ".example",
        "com",
        7,
    ]
)
_PIN_LISTS = st.lists(
    st.sampled_from(
        [
            *_PINS,
            "sha256/" + "A" * 42 + "B=",
            "sha256/bad",
            "SHA256/" + _PINS[0][7:],
            "sha256//" + _PINS[0][8:],
            "sha512/" + "A" * 86 + "==",
            7,
            None,
            ["x"],
        ]
    ),
    max_size=4,
)
_BODIES = st.one_of(
    st.builds(lambda pins: {"pins": pins}, _PIN_LISTS),
    st.dictionaries(_FIELDS, _VALUES, max_size=3),
    st.sampled_from([None, "pins", ["pins"]]),
)


@given(st.dictionaries(_DEFERRABLE_KEYS, _BODIES, max_size=5))
def test_deferring_loader_accepts_refuses_and_names_exactly_like_rule_by_rule(
    domains: dict[str, object],
) -> None:
    doc = {"domains": domains}
    fast = _outcome(lambda: Policy.from_dict(doc))
    assert fast == _outcome(lambda: _rule_by_rule(doc))
    if fast[0] == "policy":
        policy = Policy.from_dict(doc)
        assert list(policy.domains) == list(_rule_by_rule(doc).domains)  # document order
        for host in ("api.example.com", "b.example.com", "a.example.com", "x.example.com", "com"):
            assert policy.lookup(host) == _rule_by_rule(doc).lookup(host)


def _big(n: int = 1000) -> dict[str, object]:
    return {
        "domains": {f"api{i}.example.com": {"pins": [_PINS[i % 2], _PINS[2]]} for i in range(n)}
    }


def test_common_rules_are_kept_as_pin_texts_until_read() -> None:
    policy = Policy.from_dict(_big())
    entries = policy.domains._entries  # type: ignore[attr-defined]
    assert all(type(v) is tuple for v in entries.values())
    rule = policy.lookup("api7.example.com")
    assert rule == DomainRule("api7.example.com", pins=(Pin.parse(_PINS[1]), Pin.parse(_PINS[2])))
    assert type(rule) is DomainRule and entries["api7.example.com"] is rule  # built once
    assert sum(type(v) is tuple for v in entries.values()) == 999
    assert policy.lookup("api7.example.com") is rule
    assert policy.lookup("nope.example.com") is None
    assert len(policy.domains) == 1000 and "api999.example.com" in policy.domains
    assert list(policy.domains)[:2] == ["api0.example.com", "api1.example.com"]
    # Iterating builds every rule, each equal to the one written in code.
    assert dict(policy.domains) == dict(_rule_by_rule(_big()).domains)
    assert policy == _rule_by_rule(_big()) and hash(policy) == hash(_rule_by_rule(_big()))


def test_deferred_rules_do_not_follow_later_changes_to_the_document() -> None:
    doc = _big(3)
    policy = Policy.from_dict(doc)
    doc["domains"]["api1.example.com"]["pins"][0] = "sha256/bad"  # type: ignore[index]
    doc["domains"]["api1.example.com"]["pins"].append(7)  # type: ignore[index]
    assert policy.lookup("api1.example.com") == DomainRule(
        "api1.example.com", pins=(Pin.parse(_PINS[1]), Pin.parse(_PINS[2]))
    )


def test_a_bad_pin_deep_in_a_large_document_is_named_as_usual() -> None:
    doc = _big()
    doc["domains"]["api998.example.com"]["pins"][1] = "sha256/" + "A" * 42 + "B="  # type: ignore[index]
    with pytest.raises(PolicyError, match=r'domains\."api998\.example\.com"\.pins\[1\].*canonical'):
        Policy.from_dict(doc)
    doc = _big()
    doc["domains"]["api5.example.com"]["pins"] = [_PINS[0], _PINS[0]]  # type: ignore[index]
    with pytest.raises(PolicyError, match=r'domains\."api5\.example\.com"\.pins.*backup'):
        Policy.from_dict(doc)


def test_a_deferred_key_and_a_parsed_key_naming_one_rule_are_refused() -> None:
    for domains in (
        {"a.example.com": {"pins": _PINS[:2]}, "A.example.com": {"pins": _PINS[1:]}},
        {
            "A.example.com": {"pins": _PINS[1:], "enforce": True},
            "a.example.com": {"pins": _PINS[:2]},
        },
    ):
        with pytest.raises(PolicyError, match="same rule"):
            Policy.from_dict({"domains": domains})


def test_non_canonical_keys_and_pin_notations_fall_back_and_load() -> None:
    doc = _big(3)
    doc["domains"]["API.example.com"] = {"pins": [f'pin-sha256="{_PINS[0][7:]}"', _PINS[1]]}  # type: ignore[index]
    policy = Policy.from_dict(doc)
    assert policy.lookup("api.example.com") == DomainRule(
        "api.example.com", pins=(Pin.parse(_PINS[0]), Pin.parse(_PINS[1]))
    )
    assert len(policy.domains) == 4


def test_an_exact_deferred_key_wins_over_wildcards_on_the_same_name() -> None:
    doc = {
        "domains": {
            "**.example.com": {"pins": _PINS[:2]},
            "example.com": {"pins": _PINS[1:]},
            "*.example.com": {"pins": [_PINS[0], _PINS[2]]},
            "a.example.com": {"pins": _PINS[1:]},
        }
    }
    policy = Policy.from_dict(doc)
    assert policy.lookup("example.com").pattern == "example.com"  # type: ignore[union-attr]
    assert policy.lookup("a.example.com").pattern == "a.example.com"  # type: ignore[union-attr]
    assert policy.lookup("b.example.com").pattern == "*.example.com"  # type: ignore[union-attr]
    assert policy.lookup("c.b.example.com").pattern == "**.example.com"  # type: ignore[union-attr]
    assert all(policy.lookup(h) == _rule_by_rule(doc).lookup(h) for h in ("x.a.example.com",))


def test_replace_rules_keeps_untouched_rules_deferred() -> None:
    policy = Policy.from_dict(_big(10))
    new = DomainRule("api3.example.com", pins=(Pin.parse(_PINS[0]), Pin.parse(_PINS[1])))
    replaced = policy.replace_rules([new])
    entries = replaced.domains._entries  # type: ignore[attr-defined]
    assert entries["api3.example.com"] is new and replaced.lookup("api3.example.com") is new
    assert sum(type(v) is tuple for v in entries.values()) == 9
    assert policy.lookup("api3.example.com") != new  # the original is untouched


def test_threads_building_the_same_rules_agree() -> None:
    import threading

    policy = Policy.from_dict(_big())
    hosts = [f"api{i}.example.com" for i in range(0, 1000, 7)]
    results: list[list[DomainRule | None]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def read(out: list[DomainRule | None]) -> None:
        start.wait()
        out.extend(policy.lookup(h) for h in hosts)

    threads = [threading.Thread(target=read, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = [_rule_by_rule(_big()).lookup(h) for h in hosts]
    assert all(out == expected for out in results)
    assert all(type(policy.domains._entries[h]) is DomainRule for h in hosts)  # type: ignore[attr-defined]


@given(
    st.lists(_EDGE, min_size=44, max_size=44),
    st.sampled_from(["sha256/", "sha384/", "cert-sha256/"]),
)
def test_bulk_pin_check_accepts_exactly_the_canonical_sha256_texts(
    chars: list[str], prefix: str
) -> None:
    from certpin.core.pins import all_canonical_sha256 as _canonical_pins

    text = prefix + "".join(chars)
    try:
        canonical = str(_parse(text)) == text and text.startswith("sha256/")
    except PinFormatError:
        canonical = False
    assert _canonical_pins({text}) is canonical
    assert _canonical_pins({text, *_PINS}) is canonical  # one bad text spoils the batch
    assert _canonical_pins({_PINS[0] + "\n", *_PINS}) is False


@given(
    st.lists(
        st.one_of(LABEL, st.sampled_from(["A", "xn--zz", "-a", "a-", "1", "x" * 64, ""])),
        min_size=1,
        max_size=4,
    )
)
def test_bulk_name_check_equals_is_canonical_name(labels: list[str]) -> None:
    from certpin.core.hosts import all_canonical_names as _canonical_names
    from certpin.core.hosts import is_canonical_name

    name = ".".join(labels)
    assert _canonical_names([name]) is is_canonical_name(name)
    assert _canonical_names([name, "a.example"]) is is_canonical_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "a\nb",
        "a.b\n",
        "\na",
        "a.",
        ".a",
        "a..b",
        "a.-b",
        "a-.b",
        "-a.b",
        "a.b-",
        "a.b1",
        "a.B",
        "a.é",
        "a_.b_",
        "a.xn--p1ai",
        "a" * 63,
        "1a.b",
        "a b",
        "a.\u0131",
    ],
)
def test_bulk_name_check_edges(name: str) -> None:
    from certpin.core.hosts import all_canonical_names as _canonical_names
    from certpin.core.hosts import is_canonical_name

    assert _canonical_names([name]) is is_canonical_name(name)
    assert _canonical_names(["a.example", name, "b.example"]) is is_canonical_name(name)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=5))
def test_bulk_pin_check_accepts_canonical_pins(digests: list[bytes]) -> None:
    from certpin.core.pins import all_canonical_sha256 as _canonical_pins

    texts = {str(Pin(d)) for d in digests}
    assert _canonical_pins(texts) is True
    other = str(Pin(digests[0])).replace("sha256/", "sha384/")  # same length, other prefix
    assert _canonical_pins(texts | {other}) is False


def test_a_parsed_key_after_a_deferred_key_naming_the_same_rule_is_refused() -> None:
    # The deferred key passes every bulk check; the parsed one (two members) lands on it.
    domains = {
        "a.example.com": {"pins": _PINS[:2]},
        "A.example.com": {"pins": _PINS[1:], "enforce": True},
    }
    with pytest.raises(PolicyError, match=r"""domains\."A\.example\.com": names the same rule"""):
        Policy.from_dict({"domains": domains})


def test_one_unusual_rule_does_not_undefer_the_others() -> None:
    doc = _big(50)
    doc["domains"]["xn--bcher-kva.example"] = {"pins": _PINS[:2]}  # type: ignore[index]
    doc["domains"]["API.example.net"] = {"pins": _PINS[:2]}  # type: ignore[index]
    doc["domains"]["api3.example.net"] = {"pins": [f'pin-sha256="{_PINS[0][7:]}"', _PINS[1]]}  # type: ignore[index]
    policy = Policy.from_dict(doc)
    entries = policy.domains._entries  # type: ignore[attr-defined]
    assert sum(type(v) is tuple for v in entries.values()) == 50
    assert list(entries)[50:] == ["xn--bcher-kva.example", "api.example.net", "api3.example.net"]
    assert policy == _rule_by_rule(doc)
    assert policy.lookup("API.example.net") == DomainRule(
        "api.example.net", pins=(Pin.parse(_PINS[0]), Pin.parse(_PINS[1]))
    )
    # An error among them is the rule-by-rule path's, first in document order.
    doc["domains"]["API.example.org"] = {"pins": [_PINS[0], "sha256/bad"]}  # type: ignore[index]
    doc["domains"]["api9.example.com"]["pins"] = ["sha256/worse", _PINS[0]]  # type: ignore[index]
    with pytest.raises(PolicyError, match=r'"api9\.example\.com"\.pins\[0\].*worse'):
        Policy.from_dict(doc)
    # Two keys naming one rule, found only once the unusual key is parsed.
    collide = _big(3)
    collide["domains"]["API1.example.com"] = {"pins": _PINS[:2]}  # type: ignore[index]
    with pytest.raises(PolicyError, match=r'"API1\.example\.com": names the same rule'):
        Policy.from_dict(collide)


def test_an_error_after_a_bad_deferred_rule_does_not_hide_it() -> None:
    # A later rule's own error (an expiry out of range in UTC) must not replace the first one.
    doc = {
        "domains": {
            "a.example.com": {"pins": ["sha256/bad", _PINS[0]]},
            "b.example.com": {"pins": _PINS[:2], "expires": "0001-01-01T00:00:00+01:00"},
        }
    }
    with pytest.raises(PolicyError, match=r'"a\.example\.com"\.pins\[0\]'):
        Policy.from_dict(doc)
    del doc["domains"]["a.example.com"]
    with pytest.raises(PolicyError, match=r'"b\.example\.com"\.expires.*out of range'):
        Policy.from_dict(doc)


def test_a_str_subclass_key_becomes_a_plain_str() -> None:
    class Name(str):
        pass

    policy = Policy.from_dict({"domains": {Name("a.example.com"): {"pins": _PINS[:2]}}})
    (key,) = policy.domains
    assert type(key) is str and type(policy.domains[key].pattern) is str


def test_domains_from_any_mapping_and_their_repr() -> None:
    from types import MappingProxyType

    doc = _big(3)
    policy = Policy.from_dict({"domains": MappingProxyType(doc["domains"])})  # type: ignore[arg-type]
    assert policy == Policy.from_dict(doc)
    shown = repr(Policy.from_dict(doc).domains)
    assert shown.startswith("{'api0.example.com': DomainRule(pattern='api0.example.com'")
    assert shown.count("DomainRule(") == 3


def test_a_rule_keyed_in_code_by_a_non_canonical_spelling_is_found() -> None:
    rule = DomainRule("a.example.com", pins=(Pin.parse(_PINS[0]), Pin.parse(_PINS[1])))
    policy = Policy(domains={"A.example.com": rule})
    assert policy.lookup("a.example.com") is rule
    assert policy.lookup("A.EXAMPLE.com.") is rule


def test_domains_keep_the_read_only_mapping_conveniences() -> None:
    policy = Policy.from_dict(_big(3))
    built = dict(_rule_by_rule(_big(3)).domains)
    copy = policy.domains.copy()  # type: ignore[attr-defined]
    assert type(copy) is dict and copy == built
    copy.clear()  # a copy: the policy is untouched
    assert len(policy.domains) == 3
    extra = {"x.example": built["api0.example.com"]}
    assert policy.domains | extra == {**built, **extra}  # type: ignore[operator]
    assert extra | policy.domains == {**extra, **built}  # type: ignore[operator]
    assert list(reversed(policy.domains)) == list(reversed(built))  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        policy.domains["x.example"] = built["api0.example.com"]  # type: ignore[index]
