"""The verdict: the one place in certpin where pins are matched.

`verdict(host, chain, policy, now)` is pure: no sockets, no clock, no files. The TLS hook, the CLI,
and every later tool (rotation planner, monitor, bundles) call it and nothing else.

RFC 7469 §2.6: pins are checked against the *validated* chain, never the one the server sent:
an attacker with a rogue-but-trusted CA can append the genuine pinned intermediate or root to
the chain they serve (OkHttp CVE-2016-2402). Callers pass the verified chain, leaf first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from certpin.core.hosts import normalize_host
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.core.times import instant

__all__ = ["ChainEntry", "Outcome", "Verdict", "VerdictStatus", "untrusted", "verdict"]


class VerdictStatus(StrEnum):
    """The outcome of a pin check."""

    OK = "ok"
    """A pin of the host's rule matched the verified chain."""
    FAILED = "failed"
    """The host is pinned and the verified chain matched no pin (or could not be checked)."""
    UNPINNED = "unpinned"
    """No rule covers the host; CA validation alone applies (``unpinned_hosts = "allow"``)."""
    DENIED = "denied"
    """No rule covers the host and the policy says ``unpinned_hosts = "deny"``."""
    EXPIRED = "expired"
    """The host's rule has expired; CA validation alone applies (logged loudly)."""
    KILLED = "killed"
    """A signed kill switch suspends the host's pins; CA validation alone applies (logged
    loudly). Never turned into ``DENIED`` by ``unpinned_hosts = "deny"``: the host has a rule."""
    TOFU_MISMATCH = "tofu_mismatch"
    """The host's pins were recorded on first use and the verified chain no longer matches:
    `Verdict.expected_pins` are the recorded (old) pins, ``chain[0].pin`` the new leaf pin."""
    UNTRUSTED = "untrusted"
    """The host is pinned and its chain failed CA or host-name validation, so there is no
    verified chain to match pins against (`untrusted`): reported like a pin failure ("CA
    failure" in a report), never allowed, not even by a report-only rule."""


class Outcome(StrEnum):
    """What a verdict means for whoever acts on it: the one classification the TLS hook, the
    monitor and the CLI's exit codes share (`Verdict.outcome`)."""

    PINNED = "pinned"
    """The pins matched, or no rule covers the host (``ok``, ``unpinned``): nothing to say."""
    CA_ONLY = "ca_only"
    """The host has a rule but it does not apply now (``expired``, ``killed``): the connection
    is allowed on CA validation alone, loudly."""
    MISMATCH = "mismatch"
    """The pins did not match (``failed``, ``tofu_mismatch``), enforced or report-only, or a
    pinned host's chain failed CA validation (``untrusted``, always refused)."""
    DENIED = "denied"
    """No rule covers the host and the policy denies unpinned hosts."""


_OUTCOMES: dict[VerdictStatus, Outcome] = {
    VerdictStatus.OK: Outcome.PINNED,
    VerdictStatus.UNPINNED: Outcome.PINNED,
    VerdictStatus.EXPIRED: Outcome.CA_ONLY,
    VerdictStatus.KILLED: Outcome.CA_ONLY,
    VerdictStatus.FAILED: Outcome.MISMATCH,
    VerdictStatus.TOFU_MISMATCH: Outcome.MISMATCH,
    VerdictStatus.UNTRUSTED: Outcome.MISMATCH,
    VerdictStatus.DENIED: Outcome.DENIED,
}

#: statuses that let a connection through regardless of mode.
_PASSING = frozenset(
    {VerdictStatus.OK, VerdictStatus.UNPINNED, VerdictStatus.EXPIRED, VerdictStatus.KILLED}
)
#: statuses that mean "the pins did not match" (reportable, blocking unless report-only).
_MISMATCH = frozenset({VerdictStatus.FAILED, VerdictStatus.TOFU_MISMATCH})


