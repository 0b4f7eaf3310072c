"""What Android reads in a Network Security Config, for the importer (`_nsc_import`): the
elements and their attributes (AOSP ``XmlConfigSource``, plus TrustKit Android's
``<trustkit-config>``), the reader that collects the import's warnings, and the warnings for
names Android does not read (with a "did you mean").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

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
