"""`DynamicPolicy`: a `PolicyProvider` fed by signed bundles over a pinned channel.

The policy in force is, in order of preference:

1. the last good bundle (its rollout policy if this client's cohort is in the rollout), with
   its kill switch applied, while the bundle has not expired;
2. after the bundle's ``expires_at``: the union of the static fallback and the last good
   bundle (logged), so neither stale static pins nor a stale bundle alone lock users out;
3. the static fallback when no bundle was ever accepted, or the cache is unreadable. Never
   "unpinned".

`current_policy()` is what the TLS hook calls on every handshake: an attribute read plus one
clock comparison. All network and crypto work happens in `refresh_now()`, run by a background
thread (`start()`), never inside a request; the only disk write a handshake can cause is the
one-time record that a kill switch ended (see below).

Time (issue: "an ended kill switch comes back when the clock goes back"): every time decision
of a DynamicPolicy (bundle expiry, kill switch end, refresh schedule, verifying a bundle) uses
``max(clock, not_before)``, where ``not_before`` is the newest verified ``issued_at`` minus the
allowed skew, persisted in the cache. And once a kill switch is seen ended, that is persisted
too (``kill_switch_ended``): a switch whose ``until`` is not after it never applies again, on
this run or after a restart, whatever the clock reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from certpin._errors import ConfigurationError
from certpin._io.atomic import atomic_write, file_lock
from certpin._version import __version__
from certpin.core.hosts import Pattern, PatternKind, normalize_host
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, KillSwitch, Policy, _no_gc
from certpin.dynamic.bundle import (
    DEFAULT_SKEW,
    MAX_BUNDLE_SIZE,
    Bundle,
    BundleKillSwitch,
    _parse_time,
    verify_bundle,
)
from certpin.dynamic.jws import (
    MAX_JSON_DEPTH,
    BundleError,
    TrustedKey,
    _json_object,
    load_trusted_keys,
)

__all__ = ["DynamicPolicy", "RefreshResult", "State", "bucket", "parse_state", "union_policy"]

log = logging.getLogger("certpin.dynamic")

BUNDLE_FILE = "bundle.jws"
STATE_FILE = "state.json"
CLIENT_ID_FILE = "client_id"
LOCK_FILE = ".lock"
BUCKETS = 10_000
#: Largest state.json read. What a client writes stays far below it: at most
#: `MAX_TRACKED_KEYS` added keys (≈ 160 bytes each) and retired kids (≈ 50 bytes each), an ETag
#: of at most `MAX_ETAG` characters, and a few scalars.
MAX_STATE_SIZE = 1024 * 1024
MAX_TRACKED_KEYS = 1024
MAX_ETAG = 1024
_HEX64 = frozenset("0123456789abcdef")

Status = Literal["updated", "unchanged", "not_modified", "rejected", "failed"]


@dataclass(frozen=True)
class RefreshResult:
    """What one `DynamicPolicy.refresh_now()` did.

    Attributes:
        status: ``updated`` (a new bundle is in force), ``unchanged`` (same bundle again),
            ``not_modified`` (HTTP 304), ``rejected`` (a bundle failed verification; the last
            good one stays), ``failed`` (network/HTTP error; the last good one stays).
        version: the version in force afterwards, or None (fallback).
        reason: why, for logs.
    """

    status: Status
    version: int | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("updated", "unchanged", "not_modified")


def bucket(rollout_id: str, client_id: str) -> int:
    """The client's cohort bucket: SHA-256(rollout_id ‖ client_id) mod 10 000 (UTF-8 bytes)."""
    digest = hashlib.sha256(rollout_id.encode() + client_id.encode()).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def union_policy(a: Policy, b: Policy) -> Policy:
    """For every host, the union of the pins `a` and `b` would each apply (used after hard
    expiry).

    The result has every key of both policies. For each key, the rule gathers the pins of the
    rule each policy's own `Policy.lookup` picks for the hosts that key covers (the base host,
    a one-label and a two-label name under it), so a fallback ``**.example.com`` [P1, P2] and a
    bundle ``api.example.com`` [P3, P4] give ``api.example.com`` all four pins. Pins land in the
    any-position ``pins`` slot (a leaf/CA slot constraint cannot be expressed as a union; this
    is the permissive side, and it may accept a few more pins than either policy alone).
    Enforcing only if every contributing rule enforces; ``unpinned_hosts = "deny"`` only if
    both deny.
    """
    domains: dict[str, DomainRule] = {}
    keys = dict.fromkeys([*a.domains, *b.domains])
    for key in keys:
        own = [r for r in (a.domains.get(key), b.domains.get(key)) if r is not None]
        contributing = list(own)
        for host in _representatives(key, own, keys):
            for policy in (a, b):
                rule = policy.lookup(host)
                if rule is not None and rule not in contributing:
                    contributing.append(rule)
        domains[key] = _merge_rules(key, contributing, own)
    deny = a.unpinned_hosts == "deny" and b.unpinned_hosts == "deny"
    return Policy(
        domains=domains,
        version=b.version,
        unpinned_hosts="deny" if deny else "allow",
        source=f"union({a.source}, {b.source})",
    )


