"""Hostile input: a policy file name that tries to break out of an export's header comment, a
report URI that tries to break out of its quotes, and foreign files built to crash the importers.

The exports are handed to real consumers where they exist (``sh``, ``javac``, expat, plistlib).
"""

from __future__ import annotations

import base64
import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from _support.pki import make_pki
from certpin import DomainRule, Pin, Policy, PolicyError
from certpin.cli.main import main
from certpin.formats import FORMATS, ExportOptions, FormatError, ImportOptions
from certpin.formats._common import comment_safe
from certpin.formats._structured import parse_xml

SH = shutil.which("sh")
JAVAC = shutil.which("javac")
JARS = [Path("/usr/share/java/okhttp.jar"), Path("/usr/share/java/okio.jar")]

#: file names that end a shell/Java/XML comment and run what follows, if written raw.
HOSTILE = [
    "p\ntouch PWNED\n.toml",
    "p\rtouch PWNED\r.toml",
    "p\u2028touch PWNED.toml",
    "p\u0085x.toml",
    "p\\u000aclass Evil {}\\u000a.toml",
    "p\\\\u000a.toml",
    "p --> <evil/> <!-- .toml",
    "p */ class Evil {} /* .toml",
    "p---",
]


def _pin() -> str:
    return "sha256/" + base64.b64encode(os.urandom(32)).decode()


def _policy(source: str, host: str = "localhost", **rule: object) -> Policy:
    body = {"pins": [_pin(), _pin()], **rule}
    return Policy.from_dict({"version": 7, "domains": {host: body}}, source=source)


def _lines(fmt: str, policy: Policy, **options: object) -> int:
    text = FORMATS[fmt].export(policy, ExportOptions(**options)).text  # type: ignore[arg-type]
    return len(text.splitlines())


@pytest.mark.parametrize("source", HOSTILE)
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "mobileconfig"])
def test_a_hostile_file_name_adds_no_line_to_any_export(fmt: str, source: str) -> None:
    # str.splitlines breaks on \r, \u2028, \u0085 too: the hostile export must have exactly as
    # many lines as the export of a plain name.
    assert _lines(fmt, _policy(source)) == _lines(fmt, _policy("pins.toml"))


@pytest.mark.parametrize("source", HOSTILE)
def test_comment_safe_leaves_nothing_a_comment_syntax_reacts_to(source: str) -> None:
    safe = comment_safe(source)
    assert "\\" not in safe and "--" not in safe and "*/" not in safe and "/*" not in safe
    assert not safe.endswith("-")
    assert all(ch.isprintable() for ch in safe)


