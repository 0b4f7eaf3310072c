"""The collector's dashboard: one server-rendered page at ``GET /``, no JavaScript, no CDN.

Routes (added to the collector app by `Dashboard.routes`):
    GET  /               the dashboard (Bearer token or session cookie; else 303 → /login)
    GET  /ct             Certificate Transparency: unexpected certificates per host (same auth)
    GET  /login          the login form
    POST /login          token → session cookie (HttpOnly, SameSite=Strict, Secure on TLS)
    POST /logout         clears the session cookie (needs the page's form token)
    GET  /dashboard.css  the stylesheet (``style-src 'self'``: no inline styles anywhere)

The page is Jinja2 templates (``templates/``, autoescape on) over the values `view.gather`
reads; every report field is attacker-controlled, and the page is served with a strict
Content-Security-Policy (``default-src 'none'``), so even a missed escape could not run script.
Who may see it is `certpin.collector.auth`'s to decide (Bearer token or session cookie).
CSRF: the cookies are ``SameSite=Strict``, POSTs with a foreign ``Origin`` are refused, and
every form carries a token (login: double-submit cookie; logout: the session's own token).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from certpin.collector.auth import SESSION_SECONDS, Auth
from certpin.collector.dashboard import view
from certpin.collector.limits import TokenBucket
from certpin.collector.store import Store

__all__ = ["LOGIN_CSRF_COOKIE", "SESSION_COOKIE", "Dashboard"]

SESSION_COOKIE = "certpin_session"
LOGIN_CSRF_COOKIE = "certpin_login_csrf"
MAX_FORM_BYTES = 4096

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


class Dashboard:
    """The dashboard's routes over a store and the admin token's `Auth`.

    Args:
        clock: seconds since the epoch, for the window the page shows (tests move it).
    """

    def __init__(self, store: Store, auth: Auth, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.auth = auth
        self.clock = clock
        # Login attempts per client address: bursts of 10, then one every 5 s.
        self.login_limiter = TokenBucket(0.2, 10)
        self.templates = Jinja2Templates(env=view.environment())
        css = resources.files(__package__).joinpath("static", "dashboard.css")
        self.stylesheet_text = css.read_text(encoding="utf-8")
        self.routes = [
            Route("/", self.index, methods=["GET"]),
            Route("/ct", self.ct_page, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/dashboard.css", self.stylesheet, methods=["GET"]),
        ]

    # -- handlers ---------------------------------------------------------------------------------

    def _viewer(self, request: Request) -> Response | str | None:
        """Who may see a page: an answer that refuses (wrong token, no session), else the
        session's form token (None for a Bearer token)."""
        if "authorization" in request.headers:
            if not self.auth.bearer(request):
                return self._message(request, "Wrong token.", 401, bearer=True)
            return None
        session = self.auth.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return RedirectResponse("/login", status_code=303, headers=_HTML_HEADERS)
        return session.csrf

    async def index(self, request: Request) -> Response:
        csrf = self._viewer(request)
        if isinstance(csrf, Response):
            return csrf
        query = _window(request)
        if query is None:
            choices = ", ".join(map(str, view.WINDOWS))
            message = f"Bad query: use days={choices} and before=<report id>."
            return self._message(request, message, 400)
        days, before = query
        page = await asyncio.to_thread(view.gather, self.store, days, before, self.clock())
        context = {
            "page": page,
            "csrf": csrf,
            "windows": list(view.WINDOWS),
            "height": view.HEIGHT,
            "bar_width": view.BAR,
        }
        return self._page(request, "index.html", context)

    async def ct_page(self, request: Request) -> Response:
        csrf = self._viewer(request)
        if isinstance(csrf, Response):
            return csrf
        if request.query_params:
            return self._message(request, "Bad query: this page takes no parameters.", 400)
        page = await asyncio.to_thread(view.gather_ct, self.store)
        return self._page(request, "ct.html", {"page": page, "csrf": csrf})

    async def login_form(self, request: Request) -> Response:
        if self.auth.session(request.cookies.get(SESSION_COOKIE)) is not None:
            return RedirectResponse("/", status_code=303, headers=_HTML_HEADERS)
        return self._login_page(request, None, 200)

    async def login(self, request: Request) -> Response:
        if not _same_origin(request):
            return self._message(request, "Cross-origin login refused.", 403)
        source = request.client.host if request.client else "?"
        if self.login_limiter.take(source) > 0:
            return self._login_page(request, "Too many attempts; wait a few seconds.", 429)
        form = await _form(request)
        if form is None:
            return self._login_page(request, "Malformed login form.", 400)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(form.get("csrf", "").encode(), cookie.encode()):
            return self._login_page(request, "The form expired; log in again.", 400)
        if not self.auth.token_matches(form.get("token", "")):
            return self._login_page(request, "Wrong token.", 401)
        response = RedirectResponse("/", status_code=303, headers=_HTML_HEADERS)
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.new_session(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    async def logout(self, request: Request) -> Response:
        session = self.auth.session(request.cookies.get(SESSION_COOKIE))
        if not _same_origin(request) or session is None:
            return self._message(request, "Not logged in.", 403)
        form = await _form(request)
        if form is None or not hmac.compare_digest(
            form.get("csrf", "").encode(), session.csrf.encode()
        ):
            return self._message(request, "Bad form token.", 403)
        response = RedirectResponse("/login", status_code=303, headers=_HTML_HEADERS)
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
        )
        return response

    async def stylesheet(self, _request: Request) -> Response:
        return Response(self.stylesheet_text, media_type="text/css")

    # -- pages ------------------------------------------------------------------------------------

    def _page(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        status: int = 200,
        *,
        bearer: bool = False,
    ) -> Response:
        headers = dict(_HTML_HEADERS)
        if bearer:
            headers["WWW-Authenticate"] = 'Bearer realm="certpin"'
        return self.templates.TemplateResponse(
            request, template, context, status_code=status, headers=headers
        )

    def _message(
        self, request: Request, message: str, status: int, *, bearer: bool = False
    ) -> Response:
        return self._page(request, "message.html", {"message": message}, status, bearer=bearer)

    def _login_page(self, request: Request, error: str | None, status: int) -> Response:
        csrf = secrets.token_urlsafe(24)
        response = self._page(request, "login.html", {"csrf": csrf, "error": error}, status)
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            csrf,
            max_age=3600,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
        return response


def _window(request: Request) -> tuple[int, int | None] | None:
    """The ``days`` and ``before`` query parameters, or None when the query is not one the
    page offers (unknown or repeated parameter, a window not in `view.WINDOWS`)."""
    params = request.query_params
    days = params.get("days", str(view.DEFAULT_DAYS))
    before = params.get("before")
    if (
        any(k not in ("days", "before") or len(params.getlist(k)) > 1 for k in params)
        or not (days.isascii() and days.isdigit() and int(days[:4]) in view.WINDOWS)
        or before is not None
        and not (before.isascii() and before.isdigit() and len(before) <= 18)
    ):
        return None
    return int(days[:4]), None if before is None else int(before)


def _same_origin(request: Request) -> bool:
    # Browsers send Origin on every POST; a foreign (or "null") one is a cross-site form.
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def _form(request: Request) -> dict[str, str] | None:
    """A small ``application/x-www-form-urlencoded`` body, or None (parsed here: Starlette's
    form parser needs python-multipart, a dependency for two fields)."""
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
