"""Enforcement: an `ssl.SSLContext` whose sockets check pins right after the handshake.

One mechanism pins every Python TLS client: the context's ``sslsocket_class`` (blocking sockets:
http.client, urllib, urllib3/requests, httpx sync, websockets sync) and ``sslobject_class``
(memory BIOs: asyncio, httpx async, aiohttp, websockets async) are subclasses
(`certpin.tls.sockets`) whose ``do_handshake()`` runs this context's check (`_enforce`: the
verdict, the failure hook) as soon as OpenSSL has verified the chain and the host name, before
the caller can write a single application byte.

Fail-closed rules enforced here:
- the context refuses ``CERT_NONE``/``CERT_OPTIONAL`` and ``check_hostname = False`` (with
  ``CERT_NONE`` the "verified" chain would be the unverified one);
- ``VERIFY_X509_PARTIAL_CHAIN`` is cleared unless asked for, so the verified chain ends at a
  self-signed root on every Python version (3.13 sets it by default);
- a resumed session has no verified chain: it is re-checked against the chain verified when the
  session was established, or rejected;
- an empty chain never passes.
"""

from __future__ import annotations

import _ssl
import datetime as dt
import logging
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from certpin._errors import InsecureContextError, PinValidationError
from certpin.core.hosts import certificate_names_match
from certpin.core.policy import Policy, PolicyProvider, as_provider
from certpin.core.verdict import Outcome, Verdict, untrusted, verdict
from certpin.tls.sockets import (
    Sessions,
    _PinningSSLObject,
    _PinningSSLSocket,
    served_chain,
    verified_chain,
)

__all__ = [
    "ContextOptions",
    "check_pins",
    "peer_address",
    "record_settings",
    "report_untrusted",
    "verification_of",
    "PinFailure",
    "PinningContext",
    "create_default_context",
    "verifying_context",
]

log = logging.getLogger("certpin.enforce")


@dataclass(frozen=True)
class PinFailure:
    """Everything known about one failed pin check: what an RFC 7469 §3 report needs.

    Attributes:
        verdict: the verdict (``verdict.report_only`` says whether the connection was allowed).
        host: the host name the client connected to.
        port: the peer's port, or None where the transport does not expose it (asyncio).
        served_chain: the chain the server sent (DER, leaf first). Never used for decisions.
        verified_chain: the chain OpenSSL verified (DER, leaf first).
        noted_hostname: the policy key whose rule applied.
        time: when the handshake was checked (UTC).
    """

    verdict: Verdict
    host: str
    port: int | None
    served_chain: tuple[bytes, ...]
    verified_chain: tuple[bytes, ...]
    noted_hostname: str | None
    time: dt.datetime


OnFailure = Callable[[PinFailure], None]


class ContextOptions(TypedDict, total=False):
    """The keyword arguments of `create_default_context` (documented there), for the APIs that
    pass them on: `certpin.requests.PinningAdapter`, `KnownPins.create_default_context`."""

    cafile: str | os.PathLike[str] | None
    capath: str | os.PathLike[str] | None
    cadata: str | bytes | None
    on_failure: OnFailure | None
    allow_partial_chain: bool
    x509_strict: bool
    trust: Literal["default", "truststore"]
    clock: Callable[[], dt.datetime] | None


def _original_sslcontext() -> type[ssl.SSLContext]:
    # truststore.inject_into_ssl() replaces ssl.SSLContext with a wrapper that hands sockets to
    # an inner context; subclassing the wrapper would bypass our socket classes, so always build
    # on CPython's own class.
    for klass in ssl.SSLContext.__mro__:
        if klass.__module__ == "ssl" and klass.__name__ == "SSLContext":
            return klass
    raise ImportError("cannot find ssl.SSLContext")  # pragma: no cover - Defensive


_SSLContext: type[ssl.SSLContext] = _original_sslcontext()
# ssl.py's property setters call super(SSLContext, SSLContext), which recurses once truststore
# has replaced ssl.SSLContext; certpin sets what it must through the C descriptors instead.
_C_SSLCONTEXT: Any = _ssl._SSLContext


