"""Verdict -> outcome: the one classification the TLS hook, the monitor and `certpin check`
share (issue 13: "Verdict → outcome/exit code in one place")."""

from __future__ import annotations

import datetime as dt

import pytest

from certpin import VerdictStatus
from certpin.core.verdict import Outcome, Verdict

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

EXPECTED = {
    VerdictStatus.OK: Outcome.PINNED,
    VerdictStatus.UNPINNED: Outcome.PINNED,
    VerdictStatus.EXPIRED: Outcome.CA_ONLY,
    VerdictStatus.KILLED: Outcome.CA_ONLY,
    VerdictStatus.FAILED: Outcome.MISMATCH,
    VerdictStatus.TOFU_MISMATCH: Outcome.MISMATCH,
    VerdictStatus.UNTRUSTED: Outcome.MISMATCH,
    VerdictStatus.DENIED: Outcome.DENIED,
}


def _verdict(status: VerdictStatus) -> Verdict:
    return Verdict(status, "a.example", None, (), None, "why", NOW)


def test_every_status_has_exactly_one_outcome() -> None:
    assert set(EXPECTED) == set(VerdictStatus)  # a new status must be classified here too
    for status, outcome in EXPECTED.items():
        assert _verdict(status).outcome is outcome


@pytest.mark.parametrize("status", list(VerdictStatus))
def test_allowed_agrees_with_the_outcome(status: VerdictStatus) -> None:
    # Without a report-only rule, exactly the PINNED and CA_ONLY outcomes let a connection in.
    result = _verdict(status)
    assert result.allowed == (result.outcome in {Outcome.PINNED, Outcome.CA_ONLY})
