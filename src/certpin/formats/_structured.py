"""XML and property lists from untrusted bytes: bounded in depth and size, DTDs refused, and
every failure a FormatError naming the file and where in it.

The android-nsc and trustkit-android importers read XML through `parse_xml`; ats-plist,
trustkit-ios and mobileconfig read plists through `load_plist`. What is bounded, and why:

* **XML** (expat): elements nest at most `MAX_XML_DEPTH` deep. A DOCTYPE with an internal
  subset is refused: entity declarations are how entity-expansion ("billion laughs") and
  external-entity attacks start, and attribute defaults would change what a file says without
  saying it. External DTDs and entities are never read (parameter-entity parsing is off and no
  external-entity handler loads anything), and a reference to an entity nobody declared is
  refused rather than silently dropped, as expat would do for a document with an external DTD.
* **XML plists**: the same checks run over the file before plistlib parses it, with values
  nested at most `MAX_PLIST_DEPTH` deep and at most `MAX_PLIST_VALUES` of them.
* **Binary plists** can share objects, so a few hundred bytes can describe 2**60 values (arrays
  each holding the previous one twice) or a cycle. Before plistlib builds anything, the object
  graph is walked from the top object with the same depth bound and at most `MAX_PLIST_VALUES`
  values, a shared value counting once per reference. plistlib then never recurses deeper than
  that (its reader is recursive), and the importers only ever look at bounded values.
* Error messages describe untrusted values through `describe` and `label`: the kind, the size
  and a clipped excerpt, never a repr of a whole value (which costs what the value expands to).
"""

from __future__ import annotations

import plistlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn
from xml.parsers import expat

from certpin.formats import _common as common

__all__ = [
    "MAX_PLIST_DEPTH",
    "MAX_PLIST_VALUES",
    "MAX_XML_DEPTH",
    "Node",
    "describe",
    "expect",
    "label",
    "load_plist",
    "load_plist_file",
    "parse_xml",
]

#: How deep XML elements may nest (android-nsc, trustkit-android). Real files use four or five
#: levels (32 nested <domain-config> elements, the importer's own limit, need 35).
MAX_XML_DEPTH = 64
#: How deep plist values may nest: the top dictionary is level 1. Info.plists and profiles use
#: fewer than ten.
MAX_PLIST_DEPTH = 32
#: How many values a plist may hold, a value reached through several references (binary plists)
#: counting once per reference.
MAX_PLIST_VALUES = 100_000

_LABEL = 60


def label(text: str) -> str:
    """An untrusted name (a dictionary key, an element name) for a location: at most 60
    characters, control and line-separator characters replaced by ``?``."""
    return common.one_line(text if len(text) <= _LABEL else text[:_LABEL] + "…")


def describe(value: object) -> str:
    """What an untrusted plist value is, for an error message: its kind, its size, and for a
    scalar a clipped excerpt. Never looks inside a container."""
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, str):
        if len(value) <= _LABEL:
            return f"the string {value!r}"
        return f"a string of {len(value)} characters starting {value[:40]!r}"
    if isinstance(value, bytes | bytearray):
        return f"data of {len(value)} bytes"
    if isinstance(value, int):
        return f"the integer {value}" if abs(value) < 10**15 else "a large integer"
    if isinstance(value, float):
        return f"the real number {value!r}"
    if isinstance(value, dict):
        return f"a dictionary of {len(value)} keys"
    if isinstance(value, list):
        return f"an array of {len(value)} values"
    return f"a {type(value).__name__}"


_KIND_NAMES: dict[type, str] = {
    dict: "a dictionary",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    bytes: "data",
    int: "an integer",
}


def expect(value: Any, kind: type, source: str, location: str) -> Any:
    """`value` if it has the plist type `kind`, else a FormatError naming the key path.

    A boolean is not an integer here (Python's bool subclasses int; plists keep them apart).
    """
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        want = _KIND_NAMES.get(kind, f"a {kind.__name__}")
        raise common.FormatError(
            f"must be {want}, got {describe(value)}", source=source, location=location
        )
    return value


# -- XML ------------------------------------------------------------------------------------------


@dataclass
class Node:
    """An XML element with the line it starts on (ElementTree does not keep line numbers)."""

    tag: str
    attrib: dict[str, str]
    line: int
    children: list[Node] = field(default_factory=list)
    text: str = ""

    @property
    def name(self) -> str:
        """The tag for a message (clipped: a tag may be as long as the file)."""
        return label(self.tag)

    def where(self) -> str:
        return f"line {self.line}, <{self.name}>"

    def iter(self, tag: str) -> Iterator[Node]:
        for child in self.children:
            if child.tag == tag:
                yield child