#: Labels no real policy key uses: hosts "under" a pattern that only the pattern itself covers.
_PROBE = ("certpin-union-probe-1", "certpin-union-probe-2")


def _representatives(key: str, own: list[DomainRule], keys: Mapping[str, None]) -> list[str]:
    """One host per class of hosts for which the union picks `key` (the base host, one label
    under it, two labels under it), for `Policy.lookup` in each policy."""
    pattern = Pattern.parse(key)
    base = pattern.base
    one, two = f"{_PROBE[0]}.{base}", f"{_PROBE[1]}.{_PROBE[0]}.{base}"
    if pattern.kind is PatternKind.ONE_LABEL:
        return [one]
    if pattern.kind is PatternKind.EXACT and not any(r.include_subdomains for r in own):
        return [base]
    hosts = [two]
    if f"*.{base}" not in keys:  # else one-label names get the "*." rule, not this one
        hosts.append(one)
    if pattern.kind is PatternKind.EXACT or base not in keys:  # else the exact key wins
        hosts.append(base)
    return hosts


def _merge_rules(pattern: str, rules: list[DomainRule], own: list[DomainRule]) -> DomainRule:
    """One rule accepting every pin of `rules` in any chain position."""
    if len(rules) == 1 and rules[0].pattern == pattern:
        return rules[0]
    pins: tuple[Pin, ...] = ()
    for rule in rules:
        pins += rule.all_pins
    expiries = [r.expires for r in rules]
    return DomainRule(
        pattern=pattern,
        pins=tuple(dict.fromkeys(pins)),
        include_subdomains=any(r.include_subdomains for r in own),
        expires=None if None in expiries else max(e for e in expiries if e is not None),
        enforce=all(r.enforce for r in rules),
        report_uris=tuple(dict.fromkeys(u for r in rules for u in r.report_uris)),
        allow_single_pin=True,
    )


def apply_kill_switch(policy: Policy, kill: BundleKillSwitch) -> Policy:
    """The policy with the kill switch set on the rules it names (only those)."""
    switch = KillSwitch(until=kill.until, reason=kill.reason)
    if kill.domains == "*":
        rules = [dataclasses.replace(r, kill_switch=switch) for r in policy.domains.values()]
        return policy.replace_rules(rules)
    rules = []
    for name in kill.domains:
        rule = policy.domains.get(name)
        if rule is None and not name.startswith("*"):
            # A host covered by a wildcard rule: an exact copy of that rule, killed, so only
            # this host is affected (and it gets the same pins back when the switch ends).
            covering = policy.lookup(name)
            if covering is not None:
                rule = dataclasses.replace(covering, pattern=name, include_subdomains=False)
        if rule is None:
            log.warning("certpin: kill switch names %s, which no rule covers; ignored", name)
            continue
        rules.append(dataclasses.replace(rule, kill_switch=switch))
    return policy.replace_rules(rules)


@dataclass(frozen=True)
class State:
    """The contents of ``cache_dir/state.json`` (see `parse_state`).

    Attributes:
        highest_version: the highest bundle version ever accepted.
        highest_sha256: hex SHA-256 of the accepted token under that version (whole bytes;
            kept so an older certpin reading the cache still finds it).
        highest_signed_sha256: hex SHA-256 of its JWS signing input: what equivocation checks
            compare (None in a cache written before it existed).
        added_keys, retired_kids: signing-key changes announced by bundles.
        etag: the ETag of the last fetched bundle.
        not_before: the newest verified ``issued_at`` minus the skew: time never reads earlier.
        kill_switch_ended: the latest kill-switch ``until`` this client saw pass.
    """

    highest_version: int
    highest_sha256: str | None = None
    highest_signed_sha256: str | None = None
    added_keys: tuple[TrustedKey, ...] = ()
    retired_kids: tuple[str, ...] = ()
    etag: str | None = None
    not_before: dt.datetime | None = None
    kill_switch_ended: dt.datetime | None = None

    def to_json(self) -> bytes:
        def when(value: dt.datetime | None) -> str | None:
            # Full precision: a `until` of 12:00:00.5 recorded as 12:00:00 would not count as
            # ended after a restart.
            return None if value is None else value.astimezone(dt.UTC).isoformat()[:-6] + "Z"

        doc = {
            "highest_version": self.highest_version,
            "highest_sha256": self.highest_sha256,
            "highest_signed_sha256": self.highest_signed_sha256,
            "added_keys": [k.jwk() for k in self.added_keys],
            "retired_kids": sorted(self.retired_kids),
            "etag": self.etag,
            "not_before": when(self.not_before),
            "kill_switch_ended": when(self.kill_switch_ended),
        }
        return json.dumps(doc, indent=2).encode()


