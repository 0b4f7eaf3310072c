"""``certpin ct hook``: certpin's verdict inside certspotter (a ``hooks.d`` script).

certspotter runs every executable in its ``hooks.d`` directory for each certificate it finds
for a watch-list name, with the certificate's facts in the environment (certspotter-script(8)):
``EVENT``, ``WATCH_ITEM``, ``LOG_URI``, ``ENTRY_INDEX``, ``PUBKEY_SHA256``, ``TBS_SHA256``,
``CERT_FILENAME`` (the PEM chain it saved, leaf first)… `hook_record` reads them, applies the
policy with the same coverage and verdict as ``certpin ct watch``, and returns the record to
pass on — only for an *unexpected* key; None for a key a pin covers, a name no rule covers, or
another event (``malformed_cert``, ``error``: certspotter reports those itself).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certpin.core.pins import spki_of_certificate
from certpin.core.policy import Policy
from certpin.lifecycle.ct.certs import dns_names, tbs_of_certificate
from certpin.lifecycle.ct.decide import Candidate, Coverage, decide
from certpin.lifecycle.ct.entries import PRECERT_ENTRY, X509_ENTRY, Entry
from certpin.lifecycle.ct.errors import EntryError, HookError

__all__ = ["MAX_CERT_FILE", "hook_record"]

#: the largest CERT_FILENAME read (a PEM chain is a few kB).
MAX_CERT_FILE = 1024 * 1024
_POISON = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")


def _chain(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CERT_FILE + 1)
    except OSError as exc:
        raise HookError(f"CERT_FILENAME {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CERT_FILE:
        raise HookError(f"CERT_FILENAME {path}: larger than {MAX_CERT_FILE} bytes")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise HookError(f"CERT_FILENAME {path}: not a PEM certificate chain ({exc})") from None
    return [c.public_bytes(Encoding.DER) for c in certs]


def hook_record(env: Mapping[str, str], policy: Policy, now: dt.datetime) -> dict[str, Any] | None:
    """The record for an unexpected certificate certspotter found, or None (see the module).

    Raises:
        HookError: a discovered_cert event without ``CERT_FILENAME`` (certspotter ran with
            ``-no_save``: there is no certificate to judge), an unreadable certificate file, or
            one whose key is not ``PUBKEY_SHA256``.
    """
    if env.get("EVENT") != "discovered_cert":
        return None
    path = env.get("CERT_FILENAME")
    if not path:
        raise HookError(
            "certspotter gave no CERT_FILENAME (is it running with -no_save?): without the "
            "certificate there is nothing to judge"
        )
    chain = _chain(path)
    leaf = chain[0]
    expected = env.get("PUBKEY_SHA256", "").strip().lower()
    if expected and hashlib.sha256(spki_of_certificate(leaf)).hexdigest() != expected:
        raise HookError(f"CERT_FILENAME {path}: its key is not PUBKEY_SHA256 {expected[:64]}")
    try:
        tbs = tbs_of_certificate(leaf)
        names = dns_names(tbs)
    except EntryError as exc:
        raise HookError(f"CERT_FILENAME {path}: {exc}") from None
    rules = Coverage(policy).rules(names)
    if not rules:
        return None
    precert = any(ext.oid == _POISON for ext in x509.load_der_x509_certificate(leaf).extensions)
    index = env.get("ENTRY_INDEX", "")
    entry = Entry(
        int(index) if index.isdigit() else -1,
        b"",
        PRECERT_ENTRY if precert else X509_ENTRY,
        0,
        tbs if precert else leaf,
    )
    log = env.get("LOG_URI", "") or Path(path).name
    record = decide(Candidate(entry, names, rules), leaf, chain[1:], policy, now, log)
    if record is None or record["kind"] != "unexpected":
        return None
    return record
