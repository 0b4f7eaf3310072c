"""The exit codes of ``certpin``: one table for every verb (docs/cli.md, "Exit codes")."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certpin.core.verdict import Verdict

__all__ = ["ExitCode", "for_verdict"]


class ExitCode(IntEnum):
    """What a ``certpin`` exit status means, whichever verb ran."""

    OK = 0
    """Success (``check``: the pins match, or the host is unpinned or its rule expired)."""
    FAILED = 1
    """A pin mismatch, a denied host, an error finding, or a refusal to do something unsafe."""
    USAGE = 2
    """A usage or input error: bad option, unreadable or invalid file, policy or key."""
    CONNECTION = 3
    """A connection or TLS failure: refused, timeout, untrusted CA, wrong name, expired."""
    EXPIRY_WARNING = 4
    """Only expiry warnings (``monitor``: within ``--warn-days``)."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C)."""


def for_verdict(result: Verdict) -> ExitCode:
    """``check``'s exit code: OK when a client would connect with CA validation and the pins
    agree (`Outcome` PINNED: match or unpinned; CA_ONLY: expired rule or kill switch); FAILED
    for a mismatch — also in report-only mode, so that CI notices before enforcement is
    switched on — and for a denied host."""
    from certpin.core.verdict import Outcome

    passing = {Outcome.PINNED, Outcome.CA_ONLY}
    return ExitCode.OK if result.outcome in passing else ExitCode.FAILED
