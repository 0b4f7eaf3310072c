"""OkHttp's union-of-patterns semantics, and the NSC XML rules, checked in detail."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.pki import make_pki
from certpin import Pin, Policy, VerdictStatus, verdict
from certpin.core.hosts import HostPattern
from certpin.formats import FORMATS, ExportOptions, FormatError, ImportOptions
from certpin.formats._okhttp import _Patterns

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _pin() -> str:
    return "sha256/" + base64.b64encode(os.urandom(32)).decode()


def _kotlin(*adds: tuple[str, str, str]) -> bytes:
    lines = ["val p = CertificatePinner.Builder()"]
    lines += [f'    .add("{h}", "{a}", "{b}")' for h, a, b in adds]
    return ("\n".join(lines) + "\n    .build()\n").encode()


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("**.example.com", "example.com", True),
        ("**.example.com", "a.b.example.com", True),
        ("**.example.com", "badexample.com", False),
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "x.api.example.com", False),
    ],
)
def test_okhttp_pattern_rule(pattern: str, host: str, expected: bool) -> None:
    # OkHttp's pattern rule is certpin's own (`HostPattern.matches`).
    assert HostPattern.parse(pattern).matches(host) is expected


def test_import_gives_the_narrower_rule_the_wildcards_pins() -> None:
    w1, w2, n1, n2 = _pin(), _pin(), _pin(), _pin()
    data = _kotlin(("*.example.com", w1, w2), ("a.example.com", n1, n2))
    result = FORMATS["okhttp-kotlin"].import_(data, "Pins.kt", ImportOptions())
    rules = result.policy.domains
    assert [str(p) for p in rules["a.example.com"].pins] == [n1, n2, w1, w2]
    assert [str(p) for p in rules["*.example.com"].pins] == [w1, w2]
    assert any("OkHttp unions" in w for w in result.warnings)
    # What OkHttp accepts for a.example.com, certpin now accepts too: a chain with only the
    # wildcard's key passes for a.example.com (decided by verdict, the one matcher).
    wildcard_key = make_pki(hostnames=("a.example.com",))
    pin = str(Pin.for_certificate(wildcard_key.intermediate.der()))
    data = _kotlin(("*.example.com", pin, w2), ("a.example.com", n1, n2))
    policy = FORMATS["okhttp-kotlin"].import_(data, "Pins.kt", ImportOptions()).policy
    chain = wildcard_key.leaf.chain_der()
    assert verdict("a.example.com", chain, policy, NOW).status is VerdictStatus.OK
    assert verdict("b.example.com", chain, policy, NOW).status is VerdictStatus.OK


def test_import_without_overlap_adds_nothing() -> None:
    a, b, c, d = _pin(), _pin(), _pin(), _pin()
    data = _kotlin(("*.example.com", a, b), ("a.example.org", c, d))
    result = FORMATS["okhttp-kotlin"].import_(data, "Pins.kt", ImportOptions())
    assert [str(p) for p in result.policy.domains["a.example.org"].pins] == [c, d]
    assert result.warnings == ()


def test_import_adds_an_exact_rule_where_a_double_star_base_gets_more_pins() -> None:
    # OkHttp: b.example.com matches both "*.example.com" and "**.b.example.com"; deeper names
    # only the latter. certpin needs an exact rule for b.example.com to say the same.
    w1, w2, s1, s2 = _pin(), _pin(), _pin(), _pin()
    data = _kotlin(("*.example.com", w1, w2), ("**.b.example.com", s1, s2))
    result = FORMATS["okhttp-java"].import_(data, "Pins.java", ImportOptions())
    rules = result.policy.domains
    assert {str(p) for p in rules["b.example.com"].pins} == {w1, w2, s1, s2}
    assert [str(p) for p in rules["**.b.example.com"].pins] == [s1, s2]
    assert any("added as an exact rule" in w for w in result.warnings)


def test_export_warns_where_okhttp_would_union_a_broader_pattern() -> None:
    a, b, c, d = _pin(), _pin(), _pin(), _pin()
    policy = Policy.from_dict(
        {"domains": {"**.example.com": {"pins": [a, b]}, "api.example.com": {"pins": [c, d]}}}
    )
    result = FORMATS["okhttp-kotlin"].export(policy, ExportOptions())
    assert any(
        "for api.example.com it also accepts 2 pin(s) of **.example.com" in w
        for w in result.warnings
    )
    separate = Policy.from_dict(
        {"domains": {"**.example.org": {"pins": [a, b]}, "api.example.com": {"pins": [c, d]}}}
    )
    assert FORMATS["okhttp-kotlin"].export(separate, ExportOptions()).warnings == ()


def test_okhttp3_has_no_double_star() -> None:
    a, b = _pin(), _pin()
    policy = Policy.from_dict({"domains": {"**.example.com": {"pins": [a, b]}}})
    four = FORMATS["okhttp-java"].export(policy, ExportOptions(okhttp=4))
    assert '.add("**.example.com"' in four.text and four.warnings == ()
    three = FORMATS["okhttp-java"].export(policy, ExportOptions(okhttp=3))
    assert "**." not in three.text.split("import", 1)[1]
    assert '.add("example.com"' in three.text and '.add("*.example.com"' in three.text
    assert any("OkHttp 3 has no '**.'" in w for w in three.warnings)


def test_okhttp_import_errors_name_the_line() -> None:
    a = _pin()
    sha1 = (
        f'val p = CertificatePinner.Builder()\n    .add("a.example.com", "{a}")\n'
        '    .add("b.example.com", "sha1/AAAAAAAAAAAAAAAAAAAAAAAAAAA=")\n'
    )
    # OkHttp accepts SHA-1 pins; certpin has none: left out, naming the line.
    result = FORMATS["okhttp-kotlin"].import_(sha1.encode(), "Pins.kt", ImportOptions())
    assert any(w.startswith("Pins.kt: line 3: SHA-1 pin") for w in result.warnings)
    assert list(result.policy.domains) == ["a.example.com"]
    variable = 'CertificatePinner.Builder()\n\n  .add("a.example.com", PIN_A)\n'
    unresolved = r"Pins\.kt: none of the 1 .*line 3: 'PIN_A': .*not a constant"
    with pytest.raises(FormatError, match=unresolved):
        FORMATS["okhttp-kotlin"].import_(variable.encode(), "Pins.kt", ImportOptions())
    bad = f'CertificatePinner.Builder()\n\n  .add("a.*.example.com", "{a}")\n'
    with pytest.raises(FormatError, match=r"Pins\.kt: line 3: unexpected pattern"):
        FORMATS["okhttp-kotlin"].import_(bad.encode(), "Pins.kt", ImportOptions())
    with pytest.raises(FormatError, match="no CertificatePinner"):
        FORMATS["okhttp-kotlin"].import_(b"class Empty", "Pins.kt", ImportOptions())


# -- Android Network Security Config rules ------------------------------------------------------


def _check_nsc(text: str) -> None:
    """The structure Android's XmlConfigSource accepts (the parts this export uses)."""
    root = ET.fromstring(text)
    assert root.tag == "network-security-config"
    seen: set[str] = set()
    for dc in root:
        assert dc.tag == "domain-config"
        domains = dc.findall("domain")
        assert domains, "a domain-config needs at least one domain"
        for d in domains:
            assert set(d.attrib) <= {"includeSubdomains"}
            assert d.attrib.get("includeSubdomains", "false") in ("true", "false")
            assert d.text and d.text == d.text.strip().lower()
            assert d.text not in seen, "Android rejects a domain configured twice"
            seen.add(d.text)
        pin_sets = dc.findall("pin-set")
        assert len(pin_sets) == 1
        pin_set = pin_sets[0]
        assert set(pin_set.attrib) <= {"expiration"}
        if "expiration" in pin_set.attrib:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", pin_set.attrib["expiration"])
        pins = list(pin_set)
        assert pins
        for pin in pins:
            assert pin.tag == "pin" and pin.attrib == {"digest": "SHA-256"}
            assert len(base64.b64decode(pin.text or "", validate=True)) == 32
        for tk in dc.findall("trustkit-config"):
            assert tk.attrib["enforcePinning"] in ("true", "false")
            assert tk.attrib["disableDefaultReportUri"] == "true"