class PinningContext(_SSLContext):  # type: ignore[valid-type,misc]
    """An `ssl.SSLContext` that enforces a pin policy. Build it with `create_default_context`.

    Setting ``verify_mode`` to anything but ``CERT_REQUIRED`` or ``check_hostname`` to False
    raises `InsecureContextError`.
    """

    _certpin_policy: Callable[[], Policy]
    _certpin_on_failure: OnFailure | None
    _certpin_clock: Callable[[], dt.datetime]
    _certpin_sessions: Sessions
    # A certpin.KnownPins when built by KnownPins.create_default_context (trust on first use).
    _certpin_tofu: Any = None

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return ssl.VerifyMode(_C_SSLCONTEXT.verify_mode.__get__(self))

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        if value != ssl.CERT_REQUIRED:
            raise InsecureContextError(
                f"a pinning context requires verify_mode=CERT_REQUIRED, not {value!r}: without "
                "certificate verification there is no verified chain to check pins against"
            )
        _C_SSLCONTEXT.verify_mode.__set__(self, value)

    @property
    def check_hostname(self) -> bool:
        return _CHECK_HOSTNAME.__get__(self)  # type: ignore[no-any-return]

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        if not value:
            raise InsecureContextError(
                "a pinning context requires check_hostname=True: pins are looked up by the "
                "host name the certificate was verified for"
            )
        _CHECK_HOSTNAME.__set__(self, value)

    # The socket classes *are* the hook: they may be replaced only by subclasses of certpin's
    # (which keep the check), never by plain ssl classes that would switch pinning off.
    @property
    def sslsocket_class(self) -> type[ssl.SSLSocket]:
        return self.__dict__.get("_certpin_socket_class", _PinningSSLSocket)  # type: ignore[no-any-return]

    @sslsocket_class.setter
    def sslsocket_class(self, value: type[ssl.SSLSocket]) -> None:
        if not (isinstance(value, type) and issubclass(value, _PinningSSLSocket)):
            raise InsecureContextError(
                "a pinning context's sslsocket_class runs the pin check; replacing it with "
                f"{value!r} would switch pinning off (subclass certpin's class instead)"
            )
        self.__dict__["_certpin_socket_class"] = value

    @property
    def sslobject_class(self) -> type[ssl.SSLObject]:
        return self.__dict__.get("_certpin_object_class", _PinningSSLObject)  # type: ignore[no-any-return]

    @sslobject_class.setter
    def sslobject_class(self, value: type[ssl.SSLObject]) -> None:
        if not (isinstance(value, type) and issubclass(value, _PinningSSLObject)):
            raise InsecureContextError(
                "a pinning context's sslobject_class runs the pin check; replacing it with "
                f"{value!r} would switch pinning off (subclass certpin's class instead)"
            )
        self.__dict__["_certpin_object_class"] = value

    @property
    def policy(self) -> Policy:
        """The policy in force now (what the next handshake is checked against)."""
        return self._certpin_policy()

    def _certpin_enforce(self, conn: ssl.SSLSocket | ssl.SSLObject) -> None:
        # Called by the socket classes after every handshake; `_enforce` is looked up at call
        # time (bench/handshake_overhead.py times it).
        _enforce(conn, self)

    def _certpin_untrusted(self, conn: ssl.SSLSocket | ssl.SSLObject, exc: Exception) -> None:
        # Called by the socket classes when OpenSSL refused the chain: reported if pinned.
        _untrusted_hook(self, conn, exc)

    # ssl.py creates each connection's OpenSSL object through these two: record what it got.
    def _wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
        return record_settings(self, super()._wrap_socket, args, kwargs)

    def _wrap_bio(self, *args: Any, **kwargs: Any) -> Any:
        return record_settings(self, super()._wrap_bio, args, kwargs)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: N802
        # After truststore.inject_into_ssl(), ssl.SSLContext is truststore's class and a
        # PinningContext (built on CPython's class, see above) is no longer an instance of it.
        # aiohttp's connector checks isinstance(ssl_arg, ssl.SSLContext) per request and, when
        # that fails, silently uses an *unverified* context: no CA check, no pins. isinstance()
        # falls back to obj.__class__, so report a (never instantiated) class that also derives
        # from the injected one; type(ctx) is unchanged.
        return _instance_class(type(self))


_CHECK_HOSTNAME: Any = _C_SSLCONTEXT.check_hostname
_VERIFY_MODE: Any = _C_SSLCONTEXT.verify_mode
_CERT_REQUIRED = int(ssl.CERT_REQUIRED)
_CERT_NONE = int(ssl.CERT_NONE)
_INSTANCE_CLASSES: dict[tuple[type, type], type] = {}


def _instance_class(klass: type) -> type:
    current = ssl.SSLContext
    if current is _SSLContext or issubclass(klass, current):
        return klass
    key = (klass, current)
    alias = _INSTANCE_CLASSES.get(key)
    if alias is None:
        alias = _INSTANCE_CLASSES.setdefault(
            key, type(klass.__name__, (klass, current), {"__module__": klass.__module__})
        )
    return alias


