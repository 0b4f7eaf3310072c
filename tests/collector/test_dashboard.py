"""The dashboard against a real collector (uvicorn on loopback, SQLite file): login, sessions,
CSRF, hostile report fields, bounded pages, the chart."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import html.parser
import json
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeSerializer, base64_decode, base64_encode

from _support.pki import PKI, PKIFiles, make_pki, new_root
from certpin import Pin
from certpin.collector.auth import SESSION_SECONDS, Auth
from certpin.collector.dashboard import SESSION_COOKIE
from certpin.collector.dashboard.view import PAGE_SIZE
from certpin.collector.dialects import normalize_report
from certpin.collector.limits import IngestLimits
from collector._helpers import (
    CollectorServer,
    certpin_report,
    dumps,
    rfc7469_report,
    trustkit_ios_report,
)

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
BIDI = "pay\u202epal.com \u00e9\u00e8 \u4e2d\u6587"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CollectorServer]:
    with CollectorServer(str(tmp_path / "db.sqlite3"), rate_limit=None) as srv:
        yield srv


@pytest.fixture
def client(server: CollectorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=False) as c:
        yield c


def _login(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/login")
    assert form.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return client.post("/login", data={"token": token, "csrf": csrf.group(1)})


def _post(server: CollectorServer, body: dict[str, Any]) -> None:
    response = httpx.post(server.url + "/reports", content=dumps(body), timeout=10)
    assert response.status_code in (200, 201), response.text


class _Tags(html.parser.HTMLParser):
    """Every tag and attribute of a page, to prove no hostile markup got through."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.urls: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attrs.add(name)
            if name in ("href", "src", "action"):
                self.urls.add(value or "")


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "link", "body", "header", "h1", "h2", "h3", "h4", "nav",
    "a", "span", "section", "p", "table", "thead", "tbody", "tr", "th", "td", "code", "svg",
    "rect", "article", "dl", "dt", "dd", "br", "form", "input", "button", "main", "label",
}  # fmt: skip


# -- authentication -------------------------------------------------------------------------------


