"""A chain that failed CA or host-name validation on a pinned host: `untrusted()` (issue 16,
"CA-validation failures on pinned hosts are reported"), and the name check certpin runs itself
for contexts whose owner turned ``check_hostname`` off (`certificate_names_match`)."""

from __future__ import annotations

import datetime as dt

import pytest

from certpin import Policy, VerdictStatus
from certpin.core.hosts import certificate_names_match
from certpin.core.verdict import Outcome, untrusted

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
PIN_A = "sha256/AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
PIN_B = "sha256/AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="


def _policy(**extra: object) -> Policy:
    return Policy.from_dict(
        {
            "domains": {
                "api.example.com": {"pins": [PIN_A, PIN_B]},
                "report.example.com": {"pins": [PIN_A, PIN_B], "enforce": False},
            },
            **extra,
        }
    )


def test_a_pinned_host_gets_an_untrusted_verdict_that_is_never_allowed() -> None:
    result = untrusted("API.example.com.", _policy(), "CA validation failed: expired", NOW)
    assert result is not None
    assert result.status is VerdictStatus.UNTRUSTED
    assert result.host == "api.example.com"
    assert result.rule is not None and result.rule.pattern == "api.example.com"
    assert result.chain == () and result.reason == "CA validation failed: expired"
    assert result.outcome is Outcome.MISMATCH
    assert not result.allowed


def test_report_only_does_not_let_an_untrusted_chain_through() -> None:
    result = untrusted("report.example.com", _policy(), "self-signed", NOW)
    assert result is not None and result.report_only
    assert not result.allowed  # OpenSSL refused the chain; report-only cannot undo that


def test_an_unpinned_host_is_no_business_of_the_pins() -> None:
    assert untrusted("other.example.com", _policy(), "expired", NOW) is None
    assert untrusted("not a host", _policy(), "expired", NOW) is None


def test_deny_makes_every_host_pinned() -> None:
    result = untrusted("other.example.com", _policy(unpinned_hosts="deny"), "expired", NOW)
    assert result is not None and result.rule is None
    assert result.status is VerdictStatus.UNTRUSTED


def test_a_naive_clock_is_utc() -> None:
    result = untrusted("api.example.com", _policy(), "x", NOW.replace(tzinfo=None))
    assert result is not None and result.now == NOW


@pytest.mark.parametrize(
    ("host", "dns", "ips", "expected"),
    [
        ("api.example.com", ["api.example.com"], [], True),
        ("API.Example.COM.", ["api.example.com"], [], True),
        ("api.example.com", ["other.example.com"], [], False),
        ("api.example.com", ["*.example.com"], [], True),
        ("example.com", ["*.example.com"], [], False),  # a wildcard is one label, not none
        ("a.api.example.com", ["*.example.com"], [], False),  # ... and not two
        ("api.example.com", ["a*.example.com"], [], False),  # no partial wildcards
        ("api.example.com", ["*.*.com"], [], False),
        ("example.com", ["*.com"], [], False),  # two labels after the wildcard at least
        ("api.example.com", ["api.example.*"], [], False),
        ("api.example.com", ["bad name!"], [], False),
        ("api.example.com", [], ["127.0.0.1"], False),
        ("127.0.0.1", ["127.0.0.1"], [], False),  # an address matches address entries only
        ("127.0.0.1", [], ["127.0.0.1"], True),
        ("127.1", [], ["127.0.0.1"], True),  # the inet_aton spelling of the same address
        ("::1", [], ["0:0:0:0:0:0:0:1"], True),
        ("127.0.0.1", [], ["127.0.0.2", "not an ip"], False),
        ("xn--bcher-kva.example", ["bücher.example"], [], True),
        ("not a host", ["not a host"], [], False),
    ],
)
def test_certificate_names_match(host: str, dns: list[str], ips: list[str], expected: bool) -> None:
    assert certificate_names_match(host, dns, ips) is expected
