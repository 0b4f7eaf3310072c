"""Inputs for the importer bounds tests: a valid sample per format, hand-built binary plists
(shared references, bombs, deep nesting) and the checker every fuzz example goes through.

Not a test module (no ``test_`` prefix): imported by test_import_bounds.py,
test_import_linear.py and test_import_fuzz.py.
"""

from __future__ import annotations

import base64
import hashlib
import plistlib
import struct
from typing import Any

from _support.pki import make_pki
from certpin.formats import FORMATS, FormatError, ImportOptions, ImportResult

#: Every import format, with the options its importer needs.
IMPORTERS: dict[str, ImportOptions] = {
    name: ImportOptions(domain="example.com" if name == "mobileconfig" else None)
    for name in FORMATS
}


def b64(seed: str) -> str:
    """A deterministic base64 SHA-256 value (a syntactically valid pin body)."""
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()


A, B = b64("a"), b64("b")


def nsc(extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        "<network-security-config>\n"
        "  <domain-config>\n"
        '    <domain includeSubdomains="true">example.com</domain>\n'
        '    <pin-set expiration="2030-01-01">\n'
        f'      <pin digest="SHA-256">{A}</pin>\n'
        f'      <pin digest="SHA-256">{B}</pin>\n'
        "    </pin-set>\n"
        f"{extra}"
        "  </domain-config>\n"
        "</network-security-config>\n"
    ).encode()


def trustkit_android() -> bytes:
    return nsc(
        '    <trustkit-config enforcePinning="true" disableDefaultReportUri="true">\n'
        "      <report-uri>https://r.example/report</report-uri>\n"
        "    </trustkit-config>\n"
    )


def ats_doc() -> dict[str, Any]:
    ident = [{"SPKI-SHA256-BASE64": A}, {"SPKI-SHA256-BASE64": B}]
    body = {"NSIncludesSubdomains": True, "NSPinnedCAIdentities": ident}
    return {"NSAppTransportSecurity": {"NSPinnedDomains": {"example.com": body}}}


def trustkit_ios_doc() -> dict[str, Any]:
    body = {
        "TSKPublicKeyHashes": [A, B],
        "TSKIncludeSubdomains": True,
        "TSKEnforcePinning": True,
        "TSKDisableDefaultReportUri": True,
        "TSKReportUris": ["https://r.example/report"],
        "TSKExpirationDate": "2030-01-01",
    }
    return {"TSKConfiguration": {"TSKPinnedDomains": {"example.com": body}}}


_ROOT_DER: bytes | None = None


def root_der() -> bytes:
    global _ROOT_DER
    if _ROOT_DER is None:
        _ROOT_DER = make_pki().root.der()
    return _ROOT_DER


def mobileconfig_doc() -> dict[str, Any]:
    payload = {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": "org.example.root",
        "PayloadUUID": "8D7C4E52-0000-5000-8000-000000000000",
        "PayloadContent": root_der(),
    }
    return {"PayloadType": "Configuration", "PayloadVersion": 3, "PayloadContent": [payload]}


def kotlin(n: int = 1) -> bytes:
    adds = "".join(f'    .add("h{i}.example.com", "sha256/{A}", "sha256/{B}")\n' for i in range(n))
    return f"val p = CertificatePinner.Builder()\n{adds}    .build()\n".encode()


def java() -> bytes:
    return (
        "// certpin policy version: 4\n"
        "CertificatePinner p = new CertificatePinner.Builder()\n"
        f'    .add("**.example.com", "sha256/{A}", "sha256/{B}") /* a comment */\n'
        f'    .add("*.api.example.com", "sha256/{B}", "sha256/{A}")\n'
        "    .build();\n"
    ).encode()


