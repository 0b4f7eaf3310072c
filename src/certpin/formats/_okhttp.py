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

**Patterns** (CertificatePinner.kt): ``*.b`` is exactly one label before ``b`` in OkHttp 3 and
4; ``**.b`` (``b`` itself and every name under it) exists from OkHttp 4.3.0 on. OkHttp 3 does
not refuse ``**.b``: it reads it as the literal host name ``**.b``, which matches no host, so
the import (which cannot know the OkHttp version) reads OkHttp 4 semantics, and the OkHttp 3
export never writes ``**.``.

**Import reads values, not only literals**: hosts and pins may be same-file constants,
concatenations and arrays (`certpin.formats._code`, `certpin.formats._code_values`); what only
the running app knows is warned about with its line and expression, and left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from certpin.core.hosts import HostPattern, PatternKind
from certpin.core.pins import Pin
from certpin.core.policy import DomainRule, Policy
from certpin.formats import _code, _code_values
from certpin.formats import _common as common
from certpin.formats._lenient import placeholder_reason, platform_pin

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
#
# What OkHttp does with each argument of CertificatePinner.Builder().add(pattern, vararg pins)
# (CertificatePinner.kt, Pin's init): a pattern with a '*' anywhere but a leading "*." or "**.",
# or one toCanonicalHost() refuses, throws IllegalArgumentException when the app builds the
# pinner (the app crashes: exit 2 here); a pin must start with "sha256/" or "sha1/" and decode
# with okio's decodeBase64 (else the same exception). "sha1/" pins are valid to OkHttp; certpin
# has no SHA-1 pins, so they are left out with a warning. An add() without pins adds nothing.

_PIN_PREFIXES = ("sha256/", "sha1/")