class ChainEntry:
    """One certificate of the verified chain, for messages and reports.

    Cheap to create (a verdict makes one per certificate on every handshake); the pin, subject
    and issuer are computed on first use only.
    """

    __slots__ = ("position", "der", "_pin", "_names")

    def __init__(self, position: int, der: bytes) -> None:
        self.position = position
        self.der = der
        self._pin: Pin | None = None
        self._names: tuple[str, str] | None = None

    @property
    def pin(self) -> Pin:
        """The SPKI SHA-256 pin (raises ValueError for bytes that are not a certificate)."""
        if self._pin is None:
            self._pin = Pin.for_certificate(self.der)
        return self._pin

    @property
    def subject(self) -> str:
        if self._names is None:
            self._names = _describe(self.der)
        return self._names[0]

    @property
    def issuer(self) -> str:
        if self._names is None:
            self._names = _describe(self.der)
        return self._names[1]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChainEntry):
            return NotImplemented
        return (self.position, self.der) == (other.position, other.der)

    def __hash__(self) -> int:
        return hash((self.position, self.der))

    def __repr__(self) -> str:
        return f"ChainEntry(position={self.position})"

    def __str__(self) -> str:
        # Messages must never raise: an unparsable certificate is described, not hashed.
        try:
            pin = str(self.pin)
        except ValueError:
            pin = "<no SPKI pin: not a DER certificate>"
        return f"{pin}: {self.subject}"


@dataclass(frozen=True)
class Verdict:
    """The decision about one host and one verified chain.

    Attributes:
        status: see `VerdictStatus`.
        host: the host name checked, normalised.
        rule: the rule that applied, or None (unpinned/denied).
        chain: the verified chain, leaf first.
        matched_pin: the pin that matched (for OK), else None.
        reason: one line saying why, for logs and messages.
        now: the instant the verdict was computed for.
    """

    status: VerdictStatus
    host: str
    rule: DomainRule | None
    chain: tuple[ChainEntry, ...]
    matched_pin: Pin | None
    reason: str
    now: dt.datetime

    @property
    def report_only(self) -> bool:
        """True when the rule is report-only (``enforce = false``)."""
        return self.rule is not None and not self.rule.enforce

    @property
    def pin_failure(self) -> bool:
        """True when the pins did not match: enforced or not, this is reportable."""
        return self.status in _MISMATCH

    @property
    def allowed(self) -> bool:
        """True when the connection may proceed (report-only failures are allowed)."""
        return self.status in _PASSING or (self.pin_failure and self.report_only)

    @property
    def outcome(self) -> Outcome:
        """The verdict classified for action (see `Outcome`); `allowed` says whether a
        ``MISMATCH`` still lets the connection through (report-only)."""
        return _OUTCOMES[self.status]

    @property
    def noted_hostname(self) -> str | None:
        """The policy key the rule was found under (RFC 7469's noted-hostname)."""
        return None if self.rule is None else self.rule.pattern

    @property
    def expected_pins(self) -> tuple[Pin, ...]:
        return () if self.rule is None else self.rule.all_pins

    def message(self) -> str:
        """A multi-line explanation in the style of OkHttp's pinning failure."""
        lines = [f"Certificate pinning failure for {self.host}: {self.reason}"]
        lines.append("  Verified certificate chain:")
        if self.chain:
            lines += [f"    {entry}" for entry in self.chain]
        else:
            lines.append("    (empty)")
        if self.rule is not None:
            mode = "enforce" if self.rule.enforce else "report-only"
            lines.append(f"  Pinned for {self.rule.pattern} ({mode}):")
            slots = [(name, getattr(self.rule, name)) for name, _, _ in _SLOTS]
            labelled = sum(1 for _, pins in slots if pins) > 1 or not self.rule.pins
            for name, pins in slots:
                if pins and labelled:
                    lines.append(f"    {name} (one must match):")
                lines += [f"      {p}" if labelled else f"    {p}" for p in pins]
            lines.append(
                "  Hint: if this is your own new certificate, add its pin (`certpin pin "
                "--connect HOST`) to the policy before deploying it; if not, someone may be "
                "intercepting this connection."
            )
        return "\n".join(lines)


