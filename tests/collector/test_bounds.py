"""Times are bounded when a report is read, cross to the writer process as exact integers, and
the writer process outlives any one report (issue item 8): the year-10000 ``date-time`` that
killed it, a report the database refuses, a message it cannot read. Real HTTP, real writer
process, real SQLite and Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.pki import PKI
from certpin.collector._writer import ProcessWriter, StoreFailure
from certpin.collector.alerts import AlertConfig, Alerter
from certpin.collector.dialects import ReportError, normalize_report
from certpin.collector.limits import IngestLimits
from certpin.collector.store import Store
from certpin.core.times import LATEST, micros
from collector._helpers import (
    CollectorServer,
    certpin_report,
    rfc7469_report,
    trustkit_android_report,
)

#: The report of issue item 8: accepted by the parser, it killed the writer process.
ATTACK = "9999-12-31T23:59:59.999999+00:00"
TIME_FIELDS = ("date-time", "effective-expiration-date", "known-pins-expiration-date")
LATEST_US = micros(LATEST)

#: At the bounds (accepted) → the client time stored (None: no UTC offset, zone unknown).
AT_BOUNDS = [
    ("1970-01-01T00:00:00Z", 0),
    ("1970-01-01T00:00:00+00:00", 0),
    ("1969-12-31T19:00:00-05:00", 0),
    ("1970-01-01T23:59:59.999999+23:59:59.999999", 0),
    ("9999-12-31T00:00:00Z", LATEST_US),
    ("9999-12-31T23:59:00+23:59", LATEST_US),
    ("9999-12-30T00:01:00-23:59", LATEST_US),
    ("9999-12-31", None),  # a date, the usual "never" of an expiration
    ("1970-01-01", None),
]
#: One microsecond outside (and the attack and its relatives): refused, naming the field.
OUTSIDE = [
    ("1969-12-31T23:59:59.999999Z", "before 1970-01-01T00:00:00Z"),
    ("1969-12-31T18:59:59.999999-05:00", "before 1970-01-01T00:00:00Z"),
    ("1969-12-31", "before 1970-01-01T00:00:00Z"),
    ("0001-01-01T00:00:00+01:00", "before 1970-01-01T00:00:00Z"),  # astimezone overflowed: a 500
    ("9999-12-31T00:00:00.000001Z", "after 9999-12-31T00:00:00Z"),
    ("9999-12-30T23:00:00.000001-01:00", "after 9999-12-31T00:00:00Z"),
    ("9999-12-31T00:00:00.000001", "after 9999-12-31T00:00:00Z"),
    (ATTACK, "after 9999-12-31T00:00:00Z"),
    ("9999-12-31T23:59:59.999999-23:59", "after 9999-12-31T00:00:00Z"),
]


@pytest.mark.parametrize("field", TIME_FIELDS)
@pytest.mark.parametrize(("value", "stored"), AT_BOUNDS)
def test_times_at_the_bounds_are_accepted(
    field: str, value: str, stored: int | None, report_pki: PKI
) -> None:
    report = normalize_report({**rfc7469_report(report_pki), field: value}, IngestLimits())
    if field == "date-time":
        assert report.client_time_us == stored and report.date_time == value
    assert value in report.body


@pytest.mark.parametrize("field", TIME_FIELDS)
@pytest.mark.parametrize(("value", "reason"), OUTSIDE)
def test_times_one_microsecond_outside_are_refused(
    field: str, value: str, reason: str, report_pki: PKI
) -> None:
    for make in (rfc7469_report, trustkit_android_report):  # Android's time is bounded too
        with pytest.raises(ReportError, match=rf"^field '{field}': '.*' is {reason}$"):
            normalize_report({**make(report_pki), field: value}, IngestLimits())


def test_the_client_time_is_exact_microseconds(report_pki: PKI) -> None:
    def client_time(value: Any) -> int | None:
        body = {**rfc7469_report(report_pki), "date-time": value}
        return normalize_report(body, IngestLimits()).client_time_us

    when = dt.datetime(2025, 6, 7, 6, 9, 10, 123457, tzinfo=dt.UTC)
    assert client_time("2025-06-07T08:09:10.123457+02:00") == micros(when)
    assert client_time("2025-06-07T06:09:10.123457Z") == micros(when)
    assert type(client_time("2025-06-07T06:09:10Z")) is int
    # Not a time, or a time of an unknown zone: kept as sent, never interpreted.
    assert client_time("yesterday") is None
    assert client_time("2025-06-07T06:09:10") is None
    assert client_time(None) is None


# -- over HTTP, against the writer process ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(database URL, Postgres schema) of an empty database."""
    if request.param == "sqlite":
        yield str(tmp_path / "db" / "certpin.sqlite3"), None
    else:
        yield request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")


def _server(database: tuple[str, str | None]) -> CollectorServer:
    url, schema = database
    srv = CollectorServer(url, db_schema=schema, rate_limit=None)
    assert isinstance(srv.collector.writer, ProcessWriter)  # the default writer
    return srv