def swift() -> bytes:
    """A TrustKit configuration in Swift (trustkit-ios-code), with a constant and a comment."""
    return (
        "// certpin policy version: 5\n"
        f'let backup = "{B}"\n'
        "let trustKitConfig: [String: Any] = [\n"
        "    kTSKPinnedDomains: [\n"
        '        "example.com": [\n'
        f'            kTSKPublicKeyHashes: ["{A}", backup],  /* the backup key */\n'
        "            kTSKIncludeSubdomains: true,\n"
        "            kTSKDisableDefaultReportUri: true,\n"
        '            kTSKReportUris: ["https://r.example/report"],\n'
        '            kTSKExpirationDate: "2030-01-01",\n'
        "        ],\n"
        "    ],\n"
        "]\n"
    ).encode()


def curl() -> bytes:
    return (
        "#!/bin/sh\n# certpin policy version: 2\n"
        f"curl --pinnedpubkey 'sha256//{A};sha256//{B}' https://example.com/\n"
    ).encode()


def hpkp() -> bytes:
    return (
        "# host: example.com\n"
        f'Public-Key-Pins: pin-sha256="{A}"; pin-sha256="{B}"; max-age=100; includeSubDomains; '
        'report-uri="https://r.example/report"\n'
    ).encode()


def xml_plist(doc: dict[str, Any]) -> bytes:
    return plistlib.dumps(doc, fmt=plistlib.FMT_XML)


def binary(doc: dict[str, Any]) -> bytes:
    return plistlib.dumps(doc, fmt=plistlib.FMT_BINARY)


#: A valid file per format (the passing twin of every hostile variant).
SAMPLES: dict[str, bytes] = {
    "android-nsc": nsc(),
    "trustkit-android": trustkit_android(),
    "ats-plist": xml_plist(ats_doc()),
    "trustkit-ios": xml_plist(trustkit_ios_doc()),
    "okhttp-kotlin": kotlin(2),
    "okhttp-java": java(),
    "trustkit-ios-code": swift(),
    "curl": curl(),
    "hpkp": hpkp(),
}


def sample(fmt: str) -> bytes:
    if fmt == "mobileconfig":  # built lazily: it needs a certificate
        return xml_plist(mobileconfig_doc())
    return SAMPLES[fmt]


#: The documents of the three plist importers, by format name.
PLIST_DOCS = {
    "ats-plist": ats_doc,
    "trustkit-ios": trustkit_ios_doc,
    "mobileconfig": mobileconfig_doc,
}


# -- hand-built binary property lists ------------------------------------------------------------
#
# plistlib's writer shares one object for equal values, but never lets an array hold the same
# array twice the way a hostile file can; so the object table is written here, following the
# format plistlib's reader implements (header, objects, offset table, 32-byte trailer).


class BPlist:
    """A binary plist object table: add objects, get their reference numbers, then `build`."""

    def __init__(self) -> None:
        self.objects: list[bytes] = []

    def _add(self, encoded: bytes) -> int:
        self.objects.append(encoded)
        return len(self.objects) - 1

    @staticmethod
    def _count(marker: int, n: int) -> bytes:
        if n < 15:
            return bytes([marker | n])
        return bytes([marker | 0xF, 0x11]) + struct.pack(">H", n)

    def string(self, text: str) -> int:
        raw = text.encode("ascii")
        return self._add(self._count(0x50, len(raw)) + raw)

    def integer(self, value: int) -> int:
        return self._add(b"\x13" + struct.pack(">q", value))

    def data(self, raw: bytes) -> int:
        return self._add(self._count(0x40, len(raw)) + raw)

    def true(self) -> int:
        return self._add(b"\x09")

    def array(self, refs: list[int]) -> int:
        return self._add(
            self._count(0xA0, len(refs)) + b"".join(struct.pack(">H", r) for r in refs)
        )

    def dict(self, items: list[tuple[int, int]]) -> int:
        keys = b"".join(struct.pack(">H", k) for k, _ in items)
        values = b"".join(struct.pack(">H", v) for _, v in items)
        return self._add(self._count(0xD0, len(items)) + keys + values)

    def dict_of(self, mapping: dict[str, int]) -> int:
        return self.dict([(self.string(k), v) for k, v in mapping.items()])

    def build(self, top: int) -> bytes:
        out = bytearray(b"bplist00")
        offsets = []
        for encoded in self.objects:
            offsets.append(len(out))
            out += encoded
        table = len(out)
        out += b"".join(struct.pack(">I", off) for off in offsets)
        # Trailer: 6 unused bytes, offset size, reference size, object count, top, table offset.
        out += struct.pack(">6xBBQQQ", 4, 2, len(self.objects), top, table)
        return bytes(out)