def _expat(
    data: bytes,
    source: str,
    *,
    max_depth: int,
    too_deep: str,
    start: Callable[[str, dict[str, str], int], None],
    end: Callable[[], None],
    text: Callable[[str], None] | None = None,
    trailing: list[int] | None = None,
) -> None:
    """Run expat over `data` with the refusals of the module docstring; `start(tag, attributes,
    line)`, `end()` and `text(chunk)` see the elements. With `trailing`, content expat refuses
    after the top element has closed is not an error: the byte offset where that element's end
    tag starts is appended to `trailing` instead."""
    parser = expat.ParserCreate()
    depth = 0
    closed: list[int] = []

    def refuse(problem: str) -> NoReturn:
        where = f"line {parser.CurrentLineNumber}, column {parser.CurrentColumnNumber + 1}"
        raise common.FormatError(problem, source=source, location=where)

    def on_start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > max_depth:
            refuse(too_deep)
        start(tag, attrs, parser.CurrentLineNumber)

    def on_end(_tag: str) -> None:
        nonlocal depth
        depth -= 1
        if depth == 0:
            closed.append(parser.CurrentByteIndex)
        end()

    def on_doctype(_name: str, _sysid: str | None, _pubid: str | None, subset: int) -> None:
        if subset:
            refuse(
                "a DOCTYPE with declarations (an internal DTD subset) is not accepted: entity "
                "declarations are how entity-expansion and external-entity attacks start"
            )

    def on_entity_declaration(*_args: object) -> None:
        refuse("XML entity declarations are not accepted")

    def on_skipped_entity(name: str, _is_parameter: int) -> None:
        refuse(f"the entity reference &{label(name)}; is not defined (external DTDs are not read)")

    def on_external_entity(*_args: object) -> int:
        refuse("external entities are not read")

    # Parameter entities (and so an external DTD) are never parsed: the default, made explicit.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = on_doctype
    parser.EntityDeclHandler = on_entity_declaration
    parser.SkippedEntityHandler = on_skipped_entity
    parser.ExternalEntityRefHandler = on_external_entity
    parser.StartElementHandler = on_start
    parser.EndElementHandler = on_end
    if text is not None:
        parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except common.FormatError:
        raise
    except expat.ExpatError as exc:
        if trailing is not None and closed:
            trailing.append(closed[0])
            return
        raise common.FormatError(
            f"invalid XML: {expat.errors.messages[exc.code]}",
            source=source,
            location=f"line {exc.lineno}, column {exc.offset + 1}",
        ) from None
    except (LookupError, ValueError) as exc:  # an encoding declaration expat cannot use
        refuse(f"invalid XML: {common.clip_message(str(exc))}")


def parse_xml(data: bytes, source: str) -> Node:
    """The element tree of `data` (see the module docstring for what is refused)."""
    roots: list[Node] = []
    # Each open element with the pieces of its text: expat reports character data in many
    # callbacks (one per line), and appending to a string each time was quadratic.
    stack: list[tuple[Node, list[str]]] = []

    def start(tag: str, attrs: dict[str, str], line: int) -> None:
        node = Node(tag, dict(attrs), line)
        (stack[-1][0].children if stack else roots).append(node)
        stack.append((node, []))

    def end() -> None:
        node, pieces = stack.pop()
        node.text = "".join(pieces)

    def text(chunk: str) -> None:
        if stack:
            stack[-1][1].append(chunk)

    too_deep = f"XML elements nested more than {MAX_XML_DEPTH} levels deep"
    _expat(
        data, source, max_depth=MAX_XML_DEPTH, too_deep=too_deep, start=start, end=end, text=text
    )
    return roots[0]


# -- property lists -------------------------------------------------------------------------------

_TOO_DEEP = f"values nested more than {MAX_PLIST_DEPTH} levels deep"
_TOO_MANY = (
    f"more than {MAX_PLIST_VALUES} values (a value reached through several references counts "
    "once per reference)"
)


