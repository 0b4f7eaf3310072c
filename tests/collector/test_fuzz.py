"""Fuzzing the live collector: hypothesis bodies and schemathesis from /openapi.json → no 5xx;
and the report parser itself (`parse_json`, `normalize_report`) on hostile JSON: it returns a
bounded, storable report or raises its own error naming the field, in time linear in the body."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import pickle
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from _support.pki import make_pki
from certpin.collector._writer import _pack, _unpack
from certpin.collector.dialects import (
    _STRING_FIELDS,
    REQUIRED_FIELDS,
    Report,
    ReportError,
    _decode_pem,
    _parse_pin,
    _unexpected,
    normalize_report,
)
from certpin.collector.limits import IngestLimits, LimitError, parse_json
from certpin.core.times import EARLIEST, LATEST, micros
from collector._helpers import TRUSTKIT_SAMPLE, CollectorServer, pem, rfc7469_report

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorServer]:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    with CollectorServer(str(path), rate_limit=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: CollectorServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)

_GOOD = rfc7469_report(make_pki(("fuzz.example.test",)))
_SAMPLE = json.loads(TRUSTKIT_SAMPLE.read_text())
_FIELDS = sorted({*_GOOD, *_SAMPLE, "app-platform", "certpin-version", "mode", "report-id"})


@st.composite
def mutated_reports(draw: st.DrawFn) -> dict[str, Any]:
    """A real report with some fields replaced, removed or added: reaches the deep checks."""
    body: dict[str, Any] = dict(draw(st.sampled_from([_GOOD, _SAMPLE])))
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=4)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    return body


@SETTINGS
@given(body=st.binary(max_size=300))
def test_random_bytes_never_5xx(client: httpx.Client, body: bytes) -> None:
    response = client.post("/reports", content=body)
    assert 400 <= response.status_code < 500 or response.status_code in (200, 201)
    assert response.json()["error"] if response.status_code >= 400 else True


@SETTINGS
@given(body=json_values)
def test_random_json_never_5xx(client: httpx.Client, body: Any) -> None:
    response = client.post("/reports", content=json.dumps(body).encode())
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]


@SETTINGS
@given(body=mutated_reports())
def test_mutated_reports_never_5xx(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/reports", content=json.dumps(body).encode())
    assert response.status_code in (200, 201) or 400 <= response.status_code < 500, response.text


@SETTINGS
@given(
    params=st.dictionaries(
        st.sampled_from(["host", "since", "until", "app", "pin", "limit", "cursor"]),
        st.text(max_size=30),
        max_size=4,
    )
)
def test_random_query_parameters_never_5xx(
    client: httpx.Client, server: CollectorServer, params: dict[str, str]
) -> None:
    response = client.get("/api/reports", params=params, headers=server.auth)
    assert response.status_code in (200, 400), response.text


def test_schemathesis_finds_no_server_error(server: CollectorServer) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            nonlocal calls
            response = case.call(base_url=server.url, headers=server.auth)
            calls += 1
            assert response.status_code < 500, (case, response.status_code, response.text)

        check()
    assert calls > 50  # every operation was exercised


def test_fuzzing_left_only_valid_reports(server: CollectorServer) -> None:
    with server.client() as client:
        rows = client.get("/api/reports", headers=server.auth, params={"limit": 1000}).json()
    assert all(row["hostname"] and isinstance(row["known_pins"], list) for row in rows["reports"])


# -- the parser on its own: hostile JSON straight into normalize_report ----------------------------

_PKI = make_pki(("fuzz.example.test",))
_REPORT = rfc7469_report(_PKI, "fuzz.example.test")
_PEMS = _REPORT["validated-certificate-chain"]
_PINS = _REPORT["known-pins"]
_READ = sorted(
    {name for name, _ in _STRING_FIELDS}
    | {name for names in REQUIRED_FIELDS.values() for name in names}
    | {
        "port",
        "validation-result",
        "include-subdomains",
        "enforce-pinning",
        "served-certificate-chain",
        "validated-certificate-chain",
    }
)
_ERROR = re.compile(
    r"^(field '[a-z-]+(\[\d+\])?': |[a-z0-9-]+ report: |a report must be |report is not canonical)"
)


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _flip(text: str, at: int, char: str) -> str:
    at %= max(1, len(text))
    return text[:at] + char + text[at + 1 :]


_OFFSETS = st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)
)
_EDGES = st.one_of(
    st.datetimes(),
    st.datetimes(dt.datetime(1969, 12, 30), dt.datetime(1970, 1, 2)),
    st.datetimes(dt.datetime(9999, 12, 29)),
)
_TIMES = st.one_of(
    st.builds(
        lambda when, offset: when.replace(tzinfo=dt.timezone(offset)).isoformat(),
        _EDGES,
        _OFFSETS,
    ),
    st.datetimes().map(dt.datetime.isoformat),
    st.dates().map(dt.date.isoformat),
    st.sampled_from(
        [
            "9999-12-31T23:59:59.999999+00:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
        ]
    ),
)
_HOSTILE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 10**4000, -(10**4000)]),
    st.floats(),  # NaN and ±Infinity included
    st.text(st.characters(exclude_categories=[]), max_size=40),  # surrogates, NUL, non-ASCII
    st.builds(lambda c, n: c * n, st.characters(exclude_categories=[]), st.integers(0, 70_000)),
    _TIMES,
    st.builds(_flip, st.sampled_from(_PEMS), st.integers(0, 2000), st.characters()),
    st.builds(_flip, st.sampled_from(_PINS), st.integers(0, 60), st.characters()),
    st.integers(1, 3000).map(_nested),  # past the interpreter's recursion limit
)
_HOSTILE = st.recursive(
    _HOSTILE_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


_TIME_FIELDS = ("date-time", "effective-expiration-date", "known-pins-expiration-date")
_NUMBERS = st.one_of(
    st.integers(-70_000, 70_000),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, 10**4000]),
    st.floats(),
)
#: Values of the right type and shape, near the edges, for the fields certpin reads.
_NEAR_MISSES: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(_TIME_FIELDS, _TIMES),
    "port": _NUMBERS,
    "validation-result": _NUMBERS,
    "validated-certificate-chain": st.lists(_HOSTILE_SCALARS, max_size=12),
    "served-certificate-chain": st.lists(_HOSTILE_SCALARS, max_size=12),
    "known-pins": st.lists(_HOSTILE_SCALARS, max_size=70),
    "x-unknown": _HOSTILE,  # kept in the body, never read: deep nesting reaches the dump
}


@st.composite
def _hostile_reports(draw: st.DrawFn) -> Any:
    """A valid report with fields replaced by anything (wrong types at every field) or by near
    misses of the right type, removed, or added; now and then no object at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(_HOSTILE)
    body: dict[str, Any] = dict(draw(st.sampled_from([_REPORT, _SAMPLE])))
    if draw(st.booleans()):  # the times are where the writer process was killed
        body[draw(st.sampled_from(_TIME_FIELDS))] = draw(_TIMES)
    names = st.sampled_from([*_READ, "x-unknown"]) | st.text(max_size=12)
    for name in draw(st.lists(names, max_size=6)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            body.pop(name, None)
        elif choice == 1 or name not in _NEAR_MISSES:
            body[name] = draw(_HOSTILE)
        else:
            body[name] = draw(_NEAR_MISSES[name])
    return body


def _check_accepted(report: Report, limits: IngestLimits) -> None:
    """What may reach the writer: every number and time in bounds, every value exact, every
    text storable."""
    assert report.port is None or (type(report.port) is int and 1 <= report.port <= 65535)
    vr = report.validation_result
    assert vr is None or (type(vr) is int and -(2**31) <= vr < 2**31)
    t = report.client_time_us
    assert t is None or (type(t) is int and micros(EARLIEST) <= t <= micros(LATEST))
    assert len(report.validated_chain) <= limits.max_chain
    assert len(report.served_chain) <= limits.max_chain
    assert len(report.known_pins) <= limits.max_pins
    values = _pack(report)
    assert not any(isinstance(v, float) for v in values)
    assert _unpack(pickle.loads(pickle.dumps(values))) == report
    for value in values:
        for text in value if isinstance(value, tuple) else (value,):
            if isinstance(text, str):
                text.encode("utf-8")  # no unpaired surrogate: every database stores it


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=_hostile_reports())
def test_normalize_report_returns_a_bounded_report_or_its_own_error(data: Any) -> None:
    limits = IngestLimits()
    try:
        report = normalize_report(data, limits)
    except ReportError as exc:
        assert _ERROR.match(str(exc)), str(exc)
        return
    _check_accepted(report, limits)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([_REPORT], "a report must be a JSON object, got an array"),
        ("{}", "a report must be a JSON object, got a string"),
        ({**_REPORT, "x": _nested(5000)}, "report is not canonical"),
        ({**_REPORT, "x": 10**5000}, "report is not canonical"),
        ({**_REPORT, "port": -(10**5000)}, "field 'port': a number beyond ±2**64 is outside"),
        ({**_REPORT, "port": float("nan")}, "field 'port': expected an integer, got a number"),
    ],
    ids=["array", "string", "deep", "huge-int", "huge-port", "nan-port"],
)
def test_hostile_shapes_are_refused_naming_why(data: Any, error: str) -> None:
    # What parse_json never hands over (it bounds depth and digits first), from other callers.
    with pytest.raises(ReportError, match=re.escape(error)):
        normalize_report(data, IngestLimits())