def bomb_ref(plist: BPlist, levels: int = 60, fanout: int = 2) -> int:
    """Array i holds array i-1 `fanout` times: fanout**levels leaves from `levels` + 1 small
    objects."""
    ref = plist.integer(1)
    for _ in range(levels):
        ref = plist.array([ref] * fanout)
    return ref


def shared_doc(plist: BPlist, fmt: str) -> dict[str, int]:
    """The sample document of `fmt` in `plist`, with one value shared by two references (the
    legal use of shared references); returns the top-level keys and their references."""
    if fmt == "mobileconfig":
        cert = plist.data(root_der())
        payload = plist.dict_of(
            {"PayloadType": plist.string("com.apple.security.root"), "PayloadContent": cert}
        )
        return {"PayloadContent": plist.array([payload, payload])}
    if fmt == "ats-plist":
        idents = plist.array(
            [plist.dict_of({"SPKI-SHA256-BASE64": plist.string(x)}) for x in (b64("a"), b64("b"))]
        )
        body = plist.dict_of({"NSPinnedCAIdentities": idents, "NSIncludesSubdomains": plist.true()})
        hosts = plist.dict_of({"a.example.com": body, "b.example.com": body})
        return {"NSAppTransportSecurity": plist.dict_of({"NSPinnedDomains": hosts})}
    hashes = plist.array([plist.string(b64("a")), plist.string(b64("b"))])
    body = plist.dict_of({"TSKPublicKeyHashes": hashes, "TSKDisableDefaultReportUri": plist.true()})
    hosts = plist.dict_of({"a.example.com": body, "b.example.com": body})
    return {"TSKConfiguration": plist.dict_of({"TSKPinnedDomains": hosts})}


def nested_ref(plist: BPlist, depth: int) -> int:
    """An array nested `depth` levels deep (each level a distinct object)."""
    ref = plist.integer(1)
    for _ in range(depth):
        ref = plist.array([ref])
    return ref


def wrap(plist: BPlist, path: list[str], inner: int) -> int:
    """Dictionaries along `path` with `inner` at its end; returns the top object."""
    for key in reversed(path):
        inner = plist.dict_of({key: inner})
    return inner


def deep_xml_plist(path: list[str], depth: int) -> bytes:
    """An XML plist with arrays nested `depth` levels deep at the end of `path`."""
    head = "".join(f"<dict><key>{k}</key>" for k in path)
    tail = "</dict>" * len(path)
    value = "<array>\n" * depth + "<true/>" + "</array>\n" * depth
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">\n'
        f"{head}{value}{tail}</plist>\n"
    ).encode()


# -- the contract every importer keeps ------------------------------------------------------------


def check_contract(fmt: str, data: bytes, source: str = "in/put.file") -> ImportResult | None:
    """Import `data`: a result, or a FormatError that names `source` and stays short. Any other
    exception propagates and fails the calling test."""
    try:
        return FORMATS[fmt].import_(data, source, IMPORTERS[fmt])
    except FormatError as exc:
        text = str(exc)
        assert text.startswith(f"{source}: "), text
        assert exc.source == source
        # Messages quote bounded excerpts of the input, never a whole value.
        assert len(text) < 1000, text[:300]
        return None
