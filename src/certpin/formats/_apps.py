"""Built apps as import input: the pinning configuration an ``.apk`` or ``.ipa`` ships.

`read_app` finds, in the app, the files its platform loads and turns each into the bytes of an
import format (docs/formats.md, "Auditing a built app"):

* **apk**: the manifest's ``<application android:networkSecurityConfig="@xml/…">`` (compiled
  binary XML, matched by the attribute's resource id ``0x01010527`` as Android's package
  parser does), resolved through ``resources.arsc`` to the compiled ``res/xml/….xml``, decoded
  back to text XML for the android-nsc importer, or trustkit-android when it holds a
  ``<trustkit-config>``. Each element starts on the line it had in the app's source file, so
  the importer's line numbers point into the developer's ``network_security_config.xml``.
  A resource with several configurations (``res/xml-v24/…``) yields one entry per file.
* **ipa**: ``Payload/NAME.app/Info.plist`` (usually a binary plist): an ats-plist entry when
  it has ``NSAppTransportSecurity``/``NSPinnedDomains``, a trustkit-ios entry when it has
  ``TSKConfiguration``; both when it has both.

`import_app` imports each entry: an apk's first file (the default configuration; the other
files of the resource are alternatives the device picks between, warned about), an ipa's
configurations merged into one policy (`merge`).

Compiled XML and the resource table are read with androguard (the ``apps`` extra), its
``AXMLParser`` events and ``ARSCParser``, whose lenient recovery is not trusted: a parse it
marks invalid is refused. The archive is untrusted input and stays bounded: at most
`MAX_APP_BYTES`, `MAX_MEMBERS` members with names of at most `MAX_NAME` bytes and no
duplicates, and each member read is capped both by its declared size and by what
decompression actually yields (`MAX_MEMBER_BYTES`). Every failure is a `FormatError` naming
the archive and the member (``app.apk!AndroidManifest.xml: …``).
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import zipfile
from collections.abc import Iterator
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from certpin.core.policy import DomainRule, Policy
from certpin.formats import _common as common
from certpin.formats._structured import load_plist

__all__ = [
    "MAX_APP_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_NAME",
    "app_kind",
    "import_app",
    "merge",
    "read_app",
]

#: The largest app read (the whole archive is held in memory).
MAX_APP_BYTES = 512 * 1024 * 1024
#: Most members an archive may list (large apps have some tens of thousands).
MAX_MEMBERS = 200_000
#: Longest member name, in bytes.
MAX_NAME = 4096
#: The most each member read may decompress to: the manifest, the resource table (large apps
#: ship tens of megabytes of it), a compiled network security config, an Info.plist.
MAX_MEMBER_BYTES = {
    "manifest": 8 * 1024 * 1024,
    "arsc": 128 * 1024 * 1024,
    "xml": 1024 * 1024,
    "plist": 1024 * 1024,
}
#: Most namespace declarations a compiled XML file may hold (real files have a handful;
#: androguard's bookkeeping of them is quadratic).
_MAX_NAMESPACES = 256
#: The largest gap of empty lines inserted to keep an element on its source line.
_MAX_LINE_GAP = 10_000

#: android:networkSecurityConfig (frameworks/base/core/res/res/values/public.xml).
_NSC_ATTR_ID = 0x01010527
_ANDROID_NS = "http://schemas.android.com/apk/res/android"
_IPA_PLIST = re.compile(r"Payload/[^/]+\.app/Info\.plist")
_XML_NAME = re.compile(r"[A-Za-z_][\w.-]*")

# Res_value data types (frameworks/base/libs/androidfw/include/androidfw/ResourceTypes.h).
_TYPE_REFERENCE = 0x01
_TYPE_STRING = 0x03
# AXML chunk types.
_RES_XML_TYPE = 0x0003
_START_NAMESPACE = 0x0100

AppKind = Literal["apk", "ipa"]


def _member_label(name: str) -> str:
    """A member name for a message or a source label: one line, at most 200 characters."""
    return common.one_line(name if len(name) <= 200 else name[:200] + "…")


def _fail(problem: str, source: str, member: str = "") -> common.FormatError:
    where = f"{source}!{_member_label(member)}" if member else source
    return common.FormatError(problem, source=where)


# -- the archive ----------------------------------------------------------------------------------


def _open(data: bytes, source: str) -> zipfile.ZipFile:
    if len(data) > MAX_APP_BYTES:
        raise _fail(f"larger than {MAX_APP_BYTES} bytes: too large an app to read", source)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # BadZipFile, and OSError/ValueError/... on hostile archives
        raise _fail(f"not a valid zip archive: {_why(exc)}", source) from None
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _fail(f"more than {MAX_MEMBERS} members: too many to be an app", source)
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME or "\x00" in name:
            raise _fail(f"a member name longer than {MAX_NAME} bytes or with NUL", source, name)
        if name in seen:
            # Two members of one name: which one a reader takes differs between zip readers
            # (the "master key" APK bug, CVE-2013-4787); refuse rather than guess.
            raise _fail(
                "two members of this name: refused (which one counts is ambiguous)", source, name
            )
        seen.add(name)
    return archive


def _why(exc: BaseException) -> str:
    return common.clip_message(str(exc)) or type(exc).__name__


def _read(archive: zipfile.ZipFile, name: str, kind: str, source: str) -> bytes:
    """Member `name`, refused when its declared or actual size is over the cap of `kind`."""
    cap = MAX_MEMBER_BYTES[kind]
    info = archive.getinfo(name)
    if info.file_size > cap:
        raise _fail(f"declares {info.file_size} bytes uncompressed (at most {cap})", source, name)
    try:
        with archive.open(info) as stream:
            # One byte over the cap is enough to know; the stream also stops at the declared
            # size and checks the CRC, so a member that lies about its size is refused too.
            content = stream.read(cap + 1)
    except Exception as exc:  # BadZipFile (CRC), zlib.error, NotImplementedError (method)...
        raise _fail(f"cannot be read: {_why(exc)}", source, name) from None
    if len(content) > cap:
        raise _fail(f"decompresses to more than {cap} bytes", source, name)
    return content


def app_kind(data: bytes, source: str) -> AppKind:
    """``"apk"`` or ``"ipa"``: which app the zip archive `data` is.

    Raises:
        FormatError: not a valid or bounded archive, or neither kind of app (or both).
    """
    with _open(data, source) as archive:
        names = archive.namelist()
    apk = "AndroidManifest.xml" in names
    ipa = any(_IPA_PLIST.fullmatch(n) for n in names)
    if apk and ipa:
        raise _fail(
            "ambiguous: both an Android app (AndroidManifest.xml) and an iOS app "
            "(Payload/*.app/Info.plist); pass --format",
            source,
        )
    if apk:
        return "apk"
    if ipa:
        return "ipa"
    raise _fail(
        "a zip archive that is neither an Android app (no AndroidManifest.xml) nor an "
        "iOS app (no Payload/NAME.app/Info.plist)",
        source,
    )


# -- compiled XML ---------------------------------------------------------------------------------


def _androguard() -> Any:
    """androguard's ``core.axml`` module, its DEBUG records switched off."""
    try:
        from androguard.core import axml
        from loguru import logger
    except ImportError:
        raise common.FormatError(
            "reading an .apk needs androguard: pip install 'certpin[apps]'"
        ) from None
    # androguard logs every chunk it reads through loguru, whose default sink is stderr at
    # DEBUG; `disable` is loguru's switch for one library's records (logger.enable undoes it).
    logger.disable("androguard")
    return axml


