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
from typing import Any

from .._hosts import Pattern, PatternKind
from .._pins import Pin
from .._policy import DomainRule, Policy
from ._common import (
    ExportOptions,
    ExportResult,
    FormatError,
    ImportOptions,
    ImportResult,
    Notes,
    any_position_pins,
    build_policy,
    check_host,
    header_lines,
    no_expiry_note,
    no_report_note,
    parse_pin,
    policy_notes,
    skip_report_only,
    version_from_comment,
)

# A label no real pattern contains, standing for "any label" when probing which patterns match.
_PROBE = "certpin-probe-label"


def okhttp_matches(pattern: str, host: str) -> bool:
    """OkHttp's pattern rule: ``*.`` is exactly one label, ``**.`` zero or more."""
    if pattern.startswith("**."):
        base = pattern[3:]
        return host == base or host.endswith("." + base)
    if pattern.startswith("*."):
        base = pattern[2:]
        return host.endswith("." + base) and "." not in host[: -len(base) - 1]
    return host == pattern


def _union(entries: list[tuple[str, list[Pin]]], host: str) -> tuple[list[Pin], list[str]]:
    """The pins OkHttp accepts for `host`, and the patterns they came from."""
    pins: list[Pin] = []
    patterns: list[str] = []
    for pattern, items in entries:
        if okhttp_matches(pattern, host):
            patterns.append(pattern)
            pins += [p for p in items if p not in pins]
    return pins, patterns


def _probe_hosts(pattern: Pattern, include: bool) -> list[str]:
    """Representative hosts of a certpin key: one per distinct set of matching patterns."""
    deeper = [f"{_PROBE}.{pattern.base}", f"{_PROBE}.{_PROBE}.{pattern.base}"]
    if pattern.kind is PatternKind.ONE_LABEL:
        return deeper[:1]
    if pattern.kind is PatternKind.ANY_LABELS or include:
        return [pattern.base, *deeper]
    return [pattern.base]


# -- export ---------------------------------------------------------------------------------------


def export_kotlin(policy: Policy, options: ExportOptions) -> ExportResult:
    return _export(policy, options.okhttp, java=False)


def export_java(policy: Policy, options: ExportOptions) -> ExportResult:
    return _export(policy, options.okhttp, java=True)


def _okhttp_patterns(rule: DomainRule, version: int, notes: Notes) -> list[str]:
    pattern = Pattern.parse(rule.pattern)
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


def _export(policy: Policy, version: int, *, java: bool) -> ExportResult:
    if version not in (3, 4):
        raise FormatError(f"unsupported OkHttp version {version}: expected 3 or 4")
    fmt = f"OkHttp {version}"
    notes = Notes()
    policy_notes(policy, notes, fmt)
    entries: list[tuple[str, list[Pin]]] = []
    exported: list[tuple[DomainRule, list[Pin]]] = []
    for rule in policy.domains.values():
        if skip_report_only(rule, notes, fmt):
            continue
        pins = any_position_pins(rule, notes, fmt)
        if not pins:
            notes.warn(rule.pattern, f"left out: no pin {fmt} can express")
            continue
        no_expiry_note(rule, notes, fmt)
        no_report_note(rule, notes, fmt)
        for okp in _okhttp_patterns(rule, version, notes):
            entries.append((okp, pins))
        exported.append((rule, pins))
    for rule, pins in exported:
        pattern = Pattern.parse(rule.pattern)
        for host in _probe_hosts(pattern, rule.include_subdomains):
            if policy.lookup(host) is not rule:
                continue  # a more specific rule owns this host
            accepted, sources = _union(entries, host)
            extra = [p for p in accepted if p not in pins]
            shown = host.replace(_PROBE, "<name>")
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
    lines = ["// " + line for line in header_lines(policy, fmt)]
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
    return _okhttp_patterns(rule, version, Notes())


def _java_string(text: str) -> str:
    # Hosts and pins are ASCII without quotes or backslashes (validated), but escape anyway.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- import ---------------------------------------------------------------------------------------

_STRING = r'"(?:[^"\\\n]|\\.)*"'
_ADD = re.compile(r"\.add\(\s*(" + _STRING + r")")
_ARGS = re.compile(r"\s*,\s*(" + _STRING + r")")


