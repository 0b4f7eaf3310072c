"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

A certpin client pinned to the real PKI meets a MITM (a loopback TLS server with a rogue but
trusted chain); its reporter uploads the failure, pinned, to a real collector over TLS; Chromium
logs in through the form with the admin token and must see the host and the rogue key's pin.
The screenshot goes to ``artifacts/browser/dashboard.png`` (a build artifact, not committed).

Playwright's own browser download is never used: Chromium is ``/usr/bin/chromium`` (Debian
package ``chromium``, installed by ``make system-deps``). Chromium is told to accept exactly
the collector's key (``--ignore-certificate-errors-spki-list``: a browser-side SPKI pin) instead
of turning certificate checks off.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import certpin
from _support.pki import PKI, PKIFiles
from _support.servers import TLSServer
from certpin.reporting.reporter import reporting_hook
from collector._helpers import CollectorServer

CHROMIUM = os.environ.get("CERTPIN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or make system-deps)",
        allow_module_level=True,
    )


def _pins(pki: PKI) -> list[str]:
    return [str(certpin.Pin.for_certificate(c)) for c in (pki.leaf.der(), pki.intermediate.der())]


@pytest.fixture
def collector(tmp_path: Path, tmp_pki_files: PKIFiles) -> Iterator[CollectorServer]:
    with CollectorServer(
        str(tmp_path / "collector.sqlite3"),
        certfile=tmp_pki_files.certfile,
        keyfile=tmp_pki_files.keyfile,
        rate_limit=None,
        admin_token="browser-test-token-7d0c2f",
    ) as srv:
        yield srv


@pytest.fixture
def browser(pki: PKI) -> Iterator[Any]:
    spki = certpin.Pin.for_certificate(pki.leaf.der()).base64
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki}"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _mitm_report(pki: PKI, rogue_pki: PKI, rogue: TLSServer, collector: CollectorServer) -> str:
    """What a user's client does: a pinned request meets the MITM, the report goes out.

    Returns the rogue key's pin (the unexpected key the dashboard must show).
    """
    policy = certpin.Policy.from_dict(
        {
            "domains": {
                "localhost": {"pins": _pins(pki), "report_uris": [collector.url + "/reports"]},
                "127.0.0.1": {"pins": _pins(pki)},  # the collector is pinned too
            }
        }
    )
    # The MITM's root is trusted by the client (a corporate proxy, a malicious CA): only the
    # pins stand in its way.
    trust = (pki.root.pem() + rogue_pki.root.pem()).decode()
    reporter = reporting_hook(policy, cadata=trust, app="browser-test-app", app_version="1.2.3")
    ctx = certpin.create_default_context(policy, cadata=trust, on_failure=reporter)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    with pytest.raises(urllib.error.URLError) as caught:
        opener.open(rogue.url("/account"), timeout=10)
    assert isinstance(caught.value.reason, certpin.PinValidationError)
    assert reporter.flush(10)
    reporter.close()
    assert (reporter.stats.sent, reporter.stats.failed) == (1, 0)
    rogue.wait_idle()
    assert rogue.total_received() == b""  # blocked before any request byte
    return str(certpin.Pin.for_certificate(rogue_pki.leaf.der()))


def test_dashboard_in_chromium_shows_the_report_a_client_just_sent(
    pki: PKI,
    rogue_pki: PKI,
    rogue_server: TLSServer,
    collector: CollectorServer,
    browser: Any,
) -> None:
    rogue_pin = _mitm_report(pki, rogue_pki, rogue_server, collector)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(collector.url + "/")
    assert page.url == collector.url + "/login"  # not logged in: the form
    page.fill("#token", collector.token)
    page.click("button[type=submit]")
    page.wait_for_url(collector.url + "/")

    body = page.inner_text("body")
    assert "localhost" in body
    assert rogue_pin in body  # the unexpected key, in the keys table and the decoded chain
    assert "Rogue Intermediate" in body  # its issuer: the answer to "attack or rotation?"
    assert "browser-test-app" in body and "1.2.3" in body
    # The stylesheet loaded under the CSP (style-src 'self'): the chart's bars are painted.
    fill = page.eval_on_selector("svg.spark rect.bar:not(.zero)", "e => getComputedStyle(e).fill")
    assert fill == "rgb(179, 38, 30)"
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "certpin_session")
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert not problems, problems  # no CSP violation, no script error

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # The index page links the CT view, which opens under the same session and CSP.
    page.click("a[href='/ct']")
    page.wait_for_url(collector.url + "/ct")
    assert "Unexpected certificates per host" in page.inner_text("body")
    assert not problems, problems

    # Log out through the form: back to the login page, and the dashboard is closed again.
    page.click("form.logout button")
    page.wait_for_url(collector.url + "/login")
    page.goto(collector.url + "/")
    assert page.url == collector.url + "/login"


def test_chromium_with_a_wrong_token_stays_on_the_login_form(
    collector: CollectorServer, browser: Any
) -> None:
    page = browser.new_page()
    page.goto(collector.url + "/login")
    page.fill("#token", collector.token + "-wrong")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == collector.url + "/login"
    assert page.inner_text("p.error") == "Wrong token."
    assert not any(c["name"] == "certpin_session" for c in page.context.cookies())
