"""``certpin serve``: run the pin-failure report collector (see docs/collector.md)."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Iterator

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.options import Verb, port_option, tls_server_options

__all__ = ["http_parser", "listen_socket", "serve_command"]


@click.command("serve", cls=Verb)
@click.option(
    "--db",
    metavar="URL",
    help="postgresql://user@host/db, sqlite:///path or a file path "
    "[default: ./certpin-data/certpin.sqlite3].",
)
@click.option("--db-schema", metavar="NAME", help="PostgreSQL schema to use (created if missing).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@port_option("--port", 8080, "Port (0 = any free port; the one chosen is printed).", any_port=True)
@tls_server_options
@click.option(
    "--bundles",
    type=click.Path(exists=True, file_okay=False),
    help="Directory served under /bundles/ (signed pin bundles).",
)
@click.option("--webhook", metavar="URL", help="POST alerts (new key, failure spike) here.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Reports per second per client address (0 = no rate limit).",
)
@click.option("--burst", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--http",
    "http_impl",
    type=click.Choice(["auto", "httptools", "h11"]),
    default="auto",
    show_default=True,
    help="HTTP/1.1 parser: httptools (C, the collector extra installs it) or h11 (pure "
    "Python); auto = httptools where installed.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def serve_command(
    db: str | None,
    db_schema: str | None,
    host: str,
    port: int,
    certfile: str | None,
    keyfile: str | None,
    bundles: str | None,
    webhook: str | None,
    rate: float,
    burst: int,
    http_impl: str,
    log_level: str,
) -> int:
    """Run the collector: POST /reports ingest, read API, /healthz, /openapi.json.

    The read API needs 'Authorization: Bearer TOKEN': $CERTPIN_ADMIN_TOKEN, or a random token
    printed at start. POST /api/ct (certpin ct watch) also takes $CERTPIN_CT_TOKEN, which can do
    nothing else.
    """
    if (certfile is None) != (keyfile is None):
        raise click.UsageError("--certfile and --keyfile go together")
    http = http_parser(http_impl)  # before anything is opened
    with _log_to_stderr(log_level):
        try:
            import uvicorn

            from certpin.collector.alerts import AlertConfig
            from certpin.collector.app import Collector, RateLimit
            from certpin.collector.store import StoreError
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise click.ClickException(
                f"the collector needs its extra: pip install 'certpin[collector]' ({exc})"
            ) from None
        try:
            collector = Collector(
                db,
                db_schema=db_schema,
                rate_limit=RateLimit(rate, burst) if rate > 0 else None,
                alerts=AlertConfig(webhook_url=webhook),
                bundles_dir=bundles,
            )
            version = collector.store.migrate()
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # SQLAlchemy/driver errors: unreachable server, bad credentials
            raise click.ClickException(
                f"cannot open database: {type(exc).__name__}: {exc}"
            ) from None
        try:
            sock = listen_socket(host, port)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = sock.getsockname()[1]
        scheme = "https" if certfile else "http"
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        click.echo(
            f"certpin collector listening on {scheme}://{shown}:{bound}/ "
            f"(database {collector.store.kind}, schema version {version}, HTTP parser {http})"
        )
        if collector.token_generated:
            click.echo(
                f"admin token (set CERTPIN_ADMIN_TOKEN to choose one): {collector.admin_token}"
            )
        sys.stdout.flush()
        config = uvicorn.Config(
            collector.app,
            log_level=log_level,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            http=http,
            ws="none",
            lifespan="on",
            server_header=False,
            proxy_headers=False,
        )
        uvicorn.Server(config).run(sockets=[sock])
    return ExitCode.OK


@contextlib.contextmanager
def _log_to_stderr(level: str) -> Iterator[None]:
    """Alerts and storage errors are log lines of the "certpin" logger: show them on stderr.

    The handler and level last as long as the command: an in-process caller (tests, an
    embedding program) gets its logger back as it was.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    certpin_log = logging.getLogger("certpin")
    previous = certpin_log.level
    certpin_log.addHandler(handler)
    certpin_log.setLevel(level.upper())
    try:
        yield
    finally:
        certpin_log.removeHandler(handler)
        certpin_log.setLevel(previous)


def http_parser(choice: str) -> str:
    """uvicorn's ``http`` for ``--http``: httptools (≈ 2.5× less CPU per request than h11 in
    bench/collector_ingest.py) where it is installed, else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        installed = False
    else:
        installed = True
    if choice == "auto":
        return "httptools" if installed else "h11"
    if choice == "httptools" and not installed:
        raise click.UsageError(
            "--http httptools: httptools is not installed (pip install 'certpin[collector]')"
        )
    return choice


def listen_socket(host: str, port: int) -> socket.socket:
    """The collector's bound TCP socket (uvicorn listens on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections whose
    # socket says TCP. With proto 0, every JSON answer (headers and body are two writes) waited
    # for the client's delayed ACK: ~40 ms per request on a keep-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
