"""Which format a file is in, from its content: ``certpin import FILE`` without ``--format``.

`detect` answers with a name of `certpin.formats.FORMATS`, ``"certpin"`` (a certpin policy,
TOML or JSON), or ``"apk"`` / ``"ipa"`` (a built app, read by `certpin.formats._apps`). It
refuses, with a `FormatError` naming the file, a file that looks like none of them and one that
looks like several ("ambiguous: looks like okhttp-kotlin and curl; pass --format").

What each format is recognised by (docs/formats.md, "Detecting the format"):

* a zip archive: ``AndroidManifest.xml`` at the top (apk) or ``Payload/NAME.app/Info.plist``
  (ipa);
* a property list (XML, or binary ``bplist00``): ``NSAppTransportSecurity`` with
  ``NSPinnedDomains`` or a top-level ``NSPinnedDomains`` (ats-plist), ``TSKConfiguration``
  (trustkit-ios), ``PayloadContent`` with ``PayloadType`` (mobileconfig);
* XML whose root element is ``<network-security-config>``: trustkit-android when it holds a
  ``<trustkit-config>``, android-nsc otherwise;
* text: ``CertificatePinner`` (okhttp-java with ``new CertificatePinner.Builder`` or ``;``-ended
  ``import`` lines, okhttp-kotlin otherwise), ``kTSKPinnedDomains``/``TSKPinnedDomains``
  (trustkit-ios-code), ``--pinnedpubkey`` (curl), a ``Public-Key-Pins`` header line (hpkp), a
  ``[domains."…"]`` table or a JSON object with ``"domains"`` (certpin).

Bounded: a file larger than `MAX_DETECT_BYTES` (the largest any importer or the policy reader
takes) is refused unless it is a zip archive (whose own bounds are `certpin.formats._apps`'s);
a property list is read with the importers' bounded reader; the text checks are single regular
expression scans with no backtracking over the input, so detection is linear in its size.
"""

from __future__ import annotations

import re
from typing import Any

from certpin.formats import _common as common
from certpin.formats._structured import load_plist

__all__ = ["MAX_DETECT_BYTES", "detect"]

#: The largest non-archive input `detect` inspects: a certpin policy's own cap
#: (`certpin.core.schema.MAX_POLICY_SIZE`); every import format's cap is smaller.
MAX_DETECT_BYTES = 16 * 1024 * 1024
#: The largest property list detection parses (the mobileconfig importer's cap).
_MAX_PLIST_BYTES = 8 * 1024 * 1024

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_BOMS = (b"\xef\xbb\xbf",)

# The first element of an XML document, after the declaration, comments, processing
# instructions and a DOCTYPE (without an internal subset: the XML importers refuse those).
_XML_PROLOG = re.compile(
    rb"\s*(?:<\?[^>]*\?>\s*|<!--(?:[^-]|-(?!->))*-->\s*|<!DOCTYPE[^>\[]*>\s*)*<([A-Za-z_][\w.:-]*)"
)
_TRUSTKIT_CONFIG = re.compile(rb"<trustkit-config[\s/>]")
_PINNER = re.compile(rb"\bCertificatePinner\b")
_JAVA_BUILDER = re.compile(rb"\bnew\s+(?:okhttp3\.)?CertificatePinner\s*\.\s*Builder\b")
_JAVA_IMPORT = re.compile(rb"^[ \t]*import[ \t]+[\w.]+(?:\.\*)?[ \t]*;", re.MULTILINE)
_KOTLIN_WORDS = re.compile(rb"^[ \t]*(?:fun|val|var|object|companion)\b", re.MULTILINE)
_TSK_CODE = re.compile(rb"\bk?TSKPinnedDomains\b")
_CURL = re.compile(rb"--pinnedpubkey\b")
_HPKP = re.compile(rb"^[ \t]*Public-Key-Pins(?:-Report-Only)?[ \t]*:", re.MULTILINE | re.IGNORECASE)
_TOML_DOMAINS = re.compile(rb"^[ \t]*\[[ \t]*domains[ \t]*[.\]]", re.MULTILINE)
_JSON_DOMAINS = re.compile(rb'"domains"[ \t\r\n]*:')


