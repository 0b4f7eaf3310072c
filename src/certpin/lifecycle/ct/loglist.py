"""The Chrome/Apple v3 ``log_list.json``: which logs to watch, where, and with which key.

Both kinds of log in the schema are read (https://www.gstatic.com/ct/log_list/v3/):

- ``operators[].logs[]``: RFC 6962 logs, read through ``url`` (``ct/v1/get-sth`` …);
- ``operators[].tiled_logs[]``: static-ct-api logs, read through ``monitoring_url``; the
  checkpoint origin is ``submission_url`` without scheme and trailing slash (static-ct-api).

Each log's ``key`` (SubjectPublicKeyInfo, base64) is the only trust anchor: ``log_id`` must be its
SHA-256. The file is bounded like a policy: at most `MAX_LOG_LIST_SIZE` bytes of UTF-8 JSON, 32
levels deep, no repeated key, at most `MAX_LOGS` logs. Every problem is a `LogListError` naming
the file (or URL) and the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from certpin._io.http import is_loopback
from certpin.core.toml import DocumentError, parse_json, read_document
from certpin.lifecycle.ct.errors import LogListError
from certpin.lifecycle.ct.sth import LogKey

__all__ = [
    "MAX_LOGS",
    "MAX_LOG_LIST_SIZE",
    "SKIPPED_STATES",
    "LogInfo",
    "load_log_list",
    "parse_log_list",
]

#: the largest log list read (Chrome's is about 100 kB).
MAX_LOG_LIST_SIZE = 16 * 1024 * 1024
#: the most logs one list may hold.
MAX_LOGS = 10_000
#: log states that are not watched: not yet accepted, refused, or switched off for good.
SKIPPED_STATES = frozenset({"pending", "rejected", "retired"})
_STATES = frozenset({"pending", "qualified", "usable", "readonly", "retired", "rejected"})

LogKind = Literal["rfc6962", "tiled"]


@dataclass(frozen=True)
class LogInfo:
    """One log of the list.

    Attributes:
        kind: ``"rfc6962"`` or ``"tiled"``.
        url: where it is read, ending in ``/`` (``url`` or ``monitoring_url``); records name it.
        key: the log's key and LogID.
        description: the list's description ("" if none).
        operator: the operator's name ("" if none).
        state: the list's state name, or None when the list gives none.
        origin: the checkpoint origin of a tiled log ("" for RFC 6962 logs).
    """

    kind: LogKind
    url: str
    key: LogKey
    description: str = ""
    operator: str = ""
    state: str | None = None
    origin: str = ""

    @property
    def watched(self) -> bool:
        return self.state not in SKIPPED_STATES


def load_log_list(source: str, *, fetch: Any = None) -> list[LogInfo]:
    """Read the log list from a file or an ``https://`` URL and return every log in it.

    `fetch(url, limit) -> bytes` fetches a URL (the watcher's bounded HTTP client); it raises
    `certpin.lifecycle.ct.errors.LogError`, reported here as a `LogListError`.
    """
    if source.startswith(("https://", "http://")):
        if source.startswith("http://") and not is_loopback(source):
            # The list holds the logs' keys, the only trust anchors of the whole watch.
            raise LogListError(
                f"{source}: the log list holds the logs' keys: fetch it over https "
                "(plain http is accepted for loopback hosts only)"
            )
        if fetch is None:  # Defensive: the CLI always passes its client
            raise LogListError(f"{source}: cannot fetch a log list without an HTTP client")
        from certpin.lifecycle.ct.errors import LogError

        try:
            body: bytes = fetch(source, MAX_LOG_LIST_SIZE)
        except LogError as exc:
            raise LogListError(f"{source}: cannot fetch the log list: {exc}") from None
        try:
            text = body.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise LogListError(f"{source}: the log list is not UTF-8") from None
    else:
        try:
            text = read_document(source, MAX_LOG_LIST_SIZE)
        except OSError as exc:
            raise LogListError(
                f"{source}: cannot read the log list: {exc.strerror or exc}"
            ) from None
        except DocumentError as exc:
            raise LogListError(f"{source}: {exc.described('the log list')}") from None
    return parse_log_list(text, os.fspath(source))


def parse_log_list(text: str, source: str) -> list[LogInfo]:
    """Parse the text of a v3 log list (see the module docstring)."""
    try:
        data = parse_json(text)
    except DocumentError as exc:
        raise LogListError(
            f"{source}: {exc.described('not JSON:' if exc.syntax else '')}"
        ) from None
    if not isinstance(data, dict):
        raise LogListError(f"{source}: the log list is not a JSON object")
    operators = data.get("operators")
    if not isinstance(operators, list):
        raise LogListError(f"{source}: operators: expected a list (a v3 log list)")
    logs: list[LogInfo] = []
    seen: dict[bytes, str] = {}
    for i, operator in enumerate(operators):
        where = f"operators[{i}]"
        if not isinstance(operator, dict):
            raise LogListError(f"{source}: {where}: expected an object")
        name = operator.get("name", "")
        if not isinstance(name, str):
            raise LogListError(f"{source}: {where}.name: expected a string")
        for field, kind in (("logs", "rfc6962"), ("tiled_logs", "tiled")):
            entries = operator.get(field, [])
            if not isinstance(entries, list):
                raise LogListError(f"{source}: {where}.{field}: expected a list")
            for j, entry in enumerate(entries):
                at = f"{where}.{field}[{j}]"
                log = _log(entry, kind, name, source, at)  # type: ignore[arg-type]
                if log.key.log_id in seen:
                    raise LogListError(f"{source}: {at}: the same log_id as {seen[log.key.log_id]}")
                seen[log.key.log_id] = at
                logs.append(log)
                if len(logs) > MAX_LOGS:
                    raise LogListError(f"{source}: more than {MAX_LOGS} logs")
    return logs


def _str(entry: Mapping[str, Any], name: str, source: str, at: str, default: str = "") -> str:
    value = entry.get(name, default)
    if not isinstance(value, str):
        raise LogListError(f"{source}: {at}.{name}: expected a string")
    return value


def _b64(entry: Mapping[str, Any], name: str, source: str, at: str) -> bytes:
    value = entry.get(name)
    if not isinstance(value, str):
        raise LogListError(f"{source}: {at}.{name}: missing (expected base64)")
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise LogListError(f"{source}: {at}.{name}: not base64") from None


def _url(entry: Mapping[str, Any], name: str, source: str, at: str) -> str:
    value = _str(entry, name, source, at)
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("https", "http") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or parts.query or parts.fragment:
        raise LogListError(f"{source}: {at}.{name}: {json.dumps(value)[:200]} is not an https URL")
    return value if value.endswith("/") else value + "/"


def _log(entry: object, kind: LogKind, operator: str, source: str, at: str) -> LogInfo:
    if not isinstance(entry, dict):
        raise LogListError(f"{source}: {at}: expected an object")
    spki = _b64(entry, "key", source, at)
    try:
        key = load_der_public_key(spki)
    except (ValueError, TypeError):
        raise LogListError(f"{source}: {at}.key: not a DER SubjectPublicKeyInfo") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise LogListError(f"{source}: {at}.key: an ECDSA key must be on P-256 (RFC 6962)")
    elif not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise LogListError(f"{source}: {at}.key: not an ECDSA P-256, RSA or Ed25519 key")
    log_id = hashlib.sha256(spki).digest()
    if _b64(entry, "log_id", source, at) != log_id:
        raise LogListError(f"{source}: {at}.log_id: not the SHA-256 of the log's key")
    state = entry.get("state")
    state_name: str | None = None
    if state is not None:
        if not isinstance(state, dict) or len(state) != 1 or not _STATES.issuperset(state):
            raise LogListError(
                f"{source}: {at}.state: expected one of {', '.join(sorted(_STATES))}"
            )
        state_name = next(iter(state))
    description = _str(entry, "description", source, at)
    log_key = LogKey(spki, log_id, key)
    if kind == "rfc6962":
        url = _url(entry, "url", source, at)
        return LogInfo(kind, url, log_key, description, operator, state_name)
    url = _url(entry, "monitoring_url", source, at)
    submission = _url(entry, "submission_url", source, at)
    # static-ct-api: the origin is the submission prefix as a schema-less URL, no trailing slash.
    origin = submission.split("://", 1)[1].rstrip("/")
    return LogInfo(kind, url, log_key, description, operator, state_name, origin)
