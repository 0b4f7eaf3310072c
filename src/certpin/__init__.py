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

from ._context import PinFailure, PinningContext, create_default_context
from ._errors import (
    CertificateLoadError,
    CertpinError,
    ConfigurationError,
    InsecureContextError,
    PinFormatError,
    PinValidationError,
    PolicyError,
)
from ._hosts import normalize_host
from ._pins import Pin, PinKind
from ._policy import DomainRule, KillSwitch, Policy, PolicyProvider
from ._verdict import ChainEntry, Verdict, VerdictStatus, verdict
from ._version import __version__

if _TYPE_CHECKING:
    from ._bundle import Bundle, sign_bundle, verify_bundle
    from ._dynamic import DynamicPolicy, RefreshResult
    from ._jws import BundleError, FileSigner, Signer, TrustedKey
    from ._report import Reporter, ReporterStats, reporting_hook
    from ._tofu import KnownPins

# Dynamic pinning pulls in urllib.request and JOSE code: import it on first use (PEP 562), so
# `import certpin` and the CLI stay fast for static policies.
_LAZY = {
    "Bundle": "._bundle",
    "BundleError": "._jws",
    "DynamicPolicy": "._dynamic",
    "FileSigner": "._jws",
    "KnownPins": "._tofu",
    "RefreshResult": "._dynamic",
    "Reporter": "._report",
    "ReporterStats": "._report",
    "Signer": "._jws",
    "TrustedKey": "._jws",
    "sign_bundle": "._bundle",
    "reporting_hook": "._report",
    "verify_bundle": "._bundle",
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
