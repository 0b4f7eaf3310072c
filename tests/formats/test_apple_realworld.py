"""Issue #14, the Apple side: plists as Xcode and iOS read them (ats-plist, trustkit-ios,
mobileconfig), their subdomain semantics, and hostile binary plists.

Fixtures are in tests/data/realworld/apple/, written from Apple's NSPinnedDomains documentation,
Security's SecPolicy.c (parseNSPinnedDomains) and TrustKit's parse_configuration.m and
configuration_utils.m. Every odd fixture has the clean twin ``*_clean.plist``, which imports
with no warning; binary twins are made here with plistlib.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import plistlib
import re
import struct
from pathlib import Path

import pytest

from _support.growth import assert_near_linear
from certpin import Policy
from certpin.cli.main import main
from certpin.formats import FORMATS, ExportOptions, FormatError, ImportOptions

DATA = Path(__file__).resolve().parents[1] / "data" / "realworld" / "apple"


def _pin(seed: str) -> str:
    return "sha256/" + base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


def _import(fmt: str, name: str, data: bytes | None = None, **options: object):  # type: ignore[no-untyped-def]
    raw = (DATA / name).read_bytes() if data is None else data
    return FORMATS[fmt].import_(raw, name, ImportOptions(**options))  # type: ignore[arg-type]


def _binary(name: str) -> bytes:
    doc = plistlib.loads((DATA / name).read_bytes(), fmt=plistlib.FMT_XML)
    return plistlib.dumps(doc, fmt=plistlib.FMT_BINARY)


# -- clean twins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("ats-plist", "ats_clean.plist"),
        ("ats-plist", "ats_bare_dict.plist"),
        ("trustkit-ios", "trustkit_clean.plist"),
    ],
)
@pytest.mark.parametrize("binary", [False, True])
def test_clean_files_import_without_warnings(fmt: str, name: str, binary: bool) -> None:
    result = _import(fmt, name, _binary(name) if binary else None)
    assert result.warnings == ()
    assert result.policy.domains


def test_ats_clean_file_means_what_ios_pins() -> None:
    policy = _import("ats-plist", "ats_clean.plist").policy
    assert list(policy.domains) == ["example.com", "*.example.com", "api.example.net"]
    # NSIncludesSubdomains: the host and one label below it, not deeper (SecPolicy.c).
    assert policy.lookup("example.com") is not None
    assert policy.lookup("math.example.com") is not None
    assert policy.lookup("advanced.math.example.com") is None
    assert policy.domains["api.example.net"].leaf_pins
    assert not policy.domains["api.example.net"].ca_pins


def test_trustkit_include_subdomains_covers_every_depth() -> None:
    policy = _import("trustkit-ios", "trustkit_clean.plist").policy
    assert policy.lookup("advanced.math.example.com") is policy.domains["example.com"]
    assert policy.domains["report.example.net"].enforce is False
    assert policy.domains["report.example.net"].report_uris == ("https://reports.example.net/tk",)


def test_hpkp_include_subdomains_covers_every_depth() -> None:
    a, b = _pin("a")[7:], _pin("b")[7:]
    text = (
        "# host: example.com\n"
        f'Public-Key-Pins: pin-sha256="{a}"; pin-sha256="{b}"; max-age=9; includeSubDomains\n'
    )
    policy = FORMATS["hpkp"].import_(text.encode(), "h.txt", ImportOptions()).policy
    assert policy.lookup("a.b.c.example.com") is policy.domains["example.com"]
    no_sub = text.replace("; includeSubDomains", "")
    assert (
        FORMATS["hpkp"]
        .import_(no_sub.encode(), "h.txt", ImportOptions())
        .policy.lookup("a.example.com")
        is None
    )


# -- item 6: plists as Xcode reads them -----------------------------------------------------------


def test_whitespace_before_xml_declaration_is_read_as_corefoundation_does() -> None:
    result = _import("ats-plist", "ats_whitespace.plist")
    assert result.policy.domains == _import("ats-plist", "ats_clean.plist").policy.domains
    assert len(result.warnings) == 1 and "whitespace before <?xml" in result.warnings[0]


def test_bom_before_declaration_needs_no_warning() -> None:
    data = b"\xef\xbb\xbf" + (DATA / "ats_clean.plist").read_bytes()
    assert _import("ats-plist", "bom.plist", data).warnings == ()


def test_text_after_the_plist_end_is_ignored_as_corefoundation_does() -> None:
    # CFPropertyList.c stops after the first element: "a file that has garbage after the
    # first element will nonetheless successfully parse".
    result = _import("ats-plist", "ats_trailing.plist")
    assert result.policy.domains == _import("ats-plist", "ats_clean.plist").policy.domains
    assert len(result.warnings) == 1
    assert re.match(
        r"ats_trailing\.plist: line 69: text after the end of the top element \('%% merged",
        result.warnings[0],
    )


@pytest.mark.parametrize(
    "tail", [b"\n", b"\n<!-- generated -->\n", b"<?xcode keep?>\n"], ids=["space", "comment", "pi"]
)
def test_what_xml_allows_after_the_plist_end_needs_no_warning(tail: bytes) -> None:
    data = (DATA / "ats_clean.plist").read_bytes() + tail
    assert _import("ats-plist", "tail.plist", data).warnings == ()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        # CF refuses text before the first element ("Unexpected character").
        (b"junk\n<plist><dict/></plist>", r"line 1, column 1: invalid XML"),
        # and a top element that never ends.
        (b"<plist><dict><key>a</key>\n%%", r"line 2, column \d+: invalid XML"),
    ],
)
def test_what_corefoundation_refuses_around_the_top_element_stays_an_error(
    data: bytes, problem: str
) -> None:
    with pytest.raises(FormatError, match=f"^bad\\.plist: {problem}"):
        _import("ats-plist", "bad.plist", data)


def test_a_pasted_key_fragment_is_an_error_with_the_fix() -> None:
    data = b"<key>NSAppTransportSecurity</key>\n<dict/>\n"
    with pytest.raises(
        FormatError, match=r"frag\.plist: line 1: a fragment that starts with <key>"
    ):
        _import("ats-plist", "frag.plist", data)


def test_misplaced_pinned_domains_names_where_it_was_found() -> None:
    with pytest.raises(FormatError, match=r"found at NSAppTransportSecurity\.NSExceptionDomains"):
        _import("ats-plist", "ats_misplaced.plist")


# -- items 2, 3, 4: placeholders, unmatchable domains, misspelled keys ----------------------------


def test_ats_misspelled_keys_are_warned_with_did_you_mean_and_their_effect() -> None:
    result = _import("ats-plist", "ats_typos.plist")
    joined = "\n".join(result.warnings)
    assert (
        "NSPinnedDomains.example.com.NSIncludesSubDomains: unknown key "
        '(did you mean "NSIncludesSubdomains"?)' in joined
    )
    assert '(did you mean "NSPinnedCAIdentities"?)' in joined
    assert '(did you mean "NSAllowsArbitraryLoads"?)' in joined
    # What iOS does: the misspelled flag is ignored, so no subdomain is pinned.
    assert "*.example.com" not in result.policy.domains
    assert not result.policy.domains["api.example.net"].ca_pins


def test_ats_unmatchable_keys_are_left_out_as_not_pinned() -> None:
    result = _import("ats-plist", "ats_unmatchable.plist")
    assert list(result.policy.domains) == ["pay.example.org"]
    not_pinned = [w for w in result.warnings if "NOT pinned on iOS today" in w]
    assert len(not_pinned) == 3
    assert any("https://api.example.com/" in w and "scheme" in w for w in not_pinned)
    assert any("api.example.com:443" in w and "port" in w for w in not_pinned)
    assert any("www.example.com." in w for w in not_pinned)


def test_ats_ip_range_keys_are_left_out_with_their_own_reason() -> None:
    # Security's parseNSPinnedDomains compares each key with the host name as text: a CIDR
    # range never equals a host (NSExceptionDomains takes ranges from iOS 17, pinning does not).
    result = _import("ats-plist", "ats_ip_range.plist")
    assert list(result.policy.domains) == ["pay.example.org"]
    ranges = [w for w in result.warnings if "is an IP range: ATS pins domain names only" in w]
    assert len(ranges) == 2
    assert any(
        re.search(
            r"NSPinnedDomains\.10\.0\.0\.0/8: left out: .*so 10\.0\.0\.0/8 is NOT pinned "
            r"on iOS",
            w,
        )
        for w in ranges
    )
    assert any("2001:db8:12::/48 is NOT pinned on iOS" in w for w in ranges)
    # The twin: a key with a path is not a range and keeps its own reason.
    path = [w for w in result.warnings if "api.example.com/v1" in w]
    assert len(path) == 1 and "IP range" not in path[0] and "has a path" in path[0]


def test_placeholder_pins_import_with_a_warning() -> None:
    result = _import("ats-plist", "ats_placeholder.plist")
    assert any("placeholder" in w and "47DEQpj8" in w for w in result.warnings)
    assert any("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=" in w for w in result.warnings)
    rule = result.policy.domains["api.example.com"]
    assert _pin("x") not in {str(p) for p in rule.ca_pins}
    assert len(rule.ca_pins) == 2 and len(rule.leaf_pins) == 2


def test_trustkit_misspelled_keys_are_warned_and_take_trustkit_defaults() -> None:
    result = _import("trustkit-ios", "trustkit_typos.plist")
    joined = "\n".join(result.warnings)
    assert '(did you mean "TSKIncludeSubdomains"?)' in joined
    assert '(did you mean "TSKEnforcePinning"?)' in joined
    assert '(did you mean "TSKSwizzleNetworkDelegates"?)' in joined
    rule = result.policy.domains["example.com"]
    # TrustKit never reads the misspelled keys: no subdomains, enforcing (its defaults).
    assert rule.include_subdomains is False and rule.enforce is True


def test_trustkit_booleans_as_strings_and_numbers_are_read_with_boolvalue() -> None:
    result = _import("trustkit-ios", "trustkit_strings.plist")
    rule = result.policy.domains["example.com"]
    assert rule.include_subdomains is True and rule.enforce is False
    assert any("TrustKit reads it as YES" in w for w in result.warnings)
    assert any("TrustKit reads it as NO" in w for w in result.warnings)


def test_trustkit_unmatchable_key_is_left_out_and_placeholder_warned() -> None:
    result = _import("trustkit-ios", "trustkit_placeholder.plist")
    assert list(result.policy.domains) == ["example.com"]
    assert any("NOT pinned by TrustKit today" in w for w in result.warnings)
    assert any("placeholder" in w for w in result.warnings)


def test_trustkit_single_pin_is_refused_as_trustkit_refuses_it() -> None:
    with pytest.raises(FormatError, match=r"TSKPublicKeyHashes: 1 distinct pin.*TrustKit raises"):
        _import("trustkit-ios", "trustkit_single_pin.plist")


# -- item 10: expiry already past -----------------------------------------------------------------


def test_trustkit_expired_pin_set_is_not_pinned_today() -> None:
    result = _import("trustkit-ios", "trustkit_expired.plist")
    assert any("not pinned on devices today" in w for w in result.warnings)
    # The twin: judged on a day before the expiry, the same file is not warned about.
    before = _import("trustkit-ios", "trustkit_expired.plist", today=dt.date(2020, 12, 31))
    assert not any("not pinned on devices today" in w for w in before.warnings)


def test_trustkit_unreadable_date_means_no_expiry() -> None:
    data = (DATA / "trustkit_clean.plist").read_bytes().replace(b"2099-12-31", b"31.12.2099")
    result = _import("trustkit-ios", "bad-date.plist", data)
    assert result.policy.domains["example.com"].expires is None
    assert any("never expire" in w for w in result.warnings)


# -- item 9: export to ATS ------------------------------------------------------------------------


def _policy(domains: dict[str, dict[str, object]]) -> Policy:
    return Policy.from_dict({"domains": domains})


def test_export_of_host_plus_one_label_is_exact() -> None:
    a, b = _pin("a"), _pin("b")
    policy = _policy({"example.com": {"ca_pins": [a, b]}, "*.example.com": {"ca_pins": [a, b]}})
    result = FORMATS["ats-plist"].export(policy, ExportOptions())
    assert result.warnings == ()
    doc = plistlib.loads(result.text.encode())
    assert doc["NSAppTransportSecurity"]["NSPinnedDomains"]["example.com"]["NSIncludesSubdomains"]
    back = FORMATS["ats-plist"].import_(result.text.encode(), "x.plist", ImportOptions())
    assert back.policy.domains == policy.domains


@pytest.mark.parametrize(
    "domains",
    [
        {"example.com": {"ca_pins": [_pin("a"), _pin("b")], "include_subdomains": True}},
        {"**.example.com": {"ca_pins": [_pin("a"), _pin("b")]}},
    ],
)
def test_export_of_every_depth_warns_which_depths_ios_leaves_unpinned(
    domains: dict[str, dict[str, object]],
) -> None:
    result = FORMATS["ats-plist"].export(_policy(domains), ExportOptions())
    assert any("a.b.example.com and deeper are NOT pinned by iOS" in w for w in result.warnings)


def test_export_warns_when_ios_combines_a_host_with_its_parent() -> None:
    a, b, c, d = _pin("a"), _pin("b"), _pin("c"), _pin("d")
    policy = _policy(
        {
            "example.com": {"ca_pins": [a, b]},
            "*.example.com": {"ca_pins": [a, b]},
            "api.example.com": {"ca_pins": [c, d]},
        }
    )
    result = FORMATS["ats-plist"].export(policy, ExportOptions())
    assert any("iOS also applies the pins of 'example.com'" in w for w in result.warnings)


def test_import_gives_a_host_under_an_including_parent_both_keys_pins() -> None:
    a, b, c, d = (_pin(x)[7:] for x in "abcd")
    ident = lambda *xs: [{"SPKI-SHA256-BASE64": x} for x in xs]  # noqa: E731
    doc = {
        "NSAppTransportSecurity": {
            "NSPinnedDomains": {
                "example.com": {"NSIncludesSubdomains": True, "NSPinnedCAIdentities": ident(a, b)},
                "api.example.com": {"NSPinnedCAIdentities": ident(c, d)},
            }
        }
    }
    result = FORMATS["ats-plist"].import_(plistlib.dumps(doc), "i.plist", ImportOptions())
    assert len(result.policy.domains["api.example.com"].ca_pins) == 4
    assert any("imported as their union" in w for w in result.warnings)


def test_cli_strict_fails_on_an_ats_export_with_include_subdomains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _pin("a"), _pin("b")
    deep = tmp_path / "deep.toml"
    deep.write_text(
        f'[domains."example.com"]\nca_pins = ["{a}", "{b}"]\ninclude_subdomains = true\n'
    )
    out = tmp_path / "Info.plist"
    assert main(["export", "--format", "ats-plist", str(deep), "-o", str(out), "--strict"]) == 1
    assert "NOT pinned by iOS" in capsys.readouterr().err
    exact = tmp_path / "exact.toml"
    exact.write_text(
        f'[domains."example.com"]\nca_pins = ["{a}", "{b}"]\n'
        f'[domains."*.example.com"]\nca_pins = ["{a}", "{b}"]\n'
    )
    assert main(["export", "--format", "ats-plist", str(exact), "-o", str(out), "--strict"]) == 0


@pytest.mark.parametrize(
    ("fmt", "odd", "clean"),
    [
        ("ats-plist", "ats_typos.plist", "ats_clean.plist"),
        ("ats-plist", "ats_whitespace.plist", "ats_clean.plist"),
        ("trustkit-ios", "trustkit_typos.plist", "trustkit_clean.plist"),
    ],
)
def test_cli_import_warns_and_strict_fails_while_the_twin_passes(
    fmt: str, odd: str, clean: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.toml"
    assert main(["import", "--format", fmt, str(DATA / odd), "-o", str(out)]) == 0
    assert "warning" in capsys.readouterr().err
    assert main(["import", "--format", fmt, str(DATA / odd), "-o", str(out), "--strict"]) == 1
    assert main(["import", "--format", fmt, str(DATA / clean), "--strict", "-o", str(out)]) == 0


def test_cli_exit_2_names_the_file_for_what_the_platform_rejects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = DATA / "trustkit_single_pin.plist"
    assert main(["import", "--format", "trustkit-ios", str(path)]) == 2
    assert f"{path}: TSKConfiguration.TSKPinnedDomains.example.com" in capsys.readouterr().err


# -- mobileconfig ---------------------------------------------------------------------------------


def test_mobileconfig_misspelled_payload_type_is_warned() -> None:
    from _support.pki import make_pki

    der, backup = make_pki().root.der(), make_pki().root.der()
    good = {"PayloadType": "com.apple.security.root", "PayloadContent": der}
    spare = {"PayloadType": "com.apple.security.root", "PayloadContent": backup}
    typo = {"PayloadType": "com.apple.security.roots", "PayloadContent": der}
    wifi = {"PayloadType": "com.apple.wifi.managed", "SSID_STR": "x"}
    clean = plistlib.dumps({"PayloadContent": [good, spare]})
    odd = plistlib.dumps({"PayloadContent": [good, spare, typo, wifi]})
    options = ImportOptions(domain="example.com")
    assert FORMATS["mobileconfig"].import_(clean, "p.mobileconfig", options).warnings == ()
    warnings = FORMATS["mobileconfig"].import_(odd, "p.mobileconfig", options).warnings
    assert any('did you mean "com.apple.security.root"' in w for w in warnings)
    assert any("com.apple.wifi.managed" in w for w in warnings)


# -- hostile binary plists stay bounded -----------------------------------------------------------


def _bplist(
    objects: list[bytes], top: int, *, ref_size: int = 1, count: int | None = None
) -> bytes:
    out = bytearray(b"bplist00")
    offsets = []
    for obj in objects:
        offsets.append(len(out))
        out += obj
    table = len(out)
    out += b"".join(struct.pack(">I", o) for o in offsets)
    n = len(objects) if count is None else count
    return bytes(out + struct.pack(">6xBBQQQ", 4, ref_size, n, top, table))


HOSTILE = {
    # An array that holds itself: a cycle.
    "cycle": _bplist([b"\xa1\x00"], 0),
    # An array header claiming 2**62 members.
    "huge count": _bplist([b"\xaf\x13" + struct.pack(">Q", 1 << 62)], 0),
    # A reference to an object that does not exist.
    "bad ref": _bplist([b"\xa1\x05"], 0),
    # A trailer claiming 2**40 objects.
    "huge table": _bplist([b"\xa0"], 0, count=1 << 40),
    # An object offset past the end of the file.
    "bad offset": b"bplist00\xa0"
    + struct.pack(">I", 1 << 30)
    + struct.pack(">6xBBQQQ", 4, 1, 1, 0, 9),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("fmt", ["ats-plist", "trustkit-ios", "mobileconfig"])
def test_hostile_binary_plists_are_clean_errors(fmt: str, name: str) -> None:
    with pytest.raises(FormatError, match=r"^h\.plist: "):
        FORMATS[fmt].import_(HOSTILE[name], "h.plist", ImportOptions(domain="example.com"))


def test_clean_binary_twin_of_the_hostile_shapes_imports() -> None:
    data = _binary("ats_clean.plist")
    assert FORMATS["ats-plist"].import_(data, "h.plist", ImportOptions()).policy.domains


def _many_hosts(n: int) -> bytes:
    ident = [{"SPKI-SHA256-BASE64": _pin("a")[7:]}, {"SPKI-SHA256-BASE64": _pin("b")[7:]}]
    pinned = {
        f"h{i}.example.com": {"NSIncludesSubdomains": bool(i % 2), "NSPinnedCAIdentities": ident}
        for i in range(n)
    }
    return plistlib.dumps(
        {"NSAppTransportSecurity": {"NSPinnedDomains": pinned}}, fmt=plistlib.FMT_BINARY
    )


def test_binary_import_time_grows_linearly() -> None:
    assert_near_linear(
        lambda data: FORMATS["ats-plist"].import_(data, "g.plist", ImportOptions()),
        _many_hosts,
        base=200,
    )
