"""TrustKit for iOS/macOS configured in code: the ``TSKConfiguration`` dictionary literal passed
to ``TrustKit.initSharedInstance(withConfiguration:)`` in Swift or
``[TrustKit initSharedInstanceWithConfiguration:]`` in Objective-C (the common case in real
apps; an Info.plist TSKConfiguration is the ``trustkit-ios`` format).

Import: the file is tokenized and its constants resolved by `certpin.formats._code` (Swift
``let``/``static let``, Objective-C ``NSString * const X = @"…"`` and ``#define X @"…"``,
string concatenation), TrustKit's own ``kTSK…`` constants standing for their strings
(TSKTrustKitConfig.m). The dictionary literal holding the ``kTSKPinnedDomains`` key (or the
string ``"TSKPinnedDomains"``) is the configuration; it is then mapped exactly as the
``trustkit-ios`` importer maps a plist (`certpin.formats._trustkit.import_configuration`), so
what TrustKit refuses at start-up is exit 2 and what it reads oddly is a warning, with the file
and line. A value that cannot be known from the file (a ``Bundle``/``ProcessInfo`` read, a
function call, an interpolation of an expression) is named with its line and left out: a pin
(when the domain keeps enough pins for TrustKit's two-pin rule; otherwise the domain), a
domain, or a setting (TrustKit's default then applies). Nothing resolvable at all is exit 2.
A second configuration in the file (``#if DEBUG`` … ``#else``) is named and not imported.

Export: Swift, a ``let trustKitConfig: [String: Any]`` literal with TrustKit's constants, the
mapping of the ``trustkit-ios`` export (same warnings).
"""

from __future__ import annotations

import plistlib
import re
from dataclasses import dataclass, field
from typing import Any

from certpin.core.policy import Policy
from certpin.formats import _code, _code_values, _trustkit
from certpin.formats import _common as common
from certpin.formats._structured import label

FMT = "TrustKit (Swift)"
#: The import size cap: a source file holding the configuration.
MAX_BYTES = 1024 * 1024

#: TrustKit's public constants and the strings behind them (TSKTrustKitConfig.m).
CONSTANTS: dict[str, str] = {
    "kTSKSwizzleNetworkDelegates": "TSKSwizzleNetworkDelegates",
    "kTSKPinnedDomains": "TSKPinnedDomains",
    "kTSKIgnorePinningForUserDefinedTrustAnchors": "TSKIgnorePinningForUserDefinedTrustAnchors",
    "kTSKPublicKeyHashes": "TSKPublicKeyHashes",
    "kTSKEnforcePinning": "TSKEnforcePinning",
    "kTSKExcludeSubdomainFromParentPolicy": "kSKExcludeSubdomainFromParentPolicy",
    "kTSKIncludeSubdomains": "TSKIncludeSubdomains",
    "kTSKPublicKeyAlgorithms": "TSKPublicKeyAlgorithms",
    "kTSKReportUris": "TSKReportUris",
    "kTSKDisableDefaultReportUri": "TSKDisableDefaultReportUri",
    "kTSKExpirationDate": "TSKExpirationDate",
    "kTSKAlgorithmRsa2048": "TSKAlgorithmRsa2048",
    "kTSKAlgorithmRsa4096": "TSKAlgorithmRsa4096",
    "kTSKAlgorithmEcDsaSecp256r1": "TSKAlgorithmEcDsaSecp256r1",
    "kTSKAlgorithmEcDsaSecp384r1": "TSKAlgorithmEcDsaSecp384r1",
}
_NAMES = {value: name for name, value in CONSTANTS.items()}
_PINNED = "TSKPinnedDomains"
_HASHES = "TSKPublicKeyHashes"
_NUMBER = re.compile(r"[0-9]+")


# -- import ---------------------------------------------------------------------------------------


@dataclass
class _Located(common.Notes):
    """Notes whose key-path locations (from the shared TrustKit mapping) gain the file and the
    line the value was written on."""

    source: str = ""
    lines: dict[str, int] = field(default_factory=dict)

    def warn(self, where: str, message: str) -> None:
        super().warn(self.locate(where, with_source=True), message)

    def here(self, line: int, message: str) -> None:
        """A warning about code at `line` (not a key path)."""
        super().warn(f"{self.source}: line {line}", message)

    def locate(self, where: str, *, with_source: bool) -> str:
        path = where
        for _ in range(64):
            if path in self.lines:
                found = f"line {self.lines[path]}, {where}"
                return f"{self.source}: {found}" if with_source else found
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                break
            path = path[:cut]
        if where == self.source or not with_source:
            return where
        return f"{self.source}: {where}"


