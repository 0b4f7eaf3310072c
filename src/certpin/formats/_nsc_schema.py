"""What Android reads in a Network Security Config, for the importer (`_nsc_import`): the
elements and their attributes (AOSP ``XmlConfigSource``, plus TrustKit Android's
``<trustkit-config>``), the reader that collects the import's warnings, and the warnings for
names Android does not read (with a "did you mean").
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from certpin.formats import _common as common
from certpin.formats._lenient import did_you_mean
from certpin.formats._structured import Node, label

_ROOT = "network-security-config"
_BASE, _DOMAIN, _DEBUG = "base-config", "domain-config", "debug-overrides"
_CONFIG_ATTRS = ("cleartextTrafficPermitted", "hstsEnforced")
#: the attributes Android (and TrustKit, for <trustkit-config>) reads on each element.
_ATTRS: dict[str, tuple[str, ...]] = {
    _ROOT: (),
    _BASE: _CONFIG_ATTRS,
    _DOMAIN: _CONFIG_ATTRS,
    _DEBUG: _CONFIG_ATTRS,
    "domain": ("includeSubdomains",),
    "pin-set": ("expiration",),
    "pin": ("digest",),
    "trust-anchors": (),
    "certificates": ("src", "overridePins"),
    "certificateTransparency": ("enabled",),
    "trustkit-config": ("enforcePinning", "disableDefaultReportUri"),
    "report-uri": (),
}
#: the child elements each element may have.
_CHILDREN: dict[str, tuple[str, ...]] = {
    _ROOT: (_BASE, _DOMAIN, _DEBUG),
    _BASE: ("trust-anchors", "certificateTransparency"),
    _DOMAIN: (
        "domain",
        _DOMAIN,
        "pin-set",
        "trust-anchors",
        "certificateTransparency",
        "trustkit-config",
    ),
    _DEBUG: ("trust-anchors",),
    "domain": (),
    "pin-set": ("pin",),
    "pin": (),
    "trust-anchors": ("certificates",),
    "certificates": (),
    "certificateTransparency": (),
    "trustkit-config": ("report-uri",),
    "report-uri": (),
}
_PARENTS: dict[str, list[str]] = {}
for _parent, _kids in _CHILDREN.items():
    for _kid in _kids:
        _PARENTS.setdefault(_kid, []).append(_parent)
_OWNER: dict[str, str] = {a.lower(): tag for tag, attrs in _ATTRS.items() for a in attrs}
#: aapt compiles these spellings into booleans (anything else stays a string, which
#: XmlResourceParser.getAttributeBooleanValue answers with the default).
_BOOLEANS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False}
_BOOLEANS["FALSE"] = False


@dataclass
class _PinSet:
    node: Node
    pins: list[str]
    expires: dt.date | None
    #: how many different texts the <pin> elements hold: TrustKit-Android counts pins as a set
    #: of the raw element texts (TrustKitConfigurationParser.readPinSet).
    texts: int = 0


@dataclass
class _Anchor:
    src: str
    override: bool
    line: int


@dataclass
class _Config:
    node: Node
    kind: str
    parent: _Config | None
    domains: list[tuple[str, bool, Node]] = field(default_factory=list)
    pin_set: _PinSet | None = None
    anchors: list[_Anchor] | None = None
    cleartext: tuple[bool, Node] | None = None
    ct: tuple[bool, Node] | None = None
    tk: Node | None = None


@dataclass
class _Reader:
    source: str
    notes: common.Notes
    options: common.ImportOptions
    configs: list[_Config] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    base: _Config | None = None
    debug: _Config | None = None
    #: the file holds a <trustkit-config>: TrustKit-Android reads it too, with its own checks.
    trustkit: bool = False

    def where(self, node: Node) -> str:
        return f"{self.source}: {node.where()}"

    def warn(self, node: Node, message: str) -> None:
        self.notes.warn(self.where(node), message)

    def refuse(self, node: Node, problem: str) -> common.FormatError:
        return common.FormatError(problem, source=self.source, location=node.where())


# -- unknown names --------------------------------------------------------------------------------


def _attributes(r: _Reader, node: Node) -> None:
    """Warn about every attribute Android does not read on `node` (it ignores them)."""
    known = _ATTRS.get(node.tag, ())
    for name, value in node.attrib.items():
        if name in known:
            continue
        prefix, colon, local = name.partition(":")
        if name == "xmlns" or prefix == "xmlns" or (colon and prefix == "tools"):
            # Namespace declarations, and tools: attributes (lint hints such as tools:ignore,
            # which the build strips before Android sees the file): nothing to say.
            continue
        shown = f'{label(name)}="{label(value)}"'
        if colon:
            hint = f' (did you mean "{local}"?)' if local in known else ""
            r.warn(
                node,
                f"attribute {shown} has a namespace prefix: Android reads the attributes of "
                f"<{node.name}> without one, so it is ignored{hint}",
            )
            continue
        hint = did_you_mean(name, known)
        owner = _OWNER.get(name.lower())
        if not hint and owner is not None and owner != node.tag:
            hint = f" ({_OWNER_SPELLING.get(name.lower(), name)} belongs on <{owner}>)"
        r.warn(
            node,
            f"attribute {shown} is not one {_reader(node)} reads on <{node.name}>: ignored{hint}",
        )


def _reader(node: Node) -> str:
    """Who reads `node`: TrustKit its own elements, Android the rest."""
    return "TrustKit" if node.tag in ("trustkit-config", "report-uri") else "Android"


_OWNER_SPELLING: dict[str, str] = {a.lower(): a for attrs in _ATTRS.values() for a in attrs}


def _unknown_element(r: _Reader, node: Node, parent: Node) -> None:
    if node.tag == "pin" and parent.tag != "pin-set":
        r.warn(
            node,
            f"<pin> outside <pin-set> (in <{parent.name}>): Android ignores it, so this pin "
            "is not enforced",
        )
        return
    homes = _PARENTS.get(node.tag)
    if homes and parent.tag not in homes:
        hint = f" (<{node.tag}> belongs in <{'> or <'.join(homes)}>)"
    else:
        hint = did_you_mean(node.tag, _CHILDREN.get(parent.tag, ()))
    r.warn(
        node,
        f"<{node.name}> is not an element {_reader(parent)} reads in <{parent.name}>: "
        f"ignored{hint}",
    )


def _no_children(r: _Reader, node: Node) -> None:
    for child in node.children:
        _unknown_element(r, child, node)


def _android_bool(r: _Reader, node: Node, name: str) -> bool | None:
    """The boolean attribute as Android reads it: None when absent; a value aapt does not
    compile into a boolean reads as the default (warned, None)."""
    value = node.attrib.get(name)
    if value is None:
        return None
    if value in _BOOLEANS:
        return _BOOLEANS[value]
    r.warn(
        node,
        f'{name}="{label(value)}" is not a boolean ("true" or "false"): Android reads the '
        "default instead",
    )
    return None


def _trustkit_bool(r: _Reader, node: Node, name: str) -> bool | None:
    """TrustKit reads its attributes with Boolean.parseBoolean: "true" in any case, else false."""
    value = node.attrib.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        r.warn(
            node,
            f'{name}="{label(value)}" is not "true" or "false": TrustKit reads it as '
            f"{'true' if value.lower() == 'true' else 'false'}",
        )
    return value.lower() == "true"


# -- TrustKit-Android's own checks ----------------------------------------------------------------

#: DomainValidator (commons-validator 1.5.1, copied into TrustKit-Android), with local names
#: refused (DomainPinningPolicy uses getInstance()): ASCII labels, a top label starting with a
#: letter, at most one trailing dot, the whole raw element text (TrustKit does not trim it).
_TK_LABEL = r"[A-Za-z0-9](?>[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TK_TOP = r"[A-Za-z](?>[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TK_DOMAIN = re.compile(rf"(?:{_TK_LABEL}\.)+({_TK_TOP})\.?")
#: Top-level names missing from that validator's TLD lists (reserved by RFC 2606, 6761, 6762,
#: 7686 or in private use). certpin does not carry the validator's whole 2016 list, so a TLD
#: delegated since then is not refused here although TrustKit refuses it too.
_TK_NO_TLD = frozenset(
    "example test invalid localhost localdomain local internal onion lan home corp intranet "
    "private".split()
)
#: The URL schemes java.net.URL has a handler for on Android.
_TK_URL_SCHEMES = frozenset(("http", "https", "ftp", "file", "jar"))
_TK_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*+):")


def _tk_domain_problem(text: str) -> str | None:
    """Why TrustKit-Android's DomainValidator refuses the raw `<domain>` text, or None."""
    name = text
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # IDN.toASCII failed: the validator goes on with the text as written
    if len(name) > 253:
        return "it is longer than 253 characters"
    if text != text.strip():
        # aapt2 compacts the whitespace around element text to one space; TrustKit does not
        # trim it before validating.
        return "it has whitespace around it, which TrustKit does not trim"
    m = _TK_DOMAIN.fullmatch(name)
    if m is None:
        return (
            "it is not a DNS name ending in a top-level domain (IP addresses and one-label "
            "names are refused)"
        )
    if m.group(1).lower() in _TK_NO_TLD:
        return f"its top-level domain .{m.group(1).lower()} is not on TrustKit's list of TLDs"
    return None


