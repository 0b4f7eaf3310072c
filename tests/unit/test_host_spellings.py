"""Every spelling a client can connect with names one host, or is refused.

IPv4: glibc's ``inet_aton`` (what ``getaddrinfo`` connects to) reads ``127.1``, ``0x7f.1``,
``2130706433`` and ``127.000.000.001`` as 127.0.0.1, and OpenSSL verifies four decimal parts as
that address: a rule for 127.0.0.1 must apply to all of them. IDN: a U-label key must normalise to
the A-label every client sends for it (the ``idna`` package is the oracle for requests, httpx and
urllib3; the standard library's codec for ssl, socket and http.client), or be refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import sys
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certpin import Policy, VerdictStatus, normalize_host, verdict
from certpin.core.hosts import HostError, HostPattern, PatternKind

try:  # the requests/httpx dependency, used only as the oracle (certpin does not import it)
    import idna
except ImportError:  # pragma: no cover - installed with the test extras
    idna = None
needs_idna = pytest.mark.skipif(idna is None, reason="the idna package is the oracle")

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.000.000.001",
    "127.0.0.01",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "0X7F.0.0.1",
    "0x7f.0x0.0x0.0x1",
    "0177.1",  # octal, not four parts: OpenSSL checks it as a DNS name, never as 177.0.0.1
    "0x7f000001",
    "2130706433",
    "017700000001",
    "127.0.0.1.",
    "127.1.",
    " 127.0.0.1\t",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "[::FFFF:7F00:0001]",
    "0:0:0:0:0:ffff:127.0.0.1",
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_every_loopback_spelling_is_127_0_0_1(spelling: str) -> None:
    assert normalize_host(spelling) == "127.0.0.1"


@pytest.mark.parametrize("spelling", [s for s in LOOPBACK_SPELLINGS if ":" not in s])
def test_the_resolver_agrees(spelling: str) -> None:
    # The oracle: what glibc connects to for this spelling.
    text = spelling.strip().removesuffix(".")
    assert socket.inet_ntoa(socket.inet_aton(text)) == normalize_host(spelling)


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_a_rule_for_the_address_covers_every_spelling(spelling: str) -> None:
    policy = Policy.from_dict({"domains": {"127.0.0.1": {"pins": [PIN_A, PIN_B]}}})
    rule = policy.lookup(spelling)
    assert rule is not None and rule.pattern == "127.0.0.1"
    # and a key written in that spelling is the same rule
    expected = HostPattern("127.0.0.1", PatternKind.EXACT, "127.0.0.1")
    assert HostPattern.parse(spelling.strip()) == expected


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PIN_A = "sha256/" + "A" * 43 + "="
PIN_B = "sha256/" + "B" * 42 + "A="


@pytest.mark.parametrize(
    ("spelling", "problem"),
    [
        # four decimal parts: OpenSSL verifies 127.0.0.10 / 177.0.0.1, the socket goes to
        # 127.0.0.8 / 127.0.0.1 (octal): two hosts in one name
        ("127.0.0.010", "OpenSSL reads this as 127.0.0.10 and the resolver as 127.0.0.8"),
        ("0177.0.0.1", "OpenSSL reads this as 177.0.0.1"),
        # no address to inet_aton (so a DNS lookup), an address to OpenSSL (127.0.0.8)
        ("127.0.0.08", "must be an IPv4 address"),
        ("1.2.3.4.5", "must be an IPv4 address"),
        ("example.123", "must be an IPv4 address"),
        ("a.0xa", "must be an IPv4 address"),
        ("0x", "must be an IPv4 address"),
        ("1.0x.0.1", "must be an IPv4 address"),
        ("256.0.0.1", "out of range"),
        ("1.256.1", "out of range"),
        ("1.2.65536", "out of range"),
        ("4294967296", "out of range"),
        ("127.+0.0.1", "must be an IPv4 address"),  # OpenSSL's sscanf("%d") takes "+0"
        ("127.0.0.1..", "empty label"),
        ("fe80::1%eth0", "zone ids"),
        ("[fe80::1%25eth0]", "zone ids"),
        ("::ffff:127.000.0.1", "not an IPv6 address"),
        ("[127.0.0.1]", "only an IPv6 address may be in brackets"),
        ("a:b", "not an IPv6 address"),
        ("abc\n.example", "invalid label"),
        ("example.com\u00a0", "not in the form"),  # str.strip() would have dropped it
    ],
)
def test_ambiguous_spellings_are_refused(spelling: str, problem: str) -> None:
    with pytest.raises(HostError, match=problem):
        normalize_host(spelling)


def test_refused_spelling_fails_the_verdict_closed() -> None:
    policy = Policy.from_dict({"domains": {"127.0.0.10": {"pins": [PIN_A, PIN_B]}}})
    result = verdict("127.0.0.010", [b"x"], policy, NOW)
    assert result.status is VerdictStatus.FAILED and not result.allowed
    # its twin: the plain spelling reaches the rule (and fails on the pin, not on the name)
    plain = verdict("127.0.0.10", [b"x"], policy, NOW)
    assert plain.rule is not None and plain.rule.pattern == "127.0.0.10"


@pytest.mark.parametrize(
    ("name", "address"), [("0x7f.0xab", "127.0.0.171"), ("0xface", "0.0.250.206")]
)
def test_a_hex_last_label_makes_an_address(name: str, address: str) -> None:
    assert normalize_host(name) == address
    assert normalize_host("box0x.example") == "box0x.example"  # "0x" inside a name is fine
    with pytest.raises(HostError, match="IPv4"):
        normalize_host("a.0xa")  # ends in a number, and no address


def test_wildcard_on_a_spelled_address_is_refused() -> None:
    with pytest.raises(HostError, match="wildcards do not apply to IP addresses"):
        HostPattern.parse("*.127.1")


NUMERIC_TEXT = st.text(alphabet=st.sampled_from("0123456789xXabcdefABCDEF."), max_size=24)


def _inet_aton(text: str) -> str | None:
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        return None


def _openssl_ipv4(text: str) -> str | None:
    """OpenSSL's reading: four decimal numbers 0-255 (sscanf "%d.%d.%d.%d", digits only here)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    values = [int(p) for p in parts]
    return ".".join(map(str, values)) if max(values) <= 255 else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc inet_aton is the oracle")
