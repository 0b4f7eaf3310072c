"""Size-doubling checks: every importer's time grows linearly with its input (tests/_support/
growth.py), on the inputs that made the old ones quadratic and on plain bulk.

Each large input stays under the format's cap (FORMATS[fmt].max_bytes), so the time measured
is the parser's, not the cap's early refusal.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _fmt_inputs import IMPORTERS, A, B, b64, binary, mobileconfig_doc, nsc, xml_plist

from _support.growth import assert_near_linear
from certpin.formats import FORMATS


def _importer(fmt: str) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        assert len(data) <= FORMATS[fmt].max_bytes, "the input must stay under the cap"
        return FORMATS[fmt].import_(data, "grow.in", IMPORTERS[fmt])

    return run


def _nsc_newlines(n: int) -> bytes:
    # expat reports each newline of character data in its own callback: text built with `+=`
    # per callback was quadratic in the number of newlines.
    return nsc().replace(b">example.com<", b">" + b"\n" * n + b"example.com<")


def _trustkit_android_newlines(n: int) -> bytes:
    tk = (
        '<trustkit-config enforcePinning="true" disableDefaultReportUri="true">\n'
        f"<report-uri>{' ' * 0}\n" + "\n" * n + "https://r.example/report</report-uri>\n"
        "</trustkit-config>\n"
    )
    return nsc(tk)


def _nsc_domains(n: int) -> bytes:
    pins = f'<pin-set><pin digest="SHA-256">{A}</pin><pin digest="SHA-256">{B}</pin></pin-set>'
    configs = "".join(
        f"<domain-config><domain>h{i}.example.com</domain>{pins}</domain-config>\n"
        for i in range(n)
    )
    return f"<network-security-config>\n{configs}</network-security-config>\n".encode()


def _okhttp_union(n: int) -> bytes:
    # n patterns under one "**." pattern: each takes the wildcard's pins (OkHttp's union), which
    # used to compare every pattern with every other one.
    adds = [f'.add("**.example.com", "sha256/{A}", "sha256/{B}")']
    adds += [f'.add("h{i}.example.com", "sha256/{b64(str(i))}")' for i in range(n)]
    return ("val p = CertificatePinner.Builder()\n" + "\n".join(adds) + "\n.build()\n").encode()


def _okhttp_comments(n: int) -> bytes:
    body = '// a comment line\n/* a block\n comment */ val s = "a // string"\n' * n
    return (body + f'.add("example.com", "sha256/{A}", "sha256/{B}")\n').encode()


def _okhttp_pins(n: int) -> bytes:
    pins = ", ".join(f'"sha256/{b64(str(i))}"' for i in range(n))
    return f'.add("example.com", {pins})\n'.encode()


def _ats_domains(n: int, fmt: str = "xml") -> bytes:
    ident = [{"SPKI-SHA256-BASE64": A}, {"SPKI-SHA256-BASE64": B}]
    pinned = {f"h{i}.example.com": {"NSPinnedCAIdentities": ident} for i in range(n)}
    doc = {"NSAppTransportSecurity": {"NSPinnedDomains": pinned}}
    return binary(doc) if fmt == "binary" else xml_plist(doc)


def _trustkit_ios_domains(n: int) -> bytes:
    body = {"TSKPublicKeyHashes": [A, B], "TSKDisableDefaultReportUri": True}
    pinned = {f"h{i}.example.com": body for i in range(n)}
    return xml_plist({"TSKConfiguration": {"TSKPinnedDomains": pinned}})


def _mobileconfig_payloads(n: int) -> bytes:
    doc = mobileconfig_doc()
    other = {"PayloadType": "com.apple.wifi.managed", "SSID_STR": "x" * 40}
    doc["PayloadContent"] = doc["PayloadContent"] * 4 + [other] * n
    return xml_plist(doc)


def _curl_lines(n: int) -> bytes:
    lines = [
        f"curl --pinnedpubkey 'sha256//{A};sha256//{B}' https://h{i}.example.com/" for i in range(n)
    ]
    return ("#!/bin/sh\n" + "\n".join(lines) + "\n").encode()


def _hpkp_headers(n: int) -> bytes:
    parts = [
        f'# host: h{i}.example.com\nPublic-Key-Pins: pin-sha256="{A}"; pin-sha256="{B}"; '
        "max-age=100\n"
        for i in range(n)
    ]
    return "".join(parts).encode()


def _hpkp_directives(n: int) -> bytes:
    pins = "; ".join(f'pin-sha256="{b64(str(i))}"' for i in range(n))
    return f"# host: example.com\nPublic-Key-Pins: {pins}; max-age=100\n".encode()


CASES: dict[str, tuple[str, Callable[[int], bytes], int]] = {
    # name: (format, make_input(n), base n) - base chosen so one run takes a few milliseconds.
    "nsc-newlines": ("android-nsc", _nsc_newlines, 32_000),
    "nsc-domains": ("android-nsc", _nsc_domains, 150),
    "trustkit-android-newlines": ("trustkit-android", _trustkit_android_newlines, 32_000),
    "ats-xml-domains": ("ats-plist", _ats_domains, 100),
    "ats-binary-domains": ("ats-plist", lambda n: _ats_domains(n, "binary"), 400),
    "trustkit-ios-domains": ("trustkit-ios", _trustkit_ios_domains, 100),
    "mobileconfig-payloads": ("mobileconfig", _mobileconfig_payloads, 1_000),
    "okhttp-union": ("okhttp-kotlin", _okhttp_union, 400),
    "okhttp-comments": ("okhttp-java", _okhttp_comments, 600),
    "okhttp-pins": ("okhttp-kotlin", _okhttp_pins, 500),
    "curl-lines": ("curl", _curl_lines, 200),
    "hpkp-headers": ("hpkp", _hpkp_headers, 200),
    "hpkp-directives": ("hpkp", _hpkp_directives, 600),
}


@pytest.mark.parametrize("case", list(CASES))
def test_import_time_grows_linearly(case: str) -> None:
    fmt, make_input, base = CASES[case]
    run = _importer(fmt)
    run(make_input(base))  # the small input must be valid: a rejection would time nothing
    assert_near_linear(run, make_input, base=base)
