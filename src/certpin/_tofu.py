"""Trust on first use: `KnownPins` remembers the key of the first CA-verified connection.

File format (JSON, UTF-8, written atomically, one file per store)::

    {
      "format": "certpin-known-pins/1",
      "hosts": {
        "api.example.com:443": {
          "pins": ["sha256/…"],              # the leaf's SPKI pin at first use
          "issuer_pins": ["sha256/…"],       # only with match_issuer=True: the issuing CA's
          "first_seen": "2026-01-15T12:00:00Z"
        }
      }
    }

Keys are ``host:port`` (host normalised, IPv6 in brackets). asyncio transports do not expose the
peer port to the TLS layer, so their entries use ``host:*``.

Use it through its own context (it runs the normal pin check first, then TOFU)::

    known = certpin.KnownPins("~/.config/myapp/known_pins.json")
    ctx = known.create_default_context()          # or (fallback=policy, cafile=…)

Why a context and not a plain `PolicyProvider`: recording needs the chain of a connection that
passed, and a port; a provider only hands out a policy. The TLS hook asks the store after the
policy's own verdict allowed the connection; the check itself is still `verdict()`, on a one-rule
policy built from the record (`DomainRule.tofu` makes a mismatch ``TOFU_MISMATCH``), and a
mismatch takes the hook's normal failure path (ERROR log, ``on_failure``, `PinValidationError`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._atomic import atomic_write, file_lock
from ._context import OnFailure, PinningContext, create_default_context
from ._errors import ConfigurationError, PinFormatError, PinValidationError
from ._hosts import normalize_host
from ._pins import Pin
from ._policy import DomainRule, Policy, PolicyProvider
from ._verdict import Verdict, verdict

__all__ = ["KnownPins", "KnownHost"]

FORMAT = "certpin-known-pins/1"
log = logging.getLogger("certpin.tofu")


@dataclass(frozen=True)
class KnownHost:
    """One record: the pins seen at first use of ``host:port``."""

    key: str
    pins: tuple[Pin, ...]
    issuer_pins: tuple[Pin, ...]
    first_seen: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pins": [str(p) for p in self.pins]}
        if self.issuer_pins:
            out["issuer_pins"] = [str(p) for p in self.issuer_pins]
        out["first_seen"] = self.first_seen
        return out


def host_key(host: str, port: int | None) -> str:
    name = normalize_host(host)
    if ":" in name:
        name = f"[{name}]"
    return f"{name}:{'*' if port is None else port}"


class KnownPins:
    """A trust-on-first-use pin store in a JSON file, safe across threads and processes.

    Args:
        path: the JSON file (created on first record).
        match_issuer: also record the issuing CA's pin and accept a later leaf whose key
            changed but whose issuing CA is the same. Off by default: recording a public CA
            would accept anything that CA issues for the host.
    """

    def __init__(self, path: str | Path, *, match_issuer: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.match_issuer = match_issuer
        self._lock = threading.Lock()
        self._cache: dict[str, KnownHost] = {}
        self._stamp: tuple[int, int, int] | None = None

    # -- store ----------------------------------------------------------------------------------

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _read(self) -> dict[str, KnownHost]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cache, self._stamp = {}, None
            return {}
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return self._cache
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT!r}")
            hosts = doc.get("hosts")
            if not isinstance(hosts, dict):
                raise ValueError("'hosts' must be an object")
            out = {}
            for key, entry in hosts.items():
                out[key] = KnownHost(
                    key=key,
                    pins=tuple(Pin.parse(p) for p in entry["pins"]),
                    issuer_pins=tuple(Pin.parse(p) for p in entry.get("issuer_pins", [])),
                    first_seen=str(entry.get("first_seen", "")),
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, PinFormatError) as exc:
            # Fail closed: a corrupt store must not turn into "first use" for every host.
            raise ConfigurationError(f"{self.path}: unreadable known-pins file: {exc}") from None
        self._cache, self._stamp = out, stamp
        return out

    def _write(self, hosts: dict[str, KnownHost]) -> None:
        doc = {"format": FORMAT, "hosts": {k: hosts[k].to_json() for k in sorted(hosts)}}
        atomic_write(self.path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)

    def entries(self) -> list[KnownHost]:
        with self._lock:
            return [v for _, v in sorted(self._read().items())]

    def get(self, host: str, port: int | None = 443) -> KnownHost | None:
        with self._lock:
            return self._read().get(host_key(host, port))

    def record(
        self, host: str, port: int | None, chain: tuple[bytes, ...], *, replace: bool = False
    ) -> KnownHost:
        """Record the chain's leaf (and issuer, with match_issuer) unless a record exists.

        Returns the record in force (another process's, if it got there first). `replace=True`
        overwrites (``certpin tofu accept``).
        """
        return self._record(host, port, chain, replace=replace)[0]

    def _record(
        self, host: str, port: int | None, chain: tuple[bytes, ...], *, replace: bool = False
    ) -> tuple[KnownHost, bool]:
        """`record`, and whether this call wrote the record (False: one existed)."""
        if not chain:
            raise PinValidationError("refusing to record an empty chain")
        key = host_key(host, port)
        entry = KnownHost(
            key=key,
            pins=(Pin.for_certificate(chain[0]),),
            issuer_pins=(Pin.for_certificate(chain[1]),)
            if self.match_issuer and len(chain) > 1
            else (),
            first_seen=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        with self._lock, file_lock(self._lock_path):
            self._stamp = None  # re-read under the lock: another process may have written
            hosts = dict(self._read())
            if key in hosts and not replace:
                return hosts[key], False
            hosts[key] = entry
            self._write(hosts)
            self._stamp = None
        log.info("certpin: recorded %s for %s on first use", entry.pins[0], key)
        return entry, True

    def forget(self, host: str, port: int | None = 443) -> bool:
        key = host_key(host, port)
        with self._lock, file_lock(self._lock_path):
            self._stamp = None
            hosts = dict(self._read())
            if hosts.pop(key, None) is None:
                return False
            self._write(hosts)
            self._stamp = None
        return True

    # -- checking -------------------------------------------------------------------------------

    def policy_for(self, entry: KnownHost, host: str) -> Policy:
        """The one-rule policy `verdict()` checks a connection against."""
        name = normalize_host(host)
        rule = DomainRule(
            pattern=name,
            pins=entry.pins + entry.issuer_pins,
            allow_single_pin=True,
            tofu=True,
        )
        return Policy(domains={name: rule}, source=str(self.path))

    def check(
        self, host: str, port: int | None, chain: tuple[bytes, ...], now: dt.datetime
    ) -> Verdict | None:
        """The TOFU verdict for a CA-verified chain; records and returns None on first use.

        "First use" is decided under the store's lock: when another thread or process records
        the host between our read and our write, its record is checked like any other (a
        different leaf is ``TOFU_MISMATCH``), never silently allowed.
        """
        with self._lock:
            entry = self._read().get(host_key(host, port))
        if entry is None:
            entry, created = self._record(host, port, chain)
            if created:
                return None
        return verdict(host, chain, self.policy_for(entry, host), now)

    def create_default_context(
        self,
        fallback: Policy | PolicyProvider | Callable[[], Policy] | None = None,
        *,
        on_failure: OnFailure | None = None,
        **kwargs: Any,
    ) -> PinningContext:
        """A `PinningContext` that checks `fallback` (default: no pins) and then TOFU.

        Other keyword arguments go to `certpin.create_default_context`.
        """
        policy = fallback if fallback is not None else Policy(domains={})
        ctx = create_default_context(policy, on_failure=on_failure, **kwargs)
        # The hook (certpin._context._enforce) asks this store after the policy's own verdict.
        ctx._certpin_tofu = self
        return ctx
