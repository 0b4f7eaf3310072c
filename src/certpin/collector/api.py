"""The read API (Bearer token): ``GET /api/reports`` (filtered, newest first, cursor pages),
``GET /api/summary`` (aggregates) and ``GET /api/ct`` (the certificates ``certpin ct watch``
sent, newest first; `certpin.collector.ct`). Query parameters are validated here; unknown or
repeated ones are 400."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certpin._errors import CertpinError
from certpin.collector.auth import Auth
from certpin.collector.limits import LimitError
from certpin.collector.store import Store
from certpin.core.hosts import HostError, HostPattern, normalize_host
from certpin.core.pins import Pin
from certpin.core.times import micros

__all__ = ["MAX_PAGE", "ReadAPI", "error"]

MAX_PAGE = 1000


class ReadAPI:
    """The read API's routes over a store and the admin token's `Auth`."""

    def __init__(self, store: Store, auth: Auth) -> None:
        self.store = store
        self.auth = auth
        self.routes = [
            Route("/api/reports", self.list_reports, methods=["GET"]),
            Route("/api/summary", self.summary, methods=["GET"]),
            Route("/api/ct", self.list_ct, methods=["GET"]),
        ]

    async def list_reports(self, request: Request) -> Response:
        if not self.auth.bearer(request):
            return _unauthorized()
        try:
            args = _Query(request, ("host", "since", "until", "app", "pin", "limit", "cursor"))
            limit = args.integer("limit", 1, MAX_PAGE, default=100)
            filters: dict[str, Any] = {
                "host": args.host("host"),
                "since_us": args.time("since"),
                "until_us": args.time("until"),
                "app": args.text("app"),
                "pin": args.pin("pin"),
                "before_id": args.cursor("cursor"),
            }
        except LimitError as exc:
            return error(400, str(exc))
        rows = await asyncio.to_thread(lambda: self.store.query_reports(limit=limit, **filters))
        cursor = _encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
        return JSONResponse({"reports": rows, "next_cursor": cursor})

    async def summary(self, request: Request) -> Response:
        if not self.auth.bearer(request):
            return _unauthorized()
        try:
            since = _Query(request, ("since",)).time("since")
        except LimitError as exc:
            return error(400, str(exc))
        return JSONResponse(await asyncio.to_thread(self.store.summary, since))

    async def list_ct(self, request: Request) -> Response:
        if not self.auth.bearer(request):
            return _unauthorized()
        try:
            args = _Query(request, ("host", "kind", "limit", "cursor"))
            limit = args.integer("limit", 1, MAX_PAGE, default=100)
            kind = args.text("kind")
            if kind not in (None, "pinned", "unexpected"):
                raise LimitError("query parameter 'kind': 'pinned' or 'unexpected'")
            host = args.text("host")
            if host is not None:
                try:
                    host = HostPattern.parse(host).text
                except HostError as exc:
                    raise LimitError(f"query parameter 'host': {exc}") from None
            before = args.cursor("cursor")
        except LimitError as exc:
            return error(400, str(exc))

        def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            rows = self.store.query_ct(host=host, kind=kind, before_id=before, limit=limit)
            return rows, self.store.ct_log_errors() if before is None else []

        rows, log_errors = await asyncio.to_thread(read)
        cursor = _encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
        return JSONResponse({"certificates": rows, "log_errors": log_errors, "next_cursor": cursor})


def error(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error answer, ``{"error": reason}`` (the collector's every 4xx and 5xx)."""
    body = json.dumps({"error": reason}, separators=(",", ":"))
    return Response(body, status, headers, "application/json")


def _unauthorized() -> Response:
    return error(
        401,
        "missing or wrong token: send 'Authorization: Bearer <token>'",
        {"WWW-Authenticate": 'Bearer realm="certpin"'},
    )


class _Query:
    """Validated query parameters; unknown or repeated parameters are errors."""

    def __init__(self, request: Request, known: tuple[str, ...]) -> None:
        self.params = request.query_params
        for name in self.params:
            if name not in known:
                raise LimitError(f"unknown query parameter {name[:64]!r}")
            if len(self.params.getlist(name)) > 1:
                raise LimitError(f"query parameter {name!r} given more than once")

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is not None and len(value) > 256:
            raise LimitError(f"query parameter {name!r}: longer than 256 characters")
        return value

    def integer(self, name: str, low: int, high: int, default: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
            raise LimitError(f"query parameter {name!r}: an integer {low}..{high}")
        return int(value)

    def host(self, name: str) -> str | None:
        value = self.text(name)
        try:
            return None if value is None else normalize_host(value)
        except HostError as exc:
            raise LimitError(f"query parameter {name!r}: {exc}") from None

    def time(self, name: str) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise LimitError(f"query parameter {name!r}: not an ISO 8601 date-time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return micros(when)  # exact, and defined for every datetime (no float, no overflow)

    def pin(self, name: str) -> str | None:
        value = self.text(name)
        try:
            return None if value is None else str(Pin.parse(value))
        except CertpinError as exc:
            raise LimitError(f"query parameter {name!r}: {exc}") from None

    def cursor(self, name: str) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(value.encode("ascii") + b"=="))
            before = data["before"]
            if isinstance(before, bool) or not isinstance(before, int) or before < 1:
                raise ValueError(before)
        except (ValueError, TypeError, KeyError, binascii.Error, UnicodeError):
            raise LimitError("query parameter 'cursor': not a cursor from this API") from None
        return before


def _encode_cursor(last_id: int) -> str:
    raw = json.dumps({"before": last_id}, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
