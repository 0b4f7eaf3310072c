"""Signed pin bundles: the payload format, `sign_bundle` and `verify_bundle`.

A bundle is a JWS (see `certpin.dynamic.jws`) whose payload is::

    {
      "format": "certpin-bundle/1",
      "version": 7,                                  # monotonic integer
      "issued_at": "2026-01-15T12:00:00Z",
      "expires_at": "2026-02-15T00:00:00Z",
      "policy": { ...certpin policy document... },
      "kill_switch": {"domains": ["api.example.com"] | "*", "until": "...Z", "reason": "..."},
      "rollout": {"id": "2026-q1-rotation", "percent": 10, "policy": { ... }},
      "keys": {"add": [<public JWK>, ...], "retire": ["<kid>", ...]}
    }

``kill_switch``, ``rollout`` and ``keys`` are optional. Unknown top-level members are rejected
(a newer format must change ``format``). See docs/dynamic.md.

Hostile input: `verify_bundle` raises `BundleError` and nothing else on any bytes. The token is
capped (``max_size``, 4 MiB) before anything is parsed, every step is linear in its size, and
nesting is bounded by the JSON parser (a RecursionError anywhere in the check is a
``bad_json`` rejection); error messages describe untrusted values with `brief`, never
``repr``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from certpin._errors import ConfigurationError, PolicyError
from certpin.core.hosts import HostError, HostPattern
from certpin.core.policy import Policy
from certpin.dynamic.jws import (
    BundleError,
    FileSigner,
    Signer,
    TrustedKey,
    _json_object,
    brief,
    canonical_json,
    sign_compact,
    verify_compact,
)

__all__ = [
    "FORMAT",
    "MAX_BUNDLE_SIZE",
    "Bundle",
    "BundleKillSwitch",
    "Rollout",
    "sign_bundle",
    "verify_bundle",
]

FORMAT = "certpin-bundle/1"
TYP = "certpin-bundle+jws"
MAX_BUNDLE_SIZE = 4 * 1024 * 1024  # 4 MiB: ~10 000 domains with 2 pins each fit in < 2 MiB
MAX_KILL_SWITCH = dt.timedelta(days=30)
#: Keys one bundle may add / retire (a real rotation adds or retires one or two): bounds what a
#: client persists per bundle (see `certpin.dynamic.state.MAX_STATE_SIZE`).
MAX_KEY_CHANGES = 16
DEFAULT_SKEW = dt.timedelta(minutes=5)
#: Times a bundle may name (issued_at, expires_at, kill_switch.until).
MIN_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_TIME = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
_FIELDS = (
    "format",
    "version",
    "issued_at",
    "expires_at",
    "policy",
    "kill_switch",
    "rollout",
    "keys",
)


@dataclass(frozen=True)
class BundleKillSwitch:
    """The bundle's kill switch: `domains` is a tuple of policy keys / hosts, or ``"*"``."""

    domains: tuple[str, ...] | str
    until: dt.datetime
    reason: str


