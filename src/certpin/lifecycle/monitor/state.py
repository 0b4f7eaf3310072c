"""The endpoint monitor's memory and voice: the state file and the webhook.

`save_state`/`load_state` keep one `Snapshot` per endpoint between runs (the change detection of
``certpin monitor --state``); `Webhook` POSTs alert events (docs/monitor.md has the body). Both
are used by `certpin.lifecycle.monitor.check.Monitor`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any, Literal

from certpin._errors import ConfigurationError
from certpin._io import http
from certpin._io.atomic import atomic_write
from certpin._io.http import is_loopback
from certpin.core.policy import Policy
from certpin.core.times import iso, parse_iso
from certpin.core.toml import DocumentError, parse_json, read_document, shown

__all__ = [
    "MAX_STATE_SIZE",
    "STATE_FORMAT",
    "STATE_VERSION",
    "STATUSES",
    "WEBHOOK_BUDGET",
    "WEBHOOK_TIMEOUT",
    "WEBHOOK_WORKERS",
    "Snapshot",
    "StateError",
    "Status",
    "Webhook",
    "WebhookError",
    "load_state",
    "save_state",
]

log = logging.getLogger("certpin.monitor")

#: seconds allowed for one webhook POST (connect, TLS, request and response).
WEBHOOK_TIMEOUT = 10.0
#: webhook POSTs in flight at once.
WEBHOOK_WORKERS = 4
#: seconds a round may spend delivering its alerts; what is left is dropped (and logged).
WEBHOOK_BUDGET = 15.0
STATE_FORMAT = "certpin-monitor-state"
STATE_VERSION = 1
#: the largest state file `load_state` reads: about 45 000 endpoints (docs/monitor.md).
MAX_STATE_SIZE = 16 * 1024 * 1024

Status = Literal["ok", "warn", "mismatch", "denied", "revoked", "error"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "mismatch", "denied", "revoked", "error")


class StateError(ConfigurationError):
    """The state file exists but cannot be read or is not a monitor state file."""


class WebhookError(ConfigurationError):
    """The webhook URL is not acceptable (scheme, host)."""


@dataclass(frozen=True)
class Snapshot:
    """What is remembered of an endpoint between runs (the state file's entries).

    Two snapshots differ (an alert) when their status or their chain pins differ; the verdict
    and the time are informational.
    """

    status: Status
    verdict: str | None
    leaf_pin: str | None
    chain_pins: tuple[str, ...]
    checked_at: dt.datetime

    def differs(self, other: Snapshot) -> bool:
        return self.status != other.status or self.chain_pins != other.chain_pins

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "verdict": self.verdict,
            "leaf_pin": self.leaf_pin,
            "chain_pins": list(self.chain_pins),
            "checked_at": iso(self.checked_at),
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> Snapshot:
        if not isinstance(data, dict):
            raise StateError(f"{where}: expected an object")
        status = data.get("status")
        if status not in STATUSES:
            raise StateError(f"{where}.status: expected one of {', '.join(STATUSES)}")
        pins = data.get("chain_pins")
        if not isinstance(pins, list) or not all(isinstance(p, str) for p in pins):
            raise StateError(f"{where}.chain_pins: expected a list of pin strings")
        leaf, verdict_ = data.get("leaf_pin"), data.get("verdict")
        if not (leaf is None or isinstance(leaf, str)):
            raise StateError(f"{where}.leaf_pin: expected a string or null")
        if not (verdict_ is None or isinstance(verdict_, str)):
            raise StateError(f"{where}.verdict: expected a string or null")
        checked_at = data.get("checked_at")
        try:
            if not isinstance(checked_at, str):
                raise ValueError(checked_at)
            checked = parse_iso(checked_at)
        except (ValueError, OverflowError):  # Overflow: 0001-01-01T00:00:00+01:00 is year 0 UTC
            raise StateError(f"{where}.checked_at: expected an ISO 8601 time") from None
        return cls(status, verdict_, leaf, tuple(pins), checked)


# -- state ----------------------------------------------------------------------------------


def load_state(path: str | os.PathLike[str]) -> dict[str, Snapshot]:
    """Read a state file; a missing file is an empty state.

    The file is bounded like a policy file (docs/monitor.md, "State file"): at most
    `MAX_STATE_SIZE` bytes of UTF-8 JSON, nested at most 32 levels deep, numbers of at most 100
    characters, no repeated key; reading it takes time linear in its size.

    Raises:
        StateError: unreadable, over a limit, not JSON, or not a monitor state file (the
            message names the file, and the line and column or the field).
    """
    name = os.fspath(path)
    try:
        text = read_document(path, MAX_STATE_SIZE)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateError(f"{name}: cannot read state file: {exc.strerror or exc}") from None
    except DocumentError as exc:  # too large, or not UTF-8
        raise StateError(f"{name}: {exc.described('the state file')}") from None
    try:
        data = parse_json(text)
    except DocumentError as exc:
        raise StateError(f"{name}: {exc.described('not JSON:' if exc.syntax else '')}") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise StateError(f"{name}: not a certpin monitor state file (no format={STATE_FORMAT!r})")
    version = data.get("version")
    if type(version) is not int or version != STATE_VERSION:
        raise StateError(f"{name}: unsupported state version {shown(version)}")
    endpoints = data.get("endpoints")
    if not isinstance(endpoints, dict):
        raise StateError(f"{name}: endpoints: expected an object")
    return {
        key: Snapshot.from_json(value, f"{name}: endpoints.{json.dumps(key)}")
        for key, value in endpoints.items()
    }


def save_state(
    path: str | os.PathLike[str], state: Mapping[str, Snapshot], now: dt.datetime | None = None
) -> None:
    """Write the state atomically (`certpin._io.atomic.atomic_write`: temporary file, fsync,
    rename).

    A crash or Ctrl-C leaves either the old file or the new one, never half of one.
    """
    document = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "updated": iso(now or dt.datetime.now(dt.UTC)),
        "endpoints": {key: snap.to_json() for key, snap in sorted(state.items())},
    }
    # 0600: the state lists the endpoints watched and their pins; it is nobody else's business.
    atomic_write(Path(path), (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)


# -- webhook --------------------------------------------------------------------------------


#: A Bearer token (RFC 6750 b64token, and what header values can carry safely): visible ASCII.
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")


@dataclass
class Webhook:
    """POSTs alert events as JSON.

    https URLs are verified like the endpoints (``cafile`` or the system store) *and pinned* if
    the policy has a rule for the webhook's host (`certpin.create_default_context`); plain http
    is accepted for loopback hosts only. Redirects are not followed. A failed delivery is logged
    (logger ``certpin.monitor``) and counted, never raised. `post_all` bounds a round's
    deliveries: `workers` at a time, `round_budget` seconds in all. `token`, if given, is sent as
    ``Authorization: Bearer <token>`` (the collector's ``POST /api/ct`` wants it); it never
    appears in the repr or the logs.
    """

    url: str
    policy: Policy = field(default_factory=lambda: Policy({}))
    cafile: str | None = None
    timeout: float = WEBHOOK_TIMEOUT
    workers: int = WEBHOOK_WORKERS
    round_budget: float = WEBHOOK_BUDGET
    token: str | None = field(default=None, repr=False)
    delivered: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self._count = threading.Lock()
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname
        if parts.scheme not in ("https", "http") or not host:
            raise WebhookError(f"--webhook {self.url!r}: expected an https:// URL")
        if parts.scheme == "http" and not is_loopback(self.url):
            raise WebhookError(
                f"--webhook {self.url!r}: plain http is only allowed to localhost/loopback; "
                "use https (the alerts describe your endpoints and must not be forged)"
            )
        if self.token is not None and not _TOKEN.fullmatch(self.token):
            raise WebhookError(
                "the webhook token must be 1..4096 visible ASCII characters (no spaces)"
            )
        self._context: SSLContext | None = None
        if parts.scheme == "https":
            from certpin.tls.context import create_default_context

            self._context = create_default_context(self.policy, cafile=self.cafile)

    def post(self, event: Mapping[str, Any], timeout: float | None = None) -> bool:
        """Deliver one event (blocking, bounded by `timeout`, default ``self.timeout``); True if
        the server took it."""
        headers = {"Content-Type": "application/json", "User-Agent": "certpin-monitor"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = http.request(
                self.url,
                context=self._context,
                method="POST",
                body=json.dumps(event).encode(),
                headers=headers,
                timeout=timeout or self.timeout,
                max_body=65536,
            )
        except http.ERRORS as exc:  # URLError, timeouts, TLS and pin failures
            with self._count:
                self.failed += 1
            reason = getattr(exc, "reason", None) or exc
            log.warning("webhook %s: delivery failed: %s", self.url, reason)
            return False
        if not response.ok:  # a redirect too: it could move the POST to another host
            with self._count:
                self.failed += 1
            log.warning("webhook %s: HTTP %s %s", self.url, response.status, response.reason)
            return False
        with self._count:
            self.delivered += 1
        return True

    async def post_all(
        self, events: Sequence[Mapping[str, Any]], budget: float | None = None
    ) -> int:
        """Deliver `events`, at most `workers` POSTs at a time, within `budget` seconds in all.

        A dead or slow webhook must never stall the checks: every POST's timeout is cut to the
        budget left, and what is still queued when the budget runs out is dropped and logged.
        Returns how many events were dropped (not delivered in time; also counted in `failed`).
        The POSTs run in daemon threads, so a hung server cannot hold up the interpreter's exit.
        """
        if not events:
            return 0
        budget = self.round_budget if budget is None else budget
        loop = asyncio.get_running_loop()
        queue: collections.deque[Mapping[str, Any]] = collections.deque(events)
        deadline = time.monotonic() + budget
        finished = loop.create_future()
        running = min(self.workers, len(queue))
        lock = threading.Lock()

        def worker_done() -> None:
            nonlocal running
            running -= 1
            if running == 0 and not finished.done():
                finished.set_result(None)

        def worker() -> None:
            try:
                while True:
                    with lock:
                        left = deadline - time.monotonic()
                        if not queue or left <= 0:
                            return
                        event = queue.popleft()
                    self.post(event, timeout=min(self.timeout, left))
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone by now
                    loop.call_soon_threadsafe(worker_done)

        for n in range(running):
            threading.Thread(target=worker, name=f"certpin-webhook-{n}", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(finished), budget + 1.0)
        with lock:
            dropped = len(queue)
            queue.clear()
        if dropped:
            with self._count:
                self.failed += dropped
            log.warning(
                "webhook %s: %d alert(s) not delivered within %g s: dropped",
                self.url,
                dropped,
                budget,
            )
        return dropped