@pytest.mark.skipif(SH is None, reason="needs sh")
def test_curl_export_of_a_hostile_file_name_runs_no_command(tmp_path: Path) -> None:
    name = "p\ntouch PWNED\n.toml"
    policy_file = tmp_path / name
    policy_file.write_text(f'[domains.localhost]\nleaf_pins = ["{_pin()}", "{_pin()}"]\n')
    script = tmp_path / "pins.sh"
    assert main(["export", "-f", "curl", str(policy_file), "-o", str(script)]) == 0
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "curl").write_text("#!/bin/sh\necho curl-called\n")
    (fakebin / "curl").chmod(0o755)
    assert subprocess.run([str(SH), "-n", str(script)], timeout=30).returncode == 0
    ran = subprocess.run(
        [str(SH), str(script)],
        cwd=tmp_path,
        env={"PATH": f"{fakebin}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "curl-called\n"  # the one real command, and nothing else
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.skipif(
    JAVAC is None or not all(j.exists() for j in JARS),
    reason="needs javac and Debian's libokhttp-java (/usr/share/java/okhttp.jar, okio.jar)",
)
def test_java_export_of_a_unicode_escape_file_name_compiles(tmp_path: Path) -> None:
    # javac turns \u000a into a newline before it sees comments (JLS §3.3): unescaped, the
    # "class Evil {}" would be code after the // comment ends, and this would not compile.
    policy = _policy("p\\u000aclass Evil {}\\u000a.toml")
    text = FORMATS["okhttp-java"].export(policy, ExportOptions(okhttp=3)).text
    (tmp_path / "CertpinPins.java").write_text(text)
    compiled = subprocess.run(
        [
            str(JAVAC),
            "-cp",
            os.pathsep.join(str(j) for j in JARS),
            "-d",
            str(tmp_path),
            str(tmp_path / "CertpinPins.java"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert not (tmp_path / "Evil.class").exists()


@pytest.mark.parametrize("source", HOSTILE)
@pytest.mark.parametrize("fmt", ["android-nsc", "trustkit-android"])
def test_xml_export_of_a_hostile_file_name_parses_to_the_same_tree(fmt: str, source: str) -> None:
    # TrustKit Android refuses a one-label host such as localhost at start-up (its issue #25).
    text = FORMATS[fmt].export(_policy(source, "api.example.com"), ExportOptions()).text
    root = parse_xml(text.encode(), "export.xml")  # expat: a stray "--" in a comment fails
    assert root.tag == "network-security-config"
    assert [c.tag for c in root.children] == ["domain-config"]
    assert FORMATS[fmt].import_(text.encode(), "x.xml", ImportOptions()).policy.version == 7


@pytest.mark.parametrize("source", HOSTILE)
@pytest.mark.parametrize("fmt", ["ats-plist", "trustkit-ios"])
def test_plist_export_of_a_hostile_file_name_parses(fmt: str, source: str) -> None:
    text = FORMATS[fmt].export(_policy(source, leaf_pins=[_pin(), _pin()]), ExportOptions()).text
    assert isinstance(plistlib.loads(text.encode()), dict)


def test_mobileconfig_of_a_hostile_file_name_parses() -> None:
    from certpin import Pin

    pki = make_pki()
    root = str(Pin.for_certificate(pki.root.der()))
    policy = Policy.from_dict(
        {"domains": {"localhost": {"ca_pins": [root, _pin()]}}}, source="p\x01\n-->.toml"
    )
    text = FORMATS["mobileconfig"].export(policy, ExportOptions(certs=(pki.root.der(),))).text
    doc = plistlib.loads(text.encode())
    assert "\x01" not in doc["PayloadDescription"] and "\n" not in doc["PayloadDescription"]


# -- report URIs ----------------------------------------------------------------------------------

BAD_URIS = [
    'https://r.example/"; max-age=0; x="',
    "https://r.example/\nPublic-Key-Pins: max-age=0",
    "https://r.example/a b",
    "https://r.example/\x01",
]


@pytest.mark.parametrize("uri", BAD_URIS)
@pytest.mark.parametrize("fmt", ["hpkp", "trustkit-ios", "trustkit-android"])
def test_a_report_uri_that_is_not_a_uri_is_refused_naming_the_rule(fmt: str, uri: str) -> None:
    # The policy loader refuses it first, naming the field...
    with pytest.raises(PolicyError, match=r'pins\.toml: domains\."localhost"\.report_uris: '):
        _policy("pins.toml", report_uris=[uri])
    # ...and so does a rule built in code: one path accepts a rule, so no exporter meets it.
    with pytest.raises(PolicyError, match=r'domains\."localhost"\.report_uris: ') as info:
        DomainRule("localhost", pins=(Pin.parse(_pin()), Pin.parse(_pin())), report_uris=(uri,))
    assert info.value.field == "report_uris"
    good = _policy("pins.toml", report_uris=["https://r.example/report?a=1&b=%22"])
    assert "https://r.example/report?a=1" in FORMATS[fmt].export(good, ExportOptions()).text


# -- importers: clean errors, no tracebacks -------------------------------------------------------


@pytest.mark.parametrize("value", ["²", "٣", "1e3", "-1", "99999999999999999999"])
def test_hpkp_max_age_that_is_not_ascii_digits_is_a_clean_error(value: str) -> None:
    header = f'# host: a.example\nPublic-Key-Pins: pin-sha256="{_pin()[7:]}"; max-age={value}\n'
    with pytest.raises(FormatError, match=r"h\.txt: line 2: max-age="):
        FORMATS["hpkp"].import_(header.encode(), "h.txt", ImportOptions())


def test_deeply_nested_nsc_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 5000 levels: the XML reader's element depth bound (64) stops it while parsing.
    depth = 5000
    body = "<domain-config><domain>a.example</domain>" * depth + "</domain-config>" * depth
    path = tmp_path / "nsc.xml"
    path.write_text(f"<network-security-config>\n{body}\n</network-security-config>\n")
    assert main(["import", "-f", "android-nsc", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: line 2, column " in err
    assert "XML elements nested more than 64 levels deep" in err
    assert "Traceback" not in err
    # 33 levels: within the XML bound, refused by the importer's own <domain-config> bound.
    body = "<domain-config><domain>a.example</domain>" * 33 + "</domain-config>" * 33
    path.write_text(f"<network-security-config>\n{body}\n</network-security-config>\n")
    assert main(["import", "-f", "android-nsc", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: line 2, <domain-config>: <domain-config> nested more than 32" in err
    # 32 levels (with distinct domains) are fine.
    pins = f'<pin-set><pin digest="SHA-256">{_pin()[7:]}</pin></pin-set>'
    ok = "".join(f"<domain-config><domain>a{i}.example</domain>{pins}" for i in range(32))
    ok += "</domain-config>" * 32
    data = f"<network-security-config>{ok}</network-security-config>".encode()
    assert len(FORMATS["android-nsc"].import_(data, "n.xml", ImportOptions()).policy.domains) == 32
