"""The rule in force for a client that checks certificates with its own TLS stack.

pycurl (libcurl) and grpcio (BoringSSL) never hand Python a verified chain, so certpin cannot
run the verdict after their handshakes. Their integrations (`certpin.tls.pycurl`,
`certpin.tls.grpc`) translate the host's rule into the client's own setting *before* the
connection instead, and this module decides which rule that is, with the verdict's own
semantics (`certpin.core.verdict`):

* no rule, ``unpinned_hosts = "allow"``: nothing to translate (None);
* no rule, ``unpinned_hosts = "deny"``: `PinValidationError` (the ``DENIED`` verdict);
* an expired rule or an active kill switch: CA validation only (None), logged at WARNING;
* a report-only rule: `UnenforceableRuleError` — these clients cannot report a mismatch and
  let the connection through, and enforcing instead would block what the operator chose not to
  block;
* otherwise the rule, for the caller to translate exactly or refuse.
"""

from __future__ import annotations

import datetime as dt
import logging

from certpin._errors import PinValidationError, UnenforceableRuleError
from certpin.core.hosts import normalize_host
from certpin.core.policy import DomainRule, Policy
from certpin.core.times import instant
from certpin.core.verdict import VerdictStatus, verdict

log = logging.getLogger("certpin.enforce")


def rule_in_force(policy: Policy, host: str, client: str, now: dt.datetime) -> DomainRule | None:
    """The rule `client` must enforce for `host` at `now`, or None for CA validation only.

    Raises:
        HostError: `host` is not a host name or IP address.
        PinValidationError: no rule covers `host` and the policy denies unpinned hosts.
        UnenforceableRuleError: the rule is report-only.
    """
    if now.tzinfo is None:  # as the verdict does: a naive clock is UTC
        now = now.replace(tzinfo=dt.UTC)
    name = normalize_host(host)
    rule = policy.lookup(name)
    if rule is None:
        if policy.unpinned_hosts == "deny":
            result = verdict(name, (), policy, now)
            assert result.status is VerdictStatus.DENIED
            raise PinValidationError(
                f"refusing {name}: {result.reason} ({client} connection not set up)", result
            )
        return None
    kill = rule.kill_switch
    if kill is not None and now < kill.until:
        log.warning(
            "certpin: KILL SWITCH: pins for %s suspended until %s (%s); %s connection to %s "
            "set up with CA validation only",
            rule.pattern,
            instant(kill.until),
            kill.reason or "no reason given",
            client,
            name,
        )
        return None
    if rule.expired(now):
        assert rule.expires is not None
        log.warning(
            "certpin: pins for %s expired at %s; %s connection to %s set up with CA "
            "validation only",
            rule.pattern,
            instant(rule.expires),
            client,
            name,
        )
        return None
    if not rule.enforce:
        raise unenforceable(
            name,
            rule,
            client,
            f"the rule is report-only (enforce = false), and {client} cannot report a mismatch "
            "and let the connection through; enforcing it instead would block what the policy "
            "says to allow. Enforce the rule, or connect without certpin's pins",
        )
    return rule


def unenforceable(host: str, rule: DomainRule, client: str, why: str) -> UnenforceableRuleError:
    """The error for a `rule` that `client` cannot enforce exactly, and `why`."""
    return UnenforceableRuleError(
        f"cannot pin {host} with {client}: rule {rule.pattern!r}: {why}",
        host=host,
        pattern=rule.pattern,
        client=client,
    )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
