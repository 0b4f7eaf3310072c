"""The collector's schema: ordered migrations (DDL) and the SQLAlchemy Core tables used to query.

The DDL in `MIGRATIONS` is what creates the tables; the `sa.Table` objects below only describe
them for queries and must be kept in step with the latest migration.

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
from sqlalchemy.engine import Connection

__all__ = [
    "MIGRATIONS",
    "PK",
    "SCHEMA_VERSION",
    "alerts",
    "chain_sha256",
    "chains",
    "reports",
    "schema_version",
    "seen_pins",
]


def chain_sha256(text: str) -> str:
    """The key of a stored chain: hex SHA-256 of its stored text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _move_chains(conn: Connection) -> None:
    """v2 data step: the inline chains of v1 rows into ``chains``, the rows keep the key."""
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, validated_chain_sha256, served_chain_sha256 FROM reports "
                "WHERE id > :last ORDER BY id LIMIT 1000"
            ),
            {"last": last},
        ).all()
        if not rows:
            return
        found: dict[str, str] = {}
        updates: list[dict[str, Any]] = []
        for row_id, validated, served in rows:
            keys = chain_sha256(validated), chain_sha256(served)
            found.update(zip(keys, (validated, served), strict=True))
            updates.append({"i": row_id, "v": keys[0], "s": keys[1]})
        conn.execute(
            sa.text(
                "INSERT INTO chains (sha256, ders) VALUES (:k, :t) ON CONFLICT (sha256) DO NOTHING"
            ),
            [{"k": k, "t": t} for k, t in sorted(found.items())],
        )
        conn.execute(
            sa.text(
                "UPDATE reports SET validated_chain_sha256 = :v, served_chain_sha256 = :s "
                "WHERE id = :i"
            ),
            updates,
        )
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
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

PK = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
}

_meta = sa.MetaData()
schema_version = sa.Table("schema_version", _meta, sa.Column("version", sa.Integer))
reports = sa.Table(
    "reports",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("report_key", sa.Text),
    sa.Column("received_us", sa.BigInteger),
    sa.Column("duplicates", sa.Integer),
    sa.Column("last_duplicate_us", sa.BigInteger),
    sa.Column("source", sa.Text),
    sa.Column("dialect", sa.Text),
    sa.Column("hostname", sa.Text),
    sa.Column("port", sa.Integer),
    sa.Column("noted_hostname", sa.Text),
    sa.Column("date_time", sa.Text),
    sa.Column("client_time_us", sa.BigInteger),
    sa.Column("include_subdomains", sa.Boolean),
    sa.Column("enforce", sa.Boolean),
    sa.Column("validation_result", sa.Integer),
    sa.Column("effective_expiration", sa.Text),
    sa.Column("known_pins", sa.Text),
    sa.Column("validated_chain_sha256", sa.Text),
    sa.Column("served_chain_sha256", sa.Text),
    sa.Column("app_id", sa.Text),
    sa.Column("app_version", sa.Text),
    sa.Column("app_platform", sa.Text),
    sa.Column("app_platform_version", sa.Text),
    sa.Column("app_vendor_id", sa.Text),
    sa.Column("library", sa.Text),
    sa.Column("verdict_status", sa.Text),
    sa.Column("verdict_reason", sa.Text),
    sa.Column("unexpected_pin", sa.Text),
    sa.Column("unexpected_subject", sa.Text),
    sa.Column("unexpected_issuer", sa.Text),
    sa.Column("body", sa.Text),
)
chains = sa.Table(
    "chains",
    _meta,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("ders", sa.Text),
)
seen_pins = sa.Table(
    "seen_pins",
    _meta,
    sa.Column("hostname", sa.Text, primary_key=True),
    sa.Column("pin", sa.Text, primary_key=True),
    sa.Column("first_seen_us", sa.BigInteger),
    sa.Column("first_report_key", sa.Text),
)
alerts = sa.Table(
    "alerts",
    _meta,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("dedup_key", sa.Text),
    sa.Column("kind", sa.Text),
    sa.Column("hostname", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("created_us", sa.BigInteger),
)