@settings(max_examples=3000, deadline=None)
@given(NUMERIC_TEXT)
def test_numeric_names_agree_with_inet_aton_and_openssl(text: str) -> None:
    try:
        result = normalize_host(text)
    except HostError:
        return  # refusing is always allowed; accepting must agree with both readers
    bare = text.removesuffix(".")
    try:
        address = ipaddress.ip_address(result)
    except ValueError:
        # A DNS name: then no reader takes it as an address.
        assert _inet_aton(bare) is None and _openssl_ipv4(bare) is None, (text, result)
        return
    assert _inet_aton(bare) == str(address), (text, result)
    assert _openssl_ipv4(bare) in (None, str(address)), (text, result)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc inet_aton is the oracle")
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.sampled_from(["dec", "oct", "hex"]))
def test_inet_aton_spellings_of_any_address_are_that_address(
    number: int, parts: int, base: str
) -> None:
    # Build a spelling with `parts` parts (the last filling the remaining bytes).
    packed = number.to_bytes(4, "big")
    values = [*packed[: parts - 1], int.from_bytes(packed[parts - 1 :], "big")]
    fmt = {"dec": str, "oct": lambda v: f"0{v:o}", "hex": lambda v: f"0x{v:x}"}[base]
    spelling = ".".join(fmt(v) for v in values)
    expected = str(ipaddress.IPv4Address(number))
    assert _inet_aton(spelling) == expected  # the oracle reads it so
    try:
        assert normalize_host(spelling) == expected
    except HostError as exc:
        # only when OpenSSL would read the same text as another address
        assert _openssl_ipv4(spelling) not in (None, expected), exc


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("[2001:DB8:0:0:0:0:0:1]", "2001:db8::1"),
        ("2001:0db8:0000::0001", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::1", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("::ffff:0:7f00:1", "::ffff:0:7f00:1"),  # IPv4-translated, not mapped: another host
    ],
)
def test_ipv6_spellings(spelling: str, canonical: str) -> None:
    assert normalize_host(spelling) == canonical