def _tk_report_uri_problem(text: str) -> str | None:
    """Why ``new java.net.URL(text)`` throws MalformedURLException, or None."""
    spec = text.strip("".join(chr(i) for i in range(33)))
    if spec[:4].lower() == "url:":
        spec = spec[4:]
    m = _TK_SCHEME.match(spec)
    if m is None:
        return "no protocol"
    if m.group(1).lower() not in _TK_URL_SCHEMES:
        return f"unknown protocol: {label(m.group(1).lower())}"
    return None


@dataclass
class _TrustKitPolicy:
    """A <domain-config> as TrustKit-Android builds it (DomainPinningPolicy.Builder): one host,
    the text of its *last* <domain>, and settings a nested config inherits from its parent's
    builder when it does not set them, includeSubdomains too (Android does not inherit that)."""

    domain: Node
    include: tuple[bool, Node] | None
    pin_set: _PinSet | None
    enforce: bool = False
    disable_default: tuple[bool, Node] | None = None
    uris: list[Node] | None = None
    config: Node | None = None


def _trustkit_policies(r: _Reader) -> dict[int, _TrustKitPolicy]:
    """TrustKit's reading of every <domain-config> (by id), parents first; a FormatError naming
    the line for what makes TrustKit throw at start (TrustKit.initializeWithNetworkSecurity-
    Configuration: ConfigurationException, IllegalArgumentException, MalformedURLException)."""
    out: dict[int, _TrustKitPolicy] = {}
    for cfg in r.configs:
        if cfg.kind != "domain-config":
            continue
        parent = out.get(id(cfg.parent)) if cfg.parent is not None else None
        last = cfg.domains[-1][2]
        written = last.attrib.get("includeSubdomains")
        include = (written.lower() == "true", last) if written is not None else None
        tk = _TrustKitPolicy(
            last,
            include if written is not None or parent is None else parent.include,
            cfg.pin_set if cfg.pin_set is not None or parent is None else parent.pin_set,
        )
        if cfg.tk is not None:
            value = cfg.tk.attrib.get("enforcePinning")
            tk.enforce = value is not None and value.lower() == "true"
            tk.uris = [c for c in cfg.tk.children if c.tag == "report-uri"]
            tk.config = cfg.tk
            value = cfg.tk.attrib.get("disableDefaultReportUri")
            if value is not None:
                tk.disable_default = (value.lower() == "true", cfg.tk)
        if parent is not None:
            if cfg.tk is None:
                tk.enforce, tk.uris, tk.config = parent.enforce, parent.uris, parent.config
            if tk.disable_default is None:
                tk.disable_default = parent.disable_default
        out[id(cfg)] = tk
        if tk.pin_set is not None:  # without pins TrustKit skips the config
            _trustkit_refusals(r, tk)
    return out


