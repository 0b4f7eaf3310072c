"""certpin's exceptions: one tree, rooted at `CertpinError`.

The tree (where a class is defined outside this module, its module is named)::

    CertpinError
    ├── ConfigurationError (also ValueError)      bad input the caller gave us
    │   ├── PinFormatError                         a pin string that does not parse
    │   ├── PolicyError                            a policy file/dict that does not validate
    │   ├── DocumentError             core.toml    a policy/state document: over a limit, unparsable
    │   ├── CertificateLoadError                   a certificate/key/CSR file that does not parse
    │   │   └── DERError              core.der     malformed DER in a certificate or CSR
    │   ├── InsecureContextError                   CERT_NONE / no hostname check on a context
    │   ├── UnenforceableRuleError                 a rule a client's own TLS stack cannot enforce
    │   ├── HostError                 core.hosts   a host name or pattern certpin refuses
    │   ├── FormatError               formats      a foreign-format file that does not import
    │   ├── StateError, WebhookError  lifecycle.monitor.state
    │   ├── LogListError, WatchStateError, HookError   lifecycle.ct.errors: CT input
    │   └── …                                      (every other invalid-input error)
    ├── PinValidationError (also ssl.SSLCertVerificationError)
    │                                              a handshake rejected by the pin check
    ├── ConnectError                  tls.fetch    a chain could not be fetched (CLI exit 3)
    ├── BundleError                   dynamic.jws  a signed bundle or its JWS was rejected
    ├── LogError                      lifecycle.ct.errors  a CT log misbehaved (ct exit 3)
    │   └── EntryError                lifecycle.ct.errors  a log entry that does not parse
    ├── InsecureRequestError          requests     a request that would bypass the pins
    ├── LimitError (also ValueError)  collector.limits   a request broke an ingest limit
    │   └── ReportError               collector.dialects a report that does not validate
    ├── TimeError (also ValueError)   core.times         a report time outside the stored range
    ├── StoreError (also RuntimeError) collector.store   the database cannot be used
    ├── Overloaded, StoreFailure      collector._writer  the writer refused or failed a report

`tests/unit/test_errors.py` walks every module and fails if an exception class certpin defines
is not a `CertpinError`.

`PinValidationError` subclasses `ssl.SSLCertVerificationError` so every HTTP client's existing
``except ssl.SSLError`` / certificate-error handling keeps working (requests and urllib3 wrap it in
their own `SSLError`, httpx in `ConnectError`, aiohttp in `ClientConnectorCertificateError`).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certpin.core.verdict import Verdict

__all__ = [
    "CertificateLoadError",
    "CertpinError",
    "ConfigurationError",
    "InsecureContextError",
    "PinFormatError",
    "PinValidationError",
    "PolicyError",
    "UnenforceableRuleError",
]


class CertpinError(Exception):
    """Root of every error certpin raises."""


class ConfigurationError(CertpinError, ValueError):
    """Input given to certpin is invalid; the message names the file, field and value."""


class PinFormatError(ConfigurationError):
    """A pin string could not be parsed."""


class CertificateLoadError(ConfigurationError):
    """A certificate, key or CSR could not be read."""


class InsecureContextError(ConfigurationError):
    """A pinning context was asked to run without certificate or hostname verification."""


class UnenforceableRuleError(ConfigurationError):
    """A pin rule that a client with its own TLS stack (pycurl, grpcio) cannot enforce exactly.

    certpin refuses rather than enforce a weaker rule (``certpin.tls.pycurl``,
    ``certpin.tls.grpc``; docs/process-wide.md).

    Attributes:
        host: the host the rule was looked up for.
        pattern: the policy key of the rule (None when no rule applies).
        client: the client that cannot enforce it (``"pycurl"``, ``"grpcio"``).
    """

    def __init__(self, message: str, *, host: str, pattern: str | None, client: str) -> None:
        super().__init__(message)
        self.host = host
        self.pattern = pattern
        self.client = client


class PolicyError(ConfigurationError):
    """A policy document is invalid.

    Attributes:
        source: the file name (or ``"<dict>"``) the policy came from.
        location: the dotted path of the offending field, e.g. ``domains."a.example".pins[1]``.
        problem: what is wrong, without the location.
    """

    def __init__(self, problem: str, *, source: str | None = None, location: str = "") -> None:
        self.source = source or "<policy>"
        self.location = location
        self.field = ""  # the rule field at fault, when raised by a DomainRule's own checks
        self.problem = problem
        where = f"{self.source}: {location}" if location else self.source
        super().__init__(f"{where}: {problem}")


class PinValidationError(CertpinError, ssl.SSLCertVerificationError):
    """The peer's verified chain does not satisfy the pin policy (or could not be checked).

    Attributes:
        verdict: the `Verdict` that caused the rejection, or None when the connection was rejected
            before a verdict could be reached (insecure context, no verified chain API).
    """

    def __init__(self, message: str, verdict: Verdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict
        # Mirror SSLCertVerificationError's attributes so clients that print them keep working.
        self.reason = "PIN_VALIDATION_FAILED"
        self.verify_message = message
        self.verify_code = 50  # X509_V_ERR_APPLICATION_VERIFICATION, not 0 (X509_V_OK)

    def __str__(self) -> str:
        return str(self.args[0])
