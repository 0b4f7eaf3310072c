"""Report dialects: RFC 7469 §3, TrustKit iOS, TrustKit Android and certpin's own, in one record.

Every field is attacker-controlled: each is type-checked and length-bounded, every PEM must
decode to one X.509 certificate, and every ``known-pins`` entry must parse as a pin. A bad field
raises `ReportError` naming it (the collector answers 400 with that message).

Which dialect a body is (first rule that applies):

1. ``certpin-version`` present → ``certpin``
2. ``app-platform`` is ``"ANDROID"`` (any case) → ``trustkit-android``
3. any of ``app-bundle-id``, ``app-identifier``, ``app-vendor-id``, ``trustkit-version``,
   ``app-platform`` present → ``trustkit-ios``
4. otherwise → ``rfc7469``

The *unexpected key* of a report is the SPKI pin of the validated chain's leaf (the served
leaf when no validated chain was sent: both chains start with the same certificate) when that
leaf matches none of the report's ``known-pins`` (`Pin.matches`, the core's one pin match; the
host is not asked about: the client already chose these pins for it).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any

from certpin._errors import CertpinError
from certpin.collector.limits import IngestLimits, LimitError, check_nesting
from certpin.core.hosts import HostError, normalize_host
from certpin.core.pins import Pin, spki_of_certificate
from certpin.core.times import TimeError, read_time
from certpin.core.verdict import ChainEntry

__all__ = [
    "DIALECTS",
    "REQUIRED_FIELDS",
    "Report",
    "ReportError",
    "detect_dialect",
    "normalize_report",
]

DIALECTS = ("rfc7469", "trustkit-ios", "trustkit-android", "certpin")

#: fields each dialect must carry (the collector answers 400 naming the first one missing).
#: rfc7469 also needs at least one of the two chains (``served-certificate-chain`` or
#: ``validated-certificate-chain``).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "rfc7469": ("hostname", "port", "known-pins"),
    "trustkit-ios": ("hostname", "known-pins", "validated-certificate-chain", "app-bundle-id"),
    "trustkit-android": (
        "hostname",
        "known-pins",
        "validated-certificate-chain",
        "app-bundle-id",
        "app-platform",
    ),
    "certpin": (
        "hostname",
        "port",
        "known-pins",
        "validated-certificate-chain",
        "certpin-version",
        "mode",
        "report-id",
    ),
}

_TRUSTKIT_KEYS = ("app-bundle-id", "app-identifier", "app-vendor-id", "trustkit-version")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)
_REPORT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MAX_PEM = 16 * 1024


class ReportError(LimitError):
    """A report body that is not a valid report of its dialect (always HTTP 400)."""


@dataclass(frozen=True)
class Report:
    """One pin-failure report, whatever dialect it came in.

    Attributes:
        report_key: idempotency key: ``id:<report-id>`` or ``sha256:<hex of canonical body>``.
        dialect: one of `DIALECTS`.
        hostname: the host the client connected to, normalised.
        port: the port, or None when unknown (TrustKit Android always sends 0).
        client_time_us: ``date-time`` in microseconds since the epoch (an exact integer, within
            `certpin.core.times` bounds), or None when absent, not a time, without a UTC
            offset, or untrustworthy (Android's is device local time with a literal ``Z``).
        date_time: ``date-time`` exactly as sent.
        validated_chain, served_chain: DER certificates, leaf first.
        known_pins: canonical pin strings (``sha256/…``).
        unexpected_pin: the leaf's SPKI pin if it matched no known pin, else None.
        body: the canonical JSON text of the whole report (sorted keys).
    """

    report_key: str
    dialect: str
    hostname: str
    port: int | None
    noted_hostname: str | None
    date_time: str | None
    client_time_us: int | None
    include_subdomains: bool | None
    enforce: bool | None
    validation_result: int | None
    effective_expiration: str | None
    known_pins: tuple[str, ...]
    validated_chain: tuple[bytes, ...]
    served_chain: tuple[bytes, ...]
    app_id: str | None
    app_version: str | None
    app_platform: str | None
    app_platform_version: str | None
    app_vendor_id: str | None
    library: str | None
    verdict_status: str | None
    verdict_reason: str | None
    unexpected_pin: str | None
    unexpected_subject: str | None
    unexpected_issuer: str | None
    body: str


def detect_dialect(data: dict[str, Any]) -> str:
    """Which dialect `data` is written in (see the module docstring for the rules)."""
    if "certpin-version" in data:
        return "certpin"
    platform = data.get("app-platform")
    if isinstance(platform, str) and platform.upper() == "ANDROID":
        return "trustkit-android"
    if "app-platform" in data or any(key in data for key in _TRUSTKIT_KEYS):
        return "trustkit-ios"
    return "rfc7469"


def normalize_report(
    data: dict[str, Any], limits: IngestLimits, *, raw: str | None = None
) -> Report:
    """Validate a parsed report body and turn it into a `Report`.

    `raw` is the body's text as received (what `data` was parsed from): stored as it came, so
    nothing of an accepted report is lost. Without it, the canonical JSON of `data` is stored.

    Raises:
        ReportError: naming the missing or invalid field.
    """
    if not isinstance(data, dict):  # parse_json guarantees it; other callers may not
        raise ReportError(f"a report must be a JSON object, got {_json_type(data)}")
    dialect = detect_dialect(data)
    for name in REQUIRED_FIELDS[dialect]:
        if data.get(name) is None:
            raise ReportError(f"{dialect} report: required field {name!r} is missing")
    # Every string field in one pass (this runs for every report the collector receives).
    (
        host_text,
        noted,
        date_time,
        mode,
        report_id,
        certpin_version,
        trustkit_version,
        known_expiration,  # checked, kept in the body only
        effective_expiration,
        app_id,
        app_version,
        app_platform,
        app_platform_version,
        app_vendor_id,
        app_identifier,
        verdict_status,
        verdict_reason,
    ) = _strings(data, limits.max_string)
    assert host_text is not None
    try:
        hostname = normalize_host(host_text)
    except HostError as exc:
        raise ReportError(f"field 'hostname': {exc}") from None
    port = _integer(data, "port", 0, 65535)
    if port == 0:
        port = None  # TrustKit Android cannot see the port and always sends 0
    validated = _chain(data, "validated-certificate-chain", limits.max_chain)
    served = _chain(data, "served-certificate-chain", limits.max_chain)
    if dialect == "rfc7469" and not validated and not served:
        raise ReportError(
            "rfc7469 report: one of 'served-certificate-chain' or "
            "'validated-certificate-chain' is required"
        )
    known, known_text = _pins(data, "known-pins", limits.max_pins)
    client_time = _time(date_time, "date-time")
    if dialect == "trustkit-android":
        client_time = None
    _time(known_expiration, "known-pins-expiration-date")
    _time(effective_expiration, "effective-expiration-date")
    enforce = _boolean(data, "enforce-pinning")
    if mode is not None:
        if mode not in ("enforce", "report-only"):
            raise ReportError(f"field 'mode': must be 'enforce' or 'report-only', got {mode!r}")
        enforce = mode == "enforce"
    if report_id is not None and not _REPORT_ID.match(report_id):
        raise ReportError("field 'report-id': 1-128 characters of A-Z a-z 0-9 . _ : -")
    library = None
    if certpin_version is not None:
        library = f"certpin {certpin_version}"
    elif trustkit_version is not None:
        library = f"trustkit {trustkit_version}"
    leaf = (validated or served)[0] if (validated or served) else None
    unexpected = None if leaf is None else _unexpected(leaf, known)
    subject = issuer = None
    if unexpected is not None and leaf is not None:
        subject, issuer = _names(leaf)
    canonical = ""
    if report_id is None or raw is None:
        canonical = _canonical(data)
    if report_id is not None:
        key = f"id:{report_id}"
    else:
        # Without an id, the key is the hash of the canonical JSON: the same report sent
        # again with other whitespace or member order is still one report. surrogatepass: an
        # unpaired "\ud800" in a field certpin ignores is kept (escaped in the raw body) and
        # must not break the key.
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
        key = "sha256:" + digest
    body = raw
    if body is None:
        body = canonical
        if not canonical.isascii() and not _encodable(canonical):
            # Stored as text: an unpaired surrogate in a field certpin ignores is kept as the
            # JSON escape it arrived as (as in a raw body), which every database can store.
            body = _canonical(data, ascii_only=True)
    return Report(
        report_key=key,
        dialect=dialect,
        hostname=hostname,
        port=port,
        noted_hostname=noted,
        date_time=date_time,
        client_time_us=client_time,
        include_subdomains=_boolean(data, "include-subdomains"),
        enforce=enforce,
        validation_result=_integer(data, "validation-result", -(2**31), 2**31 - 1),
        effective_expiration=effective_expiration,
        known_pins=known_text,
        validated_chain=validated,
        served_chain=served,
        app_id=app_id,
        app_version=app_version,
        app_platform=app_platform,
        app_platform_version=app_platform_version,
        app_vendor_id=app_vendor_id or app_identifier,
        library=library,
        verdict_status=verdict_status,
        verdict_reason=verdict_reason,
        unexpected_pin=None if unexpected is None else str(unexpected),
        unexpected_subject=subject,
        unexpected_issuer=issuer,
        body=body,
    )


#: Deeper than any report parse_json accepts (IngestLimits.max_depth), shallower than the
#: interpreter's recursion limit.
_CANONICAL_MAX_DEPTH = 256


def _canonical(data: dict[str, Any], *, ascii_only: bool = False) -> str:
    """The canonical JSON text of a report (sorted keys, compact).

    What `parse_json` returns always has one; a caller handing over its own dict may not (nested
    past the interpreter's recursion limit, an integer past its conversion limit): refused.
    """
    try:
        # json.dumps recurses in C: Python 3.11 raises RecursionError near 1 000 levels, 3.13
        # (whose C recursion limit is separate) goes deeper, so the depth is checked first.
        check_nesting(data, _CANONICAL_MAX_DEPTH)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
    except LimitError as exc:
        raise ReportError(f"report is not canonical JSON ({exc})") from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise ReportError(f"report is not canonical JSON ({str(exc)[:120]})") from None


#: The string fields `normalize_report` reads, in the order it checks them, with their length
#: limit (None: `IngestLimits.max_string`).
_STRING_FIELDS: tuple[tuple[str, int | None], ...] = (
    ("hostname", 253),
    ("noted-hostname", 253),
    ("date-time", 64),
    ("mode", 32),
    ("report-id", 128),
    ("certpin-version", 64),
    ("trustkit-version", 64),
    ("known-pins-expiration-date", 64),
    ("effective-expiration-date", 64),
    ("app-bundle-id", None),
    ("app-version", None),
    ("app-platform", None),
    ("app-platform-version", None),
    ("app-vendor-id", None),
    ("app-identifier", None),
    ("verdict-status", 64),
    ("verdict-reason", None),
)


def _strings(data: dict[str, Any], max_string: int) -> list[str | None]:
    """The values of `_STRING_FIELDS` (None where absent or null), each checked: a string,
    within its length limit, storable as text."""
    out: list[str | None] = []
    for name, max_len in _STRING_FIELDS:
        value = data.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise ReportError(f"field {name!r}: expected a string, got {_json_type(value)}")
            limit = max_len or max_string
            if len(value) > limit:
                raise ReportError(f"field {name!r}: longer than {limit} characters")
            if "\x00" in value or not value.isascii():
                _check_text(name, value)
        out.append(value)
    return out


def _boolean(data: dict[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise ReportError(f"field {name!r}: expected true or false, got {_json_type(value)}")
    return value


def _integer(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    # bool is an int subclass: true/false is never a port or a validation result.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ReportError(f"field {name!r}: expected an integer, got {_json_type(value)}")
    if not low <= value <= high:
        # Not the digits of a huge one: printing an integer costs time quadratic in its length
        # (and fails past 4300 digits).
        shown = value if value.bit_length() <= 64 else "a number beyond ±2**64"
        raise ReportError(f"field {name!r}: {shown} is outside {low}..{high}")
    return value


def _list(data: dict[str, Any], name: str, limit: int, what: str) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReportError(f"field {name!r}: expected an array of {what}, got {_json_type(value)}")
    if len(value) > limit:
        raise ReportError(f"field {name!r}: more than {limit} entries")
    return value


def _chain(data: dict[str, Any], name: str, limit: int) -> tuple[bytes, ...]:
    out: list[bytes] = []
    for i, item in enumerate(_list(data, name, limit, "PEM certificates")):
        if not isinstance(item, str):
            raise ReportError(f"field '{name}[{i}]': expected a PEM certificate string")
        if len(item) > _MAX_PEM:
            raise ReportError(f"field '{name}[{i}]': PEM longer than {_MAX_PEM} characters")
        result = _decode_pem(item)
        if isinstance(result, str):
            raise ReportError(f"field '{name}[{i}]': {result}")
        out.append(result)
    return tuple(out)


def _pins(data: dict[str, Any], name: str, limit: int) -> tuple[tuple[Pin, ...], tuple[str, ...]]:
    """The pins of `name` and their canonical texts (``sha256/…``)."""
    pins: list[Pin] = []
    texts: list[str] = []
    for i, item in enumerate(_list(data, name, limit, "pin strings")):
        if not isinstance(item, str) or len(item) > 256:
            raise ReportError(f"field '{name}[{i}]': expected a pin string")
        result = _parse_pin(item)
        if isinstance(result, str):
            raise ReportError(f"field '{name}[{i}]': {result}")
        pins.append(result[0])
        texts.append(result[1])
    return tuple(pins), tuple(texts)


@functools.lru_cache(maxsize=1024)
def _parse_pin(item: str) -> tuple[Pin, str] | str:
    """A pin and its canonical text, or the reason it is not a pin; cached like `_decode_pem`."""
    try:
        pin = Pin.parse(item)
    except CertpinError as exc:
        return str(exc)
    return pin, str(pin)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(name: str, value: str) -> None:
    """Refuse what a database cannot store as text: NUL, unpaired surrogates (JSON allows
    both as escapes; neither SQLite's nor Postgres' drivers can encode them)."""
    if "\x00" in value:
        raise ReportError(f"field {name!r}: contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ReportError(
            f"field {name!r}: contains an unpaired surrogate (U+{ord(value[exc.start]):04X})"
        ) from None


def _json_type(value: Any) -> str:
    names: list[tuple[type, str]] = [
        (bool, "a boolean"),
        (int, "a number"),
        (float, "a number"),
        (str, "a string"),
        (list, "an array"),
        (dict, "an object"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__  # Defensive: json.loads yields only the types above


@functools.lru_cache(maxsize=1024)
def _decode_pem(item: str) -> bytes | str:
    """One PEM certificate → its DER, or the reason it is not one.

    Cached on the PEM text (≤ 1 024 entries, ≤ 16 KiB each): clients report the same few chains
    again and again, and this is a pure function of the text.
    """
    # TrustKit iOS sends 64-column CRLF PEM without a trailing newline, Android 76-column LF:
    # only the base64 between the markers matters.
    match = _PEM.fullmatch(item.strip())
    if match is None or item.count("-----BEGIN") != 1:
        return "not a single PEM 'CERTIFICATE' block"
    try:
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return "invalid base64 in PEM"
    try:
        from cryptography import x509

        with warnings.catch_warnings():
            # Legacy encodings (negative serials…) are what real devices saw: accept them.
            warnings.simplefilter("ignore")
            x509.load_der_x509_certificate(der)
        spki_of_certificate(der)
    except ValueError as exc:
        return f"not an X.509 certificate ({exc})"
    return der


@functools.lru_cache(maxsize=1024)
def _names(der: bytes) -> tuple[str, str]:
    """(subject, issuer) of a certificate, for display; cached like `_decode_pem`."""
    entry = ChainEntry(0, der)
    return entry.subject[:1024], entry.issuer[:1024]


def _time(text: str | None, name: str) -> int | None:
    """A time field as exact microseconds since the epoch when it reads as a time with a UTC
    offset, else None; a time outside the bounds (`certpin.core.times`) is refused.

    Text that is not an ISO 8601 time is kept as sent and never interpreted (the collector's
    receive time is authoritative); a time without an offset is local time of an unknown zone.
    """
    if text is None:
        return None
    try:
        found = read_time(text)
    except TimeError as exc:
        raise ReportError(f"field {name!r}: {exc}") from None
    if found is None or not found[1]:
        return None
    return found[0]


@functools.lru_cache(maxsize=1024)
def _unexpected(leaf: bytes, known: tuple[Pin, ...]) -> Pin | None:
    """The leaf's SPKI pin when none of the pins the client knew matches it, else None.

    Cached: an incident repeats the same chain and pins in every report.
    """
    if any(pin.matches(leaf) for pin in known):
        return None
    return Pin.for_certificate(leaf)
