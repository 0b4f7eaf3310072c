"""Host names: normalisation and rule patterns, in one place.

Every host that enters certpin (a policy key, a connection's ``server_hostname``, a CLI argument)
passes through `normalize_host`, so ``API.Example.COM.``, ``api.example.com`` and an IDN's U-label
and A-label all name the same rule.

IDN: non-ASCII labels are converted with the standard library's IDNA 2003 codec (nameprep +
punycode), which needs no dependency and agrees with IDNA 2008/UTS 46 for the labels seen in
practice; the A-label is what TLS clients send in SNI, so A-labels are the canonical form.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from operator import itemgetter

__all__ = ["HostError", "Pattern", "PatternKind", "is_public_suffix", "normalize_host"]

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# A name already in canonical form: lower-case ASCII labels of 1-63 characters not starting or
# ending with "-", no trailing dot, last character not a digit (so not an IP address). Such a name
# is returned as is; anything else (upper case, IDN, "xn--", digits at the end...) takes the
# general path below.
_CANONICAL = re.compile(r"(?:(?!-)[a-z0-9_-]{1,63}(?<!-)\.)*(?!-)[a-z0-9_-]{0,62}[a-z_]")


class HostError(ValueError):
    """A host name or pattern that certpin refuses."""


def is_canonical_name(host: str) -> bool:
    """True if `host` is a DNS name `normalize_host` returns unchanged (no IDN, no IP address).

    The cheap test (one regex) that lets policy loading and lookups skip the general path.
    """
    return len(host) <= 253 and _CANONICAL.fullmatch(host) is not None and "xn--" not in host


def all_canonical_names(names: Collection[str]) -> bool:
    """`is_canonical_name` for every name at once (a TypeError for a non-str).

    Names of up to 63 characters (every label then fits, which is what large policies hold) are
    checked in C-level passes over their newline-joined text: the characters, no empty label,
    no label starting or ending with "-", a last character that is a letter or "_" (a digit
    would make an IP address), no "xn--" (A-labels need the IDNA check); about half the cost of
    the regex per name. Longer names take `is_canonical_name`. Property-tested against it.
    """
    if max(map(len, names)) > 63 or min(map(len, names)) == 0:
        return all(map(is_canonical_name, names))
    text = "\n".join(names)
    return (
        text.count("\n") == len(names) - 1  # no name holds a newline itself
        and text.isascii()
        and not text.encode("ascii").translate(None, _NAME_CHARS)
        and text[0] not in ".-"
        and not any(pair in text for pair in _NAME_BAD_PAIRS)
        and not "".join(map(_LAST, names)).encode("ascii").translate(None, _NAME_LAST_CHARS)
        and "xn--" not in text
    )


_NAME_LAST_CHARS = b"abcdefghijklmnopqrstuvwxyz_"
_NAME_CHARS = _NAME_LAST_CHARS + b"0123456789-.\n"
# An empty label, or a label that starts or ends with "-" (the name's end is checked apart).
_NAME_BAD_PAIRS = ("..", ".-", "-.", "\n.", "\n-")
_LAST = itemgetter(-1)


def normalize_host(host: str) -> str:
    """Return the canonical form of a host name: lower-case A-labels, no trailing dot.

    IP addresses are returned in their compressed form (IPv6 brackets removed).

    Raises:
        HostError: empty labels (``a..b``), labels over 63 octets, invalid characters, or an
            invalid IDN label.
    """
    if not isinstance(host, str):
        raise HostError(f"host must be a string, got {type(host).__name__}")
    if is_canonical_name(host):
        return host
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        # RFC 3986 §3.2.2: brackets enclose an IPv6 literal and nothing else.
        try:
            return ipaddress.IPv6Address(h[1:-1]).compressed
        except ValueError:
            raise HostError(f"host {host!r}: only an IPv6 address may be in brackets") from None
    # Only strings that could be an address pay for the (exception-raising) address parse.
    if ":" in h or h[-1:].isdigit():
        try:
            return ipaddress.ip_address(h).compressed
        except ValueError:
            pass
    if h.endswith("."):
        h = h[:-1]  # the fully-qualified "example.com." names the same host
    if not h:
        raise HostError(f"empty host name: {host!r}")
    labels = h.split(".")
    out = []
    for label in labels:
        if not label:
            raise HostError(f"host {host!r} has an empty label")
        if label.isascii():
            lab = label.lower()
            if lab.startswith("xn--"):
                _check_a_label(host, label, lab)
        elif _DEVIATIONS.intersection(label):
            # IDNA 2003 maps these away (faß -> fass) while IDNA 2008 / UTS 46 keeps them
            # (xn--fa-hia): clients disagree on the name they send, so a rule written with
            # them could silently miss. Ask for the unambiguous A-label instead.
            raise HostError(
                f"host {host!r}: label {label!r} contains a character that IDNA 2003 and "
                "IDNA 2008 encode differently (ß, ς, ZWJ, ZWNJ); write the A-label (xn--…) "
                "that your clients send"
            )
        else:
            try:
                lab = label.encode("idna").decode("ascii").lower()
            except UnicodeError as exc:
                raise HostError(f"host {host!r}: invalid IDN label {label!r} ({exc})") from None
        if not _LABEL.match(lab):
            raise HostError(f"host {host!r}: invalid label {label!r}")
        out.append(lab)
    result = ".".join(out)
    if len(result) > 253:
        raise HostError(f"host {host!r} is longer than 253 characters")
    return result


#: IDNA "deviation" characters (UTS 46 §2.4): encoded differently by IDNA 2003 and 2008.
_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")


def _check_a_label(host: str, label: str, lab: str) -> None:
    try:
        decoded = lab[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        raise HostError(f"host {host!r}: {label!r} is not a valid A-label (bad punycode)") from None
    if not decoded or decoded.isascii():
        raise HostError(f"host {host!r}: {label!r} is not a valid A-label")


class PatternKind(StrEnum):
    EXACT = "exact"
    """``example.com``: that host (and its subdomains with include_subdomains)."""
    ONE_LABEL = "one"
    """``*.example.com``: exactly one label before example.com (OkHttp)."""
    ANY_LABELS = "any"
    """``**.example.com``: zero or more labels before example.com (OkHttp >= 4.3)."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A policy key: canonical text, its kind, and the base host it hangs off."""

    text: str
    kind: PatternKind
    base: str

    @classmethod
    def parse(cls, key: str) -> Pattern:
        if not isinstance(key, str):
            raise HostError(f"domain key must be a string, got {type(key).__name__}")
        return _parse_pattern(key)