def test_an_unpaired_surrogate_in_an_unread_field_is_stored_escaped() -> None:
    report = normalize_report({**_REPORT, "x": "\ud800"}, IngestLimits())
    assert '"x":"\\ud800"' in report.body  # the JSON escape, as a raw body would hold it
    report.body.encode("utf-8")


_TEXT_PIECES = st.one_of(
    st.sampled_from(
        ["NaN", "-Infinity", "Infinity", "1e999", "-1e999", "9" * 5000, "1e-999", "-0", "[]", "{}"]
    ),
    st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n),  # deep nesting as text
    st.integers(1, 100_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.text(max_size=20).map(json.dumps),
    st.just('"\\ud800"'),
    st.just('"\\u0000"'),
)


@st.composite
def _hostile_texts(draw: st.DrawFn) -> str:
    """Report bodies as text: duplicate keys, NaN/Infinity, numbers past every limit, nesting
    far past the depth limit, where the parsed-value fuzzing cannot put them."""
    body = dict(draw(st.sampled_from([_REPORT, _SAMPLE])))
    members = [json.dumps(k) + ":" + json.dumps(v) for k, v in body.items()]
    for _ in range(draw(st.integers(1, 4))):
        name = json.dumps(draw(st.sampled_from(_READ) | st.text(max_size=8)))
        members.insert(draw(st.integers(0, len(members))), name + ":" + draw(_TEXT_PIECES))
    return "{" + ",".join(members) + "}"


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=_hostile_texts())
def test_parse_and_normalize_raise_only_their_own_error(text: str) -> None:
    limits = IngestLimits(max_bytes=10**7)
    try:
        report = normalize_report(parse_json(text, limits), limits, raw=text)
    except LimitError as exc:
        assert str(exc)
        return
    _check_accepted(report, limits)


