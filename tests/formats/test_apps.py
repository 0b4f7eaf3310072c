"""Built apps as input (`certpin.formats._apps`): a real APK made by Debian's ``aapt`` and an
.ipa made here; each passing case with its failing twins, hostile archives bounded."""

from __future__ import annotations

import base64
import hashlib
import io
import plistlib
import shutil
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from certpin.cli.main import main
from certpin.core.policy import Policy
from certpin.formats import FormatError, ImportOptions, detect
from certpin.formats._apps import MAX_MEMBER_BYTES, import_app, read_app

pytest.importorskip("androguard", reason="the apps extra (androguard) is not installed")

P1 = base64.b64encode(hashlib.sha256(b"one").digest()).decode()
P2 = base64.b64encode(hashlib.sha256(b"two").digest()).decode()
P3 = base64.b64encode(hashlib.sha256(b"three").digest()).decode()
FRAMEWORK = Path("/usr/share/android-framework-res/framework-res.apk")

NSC = f"""<?xml version="1.0" encoding="utf-8"?>
<network-security-config>
    <domain-config>
        <domain includeSubdomains="true">example.com</domain>
        <pin-set expiration="2099-01-01">
            <pin digest="SHA-256">{P1}</pin>
            <pin digest="SHA-256">{P2}</pin>
        </pin-set>
        TRUSTKIT
    </domain-config>
</network-security-config>
"""
TRUSTKIT = """<trustkit-config enforcePinning="false" disableDefaultReportUri="true">
            <report-uri>https://reports.example.com/log</report-uri>
        </trustkit-config>"""


def _manifest(attrs: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<manifest xmlns:android="http://schemas.android.com/apk/res/android" '
        'package="org.example.pinned">\n'
        f'    <application android:label="Pinned" {attrs}>\n'
        "    </application>\n</manifest>\n"
    )


