"""certpin: certificate and public-key pinning for Python TLS clients.

Quick start::

    import certpin, urllib.request
    policy = certpin.Policy.from_file("pins.toml")
    ctx = certpin.create_default_context(policy)
    urllib.request.urlopen("https://api.example.com/", context=ctx)

The same context pins http.client, urllib, urllib3, requests (`certpin.requests`), httpx
(``verify=ctx``), aiohttp (``ssl=ctx``), websockets and asyncio streams.

This module holds the core (pins, host patterns, policies, the verdict) and enforcement (the
pinning context). Dynamic pinning, trust on first use and bundle signing are in
`certpin.dynamic`, failure reports in `certpin.reporting`, the requests adapter in
`certpin.requests`.
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING

from certpin._errors import (
    CertificateLoadError,
    CertpinError,
    ConfigurationError,
    InsecureContextError,
    PinFormatError,
    PinValidationError,
    PolicyError,
)
from certpin._version import __version__
from certpin.core.hosts import HostPattern, normalize_host
from certpin.core.pins import Pin, PinKind
from certpin.core.policy import DomainRule, KillSwitch, Policy, PolicyProvider
from certpin.core.verdict import ChainEntry, Verdict, VerdictStatus, verdict
from certpin.tls.context import PinFailure, PinningContext, create_default_context
from certpin.tls.inject import extract_from_ssl, inject_into_ssl

if _TYPE_CHECKING:  # the deprecated spellings below, for type checkers during their last release
    from certpin.dynamic import Bundle as Bundle
    from certpin.dynamic import BundleError as BundleError
    from certpin.dynamic import DynamicPolicy as DynamicPolicy
    from certpin.dynamic import FileSigner as FileSigner
    from certpin.dynamic import KnownPins as KnownPins
    from certpin.dynamic import RefreshResult as RefreshResult
    from certpin.dynamic import Signer as Signer
    from certpin.dynamic import TrustedKey as TrustedKey
    from certpin.dynamic import sign_bundle as sign_bundle
    from certpin.dynamic import verify_bundle as verify_bundle
    from certpin.reporting import Reporter as Reporter
    from certpin.reporting import ReporterStats as ReporterStats
    from certpin.reporting import reporting_hook as reporting_hook

# Dynamic pinning and reporting moved to their subpackages (`certpin.dynamic`,
# `certpin.reporting`). Their old top-level names keep working for one release, with a
# DeprecationWarning naming the new spelling. Importing them here on first use (PEP 562) also
# keeps `import certpin` from loading urllib and the JOSE code.
_MOVED = {
    "Bundle": "certpin.dynamic",
    "BundleError": "certpin.dynamic",
    "DynamicPolicy": "certpin.dynamic",
    "FileSigner": "certpin.dynamic",
    "KnownPins": "certpin.dynamic",
    "RefreshResult": "certpin.dynamic",
    "Signer": "certpin.dynamic",
    "TrustedKey": "certpin.dynamic",
    "sign_bundle": "certpin.dynamic",
    "verify_bundle": "certpin.dynamic",
    "Reporter": "certpin.reporting",
    "ReporterStats": "certpin.reporting",
    "reporting_hook": "certpin.reporting",
}


def __getattr__(name: str) -> object:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'certpin' has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(
        f"certpin.{name} is deprecated and will be removed in the next release; "
        f"use {module}.{name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CertificateLoadError",
    "CertpinError",
    "ChainEntry",
    "ConfigurationError",
    "DomainRule",
    "HostPattern",
    "InsecureContextError",
    "KillSwitch",
    "Pin",
    "PinFailure",
    "PinFormatError",
    "PinKind",
    "PinValidationError",
    "PinningContext",
    "Policy",
    "PolicyError",
    "PolicyProvider",
    "Verdict",
    "VerdictStatus",
    "__version__",
    "create_default_context",
    "extract_from_ssl",
    "inject_into_ssl",
    "normalize_host",
    "verdict",
]

# A library logs, the application decides where it goes (stdlib logging convention).
_logging.getLogger("certpin").addHandler(_logging.NullHandler())
