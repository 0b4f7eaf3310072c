"""The collector's dashboard: one server-rendered page at ``GET /``, no JavaScript, no CDN.

Routes (added to the collector app by `Dashboard.routes`):
    GET  /               the dashboard (Bearer token or session cookie; else 303 → /login)
    GET  /login          the login form
    POST /login          token → session cookie (HttpOnly, SameSite=Strict, Secure on TLS)
    POST /logout         clears the session cookie (needs the page's form token)
    GET  /dashboard.css  the stylesheet (``style-src 'self'``: no inline styles anywhere)

Every report field is attacker-controlled (host names, subjects, app names, versions…): all
of it goes through `_e`, the one escaping helper, and the page is served with a strict
Content-Security-Policy (``default-src 'none'``), so even a missed escape could not run script.

Sessions hold no server state: the cookie is ``<expiry>.<HMAC-SHA256(token, expiry)>``, so it
never contains the token, dies with its expiry (12 h) and with any change of the admin token.
CSRF: the cookies are ``SameSite=Strict``, POSTs with a foreign ``Origin`` are refused, and
every form carries a token (login: double-submit cookie; logout: an HMAC bound to the session).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import html
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from certpin._errors import CertpinError
from certpin.collector.db import Store
from certpin.collector.limits import TokenBucket
from certpin.collector.schema import reports
from certpin.core.sources import load_sources

if TYPE_CHECKING:
    from certpin.collector.app import Collector

__all__ = ["Dashboard"]

SESSION_COOKIE = "certpin_session"
LOGIN_CSRF_COOKIE = "certpin_login_csrf"
SESSION_SECONDS = 12 * 3600
PAGE_SIZE = 20
"""Reports shown per page (each chain has at most 10 certificates: the page stays bounded)."""
TOP = 20
"""Rows in each aggregate table."""
CHART_HOSTS = 10
"""Hosts charted (the ones with most failures in the window)."""
MAX_FORM_BYTES = 4096
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
_CURRENT = ' class="current"'

_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HTML_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    # Not "no-referrer": with it Chromium sends "Origin: null" on same-origin form posts,
    # which the Origin check below must refuse. "same-origin" still tells other sites nothing.
    "Referrer-Policy": "same-origin",
}

# Controls and bidirectional/zero-width marks would let a hostile subject hide or reorder
# text ("Trojan Source", CVE-2021-42574): they are shown as visible \uXXXX escapes instead.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)


def _e(value: object, limit: int = MAX_TEXT) -> str:
    """THE escaping helper: every dynamic value in the page goes through it."""
    text = "—" if value is None or value == "" else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    text = _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return html.escape(text, quote=True)


# -- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cert:
    subject: str | None
    issuer: str | None
    pin: str | None
    not_after: dt.datetime | None
    error: str | None = None


@functools.lru_cache(maxsize=2048)
def _decode(pem: str) -> _Cert:
    """Subject, issuer and SPKI pin of one stored certificate (display only)."""
    try:
        source = load_sources(pem.encode("ascii"), source="report")[0]
    except (CertpinError, ValueError, IndexError) as exc:
        return _Cert(None, None, None, None, error=str(exc))
    return _Cert(source.subject, source.issuer, str(source.pin), source.not_after)


@dataclass(frozen=True)
class _Data:
    now: dt.datetime
    days: int
    start_us: int
    width_us: int
    buckets: int
    summary: dict[str, Any]
    chart: dict[str, list[int]]
    keys: list[dict[str, Any]]
    latest: list[dict[str, Any]]
    next_before: int | None


def _gather(store: Store, days: int, before: int | None, now_s: float) -> _Data:
    buckets, width_s = WINDOWS[days]
    width_us = width_s * 1_000_000
    now_us = int(now_s * 1_000_000)
    end_us = (now_us // width_us + 1) * width_us  # buckets aligned on their width
    start_us = end_us - buckets * width_us
    summary = store.summary(start_us, top=TOP)
    in_window = [reports.c.received_us >= start_us, reports.c.received_us < end_us]
    count = sa.func.count().label("n")
    with store.engine.connect() as conn:
        top_hosts = [
            row[0]
            for row in conn.execute(
                sa.select(reports.c.hostname, count)
                .where(*in_window)
                .group_by(reports.c.hostname)
                .order_by(count.desc(), reports.c.hostname)
                .limit(CHART_HOSTS)
            )
        ]
        chart = {host: [0] * buckets for host in top_hosts}
        if top_hosts:
            # ``//`` is integer division on both SQLite and Postgres (SQLAlchemy 2 floordiv).
            bucket = ((reports.c.received_us - start_us) // width_us).label("bucket")
            for host, index, n in conn.execute(
                sa.select(reports.c.hostname, bucket, count)
                .where(*in_window, reports.c.hostname.in_(top_hosts))
                .group_by(reports.c.hostname, bucket)
            ):
                if 0 <= int(index) < buckets:
                    chart[host][int(index)] = int(n)
        first = sa.func.min(reports.c.received_us).label("first_us")
        last = sa.func.max(reports.c.received_us).label("last_us")
        sources = sa.func.count(sa.distinct(reports.c.source)).label("sources")
        apps = sa.func.count(sa.distinct(reports.c.app_id)).label("apps")
        keys = [
            dict(row._mapping)
            for row in conn.execute(
                sa.select(
                    reports.c.hostname,
                    reports.c.unexpected_pin,
                    sa.func.max(reports.c.unexpected_subject).label("subject"),
                    sa.func.max(reports.c.unexpected_issuer).label("issuer"),
                    count,
                    sources,
                    apps,
                    first,
                    last,
                )
                .where(reports.c.unexpected_pin.is_not(None), *in_window)
                .group_by(reports.c.hostname, reports.c.unexpected_pin)
                .order_by(count.desc(), reports.c.hostname, reports.c.unexpected_pin)
                .limit(TOP)
            )
        ]
    latest = store.query_reports(limit=PAGE_SIZE, before_id=before)
    next_before = latest[-1]["id"] if len(latest) == PAGE_SIZE else None
    return _Data(
        now=dt.datetime.fromtimestamp(now_s, dt.UTC),
        days=days,
        start_us=start_us,
        width_us=width_us,
        buckets=buckets,
        summary=summary,
        chart=chart,
        keys=keys,
        latest=latest,
        next_before=next_before,
    )


# -- rendering -------------------------------------------------------------------------------------


def _time(us: int | None) -> str:
    if us is None:
        return "—"
    when = dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="/dashboard.css">'
        f"</head><body>{body}</body></html>\n"
    )


def _table(headers: Sequence[str], rows: list[list[str]], empty: str) -> str:
    """`rows` hold already-escaped cells."""
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sparkline(counts: list[int], start_us: int, width_us: int) -> str:
    """One host's failures per bucket as an inline SVG bar chart (presentation attributes and
    classes only: the CSP allows no inline style)."""
    bar, gap, height = 8, 2, 40
    top = max(counts) or 1
    width = len(counts) * (bar + gap)
    rects = []
    for i, n in enumerate(counts):
        h = 0 if n == 0 else max(2, round((height - 2) * n / top))
        label = f"{n} failure{'s' if n != 1 else ''} from {_time(start_us + i * width_us)}"
        rects.append(
            f'<rect class="bar{" zero" if n == 0 else ""}" x="{i * (bar + gap)}" '
            f'y="{height - max(h, 1)}" width="{bar}" height="{max(h, 1)}">'
            f"<title>{_e(label)}</title></rect>"
        )
    return (
        f'<svg class="spark" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{_e(f'peak {top} per bucket')}</title>{''.join(rects)}</svg>"
    )


def _chart(data: _Data) -> str:
    if not data.chart:
        return '<p class="empty">No failures in this window.</p>'
    rows = []
    for host, counts in data.chart.items():
        rows.append(
            f'<tr><td class="host">{_e(host)}</td><td class="num">{sum(counts)}</td>'
            f'<td class="num">{max(counts)}</td>'
            f"<td>{_sparkline(counts, data.start_us, data.width_us)}</td></tr>"
        )
    width_h = data.width_us / 3_600_000_000
    bucket = f"{width_h:g} h" if width_h < 24 else f"{width_h / 24:g} d"
    end = data.start_us + data.buckets * data.width_us
    return (
        "<table><thead><tr><th>Host</th><th>Failures</th><th>Peak / bucket</th>"
        f"<th>{_e(f'{_time(data.start_us)} → {_time(end)}, one bar = {bucket}')}</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _keys(data: _Data) -> str:
    rows = [
        [
            f'<span class="host">{_e(k["hostname"])}</span>',
            f'<code class="pin">{_e(k["unexpected_pin"])}</code>',
            _e(k["subject"]),
            _e(k["issuer"]),
            f'<span class="num">{int(k["n"])}</span>',
            f'<span class="num">{int(k["sources"])}</span>',
            f'<span class="num">{int(k["apps"])}</span>',
            _e(_time(k["first_us"])),
            _e(_time(k["last_us"])),
        ]
        for k in data.keys
    ]
    return _table(
        [
            "Host",
            "Unexpected key",
            "Subject",
            "Issuer",
            "Reports",
            "Sources",
            "Apps",
            "First seen",
            "Last seen",
        ],
        rows,
        "No unexpected keys in this window.",
    )


def _apps(data: _Data) -> str:
    rows = [
        [_e(a["app"] or "(none: certpin / RFC 7469 clients)"), _e(a["version"]), str(a["reports"])]
        for a in data.summary["apps"]
    ]
    return _table(["App", "Version", "Reports"], rows, "No reports in this window.")


def _chain(title: str, pems: list[str]) -> str:
    if not pems:
        return ""
    rows = []
    for i, pem in enumerate(pems):
        cert = _decode(pem)
        if cert.error is not None:
            rows.append([str(i), _e(f"undecodable: {cert.error}"), "", "", ""])
            continue
        rows.append(
            [
                str(i),
                _e(cert.subject),
                _e(cert.issuer),
                f'<code class="pin">{_e(cert.pin)}</code>',
                _e(cert.not_after.strftime("%Y-%m-%d") if cert.not_after else None),
            ]
        )
    return f"<h4>{_e(title)}</h4>" + _table(
        ["#", "Subject", "Issuer", "SPKI pin", "Not after"], rows, ""
    )


def _report(r: dict[str, Any]) -> str:
    port = "" if r["port"] is None else f":{r['port']}"
    app = r["app"]
    facts = [
        ("Received", _e(r["received_at"])),
        ("Dialect", _e(r["dialect"])),
        ("App", _e(f"{app} {r['app_version'] or ''}".strip() if app else None)),
        ("Platform", _e(r["app_platform"])),
        ("Mode", _e(None if r["enforce"] is None else ("enforce" if r["enforce"] else "report"))),
        ("Verdict", _e(r["verdict_reason"] or r["verdict_status"])),
        ("Unexpected key", f'<code class="pin">{_e(r["unexpected_pin"])}</code>'),
        ("Known pins", "<br>".join(f'<code class="pin">{_e(p)}</code>' for p in r["known_pins"])),
        ("Duplicates", str(int(r["duplicates"]))),
        ("Source", _e(r["source"])),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts)
    served = r["served_chain"] if r["served_chain"] != r["validated_chain"] else []
    return (
        f'<article class="report" id="report-{int(r["id"])}">'
        f'<h3><span class="host">{_e(r["hostname"])}</span>{_e(port)}'
        f' <span class="muted">#{int(r["id"])}</span></h3><dl>{dl}</dl>'
        f"{_chain('Validated chain', r['validated_chain'])}"
        f"{_chain('Served chain (differs)', served)}</article>"
    )


def _dashboard(data: _Data, csrf: str | None) -> str:
    total = data.summary["total"]
    now = _time(int(data.now.timestamp() * 1_000_000))
    status = f"{total['reports']} reports, {total['duplicates']} duplicates; now {now}"
    windows = " ".join(
        f'<a href="/?days={d}"{_CURRENT if d == data.days else ""}>{d} d</a>' for d in WINDOWS
    )
    logout = (
        ""
        if csrf is None
        else '<form method="post" action="/logout" class="logout">'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        '<button type="submit">Log out</button></form>'
    )
    more = (
        ""
        if data.next_before is None
        else f'<p><a href="/?days={data.days}&amp;before={data.next_before}">Older →</a></p>'
    )
    body = (
        f"<header><h1>certpin collector</h1>{logout}</header>"
        f'<nav>Window: {windows} <span class="muted">'
        f"{_e(status)}"
        "</span></nav>"
        f"<section><h2>Failures over time per host</h2>{_chart(data)}</section>"
        "<section><h2>Top unexpected keys</h2>"
        '<p class="hint">Attack or forgotten rotation? A new key of your own (your usual CA as '
        "issuer, reports from many sources and every app) is a rotation that missed its pins; "
        "an unfamiliar issuer seen from few sources is likely interception.</p>"
        f"{_keys(data)}</section>"
        f"<section><h2>By app and version</h2>{_apps(data)}</section>"
        "<section><h2>Latest reports</h2>"
        f"{''.join(_report(r) for r in data.latest) or '<p class=empty>No reports yet.</p>'}"
        f"{more}</section>"
    )
    return _page("certpin collector", body)


def _login(csrf: str, error: str | None) -> str:
    message = "" if error is None else f'<p class="error" role="alert">{_e(error)}</p>'
    body = (
        '<main class="login"><h1>certpin collector</h1>'
        f"{message}"
        '<form method="post" action="/login">'
        '<label for="token">Admin token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        "required autofocus>"
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        '<button type="submit">Log in</button></form>'
        '<p class="muted">The token <code>certpin serve</code> printed at start, or '
        "<code>$CERTPIN_ADMIN_TOKEN</code>.</p></main>"
    )
    return _page("certpin collector: log in", body)


_CSS = """\
:root { color-scheme: light; --fg: #1d2329; --muted: #66707a; --line: #d8dde3;
  --accent: #b3261e; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem 1.5rem 3rem; font: 14px/1.45 system-ui, sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; align-items: center; justify-content: space-between; }
h1 { font-size: 1.4rem; margin: .2rem 0; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 0 0 .4rem; }
h4 { font-size: .9rem; margin: .6rem 0 .2rem; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { border: 1px solid var(--line); padding: .25rem .45rem; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: #eef1f4; font-weight: 600; white-space: nowrap; }
td.num, span.num { font-variant-numeric: tabular-nums; }
code.pin { font-size: 12px; }
.host { font-weight: 600; }
.muted, .hint { color: var(--muted); }
.empty { color: var(--muted); font-style: italic; }
.error { color: var(--accent); font-weight: 600; }
nav a { margin-right: .4rem; }
nav a.current { font-weight: 700; color: var(--fg); }
svg.spark rect.bar { fill: var(--accent); }
svg.spark rect.bar.zero { fill: var(--line); }
article.report { background: #fff; border: 1px solid var(--line); border-radius: 4px;
  padding: .6rem .8rem; margin: .6rem 0; }
article.report dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem;
  margin: 0; }
article.report dt { color: var(--muted); }
article.report dd { margin: 0; overflow-wrap: anywhere; }
main.login { max-width: 24rem; margin: 4rem auto; background: #fff; padding: 1.5rem;
  border: 1px solid var(--line); border-radius: 4px; }
main.login input[type=password] { width: 100%; padding: .4rem; margin: .3rem 0 .8rem; }
button { padding: .35rem .9rem; }
"""


# -- the routes ------------------------------------------------------------------------------------


class Dashboard:
    """The dashboard's routes over a `Collector`'s store and admin token."""

    def __init__(self, collector: Collector, *, clock: Callable[[], float] = time.time) -> None:
        self.collector = collector
        self.clock = clock
        # Login attempts per client address: bursts of 10, then one every 5 s.
        self.login_limiter = TokenBucket(0.2, 10)
        self.routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/dashboard.css", self.stylesheet, methods=["GET"]),
        ]

    # -- sessions ---------------------------------------------------------------------------------

    def _mac(self, purpose: str, value: str) -> str:
        key = self.collector.admin_token.encode("utf-8")
        msg = f"certpin-dashboard:{purpose}\0{value}".encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        expiry = str(int(self.clock()) + SESSION_SECONDS)
        return f"{expiry}.{self._mac('session', expiry)}"

    def session_ok(self, value: str | None) -> bool:
        if not value or len(value) > 128:
            return False
        expiry, _, mac = value.partition(".")
        if not expiry.isascii() or not expiry.isdigit() or int(expiry) <= self.clock():
            return False
        return hmac.compare_digest(
            mac.encode("ascii", "replace"), self._mac("session", expiry).encode()
        )

    def _same_origin(self, request: Request) -> bool:
        # Browsers send Origin on every POST; a foreign (or "null") one is a cross-site form.
        origin = request.headers.get("origin")
        if origin is None:
            return True
        host = request.headers.get("host", "")
        return origin == f"{request.url.scheme}://{host}"

    @staticmethod
    def _secure(request: Request) -> bool:
        return request.url.scheme == "https"

    # -- handlers ---------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        csrf: str | None = None
        if "authorization" in request.headers:
            if not self.collector._authorized(request):
                return _html(_page("certpin collector", "<p>Wrong token.</p>"), 401, bearer=True)
        else:
            session = request.cookies.get(SESSION_COOKIE)
            if not self.session_ok(session):
                return RedirectResponse("/login", status_code=303, headers=_HTML_HEADERS)
            csrf = self._mac("csrf", str(session))
        params = request.query_params
        unknown = [k for k in params if k not in ("days", "before")]
        days_text = params.get("days", str(DEFAULT_DAYS))
        before_text = params.get("before")
        if (
            unknown
            or any(len(params.getlist(k)) > 1 for k in params)
            or not days_text.isascii()
            or not days_text.isdigit()
            or int(days_text[:4]) not in WINDOWS
            or before_text is not None
            and (not before_text.isascii() or not before_text.isdigit() or len(before_text) > 18)
        ):
            choices = ", ".join(map(str, WINDOWS))
            return _html(
                _page(
                    "certpin collector",
                    f"<p>Bad query: use days={_e(choices)} and before=&lt;report id&gt;.</p>",
                ),
                400,
            )
        days = int(days_text[:4])
        before = None if before_text is None else int(before_text)
        data = await asyncio.to_thread(_gather, self.collector.store, days, before, self.clock())
        return _html(_dashboard(data, csrf))

    async def login_form(self, request: Request) -> Response:
        if self.session_ok(request.cookies.get(SESSION_COOKIE)):
            return RedirectResponse("/", status_code=303, headers=_HTML_HEADERS)
        return self._login_page(request, None, 200)

    def _login_page(self, request: Request, error: str | None, status: int) -> Response:
        csrf = secrets.token_urlsafe(24)
        response = _html(_login(csrf, error), status)
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            csrf,
            max_age=3600,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=self._secure(request),
        )
        return response

    async def login(self, request: Request) -> Response:
        if not self._same_origin(request):
            return _html(_page("certpin collector", "<p>Cross-origin login refused.</p>"), 403)
        source = request.client.host if request.client else "?"
        if self.login_limiter.take(source) > 0:
            return self._login_page(request, "Too many attempts; wait a few seconds.", 429)
        form = await _form(request)
        if form is None:
            return self._login_page(request, "Malformed login form.", 400)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        sent = form.get("csrf", "")
        if not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
            return self._login_page(request, "The form expired; log in again.", 400)
        token = form.get("token", "")
        if not hmac.compare_digest(
            token.encode("utf-8"), self.collector.admin_token.encode("utf-8")
        ):
            return self._login_page(request, "Wrong token.", 401)
        response = RedirectResponse("/", status_code=303, headers=_HTML_HEADERS)
        response.set_cookie(
            SESSION_COOKIE,
            self.new_session(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self._secure(request),
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    async def logout(self, request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if not self._same_origin(request) or not self.session_ok(session):
            return _html(_page("certpin collector", "<p>Not logged in.</p>"), 403)
        form = await _form(request)
        expected = self._mac("csrf", str(session))
        if form is None or not hmac.compare_digest(
            form.get("csrf", "").encode(), expected.encode()
        ):
            return _html(_page("certpin collector", "<p>Bad form token.</p>"), 403)
        response = RedirectResponse("/login", status_code=303, headers=_HTML_HEADERS)
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=self._secure(request)
        )
        return response

    async def stylesheet(self, _request: Request) -> Response:
        return Response(_CSS, media_type="text/css")


def _html(text: str, status: int = 200, *, bearer: bool = False) -> Response:
    headers = dict(_HTML_HEADERS)
    if bearer:
        headers["WWW-Authenticate"] = 'Bearer realm="certpin"'
    return Response(text, status_code=status, media_type="text/html", headers=headers)


async def _form(request: Request) -> dict[str, str] | None:
    """A small ``application/x-www-form-urlencoded`` body, or None (parsed here: Starlette's
    form parser would need python-multipart)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return None
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
    except ClientDisconnect:
        return None
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=8
        )
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return None
        form[key] = value
    return form