def _stored(database: tuple[str, str | None]) -> dict[str, Any]:
    """What a fresh connection finds after the server stopped: report_key -> client time."""
    store = Store(database[0], schema=database[1])
    try:
        return {r["report_key"]: r["client_time"] for r in store.query_reports(limit=100)}
    finally:
        store.close()


def test_the_year_10000_report_is_refused_and_the_writer_lives_on(
    database: tuple[str, str | None], report_pki: PKI
) -> None:
    with _server(database) as srv, srv.client() as client:
        writer = srv.collector.writer
        assert isinstance(writer, ProcessWriter) and writer.process is not None
        child = writer.process
        for _ in range(3):  # repeated, it kept ingest down for everyone
            attack = client.post(
                "/reports", json={**rfc7469_report(report_pki), "date-time": ATTACK}
            )
            assert attack.status_code == 400, attack.text
            assert attack.json()["error"] == (
                f"field 'date-time': {ATTACK!r} is after 9999-12-31T00:00:00Z"
            )
        for field in TIME_FIELDS:
            for value, reason in OUTSIDE:
                refused = client.post("/reports", json={**certpin_report(report_pki), field: value})
                assert refused.status_code == 400, (field, value, refused.text)
                assert refused.json()["error"].startswith(f"field '{field}': ")
                assert reason in refused.json()["error"]
        # The twins: valid reports, the times at both bounds included, are stored durably.
        keys = []
        for value in ("9999-12-31T00:00:00Z", "1969-12-31T19:00:00-05:00", "2025-01-02T03:04:05Z"):
            body = {**certpin_report(report_pki), "date-time": value}
            response = client.post("/reports", json=body)
            assert response.status_code == 201, response.text
            keys.append(response.json()["report_key"])
        assert child.exitcode is None and writer.process is child and writer.restarts == 0
    assert _stored(database) == dict(
        zip(
            keys,
            ["9999-12-31T00:00:00.000Z", "1970-01-01T00:00:00.000Z", "2025-01-02T03:04:05.000Z"],
            strict=True,
        )
    )


def test_a_report_the_database_refuses_fails_alone_in_the_writer_process(
    database: tuple[str, str | None], report_pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fault happens inside the child: a client time no BIGINT column holds (2**63), which
    # only a validation bug could let through — so the parent's validation is bypassed for
    # the one report marked "poison". SQLite's driver and Postgres both refuse the value.
    from certpin.collector import app

    validate = app.normalize_report

    def letting_through(data: Any, limits: IngestLimits, *, raw: str | None = None) -> Any:
        report = validate(data, limits, raw=raw)
        if report.app_version == "poison":
            report = dataclasses.replace(report, client_time_us=2**63)
        return report

    monkeypatch.setattr(app, "normalize_report", letting_through)
    bodies = [{**certpin_report(report_pki), "app-version": v} for v in ("a", "poison", "b", "c")]
    with _server(database) as srv:
        writer = srv.collector.writer
        assert isinstance(writer, ProcessWriter) and writer.process is not None
        child = writer.process

        def post(body: dict[str, Any]) -> httpx.Response:
            with srv.client() as client:
                return client.post("/reports", json=body)

        with ThreadPoolExecutor(len(bodies)) as pool:  # in one batch where they meet
            responses = list(pool.map(post, bodies))
        later = post({**certpin_report(report_pki), "app-version": "later"})
        assert child.exitcode is None and writer.process is child and writer.restarts == 0
    assert [r.status_code for r in responses] == [201, 503, 201, 201]
    assert responses[1].json()["error"] == "storage unavailable; retry later"
    assert later.status_code == 201
    assert len(_stored(database)) == 4


def test_a_message_the_writer_process_cannot_read_fails_alone(
    tmp_path: Path, report_pki: PKI
) -> None:
    # A message of the wrong shape (as a version skew or a bug would send), written to the real
    # child next to real reports: it is answered with an error, the others are stored.
    store = Store(str(tmp_path / "child.sqlite3"))
    store.migrate()
    writer = ProcessWriter(store, Alerter(store, AlertConfig()), max_batch=8, max_queue=100)
    good = [normalize_report(certpin_report(report_pki), IngestLimits()) for _ in range(2)]

    async def run() -> tuple[Any, Any, Any]:
        await writer.start()
        assert writer._link is not None and writer.process is not None
        child = writer.process
        bad: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer._waiting[-1] = (good[0], bad)
        assert writer._link.send([(-1, "127.0.0.1", ("too", "few", "fields"))])
        first = await writer.submit(good[0], "127.0.0.1")
        with pytest.raises(StoreFailure, match="the writer cannot read this report"):
            await bad
        second = await writer.submit(good[1], "127.0.0.1")
        assert child.exitcode is None and writer.process is child and writer.restarts == 0
        await writer.stop()
        return first, second, child.exitcode

    try:
        first, second, code = asyncio.run(run())
        assert first.new and second.new and code == 0
        assert store.totals() == (2, 0)
    finally:
        store.close()