def _check_chunks(raw: bytes, source: str, member: str) -> None:
    """Walk the top-level chunks of a compiled XML file: well-formed headers, and no more
    than `_MAX_NAMESPACES` namespace chunks. Linear in the number of chunks."""
    if len(raw) < 8:
        raise _fail("not valid compiled XML: shorter than a chunk header", source, member)
    kind, header, size = struct.unpack_from("<HHI", raw, 0)
    if kind != _RES_XML_TYPE or header != 8 or size != len(raw):
        raise _fail("not valid compiled XML: bad file header", source, member)
    offset, namespaces = header, 0
    while offset < len(raw):
        if offset + 8 > len(raw):
            raise _fail(f"not valid compiled XML: truncated chunk at byte {offset}", source, member)
        kind, header, size = struct.unpack_from("<HHI", raw, offset)
        if size < 8 or header > size or offset + size > len(raw):
            raise _fail(f"not valid compiled XML: invalid chunk at byte {offset}", source, member)
        namespaces += kind == _START_NAMESPACE
        if namespaces > _MAX_NAMESPACES:
            raise _fail(f"more than {_MAX_NAMESPACES} namespace declarations", source, member)
        offset += size


@dataclasses.dataclass(frozen=True)
class _Attr:
    """One attribute: namespace URI, name, resource id (-1: none), Res_value type and data, and
    the value as text (what the platform's XmlPullParser returns for it)."""

    ns: str
    name: str
    res_id: int
    vtype: int
    vdata: int
    text: str