def load_plist(data: bytes, source: str, notes: common.Notes | None = None) -> Any:
    """Parse an XML or binary property list within the bounds of the module docstring.

    XML plists are read as CoreFoundation reads them (CFPropertyList.c, ``parseXMLPropertyList``,
    which Xcode and iOS use): whitespace before ``<?xml`` is skipped, and then the declaration
    is not looked at (the file is read as UTF-8), where a conforming XML parser refuses the
    file; the top value may be a bare ``<dict>`` without the ``<plist>`` wrapper; CF stops at
    the end of the first element ("we do not verify that there was only one element, so a file
    that has garbage after the first element will nonetheless successfully parse"), so text
    after ``</plist>`` is ignored. Whitespace before the declaration and text after the top
    element are reported through `notes`.
    """
    if data.startswith(b"bplist00"):
        _walk_binary(data, source)
        fmt, where = plistlib.FMT_BINARY, "binary property list"
    else:
        data = _xml_prolog_as_corefoundation_reads_it(data, source, notes)
        data = _scan_xml_plist(data, source, notes)
        fmt, where = plistlib.FMT_XML, "XML property list"
    try:
        return plistlib.loads(data, fmt=fmt)
    except Exception as exc:
        # plistlib documents InvalidFileException, but its readers let ValueError, IndexError,
        # TypeError (an unhashable key) and others through on hostile input. The structure was
        # bounded above, so anything raised here means the file is not a valid plist.
        problem = common.clip_message(str(exc)) or type(exc).__name__
        raise common.FormatError(
            f"not a valid property list: {problem}", source=source, location=where
        ) from None


def load_plist_file(data: bytes, source: str, cap: int, notes: common.Notes) -> dict[str, Any]:
    """An imported plist file: at most `cap` bytes, parsed by `load_plist`, with a dictionary
    at the top level (what the ats-plist, trustkit-ios and mobileconfig importers start from)."""
    common.check_size(data, source, cap)
    top: dict[str, Any] = expect(load_plist(data, source, notes), dict, source, "the top level")
    return top


_BOM = b"\xef\xbb\xbf"
_XML_SPACE = b" \t\r\n"


def _xml_prolog_as_corefoundation_reads_it(
    data: bytes, source: str, notes: common.Notes | None
) -> bytes:
    """`data` with whitespace before ``<?xml`` handled as CoreFoundation does: the declaration
    is dropped (CF only honours one at the very start; after whitespace it reads UTF-8) and the
    whitespace kept, so line numbers stay those of the file. Anything else is returned as is."""
    bom = _BOM if data.startswith(_BOM) else b""
    body = data[len(bom) :]
    text = body.lstrip(_XML_SPACE)
    if len(text) == len(body) or not text.startswith(b"<?xml"):
        return data
    end = text.find(b"?>")
    if end < 0:
        return data  # expat names the unterminated declaration
    space = body[: len(body) - len(text)]
    if notes is not None:
        notes.warn(
            f"{source}: line 1",
            "whitespace before <?xml: XML parsers refuse the file, Xcode and iOS "
            "(CoreFoundation) skip it and read the file as UTF-8; read the same way",
        )
    # An encoding other than UTF-8 in a declaration CF does not read: reading the bytes as
    # UTF-8 is what CF does, and expat then fails on them as CF would.
    return bom + space + text[end + 2 :]


def _scan_xml_plist(data: bytes, source: str, notes: common.Notes | None) -> bytes:
    """`data` checked within the bounds, cut after the top element when text CF ignores (and
    an XML parser refuses) follows it."""
    count = 0
    first: list[str] = []

    def start(tag: str, _attrs: dict[str, str], line: int) -> None:
        nonlocal count
        if not first:
            first.append(tag)
        if tag == "key" and first == ["key"]:
            # CoreFoundation takes the first element as the whole property list: a pasted
            # fragment that starts with <key> is one string to it, so it pins nothing.
            raise common.FormatError(
                "a fragment that starts with <key>: Xcode reads only its first element (one "
                "string); wrap the keys and values in <plist><dict> … </dict></plist>",
                source=source,
                location=f"line {line}",
            )
        if tag not in ("plist", "key"):
            count += 1
            if count > MAX_PLIST_VALUES:
                raise common.FormatError(_TOO_MANY, source=source, location=f"line {line}")

    # <plist> is one element level above the top value.
    trailing: list[int] = []
    _expat(
        data,
        source,
        max_depth=MAX_PLIST_DEPTH + 1,
        too_deep=_TOO_DEEP,
        start=start,
        end=_nop,
        trailing=trailing,
    )
    if not trailing:
        return data
    cut = data.find(b">", trailing[0]) + 1
    rest = data[cut:]
    junk = cut + len(rest) - len(rest.lstrip(_XML_SPACE))
    line = data.count(b"\n", 0, junk) + 1
    if notes is not None:
        shown = rest.strip(_XML_SPACE)[:40].decode("utf-8", "replace")
        notes.warn(
            f"{source}: line {line}",
            f"text after the end of the top element ({label(shown)!r}…): XML parsers refuse "
            "the file, Xcode and iOS (CoreFoundation) stop reading at the end of the top "
            "element and ignore the rest; ignored too",
        )
    return data[:cut]


