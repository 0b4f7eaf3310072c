"""The `Store`: SQLite (default, WAL + ``synchronous=FULL``) or Postgres (synchronous commit).

SQLAlchemy Core, every statement parametrised. The schema is created and upgraded by the tool:
``schema_version`` holds the applied version and `MIGRATIONS` lists the steps in order; a
migration runs inside one transaction under a lock (SQLite ``BEGIN IMMEDIATE``, a Postgres
advisory lock), so replicas starting together do not race.

Durability: `Store.insert_batch` commits one transaction for a whole batch (group commit); the
collector acknowledges a report only after that commit returned. With SQLite in WAL mode and
``synchronous=FULL`` the commit fsyncs the WAL; with Postgres ``synchronous_commit=on`` the
commit waits for the WAL flush.

Idempotency: ``reports.report_key`` is UNIQUE; a second copy is ``INSERT … ON CONFLICT DO
NOTHING`` followed by ``duplicates = duplicates + 1`` on the stored row. Batches insert in
``report_key`` order so two Postgres writers never lock rows in opposite orders.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from certpin._errors import CertpinError
from certpin.collector.dialects import Report
from certpin.collector.store import ct, reads, writes
from certpin.collector.store.schema import (
    MIGRATIONS,
    PK,
    SCHEMA_VERSION,
    alerts,
    chains,
    ct_certificates,
    ct_log_errors,
    insert,
    reports,
    schema_version,
    seen_pins,
)
from certpin.collector.store.writes import Outcome

__all__ = ["DEFAULT_DB_DIR", "Store", "StoreError", "database_url", "is_transient", "now_us"]

DEFAULT_DB_DIR = "certpin-data"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Rows known to be committed (chain keys, ``seen_pins`` pairs), remembered per `Store` (a
#: batch skips them); forgetting one costs an ``INSERT … DO NOTHING``, no more.
_COMMITTED_MAX = 4096


class StoreError(CertpinError, RuntimeError):
    """The database cannot be used (bad URL, newer schema, unreachable server)."""


def database_url(db: str | None) -> str:
    """Turn ``--db`` into an SQLAlchemy URL.

    None → SQLite file ``./certpin-data/certpin.sqlite3``; a plain path → SQLite file there;
    ``postgresql://`` / ``postgres://`` → the psycopg 3 driver; ``sqlite:///…`` as is.
    """
    if db is None:
        return f"sqlite:///{Path(DEFAULT_DB_DIR) / 'certpin.sqlite3'}"
    for prefix in ("postgresql://", "postgres://"):
        if db.startswith(prefix):
            return "postgresql+psycopg://" + db[len(prefix) :]
    if "://" in db:
        return db
    return f"sqlite:///{db}"


def now_us() -> int:
    return time.time_ns() // 1000


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry can cure (a lock or deadlock, a lost connection); False for
    errors of the data itself (a value the database refuses), which fail the same way again."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite-only installs
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


class Store:
    """The collector's database. Thread-safe; every method is blocking (run it off the loop)."""

    def __init__(self, db: str | None = None, *, schema: str | None = None) -> None:
        self.url = sa.engine.make_url(database_url(db))
        self.schema = schema
        self.kind = self.url.get_backend_name()
        self._committed: set[writes.Committed] = set()  # updated only after a commit
        if self.kind not in PK:
            raise StoreError(f"unsupported database {self.kind!r}: use SQLite or PostgreSQL")
        if self.kind == "postgresql" and self.url.get_driver_name() != "psycopg":
            raise StoreError(
                f"PostgreSQL driver {self.url.get_driver_name()!r} is not supported: use a "
                "postgresql:// (or postgresql+psycopg://) URL, which selects psycopg 3"
            )
        if schema is not None and (self.kind != "postgresql" or not _SCHEMA_NAME.match(schema)):
            raise StoreError(f"schema {schema!r}: only for PostgreSQL, as [a-z_][a-z0-9_]*")
        if self.kind == "sqlite":
            self.engine = self._sqlite_engine()
        else:
            self.engine = self._postgres_engine()

    # -- engines ----------------------------------------------------------------------------------

    def _sqlite_engine(self) -> Engine:
        path = self.url.database
        if not path or path == ":memory:":
            raise StoreError("SQLite needs a file (an in-memory database is not durable)")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            self.url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from the driver so "begin" below decides (SQLAlchemy's
            # documented pysqlite recipe).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL + FULL: every commit fsyncs the WAL, so an acknowledged report survives a
            # power loss, not only a process crash (NORMAL would only survive the latter).
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Writers take the write lock up front; readers use WAL snapshots.
            write = conn.get_execution_options().get("certpin_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _postgres_engine(self) -> Engine:
        engine = sa.create_engine(self.url, pool_size=8, pool_pre_ping=True)
        schema = self.schema

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # A commit returns only once the WAL is flushed (the server default may be off).
            cursor.execute("SET synchronous_commit TO on")
            if schema is not None:
                cursor.execute(f'SET search_path TO "{schema}"')  # validated identifier
            cursor.close()
            dbapi_conn.commit()

        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(certpin_write=True)
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in place."""
        self._committed.clear()
        if self.kind == "postgresql" and self.schema is not None:
            with self.engine.begin() as conn:
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
        with self._write() as conn:
            if self.kind == "postgresql":
                key = sa.literal("certpin-collector-schema:").concat(sa.func.current_schema())
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            current = int(current or 0)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {current} is newer than this certpin's "
                    f"({SCHEMA_VERSION}); upgrade certpin"
                )
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for step in statements:
                    if isinstance(step, str):
                        conn.execute(sa.text(step.format(pk=PK[self.kind])))
                    else:
                        step(conn)
                conn.execute(sa.insert(schema_version).values(version=version))
                current = version
            return current

    def drop_schema(self) -> None:
        """Drop everything the collector created (tests; Postgres schema or SQLite tables)."""
        self._committed.clear()
        with self._write() as conn:
            if self.kind == "postgresql" and self.schema is not None:
                conn.execute(sa.schema.DropSchema(self.schema, cascade=True, if_exists=True))
            else:
                for table in (
                    alerts,
                    seen_pins,
                    reports,
                    chains,
                    ct_certificates,
                    ct_log_errors,
                    schema_version,
                ):
                    table.drop(conn, checkfirst=True)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.select(1))

    # -- writes -----------------------------------------------------------------------------------

    def insert_batch(self, items: Sequence[tuple[Report, str | None]]) -> list[Outcome]:
        """Store a batch of ``(report, source address)`` in ONE transaction (group commit).

        Returns one `Outcome` per item, in order (`certpin.collector.store.writes`). Raises on
        any database error, in which case nothing of the batch is committed.
        """
        with self._write() as conn:
            outcomes, written = writes.insert_batch(conn, items, now_us(), self._committed)
        if len(self._committed) + len(written) > _COMMITTED_MAX:
            self._committed.clear()
        self._committed.update(written)  # committed now
        return outcomes

    def record_alert(
        self, dedup_key: str, kind: str, hostname: str, detail: dict[str, Any]
    ) -> bool:
        """Remember an alert; False when one with this `dedup_key` exists (do not send again)."""
        with self._write() as conn:
            row = conn.execute(
                insert(self.kind, alerts)
                .values(
                    dedup_key=dedup_key,
                    kind=kind,
                    hostname=hostname,
                    detail=json.dumps(detail, sort_keys=True),
                    created_us=now_us(),
                )
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                .returning(alerts.c.id)
            ).first()
            return row is not None

    # -- Certificate Transparency (`certpin.collector.store.ct`) ----------------------------------

    def insert_ct(
        self, certificates: Sequence[Any], log_errors: Sequence[Any], source: str | None
    ) -> tuple[int, int]:
        """Store ``ct watch`` records in ONE transaction; (new rows, duplicates counted)."""
        with self._write() as conn:
            return ct.insert_ct(conn, certificates, log_errors, source, now_us())

    def query_ct(self, **filters: Any) -> list[dict[str, Any]]:
        """CT certificate rows newest first: ``host``, ``kind``, ``before_id``, ``limit``."""
        with self.engine.connect() as conn:
            return ct.query_ct(conn, **filters)

    def ct_log_errors(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return ct.query_ct_log_errors(conn, limit)

    # -- reads (`certpin.collector.store.reads`) --------------------------------------------------

    def count_since(self, hostname: str, since_us: int) -> int:
        with self.engine.connect() as conn:
            return reads.count_since(conn, hostname, since_us)

    def totals(self) -> tuple[int, int]:
        """(stored reports, duplicates counted)."""
        with self.engine.connect() as conn:
            return reads.totals(conn, None)

    def report_keys(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(reports.c.report_key)).scalars())

    def query_reports(self, **filters: Any) -> list[dict[str, Any]]:
        """Reports newest first (by id): ``host``, ``since_us``, ``until_us``, ``app``,
        ``pin``, ``before_id`` (continues a previous page), ``limit`` (default 100)."""
        with self.engine.connect() as conn:
            return reads.query_reports(conn, **filters)

    def summary(self, since_us: int | None = None, top: int = 20) -> dict[str, Any]:
        """Aggregates: per host, per unexpected key (with subject/issuer), per app and version."""
        with self.engine.connect() as conn:
            return reads.summary(conn, since_us, top)

    def unexpected_keys(self, since_us: int, until_us: int, top: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return reads.unexpected_keys(conn, since_us, until_us, top)

    def failures_per_bucket(
        self, start_us: int, width_us: int, buckets: int, hosts: int
    ) -> dict[str, list[int]]:
        with self.engine.connect() as conn:
            return reads.failures_per_bucket(conn, start_us, width_us, buckets, hosts)
