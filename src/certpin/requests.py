"""requests integration: a transport adapter that pins every HTTPS connection.

    import requests, certpin
    from certpin.requests import PinningAdapter

    session = requests.Session()
    adapter = PinningAdapter(certpin.Policy.from_file("pins.toml"))
    session.mount("https://", adapter)
    session.mount("http://", adapter)   # so plain http:// to a pinned host is refused

Trust anchors come from the adapter (``cafile=`` etc., else the system store); a per-request
``verify=False`` or ``verify="bundle.pem"`` is refused rather than silently ignored, since the
pinning context's verification cannot be turned off or changed per request. A bundle that
requests takes from ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` is machine configuration, not a
request's choice: it is ignored (logged once at INFO) and the adapter's anchors apply.

A request to a pinned host (any spelling of it) that the pin check could not see is refused
with `InsecureRequestError` before a byte is sent: plain ``http://``, and ``https://`` through a
forwarding proxy (urllib3's ``use_forwarding_for_https``, where the proxy, not this client, makes
the TLS connection to the origin). CONNECT tunnels keep the TLS session with the origin and are
pinned as usual.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Unpack
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, DEFAULT_RETRIES, HTTPAdapter
from urllib3.util.proxy import connection_requires_http_tunnel

from certpin._errors import CertpinError, InsecureContextError
from certpin.core.hosts import HostError
from certpin.core.policy import Policy, PolicyProvider
from certpin.tls.context import ContextOptions, PinningContext, create_default_context

__all__ = ["InsecureRequestError", "PinningAdapter", "pinned_session"]

log = logging.getLogger("certpin.requests")


class InsecureRequestError(CertpinError):
    """A request to a pinned host that could not be pin-checked: plain HTTP, or HTTPS through a
    forwarding proxy (under ``unpinned_hosts = "deny"``: to any host)."""


class PinningAdapter(HTTPAdapter):
    """An `HTTPAdapter` whose connections use a certpin `PinningContext`.

    Args:
        policy: a `Policy` or a provider of the current one.
        client_cert: a client certificate for mTLS (``certfile`` with the key in it, or
            ``(certfile, keyfile)``). Per-request ``cert=`` is refused.
        pool_connections, pool_maxsize, max_retries, pool_block: as for `HTTPAdapter`.
        **options: the context's options, as for `certpin.create_default_context`: trust
            anchors (``cafile``, ``capath``, ``cadata``; default: the system store),
            ``on_failure`` (called once per failed pin check), ``allow_partial_chain``,
            ``x509_strict``, ``trust``, ``clock``.
    """

    def __init__(
        self,
        policy: Policy | PolicyProvider | Callable[[], Policy],
        *,
        client_cert: str | tuple[str, str] | None = None,
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        max_retries: Any = DEFAULT_RETRIES,
        pool_block: bool = DEFAULT_POOLBLOCK,
        **options: Unpack[ContextOptions],
    ) -> None:
        self.ssl_context: PinningContext = create_default_context(policy, **options)
        if client_cert is not None:
            # mTLS belongs to the adapter: urllib3 would load a per-request cert= into the shared
            # context, and every later connection, to any host, would present it.
            certfile, keyfile = (
                client_cert if isinstance(client_cert, tuple) else (client_cert, None)
            )
            self.ssl_context.load_cert_chain(certfile, keyfile)
        self._env_bundle_noted = False
        super().__init__(pool_connections, pool_maxsize, max_retries, pool_block)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self.ssl_context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # Through a CONNECT proxy the TLS session is with the origin: its pins apply.
        proxy_kwargs.setdefault("ssl_context", self.ssl_context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def get_connection_with_tls_context(
        self,
        request: PreparedRequest,
        verify: Any,
        proxies: Mapping[str, str] | None = None,
        cert: Any = None,
    ) -> Any:
        # requests >= 2.32 picks the pool here; older ones call get_connection.
        pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
        self._refuse_forwarding(request.url or "", pool)
        return pool

    def get_connection(self, url: Any, proxies: Mapping[str, str] | None = None) -> Any:
        pool = super().get_connection(url, proxies)
        self._refuse_forwarding(str(url), pool)
        return pool

    def _refuse_forwarding(self, url: str, pool: Any) -> None:
        """Refuse an https:// request that `pool` would send to a forwarding proxy.

        With urllib3's ``use_forwarding_for_https`` the TLS session is with the proxy, which
        makes its own connection to the origin: the pin check only ever sees the proxy's
        certificate (urllib3 #3267: a forwarded target is never verified by the client). A
        pinned origin's request must not go that way; a CONNECT tunnel keeps the session with
        the origin. Checked on the pool about to be used, however its manager was configured.
        """
        proxy = getattr(pool, "proxy", None)
        if proxy is None or getattr(pool, "scheme", None) != "https":
            return
        if connection_requires_http_tunnel(proxy, getattr(pool, "proxy_config", None), "https"):
            return
        self._refuse_unpinnable(
            urlsplit(url).hostname or "",
            f"https:// request through forwarding proxy {proxy.host}:{proxy.port} to",
            "the proxy, not certpin, would check the origin's certificate; reach pinned hosts "
            "through a CONNECT tunnel (urllib3's default)",
        )

    def _refuse_unpinnable(self, host: str, action: str, why: str) -> None:
        """InsecureRequestError if `host` is pinned (or must be): `action` cannot check pins."""
        policy = self.ssl_context.policy
        try:
            rule = policy.lookup(host)
        except HostError as exc:
            # A name certpin cannot normalise has no rule to look up: fail closed.
            raise InsecureRequestError(f"refusing {action} {host!r}: {exc}") from None
        if rule is not None:
            raise InsecureRequestError(
                f"refusing {action} pinned host {host} (rule {rule.pattern}): {why}"
            )
        if policy.unpinned_hosts == "deny":
            raise InsecureRequestError(
                f"refusing {action} {host}: the policy denies unpinned hosts, and {why}"
            )

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
        # The pool key includes the context, so a connection made with one pinning context is
        # never handed to a request configured with another.
        pool_kwargs["ssl_context"] = self.ssl_context
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # HTTPAdapter.cert_verify sets conn.ca_certs to certifi's bundle for verify=True, and
        # urllib3 then calls load_verify_locations() on *our* context: every certifi root would
        # silently join the trust anchors given to the adapter. Trust comes from the adapter only.
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        if verify is False:
            raise InsecureContextError(
                "verify=False is not allowed through a certpin PinningAdapter: pins can only be "
                "checked on a verified chain"
            )
        if isinstance(verify, str):
            if verify not in _env_ca_bundles():
                raise InsecureContextError(
                    f"verify={verify!r}: a PinningAdapter takes its trust anchors at "
                    "construction (PinningAdapter(policy, cafile=...)); a per-request CA bundle "
                    "would be silently ignored, so it is refused"
                )
            # requests turns REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE into a per-request verify path
            # (Session.trust_env). That is machine-wide configuration, not a request's choice:
            # the adapter's own anchors apply, and we say so once.
            if not self._env_bundle_noted:
                self._env_bundle_noted = True
                log.info(
                    "certpin: ignoring CA bundle %s from the environment; the PinningAdapter's "
                    "trust anchors apply",
                    verify,
                )
        if cert is not None:
            raise InsecureContextError(
                "a per-request cert= would be loaded into the adapter's shared context and sent "
                "to every later host; give the client certificate to the adapter instead: "
                "PinningAdapter(policy, client_cert=(certfile, keyfile))"
            )
        url = request.url or ""
        parts = urlsplit(url)
        if parts.scheme.lower() == "http" and parts.hostname:
            # Every spelling of a pinned host (127.000.000.001, 0x7f.1, [::ffff:127.0.0.1]…)
            # is that host: the lookup normalises it, and one it cannot normalise is refused.
            self._refuse_unpinnable(
                parts.hostname, "plain http:// request to", "plain HTTP cannot be pinned"
            )
        return super().send(request, stream, timeout, verify, cert, proxies)


def _env_ca_bundles() -> set[str]:
    return {v for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if (v := os.environ.get(k))}


def pinned_session(policy: Policy | PolicyProvider | Callable[[], Policy], **kwargs: Any) -> Any:
    """A `requests.Session` with a `PinningAdapter` mounted for both https:// and http://."""
    import requests

    session = requests.Session()
    adapter = PinningAdapter(policy, **kwargs)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