def create_default_context(
    policy: Policy | PolicyProvider | Callable[[], Policy],
    *,
    cafile: str | os.PathLike[str] | None = None,
    capath: str | os.PathLike[str] | None = None,
    cadata: str | bytes | None = None,
    on_failure: OnFailure | None = None,
    allow_partial_chain: bool = False,
    x509_strict: bool = True,
    trust: Literal["default", "truststore"] = "default",
    clock: Callable[[], dt.datetime] | None = None,
) -> PinningContext:
    """An SSLContext for TLS clients: CA + hostname validation, then the pin check.

    Args:
        policy: a `Policy`, or anything yielding the current one (an object with
            ``current_policy()`` or a zero-argument callable). It is asked on every handshake,
            so a new policy version applies to new connections without rebuilding clients.
        cafile, capath, cadata: trust anchors, as for `ssl.create_default_context`. If none is
            given, the system trust store is loaded.
        on_failure: called once per failed pin check (enforced or report-only) with a
            `PinFailure`, and once per handshake to a pinned host whose chain failed CA
            validation (``verdict.status`` is ``UNTRUSTED``: an interception attempt with an
            untrusted CA). Exceptions it raises are logged and swallowed.
        allow_partial_chain: keep OpenSSL's ``VERIFY_X509_PARTIAL_CHAIN`` (chains may then end
            at an intermediate in the trust store, so a root pin may not be seen). Default off.
        x509_strict: keep OpenSSL's ``VERIFY_X509_STRICT`` (RFC 5280 conformance checks, the
            default of Python 3.13's `ssl.create_default_context`) on every Python version.
            Default True; False accepts the looser chains 3.11/3.12 accept by default.
        trust: ``"truststore"`` loads the OS trust store the way the `truststore` package does
            on Linux (OpenSSL verifies, so a verified chain exists). On macOS and Windows
            truststore verifies through the OS outside OpenSSL and no verified chain exists:
            certpin refuses with `InsecureContextError` rather than guess.
        clock: returns the current UTC time; for tests and simulations.

    Returns:
        A `PinningContext`; use one per client configuration (urllib3 mutates contexts).
    """
    getter = as_provider(policy)
    getter()  # fail now, not at the first handshake, if the provider is broken
    ctx = PinningContext(ssl.PROTOCOL_TLS_CLIENT)
    _configure_verification(ctx, cafile, capath, cadata, allow_partial_chain, trust, x509_strict)
    ctx._certpin_policy = getter
    ctx._certpin_on_failure = on_failure
    ctx._certpin_clock = clock or _utcnow
    ctx._certpin_sessions = Sessions()
    return ctx


def verifying_context(
    *,
    cafile: str | os.PathLike[str] | None = None,
    capath: str | os.PathLike[str] | None = None,
    cadata: str | bytes | None = None,
    allow_partial_chain: bool = False,
    x509_strict: bool = True,
    trust: Literal["default", "truststore"] = "default",
) -> ssl.SSLContext:
    """A plain client context that verifies exactly like a `PinningContext`, without pins.

    For tools that fetch a server's verified chain to *look* at it (``certpin check``, lint,
    monitor): the chain they see is the chain a pinning client would see.
    """
    ctx = _SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _configure_verification(ctx, cafile, capath, cadata, allow_partial_chain, trust, x509_strict)
    return ctx


def _configure_verification(
    ctx: ssl.SSLContext,
    cafile: str | os.PathLike[str] | None,
    capath: str | os.PathLike[str] | None,
    cadata: str | bytes | None,
    allow_partial_chain: bool,
    trust: str,
    x509_strict: bool = True,
) -> None:
    # PROTOCOL_TLS_CLIENT starts with CERT_REQUIRED and check_hostname=True; set them anyway
    # so the guarantee does not rest on a default.
    _C_SSLCONTEXT.check_hostname.__set__(ctx, True)
    _C_SSLCONTEXT.verify_mode.__set__(ctx, ssl.CERT_REQUIRED)
    _C_SSLCONTEXT.minimum_version.__set__(ctx, ssl.TLSVersion.TLSv1_2)
    if trust == "truststore":
        _load_truststore(ctx)
    elif trust != "default":
        raise ValueError(f"trust must be 'default' or 'truststore', got {trust!r}")
    if cafile is None and capath is None and cadata is None:
        if trust == "default":
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.load_verify_locations(cafile, capath, cadata)
    # Python 3.13 sets VERIFY_X509_PARTIAL_CHAIN by default: clear it so the verified chain ends
    # at a self-signed root on every version (a root pin must be able to match).
    flags = _C_SSLCONTEXT.verify_flags.__get__(ctx) | ssl.VERIFY_X509_STRICT
    if not x509_strict:
        flags &= ~ssl.VERIFY_X509_STRICT
    if allow_partial_chain:
        flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    else:
        flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    _C_SSLCONTEXT.verify_flags.__set__(ctx, flags)


