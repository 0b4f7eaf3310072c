"""Storage: SQLite (default, WAL + ``synchronous=FULL``) or Postgres (synchronous commit).

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

import base64
import functools
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from certpin._errors import CertpinError
from certpin.collector._times import from_micros
from certpin.collector.dialects import Report
from certpin.collector.schema import (
    MIGRATIONS,
    PK,
    SCHEMA_VERSION,
    alerts,
    chain_sha256,
    chains,
    reports,
    schema_version,
    seen_pins,
)

__all__ = [
    "DEFAULT_DB_DIR",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Outcome",
    "Store",
    "StoreError",
    "database_url",
]

DEFAULT_DB_DIR = "certpin-data"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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


def _iso(us: int | None) -> str | None:
    """Stored microseconds as ISO 8601 UTC, exactly (no float: see `certpin.collector._times`);
    None for a value no datetime holds (only rows stored before the bounds can hold one)."""
    when = None if us is None else from_micros(us)
    if when is None:
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pems(text: str) -> list[str]:
    out = []
    for b64 in json.loads(text):
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        out.append(
            "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
        )
    return out


@dataclass(frozen=True)
class Outcome:
    """What happened to one report of a batch."""

    id: int
    new: bool
    """False when the report was a duplicate (its counter was incremented instead)."""
    new_pin: bool
    """True when the report's unexpected key was never seen before for its host."""


