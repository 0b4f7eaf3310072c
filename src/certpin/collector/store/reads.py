"""Reading reports back: the read API's pages and aggregates, the dashboard's window, the
alerts' counts. Every query is SQLAlchemy Core on a connection the `Store` opened."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from certpin.collector.store.schema import chains, reports
from certpin.core.times import from_micros

__all__ = [
    "count_since",
    "failures_per_bucket",
    "iso",
    "query_reports",
    "summary",
    "totals",
    "unexpected_keys",
]


def iso(us: int | None) -> str | None:
    """Stored microseconds as ISO 8601 UTC, exactly (no float: see `certpin.core.times`);
    None for a value no datetime holds (only rows stored before the bounds can hold one)."""
    when = None if us is None else from_micros(us)
    if when is None:
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _received(since_us: int | None, until_us: int | None = None) -> list[Any]:
    """The WHERE terms of a receive-time window: since inclusive, until exclusive."""
    where = []
    if since_us is not None:
        where.append(reports.c.received_us >= since_us)
    if until_us is not None:
        where.append(reports.c.received_us < until_us)
    return where


def count_since(conn: Connection, hostname: str, since_us: int) -> int:
    query = sa.select(sa.func.count()).where(
        reports.c.hostname == hostname, reports.c.received_us >= since_us
    )
    return int(conn.execute(query).scalar_one())


def totals(conn: Connection, since_us: int | None) -> tuple[int, int]:
    """(stored reports, duplicates counted) received since `since_us` (None: all)."""
    dups = sa.func.coalesce(sa.func.sum(reports.c.duplicates), 0)
    row = conn.execute(sa.select(sa.func.count(), dups).where(*_received(since_us))).one()
    return int(row[0]), int(row[1])


def query_reports(
    conn: Connection,
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
    query = (
        sa.select(reports)
        .where(*_received(since_us, until_us))
        .order_by(reports.c.id.desc())
        .limit(limit)
    )
    for column, value in (
        (reports.c.hostname, host),
        (reports.c.app_id, app),
        (reports.c.unexpected_pin, pin),
    ):
        if value is not None:
            query = query.where(column == value)
    if before_id is not None:
        query = query.where(reports.c.id < before_id)
    rows = [row._mapping for row in conn.execute(query)]
    keys = {r[c] for r in rows for c in ("validated_chain_sha256", "served_chain_sha256")}
    texts = dict(
        conn.execute(
            sa.select(chains.c.sha256, chains.c.ders).where(chains.c.sha256.in_(keys))
        ).all()
    )
    return [_public(row, texts) for row in rows]


def unexpected_keys(
    conn: Connection, since_us: int | None, until_us: int | None, top: int
) -> list[dict[str, Any]]:
    """The top unexpected keys: per (host, key) the leaf's subject and issuer, the reports,
    distinct sources and apps, first and last receive time; most reported first."""
    count = sa.func.count().label("reports")
    query = (
        sa.select(
            reports.c.hostname,
            reports.c.unexpected_pin.label("pin"),
            sa.func.max(reports.c.unexpected_subject).label("subject"),
            sa.func.max(reports.c.unexpected_issuer).label("issuer"),
            count,
            sa.func.count(sa.distinct(reports.c.source)).label("sources"),
            sa.func.count(sa.distinct(reports.c.app_id)).label("apps"),
            sa.func.min(reports.c.received_us).label("first_us"),
            sa.func.max(reports.c.received_us).label("last_us"),
        )
        .where(reports.c.unexpected_pin.is_not(None), *_received(since_us, until_us))
        .group_by(reports.c.hostname, reports.c.unexpected_pin)
        .order_by(count.desc(), reports.c.hostname, reports.c.unexpected_pin)
        .limit(top)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def summary(conn: Connection, since_us: int | None, top: int) -> dict[str, Any]:
    """Aggregates: per host, per unexpected key (with subject/issuer), per app and version."""
    where = _received(since_us)
    count = sa.func.count().label("reports")
    dups = sa.func.coalesce(sa.func.sum(reports.c.duplicates), 0).label("duplicates")
    last = sa.func.max(reports.c.received_us).label("last_us")
    hosts = conn.execute(
        sa.select(reports.c.hostname, count, dups, last)
        .where(*where)
        .group_by(reports.c.hostname)
        .order_by(count.desc(), reports.c.hostname)
        .limit(top)
    ).all()
    apps = conn.execute(
        sa.select(reports.c.app_id, reports.c.app_version, count)
        .where(*where)
        .group_by(reports.c.app_id, reports.c.app_version)
        .order_by(count.desc(), reports.c.app_id, reports.c.app_version)
        .limit(top)
    ).all()
    stored, duplicates = totals(conn, since_us)
    keys = unexpected_keys(conn, since_us, None, top)
    return {
        "total": {"reports": stored, "duplicates": duplicates},
        "hosts": [
            {"hostname": h, "reports": int(n), "duplicates": int(d), "last_seen": iso(t)}
            for h, n, d, t in hosts
        ],
        "unexpected_keys": [
            {
                "hostname": k["hostname"],
                "pin": k["pin"],
                "subject": k["subject"],
                "issuer": k["issuer"],
                "reports": int(k["reports"]),
                "last_seen": iso(k["last_us"]),
            }
            for k in keys
        ],
        "apps": [{"app": a, "version": v, "reports": int(n)} for a, v, n in apps],
    }


def failures_per_bucket(
    conn: Connection, start_us: int, width_us: int, buckets: int, hosts: int
) -> dict[str, list[int]]:
    """Reports per time bucket of the `hosts` hosts with most reports in the window of
    `buckets` buckets of `width_us` from `start_us`, most reported first."""
    in_window = _received(start_us, start_us + buckets * width_us)
    count = sa.func.count().label("n")
    top_hosts = conn.execute(
        sa.select(reports.c.hostname, count)
        .where(*in_window)
        .group_by(reports.c.hostname)
        .order_by(count.desc(), reports.c.hostname)
        .limit(hosts)
    ).scalars()
    chart = {host: [0] * buckets for host in top_hosts}
    if chart:
        # ``//`` is integer division on both SQLite and Postgres (SQLAlchemy 2 floordiv).
        bucket = ((reports.c.received_us - start_us) // width_us).label("bucket")
        for host, index, n in conn.execute(
            sa.select(reports.c.hostname, bucket, count)
            .where(*in_window, reports.c.hostname.in_(list(chart)))
            .group_by(reports.c.hostname, bucket)
        ):
            if 0 <= int(index) < buckets:
                chart[host][int(index)] = int(n)
    return chart


def _pems(text: str) -> list[str]:
    out = []
    for b64 in json.loads(text):
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        out.append(
            "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
        )
    return out


def _public(row: Any, chain_texts: dict[str, str]) -> dict[str, Any]:
    """A stored row as the read API shows it (chains as PEM, times as ISO 8601 UTC)."""
    return {
        "id": int(row["id"]),
        "report_key": row["report_key"],
        "received_at": iso(row["received_us"]),
        "duplicates": int(row["duplicates"]),
        "source": row["source"],
        "dialect": row["dialect"],
        "hostname": row["hostname"],
        "port": row["port"],
        "noted_hostname": row["noted_hostname"],
        "date_time": row["date_time"],
        "client_time": iso(row["client_time_us"]),
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