def build_apk(
    tmp_path: Path,
    *,
    attrs: str = 'android:networkSecurityConfig="@xml/network_security_config"',
    nsc: str = NSC.replace("TRUSTKIT", ""),
    variants: dict[str, str] | None = None,
) -> bytes:
    """A real APK: aapt compiles the manifest and the resources, as the Android build does."""
    aapt = shutil.which("aapt")
    if aapt is None or not FRAMEWORK.exists():
        pytest.skip("needs Debian's aapt and android-framework-res (make system-deps)")
    src = tmp_path / "src"
    (src / "res" / "xml").mkdir(parents=True)
    (src / "AndroidManifest.xml").write_text(_manifest(attrs))
    (src / "res" / "xml" / "network_security_config.xml").write_text(nsc)
    for folder, text in (variants or {}).items():
        (src / "res" / folder).mkdir()
        (src / "res" / folder / "network_security_config.xml").write_text(text)
    out = tmp_path / "app.apk"
    subprocess.run(
        [
            aapt,
            "package",
            "-f",
            "-M",
            str(src / "AndroidManifest.xml"),
            "-S",
            str(src / "res"),
            "-I",
            str(FRAMEWORK),
            "-F",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buf.getvalue()


def _replace(apk: bytes, name: str, content: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(apk)) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = content
    return _zip(members)


def _member(apk: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(apk)) as archive:
        return archive.read(name)


# -- apk ------------------------------------------------------------------------------------------


def test_apk_network_security_config_is_read_from_compiled_xml(tmp_path: Path) -> None:
    apk = build_apk(tmp_path)
    assert detect(apk, "app.apk") == "apk"
    ((fmt, text, label),) = read_app(apk, "app.apk")
    assert (fmt, label) == ("android-nsc", "app.apk!res/xml/network_security_config.xml")
    # Each element on its source line: the importer's line numbers point into the source.
    lines = text.decode().splitlines()
    assert lines[4].strip().startswith('<pin-set expiration="2099-01-01"')
    result = import_app(apk, "app.apk", ImportOptions())
    rule = result.policy.domains["example.com"]
    assert rule.include_subdomains and {str(p) for p in rule.pins} == {
        f"sha256/{P1}",
        f"sha256/{P2}",
    }
    assert result.warnings == ()


def test_apk_with_trustkit_config_is_trustkit_android(tmp_path: Path) -> None:
    apk = build_apk(tmp_path, nsc=NSC.replace("TRUSTKIT", TRUSTKIT))
    ((fmt, _text, _label),) = read_app(apk, "app.apk")
    assert fmt == "trustkit-android"
    rule = import_app(apk, "app.apk", ImportOptions()).policy.domains["example.com"]
    assert rule.enforce is False and rule.report_uris == ("https://reports.example.com/log",)


def test_apk_resource_with_variants_imports_the_default_and_warns(tmp_path: Path) -> None:
    other = NSC.replace("TRUSTKIT", "").replace(P2, P3)
    apk = build_apk(tmp_path, variants={"xml-v24": other})
    labels = [label for _f, _t, label in read_app(apk, "app.apk")]
    assert labels == [
        "app.apk!res/xml/network_security_config.xml",
        "app.apk!res/xml-v24/network_security_config.xml",
    ]
    result = import_app(apk, "app.apk", ImportOptions())
    assert f"sha256/{P3}" not in {str(p) for p in result.policy.domains["example.com"].pins}
    assert any("xml-v24" in w and "not imported" in w for w in result.warnings)


def test_apk_without_network_security_config_says_so(tmp_path: Path) -> None:
    apk = build_apk(tmp_path, attrs="")
    with pytest.raises(FormatError, match="has no android:networkSecurityConfig") as info:
        read_app(apk, "app.apk")
    assert info.value.source == "app.apk!AndroidManifest.xml"


def test_apk_corrupt_compiled_xml_names_the_member(tmp_path: Path) -> None:
    apk = build_apk(tmp_path)
    member = "res/xml/network_security_config.xml"
    raw = bytearray(_member(apk, member))
    raw[8:16] = b"\xff" * 8  # the string pool's chunk header
    with pytest.raises(FormatError, match="compiled XML") as info:
        read_app(_replace(apk, member, bytes(raw)), "app.apk")
    assert info.value.source == f"app.apk!{member}"
    for bad in (b"", b"<?xml version='1.0'?><network-security-config/>", bytes(raw[:40])):
        with pytest.raises(FormatError) as info:
            read_app(_replace(apk, member, bad), "app.apk")
        assert info.value.source == f"app.apk!{member}"


def test_apk_missing_resource_table_or_file(tmp_path: Path) -> None:
    apk = build_apk(tmp_path)
    with zipfile.ZipFile(io.BytesIO(apk)) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    without_table = {n: c for n, c in members.items() if n != "resources.arsc"}
    with pytest.raises(FormatError, match="no resources.arsc"):
        read_app(_zip(without_table), "app.apk")
    without_file = {n: c for n, c in members.items() if not n.startswith("res/")}
    with pytest.raises(FormatError, match="not in the archive") as info:
        read_app(_zip(without_file), "app.apk")
    assert info.value.source == "app.apk!resources.arsc"
    with pytest.raises(FormatError, match="not a valid resource table|does not resolve"):
        read_app(_replace(apk, "resources.arsc", b"\x02\x00\x0c\x00" + b"\0" * 8), "app.apk")


def test_namespace_flood_in_compiled_xml_is_refused_quickly() -> None:
    chunk = struct.pack("<HHIII", 0x0100, 16, 24, 1, 0) + struct.pack("<II", 0, 1)
    body = chunk * 100_000
    axml = struct.pack("<HHI", 0x0003, 8, 8 + len(body)) + body
    start = time.perf_counter()
    with pytest.raises(FormatError, match="namespace declarations"):
        read_app(_zip({"AndroidManifest.xml": axml, "resources.arsc": b""}), "app.apk")
    assert time.perf_counter() - start < 2


# -- hostile archives -----------------------------------------------------------------------------


def test_zip_bomb_declared_size_is_refused_before_reading() -> None:
    bomb = _zip({"AndroidManifest.xml": b"\0" * (MAX_MEMBER_BYTES["manifest"] + 1)})
    assert len(bomb) < 100_000
    with pytest.raises(FormatError, match="uncompressed") as info:
        read_app(bomb, "bomb.apk")
    assert info.value.source == "bomb.apk!AndroidManifest.xml"


def test_zip_member_lying_about_its_size_is_refused() -> None:
    data = bytearray(_zip({"AndroidManifest.xml": b"\0" * 5_000_000}))
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = data.index(sig)
        data[pos + at : pos + at + 4] = struct.pack("<I", 1000)
    with pytest.raises(FormatError, match="cannot be read") as info:
        read_app(bytes(data), "liar.apk")
    assert info.value.source == "liar.apk!AndroidManifest.xml"


def test_hostile_archives_are_refused() -> None:
    with pytest.raises(FormatError, match="not a valid zip"):
        read_app(b"PK\x03\x04" + b"\0" * 100, "broken.apk")
    with pytest.raises(FormatError, match="neither an Android app"):
        read_app(_zip({"README": b"hi"}), "other.zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("AndroidManifest.xml", b"a")
        archive.writestr("AndroidManifest.xml", b"b")
    with pytest.raises(FormatError, match="two members of this name"):
        read_app(buf.getvalue(), "dup.apk")
    long_name = _zip({"x" * 5000: b"", "AndroidManifest.xml": b""})
    with pytest.raises(FormatError, match="member name longer"):
        read_app(long_name, "long.apk")


# -- ipa ------------------------------------------------------------------------------------------

ATS = {
    "NSAppTransportSecurity": {
        "NSPinnedDomains": {
            "api.example.com": {
                "NSPinnedLeafIdentities": [{"SPKI-SHA256-BASE64": P1}, {"SPKI-SHA256-BASE64": P2}]
            }
        }
    }
}
TSK = {
    "TSKConfiguration": {
        "TSKPinnedDomains": {
            "api.example.com": {"TSKPublicKeyHashes": [P2, P3]},
            "cdn.example.com": {"TSKPublicKeyHashes": [P1, P3]},
        }
    }
}


def build_ipa(info: dict[str, object], name: str = "Pinned") -> bytes:
    plist = plistlib.dumps({"CFBundleName": name, **info}, fmt=plistlib.FMT_BINARY)
    return _zip({f"Payload/{name}.app/Info.plist": plist, f"Payload/{name}.app/{name}": b"\0"})


def test_ipa_ats_pins_are_read_from_the_binary_info_plist() -> None:
    ipa = build_ipa(ATS)
    assert detect(ipa, "app.ipa") == "ipa"
    ((fmt, _data, label),) = read_app(ipa, "app.ipa")
    assert (fmt, label) == ("ats-plist", "app.ipa!Payload/Pinned.app/Info.plist")
    rule = import_app(ipa, "app.ipa", ImportOptions()).policy.domains["api.example.com"]
    assert {str(p) for p in rule.leaf_pins} == {f"sha256/{P1}", f"sha256/{P2}"}


def test_ipa_with_ats_and_trustkit_merges_both_checks() -> None:
    result = import_app(build_ipa({**ATS, **TSK}), "app.ipa", ImportOptions())
    api = result.policy.domains["api.example.com"]
    # ATS checks the leaf, then TrustKit checks its pins: both slots must match.
    assert {str(p) for p in api.leaf_pins} == {f"sha256/{P1}", f"sha256/{P2}"}
    assert {str(p) for p in api.pins} == {f"sha256/{P2}", f"sha256/{P3}"}
    assert "cdn.example.com" in result.policy.domains


def test_ipa_conflicting_rules_keep_the_first_and_warn() -> None:
    tsk = {
        "TSKConfiguration": {
            "TSKPinnedDomains": {
                "api.example.com": {
                    "TSKPublicKeyHashes": [P2, P3],
                    "TSKExpirationDate": "2099-01-01",
                }
            }
        }
    }
    result = import_app(build_ipa({**ATS, **tsk}), "app.ipa", ImportOptions())
    api = result.policy.domains["api.example.com"]
    assert api.expires is None and not api.pins
    assert any("left out" in w for w in result.warnings)


def test_ipa_without_pins_says_where_to_look() -> None:
    with pytest.raises(FormatError, match="pins nothing") as info:
        read_app(build_ipa({"NSAppTransportSecurity": {"NSAllowsArbitraryLoads": True}}), "app.ipa")
    assert info.value.source == "app.ipa!Payload/Pinned.app/Info.plist"
    two = _zip({"Payload/A.app/Info.plist": b"", "Payload/B.app/Info.plist": b""})
    with pytest.raises(FormatError, match="exactly one app"):
        read_app(two, "two.ipa")
    with pytest.raises(FormatError, match="property list"):
        read_app(_zip({"Payload/A.app/Info.plist": b"bplist00garbage"}), "bad.ipa")


# -- the CLI: import and lint take apps -----------------------------------------------------------


def test_cli_import_and_lint_read_an_ipa(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ipa = tmp_path / "app.ipa"
    ipa.write_bytes(build_ipa(ATS))
    out = tmp_path / "pins.toml"
    assert main(["import", str(ipa), "-o", str(out)]) == 0
    assert "read as ipa" in capsys.readouterr().err
    assert "api.example.com" in Policy.from_file(out).domains
    main(["lint", str(ipa)])
    assert "[api.example.com]" in capsys.readouterr().out
    # Twin: an app that pins nothing is an input error, naming the member.
    ipa.write_bytes(build_ipa({}))
    assert main(["import", str(ipa)]) == 2
    assert "Payload/Pinned.app/Info.plist" in capsys.readouterr().err
    assert main(["lint", str(ipa)]) == 2


def test_cli_import_reads_an_apk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    apk = tmp_path / "app.apk"
    apk.write_bytes(build_apk(tmp_path))
    assert main(["import", str(apk)]) == 0
    assert '[domains."example.com"]' in capsys.readouterr().out
    assert main(["import", "--format", "android-nsc", str(apk)]) == 2  # binary, not text XML


def test_mutated_apks_raise_only_format_errors(tmp_path: Path) -> None:
    import random

    apk = build_apk(tmp_path, nsc=NSC.replace("TRUSTKIT", TRUSTKIT))
    rng = random.Random(14)
    for member in ("res/xml/network_security_config.xml", "AndroidManifest.xml", "resources.arsc"):
        raw = _member(apk, member)
        for _ in range(60):
            mutated = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            try:
                read_app(_replace(apk, member, bytes(mutated)), "app.apk")
            except FormatError as exc:
                assert exc.source.startswith("app.apk")
