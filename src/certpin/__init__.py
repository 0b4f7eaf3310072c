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
from ._policy import DomainRule, Policy, PolicyProvider
from ._verdict import ChainEntry, Verdict, VerdictStatus, verdict
from ._version import __version__

__all__ = [
    "CertificateLoadError",
    "CertpinError",
    "ChainEntry",
    "ConfigurationError",
    "DomainRule",
    "InsecureContextError",
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
    "normalize_host",
    "verdict",
]

# A library logs, the application decides where it goes (stdlib logging convention).
_logging.getLogger("certpin").addHandler(_logging.NullHandler())
