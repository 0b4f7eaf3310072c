"""Policy: schema validation, error messages, round trips, and host lookup precedence."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certpin import DomainRule, Pin, PinKind, Policy, PolicyError, PolicyProvider
from certpin.core.pins import DIGEST_SIZES
from certpin.core.policy import as_provider

P1, P2, P3 = (str(Pin(bytes([n]) * 32)) for n in (1, 2, 3))
UTC = dt.UTC


def rule(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"pins": [P1, P2]}
    body.update(fields)
    return body


def policy(domains: dict[str, Any], **top: Any) -> Policy:
    return Policy.from_dict({"domains": domains, **top})


def error(data: Any, source: str = "<dict>") -> str:
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(data, source=source)
    return str(info.value)


# -- schema ----------------------------------------------------------------------------------------


def test_full_rule() -> None:
    p = Policy.from_dict(
        {
            "schema": 1,
            "version": 7,
            "unpinned_hosts": "deny",
            "domains": {
                "API.example.com.": {
                    "pins": [P1, P2],
                    "leaf_pins": [P3],
                    "ca_pins": [P2],
                    "include_subdomains": True,
                    "expires": "2027-06-30",
                    "enforce": False,
                    "report_uris": ["https://report.example/pins"],
                    "allow_single_pin": True,
                }
            },
        },
        source="pins.toml",
    )
    assert p.version == 7
    assert p.unpinned_hosts == "deny"
    assert p.source == "pins.toml"
    assert list(p.domains) == ["api.example.com"]
    r = p.domains["api.example.com"]
    assert r == DomainRule(
        pattern="api.example.com",
        pins=(Pin.parse(P1), Pin.parse(P2)),
        leaf_pins=(Pin.parse(P3),),
        ca_pins=(Pin.parse(P2),),
        include_subdomains=True,
        expires=dt.datetime(2027, 6, 30, tzinfo=UTC),
        enforce=False,
        report_uris=("https://report.example/pins",),
        allow_single_pin=True,
    )
    assert r.all_pins == (Pin.parse(P1), Pin.parse(P2), Pin.parse(P3))


def test_defaults() -> None:
    p = policy({"a.example": rule()})
    assert p.version is None
    assert p.unpinned_hosts == "allow"
    r = p.domains["a.example"]
    assert (r.include_subdomains, r.expires, r.enforce, r.report_uris, r.allow_single_pin) == (
        False,
        None,
        True,
        (),
        False,
    )
    assert Policy.from_dict({}).domains == {}


def test_policy_is_immutable_and_a_provider() -> None:
    p = policy({"a.example": rule()})
    with pytest.raises(AttributeError):
        p.version = 3  # type: ignore[misc]
    assert isinstance(p, PolicyProvider)
    assert p.current_policy() is p
    assert as_provider(p)() is p


def test_as_provider_variants() -> None:
    p = policy({"a.example": rule()})

    class Dynamic:
        def current_policy(self) -> Policy:
            return p

    assert as_provider(Dynamic())() is p
    assert as_provider(lambda: p)() is p
    with pytest.raises(TypeError, match="got int"):
        as_provider(3)  # type: ignore[arg-type]


# -- error messages --------------------------------------------------------------------------------


def test_not_a_mapping() -> None:
    assert error([1], "x.json") == "x.json: a policy must be a table/object at the top level"


def test_unknown_top_level_field_did_you_mean() -> None:
    msg = error({"domain": {}}, "pins.toml")
    assert msg == "pins.toml: domain: unknown field; did you mean 'domains'?"


def test_unknown_top_level_field_lists_known() -> None:
    msg = error({"zzz": 1})
    assert "zzz: unknown field; known fields: schema, version, unpinned_hosts, domains" in msg


def test_unknown_domain_field_did_you_mean() -> None:
    msg = error({"domains": {"a.example": rule(include_subdomain=True)}}, "pins.toml")
    assert msg == (
        'pins.toml: domains."a.example".include_subdomain: unknown field; '
        "did you mean 'include_subdomains'?"
    )


def test_bad_pin_names_index_and_value() -> None:
    msg = error({"domains": {"a.example": rule(pins=[P1, "sha256/bogus"])}}, "pins.toml")
    assert msg.startswith('pins.toml: domains."a.example".pins[1]: ')
    assert "'sha256/bogus'" in msg
    msg = error({"domains": {"a.example": rule(leaf_pins=["md5/xx"])}})
    assert 'domains."a.example".leaf_pins[0]' in msg and "MD5" in msg


@pytest.mark.parametrize("name", ["pins", "leaf_pins", "ca_pins"])
@pytest.mark.parametrize("value", [P1, {"a": 1}, 5])
def test_pins_must_be_a_list(name: str, value: Any) -> None:
    msg = error({"domains": {"a.example": rule(**{name: value})}})
    assert f'domains."a.example".{name}: must be a list of pin strings' in msg


def test_single_pin_needs_backup() -> None:
    msg = error({"domains": {"a.example": {"pins": [P1]}}}, "p.toml")
    assert 'p.toml: domains."a.example".pins: ' in msg
    assert "backup" in msg and "allow_single_pin" in msg
    # The same pin twice is still one pin.
    assert "backup" in error({"domains": {"a.example": {"pins": [P1, P1]}}})


def test_single_pin_accepted_when_allowed_or_report_only() -> None:
    p = policy({"a.example": {"pins": [P1], "allow_single_pin": True}})
    assert p.domains["a.example"].pins == (Pin.parse(P1),)
    p = policy({"a.example": {"pins": [P1], "enforce": False}})
    assert p.domains["a.example"].enforce is False
    p = policy({"a.example": {"leaf_pins": [P1], "ca_pins": [P2], "allow_single_pin": True}})
    assert p.domains["a.example"].all_pins == (Pin.parse(P1), Pin.parse(P2))


def test_every_slot_needs_its_own_backup() -> None:
    # leaf_pins and ca_pins must BOTH match (Apple ATS): one pin in each is no backup at all.
    msg = error({"domains": {"a.example": {"leaf_pins": [P1], "ca_pins": [P2, P3]}}}, "p.toml")
    assert 'p.toml: domains."a.example".leaf_pins: ' in msg and "backup" in msg
    msg = error({"domains": {"A.Example.": {"leaf_pins": [P1, P2], "ca_pins": [P3]}}})
    assert 'domains."A.Example.".ca_pins: ' in msg  # the key as the author wrote it
    ok = policy({"a.example": {"leaf_pins": [P1, P2], "ca_pins": [P2, P3]}})
    assert len(ok.domains["a.example"].all_pins) == 3


def test_same_key_in_two_algorithms_or_kinds_is_not_a_backup() -> None:
    digest = bytes(range(32))
    sha256 = str(Pin(digest))
    sha512 = str(Pin(bytes(range(64)), "sha512"))
    cert = str(Pin(digest, kind=PinKind.CERTIFICATE))
    for pair in ([sha256, sha512], [sha256, cert]):
        assert "backup" in error({"domains": {"a.example": {"pins": pair}}})
    assert policy({"a.example": {"pins": [sha256, sha512, P1]}}).domains["a.example"].pins


def test_rules_built_in_code_are_validated_too() -> None:
    with pytest.raises(PolicyError, match="backup"):
        DomainRule("a.example", pins=(Pin.parse(P1),))
    with pytest.raises(PolicyError, match="public suffix"):
        DomainRule("com", pins=(Pin.parse(P1), Pin.parse(P2)), include_subdomains=True)
    with pytest.raises(PolicyError, match="canonical"):
        DomainRule("A.example", pins=(Pin.parse(P1), Pin.parse(P2)))
    with pytest.raises(PolicyError, match="invalid domain"):
        DomainRule("a..example", pins=(Pin.parse(P1), Pin.parse(P2)))


def test_policy_is_immutable_and_hashable() -> None:
    domains = {"a.example": DomainRule("a.example", pins=(Pin.parse(P1), Pin.parse(P2)))}
    p = Policy(domains=domains)
    domains["b.example"] = DomainRule("b.example", pins=(Pin.parse(P1), Pin.parse(P2)))
    assert list(p.domains) == ["a.example"] and p.lookup("b.example") is None
    with pytest.raises(TypeError):
        p.domains["c.example"] = domains["b.example"]  # type: ignore[index]
    assert hash(p) == hash(Policy(domains=dict(p.domains)))
    assert p == Policy(domains=dict(p.domains))


def test_no_pins_at_all() -> None:
    msg = error({"domains": {"a.example": {"pins": [], "allow_single_pin": True}}})
    assert 'domains."a.example".pins: no pins' in msg


@pytest.mark.parametrize("name", ["include_subdomains", "enforce", "allow_single_pin"])
def test_flags_must_be_booleans(name: str) -> None:
    msg = error({"domains": {"a.example": rule(**{name: "yes"})}})
    assert f"domains.\"a.example\".{name}: must be true or false, got 'yes'" in msg


@pytest.mark.parametrize("value", ["https://r.example", ["ftp://r.example"], [1], "x"])
def test_report_uris_validated(value: Any) -> None:
    msg = error({"domains": {"a.example": rule(report_uris=value)}})
    assert 'domains."a.example".report_uris: must be a list of http(s) URLs' in msg
    assert repr(value) in msg


def test_report_uris_accepted() -> None:
    uris = ["https://r.example/a", "http://localhost:8080/r"]
    assert policy({"a.example": rule(report_uris=uris)}).domains["a.example"].report_uris == tuple(
        uris
    )


def test_invalid_domain_key() -> None:
    msg = error({"domains": {"a..example": rule()}})
    assert 'domains."a..example": invalid domain:' in msg and "empty label" in msg


def test_rule_must_be_a_table() -> None:
    assert 'domains."a.example": a domain rule must be a table/object' in error(
        {"domains": {"a.example": [P1, P2]}}
    )


def test_domains_must_be_a_table() -> None:
    assert "domains: must be a table of domain rules" in error({"domains": [1]})


@pytest.mark.parametrize("keys", [("API.example.com", "api.example.com."), ("*.A.b", "*.a.b.")])
def test_duplicate_keys_after_normalisation(keys: tuple[str, str]) -> None:
    first, second = keys
    msg = error({"domains": {first: rule(), second: rule()}}, "p.toml")
    assert msg.startswith(f"p.toml: domains.{json.dumps(second)}: names the same rule as {first!r}")


@pytest.mark.parametrize("version", [-1, True, 1.5, "3"])
def test_version_invalid(version: Any) -> None:
    msg = error({"version": version})
    assert f"version: version must be a non-negative integer, got {version!r}" in msg


def test_version_zero_ok() -> None:
    assert Policy.from_dict({"version": 0}).version == 0


@pytest.mark.parametrize("value", ["block", "", None, True])
def test_unpinned_hosts_invalid(value: Any) -> None:
    msg = error({"unpinned_hosts": value})
    assert f'unpinned_hosts: must be "allow" or "deny", got {value!r}' in msg


@pytest.mark.parametrize("schema", [2, 0, "1"])
def test_schema_unsupported(schema: Any) -> None:
    assert f"schema: unsupported schema {schema!r}" in error({"schema": schema})


# -- public suffixes -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["*.co.uk", "**.com", "*.github.io", "**.uk"])
def test_wildcard_on_public_suffix_rejected(key: str) -> None:
    msg = error({"domains": {key: rule()}})
    assert f"domains.{json.dumps(key)}: " in msg and "is a public suffix" in msg


@pytest.mark.parametrize("key", ["com", "github.io", "co.uk"])
def test_include_subdomains_on_public_suffix_rejected(key: str) -> None:
    msg = error({"domains": {key: rule(include_subdomains=True)}})
    assert f"domains.{json.dumps(key)}.include_subdomains: '{key}' is a public suffix" in msg


def test_public_suffix_exact_without_subdomains_ok() -> None:
    assert "github.io" in policy({"github.io": rule()}).domains


def test_include_subdomains_on_wildcard_rejected() -> None:
    msg = error({"domains": {"*.example.com": rule(include_subdomains=True)}})
    assert "include_subdomains only applies to exact keys" in msg


# -- expiry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.date(2027, 6, 30), dt.datetime(2027, 6, 30, tzinfo=UTC)),
        ("2027-06-30", dt.datetime(2027, 6, 30, tzinfo=UTC)),
        ("2027-06-30T12:30:00Z", dt.datetime(2027, 6, 30, 12, 30, tzinfo=UTC)),
        ("2027-06-30T12:30:00+02:00", dt.datetime(2027, 6, 30, 10, 30, tzinfo=UTC)),
        ("2027-06-30T12:30:00", dt.datetime(2027, 6, 30, 12, 30, tzinfo=UTC)),  # naive = UTC
        (dt.datetime(2027, 6, 30, 12, 30), dt.datetime(2027, 6, 30, 12, 30, tzinfo=UTC)),
        (
            dt.datetime(2027, 6, 30, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            dt.datetime(2027, 6, 30, 17, 30, tzinfo=UTC),
        ),
        (1_800_000_000, dt.datetime.fromtimestamp(1_800_000_000, UTC)),
        (1_800_000_000.5, dt.datetime.fromtimestamp(1_800_000_000.5, UTC)),
    ],
)
def test_expires_forms(value: Any, expected: dt.datetime) -> None:
    expires = policy({"a.example": rule(expires=value)}).domains["a.example"].expires
    assert expires == expected
    assert expires is not None and expires.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "value",
    ["2027-13-01", "tomorrow", "", True, [2027], dt.time(12, 0), float("nan"), float("inf"), 1e20],
)
def test_expires_invalid(value: Any) -> None:
    msg = error({"domains": {"a.example": rule(expires=value)}}, "p.toml")
    assert msg.startswith('p.toml: domains."a.example".expires: invalid date')
    assert repr(value) in msg


def test_rule_expired() -> None:
    r = policy({"a.example": rule(expires="2027-06-30")}).domains["a.example"]
    at = dt.datetime(2027, 6, 30, tzinfo=UTC)
    assert not r.expired(at - dt.timedelta(seconds=1))
    assert r.expired(at)
    assert r.expired(at + dt.timedelta(seconds=1))
    assert not policy({"a.example": rule()}).domains["a.example"].expired(at)


# -- files -----------------------------------------------------------------------------------------

TOML = f"""
version = 3
unpinned_hosts = "deny"

