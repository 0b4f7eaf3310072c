"""Host names: normalisation and rule patterns, in one place.

Every host that enters certpin (a policy key, a connection's ``server_hostname``, a CLI argument)
passes through `normalize_host`, so ``API.Example.COM.``, ``api.example.com`` and an IDN's U-label
and A-label all name the same rule, and every spelling of an IP address that a client can connect
with names that address's rule.

IP addresses. A name whose last label is numeric is an IPv4 address in the syntax of
``inet_aton`` (what glibc's ``getaddrinfo`` connects to): 1 to 4 parts, each decimal, octal
(leading ``0``) or hex (``0x``), the last filling the remaining bytes (``127.1``, ``0x7f.1``,
``2130706433``, ``127.000.000.001``, a trailing dot). It is returned in dotted-quad form, or
refused when it is no address, or when OpenSSL would verify the certificate for *another*
address than the one the socket connects to (OpenSSL reads four decimal parts as decimal, so
``0177.0.0.1`` is 177.0.0.1 to it and 127.0.0.1 to ``inet_aton``). IPv6 addresses are returned
compressed, an IPv4-mapped one (``::ffff:127.0.0.1``) as its IPv4 address; zone ids (``%eth0``)
are refused.

IDN. A U-label is converted with the standard library's IDNA 2003 codec (nameprep + punycode):
that is what Python's ``ssl``, ``socket`` and ``http.client`` send. requests (UTS 46), httpx and
urllib3 (IDNA 2008) encode some labels differently (``ẞ`` is ``ss`` to IDNA 2003, ``xn--zca`` to
IDNA 2008), so a U-label is accepted only in the form on which they agree: already mapped by
nameprep except for case (``label.lower()`` is what nameprep gives), NFKC- and case-fold-stable
under the current Unicode data, every code point assigned, and none of the four "deviation"
characters (ß, ς, ZWJ, ZWNJ). Anything else is refused with a hint to write the A-label the
clients send. An A-label (``xn--``) must be the one punycode encoding of a label of that form
(deviation characters allowed: the A-label is how they are written). A-labels are the canonical
form: they are what TLS clients send in SNI.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from encodings.idna import ToASCII, nameprep  # the stdlib IDNA 2003 codec's per-label steps
from enum import StrEnum
from functools import lru_cache

from certpin._errors import ConfigurationError

__all__ = [
    "HostError",
    "HostPattern",
    "PatternKind",
    "certificate_names_match",
    "is_public_suffix",
    "normalize_host",
    "registrable_domain",
]

# Used with fullmatch: "$" would also match before a final newline ("abc\n").
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# A name already in canonical form: lower-case ASCII labels of 1-63 characters not starting or
# ending with "-", no trailing dot, last character not a digit (so not an IP address). Such a name
# is returned as is; anything else (upper case, IDN, "xn--", digits at the end...) takes the
# general path below. A last label "0x…" of hex digits is an IPv4 part (``0x7f.0xa``), not a name.
_CANONICAL = re.compile(
    r"(?:(?!-)[a-z0-9_-]{1,63}(?<!-)\.)*(?!-)(?!0x[0-9a-f]*\Z)[a-z0-9_-]{0,62}[a-z_]"
)


class HostError(ConfigurationError):
    """A host name or pattern that certpin refuses."""


def is_canonical_name(host: str) -> bool:
    """True if `host` is a DNS name `normalize_host` returns unchanged (no IDN, no IP address):
    one regex, which lets the names that are already canonical skip the general path."""
    return len(host) <= 253 and _CANONICAL.fullmatch(host) is not None and "xn--" not in host


def normalize_host(host: str) -> str:
    """Return the canonical form of a host name: lower-case A-labels, no trailing dot.

    IP addresses are returned in canonical form: IPv4 dotted-quad (from any spelling
    ``inet_aton`` accepts), IPv6 compressed without brackets, IPv4-mapped IPv6 as IPv4.

    Raises:
        HostError: empty labels (``a..b``), labels over 63 octets, invalid characters, an
            invalid or ambiguous IDN label, a numeric name that is not an IPv4 address or that
            OpenSSL and ``inet_aton`` read as different addresses, an IPv6 zone id.
    """
    if not isinstance(host, str):
        raise HostError(f"host must be a string, got {type(host).__name__}")
    if is_canonical_name(host):
        return host
    # ASCII whitespace only: str.strip() would also drop U+00A0, U+3000…, which IDNA 2003
    # keeps (as a space, an invalid name) and UTS 46 refuses, so no client sends them.
    h = host.strip(_ASCII_SPACE)
    if len(h) > _MAX_INPUT:
        # Bounds the work below; no accepted spelling is this long (an accepted U-label's
        # A-label is never shorter than the U-label).
        raise HostError(f"host {host[:80]!r}… is longer than 253 characters")
    if _DOTTED_QUAD.fullmatch(h):
        return h  # an IPv4 address already in canonical form (the common case for IP keys)
    if h.startswith("[") and h.endswith("]"):
        # RFC 3986 §3.2.2: brackets enclose an IPv6 literal and nothing else.
        return _ipv6(host, h[1:-1], bracketed=True)
    if ":" in h:
        return _ipv6(host, h, bracketed=False)
    if not h.isascii():
        # IDNA 2003 and UTS 46 both treat these as label separators (so do ssl and requests).
        h = h.translate(_IDNA_DOTS)
    if h.endswith("."):
        h = h[:-1]  # the fully-qualified "example.com." names the same host
    if not h:
        raise HostError(f"empty host name: {host!r}")
    labels = h.split(".")
    if _NUMERIC.fullmatch(labels[-1]):
        return _ipv4(host, labels)
    out = []
    for label in labels:
        if not label:
            raise HostError(f"host {host!r} has an empty label")
        if label.isascii():
            lab = label.lower()
            if lab.startswith("xn--"):
                _check_a_label(host, label, lab)
            elif not _LABEL.fullmatch(lab):
                raise HostError(f"host {host!r}: invalid label {label!r}")
        else:
            lab = _u_label_to_a_label(host, label)
        out.append(lab)
    result = ".".join(out)
    if len(result) > 253:
        raise HostError(f"host {host!r} is longer than 253 characters")
    return result


# 253 characters, a trailing dot, IPv6 brackets: nothing longer can be accepted.
_MAX_INPUT = 256
_ASCII_SPACE = " \t\n\r\f\v"

#: The label separators of IDNA 2003 (RFC 3490 §3.1) and UTS 46 besides ".".
_IDNA_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))

# -- IP addresses ----------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
#: A label that makes the name an IPv4 address (WHATWG URL "ends in a number", inet_aton's parts).
_NUMERIC = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
#: One part as glibc's inet_aton reads it (strtoul base 0): hex, octal with a leading 0, decimal.
_INET_PART = re.compile(r"0[xX](?P<hex>[0-9a-fA-F]+)|(?P<oct>0[0-7]*)|(?P<dec>[1-9][0-9]*)")
_DECIMAL = re.compile(r"[0-9]+")


def _ipv4(host: str, parts: list[str]) -> str:
    """The dotted quad that `inet_aton` reads from `parts`, or HostError.

    Names ending in a number are addresses to ``getaddrinfo`` (it connects to what
    ``inet_aton`` reads) and to URL parsers; a name that parses as none is refused rather than
    looked up as a DNS name, since clients disagree on what it names.
    """
    values = []
    for part in parts:
        m = _INET_PART.fullmatch(part)
        if m is None or len(parts) > 4:
            raise HostError(
                f"host {host!r}: a name ending in a number must be an IPv4 address, and this "
                "is not one"
            )
        if m["hex"] is not None:
            values.append(int(m["hex"], 16))
        elif m["oct"] is not None:
            values.append(int(m["oct"], 8))
        else:
            values.append(int(part, 10))
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(values))):
        raise HostError(f"host {host!r}: not an IPv4 address (a part is out of range)")
    number = 0
    for v in head:
        number = number << 8 | v
    number = number << (8 * (5 - len(values))) | last
    address = ipaddress.IPv4Address(number)
    if len(parts) == 4 and all(_DECIMAL.fullmatch(p) for p in parts):
        # OpenSSL (a2i_IPADDRESS: sscanf "%d.%d.%d.%d") reads four decimal parts as decimal,
        # while inet_aton reads a leading 0 as octal: "127.0.0.010" connects to 127.0.0.8 and
        # has its certificate checked for 127.0.0.10. Two hosts in one name: refuse it.
        decimal = [int(p, 10) for p in parts]
        if max(decimal) <= 0xFF and bytes(decimal) != address.packed:
            raise HostError(
                f"host {host!r}: OpenSSL reads this as {'.'.join(map(str, decimal))} and the "
                f"resolver as {address} (leading zeros are octal to it); write the address "
                "without leading zeros"
            )
    return str(address)


def _ipv6(host: str, text: str, *, bracketed: bool) -> str:
    if "%" in text:
        # RFC 6874 zone id: it names an interface, not a host, and OpenSSL does not take a
        # zoned literal as an address (it would check it as a DNS name).
        raise HostError(f"host {host!r}: IPv6 zone ids (%…) are not supported")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        if bracketed:
            raise HostError(f"host {host!r}: only an IPv6 address may be in brackets") from None
        raise HostError(
            f"host {host!r}: not an IPv6 address, and ':' is not allowed in a name"
        ) from None
    # ::ffff:a.b.c.d is the IPv4 host a.b.c.d seen through an IPv6 socket: one host, one rule.
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else address.compressed


# -- IDN -------------------------------------------------------------------------------------------

#: IDNA "deviation" characters (UTS 46 §2.4): encoded differently by IDNA 2003 and 2008.
_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")
# For checking the rest of an A-label's U-label: same-script stand-ins (ZWJ/ZWNJ join nothing).
_DEVIATION_STAND_INS = str.maketrans(
    {"\u00df": "s", "\u03c2": "\u03c3", "\u200c": "", "\u200d": ""}
)


_REFUSED_CATEGORIES = frozenset(("Cn", "Cf", "Co", "Cs", "Cc"))
# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt) outside Cf and Cn: variation
# selectors, fillers, inherent vowels, the combining grapheme joiner.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0000, 0xE0FFF),
)


def _ignorable(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _IGNORABLE_RANGES)


#: The full stop and the ideographic and full-width ones: label separators to IDNA and UTS 46.
_LABEL_DOTS = frozenset(".\u3002\uff0e\uff61")


def _agreed_form(label: str) -> str | None:
    """`label` lower-cased if IDNA 2003, UTS 46 and IDNA 2008 agree on how to encode it, else None.

    The conservative rule (property-tested over every code point against the ``idna`` package):
    nameprep must change nothing but case, and the result must be stable under today's Unicode
    (assigned code points, NFC, NFKC of its case fold unchanged), since UTS 46 maps with today's
    tables where nameprep used Unicode 3.2's.
    """
    lower = label.lower()
    if _LABEL_DOTS.intersection(lower):
        # Only an A-label can bring one in ("xn--q6jb0a" encodes "。、"): IDNA 2003 and UTS 46
        # split on these dots, so no client sends that label as one.
        return None
    try:
        if nameprep(label) != lower:
            return None
    except UnicodeError:
        return None
    for c in lower:
        # Unassigned (a later Unicode may map it), format characters (Cf: IDNA 2008 disallows
        # them, UTS 46 drops some), other default-ignorable code points (UTS 46 drops them,
        # nameprep keeps them: "x\u17b4" is xn--x-qyj to one and "x" to the other).
        if unicodedata.category(c) in _REFUSED_CATEGORIES or _ignorable(ord(c)):
            return None
    # NFKC's output is also NFC, so this one test covers both normal forms.
    if unicodedata.normalize("NFKC", lower.casefold()) != lower:
        return None
    return lower


def _u_label_to_a_label(host: str, label: str) -> str:
    if _DEVIATIONS.intersection(label):
        # IDNA 2003 maps these away (faß -> fass) while IDNA 2008 / UTS 46 keeps them
        # (xn--fa-hia): clients disagree on the name they send, so a rule written with
        # them could silently miss. Ask for the unambiguous A-label instead.
        raise HostError(
            f"host {host!r}: label {label!r} contains a character that IDNA 2003 and "
            "IDNA 2008 encode differently (ß, ς, ZWJ, ZWNJ); write the A-label (xn--…) "
            "that your clients send"
        )
    if len(label) > 63:  # an accepted U-label's A-label is never shorter
        raise HostError(f"host {host!r}: label {label!r} is longer than 63 characters")
    lower = _agreed_form(label)
    if lower is None:
        raise HostError(
            f"host {host!r}: label {label!r} is not in the form on which IDNA 2003 (Python's "
            "ssl and socket) and IDNA 2008 / UTS 46 (requests, httpx, urllib3) agree "
            "(lower case, already nameprep-mapped and NFC, no compatibility or unassigned "
            "characters); write the A-label (xn--…) that your clients send"
        )
    try:
        lab = ToASCII(lower).decode("ascii")
    except UnicodeError as exc:
        raise HostError(f"host {host!r}: invalid IDN label {label!r} ({exc})") from None
    if not _LABEL.fullmatch(lab):
        raise HostError(f"host {host!r}: invalid label {label!r}")
    return lab


def _check_a_label(host: str, label: str, lab: str) -> None:
    """Refuse an A-label that is not the one encoding of a label certpin would accept."""
    if not _LABEL.fullmatch(lab):  # also bounds the punycode work to 63 characters
        raise HostError(f"host {host!r}: {label!r} is not a valid A-label")
    try:
        decoded = lab[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        raise HostError(f"host {host!r}: {label!r} is not a valid A-label (bad punycode)") from None
    # Defensive: _LABEL admits no A-label whose punycode decodes to nothing or to ASCII only.
    if not decoded or decoded.isascii():  # pragma: no cover - Defensive
        raise HostError(f"host {host!r}: {label!r} is not a valid A-label")
    if decoded.encode("punycode").decode("ascii") != lab[4:]:
        # Punycode decoders accept some non-canonical inputs; the client encoding the U-label
        # would send the canonical one, so this name is not the host it appears to be.
        raise HostError(f"host {host!r}: {label!r} is not the canonical A-label of {decoded!r}")
    probe = decoded.translate(_DEVIATION_STAND_INS)
    if not probe or _agreed_form(probe) != probe:
        raise HostError(
            f"host {host!r}: {label!r} encodes {decoded!r}, which is not a label IDNA 2003 and "
            "IDNA 2008 / UTS 46 agree on (upper case, unmapped, unnormalised or unassigned "
            "characters)"
        )


class PatternKind(StrEnum):
    EXACT = "exact"
    """``example.com``: that host (and its subdomains with include_subdomains)."""
    ONE_LABEL = "one"
    """``*.example.com``: exactly one label before example.com (OkHttp)."""
    ANY_LABELS = "any"
    """``**.example.com``: zero or more labels before example.com (OkHttp >= 4.3)."""


@dataclass(frozen=True, slots=True)
class HostPattern:
    """A policy key: canonical text, its kind, and the base host it hangs off.

    Build with `HostPattern.parse`; `matches` is the one place certpin decides whether a
    pattern names a host (`DomainRule.covers` adds ``include_subdomains``, `Policy.lookup`'s
    index is property-tested to agree with both).

    Attributes:
        text: the canonical key (``api.example.com``, ``*.example.com``, ``**.example.com``).
        kind: what the leading label means (`PatternKind`).
        base: the host the pattern hangs off (``example.com`` for all three examples).
    """

    text: str
    kind: PatternKind
    base: str

    @classmethod
    def parse(cls, key: str) -> HostPattern:
        """Parse a policy key (any spelling `normalize_host` accepts, plus a leading ``*.`` or
        ``**.``).

        Raises:
            HostError: not a host name or pattern, a wildcard elsewhere than the first label,
                or a wildcard over an IP address.
        """
        if not isinstance(key, str):
            raise HostError(f"domain key must be a string, got {type(key).__name__}")
        return _parse_pattern(key)

    def matches(self, host: str, *, below: int = 0) -> bool:
        """True when this pattern names `host` (OkHttp's rules, on the normalised host).

        ``example.com`` names that host only; ``*.example.com`` names a host with exactly one
        label before ``example.com`` (not ``example.com`` itself, not ``a.b.example.com``);
        ``**.example.com`` names ``example.com`` and every host under it. An IP address is
        named by an exact pattern of the same address only.

        Args:
            host: a host name or IP address, in any spelling `normalize_host` accepts.
            below: ask about every host made of this many more labels, whatever they are, in
                front of `host`: ``matches("example.com", below=1)`` is whether the pattern
                names all of ``a.example.com``, ``b.example.com``… (what a certificate's
                ``*.example.com`` stands for). Default 0: `host` itself.

        Raises:
            HostError: `host` is not a host name or IP address (`normalize_host` refuses it).
        """
        if below < 0:
            raise ValueError(f"below must be >= 0, got {below}")
        name = normalize_host(host)
        if self.kind is PatternKind.EXACT:
            return below == 0 and name == self.base
        if _is_ip(name):
            return False  # an address has no labels to wildcard ("1.2.3.4" is not under "3.4")
        if self.kind is PatternKind.ANY_LABELS:
            return name == self.base or name.endswith("." + self.base)
        if below:  # "*.": exactly one label, so only one label in front of the base itself
            return below == 1 and name == self.base
        _label, dot, parent = name.partition(".")
        return bool(dot) and parent == self.base


def certificate_names_match(
    host: str, dns_names: Iterable[str], ip_addresses: Iterable[str]
) -> bool:
    """True when a certificate with these SubjectAltName entries is issued for `host`, as
    OpenSSL decides it for a Python client (RFC 6125 §6.4 with CPython's flags): a host name
    matches a DNS name exactly or through a wildcard that is the whole first label and stands
    for exactly one label (``*.example.com``: not ``example.com``, not ``a.b.example.com``; no
    partial wildcards such as ``w*.example.com``; at least two labels after the wildcard); an
    IP address matches an IP address entry only. The subject's common name is never used.

    For the pinning of contexts whose owner turned ``check_hostname`` off (urllib3 and
    botocore match names themselves): certpin then checks the name against the *verified*
    leaf before the pins. A name that does not parse never matches.
    """
    try:
        name = normalize_host(host)
    except HostError:
        return False
    if _is_ip(name):
        for text in ip_addresses:
            try:
                if normalize_host(text) == name:
                    return True
            except HostError:
                continue
        return False
    for text in dns_names:
        try:
            if text.startswith("*."):
                if text.count(".") < 2:
                    continue  # "*.com": OpenSSL wants two labels after the wildcard
                if HostPattern.parse(text).matches(name):
                    return True
            elif "*" not in text and normalize_host(text) == name:
                return True  # `name` is no IP address here, so neither is a name equal to it
        except HostError:
            continue
    return False


#: The earlier name of `HostPattern`, kept inside the core until its callers have moved.
Pattern = HostPattern


@lru_cache(maxsize=65536)
def _parse_pattern(key: str) -> HostPattern:
    # Cached: a policy parses each key several times (rule, index, coverage questions), and
    # bundles re-deliver the same keys on every refresh.
    raw = key.strip()
    if raw.startswith("**."):
        kind, prefix, rest = PatternKind.ANY_LABELS, "**.", raw[3:]
    elif raw.startswith("*."):
        kind, prefix, rest = PatternKind.ONE_LABEL, "*.", raw[2:]
    else:
        kind, prefix, rest = PatternKind.EXACT, "", raw
    if "*" in rest:
        raise HostError(
            f"pattern {key!r}: a wildcard is only allowed as a leading '*.' or '**.' label"
        )
    base = normalize_host(rest)
    if prefix and _is_ip(base):
        raise HostError(f"pattern {key!r}: wildcards do not apply to IP addresses")
    return HostPattern(prefix + base, kind, base)


def _is_ip(name: str) -> bool:
    """Whether a name `normalize_host` returned is an IP address: it writes every IPv6 address
    with ":" (which no DNS name holds) and every IPv4 address as a dotted quad."""
    return ":" in name or _DOTTED_QUAD.fullmatch(name) is not None


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


def registrable_domain(host: str) -> str:
    """The registrable part of a host or pattern (``api.example.co.uk`` -> ``example.co.uk``):
    its shortest suffix that is not a public suffix (`is_public_suffix`, a small built-in list).
    An IP address is its own. Two hosts are *unrelated* when these differ.

    Raises:
        HostError: `host` is not a host name, IP address or pattern.
    """
    base = HostPattern.parse(host).base
    if _is_ip(base):
        return base
    labels = base.split(".")
    for i in range(len(labels) - 1, -1, -1):
        candidate = ".".join(labels[i:])
        if not is_public_suffix(candidate):
            return candidate
    return base  # a single label (localhost): every suffix of it is public