def _load_truststore(ctx: ssl.SSLContext) -> None:
    if sys.platform in ("darwin", "win32", "ios"):
        raise InsecureContextError(
            f"trust='truststore' on {sys.platform}: truststore verifies certificates through the "
            "OS outside OpenSSL, so there is no OpenSSL-verified chain to check pins against; "
            "certpin refuses rather than guess. Use trust='default' with cafile=... instead."
        )
    try:
        from truststore import _openssl
    except ImportError as exc:
        raise InsecureContextError(
            "trust='truststore' needs the truststore package (pip install truststore)"
        ) from exc
    # On Linux truststore's verification *is* OpenSSL's, with the system CA locations; reuse its
    # location logic so both agree on which anchors the OS trusts.
    with _openssl._configure_context(ctx):
        pass


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the hook -------------------------------------------------------------------------------------


def record_settings(ctx: Any, wrap: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Create a connection's OpenSSL object (`wrap`: the context's ``_wrap_socket`` or
    ``_wrap_bio``) and record on its owner the verification it was created with.

    OpenSSL copies the verify mode and the host name to check into each connection when it is
    created; the context may change afterwards (urllib3 sets ``verify_mode`` on a shared
    context per connection). The pin check must judge the connection by what OpenSSL did, so
    it reads this record: the weaker of the settings before and after the call (another thread
    may change the context meanwhile), ``(verify_mode, check_hostname)``.
    """
    before = (_VERIFY_MODE.__get__(ctx), _CHECK_HOSTNAME.__get__(ctx))
    sslobj = wrap(*args, **kwargs)
    after = (_VERIFY_MODE.__get__(ctx), _CHECK_HOSTNAME.__get__(ctx))
    owner = kwargs.get("owner")
    if owner is not None:
        owner._certpin_settings = (min(before[0], after[0]), before[1] and after[1])
    return sslobj


def verification_of(conn: ssl.SSLSocket | ssl.SSLObject, ctx: Any) -> tuple[int, bool]:
    """``(verify_mode, check_hostname)`` as they hold for `conn`: the weaker of what its OpenSSL
    object was created with (`record_settings`) and the context's now; ``(CERT_NONE, False)``
    when nothing was recorded (fail closed)."""
    recorded = getattr(conn, "_certpin_settings", None)
    if recorded is None:
        return _CERT_NONE, False
    mode, check = recorded
    return min(mode, _VERIFY_MODE.__get__(ctx)), check and bool(_CHECK_HOSTNAME.__get__(ctx))


def _enforce(conn: ssl.SSLSocket | ssl.SSLObject, ctx: PinningContext) -> None:
    """The pin check of `ctx` for `conn`, whose handshake has just completed (see the module
    docstring): returns when the connection may be used, raises `PinValidationError` when not."""
    mode, check = verification_of(conn, ctx)
    if mode != _CERT_REQUIRED or not check:
        raise PinValidationError(
            "refusing connection: pinning context is not verifying certificates and host names"
        )
    host = conn.server_hostname
    if not host:
        raise PinValidationError("refusing connection: no server_hostname to look pins up by")
    check_pins(conn, ctx, host, ctx._certpin_policy())


def check_pins(
    conn: ssl.SSLSocket | ssl.SSLObject,
    ctx: Any,
    host: str,
    policy: Policy,
    *,
    check_name: bool = False,
) -> None:
    """The verdict for `conn`'s verified chain and `host`, acted on: the connection is marked
    checked and returns, or the failure is logged, handed to ``ctx._certpin_on_failure`` and
    (unless report-only) raised as `PinValidationError`.

    `ctx` is a `PinningContext` or a process-wide injected context (`certpin.tls.inject`):
    anything with ``_certpin_on_failure``, ``_certpin_clock``, ``_certpin_sessions`` and
    ``_certpin_tofu``. With `check_name` (a context whose owner turned ``check_hostname``
    off), the verified leaf must also be issued for `host` (`certificate_names_match`).
    """
    verified = verified_chain(conn)
    if not verified and conn.session_reused:
        # A resumed session carries no chain (both APIs return empty): re-use the chain that
        # was verified when the session was established, or fail closed.
        verified = ctx._certpin_sessions.recall(conn)
    conn._certpin_verified = verified  # type: ignore[union-attr]
    now = ctx._certpin_clock()
    if check_name and verified and not _issued_for(verified[0], host):
        reason = f"the verified certificate is not issued for {host!r} (host name mismatch)"
        report_untrusted(conn, ctx, policy, reason, now, host)
        raise PinValidationError(f"refusing connection to pinned host {host}: {reason}")
    result = verdict(host, verified, policy, now)
    tofu = ctx._certpin_tofu
    if tofu is not None and result.allowed:
        # Records the leaf on first use, else a verdict against the recorded pins.
        address = peer_address(conn)
        known = tofu.check(host, None if address is None else address[1], verified, now)
        if known is not None and not known.allowed:
            result = known
    # Public: lets callers (and the demo) see which pin matched, e.g. sock.certpin_verdict.
    conn.certpin_verdict = result  # type: ignore[union-attr]
    if result.allowed:
        conn._certpin_checked = True  # type: ignore[union-attr]
    outcome = result.outcome
    if outcome is Outcome.PINNED:
        return
    if outcome is Outcome.CA_ONLY:
        log.warning(
            "certpin: %s — connection to %s allowed (CA validation only)", result.reason, host
        )
        return
    message = result.message()
    if result.allowed:  # report-only
        log.warning("%s\n  (report-only: connection allowed)", message)
    else:
        log.error("%s", message)
    _hand_over(ctx, conn, result, host, verified, served_chain(conn))
    if not result.allowed:
        raise PinValidationError(message, result)


def report_untrusted(
    conn: ssl.SSLSocket | ssl.SSLObject,
    ctx: Any,
    policy: Policy,
    reason: str,
    now: dt.datetime,
    host: str | None = None,
) -> None:
    """Report a chain that failed CA or host-name validation, when the host is pinned (the
    ``UNTRUSTED`` verdict of `certpin.core.verdict.untrusted`); never raises. `host` is the
    name checked (default: the connection's ``server_hostname``)."""
    host = host or conn.server_hostname
    if not host:
        return
    result = untrusted(host, policy, reason, now)
    if result is None:
        return
    try:
        served = served_chain(conn)
    except (ValueError, AttributeError):  # pragma: no cover - Defensive: no chain after a failure
        served = ()
    log.error("certpin: CA validation failed for pinned host %s: %s", host, reason)
    _hand_over(ctx, conn, result, host, (), served)


def _untrusted_hook(ctx: Any, conn: ssl.SSLSocket | ssl.SSLObject, exc: Exception) -> None:
    # The sockets' call when OpenSSL refused the chain (`sockets._untrusted`); never raises,
    # the handshake error is what the caller sees.
    try:
        reason = getattr(exc, "verify_message", None) or str(exc)
        report_untrusted(
            conn,
            ctx,
            ctx._certpin_policy(),
            f"CA validation failed: {reason}",
            ctx._certpin_clock(),
        )
    except Exception:
        log.exception("certpin: reporting a CA validation failure raised; ignoring")


def _hand_over(
    ctx: Any,
    conn: ssl.SSLSocket | ssl.SSLObject,
    result: Verdict,
    host: str,
    verified: tuple[bytes, ...],
    served: tuple[bytes, ...],
) -> None:
    """The `PinFailure` for `result` to the context's ``on_failure`` (errors logged)."""
    hook = ctx._certpin_on_failure
    if hook is not None:
        address = peer_address(conn)
        failure = PinFailure(
            verdict=result,
            host=host,
            port=None if address is None else address[1],
            served_chain=served,
            verified_chain=verified,
            noted_hostname=result.noted_hostname,
            time=result.now,
        )
        try:
            hook(failure)
        except Exception:
            log.exception("certpin: on_failure callback raised; ignoring")


def _issued_for(leaf: bytes, host: str) -> bool:
    # Imported here: `import certpin` must not load cryptography's X.509 code (CLI start-up).
    from certpin.core.sources import subject_alt_names

    try:
        dns_names, addresses = subject_alt_names(leaf)
    except ValueError:
        return False
    return certificate_names_match(host, dns_names, addresses)


def peer_address(conn: ssl.SSLSocket | ssl.SSLObject) -> tuple[str, int] | None:
    """The peer's (address, port) of a blocking socket; None for a memory BIO (asyncio) or a
    socket that cannot say."""
    if isinstance(conn, ssl.SSLSocket):
        try:
            peer = conn.getpeername()
            return str(peer[0]), int(peer[1])
        except (OSError, IndexError, TypeError, ValueError):
            return None
    return None
