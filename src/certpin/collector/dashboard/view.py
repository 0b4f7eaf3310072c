"""What the dashboard page shows, as plain values for its templates: the window's chart, keys,
apps and latest reports read from the `Store`, and the filters that turn values into text.

Every report field is attacker-controlled. The templates escape (Jinja2 autoescape); `shown`,
the filter every text value goes through, decides what the text is: cut at `MAX_TEXT`, "—" for
nothing, and control / bidirectional / zero-width characters as visible ``\\uXXXX``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any

import jinja2

from certpin._errors import CertpinError
from certpin.collector.store import Store
from certpin.core.sources import load_sources

__all__ = [
    "DEFAULT_DAYS",
    "PAGE_SIZE",
    "WINDOWS",
    "CTPage",
    "Page",
    "environment",
    "gather",
    "gather_ct",
    "shown",
    "utc",
]

PAGE_SIZE = 20
"""Reports shown per page (each chain has at most 10 certificates: the page stays bounded)."""
TOP = 20
"""Rows in each aggregate table."""
CHART_HOSTS = 10
"""Hosts charted (the ones with most failures in the window)."""
MAX_TEXT = 300
"""Longest text shown for one field; the rest is cut (the API has it all)."""

#: ``days`` query parameter → (number of buckets, bucket width in seconds).
WINDOWS: dict[int, tuple[int, int]] = {
    1: (48, 1800),
    7: (56, 3 * 3600),
    30: (60, 12 * 3600),
    90: (90, 86400),
}
DEFAULT_DAYS = 7

# Controls and bidirectional/zero-width marks would let a hostile subject hide or reorder
# text ("Trojan Source", CVE-2021-42574): they are shown as visible \uXXXX escapes instead.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)


def shown(value: object, limit: int = MAX_TEXT) -> str:
    """A value as the page shows it (the template escapes the result)."""
    text = "—" if value is None or value == "" else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def utc(us: int | None) -> str:
    """Microseconds since the epoch as ``YYYY-MM-DD HH:MM UTC``."""
    if us is None:
        return "—"
    when = dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def environment() -> jinja2.Environment:
    """The templates, from the installed package, with autoescape on for every template."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("certpin.collector.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["shown"] = shown
    env.filters["utc"] = utc
    return env


# -- the page --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    """One certificate of a stored chain, decoded for display."""

    subject: str | None
    issuer: str | None
    pin: str | None
    not_after: str | None
    error: str | None = None


@functools.lru_cache(maxsize=2048)
def _decode(pem: str) -> Cert:
    """Subject, issuer, SPKI pin and expiry day of one stored certificate (display only)."""
    try:
        source = load_sources(pem.encode("ascii"), source="report")[0]
    except (CertpinError, ValueError, IndexError) as exc:
        return Cert(None, None, None, None, error=str(exc))
    day = None if source.not_after is None else source.not_after.strftime("%Y-%m-%d")
    return Cert(source.subject, source.issuer, str(source.pin), day)


@dataclass(frozen=True)
class Bar:
    """One bucket of a host's chart (SVG coordinates)."""

    x: int
    y: int
    height: int
    failures: int
    start_us: int


@dataclass(frozen=True)
class HostChart:
    host: str
    total: int
    peak: int
    bars: list[Bar]
    width: int


@dataclass(frozen=True)
class ReportView:
    """One report of the latest-reports list (a row of the read API, and its chains decoded)."""

    row: dict[str, Any]
    app: str | None
    mode: str | None
    verdict: str | None
    validated: list[Cert]
    served: list[Cert]
    """The served chain when it differs from the validated one, else empty."""


@dataclass(frozen=True)
class Page:
    now_us: int
    days: int
    start_us: int
    end_us: int
    bucket: str
    """A bucket's width as text (``3 h``, ``1 d``)."""
    summary: dict[str, Any]
    chart: list[HostChart]
    keys: list[dict[str, Any]]
    latest: list[ReportView]
    next_before: int | None


BAR, GAP, HEIGHT = 8, 2, 40
"""The chart's geometry: bar width, gap and chart height (SVG units)."""


def _chart(host: str, counts: list[int], start_us: int, width_us: int) -> HostChart:
    top = max(counts) or 1
    bars = []
    for i, n in enumerate(counts):
        height = 1 if n == 0 else max(2, round((HEIGHT - 2) * n / top))
        bars.append(Bar(i * (BAR + GAP), HEIGHT - height, height, n, start_us + i * width_us))
    return HostChart(host, sum(counts), max(counts), bars, len(counts) * (BAR + GAP))


def _report(row: dict[str, Any]) -> ReportView:
    app = row["app"]
    enforce = row["enforce"]
    served = row["served_chain"] if row["served_chain"] != row["validated_chain"] else []
    return ReportView(
        row=row,
        app=f"{app} {row['app_version'] or ''}".strip() if app else None,
        mode=None if enforce is None else ("enforce" if enforce else "report"),
        verdict=row["verdict_reason"] or row["verdict_status"],
        validated=[_decode(pem) for pem in row["validated_chain"]],
        served=[_decode(pem) for pem in served],
    )


def gather(store: Store, days: int, before: int | None, now_s: float) -> Page:
    """Read the page for a window of `days` ending now, and reports older than `before`
    (blocking: run it off the event loop)."""
    buckets, width_s = WINDOWS[days]
    width_us = width_s * 1_000_000
    now_us = int(now_s * 1_000_000)
    end_us = (now_us // width_us + 1) * width_us  # buckets aligned on their width
    start_us = end_us - buckets * width_us
    counts = store.failures_per_bucket(start_us, width_us, buckets, CHART_HOSTS)
    latest = store.query_reports(limit=PAGE_SIZE, before_id=before)
    width_h = width_s / 3600
    return Page(
        now_us=now_us,
        days=days,
        start_us=start_us,
        end_us=end_us,
        bucket=f"{width_h:g} h" if width_h < 24 else f"{width_h / 24:g} d",
        summary=store.summary(start_us, top=TOP),
        chart=[_chart(host, n, start_us, width_us) for host, n in counts.items()],
        keys=store.unexpected_keys(start_us, end_us, TOP),
        latest=[_report(row) for row in latest],
        next_before=latest[-1]["id"] if len(latest) == PAGE_SIZE else None,
    )


# -- the Certificate Transparency page ------------------------------------------------------------

CT_ROWS = 500
"""Unexpected certificates shown (newest first); the API pages through all of them."""


@dataclass(frozen=True)
class CTPage:
    hosts: list[tuple[str, list[dict[str, Any]]]]
    """(policy host, its unexpected certificates newest first), hosts in name order."""
    shown: int
    more: bool
    """True when there are more unexpected certificates than `CT_ROWS` (the API has them)."""
    log_errors: list[dict[str, Any]]


def gather_ct(store: Store) -> CTPage:
    """Read the CT page: unexpected certificates per host, the logs' errors (blocking)."""
    rows = store.query_ct(kind="unexpected", limit=CT_ROWS + 1)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for row in rows[:CT_ROWS]:
        by_host.setdefault(row["host"], []).append(row)
    return CTPage(
        hosts=sorted(by_host.items()),
        shown=min(len(rows), CT_ROWS),
        more=len(rows) > CT_ROWS,
        log_errors=store.ct_log_errors(TOP),
    )
