"""The collector ASGI app: ``create_app(db_url, admin_token, …)``, served by uvicorn.

Routes (Starlette's router answers every request):
    POST /reports        ingest (open, bounded, rate-limited); 201 new, 200 duplicate
    GET  /api/reports    list (Bearer token)                      `certpin.collector.api`
    GET  /api/summary    aggregates (Bearer token)                `certpin.collector.api`
    POST /api/ct         ``certpin ct watch`` records (Bearer)    `certpin.collector.ct`
    GET  /api/ct         CT certificates per host (Bearer token)  `certpin.collector.api`
    GET  /healthz        liveness + database
    GET  /openapi.json   the hand-written OpenAPI document
    GET  /bundles/…      bundle files from ``bundles_dir`` (ETag, Cache-Control), if given
    GET  /, /login …     the dashboard                            `certpin.collector.dashboard`

Group commit: request handlers hand their normalised report to the writer and await a future;
the writer (a child process by default, or a thread: ``writer=``, see `certpin.collector._writer`)
commits everything waiting (up to ``max_batch``) in ONE transaction, and only then are the
futures resolved (on the event loop), so a 2xx always means "durably committed" and concurrent
requests share one fsync.

The app is `Collector.app`; ``app.state.collector`` is the `Collector`, so later features can
add routes on the same store and token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
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

from certpin.collector._bundles import BundleFiles
from certpin.collector._openapi import openapi_document
from certpin.collector._writer import Overloaded, ProcessWriter, ThreadWriter
from certpin.collector.alerts import AlertConfig, Alerter
from certpin.collector.api import ReadAPI, error
from certpin.collector.auth import Auth
from certpin.collector.ct import CTIngest
from certpin.collector.dashboard import Dashboard
from certpin.collector.dialects import normalize_report
from certpin.collector.limits import (
    IngestLimits,
    LimitError,
    TokenBucket,
    decode_body,
    parse_json,
    read_body,
)
from certpin.collector.store import Store

__all__ = ["Collector", "RateLimit", "create_app"]

log = logging.getLogger("certpin.collector")


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
        writer: str | None = None,
        ct_token: str | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        if writer is None:
            # The process writer's event loop watches its pipe, which no Windows loop can.
            writer = "thread" if sys.platform == "win32" else "process"
        if writer not in ("process", "thread"):
            raise ValueError(f"writer must be 'process' or 'thread', not {writer!r}")
        self.store = Store(db_url, schema=db_schema)
        self.auth = Auth(admin_token, ct_token=ct_token)
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
            *ReadAPI(self.store, self.auth).routes,
            *CTIngest(self.store, self.auth).routes,
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *Dashboard(self.store, self.auth).routes,
        ]
        if bundles_dir is not None:
            # Only bundle files: the rule of `certpin bundle serve` (certpin.dynamic.files).
            static = BundleFiles(directory=Path(bundles_dir), check_dir=True)
            cache = f"public, max-age={bundle_max_age}, must-revalidate"
            routes.append(Mount("/bundles", app=_with_header(static, b"cache-control", cache)))
        self.app = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            middleware=[Middleware(_SecurityHeaders)],
            exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
        )
        self.app.state.collector = self

    @property
    def admin_token(self) -> str:
        """The read API's Bearer token (given, ``$CERTPIN_ADMIN_TOKEN``, or random)."""
        return self.auth.token

    @property
    def token_generated(self) -> bool:
        """True when `admin_token` is a random one (``certpin serve`` prints it)."""
        return self.auth.generated

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
        """One report: limits, parse, validate, durable commit. Never raises: a bug is a
        logged 500 with a JSON body."""
        try:
            return await self._ingest(request)
        except Exception:
            log.exception("certpin collector: POST /reports failed")
            return error(500, "internal error")

    async def _ingest(self, request: Request) -> Response:
        source = request.client.host if request.client else None
        if self.limiter is not None:
            wait = self.limiter.take(source or "?")
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                return error(429, "rate limit exceeded for this address", {"Retry-After": retry})
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_bytes:
            return error(413, f"request body exceeds {self.limits.max_bytes} bytes")
        try:
            text = decode_body(await read_body(request.stream(), self.limits.max_bytes))
            report = normalize_report(parse_json(text, self.limits), self.limits, raw=text)
        except LimitError as exc:
            return error(exc.status, str(exc))
        except ClientDisconnect:
            return error(400, "client disconnected before the body was complete")
        try:
            outcome = await self.writer.submit(report, source)
        except Overloaded:
            return error(503, "collector overloaded; retry later", {"Retry-After": "1"})
        except Exception:
            return error(503, "storage unavailable; retry later", {"Retry-After": "5"})
        body = {"id": outcome.id, "report_key": report.report_key, "duplicate": not outcome.new}
        content = json.dumps(body, separators=(",", ":"))
        return Response(content, 201 if outcome.new else 200, media_type="application/json")

    # -- health and the API document --------------------------------------------------------------

    async def healthz(self, _request: Request) -> Response:
        try:
            await asyncio.to_thread(self.store.ping)
        except Exception as exc:
            return error(503, f"database unavailable: {type(exc).__name__}")
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
            ``alerts``, ``bundles_dir``, ``max_batch``, ``ct_token`` — the token that may only
            post CT records, None = ``$CERTPIN_CT_TOKEN`` or none…).
    """
    return Collector(db_url, admin_token, **options).app


async def _http_error(_request: Request, exc: HTTPException) -> Response:
    return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


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
