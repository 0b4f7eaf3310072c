"""``POST /api/ct``: the collector's ingest of ``certpin ct watch`` records (Bearer token: the
CT ingest token, which may do nothing else, or the admin token; `certpin.collector.auth`).

The body is one record of ``ct watch --json``, NDJSON of them (``ct watch --json | curl
--data-binary @-``), or the ``--webhook`` body of ``ct watch`` / ``ct hook`` (so ``--webhook
https://collector/api/ct --webhook-token-file F`` needs nothing else); `ct_records` validates
it field by field. The records are committed in one transaction before the answer (a 2xx means
durably stored), idempotently (`certpin.collector.store.ct`): a record sent again, or the final
certificate of a stored precertificate, is counted as a duplicate, never stored twice.

CT records are few (one per covered certificate, not per connection), so they do not go
through the reports' group-commit writer; ``GET /api/ct`` (`certpin.collector.api`) and the
dashboard's ``/ct`` page read them back.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from certpin.collector.api import error
from certpin.collector.auth import Auth
from certpin.collector.ct_records import CTCertificate, CTLimits, CTLogError, parse_ct_body
from certpin.collector.limits import LimitError, decode_body, read_body
from certpin.collector.store import Store

__all__ = ["CTIngest"]

log = logging.getLogger("certpin.collector")


class CTIngest:
    """The ``POST /api/ct`` route over a store and the admin token's `Auth`."""

    def __init__(self, store: Store, auth: Auth, limits: CTLimits | None = None) -> None:
        self.store = store
        self.auth = auth
        self.limits = limits or CTLimits()
        self.routes = [Route("/api/ct", self.post, methods=["POST"])]

    async def post(self, request: Request) -> Response:
        """Never raises: a bug is a logged 500 with a JSON body."""
        try:
            return await self._ingest(request)
        except Exception:
            log.exception("certpin collector: POST /api/ct failed")
            return error(500, "internal error")

    async def _ingest(self, request: Request) -> Response:
        if not self.auth.may_send_ct(request):
            return error(
                401,
                "missing or wrong token: send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": 'Bearer realm="certpin"'},
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_bytes:
            return error(413, f"request body exceeds {self.limits.max_bytes} bytes")
        try:
            text = decode_body(await read_body(request.stream(), self.limits.max_bytes))
            records = parse_ct_body(text, self.limits)
        except LimitError as exc:
            return error(exc.status, str(exc))
        except ClientDisconnect:
            return error(400, "client disconnected before the body was complete")
        certificates = [r for r in records if isinstance(r, CTCertificate)]
        log_errors = [r for r in records if isinstance(r, CTLogError)]
        source = request.client.host if request.client else None
        try:
            new, duplicates = await asyncio.to_thread(
                self.store.insert_ct, certificates, log_errors, source
            )
        except Exception:
            log.exception("certpin collector: storing CT records failed")
            return error(503, "storage unavailable; retry later", {"Retry-After": "5"})
        body = {"records": len(records), "stored": new, "duplicates": duplicates}
        content = json.dumps(body, separators=(",", ":"))
        return Response(content, 201 if new else 200, media_type="application/json")