def import_okhttp(data: bytes, source: str, options: ImportOptions) -> ImportResult:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 text ({exc.reason})", source=source) from None
    version = version_from_comment(text)  # the export's header comment says it
    text = strip_comments(text, source)
    entries: dict[str, list[Pin]] = {}
    for m in _ADD.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        where = f"line {line}"
        pattern = check_host(_unquote(m.group(1)), source, where, pattern=True)
        pos = m.end()
        pins: list[Pin] = []
        while True:
            arg = _ARGS.match(text, pos)
            if arg is None:
                break
            pins.append(parse_pin(_unquote(arg.group(1)), source, where))
            pos = arg.end()
        close = re.compile(r"\s*,?\s*\)").match(text, pos)
        if close is None or not pins:
            raise FormatError(
                ".add(…) must list the host pattern and its pins as string literals "
                '(.add("api.example.com", "sha256/…", …))',
                source=source,
                location=where,
            )
        bucket = entries.setdefault(pattern, [])
        bucket += [p for p in pins if p not in bucket]
    if not entries:
        raise FormatError('no CertificatePinner .add("host", "sha256/…") call found', source=source)
    notes = Notes()
    domains = _translate(entries, notes)
    return build_policy(domains, source, notes, version)


def strip_comments(text: str, source: str) -> str:
    """`text` with every ``//`` and ``/* */`` comment blanked out (newlines kept, so line
    numbers stay right); string and character literals are kept as they are.

    Commented-out code is not live: an ``.add(…)`` in a comment must not become a pin. Java
    block comments do not nest and Kotlin's do, so a ``/*`` inside a block comment is refused
    (the two languages would disagree on what is live).
    """
    out: list[str] = []
    i, n = 0, len(text)

    def blank(chunk: str) -> str:
        return "".join(c if c == "\n" else " " for c in chunk)

    while i < n:
        ch = text[i]
        if text.startswith('"""', i):  # Kotlin raw string: no escapes
            end = text.find('"""', i + 3)
            end = n if end < 0 else end + 3
            out.append(text[i:end])
            i = end
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            out.append(text[i:end])
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(blank(text[i:end]))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise FormatError(
                    "unterminated /* comment",
                    source=source,
                    location=f"line {text.count(chr(10), 0, i) + 1}",
                )
            inner = text.find("/*", i + 2, end)
            if inner >= 0:
                raise FormatError(
                    "a /* inside a block comment: Java ends the comment at the first */, Kotlin "
                    "nests it, so what is live is ambiguous; remove the inner /*",
                    source=source,
                    location=f"line {text.count(chr(10), 0, inner) + 1}",
                )
            out.append(blank(text[i : end + 2]))
            i = end + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def _translate(found: dict[str, list[Pin]], notes: Notes) -> dict[str, dict[str, Any]]:
    """certpin rules giving every host the pins OkHttp's union of patterns gives it."""
    entries = list(found.items())
    rules: dict[str, list[Pin]] = {}
    for key in found:
        pattern = Pattern.parse(key)
        host = _probe_hosts(pattern, False)[-1]
        union, sources = _union(entries, host)
        pins = found[key] + [p for p in union if p not in found[key]]  # its own pins first
        rules[key] = pins
        _note_added(key, found[key], pins, sources, notes)
    for key in found:
        pattern = Pattern.parse(key)
        if pattern.kind is not PatternKind.ANY_LABELS or pattern.base in found:
            continue
        pins, sources = _union(entries, pattern.base)
        if set(pins) != set(rules[key]):
            rules[pattern.base] = pins
            notes.warn(
                pattern.base,
                f"added as an exact rule: OkHttp gives {pattern.base} the pins of "
                f"{', '.join(sources)}, while its subdomains only get those of {key}",
            )
    return {key: {"pins": [str(p) for p in pins]} for key, pins in rules.items()}


def _note_added(
    key: str, own: list[Pin], pins: list[Pin], sources: list[str], notes: Notes
) -> None:
    added = [p for p in pins if p not in own]
    if added:
        others = ", ".join(s for s in sources if s != key)
        notes.warn(
            key,
            f"added {len(added)} pin(s) of {others}: OkHttp unions every matching pattern, "
            "certpin applies the most specific rule alone",
        )