def parse_state(data: bytes, where: str) -> State:
    """Parse a state.json file; raises `BundleError` (reason ``bad_cache``) and nothing else.

    The cache directory is outside input (another process, a full disk, a user, a restore from
    backup): the file is capped at `MAX_STATE_SIZE`, its nesting at `MAX_JSON_DEPTH`, and every
    member is type-checked. Unknown members are ignored (a newer certpin may add some).
    """

    def bad(detail: str) -> BundleError:
        return BundleError("bad_cache", f"{where}: {detail}")

    if len(data) > MAX_STATE_SIZE:
        raise bad(f"{len(data)} bytes, the limit is {MAX_STATE_SIZE}")
    try:
        with _no_gc:  # up to MAX_STATE_SIZE of containers: no collection scanning them
            doc = _json_object(data, where, max_depth=MAX_JSON_DEPTH)
    except BundleError as exc:
        raise bad(exc.detail) from None

    def digest(name: str) -> str | None:
        value = doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or len(value) != 64 or not _HEX64.issuperset(value):
            raise bad(f"{name} must be a hex SHA-256 or null")
        return value

    def when(name: str) -> dt.datetime | None:
        value = doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.endswith("Z"):
            raise bad(f"{name} must be an RFC 3339 UTC time or null")
        try:
            return _parse_time(value, name)
        except BundleError as exc:
            raise bad(exc.detail) from None

    def listed(name: str, kind: type) -> list[Any]:
        value = doc.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise bad(f"{name} must be a list")
        if len(value) > MAX_TRACKED_KEYS:
            raise bad(f"{name} has more than {MAX_TRACKED_KEYS} entries")
        return value

    highest = doc.get("highest_version")
    if isinstance(highest, bool) or not isinstance(highest, int) or highest < 0:
        raise bad("highest_version must be a non-negative integer")
    etag = doc.get("etag")
    if etag is not None and (not isinstance(etag, str) or len(etag) > MAX_ETAG):
        raise bad(f"etag must be a string of at most {MAX_ETAG} characters or null")
    try:
        added = tuple(TrustedKey.from_jwk(jwk) for jwk in listed("added_keys", dict))
    except BundleError as exc:
        raise bad(f"added_keys: {exc.detail}") from None
    return State(
        highest_version=highest,
        highest_sha256=digest("highest_sha256"),
        highest_signed_sha256=digest("highest_signed_sha256"),
        added_keys=added,
        retired_kids=tuple(listed("retired_kids", str)),
        etag=etag,
        not_before=when("not_before"),
        kill_switch_ended=when("kill_switch_ended"),
    )


