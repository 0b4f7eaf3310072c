"""Fuzzing every importer: on any input it returns a policy or raises FormatError naming the
file, with a short message (`check_contract`); never RecursionError, UnicodeError, KeyError,
TypeError, struct.error or anything else.

Two kinds of input per format: arbitrary bytes (with the format's magic prefix half the time,
so the parser gets past its first check), and structure-aware mutations of a valid file:
spans deleted or duplicated, and format tokens (tags, quotes, entities, comment markers...)
inserted. The plist importers also get valid plists (XML and binary) with random values in
random places, and binary plists with random bytes overwritten (offset table and trailer
included). Example counts keep each test within a few seconds.
"""

from __future__ import annotations

import plistlib
from typing import Any

import pytest
from _fmt_inputs import IMPORTERS, PLIST_DOCS, check_contract, sample
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_XML_TOKENS = [
    "<",
    ">",
    "</",
    "/>",
    "&",
    "&amp;",
    "&#0;",
    "&#x110000;",
    "&lt;",
    "&undefined;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?pi x?>",
    '<!DOCTYPE x [<!ENTITY e "v">]>',
    '<!DOCTYPE x SYSTEM "file:///etc/passwd">',
    '"',
    "'",
    "=",
    "\x00",
    "\ufeff",
    "é",
    "\n",
    "<domain-config>",
    "</domain-config>",
    "<domain>",
    "</domain>",
    "<pin-set>",
    "</pin-set>",
    '<pin digest="SHA-256">',
    '<pin digest="SHA-1">',
    "</pin>",
    "<trustkit-config>",
    "<report-uri>",
    'includeSubdomains="maybe"',
    'expiration="2030-13-01"',
    "<base-config>",
    "<dict>",
    "</dict>",
    "<array>",
    "</array>",
    "<key>",
    "</key>",
    "<string>",
    "</string>",
    "<integer>99999999999999999999999</integer>",
    "<integer>0x</integer>",
    "<real>x</real>",
    "<date>2030-99-01T00:00:00Z</date>",
    "<data>!!</data>",
    "<true/>",
    "<false/>",
    '<?xml version="1.0" encoding="utf-16"?>',
    '<?xml version="1.0" encoding="x-nope"?>',
    "<plist>",
    "</plist>",
    "NSPinnedDomains",
    "TSKPinnedDomains",
    "PayloadContent",
]
_CODE_TOKENS = [
    ".add(",
    '"',
    "\\",
    '"""',
    "/*",
    "*/",
    "//",
    "'",
    "sha256/",
    "sha1/",
    "**.",
    "*.",
    ",",
    ")",
    "\n",
    "\u2028",
    "certpin policy version: " + "9" * 5000,
    "\\u000a",
    "example.com",
    "\x00",
]
_SHELL_TOKENS = [
    "'",
    '"',
    "\\",
    "#",
    "--pinnedpubkey",
    "--pinnedpubkey=",
    "https://",
    "https://[::1",
    "https://[",
    "sha256//",
    ";",
    "\n",
    " ",
    "$(x)",
    "\x00",
    "certpin policy version: 77",
]
_HPKP_TOKENS = [
    "# host: ",
    "Public-Key-Pins:",
    "Public-Key-Pins-Report-Only:",
    "pin-sha256=",
    '"',
    ";",
    "max-age=",
    "max-age=0",
    "includeSubDomains",
    "report-uri=",
    "\\",
    "\n",
    "=",
    "\r",
    "pin-sha384=",
    "\u0085",
]
TOKENS = {
    "android-nsc": _XML_TOKENS,
    "trustkit-android": _XML_TOKENS,
    "ats-plist": _XML_TOKENS,
    "trustkit-ios": _XML_TOKENS,
    "mobileconfig": _XML_TOKENS,
    "okhttp-kotlin": _CODE_TOKENS,
    "okhttp-java": _CODE_TOKENS,
    "trustkit-ios-code": [*_CODE_TOKENS, "[", "]", ":", "@{", "@[", "kTSKPinnedDomains", "\\("],
    "curl": _SHELL_TOKENS,
    "hpkp": _HPKP_TOKENS,
}
PREFIXES = {
    "ats-plist": [b"bplist00", b'<?xml version="1.0"?><plist>'],
    "trustkit-ios": [b"bplist00", b"<plist>"],
    "mobileconfig": [b"bplist00", b"<?xml version='1.0'?>"],
    "android-nsc": [b"<network-security-config>"],
    "trustkit-android": [b"<network-security-config><domain-config>"],
    "okhttp-kotlin": [b'.add("'],
    "okhttp-java": [b'.add("a.example", "sha256/'],
    "trustkit-ios-code": [b'[kTSKPinnedDomains: ["a.example": [', b'@{kTSKPinnedDomains: @{@"'],
    "curl": [b"curl --pinnedpubkey "],
    "hpkp": [b"# host: a.example\nPublic-Key-Pins: "],
}
FORMATS_FUZZED = list(TOKENS)


