"""Helpers for the monitor tests: random pins, policy files, a webhook receiver."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from certpin import Pin


def random_pin() -> str:
    return str(Pin(os.urandom(32)))


def write_policy(path: Path, rules: dict[str, dict[str, Any]], **top: Any) -> Path:
    """A JSON policy file (the same schema as TOML)."""
    path.write_text(json.dumps({**top, "domains": rules}))
    return path


class WebhookReceiver:
    """A small HTTP server (http.server in a thread) that records POSTed JSON bodies."""

    def __init__(self, status: int = 204) -> None:
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.headers.append(dict(self.headers))
                receiver.events.append(json.loads(body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
