"""Network Security Configs as real apps ship them (issue #14), read the way Android reads them.

Each fixture in tests/data/realworld/android/ holds one class of oddity and has a twin
(``*.ok.xml``) with the same hosts written correctly, which imports without a warning. The
``reject_*`` files are ones Android itself refuses (XmlConfigSource throws ParserException).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from _support.growth import assert_near_linear
from certpin.cli.main import main
from certpin.formats import FORMATS, FormatError, ImportOptions, ImportResult
from certpin.lifecycle.lint import lint_policy

DATA = Path(__file__).parent.parent / "data" / "realworld" / "android"
TODAY = dt.date(2026, 12, 4)


def _import(name: str, fmt: str = "android-nsc", today: dt.date = TODAY) -> ImportResult:
    return FORMATS[fmt].import_((DATA / name).read_bytes(), name, ImportOptions(today=today))


def _has(warnings: tuple[str, ...], *patterns: str) -> None:
    for pattern in patterns:
        assert any(re.search(pattern, w) for w in warnings), (pattern, warnings)


# -- every class with its twin --------------------------------------------------------------------

CLASSES = {
    # item 1: base64 Android decodes leniently
    "lenient_base64": (
        "android-nsc",
        ["api.example.com"],
        [
            r"line 7, <pin>: pin '8y1s.*QOP=' is not canonical base64; Android .* reads it as "
            r"8y1s.*QOM=, imported as sha256/8y1s",
            r"line 8, <pin>: pin 'tE7d.*Kqs' is not canonical",
            r"line 9, <pin>: pin 'VcUP.* is not canonical",
        ],
    ),
    # item 2: placeholders
    "placeholder_pins": (
        "android-nsc",
        ["api.example.com", "cdn.example.com", "img.example.com"],
        [
            r"line 5: api\.example\.com: pin sha256/B{42}A= is a placeholder \(one repeated",
            r"line 5: api\.example\.com: one real pin besides 1 placeholder",
            r"cdn\.example\.com: pin sha256/47DEQ.* placeholder \(the SHA-256 of empty input\)",
            r"cdn\.example\.com: pin sha256/ABCDEF.* placeholder \(a sequence",
            r"img\.example\.com: pin sha256/A{43}= is a placeholder \(all zero bytes\)",
        ],
    ),
    # item 2: the same pin on unrelated hosts, as the second of two pins
    "shared_pins": (
        "android-nsc",
        ["api.example.com", "login.other-company.net"],
        [
            r"line 5: api\.example\.com: pin sha256/8y1s.* is also pinned for unrelated host\(s\) "
            r"login\.other-company\.net: with only two pins",
            r"line 12: login\.other-company\.net: pin sha256/tE7d.* is also pinned for unrelated "
            r"host\(s\) api\.example\.com",
        ],
    ),
    # item 3: domains that can never match
    "unmatchable_domains": (
        "android-nsc",
        ["www.example.com"],
        [
            r"line 5, <domain>: host api\.example\.com is NOT pinned on Android today: "
            r"'api\.example\.com/' can never match a host name \(.*trailing '/'",
            r"line 6, .*host login\.example\.com is NOT pinned.*scheme",
            r"line 7, .*host pay\.example\.com is NOT pinned.*port",
            r"line 8, .*'my account\.example\.com' can never match.*whitespace",
            r"line 9, .*'\*\.static\.example\.com' can never match.*wildcard",
        ],
    ),
    # item 4: misspellings, with the line and a "did you mean"
    "misspelled": (
        "android-nsc",
        ["api.example.com", "cdn.example.com"],
        [
            r"line 4, <domain-config>: attribute enforcePinning=\"true\" is not one Android "
            r"reads on <domain-config>: ignored \(enforcePinning belongs on <trustkit-config>\)",
            r"line 5, <domain>: attribute includeSubDomains=\"true\" .*did you mean "
            r"\"includeSubdomains\"",
            r"line 6, <pin-set>: attribute expiraton=\"2020-01-01\" .*did you mean \"expiration\"",
            r"line 13, <pinset>: <pinset> is not an element .*did you mean \"pin-set\"",
        ],
    ),
    # item 5: newer and rarer features
    "features": (
        "android-nsc",
        ["api.example.com", "inner.api.example.com"],
        [
            r"line 20, <pin>: <pin> outside <pin-set> .*not enforced",
            r"line 22, <domain>: attribute android:includeSubdomains=\"true\" has a namespace "
            r"prefix",
            r"line 25, <debug-overrides>: .*only debuggable builds read it.*bypass the pins",
            r"line 10, <domain>: host api\.example\.com is effectively unpinned on Android for "
            r"certificates that chain to user-installed CAs: .*overridePins=\"true\"> \(line 17\)",
            r"line 22, <domain>: host inner\.api\.example\.com is effectively unpinned",
            r"host api\.example\.com trusts the CA certificates of @raw/corp_ca \(line 18\)",
            r"host api\.example\.com: cleartextTrafficPermitted=\"true\" \(line 9\)",
            r"host api\.example\.com: <certificateTransparency enabled=\"true\"> \(line 11\)",
        ],
    ),
    # item 10: an expired pin-set
    "expired": (
        "android-nsc",
        ["api.example.com"],
        [
            r"line 5, <domain>: host api\.example\.com: its <pin-set> expired on 2021-06-30 "
            r"\(line 6\): Android no longer enforces these pins, so api\.example\.com is NOT "
            r"pinned on devices today",
        ],
    ),
    # TrustKit Android's own element
    "trustkit_typos": (
        "trustkit-android",
        ["api.example.com"],
        [
            r"line 10, <trustkit-config>: attribute enforcePining=\"true\" is not one TrustKit "
            r"reads.*did you mean \"enforcePinning\"",
            r"line 11, <reportUri>: .*did you mean \"report-uri\"",
            r"enforcePinning=\"yes\" is not \"true\" or \"false\": TrustKit reads it as false",
        ],
    ),
    # TrustKit Android's readings that differ from Android's
    "trustkit_inherit": (
        "trustkit-android",
        ["example.com", "api.example.com", "cdn.example.com", "img.example.com"],
        [
            r"line 14, <domain>: host api\.example\.com: TrustKit-Android inherits "
            r"includeSubdomains=\"true\" from the enclosing <domain-config> \(line 5\)",
            r"line 23, <domain>: host cdn\.example\.com: TrustKit-Android reads only the last "
            r"<domain> of a <domain-config> \(line 24\)",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_class_imports_with_warnings_naming_the_line(name: str) -> None:
    fmt, hosts, patterns = CLASSES[name]
    result = _import(f"{name}.xml", fmt)
    assert list(result.policy.domains) == hosts
    _has(result.warnings, *(f"^{name}\\.xml: " + ".*" + p for p in patterns))
    assert len(result.warnings) >= len(patterns)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_twin_imports_without_a_warning(name: str) -> None:
    fmt, _hosts, _patterns = CLASSES[name]
    result = _import(f"{name}.ok.xml", fmt)
    assert result.warnings == ()
    assert result.policy.domains


def test_lenient_pins_import_as_the_canonical_pins_of_the_twin() -> None:
    odd, ok = _import("lenient_base64.xml"), _import("lenient_base64.ok.xml")
    assert odd.policy.domains == ok.policy.domains


def test_misspelled_attributes_import_with_androids_meaning() -> None:
    # Android ignores includeSubDomains and expiraton: exact host, no expiry.
    rule = _import("misspelled.xml").policy.domains["api.example.com"]
    assert rule.include_subdomains is False
    assert rule.expires is None
    twin = _import("misspelled.ok.xml").policy.domains["api.example.com"]
    assert twin.include_subdomains is True
    # <pinset> is ignored; the real <pin-set> after it is the one Android reads.
    odd = _import("misspelled.xml").policy.domains["cdn.example.com"].pins
    assert odd == _import("misspelled.ok.xml").policy.domains["cdn.example.com"].pins


def test_nested_domain_config_inherits_pins_and_settings() -> None:
    policy = _import("features.ok.xml").policy
    inner, outer = policy.domains["inner.api.example.com"], policy.domains["api.example.com"]
    assert inner.pins == outer.pins and inner.expires == outer.expires
    assert inner.include_subdomains is True


def test_expired_pin_set_keeps_its_date_and_lint_reports_it() -> None:
    rule = _import("expired.xml").policy.domains["api.example.com"]
    assert rule.expires == dt.datetime(2021, 6, 30, tzinfo=dt.UTC)
    findings = lint_policy(
        _import("expired.xml").policy, now=dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    )
    assert any(f.rule == "CP104" for f in findings)
    # The day itself: Android stops enforcing at midnight starting the expiry date.
    assert _import("expired.xml", today=dt.date(2021, 6, 30)).warnings
    assert not _import("expired.xml", today=dt.date(2021, 6, 29)).warnings


def test_placeholders_are_lint_findings() -> None:
    findings = lint_policy(_import("placeholder_pins.xml").policy)
    by_domain = {(f.domain, f.severity) for f in findings if f.rule == "CP109"}
    # the only backup of api/cdn: error; img has a real backup: warning.
    assert ("api.example.com", "error") in by_domain
    assert ("cdn.example.com", "error") in by_domain
    assert ("img.example.com", "warning") in by_domain
    assert not [
        f for f in lint_policy(_import("placeholder_pins.ok.xml").policy) if f.rule == "CP109"
    ]


PINS = (
    '<pin digest="SHA-256">8y1sSm49O/oCd672C4mGwdQBIBG5dZ2Rs4fCcDAzQOM=</pin>'
    '<pin digest="SHA-256">tE7dCFws67+sQzTiKF6HIlJAWXl8EcvkZHwa5SfaKqs=</pin>'
)


# -- files Android refuses ------------------------------------------------------------------------

REJECTED = {
    "reject_duplicate_domain.xml": r"line 12, <domain>: 'api\.example\.com' has already been "
    r"specified at line 5",
    "reject_two_pin_sets.xml": r"line 10, <pin-set>: Multiple pin-set elements not allowed",
    "reject_digest.xml": r"line 8, <pin>: <pin digest=\"SHA-1\">",
    "reject_base64.xml": r"line 8, <pin>: pin 'tE7d.*' decodes to 31 bytes",
    "reject_short_pin.xml": r"line 8, <pin>: pin 'tE7dCFws67\+sQzTiKF6H' decodes to 15 bytes",
    "reject_expiration.xml": r"line 6, <pin-set>: invalid date '30/06/2027'",
    "reject_pin_set_in_base.xml": r"line 5, <pin-set>: pin-set element not allowed in base-config",
    "reject_certificates_src.xml": r"line 11, <certificates>: src=\"raw/ca\": Unknown",
    "reject_ct_in_debug.xml": r"line 12, <certificateTransparency>: certificateTransparency not "
    r"allowed in debug-overrides",
    "reject_empty_domain.xml": r"line 5, <domain>: Domain name missing",
    # TrustKit-Android's own refusals (it throws at start) in a file with a <trustkit-config>
    "reject_trustkit_one_pin.xml": r"line 6, <pin-set>: Less than two pins for domain "
    r"api\.example\.com with enforcePinning=\"true\" \(line 9\)",
    "reject_trustkit_domain.xml": r"line 5, <domain>: Tried to pin an invalid domain: "
    r"'localhost'",
    "reject_trustkit_report_uri.xml": r"line 11, <report-uri>: report URI "
    r"'reports\.example\.com/pin': MalformedURLException: no protocol",
    "reject_trustkit_digest.xml": r"line 7, <pin>: <pin digest=\"sha-256\">: TrustKit-Android "
    r"only accepts",
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_files_android_refuses_are_errors_naming_the_line(name: str) -> None:
    with pytest.raises(FormatError, match=f"^{re.escape(name)}: {REJECTED[name]}"):
        _import(name)


@pytest.mark.parametrize("name", sorted(n for n in REJECTED if "trustkit" in n))
def test_without_trustkit_config_android_loads_what_trustkit_refuses(name: str) -> None:
    # The twin: the same file without <trustkit-config> is an Android NSC, which Android loads.
    data = re.sub(rb"(?s)<trustkit-config.*?</trustkit-config>", b"", (DATA / name).read_bytes())
    result = FORMATS["android-nsc"].import_(data, name, ImportOptions(today=TODAY))
    assert result.policy.domains


def test_trustkit_inheritance_is_trustkits() -> None:
    odd, ok = _import("trustkit_inherit.xml"), _import("trustkit_inherit.ok.xml")
    api = odd.policy.domains["api.example.com"]
    # includeSubdomains inherited; disableDefaultReportUri inherited (no default-URI warning).
    assert api.include_subdomains is True and api.enforce is True and not api.report_uris
    assert odd.policy.domains["api.example.com"] == ok.policy.domains["api.example.com"]
    # cdn is pinned by Android alone: its <trustkit-config> applies to img only.
    assert odd.policy.domains["img.example.com"] == ok.policy.domains["img.example.com"]
    assert not any("default report URI" in w for w in odd.warnings)


def _tk(domain: str, pins: str = PINS, tk: str = 'enforcePinning="true"', inner: str = "") -> str:
    return (
        f"<domain-config><domain>{domain}</domain><pin-set>{pins}</pin-set>"
        f'<trustkit-config {tk} disableDefaultReportUri="true"/>{inner}</domain-config>'
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (_tk("api.example.com"), None),
        (_tk("api.example.com."), None),  # TrustKit takes it; Android's rule matches nothing
        (_tk("api.example.com", tk='enforcePinning="false"', pins=PINS[:72]), None),
        (_tk("api.example.com", pins=""), "An empty pin-set for domain api.example.com"),
        (_tk(" api.example.com"), "whitespace around it"),
        (_tk("10.0.0.1"), "not a DNS name ending in a top-level domain"),
        (_tk("a.example"), r"top-level domain \.example is not on TrustKit's list"),
        (
            _tk(
                "a.example.com",
                inner="<domain-config><domain>b.example.com</domain>"
                f"<pin-set>{PINS[:72]}</pin-set></domain-config>",
            ),
            "Less than two pins for domain b.example.com",  # enforcePinning inherited
        ),
        (
            "<domain-config><domain>a.example.com</domain><trustkit-config "
            'enforcePinning="true"/></domain-config>',
            None,  # no pin-set: TrustKit skips the config
        ),
    ],
)
def test_what_trustkit_refuses(body: str, problem: str | None) -> None:
    if problem is None:
        _small(body, "trustkit-android")
        return
    with pytest.raises(FormatError, match=f"^n.xml: line 2, <[a-z-]+>: .*{problem}"):
        _small(body, "trustkit-android")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("<base-config/><base-config/>", "Only one base-config allowed"),
        ("<debug-overrides/><debug-overrides/>", "Only one debug-overrides allowed"),
        ("<base-config><domain>a.example</domain></base-config>", "domain element not allowed"),
        (
            "<debug-overrides><domain-config><domain>a.example</domain></domain-config>"
            "</debug-overrides>",
            "Nested domain-config not allowed",
        ),
        (
            "<domain-config><domain>a.example<x/></domain></domain-config>",
            "domain contains additional elements",
        ),
        (
            "<domain-config><domain>a.example</domain><trust-anchors/><trust-anchors/>"
            "</domain-config>",
            "Multiple trust-anchor elements",
        ),
        (
            "<domain-config><domain>a.example</domain><trust-anchors><certificates/>"
            "</trust-anchors></domain-config>",
            "missing src attribute",
        ),
        (
            '<domain-config><domain>a.example</domain><pin-set><pin digest="SHA-256"/>'
            "</pin-set></domain-config>",
            "Missing pin digest",
        ),
        (
            '<domain-config><domain>a.example</domain><pin-set expiration="2026-02-30">'
            "</pin-set></domain-config>",
            "invalid date",
        ),
        ("<domain-config><pin-set/></domain-config>", "needs at least one <domain>"),
    ],
)
def test_more_files_android_refuses(body: str, problem: str) -> None:
    data = f"<network-security-config>\n{body}\n</network-security-config>".encode()
    with pytest.raises(FormatError, match=f"^n.xml: line 2, <[a-z-]+>: .*{problem}"):
        FORMATS["android-nsc"].import_(data, "n.xml", ImportOptions(today=TODAY))


# -- what Android loads with a meaning worth saying -----------------------------------------------


def _small(body: str, fmt: str = "android-nsc") -> ImportResult:
    data = f"<network-security-config>\n{body}\n</network-security-config>".encode()
    return FORMATS[fmt].import_(data, "n.xml", ImportOptions(today=TODAY))


@pytest.mark.parametrize(
    ("expiration", "read_as", "warned"),
    [
        ("2099-01-31", "2099-01-31", False),
        ("2099-1-5", "2099-01-05", True),
        ("2099-01-31T00:00", "2099-01-31", True),
    ],
)
def test_expiration_is_read_as_simpledateformat_reads_it(
    expiration: str, read_as: str, warned: bool
) -> None:
    result = _small(
        f'<domain-config><domain>a.example</domain><pin-set expiration="{expiration}">{PINS}'
        "</pin-set></domain-config>"
    )
    assert result.policy.domains["a.example"].expires == dt.datetime.fromisoformat(read_as).replace(
        tzinfo=dt.UTC
    )
    assert bool(result.warnings) is warned


def test_an_empty_pin_set_pins_nothing() -> None:
    result = _small("<domain-config><domain>a.example</domain><pin-set/></domain-config>")
    assert not result.policy.domains
    _has(result.warnings, r"^n\.xml: line 2, <domain>: host 'a\.example' is NOT pinned on Android")


def test_a_nested_empty_pin_set_unpins_the_inner_host_only() -> None:
    result = _small(
        f"<domain-config><domain>a.example</domain><pin-set>{PINS}</pin-set>"
        "<domain-config><domain>b.a.example</domain><pin-set/></domain-config></domain-config>"
    )
    assert list(result.policy.domains) == ["a.example"]


def test_a_pin_listed_twice_counts_once() -> None:
    pin = '<pin digest="SHA-256">8y1sSm49O/oCd672C4mGwdQBIBG5dZ2Rs4fCcDAzQOM=</pin>'
    result = _small(
        f"<domain-config><domain>a.example</domain><pin-set>{PINS}{pin}</pin-set></domain-config>"
    )
    assert len(result.policy.domains["a.example"].pins) == 2
    _has(result.warnings, "listed twice")


@pytest.mark.parametrize(
    ("attribute", "include", "warned"),
    [
        ('includeSubdomains="true"', True, False),
        ('includeSubdomains="TRUE"', True, False),
        ('includeSubdomains="yes"', False, True),
        ('tools:ignore="X"', False, False),
        ('xmlns:tools="http://schemas.android.com/tools"', False, False),
    ],
)
def test_domain_attributes(attribute: str, include: bool, warned: bool) -> None:
    result = _small(
        f"<domain-config><domain {attribute}>a.example</domain><pin-set>{PINS}</pin-set>"
        "</domain-config>"
    )
    assert result.policy.domains["a.example"].include_subdomains is include
    assert bool(result.warnings) is warned


def test_base_config_settings_reach_top_level_domain_configs_wherever_it_is() -> None:
    # <base-config> after the domain-config still is its parent (XmlConfigSource).
    result = _small(
        f"<domain-config><domain>a.example</domain><pin-set>{PINS}</pin-set></domain-config>"
        '<base-config cleartextTrafficPermitted="true"><trust-anchors>'
        '<certificates src="system" overridePins="true"/></trust-anchors></base-config>'
    )
    _has(
        result.warnings,
        r"host a\.example is effectively unpinned on Android for certificates that chain to "
        r"the system CAs",
        r"host a\.example: cleartextTrafficPermitted=\"true\" \(line 2\)",
    )
    # An own <trust-anchors> replaces the inherited one.
    result = _small(
        f"<domain-config><domain>a.example</domain><pin-set>{PINS}</pin-set><trust-anchors>"
        '<certificates src="system"/></trust-anchors></domain-config><base-config><trust-anchors>'
        '<certificates src="system" overridePins="true"/></trust-anchors></base-config>'
    )
    assert result.warnings == ()


# -- through the CLI ------------------------------------------------------------------------------


def test_cli_imports_with_warnings_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pins.toml"
    path = DATA / "misspelled.xml"
    assert main(["import", "--format", "android-nsc", str(path), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f'{path}: line 5, <domain>: attribute includeSubDomains="true"' in err
    assert "api.example.com" in out.read_text()


def test_cli_strict_fails_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pins.toml"
    path = DATA / "misspelled.xml"
    assert main(["import", "--format", "android-nsc", str(path), "-o", str(out), "--strict"]) == 1
    assert not out.exists()
    # The twin passes --strict.
    twin = DATA / "misspelled.ok.xml"
    assert main(["import", "--format", "android-nsc", str(twin), "-o", str(out), "--strict"]) == 0
    assert out.exists()


def test_cli_platform_rejected_is_exit_2_naming_file_and_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = DATA / "reject_two_pin_sets.xml"
    assert main(["import", "--format", "android-nsc", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: line 10, <pin-set>: Multiple pin-set elements not allowed" in err
    assert "Traceback" not in err


# -- bounded ---------------------------------------------------------------------------------------


def test_warnings_stay_linear_in_the_number_of_odd_attributes() -> None:
    def make(n: int) -> bytes:
        attrs = " ".join(f'x{i}="1"' for i in range(n))
        return (
            f"<network-security-config><domain-config {attrs}><domain>a.example</domain>"
            f"<pin-set>{PINS}</pin-set></domain-config></network-security-config>"
        ).encode()

    def run(data: bytes) -> None:
        FORMATS["android-nsc"].import_(data, "n.xml", ImportOptions(today=TODAY))

    assert_near_linear(run, make, base=500)


def test_unknown_elements_stay_linear() -> None:
    def make(n: int) -> bytes:
        return (
            "<network-security-config><domain-config><domain>a.example</domain>"
            f"<pin-set>{PINS}</pin-set>{'<pinset/>' * n}</domain-config></network-security-config>"
        ).encode()

    def run(data: bytes) -> None:
        FORMATS["android-nsc"].import_(data, "n.xml", ImportOptions(today=TODAY))

    assert_near_linear(run, make, base=2000)


def test_trustkit_export_warns_for_a_domain_trustkit_refuses() -> None:
    from certpin import Policy
    from certpin.formats import ExportOptions

    pins = [
        "sha256/AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        "sha256/AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
    ]
    policy = Policy.from_dict(
        {"domains": {"localhost": {"pins": pins}, "api.example.com": {"pins": pins}}}
    )
    warnings = FORMATS["trustkit-android"].export(policy, ExportOptions()).warnings
    assert len(warnings) == 1
    assert warnings[0].startswith("localhost: TrustKit Android refuses the domain localhost")
    # The twin: Android itself pins localhost, and the same policy exports without a word.
    assert FORMATS["android-nsc"].export(policy, ExportOptions()).warnings == ()