@pytest.mark.parametrize("fmt", ["android-nsc", "trustkit-android"])
def test_nsc_export_follows_the_nsc_rules(fmt: str) -> None:
    a, b, c, d = _pin(), _pin(), _pin(), _pin()
    policy = Policy.from_dict(
        {
            "domains": {
                "API.Example.com": {"pins": [a, b], "expires": "2030-01-01"},
                "**.example.org": {"pins": [c, d], "report_uris": ["https://r.example.org/"]},
                "*.example.org": {"leaf_pins": [a, b]},  # collides with **. on example.org
            }
        }
    )
    result = FORMATS[fmt].export(policy, ExportOptions())
    _check_nsc(result.text)
    assert any("already taken" in w for w in result.warnings)


def test_nsc_nested_domain_config_inherits_the_pin_set() -> None:
    a, b = (_pin().removeprefix("sha256/") for _ in range(2))
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<network-security-config>
  <domain-config>
    <domain includeSubdomains="true">example.com</domain>
    <pin-set expiration="2031-02-03">
      <pin digest="SHA-256">{a}</pin><pin digest="SHA-256">{b}</pin>
    </pin-set>
    <domain-config>
      <domain>inner.example.com</domain>
    </domain-config>
  </domain-config>
</network-security-config>"""
    policy = FORMATS["android-nsc"].import_(xml.encode(), "nsc.xml", ImportOptions()).policy
    assert policy.domains["inner.example.com"].pins == policy.domains["example.com"].pins
    assert policy.domains["inner.example.com"].include_subdomains is False
    assert policy.domains["example.com"].expires == dt.datetime(2031, 2, 3, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "<domain-config>\n<domain>a.example.com</domain>\n<pin-set>\n"
            '<pin digest="SHA-1">AAAA</pin>\n</pin-set></domain-config>',
            r"line 5, <pin>: .*SHA-256",
        ),
        (
            "<domain-config>\n<pin-set/></domain-config>",
            r"line 2, <domain-config>: a <domain-config> needs at least one <domain>",
        ),
        (
            '<domain-config>\n<domain>a.example.com</domain>\n<pin-set expiration="31/12/2030">'
            '<pin digest="SHA-256">{PIN}</pin></pin-set></domain-config>',
            r"line 4, <pin-set>: invalid date",
        ),
        ("<domain-config>", r"line 2, column \d+: invalid XML: mismatched tag"),
        # What Android itself refuses; what it loads is in test_nsc_realworld.py.
        (
            "<domain-config>\n<domain>a.example.com</domain>\n<domain>A.example.com </domain>"
            "</domain-config>",
            r"line 4, <domain>: 'a.example.com' has already been specified at line 3",
        ),
    ],
)
def test_nsc_import_errors_name_the_line(body: str, message: str) -> None:
    body = body.replace("{PIN}", base64.b64encode(os.urandom(32)).decode())
    xml = f"<?xml version='1.0'?>\n<network-security-config>{body}</network-security-config>"
    with pytest.raises(FormatError, match="^nsc.xml: " + message):
        FORMATS["android-nsc"].import_(xml.encode(), "nsc.xml", ImportOptions())


def test_xml_entity_declarations_are_refused() -> None:
    xml = b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaa">]>\n<network-security-config/>'
    with pytest.raises(FormatError, match="entity declarations"):
        FORMATS["android-nsc"].import_(xml, "nsc.xml", ImportOptions())
    with pytest.raises(FormatError, match="entity declarations"):
        FORMATS["ats-plist"].import_(xml, "Info.plist", ImportOptions())


def test_plist_import_errors_name_the_key() -> None:
    import plistlib

    doc = {
        "NSAppTransportSecurity": {
            "NSPinnedDomains": {
                "a.example.com": {"NSPinnedCAIdentities": [{"SPKI-SHA256-BASE64": "nope"}]}
            }
        }
    }
    with pytest.raises(
        FormatError,
        match=r"NSPinnedDomains\.a\.example\.com\.NSPinnedCAIdentities\[0\]: .*decodes to 3 bytes",
    ):
        FORMATS["ats-plist"].import_(plistlib.dumps(doc), "Info.plist", ImportOptions())
    tk = {"TSKConfiguration": {"TSKPinnedDomains": {"a.example.com": {"TSKPublicKeyHashes": "x"}}}}
    with pytest.raises(FormatError, match=r"TSKPublicKeyHashes: must be an array"):
        FORMATS["trustkit-ios"].import_(plistlib.dumps(tk), "Info.plist", ImportOptions())
    with pytest.raises(FormatError, match=r"Info.plist: line 1, column \d+: invalid XML"):
        FORMATS["trustkit-ios"].import_(
            b"<?xml version='1.0'?><plist><dict>", "Info.plist", ImportOptions()
        )


# -- OkHttp import: comments are not code -------------------------------------------------------


@pytest.mark.parametrize("java", [True, False])
def test_okhttp_import_ignores_commented_out_pins_and_domains(java: bool) -> None:
    live, backup, dead, dead_host_pin = _pin(), _pin(), _pin(), _pin()
    semi = ";" if java else ""
    source = f"""
