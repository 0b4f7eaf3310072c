"""The collector ASGI app: ``create_app(db_url, admin_token, …)``, served by uvicorn.

Routes:
    POST /reports        ingest (open, bounded, rate-limited); 201 new, 200 duplicate
    GET  /api/reports    list (Bearer token)
    GET  /api/summary    aggregates (Bearer token)
    GET  /healthz        liveness + database
    GET  /openapi.json   the hand-written OpenAPI document
    GET  /bundles/…      bundle files from ``bundles_dir`` (ETag, Cache-Control), if given
    GET  /, /login …     the dashboard (`certpin.collector.dashboard`)

Group commit: request handlers hand their normalised report to the writer and await a future;
the writer (a child process by default, or a thread: ``writer=``, see `certpin.collector._writer`)
commits everything waiting (up to ``max_batch``) in ONE transaction, and only then are the
futures resolved (on the event loop), so a 2xx always means "durably committed" and concurrent
requests share one fsync.

The app is `Collector.app`; ``app.state.collector`` is the `Collector`, so later features (the
dashboard) can add routes on the same store and token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hmac
import json
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certpin._errors import CertpinError
from certpin.collector._bundles import BundleFiles
from certpin.collector._openapi import openapi_document
from certpin.collector._times import micros
from certpin.collector._writer import Overloaded, ProcessWriter, ThreadWriter
from certpin.collector.alerts import AlertConfig, Alerter
from certpin.collector.dashboard import Dashboard
from certpin.collector.db import Store
from certpin.collector.dialects import normalize_report
from certpin.collector.limits import (
    IngestLimits,
    LimitError,
    TokenBucket,
    decode_body,
    parse_json,
    read_body,
)
from certpin.core.hosts import HostError, normalize_host
from certpin.core.pins import Pin

__all__ = ["Collector", "RateLimit", "create_app"]

log = logging.getLogger("certpin.collector")

TOKEN_ENV = "CERTPIN_ADMIN_TOKEN"
MAX_PAGE = 1000


@dataclass(frozen=True)
class RateLimit:
    """Per-client-address token bucket for ``POST /reports``: `rate`/s, bursts of `burst`."""

    rate: float = 20.0
    burst: float = 200.0


class Collector:
    """The collector's state: store, token, limits, writer; ``.app`` is the ASGI app."""

    def __init__(
        self,
        db_url: str | None = None,
        admin_token: str | None = None,
        *,
        db_schema: str | None = None,
        limits: IngestLimits | None = None,
        rate_limit: RateLimit | None = RateLimit(),
        alerts: AlertConfig | None = None,
        bundles_dir: str | os.PathLike[str] | None = None,
        bundle_max_age: int = 300,
        max_batch: int = 256,
        max_queue: int = 10_000,
        writer: str = "process",
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        if writer not in ("process", "thread"):
            raise ValueError(f"writer must be 'process' or 'thread', not {writer!r}")
        self.store = Store(db_url, schema=db_schema)
        token = admin_token or os.environ.get(TOKEN_ENV) or None
        self.token_generated = token is None
        self.admin_token: str = token or secrets.token_urlsafe(32)
        self.limits = limits or IngestLimits()
        self.limiter = (
            None if rate_limit is None else TokenBucket(rate_limit.rate, rate_limit.burst)
        )
        self.alerter = Alerter(self.store, alerts or AlertConfig())
        kind = ProcessWriter if writer == "process" else ThreadWriter
        self.writer: ProcessWriter | ThreadWriter = kind(
            self.store, self.alerter, max_batch, max_queue
        )
        routes: list[Route | Mount] = [
            Route("/reports", self.post_report, methods=["POST"]),
            Route("/api/reports", self.list_reports, methods=["GET"]),
            Route("/api/summary", self.summary, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *Dashboard(self).routes,
        ]
        if bundles_dir is not None:
            # Only bundle files: the rule of `certpin bundle serve` (certpin.dynamic.files).
            static = BundleFiles(directory=Path(bundles_dir), check_dir=True)
            cache = f"public, max-age={bundle_max_age}, must-revalidate"
            routes.append(Mount("/bundles", app=_with_header(static, b"cache-control", cache)))
        self.app = _App(
            routes=routes,
            lifespan=self._lifespan,
            middleware=[Middleware(_SecurityHeaders)],
            exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
        )
        self.app.state.collector = self
        self.app.collector = self
        self.app._own_middleware = len(self.app.user_middleware)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(self.store.migrate)
        await self.writer.start()
        try:
            yield
        finally:
            # uvicorn has finished the in-flight requests (and so their commits) by now.
            await self.writer.stop()
            await self.alerter.drain()
            self.store.close()

    # -- ingest -----------------------------------------------------------------------------------

    async def post_report(self, request: Request) -> Response:
        # The routed path (e.g. under a root_path); `_App` answers plain POST /reports itself.
        length = request.headers.get("content-length")
        status, body, headers = await self._ingest(request.client, length, request.receive)
        return Response(body, status, dict(headers), "application/json")

    async def ingest_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /reports`` as a plain ASGI app: the same `_ingest`, without the router,
        middleware and Request/Response objects around it (they cost as much as the report's
        own validation). Sends the security headers `_SecurityHeaders` would add."""
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value.decode("latin-1")
                break
        status, body, extra = await self._ingest(scope.get("client"), length, receive)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra),
            *_NO_STORE,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _ingest(
        self, client: Any, length: str | None, receive: Receive
    ) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        """One report: limits, parse, validate, durable commit → (status, JSON body, headers).

        `client` is the ASGI ``(host, port)`` (or Starlette's Address), `length` the
        Content-Length header, `receive` the ASGI receive callable. Never raises: a bug is a
        logged 500 with a JSON body, on both the direct and the routed path.
        """
        try:
            return await self._ingest_one(client, length, receive)
        except Exception:
            log.exception("certpin collector: POST /reports failed")
            return 500, b'{"error":"internal error"}', ()

    async def _ingest_one(
        self, client: Any, length: str | None, receive: Receive
    ) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        source = client[0] if client else None
        if self.limiter is not None:
            wait = self.limiter.take(source or "?")
            if wait > 0:
                return _failure(
                    429,
                    "rate limit exceeded for this address",
                    (("Retry-After", str(max(1, math.ceil(wait)))),),
                )
        if length is not None and length.isdigit() and int(length) > self.limits.max_bytes:
            return _failure(413, f"request body exceeds {self.limits.max_bytes} bytes")
        try:
            text = decode_body(await read_body(_chunks(receive), self.limits.max_bytes))
            report = normalize_report(parse_json(text, self.limits), self.limits, raw=text)
        except LimitError as exc:
            return _failure(exc.status, str(exc))
        except ClientDisconnect:
            return _failure(400, "client disconnected before the body was complete")
        try:
            outcome = await self.writer.submit(report, source)
        except Overloaded:
            return _failure(503, "collector overloaded; retry later", (("Retry-After", "1"),))
        except Exception:
            return _failure(503, "storage unavailable; retry later", (("Retry-After", "5"),))
        body = b'{"id":%d,"report_key":%s,"duplicate":%s}' % (
            outcome.id,
            json.dumps(report.report_key).encode("ascii"),
            b"false" if outcome.new else b"true",
        )
        return (201 if outcome.new else 200), body, ()

    # -- read API ---------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # hmac.compare_digest: the token comparison must not leak its prefix through timing.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("utf-8"), self.admin_token.encode("utf-8")
        )

    async def list_reports(self, request: Request) -> Response:
        if not self._authorized(request):
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
            return _error(400, str(exc))
        rows = await asyncio.to_thread(lambda: self.store.query_reports(limit=limit, **filters))
        cursor = _encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
        return JSONResponse({"reports": rows, "next_cursor": cursor})

    async def summary(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        try:
            since = _Query(request, ("since",)).time("since")
        except LimitError as exc:
            return _error(400, str(exc))
        return JSONResponse(await asyncio.to_thread(self.store.summary, since))

    async def healthz(self, _request: Request) -> Response:
        try:
            await asyncio.to_thread(self.store.ping)
        except Exception as exc:
            return _error(503, f"database unavailable: {type(exc).__name__}")
        return JSONResponse({"status": "ok", "database": self.store.kind})

    async def openapi(self, _request: Request) -> Response:
        return JSONResponse(openapi_document())


def create_app(
    db_url: str | None = None, admin_token: str | None = None, **options: Any
) -> Starlette:
    """Build the collector's ASGI app (see `Collector` for the options).

    Args:
        db_url: ``postgresql://…``, ``sqlite:///path`` or a file path; None = SQLite file
            ``./certpin-data/certpin.sqlite3``.
        admin_token: the read API's Bearer token; None = ``$CERTPIN_ADMIN_TOKEN``, else a
            random one (``app.state.collector.admin_token``; ``certpin serve`` prints it).
        options: keyword arguments of `Collector` (``db_schema``, ``limits``, ``rate_limit``,
            ``alerts``, ``bundles_dir``, ``max_batch``…).
    """
    return Collector(db_url, admin_token, **options).app


# -- helpers ---------------------------------------------------------------------------------------


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


_NO_STORE = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))


def _failure(
    status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    return status, json.dumps({"error": reason}, separators=(",", ":")).encode("ascii"), headers


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    """A request body's chunks from ASGI ``http.request`` messages."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class _App(Starlette):
    """The collector's Starlette app; plain ``POST /reports`` skips the router and middleware
    (`Collector.ingest_asgi`). Everything else, lifespan included, is Starlette's. Middleware
    added later (``app.add_middleware``) turns the shortcut off, so it sees every request."""

    collector: Collector
    _own_middleware = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/reports"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and len(self.user_middleware) == self._own_middleware
        ):
            await self.collector.ingest_asgi(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    _, body, _ = _failure(status, reason)
    return Response(body, status, headers, "application/json")


def _unauthorized() -> Response:
    return _error(
        401,
        "missing or wrong token: send 'Authorization: Bearer <token>'",
        {"WWW-Authenticate": 'Bearer realm="certpin"'},
    )


async def _http_error(_request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


class _SecurityHeaders:
    """nosniff everywhere; API answers are never cached. No CORS headers: browsers on other
    origins cannot read the API (CORS is off unless someone wraps the app deliberately)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith("/bundles/")

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, wrapped)


def _with_header(app: ASGIApp, name: bytes, value: str) -> ASGIApp:
    async def wrapped_app(scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") in (200, 304):
                headers = [*message.get("headers", []), (name, value.encode("latin-1"))]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, wrapped)

    return wrapped_app
