"""``certpin diff A B`` in-process via main(): the same, different (exit 1), bad input (exit 2)."""

from __future__ import annotations

import base64
import hashlib
import json
import plistlib
import zipfile
from pathlib import Path

import pytest

from certpin.cli.main import main
from certpin.core.policy import Policy
from certpin.lifecycle.diff import diff_policies

P1, P2, P3 = (base64.b64encode(hashlib.sha256(s).digest()).decode() for s in (b"1", b"2", b"3"))


def _toml(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


ANDROID = f"""<network-security-config><domain-config>
  <domain includeSubdomains="true">example.com</domain>
  <pin-set><pin digest="SHA-256">{P1}</pin><pin digest="SHA-256">{P2}</pin></pin-set>
</domain-config></network-security-config>
"""
POLICY = f"""[domains."example.com"]
pins = ["sha256/{P1}", "sha256/{P2}"]
include_subdomains = true
"""


def test_the_same_pinning_in_two_formats_is_the_same(tmp_path: Path, capsys) -> None:
    a = _toml(tmp_path / "pins.toml", POLICY)
    b = _toml(tmp_path / "network_security_config.xml", ANDROID)
    assert main(["diff", str(a), str(b)]) == 0
    assert "the same pinning" in capsys.readouterr().out
    assert main(["diff", "--json", str(a), str(b)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["same"] is True and doc["differences"] == []
    assert doc["b"]["format"] == "android-nsc"


def test_ios_one_label_subdomains_differ_from_android(tmp_path: Path, capsys) -> None:
    # The iOS app pins the host and one label under it (NSIncludesSubdomains as imported);
    # Android pins every depth.
    ios = {
        "NSAppTransportSecurity": {
            "NSPinnedDomains": {
                "example.com": {
                    "NSIncludesSubdomains": True,
                    "NSPinnedCAIdentities": [
                        {"SPKI-SHA256-BASE64": P1},
                        {"SPKI-SHA256-BASE64": P2},
                    ],
                }
            }
        }
    }
    ipa = tmp_path / "app.ipa"
    with zipfile.ZipFile(ipa, "w") as archive:
        archive.writestr("Payload/A.app/Info.plist", plistlib.dumps(ios, fmt=plistlib.FMT_BINARY))
    android = _toml(tmp_path / "nsc.xml", ANDROID)
    assert main(["diff", "--json", str(android), str(ipa)]) == 1
    doc = json.loads(capsys.readouterr().out)
    kinds = {(d["host"], d["kind"]) for d in doc["differences"]}
    assert ("example.com", "slots") in kinds  # any-certificate pins vs CA pins
    assert doc["exit_code"] == 1 and doc["b"]["format"] == "ipa"


def test_every_kind_of_difference_is_listed(tmp_path: Path, capsys) -> None:
    a = _toml(tmp_path / "a.toml", POLICY + "expires = 2099-01-01\n")
    b = _toml(
        tmp_path / "b.toml",
        f"""unpinned_hosts = "deny"
[domains."example.com"]
pins = ["sha256/{P1}", "sha256/{P3}"]
enforce = false
[domains."*.example.com"]
leaf_pins = ["sha256/{P1}", "sha256/{P2}"]
expires = 2099-01-01
[domains."other.org"]
pins = ["sha256/{P1}", "sha256/{P2}"]
""",
    )
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "7 difference(s)" in out
    found = {(d.host, d.kind) for d in diff_policies(Policy.from_file(a), Policy.from_file(b))}
    assert found == {
        ("*", "unpinned_hosts"),
        ("example.com", "pins"),
        ("example.com", "expiry"),
        ("example.com", "enforcement"),
        ("*.example.com", "slots"),
        ("*.*.example.com", "subdomains"),
        ("other.org", "host"),
    }


def test_diff_is_symmetric_in_what_it_finds(tmp_path: Path) -> None:
    a = Policy.from_dict({"domains": {"x.org": {"pins": [f"sha256/{P1}", f"sha256/{P2}"]}}})
    b = Policy.from_dict({"domains": {"y.org": {"pins": [f"sha256/{P1}", f"sha256/{P2}"]}}})
    assert {(d.host, d.a_rule, d.b_rule) for d in diff_policies(a, b)} == {
        ("x.org", "x.org", None),
        ("y.org", None, "y.org"),
    }
    assert diff_policies(a, a) == []


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'[domains."example.com"]\npins = ["nope"]\n', "b.toml"),
        (b"some notes\n", "cannot tell the format"),
        (b"PK\x03\x04broken", "not a valid zip"),
    ],
)
def test_bad_input_is_exit_2_naming_the_file(
    tmp_path: Path, capsys, content: bytes, words: str
) -> None:
    a = _toml(tmp_path / "a.toml", POLICY)
    b = tmp_path / "b.toml" if words == "b.toml" else tmp_path / "b.bin"
    b.write_bytes(content)
    assert main(["diff", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert str(b) in err and words in err