// .add("evil.example", "{dead_host_pin}", "{dead_host_pin}")
val pinner = CertificatePinner.Builder()
    .add("api.example.com", "{live}", /* "{dead}", */ "{backup}")  // .add("x.example", "{dead}")
    /*
    .add("old.example.com", "{dead}", "{dead_host_pin}")
    */
    .add("docs.example.com", "https://not-a-comment//x".length.toString().let {{ "{live}" }})
    .build(){semi}
"""
    # The "//" inside the docs.example.com string literal is not a comment: the expression is
    # read whole (and named as unresolvable), on the right line.
    result = FORMATS["okhttp-java"].import_(source.encode(), "P.kt", ImportOptions())
    assert any(
        w.startswith('P.kt: line 8: pin \'"https://not-a-comment//x".length')
        for w in result.warnings
    ), result.warnings
    source = "\n".join(ln for ln in source.splitlines() if "docs.example.com" not in ln)
    policy = FORMATS["okhttp-java"].import_(source.encode(), "P.kt", ImportOptions()).policy
    assert list(policy.domains) == ["api.example.com"]
    assert [str(p) for p in policy.domains["api.example.com"].pins] == [live, backup]


def test_okhttp_import_keeps_string_literals_holding_comment_markers() -> None:
    # A pin never holds "//", but a host pattern string next to a URL-like literal must survive.
    source = (
        f'val u = "https://x//y /* z"\nval p = Builder().add("a.example", "{_pin()}", "{_pin()}")\n'
    )
    policy = FORMATS["okhttp-kotlin"].import_(source.encode(), "P.kt", ImportOptions()).policy
    assert list(policy.domains) == ["a.example"]


def test_okhttp_import_refuses_a_nested_block_comment() -> None:
    # Java ends the comment at the first */, Kotlin nests: the live code would differ.
    source = f'/* /* */ .add("a.example", "{_pin()}", "{_pin()}") */\n'
    with pytest.raises(FormatError, match=r"P\.kt: line 1: a /\* inside a block comment"):
        FORMATS["okhttp-kotlin"].import_(source.encode(), "P.kt", ImportOptions())
    with pytest.raises(FormatError, match=r"line 2: unterminated /\* comment"):
        FORMATS["okhttp-kotlin"].import_(b"\n/* .add(", "P.kt", ImportOptions())


# -- the pattern index against the plain definition ------------------------------------------------

_LABELS = st.sampled_from(["a", "b", "example", "com", "x-y"])
_HOSTS = st.lists(_LABELS, min_size=1, max_size=4).map(".".join)
_PATTERNS = st.tuples(st.sampled_from(["", "*.", "**."]), _HOSTS).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(
        st.tuples(_PATTERNS, st.lists(st.integers(0, 5), max_size=3, unique=True)), max_size=8
    ),
    host=_HOSTS,
)
def test_the_pattern_index_gives_the_union_okhttp_matches_gives(
    entries: list[tuple[str, list[int]]], host: str
) -> None:
    # The import and export look patterns up by the texts that can match a host (linear); the
    # plain definition compares the host with every pattern (quadratic overall). Same answer.
    pins = [Pin.parse("sha256/" + base64.b64encode(bytes([i]) * 32).decode()) for i in range(6)]
    typed = [(pattern, [pins[i] for i in items]) for pattern, items in entries]
    plain_pins: list[Pin] = []
    plain_patterns: list[str] = []
    for pattern, items in typed:
        if HostPattern.parse(pattern).matches(host):
            plain_patterns.append(pattern)
            plain_pins += [p for p in items if p not in plain_pins]
    assert _Patterns(typed).union(host) == (plain_pins, plain_patterns)
