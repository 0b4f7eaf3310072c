"""What the platforms accept that certpin's own notations do not: shared by every importer.

certpin's rule for imports (docs/formats.md): where the platform loads a file, ``certpin
import`` loads it too, with the platform's meaning, and warns about everything odd. This
module holds the pieces every importer needs for that:

* `platform_pin`: a base64 SHA-256 digest decoded the way the platform's decoder does it
  (each is more lenient than `certpin.core.pins.Pin.parse`, which insists on one canonical
  spelling per pin), with a warning when the text is not canonical;
* `placeholder_reason`: pins no real key can have (apps ship them to satisfy a two-pin rule);
* `did_you_mean`: the suggestion for a misspelled key, attribute or element;
* `unmatchable_domain`: a configured domain no TLS host name can ever equal;
* `expired`: whether a pin-set's expiry date has passed (the platform no longer enforces it).

The decoders below are written from the platforms' documented behaviour and sources (facts,
not code): every one of them is a single pass over its input.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from certpin._errors import PinFormatError
from certpin.core.hosts import HostError, registrable_domain
from certpin.core.pins import Pin
from certpin.formats._common import FormatError, ImportOptions, Notes, clip

__all__ = [
    "PLATFORMS",
    "did_you_mean",
    "expired",
    "pin_hazards",
    "placeholder_reason",
    "platform_pin",
    "unmatchable_domain",
]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_OKIO_EXTRA = {"-": 62, "_": 63}
_OKIO_SPACE = frozenset("\n\r \t")

#: platform name -> how it is named in messages, and what it does with a digest of the wrong
#: length.
PLATFORMS: dict[str, tuple[str, str]] = {
    "android": ("Android (android.util.Base64)", "Android rejects the file"),
    "okhttp": ("OkHttp (okio decodeBase64)", "OkHttp loads it, but it can never match a key"),
    "apple": ("Apple (NSData base64)", "no key can ever match it"),
    "trustkit": ("TrustKit (NSData base64)", "TrustKit refuses the configuration"),
}


def _android(text: str) -> bytes:
    """android.util.Base64.decode(text, DEFAULT): a state machine over the bytes of the text.

    Characters outside the alphabet and ``=`` (whitespace, ``-``, ``_``, non-ASCII) are skipped;
    the unused low bits of a final partial group are dropped; padding may be missing, but a
    group of one character, a single ``=`` after two characters, ``=`` at the start of a group
    and anything but skipped characters after the padding are refused.
    """
    out = bytearray()
    state = 0
    value = 0
    for ch in text:
        d = _VALUE.get(ch)
        if d is None and ch != "=":
            continue  # SKIP
        if state in (0, 1):
            if d is None:
                raise ValueError("'=' where a base64 digit is expected")
            value = (value << 6) | d
            state += 1
        elif state == 2:
            if d is None:
                out.append((value >> 4) & 0xFF)
                state = 4
            else:
                value = (value << 6) | d
                state = 3
        elif state == 3:
            if d is None:
                out += bytes(((value >> 10) & 0xFF, (value >> 2) & 0xFF))
                state = 5
            else:
                value = (value << 6) | d
                out += bytes(((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF))
                value = 0
                state = 0
        elif state == 4:
            if d is not None:
                raise ValueError("one '=' where two are needed")
            state = 5
        else:
            raise ValueError("text after the '=' padding")
    if state == 1:
        raise ValueError("a single base64 digit at the end")
    if state == 2:
        out.append((value >> 4) & 0xFF)
    elif state == 3:
        out += bytes(((value >> 10) & 0xFF, (value >> 2) & 0xFF))
    elif state == 4:
        raise ValueError("one '=' where two are needed")
    return bytes(out)


def _okio(text: str) -> bytes:
    """okio's ``String.decodeBase64()`` (what OkHttp's CertificatePinner calls).

    Trailing ``=``, spaces, tabs and newlines are dropped; inside, spaces, tabs and newlines are
    skipped and both alphabets are read (``+``/``-`` is 62, ``/``/``_`` is 63); any other
    character, ``=`` included, is refused, and so is a final group of one character. The unused
    low bits of a final partial group are dropped.
    """
    limit = len(text)
    while limit > 0 and (text[limit - 1] == "=" or text[limit - 1] in _OKIO_SPACE):
        limit -= 1
    out = bytearray()
    word = 0
    count = 0
    for ch in text[:limit]:
        bits = _VALUE.get(ch)
        if bits is None:
            bits = _OKIO_EXTRA.get(ch)
        if bits is None:
            if ch in _OKIO_SPACE:
                continue
            raise ValueError(f"the character {ch!r} is not base64")
        word = (word << 6) | bits
        count += 1
        if count % 4 == 0:
            out += bytes(((word >> 16) & 0xFF, (word >> 8) & 0xFF, word & 0xFF))
            word = 0
    slop = count % 4
    if slop == 1:
        raise ValueError("a single base64 digit at the end")
    if slop == 2:
        out.append((word >> 4) & 0xFF)
    elif slop == 3:
        out += bytes(((word >> 10) & 0xFF, (word >> 2) & 0xFF))
    return bytes(out)


def _apple(text: str) -> bytes:
    """NSData ``initWithBase64EncodedString:options:0``: the standard alphabet only (no
    whitespace: that needs the IgnoreUnknownCharacters option, which neither ATS nor TrustKit
    passes), padded to a multiple of four characters; the unused low bits of the last group
    are dropped."""
    if len(text) % 4:
        raise ValueError("the length is not a multiple of 4 (padding missing)")
    body = text.rstrip("=")
    pad = len(text) - len(body)
    if pad > 2:
        raise ValueError("more than two '=' of padding")
    out = bytearray()
    word = 0
    for i, ch in enumerate(body):
        bits = _VALUE.get(ch)
        if bits is None:
            raise ValueError(f"the character {ch!r} is not base64")
        word = (word << 6) | bits
        if i % 4 == 3:
            out += bytes(((word >> 16) & 0xFF, (word >> 8) & 0xFF, word & 0xFF))
            word = 0
    if pad == 2:
        out.append((word >> 4) & 0xFF)
    elif pad == 1:
        out += bytes(((word >> 10) & 0xFF, (word >> 2) & 0xFF))
    return bytes(out)


_DECODERS = {"android": _android, "okhttp": _okio, "apple": _apple, "trustkit": _apple}


def platform_pin(
    text: str, *, platform: str, notes: Notes, where: str, source: str, location: str
) -> Pin:
    """A SHA-256 SPKI pin decoded from base64 the way `platform`'s decoder does.

    Args:
        text: the base64 digest alone, as the platform hands it to its decoder (the caller
            strips what the platform strips first: Android trims the element text; OkHttp
            removes the ``sha256/`` prefix).
        platform: ``"android"`` (android.util.Base64, DEFAULT flags: NSC and TrustKit-Android),
            ``"okhttp"`` (okio decodeBase64), ``"apple"`` (NSData, ATS NSPinnedDomains) or
            ``"trustkit"`` (TrustKit iOS: NSData too).
        notes: where the warning goes when `text` is not the canonical base64 of the digest it
            decodes to (stray bits, missing padding, skipped characters): it names the offending
            text and the canonical pin that is imported.
        where: the prefix of that warning (``file: line 12``, a key path).
        source, location: the FormatError's file and place.

    Returns:
        The pin the platform enforces.

    Raises:
        FormatError: the platform's decoder refuses `text`, or it decodes to anything but 32
            bytes (what the platform does then is in the message).
        ValueError: `platform` is not one of the names above (a programming error).
    """
    decoder = _DECODERS.get(platform)
    if decoder is None:
        raise ValueError(f"unknown platform {platform!r}: expected one of {sorted(_DECODERS)}")
    name, wrong_length = PLATFORMS[platform]
    try:
        digest = decoder(text)
    except ValueError as exc:  # the platform's decoder refuses the text (why)
        raise FormatError(
            f"pin {clip(text)} is not base64 as {name} reads it ({exc}): the platform rejects it",
            source=source,
            location=location,
        ) from None
    if len(digest) != 32:
        raise FormatError(
            f"pin {clip(text)} decodes to {len(digest)} bytes, but a SHA-256 digest has 32 "
            f"({wrong_length})",
            source=source,
            location=location,
        )
    pin = Pin(digest)
    if pin.base64 != text:
        notes.warn(
            where,
            f"pin {clip(text)} is not canonical base64; {name} reads it as {pin.base64}, "
            f"imported as {pin}",
        )
    return pin


# -- placeholders ---------------------------------------------------------------------------------

#: SHA-256 of zero bytes: what hashing an empty or missing key file gives.
_EMPTY = hashlib.sha256(b"").digest()
#: A real SHA-256 digest repeats a short pattern, or holds a long run of consecutive alphabet
#: characters, with probability below 2**-60 (a run of 12 in 43 characters: 32 * 64**-11);
#: placeholders typed by hand do both.
_MAX_PERIOD_CHARS = 16
_MAX_PERIOD_BYTES = 16
_RUN = 12
_ORDERS = (_ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NEXT = [{c: order[(i + 1) % len(order)] for i, c in enumerate(order)} for order in _ORDERS]


def _period(seq: str | bytes, limit: int) -> int | None:
    for p in range(1, limit + 1):
        if seq[p:] == seq[:-p]:
            return p
    return None


def _has_run(chars: str) -> bool:
    for succ in _NEXT:
        run = 1
        for a, b in zip(chars, chars[1:], strict=False):
            run = run + 1 if succ.get(a) == b else 1
            if run >= _RUN:
                return True
    return False


def placeholder_reason(pin: Pin) -> str | None:
    """Why no real key can have this pin, or None.

    Recognised: the SHA-256 of empty input, all-zero bytes, one repeated byte or character, a
    short pattern repeated (``ABCDABCD…``, ``0123…0123…`` in hex), and a run of consecutive
    characters (``ABCDEFGH…``, ``0123456789…``). Only the first 42 base64 characters count (the
    43rd holds unused bits, the 44th is padding). A digest of a real key has each of these
    shapes with a probability below 2**-60.
    """
    digest = pin.digest
    if digest == _EMPTY and pin.algorithm == "sha256":
        return "the SHA-256 of empty input"
    if not any(digest):
        return "all zero bytes"
    text = pin.base64.rstrip("=")[: (len(digest) * 8) // 6]
    if len(set(text)) == 1:
        return f"one repeated character ({text[0]!r})"
    if len(set(digest)) == 1:
        return f"one repeated byte (0x{digest[0]:02x})"
    if _has_run(text):
        return "a sequence of consecutive characters (ABCDEF…)"
    period = _period(text, _MAX_PERIOD_CHARS)
    if period is not None:
        return f"a short pattern repeated ({text[:period]!r}…)"
    period = _period(digest, _MAX_PERIOD_BYTES)
    if period is not None:
        return f"a short byte pattern repeated ({digest[:period].hex()}…)"
    if len(set(digest[i + 1] - digest[i] for i in range(len(digest) - 1))) == 1:
        return "a sequence of consecutive bytes"
    return None


# -- names ----------------------------------------------------------------------------------------


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """``' (did you mean "X"?)'`` for the known name closest to `word` (case-insensitive), or
    ``''`` when none is close (or `word` is itself known)."""
    names = list(known)
    if word in names:
        return ""
    lowered: dict[str, str] = {}
    for name in names:
        lowered.setdefault(name.lower(), name)
    # Bounded: a name from a hostile file may be long, and difflib is quadratic in it.
    probe = word[:80].lower()
    match = difflib.get_close_matches(probe, list(lowered), n=1, cutoff=0.75)
    return f' (did you mean "{lowered[match[0]]}"?)' if match else ""


# -- domains --------------------------------------------------------------------------------------

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def unmatchable_domain(text: str) -> str | None:
    """Why a configured domain can never equal a TLS host name, or None when it can.

    `text` is the domain as the platform compares it (Android: after trimming the element
    text; Apple: the dictionary key as written). Case does not matter to any platform.
    Reasons: empty, whitespace anywhere, a scheme (``https://``), a path or trailing ``/``, a
    port (``:443``), a wildcard ``*`` (no platform's domain list takes one: they have an
    include-subdomains flag), a leading or trailing dot or an empty label, any other
    character a host name cannot hold. An IP address literal can match.
    """
    if not text:
        return "it is empty"
    if any(ch.isspace() for ch in text):
        return "it contains whitespace"
    if "://" in text:
        return f"it has a scheme ({text.split('://', 1)[0][:20]}://): a domain is a host name"
    if "/" in text:
        return "it has a path or a trailing '/': a domain is a host name"
    try:
        ipaddress.ip_address(text.strip("[]") if text.startswith("[") else text)
    except ValueError:
        pass
    else:
        return "it is an IPv6 address in brackets" if text.startswith("[") else None
    if ":" in text:
        return "it has a port (':…'): a domain is a host name, ports are not part of it"
    if "*" in text:
        return "it has a wildcard '*': domains are literal names (use include-subdomains)"
    bad = next((ch for ch in text if ch not in _HOST_CHARS), None)
    if bad is not None:
        return f"it contains {bad!r}, which no host name has (IDNs are written as xn--…)"
    if text.endswith("."):
        return "it ends with '.' (host names are compared without the trailing dot)"
    if text.startswith(".") or ".." in text:
        return "it has an empty label ('.' at the start or '..')"
    return None


# -- expiry ---------------------------------------------------------------------------------------


def expired(date: dt.date, options: ImportOptions) -> bool:
    """True when the pin-set's expiry `date` is on or before the import's today
    (`ImportOptions.today`, default the current UTC date): the platform no longer enforces
    it. Android stops at midnight (device time) starting the expiry date, TrustKit at
    00:00Z of it, as certpin does: on that day itself the pins are no longer enforced."""
    today = options.today if options.today is not None else dt.datetime.now(dt.UTC).date()
    return date <= today


def pin_hazards(
    domains: Mapping[str, Mapping[str, Any]], notes: Notes, where: Mapping[str, str]
) -> None:
    """Warn about imported pins that cannot be what they look like.

    * A placeholder (`certpin.formats._lenient.placeholder_reason`: the SHA-256 of empty input,
      one repeated character, an ABCDEF… sequence): apps ship them to satisfy a two-pin rule,
      but no key has them, so they are no backup (``certpin lint`` rule CP109).

    * The same pin on unrelated hosts (different registrable domains) where it is one of only
      two real pins of a rule: the second pin that passes a two-pin rule, copied from another
      host. If it is that host's leaf key, this host's server never presents it and it is no
      backup. A shared CA key is legitimate, which only the chains can tell: the warning says
      so, and ``certpin lint --live`` decides (CP209). Hosts of one registrable domain sharing
      pins (api.example.com, www.example.com) are not warned.
    """
    sites = _pin_sites(domains)
    for key, body in domains.items():
        at = where.get(key, key)
        name = "" if at == key else f"{key}: "
        distinct = list(
            dict.fromkeys(
                str(p) for s in ("pins", "leaf_pins", "ca_pins") for p in body.get(s) or ()
            )
        )
        duds = []
        for text in distinct:
            try:
                pin = Pin.parse(text)
            except PinFormatError:
                continue  # the policy loader names it
            reason = placeholder_reason(pin)
            if reason is not None:
                duds.append(text)
                notes.warn(
                    at,
                    f"{name}pin {text} is a placeholder ({reason}): no key can have it, so it "
                    "is no backup (certpin lint CP109)",
                )
        real = len(distinct) - len(duds)
        if real == 2:
            _shared_with_unrelated(key, at, name, distinct, sites, notes)
        if duds and real <= 1 and body.get("enforce", True) is not False:
            notes.warn(
                at,
                f"{name}{'no real pin' if real == 0 else 'one real pin'} besides "
                f"{len(duds)} placeholder(s): "
                + (
                    "every connection fails (nothing can match)"
                    if real == 0
                    else "there is no backup key: losing or rotating it locks every client out"
                ),
            )


def _pin_sites(domains: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """pin text -> {registrable domain: the first key of it that has the pin} (one pass)."""
    sites: dict[str, dict[str, str]] = {}
    for key, body in domains.items():
        try:
            site = registrable_domain(key)
        except HostError:
            continue  # the policy loader names the key
        for slot in ("pins", "leaf_pins", "ca_pins"):
            for pin in body.get(slot) or ():
                sites.setdefault(str(pin), {}).setdefault(site, key)
    return sites


def _shared_with_unrelated(
    key: str, at: str, name: str, pins: list[str], sites: dict[str, dict[str, str]], notes: Notes
) -> None:
    try:
        own = registrable_domain(key)
    except HostError:
        return
    for text in pins:
        others: list[str] = []
        for site, first in sites.get(text, {}).items():  # stops at 4: linear in the rules
            if site != own:
                others.append(first)
                if len(others) == 4:
                    break
        if others:
            shown = ", ".join(others[:3]) + (" and more" if len(others) > 3 else "")
            notes.warn(
                at,
                f"{name}pin {text} is also pinned for unrelated host(s) {shown}: with only two "
                "pins, if it is that host's own key this server never presents it and it is no "
                "backup (a pin copied between hosts to pass the two-pin rule); a shared CA key "
                "is fine (certpin lint --live checks it, CP209)",
            )