@dataclass(frozen=True)
class Rollout:
    """A next policy for a stable share of clients (bucket < ``percent * 100`` of 10 000)."""

    id: str
    percent: float
    policy: Policy

    @property
    def buckets(self) -> int:
        return round(self.percent * 100)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. Build only with `verify_bundle`.

    Two bundles compare equal when they say the same thing, signed by the same key: the token
    (whose ES256 signature has two valid forms) is not compared.

    Attributes:
        token: the exact JWS text that was verified (cached byte-for-byte).
        kid: the key that signed it.
        version, issued_at, expires_at, policy, kill_switch, rollout: from the payload.
        add_keys: keys this bundle announces (trusted from now on).
        retire_keys: kids this bundle revokes.
        sha256: hex SHA-256 of the whole token (the exact bytes cached), computed on first use.
        signed_sha256: hex SHA-256 of the JWS signing input (protected header + payload): what
            identifies the bundle. An ES256 signature has two valid forms, ``(r, s)`` and
            ``(r, n - s)``; both tokens have one `signed_sha256` and compare equal.
    """

    token: str = field(compare=False)
    kid: str
    version: int
    issued_at: dt.datetime
    expires_at: dt.datetime
    policy: Policy
    kill_switch: BundleKillSwitch | None = None
    rollout: Rollout | None = None
    add_keys: tuple[TrustedKey, ...] = ()
    retire_keys: tuple[str, ...] = ()
    signed_sha256: str = field(default="", compare=False)

    @functools.cached_property
    def sha256(self) -> str:
        # On first use only: hashing a 200 KB token costs ≈ 0.2 ms, and only the signing-input
        # hash is needed to start from the cache.
        return hashlib.sha256(self.token.encode("ascii")).hexdigest()

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at


def _time(value: dt.datetime | dt.date | str) -> str:
    if isinstance(value, str):
        value = _parse_time(value, "time")
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, where: str) -> dt.datetime:
    if not isinstance(value, str):
        raise BundleError(
            "bad_payload", f"{where} must be an RFC 3339 UTC time, got {brief(value)}"
        )
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        else:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise BundleError("bad_payload", f"{where}: time {brief(value)} has no time zone")
        when = when.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+01:00 in UTC
        raise BundleError("bad_payload", f"{where}: invalid time {brief(value)}") from None
    if not MIN_TIME <= when <= MAX_TIME:
        # Far from any real bundle, and near datetime's limits, where `issued_at - skew` or
        # `now + skew` would overflow in the client's arithmetic.
        raise BundleError(
            "bad_payload", f"{where}: {brief(value)} is outside {MIN_TIME.year}..{MAX_TIME.year}"
        )
    return when


def _policy_doc(policy: Policy | Mapping[str, Any], where: str) -> dict[str, Any]:
    # Compact (no default-valued fields): a quarter fewer bytes to fetch, decode and parse.
    if isinstance(policy, Policy):
        return policy.to_dict(defaults=False)
    try:
        return Policy.from_dict(policy, source=where).to_dict(defaults=False)
    except PolicyError as exc:
        raise ConfigurationError(str(exc)) from None


def sign_bundle(
    policy: Policy | Mapping[str, Any],
    signer: Signer,
    *,
    version: int,
    expires: dt.datetime | dt.date | str,
    issued_at: dt.datetime | None = None,
    kill_switch: Mapping[str, Any] | None = None,
    rollout: Mapping[str, Any] | None = None,
    add_keys: Iterable[TrustedKey] = (),
    retire_keys: Iterable[str] = (),
) -> str:
    """Sign a bundle; returns the compact JWS text (ASCII, no newline).

    Args:
        policy: the policy every client gets (a `Policy` or a policy document).
        signer: a `FileSigner` or any `Signer` (HSM, KMS).
        version: a monotonically increasing integer; clients refuse anything lower.
        expires: when clients stop trusting the bundle (a date means 00:00Z that day).
        issued_at: default now.
        kill_switch: ``{"domains": [...] or "*", "until": time, "reason": str}`` (≤ 30 days).
        rollout: ``{"id": str, "percent": 0..100, "policy": policy}``.
        add_keys: signing keys to trust from now on (signing-key rotation).
        retire_keys: kids to stop trusting.

    The result is verified with `verify_bundle` before it is returned, so a bundle clients
    would reject is never produced.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigurationError(f"version must be a non-negative integer, got {version!r}")
    issued = issued_at or dt.datetime.now(dt.UTC)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "issued_at": _time(issued),
        "expires_at": _time(expires),
        "policy": _policy_doc(policy, "policy"),
    }
    if kill_switch is not None:
        ks = dict(kill_switch)
        if "until" in ks:
            ks["until"] = _time(ks["until"])
        payload["kill_switch"] = ks
    if rollout is not None:
        ro = dict(rollout)
        if "policy" in ro:
            ro["policy"] = _policy_doc(ro["policy"], "rollout.policy")
        payload["rollout"] = ro
    add, retire = list(add_keys), list(retire_keys)
    if add or retire:
        payload["keys"] = {"add": [k.jwk() for k in add], "retire": retire}
    token = sign_compact(canonical_json(payload), signer, TYP)
    if isinstance(signer, FileSigner):  # an HSM/KMS signer is checked by `certpin bundle verify`
        try:
            verify_bundle(token, [signer.trusted_key], now=issued)
        except BundleError as exc:
            raise ConfigurationError(f"refusing to sign an invalid bundle: {exc.detail}") from None
    return token


