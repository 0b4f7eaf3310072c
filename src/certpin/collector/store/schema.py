"""The collector's schema: ordered migrations and the SQLAlchemy Core tables used to query.

The DDL in `MIGRATIONS` is what creates the tables: a migration is the record of what was run on
every database in service, so a released step is frozen text and never regenerated (a newer
SQLAlchemy could render other DDL). The `sa.Table` objects below only describe the tables for
queries and must be kept in step with the latest migration (tests/collector/test_chains.py
compares them with a migrated database).

Chains (v2): each distinct certificate chain is stored once in ``chains``, keyed by the SHA-256
of its stored text (a JSON array of base64 DER); a report row keeps that key. An incident
repeats a handful of chains across thousands of reports, and the chains were most of a row
(≈ 5 of 8.5 KiB for a 3-certificate chain), written to the WAL and checkpointed again for every
report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = [
    "MIGRATIONS",
    "PK",
    "SCHEMA_VERSION",
    "alerts",
    "chain_sha256",
    "chains",
    "ct_certificates",
    "ct_issuance",
    "ct_log_errors",
    "insert",
    "reports",
    "schema_version",
    "seen_pins",
]


def chain_sha256(text: str) -> str:
    """The key of a stored chain: hex SHA-256 of its stored text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ct_issuance(tbs_sha256: str | None, log: str, index: int) -> str:
    """The key of one issuance: its ``tbs_sha256``, else the SHA-256 of its log position (the
    watcher's own fallback, `certpin.lifecycle.ct.watch`)."""
    if tbs_sha256 is not None:
        return tbs_sha256
    return hashlib.sha256(f"{log}#{index}".encode()).hexdigest()


def _columns(kind: Any, *names: str) -> list[sa.Column[Any]]:
    return [sa.Column(name, kind) for name in names]


_meta = sa.MetaData()
schema_version = sa.Table("schema_version", _meta, sa.Column("version", sa.Integer))
reports = sa.Table(
    "reports",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    *_columns(sa.BigInteger, "received_us", "last_duplicate_us", "client_time_us"),
    *_columns(sa.Integer, "duplicates", "port", "validation_result"),
    *_columns(sa.Boolean, "include_subdomains", "enforce"),
    *_columns(
        sa.Text,
        "report_key",
        "source",
        "dialect",
        "hostname",
        "noted_hostname",
        "date_time",
        "effective_expiration",
        "known_pins",
        "validated_chain_sha256",
        "served_chain_sha256",
        "app_id",
        "app_version",
        "app_platform",
        "app_platform_version",
        "app_vendor_id",
        "library",
        "verdict_status",
        "verdict_reason",
        "unexpected_pin",
        "unexpected_subject",
        "unexpected_issuer",
        "body",
    ),
)
chains = sa.Table(
    "chains", _meta, sa.Column("sha256", sa.Text, primary_key=True), sa.Column("ders", sa.Text)
)
seen_pins = sa.Table(
    "seen_pins",
    _meta,
    *(sa.Column(name, sa.Text, primary_key=True) for name in ("hostname", "pin")),
    sa.Column("first_seen_us", sa.BigInteger),
    sa.Column("first_report_key", sa.Text),
)
alerts = sa.Table(
    "alerts",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    *_columns(sa.Text, "dedup_key", "kind", "hostname", "detail"),
    sa.Column("created_us", sa.BigInteger),
)

ct_certificates = sa.Table(
    "ct_certificates",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    *_columns(sa.BigInteger, "log_index", "first_seen_us", "last_seen_us"),
    sa.Column("duplicates", sa.Integer),
    *_columns(
        sa.Text,
        "issuance",
        "host",
        "kind",
        "hosts",
        "names",
        "spki_pin",
        "tbs_sha256",
        "log_url",
        "entry_type",
        "not_before",
        "not_after",
        "issuer",
        "source",
    ),
)
ct_log_errors = sa.Table(
    "ct_log_errors",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    *_columns(sa.BigInteger, "first_seen_us", "last_seen_us"),
    sa.Column("duplicates", sa.Integer),
    *_columns(sa.Text, "error_key", "log_url", "reason", "source"),
)


def insert(dialect: str, table: sa.Table) -> Any:
    """The dialect's own INSERT construct (it has ``on_conflict_do_nothing``)."""
    return (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)


