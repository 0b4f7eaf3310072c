"""What every format module shares: result types, the loss report, and small mapping helpers.

Exporters never drop a feature silently: whatever the target cannot express is added to the
result's ``warnings`` (the CLI prints them, ``--strict`` turns them into a failure). Importers
report what they had to translate the same way.

The public names among these (the result and option types, `FormatError`) are exported by
`certpin.formats`; the format modules use the rest as ``common.<name>``.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from certpin._errors import ConfigurationError, PinFormatError, PolicyError
from certpin._version import __version__
from certpin.core.hosts import (
    HostError,
    HostPattern,
    PatternKind,
    normalize_host,
)
from certpin.core.pins import Pin, PinKind
from certpin.core.policy import DomainRule, Policy, is_report_uri
from certpin.core.times import day, instant, parse_day

#: The default size cap of an imported file: the configurations these formats hold are a few
#: kilobytes; 1 MiB leaves room for whole app manifests and Info.plists. Each format's cap is
#: `Format.max_bytes` (docs/formats.md lists them).
MAX_BYTES = 1024 * 1024


class FormatError(ConfigurationError):
    """An input file in a foreign format is invalid, or an export cannot be produced.

    Attributes:
        source: the file name.
        location: where in the file: ``line 12``, ``line 3, column 5``, or a key path.
        problem: what is wrong.
    """

    def __init__(self, problem: str, *, source: str = "<input>", location: str = "") -> None:
        self.source = source
        self.location = location
        self.problem = problem
        where = f"{source}: {location}" if location else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ExportOptions:
    """Options of `Format.export`.

    Attributes:
        okhttp: the OkHttp major version the code targets (3 knows ``*.`` but not ``**.``).
        certs: DER CA certificates to carry (``mobileconfig`` only).
        identifier: the profile's PayloadIdentifier prefix (``mobileconfig`` only).
    """

    okhttp: int = 4
    certs: tuple[bytes, ...] = ()
    identifier: str = "org.certpin.anchors"


@dataclass(frozen=True)
class ImportOptions:
    """Options of `Format.import_`.

    Attributes:
        domain: the host the imported pins are for, where the file does not say
            (``mobileconfig``; ``hpkp`` headers without a ``# host:`` line).
        today: the date an import judges expiry against ("this pin-set has expired: the
            platform no longer enforces it"). If None, the current UTC date.
    """

    domain: str | None = None
    today: dt.date | None = None


@dataclass(frozen=True)
class ExportResult:
    """The exported text and what it could not express (one line each)."""

    text: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportResult:
    """The imported policy and what had to be translated or left out (one line each)."""

    policy: Policy
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Format:
    """One foreign format: its name, a description, its exporter and importer, and the size
    cap of an imported file (the importer refuses a larger input with a FormatError)."""

    name: str
    description: str
    export: Callable[[Policy, ExportOptions], ExportResult]
    import_: Callable[[bytes, str, ImportOptions], ImportResult]
    max_bytes: int = MAX_BYTES


@dataclass
class Notes:
    """Collects warnings, each prefixed with where it applies (each distinct line once)."""

    items: list[str] = field(default_factory=list)
    # A set beside the list: an import can warn once per rule, and searching the list for
    # duplicates made that quadratic.
    _seen: set[str] = field(default_factory=set, repr=False)

    def warn(self, where: str, message: str) -> None:
        line = f"{where}: {message}" if where else message
        if line not in self._seen:
            self._seen.add(line)
            self.items.append(line)

    def result(self, text: str) -> ExportResult:
        return ExportResult(text, tuple(self.items))


# -- export helpers -------------------------------------------------------------------------------


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def one_line(text: str) -> str:
    """`text` with every control, format and line/paragraph-separator character (Unicode
    ``Cc``, ``Cf``, ``Zl``, ``Zp``; unassigned and private-use too) replaced by ``?``: safe in a
    one-line comment of a line-based format (TOML, shell) whatever it came from."""
    return "".join("?" if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text)


def comment_safe(text: str) -> str:
    r"""`text` made inert inside a comment of every export format (shell ``#``, Java/Kotlin
    ``//``, XML ``<!-- -->``), and inside a plist string.

    The policy's file name is attacker-controlled as far as an export is concerned (a build job
    exporting a checked-out file), so:

    * control, format and line/paragraph-separator characters become ``?``: a newline would end
      a ``#``/``//`` comment and run the rest as code (Unicode ``Cc``/``Cf``/``Zl``/``Zp``,
      U+0085 NEL among them);
    * ``\`` becomes ``?``: Java translates ``\u000a`` into a newline *before* it sees
      comments (JLS §3.3), so a ``\u`` escape ends a ``//`` comment too;
    * ``*/`` and ``/*`` are broken up (block comments; Kotlin nests them);
    * ``--`` is broken up until none is left (XML 1.0 §2.5: ``--`` must not occur in a
      comment) and a trailing ``-`` is padded, so ``-->`` cannot be formed.
    """
    safe = one_line(text).replace("\\", "?").replace("*/", "* /").replace("/*", "/ *")
    while "--" in safe:
        safe = safe.replace("--", "- -")
    return safe + " " if safe.endswith("-") else safe


def header_lines(policy: Policy, fmt: str) -> list[str]:
    """Comment lines for the top of an export (deterministic: no timestamp).

    Every line goes through `comment_safe`: the policy's file name is not trusted.
    """
    lines = [comment_safe(f"Generated by certpin {__version__} ({fmt}) from {policy.source}.")]
    if policy.version is not None:
        lines.append(f"certpin policy version: {policy.version}")
    lines.append("Edit the certpin policy and export again rather than editing this file.")
    return lines


_VERSION_COMMENT = re.compile(r"certpin policy version:[ \t]*([0-9]+)")
_MAX_VERSION_DIGITS = 18  # fits a signed 64-bit integer; int() refuses over 4300 digits anyway


def version_from_comment(text: str, source: str) -> int | None:
    """The policy version an export wrote into its header comment, if any."""
    m = _VERSION_COMMENT.search(text)
    if m is None:
        return None
    if len(m.group(1)) > _MAX_VERSION_DIGITS:
        raise FormatError(
            f"the policy version in the certpin header comment has {len(m.group(1))} digits "
            f"(at most {_MAX_VERSION_DIGITS})",
            source=source,
            location=f"line {text.count(chr(10), 0, m.start()) + 1}",
        )
    return int(m.group(1))


#: RFC 3986 §2: the characters a URI may hold (anything else must be percent-encoded).
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def checked_uri(uri: str, policy: Policy, rule: DomainRule, fmt: str) -> str:
    """`uri` if it is a plain RFC 3986 URI; else a FormatError naming the rule.

    A quote, space, backslash or control character would break out of the quoted string or
    line it is written into (an HPKP header, a plist string); a real URI never holds one.
    """
    if not _URI.fullmatch(uri):
        raise FormatError(
            f"report URI {uri!r} is not a valid URI (RFC 3986: quotes, spaces, backslashes and "
            f"control characters must be percent-encoded); {fmt} cannot carry it",
            source=policy.source,
            location=f"domains.{rule.pattern}.report_uris",
        )
    return uri


def policy_notes(policy: Policy, notes: Notes, fmt: str) -> None:
    """Warnings about policy-wide settings no foreign format has."""
    if policy.unpinned_hosts == "deny":
        notes.warn(
            "policy",
            f'unpinned_hosts = "deny" cannot be expressed in {fmt}: hosts without a rule will '
            "be allowed with CA validation only",
        )


def sha256_spki(pins: Iterable[Pin], where: str, notes: Notes, fmt: str) -> list[Pin]:
    """The SHA-256 SPKI pins of `pins`; every other pin is reported and left out."""
    out: list[Pin] = []
    for pin in pins:
        if pin.kind is PinKind.SPKI and pin.algorithm == "sha256":
            if pin not in out:
                out.append(pin)
        else:
            notes.warn(where, f"pin {pin} left out: {fmt} only takes SHA-256 public-key pins")
    return out


def any_position_pins(rule: DomainRule, notes: Notes, fmt: str) -> list[Pin]:
    """All pins of a rule as one list any certificate of the chain may match.

    certpin requires *each* non-empty slot (pins, leaf_pins, ca_pins) to match; formats with a
    single pin list accept any one pin anywhere in the chain, which is weaker: say so. Empty
    when no pin can be expressed, and then the rule is reported as left out (`no_pins_note`).
    """
    slots = [name for name in ("leaf_pins", "ca_pins") if getattr(rule, name)]
    if slots:
        notes.warn(
            rule.pattern,
            f"{' and '.join(slots)} cannot be expressed in {fmt}: exported into its single pin "
            "list, which any certificate of the chain may match (weaker than certpin, which "
            "requires a leaf pin to match the leaf and a CA pin to match a CA)",
        )
    pins = sha256_spki(rule.pins + rule.leaf_pins + rule.ca_pins, rule.pattern, notes, fmt)
    if not pins:
        no_pins_note(rule, notes, fmt)
    return pins


def no_pins_note(rule: DomainRule, notes: Notes, fmt: str) -> None:
    """Report a rule the export leaves out because none of its pins can be expressed."""
    notes.warn(rule.pattern, f"left out: no pin {fmt} can express")


def expiry_date(rule: DomainRule, notes: Notes, fmt: str) -> str | None:
    """``YYYY-MM-DD`` for a rule's expiry (formats that take a date mean 00:00Z of that day)."""
    if rule.expires is None:
        return None
    when = rule.expires.astimezone(dt.UTC)
    if when.time() != dt.time(0, 0):
        notes.warn(
            rule.pattern,
            f"expires {instant(when)} rounded down to {day(when)}: {fmt} only "
            "takes a date (the pins stop being enforced a little earlier)",
        )
    return day(when)


def no_expiry_note(rule: DomainRule, notes: Notes, fmt: str) -> None:
    if rule.expires is not None:
        notes.warn(
            rule.pattern,
            f"expires {day(rule.expires)} cannot be expressed in {fmt}: these pins "
            "never expire there, so ship a new configuration before the date",
        )


def no_report_note(rule: DomainRule, notes: Notes, fmt: str) -> None:
    if rule.report_uris:
        notes.warn(rule.pattern, f"report_uris cannot be expressed in {fmt}: left out")


def skip_report_only(rule: DomainRule, notes: Notes, fmt: str) -> bool:
    """True (and a warning) for a report-only rule in a format that can only enforce."""
    if rule.enforce:
        return False
    notes.warn(
        rule.pattern,
        f"report-only rule (enforce = false) left out: {fmt} has no report-only mode, and "
        "exporting it would enforce pins that were only meant to be observed",
    )
    return True


@dataclass(frozen=True)
class HostEntry:
    """A rule mapped onto a format whose keys are host names with an include-subdomains flag."""

    host: str
    include_subdomains: bool
    rule: DomainRule


_PRIORITY = {PatternKind.EXACT: 0, PatternKind.ANY_LABELS: 1, PatternKind.ONE_LABEL: 2}


def host_entries(policy: Policy, notes: Notes, fmt: str) -> list[HostEntry]:
    """Map each rule to (host, include_subdomains), in policy order.

    ``**.b`` is exactly ``b`` with include_subdomains. ``*.b`` (one label) has no equivalent: it
    becomes ``b`` with include_subdomains, which also pins ``b`` and deeper names (warned).
    When two rules land on the same host, the more specific one wins and the other is reported.
    """
    chosen: dict[str, HostEntry] = {}
    ordered = sorted(
        policy.domains.values(), key=lambda r: _PRIORITY[HostPattern.parse(r.pattern).kind]
    )
    for rule in ordered:
        pattern = HostPattern.parse(rule.pattern)
        if pattern.kind is PatternKind.EXACT:
            entry = HostEntry(pattern.base, rule.include_subdomains, rule)
        else:
            entry = HostEntry(pattern.base, True, rule)
        if pattern.base in chosen:
            notes.warn(
                rule.pattern,
                f"left out: {fmt} keys are host names, and {pattern.base!r} is already taken by "
                f"the more specific rule {chosen[pattern.base].rule.pattern!r}",
            )
            continue
        if pattern.kind is PatternKind.ONE_LABEL:
            notes.warn(
                rule.pattern,
                f"{fmt} has no one-label wildcard: exported as {pattern.base!r} with subdomains "
                f"included, which also pins {pattern.base!r} itself and deeper names (wider)",
            )
        chosen[pattern.base] = entry
    order = {key: i for i, key in enumerate(policy.domains)}
    return sorted(chosen.values(), key=lambda e: order[e.rule.pattern])


def xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


# -- import helpers -------------------------------------------------------------------------------
#
# Everything an importer reads is untrusted. Error messages quote it only through `clip` and
# `describe`, which look at a bounded prefix: formatting a whole value (a repr) costs what the
# value expands to, and a binary plist of shared references expands to 2**60 leaves.

_CLIP = 60


def clip(text: str, limit: int = _CLIP) -> str:
    """`text` quoted for an error message (repr: control characters escaped), cut after `limit`
    characters with its length said."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def clip_message(text: str, limit: int = 300) -> str:
    """A message from a library (a pin or host parser, plistlib) that may quote its input."""
    return text if len(text) <= limit else text[:limit] + "…"


def check_size(data: bytes, source: str, cap: int) -> None:
    """A FormatError naming `source` and `cap` if `data` is larger than `cap` bytes."""
    if len(data) > cap:
        raise FormatError(
            f"more than {cap} bytes: over the import cap of {cap} bytes for this format "
            "(docs/formats.md)",
            source=source,
        )


def check_text(data: bytes, source: str, cap: int) -> str:
    """`data` as UTF-8 text, or a FormatError naming `source` (over `cap` bytes, not UTF-8)."""
    check_size(data, source, cap)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 text ({exc.reason})", source=source) from None


class LineCounter:
    """Line numbers of positions in `text`, for positions asked in increasing order: counts
    the newlines since the last position asked, so numbering every match of a scan stays
    linear (counting from the start each time was quadratic)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line = 1

    def line(self, pos: int) -> int:
        if pos < self._pos:  # out of order: count from the start (only on error paths)
            return self._text.count("\n", 0, pos) + 1
        self._line += self._text.count("\n", self._pos, pos)
        self._pos = pos
        return self._line


def parse_pin(text: str, source: str, location: str) -> Pin:
    try:
        return Pin.parse(text)
    except PinFormatError as exc:
        raise FormatError(clip_message(str(exc)), source=source, location=location) from None


def check_host(text: str, source: str, location: str, *, pattern: bool = False) -> str:
    """A normalised host (or certpin pattern), or a FormatError naming where it was."""
    try:
        return HostPattern.parse(text).text if pattern else normalize_host(text)
    except HostError as exc:
        raise FormatError(
            f"invalid host: {clip_message(str(exc))}", source=source, location=location
        ) from None


def check_report_uri(text: str, source: str, location: str) -> str:
    """`text` if it is a report URI a policy accepts (the policy's own rule), else a FormatError
    naming where it was read (the policy would only name the rule)."""
    if not is_report_uri(text):
        raise FormatError(
            f"report URI {clip(text)} is not an http(s) URL (RFC 3986: no spaces, quotes or "
            "control characters)",
            source=source,
            location=location,
        )
    return text


def parse_date(text: str, source: str, location: str) -> str:
    try:
        parse_day(text)
    except ValueError:
        raise FormatError(
            f"invalid date {clip(text)}: expected YYYY-MM-DD", source=source, location=location
        ) from None
    return text


def build_policy(
    domains: Mapping[str, dict[str, Any]],
    source: str,
    notes: Notes,
    version: int | None = None,
    *,
    where: Mapping[str, str] | None = None,
) -> ImportResult:
    """Validate imported rules into a Policy, marking single-pin rules (warned).

    Also warns about pins no key can have (`pin_hazards`). `where` maps a rule key to where it
    was read (``nsc.xml: line 4``) for those warnings; by default they name the key.
    """
    from certpin.formats._lenient import pin_hazards  # _lenient builds on this module

    pin_hazards(domains, notes, where or {})
    doc: dict[str, Any] = {"domains": {}}
    if version is not None:
        doc["version"] = version
    for key, body in domains.items():
        body = {k: v for k, v in body.items() if v not in (None, [], ())}
        # certpin wants a backup in every slot a rule uses (a spare key to rotate to).
        thin = [s for s in ("pins", "leaf_pins", "ca_pins") if 0 < len(set(body.get(s, []))) < 2]
        if thin and body.get("enforce", True):
            body["allow_single_pin"] = True
            notes.warn(
                key,
                f"only one pin in {', '.join(thin)} (no backup key): imported with "
                "allow_single_pin = true; add a backup pin before the next rotation",
            )
        doc["domains"][key] = body
    try:
        policy = Policy.from_dict(doc, source=source)
    except PolicyError as exc:
        # The rules were built from the file: what the policy refuses (a rule without pins, a
        # report URI that is not one) is a problem of the file, so it is the importer's error.
        raise FormatError(
            clip_message(exc.problem), source=source, location=exc.location or "the policy"
        ) from None
    return ImportResult(policy, tuple(notes.items))


# -- property lists -------------------------------------------------------------------------------


def dump_plist(value: Mapping[str, Any], comments: list[str]) -> str:
    """An XML property list with `comments` as XML comments after the DOCTYPE."""
    import plistlib

    text = plistlib.dumps(dict(value), fmt=plistlib.FMT_XML, sort_keys=False).decode("utf-8")
    head, sep, rest = text.partition("<plist")
    block = "".join(f"<!-- {comment_safe(xml_escape(c))} -->\n" for c in comments)
    return head + block + sep + rest