def test_unauthenticated_is_sent_to_the_login_form(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    form = client.get("/login")
    assert form.status_code == 200 and 'type="password"' in form.text
    assert "default-src 'none'" in form.headers["content-security-policy"]


def test_bearer_token_opens_the_dashboard_and_a_wrong_one_is_refused(
    server: CollectorServer, client: httpx.Client
) -> None:
    ok = client.get("/", headers=server.auth)
    assert ok.status_code == 200 and "<h1>certpin collector</h1>" in ok.text
    csp = ok.headers["content-security-policy"]
    for directive in ("default-src 'none'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert ok.headers["x-content-type-options"] == "nosniff"
    assert ok.headers["content-type"] == "text/html; charset=utf-8"
    for wrong in (server.token + "x", server.token[:-1], "Bearer", f"Basic {server.token}"):
        if not wrong.startswith(("Bearer", "Basic")):
            wrong = f"Bearer {wrong}"
        bad = client.get("/", headers={"Authorization": wrong})
        assert bad.status_code == 401 and "certpin collector</h1>" not in bad.text
        assert bad.headers["www-authenticate"].startswith("Bearer")


def test_login_form_sets_a_strict_session_cookie_without_the_token(
    server: CollectorServer, client: httpx.Client
) -> None:
    response = _login(client, server.token)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = next(c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS test
    assert server.token not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "Log out" in page.text


def test_wrong_token_in_the_form_gets_no_session(
    server: CollectorServer, client: httpx.Client
) -> None:
    for wrong in (server.token + "x", "", server.token.upper()):
        response = _login(client, wrong)
        assert response.status_code == 401 and "Wrong token." in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert client.get("/").status_code == 303


def test_login_needs_the_form_token_and_a_same_origin_post(
    server: CollectorServer, client: httpx.Client
) -> None:
    client.get("/login")
    no_csrf = client.post("/login", data={"token": server.token})
    assert no_csrf.status_code == 400 and SESSION_COOKIE not in str(no_csrf.headers)
    forged = client.post("/login", data={"token": server.token, "csrf": "guess"})
    assert forged.status_code == 400
    for origin in ("https://evil.example", "null", server.url + ".evil.example"):
        foreign = client.post(
            "/login", data={"token": server.token, "csrf": "x"}, headers={"Origin": origin}
        )
        assert foreign.status_code == 403, origin
    as_json = client.post("/login", json={"token": server.token})
    assert as_json.status_code == 400
    assert client.get("/").status_code == 303
    # The twin: the same client with the form's token gets in.
    assert _login(client, server.token).status_code == 303


def test_forged_or_expired_session_cookies_are_refused(
    server: CollectorServer, client: httpx.Client
) -> None:
    def status(value: str) -> int:
        headers = {"Cookie": f"{SESSION_COOKIE}={value}"}
        return httpx.get(server.url + "/", headers=headers, timeout=10).status_code

    for value in ("1.abc", "99999999999.deadbeef", server.token, "x" * 200, "9" * 30 + "."):
        assert status(value) == 303, value
    _login(client, server.token)
    good = client.cookies[SESSION_COOKIE]
    payload, _, signature = good.rpartition(".")
    data = json.loads(base64_decode(payload))
    longer = base64_encode(json.dumps({**data, "exp": data["exp"] + 3600})).decode()
    assert status(f"{longer}.{signature}") == 303  # a longer life, same signature
    assert status(good) == 200
    # Correctly signed but expired; signed with another token.
    past = Auth(server.token, clock=lambda: time.time() - SESSION_SECONDS - 1)
    assert status(past.new_session()) == 303
    assert status(Auth(server.token).new_session()) == 200  # the twin
    assert status(Auth("another-token").new_session()) == 303
    # Signed with the token and the session's salt, but not a session's shape.
    signer = URLSafeSerializer(
        server.token,
        salt="certpin-dashboard-session",
        signer_kwargs={"digest_method": hashlib.sha256},
    )
    for shape in ([1, 2], {"exp": str(data["exp"]), "csrf": "x"}, {"exp": data["exp"]}):
        assert status(signer.dumps(shape)) == 303, shape
    assert status(signer.dumps(data)) == 200  # the twin: the same signer, a session's shape
    assert status(good + "x" * 600) == 303  # longer than any session


def test_logout_needs_the_page_token_and_clears_the_cookie(
    server: CollectorServer, client: httpx.Client
) -> None:
    _login(client, server.token)
    page = client.get("/").text
    csrf = re.search(r'action="/logout".*?name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    assert client.get("/").status_code == 200  # still logged in
    out = client.post("/logout", data={"csrf": csrf.group(1)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert 'certpin_session=""' in out.headers["set-cookie"]
    assert client.get("/").status_code == 303


def test_session_cookie_is_secure_over_tls(tmp_path: Path, tmp_pki_files: PKIFiles) -> None:
    with CollectorServer(
        str(tmp_path / "tls.sqlite3"),
        certfile=tmp_pki_files.certfile,
        keyfile=tmp_pki_files.keyfile,
        rate_limit=None,
    ) as srv:
        with httpx.Client(
            base_url=srv.url,
            verify=ssl.create_default_context(cafile=tmp_pki_files.root_ca),
            timeout=10,
        ) as client:
            response = _login(client, srv.token)
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


def test_login_attempts_are_rate_limited(server: CollectorServer, client: httpx.Client) -> None:
    statuses = [_login(client, "wrong").status_code for _ in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429


# -- hostile content ------------------------------------------------------------------------------


def _hostile_pki() -> PKI:
    root = new_root(SCRIPT)
    intermediate = root.issue_intermediate(IMG)
    leaf = intermediate.issue_leaf("reports.example.test", cn=BIDI)
    return PKI(root=root, intermediate=intermediate, leaf=leaf)


def test_hostile_fields_appear_only_escaped(server: CollectorServer, client: httpx.Client) -> None:
    hostile = _hostile_pki()
    body = trustkit_ios_report(hostile)
    body.update({"app-bundle-id": SCRIPT, "app-version": IMG, "app-platform": BIDI})
    _post(server, body)
    # Host names are normalised at ingest (a "<" never gets in); prove the page would still
    # escape one, e.g. from a row written by another tool, by storing it directly.
    report = normalize_report(rfc7469_report(hostile), IngestLimits())
    crafted = dataclasses.replace(
        report,
        report_key="crafted-1",
        hostname=SCRIPT + ".example",
        verdict_reason=IMG,
        known_pins=(SCRIPT,),
        unexpected_subject=SCRIPT,
        unexpected_issuer=IMG,
    )
    server.collector.store.insert_batch([(crafted, IMG)])
    page = client.get("/", headers=server.auth)
    assert page.status_code == 200
    text = page.text
    assert SCRIPT not in text and "<img" not in text and "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # app id, host name, subject
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in text  # app version, issuer, source
    assert "pay\\u202epal.com" in text and "\u202e" not in text  # bidi override made visible
    assert "\u00e9\u00e8 \u4e2d\u6587" in text  # ordinary unicode kept
    tags = _Tags()
    tags.feed(text)
    assert tags.tags <= ALLOWED_TAGS, tags.tags - ALLOWED_TAGS
    assert not any(a.startswith("on") for a in tags.attrs)
    urls = tags.urls - {"data:,"}  # the empty favicon (stops a /favicon.ico request)
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls


def test_hostile_login_input_is_not_reflected(client: httpx.Client) -> None:
    response = _login(client, SCRIPT)
    assert response.status_code == 401
    assert SCRIPT not in response.text and "alert(1)" not in response.text


# -- content and bounds ---------------------------------------------------------------------------


def test_dashboard_shows_chart_keys_apps_and_decoded_chains(
    server: CollectorServer, client: httpx.Client, report_pki: PKI
) -> None:
    for _ in range(3):
        _post(server, certpin_report(report_pki))  # a fresh report-id each time
    ios = trustkit_ios_report(report_pki)
    _post(server, ios)
    text = client.get("/", headers=server.auth).text
    for der in report_pki.leaf.chain_der(include_root=True):
        assert str(Pin.for_certificate(der)) in text  # every chain certificate decoded
    assert "reports.example.test" in text
    assert "com.example.ios" in text and "2.3" in text
    # The chart: one row for the host with 4 failures, drawn as SVG bars.
    row = re.search(r'<td class="host">reports\.example\.test</td><td class="num">(\d+)</td>', text)
    assert row is not None and row.group(1) == "4"
    assert '<rect class="bar" ' in text and "4 failures from" in text
    assert text.count('<article class="report"') == 4


def test_dashboard_with_no_reports_says_so(server: CollectorServer, client: httpx.Client) -> None:
    text = client.get("/", headers=server.auth).text
    assert "No failures in this window." in text and "No reports yet." in text


def test_latest_reports_are_paged(server: CollectorServer, client: httpx.Client) -> None:
    pki = make_pki(("paged.example.test",))
    report = normalize_report(rfc7469_report(pki, "paged.example.test"), IngestLimits())
    total = PAGE_SIZE * 2 + 5
    server.collector.store.insert_batch(
        [(dataclasses.replace(report, report_key=f"k{i}"), None) for i in range(total)]
    )
    seen = 0
    url = "/?days=7"
    pages = 0
    while url:
        page = client.get(url, headers=server.auth)
        assert page.status_code == 200
        count = page.text.count('<article class="report"')
        assert count <= PAGE_SIZE
        seen += count
        pages += 1
        more = re.search(r'<a href="(/\?days=7&amp;before=\d+)">Older', page.text)
        url = more.group(1).replace("&amp;", "&") if more else ""
    assert (seen, pages) == (total, 3)


@pytest.mark.parametrize(
    "query",
    ["days=2", "days=abc", "days=7&days=1", "before=-1", "before=1e5", "x=1", "days=" + "9" * 50],
)
def test_bad_query_parameters_are_400(
    server: CollectorServer, client: httpx.Client, query: str
) -> None:
    response = client.get("/?" + query, headers=server.auth)
    assert response.status_code == 400 and "Bad query" in response.text


@pytest.mark.parametrize("days", [1, 7, 30, 90])
def test_every_window_renders(server: CollectorServer, client: httpx.Client, days: int) -> None:
    response = client.get(f"/?days={days}", headers=server.auth)
    assert response.status_code == 200
    assert f'<a href="/?days={days}" class="current">' in response.text


def test_stylesheet_is_public_css_and_the_page_has_no_inline_style(
    server: CollectorServer, client: httpx.Client
) -> None:
    css = client.get("/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "svg.spark rect.bar" in css.text
    page = client.get("/", headers=server.auth).text
    assert "<style" not in page and " style=" not in page  # CSP style-src 'self' would block it


def test_the_dashboard_does_not_import_the_app() -> None:
    # It is given the store and the auth it needs; importing the app back (even for type
    # hints, to call its private token check) was an import cycle.
    import certpin.collector.dashboard as package

    imported = set()
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "certpin.collector.auth" in imported  # the walk saw the imports
    assert not {name for name in imported if name.startswith("certpin.collector.app")}