class Store:
    """The collector's database. Thread-safe; every method is blocking (run it off the loop)."""

    def __init__(self, db: str | None = None, *, schema: str | None = None) -> None:
        url = database_url(db)
        self.url = sa.engine.make_url(url)
        self.schema = schema
        self.kind = self.url.get_backend_name()
        # SQLite's bound parameters per statement: read from the connection on first use
        # (builds differ).
        self._max_params: int | None = None
        self._pins_stmt: Any = None
        self._dup_stmt: Any = None
        # Keys of chains known to be committed in ``chains`` (so a batch skips them); bounded,
        # updated only after a commit. Forgetting one costs an INSERT … DO NOTHING, no more.
        self._stored_chains: set[str] = set()
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
        self._stored_chains.clear()
        if self.kind == "postgresql" and self.schema is not None:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        with self._write() as conn:
            if self.kind == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:k || current_schema()))"),
                    {"k": "certpin-collector-schema:"},
                )
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
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
                        conn.exec_driver_sql(step.format(pk=PK[self.kind]))
                    else:
                        step(conn)
                conn.execute(sa.insert(schema_version).values(version=version))
                current = version
            return current

    def drop_schema(self) -> None:
        """Drop everything the collector created (tests; Postgres schema or SQLite tables)."""
        self._stored_chains.clear()
        with self._write() as conn:
            if self.kind == "postgresql" and self.schema is not None:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            else:
                for name in ("alerts", "seen_pins", "reports", "chains", "schema_version"):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- writes -----------------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        return (sqlite.insert if self.kind == "sqlite" else postgresql.insert)(table)

    def insert_batch(self, items: Sequence[tuple[Report, str | None]]) -> list[Outcome]:
        """Store a batch of ``(report, source address)`` in ONE transaction (group commit).

        Returns one `Outcome` per item, in order. Raises on any database error, in which
        case nothing of the batch is committed.

        First the chains not yet stored (``chains``, in key order), then the new rows in as
        few statements as the driver allows (``INSERT … ON CONFLICT DO NOTHING RETURNING id,
        report_key``: multi-row on SQLite, one pipeline on Postgres, see `_insert_reports`),
        one statement for their keys in ``seen_pins``, then an ``UPDATE`` per duplicate only.
        A key given twice in one batch is inserted once; the later copies are duplicates,
        exactly as if they had come in later batches. Every table is written in key order,
        so replicas never wait on each other in a cycle.
        """
        received = now_us()
        order = sorted(range(len(items)), key=lambda i: items[i][0].report_key)
        outcomes: dict[int, Outcome] = {}
        first: dict[str, int] = {}  # report_key -> index of its first copy in the batch
        for i in order:
            first.setdefault(items[i][0].report_key, i)
        new_chains: dict[str, str] = {}
        for i in first.values():
            for ders in (items[i][0].validated_chain, items[i][0].served_chain):
                key, text = _chain(ders)
                if key not in self._stored_chains:
                    new_chains[key] = text
        with self._write() as conn:
            if new_chains:
                conn.execute(
                    self._insert(chains).on_conflict_do_nothing(),
                    [{"sha256": k, "ders": t} for k, t in sorted(new_chains.items())],
                )
            ids: dict[str, int] = {}
            if first:
                rows = [_row(items[i][0], items[i][1], received) for i in first.values()]
                ids = {key: int(row_id) for row_id, key in self._insert_reports(conn, rows)}
            fresh: list[tuple[int, int, Report]] = []
            for i in order:
                report = items[i][0]
                key = report.report_key
                if first[key] == i and key in ids:
                    fresh.append((i, ids[key], report))
                    continue
                dup = conn.execute(
                    self._update_duplicate(), {"key": key, "received": received}
                ).scalar_one()
                outcomes[i] = Outcome(int(dup), new=False, new_pin=False)
            # New keys after all report rows, in one global order (deadlock-free replicas).
            fresh.sort(key=lambda t: (t[2].hostname, t[2].unexpected_pin or ""))
            pins: dict[tuple[str, str], int] = {}  # (host, pin) -> first fresh report's index
            for i, _row_id, report in fresh:
                if report.unexpected_pin is not None:
                    pins.setdefault((report.hostname, report.unexpected_pin), i)
            new_pins: set[tuple[str, str]] = set()
            if pins:
                params = [
                    {
                        "hostname": host,
                        "pin": pin,
                        "first_seen_us": received,
                        "first_report_key": items[i][0].report_key,
                    }
                    for (host, pin), i in pins.items()
                ]
                new_pins = {
                    (host, pin) for host, pin in conn.execute(self._insert_seen_pins(), params)
                }
            for i, row_id, report in fresh:
                pair = (report.hostname, report.unexpected_pin or "")
                new_pin = pair in new_pins and pins.get(pair) == i
                outcomes[i] = Outcome(row_id, new=True, new_pin=new_pin)
        if len(self._stored_chains) + len(new_chains) > _STORED_CHAINS_MAX:
            self._stored_chains.clear()
        self._stored_chains.update(new_chains)  # committed now
        return [outcomes[i] for i in range(len(items))]

    def _insert_reports(self, conn: Connection, rows: list[dict[str, Any]]) -> list[Any]:
        """``INSERT … ON CONFLICT (report_key) DO NOTHING RETURNING id, report_key`` for all
        `rows`, on the driver directly: multi-row statements on SQLite, one pipeline of
        one-row statements on Postgres.

        SQLAlchemy's insertmanyvalues did the same with a bind processor per value: ≈ 55 µs of
        Python per report on the writer thread, holding the GIL the event loop needs. The
        statement is built from the column names of `_row` (fixed identifiers) and the
        driver's placeholder; every value is a bound parameter.
        """
        columns = tuple(rows[0])
        values = [tuple(row.values()) for row in rows]  # `_row` builds every dict alike
        if self.kind == "postgresql":
            # psycopg converts the placeholders of a statement with more than 50 parameters
            # in Python on every call (its cache stops there): one row per statement instead,
            # all of them sent in one pipeline (executemany), one result set each.
            driver: Any = conn.connection.dbapi_connection  # a psycopg 3 connection
            cursor = driver.cursor()
            try:
                cursor.executemany(_multi_insert_sql("%s", columns, 1), values, returning=True)
                out: list[Any] = []
                while True:
                    out.extend(cursor.fetchall())
                    if not cursor.nextset():
                        return out
            finally:
                cursor.close()
        if self._max_params is None:
            sqlite_conn: Any = conn.connection.dbapi_connection
            self._max_params = int(sqlite_conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        per_statement = max(1, self._max_params // len(columns))
        out = []
        for start in range(0, len(values), per_statement):
            chunk = values[start : start + per_statement]
            sql = _multi_insert_sql("?", columns, len(chunk))
            params = tuple(value for row in chunk for value in row)
            out.extend(conn.exec_driver_sql(sql, params).all())
        return out

    def _insert_seen_pins(self) -> Any:
        if self._pins_stmt is None:
            self._pins_stmt = (
                self._insert(seen_pins)
                .on_conflict_do_nothing()
                .returning(seen_pins.c.hostname, seen_pins.c.pin)
            )
        return self._pins_stmt

    def _update_duplicate(self) -> Any:
        if self._dup_stmt is None:
            self._dup_stmt = (
                sa.update(reports)
                .where(reports.c.report_key == sa.bindparam("key"))
                .values(
                    duplicates=reports.c.duplicates + 1,
                    last_duplicate_us=sa.bindparam("received"),
                )
                .returning(reports.c.id)
            )
        return self._dup_stmt

    def record_alert(
        self, dedup_key: str, kind: str, hostname: str, detail: dict[str, Any]
    ) -> bool:
        """Remember an alert; False when one with this `dedup_key` exists (do not send again)."""
        with self._write() as conn:
            row = conn.execute(
                self._insert(alerts)
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

    # -- reads ------------------------------------------------------------------------------------

    def count_since(self, hostname: str, since_us: int) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(reports)
                    .where(reports.c.hostname == hostname, reports.c.received_us >= since_us)
                ).scalar_one()
            )

    def totals(self) -> tuple[int, int]:
        """(stored reports, duplicates counted)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(reports.c.duplicates), 0))
            ).one()
            return int(row[0]), int(row[1])

    def report_keys(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(reports.c.report_key))]

    def query_reports(
        self,
        *,
        host: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        app: str | None = None,
        pin: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Reports newest first (by id), filtered; `before_id` continues a previous page."""
        query = sa.select(reports).order_by(reports.c.id.desc()).limit(limit)
        if host is not None:
            query = query.where(reports.c.hostname == host)
        if since_us is not None:
            query = query.where(reports.c.received_us >= since_us)
        if until_us is not None:
            query = query.where(reports.c.received_us < until_us)
        if app is not None:
            query = query.where(reports.c.app_id == app)
        if pin is not None:
            query = query.where(reports.c.unexpected_pin == pin)
        if before_id is not None:
            query = query.where(reports.c.id < before_id)
        with self.engine.connect() as conn:
            rows = [row._mapping for row in conn.execute(query)]
            keys = {r[c] for r in rows for c in ("validated_chain_sha256", "served_chain_sha256")}
            texts = dict(
                conn.execute(
                    sa.select(chains.c.sha256, chains.c.ders).where(chains.c.sha256.in_(keys))
                ).all()
            )
        return [_public(row, texts) for row in rows]

    def summary(self, since_us: int | None = None, top: int = 20) -> dict[str, Any]:
        """Aggregates: per host, per unexpected key (with subject/issuer), per app and version."""
        where = [] if since_us is None else [reports.c.received_us >= since_us]
        count = sa.func.count().label("reports")
        dups = sa.func.coalesce(sa.func.sum(reports.c.duplicates), 0).label("duplicates")
        last = sa.func.max(reports.c.received_us).label("last_us")
        with self.engine.connect() as conn:
            hosts = conn.execute(
                sa.select(reports.c.hostname, count, dups, last)
                .where(*where)
                .group_by(reports.c.hostname)
                .order_by(count.desc(), reports.c.hostname)
                .limit(top)
            ).all()
            keys = conn.execute(
                sa.select(
                    reports.c.hostname,
                    reports.c.unexpected_pin,
                    sa.func.max(reports.c.unexpected_subject).label("subject"),
                    sa.func.max(reports.c.unexpected_issuer).label("issuer"),
                    count,
                    last,
                )
                .where(reports.c.unexpected_pin.is_not(None), *where)
                .group_by(reports.c.hostname, reports.c.unexpected_pin)
                .order_by(count.desc(), reports.c.hostname, reports.c.unexpected_pin)
                .limit(top)
            ).all()
            apps = conn.execute(
                sa.select(reports.c.app_id, reports.c.app_version, count)
                .where(*where)
                .group_by(reports.c.app_id, reports.c.app_version)
                .order_by(count.desc(), reports.c.app_id, reports.c.app_version)
                .limit(top)
            ).all()
            total = conn.execute(sa.select(sa.func.count(), dups).where(*where)).one()
        return {
            "total": {"reports": int(total[0]), "duplicates": int(total[1])},
            "hosts": [
                {"hostname": h, "reports": int(n), "duplicates": int(d), "last_seen": _iso(t)}
                for h, n, d, t in hosts
            ],
            "unexpected_keys": [
                {
                    "hostname": h,
                    "pin": p,
                    "subject": s,
                    "issuer": i,
                    "reports": int(n),
                    "last_seen": _iso(t),
                }
                for h, p, s, i, n, t in keys
            ],
            "apps": [{"app": a, "version": v, "reports": int(n)} for a, v, n in apps],
        }


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


@functools.lru_cache(maxsize=64)
def _multi_insert_sql(placeholder: str, columns: tuple[str, ...], rows: int) -> str:
    values = "(" + ", ".join([placeholder] * len(columns)) + ")"
    return (
        f"INSERT INTO reports ({', '.join(columns)}) VALUES {', '.join([values] * rows)} "
        "ON CONFLICT (report_key) DO NOTHING RETURNING id, report_key"
    )


_STORED_CHAINS_MAX = 4096


@functools.lru_cache(maxsize=512)
def _chain(ders: tuple[bytes, ...]) -> tuple[str, str]:
    """A chain as stored: (its key, a JSON array of base64 DER). Cached: reports repeat the
    same chains."""
    text = json.dumps([base64.b64encode(d).decode("ascii") for d in ders])
    return chain_sha256(text), text


def _row(report: Report, source: str | None, received: int) -> dict[str, Any]:
    """A new report's values by column (the insert takes the column names from the first row
    and the values in this order)."""
    return {
        "report_key": report.report_key,
        "received_us": received,
        "duplicates": 0,
        "source": source,
        "dialect": report.dialect,
        "hostname": report.hostname,
        "port": report.port,
        "noted_hostname": report.noted_hostname,
        "date_time": report.date_time,
        "client_time_us": report.client_time_us,
        "include_subdomains": report.include_subdomains,
        "enforce": report.enforce,
        "validation_result": report.validation_result,
        "effective_expiration": report.effective_expiration,
        "known_pins": json.dumps(list(report.known_pins)),
        "validated_chain_sha256": _chain(report.validated_chain)[0],
        "served_chain_sha256": _chain(report.served_chain)[0],
        "app_id": report.app_id,
        "app_version": report.app_version,
        "app_platform": report.app_platform,
        "app_platform_version": report.app_platform_version,
        "app_vendor_id": report.app_vendor_id,
        "library": report.library,
        "verdict_status": report.verdict_status,
        "verdict_reason": report.verdict_reason,
        "unexpected_pin": report.unexpected_pin,
        "unexpected_subject": report.unexpected_subject,
        "unexpected_issuer": report.unexpected_issuer,
        "body": report.body,
    }


def _public(row: Any, chain_texts: dict[str, str]) -> dict[str, Any]:
    """A stored row as the read API shows it (chains as PEM, times as ISO 8601 UTC)."""
    return {
        "id": int(row["id"]),
        "report_key": row["report_key"],
        "received_at": _iso(row["received_us"]),
        "duplicates": int(row["duplicates"]),
        "source": row["source"],
        "dialect": row["dialect"],
        "hostname": row["hostname"],
        "port": row["port"],
        "noted_hostname": row["noted_hostname"],
        "date_time": row["date_time"],
        "client_time": _iso(row["client_time_us"]),
        "include_subdomains": row["include_subdomains"],
        "enforce": row["enforce"],
        "validation_result": row["validation_result"],
        "effective_expiration_date": row["effective_expiration"],
        "known_pins": json.loads(row["known_pins"]),
        "validated_chain": _pems(chain_texts[row["validated_chain_sha256"]]),
        "served_chain": _pems(chain_texts[row["served_chain_sha256"]]),
        "app": row["app_id"],
        "app_version": row["app_version"],
        "app_platform": row["app_platform"],
        "app_platform_version": row["app_platform_version"],
        "app_vendor_id": row["app_vendor_id"],
        "library": row["library"],
        "verdict_status": row["verdict_status"],
        "verdict_reason": row["verdict_reason"],
        "unexpected_pin": row["unexpected_pin"],
        "unexpected_subject": row["unexpected_subject"],
        "unexpected_issuer": row["unexpected_issuer"],
    }
