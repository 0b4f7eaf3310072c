"""Host coverage: `HostPattern.matches`, `DomainRule.covers`, and `Policy.lookup` agreeing.

`matches` is the one definition of which hosts a key names (OkHttp's rules); `covers` adds
``include_subdomains``; `Policy.lookup` answers through an index and must pick, among the rules
that cover a host, the most specific one. The properties below check each against a
specification written on label lists, over a small label alphabet so that hosts and keys
collide often.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certpin import DomainRule, Pin, Policy
from certpin.core.hosts import HostError, HostPattern, PatternKind

P1, P2 = (Pin(bytes([n]) * 32) for n in (1, 2))


def rule(key: str, **fields: Any) -> DomainRule:
    return DomainRule(key, pins=(P1, P2), **fields)


# -- examples: every success with its failing twin ------------------------------------------------


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("example.com", "example.com"),
        ("example.com", "EXAMPLE.com."),  # the host is normalised
        ("*.example.com", "api.example.com"),
        ("*.example.com", "API.Example.COM"),
        ("**.example.com", "example.com"),  # zero labels
        ("**.example.com", "api.example.com"),
        ("**.example.com", "a.b.c.example.com"),
        ("*.xn--bcher-kva.example", "api.bücher.example"),  # IDN host, A-label key
        ("127.0.0.1", "127.1"),  # one address, two spellings
        ("::1", "[0:0::1]"),
    ],
)
def test_a_pattern_matches(key: str, host: str) -> None:
    assert HostPattern.parse(key).matches(host)


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("example.com", "api.example.com"),  # exact: no subdomain
        ("example.com", "example.org"),
        ("*.example.com", "example.com"),  # "*." needs exactly one label
        ("*.example.com", "a.b.example.com"),
        ("*.example.com", "apiexample.com"),
        ("**.example.com", "notexample.com"),  # a label boundary, not a suffix of text
        ("**.example.com", "example.com.evil"),
        ("127.0.0.1", "127.0.0.2"),
        ("127.0.0.1", "x.127.0.0.1.nip.io"),
    ],
)
def test_a_pattern_does_not_match(key: str, host: str) -> None:
    assert not HostPattern.parse(key).matches(host)


def test_matches_refuses_what_is_no_host() -> None:
    with pytest.raises(HostError):
        HostPattern.parse("*.example.com").matches("a..example.com")
    with pytest.raises(HostError):
        HostPattern.parse("example.com").matches("*.example.com")  # a pattern is no host
    with pytest.raises(ValueError, match="below"):
        HostPattern.parse("**.example.com").matches("example.com", below=-1)


def test_an_ip_address_is_under_no_wildcard() -> None:
    # A DNS base never ends in a number, but the rule is stated, not left to that accident.
    assert not HostPattern("**.0.1", PatternKind.ANY_LABELS, "0.1").matches("127.0.0.1")
    with pytest.raises(HostError, match="IP addresses"):
        HostPattern.parse("**.127.0.0.1")


def test_covers_adds_include_subdomains_to_an_exact_key() -> None:
    assert rule("example.com", include_subdomains=True).covers("a.b.example.com")
    assert rule("example.com", include_subdomains=True).covers("example.com")
    assert not rule("example.com").covers("a.example.com")
    assert not rule("example.com", include_subdomains=True).covers("anotherexample.com")


def test_the_old_name_is_the_same_class() -> None:
    from certpin.core.hosts import Pattern

    assert Pattern is HostPattern


# -- the specification, on label lists ------------------------------------------------------------

_LABELS = ("a", "b", "c")
_BASES = ("example.com", "a.example.com", "b.a.example.com")
_KINDS = ("", "*.", "**.")

hosts = st.tuples(
    st.lists(st.sampled_from(_LABELS), max_size=3),
    st.sampled_from((*_BASES, "example.org", "com")),
).map(lambda t: ".".join([*t[0], t[1]]))
keys = st.tuples(st.sampled_from(_KINDS), st.sampled_from(_BASES)).map("".join)


def spec_matches(key: str, host: str) -> bool:
    """OkHttp's rules, on label lists: how many labels the host has in front of the key's base,
    and how many the key allows (exact: none; "*.": exactly one; "**.": any)."""
    if key.startswith("**."):
        base, allowed = key[3:], range(0, 128)
    elif key.startswith("*."):
        base, allowed = key[2:], range(1, 2)
    else:
        base, allowed = key, range(0, 1)
    labels, base_labels = host.split("."), base.split(".")
    extra = len(labels) - len(base_labels)
    return extra in allowed and labels[extra:] == base_labels


@settings(max_examples=500)
@given(keys, hosts)
def test_matches_is_the_specification(key: str, host: str) -> None:
    assert HostPattern.parse(key).matches(host) is spec_matches(key, host)


@settings(max_examples=300)
@given(st.sampled_from(_BASES), st.booleans(), hosts)
def test_covers_is_the_specification(base: str, include: bool, host: str) -> None:
    expected = spec_matches(base, host) or (include and spec_matches(f"**.{base}", host))
    assert rule(base, include_subdomains=include).covers(host) is expected


def precedence(rule: DomainRule, host: str) -> tuple[int, int]:
    """The documented order of `Policy.lookup`: the fewest labels between the host and the
    rule's base first; at one distance, "*." before an exact key (with include_subdomains)
    before "**."."""
    pattern = HostPattern.parse(rule.pattern)
    distance = host.count(".") - pattern.base.count(".")
    order = {PatternKind.ONE_LABEL: 0, PatternKind.EXACT: 1, PatternKind.ANY_LABELS: 2}
    return distance, order[pattern.kind]


policies = st.lists(st.tuples(keys, st.booleans()), max_size=8).map(
    lambda pairs: [
        rule(key, include_subdomains=include and not key.startswith("*"))
        for key, include in {k: i for k, i in pairs}.items()
    ]
)


@settings(max_examples=500)
@given(policies, hosts)
def test_lookup_picks_the_most_specific_rule_that_covers(
    rules: list[DomainRule], host: str
) -> None:
    policy = Policy(domains={r.pattern: r for r in rules})
    covering = [r for r in rules if r.covers(host)]
    expected = min(covering, key=lambda r: precedence(r, host)) if covering else None
    assert policy.lookup(host) == expected
    found = policy.lookup(host)
    assert found is None or found.covers(host)  # never a rule that does not cover the host


# -- below: every host N labels under a name ------------------------------------------------------


@settings(max_examples=300)
@given(keys, hosts, st.integers(1, 3))
def test_matches_below_is_matching_every_host_that_deep(key: str, host: str, below: int) -> None:
    # Labels no key uses stand for "whatever the labels are".
    fresh = ".".join(["q", "r", "s"][:below] + [host])
    pattern = HostPattern.parse(key)
    assert pattern.matches(host, below=below) is spec_matches(key, fresh)
    # A pattern names every such host exactly when it names two different ones.
    other = ".".join(["t", "u", "v"][:below] + [host])
    assert pattern.matches(host, below=below) is (
        spec_matches(key, fresh) and spec_matches(key, other)
    )


@settings(max_examples=500)
@given(policies, hosts, st.integers(0, 3))
def test_lookup_below_is_lookup_of_a_host_no_key_names(
    rules: list[DomainRule], host: str, below: int
) -> None:
    policy = Policy.from_rules(rules)
    fresh = ".".join(["q", "r", "s"][:below] + [host])  # "q", "r", "s" are in no key
    assert policy.lookup(host, below=below) == policy.lookup(fresh)
    assert list(policy.rules_covering(host, below=below)) == list(policy.rules_covering(fresh))
    covering = [r for r in rules if r.covers(host, below=below)]
    assert covering == [r for r in rules if r.covers(fresh)]
    assert sorted(map(id, covering)) == sorted(map(id, policy.rules_covering(fresh)))


def test_rules_covering_lists_every_covering_rule_most_specific_first() -> None:
    policy = Policy.from_rules(
        [
            rule("**.example.com"),
            rule("example.com", include_subdomains=True),
            rule("*.example.com"),
            rule("api.example.com"),
        ]
    )
    found = [r.pattern for r in policy.rules_covering("API.example.com.")]
    assert found == ["api.example.com", "*.example.com", "example.com", "**.example.com"]
    assert [r.pattern for r in policy.rules_covering("example.com", below=1)] == [
        "*.example.com",
        "example.com",
        "**.example.com",
    ]
    assert [r.pattern for r in policy.rules_covering("a.example.com", below=1)] == [
        "example.com",
        "**.example.com",
    ]
    # Twins: a host under none of them, and an address (no parents, no wildcards).
    assert list(policy.rules_covering("example.org")) == []
    assert list(policy.rules_covering("127.0.0.1", below=1)) == []
    with pytest.raises(ValueError, match="below"):
        policy.lookup("example.com", below=-1)