class _Element:
    """One start tag of a compiled XML file, as the platform's XmlPullParser sees it."""

    def __init__(self, name: str, line: int, attrs: list[_Attr]) -> None:
        self.name = name
        self.line = line
        self.attrs = attrs


def _events(
    axml: Any, raw: bytes, source: str, member: str, resolve: Any
) -> Iterator[tuple[str, Any]]:
    """("start", _Element) / ("end", name) / ("text", str) / ("ns", {prefix: uri}) events."""
    _check_chunks(raw, source, member)
    try:
        parser = axml.AXMLParser(raw)
        if not parser.is_valid():
            raise _fail("not valid compiled XML", source, member)
        while True:
            event = next(parser)
            if not parser.is_valid():
                raise _fail("not valid compiled XML", source, member)
            if event == axml.END_DOCUMENT:
                return
            if event == axml.START_TAG:
                yield "ns", parser.nsmap
                attrs = []
                ids = parser.m_resourceIDs
                for i in range(parser.getAttributeCount()):
                    base = i * axml.ATTRIBUTE_LENGTH
                    name_ix = parser.m_attributes[base + axml.ATTRIBUTE_IX_NAME]
                    res_id = ids[name_ix] if name_ix < len(ids) else -1
                    vtype = parser.getAttributeValueType(i)
                    vdata = parser.getAttributeValueData(i)
                    if vtype == _TYPE_STRING:
                        value = parser.getAttributeValue(i)
                    elif vtype == _TYPE_REFERENCE:
                        value = resolve(vdata)
                    else:
                        value = axml.format_value(vtype, vdata)
                    attrs.append(
                        _Attr(
                            parser.getAttributeNamespace(i),
                            parser.sb[name_ix],
                            res_id,
                            vtype,
                            vdata,
                            value,
                        )
                    )
                yield "start", _Element(parser.name, parser.m_lineNumber, attrs)
            elif event == axml.END_TAG:
                yield "end", parser.name
            elif event == axml.TEXT:
                yield "text", parser.text
    except common.FormatError:
        raise
    except Exception as exc:  # androguard raises its own and Python's errors on hostile input
        raise _fail(f"not valid compiled XML: {_why(exc)}", source, member) from None


def _name(text: str, source: str, member: str) -> str:
    if not isinstance(text, str) or not _XML_NAME.fullmatch(text):
        raise _fail(f"not valid compiled XML: bad name {common.clip(str(text))}", source, member)
    return text


def _to_text(axml: Any, raw: bytes, source: str, member: str, resolve: Any) -> tuple[str, bool]:
    """The compiled XML `raw` as text XML, and whether it has a <trustkit-config>."""
    cap = MAX_MEMBER_BYTES["xml"]
    out: list[str] = ['<?xml version="1.0" encoding="utf-8"?>']
    size, line, depth, trustkit = 0, 1, 0, False
    prefixes: dict[str, str] = {}
    for kind, value in _events(axml, raw, source, member, resolve):
        piece = ""
        if kind == "ns":
            for prefix, uri in value.items():
                prefixes.setdefault(uri, _name(prefix, source, member))
            continue
        if kind == "start":
            el: _Element = value
            name = _name(el.name, source, member)
            trustkit |= name == "trustkit-config"
            gap = el.line - line if isinstance(el.line, int) else 0
            piece = "\n" * (gap if 0 < gap <= _MAX_LINE_GAP else 0)
            line += piece.count("\n")
            piece += f"<{name}"
            if depth == 0:
                for uri, prefix in prefixes.items():
                    piece += f" xmlns:{prefix}={quoteattr(uri)}"
            for a in el.attrs:
                attr = _name(a.name, source, member)
                if a.ns:
                    attr = f"{prefixes.get(a.ns, 'ns')}:{attr}"
                piece += f" {attr}={quoteattr(str(a.text))}"
            piece += ">"
            depth += 1
        elif kind == "end":
            piece = f"</{_name(value, source, member)}>"
            depth -= 1
        else:
            text = str(value)
            line += text.count("\n")
            piece = escape(text)
        size += len(piece)
        if size > cap:
            raise _fail(f"decodes to more than {cap} characters of XML", source, member)
        out.append(piece)
    return "".join(out) + "\n", trustkit


