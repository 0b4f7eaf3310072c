"""Chains stored once per distinct chain (schema v2), the v1 → v2 migration, on both databases."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from _support.pki import PKI, make_pki
from certpin.collector.dialects import Report, normalize_report
from certpin.collector.limits import IngestLimits, parse_json
from certpin.collector.store import Store, schema
from certpin.collector.store.schema import MIGRATIONS, PK, SCHEMA_VERSION, chain_sha256
from collector._helpers import certpin_report, dumps, pem


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        made = Store(str(tmp_path / "chains.sqlite3"))
    else:
        made = Store(request.getfixturevalue("pg_url"), schema=request.getfixturevalue("pg_schema"))
    try:
        yield made
    finally:
        if request.param == "postgres":
            made.drop_schema()
        made.close()


def _report(pki: PKI, report_id: str) -> Report:
    limits = IngestLimits()
    body = dumps({**certpin_report(pki), "report-id": report_id})
    return normalize_report(parse_json(body.decode(), limits), limits)


def _count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def _pems(pki: PKI, *, include_root: bool) -> list[str]:
    """The chain as the read API shows it (the test reports serve leaf + intermediate)."""
    chain = pki.leaf.chain_der(include_root=True)
    return [pem(der) + "\n" for der in (chain if include_root else chain[:2])]


def test_the_query_tables_describe_the_migrated_schema(store: Store) -> None:
    # The DDL of the migrations creates the tables; the Core tables only describe them.
    store.migrate()
    inspector = sa.inspect(store.engine)
    tables = (
        schema.reports,
        schema.chains,
        schema.seen_pins,
        schema.alerts,
        schema.ct_certificates,
        schema.ct_log_errors,
    )
    assert set(inspector.get_table_names()) == {t.name for t in tables} | {"schema_version"}
    for table in (*tables, schema.schema_version):
        columns = sorted(c["name"] for c in inspector.get_columns(table.name))
        assert columns == sorted(table.c.keys()), table.name
        assert set(inspector.get_pk_constraint(table.name)["constrained_columns"]) == {
            c.name for c in table.primary_key
        }


def test_each_distinct_chain_is_stored_once(store: Store, report_pki: PKI) -> None:
    other = make_pki(("reports.example.test",))
    store.migrate()
    store.insert_batch([(_report(report_pki, f"a-{i}"), "x") for i in range(5)])
    store.insert_batch([(_report(report_pki, f"b-{i}"), "x") for i in range(3)])
    store.insert_batch([(_report(other, "c-0"), "x"), (_report(report_pki, "c-1"), "x")])
    # Two PKIs × (validated chain, served chain) = 4 chains for 10 reports.
    assert _count(store, "reports") == 10
    assert _count(store, "chains") == 4
    rows = store.query_reports(limit=1000)
    by_id = {r["report_key"]: r for r in rows}
    for key in ("id:a-0", "id:b-2", "id:c-1"):
        assert by_id[key]["validated_chain"] == _pems(report_pki, include_root=True)
        assert by_id[key]["served_chain"] == _pems(report_pki, include_root=False)
    assert by_id["id:c-0"]["validated_chain"] == _pems(other, include_root=True)
    assert by_id["id:c-0"]["served_chain"] == _pems(other, include_root=False)


def test_a_rolled_back_batch_does_not_count_its_chains_as_stored(
    tmp_path: Path, report_pki: PKI
) -> None:
    # The chains of a batch that failed after inserting them were rolled back with it: the
    # next batch must insert them again, or its rows would point at nothing.
    store = Store(str(tmp_path / "rollback.sqlite3"))
    try:
        store.migrate()
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE seen_pins RENAME TO seen_pins_away")
        with pytest.raises(sa.exc.OperationalError, match="seen_pins"):
            store.insert_batch([(_report(report_pki, "first"), "x")])
        assert _count(store, "chains") == 0 and _count(store, "reports") == 0
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE seen_pins_away RENAME TO seen_pins")
        (outcome,) = store.insert_batch([(_report(report_pki, "second"), "x")])
        assert outcome.new
        (row,) = store.query_reports()
        assert row["validated_chain"] == _pems(report_pki, include_root=True)
        assert _count(store, "chains") == 2
    finally:
        store.close()


def _chain_text(ders: list[bytes]) -> str:
    return json.dumps([base64.b64encode(d).decode("ascii") for d in ders])


def test_a_v1_database_is_migrated_with_its_chains(store: Store, report_pki: PKI) -> None:
    # A database written by schema v1 (chains inline in every row) is upgraded in place: the
    # read API shows the same chains, each stored once, and new reports share them.
    kind = store.kind
    ((v1, steps),) = [m for m in MIGRATIONS if m[0] == 1]
    chain = report_pki.leaf.chain_der(include_root=True)
    validated, served = _chain_text(chain), _chain_text(chain[:2])
    with store.engine.begin() as conn:
        if store.schema is not None:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{store.schema}"')
            conn.exec_driver_sql(f'SET LOCAL search_path TO "{store.schema}"')
        conn.exec_driver_sql("CREATE TABLE schema_version (version INTEGER)")
        for step in steps:
            assert isinstance(step, str)
            conn.exec_driver_sql(step.format(pk=PK[kind]))
        conn.execute(sa.text("INSERT INTO schema_version VALUES (:v)"), {"v": v1})
        rows: list[dict[str, Any]] = [
            {"k": f"id:old-{i}", "r": 1_700_000_000_000_000 + i, "v": validated, "s": served}
            for i in range(1500)  # more than one of the migration's chunks
        ]
        conn.execute(
            sa.text(
                "INSERT INTO reports (report_key, received_us, dialect, hostname, known_pins, "
                "validated_chain, served_chain, body) VALUES "
                "(:k, :r, 'certpin', 'reports.example.test', '[]', :v, :s, '{}')"
            ),
            rows,
        )
    assert store.migrate() == SCHEMA_VERSION
    assert _count(store, "reports") == 1500
    assert _count(store, "chains") == 2
    with store.engine.connect() as conn:
        keys = conn.execute(
            sa.text("SELECT DISTINCT validated_chain_sha256, served_chain_sha256 FROM reports")
        ).all()
    assert keys == [(chain_sha256(validated), chain_sha256(served))]
    page = store.query_reports(limit=1000)
    assert len(page) == 1000
    assert all(r["validated_chain"] == _pems(report_pki, include_root=True) for r in page)
    assert all(r["served_chain"] == _pems(report_pki, include_root=False) for r in page)
    # A new report with the same chain adds no chain.
    store.insert_batch([(_report(report_pki, "new"), "x")])
    assert _count(store, "chains") == 2
    assert store.query_reports(limit=1)[0]["served_chain"] == _pems(report_pki, include_root=False)


@pytest.mark.parametrize(
    "extra",
    [
        {"app-bundle-id": 'Zürich ✓ 😀 "q" \\ end', "port": 443, "validation-result": -7},
        {"date-time": "9999-12-30T23:59:59.999999Z", "port": 0, "mode": "report-only"},
    ],
)
def test_a_new_row_stores_every_column_exactly(
    store: Store, report_pki: PKI, extra: dict[str, Any]
) -> None:
    # Postgres receives a batch's rows as one JSON parameter (json_to_recordset): every
    # value must come back as `_row` wrote it — text beyond ASCII, quotes and backslashes,
    # a raw body that is itself JSON, the largest time, NULLs, booleans, negative integers.
    from certpin.collector.store.writes import _ROW_COLUMNS, _row

    store.migrate()
    limits = IngestLimits()
    text = dumps({**certpin_report(report_pki), **extra}).decode()
    report = normalize_report(parse_json(text, limits), limits, raw=text)
    (outcome,) = store.insert_batch([(report, "::1")])
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(schema.reports)).one()._mapping
    expected = _row(report, "::1", row["received_us"])
    assert {name: row[name] for name in _ROW_COLUMNS} == expected
    assert row["id"] == outcome.id and row["body"] == text


@pytest.mark.parametrize("same_store", [True, False])
def test_a_key_known_committed_sends_no_seen_pins_statement(
    store: Store, report_pki: PKI, same_store: bool
) -> None:
    # (host, pin) pairs of seen_pins are never deleted: once committed, a Store remembers them
    # and the next batch on the same key skips the statement. Twin: a Store that has not seen
    # the pair commit (another replica, a restart) asks the database, which says "not new".
    store.migrate()
    (first,) = store.insert_batch([(_report(report_pki, "k-1"), "x")])
    url = store.url.render_as_string(hide_password=False)
    other = store if same_store else Store(url, schema=store.schema)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(other.engine, "before_cursor_execute", record)
    try:
        (second,) = other.insert_batch([(_report(report_pki, "k-2"), "x")])
    finally:
        sa.event.remove(other.engine, "before_cursor_execute", record)
        if other is not store:
            other.close()
    assert first.new_pin and second.new and not second.new_pin
    asked = [s for s in statements if "seen_pins" in s]
    assert len(asked) == (0 if same_store else 1)
    assert _count(store, "seen_pins") == 1