def _read_capped(path: Path, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of `path`: a caller seeing more than ``cap`` knows it is too
    big without reading (or holding) a file of any size in memory."""
    with path.open("rb") as fh:
        # Sized by the file (as `read_bytes` does), not by the cap: a 4 MiB buffer allocated
        # for a 200 KB bundle, then shrunk, costs ≈ 0.07 ms of the client's start.
        return fh.read(min(os.fstat(fh.fileno()).st_size, cap) + 1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could lead to plain http or to an unpinned host: the bundle URL is exact.
    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        raise urllib.error.HTTPError(newurl, code, f"redirect to {newurl} refused", headers, fp)


class _TrackingHTTPSHandler(urllib.request.HTTPSHandler):
    """An HTTPS handler that remembers each request's connection, so a watchdog can cut it."""

    def __init__(self, context: Any) -> None:
        super().__init__(context=context)
        self._ctx = context

    def https_open(self, req: Any) -> Any:
        def connection(host: str, **kwargs: Any) -> http.client.HTTPSConnection:
            conn = http.client.HTTPSConnection(host, **kwargs)
            req.certpin_connection = conn
            return conn

        return self.do_open(connection, req, context=self._ctx)


def _read_client_id(path: Path) -> str | None:
    try:
        data = _read_capped(path, 64).strip()  # bytes: no text codec to look up at start
    except OSError:
        return None
    if len(data) == 32 and not data.strip(b"0123456789abcdef"):
        return data.decode("ascii")
    return None


def _cut(request: urllib.request.Request, fired: threading.Event) -> None:
    """Deadline reached: shut the fetch's socket down, which unblocks any read in progress."""
    fired.set()
    conn = getattr(request, "certpin_connection", None)
    sock = None if conn is None else conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class DynamicPolicy:
    """A policy that updates itself from signed bundles. Use it wherever a `Policy` goes.

    ::

        policy = certpin.DynamicPolicy(
            "https://pins.example.net/app.jws",
            trusted_keys=["bundle-key.pub.pem"],
            cache_dir="~/.cache/myapp/pins",
            fallback=certpin.Policy.from_file("pins.toml"),  # must pin pins.example.net
        )
        policy.start()                      # background refresh
        ctx = certpin.create_default_context(policy)

    Args:
        url: the bundle's https URL. Its host is pinned by the policy in force (the fallback's
            bootstrap pins, then the last good bundle's), so pin it in the fallback.
        trusted_keys: public keys (`TrustedKey`, PEM bytes, or PEM file paths) whose ``kid`` may
            sign bundles. Bundles may add and retire keys (persisted in `cache_dir`).
        cache_dir: where the last good bundle, the highest version seen, key changes and the
            client id are kept.
        fallback: the static policy compiled into the application.
        client_id: the cohort identity. None = a random id persisted in `cache_dir`.
        min_version: refuse bundles below this version, even with an empty cache.
        refresh_interval: seconds between background refreshes (default 1 h), shortened as the
            bundle nears expiry (a quarter of the time left, at least `min_refresh_interval`).
        min_refresh_interval: floor for refresh and retry delays (default 60 s).
        timeout: socket timeout for each network operation of the fetch (default 10 s).
        deadline: overall limit for one fetch, connection to last byte (default 3 × timeout):
            a bundle host that drips bytes cannot hold a refresh (or its waiters) longer.
        allow_unpinned_bundle_host: accept a `fallback` without an enforcing rule for the
            bundle URL's host. Off by default: the update channel would rest on CA validation
            alone. The bundle host's rule is always the fallback's (plus the pins the last good
            bundle adds for that host); a bundle cannot remove it and no kill switch touches it.
        cafile, capath, cadata: trust anchors for the bundle host (default: system store).
        clock: returns the current UTC time (tests, simulations). Never read as earlier than
            the newest verified ``issued_at`` minus `skew` (see the module docstring).
        skew: how far in the future ``issued_at`` may be (default 5 minutes).
        max_size: largest bundle accepted, in bytes (default 4 MiB); also the most read from
            the cached ``bundle.jws``.
    """

    def __init__(
        self,
        url: str,
        *,
        trusted_keys: Iterable[TrustedKey | str | Path | bytes],
        cache_dir: str | Path,
        fallback: Policy,
        client_id: str | None = None,
        min_version: int = 0,
        refresh_interval: float = 3600.0,
        min_refresh_interval: float = 60.0,
        timeout: float = 10.0,
        deadline: float | None = None,
        allow_unpinned_bundle_host: bool = False,
        cafile: str | Path | None = None,
        capath: str | Path | None = None,
        cadata: str | bytes | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        skew: dt.timedelta = DEFAULT_SKEW,
        max_size: int = MAX_BUNDLE_SIZE,
    ) -> None:
        if not url.startswith("https://"):
            raise ConfigurationError(f"bundle url must be https://, got {url!r}")
        if not isinstance(fallback, Policy):
            raise ConfigurationError("fallback must be a certpin.Policy")
        host = urllib.parse.urlsplit(url).hostname
        if not host:
            raise ConfigurationError(f"bundle url {url!r} has no host")
        self.bundle_host = normalize_host(host)
        bootstrap = fallback.lookup(self.bundle_host)
        if (bootstrap is None or not bootstrap.enforce) and not allow_unpinned_bundle_host:
            raise ConfigurationError(
                f"the fallback policy {fallback.source} has no enforcing pin rule for the bundle "
                f"host {self.bundle_host}: the update channel would be protected by CA "
                "validation alone. Pin it in the fallback (with a backup pin), or pass "
                "allow_unpinned_bundle_host=True to accept that risk."
            )
        self.url = url
        self.fallback = fallback
        self.min_version = min_version
        self.refresh_interval = refresh_interval
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self.deadline = 3 * timeout if deadline is None else deadline
        self.skew = skew
        self.max_size = max_size
        self._cache = Path(cache_dir).expanduser()
        self._cache.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._initial_keys = load_trusted_keys(trusted_keys)
        if not self._initial_keys:
            raise ConfigurationError("trusted_keys is empty: no bundle could ever verify")
        self._lock = threading.RLock()
        self._refresh_lock = threading.Lock()
        self._last_result: RefreshResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        # state (guarded by _lock)
        self._bundle: Bundle | None = None
        self._effective: Policy = fallback
        self._switch_at: float | None = None  # when the effective policy must be rebuilt
        self._highest = min_version
        self._highest_sha: str | None = None  # whole-token hash (legacy caches compare it)
        self._highest_signed: str | None = None  # signing-input hash: the bundle's identity
        self._added: dict[str, TrustedKey] = {}
        self._retired: set[str] = set()
        self._etag: str | None = None
        self._not_before: dt.datetime | None = None
        self._floor_ts = float("-inf")  # _not_before as a timestamp, for the handshake path
        self._floor_warned = False
        self._kill_ended: dt.datetime | None = None
        self._state_dirty = False  # state changed outside an install: write it soon
        self.client_id = client_id or self._load_client_id()
        self._load_cache()
        self._flush_state_if_dirty()
        # The bundle host's HTTPS client. Loading the system CA store costs ≈ 40 ms, more than
        # everything else at client start, and is only needed by the first fetch (in the
        # background): it is built then. Explicit CA material is loaded now, so a bad cafile
        # is a ConfigurationError here rather than a failed refresh later.
        self._ca = (cafile, capath, cadata)
        self._opener: urllib.request.OpenerDirector | None = None
        if cafile is not None or capath is not None or cadata is not None:
            self._https_opener()

    def _https_opener(self) -> urllib.request.OpenerDirector:
        """The opener for the bundle host (pinned by this policy), built on first use."""
        opener = self._opener
        if opener is None:
            from certpin.tls.context import create_default_context

            cafile, capath, cadata = self._ca
            context = create_default_context(self, cafile=cafile, capath=capath, cadata=cadata)
            opener = urllib.request.build_opener(_TrackingHTTPSHandler(context), _NoRedirect())
            self._opener = opener
        return opener

    # -- PolicyProvider -------------------------------------------------------------------------

    def current_policy(self) -> Policy:
        """The policy in force now; cheap (called on every handshake)."""
        switch_at = self._switch_at
        if switch_at is not None and self._timestamp() >= switch_at:
            with self._lock:
                self._rebuild()
                self._flush_state_if_dirty()  # once per switch end: remember it ended
        return self._effective

    # -- Policy-like read access (delegates to the policy in force) ---------------------------
    # Functions that take a `Policy` (`certpin.verdict`, the monitor…) should be given
    # `dyn.current_policy()`: one consistent snapshot. These members let duck-typed callers use
    # the DynamicPolicy itself; each call reads the policy in force at that moment.

    def lookup(self, host: str) -> DomainRule | None:
        """`Policy.lookup` on the policy in force now."""
        return self.current_policy().lookup(host)

    @property
    def domains(self) -> Mapping[str, DomainRule]:
        """The rules of the policy in force now."""
        return self.current_policy().domains

    @property
    def unpinned_hosts(self) -> Literal["allow", "deny"]:
        return self.current_policy().unpinned_hosts

    # -- introspection --------------------------------------------------------------------------

    @property
    def bundle(self) -> Bundle | None:
        """The last good bundle, or None (the fallback is in force)."""
        return self._bundle

    @property
    def version(self) -> int | None:
        bundle = self._bundle
        return None if bundle is None else bundle.version

    @property
    def trusted_keys(self) -> dict[str, TrustedKey]:
        """kid -> key: the initial keys plus announced ones, minus retired ones."""
        with self._lock:
            keys = {**self._initial_keys, **self._added}
            return {k: v for k, v in keys.items() if k not in self._retired}

    def in_rollout(self, bundle: Bundle | None = None) -> bool:
        """True when this client's bucket is inside the bundle's rollout share."""
        bundle = bundle or self._bundle
        if bundle is None or bundle.rollout is None:
            return False
        return bucket(bundle.rollout.id, self.client_id) < bundle.rollout.buckets

    # -- refreshing -----------------------------------------------------------------------------

    def refresh_now(self) -> RefreshResult:
        """Fetch, verify and (if good) install the bundle now. Never raises for bad bundles or
        network errors: the result says what happened and the last good bundle stays.

        Concurrent callers share one fetch: a caller arriving while a refresh runs waits for it
        and gets its result.
        """
        if not self._refresh_lock.acquire(blocking=False):
            # The running fetch is cut at its deadline; never wait (much) longer than that.
            if not self._refresh_lock.acquire(timeout=self.deadline + 1.0):
                return RefreshResult(
                    "failed", self.version, "a concurrent refresh overran its deadline"
                )
            self._refresh_lock.release()
            last = self._last_result
            return last if last is not None else RefreshResult("failed", self.version, "")
        try:
            try:
                result = self._refresh()
            except Exception as exc:  # Defensive: refresh_now() never raises (documented)
                log.exception("certpin: unexpected error refreshing the pin bundle")
                result = RefreshResult("failed", self.version, f"{type(exc).__name__}: {exc}")
            self._last_result = result
            with self._lock:
                self._flush_state_if_dirty()  # retries a write a handshake could not make
        finally:
            self._refresh_lock.release()
        if result.ok:
            self._failures = 0
        else:
            self._failures += 1
            log.warning(
                "certpin: bundle refresh from %s %s: %s", self.url, result.status, result.reason
            )
        return result

    def accept(self, token: str | bytes) -> RefreshResult:
        """Verify and install a bundle obtained some other way (push, side-loading, tests)."""
        now = self._now()
        try:
            bundle = verify_bundle(
                token,
                self.trusted_keys,
                now=now,
                min_version=self._highest,
                skew=self.skew,
                max_size=self.max_size,
            )
        except BundleError as exc:
            log.error("certpin: %s (from %s); keeping version %s", exc, self.url, self.version)
            return RefreshResult("rejected", self.version, str(exc))
        except Exception as exc:  # Defensive: never raises; an unforeseen input is a rejection
            log.exception("certpin: unexpected error verifying a bundle from %s", self.url)
            return RefreshResult("rejected", self.version, f"{type(exc).__name__}: {exc}")
        try:
            return self._install(bundle)
        except OSError as exc:
            log.error("certpin: cannot write the bundle cache in %s: %s", self._cache, exc)
            return RefreshResult("failed", self.version, f"cache write failed: {exc}")
        except Exception as exc:  # Defensive: accept() never raises (documented)
            log.exception("certpin: unexpected error installing a bundle from %s", self.url)
            return RefreshResult("failed", self.version, f"{type(exc).__name__}: {exc}")

    def start(self) -> DynamicPolicy:
        """Start the background refresh thread (first refresh right away). Idempotent."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._loop, name="certpin-bundle-refresh", daemon=True
                )
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop the background thread (waits up to `deadline` + 1 s)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.deadline + 1)

    def __enter__(self) -> DynamicPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_delay(self) -> float:
        """Seconds until the next background refresh: the interval, shortened near expiry,
        backed off after failures, with 0-25 % random jitter so clients do not stampede."""
        delay = self.refresh_interval
        bundle = self._bundle
        if bundle is not None:
            left = (bundle.expires_at - self._now()).total_seconds()
            delay = min(delay, max(self.min_refresh_interval, left / 4))
        if self._failures:
            backoff = self.min_refresh_interval * 2 ** min(self._failures - 1, 16)
            delay = min(delay, backoff)
        return max(self.min_refresh_interval, delay) * random.uniform(0.75, 1.0)

    def _loop(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.refresh_now()
            except Exception:  # Defensive: the refresher must never die
                log.exception("certpin: unexpected error in the bundle refresh thread")
            delay = self.next_delay()

    def _refresh(self) -> RefreshResult:
        headers = {"User-Agent": f"certpin/{__version__}", "Accept": "application/jose"}
        if self._etag and self._bundle is not None:
            headers["If-None-Match"] = self._etag
        request = urllib.request.Request(self.url, headers=headers)
        fired = threading.Event()
        watchdog = threading.Timer(self.deadline, _cut, (request, fired))
        watchdog.daemon = True
        watchdog.start()
        try:
            with self._https_opener().open(request, timeout=self.timeout) as response:
                etag = response.headers.get("ETag")
                body = b""
                while len(body) <= self.max_size and not fired.is_set():
                    chunk = response.read1(min(65536, self.max_size + 1 - len(body)))
                    if not chunk:
                        break
                    body += chunk
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304:
                return RefreshResult("not_modified", self.version, "304 Not Modified")
            return RefreshResult("failed", self.version, f"HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            if fired.is_set():
                return self._overran()
            reason = getattr(exc, "reason", exc)
            return RefreshResult("failed", self.version, f"{type(exc).__name__}: {reason}")
        finally:
            watchdog.cancel()
        if fired.is_set():  # the cut may look like a clean end of the body
            return self._overran()
        if len(body) > self.max_size:
            return RefreshResult(
                "rejected", self.version, f"bundle larger than {self.max_size} bytes"
            )
        result = self.accept(body)
        if result.ok and etag and len(etag) <= MAX_ETAG:
            with self._lock:
                self._etag = etag
                self._state_dirty = True
                self._flush_state_if_dirty()
        return result

    def _overran(self) -> RefreshResult:
        return RefreshResult(
            "failed", self.version, f"the fetch exceeded its {self.deadline:g} s deadline"
        )

    # -- installing -----------------------------------------------------------------------------

    def _install(self, bundle: Bundle) -> RefreshResult:
        with self._lock, file_lock(self._cache / LOCK_FILE):
            self._read_state()  # another process may have accepted a newer bundle meanwhile
            if bundle.version < self._highest:
                reason = f"version {bundle.version} is below the highest accepted {self._highest}"
                log.error("certpin: bundle rejected (rollback): %s", reason)
                self._load_cache()
                self._save_state_if_dirty()
                return RefreshResult("rejected", self.version, f"rollback: {reason}")
            if bundle.version == self._highest:
                same = self._same_as_highest(bundle)
                if same is False:
                    reason = (
                        f"version {bundle.version} differs from the bundle accepted under the "
                        "same version (a version must never be re-signed with other content)"
                    )
                    log.error("certpin: bundle rejected (equivocation): %s", reason)
                    return RefreshResult("rejected", self.version, f"equivocation: {reason}")
                current = self._bundle
                if same and current is not None and current.signed_sha256 == bundle.signed_sha256:
                    # The same signed bytes (perhaps under the other ES256 signature): nothing
                    # to install, and the cached token stays as it is.
                    return RefreshResult("unchanged", bundle.version, "same bundle")
            added = {**self._added, **{k.kid: k for k in bundle.add_keys}}
            retired = (self._retired - set(added)) | set(bundle.retire_keys)
            if len(added) > MAX_TRACKED_KEYS or len(retired) > MAX_TRACKED_KEYS:
                reason = f"this client keeps at most {MAX_TRACKED_KEYS} added and retired keys"
                log.error("certpin: bundle rejected (bad_keys): %s", reason)
                return RefreshResult("rejected", self.version, f"bad_keys: {reason}")
            atomic_write(self._cache / BUNDLE_FILE, bundle.token.encode("ascii"))
            self._highest = bundle.version
            self._highest_sha = bundle.sha256
            self._highest_signed = bundle.signed_sha256
            for key in bundle.add_keys:
                self._added[key.kid] = key
                self._retired.discard(key.kid)
            self._retired.update(bundle.retire_keys)
            self._raise_floor(bundle)
            self._set_bundle(bundle)
            self._save_state()
        log.info("certpin: pin bundle version %d installed from %s", bundle.version, self.url)
        return RefreshResult("updated", bundle.version, "")

    def _same_as_highest(self, bundle: Bundle) -> bool | None:
        """Is `bundle` the one accepted under the highest version? None: nothing to compare.

        The signing input is compared, not the token: ES256 signatures are malleable, and a
        CDN serving the ``(r, n - s)`` copy first must not make the publisher's own bytes look
        like a compromised key re-signing a version. A cache written before certpin kept the
        signing-input hash only has the whole-token hash (upgraded by `_load_cache`).
        """
        if self._highest_signed is not None:
            return bundle.signed_sha256 == self._highest_signed
        if self._highest_sha is not None:
            return bundle.sha256 == self._highest_sha
        return None

    def _raise_floor(self, bundle: Bundle) -> None:
        """Time never reads earlier than the newest verified issued_at minus the skew."""
        floor = bundle.issued_at - self.skew
        if self._not_before is None or floor > self._not_before:
            self._not_before = floor
            self._floor_ts = floor.timestamp()
            self._state_dirty = True

    def _set_bundle(self, bundle: Bundle | None) -> None:
        self._bundle = bundle
        self._rebuild()

    def _rebuild(self) -> None:
        bundle = self._bundle
        if bundle is None:
            self._effective, self._switch_at = self.fallback, None
            return
        now = self._now()
        policy = bundle.policy
        if self.in_rollout(bundle):
            assert bundle.rollout is not None
            policy = bundle.rollout.policy
        switch_at: float | None = bundle.expires_at.timestamp()
        if bundle.expired(now):
            log.warning(
                "certpin: pin bundle version %d expired at %s and no newer bundle could be "
                "fetched: enforcing the union of the static fallback and its pins",
                bundle.version,
                bundle.expires_at.isoformat(),
            )
            policy = union_policy(self.fallback, policy)
            switch_at = None
        channel = self._bundle_host_rule(policy)
        kill = bundle.kill_switch
        if kill is not None and self._kill_switch_ended(kill, now):
            kill = None
        if kill is not None:
            policy = apply_kill_switch(policy, kill)
            # Rebuild at `until`: the end is then seen, recorded and persisted, so a clock set
            # back later cannot re-open it (the verdict's own `now < until` test would).
            until = kill.until.timestamp()
            switch_at = until if switch_at is None else min(switch_at, until)
        if channel is not None:  # after the kill switch: it never reaches the bundle host
            policy = policy.replace_rules([channel])
        self._effective, self._switch_at = policy, switch_at

    def _kill_switch_ended(self, kill: BundleKillSwitch, now: dt.datetime) -> bool:
        """True once `kill` is over; the first time, remembers it (persisted by the caller).

        A switch is over when ``now >= until`` or when a switch ending at or after its
        ``until`` was already seen over: this client then saw the clock pass ``until``, and an
        earlier reading now can only be a clock set back.
        """
        ended = self._kill_ended
        if ended is not None and kill.until <= ended:
            return True
        if now < kill.until:
            return False
        self._kill_ended = kill.until
        self._state_dirty = True
        log.warning(
            "certpin: the kill switch (%s) ended at %s: pins apply again, and keep applying "
            "even if the clock is set back",
            kill.reason or "no reason given",
            kill.until.isoformat(),
        )
        return True

    def _bundle_host_rule(self, policy: Policy) -> DomainRule | None:
        """The bundle host's rule in force.

        Issue #4: "the bootstrap pins of the fallback, then whatever the last good bundle says
        for that host". A bundle that pins the bundle host with an enforcing rule decides its
        pins (so the channel can rotate *and* drop an old key); a bundle that omits it, or only
        reports on it, cannot unpin it: the fallback's bootstrap rule (plus any pins the bundle
        lists) stays. Enforcement and expiry are never weaker than the fallback's.
        """
        host = self.bundle_host
        bootstrap = self.fallback.lookup(host)
        current = policy.lookup(host)
        own = policy.domains.get(host)  # keep what an exact key for the host covers
        subdomains = own is not None and own.include_subdomains
        if bootstrap is None:
            if current is None:
                return None
            return dataclasses.replace(
                current, pattern=host, include_subdomains=subdomains, kill_switch=None
            )
        if current is not None and current.enforce and current.kill_switch is None:
            pins = current.all_pins  # the bundle says how the channel is pinned now
        else:
            pins = bootstrap.all_pins + (() if current is None else current.all_pins)
        return DomainRule(
            pattern=host,
            include_subdomains=subdomains,
            pins=tuple(dict.fromkeys(pins)),
            expires=bootstrap.expires,
            enforce=bootstrap.enforce,
            report_uris=bootstrap.report_uris,
            allow_single_pin=True,
        )

    # -- persistence ----------------------------------------------------------------------------

    def _read_state(self) -> None:
        """Merge state.json into memory; every value only moves forward (versions, floors)."""
        path = self._cache / STATE_FILE
        try:
            state = parse_state(_read_capped(path, MAX_STATE_SIZE), str(path))
        except FileNotFoundError:
            return
        except (OSError, BundleError) as exc:
            log.error(
                "certpin: %s is unreadable (%s); keeping min_version %d",
                path,
                exc,
                self.min_version,
            )
            return
        if state.highest_version > self._highest:
            self._highest = state.highest_version
            self._highest_sha = state.highest_sha256
            self._highest_signed = state.highest_signed_sha256
        elif state.highest_version == self._highest:
            self._highest_sha = self._highest_sha or state.highest_sha256
            self._highest_signed = self._highest_signed or state.highest_signed_sha256
        for key in state.added_keys:
            self._added[key.kid] = key
        self._retired.update(state.retired_kids)
        self._etag = state.etag
        if state.not_before is not None and (
            self._not_before is None or state.not_before > self._not_before
        ):
            self._not_before = state.not_before
            self._floor_ts = state.not_before.timestamp()
        ended = state.kill_switch_ended
        if ended is not None and (self._kill_ended is None or ended > self._kill_ended):
            self._kill_ended = ended

    def _save_state(self) -> None:
        state = State(
            highest_version=self._highest,
            highest_sha256=self._highest_sha,
            highest_signed_sha256=self._highest_signed,
            added_keys=tuple(self._added.values()),
            retired_kids=tuple(self._retired),
            etag=self._etag,
            not_before=self._not_before,
            kill_switch_ended=self._kill_ended,
        )
        atomic_write(self._cache / STATE_FILE, state.to_json())
        self._state_dirty = False

    def _save_state_if_dirty(self) -> None:
        """Under the file lock already (an install)."""
        if self._state_dirty:
            self._save_state()

    def _flush_state_if_dirty(self) -> None:
        """Write state changed outside an install (a kill switch seen ending, a floor learnt
        from the cache, an ETag): merged with the file under the lock, so another process's
        newer version is never overwritten. A failed write is logged and retried by the next
        refresh; memory already holds the change."""
        if not self._state_dirty:
            return
        with self._lock:
            etag = self._etag
            try:
                with file_lock(self._cache / LOCK_FILE):
                    self._read_state()
                    self._etag = etag
                    self._save_state()
            except OSError as exc:
                log.error("certpin: cannot write %s: %s", self._cache / STATE_FILE, exc)

    def _load_cache(self) -> None:
        # The whole start from the cache, not only the verification, without cyclic GC: the
        # objects allocated after it (state, policy in force) otherwise tip a collection that
        # scans the freshly loaded rules — ≈ 0.7 ms the program paid right after the start.
        with _no_gc, self._lock:
            self._read_state()
            path = self._cache / BUNDLE_FILE
            try:
                token = _read_capped(path, self.max_size)  # verify_bundle refuses more
            except FileNotFoundError:
                self._set_bundle(None)
                return
            except OSError as exc:
                log.error("certpin: cannot read %s (%s); using the static fallback", path, exc)
                self._set_bundle(None)
                return
            try:
                bundle = verify_bundle(
                    token,
                    self.trusted_keys,
                    now=self._now(),
                    min_version=self._highest,
                    check_expiry=False,  # an expired cached bundle still counts (union)
                    skew=self.skew,
                    max_size=self.max_size,
                )
                if bundle.version == self._highest and self._same_as_highest(bundle) is False:
                    raise BundleError("equivocation", "differs from the accepted bundle")
            except BundleError as exc:
                log.error("certpin: cached %s rejected (%s); using the static fallback", path, exc)
                self._set_bundle(None)
                return
            if self._highest_signed != bundle.signed_sha256 or self._highest_sha is None:
                # A cache from before signing-input hashes, or a state file behind the cached
                # bundle (its write failed): the state catches up. Otherwise the whole-token
                # hash is not recomputed (≈ 0.2 ms of the start for a 200 KB bundle).
                self._highest_sha = bundle.sha256
                self._highest_signed = bundle.signed_sha256
                self._state_dirty = True
            self._highest = max(self._highest, bundle.version)
            self._raise_floor(bundle)
            self._set_bundle(bundle)

    def _load_client_id(self) -> str:
        path = self._cache / CLIENT_ID_FILE
        # Written atomically, so an existing id is read without the lock; the lock only
        # serialises processes racing to create the first one.
        known = _read_client_id(path)
        if known is not None:
            return known
        with file_lock(self._cache / LOCK_FILE):
            known = _read_client_id(path)
            if known is not None:
                return known
            new = secrets.token_hex(16)
            atomic_write(path, new.encode("ascii") + b"\n")
            return new

    # -- time -----------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        """The time for every decision: the clock, never earlier than the floor."""
        if self._clock is None:
            now = dt.datetime.now(dt.UTC)
        else:
            now = self._clock()
            now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
        floor = self._not_before
        if floor is not None and now < floor:
            if not self._floor_warned:
                self._floor_warned = True
                log.warning(
                    "certpin: the clock reads %s, before the newest pin bundle was issued "
                    "(%s, allowing for skew): using that time instead",
                    now.isoformat(),
                    floor.isoformat(),
                )
            return floor
        return now

    def _timestamp(self) -> float:
        # The handshake path: one clock read and one comparison with the floor.
        if self._clock is None:
            return max(time.time(), self._floor_ts)
        return self._now().timestamp()