# -- IDN -------------------------------------------------------------------------------------------


def _client_a_labels(label: str) -> dict[str, str | None]:
    """The A-label each client sends for `label` (None: it refuses the label)."""
    senders = {
        "stdlib (ssl, socket, http.client)": lambda s: s.encode("idna"),
        "requests, aiohttp (UTS 46)": lambda s: idna.encode(s, uts46=True),
        "httpx (IDNA 2008 of lower())": lambda s: idna.encode(s.lower()),
        "urllib3 (IDNA 2008, strict)": lambda s: idna.encode(
            s.lower(), strict=True, std3_rules=True
        ),
    }
    out: dict[str, str | None] = {}
    for name, send in senders.items():
        try:
            out[name] = send(label).decode("ascii").removesuffix(".")
        except (idna.IDNAError, UnicodeError, ValueError):
            out[name] = None
    return out


# Large blocks of identical properties (Lo, no mapping, no case): every 61st is enough for the
# quick run; the slow run takes every code point.
_UNIFORM_BLOCKS = (range(0x3400, 0x4DC0), range(0x4E00, 0xA000), range(0xAC00, 0xD7A4))


def _bmp_sample() -> list[int]:
    return [
        cp
        for cp in range(0x80, 0x10000)
        if not any(cp in block for block in _UNIFORM_BLOCKS) or cp % 61 == 0
    ]


def _disagreements(code_points: Iterable[int], forms: tuple[str, ...]) -> list[object]:
    bad: list[object] = []
    for cp in code_points:
        if 0xD800 <= cp < 0xE000:
            continue
        for form in forms:
            label = form.format(chr(cp))
            try:
                ours = normalize_host(label)
            except HostError:
                continue
            sent = _client_a_labels(label)
            # the stdlib always sends a name for what certpin accepts; the others send the same
            # A-label or refuse the U-label (then they cannot contact it at all)
            if sent["stdlib (ssl, socket, http.client)"] != ours or any(
                a is not None and a != ours for a in sent.values()
            ):
                bad.append((f"U+{cp:04X}", form, ours, sent))
    return bad


@needs_idna
def test_bmp_code_points_certpin_accepts_are_sent_alike() -> None:
    assert _disagreements(_bmp_sample(), ("x{}",)) == []


@needs_idna
@pytest.mark.slow
@pytest.mark.timeout(900)  # 1.1 M code points x 3 positions x 4 encoders: ~1 min, ~4 under coverage
def test_every_code_point_certpin_accepts_is_sent_alike() -> None:
    assert _disagreements(range(0x80, 0x110000), ("{}", "x{}", "{}x")) == []


@needs_idna
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=5))
@settings(max_examples=1500, deadline=None)
def test_any_label_certpin_accepts_is_sent_alike(label: str) -> None:
    label = label.strip(" \t\n\r\f\v")  # normalize_host strips surrounding ASCII space
    try:
        ours = normalize_host(label)
    except HostError:
        return
    if label.isascii() or "." in ours:
        return  # ASCII: sent as is; "." inside: several labels, each checked on its own
    sent = _client_a_labels(label)
    assert sent["stdlib (ssl, socket, http.client)"] == ours, sent
    assert all(a is None or a == ours for a in sent.values()), (label, ours, sent)


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("\u1e9e", "ẞ: ss to IDNA 2003, xn--zca to IDNA 2008 / UTS 46"),
        ("\u13a0", "Cherokee Ꭰ: UTS 46 folds to upper case, str.lower() to U+AB70"),
        ("\uab70", "Cherokee ꭰ: UTS 46 maps it to U+13A0"),
        ("x\u17b4", "UTS 46 ignores U+17B4, nameprep keeps it"),
        ("x\ufe0f", "a variation selector"),
        ("\u2122", "™: both map it to 'tm', so the key is not what it seems"),
        ("\uff41", "fullwidth a"),
        ("a\u0301", "not NFC (á decomposed)"),
        ("x\u03a3", "final sigma: lower() gives ς, nameprep σ"),
    ],
)
def test_labels_clients_encode_differently_are_refused(label: str, why: str) -> None:
    with pytest.raises(HostError, match="not in the form|A-label"):
        normalize_host(label + ".example")


