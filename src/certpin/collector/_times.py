"""Report times as exact integers (microseconds since the epoch), inside fixed bounds.

Every time a report carries (``date-time``, ``effective-expiration-date``,
``known-pins-expiration-date``) is attacker-controlled. One that reads as an ISO 8601 date or
date-time must lie within [`EARLIEST`, `LATEST`], or the report is refused naming the field; it
then travels (to the writer process, to the database) as an ``int`` of microseconds, never a
float: ``9999-12-31T23:59:59.999999`` as float seconds rounds up into year 10000, which no
``datetime`` holds — one such report used to kill the writer process (issue item 8).

The bounds:

* `EARLIEST` = 1970-01-01T00:00:00Z, the epoch: a device whose clock was reset reads from there.
* `LATEST` = 9999-12-31T00:00:00Z, the last date four-digit years name (``9999-12-31``, the usual
  "never" of an expiration date) as an instant (a date means 00:00:00Z of that day).

Every instant in between has a local time in every UTC offset (offsets are under 24 h), so no
later conversion can leave what a ``datetime`` holds. Integer arithmetic decides the bounds: the
offset is never applied to a ``datetime`` (``astimezone`` itself overflows at the edges).
"""

from __future__ import annotations

import datetime as dt

from certpin._errors import CertpinError

__all__ = ["EARLIEST", "LATEST", "TimeError", "from_micros", "micros", "read_time"]

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
        raise TimeError(f"{text[:64]!r} is before {_iso(EARLIEST)}")
    if us > LATEST_US:
        raise TimeError(f"{text[:64]!r} is after {_iso(LATEST)}")
    return us, offset is not None


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