def detect(data: bytes, source: str) -> str:
    """The format `data` (read from `source`, named in errors) is in.

    Returns:
        a name of `certpin.formats.FORMATS`, ``"certpin"`` for a certpin policy document, or
        ``"apk"`` / ``"ipa"`` for a built Android or iOS app (`certpin.formats._apps`).

    Raises:
        FormatError: nothing matches, or more than one format does ("ambiguous"), or the file
            is too large to inspect, or a property list that cannot be read (the reader's
            message, with the file and where).
    """
    if data.startswith(_ZIP_MAGIC):
        from certpin.formats._apps import app_kind

        return app_kind(data, source)
    if len(data) > MAX_DETECT_BYTES:
        raise common.FormatError(
            f"larger than {MAX_DETECT_BYTES} bytes: too large for any format certpin imports",
            source=source,
        )
    body = data[len(_BOMS[0]) :] if data.startswith(_BOMS) else data
    if body.startswith(b"bplist00"):
        return _plist_format(body, source)
    if body[:1] == b"\x30" and b"PayloadContent" in body:
        # A signed configuration profile: CMS (DER) around the XML plist.
        return "mobileconfig"
    root = _xml_root(body)
    if root is not None:
        if root == b"plist":
            return _plist_format(body, source)
        if root == b"network-security-config":
            return "trustkit-android" if _TRUSTKIT_CONFIG.search(body) else "android-nsc"
        raise common.FormatError(
            f"an XML document whose root element is <{root.decode('ascii', 'replace')}>: not a "
            "format certpin imports (Network Security Config: <network-security-config>; "
            "property lists: <plist>); pass --format if it is one",
            source=source,
        )
    return _text_format(body, source)


def _xml_root(body: bytes) -> bytes | None:
    if not body.lstrip()[:1] == b"<":
        return None
    m = _XML_PROLOG.match(body)
    return m.group(1) if m else None


def _plist_format(data: bytes, source: str) -> str:
    if len(data) > _MAX_PLIST_BYTES:
        raise common.FormatError(
            f"a property list larger than {_MAX_PLIST_BYTES} bytes: too large for any format "
            "certpin imports",
            source=source,
        )
    top: Any = load_plist(data, source)
    found: list[str] = []
    if isinstance(top, dict):
        ats = top.get("NSAppTransportSecurity")
        if (isinstance(ats, dict) and "NSPinnedDomains" in ats) or "NSPinnedDomains" in top:
            found.append("ats-plist")
        if "TSKConfiguration" in top or "kTSKPinnedDomains" in top:
            found.append("trustkit-ios")
        if "PayloadContent" in top and "PayloadType" in top:
            found.append("mobileconfig")
    if not found:
        raise common.FormatError(
            "a property list without NSAppTransportSecurity/NSPinnedDomains (ats-plist), "
            "TSKConfiguration (trustkit-ios) or a configuration profile's PayloadContent "
            "(mobileconfig): nothing certpin imports",
            source=source,
        )
    return _one(found, source)


def _text_format(body: bytes, source: str) -> str:
    found: list[str] = []
    if _PINNER.search(body):
        java = _JAVA_BUILDER.search(body) or (
            _JAVA_IMPORT.search(body) and not _KOTLIN_WORDS.search(body)
        )
        if java:
            found.append("okhttp-java")
        elif _KOTLIN_WORDS.search(body) or not source.endswith(".java"):
            found.append("okhttp-kotlin")
        else:
            found.append("okhttp-java")
    if _TSK_CODE.search(body):
        found.append("trustkit-ios-code")
    if _CURL.search(body):
        found.append("curl")
    if _HPKP.search(body):
        found.append("hpkp")
    stripped = body.lstrip()
    if _TOML_DOMAINS.search(body) or (stripped[:1] == b"{" and _JSON_DOMAINS.search(body)):
        found.append("certpin")
    if not found:
        raise common.FormatError(
            "cannot tell the format from the content: none of a Network Security Config, a "
            "property list (ATS, TrustKit, configuration profile), OkHttp CertificatePinner or "
            "TrustKit code, curl --pinnedpubkey, Public-Key-Pins headers, a certpin policy, an "
            ".apk or an .ipa; pass --format",
            source=source,
        )
    return _one(found, source)


def _one(found: list[str], source: str) -> str:
    if len(found) > 1:
        raise common.FormatError(
            f"ambiguous: looks like {', '.join(found[:-1])} and {found[-1]}; pass --format",
            source=source,
        )
    return found[0]
