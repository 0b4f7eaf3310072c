"""Reading a Network Security Config the way Android does (``android-nsc``, ``trustkit-android``).

The rule (docs/formats.md, "Android Network Security Config"): a file Android loads imports
(exit 0), with Android's meaning for every rule that can match, and a warning naming the line
for everything odd; only a file Android itself refuses (its ``XmlConfigSource`` throws a
``ParserException`` and the app fails to start networking) is a FormatError naming the line.
What Android does, from AOSP ``android.security.net.config.XmlConfigSource``:

* **Refused** (FormatError): a root other than ``<network-security-config>``; two
  ``<base-config>`` or ``<debug-overrides>``; ``<domain>``, ``<pin-set>`` or a nested
  ``<domain-config>`` outside a ``<domain-config>``; a ``<domain-config>`` without ``<domain>``;
  a ``<domain>`` without text or with child elements; the same domain twice (after trimming and
  lower-casing); two ``<pin-set>`` or two ``<trust-anchors>`` in one config; a ``<pin>`` whose
  ``digest`` is not ``SHA-256`` (any case), without text, with child elements, or whose base64
  ``android.util.Base64`` refuses or which is not 32 bytes; an ``expiration`` SimpleDateFormat
  (``yyyy-MM-dd``, not lenient) cannot read; ``<certificates>`` without ``src`` or with a ``src``
  other than ``system``, ``user``, ``wfa`` or a resource; ``<certificateTransparency>``
  (Android 16) inside ``<debug-overrides>``.
* **Ignored by Android**, so warned and left out: unknown elements and attributes (with a "did
  you mean"), ``<pin>`` outside ``<pin-set>``, namespaced attributes (``tools:`` ones quietly:
  the build tools strip them), values that are not booleans (Android reads the default).
* **Loaded with a meaning worth saying**: base64 Android decodes leniently (canonical form
  imported), a lenient ``expiration`` (``2026-1-5``, trailing text), an expired pin-set (not
  enforced: the host is not pinned on devices today), an empty ``<pin-set>``, a domain no host
  name can equal (the rule protects nothing: left out), ``overridePins`` trust anchors (the
  host is effectively unpinned for those CAs), user and app-bundled CA anchors,
  ``cleartextTrafficPermitted``, ``<certificateTransparency>``, ``<debug-overrides>``.

Inheritance as in Android: a nested ``<domain-config>`` takes its parent's pin-set (with its
expiration), trust anchors, ``cleartextTrafficPermitted`` and ``<certificateTransparency>``
when it has none of its own; a top-level one takes them from ``<base-config>`` (trust anchors,
cleartext, CT), wherever in the file that is.

A file with a ``<trustkit-config>`` is also read as TrustKit-Android reads it
(``_nsc_schema._trustkit_policies``): what makes TrustKit throw at start is a FormatError naming
the line, and its inheritance (includeSubdomains too; only the last ``<domain>`` of a config)
is TrustKit's, warned where Android reads the file differently.

Linear: every element is visited once; an inherited value is looked up through at most
`MAX_NESTING` parents.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from certpin.formats import _common as common
from certpin.formats._lenient import expired, platform_pin, unmatchable_domain
from certpin.formats._nsc_schema import (
    _BASE,
    _DEBUG,
    _DOMAIN,
    _ROOT,
    _Anchor,
    _android_bool,
    _attributes,
    _Config,
    _no_children,
    _PinSet,
    _Reader,
    _trustkit_body,
    _trustkit_bool,
    _trustkit_include,
    _trustkit_policies,
    _TrustKitPolicy,
    _unknown_element,
)
from certpin.formats._structured import Node, label, parse_xml

__all__ = ["MAX_BYTES", "MAX_NESTING", "import_nsc"]

#: how deep <domain-config> elements may nest (real files use one or two levels; the limit keeps
#: a hostile file from exhausting the stack).
MAX_NESTING = 32
#: The import size cap: a network_security_config.xml is a few kilobytes.
MAX_BYTES = 1024 * 1024

#: String.trim(): every character up to U+0020.
_JAVA_SPACE = "".join(chr(i) for i in range(33))
#: SimpleDateFormat("yyyy-MM-dd"), not lenient: three numbers, any number of digits each,
#: anything after the day ignored (DateFormat.parse(String) reads a prefix).
_DATE = re.compile(r"([0-9]++)-([0-9]++)-([0-9]++)")
_MAX_DATE_DIGITS = 9


def import_nsc(data: bytes, source: str, options: common.ImportOptions) -> common.ImportResult:
    common.check_size(data, source, MAX_BYTES)
    root = parse_xml(data, source)
    if root.tag != _ROOT:
        raise common.FormatError(
            f"the root element must be <{_ROOT}>, got <{root.name}> (Android refuses the file)",
            source=source,
            location=root.where(),
        )
    r = _Reader(source, common.Notes(), options)
    _check_nesting(r, root)
    _attributes(r, root)
    for child in root.children:
        if child.tag == _BASE:
            if r.base is not None:
                raise r.refuse(child, "Only one base-config allowed (Android refuses the file)")
            r.base = _config(r, child, _BASE, None, 1)
        elif child.tag == _DOMAIN:
            _config(r, child, _DOMAIN, None, 1)
        elif child.tag == _DEBUG:
            if r.debug is not None:
                raise r.refuse(child, "Only one debug-overrides allowed (Android refuses the file)")
            r.debug = _config(r, child, _DEBUG, None, 1)
        else:
            _unknown_element(r, child, root)
    if r.debug is not None:
        _debug_note(r, r.debug)
    domains: dict[str, dict[str, Any]] = {}
    lines: dict[str, str] = {}
    tk_policies = _trustkit_policies(r) if r.trustkit else {}
    for cfg in r.configs:
        if cfg.kind == _DOMAIN:
            for domain, include, node in cfg.domains:
                _rule(r, cfg, domain, include, node, domains, lines, tk_policies.get(id(cfg)))
    version = common.version_from_comment(data.decode("utf-8", "replace"), source)
    return common.build_policy(domains, source, r.notes, version, where=lines)


# -- structure ------------------------------------------------------------------------------------


def _check_nesting(r: _Reader, root: Node) -> None:
    """The depth bound first, before anything is read (one pass, no recursion)."""
    stack = [(child, 1) for child in reversed(root.children) if child.tag == _DOMAIN]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise r.refuse(node, f"<domain-config> nested more than {MAX_NESTING} levels deep")
        stack += [(c, depth + 1) for c in reversed(node.children) if c.tag == _DOMAIN]
        r.trustkit = r.trustkit or any(c.tag == "trustkit-config" for c in node.children)


def _config(r: _Reader, node: Node, kind: str, parent: _Config | None, depth: int) -> _Config:
    _attributes(r, node)
    cfg = _Config(node, kind, parent)
    # Parents before children, as Android builds them.
    r.configs.append(cfg)
    value = _android_bool(r, node, "cleartextTrafficPermitted")
    if value is not None:
        cfg.cleartext = (value, node)
    for child in node.children:
        tag = child.tag
        if tag == "domain":
            if kind != _DOMAIN:
                raise r.refuse(child, f"domain element not allowed in {kind} (Android refuses it)")
            cfg.domains.append(_domain(r, child))
        elif tag == "pin-set":
            if kind != _DOMAIN:
                raise r.refuse(child, f"pin-set element not allowed in {kind} (Android refuses it)")
            if cfg.pin_set is not None:
                raise r.refuse(child, "Multiple pin-set elements not allowed (Android refuses it)")
            cfg.pin_set = _pin_set(r, child)
        elif tag == "trust-anchors":
            if cfg.anchors is not None:
                raise r.refuse(
                    child, "Multiple trust-anchor elements not allowed (Android refuses it)"
                )
            cfg.anchors = _anchors(r, child, kind)
        elif tag == _DOMAIN:
            if kind != _DOMAIN:
                raise r.refuse(
                    child, f"Nested domain-config not allowed in {kind} (Android refuses it)"
                )
            _config(r, child, _DOMAIN, cfg, depth + 1)
        elif tag == "certificateTransparency":
            if kind == _DEBUG:
                raise r.refuse(
                    child, f"certificateTransparency not allowed in {kind} (Android 16 refuses it)"
                )
            _attributes(r, child)
            _no_children(r, child)
            cfg.ct = (bool(_android_bool(r, child, "enabled")), child)
        elif tag == "trustkit-config" and kind == _DOMAIN:
            if cfg.tk is not None:
                r.warn(
                    child,
                    "a second <trustkit-config> in one <domain-config>: TrustKit reads "
                    "the last one only",
                )
            cfg.tk = child
            _trustkit_structure(r, child)
        else:
            _unknown_element(r, child, node)
    if kind == _DOMAIN and not cfg.domains:
        raise r.refuse(
            node,
            "a <domain-config> needs at least one <domain> (Android refuses the file: "
            "No domain elements in domain-config)",
        )
    return cfg


def _domain(r: _Reader, node: Node) -> tuple[str, bool, Node]:
    _attributes(r, node)
    if node.children:
        raise r.refuse(node, "domain contains additional elements (Android refuses the file)")
    if not node.text:
        raise r.refuse(node, "Domain name missing (Android refuses the file)")
    domain = node.text.strip(_JAVA_SPACE).lower()
    if domain in r.seen:
        raise r.refuse(
            node,
            f"{common.clip(domain)} has already been specified at line {r.seen[domain]} "
            "(Android refuses the file)",
        )
    r.seen[domain] = node.line
    return domain, bool(_android_bool(r, node, "includeSubdomains")), node


def _pin_set(r: _Reader, node: Node) -> _PinSet:
    _attributes(r, node)
    text = node.attrib.get("expiration")
    expires = None if text is None else _expiration(r, node, text)
    pins: list[str] = []
    texts: set[str] = set()
    for child in node.children:
        if child.tag != "pin":
            _unknown_element(r, child, node)
            continue
        _attributes(r, child)
        digest = child.attrib.get("digest")
        if digest is None or digest.lower() != "sha-256":
            raise r.refuse(
                child,
                f'<pin digest="{label(digest or "")}">: Android only accepts digest="SHA-256" '
                "(Unsupported pin digest algorithm: it refuses the file)",
            )
        if digest != "SHA-256" and r.trustkit:
            raise r.refuse(
                child,
                f'<pin digest="{label(digest)}">: TrustKit-Android only accepts digest="SHA-256" '
                "(Unexpected digest value: it throws at start)",
            )
        if digest != "SHA-256":
            r.warn(
                child,
                f'digest="{label(digest)}": Android accepts any case, but TrustKit-Android only '
                '"SHA-256" (it refuses the configuration)',
            )
        if child.children:
            raise r.refuse(child, "pin contains additional elements (Android refuses the file)")
        if not child.text:
            raise r.refuse(child, "Missing pin digest (Android refuses the file)")
        texts.add(child.text)
        pin = platform_pin(
            child.text.strip(_JAVA_SPACE),
            platform="android",
            notes=r.notes,
            where=r.where(child),
            source=r.source,
            location=child.where(),
        )
        if str(pin) in pins:
            r.warn(child, f"pin {pin} is listed twice in this <pin-set>: it counts once")
        else:
            pins.append(str(pin))
    return _PinSet(node, pins, expires, len(texts))


def _expiration(r: _Reader, node: Node, text: str) -> dt.date | None:
    m = _DATE.match(text)
    invalid = (
        f"invalid date {common.clip(text)}: Android reads expiration as yyyy-MM-dd "
        "(SimpleDateFormat, not lenient) and refuses the file"
    )
    if m is None or any(len(g) > _MAX_DATE_DIGITS for g in m.groups()):
        raise r.refuse(node, invalid)
    year, month, day = (int(g) for g in m.groups())
    if year > 9999 and 1 <= month <= 12 and 1 <= day <= 31:
        r.warn(
            node,
            f"expiration={common.clip(text)} is after the year 9999: the pins never expire "
            "(imported without expires)",
        )
        return None
    try:
        date = dt.date(year, month, day)
    except ValueError:
        raise r.refuse(node, invalid) from None
    if text != date.isoformat():
        r.warn(
            node,
            f"expiration={common.clip(text)} is not YYYY-MM-DD: Android reads it as "
            f"{date.isoformat()}, imported as that",
        )
    return date


def _anchors(r: _Reader, node: Node, kind: str) -> list[_Anchor]:
    _attributes(r, node)
    out = []
    for child in node.children:
        if child.tag != "certificates":
            _unknown_element(r, child, node)
            continue
        _attributes(r, child)
        _no_children(r, child)
        src = child.attrib.get("src")
        if src is None:
            raise r.refuse(
                child, "certificates element missing src attribute (Android refuses the file)"
            )
        if src not in ("system", "user", "wfa") and not src.startswith("@"):
            raise r.refuse(
                child,
                f'src="{label(src)}": Unknown certificates src, should be one of '
                "system|user|@resourceVal (Android refuses the file)",
            )
        # In <debug-overrides> overridePins defaults to true (XmlConfigSource).
        override = _android_bool(r, child, "overridePins")
        out.append(_Anchor(src, kind == _DEBUG if override is None else override, child.line))
    return out


def _trustkit_structure(r: _Reader, node: Node) -> None:
    _attributes(r, node)
    for name in ("enforcePinning", "disableDefaultReportUri"):
        _trustkit_bool(r, node, name)  # for its warning: _trustkit_policies reads the value
    for child in node.children:
        if child.tag == "report-uri":
            _attributes(r, child)
            _no_children(r, child)
        else:
            _unknown_element(r, child, node)


# -- rules ----------------------------------------------------------------------------------------


def _inherited(cfg: _Config, attr: str, base: _Config | None) -> Any:
    """`attr` of the nearest config up the chain that sets it, ending at <base-config>."""
    current: _Config | None = cfg
    while current is not None:
        value = getattr(current, attr)
        if value is not None:
            return value
        current = current.parent
    return getattr(base, attr) if base is not None else None


def _rule(
    r: _Reader,
    cfg: _Config,
    domain: str,
    include: bool,
    node: Node,
    domains: dict[str, dict[str, Any]],
    lines: dict[str, str],
    tk: _TrustKitPolicy | None,
) -> None:
    pin_set: _PinSet | None = _inherited(cfg, "pin_set", None)
    if pin_set is None:
        r.warn(node, f"{common.clip(domain)} has no <pin-set>: not pinned")
        return
    if not pin_set.pins:
        r.warn(
            node,
            f"host {common.clip(domain)} is NOT pinned on Android: its <pin-set> "
            f"(line {pin_set.node.line}) holds no <pin> (an empty pin-set pins nothing)",
        )
        return
    reason = unmatchable_domain(domain)
    if reason is not None:
        r.warn(
            node,
            f"host {_intended(domain)} is NOT pinned on Android today: {common.clip(domain)} "
            f"can never match a host name ({reason}); rule left out",
        )
        return
    try:
        host = common.check_host(domain, r.source, node.where())
    except common.FormatError as exc:
        r.warn(
            node,
            f"{common.clip(domain)} is pinned on Android, but certpin cannot hold this host "
            f"name ({exc.problem}): rule left out",
        )
        return
    if host in domains:
        raise r.refuse(node, f"domain {host!r} is already configured at {lines[host]}")
    if tk is not None:
        include = _trustkit_include(r, tk, host, node, include)
    body: dict[str, Any] = {"pins": list(pin_set.pins), "include_subdomains": include}
    if pin_set.expires is not None:
        body["expires"] = pin_set.expires.isoformat()
        if expired(pin_set.expires, r.options):
            r.warn(
                node,
                f"host {host}: its <pin-set> expired on {pin_set.expires.isoformat()} "
                f"(line {pin_set.node.line}): Android no longer enforces these pins, so {host} "
                "is NOT pinned on devices today (imported with that expires; certpin lint "
                "reports it as CP104)",
            )
    _trust_notes(r, cfg, host, node)
    if tk is not None:
        _trustkit_body(r, tk, host, node, body)
    domains[host] = body
    lines[host] = f"{r.source}: line {node.line}"


def _trust_notes(r: _Reader, cfg: _Config, host: str, node: Node) -> None:
    anchors: list[_Anchor] | None = _inherited(cfg, "anchors", r.base)
    for anchor in anchors or ():
        what = _src_name(anchor.src)
        if anchor.override:
            r.warn(
                node,
                f"host {host} is effectively unpinned on Android for certificates that chain "
                f'to {what}: <certificates src="{label(anchor.src)}" overridePins="true"> '
                f"(line {anchor.line}) lets them bypass the pin-set. certpin has no trust "
                "store that bypasses pins: the imported rule pins them too (stricter than the "
                "app)",
            )
        elif anchor.src == "user":
            r.warn(
                node,
                f'host {host} trusts user-installed CAs (<certificates src="user">, line '
                f"{anchor.line}); the pins still apply to their certificates, as in certpin",
            )
        elif anchor.src != "system":
            r.warn(
                node,
                f"host {host} trusts {what} (line {anchor.line}): a certpin policy holds no "
                "trust anchors; give the client that CA (cafile=…) or it refuses the chain "
                "before the pins are checked",
            )
    for attr, written, consequence in _FLAG_NOTES:
        flag: tuple[bool, Node] | None = _inherited(cfg, attr, r.base)
        if flag is not None and flag[0]:
            r.warn(node, f"host {host}: {written} (line {flag[1].line}): {consequence}")


#: Inherited flags that, when true, mean something a certpin policy does not carry:
#: (the `_Config` attribute, the setting as written, what it means for the imported policy).
_FLAG_NOTES = (
    (
        "cleartext",
        'cleartextTrafficPermitted="true"',
        "the app may use plain http:// to it, where no pin applies (certpin pins TLS "
        "connections only)",
    ),
    (
        "ct",
        '<certificateTransparency enabled="true">',
        "Android 16+ also requires Certificate Transparency for it; a certpin policy does "
        "not carry that requirement (not imported)",
    ),
)


def _src_name(src: str) -> str:
    return {
        "system": "the system CAs",
        "user": "user-installed CAs",
        "wfa": "the Wi-Fi Alliance CAs",
    }.get(src, f"the CA certificates of {label(src)}")


def _debug_note(r: _Reader, debug: _Config) -> None:
    if not debug.anchors:
        return
    bypass = [a for a in debug.anchors if a.override]
    names = ", ".join(sorted({_src_name(a.src) for a in debug.anchors}))
    effect = (
        "certificates that chain to them bypass the pins of every host (overridePins is "
        "true by default here)"
        if bypass
        else "they are trusted too, and the pins still apply"
    )
    r.warn(
        debug.node,
        f"<debug-overrides> trusts {names}: only debuggable builds read it, and there {effect}; "
        "release builds ignore it. Not imported",
    )


def _intended(domain: str) -> str:
    """The host a domain that cannot match probably meant (for the warning), else the text."""
    host = domain.split("://", 1)[-1].split("/", 1)[0].strip()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.strip(".")
    if host and unmatchable_domain(host) is None:
        return host
    return common.clip(domain)
