"""Helpers for the dynamic-pinning tests (imported as ``_dyn``)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

from _support.pki import PKIFiles
from certpin import Pin
from certpin.dynamic.serve import make_server, serve_in_thread

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
BACKUP = str(Pin(bytes([7]) * 32))


def policy_doc(pins: dict[str, list[str]], **top: Any) -> dict[str, Any]:
    return {"domains": {host: {"pins": p} for host, p in pins.items()}, **top}


class BundleHost:
    """A real HTTPS static server (certpin bundle serve) for one directory, in a thread."""

    def __init__(self, files: PKIFiles, directory: Path) -> None:
        self.directory = directory
        self.files = files
        self.server = make_server(
            directory, "127.0.0.1", 0, files.certfile, files.keyfile, quiet=True
        )
        self.port = self.server.server_address[1]
        self.requests = 0
        handle = self.server.RequestHandlerClass

        outer = self

        def counting(*args: Any, **kwargs: Any) -> Any:
            with outer._lock:
                outer.requests += 1
            return handle(*args, **kwargs)

        self._lock = threading.Lock()
        self.server.RequestHandlerClass = counting  # type: ignore[assignment]
        self.thread = serve_in_thread(self.server)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/bundle.jws"

    def publish(self, token: str) -> None:
        (self.directory / "bundle.jws").write_text(token)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
