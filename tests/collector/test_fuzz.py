"""Fuzzing the live collector: hypothesis bodies and schemathesis from /openapi.json → no 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _support.pki import make_pki
from collector._helpers import TRUSTKIT_SAMPLE, CollectorServer, rfc7469_report

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
