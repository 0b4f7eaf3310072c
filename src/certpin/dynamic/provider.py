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

import datetime as dt
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext
from typing import Literal

from certpin._errors import ConfigurationError
from certpin._io import http
from certpin._io.atomic import atomic_write
from certpin._version import __version__
from certpin.core.hosts import normalize_host
from certpin.core.policy import DomainRule, Policy
from certpin.dynamic.bundle import DEFAULT_SKEW, MAX_BUNDLE_SIZE, Bundle, verify_bundle
from certpin.dynamic.compose import apply_kill_switch, bucket, bundle_host_rule, union_policy
from certpin.dynamic.jws import BundleError, TrustedKey, load_trusted_keys
from certpin.dynamic.state import (
    BUNDLE_FILE,
    MAX_ETAG,
    MAX_TRACKED_KEYS,
    Memory,
    load_client_id,
    read_capped,
)

__all__ = ["DynamicPolicy", "RefreshResult"]

log = logging.getLogger("certpin.dynamic")

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


class DynamicPolicy:
    """A policy that updates itself from signed bundles. Use it wherever a `Policy` goes.

    ::

        policy = certpin.dynamic.DynamicPolicy(
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
        self._memory = Memory(self._cache, min_version)
        self._floor_warned = False
        self.client_id = client_id or load_client_id(self._cache)
        self._load_cache()
        self._flush_state()
        # The bundle host's TLS context. Loading the system CA store costs ≈ 40 ms, more than
        # everything else at client start, and is only needed by the first fetch (in the
        # background): it is built then. Explicit CA material is loaded now, so a bad cafile
        # is a ConfigurationError here rather than a failed refresh later.
        self._ca = (cafile, capath, cadata)
        self._context: SSLContext | None = None
        if cafile is not None or capath is not None or cadata is not None:
            self._https_context()

    def _https_context(self) -> SSLContext:
        """The context for the bundle host (pinned by this policy), built on first use."""
        context = self._context
        if context is None:
            from certpin.tls.context import create_default_context

            cafile, capath, cadata = self._ca
            context = create_default_context(self, cafile=cafile, capath=capath, cadata=cadata)
            self._context = context
        return context

    # -- PolicyProvider -------------------------------------------------------------------------

    def current_policy(self) -> Policy:
        """The policy in force now; cheap (called on every handshake)."""
        switch_at = self._switch_at
        if switch_at is not None and self._timestamp() >= switch_at:
            with self._lock:
                self._rebuild()
                self._flush_state()  # once per switch end: remember it ended
        return self._effective

    # -- Policy-like read access (delegates to the policy in force) ---------------------------
    # Functions that take a `Policy` (`certpin.verdict`, the monitor…) should be given
    # `dyn.current_policy()`: one consistent snapshot. These members let duck-typed callers use
    # the DynamicPolicy itself; each call reads the policy in force at that moment.

    def lookup(self, host: str, *, below: int = 0) -> DomainRule | None:
        """`Policy.lookup` on the policy in force now."""
        return self.current_policy().lookup(host, below=below)

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
            keys = {**self._initial_keys, **self._memory.added}
            return {k: v for k, v in keys.items() if k not in self._memory.retired}

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
            self._flush_state()  # retries a write a handshake could not make
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
                min_version=self._memory.highest,
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
        if self._memory.etag and self._bundle is not None:
            headers["If-None-Match"] = self._memory.etag
        start = time.monotonic()
        try:
            response = http.request(
                self.url,
                context=self._https_context(),
                headers=headers,
                timeout=self.timeout,
                deadline=self.deadline,
                max_body=self.max_size,
            )
        except http.ERRORS as exc:
            if isinstance(exc, TimeoutError) and time.monotonic() - start >= self.deadline:
                return self._overran()
            reason = getattr(exc, "reason", exc)  # urllib's URLError wraps the cause
            return RefreshResult("failed", self.version, f"{type(exc).__name__}: {reason}")
        if response.status == 304:
            return RefreshResult("not_modified", self.version, "304 Not Modified")
        if not response.ok:
            # Redirects are not followed: the bundle URL is exact, and a redirect could lead
            # to plain http or to an unpinned host.
            refused = " (redirect refused)" if 300 <= response.status < 400 else ""
            reason = f"HTTP {response.status} {response.reason}{refused}"
            return RefreshResult("failed", self.version, reason)
        if response.truncated:
            return RefreshResult(
                "rejected", self.version, f"bundle larger than {self.max_size} bytes"
            )
        etag = response.headers.get("ETag")
        result = self.accept(response.body)
        if result.ok and etag and len(etag) <= MAX_ETAG:
            with self._lock:
                self._memory.etag = etag
                self._memory.dirty = True
                self._memory.flush()
        return result

    def _overran(self) -> RefreshResult:
        return RefreshResult(
            "failed", self.version, f"the fetch exceeded its {self.deadline:g} s deadline"
        )

    # -- installing -----------------------------------------------------------------------------

    def _install(self, bundle: Bundle) -> RefreshResult:
        memory = self._memory
        with self._lock, memory.locked():
            memory.read()  # another process may have accepted a newer bundle meanwhile
            if bundle.version < memory.highest:
                reason = f"version {bundle.version} is below the highest accepted {memory.highest}"
                log.error("certpin: bundle rejected (rollback): %s", reason)
                self._load_cache()
                if memory.dirty:
                    memory.save()
                return RefreshResult("rejected", self.version, f"rollback: {reason}")
            if bundle.version == memory.highest:
                same = memory.same_as_highest(bundle)
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
            if memory.too_many_keys(bundle):
                reason = f"this client keeps at most {MAX_TRACKED_KEYS} added and retired keys"
                log.error("certpin: bundle rejected (bad_keys): %s", reason)
                return RefreshResult("rejected", self.version, f"bad_keys: {reason}")
            atomic_write(self._cache / BUNDLE_FILE, bundle.token.encode("ascii"))
            memory.record(bundle, self.skew)
            self._set_bundle(bundle)
            memory.save()
        log.info("certpin: pin bundle version %d installed from %s", bundle.version, self.url)
        return RefreshResult("updated", bundle.version, "")

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
        channel = bundle_host_rule(self.bundle_host, self.fallback, policy)
        kill = bundle.kill_switch
        if kill is not None and self._memory.kill_switch_ended(kill, now):
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

    # -- persistence ----------------------------------------------------------------------------

    def _flush_state(self) -> None:
        """Write state changed outside an install (`Memory.flush`)."""
        if self._memory.dirty:
            with self._lock:
                self._memory.flush()

    def _load_cache(self) -> None:
        memory = self._memory
        with self._lock:
            memory.read()
            path = self._cache / BUNDLE_FILE
            try:
                token = read_capped(path, self.max_size)  # verify_bundle refuses more
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
                    min_version=memory.highest,
                    check_expiry=False,  # an expired cached bundle still counts (union)
                    skew=self.skew,
                    max_size=self.max_size,
                )
                if bundle.version == memory.highest and memory.same_as_highest(bundle) is False:
                    raise BundleError("equivocation", "differs from the accepted bundle")
            except BundleError as exc:
                log.error("certpin: cached %s rejected (%s); using the static fallback", path, exc)
                self._set_bundle(None)
                return
            if memory.highest_signed != bundle.signed_sha256 or memory.highest_sha is None:
                # A cache from before signing-input hashes, or a state file behind the cached
                # bundle (its write failed): the state catches up. Otherwise the whole-token
                # hash is not recomputed (≈ 0.2 ms of the start for a 200 KB bundle).
                memory.highest_sha = bundle.sha256
                memory.highest_signed = bundle.signed_sha256
                memory.dirty = True
            memory.highest = max(memory.highest, bundle.version)
            memory.raise_floor(bundle, self.skew)
            self._set_bundle(bundle)

    # -- time -----------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        """The time for every decision: the clock, never earlier than the floor."""
        if self._clock is None:
            now = dt.datetime.now(dt.UTC)
        else:
            now = self._clock()
            now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
        floor = self._memory.not_before
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
            return max(time.time(), self._memory.floor_ts)
        return self._now().timestamp()