def _move_chains(conn: Connection) -> None:
    """v2 data step: the inline chains of v1 rows into ``chains``; the rows keep the key.

    The v1 columns were renamed just before, so ``*_chain_sha256`` still hold the chain texts.
    """
    last = 0
    into_chains = insert(conn.dialect.name, chains).on_conflict_do_nothing()
    set_keys = (
        sa.update(reports)
        .where(reports.c.id == sa.bindparam("row_id"))
        .values(
            validated_chain_sha256=sa.bindparam("validated"),
            served_chain_sha256=sa.bindparam("served"),
        )
    )
    while True:
        rows = conn.execute(
            sa.select(reports.c.id, reports.c.validated_chain_sha256, reports.c.served_chain_sha256)
            .where(reports.c.id > last)
            .order_by(reports.c.id)
            .limit(1000)
        ).all()
        if not rows:
            return
        found: dict[str, str] = {}
        updates: list[dict[str, Any]] = []
        for row_id, validated, served in rows:
            keys = chain_sha256(validated), chain_sha256(served)
            found.update(zip(keys, (validated, served), strict=True))
            updates.append({"row_id": row_id, "validated": keys[0], "served": keys[1]})
        conn.execute(into_chains, [{"sha256": k, "ders": t} for k, t in sorted(found.items())])
        conn.execute(set_keys, updates)
        last = rows[-1][0]


#: A migration step: DDL (``{pk}`` is the dialect's auto-increment primary key column type) or
#: a data step run on the migration's connection.
Step = str | Callable[[Connection], None]

#: version -> steps, run in order in one transaction. Never edit a released version: append.
MIGRATIONS: list[tuple[int, tuple[Step, ...]]] = [
    (
        1,
        (
            """CREATE TABLE reports (
                id {pk},
                report_key TEXT NOT NULL UNIQUE,
                received_us BIGINT NOT NULL,
                duplicates INTEGER NOT NULL DEFAULT 0,
                last_duplicate_us BIGINT,
                source TEXT,
                dialect TEXT NOT NULL,
                hostname TEXT NOT NULL,
                port INTEGER,
                noted_hostname TEXT,
                date_time TEXT,
                client_time_us BIGINT,
                include_subdomains BOOLEAN,
                enforce BOOLEAN,
                validation_result INTEGER,
                effective_expiration TEXT,
                known_pins TEXT NOT NULL,
                validated_chain TEXT NOT NULL,
                served_chain TEXT NOT NULL,
                app_id TEXT,
                app_version TEXT,
                app_platform TEXT,
                app_platform_version TEXT,
                app_vendor_id TEXT,
                library TEXT,
                verdict_status TEXT,
                verdict_reason TEXT,
                unexpected_pin TEXT,
                unexpected_subject TEXT,
                unexpected_issuer TEXT,
                body TEXT NOT NULL
            )""",
            "CREATE INDEX reports_host_id ON reports (hostname, id)",
            "CREATE INDEX reports_received ON reports (received_us)",
            "CREATE INDEX reports_unexpected ON reports (unexpected_pin)",
            "CREATE INDEX reports_app ON reports (app_id, app_version)",
            """CREATE TABLE seen_pins (
                hostname TEXT NOT NULL,
                pin TEXT NOT NULL,
                first_seen_us BIGINT NOT NULL,
                first_report_key TEXT NOT NULL,
                PRIMARY KEY (hostname, pin)
            )""",
            """CREATE TABLE alerts (
                id {pk},
                dedup_key TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                hostname TEXT NOT NULL,
                detail TEXT NOT NULL,
                created_us BIGINT NOT NULL
            )""",
        ),
    ),
    (
        2,
        (
            "CREATE TABLE chains (sha256 TEXT PRIMARY KEY, ders TEXT NOT NULL)",
            "ALTER TABLE reports RENAME COLUMN validated_chain TO validated_chain_sha256",
            "ALTER TABLE reports RENAME COLUMN served_chain TO served_chain_sha256",
            _move_chains,
        ),
    ),
    (
        3,
        (
            """CREATE TABLE ct_certificates (
                id {pk},
                issuance TEXT NOT NULL,
                host TEXT NOT NULL,
                kind TEXT NOT NULL,
                hosts TEXT NOT NULL,
                names TEXT NOT NULL,
                spki_pin TEXT,
                tbs_sha256 TEXT,
                log_url TEXT NOT NULL,
                log_index BIGINT NOT NULL,
                entry_type TEXT NOT NULL,
                not_before TEXT,
                not_after TEXT,
                issuer TEXT,
                first_seen_us BIGINT NOT NULL,
                last_seen_us BIGINT NOT NULL,
                duplicates INTEGER NOT NULL DEFAULT 0,
                source TEXT,
                UNIQUE (issuance, host)
            )""",
            "CREATE INDEX ct_certificates_host_id ON ct_certificates (host, id)",
            "CREATE INDEX ct_certificates_kind_id ON ct_certificates (kind, id)",
            """CREATE TABLE ct_log_errors (
                id {pk},
                error_key TEXT NOT NULL UNIQUE,
                log_url TEXT NOT NULL,
                reason TEXT NOT NULL,
                first_seen_us BIGINT NOT NULL,
                last_seen_us BIGINT NOT NULL,
                duplicates INTEGER NOT NULL DEFAULT 0,
                source TEXT
            )""",
        ),
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

PK = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
}