[domains."api.example.com"]
pins = ["{P1}", "{P2}"]
expires = 2027-06-30
include_subdomains = true

[domains."*.cdn.example.com"]
pins = ["{P3}"]
allow_single_pin = true
expires = 2027-06-30T12:00:00Z

[domains."**.example.org"]
leaf_pins = ["{P1}"]
ca_pins = ["{P2}"]
enforce = false
expires = 2027-06-30T12:00:00
"""


def test_from_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "pins.toml"
    path.write_text(TOML)
    p = Policy.from_file(path)
    assert p.source == str(path)
    assert p.version == 3 and p.unpinned_hosts == "deny"
    assert set(p.domains) == {"api.example.com", "*.cdn.example.com", "**.example.org"}
    assert p.domains["api.example.com"].expires == dt.datetime(2027, 6, 30, tzinfo=UTC)
    assert p.domains["*.cdn.example.com"].expires == dt.datetime(2027, 6, 30, 12, tzinfo=UTC)
    assert p.domains["**.example.org"].expires == dt.datetime(2027, 6, 30, 12, tzinfo=UTC)
    assert Policy.from_file(str(path)) == p


@pytest.mark.parametrize("name", ["pins.json", "pins.conf", "PINS.JSON"])
def test_from_json_file(tmp_path: Path, name: str) -> None:
    toml_path = tmp_path / "pins.toml"
    toml_path.write_text(TOML)
    expected = Policy.from_file(toml_path)
    path = tmp_path / name
    path.write_text("  " + json.dumps(expected.to_dict(), indent=2))
    assert Policy.from_file(path) == expected


def test_toml_is_the_default_for_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "pins.conf"
    path.write_text(TOML)
    assert Policy.from_file(path).version == 3


def test_invalid_toml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "pins.toml"
    path.write_text('version = 1\n\n[domains."a.example"\npins = []\n')
    with pytest.raises(PolicyError) as info:
        Policy.from_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in msg
    assert info.value.source == str(path)


def test_invalid_json_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    path.write_text('{\n  "version": 1,\n  "domains": {,}\n}\n')
    with pytest.raises(PolicyError, match=r"invalid JSON at line 3, column \d+") as info:
        Policy.from_file(path)
    assert str(info.value).startswith(f"{path}: ")


def test_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "pins.toml"
    path.write_text(f'[domains."a.example"]\npins = ["{P1}", "sha256/nope"]\n')
    with pytest.raises(PolicyError) as info:
        Policy.from_file(path)
    assert str(info.value).startswith(f'{path}: domains."a.example".pins[1]: ')
    assert info.value.location == 'domains."a.example".pins[1]'
    assert "'sha256/nope'" in info.value.problem


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(PolicyError, match="cannot read policy: No such file") as info:
        Policy.from_file(missing)
    assert str(info.value).startswith(str(missing))
    with pytest.raises(PolicyError, match="cannot read policy"):
        Policy.from_file(tmp_path)  # a directory


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "pins.toml"
    path.write_bytes(b"version = 1 # \xff\xfe\n")
    with pytest.raises(PolicyError, match="policy is not UTF-8 text"):
        Policy.from_file(path)


def test_policy_error_attributes() -> None:
    err = PolicyError("bad", source="f.toml", location="domains.x")
    assert (err.source, err.location, err.problem, str(err)) == (
        "f.toml",
        "domains.x",
        "bad",
        "f.toml: domains.x: bad",
    )
    assert str(PolicyError("bad")) == "<policy>: bad"


# -- round trips -----------------------------------------------------------------------------------


def test_to_dict() -> None:
    p = policy(
        {
            "a.example": rule(
                leaf_pins=[P3],
                expires="2027-06-30T12:00:00+00:00",
                report_uris=["https://r.example"],
                allow_single_pin=True,
            ),
            "**.b.example": rule(expires="2027-06-30"),
        },
        version=4,
    )
    assert p.to_dict() == {
        "schema": 1,
        "version": 4,
        "unpinned_hosts": "allow",
        "domains": {
            "a.example": {
                "pins": [P1, P2],
                "leaf_pins": [P3],
                "include_subdomains": False,
                "expires": "2027-06-30T12:00:00Z",
                "enforce": True,
                "report_uris": ["https://r.example"],
                "allow_single_pin": True,
            },
            "**.b.example": {
                "pins": [P1, P2],
                "include_subdomains": False,
                "expires": "2027-06-30",
                "enforce": True,
            },
        },
    }
    assert Policy.from_dict(p.to_dict()) == p
    assert Policy.from_dict(json.loads(json.dumps(p.to_dict()))) == p


_LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?\Z")
_HOST = (
    st.lists(_LABEL, min_size=2, max_size=4)
    .map(".".join)
    .filter(lambda h: h.rsplit(".", 1)[-1].isalpha())
)
_PIN = st.builds(
    lambda alg, data, kind: str(Pin(data[: DIGEST_SIZES[alg]], alg, kind)),
    st.sampled_from(sorted(DIGEST_SIZES)),
    st.binary(min_size=64, max_size=64),
    st.sampled_from(PinKind),
)
_EXPIRY = st.one_of(
    st.none(),
    st.dates(dt.date(2000, 1, 1), dt.date(2100, 1, 1)),
    st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(UTC)),
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    domains: dict[str, Any] = {}
    for host in draw(st.lists(_HOST, max_size=4, unique=True)):
        prefix = draw(st.sampled_from(["", "", "*.", "**."]))
        body: dict[str, Any] = {"pins": draw(st.lists(_PIN, min_size=2, max_size=3, unique=True))}
        if draw(st.booleans()):
            body["leaf_pins"] = draw(st.lists(_PIN, min_size=2, max_size=3, unique=True))
        if draw(st.booleans()):
            body["ca_pins"] = draw(st.lists(_PIN, min_size=2, max_size=3, unique=True))
        if prefix == "" and draw(st.booleans()):
            body["include_subdomains"] = True
        expiry = draw(_EXPIRY)
        if expiry is not None:
            body["expires"] = expiry
        body["enforce"] = draw(st.booleans())
        if draw(st.booleans()):
            body["report_uris"] = ["https://report.example/" + host]
        domains[prefix + host] = body
    doc: dict[str, Any] = {"domains": domains}
    if draw(st.booleans()):
        doc["version"] = draw(st.integers(min_value=0, max_value=2**40))
    doc["unpinned_hosts"] = draw(st.sampled_from(["allow", "deny"]))
    return doc


@settings(max_examples=150, deadline=None)
@given(documents())
def test_round_trip_property(doc: dict[str, Any]) -> None:
    try:
        p = Policy.from_dict(doc)
    except PolicyError as exc:
        # Only the public-suffix guard (e.g. "*.co.uk") and the backup rule (two pins of
        # different algorithms are not independent keys) may refuse a generated document.
        assert "public suffix" in str(exc) or "backup" in str(exc)
        return
    assert Policy.from_dict(p.to_dict()) == p
    assert Policy.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert Policy.from_dict(p.to_dict()).to_dict() == p.to_dict()
    compact = p.to_dict(defaults=False)  # what signed bundles carry
    assert Policy.from_dict(compact) == p
    for body in compact["domains"].values():
        assert body.get("enforce", False) is False and body.get("include_subdomains", True)


# -- programmatic construction ---------------------------------------------------------------------


def test_direct_construction_checks_pattern() -> None:
    r = DomainRule("a.example", pins=(Pin.parse(P1), Pin.parse(P2)))
    assert Policy({"a.example": r}).lookup("a.example") is r
    with pytest.raises(PolicyError, match="does not match its key"):
        Policy({"b.example": r})
    with pytest.raises(PolicyError, match="does not match its key"):
        Policy({"a..b": r})


def test_two_keys_can_never_name_one_rule() -> None:
    r = DomainRule("a.example.com", pins=(Pin.parse(P1), Pin.parse(P2)))
    # Another spelling of the pattern is a key that is not the rule's pattern: refused...
    with pytest.raises(PolicyError, match=r'domains\."A\.example\.com": rule pattern'):
        Policy(domains={"A.example.com": r, "a.example.com": r})
    with pytest.raises(PolicyError, match="does not match its key"):
        Policy(domains={"a.example.com": r, "A.EXAMPLE.COM.": r})
    # ...and from rules, the keys are the patterns: two rules for one pattern are refused.
    with pytest.raises(PolicyError, match="two rules for this pattern"):
        Policy.from_rules([r, dataclasses.replace(r, enforce=False)])
    # The twins: one key per rule, given or derived, is a policy.
    assert Policy(domains={"a.example.com": r}).domains == {"a.example.com": r}
    built = Policy.from_rules([r], version=3, unpinned_hosts="deny")
    assert dict(built.domains) == {"a.example.com": r}
    assert (built.version, built.unpinned_hosts) == (3, "deny")


def test_domains_is_a_read_only_mapping_of_its_own() -> None:
    r = DomainRule("a.example.com", pins=(Pin.parse(P1), Pin.parse(P2)))
    given = {"a.example.com": r}
    p = Policy(domains=given)
    given.clear()  # the caller's dict is not the policy's
    assert p.lookup("a.example.com") is r and list(p.domains) == ["a.example.com"]
    with pytest.raises(TypeError):
        p.domains["b.example.com"] = r  # type: ignore[index]
    copy = p.domains.copy()  # type: ignore[attr-defined]
    copy.clear()
    assert len(p.domains) == 1
    with pytest.raises(TypeError, match="must be a DomainRule"):
        Policy(domains={"a.example.com": {"pins": [P1, P2]}})  # type: ignore[dict-item]


def test_replace_rules() -> None:
    p = policy({"a.example": rule(), "b.example": rule()}, version=1)
    new_a = DomainRule("a.example", pins=(Pin.parse(P3), Pin.parse(P2)))
    new_c = DomainRule("c.example", pins=(Pin.parse(P3), Pin.parse(P1)))
    q = p.replace_rules([new_a, new_c])
    assert q.version == 1
    assert q.lookup("a.example") is new_a
    assert q.lookup("c.example") is new_c
    assert q.lookup("b.example") == p.lookup("b.example")
    assert p.lookup("a.example") != new_a  # the original is untouched
    assert p.lookup("c.example") is None
    assert p.replace_rules([], version=9).version == 9


@pytest.mark.parametrize(
    "new_key", ["*.example.com", "**.example.com", "example.com", "*.other.example.org"]
)
def test_replace_rules_answers_like_a_policy_built_from_scratch(new_key: str) -> None:
    # replace_rules reuses the lookup table: every answer must equal the full rebuild's.
    pins = (Pin.parse(P3), Pin.parse(P1))
    base = policy({"api.example.com": rule(), "example.com": rule(include_subdomains=True)})
    new = DomainRule(new_key, pins=pins, include_subdomains=new_key == "example.com")
    replaced = base.replace_rules([new])
    scratch = Policy(domains={**base.domains, new_key: new})
    assert replaced == scratch
    for host in (
        "example.com",
        "api.example.com",
        "x.example.com",
        "a.b.example.com",
        "x.other.example.org",
        "other.example.org",
        "example.org",
        "unrelated.test",
    ):
        # Equal rules (a rule deferred at load is built separately in each policy that reads it).
        assert replaced.lookup(host) == scratch.lookup(host), host
    # Replacing the include_subdomains rule by a plain one stops it covering subdomains.
    narrowed = base.replace_rules([DomainRule("example.com", pins=pins)])
    assert narrowed.lookup("x.example.com") is None


# -- lookup ----------------------------------------------------------------------------------------


def keys_policy(*keys: str, include: tuple[str, ...] = ()) -> Policy:
    return policy({k: rule(include_subdomains=k in include) for k in keys})


def matched(p: Policy, host: str) -> str | None:
    r = p.lookup(host)
    return None if r is None else r.pattern


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.example.com", "*.example.com"),
        ("A.Example.COM.", "*.example.com"),
        ("example.com", None),
        ("a.b.example.com", None),
        ("example.com.evil", None),
        ("notexample.com", None),
        ("aexample.com", None),
    ],
)
def test_one_label_wildcard(host: str, expected: str | None) -> None:
    assert matched(keys_policy("*.example.com"), host) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "**.example.com"),
        ("a.example.com", "**.example.com"),
        ("a.b.example.com", "**.example.com"),
        ("example.com.evil", None),
        ("notexample.com", None),
        ("com", None),
    ],
)
def test_any_labels_wildcard(host: str, expected: str | None) -> None:
    assert matched(keys_policy("**.example.com"), host) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("a.example.com", "example.com"),
        ("a.b.example.com", "example.com"),
        ("notexample.com", None),
        ("example.com.evil", None),
    ],
)
def test_include_subdomains(host: str, expected: str | None) -> None:
    assert matched(keys_policy("example.com", include=("example.com",)), host) == expected


def test_exact_without_include_subdomains() -> None:
    p = keys_policy("example.com")
    assert matched(p, "example.com") == "example.com"
    assert matched(p, "a.example.com") is None


PRECEDENCE = keys_policy(
    "a.b.example.com",
    "**.a.b.example.com",
    "*.b.example.com",
    "b.example.com",
    "**.b.example.com",
    "example.com",
    "**.example.com",
    include=("b.example.com", "example.com"),
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.b.example.com", "a.b.example.com"),  # exact beats everything
        ("x.a.b.example.com", "**.a.b.example.com"),  # nearest parent's ** beats further parents
        ("x.b.example.com", "*.b.example.com"),  # *.parent beats parent+include_subdomains
        ("b.example.com", "b.example.com"),  # exact beats **.b.example.com
        ("y.x.b.example.com", "b.example.com"),  # parent+include beats **.parent
        ("c.example.com", "example.com"),
        ("example.com", "example.com"),
    ],
)
def test_most_specific_wins(host: str, expected: str) -> None:
    assert matched(PRECEDENCE, host) == expected


def test_any_labels_on_host_beats_parents() -> None:
    p = keys_policy("**.a.example.com", "*.example.com", "example.com", include=("example.com",))
    assert matched(p, "a.example.com") == "**.a.example.com"


def test_one_label_only_for_nearest_parent() -> None:
    p = keys_policy("*.example.com", "**.example.com")
    assert matched(p, "a.example.com") == "*.example.com"
    assert matched(p, "a.b.example.com") == "**.example.com"
    assert matched(p, "example.com") == "**.example.com"


def test_parent_include_beats_farther_any() -> None:
    p = keys_policy("b.example.com", "**.example.com", include=("b.example.com",))
    assert matched(p, "x.b.example.com") == "b.example.com"
    p = keys_policy("b.example.com", "**.example.com")  # without include_subdomains
    assert matched(p, "x.b.example.com") == "**.example.com"


def test_ip_keys_are_exact_only() -> None:
    # "0.0.1" is an IPv4 spelling (inet_aton reads it as 0.0.0.1), so the key is that address.
    p = keys_policy("127.0.0.1", "::1", "0.0.1", include=("0.0.1",))
    assert sorted(p.domains) == ["0.0.0.1", "127.0.0.1", "::1"]
    assert matched(p, "127.0.0.1") == "127.0.0.1"
    assert matched(p, "[::1]") == "::1"
    assert matched(p, "0:0:0:0:0:0:0:1") == "::1"
    assert matched(p, "0.0.0.1") == "0.0.0.1"
    # An address has no parent domain: include_subdomains never makes it match another one.
    assert matched(p, "10.0.0.1") is None
    assert matched(p, "2001:db8::1") is None
    # A wildcard over an address is refused, and a name ending in a number that is not an
    # address is no host at all (OpenSSL and the resolver would disagree about it).
    with pytest.raises(PolicyError, match="wildcards do not apply to IP addresses"):
        keys_policy("**.0.1")
    with pytest.raises(ValueError, match="must be an IPv4 address"):
        p.lookup("x.0.1")


def test_lookup_invalid_host_raises_value_error() -> None:
    with pytest.raises(ValueError):
        keys_policy("example.com").lookup("a..example.com")


def test_lookup_idn() -> None:
    p = keys_policy("*.bücher.example")
    assert matched(p, "www.xn--bcher-kva.example") == "*.xn--bcher-kva.example"
    assert matched(p, "WWW.BÜCHER.example.") == "*.xn--bcher-kva.example"


@pytest.mark.parametrize(
    "uri",
    [
        'https://r.example/x?a="b"',
        "https://r.example/x'y",
        "https:// evil.example/",
        "https://r.example/\nInjected: 1",
        "https:///no-host",
        "http://[::1/broken",
        "ftp://r.example/",
    ],
)
def test_report_uris_must_be_plain_uris(uri: str) -> None:
    doc = {"domains": {"a.example": {"pins": [P1, P2], "report_uris": [uri]}}}
    with pytest.raises(PolicyError, match="report_uris"):
        Policy.from_dict(doc)


def test_report_uri_twins_accepted() -> None:
    uris = ["https://r.example/r?x=%C3%A9&y=1", "http://[::1]:8080/reports"]
    doc = {"domains": {"a.example": {"pins": [P1, P2], "report_uris": uris}}}
    assert Policy.from_dict(doc).domains["a.example"].report_uris == tuple(uris)


def test_parent_with_only_an_exact_rule_does_not_cover_subdomains() -> None:
    # "b.example" is an exact rule without include_subdomains; "**.other.test" makes parents of
    # two labels worth probing, so the walk does meet "b.example" and must pass it by.
    p = policy(
        {
            "b.example": {"pins": [P1, P2]},
            "**.other.test": {"pins": [P2, P3]},
        }
    )
    assert p.lookup("a.b.example") is None  # nearest parent: exact only
    assert p.lookup("x.a.b.example") is None  # further up the walk: exact only
    assert p.lookup("x.a.other.test") is p.domains["**.other.test"]
    assert p.lookup("b.example") is p.domains["b.example"]
    assert p.lookup("x.y.zzz.test") is None  # "zzz.test" is probed (two labels) and absent


def test_lookup_memo_is_bounded_and_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    import certpin.core.policy as module

    monkeypatch.setattr(module, "_MEMO_SIZE", 3)
    p = policy({"**.b.example": {"pins": [P1, P2]}})
    rule = p.domains["**.b.example"]
    hosts = [f"h{i}.b.example" for i in range(7)] + ["other.example"]
    for _ in range(2):  # the second pass is answered (partly) from the memo: same answers
        assert [p.lookup(h) for h in hosts] == [rule] * 7 + [None]
    assert len(p._memo) <= 3
    assert p.lookup("H1.B.EXAMPLE.") is rule  # raw spellings are memoised separately, same rule


def test_parent_walk_under_a_pinned_site() -> None:
    # "**.z.b.example" makes three-label parents under b.example worth probing.
    p = policy(
        {
            "q.b.example": {"pins": [P1, P2]},  # exact, no include_subdomains
            "**.z.b.example": {"pins": [P2, P3]},
        }
    )
    assert p.lookup("a.q.b.example") is None  # nearest parent probed: exact only, passed by
    assert p.lookup("m.n.k.b.example") is None  # "k.b.example" probed and absent
    assert p.lookup("m.n.z.b.example") is p.domains["**.z.b.example"]
    assert p.lookup("unrelated.example.net") is None  # another site: no parent probed at all


# -- one rule-acceptance path ----------------------------------------------------------------------


def test_from_dict_builds_the_rule_code_would_build() -> None:
    policy = Policy.from_dict(
        {"domains": {"API.example.com": {"pins": [P1, P2], "report_uris": ["https://r.example/"]}}}
    )
    built = DomainRule(
        "api.example.com",
        pins=(Pin.parse(P1), Pin.parse(P2)),
        report_uris=("https://r.example/",),
    )
    assert policy.domains["api.example.com"] == built
    assert policy == Policy.from_rules([built])
    # Its twin: what the rule refuses in code, the document is refused for, located in the file.
    with pytest.raises(PolicyError, match="backup pin") as in_code:
        DomainRule("api.example.com", pins=(Pin.parse(P1),))
    assert in_code.value.field == "pins"
    with pytest.raises(PolicyError, match=r'f\.toml: domains\."API\.example\.com"\.pins: .*backup'):
        Policy.from_dict({"domains": {"API.example.com": {"pins": [P1]}}}, source="f.toml")


def test_the_first_bad_rule_in_document_order_is_named() -> None:
    doc = {
        "domains": {
            "a.example.com": {"pins": ["sha256/bad", P1]},
            "b.example.com": {"pins": [P1, P2], "expires": "0001-01-01T00:00:00+01:00"},
        }
    }
    with pytest.raises(PolicyError, match=r'"a\.example\.com"\.pins\[0\]'):
        Policy.from_dict(doc)
    del doc["domains"]["a.example.com"]
    with pytest.raises(PolicyError, match=r'"b\.example\.com"\.expires.*out of range'):
        Policy.from_dict(doc)


def test_a_value_no_parser_makes_is_named_before_any_rule_error() -> None:
    doc = {
        "domains": {
            "a.example.com": {"pins": ["sha256/bad", P1]},
            "b.example.com": {"pins": [P1, P2], "expires": 2**70},
        }
    }
    with pytest.raises(PolicyError, match=r'"b\.example\.com"\.expires: integer out of range'):
        Policy.from_dict(doc)
    # Its twin: within 64 bits, the rule's own error (first in document order) is named.
    doc["domains"]["b.example.com"]["expires"] = 2**40
    with pytest.raises(PolicyError, match=r'"a\.example\.com"\.pins\[0\]'):
        Policy.from_dict(doc)


def test_a_str_subclass_key_becomes_a_plain_str() -> None:
    class Name(str):
        pass

    policy = Policy.from_dict({"domains": {Name("a.example.com"): {"pins": [P1, P2]}}})
    (key,) = policy.domains
    assert type(key) is str and type(policy.domains[key].pattern) is str
