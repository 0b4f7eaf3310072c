"""The Certificate Transparency watcher's errors (drawn in `certpin._errors`' tree).

Two families, because they end a run differently: the *input* the user gave (a log list, a state
directory) is a `ConfigurationError` (exit 2, nothing is fetched); what a *log* served is a
`LogError` (that log is reported as ``log_error``, its new entries are not trusted, exit 3, and
the other logs carry on).
"""

from __future__ import annotations

from certpin._errors import CertpinError, ConfigurationError

__all__ = ["EntryError", "HookError", "LogError", "LogListError", "WatchStateError"]


class LogListError(ConfigurationError):
    """The log list cannot be read, breaks a limit or does not follow the v3 schema.

    The message names the file (or URL) and the field.
    """


class WatchStateError(ConfigurationError):
    """The ``--state`` directory holds a state file certpin cannot read or did not write."""


class HookError(ConfigurationError):
    """The environment certspotter gave ``certpin ct hook`` lacks something or contradicts
    itself (no CERT_FILENAME, a certificate whose key is not PUBKEY_SHA256)."""


class LogError(CertpinError):
    """A log misbehaved: unreachable, an HTTP error, a signature or proof that does not verify,
    or data that does not parse. Its new entries are not trusted."""


class EntryError(LogError):
    """A log entry (or the certificate in it) that does not parse; the message says where."""
