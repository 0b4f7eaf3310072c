"""The records of ``certpin ct watch``, as the collector accepts them at ``POST /api/ct``.

A body is one JSON object or NDJSON (one object per line): each object is either a record of
``ct watch --json`` (docs/ct.md, "Output") or the body of its ``--webhook`` (``{"event":
"ct_unexpected", "time", "certificate": record, "message"}``), so both
``ct watch --json | curl --data-binary @- …/api/ct`` and ``ct watch --webhook …/api/ct`` work.

Every field is checked here, field by field; the first bad one is a `LimitError` (a 400) that
names the record (its line) and the field. Unknown fields are refused too: the watcher and the
collector ship together, and a field the collector would silently drop is a bug to see.
Parsing is linear in the body: `certpin.collector.limits.parse_json` bounds each line's size,
depth and number of values, and the number of records is bounded (`CTLimits`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from certpin._errors import CertpinError
from certpin.collector.limits import IngestLimits, LimitError, parse_json
from certpin.collector.store.schema import ct_issuance
from certpin.core.hosts import HostError, HostPattern
from certpin.core.pins import Pin
from certpin.core.times import iso, parse_iso

__all__ = ["CTCertificate", "CTLimits", "CTLogError", "CTRecord", "parse_ct_body"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KINDS = ("pinned", "unexpected")
_ENTRY_TYPES = ("x509", "precert")
_CERT_FIELDS = (
    "kind",
    "hosts",
    "names",
    "spki_pin",
    "tbs_sha256",
    "log",
    "index",
    "entry_type",
    "not_before",
    "not_after",
    "issuer",
)
_EVENT_FIELDS = ("event", "time", "certificate", "message")


@dataclass(frozen=True)
class CTLimits:
    """Bounds of one ``POST /api/ct`` (defaults in docs/collector.md).

    Attributes:
        max_bytes: request body (4 MiB: a thousand records of a few KiB).
        max_records: records (lines) in one body.
        max_names: DNS names of one certificate (CAs issue at most a few hundred).
        max_hosts: policy hosts of one record.
        max_text: length of a URL, an issuer, a reason or a message.
    """

    max_bytes: int = 4 * 1024 * 1024
    max_records: int = 1000
    max_names: int = 5000
    max_hosts: int = 256
    max_text: int = 4096

    def json_limits(self) -> IngestLimits:
        """The structural bounds of one line (a record holds at most `max_names` names)."""
        return IngestLimits(
            max_bytes=self.max_bytes,
            max_depth=4,
            max_items=self.max_names + self.max_hosts + 64,
            max_fields=32,  # more than a record has: an unknown field is named below
        )


@dataclass(frozen=True)
class CTCertificate:
    """A ``pinned`` or ``unexpected`` record (the watcher's fields, normalised)."""

    kind: str
    hosts: tuple[str, ...]
    names: tuple[str, ...]
    spki_pin: str | None
    tbs_sha256: str | None
    log: str
    index: int
    entry_type: str
    not_before: str | None
    not_after: str | None
    issuer: str | None

    @property
    def issuance(self) -> str:
        """One key per issuance: precertificate and final certificate share it."""
        return ct_issuance(self.tbs_sha256, self.log, self.index)


@dataclass(frozen=True)
class CTLogError:
    """A ``log_error`` record: a log that failed verification."""

    log: str
    reason: str


CTRecord = CTCertificate | CTLogError


def parse_ct_body(text: str, limits: CTLimits | None = None) -> list[CTRecord]:
    """The records of a body (one JSON object, or NDJSON); raises `LimitError` naming the
    record and the field of the first problem."""
    limits = limits or CTLimits()
    json_limits = limits.json_limits()
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise LimitError("empty body: expected a ct watch record (JSON object) or NDJSON of them")
    if len(lines) > limits.max_records:
        raise LimitError(f"too many records ({len(lines)} > {limits.max_records})")
    objects: list[tuple[str, dict[str, Any]]] = []
    try:
        for n, line in lines:
            where = f"line {n}" if len(lines) > 1 else "record"
            objects.append((where, _object(line, json_limits, where)))
    except LimitError:
        if len(lines) == 1:
            raise
        # Not NDJSON: one object written over several lines (pretty-printed)?
        try:
            objects = [("record", parse_json(text, json_limits))]
        except LimitError:
            pass
        else:
            return [_record(objects[0][1], "record", limits)]
        raise
    return [_record(data, where, limits) for where, data in objects]


def _object(line: str, json_limits: IngestLimits, where: str) -> dict[str, Any]:
    try:
        return parse_json(line, json_limits)
    except LimitError as exc:
        raise LimitError(f"{where}: {exc}") from None


def _record(data: dict[str, Any], where: str, limits: CTLimits) -> CTRecord:
    if "event" in data:  # the webhook's body
        _known(data, _EVENT_FIELDS, where)
        if data["event"] != "ct_unexpected":
            raise LimitError(f"{where}: field 'event': expected 'ct_unexpected'")
        for name in ("time", "message"):
            if name in data:
                _text(data, name, where, limits.max_text, null=True)
        certificate = data.get("certificate")
        if not isinstance(certificate, dict):
            raise LimitError(f"{where}: field 'certificate': expected a ct watch record")
        record = _record(certificate, f"{where}: certificate", limits)
        if not isinstance(record, CTCertificate):
            raise LimitError(f"{where}: certificate.kind: expected 'pinned' or 'unexpected'")
        return record
    kind = data.get("kind")
    if kind == "log_error":
        _known(data, ("kind", "log", "reason"), where)
        return CTLogError(
            _url(data, where, limits),
            _text(data, "reason", where, limits.max_text, null=False) or "",
        )
    if kind not in _KINDS:
        raise LimitError(f"{where}: field 'kind': expected 'pinned', 'unexpected' or 'log_error'")
    _known(data, _CERT_FIELDS, where)
    missing = [name for name in _CERT_FIELDS if name not in data]
    if missing:
        raise LimitError(f"{where}: field {missing[0]!r} is missing")
    index = data["index"]
    if type(index) is not int or not 0 <= index < 2**63:
        raise LimitError(f"{where}: field 'index': expected an integer 0..2^63-1")
    entry_type = data["entry_type"]
    if entry_type not in _ENTRY_TYPES:
        raise LimitError(f"{where}: field 'entry_type': expected 'x509' or 'precert'")
    tbs = data["tbs_sha256"]
    if tbs is not None and not (isinstance(tbs, str) and _HEX64.fullmatch(tbs)):
        raise LimitError(f"{where}: field 'tbs_sha256': expected 64 lowercase hex digits or null")
    return CTCertificate(
        kind=kind,
        hosts=_hosts(data, where, limits),
        names=_names(data, where, limits),
        spki_pin=_pin(data, where),
        tbs_sha256=tbs,
        log=_url(data, where, limits),
        index=index,
        entry_type=entry_type,
        not_before=_time(data, "not_before", where),
        not_after=_time(data, "not_after", where),
        issuer=_text(data, "issuer", where, limits.max_text, null=True),
    )


def _known(data: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    for name in data:
        if name not in fields:
            raise LimitError(f"{where}: unknown field {name[:64]!r}")


def _text(data: dict[str, Any], name: str, where: str, limit: int, *, null: bool) -> str | None:
    value = data.get(name)
    if value is None and null:
        return None
    if not isinstance(value, str) or (not value and not null):
        raise LimitError(f"{where}: field {name!r}: expected a string{' or null' if null else ''}")
    if len(value) > limit:
        raise LimitError(f"{where}: field {name!r}: longer than {limit} characters")
    return value


def _url(data: dict[str, Any], where: str, limits: CTLimits) -> str:
    value = _text(data, "log", where, limits.max_text, null=False) or ""
    if not value.startswith(("https://", "http://")):
        raise LimitError(f"{where}: field 'log': expected the log's http(s) URL")
    return value


def _hosts(data: dict[str, Any], where: str, limits: CTLimits) -> tuple[str, ...]:
    value = data["hosts"]
    if not isinstance(value, list) or not 1 <= len(value) <= limits.max_hosts:
        raise LimitError(f"{where}: field 'hosts': expected 1..{limits.max_hosts} policy keys")
    hosts: list[str] = []
    for i, host in enumerate(value):
        try:
            text = HostPattern.parse(host).text
        except HostError as exc:
            raise LimitError(f"{where}: field 'hosts'[{i}]: {exc}") from None
        if text not in hosts:
            hosts.append(text)
    return tuple(hosts)


def _names(data: dict[str, Any], where: str, limits: CTLimits) -> tuple[str, ...]:
    value = data["names"]
    if not isinstance(value, list) or len(value) > limits.max_names:
        raise LimitError(f"{where}: field 'names': expected at most {limits.max_names} names")
    for i, name in enumerate(value):
        # The certificate's own text: shown escaped, never interpreted.
        if not isinstance(name, str) or not 0 < len(name) <= 255:
            raise LimitError(f"{where}: field 'names'[{i}]: expected a DNS name (1..255 chars)")
    return tuple(value)


def _pin(data: dict[str, Any], where: str) -> str | None:
    value = data["spki_pin"]
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) > 256:
            raise ValueError(value)
        return str(Pin.parse(value))
    except (CertpinError, ValueError):
        raise LimitError(f"{where}: field 'spki_pin': expected a pin (sha256/…) or null") from None


def _time(data: dict[str, Any], name: str, where: str) -> str | None:
    value = data[name]
    if value is None:
        return None
    try:
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError(value)
        return iso(parse_iso(value))
    except (ValueError, OverflowError):
        raise LimitError(f"{where}: field {name!r}: expected an ISO 8601 time or null") from None
