"""`certpin run` beyond the matrix: host names checked by certpin itself when a client turned
``check_hostname`` off, CA and pin failures reported to ``--report-uri``, and
``unpinned_hosts = "deny"``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from process._harness import PINNED, UNPINNED, Material, Stack, Traffic, has_module, run_client
from process._servers import CountingTLSServer, MitmProxy, ReportReceiver
from process.test_matrix import CLIENTS, Client, assert_refused, assert_served

BY_NAME = {c.name: c for c in CLIENTS}
#: Clients that can keep certificate verification on and turn host-name checking off.
NO_CHECK_HOSTNAME = ["urllib", "http.client", "urllib3", "httpx", "aiohttp", "truststore"]


def _client(name: str) -> Client:
    client = BY_NAME[name]
    for module in client.requires:
        if not has_module(module):
            pytest.skip(f"{client.name} needs the {module} package")
    return client


def _env(material: Material, client: Client) -> dict[str, str] | None:
    return client.env(material) if client.env else None


@pytest.fixture(scope="module")
def wrong_name_server(material: Material) -> Iterator[CountingTLSServer]:
    """Serves a certificate from the trusted good CA, with the pinned leaf key, issued for
    ``elsewhere.example`` only."""
    with CountingTLSServer(material.wrong_name_cert, material.wrong_name_key) as server:
        yield server


@pytest.mark.parametrize("pinned", [True, False], ids=["certpin", "without-certpin"])
@pytest.mark.parametrize("name", NO_CHECK_HOSTNAME)
def test_check_hostname_off_wrong_name(
    name: str, pinned: bool, material: Material, wrong_name_server: CountingTLSServer
) -> None:
    """certpin checks the name the client does not; the twin without certpin shows the client
    really does not check names (only certpin refused)."""
    client = _client(name)
    with Traffic(wrong_name_server) as traffic:
        run = run_client(
            material,
            name,
            PINNED,
            wrong_name_server.port,
            args=["--no-check-hostname"],
            env=_env(material, client),
            pinned=pinned,
        )
    if pinned:
        assert_refused(run, traffic)
        assert "not issued for" in run.result["error"], run.describe()
    else:
        assert_served(run, client)
        assert traffic.bytes > 0


@pytest.mark.parametrize("name", NO_CHECK_HOSTNAME)
def test_check_hostname_off_right_name_passes(
    name: str, material: Material, stacks: Callable[[str], Stack]
) -> None:
    client = _client(name)
    good = stacks("http").good
    env = _env(material, client)
    run = run_client(material, name, PINNED, good.port, args=["--no-check-hostname"], env=env)
    assert_served(run, client)


# -- reports --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReportReceiver]:
    with ReportReceiver() as collector:
        yield collector


@pytest.fixture(scope="module")
def untrusted_mitm(material: Material, stacks: Callable[[str], Stack]) -> Iterator[MitmProxy]:
    """An interceptor whose CA the client does not trust (a CA failure, not a pin failure)."""
    proxy = material.mitm(stacks("http").good.port, material.untrusted)
    yield proxy
    proxy.stop()


def _reported(
    material: Material, receiver: ReportReceiver, name: str, host: str, port: int
) -> tuple[dict[str, object], list[object]]:
    client = _client(name)
    seen = len(receiver.reports)
    # The report URI's host is not pinned ("localhost"): a report about 127.0.0.1 sent to
    # 127.0.0.1 would be held back (the reporter never reports over the failing host).
    run = run_client(
        material,
        name,
        host,
        port,
        env=_env(material, client),
        run_options=["--report-uri", receiver.url("localhost")],
    )
    # The reporter flushes at interpreter exit (certpin.reporting): the process has exited.
    return run.result, receiver.reports[seen:]


def _only_report(reports: list[object], validation_result: int, status: str) -> dict[str, object]:
    """The one report sent about the pinned host, with its validation result and status."""
    assert len(reports) == 1, reports
    report = reports[0]
    assert isinstance(report, dict)
    assert report["validation-result"] == validation_result
    assert report["verdict-status"] == status
    assert report["hostname"] == PINNED
    return report


@pytest.mark.parametrize("name", ["urllib", "aiohttp"])
def test_ca_failure_on_pinned_host_is_reported(
    name: str, material: Material, receiver: ReportReceiver, untrusted_mitm: MitmProxy
) -> None:
    with Traffic(untrusted_mitm) as traffic:
        result, reports = _reported(material, receiver, name, PINNED, untrusted_mitm.port)
    assert result["ok"] is False and result["cert_error"] and not result["pin_error"], result
    assert traffic.bytes == 0
    report = _only_report(reports, 2, "untrusted")
    assert report["validated-certificate-chain"] == []


@pytest.mark.parametrize("name", ["urllib", "aiohttp"])
def test_ca_failure_on_unpinned_host_is_not_reported(
    name: str, material: Material, receiver: ReportReceiver, untrusted_mitm: MitmProxy
) -> None:
    result, reports = _reported(material, receiver, name, UNPINNED, untrusted_mitm.port)
    assert result["ok"] is False and result["cert_error"] and not result["pin_error"], result
    assert reports == []


@pytest.mark.parametrize("name", ["urllib", "aiohttp"])
def test_pin_failure_is_reported(
    name: str, material: Material, receiver: ReportReceiver, stacks: Callable[[str], Stack]
) -> None:
    mitm = stacks("http").mitm
    result, reports = _reported(material, receiver, name, PINNED, mitm.port)
    assert result["ok"] is False and result["pin_error"], result
    report = _only_report(reports, 1, "failed")
    assert report["validated-certificate-chain"], "a pin failure has a verified chain"


# -- unpinned_hosts = "deny" ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["urllib", "requests", "httpx-async"])
def test_deny_pins_every_host(
    name: str, material: Material, stacks: Callable[[str], Stack]
) -> None:
    client = _client(name)
    stack = stacks("http")
    env = _env(material, client)
    # An unpinned host, through the interceptor: refused like a pinned one.
    with Traffic(stack.mitm) as traffic:
        run = run_client(
            material, name, UNPINNED, stack.mitm.port, policy=material.deny_policy, env=env
        )
    assert_refused(run, traffic)
    # Even the genuine server, under a name no rule covers.
    with Traffic(stack.good) as good_traffic:
        run = run_client(
            material, name, UNPINNED, stack.good.port, policy=material.deny_policy, env=env
        )
    assert run.result["ok"] is False and run.result["pin_error"], run.describe()
    assert good_traffic.bytes == 0
    # The pinned host still works.
    run = run_client(material, name, PINNED, stack.good.port, policy=material.deny_policy, env=env)
    assert_served(run, client)