def import_okhttp(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    text = common.check_text(data, source, MAX_BYTES)
    version = common.version_from_comment(text, source)  # the export's header comment says it
    code = _code.Code(text, source, "jvm")
    evaluator = _code_values.Evaluator(code)
    notes = common.Notes()
    # pattern -> its pins (a dict: ordered, and deduplicated without scanning a list)
    entries: dict[str, dict[Pin, None]] = {}
    first_line: dict[str, int] = {}
    calls = unresolved = 0
    first_unresolved = ""
    for args in _pinner_calls(code, evaluator):
        calls += 1
        found, skipped = _read_call(code, args, source, options, notes)
        if skipped and not first_unresolved:
            first_unresolved = skipped
        if found is None:
            unresolved += 1
            continue
        pattern, pins, line = found
        entries.setdefault(pattern, {}).update(dict.fromkeys(pins))
        first_line.setdefault(pattern, line)
    if not calls:
        raise common.FormatError(
            'no CertificatePinner .add("host", "sha256/…") call found', source=source
        )
    found_pins = {k: list(v) for k, v in entries.items() if v}
    if not found_pins:
        raise common.FormatError(
            f"none of the {calls} CertificatePinner .add(…) call(s) could be resolved to a host "
            f"and a SHA-256 pin statically ({first_unresolved or 'no pins'}): nothing to import",
            source=source,
        )
    domains = _translate(found_pins, notes, source, first_line)
    return common.build_policy(domains, source, notes, version)


def _read_call(
    code: _code.Code,
    args: list[_code_values.Node],
    source: str,
    options: common.ImportOptions,
    notes: common.Notes,
) -> tuple[tuple[str, list[Pin], int] | None, str]:
    """One ``.add(pattern, pins…)``: (pattern, its pins, line) or None when its pattern cannot
    be resolved, and the first thing that could not be resolved (for the final error)."""
    head = args[0]
    where = f"{source}: line {head.line}"
    first_skip = ""
    pattern_text = head.string()
    if pattern_text is None:
        skipped = _unresolved(
            code,
            head,
            notes,
            where,
            what=".add() pattern",
            then="its pins are not imported; the app pins that host, the imported policy does not",
        )
        return None, skipped
    location = f"line {head.line}"
    pattern = _okhttp_pattern(pattern_text, source, location)
    pins: list[Pin] = []
    for node in args[1:]:
        at = f"{source}: line {node.line}"
        text = node.string()
        if text is None:
            skipped = _unresolved(
                code,
                node,
                notes,
                at,
                what="pin",
                after=f" for {pattern!r}",
                then="not imported; the app also accepts it, the imported policy does not",
            )
            first_skip = first_skip or skipped
            continue
        pin = _okhttp_pin(text, pattern, source, node.line, notes)
        if pin is not None and pin not in pins:
            pins.append(pin)
    if len(args) == 1:
        notes.warn(where, f".add({pattern!r}) without pins: OkHttp pins nothing for it")
    return (pattern, pins, head.line), first_skip


def _unresolved(
    code: _code.Code,
    node: _code_values.Node,
    notes: common.Notes,
    where: str,
    *,
    what: str,
    then: str,
    after: str = "",
) -> str:
    """Warn that the argument `node` (a `what`, `after` its text in the message) is not a
    string constant and so is not imported (`then`: what that means); return how the final
    error names it."""
    shown = common.clip(code.excerpt(node.first, node.last))
    why = str(node.value) if not node.resolved else f"a {node.kind}, not a string"
    notes.warn(where, f"{what} {shown}{after} cannot be resolved statically ({why}): {then}")
    return f"line {node.line}: {shown}: {why}"


def _okhttp_pattern(text: str, source: str, location: str) -> str:
    """The pattern as OkHttp accepts it (Pin's init), or the FormatError of a crashing app."""
    star = text.find("*")
    allowed = (
        star < 0
        or (text.startswith("*.") and text.find("*", 1) < 0)
        or (text.startswith("**.") and text.find("*", 2) < 0)
    )
    if not allowed:
        raise common.FormatError(
            f"unexpected pattern {common.clip(text)}: OkHttp throws IllegalArgumentException "
            "(a '*' is only allowed as a leading '*.' or '**.')",
            source=source,
            location=location,
        )
    return common.check_host(text, source, location, pattern=True)


def _okhttp_pin(text: str, pattern: str, source: str, line: int, notes: common.Notes) -> Pin | None:
    where, location = f"{source}: line {line}", f"line {line}"
    if text.startswith("sha1/"):
        notes.warn(
            where,
            f"SHA-1 pin {common.clip(text)} for {pattern!r} left out: OkHttp accepts it, "
            "certpin takes SHA-256 pins only (the imported rule accepts fewer keys)",
        )
        return None
    if not text.startswith("sha256/"):
        raise common.FormatError(
            f"pin {common.clip(text)}: OkHttp throws IllegalArgumentException (pins must start "
            "with 'sha256/' or 'sha1/')",
            source=source,
            location=location,
        )
    try:
        pin = platform_pin(
            text.removeprefix("sha256/"),
            platform="okhttp",
            notes=notes,
            where=where,
            source=source,
            location=location,
        )
    except common.FormatError as exc:  # name the pin as written, prefix included
        raise common.FormatError(
            f"pin {common.clip(text)} refused: {exc.problem}", source=source, location=location
        ) from None
    reason = placeholder_reason(pin)
    if reason:
        notes.warn(where, f"placeholder pin {pin} for {pattern!r}: no key can have it ({reason})")
    return pin


def _pinner_calls(
    code: _code.Code, evaluator: _code_values.Evaluator
) -> Iterator[list[_code_values.Node]]:
    """The argument lists of the file's CertificatePinner.Builder ``add`` calls.

    An ``add(`` call is the pinner's when its receiver is ``CertificatePinner.Builder()`` or a
    chain of ``.add(…)`` calls on it, a variable or parameter of that type, or when it is a bare
    ``add(`` inside ``….apply { }`` on one; any other ``add(`` (a list's, say) counts when one
    of its arguments is a ``"sha256/…"`` or ``"sha1/…"`` string. One pass; each chain link
    looks back one step at the link before it (linear, whatever the chain's length).
    """
    tokens = code.tokens
    builders = _builder_names(code)
    is_builder: dict[int, bool] = {}  # index of a receiver's last token -> is it a Builder?

    def receiver(last: int) -> bool:
        """Does the expression ending at token `last` give a CertificatePinner.Builder?"""
        if last in is_builder:
            return is_builder[last]
        result = False
        if code.is_name(last):
            result = tokens[last].text in builders
        elif code.is_op(last, ")"):
            opened = code.match[last]
            if code.is_name(opened - 1, "Builder"):
                result = code.is_op(opened - 2, ".") and code.is_name(
                    opened - 3, "CertificatePinner"
                )
            elif code.is_name(opened - 1, "add") and code.is_op(opened - 2, "."):
                result = is_builder.get(opened - 3, False)
        elif code.is_op(last, "}"):  # ….apply { … }
            opened = code.match[last]
            result = (
                code.is_name(opened - 1, "apply")
                and code.is_op(opened - 2, ".")
                and is_builder.get(opened - 3, False)
            )
        is_builder[last] = result
        return result

    for i, tok in enumerate(tokens):
        if tok.kind == "op" and tok.text == "{" and code.is_name(i - 1, "apply"):
            # Bare add( calls inside ….apply { } act on the receiver of apply.
            is_builder[code.match[i]] = code.is_op(i - 2, ".") and receiver(i - 3)
        if tok.kind == "op" and tok.text == ")" and code.is_name(code.match[i] - 1):
            receiver(i)  # memoise chain links in order
        if not (tok.kind == "name" and tok.text == "add" and code.is_op(i + 1, "(")):
            continue
        if code.is_op(i - 1, "."):
            pinner = receiver(i - 2)
        else:
            block = code.parent[i]
            pinner = block >= 0 and is_builder.get(code.match[block], False)
        args = evaluator.arguments(i + 1)
        if not args:
            continue
        if pinner or any((a.string() or "").startswith(_PIN_PREFIXES) for a in args[1:]):
            yield args


def _builder_names(code: _code.Code) -> set[str]:
    """Variables and parameters holding a CertificatePinner.Builder: ``NAME = [new]
    CertificatePinner.Builder(``, ``NAME: CertificatePinner.Builder``, Java
    ``CertificatePinner.Builder NAME``."""
    tokens = code.tokens
    names: set[str] = set()
    for i, tok in enumerate(tokens):
        if not (
            tok.kind == "name"
            and tok.text == "CertificatePinner"
            and code.is_op(i + 1, ".")
            and code.is_name(i + 2, "Builder")
        ):
            continue
        if code.is_name(i + 3):  # Java: CertificatePinner.Builder builder
            names.add(tokens[i + 3].text)
        k = i - 1
        if code.is_name(k, "new"):
            k -= 1
        if (code.is_op(k, "=") or code.is_op(k, ":")) and code.is_name(k - 1):
            names.add(tokens[k - 1].text)
        elif code.is_op(k, "=") and code.is_op(k - 1, ">"):
            pass  # a generic type annotation: not worth following
    return names


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
