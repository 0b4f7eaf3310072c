"""Certificate Transparency records: written idempotently, read back per host.

A certificate record becomes one ``ct_certificates`` row per policy host it names, keyed by
(issuance, host): the same issuance sent again — the webhook's retry, the final certificate of a
precertificate already stored, the same certificate from another log — counts a duplicate on the
stored row. A duplicate that says ``unexpected`` where the row says ``pinned`` turns the row
``unexpected`` (the policy changed since: fail closed). Log errors are one row per (log, reason).
Rows are written in key order, so two collectors never wait on each other in a cycle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certpin.collector.store.reads import iso
from certpin.collector.store.schema import ct_certificates, ct_log_errors, insert

__all__ = ["insert_ct", "query_ct", "query_ct_log_errors"]


def insert_ct(
    conn: Connection,
    certificates: Sequence[Any],
    log_errors: Sequence[Any],
    source: str | None,
    now_us: int,
) -> tuple[int, int]:
    """Store the records (`certpin.collector.ct_records.CTCertificate` and `CTLogError`) on
    `conn`, inside its transaction; returns (new rows, duplicates)."""
    dialect = conn.dialect.name
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    errors: dict[str, dict[str, Any]] = {}
    for record in certificates:
        for host in record.hosts:
            row = _certificate_row(record, host, source, now_us)
            known = rows.get((row["issuance"], host))
            if known is not None and record.kind == "unexpected":
                known["kind"] = "unexpected"
            rows.setdefault((row["issuance"], host), row)
    for record in log_errors:
        key = hashlib.sha256(f"{record.log}\0{record.reason}".encode()).hexdigest()
        errors.setdefault(key, _error_row(record, key, source, now_us))
    new = duplicates = 0
    add_cert = (
        insert(dialect, ct_certificates)
        .on_conflict_do_nothing(index_elements=["issuance", "host"])
        .returning(ct_certificates.c.id)
    )
    for _key, row in sorted(rows.items()):
        if conn.execute(add_cert, row).first() is not None:
            new += 1
            continue
        duplicates += 1
        table = ct_certificates.c
        values: dict[str, Any] = {
            "duplicates": table.duplicates + 1,
            "last_seen_us": now_us,
        }
        if row["kind"] == "unexpected":
            values["kind"] = "unexpected"
        conn.execute(
            sa.update(ct_certificates)
            .where(table.issuance == row["issuance"], table.host == row["host"])
            .values(**values)
        )
    add_error = (
        insert(dialect, ct_log_errors)
        .on_conflict_do_nothing(index_elements=["error_key"])
        .returning(ct_log_errors.c.id)
    )
    for key, row in sorted(errors.items()):
        if conn.execute(add_error, row).first() is not None:
            new += 1
            continue
        duplicates += 1
        conn.execute(
            sa.update(ct_log_errors)
            .where(ct_log_errors.c.error_key == key)
            .values(duplicates=ct_log_errors.c.duplicates + 1, last_seen_us=now_us)
        )
    return new, duplicates


def _certificate_row(record: Any, host: str, source: str | None, now_us: int) -> dict[str, Any]:
    return {
        "issuance": record.issuance,
        "host": host,
        "kind": record.kind,
        "hosts": json.dumps(list(record.hosts)),
        "names": json.dumps(list(record.names)),
        "spki_pin": record.spki_pin,
        "tbs_sha256": record.tbs_sha256,
        "log_url": record.log,
        "log_index": record.index,
        "entry_type": record.entry_type,
        "not_before": record.not_before,
        "not_after": record.not_after,
        "issuer": record.issuer,
        "first_seen_us": now_us,
        "last_seen_us": now_us,
        "duplicates": 0,
        "source": source,
    }


def _error_row(record: Any, key: str, source: str | None, now_us: int) -> dict[str, Any]:
    return {
        "error_key": key,
        "log_url": record.log,
        "reason": record.reason,
        "first_seen_us": now_us,
        "last_seen_us": now_us,
        "duplicates": 0,
        "source": source,
    }


def query_ct(
    conn: Connection,
    *,
    host: str | None = None,
    kind: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Certificate rows newest first (by id), optionally for one policy host and one kind."""
    table = ct_certificates.c
    query = sa.select(ct_certificates).order_by(table.id.desc()).limit(limit)
    if host is not None:
        query = query.where(table.host == host)
    if kind is not None:
        query = query.where(table.kind == kind)
    if before_id is not None:
        query = query.where(table.id < before_id)
    return [_certificate(row._mapping) for row in conn.execute(query)]


def _certificate(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "host": row["host"],
        "kind": row["kind"],
        "hosts": json.loads(row["hosts"]),
        "names": json.loads(row["names"]),
        "spki_pin": row["spki_pin"],
        "tbs_sha256": row["tbs_sha256"],
        "log": row["log_url"],
        "index": row["log_index"],
        "entry_type": row["entry_type"],
        "not_before": row["not_before"],
        "not_after": row["not_after"],
        "issuer": row["issuer"],
        "first_seen": iso(row["first_seen_us"]),
        "last_seen": iso(row["last_seen_us"]),
        "duplicates": row["duplicates"],
        "source": row["source"],
    }


def query_ct_log_errors(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The logs' errors, most recently seen first."""
    table = ct_log_errors.c
    query = sa.select(ct_log_errors).order_by(table.last_seen_us.desc(), table.id.desc())
    return [
        {
            "log": row.log_url,
            "reason": row.reason,
            "first_seen": iso(row.first_seen_us),
            "last_seen": iso(row.last_seen_us),
            "duplicates": row.duplicates,
        }
        for row in conn.execute(query.limit(limit))
    ]