def _read_apk(data: bytes, source: str) -> list[tuple[str, bytes, str]]:
    axml = _androguard()
    with _open(data, source) as archive:
        names = set(archive.namelist())
        manifest = _read(archive, "AndroidManifest.xml", "manifest", source)
        ref = _nsc_reference(axml, manifest, source)
        if "resources.arsc" not in names:
            raise _fail("no resources.arsc: cannot resolve android:networkSecurityConfig", source)
        table_member = "resources.arsc"
        table = _read(archive, table_member, "arsc", source)
        try:
            arsc = axml.ARSCParser(table)
            resolved = arsc.get_resolved_res_configs(ref)
        except Exception as exc:
            raise _fail(f"not a valid resource table: {_why(exc)}", source, table_member) from None

        def resolve(res_id: int) -> str:
            if res_id == 0:
                return "@null"
            try:
                name = arsc.get_resource_xml_name(res_id)
            except Exception:
                name = None
            if isinstance(name, str) and ":" in name:  # "@package:type/name"
                return "@" + name.split(":", 1)[1]
            return f"@0x{res_id:08x}"

        paths = sorted(
            {p for _config, p in resolved if isinstance(p, str)}, key=lambda p: (p.count("-"), p)
        )
        if not paths:
            raise _fail(
                f"android:networkSecurityConfig names resource 0x{ref:08x}, which the resource "
                "table does not resolve to a file",
                source,
                table_member,
            )
        found = []
        for path in paths:
            if path not in names:
                raise _fail(
                    f"resource 0x{ref:08x} names {common.clip(path)}, which is not in the archive",
                    source,
                    table_member,
                )
            raw = _read(archive, path, "xml", source)
            text, trustkit = _to_text(axml, raw, source, path, resolve)
            fmt = "trustkit-android" if trustkit else "android-nsc"
            found.append((fmt, text.encode("utf-8"), f"{source}!{path}"))
        return found


def _nsc_reference(axml: Any, manifest: bytes, source: str) -> int:
    """The resource id of <application android:networkSecurityConfig>."""
    member = "AndroidManifest.xml"
    path: list[str] = []
    for kind, value in _events(axml, manifest, source, member, lambda res_id: ""):
        if kind == "start":
            path.append(value.name)
            if path == ["manifest", "application"]:
                for a in value.attrs:
                    if a.res_id == _NSC_ATTR_ID or (
                        a.ns == _ANDROID_NS and a.name == "networkSecurityConfig"
                    ):
                        if a.vtype != _TYPE_REFERENCE or not a.vdata:
                            raise _fail(
                                "android:networkSecurityConfig is not a resource reference "
                                f"(@xml/…): {common.clip(str(a.text))}",
                                source,
                                member,
                            )
                        return int(a.vdata)
                break
        elif kind == "end":
            if path:
                path.pop()
    raise _fail(
        "<application> has no android:networkSecurityConfig: the app runs with the platform's "
        "default network security config, which pins nothing (pins set in code, e.g. OkHttp's "
        "CertificatePinner, are not visible here)",
        source,
        member,
    )


# -- iOS ------------------------------------------------------------------------------------------


def _read_ipa(data: bytes, source: str) -> list[tuple[str, bytes, str]]:
    with _open(data, source) as archive:
        plists = [n for n in archive.namelist() if _IPA_PLIST.fullmatch(n)]
        if len(plists) != 1:
            raise _fail(
                f"{len(plists)} Payload/NAME.app/Info.plist files: an .ipa holds exactly one app",
                source,
            )
        member = plists[0]
        content = _read(archive, member, "plist", source)
    label = f"{source}!{_member_label(member)}"
    top = load_plist(content, label)
    found = []
    if isinstance(top, dict):
        ats = top.get("NSAppTransportSecurity")
        if isinstance(ats, dict) and "NSPinnedDomains" in ats:
            found.append(("ats-plist", content, label))
        if "TSKConfiguration" in top:
            found.append(("trustkit-ios", content, label))
    if not found:
        raise _fail(
            "neither NSAppTransportSecurity/NSPinnedDomains nor TSKConfiguration: the Info.plist "
            "pins nothing (TrustKit is usually configured in code: import the Swift or "
            "Objective-C source with --format trustkit-ios-code)",
            source,
            member,
        )
    return found


