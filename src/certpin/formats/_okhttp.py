"""OkHttp ``CertificatePinner`` code, in Kotlin or Java.

Mapping (certpin -> OkHttp)::

    key "api.example.com"        .add("api.example.com", …)
    include_subdomains = true    OkHttp 4: .add("**.api.example.com", …) (same meaning)
                                 OkHttp 3: "api.example.com" and "*.api.example.com" (narrower)
    key "*.example.com"          "*.example.com" (same meaning)
    key "**.example.com"         OkHttp 4: "**.example.com"; OkHttp 3: "example.com" and
                                 "*.example.com" (OkHttp 3 has no "**.": narrower, warned)
    pins                         "sha256/…" pins, any certificate of the chain (exact)
    leaf_pins / ca_pins          folded into the same list (weaker: warned)
    expires, report_uris         not expressible (warned)
    enforce = false              rule left out (warned: OkHttp has no report-only mode)

**Rule precedence differs.** OkHttp accepts a chain when it matches a pin of *any* pattern that
matches the host (it unions them); certpin applies the most specific rule alone. So:

* on export, a narrower rule whose hosts also match a broader pattern gets that pattern's pins
  too under OkHttp (weaker): every such host is reported;
* on import, certpin rules are built so that each host keeps exactly the pins OkHttp would
  accept for it: a rule gets the pins of every broader pattern matching its hosts, and where a
  ``**.b`` pattern's own base ``b`` is matched by another pattern (``*.parent``), an exact rule
  for ``b`` is added. Each change is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from certpin.core.hosts import HostPattern, PatternKind
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.formats import _common as common

#: The import size cap: a source file holding a CertificatePinner.
MAX_BYTES = 1024 * 1024
#: How many pins an import may produce in all. OkHttp's union copies a wildcard's pins into
#: every narrower rule, so a small file could otherwise expand into a policy of (patterns x
#: pins) entries; real configurations hold a few dozen.
MAX_IMPORTED_PINS = 20_000


def _candidates(host: str, below: int) -> Iterator[str]:
    """The pattern texts that can match `host` (or every host `below` labels under it): the
    host itself and ``*.`` + its parent (below=0), ``*.`` + the host (below=1), ``**.`` + the
    host or any of its parents. Only an index: `HostPattern.matches` decides."""
    if below == 0:
        yield host
    dot = host.find(".")
    if below == 0 and dot >= 0:
        yield "*." + host[dot + 1 :]
    if below == 1:
        yield "*." + host
    yield "**." + host
    while dot >= 0:
        yield "**." + host[dot + 1 :]
        dot = host.find(".", dot + 1)


class _Patterns:
    """OkHttp patterns with their pins, in order, indexed by pattern text.

    OkHttp applies the union of every pattern matching a host. Comparing each host with every
    pattern made an import quadratic in the number of patterns; the patterns matching a host
    are instead found among the few texts that can match it (`_candidates`: at most two per
    label of the host, and a host has at most 127 labels), each confirmed by
    `HostPattern.matches`.
    """

    def __init__(self, entries: Iterable[tuple[str, Iterable[Pin]]]) -> None:
        self._entries = [(pattern, tuple(pins)) for pattern, pins in entries]
        self._index: dict[str, list[int]] = {}
        for i, (pattern, _) in enumerate(self._entries):
            self._index.setdefault(pattern, []).append(i)

    def union(self, host: str, below: int = 0) -> tuple[list[Pin], list[str]]:
        """The pins OkHttp accepts for `host` (or for every host `below` labels under it), and
        the patterns they came from (in order)."""
        hits = sorted(
            i
            for text in set(_candidates(host, below))
            if text in self._index and HostPattern.parse(text).matches(host, below=below)
            for i in self._index[text]
        )
        pins = dict.fromkeys(pin for i in hits for pin in self._entries[i][1])
        return list(pins), [self._entries[i][0] for i in hits]


def _host_classes(pattern: HostPattern, include: bool) -> list[int]:
    """The classes of a certpin key's hosts, as labels under its base, each with one set of
    matching patterns: the base (0), one label under it (1), two or more (2)."""
    if pattern.kind is PatternKind.ONE_LABEL:
        return [1]
    if pattern.kind is PatternKind.ANY_LABELS or include:
        return [0, 1, 2]
    return [0]


# -- export ---------------------------------------------------------------------------------------


def export_kotlin(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    return _export(policy, options.okhttp, java=False)


def export_java(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    return _export(policy, options.okhttp, java=True)


def _okhttp_patterns(rule: DomainRule, version: int, notes: common.Notes) -> list[str]:
    pattern = HostPattern.parse(rule.pattern)
    if pattern.kind is PatternKind.ONE_LABEL:
        return [pattern.text]
    if pattern.kind is PatternKind.EXACT and not rule.include_subdomains:
        return [pattern.text]
    if version >= 4:
        return [f"**.{pattern.base}"]
    notes.warn(
        rule.pattern,
        f"OkHttp 3 has no '**.' pattern: exported as {pattern.base!r} and '*.{pattern.base}', "
        "so names two or more labels below it are not pinned (narrower); use --okhttp 4",
    )
    return [pattern.base, f"*.{pattern.base}"]


def _export(policy: Policy, version: int, *, java: bool) -> common.ExportResult:
    if version not in (3, 4):
        raise common.FormatError(f"unsupported OkHttp version {version}: expected 3 or 4")
    fmt = f"OkHttp {version}"
    notes = common.Notes()
    common.policy_notes(policy, notes, fmt)
    entries: list[tuple[str, list[Pin]]] = []
    exported: list[tuple[DomainRule, list[Pin]]] = []
    for rule in policy.domains.values():
        if common.skip_report_only(rule, notes, fmt):
            continue
        pins = common.any_position_pins(rule, notes, fmt)
        if not pins:
            notes.warn(rule.pattern, f"left out: no pin {fmt} can express")
            continue
        common.no_expiry_note(rule, notes, fmt)
        common.no_report_note(rule, notes, fmt)
        for okp in _okhttp_patterns(rule, version, notes):
            entries.append((okp, pins))
        exported.append((rule, pins))
    index = _Patterns(entries)
    for rule, pins in exported:
        pattern = HostPattern.parse(rule.pattern)
        for below in _host_classes(pattern, rule.include_subdomains):
            if policy.lookup(pattern.base, below=below) is not rule:
                continue  # a more specific rule owns these hosts
            accepted, sources = index.union(pattern.base, below)
            own = set(pins)
            extra = [p for p in accepted if p not in own]
            shown = "<name>." * below + pattern.base
            if not accepted:
                continue  # already reported as narrower (OkHttp 3)
            if extra:
                broader = ", ".join(
                    s for s in sources if s not in _okhttp_patterns_quiet(rule, version)
                )
                notes.warn(
                    rule.pattern,
                    f"OkHttp unions every matching pattern: for {shown} it also accepts "
                    f"{len(extra)} pin(s) of {broader} (weaker than certpin, which applies "
                    f"{rule.pattern!r} alone)",
                )
    lines = ["// " + line for line in common.header_lines(policy, fmt)]
    adds = [
        ".add(" + ", ".join(_java_string(s) for s in (okp, *(str(p) for p in pins))) + ")"
        for okp, pins in entries
    ]
    if java:
        body = [
            *lines,
            "import okhttp3.CertificatePinner;",
            "",
            "public final class CertpinPins {",
            "    private CertpinPins() {}",
            "",
            "    public static CertificatePinner certificatePinner() {",
            "        return new CertificatePinner.Builder()",
            *(f"            {a}" for a in adds),
            "            .build();",
            "    }",
            "}",
        ]
    else:
        body = [
            *lines,
            "import okhttp3.CertificatePinner",
            "",
            "val certificatePinner: CertificatePinner = CertificatePinner.Builder()",
            *(f"    {a}" for a in adds),
            "    .build()",
        ]
    return notes.result("\n".join(body) + "\n")


def _okhttp_patterns_quiet(rule: DomainRule, version: int) -> list[str]:
    return _okhttp_patterns(rule, version, common.Notes())


def _java_string(text: str) -> str:
    # Hosts and pins are ASCII without quotes or backslashes (validated), but escape anyway.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- import ---------------------------------------------------------------------------------------

_STRING = r'"(?:[^"\\\n]|\\.)*"'
_ADD = re.compile(r"\.add\(\s*(" + _STRING + r")")
_ARGS = re.compile(r"\s*,\s*(" + _STRING + r")")
_CLOSE = re.compile(r"\s*,?\s*\)")


def import_okhttp(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    text = common.check_text(data, source, MAX_BYTES)
    version = common.version_from_comment(text, source)  # the export's header comment says it
    text = strip_comments(text, source)
    lines = common.LineCounter(text)
    # pattern -> its pins (a dict: ordered, and deduplicated without scanning a list)
    entries: dict[str, dict[Pin, None]] = {}
    first_line: dict[str, int] = {}
    for m in _ADD.finditer(text):
        line = lines.line(m.start())
        where = f"line {line}"
        pattern = common.check_host(_unquote(m.group(1)), source, where, pattern=True)
        pos = m.end()
        pins: list[Pin] = []
        while True:
            arg = _ARGS.match(text, pos)
            if arg is None:
                break
            pins.append(common.parse_pin(_unquote(arg.group(1)), source, where))
            pos = arg.end()
        close = _CLOSE.match(text, pos)
        if close is None or not pins:
            raise common.FormatError(
                ".add(…) must list the host pattern and its pins as string literals "
                '(.add("api.example.com", "sha256/…", …))',
                source=source,
                location=where,
            )
        entries.setdefault(pattern, {}).update(dict.fromkeys(pins))
        first_line.setdefault(pattern, line)
    if not entries:
        raise common.FormatError(
            'no CertificatePinner .add("host", "sha256/…") call found', source=source
        )
    notes = common.Notes()
    domains = _translate({k: list(v) for k, v in entries.items()}, notes, source, first_line)
    return common.build_policy(domains, source, notes, version)


_INTERESTING = re.compile(r"[\"'/]")  # what may start a literal or a comment
_LITERAL = {  # up to the closing quote or the end of the line; a backslash escapes any character
    '"': re.compile(r'"(?:[^"\\\n]|\\[\s\S])*["\n]?'),
    "'": re.compile(r"'(?:[^'\\\n]|\\[\s\S])*['\n]?"),
}


def strip_comments(text: str, source: str) -> str:
    """`text` with every ``//`` and ``/* */`` comment blanked out (newlines kept, so line
    numbers stay right); string and character literals are kept as they are.

    Commented-out code is not live: an ``.add(…)`` in a comment must not become a pin. Java
    block comments do not nest and Kotlin's do, so a ``/*`` inside a block comment is refused
    (the two languages would disagree on what is live). One pass, jumping from one quote or
    slash to the next: linear in the text.
    """
    out: list[str] = []
    i, n = 0, len(text)

    def blank(chunk: str) -> str:
        return "".join(c if c == "\n" else " " for c in chunk)

    while i < n:
        m = _INTERESTING.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        i = m.start()
        ch = text[i]
        if text.startswith('"""', i):  # Kotlin raw string: no escapes
            end = text.find('"""', i + 3)
            end = n if end < 0 else end + 3
        elif ch in "\"'":
            literal = _LITERAL[ch].match(text, i)
            end = literal.end() if literal else i + 1  # (it always matches: the quote is there)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(blank(text[i:end]))
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise common.FormatError(
                    "unterminated /* comment",
                    source=source,
                    location=f"line {text.count(chr(10), 0, i) + 1}",
                )
            inner = text.find("/*", i + 2, end)
            if inner >= 0:
                raise common.FormatError(
                    "a /* inside a block comment: Java ends the comment at the first */, Kotlin "
                    "nests it, so what is live is ambiguous; remove the inner /*",
                    source=source,
                    location=f"line {text.count(chr(10), 0, inner) + 1}",
                )
            out.append(blank(text[i : end + 2]))
            i = end + 2
            continue
        else:
            end = i + 1  # a lone slash
        out.append(text[i:end])
        i = end
    return "".join(out)


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def _translate(
    found: dict[str, list[Pin]], notes: common.Notes, source: str, first_line: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """certpin rules giving every host the pins OkHttp's union of patterns gives it."""
    index = _Patterns(found.items())
    rules: dict[str, list[Pin]] = {}
    total = 0

    def count(pins: list[Pin], key: str) -> None:
        nonlocal total
        total += len(pins)
        if total > MAX_IMPORTED_PINS:
            raise common.FormatError(
                f"OkHttp's union of patterns gives the imported rules more than "
                f"{MAX_IMPORTED_PINS} pins in all (at {common.clip(key)}): not a configuration "
                "certpin imports",
                source=source,
                location=f"line {first_line.get(key, 1)}",
            )

    for key in found:
        pattern = HostPattern.parse(key)
        union, sources = index.union(pattern.base, _host_classes(pattern, False)[-1])
        pins = list(dict.fromkeys(found[key] + union))  # its own pins first
        count(pins, key)
        rules[key] = pins
        _note_added(key, found[key], pins, sources, notes)
    for key in found:
        pattern = HostPattern.parse(key)
        if pattern.kind is not PatternKind.ANY_LABELS or pattern.base in found:
            continue
        pins, sources = index.union(pattern.base)
        if set(pins) != set(rules[key]):
            count(pins, key)
            rules[pattern.base] = pins
            notes.warn(
                pattern.base,
                f"added as an exact rule: OkHttp gives {pattern.base} the pins of "
                f"{', '.join(sources)}, while its subdomains only get those of {key}",
            )
    return {key: {"pins": [str(p) for p in pins]} for key, pins in rules.items()}


def _note_added(
    key: str, own: list[Pin], pins: list[Pin], sources: list[str], notes: common.Notes
) -> None:
    mine = set(own)
    added = [p for p in pins if p not in mine]
    if added:
        others = ", ".join(s for s in sources if s != key)
        notes.warn(
            key,
            f"added {len(added)} pin(s) of {others}: OkHttp unions every matching pattern, "
            "certpin applies the most specific rule alone",
        )