@needs_idna
@pytest.mark.parametrize(
    ("u_label", "a_label"),
    [
        ("bücher", "xn--bcher-kva"),
        ("BÜCHER", "xn--bcher-kva"),
        ("münchen", "xn--mnchen-3ya"),
        ("пример", "xn--e1afmkfd"),
        ("例え", "xn--r8jz45g"),
        ("\u2c30", "xn--tej"),  # Glagolitic (Unicode 4.1, after nameprep's 3.2): sent alike
        ("\u2c00", "xn--tej"),  # its capital: nameprep lower-cases with today's data
    ],
)
def test_common_u_labels_still_work(u_label: str, a_label: str) -> None:
    assert normalize_host(f"{u_label}.example") == f"{a_label}.example"
    assert {a for a in _client_a_labels(u_label).values() if a is not None} == {a_label}


@pytest.mark.parametrize(
    ("a_label", "problem"),
    [
        ("xn---u8xia8m", "not the canonical A-label"),  # decodes as xn--u8xia8m does
        ("xn--bcher-2pa", "not a label IDNA 2003 and IDNA 2008"),  # "bÜcher": upper case
        ("xn--kkg", "not a label IDNA 2003 and IDNA 2008"),  # "ẞ"
        ("xn--zz", "bad punycode"),
        ("xn--", "not a valid A-label"),
        ("xn--abc-", "not a valid A-label"),
        ("xn--abc", "not a label IDNA 2003"),  # decodes to C1 controls
    ],
)
def test_a_labels_must_round_trip(a_label: str, problem: str) -> None:
    with pytest.raises(HostError, match=problem):
        normalize_host(f"{a_label}.example")


@pytest.mark.parametrize("a_label", ["xn--fa-hia", "xn--u8xia8m", "xn--bcher-kva", "xn--n3h"])
def test_canonical_a_labels_are_accepted(a_label: str) -> None:
    assert normalize_host(a_label.upper() + ".example") == a_label + ".example"


@given(st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), max_size=70))
@settings(max_examples=2000, deadline=None)
def test_any_a_label_text_raises_only_host_error(rest: str) -> None:
    try:
        result = normalize_host(f"xn--{rest}.example")
    except HostError:
        return
    # accepted: the U-label it encodes normalises back to it (deviation characters aside)
    decoded = result.split(".")[0][4:].encode("ascii").decode("punycode")
    if not set(decoded) & set("\u00df\u03c2\u200c\u200d"):
        assert normalize_host(decoded + ".example") == result


@pytest.mark.parametrize("dot", ["\u3002", "\uff0e", "\uff61"])
def test_idna_dots_separate_labels(dot: str) -> None:
    # IDNA 2003 and UTS 46 both split on them; so do ssl and requests
    assert normalize_host(f"bücher{dot}example") == "xn--bcher-kva.example"
    assert f"bücher{dot}example".encode("idna") == b"xn--bcher-kva.example"


def test_long_input_is_refused_before_any_work() -> None:
    with pytest.raises(HostError, match="longer than 253"):
        normalize_host("a" * 100_000)
    with pytest.raises(HostError, match="longer than 253"):
        normalize_host("ü" * 100_000)


def test_an_a_label_that_encodes_a_label_separator_is_refused() -> None:
    # Found by test_any_a_label_text_raises_only_host_error: "xn--q6jb0a" decodes to "》。、",
    # and IDNA 2003 / UTS 46 split on "。" (so the name is two labels to every client).
    assert "\u3002" in b"q6jb0a".decode("punycode")
    with pytest.raises(HostError, match="not a label IDNA 2003 and IDNA 2008"):
        normalize_host("xn--q6jb0a.example")
    assert normalize_host("xn--bcher-kva.example") == "xn--bcher-kva.example"  # the twin