def verify_bundle(
    token: str | bytes,
    trusted_keys: Iterable[TrustedKey] | Mapping[str, TrustedKey],
    *,
    now: dt.datetime,
    min_version: int = 0,
    check_expiry: bool = True,
    skew: dt.timedelta = DEFAULT_SKEW,
    max_size: int = MAX_BUNDLE_SIZE,
) -> Bundle:
    """Verify a bundle's signature and payload; returns the `Bundle` or raises `BundleError`.

    Checks, in order: size, JWS structure, canonical base64url, algorithm allow-list, ``crit``,
    trusted ``kid``, signature; then ``format``, ``version >= min_version``, ``issued_at`` not
    after ``now + skew``, ``expires_at`` after ``now`` (unless ``check_expiry`` is False), the
    policy and rollout policy, the kill switch (≤ 30 days after ``issued_at``) and key changes.
    """
    keys = (
        dict(trusted_keys)
        if isinstance(trusted_keys, Mapping)
        else {k.kid: k for k in trusted_keys}
    )
    try:
        return _verify(token, keys, now, min_version, check_expiry, skew, max_size)
    except RecursionError:  # pragma: no cover - Defensive: no known payload reaches it
        # The JSON parser bounds nesting by the recursion limit, but a payload nested just
        # under it can still exhaust the stack in a later step (a deeper caller, a
        # recursive check): still only a rejection.
        raise BundleError("bad_json", "the bundle payload is nested too deeply") from None


def _verify(
    token: str | bytes,
    keys: dict[str, TrustedKey],
    now: dt.datetime,
    min_version: int,
    check_expiry: bool,
    skew: dt.timedelta,
    max_size: int,
) -> Bundle:
    _header, raw, key = verify_compact(token, keys, max_size=max_size, typ=TYP)
    raw_token = (token.encode("ascii") if isinstance(token, str) else token).strip()
    payload = _json_object(raw, "bundle payload")
    unknown = sorted(set(payload) - set(_FIELDS))
    if unknown:
        shown = ", ".join(brief(name) for name in unknown[:5])
        raise BundleError("bad_payload", f"unknown payload members [{shown}]")
    if payload.get("format") != FORMAT:
        raise BundleError(
            "bad_format", f"format {brief(payload.get('format'))}; this certpin reads {FORMAT!r}"
        )
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise BundleError(
            "bad_payload", f"version must be a non-negative integer: {brief(version)}"
        )
    if version < min_version:
        raise BundleError("rollback", f"version {version} is below the minimum {min_version}")
    issued = _parse_time(payload.get("issued_at"), "issued_at")
    expires = _parse_time(payload.get("expires_at"), "expires_at")
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    if issued > now + skew:
        raise BundleError("future", f"issued_at {issued.isoformat()} is in the future")
    if expires <= issued:
        raise BundleError("bad_payload", "expires_at is not after issued_at")
    if check_expiry and now >= expires:
        raise BundleError("expired", f"the bundle expired at {expires.isoformat()}")
    policy = _parse_policy(payload.get("policy"), "policy")
    kill = _parse_kill_switch(payload.get("kill_switch"), issued)
    rollout = _parse_rollout(payload.get("rollout"))
    add, retire = _parse_keys(payload.get("keys"), key.kid)
    return Bundle(
        token=raw_token.decode("ascii"),
        kid=key.kid,
        version=version,
        issued_at=issued,
        expires_at=expires,
        policy=policy,
        kill_switch=kill,
        rollout=rollout,
        add_keys=add,
        retire_keys=retire,
        # The JWS signing input (RFC 7515 §5.1: header and payload segments, everything the
        # signature covers) identifies the bundle; hashed through a view, not a copy (200 KB at
        # client start).
        signed_sha256=hashlib.sha256(memoryview(raw_token)[: raw_token.rfind(b".")]).hexdigest(),
    )