def _trustkit_refusals(r: _Reader, tk: _TrustKitPolicy) -> None:
    problem = _tk_domain_problem(tk.domain.text)
    throws = "TrustKit-Android throws at start, the app does not start"
    if problem is not None:
        raise r.refuse(
            tk.domain,
            f"Tried to pin an invalid domain: {label(tk.domain.text)!r}: {problem} ({throws})",
        )
    assert tk.pin_set is not None
    if tk.enforce and tk.pin_set.texts < 2:
        what = "An empty pin-set" if tk.pin_set.texts == 0 else "Less than two pins"
        where = f"line {tk.config.line}" if tk.config is not None else "its <trustkit-config>"
        raise r.refuse(
            tk.pin_set.node,
            f'{what} for domain {label(tk.domain.text)} with enforcePinning="true" ({where}): '
            f"TrustKit-Android requires a backup pin ({throws})",
        )
    for node in tk.uris or ():
        problem = _tk_report_uri_problem(node.text)
        if problem is not None:
            raise r.refuse(
                node,
                f"report URI {label(node.text)!r}: MalformedURLException: {problem} ({throws})",
            )


def _trustkit_include(
    r: _Reader, tk: _TrustKitPolicy, host: str, node: Node, include: bool
) -> bool:
    """includeSubdomains of `node` as TrustKit reads it (inherited when not written)."""
    if node is not tk.domain or tk.config is None:
        return include
    inherited = tk.include is not None and tk.include[1] is not node
    value = tk.include[0] if tk.include is not None else False
    if inherited and value != include:
        assert tk.include is not None
        r.warn(
            node,
            f"host {host}: TrustKit-Android inherits includeSubdomains="
            f'"{str(value).lower()}" from the enclosing <domain-config> (line '
            f"{tk.include[1].line}), Android 7+ reads it per <domain> "
            f"({str(include).lower()} here): imported as TrustKit reads it",
        )
    return value


def _trustkit_body(
    r: _Reader, tk: _TrustKitPolicy, host: str, node: Node, body: dict[str, Any]
) -> None:
    """TrustKit's settings for the rule of `host` (none when TrustKit does not pin it)."""
    if tk.config is None:
        return
    if node is not tk.domain:
        r.warn(
            node,
            f"host {host}: TrustKit-Android reads only the last <domain> of a <domain-config> "
            f"(line {tk.domain.line}): Android 7+ pins {host}, TrustKit neither pins it below "
            "Android 7 nor reports for it (imported without the <trustkit-config> settings)",
        )
        return
    body["enforce"] = tk.enforce
    disabled = tk.disable_default is not None and tk.disable_default[0]
    if not disabled:
        r.warn(
            tk.config,
            "TrustKit also sends reports to its vendor's default report URI here; not imported",
        )
    uris: list[str] = []
    for uri in tk.uris or ():
        text = uri.text.strip("".join(chr(i) for i in range(33)))
        try:
            checked = common.check_report_uri(text, r.source, uri.where())
        except common.FormatError as exc:
            r.warn(uri, f"{exc.problem}: TrustKit accepts it; not imported")
            continue
        if checked not in uris:
            uris.append(checked)
    body["report_uris"] = uris
