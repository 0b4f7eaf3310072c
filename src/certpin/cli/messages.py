"""The verifier's words, translated for the person at the terminal.

OpenSSL (``certpin check``, ``pin --connect``, ``--live``) and ``cryptography.x509.verification``
(``--chain DOMAIN=FILE``) say why a chain does not verify in their own terms — "unable to get
local issuer certificate", "candidates exhausted", "cert is not valid at validation time". The
library keeps those words (they are what a search engine knows); the CLI says what they mean and
what to do. A message the table below does not know is printed unchanged.
"""

from __future__ import annotations

import re

__all__ = ["explain"]

# The two sentences the library wraps a verifier's words in: `certpin.tls.fetch` (a live
# connection) and `certpin.lifecycle.chain_files` (a chain file). What precedes them is where
# (host:port or file); the name is the one the chain was verified for.
_LEAD = re.compile(
    r": (?:certificate verification failed for '(?P<sni>[^']*)'"
    r"|the chain does not verify for '(?P<host>[^']*)' against .*?): (?P<detail>.*)",
    re.DOTALL,
)

# (what the verifier says, lower case) -> kind; the first match wins, so the longer phrase of
# a pair ("self-signed certificate in certificate chain") comes before the shorter one.
_KINDS = (
    ("self-signed certificate in certificate chain", "untrusted"),
    ("self signed certificate in certificate chain", "untrusted"),  # OpenSSL 1.1
    ("unable to get local issuer certificate", "untrusted"),
    ("unable to get issuer certificate", "untrusted"),
    ("candidates exhausted", "untrusted"),  # cryptography: no path to a trust anchor
    ("self-signed certificate", "self-signed"),
    ("self signed certificate", "self-signed"),
    ("certificate has expired", "expired"),
    ("certificate is not yet valid", "not-yet-valid"),
    ("not valid at validation time", "validity"),  # cryptography: expired or not yet valid
    ("hostname mismatch", "name"),
    ("ip address mismatch", "name"),
    ("no matching subjectaltname", "name"),  # cryptography
)

# cryptography names the certificate it stopped at: "(encountered processing
# <Certificate(subject=<Name(CN=api.example.com,O=Example)>, ...)>)".
_SUBJECT = re.compile(r"encountered processing <Certificate\(subject=<Name\((?P<name>.*?)\)>")


def explain(message: str, cafile: str | None = None) -> str:
    """`message` with a verifier's words replaced by what they mean for the user.

    Args:
        message: an error or finding text, e.g. ``"api.example.com:443: certificate
            verification failed for 'api.example.com': unable to get local issuer
            certificate"``.
        cafile: the ``--cafile`` the command was given, or None (the system CA store).

    Returns:
        e.g. ``"api.example.com:443: the chain does not verify against the system CA store (for
        a private CA pass --cafile)"``; `message` itself when it holds no verifier failure this
        module knows.
    """
    found = _LEAD.search(message)
    if found is None:
        return message
    detail = found["detail"].lower()
    kind = next((kind for phrase, kind in _KINDS if phrase in detail), None)
    if kind is None:
        return message
    name = found["sni"] if found["sni"] is not None else found["host"]
    subject = _SUBJECT.search(found["detail"])
    which = f" ({subject['name']})" if subject else ""
    return f"{message[: found.start()]}: {_sentence(kind, name, which, cafile)}"


def _sentence(kind: str, name: str, which: str, cafile: str | None) -> str:
    if kind == "untrusted":
        if cafile is None:
            return (
                "the chain does not verify against the system CA store "
                "(for a private CA pass --cafile)"
            )
        return f"the chain does not verify against the CA certificates in {cafile}"
    if kind == "self-signed":
        if cafile is None:
            return (
                "the certificate is self-signed: no CA in the system CA store vouches for it "
                "(to trust it anyway, pass it with --cafile)"
            )
        return f"the certificate is self-signed and not among the CA certificates in {cafile}"
    if kind == "expired":
        return "a certificate of the chain has expired"
    if kind == "not-yet-valid":
        return "a certificate of the chain is not valid yet (check this machine's clock)"
    if kind == "validity":
        return (
            f"a certificate of the chain{which} has expired or is not valid yet "
            "(check its dates and this machine's clock)"
        )
    return f"the certificate is not valid for {name!r}: it was issued for other names"