def import_trustkit_code(
    data: bytes, source: str, options: common.ImportOptions
) -> common.ImportResult:
    text = common.check_text(data, source, MAX_BYTES)
    version = common.version_from_comment(text, source)
    code = _code.Code(text, source, "apple")
    evaluator = _code_values.Evaluator(code, CONSTANTS)
    starts = _configurations(code, evaluator)
    if not starts:
        raise common.FormatError(
            "no TrustKit configuration found: a dictionary literal with a kTSKPinnedDomains "
            '(or "TSKPinnedDomains") key',
            source=source,
        )
    notes = _Located(source=source)
    for other in starts[1:]:
        notes.here(
            code.tokens[other].line,
            f"another TrustKit configuration (the first is at line "
            f"{code.tokens[starts[0]].line}): not imported",
        )
    node = evaluator.literal(starts[0])
    reader = _Reader(code, notes)
    root = reader.config(node)
    try:
        return _trustkit.import_configuration(root, source, options, notes, version)
    except common.FormatError as exc:
        if exc.source != source or not exc.location:
            raise
        raise common.FormatError(
            exc.problem, source=source, location=notes.locate(exc.location, with_source=False)
        ) from None


def _configurations(code: _code.Code, evaluator: _code_values.Evaluator) -> list[int]:
    """The first token of each dictionary literal with a TSKPinnedDomains key, in order."""
    starts: list[int] = []
    for i, tok in enumerate(code.tokens):
        if not code.is_op(i + 1, ":"):
            continue
        key: str | None
        if tok.kind == "str":
            key = tok.text
        elif tok.kind == "name" and tok.text.startswith("kTSK"):
            key = evaluator.constant(tok.text, i).string()
        else:
            continue
        if key != _PINNED:
            continue
        opened = code.parent[i]
        if opened < 0:
            continue
        if code.is_op(opened, "{") and code.is_op(opened - 1, "@"):
            start = opened - 1
        elif code.is_op(opened, "["):
            start = opened
        else:
            continue
        if start not in starts:
            starts.append(start)
    return starts


