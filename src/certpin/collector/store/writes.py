"""Writing reports: one group commit for a batch, idempotent by ``report_key``.

Every statement is SQLAlchemy Core. A batch writes, in one transaction: the chains not yet
stored (``chains``, in key order), the new report rows (``INSERT … ON CONFLICT DO NOTHING
RETURNING id, report_key``: on SQLite executed over the whole batch, sent by SQLAlchemy as
multi-row statements; on Postgres one ``INSERT … SELECT`` from the rows as one JSON parameter,
see `_insert_reports`), one statement for their unexpected keys not yet known in
``seen_pins``, then an ``UPDATE`` per duplicate only. Every table is written in key order, so
replicas never wait on each other in a cycle.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from certpin.collector.dialects import Report
from certpin.collector.store.schema import chain_sha256, chains, insert, reports, seen_pins

__all__ = ["Committed", "Outcome", "chain_record", "insert_batch"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one report of a batch."""

    id: int
    new: bool
    """False when the report was a duplicate (its counter was incremented instead)."""
    new_pin: bool
    """True when the report's unexpected key was never seen before for its host."""


Committed = str | tuple[str, str]
"""A row known to be committed: a chain's key, or a ``seen_pins`` ``(host, pin)`` pair."""


@dataclass(frozen=True)
class _Statements:
    chains: Any
    reports: Any
    seen_pins: Any
    duplicate: Any


#: The columns a new report row is written with (`_row`), in table order.
_ROW_COLUMNS = tuple(c.name for c in reports.columns if c.name not in ("id", "last_duplicate_us"))


def _insert_reports(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (report_key) DO NOTHING RETURNING id, report_key`` for the
    batch's new rows.

    SQLite: one statement executed over the rows (SQLAlchemy sends it as multi-row
    statements). Postgres: ``INSERT … SELECT`` from ``json_to_recordset(:rows)`` — the rows as
    ONE JSON parameter, decoded by the server into the table's column types. A multi-row
    statement there had 29 parameters a row, and psycopg re-parses the placeholders of any
    statement with more than 50 of them, in Python, on every execution (≈ 90 µs of the
    writer's CPU per report, measured); one-row statements cost a round trip each. The rows
    go in the order of the array (a function scan), which is key order: see `insert_batch`.
    """
    if dialect == "sqlite":
        stmt = insert(dialect, reports)
    else:
        batch = (
            sa.func.json_to_recordset(sa.cast(sa.bindparam("rows"), postgresql.JSON))
            .table_valued(*(sa.column(name, reports.c[name].type) for name in _ROW_COLUMNS))
            .render_derived(name="batch", with_types=True)
        )
        stmt = postgresql.insert(reports).from_select(
            list(_ROW_COLUMNS), sa.select(*(batch.c[name] for name in _ROW_COLUMNS))
        )
    return stmt.on_conflict_do_nothing(index_elements=[reports.c.report_key]).returning(
        reports.c.id, reports.c.report_key
    )


@functools.cache
def _statements(dialect: str) -> _Statements:
    """The batch's statements for one dialect (built once; SQLAlchemy caches their SQL)."""
    return _Statements(
        chains=insert(dialect, chains).on_conflict_do_nothing(),
        reports=_insert_reports(dialect),
        seen_pins=insert(dialect, seen_pins)
        .on_conflict_do_nothing()
        .returning(seen_pins.c.hostname, seen_pins.c.pin),
        duplicate=sa.update(reports)
        .where(reports.c.report_key == sa.bindparam("key"))
        .values(duplicates=reports.c.duplicates + 1, last_duplicate_us=sa.bindparam("received"))
        .returning(reports.c.id),
    )


def insert_batch(
    conn: Connection,
    items: Sequence[tuple[Report, str | None]],
    received: int,
    committed: set[Committed],
) -> tuple[list[Outcome], set[Committed]]:
    """Write a batch of ``(report, source address)`` on `conn` (inside its transaction).

    `committed` holds rows known to be committed before (chain keys, ``(host, pin)`` pairs of
    ``seen_pins``; rows of both are never deleted): the batch does not write them again. A pair
    known there is not new, so a batch of reports on keys seen before sends no ``seen_pins``
    statement at all.

    Returns one `Outcome` per item, in order, and the rows this batch writes or finds present
    (chain keys and pairs: the caller adds them to `committed` once the commit returned). A
    key given twice in one batch is inserted once; the later copies are duplicates, exactly
    as if they had come in later batches.
    """
    sql = _statements(conn.dialect.name)
    order = sorted(range(len(items)), key=lambda i: items[i][0].report_key)
    first: dict[str, int] = {}  # report_key -> index of its first copy in the batch
    for i in order:
        first.setdefault(items[i][0].report_key, i)
    rows: list[dict[str, Any]]
    new_chains: dict[str, str] = {}
    for i in first.values():
        for ders in (items[i][0].validated_chain, items[i][0].served_chain):
            key, text = chain_record(ders)
            if key not in committed:
                new_chains[key] = text
    if new_chains:
        rows = [{"sha256": key, "ders": text} for key, text in sorted(new_chains.items())]
        conn.execute(sql.chains, rows)
    ids: dict[str, int] = {}
    if first:
        rows = [_row(items[i][0], items[i][1], received) for i in first.values()]
        params: Any = rows
        if conn.dialect.name != "sqlite":
            params = {"rows": json.dumps(rows, ensure_ascii=False, separators=(",", ":"))}
        ids = {key: int(row_id) for row_id, key in conn.execute(sql.reports, params)}
    outcomes: dict[int, Outcome] = {}
    fresh: list[tuple[int, int, Report]] = []
    for i in order:
        report = items[i][0]
        key = report.report_key
        if first[key] == i and key in ids:
            fresh.append((i, ids[key], report))
            continue
        dup = conn.execute(sql.duplicate, {"key": key, "received": received}).scalar_one()
        outcomes[i] = Outcome(int(dup), new=False, new_pin=False)
    # New keys after all report rows, in one global order (deadlock-free replicas).
    fresh.sort(key=lambda t: (t[2].hostname, t[2].unexpected_pin or ""))
    pins: dict[tuple[str, str], int] = {}  # (host, pin) -> first fresh report's index
    for i, _row_id, report in fresh:
        pair = (report.hostname, report.unexpected_pin or "")
        if report.unexpected_pin is not None and pair not in committed:
            pins.setdefault(pair, i)
    new_pins: set[tuple[str, str]] = set()
    if pins:
        rows = [
            {
                "hostname": host,
                "pin": pin,
                "first_seen_us": received,
                "first_report_key": items[i][0].report_key,
            }
            for (host, pin), i in pins.items()
        ]
        new_pins = {(host, pin) for host, pin in conn.execute(sql.seen_pins, rows)}
    for i, row_id, report in fresh:
        pair = (report.hostname, report.unexpected_pin or "")
        outcomes[i] = Outcome(row_id, new=True, new_pin=pair in new_pins and pins.get(pair) == i)
    return [outcomes[i] for i in range(len(items))], {*new_chains, *pins}


@functools.lru_cache(maxsize=512)
def chain_record(ders: tuple[bytes, ...]) -> tuple[str, str]:
    """A chain as stored: (its key, a JSON array of base64 DER). Cached: reports repeat the
    same chains."""
    text = json.dumps([base64.b64encode(d).decode("ascii") for d in ders])
    return chain_sha256(text), text


def _row(report: Report, source: str | None, received: int) -> dict[str, Any]:
    """A new report's values by column."""
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
        "validated_chain_sha256": chain_record(report.validated_chain)[0],
        "served_chain_sha256": chain_record(report.served_chain)[0],
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