def _nop() -> None:
    pass


_TRAILER = struct.Struct(">6xBBQQQ")
_ARRAY, _DICT, _ASCII, _UTF16 = 0xA, 0xD, 0x5, 0x6


def _walk_binary(data: bytes, source: str) -> None:
    """Walk a binary plist's object graph the way plistlib's reader will (same trailer, same
    offsets, same size encoding), refusing what is out of bounds, naming its key path."""
    end = len(data) - _TRAILER.size

    def refuse(problem: str, location: str) -> NoReturn:
        raise common.FormatError(problem, source=source, location=location)

    if end < 8:
        refuse("truncated binary property list", f"byte {len(data)}")
    offset_size, ref_size, count, top, table = _TRAILER.unpack_from(data, end)
    if not offset_size or not ref_size or top >= count or table + count * offset_size > end:
        refuse("invalid trailer (sizes, object count or offset table)", f"byte {end}")

    def number(at: int, size: int) -> int:
        if at + size > end:
            refuse("the object table is truncated", f"byte {at}")
        return int.from_bytes(data[at : at + size], "big")

    def header(ref: int) -> tuple[int, int, int]:
        """(kind, size, where the contents start) of object `ref`."""
        at = number(table + ref * offset_size, offset_size)
        if at >= end:
            refuse(f"object {ref} lies outside the object table", f"byte {at}")
        kind, size = data[at] >> 4, data[at] & 0xF
        at += 1
        if size == 0xF and kind in (0x4, _ASCII, _UTF16, _ARRAY, _DICT):
            if at >= end:
                refuse("the object table is truncated", f"byte {at}")
            width = 1 << (data[at] & 0x3)  # as plistlib reads it: the low bits give the width
            size = number(at + 1, width)
            at += 1 + width
        return kind, size, at

    # labels[i] = (parent index, text) of the i-th value reached; the path of a value is built
    # only for an error message.
    labels: list[tuple[int, str]] = [(-1, "")]

    def path(node: int) -> str:
        parts = []
        while node > 0:
            node, text = labels[node]
            parts.append(text)
        joined = "".join(reversed(parts)).lstrip(".")
        if len(joined) > 200:
            joined = joined[:90] + "…" + joined[-100:]
        return joined or "the top level"

    def key_text(ref: int, node: int) -> str:
        kind, size, at = header(ref)
        if kind == _ASCII:
            return data[at : at + min(size, _LABEL)].decode("ascii", "replace")
        if kind == _UTF16:
            return data[at : at + 2 * min(size, _LABEL)].decode("utf-16-be", "replace")
        refuse("a dictionary key is not a string", path(node))

    stack = [(top, 1, 0)]  # (object, depth, index in labels)
    while stack:
        ref, depth, node = stack.pop()
        kind, size, at = header(ref)
        if kind not in (_ARRAY, _DICT) or size == 0:
            continue
        if depth >= MAX_PLIST_DEPTH:
            refuse(_TOO_DEEP, path(node))
        if len(labels) + size > MAX_PLIST_VALUES:
            refuse(_TOO_MANY, path(node))
        n_refs = 2 * size if kind == _DICT else size  # a dictionary lists its keys, then values
        refs = [number(at + i * ref_size, ref_size) for i in range(n_refs)]
        for r in refs:
            if r >= count:
                refuse(f"a reference to object {r} of {count}", path(node))
        if kind == _ARRAY:
            named = [(f"[{i}]", r) for i, r in enumerate(refs)]
        else:
            pairs = zip(refs[:size], refs[size:], strict=True)
            named = [("." + label(key_text(key, node)), value) for key, value in pairs]
        for text, child in named:
            labels.append((node, text))
            stack.append((child, depth + 1, len(labels) - 1))
