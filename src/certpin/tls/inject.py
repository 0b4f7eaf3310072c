"""Process-wide pinning: `inject_into_ssl` makes every client `ssl.SSLContext` a pinning one.

The mechanism is truststore's: ``ssl.SSLContext`` is replaced by `InjectedContext`, a subclass
of CPython's class whose socket classes run the pin check after every client handshake (the
same hook as `certpin.create_default_context`, `certpin.tls.sockets`). Libraries that bound
their own reference to the class at import time (urllib3, pip's vendored urllib3, botocore,
truststore's inner context) are re-pointed, and the contexts some libraries build at import
time (requests' and aiohttp's preloaded contexts) become injected contexts in place. Each
patched name is recorded and `extract_from_ssl` puts every one back.

What an injected context does on each handshake:

* server side: nothing (plain ``ssl`` socket classes);
* a host no rule covers (``unpinned_hosts = "allow"``): nothing, exactly as without certpin;
* a pinned host (or any host under ``unpinned_hosts = "deny"``): the library's own trust store
  and settings verified the chain; certpin then refuses ``CERT_NONE`` (no verified chain
  exists), checks the host name against the verified leaf itself when the library turned
  ``check_hostname`` off (urllib3 and botocore match names themselves), and runs the verdict.
  A chain OpenSSL refused is reported to ``on_failure`` as ``UNTRUSTED`` ("CA failure").

`certpin run` (docs/process-wide.md) injects in every Python process a program starts: it puts
``certpin/_startup`` (a ``sitecustomize`` hook) on ``PYTHONPATH`` and names the policy in
``CERTPIN_RUN_POLICY``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from certpin._errors import InsecureContextError, PinValidationError
from certpin.core.hosts import HostError
from certpin.core.policy import Policy, PolicyProvider, as_provider
from certpin.tls.context import (
    _C_SSLCONTEXT,
    OnFailure,
    _SSLContext,
    _untrusted_hook,
    _utcnow,
    check_pins,
    peer_address,
    record_settings,
    verification_of,
)
from certpin.tls.sockets import Sessions, _PinningSSLObject, _PinningSSLSocket

__all__ = [
    "ENV_POLICY",
    "ENV_REPORT_URI",
    "InjectedContext",
    "extract_from_ssl",
    "inject_into_ssl",
    "injected",
]

log = logging.getLogger("certpin.enforce")

#: Environment variables `certpin run` sets for its children (docs/process-wide.md).
ENV_POLICY = "CERTPIN_RUN_POLICY"
ENV_REPORT_URI = "CERTPIN_RUN_REPORT_URI"

_CERT_NONE = int(ssl.CERT_NONE)


@dataclass(frozen=True)
class _Injection:
    policy: Any  # () -> Policy
    on_failure: OnFailure | None


class _CSettings(_SSLContext):  # type: ignore[valid-type,misc]
    """The settings ssl.py implements as Python properties, set through the C descriptors.

    ssl.py's setters call ``super(SSLContext, SSLContext)`` with the *module's* SSLContext,
    which is `InjectedContext` while injected: they would recurse. Code that computed
    ``super(ssl.SSLContext, ssl.SSLContext)`` while injected (truststore's
    ``_original_super_SSLContext``, pip's vendored copy) lands here, on this class, instead of
    on ssl.py's properties.
    """

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return ssl.VerifyMode(_C_SSLCONTEXT.verify_mode.__get__(self))

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        _C_SSLCONTEXT.verify_mode.__set__(self, value)

    @property
    def verify_flags(self) -> ssl.VerifyFlags:
        return ssl.VerifyFlags(_C_SSLCONTEXT.verify_flags.__get__(self))

    @verify_flags.setter
    def verify_flags(self, value: ssl.VerifyFlags) -> None:
        _C_SSLCONTEXT.verify_flags.__set__(self, value)

    @property
    def options(self) -> ssl.Options:
        return ssl.Options(_C_SSLCONTEXT.options.__get__(self))

    @options.setter
    def options(self, value: ssl.Options) -> None:
        _C_SSLCONTEXT.options.__set__(self, value)

    @property
    def minimum_version(self) -> ssl.TLSVersion:
        return ssl.TLSVersion(_C_SSLCONTEXT.minimum_version.__get__(self))

    @minimum_version.setter
    def minimum_version(self, value: ssl.TLSVersion) -> None:
        if value == ssl.TLSVersion.SSLv3:  # as ssl.py: asking for SSLv3 clears OP_NO_SSLv3
            self.options &= ~ssl.Options.OP_NO_SSLv3
        _C_SSLCONTEXT.minimum_version.__set__(self, value)

    @property
    def maximum_version(self) -> ssl.TLSVersion:
        return ssl.TLSVersion(_C_SSLCONTEXT.maximum_version.__get__(self))

    @maximum_version.setter
    def maximum_version(self, value: ssl.TLSVersion) -> None:
        _C_SSLCONTEXT.maximum_version.__set__(self, value)

    @property
    def _msg_callback(self) -> Any:
        inner = _C_SSLCONTEXT._msg_callback.__get__(self)
        return getattr(inner, "user_function", inner)

    @_msg_callback.setter
    def _msg_callback(self, callback: Any) -> None:
        # As ssl.py's setter, which would recurse (see above): wrap to pass enums.
        if callback is None:
            _C_SSLCONTEXT._msg_callback.__set__(self, None)
            return
        if not callable(callback):
            raise TypeError(f"{callback} is not callable.")

        tls: Any = ssl  # ssl.py's private TLS enums (not in typeshed)

        def inner(
            conn: Any, direction: str, version: int, content_type: int, msg_type: int, data: bytes
        ) -> None:
            content = _enum(tls._TLSContentType, content_type)
            kind = (
                tls._TLSAlertType if content == tls._TLSContentType.ALERT else tls._TLSMessageType
            )
            callback(
                conn,
                direction,
                _enum(ssl.TLSVersion, version),
                content,
                _enum(kind, msg_type),
                data,
            )

        inner.user_function = callback  # type: ignore[attr-defined]
        _C_SSLCONTEXT._msg_callback.__set__(self, inner)


class _AnyContext(type):
    """The metaclass of `InjectedContext`: ``isinstance(ctx, ssl.SSLContext)`` (and
    ``issubclass``) keep answering as before injection, for every context, including those
    made before it. Libraries check ``isinstance(verify, ssl.SSLContext)`` on the caller's
    context (httpx, aiohttp); a False there would drop the caller's trust settings."""

    def __instancecheck__(cls, obj: object) -> bool:
        if cls is InjectedContext:
            return isinstance(obj, _SSLContext)
        return super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        if cls is InjectedContext:
            return issubclass(sub, _SSLContext)
        return super().__subclasscheck__(sub)

    # ``ssl.SSLContext.sslsocket_class = …`` while injected would replace the property that
    # keeps certpin's socket classes for every injected context: refused (one context's own
    # ``ctx.sslsocket_class = X`` is combined with certpin's instead).
    def __setattr__(cls, name: str, value: Any) -> None:
        if name in _HOOKS:
            raise InsecureContextError(
                f"setting {name} on the class ssl.SSLContext while certpin is injected would "
                "switch pinning off for every context; set it on one context instead"
            )
        super().__setattr__(name, value)

    def __delattr__(cls, name: str) -> None:
        if name in _HOOKS:
            raise InsecureContextError(f"{name} of the injected ssl.SSLContext is certpin's")
        super().__delattr__(name)


_HOOKS = frozenset({"sslsocket_class", "sslobject_class", "_wrap_socket", "_wrap_bio"})


class InjectedContext(_CSettings, metaclass=_AnyContext):
    """``ssl.SSLContext`` while certpin is injected (see the module docstring).

    Every setting works as on a plain context; only client handshakes to pinned hosts are
    checked. A socket class a library installs (truststore does) is combined with certpin's
    rather than replacing it.
    """

    # The injection in force: set by inject_into_ssl and kept after extract_from_ssl, so a
    # context made while injected keeps pinning (documented).
    _certpin_injection: ClassVar[_Injection | None] = None
    _certpin_tofu: ClassVar[Any] = None
    _certpin_clock = staticmethod(_utcnow)

    @property
    def _certpin_policy(self) -> Any:
        injection = type(self)._certpin_injection
        assert injection is not None  # set before the class is ever handed out
        return injection.policy

    @property
    def _certpin_on_failure(self) -> OnFailure | None:
        injection = type(self)._certpin_injection
        return None if injection is None else injection.on_failure

    @cached_property
    def _certpin_sessions(self) -> Sessions:
        return Sessions()

    @property
    def sslsocket_class(self) -> type[ssl.SSLSocket]:
        return self.__dict__.get("_certpin_socket_class", _PinningSSLSocket)  # type: ignore[no-any-return]

    @sslsocket_class.setter
    def sslsocket_class(self, value: type[ssl.SSLSocket]) -> None:
        self.__dict__["_certpin_socket_class"] = _combined(_PinningSSLSocket, value)
        self.__dict__["_certpin_plain_socket_class"] = value

    @property
    def sslobject_class(self) -> type[ssl.SSLObject]:
        return self.__dict__.get("_certpin_object_class", _PinningSSLObject)  # type: ignore[no-any-return]

    @sslobject_class.setter
    def sslobject_class(self, value: type[ssl.SSLObject]) -> None:
        self.__dict__["_certpin_object_class"] = _combined(_PinningSSLObject, value)
        self.__dict__["_certpin_plain_object_class"] = value

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        if server_side:  # server sockets are untouched: the plain (or the library's) class
            plain = self.__dict__.get("_certpin_plain_socket_class", ssl.SSLSocket)
            sock_: ssl.SSLSocket = plain._create(
                sock=sock,
                server_side=True,
                do_handshake_on_connect=do_handshake_on_connect,
                suppress_ragged_eofs=suppress_ragged_eofs,
                server_hostname=server_hostname,
                context=self,
                session=session,
            )
            return sock_
        client: ssl.SSLSocket = super().wrap_socket(
            sock,
            server_side=False,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        return client

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if server_side:
            plain = self.__dict__.get("_certpin_plain_object_class", ssl.SSLObject)
            obj: ssl.SSLObject = plain._create(
                incoming,
                outgoing,
                server_side=True,
                server_hostname=server_hostname,
                session=session,
                context=self,
            )
            return obj
        bio: ssl.SSLObject = super().wrap_bio(
            incoming, outgoing, server_side=False, server_hostname=server_hostname, session=session
        )
        return bio

    def _certpin_enforce(self, conn: ssl.SSLSocket | ssl.SSLObject) -> None:
        _enforce_injected(conn, self)

    # ssl.py creates each connection's OpenSSL object through these two: record what it got
    # (the check judges a connection by the verification OpenSSL was given, `record_settings`).
    def _wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
        return record_settings(self, super()._wrap_socket, args, kwargs)

    def _wrap_bio(self, *args: Any, **kwargs: Any) -> Any:
        return record_settings(self, super()._wrap_bio, args, kwargs)

    def _certpin_untrusted(self, conn: ssl.SSLSocket | ssl.SSLObject, exc: Exception) -> None:
        _untrusted_hook(self, conn, exc)


def _enum(kind: Any, value: int) -> Any:
    try:
        return kind(value)
    except ValueError:
        return value  # a value the enum does not know is passed on as the number


_COMBINED: dict[tuple[type, type], type] = {}


def _combined(hook: type, given: type) -> type:
    """`given` with certpin's `hook` class in front of it in the MRO: the library's own
    handshake code (truststore's checks) runs first, then the pin check."""
    if not isinstance(given, type) or not issubclass(given, hook.__mro__[1]):
        raise InsecureContextError(
            f"{given!r} is not a {hook.__mro__[1].__name__} subclass; certpin cannot run its "
            "pin check through it"
        )
    if issubclass(given, hook):
        return given
    key = (hook, given)
    if key not in _COMBINED:
        _COMBINED[key] = type(f"Pinning{given.__name__}", (hook, given), {})
    return _COMBINED[key]


def _enforce_injected(conn: ssl.SSLSocket | ssl.SSLObject, ctx: InjectedContext) -> None:
    policy: Policy = ctx._certpin_policy()
    deny = policy.unpinned_hosts == "deny"
    host = conn.server_hostname
    named = bool(host)
    if not host:
        # No name to check (ssl.wrap_socket, a client that passes none): the peer's address is
        # what the certificate must be for, if a rule pins it. A memory BIO has no peer.
        address = peer_address(conn)
        host = None if address is None else address[0]
    if not host:
        if deny:
            raise PinValidationError(
                "refusing connection: no server_hostname to look pins up by, and the injected "
                'policy says unpinned_hosts = "deny"'
            )
        conn._certpin_checked = True  # type: ignore[union-attr]
        return
    try:
        pinned = deny or policy.lookup(host) is not None
    except HostError:
        # A name certpin cannot read may still be one OpenSSL verifies as a pinned host
        # ("127.0.0.010" is 127.0.0.10 to it): refused, with the parser's reason, by the verdict.
        pinned = True
    if not pinned:
        conn._certpin_checked = True  # type: ignore[union-attr]
        return
    mode, check = verification_of(conn, ctx)
    if mode == _CERT_NONE:
        raise PinValidationError(
            f"refusing connection to pinned host {host}: certificate verification is turned "
            "off on this context (CERT_NONE, e.g. verify=False), so there is no verified chain "
            "to check pins against"
        )
    check_pins(conn, ctx, host, policy, check_name=not (check and named))


# -- injection ------------------------------------------------------------------------------------

#: Library names bound to CPython's ``ssl.SSLContext`` at import time (truststore #121, #179,
#: botocore #3596): (module, attribute). Only modules already imported are touched; a module
#: imported after injection binds the injected class by itself.
_CLASS_BINDINGS = (
    ("ssl", "SSLContext"),
    ("urllib3.util.ssl_", "SSLContext"),
    ("pip._vendor.urllib3.util.ssl_", "SSLContext"),
    ("botocore.httpsession", "SSLContext"),
    ("truststore._api", "_original_SSLContext"),
    ("pip._vendor.truststore._api", "_original_SSLContext"),
)
#: Contexts libraries build at import time and use for every request: (module, attribute).
#: They are switched to `InjectedContext` in place, keeping their trust store and settings.
_PRELOADED = (
    ("requests.adapters", "_preloaded_ssl_context"),
    ("pip._vendor.requests.adapters", "_preloaded_ssl_context"),
    ("aiohttp.connector", "_SSL_CONTEXT_VERIFIED"),
    ("aiohttp.connector", "_SSL_CONTEXT_UNVERIFIED"),
)

_lock = threading.RLock()
#: What inject_into_ssl changed, to undo: ("name", module, attribute, old value) or
#: ("class", context, None, old class).
_undo: list[tuple[str, Any, str | None, Any]] = []


def inject_into_ssl(
    policy: Policy | PolicyProvider | Any, *, on_failure: OnFailure | None = None
) -> None:
    """Pin every client `ssl.SSLContext` of the process from now on (docs/process-wide.md).

    After the call, every client context created in the process, including the ones libraries
    create through the names they bound at import time, checks pinned hosts on every handshake
    against the verified chain, with whatever trust store the library configured. Unpinned
    hosts and server-side contexts are untouched. Contexts created before the call are
    unaffected, except the preloaded ones of requests and aiohttp, which are switched over.

    Idempotent and thread-safe: a second call replaces the policy and `on_failure` (for every
    injected context, since they look the policy up per handshake).

    Args:
        policy: a `Policy`, or any policy provider (a `certpin.dynamic.DynamicPolicy`, an
            object with ``current_policy()``, a zero-argument callable).
        on_failure: called with a `PinFailure` for every failed pin check and every CA
            validation failure on a pinned host (``verdict.status`` ``UNTRUSTED``).

    Raises:
        InsecureContextError: urllib3 has been switched to pyOpenSSL
            (``urllib3.contrib.pyopenssl.inject_into_urllib3()``), which no ``ssl`` hook
            reaches; undo that first.
    """
    getter = as_provider(policy)
    getter()  # fail now, not at the first handshake, if the provider is broken
    _refuse_pyopenssl()
    with _lock:
        InjectedContext._certpin_injection = _Injection(getter, on_failure)
        if _undo:
            return  # already injected: the new policy applies from the next handshake
        for module_name, attribute in _CLASS_BINDINGS:
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, attribute, None) is _SSLContext:
                _undo.append(("name", module, attribute, _SSLContext))
                setattr(module, attribute, InjectedContext)
        for module_name, attribute in _PRELOADED:
            module = sys.modules.get(module_name)
            ctx = getattr(module, attribute, None) if module is not None else None
            if type(ctx) is _SSLContext:
                _undo.append(("class", ctx, None, _SSLContext))
                ctx.__class__ = InjectedContext
        _undo.append(("marker", None, None, None))
        log.debug("certpin: injected into ssl (%d names patched)", len(_undo) - 1)


def _refuse_pyopenssl() -> None:
    # urllib3.contrib.pyopenssl.inject_into_urllib3() swaps urllib3's SSLContext for
    # PyOpenSSLContext: OpenSSL through pyOpenSSL, outside the ssl module, so no certpin hook
    # would run for urllib3/requests/botocore traffic. Refuse rather than pin everything else
    # and let that traffic through unpinned.
    for name in ("urllib3.util.ssl_", "pip._vendor.urllib3.util.ssl_"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "IS_PYOPENSSL", False):
            raise InsecureContextError(
                f"{name.rsplit('.util', 1)[0]} uses pyOpenSSL (urllib3.contrib.pyopenssl."
                "inject_into_urllib3()): certpin cannot pin connections made through it; call "
                "urllib3.contrib.pyopenssl.extract_from_urllib3() before certpin.inject_into_ssl()"
            )


def extract_from_ssl() -> None:
    """Undo `inject_into_ssl`: every patched name gets its original value back, and the names
    (`_CLASS_BINDINGS`) and preloaded contexts of libraries imported while injected are put
    back to CPython's class.

    Contexts created while injected keep pinning with the last injected policy (they are
    already in the hands of their clients). New contexts are plain again, except those made
    through a name some other module bound while injected (``from ssl import SSLContext``):
    that name keeps certpin's class, and its contexts keep pinning (the safe side). Idempotent.
    """
    with _lock:
        while _undo:
            kind, target, attribute, old = _undo.pop()
            if kind == "name" and attribute is not None:
                if getattr(target, attribute) is InjectedContext:
                    setattr(target, attribute, old)
            elif kind == "class" and type(target) is InjectedContext:
                target.__class__ = old
        # Modules first imported while injected bound the injected class themselves.
        for module_name, attribute in _CLASS_BINDINGS:
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, attribute, None) is InjectedContext:
                setattr(module, attribute, _SSLContext)
        for module_name, attribute in _PRELOADED:
            module = sys.modules.get(module_name)
            ctx = getattr(module, attribute, None) if module is not None else None
            if type(ctx) is InjectedContext:
                ctx.__class__ = _SSLContext  # type: ignore[assignment]


def injected() -> bool:
    """True while `inject_into_ssl` is in force (``ssl.SSLContext`` is certpin's)."""
    with _lock:
        return bool(_undo)
