"""`DynamicPolicy`: a `PolicyProvider` fed by signed bundles over a pinned channel.

The policy in force is, in order of preference:

1. the last good bundle (its rollout policy if this client's cohort is in the rollout), with
   its kill switch applied, while the bundle has not expired;
2. after the bundle's ``expires_at``: the union of the static fallback and the last good
   bundle (logged), so neither stale static pins nor a stale bundle alone lock users out;
3. the static fallback when no bundle was ever accepted, or the cache is unreadable. Never
   "unpinned".

`current_policy()` is what the TLS hook calls on every handshake: an attribute read plus one
clock comparison. All network, disk and crypto work happens in `refresh_now()`, run by a
background thread (`start()`), never inside a request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._atomic import atomic_write, file_lock
from ._bundle import DEFAULT_SKEW, MAX_BUNDLE_SIZE, Bundle, BundleKillSwitch, verify_bundle
from ._errors import ConfigurationError
from ._jws import BundleError, TrustedKey, load_trusted_keys
from ._policy import DomainRule, KillSwitch, Policy
from ._version import __version__

__all__ = ["DynamicPolicy", "RefreshResult", "bucket", "union_policy"]

log = logging.getLogger("certpin.dynamic")

BUNDLE_FILE = "bundle.jws"
STATE_FILE = "state.json"
CLIENT_ID_FILE = "client_id"
LOCK_FILE = ".lock"
BUCKETS = 10_000

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
    """Every host pinned by `a` or `b` accepts the pins of both (used after hard expiry).

    Rules with the same key are merged into one rule whose ``pins`` are all pins of both, in
    any chain position (a leaf/CA slot constraint cannot be expressed as a union; this is the
    permissive side). Enforcing only if both enforce; ``unpinned_hosts = "deny"`` only if both
    deny.
    """
    domains: dict[str, DomainRule] = dict(a.domains)
    for key, rule in b.domains.items():
        other = domains.get(key)
        if other is None:
            domains[key] = rule
            continue
        domains[key] = DomainRule(
            pattern=key,
            pins=tuple(dict.fromkeys(other.all_pins + rule.all_pins)),
            include_subdomains=other.include_subdomains or rule.include_subdomains,
            expires=None
            if other.expires is None or rule.expires is None
            else max(other.expires, rule.expires),
            enforce=other.enforce and rule.enforce,
            report_uris=tuple(dict.fromkeys(other.report_uris + rule.report_uris)),
            allow_single_pin=True,
        )
    deny = a.unpinned_hosts == "deny" and b.unpinned_hosts == "deny"
    return Policy(
        domains=domains,
        version=b.version,
        unpinned_hosts="deny" if deny else "allow",
        source=f"union({a.source}, {b.source})",
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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could lead to plain http or to an unpinned host: the bundle URL is exact.
    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        raise urllib.error.HTTPError(newurl, code, f"redirect to {newurl} refused", headers, fp)


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
        timeout: socket timeout for the bundle fetch (default 10 s).
        cafile, capath, cadata: trust anchors for the bundle host (default: system store).
        clock: returns the current UTC time (tests, simulations).
        skew: how far in the future ``issued_at`` may be (default 5 minutes).
        max_size: largest bundle accepted, in bytes (default 4 MiB).
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
        self.url = url
        self.fallback = fallback
        self.min_version = min_version
        self.refresh_interval = refresh_interval
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
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
        self._highest_sha: str | None = None
        self._added: dict[str, TrustedKey] = {}
        self._retired: set[str] = set()
        self._etag: str | None = None
        self.client_id = client_id or self._load_client_id()
        self._load_cache()
        from ._context import create_default_context

        self._context = create_default_context(self, cafile=cafile, capath=capath, cadata=cadata)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self._context), _NoRedirect()
        )

    # -- PolicyProvider -------------------------------------------------------------------------

    def current_policy(self) -> Policy:
        """The policy in force now; cheap (called on every handshake)."""
        switch_at = self._switch_at
        if switch_at is not None and self._timestamp() >= switch_at:
            with self._lock:
                self._rebuild()
        return self._effective

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
            with self._refresh_lock:
                assert self._last_result is not None
                return self._last_result
        try:
            result = self._refresh()
            self._last_result = result
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
        return self._install(bundle)

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
        """Stop the background thread (waits up to `timeout` + 1 s)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.timeout + 1)

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
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = response.read(self.max_size + 1)
                etag = response.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304:
                return RefreshResult("not_modified", self.version, "304 Not Modified")
            return RefreshResult("failed", self.version, f"HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return RefreshResult("failed", self.version, f"{type(exc).__name__}: {reason}")
        if len(body) > self.max_size:
            return RefreshResult(
                "rejected", self.version, f"bundle larger than {self.max_size} bytes"
            )
        result = self.accept(body)
        if result.ok and etag:
            with self._lock:
                self._etag = etag
                self._save_state()
        return result

    # -- installing -----------------------------------------------------------------------------

    def _install(self, bundle: Bundle) -> RefreshResult:
        with self._lock, file_lock(self._cache / LOCK_FILE):
            self._read_state()  # another process may have accepted a newer bundle meanwhile
            if bundle.version < self._highest:
                reason = f"version {bundle.version} is below the highest accepted {self._highest}"
                log.error("certpin: bundle rejected (rollback): %s", reason)
                self._load_cache()
                return RefreshResult("rejected", self.version, f"rollback: {reason}")
            if bundle.version == self._highest and self._highest_sha is not None:
                if bundle.sha256 != self._highest_sha:
                    reason = (
                        f"version {bundle.version} differs from the bundle accepted under the "
                        "same version (a version must never be re-signed with other content)"
                    )
                    log.error("certpin: bundle rejected (equivocation): %s", reason)
                    return RefreshResult("rejected", self.version, f"equivocation: {reason}")
                if self._bundle is not None and self._bundle.sha256 == bundle.sha256:
                    return RefreshResult("unchanged", bundle.version, "same bundle")
            atomic_write(self._cache / BUNDLE_FILE, bundle.token.encode("ascii"))
            self._highest = bundle.version
            self._highest_sha = bundle.sha256
            for key in bundle.add_keys:
                self._added[key.kid] = key
                self._retired.discard(key.kid)
            self._retired.update(bundle.retire_keys)
            self._save_state()
            self._set_bundle(bundle)
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
        if bundle.kill_switch is not None:
            policy = apply_kill_switch(policy, bundle.kill_switch)
        self._effective, self._switch_at = policy, switch_at

    # -- persistence ----------------------------------------------------------------------------

    def _read_state(self) -> None:
        path = self._cache / STATE_FILE
        try:
            state = json.loads(path.read_text("utf-8"))
            highest = state["highest_version"]
            sha = state["highest_sha256"]
            added = [TrustedKey.from_jwk(j) for j in state.get("added_keys", [])]
            retired = state.get("retired_kids", [])
            etag = state.get("etag")
            if not isinstance(highest, int) or not isinstance(sha, str | None):
                raise ValueError("bad types")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, BundleError) as exc:
            log.error(
                "certpin: %s is unreadable (%s); keeping min_version %d",
                path,
                exc,
                self.min_version,
            )
            return
        if highest > self._highest or (highest == self._highest and self._highest_sha is None):
            self._highest, self._highest_sha = highest, sha
        for key in added:
            self._added[key.kid] = key
        self._retired.update(str(k) for k in retired)
        self._etag = etag if isinstance(etag, str) else None

    def _save_state(self) -> None:
        state = {
            "highest_version": self._highest,
            "highest_sha256": self._highest_sha,
            "added_keys": [k.jwk() for k in self._added.values()],
            "retired_kids": sorted(self._retired),
            "etag": self._etag,
        }
        atomic_write(self._cache / STATE_FILE, json.dumps(state, indent=2).encode())

    def _load_cache(self) -> None:
        with self._lock:
            self._read_state()
            path = self._cache / BUNDLE_FILE
            try:
                token = path.read_bytes()
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
                if bundle.version == self._highest and self._highest_sha not in (
                    None,
                    bundle.sha256,
                ):
                    raise BundleError("equivocation", "differs from the accepted bundle")
            except BundleError as exc:
                log.error("certpin: cached %s rejected (%s); using the static fallback", path, exc)
                self._set_bundle(None)
                return
            self._highest = max(self._highest, bundle.version)
            self._highest_sha = bundle.sha256
            self._set_bundle(bundle)

    def _load_client_id(self) -> str:
        path = self._cache / CLIENT_ID_FILE
        with file_lock(self._cache / LOCK_FILE):
            try:
                text = path.read_text("ascii").strip()
                if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
                    return text
            except (OSError, UnicodeDecodeError):
                pass
            new = secrets.token_hex(16)
            atomic_write(path, new.encode("ascii") + b"\n")
            return new

    # -- time -----------------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        if self._clock is None:
            return dt.datetime.now(dt.UTC)
        now = self._clock()
        return now if now.tzinfo else now.replace(tzinfo=dt.UTC)

    def _timestamp(self) -> float:
        return time.time() if self._clock is None else self._now().timestamp()
