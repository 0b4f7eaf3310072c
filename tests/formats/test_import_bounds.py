"""Hostile foreign files: plist bombs, deep nesting, XML entities, oversized input.

Every importer must finish fast with a FormatError naming the file and where in it (exit 2 from
``certpin import``), never hang, exhaust memory or show a traceback. Each hostile case has a
passing twin: the same construction kept within bounds imports.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from _fmt_inputs import (
    IMPORTERS,
    PLIST_DOCS,
    BPlist,
    binary,
    bomb_ref,
    deep_xml_plist,
    nested_ref,
    nsc,
    sample,
    shared_doc,
    trustkit_android,
    wrap,
    xml_plist,
)

from certpin.cli.main import main
from certpin.formats import FORMATS, FormatError

PLISTS = list(PLIST_DOCS)
XMLS = ["android-nsc", "trustkit-android", *PLISTS]
#: Where each plist importer looks first: a bomb there is what the importer itself walks into.
READ_PATH = {
    "ats-plist": ["NSAppTransportSecurity"],
    "trustkit-ios": ["TSKConfiguration"],
    "mobileconfig": ["PayloadContent"],
}
FAST = 2.0  # seconds; every rejection here takes milliseconds


def _import(fmt: str, data: bytes, source: str = "in/put.plist") -> object:
    return FORMATS[fmt].import_(data, source, IMPORTERS[fmt])


def _cli(fmt: str, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = ["import", "-f", fmt, str(path)]
    if fmt == "mobileconfig":
        argv += ["--domain", "example.com"]
    start = time.perf_counter()
    code = main(argv)
    assert time.perf_counter() - start < FAST
    return code, capsys.readouterr().err


def _rejects_fast(fmt: str, data: bytes, match: str) -> FormatError:
    start = time.perf_counter()
    with pytest.raises(FormatError, match=match) as info:
        _import(fmt, data)
    assert time.perf_counter() - start < FAST
    assert len(str(info.value)) < 400
    return info.value


# -- plist bombs: shared references ---------------------------------------------------------------


#: (fan-out, levels): 2**60 leaves 61 deep (the depth bound stops it), and 14**8 leaves 9 deep
#: (the bound on visited values stops it).
BOMBS = {"deep": (2, 60), "wide": (14, 8)}


def _bomb(fmt: str, path: list[str], shape: str) -> bytes:
    fanout, levels = BOMBS[shape]
    plist = BPlist()
    return plist.build(wrap(plist, path, bomb_ref(plist, levels, fanout)))


@pytest.mark.parametrize("shape", list(BOMBS))
@pytest.mark.parametrize("fmt", PLISTS)
def test_a_plist_bomb_where_the_importer_reads_is_refused_fast(
    fmt: str, shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _bomb(fmt, READ_PATH[fmt], shape)
    assert len(data) < 1000  # billions of leaves in a few hundred bytes
    err = _rejects_fast(fmt, data, r"^in/put\.plist: " + READ_PATH[fmt][0])
    expected = "nested more than 32" if shape == "deep" else "more than 100000 values"
    assert expected in err.problem
    path = tmp_path / "bomb.plist"
    path.write_bytes(data)
    code, stderr = _cli(fmt, path, capsys)
    assert code == 2
    assert f"certpin: error: {path}: {READ_PATH[fmt][0]}" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("fmt", PLISTS)
def test_a_plist_bomb_under_a_key_nobody_reads_is_refused_too(fmt: str) -> None:
    # The whole document is walked once, bounded, before any importer looks at it: a bomb
    # cannot wait under an ignored key for a later consumer (or a repr in a warning).
    plist = BPlist()
    doc = shared_doc(plist, fmt)
    doc["Unrelated"] = bomb_ref(plist, levels=8, fanout=14)
    data = plist.build(plist.dict_of(doc))
    _rejects_fast(fmt, data, r"^in/put\.plist: Unrelated.*: more than 100000 values")


@pytest.mark.parametrize("fmt", PLISTS)
def test_shared_references_within_bounds_import(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plist = BPlist()
    doc = shared_doc(plist, fmt)
    doc["Unrelated"] = bomb_ref(plist, levels=10)  # 1024 leaves, 2047 visits: fine
    data = plist.build(plist.dict_of(doc))
    policy = _import(fmt, data).policy  # type: ignore[attr-defined]
    expected = ["example.com"] if fmt == "mobileconfig" else ["a.example.com", "b.example.com"]
    if fmt == "ats-plist":  # NSIncludesSubdomains: the host and one label below it
        expected = ["a.example.com", "*.a.example.com", "b.example.com", "*.b.example.com"]
    assert list(policy.domains) == expected
    path = tmp_path / "shared.plist"
    path.write_bytes(data)
    code, stderr = _cli(fmt, path, capsys)
    assert code == 0, stderr


def test_a_plist_that_contains_itself_is_refused() -> None:
    plist = BPlist()
    # Object 0 is an array whose only element is object 0.
    plist.objects.append(bytes([0xA1]) + (0).to_bytes(2, "big"))
    top = plist.dict_of({"NSAppTransportSecurity": 0})
    _rejects_fast("ats-plist", plist.build(top), r"NSAppTransportSecurity\[0\]\[0\]")


# -- deep nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", PLISTS)
@pytest.mark.parametrize("depth", [40, 5000])
def test_a_deeply_nested_binary_plist_is_refused(
    fmt: str, depth: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 40: within plistlib's recursion, refused by the walk (key path); 5000: plistlib's own
    # recursion gives up first, and that RecursionError must not escape either.
    plist = BPlist()
    data = plist.build(wrap(plist, READ_PATH[fmt], nested_ref(plist, depth)))
    err = _rejects_fast(fmt, data, r"^in/put\.plist: ")
    assert "nested more than" in err.problem
    assert err.location
    path = tmp_path / "deep.plist"
    path.write_bytes(data)
    code, stderr = _cli(fmt, path, capsys)
    assert code == 2
    assert f"{path}: " in stderr and "nested more than" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("fmt", PLISTS)
@pytest.mark.parametrize("depth", [40, 5000])
def test_a_deeply_nested_xml_plist_is_refused_naming_the_line(
    fmt: str, depth: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = deep_xml_plist(READ_PATH[fmt], depth)
    err = _rejects_fast(fmt, data, r"^in/put\.plist: ")
    assert "nested more than" in err.problem
    assert err.location.startswith("line ") or err.location.startswith(READ_PATH[fmt][0])
    path = tmp_path / "deep.plist"
    path.write_bytes(data)
    code, stderr = _cli(fmt, path, capsys)
    assert code == 2 and "Traceback" not in stderr and "nested more than" in stderr


@pytest.mark.parametrize("fmt", PLISTS)
@pytest.mark.parametrize("kind", ["xml", "binary"])
def test_nesting_within_the_bound_imports(fmt: str, kind: str) -> None:
    # 25 levels under an ignored key: the value sits at depth 26 of the document (limit 32).
    if kind == "binary":
        plist = BPlist()
        doc = shared_doc(plist, fmt)
        doc["Unrelated"] = nested_ref(plist, 25)
        data = plist.build(plist.dict_of(doc))
    else:
        nested: object = True
        for _ in range(25):
            nested = [nested]
        data = xml_plist({**PLIST_DOCS[fmt](), "Unrelated": nested})
    assert _import(fmt, data).policy.domains  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", ["android-nsc", "trustkit-android"])
def test_deeply_nested_xml_is_refused_naming_line_and_column(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "<x>\n" * 100_000
    data = f"<network-security-config>\n{body}".encode()
    err = _rejects_fast(fmt, data, r"^in/put\.plist: line 65, column 1: XML elements nested")
    assert "64" in err.problem
    path = tmp_path / "deep.xml"
    path.write_bytes(data)
    code, stderr = _cli(fmt, path, capsys)
    assert code == 2 and f"{path}: line 65, column 1: " in stderr


# -- XML entities and DTDs ------------------------------------------------------------------------

LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)
HOSTILE_DOCTYPES = {
    "billion-laughs": (LAUGHS, "&lol9;"),
    "external-entity": ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>', "&e;"),
    "parameter-entity": ('<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>', ""),
    "attribute-default": ('<!DOCTYPE x [<!ATTLIST pin digest CDATA "SHA-256">]>', ""),
}


def _with_doctype(fmt: str, doctype: str, reference: str) -> bytes:
    """The format's sample with `doctype` after the XML declaration and `reference` where a
    pin (or host, for plists) would be read."""
    text = sample(fmt).decode()
    head, sep, rest = text.partition("?>\n")
    if fmt in PLISTS:
        # One DOCTYPE per document: Apple's goes. The reference lands in a value nobody checks,
        # so an expanded entity would import (and fail the test) rather than be refused.
        rest = re.sub(r"<!DOCTYPE plist[^>]*>\n", "", rest)
        rest = rest.replace("<dict>", f"<dict><key>Note</key><string>{reference}</string>", 1)
    else:
        rest = rest.replace("example.com</domain>", f"example.com{reference}</domain>", 1)
    return (head + sep + doctype + "\n" + rest).encode()


@pytest.mark.parametrize("case", list(HOSTILE_DOCTYPES))
@pytest.mark.parametrize("fmt", XMLS)
def test_a_dtd_subset_is_refused_by_every_xml_importer(
    fmt: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doctype, reference = HOSTILE_DOCTYPES[case]
    data = _with_doctype(fmt, doctype, reference)
    _rejects_fast(fmt, data, r"^in/put\.plist: line 2, column \d+: a DOCTYPE with declarations")
    path = tmp_path / "evil.xml"
    path.write_bytes(data)
    code, stderr = _cli(fmt, path, capsys)
    assert code == 2 and f"{path}: line 2" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("fmt", XMLS)
def test_an_external_dtd_is_never_read(fmt: str, tmp_path: Path) -> None:
    # The DTD defines the entity the document uses; reading it would make the import pass with
    # "EVIL" in it. It is not read, so the reference is undefined: refused, naming the line.
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY x "EVIL">')
    data = _with_doctype(fmt, f'<!DOCTYPE x SYSTEM "{dtd.as_uri()}">', "&x;")
    _rejects_fast(fmt, data, r"^in/put\.plist: line \d+, column \d+: .*entit")


@pytest.mark.parametrize("fmt", XMLS)
def test_the_same_files_without_the_dtd_import(fmt: str) -> None:
    assert _import(fmt, _with_doctype(fmt, "", "")).policy.domains  # type: ignore[attr-defined]
    if fmt in PLISTS:  # Apple's own DOCTYPE line (no internal subset) is what plists carry
        assert b"<!DOCTYPE plist PUBLIC" in sample(fmt)
        assert _import(fmt, sample(fmt)).policy.domains  # type: ignore[attr-defined]


# -- size caps ------------------------------------------------------------------------------------

PAD = {  # filler each format ignores, appended to reach a given size
    "okhttp-kotlin": b" ",
    "okhttp-java": b" ",
}


def _padded(fmt: str, size: int) -> bytes:
    data = sample(fmt)
    return data + PAD.get(fmt, b"\n") * (size - len(data))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_input_over_the_cap_is_refused_naming_the_file_and_the_cap(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = FORMATS[fmt].max_bytes
    assert 64 * 1024 <= cap <= 16 * 1024 * 1024
    _rejects_fast(fmt, _padded(fmt, cap + 1), rf"^in/put\.plist: .*over the import cap of {cap} ")
    # Twin: exactly at the cap it imports.
    assert _import(fmt, _padded(fmt, cap)).policy.domains  # type: ignore[attr-defined]
    # The CLI reads no more than the cap (and one byte) of a much larger file.
    path = tmp_path / "big.in"
    path.write_bytes(_padded(fmt, cap + 5 * 1024 * 1024))
    code, stderr = _cli(fmt, path, capsys)
    assert code == 2 and f"{path}: " in stderr and f"cap of {cap} bytes" in stderr


# -- error messages quote bounded excerpts --------------------------------------------------------


@pytest.mark.parametrize("fmt", PLISTS)
def test_a_huge_value_of_the_wrong_type_gives_a_short_message(fmt: str) -> None:
    data = binary({READ_PATH[fmt][0]: "x" * 500_000})
    err = _rejects_fast(fmt, data, r"got a string of 500000 characters")
    assert len(str(err)) < 300


def test_a_huge_attribute_gives_a_short_message() -> None:
    data = nsc().replace(b"2030-01-01", b"9" * 500_000)
    err = _rejects_fast("android-nsc", data, r"^in/put\.plist: line 5, <pin-set>: invalid date")
    assert len(str(err)) < 300


@pytest.mark.parametrize("fmt", PLISTS)
def test_a_dictionary_key_that_is_not_a_string_is_refused(fmt: str) -> None:
    plist = BPlist()
    top = plist.dict([(plist.integer(7), plist.true())])
    _rejects_fast(fmt, plist.build(top), r"^in/put\.plist: the top level: .*key.*not a string")


def test_trustkit_android_sample_imports() -> None:
    result = _import("trustkit-android", trustkit_android())
    assert result.policy.domains["example.com"].report_uris  # type: ignore[attr-defined]
