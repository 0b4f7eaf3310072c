"""`certpin.formats.detect`: the format of a file from its content, each case with its twin."""

from __future__ import annotations

import base64
import hashlib
import plistlib
import time

import pytest

from certpin import Policy
from certpin.formats import FORMATS, ExportOptions, FormatError, ImportOptions, detect
from certpin.formats._detect import MAX_DETECT_BYTES

P1 = base64.b64encode(hashlib.sha256(b"one").digest()).decode()
P2 = base64.b64encode(hashlib.sha256(b"two").digest()).decode()
POLICY = Policy.from_dict(
    {"domains": {"api.example.com": {"pins": [f"sha256/{P1}", f"sha256/{P2}"]}}}
)

NSC = f"""<?xml version="1.0" encoding="utf-8"?>
<!-- the app's pins -->
<network-security-config>
  <domain-config>
    <domain>api.example.com</domain>
    <pin-set><pin digest="SHA-256">{P1}</pin><pin digest="SHA-256">{P2}</pin></pin-set>
  </domain-config>
</network-security-config>
"""
KOTLIN = f"""package org.example
import okhttp3.CertificatePinner

val pinner = CertificatePinner.Builder()
    .add("api.example.com", "sha256/{P1}")
    .build()
"""
JAVA = f"""package org.example;
import okhttp3.CertificatePinner;

class Pins {{
  static final CertificatePinner PINNER = new CertificatePinner.Builder()
      .add("api.example.com", "sha256/{P1}").build();
}}
"""
SWIFT = f"""let config: [String: Any] = [
    kTSKPinnedDomains: ["api.example.com": [kTSKPublicKeyHashes: ["{P1}", "{P2}"]]]
]
"""
CURL = f"curl --pinnedpubkey 'sha256//{P1};sha256//{P2}' https://api.example.com/\n"
HPKP = (
    f'# host: api.example.com\nPublic-Key-Pins: pin-sha256="{P1}"; pin-sha256="{P2}"; max-age=60\n'
)
TOML = f'version = 1\n[domains."api.example.com"]\npins = ["sha256/{P1}", "sha256/{P2}"]\n'
JSON = f'{{"domains": {{"api.example.com": {{"pins": ["sha256/{P1}", "sha256/{P2}"]}}}}}}'


def _plist(doc: dict, binary: bool) -> bytes:
    return plistlib.dumps(doc, fmt=plistlib.FMT_BINARY if binary else plistlib.FMT_XML)


ATS = {"NSAppTransportSecurity": {"NSPinnedDomains": {"api.example.com": {}}}}
TSK = {"TSKConfiguration": {"TSKPinnedDomains": {}}}
PROFILE = {"PayloadContent": [], "PayloadType": "Configuration", "PayloadVersion": 1}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (NSC.encode(), "android-nsc"),
        (
            NSC.replace("</domain-config>", "<trustkit-config/></domain-config>").encode(),
            "trustkit-android",
        ),
        (b"\xef\xbb\xbf  \n" + NSC.encode(), "android-nsc"),  # BOM and whitespace first
        (KOTLIN.encode(), "okhttp-kotlin"),
        (JAVA.encode(), "okhttp-java"),
        (SWIFT.encode(), "trustkit-ios-code"),
        (CURL.encode(), "curl"),
        (HPKP.encode(), "hpkp"),
        (TOML.encode(), "certpin"),
        (JSON.encode(), "certpin"),
        (_plist(ATS, False), "ats-plist"),
        (_plist(ATS, True), "ats-plist"),
        (b"  \n" + _plist(ATS, False), "ats-plist"),
        (_plist(TSK, True), "trustkit-ios"),
        (_plist(PROFILE, False), "mobileconfig"),
        (_plist({"NSPinnedDomains": {}}, True), "ats-plist"),  # a partial Info.plist
    ],
)
def test_detects_each_format(data: bytes, expected: str) -> None:
    assert detect(data, "in") == expected


@pytest.mark.parametrize(
    "name",
    [
        "android-nsc",
        "trustkit-android",
        "ats-plist",
        "trustkit-ios",
        "okhttp-kotlin",
        "okhttp-java",
        "curl",
        "hpkp",
    ],
)
def test_every_export_is_detected_as_its_own_format(name: str) -> None:
    text = FORMATS[name].export(POLICY, ExportOptions()).text
    assert detect(text.encode(), "exported") == name
    # ...and the detected importer reads it back.
    FORMATS[detect(text.encode(), "exported")].import_(text.encode(), "exported", ImportOptions())


@pytest.mark.parametrize(
    ("data", "words"),
    [
        # Twins of the passing cases: the same shapes with the telling part missing.
        (b"<?xml version='1.0'?><manifest/>", "root element is <manifest>"),
        (_plist({"CFBundleName": "App"}, True), "nothing certpin imports"),
        (
            _plist({"NSAppTransportSecurity": {"NSAllowsArbitraryLoads": True}}, False),
            "nothing certpin imports",
        ),
        (b"just some notes\nabout pinning\n", "cannot tell the format"),
        (b"", "cannot tell the format"),
        (b'{"other": 1}', "cannot tell the format"),
    ],
)
def test_unrecognised_content_is_refused_naming_the_file(data: bytes, words: str) -> None:
    with pytest.raises(FormatError, match=words) as info:
        detect(data, "notes.txt")
    assert info.value.source == "notes.txt"


@pytest.mark.parametrize(
    ("data", "both"),
    [
        (
            (KOTLIN + "\n// curl --pinnedpubkey 'sha256//x' https://h/\n").encode(),
            "okhttp-kotlin and curl",
        ),
        ((CURL + HPKP).encode(), "curl and hpkp"),
        (_plist({**ATS, **TSK}, True), "ats-plist and trustkit-ios"),
    ],
)
def test_ambiguous_content_asks_for_format(data: bytes, both: str) -> None:
    with pytest.raises(FormatError, match=f"ambiguous: looks like {both}; pass --format"):
        detect(data, "in")


def test_a_broken_plist_gets_the_readers_message() -> None:
    data = _plist(ATS, True)
    with pytest.raises(FormatError, match="in: "):
        detect(data[:-40], "in")


def test_detection_is_bounded() -> None:
    with pytest.raises(FormatError, match="too large"):
        detect(b"#" * (MAX_DETECT_BYTES + 1), "big")
    # Just under the cap, and adversarial for the text patterns: still fast.
    data = (b"<!-" * (MAX_DETECT_BYTES // 6)) + b"x"
    start = time.perf_counter()
    with pytest.raises(FormatError):
        detect(data, "dashes")
    data = b"new CertificatePinner" + b" " * (MAX_DETECT_BYTES // 2)
    detect(data, "spaces")
    assert time.perf_counter() - start < 5