def verdict(
    host: str, chain: Sequence[bytes], policy: Policy, now: dt.datetime, *, below: int = 0
) -> Verdict:
    """Decide whether the verified `chain` (DER, leaf first) satisfies `policy` for `host`.

    Fails closed: an empty chain or an unparsable certificate never passes a pinned host.

    Args:
        host: the host name the client connected to (SNI / server_hostname).
        chain: the *verified* chain, leaf first, each certificate DER-encoded.
        policy: the policy in force.
        now: the current time, for rule expiry (a naive datetime is taken as UTC).
        below: for the lifecycle tools, which judge a certificate's wildcard name: 1 decides
            for the hosts one label under `host` that have no key of their own
            (`Policy.lookup`), and `Verdict.host` is then ``*.host``. Default 0: `host`.
    """
    if now.tzinfo is None:  # a naive clock is taken as UTC rather than failing mid-handshake
        now = now.replace(tzinfo=dt.UTC)
    entries = tuple(ChainEntry(i, der) for i, der in enumerate(chain))
    try:
        name = normalize_host(host)
    except ValueError as exc:
        shown = "*." * below + str(host)
        return Verdict(VerdictStatus.FAILED, shown, None, entries, None, str(exc), now)
    rule = policy.lookup(name, below=below)
    name = "*." * below + name

    def result(status: VerdictStatus, reason: str, matched: Pin | None = None) -> Verdict:
        return Verdict(status, name, rule, entries, matched, reason, now)

    if rule is None:
        if policy.unpinned_hosts == "deny":
            return result(
                VerdictStatus.DENIED, 'no pin rule covers this host and unpinned_hosts = "deny"'
            )
        if not entries:
            return result(VerdictStatus.FAILED, "no verified certificate chain")
        return result(VerdictStatus.UNPINNED, "no pin rule covers this host")
    if not entries:
        return result(VerdictStatus.FAILED, "no verified certificate chain")
    kill = rule.kill_switch
    if kill is not None and now < kill.until:
        return result(
            VerdictStatus.KILLED,
            f"KILL SWITCH: pins for {rule.pattern} suspended until {instant(kill.until)}"
            f" ({kill.reason or 'no reason given'}); CA validation only",
        )
    if rule.expired(now):
        assert rule.expires is not None
        return result(
            VerdictStatus.EXPIRED,
            f"pins for {rule.pattern} expired at {instant(rule.expires)}; CA validation only",
        )
    try:
        matched, failure = _match(rule, entries)
    except ValueError as exc:
        return result(VerdictStatus.FAILED, f"cannot parse a certificate of the chain: {exc}")
    if matched is None and rule.tofu:
        return result(
            VerdictStatus.TOFU_MISMATCH,
            f"the key changed since first use: recorded {', '.join(map(str, rule.all_pins))},"
            f" now {entries[0]} (expected? `certpin tofu accept {name}` records it)",
        )
    if matched is None:
        return result(VerdictStatus.FAILED, failure)
    return result(VerdictStatus.OK, "a pin of the rule matched the verified chain", matched)


def untrusted(host: str, policy: Policy, reason: str, now: dt.datetime) -> Verdict | None:
    """The verdict for `host` when its chain failed CA or host-name validation (`reason`, e.g.
    OpenSSL's verify message): ``UNTRUSTED`` when a rule covers the host (or the policy denies
    unpinned hosts, so every host is pinned), None when it is no business of the pins.

    The commonest interception attempt is a certificate from a CA the client does not trust;
    the TLS layer refuses it before any pin is looked at, and this verdict lets the failure be
    reported for a pinned host all the same (TrustKit's ``validation-result`` 2).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    try:
        name = normalize_host(host)
    except ValueError:
        return None  # no rule can name it; the client refused it already
    rule = policy.lookup(name)
    if rule is None and policy.unpinned_hosts != "deny":
        return None
    return Verdict(VerdictStatus.UNTRUSTED, name, rule, (), None, reason, now)


#: (slot, which chain positions it may match, what the failure reason says)
_SLOTS = (
    ("pins", slice(None), "no pin of the rule matches the verified chain"),
    ("leaf_pins", slice(0, 1), "no leaf_pins entry matches the leaf certificate"),
    # Apple ATS: a CA pin must match a CA certificate, i.e. chain positions >= 1.
    ("ca_pins", slice(1, None), "no ca_pins entry matches a CA certificate of the chain"),
)


def _match(rule: DomainRule, entries: tuple[ChainEntry, ...]) -> tuple[Pin | None, str]:
    """Apply the rule's pin slots (every slot that is set must match).

    Returns the pin that decided and "", or None and the reason naming the slot that failed.
    """
    found: Pin | None = None
    for name, positions, reason in _SLOTS:
        pins: tuple[Pin, ...] = getattr(rule, name)
        if pins:
            hit = _first_match(pins, entries[positions])
            if hit is None:
                return None, reason
            found = found or hit
    return found, ""


def _first_match(pins: tuple[Pin, ...], entries: tuple[ChainEntry, ...]) -> Pin | None:
    # `Pin.matches` is the one comparison (digest cached per certificate DER, constant time).
    for entry in entries:
        for pin in pins:
            if pin.matches(entry.der):
                return pin
    return None


def _describe(der: bytes) -> tuple[str, str]:
    try:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        return cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    except Exception as exc:  # Defensive: descriptions must never raise inside messages.
        return f"<unparsable certificate: {exc}>", "<unknown>"
