"""Time formatting and parsing for the lifecycle, monitor and format tools: one of each.

Every time certpin prints or stores is UTC with a ``Z`` and whole seconds (`iso`), or a bare UTC
date (`day`); every time it reads from a user or a file goes through `parse_iso`.
"""

from __future__ import annotations

import datetime as dt
from typing import overload

__all__ = ["day", "iso", "parse_iso"]


@overload
def iso(when: dt.datetime) -> str: ...
@overload
def iso(when: None) -> None: ...
def iso(when: dt.datetime | None) -> str | None:
    """``2026-01-31T12:00:00Z`` (UTC, whole seconds); None stays None."""
    return None if when is None else when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day(when: dt.datetime) -> str:
    """``2026-01-31``: the UTC date of `when`."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d")


def parse_iso(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time (``Z`` accepted) as an aware UTC datetime.

    A value without a time zone is taken as UTC; a bare date means 00:00 UTC that day.

    Raises:
        ValueError: `text` is not an ISO 8601 date or date-time.
    """
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