@lru_cache(maxsize=65536)
def _parse_pattern(key: str) -> Pattern:
    # Cached: a policy parses each key several times (file, rule, index), and bundles
    # re-deliver the same keys on every refresh.
    raw = key.strip()
    if raw.startswith("**."):
        kind, prefix, rest = _ANY_LABELS, "**.", raw[3:]
    elif raw.startswith("*."):
        kind, prefix, rest = _ONE_LABEL, "*.", raw[2:]
    else:
        kind, prefix, rest = _EXACT, "", raw
    if "*" in rest:
        raise HostError(
            f"pattern {key!r}: a wildcard is only allowed as a leading '*.' or '**.' label"
        )
    base = normalize_host(rest)
    if kind is not _EXACT and _is_ip(base):
        raise HostError(f"pattern {key!r}: wildcards do not apply to IP addresses")
    return _PatternBuilder(prefix + base, kind, base).done()


# Enum members as module constants: ``PatternKind.EXACT`` is a class attribute lookup through
# the enum machinery (≈ 0.3 µs), which the per-rule paths of policy loading avoid.
_EXACT, _ONE_LABEL, _ANY_LABELS = PatternKind.EXACT, PatternKind.ONE_LABEL, PatternKind.ANY_LABELS


class _PatternBuilder:
    """Builds a `Pattern` without the frozen dataclass's per-field ``object.__setattr__``.

    Same slots as `Pattern` (so the instance can become one by ``__class__`` assignment);
    plain attribute stores cost a fraction of the frozen ``__init__``. Only for values the
    parser has checked; tests/unit/test_hosts.py checks the result equals ``Pattern(...)``.
    """

    __slots__ = Pattern.__slots__

    def __init__(self, text: str, kind: PatternKind, base: str) -> None:
        self.text = text
        self.kind = kind
        self.base = base

    def done(self) -> Pattern:
        self.__class__ = Pattern  # type: ignore[assignment]
        return self  # type: ignore[return-value]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# Public suffixes under which `include_subdomains` (or a wildcard) would pin hosts the policy
# author does not control. Every single-label name (a TLD) is a public suffix; these multi-label
# ones are the common ICANN second-level registries and shared hosting suffixes. This is a
# deliberately small built-in list (no dependency); it is a guard rail, not a full PSL.
_MULTI_LABEL_SUFFIXES = frozenset(
    """
    co.uk org.uk me.uk ltd.uk plc.uk net.uk ac.uk gov.uk sch.uk nhs.uk police.uk
    com.au net.au org.au edu.au gov.au asn.au id.au
    co.nz net.nz org.nz govt.nz ac.nz
    co.jp ne.jp or.jp ac.jp go.jp ad.jp ed.jp gr.jp lg.jp
    co.kr or.kr ne.kr go.kr ac.kr re.kr
    com.br net.br org.br gov.br edu.br
    com.cn net.cn org.cn gov.cn edu.cn ac.cn
    com.hk net.hk org.hk gov.hk edu.hk
    com.tw net.tw org.tw gov.tw edu.tw
    com.sg net.sg org.sg gov.sg edu.sg
    co.in net.in org.in gov.in ac.in firm.in gen.in ind.in
    co.za org.za gov.za ac.za net.za
    com.mx org.mx gob.mx net.mx edu.mx
    com.ar gob.ar net.ar org.ar
    com.tr gov.tr org.tr net.tr edu.tr
    co.il org.il gov.il ac.il net.il
    com.ru org.ru net.ru
    com.ua org.ua net.ua gov.ua
    com.pl net.pl org.pl gov.pl
    co.id or.id go.id ac.id web.id
    com.my org.my gov.my net.my edu.my
    com.ph org.ph gov.ph net.ph edu.ph
    com.vn net.vn org.vn gov.vn edu.vn
    co.th or.th go.th ac.th in.th
    com.sa org.sa gov.sa net.sa edu.sa
    com.eg org.eg gov.eg edu.eg
    com.ng org.ng gov.ng edu.ng
    co.ke or.ke go.ke ac.ke
    github.io gitlab.io herokuapp.com appspot.com blogspot.com cloudfront.net
    azurewebsites.net cloudapp.net netlify.app vercel.app pages.dev workers.dev
    firebaseapp.com web.app s3.amazonaws.com elasticbeanstalk.com fly.dev onrender.com
    """.split()
)


def is_public_suffix(host: str) -> bool:
    """True for a name under which anyone can register (a TLD, ``co.uk``, ``github.io``…)."""
    return "." not in host or host in _MULTI_LABEL_SUFFIXES