class _Reader:
    """Turns the evaluated literal into the plain dictionary the shared mapping reads, leaving
    out (with a warning naming the line and the expression) whatever could not be resolved,
    and recording the line of every key path for the mapping's own messages."""

    def __init__(self, code: _code.Code, notes: _Located) -> None:
        self.code = code
        self.notes = notes
        self.unresolved: list[str] = []

    def shown(self, node: _code_values.Node) -> str:
        return common.clip(self.code.excerpt(node.first, node.last))

    def skip(self, node: _code_values.Node, what: str, consequence: str) -> None:
        why = node.value if not node.resolved else f"a {node.kind}"
        self.unresolved.append(f"line {node.line}: {self.shown(node)}: {why}")
        self.notes.here(
            node.line,
            f"{what} {self.shown(node)} cannot be resolved statically ({why}): {consequence}",
        )

    def config(self, node: _code_values.Node) -> dict[str, Any]:
        root = self.dictionary(node, "", "the TrustKit configuration", top=True)
        pinned = root.get(_PINNED)
        if isinstance(pinned, dict) and not pinned and self.unresolved:
            raise common.FormatError(
                f"no pinned domain of the TrustKit configuration at line {node.line} could be "
                f"resolved statically ({self.unresolved[0]}): nothing to import",
                source=self.notes.source,
            )
        return root

    def dictionary(
        self,
        node: _code_values.Node,
        path: str,
        what: str,
        *,
        top: bool = False,
        domain: bool = False,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.notes.lines[path] = node.line
        for key_node, value_node in node.entries():
            key = key_node.string()
            if key is None:
                self.skip(key_node, f"a key of {what}", "that entry is not imported")
                continue
            where = f"{path}.{label(key)}" if path else label(key)
            self.notes.lines[where] = key_node.line
            if top and key == _PINNED:
                out[key] = self.domains(value_node, where)
                continue
            if domain and key == _HASHES and value_node.kind == "list":
                continue  # read by `hashes`, which knows TrustKit's pin count
            if not value_node.resolved:
                consequence = "imported as if absent (TrustKit's default applies)"
                self.skip(value_node, f"the value of {key}", consequence)
                continue
            out[key] = self.plain(value_node, where)
        return out

    def domains(self, node: _code_values.Node, path: str) -> Any:
        if not node.resolved:
            self.skip(node, "the pinned domains", "no domain is imported")
            return {}
        if node.kind != "dict":
            return self.plain(node, path)  # the mapping refuses it, naming the line
        out: dict[str, Any] = {}
        for key_node, body in node.entries():
            host = key_node.string()
            if host is None:
                self.skip(
                    key_node,
                    "a pinned domain",
                    "not imported (the app pins it, the imported policy does not)",
                )
                continue
            where = f"{path}.{label(host)}"
            self.notes.lines[where] = key_node.line
            if not body.resolved:
                self.skip(body, f"the settings of {host!r}", "the domain is not imported")
                continue
            if body.kind != "dict":
                out[host] = self.plain(body, where)
                continue
            settings = self.dictionary(body, where, repr(host), domain=True)
            pins = self.hashes(body, settings, where, host)
            if pins is None:
                continue
            if pins:
                settings[_HASHES] = pins
            out[host] = settings
        return out

    def hashes(
        self, body: _code_values.Node, settings: dict[str, Any], where: str, host: str
    ) -> list[Any] | None:
        """The domain's pins with the unresolvable ones left out, or None when so many are
        unresolvable that TrustKit's pin count could not be checked (the domain is left out)."""
        node = next((v for k, v in body.entries() if k.string() == _HASHES), None)
        if node is None or node.kind != "list":
            return settings.get(_HASHES)
        path = f"{where}.{_HASHES}"
        known = [item for item in node.items() if item.resolved]
        unknown = [item for item in node.items() if not item.resolved]
        need = 1 if settings.get("TSKEnforcePinning") is False else 2
        distinct = {item.string() or repr(item.value) for item in known}
        if unknown and len(distinct) < need:
            first = unknown[0]
            self.skip(
                first,
                f"pin {1 + node.items().index(first)} of {host!r}",
                f"the domain is not imported: only {len(distinct)} of its "
                f"{len(node.items())} pins can be resolved, and TrustKit needs {need}",
            )
            return None
        for item in unknown:
            self.skip(
                item,
                f"a pin of {host!r}",
                "not imported; the app also accepts it, the imported policy does not",
            )
        out = []
        for i, item in enumerate(known):
            self.notes.lines[f"{path}[{i}]"] = item.line
            out.append(self.plain(item, f"{path}[{i}]"))
        return out

    def plain(self, node: _code_values.Node, path: str) -> Any:
        """A resolved value as a plist-like Python value (unresolved parts left out)."""
        self.notes.lines.setdefault(path, node.line)
        if node.kind == "str":
            return node.string()
        if node.kind == "bool":
            return bool(node.value)
        if node.kind == "num":
            digits = str(node.value)
            return int(digits) if _NUMBER.fullmatch(digits) else digits
        if node.kind == "list":
            items: list[Any] = []
            for item in node.items():
                if not item.resolved:
                    self.skip(item, "an item", "not imported")
                    continue
                self.notes.lines[f"{path}[{len(items)}]"] = item.line
                items.append(self.plain(item, f"{path}[{len(items)}]"))
            return items
        if node.kind == "dict":
            return self.dictionary(node, path, "a dictionary")
        return None  # nil: the mapping refuses it where a value is required


# -- export ---------------------------------------------------------------------------------------


def export_trustkit_code(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    """Swift source for ``TrustKit.initSharedInstance(withConfiguration: trustKitConfig)``."""
    plist = _trustkit.export_trustkit_ios(policy, options)
    doc = plistlib.loads(plist.text.encode("utf-8"))["TSKConfiguration"]
    config = {"TSKSwizzleNetworkDelegates": False, **doc}
    lines = ["// " + line for line in common.header_lines(policy, FMT)]
    lines += [
        "// Pass it to TrustKit.initSharedInstance(withConfiguration: trustKitConfig) at launch.",
        "import TrustKit",
        "",
        f"let trustKitConfig: [String: Any] = {_swift(config, 0)}",
    ]
    return common.ExportResult("\n".join(lines) + "\n", plist.warnings)


def _swift(value: Any, level: int) -> str:
    pad, inner = "    " * level, "    " * (level + 1)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + "".join(f"{inner}{_swift(v, level + 1)},\n" for v in value) + f"{pad}]"
    if isinstance(value, dict):
        if not value:
            return "[:]"
        body = "".join(
            f"{inner}{_NAMES.get(k) or _swift(k, 0)}: {_swift(v, level + 1)},\n"
            for k, v in value.items()
        )
        return "[\n" + body + f"{pad}]"
    raise TypeError(f"no Swift literal for {type(value).__name__}")  # Defensive: plist values