# -- linear in the report's size -------------------------------------------------------------------

_BIG = IngestLimits(
    max_bytes=10**8, max_items=10**7, max_string=10**8, max_chain=10**4, max_pins=10**5
)


def _fresh(body: Any) -> None:
    """Parse a report with every cache empty: the work measured is the work of a new report."""
    for cached in (_decode_pem, _parse_pin, _unexpected):
        cached.cache_clear()
    normalize_report(body, _BIG)


def test_normalize_report_is_linear_in_string_length() -> None:
    assert_near_linear(
        _fresh, lambda n: {**_REPORT, "verdict-reason": "é✓" * (n // 2)}, base=400_000
    )


def test_normalize_report_is_linear_in_chain_length() -> None:
    # Distinct PEM texts of one certificate (a line break moved): every one parsed afresh.
    b64 = base64.b64encode(_PKI.leaf.der()).decode()

    def chain(n: int) -> dict[str, Any]:
        return {
            **_REPORT,
            "validated-certificate-chain": [
                f"-----BEGIN CERTIFICATE-----\n{b64[:k]}\n{b64[k:]}\n-----END CERTIFICATE-----"
                for k in range(1, n + 1)
            ],
        }

    assert len(b64) > 8 * 80
    assert_near_linear(_fresh, chain, base=80)


def test_normalize_report_is_linear_in_known_pins() -> None:
    def pins(n: int) -> dict[str, Any]:
        digests = (hashlib.sha256(str(i).encode()).digest() for i in range(n))
        return {
            **_REPORT,
            "known-pins": [f"sha256/{base64.b64encode(d).decode()}" for d in digests],
        }

    assert_near_linear(_fresh, pins, base=512)


def test_a_pem_is_checked_in_linear_time() -> None:
    # The lazy match between the markers meets an END marker at every step: still linear.
    def pems(n: int) -> str:
        return "-----BEGIN CERTIFICATE-----" + "-----END CERTIFICATE-----x" * n

    assert_near_linear(_decode_pem.__wrapped__, pems, base=8000)
    assert _decode_pem.__wrapped__(pem(_PKI.leaf.der())) == _PKI.leaf.der()  # the twin


def test_a_whole_body_is_read_in_linear_time() -> None:
    def body(n: int) -> str:
        return json.dumps({**_REPORT, "x-extra": ["ab"] * n, "verdict-reason": "r" * n})

    assert_near_linear(
        lambda text: normalize_report(parse_json(text, _BIG), _BIG, raw=text), body, base=20_000
    )
