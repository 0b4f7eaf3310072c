"""Who may read: the admin token, the Bearer check, the dashboard's login and its session.

One secret, the admin token (``admin_token``, else ``$CERTPIN_ADMIN_TOKEN``, else a random one
that ``certpin serve`` prints). The read API and the dashboard accept it as
``Authorization: Bearer <token>``; the dashboard's login form turns it into a session cookie.

Sessions hold no server state: the cookie is an itsdangerous-signed ``{"exp", "csrf"}``
(HMAC-SHA256 under a key derived from the token), so it never contains the token, dies with its
expiry (12 h from login) and with any change of the admin token. ``csrf`` is a random value
the dashboard's forms carry (the logout form), bound to that session.

A second, narrower secret may be set for the CT watcher (``ct_token``, else
``$CERTPIN_CT_TOKEN``): it is accepted by ``POST /api/ct`` and nowhere else, so the machine
that runs ``certpin ct watch`` never holds the token that reads every report.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer
from starlette.requests import HTTPConnection

__all__ = ["CT_TOKEN_ENV", "SESSION_SECONDS", "TOKEN_ENV", "Auth", "Session"]

TOKEN_ENV = "CERTPIN_ADMIN_TOKEN"
CT_TOKEN_ENV = "CERTPIN_CT_TOKEN"
SESSION_SECONDS = 12 * 3600
#: Longest session cookie accepted (a real one is ≈ 130 characters).
_MAX_COOKIE = 512


@dataclass(frozen=True)
class Session:
    """A valid dashboard session: when it expires (epoch seconds) and its form token."""

    expires: int
    csrf: str


class Auth:
    """The admin token and everything decided with it.

    Args:
        admin_token: the token; None = ``$CERTPIN_ADMIN_TOKEN``, else a random one
            (`generated` is then True).
        ct_token: the token that may only post CT records; None = ``$CERTPIN_CT_TOKEN``, else
            none (the admin token alone may).
        clock: seconds since the epoch (tests move it to expire sessions).
    """

    def __init__(
        self,
        admin_token: str | None = None,
        *,
        ct_token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        ct = ct_token or os.environ.get(CT_TOKEN_ENV) or None
        # Only ever compared: None when there is none, so no text can match it.
        self._ct_token = None if ct is None else ct.encode("utf-8")
        token = admin_token or os.environ.get(TOKEN_ENV) or None
        self.generated = token is None
        self.token: str = token or secrets.token_urlsafe(32)
        self._token = self.token.encode("utf-8")
        self.clock = clock
        self._sessions = URLSafeSerializer(
            self.token,
            salt="certpin-dashboard-session",
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def token_matches(self, text: str) -> bool:
        """Whether `text` is the admin token (constant time: no prefix leaks by timing)."""
        return hmac.compare_digest(text.encode("utf-8"), self._token)

    def bearer(self, request: HTTPConnection) -> bool:
        """Whether `request` carries ``Authorization: Bearer <the admin token>``."""
        token = _bearer_token(request)
        return token is not None and self.token_matches(token)

    def may_send_ct(self, request: HTTPConnection) -> bool:
        """Whether `request` may post ``certpin ct watch`` records: the Bearer token is the CT
        ingest token (which can do nothing else) or the admin token."""
        token = _bearer_token(request)
        if token is None:
            return False
        if self._ct_token is not None and hmac.compare_digest(
            token.encode("utf-8"), self._ct_token
        ):
            return True
        return self.token_matches(token)

    def new_session(self) -> str:
        """A session cookie value, valid for `SESSION_SECONDS` from now."""
        expires = int(self.clock()) + SESSION_SECONDS
        return self._sessions.dumps({"exp": expires, "csrf": secrets.token_urlsafe(24)})

    def session(self, cookie: str | None) -> Session | None:
        """The session of a cookie value, or None: absent, forged, signed with another token,
        malformed or expired."""
        if not cookie or len(cookie) > _MAX_COOKIE:
            return None
        try:
            data = self._sessions.loads(cookie)
        except BadData:
            return None
        if not isinstance(data, dict):
            return None
        expires, csrf = data.get("exp"), data.get("csrf")
        if type(expires) is not int or type(csrf) is not str or expires <= self.clock():
            return None
        return Session(expires, csrf)


def _bearer_token(request: HTTPConnection) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
