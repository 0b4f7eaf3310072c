"""Dates and times: the one place certpin parses or formats them.

Every time certpin prints or stores is UTC with a ``Z`` and whole seconds (`iso`), or a bare UTC
date (`day`); every time it reads from a user or a file goes through `parse_iso`, a policy's
``expires`` through `parse_expiry`. A date alone means 00:00:00Z of that day (Android NSC,
TrustKit), and a time without a zone is UTC.

Report times (the collector). Every time a report carries (``date-time``,
``effective-expiration-date``, ``known-pins-expiration-date``) is attacker-controlled. One that
reads as an ISO 8601 date or date-time must lie within [`EARLIEST`, `LATEST`] (`read_time`), or
the report is refused naming the field; it then travels (to the writer process, to the
database) as an ``int`` of microseconds, never a float: ``9999-12-31T23:59:59.999999`` as float
seconds rounds up into year 10000, which no ``datetime`` holds — one such report used to kill the
writer process.

* `EARLIEST` = 1970-01-01T00:00:00Z, the epoch: a device whose clock was reset reads from there.
* `LATEST` = 9999-12-31T00:00:00Z, the last date four-digit years name (``9999-12-31``, the usual
  "never" of an expiration date) as an instant.

Every instant in between has a local time in every UTC offset (offsets are under 24 h), so no
later conversion can leave what a ``datetime`` holds. Integer arithmetic decides the bounds: the
offset is never applied to a ``datetime`` (``astimezone`` itself overflows at the edges).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import overload

from certpin._errors import CertpinError

__all__ = [
    "EARLIEST",
    "LATEST",
    "TimeError",
    "day",
    "expiry_text",
    "from_micros",
    "instant",
    "iso",
    "micros",
    "parse_day",
    "parse_expiry",
    "parse_iso",
    "read_time",
    "toml_datetime",
]


# -- formatting --------------------------------------------------------------------------------


@overload
def iso(when: dt.datetime) -> str: ...
@overload
def iso(when: None) -> None: ...
def iso(when: dt.datetime | None) -> str | None:
    """``2026-01-31T12:00:00Z`` (UTC, whole seconds); None stays None."""
    if when is None:
        return None
    # isoformat, not strftime: "%Y" writes year 1 as "1" on glibc, and a date must read back.
    return when.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def day(when: dt.datetime) -> str:
    """``2026-01-31``: the UTC date of `when`."""
    return when.astimezone(dt.UTC).date().isoformat()


def instant(when: dt.datetime) -> str:
    """``2026-01-31T12:00:00+00:00``: `when` as ``datetime.isoformat`` writes it (its own
    offset, microseconds when it has them), for messages and logs."""
    return when.isoformat()


def expiry_text(when: dt.datetime) -> str:
    """A policy's ``expires`` as a document holds it: ``2027-06-30`` for midnight (the NSC and
    TrustKit meaning of a date), else the full ISO 8601 date-time (microseconds kept) with ``Z``
    for UTC. `parse_expiry` reads both back to `when`."""
    if when.time() == dt.time(0, 0):
        return when.date().isoformat()
    return when.isoformat().replace("+00:00", "Z")


def toml_datetime(when: dt.datetime) -> str:
    """`when` as a TOML date (midnight UTC) or offset date-time in UTC with ``Z``."""
    when = when.astimezone(dt.UTC)
    if when.time() == dt.time(0, 0):
        return when.date().isoformat()
    return when.replace(tzinfo=None).isoformat() + "Z"  # microseconds only when it has them


# -- parsing -------------------------------------------------------------------------------------


def parse_iso(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time (``Z`` accepted) as an aware UTC datetime.

    A value without a time zone is taken as UTC; a bare date means 00:00 UTC that day.

    Raises:
        ValueError: `text` is not an ISO 8601 date or date-time.
    """
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def parse_day(text: str) -> dt.date:
    """A ``YYYY-MM-DD`` date and nothing else (not the other forms ISO 8601 allows).

    Raises:
        ValueError: `text` is not such a date.
    """
    if len(text) != 10:
        raise ValueError(f"not a YYYY-MM-DD date: {text[:40]!r}")
    return dt.date.fromisoformat(text)


def parse_expiry(value: object) -> dt.datetime:
    """A policy's ``expires`` value as an aware UTC datetime.

    Accepted: ``YYYY-MM-DD`` or an ISO 8601 date-time as text, a ``date`` or ``datetime`` (what
    TOML gives), or a number of seconds since the epoch (JSON). A date means 00:00:00Z of that
    day; a date-time without a zone is UTC.

    Raises:
        ValueError: anything else; the message starts ``invalid date …`` and says why.
    """
    when: dt.datetime | dt.date
    if isinstance(value, str):
        try:
            when = (
                dt.date.fromisoformat(value)
                if len(value) == 10
                else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            )
        except ValueError:
            raise ValueError(f"invalid date {value!r}: {_EXPECTED_DATE}") from None
    elif isinstance(value, dt.date):
        when = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"invalid date {value!r}: timestamp out of range") from None
    else:
        raise ValueError(f"invalid date {value!r}: {_EXPECTED_DATE}")
    if not isinstance(when, dt.datetime):
        return dt.datetime(when.year, when.month, when.day, tzinfo=dt.UTC)
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    try:
        return when.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"invalid date {value!r}: out of range in UTC") from None


_EXPECTED_DATE = "expected YYYY-MM-DD or an ISO 8601 date-time"


# -- report times: bounded, exact microseconds ---------------------------------------------------

EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)

_EPOCH = dt.datetime(1970, 1, 1)  # naive: wall times are counted from it before the offset
_MICRO = dt.timedelta(microseconds=1)


class TimeError(CertpinError, ValueError):
    """A time outside [`EARLIEST`, `LATEST`] (the message says which bound)."""


def micros(when: dt.datetime) -> int:
    """`when` (aware) as exact microseconds since the epoch."""
    return (when - EARLIEST) // _MICRO


EARLIEST_US = micros(EARLIEST)
LATEST_US = micros(LATEST)


def from_micros(us: int) -> dt.datetime | None:
    """Microseconds since the epoch as an aware UTC datetime, exactly; None when no datetime
    holds it (rows written before the bounds existed may hold such a value)."""
    try:
        return EARLIEST + dt.timedelta(microseconds=us)
    except OverflowError:
        return None


def read_time(text: str) -> tuple[int, bool] | None:
    """An ISO 8601 date or date-time as (microseconds since the epoch, whether it had a UTC
    offset), or None when `text` is not one (such text is kept as sent, never interpreted).

    A value without an offset is counted as UTC for the bounds (its zone is unknown).

    Raises:
        TimeError: the time lies outside [`EARLIEST`, `LATEST`].
    """
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = when.utcoffset()
    us = (when.replace(tzinfo=None) - _EPOCH) // _MICRO
    if offset is not None:
        us -= offset // _MICRO
    if us < EARLIEST_US:
        raise TimeError(f"{text[:64]!r} is before {iso(EARLIEST)}")
    if us > LATEST_US:
        raise TimeError(f"{text[:64]!r} is after {iso(LATEST)}")
    return us, offset is not None
