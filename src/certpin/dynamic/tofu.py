"""Trust on first use: `KnownPins` remembers the key of the first CA-verified connection.

File format (JSON, UTF-8, written atomically, one file per store, at most `MAX_STORE_SIZE`)::

    {
      "format": "certpin-known-pins/2",
      "hosts": {
        "api.example.com": {
          "pins": ["sha256/…"],              # the leaf's SPKI pin at first use
          "issuer_pins": ["sha256/…"],       # only with match_issuer=True: the issuing CA's
          "first_seen": "2026-01-15T12:00:00Z"
        },
        "api.example.com:8443": {…}          # a record the application made for that port
      }
    }

Records are keyed by host (normalised, IPv6 in brackets). The TLS layer does not know the port
the application meant: through a CONNECT proxy the TCP peer is the proxy, and asyncio transports
do not expose the peer at all. So a first use is recorded under the bare host, and a host with a
record under *any* key is known: a connection to it must match one of its records' pins, whatever
port it came through (a changed key is ``TOFU_MISMATCH``, never a new first use). ``host:port``
keys exist only where the application names the port (`KnownPins.record`, ``certpin tofu accept
HOST:PORT``), so a host whose ports serve different keys can have both recorded.

Version 1 files (``certpin-known-pins/1``: every key ``host:port`` with the TCP peer's port, or
``host:*`` from asyncio) are read and migrated in memory: ``host:*`` becomes ``host``, ``host:PORT``
stays a record for that port (and, like any record, makes the host known on every port). The next
write stores version 2.

Use it through its own context (it runs the normal pin check first, then TOFU)::

    known = certpin.dynamic.KnownPins("~/.config/myapp/known_pins.json")
    ctx = known.create_default_context()          # or (fallback=policy, cafile=…)

Why a context and not a plain `PolicyProvider`: recording needs the chain of a connection that
passed; a provider only hands out a policy. The TLS hook asks the store after the policy's own
verdict allowed the connection; the check itself is still `verdict()`, on a one-rule policy built
from the host's records (`DomainRule.tofu` makes a mismatch ``TOFU_MISMATCH``), and a mismatch
takes the hook's normal failure path (ERROR log, ``on_failure``, `PinValidationError`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

from certpin._errors import ConfigurationError, PinFormatError, PinValidationError
from certpin._io.atomic import atomic_write, file_lock
from certpin.core.hosts import HostError, normalize_host
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy, PolicyProvider
from certpin.core.times import iso
from certpin.core.toml import DocumentError, parse_json
from certpin.core.verdict import Verdict, verdict
from certpin.tls.context import ContextOptions, PinningContext, create_default_context

__all__ = ["MAX_STORE_SIZE", "KnownHost", "KnownPins", "parse_store"]

FORMAT = "certpin-known-pins/2"
FORMAT_V1 = "certpin-known-pins/1"
#: The largest known-pins file certpin reads or writes: 8 MiB, about 60 000 records of one pin.
#: A bigger file is refused as corrupt (and recording into a full store fails closed).
MAX_STORE_SIZE = 8 * 1024 * 1024
# A pin as certpin writes it is under 100 characters; longer text is not one of ours.
_MAX_PIN_TEXT = 200
log = logging.getLogger("certpin.tofu")

# "[" 253 "]:65535", with room to spare: longer keys are refused before any parsing.
_MAX_KEY = 300


@dataclass(frozen=True)
class KnownHost:
    """One record: the pins seen at first use of a host (``key`` = ``host`` or ``host:port``)."""

    key: str
    pins: tuple[Pin, ...]
    issuer_pins: tuple[Pin, ...]
    first_seen: str

    @property
    def host(self) -> str:
        """The canonical host name (IPv6 without brackets)."""
        return _split_key(self.key)[0]

    @property
    def port(self) -> int | None:
        """The port the application named for this record; None for the host-wide record."""
        return _split_key(self.key)[1]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pins": [str(p) for p in self.pins]}
        if self.issuer_pins:
            out["issuer_pins"] = [str(p) for p in self.issuer_pins]
        out["first_seen"] = self.first_seen
        return out


def host_key(host: str, port: int | None) -> str:
    """The record key: the normalised host (IPv6 in brackets), ``:port`` when a port is named."""
    name = normalize_host(host)
    if ":" in name:
        name = f"[{name}]"
    if port is None:
        return name
    if type(port) is not int or not 0 < port < 65536:
        # A key the parser would refuse must never be written: it would make the file unreadable.
        raise ConfigurationError(f"port {port!r} is not 1-65535")
    return f"{name}:{port}"


_PORT = re.compile(r"[0-9]{1,5}")


def _split_key(key: str) -> tuple[str, int | None]:
    """(host, port) of a key written by `host_key`; ValueError for anything else."""
    if key.startswith("["):
        host, sep, rest = key[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 key is [ADDRESS] or [ADDRESS]:PORT")
        port_text = rest[1:] if rest else None
    elif key.count(":") > 1:
        raise ValueError("an IPv6 address in a key must be in brackets")
    else:
        host, sep, port_text = key.partition(":")
        if not sep:
            port_text = None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not 1-65535")
    return host, int(port_text)


def parse_store(data: bytes, source: str) -> dict[str, tuple[KnownHost, ...]]:
    """Parse a known-pins file (version 1 or 2) into records by canonical host.

    Linear in the size of `data`; every problem is a `ConfigurationError` naming `source` and
    the key or field. Records whose keys normalise to the same key (a version 1 file written by
    an older normaliser) are merged: their pins were all trusted.

    Raises:
        ConfigurationError: too large, not UTF-8 JSON, an unknown format, a bad key or field.
    """
    if len(data) > MAX_STORE_SIZE:
        raise ConfigurationError(
            f"{source}: known-pins file is {len(data)} bytes, the limit is {MAX_STORE_SIZE}"
        )
    try:
        # The bounded reader every certpin document goes through: nesting, number length, no
        # NaN, and no repeated member (json keeps the last one silently: a record that hides
        # another is corrupt).
        doc = parse_json(data.decode("utf-8"))
    except (UnicodeDecodeError, DocumentError) as exc:
        raise ConfigurationError(f"{source}: unreadable known-pins file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, FORMAT_V1):
        raise ConfigurationError(
            f"{source}: unreadable known-pins file: format is not {FORMAT!r} (or {FORMAT_V1!r})"
        )
    if set(doc) != {"format", "hosts"} or not isinstance(doc["hosts"], dict):
        raise ConfigurationError(
            f"{source}: unreadable known-pins file: expected exactly 'format' and a 'hosts' object"
        )
    v1 = doc["format"] == FORMAT_V1
    merged: dict[str, KnownHost] = {}
    for raw_key, body in doc["hosts"].items():
        entry = _parse_entry(raw_key, body, v1, source)
        same = merged.get(entry.key)
        merged[entry.key] = entry if same is None else _merge(same, entry)
    out: dict[str, list[KnownHost]] = {}
    for entry in merged.values():
        out.setdefault(entry.host, []).append(entry)
    return {host: tuple(entries) for host, entries in out.items()}


_ENTRY_FIELDS = frozenset(("pins", "issuer_pins", "first_seen"))


def _parse_entry(raw_key: str, body: Any, v1: bool, source: str) -> KnownHost:
    where = f"{source}: hosts[{raw_key[:100]!r}]"
    try:
        if len(raw_key) > _MAX_KEY:
            raise ValueError("longer than any host:port")
        if v1 and raw_key.endswith(":*"):  # version 1's asyncio records: the host-wide key now
            host, port = _split_key(raw_key[:-2])
            if port is not None:
                raise ValueError("HOST:PORT:*")
        else:
            host, port = _split_key(raw_key)
            if v1 and port is None:
                raise ValueError("a version 1 key is HOST:PORT or HOST:*")
        key = host_key(host, port)
    except (ValueError, HostError) as exc:  # HostError is a ValueError; named for the reader
        raise ConfigurationError(f"{where}: not a known-pins key: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigurationError(f"{where}: must be an object")
    unknown = set(body) - _ENTRY_FIELDS
    if unknown:
        raise ConfigurationError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    pins = _pin_list(body.get("pins"), f"{where}.pins", required=True)
    issuer_pins = _pin_list(body.get("issuer_pins", []), f"{where}.issuer_pins", required=False)
    first_seen = body.get("first_seen", "")
    if not isinstance(first_seen, str) or len(first_seen) > 64:
        raise ConfigurationError(f"{where}.first_seen: must be a time string")
    return KnownHost(key=key, pins=pins, issuer_pins=issuer_pins, first_seen=first_seen)


def _pin_list(value: Any, where: str, *, required: bool) -> tuple[Pin, ...]:
    if not isinstance(value, list) or (required and not value):
        raise ConfigurationError(f"{where}: must be a {'non-empty ' if required else ''}list")
    out = []
    for i, text in enumerate(value):
        if not isinstance(text, str) or len(text) > _MAX_PIN_TEXT:
            raise ConfigurationError(f"{where}[{i}]: must be a pin string")
        try:
            out.append(Pin.parse(text))
        except PinFormatError as exc:
            raise ConfigurationError(f"{where}[{i}]: {exc}") from None
    return tuple(out)


def _merge(a: KnownHost, b: KnownHost) -> KnownHost:
    return KnownHost(
        key=a.key,
        pins=tuple(dict.fromkeys(a.pins + b.pins)),
        issuer_pins=tuple(dict.fromkeys(a.issuer_pins + b.issuer_pins)),
        first_seen=min(a.first_seen, b.first_seen) or max(a.first_seen, b.first_seen),
    )


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
        self._cache: dict[str, tuple[KnownHost, ...]] = {}
        self._stamp: tuple[int, int, int] | None = None

    # -- store ----------------------------------------------------------------------------------

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _read(self) -> dict[str, tuple[KnownHost, ...]]:
        """Records by canonical host (cached until the file changes)."""
        try:
            st = os.stat(self.path)
            if (st.st_ino, st.st_size, st.st_mtime_ns) == self._stamp:
                return self._cache  # one stat per connection while the file is unchanged
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())  # the stamp of what is read (the file may be replaced)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                # One byte past the cap, so a file that grew after fstat is still refused.
                data = fh.read(MAX_STORE_SIZE + 1)
        except FileNotFoundError:
            self._cache, self._stamp = {}, None
            return {}
        except OSError as exc:
            # Fail closed: an unreadable store must not turn into "first use" for every host.
            raise ConfigurationError(f"{self.path}: unreadable known-pins file: {exc}") from None
        out = parse_store(data, str(self.path))
        self._cache, self._stamp = out, stamp
        return out

    def _write(self, hosts: Mapping[str, Sequence[KnownHost]]) -> None:
        flat = {e.key: e.to_json() for entries in hosts.values() for e in entries}
        doc = {"format": FORMAT, "hosts": dict(sorted(flat.items()))}
        data = (json.dumps(doc, indent=2) + "\n").encode()
        if len(data) > MAX_STORE_SIZE:
            raise ConfigurationError(
                f"{self.path}: the known-pins file would exceed {MAX_STORE_SIZE} bytes; "
                "forget hosts (`certpin tofu forget`) or use another file"
            )
        atomic_write(self.path, data, mode=0o600)

    def entries(self) -> list[KnownHost]:
        """Every record, sorted by key."""
        with self._lock:
            hosts = self._read()
        return sorted((e for entries in hosts.values() for e in entries), key=lambda e: e.key)

    def records(self, host: str) -> tuple[KnownHost, ...]:
        """Every record of `host` (the host-wide one and any per-port ones)."""
        name = normalize_host(host)
        with self._lock:
            return self._read().get(name, ())

    def get(self, host: str, port: int | None = None) -> KnownHost | None:
        """The record stored under exactly ``host`` (port None) or ``host:port``."""
        key = host_key(host, port)
        return next((e for e in self.records(host) if e.key == key), None)

    def record(
        self, host: str, port: int | None, chain: tuple[bytes, ...], *, replace: bool = False
    ) -> KnownHost:
        """Record the chain's leaf (and issuer, with match_issuer) unless the host is known.

        `port` None records the host-wide key; a port records ``host:port`` (use it only for a
        port the application knows it reached, not a TCP peer's port). Without `replace`, a host
        with any record keeps its records and the one in force is returned (another process's,
        if it got there first). ``replace=True`` (``certpin tofu accept``) makes this key the
        current one: with a port, the host-wide record goes too (its port is unknown, it may
        have been this one) while other ports' records stay; without a port, every record of
        the host is replaced.
        """
        entries, _created = self._record(host, port, chain, replace=replace)
        key = host_key(host, port)
        return next((e for e in entries if e.key == key), entries[0])

    def _record(
        self, host: str, port: int | None, chain: tuple[bytes, ...], *, replace: bool = False
    ) -> tuple[tuple[KnownHost, ...], bool]:
        """`record`; returns the host's records after it, and whether this call wrote."""
        if not chain:
            raise PinValidationError("refusing to record an empty chain")
        name = normalize_host(host)
        key = host_key(host, port)
        entry = KnownHost(
            key=key,
            pins=(Pin.for_certificate(chain[0]),),
            issuer_pins=(Pin.for_certificate(chain[1]),)
            if self.match_issuer and len(chain) > 1
            else (),
            first_seen=iso(dt.datetime.now(dt.UTC)),
        )
        with self._lock, file_lock(self._lock_path):
            self._stamp = None  # re-read under the lock: another process may have written
            hosts = dict(self._read())
            mine = hosts.get(name, ())
            if mine and not replace:
                return mine, False
            keep = () if port is None else tuple(e for e in mine if e.port not in (None, port))
            hosts[name] = (*keep, entry)
            self._write(hosts)
            self._stamp = None
        log.info("certpin: recorded %s for %s", entry.pins[0], key)
        return hosts[name], True

    def forget(self, host: str, port: int | None = None) -> bool:
        """Forget every record of `host`, so its next connection is a first use again.

        `port` is accepted for compatibility and not used: a host known under any port is
        known on every port, so forgetting one port's record would not make it unknown.
        """
        del port
        name = normalize_host(host)
        with self._lock, file_lock(self._lock_path):
            self._stamp = None
            hosts = dict(self._read())
            if hosts.pop(name, None) is None:
                return False
            self._write(hosts)
            self._stamp = None
        return True

    # -- checking -------------------------------------------------------------------------------

    def policy_for(self, entries: KnownHost | Sequence[KnownHost], host: str) -> Policy:
        """The one-rule policy `verdict()` checks a connection against: any record's pins."""
        records = (entries,) if isinstance(entries, KnownHost) else tuple(entries)
        name = normalize_host(host)
        pins = tuple(dict.fromkeys(p for e in records for p in e.pins + e.issuer_pins))
        rule = DomainRule(pattern=name, pins=pins, allow_single_pin=True, tofu=True)
        return Policy(domains={name: rule}, source=str(self.path))

    def check(
        self, host: str, port: int | None, chain: tuple[bytes, ...], now: dt.datetime
    ) -> Verdict | None:
        """The TOFU verdict for a CA-verified chain; records and returns None on first use.

        `port` (the TCP peer's port, as the TLS layer sees it) is not used: through a proxy it
        is the proxy's, on asyncio it is unknown, so the host's records under every key apply.

        "First use" is decided under the store's lock: when another thread or process records
        the host between our read and our write, its record is checked like any other (a
        different leaf is ``TOFU_MISMATCH``), never silently allowed.
        """
        del port
        name = normalize_host(host)
        with self._lock:
            entries = self._read().get(name, ())
        if not entries:
            entries, created = self._record(host, None, chain)
            if created:
                return None
        return verdict(host, chain, self.policy_for(entries, host), now)

    def create_default_context(
        self,
        fallback: Policy | PolicyProvider | Callable[[], Policy] | None = None,
        **options: Unpack[ContextOptions],
    ) -> PinningContext:
        """A `PinningContext` that checks `fallback` (default: no pins) and then TOFU.

        The keyword arguments go to `certpin.create_default_context`.
        """
        policy = fallback if fallback is not None else Policy(domains={})
        ctx = create_default_context(policy, **options)
        # The hook (certpin.tls.context._enforce) asks this store after the policy's own verdict.
        ctx._certpin_tofu = self
        return ctx