# -- the whole app --------------------------------------------------------------------------------


def read_app(data: bytes, source: str) -> list[tuple[str, bytes, str]]:
    """The pinning configurations the app `data` (read from `source`) ships.

    Returns:
        (format name of `certpin.formats.FORMATS`, the configuration's bytes in that format,
        a source label ``APP!MEMBER``) for each: see the module docstring.

    Raises:
        FormatError: not an app, an archive out of bounds, a member that cannot be read or
            decoded, or an app that configures no pins where the platform looks (naming the
            archive and the member).
    """
    kind = app_kind(data, source)
    return _read_apk(data, source) if kind == "apk" else _read_ipa(data, source)


def import_app(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    """Import every configuration `read_app` finds and `merge` them into one policy."""
    from certpin.formats import FORMATS

    kind = app_kind(data, source)
    found = _read_apk(data, source) if kind == "apk" else _read_ipa(data, source)
    if kind == "apk":
        # Several files of one resource are alternatives: the device picks one by its
        # configuration (API level, locale...). The first is the default configuration.
        warnings = [
            f"{label}: a configuration variant of {found[0][2]} (the device picks one by its "
            "API level, locale...): not imported"
            for _fmt, _content, label in found[1:]
        ]
        fmt, content, label = found[0]
        result = FORMATS[fmt].import_(content, label, options)
        return common.ImportResult(result.policy, result.warnings + tuple(warnings))
    results = [
        (label, FORMATS[fmt].import_(content, label, options)) for fmt, content, label in found
    ]
    return merge(results, source)


_SLOTS = ("pins", "leaf_pins", "ca_pins")
_SAME = ("include_subdomains", "expires", "enforce", "report_uris")


def merge(results: list[tuple[str, common.ImportResult]], source: str) -> common.ImportResult:
    """One policy from the configurations of one app, with every import's warnings.

    Configurations of one app are all enforced: an iOS app with both ATS ``NSPinnedDomains``
    and ``TSKConfiguration`` has each connection checked by ATS and then by TrustKit. So a host
    pinned by several keeps a rule with every slot each of them sets: ATS's ``leaf_pins`` /
    ``ca_pins`` beside TrustKit's ``pins``, each of which must match, as on the device. What
    one certpin rule cannot hold — the same slot with different pins, or different subdomain
    coverage, expiry, enforcement or report URIs — keeps the first configuration's rule and
    warns that the other's rule for that host is left out.
    """
    if len(results) == 1:
        return results[0][1]
    warnings: list[str] = []
    rules: dict[str, DomainRule] = {}
    origin: dict[str, str] = {}
    for label, result in results:
        warnings += result.warnings
        for pattern, rule in result.policy.domains.items():
            if pattern not in rules:
                rules[pattern], origin[pattern] = rule, label
                continue
            merged = _combine(rules[pattern], rule)
            if merged is None:
                warnings.append(
                    f"{label}: {pattern}: also pinned by {origin[pattern]} with a rule one "
                    "certpin rule cannot hold together with this one (same slot with other "
                    "pins, or other subdomains, expiry, enforcement or report URIs): kept "
                    f"{origin[pattern]}'s rule; this one is left out"
                )
            else:
                rules[pattern] = merged
    return common.ImportResult(
        Policy.from_rules(rules.values(), source=source), tuple(dict.fromkeys(warnings))
    )


def _combine(a: DomainRule, b: DomainRule) -> DomainRule | None:
    if any(getattr(a, f) != getattr(b, f) for f in _SAME):
        return None
    changes: dict[str, Any] = {}
    for slot in _SLOTS:
        mine, theirs = getattr(a, slot), getattr(b, slot)
        if theirs and mine and set(mine) != set(theirs):
            return None
        if theirs and not mine:
            changes[slot] = theirs
    changes["allow_single_pin"] = a.allow_single_pin or b.allow_single_pin
    return dataclasses.replace(a, **changes)
