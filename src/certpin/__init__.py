"""certpin: certificate and public-key pinning for Python TLS clients.

Quick start::

    import certpin, urllib.request
    policy = certpin.Policy.from_file("pins.toml")
    ctx = certpin.create_default_context(policy)
    urllib.request.urlopen("https://api.example.com/", context=ctx)

The same context pins http.client, urllib, urllib3, requests (`certpin.requests`), httpx
(``verify=ctx``), aiohttp (``ssl=ctx``), websockets and asyncio streams.
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
from certpin.core.hosts import normalize_host
from certpin.core.pins import Pin, PinKind
from certpin.core.policy import DomainRule, KillSwitch, Policy, PolicyProvider
from certpin.core.verdict import ChainEntry, Verdict, VerdictStatus, verdict
from certpin.tls.context import PinFailure, PinningContext, create_default_context

if _TYPE_CHECKING:
    from certpin.dynamic.bundle import Bundle, sign_bundle, verify_bundle
    from certpin.dynamic.jws import BundleError, FileSigner, Signer, TrustedKey
    from certpin.dynamic.provider import DynamicPolicy, RefreshResult
    from certpin.dynamic.tofu import KnownPins
    from certpin.reporting.reporter import Reporter, ReporterStats, reporting_hook

# Dynamic pinning pulls in urllib.request and JOSE code: import it on first use (PEP 562), so
# `import certpin` and the CLI stay fast for static policies.
_LAZY = {
    "Bundle": "certpin.dynamic.bundle",
    "BundleError": "certpin.dynamic.jws",
    "DynamicPolicy": "certpin.dynamic.provider",
    "FileSigner": "certpin.dynamic.jws",
    "KnownPins": "certpin.dynamic.tofu",
    "RefreshResult": "certpin.dynamic.provider",
    "Reporter": "certpin.reporting.reporter",
    "ReporterStats": "certpin.reporting.reporter",
    "Signer": "certpin.dynamic.jws",
    "TrustedKey": "certpin.dynamic.jws",
    "sign_bundle": "certpin.dynamic.bundle",
    "reporting_hook": "certpin.reporting.reporter",
    "verify_bundle": "certpin.dynamic.bundle",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'certpin' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Bundle",
    "BundleError",
    "CertificateLoadError",
    "CertpinError",
    "ChainEntry",
    "ConfigurationError",
    "DomainRule",
    "DynamicPolicy",
    "FileSigner",
    "InsecureContextError",
    "KillSwitch",
    "KnownPins",
    "Pin",
    "PinFailure",
    "PinFormatError",
    "PinKind",
    "PinValidationError",
    "PinningContext",
    "Policy",
    "PolicyError",
    "PolicyProvider",
    "RefreshResult",
    "Reporter",
    "ReporterStats",
    "Signer",
    "TrustedKey",
    "Verdict",
    "VerdictStatus",
    "__version__",
    "create_default_context",
    "normalize_host",
    "reporting_hook",
    "sign_bundle",
    "verdict",
    "verify_bundle",
]

# A library logs, the application decides where it goes (stdlib logging convention).
_logging.getLogger("certpin").addHandler(_logging.NullHandler())