@st.composite
def _mutated(draw: st.DrawFn, fmt: str) -> bytes:
    data = bytearray(sample(fmt))
    tokens = st.sampled_from(TOKENS[fmt]).map(lambda t: t.encode("utf-8"))
    for _ in range(draw(st.integers(1, 6))):
        n = len(data)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 64)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "byte", "repeat"]))
        if op == "delete":
            del data[i:j]
        elif op == "insert":
            data[i:i] = draw(tokens | st.binary(min_size=1, max_size=8))
        elif op == "duplicate":
            data[j:j] = data[i:j]
        elif op == "repeat":  # the same token many times: nesting, long runs
            data[i:i] = draw(tokens) * draw(st.integers(2, 200))
        elif i < n:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.parametrize("fmt", FORMATS_FUZZED)
@FUZZ
@given(data=st.data())
def test_arbitrary_bytes_give_a_policy_or_a_format_error(fmt: str, data: st.DataObject) -> None:
    prefix = data.draw(st.sampled_from([b"", *PREFIXES[fmt]]))
    check_contract(fmt, prefix + data.draw(st.binary(max_size=600)))


@pytest.mark.parametrize("fmt", FORMATS_FUZZED)
@FUZZ
@given(data=st.data())
def test_mutated_files_give_a_policy_or_a_format_error(fmt: str, data: st.DataObject) -> None:
    check_contract(fmt, data.draw(_mutated(fmt)))


# -- plists: valid syntax, hostile values ---------------------------------------------------------

_LEAVES = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=12)
    | st.binary(max_size=12)
    | st.sampled_from(["2030-01-01", "example.com", "com.apple.security.root", "sha256/x"])
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(_XML_TOKENS[-3:]), inner, max_size=4
        )
    ),
    max_leaves=24,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*path, i))
    return out


def _replaced(doc: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replaced(doc[head], rest, new)}
    copy = list(doc)
    copy[head] = _replaced(doc[head], rest, new)
    return copy


@pytest.mark.parametrize("fmt", list(PLIST_DOCS))
@FUZZ
@given(data=st.data())
def test_plists_with_hostile_values_give_a_policy_or_a_format_error(
    fmt: str, data: st.DataObject
) -> None:
    doc = PLIST_DOCS[fmt]()
    path = data.draw(st.sampled_from(_paths(doc)))
    doc = _replaced(doc, path, data.draw(_VALUES))
    kind = data.draw(st.sampled_from([plistlib.FMT_XML, plistlib.FMT_BINARY]))
    try:
        encoded = plistlib.dumps(doc, fmt=kind)
    except (TypeError, ValueError, OverflowError):
        assume(False)  # not representable as a plist (a non-dict top level, say)
    check_contract(fmt, encoded)


@pytest.mark.parametrize("fmt", list(PLIST_DOCS))
@FUZZ
@given(data=st.data())
def test_binary_plists_with_overwritten_bytes_give_a_policy_or_a_format_error(
    fmt: str, data: st.DataObject
) -> None:
    encoded = bytearray(plistlib.dumps(PLIST_DOCS[fmt](), fmt=plistlib.FMT_BINARY))
    for _ in range(data.draw(st.integers(1, 4))):
        # Half the time aim at the offset table and trailer, where references live.
        low = data.draw(st.sampled_from([0, max(0, len(encoded) - 64)]))
        i = data.draw(st.integers(low, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    check_contract(fmt, bytes(encoded))


def test_every_fuzzed_format_has_a_valid_sample() -> None:
    # The mutation tests start from these: a sample that does not import would fuzz nothing
    # but the error path.
    for fmt in FORMATS_FUZZED:
        assert check_contract(fmt, sample(fmt)) is not None, fmt
    assert set(FORMATS_FUZZED) == set(IMPORTERS)
