"""The collector's OpenAPI 3.1 document, written by hand (the app is plain Starlette)."""

from __future__ import annotations

from typing import Any

from certpin._version import __version__
from certpin.collector.api import MAX_PAGE

__all__ = ["openapi_document"]

_ERROR = {
    "description": "Rejected; the body says why.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_PEM_LIST = {"type": "array", "items": {"type": "string"}, "maxItems": 10}
#: A report time: kept as text; one that reads as ISO 8601 must lie within the bounds.
_TIME = {
    "type": ["string", "null"],
    "maxLength": 64,
    "description": (
        "ISO 8601. A value that reads as a date or date-time must lie within "
        "1970-01-01T00:00:00Z .. 9999-12-31T00:00:00Z (400 otherwise)."
    ),
}
_REPORT = {
    "type": "object",
    "description": (
        "A pin-failure report: RFC 7469 §3, TrustKit iOS, TrustKit Android or certpin. "
        "Required fields depend on the dialect (see docs/collector.md)."
    ),
    "properties": {
        "date-time": _TIME,
        "hostname": {"type": "string"},
        "port": {"type": "integer", "minimum": 0, "maximum": 65535},
        "effective-expiration-date": _TIME,
        "include-subdomains": {"type": ["boolean", "null"]},
        "noted-hostname": {"type": ["string", "null"]},
        "served-certificate-chain": _PEM_LIST,
        "validated-certificate-chain": _PEM_LIST,
        "known-pins": {"type": "array", "items": {"type": "string"}},
        "app-bundle-id": {"type": "string"},
        "app-version": {"type": "string"},
        "app-platform": {"type": "string"},
        "app-platform-version": {"type": "string"},
        "app-vendor-id": {"type": "string"},
        "trustkit-version": {"type": "string"},
        "enforce-pinning": {"type": "boolean"},
        "validation-result": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
        "known-pins-expiration-date": _TIME,
        "certpin-version": {"type": "string"},
        "mode": {"type": "string", "enum": ["enforce", "report-only"]},
        "verdict-status": {"type": "string"},
        "verdict-reason": {"type": "string"},
        "report-id": {"type": "string"},
    },
    "required": ["hostname", "known-pins"],
}
_NULLABLE_TEXT = {"type": ["string", "null"]}
#: A record of ``certpin ct watch --json`` (docs/ct.md); a log_error has kind, log, reason.
_CT_RECORD = {
    "type": "object",
    "description": (
        "A `certpin ct watch --json` record, or its webhook body {event: ct_unexpected, time, "
        "certificate, message}. See docs/collector.md."
    ),
    "properties": {
        "kind": {"type": "string", "enum": ["pinned", "unexpected", "log_error"]},
        "hosts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "names": {"type": "array", "items": {"type": "string"}},
        "spki_pin": _NULLABLE_TEXT,
        "tbs_sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
        "log": {"type": "string"},
        "index": {"type": "integer", "minimum": 0},
        "entry_type": {"type": "string", "enum": ["x509", "precert"]},
        "not_before": _NULLABLE_TEXT,
        "not_after": _NULLABLE_TEXT,
        "issuer": _NULLABLE_TEXT,
        "reason": {"type": "string"},
    },
    "required": ["kind", "log"],
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}


def _page_params() -> list[dict[str, Any]]:
    """The cursor-paging parameters every list route takes (``limit``, ``cursor``)."""
    return [
        _query(
            "limit",
            "Page size (default 100).",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        ),
        _query("cursor", "next_cursor of the previous page.", {"type": "string"}),
    ]


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _read_route(summary: str, parameters: list[dict[str, Any]], ok: str) -> dict[str, Any]:
    """A GET route of the read API: Bearer token, JSON object, 400 on a bad parameter."""
    return {
        "get": {
            "summary": summary,
            "security": _BEARER,
            "parameters": parameters,
            "responses": {
                "200": {"description": ok, "content": _JSON_OBJECT},
                "400": _ERROR,
                "401": _ERROR,
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "certpin collector", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Report": _REPORT},
        },
        "paths": {
            "/reports": {
                "post": {
                    "summary": "Submit a pin-failure report (no authentication)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Report"}}
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Stored (durably committed).",
                            "content": _JSON_OBJECT,
                        },
                        "200": {
                            "description": "Already stored; duplicate counted.",
                            "content": _JSON_OBJECT,
                        },
                        "400": _ERROR,
                        "413": _ERROR,
                        "429": _ERROR,
                        "503": _ERROR,
                    },
                }
            },
            "/api/reports": _read_route(
                "List reports, newest first",
                [
                    _query("host", "Exact host name.", {"type": "string"}),
                    _query("since", "ISO 8601 receive time, inclusive.", {"type": "string"}),
                    _query("until", "ISO 8601 receive time, exclusive.", {"type": "string"}),
                    _query("app", "App bundle id.", {"type": "string"}),
                    _query("pin", "Unexpected key (sha256/…).", {"type": "string"}),
                    *_page_params(),
                ],
                "A page of reports.",
            ),
            "/api/summary": _read_route(
                "Aggregates by host, unexpected key, app and version",
                [_query("since", "ISO 8601.", {"type": "string"})],
                "Summary.",
            ),
            "/api/ct": {
                **_read_route(
                    "Certificates `certpin ct watch` sent, newest first, and the log errors",
                    [
                        _query("host", "Policy host (key).", {"type": "string"}),
                        _query(
                            "kind",
                            "pinned or unexpected.",
                            {"type": "string", "enum": ["pinned", "unexpected"]},
                        ),
                        *_page_params(),
                    ],
                    "A page of CT certificates.",
                ),
                "post": {
                    "summary": "Store `certpin ct watch` records (a record, NDJSON, or its "
                    "webhook body)",
                    "security": _BEARER,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _CT_RECORD},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "201": {"description": "Stored (committed).", "content": _JSON_OBJECT},
                        "200": {"description": "All duplicates.", "content": _JSON_OBJECT},
                        "400": _ERROR,
                        "401": _ERROR,
                        "413": _ERROR,
                        "503": _ERROR,
                    },
                },
            },
            "/": {
                "get": {
                    "summary": "The dashboard (HTML; Bearer token or the login form's session)",
                    "security": _BEARER,
                    "parameters": [
                        _query("days", "Window: 1, 7, 30 or 90.", {"type": "integer"}),
                        _query("before", "Report id: older reports.", {"type": "integer"}),
                    ],
                    "responses": {
                        "200": {
                            "description": "The page.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "303": {"description": "Not logged in: to /login."},
                        "400": {"description": "Bad query parameter."},
                        "401": {"description": "Wrong Bearer token."},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and database reachability",
                    "responses": {
                        "200": {"description": "Healthy.", "content": _JSON_OBJECT},
                        "503": _ERROR,
                    },
                }
            },
        },
    }
