"""Pinning for pycurl: a policy's rule as libcurl's ``CURLOPT_PINNEDPUBLICKEY``.

libcurl verifies certificates with its own TLS library; Python never sees the verified chain,
so certpin's handshake hook cannot run. libcurl has its own pin check instead:
``CURLOPT_PINNEDPUBLICKEY = "sha256//<b64>;sha256//<b64>"`` aborts the connection, before any
application byte, unless the SHA-256 of the *leaf* certificate's SubjectPublicKeyInfo is one of
the listed hashes (``CURLE_SSL_PINNEDPUBKEYNOTMATCH``, 90). It never looks at a CA certificate.

So only rules that mean exactly that are translated; everything else is refused with
`UnenforceableRuleError` rather than weakened (docs/process-wide.md):

* ``leaf_pins`` of ``sha256/`` SPKI pins: translated exactly;
* ``pins``: refused. A ``pins`` entry may name any certificate of the chain, and certpin cannot
  tell from a hash whether it is a leaf key; move leaf keys (the live one and its backup) to
  ``leaf_pins``;
* ``ca_pins``: refused (curl cannot pin a CA);
* ``sha384/``, ``sha512/`` and certificate (``cert-sha256/``) pins: refused (curl's hashes are
  SHA-256 of the key only);
* report-only rules: refused (curl cannot report and continue);
* an expired rule or an active kill switch: no pin (CA validation only, logged at WARNING), as
  the verdict does; a host no rule covers: no pin, or `PinValidationError` under
  ``unpinned_hosts = "deny"``.

pycurl is imported only by `pin_curl`, so this module imports without it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections.abc import Callable
from typing import Any

from certpin._errors import InsecureContextError, UnenforceableRuleError
from certpin.core.hosts import HostError, normalize_host
from certpin.core.pins import PinKind
from certpin.core.policy import DomainRule, Policy, PolicyProvider, as_provider
from certpin.tls._native import rule_in_force, unenforceable, utcnow

__all__ = ["UnenforceableRuleError", "pin_curl", "pinned_public_key"]

CLIENT = "pycurl"

#: URL schemes whose connections libcurl makes over TLS from the first byte (the pin applies).
TLS_SCHEMES = frozenset({"https", "ftps", "imaps", "pop3s", "smtps", "ldaps", "wss", "mqtts"})

# A deliberately narrow URL grammar: scheme://host[:port][/?#…] with an ASCII host name or a
# bracketed IPv6 literal, and nothing urllib and libcurl could read as two different hosts
# (userinfo, backslashes, spaces, percent-encoding in the authority). The pins are looked up by
# the host certpin reads; libcurl must connect to that same host.
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<rest>[/?#][\x21-\x7e]*)?\Z"
)


def pinned_public_key(
    policy: Policy | PolicyProvider | Callable[[], Policy],
    url_or_host: str,
    *,
    now: dt.datetime | None = None,
) -> str | None:
    """libcurl's ``CURLOPT_PINNEDPUBLICKEY`` value for the host's rule, or None for no pin.

    Args:
        policy: a `Policy`, or anything yielding the current one (asked once, now).
        url_or_host: a URL (``https://api.example.com:8443/x``) or a bare host name / address.
        now: the time for rule expiry and kill switches (default: the current UTC time).

    Returns:
        ``"sha256//<b64>;sha256//<b64>"`` (the rule's ``leaf_pins`` in order), or None when
        the host is not pinned now: no rule covers it (``unpinned_hosts = "allow"``), its rule
        expired, or a kill switch suspends it (both logged at WARNING).

    Raises:
        UnenforceableRuleError: the rule cannot be expressed exactly (module docstring).
        PinValidationError: no rule covers the host and the policy denies unpinned hosts.
        HostError: `url_or_host` is not a URL certpin reads or not a host name.
    """
    _scheme, host = _target(url_or_host)
    rule = rule_in_force(as_provider(policy)(), host, CLIENT, now or utcnow())
    return None if rule is None else _curl_pins(normalize_host(host), rule)


def pin_curl(
    curl: Any,
    policy: Policy | PolicyProvider | Callable[[], Policy],
    url: str,
    *,
    now: dt.datetime | None = None,
) -> str | None:
    """Point a ``pycurl.Curl`` handle at `url`, pinned by `policy`'s rule for its host.

    Sets ``URL``; ``SSL_VERIFYPEER = 1`` and ``SSL_VERIFYHOST = 2`` (curl's pin check comes on
    top of CA and host-name verification, never instead of it); ``FOLLOWLOCATION = 0`` (a
    redirect to another host would be checked against this host's pins, or against none);
    and ``PINNEDPUBLICKEY`` to `pinned_public_key`'s value when the host is pinned now.
    Nothing is changed when a refusal is raised.

    pycurl cannot unset ``PINNEDPUBLICKEY``: for a host that is not pinned now, a handle that
    was pinned for another host keeps that pin and its transfer fails (error 90) — closed,
    never open. Use a fresh handle (or ``curl.reset()``) when moving to an unpinned host.

    Call it for every transfer, after the handle's other options, and do not change those
    options afterwards: pycurl cannot read an option back, so certpin cannot check them at
    ``perform()``. To follow a redirect, read ``pycurl.REDIRECT_URL`` and call `pin_curl`
    again with it.

    Args:
        curl: a ``pycurl.Curl`` handle.
        policy: a `Policy`, or anything yielding the current one (asked once, now).
        url: an absolute URL. A pinned host needs a scheme libcurl speaks TLS on from the first
            byte (`TLS_SCHEMES`).
        now: the time for rule expiry and kill switches (default: the current UTC time).

    Returns:
        The pin string set, or None when the host is not pinned now (nothing set).

    Raises:
        UnenforceableRuleError, PinValidationError, HostError: as `pinned_public_key`.
        InsecureContextError: a pinned host with a cleartext scheme (``http://``, ``ftp://``…).
    """
    pycurl: Any = importlib.import_module("pycurl")
    scheme, host = _target(url, require_scheme=True)
    current = as_provider(policy)()
    if scheme not in TLS_SCHEMES and (
        current.lookup(normalize_host(host)) is not None or current.unpinned_hosts == "deny"
    ):
        raise InsecureContextError(
            f"refusing {url!r}: {normalize_host(host)} is pinned and {scheme}:// is not TLS, so "
            "no certificate would be checked; use https:// (or another TLS scheme)"
        )
    rule = rule_in_force(current, host, CLIENT, now or utcnow())
    value = None if rule is None else _curl_pins(normalize_host(host), rule)
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.SSL_VERIFYPEER, 1)
    curl.setopt(pycurl.SSL_VERIFYHOST, 2)
    curl.setopt(pycurl.FOLLOWLOCATION, 0)
    if value is not None:
        curl.setopt(pycurl.PINNEDPUBLICKEY, value)
    # else: pycurl cannot unset PINNEDPUBLICKEY ("unsetopt() is not supported for this
    # option"), so a pin a reused handle carries stays: stricter, never weaker (docstring).
    return value


def _curl_pins(host: str, rule: DomainRule) -> str:
    if rule.pins:
        raise unenforceable(
            host,
            rule,
            CLIENT,
            "`pins` may name a CA key, and curl compares only the leaf certificate's key, so "
            "certpin cannot translate it exactly; list the leaf keys (the live key and its "
            "backup) under leaf_pins instead",
        )
    if rule.ca_pins:
        raise unenforceable(
            host,
            rule,
            CLIENT,
            "curl compares only the leaf certificate's key (CURLOPT_PINNEDPUBLICKEY), so "
            "ca_pins cannot be enforced; pin leaf keys under leaf_pins, or use a Python client "
            "with certpin.create_default_context",
        )
    for pin in rule.leaf_pins:
        if pin.kind is not PinKind.SPKI or pin.algorithm != "sha256":
            raise unenforceable(
                host,
                rule,
                CLIENT,
                f"leaf pin {pin} cannot be expressed: curl's pins are SHA-256 digests of the "
                "key (sha256/…), not other digests or certificate fingerprints",
            )
    return ";".join(f"sha256//{pin.base64}" for pin in rule.leaf_pins)


def _target(url_or_host: str, *, require_scheme: bool = False) -> tuple[str, str]:
    """(lower-case scheme or "", host) of a URL or a bare host, read conservatively."""
    if not isinstance(url_or_host, str):
        raise HostError(f"expected a URL or host name, got {type(url_or_host).__name__}")
    if "://" not in url_or_host:
        if require_scheme:
            raise HostError(
                f"{url_or_host[:200]!r} is not an absolute URL: give the scheme "
                "(libcurl would guess one)"
            )
        return "", url_or_host
    m = _URL.match(url_or_host)
    if m is None:
        raise HostError(
            f"cannot read the host of {url_or_host[:200]!r} the way libcurl would: certpin "
            "accepts scheme://host[:port]/path with an ASCII host name (IDN as its xn-- "
            "A-label) or a bracketed IPv6 address, no user:password@ (use CURLOPT_USERPWD), no "
            "spaces or backslashes"
        )
    return m["scheme"].lower(), m["host"]