def _parse_policy(doc: Any, where: str) -> Policy:
    if not isinstance(doc, Mapping):
        raise BundleError("bad_policy", f"{where} must be a policy object")
    try:
        return Policy.from_dict(doc, source=f"<bundle {where}>")
    except PolicyError as exc:
        raise BundleError("bad_policy", str(exc)) from None


def _parse_kill_switch(doc: Any, issued: dt.datetime) -> BundleKillSwitch | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping) or set(doc) - {"domains", "until", "reason"}:
        raise BundleError("bad_kill_switch", "kill_switch must be {domains, until, reason}")
    until = _parse_time(doc.get("until"), "kill_switch.until")
    if until - issued > MAX_KILL_SWITCH:
        raise BundleError(
            "bad_kill_switch", "kill_switch.until is more than 30 days after issued_at"
        )
    reason = doc.get("reason", "")
    if not isinstance(reason, str):
        raise BundleError("bad_kill_switch", "kill_switch.reason must be a string")
    raw = doc.get("domains")
    domains: tuple[str, ...] | str
    if raw == "*":
        domains = "*"
    elif isinstance(raw, list) and raw and all(isinstance(d, str) for d in raw):
        try:
            domains = tuple(HostPattern.parse(d).text for d in raw)
        except HostError as exc:
            raise BundleError("bad_kill_switch", f"kill_switch.domains: {exc}") from None
    else:
        raise BundleError("bad_kill_switch", 'kill_switch.domains must be "*" or a host list')
    return BundleKillSwitch(domains=domains, until=until, reason=reason)


def _parse_rollout(doc: Any) -> Rollout | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping) or set(doc) != {"id", "percent", "policy"}:
        raise BundleError("bad_rollout", "rollout must be {id, percent, policy}")
    rid, percent = doc["id"], doc["percent"]
    if not isinstance(rid, str) or not rid:
        raise BundleError("bad_rollout", "rollout.id must be a non-empty string")
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
        raise BundleError("bad_rollout", f"rollout.percent must be 0..100, got {brief(percent)}")
    return Rollout(id=rid, percent=float(percent), policy=_parse_policy(doc["policy"], "rollout"))


def _parse_keys(doc: Any, signer_kid: str) -> tuple[tuple[TrustedKey, ...], tuple[str, ...]]:
    if doc is None:
        return (), ()
    if not isinstance(doc, Mapping) or set(doc) - {"add", "retire"}:
        raise BundleError("bad_keys", "keys must be {add: [JWK...], retire: [kid...]}")
    add_raw: Sequence[Any] = doc.get("add", [])
    retire_raw: Sequence[Any] = doc.get("retire", [])
    if not isinstance(add_raw, list) or not all(isinstance(j, Mapping) for j in add_raw):
        raise BundleError("bad_keys", "keys.add must be a list of JWKs")
    if not isinstance(retire_raw, list) or not all(isinstance(k, str) for k in retire_raw):
        raise BundleError("bad_keys", "keys.retire must be a list of kids")
    if len(add_raw) > MAX_KEY_CHANGES or len(retire_raw) > MAX_KEY_CHANGES:
        raise BundleError(
            "bad_keys", f"a bundle adds or retires at most {MAX_KEY_CHANGES} keys of each kind"
        )
    add = tuple(TrustedKey.from_jwk(j) for j in add_raw)
    if signer_kid in retire_raw:
        raise BundleError("bad_keys", "a bundle cannot retire the key that signed it")
    return add, tuple(retire_raw)
