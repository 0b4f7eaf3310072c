"""Policy documents as text: reading TOML and JSON within limits, and writing TOML.

Reading: every policy file (`Policy.from_file`) and the monitor's state file are read through
`read_document`, `parse_toml` / `parse_json` and `check_structure`, so each is bounded the same way
(docs/policy.md, "Limits"), and each refusal is a `DocumentError` naming the line and column (or
the key path) and the limit:

* size: a file is read up to its cap and refused past it, before anything is decoded;
* nesting: ``tomllib`` and ``json`` recurse once per ``[`` / ``{``. A RecursionError is not an
  answer, and ``json``'s C scanner recursing 10 000 levels on a thread with a small stack can
  crash the interpreter before Python's limit is reached. So a linear scan of the text refuses
  deep nesting *before* the parser runs;
* dotted keys: ``tomllib`` takes time quadratic in the parts of one dotted key or table header
  (100 000 parts: over a minute), so the same scan bounds them;
* numbers and bare words: at most `MAX_WORD` characters, so Python's ``int()`` never meets its
  4 300-digit limit (a ValueError of its own) and a ``0x`` number of a million digits never
  becomes a huge integer.

Writing (`dump_policy`): the standard library reads TOML but does not write it. The output is the
canonical form of a `Policy`: `Policy.from_file` reads it back into an equal policy. Comments of a
hand-written file are not carried over.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from certpin._errors import ConfigurationError
from certpin.core.times import toml_datetime

if TYPE_CHECKING:
    from certpin.core.policy import Policy

__all__ = [
    "MAX_DEPTH",
    "MAX_WORD",
    "DocumentError",
    "check_structure",
    "dump_policy",
    "key_text",
    "one_line",
    "parse_json",
    "parse_toml",
    "read_document",
    "shown",
    "size_text",
    "toml_string",
]

#: containers nested in one document, the top-level table/object counting as one. A policy
#: needs 4 (document, ``domains``, a rule, its ``pins``); a state file 4 as well.
MAX_DEPTH = 32
#: characters in one number or bare key (a host label has at most 63).
MAX_WORD = 100
#: integers in a document must fit in 64 bits (signed): version numbers and timestamps do.
_INT_LIMIT = 2**63


class DocumentError(ConfigurationError):
    """A document over a limit, or that does not parse.

    Attributes:
        problem: what is wrong, without the position.
        line, column: 1-based position in the text, or None when the position is a key path.
        path: the dotted key path of the offending value (``""`` when `line` is set).
        syntax: True when the text is not valid TOML/JSON at all, False for a limit.
    """

    def __init__(
        self,
        problem: str,
        *,
        line: int | None = None,
        column: int | None = None,
        path: str = "",
        syntax: bool = False,
    ) -> None:
        self.problem = problem
        self.line = line
        self.column = column
        self.path = path
        self.syntax = syntax
        super().__init__(f"{self.where}: {problem}" if self.where else problem)

    @property
    def where(self) -> str:
        """``line L, column C``, the key path, or ``""``."""
        return f"line {self.line}, column {self.column}" if self.line is not None else self.path

    def described(self, what: str = "") -> str:
        """The problem for a message naming the file: ``[where: ][what ]problem``; `what` is
        the document (``"the state file"``) or a label (``"not JSON:"``)."""
        where = f"{self.where}: " if self.where else ""
        return f"{where}{what} {self.problem}" if what else f"{where}{self.problem}"


def size_text(limit: int) -> str:
    """``16 MiB (16777216 bytes)``: a cap as people and scripts both read it."""
    if limit % 2**20 == 0:
        return f"{limit // 2**20} MiB ({limit} bytes)"
    return f"{limit} bytes"


def read_document(path: str | os.PathLike[str], limit: int) -> str:
    """The text of a UTF-8 file of at most `limit` bytes, a leading byte-order mark dropped.

    Problems read as the end of a sentence about the file (``"is larger than …"``).

    Raises:
        OSError: the file cannot be read.
        DocumentError: the file is larger than `limit`, or not UTF-8 (the line and column of
            the first bad byte are named).
    """
    with open(path, "rb") as file:
        # Never more than the cap in memory, whatever the file is (a huge log, /dev/zero).
        data = file.read(limit + 1)
    if len(data) > limit:
        raise DocumentError(f"is larger than the {size_text(limit)} limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise DocumentError(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x}: {exc.reason})",
            line=line,
            column=column,
        ) from None
    # RFC 8259 §8.1 lets a parser ignore a byte-order mark, and editors on Windows write one.
    return text.removeprefix("\ufeff")


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of `offset` (error paths only: it counts from the start)."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def _too_deep(text: str, offset: int, max_depth: int) -> DocumentError:
    line, column = _position(text, offset)
    return DocumentError(f"nested more than {max_depth} levels deep", line=line, column=column)


def _too_long(text: str, offset: int, what: str) -> DocumentError:
    line, column = _position(text, offset)
    return DocumentError(f"{what} longer than {MAX_WORD} characters", line=line, column=column)


# -- the linear pre-scans ------------------------------------------------------------------------
#
# Each token pattern matches at every position and never fails once started: an unterminated
# string runs to the end of the text instead of failing and being retried from a later
# position. So the text is cut into tokens in one pass, each character read a bounded number of
# times (possessive quantifiers: no backtracking). An invalid document may be cut differently
# from what its parser would make of it; the parser then refuses it anyway.

_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.?)*+"?|[\[\]{}]|[^"\[\]{}]++', re.DOTALL)
# The lookbehinds let only the first character of a run start a long-word match: without them a
# run of 100 characters was scanned again from each of its characters.
_JSON_BAD_WORD = re.compile(rf"(?<![-+0-9A-Za-z.])[-+0-9A-Za-z.]{{{MAX_WORD + 1}}}|NaN|Infinity")

_TOML_TOKEN = re.compile(
    r'"""(?:[^"\\]++|\\.?|"(?!""))*+(?:"{3,5}+|\Z)'
    r"|'''(?:[^']++|'(?!''))*+(?:'{3,5}+|\Z)"
    r'|"(?:[^"\\\n]++|\\.?)*+"?'
    r"|'[^'\n]*+'?"
    r"|#[^\n]*+"
    r"|[\[\]{}.]"
    r"|[^\"'#\[\]{}.]++",
    re.DOTALL,
)
#: what may stand between two dots of one dotted key, besides a quoted part.
_TOML_KEY_PART = re.compile(r"[ \t]*+[A-Za-z0-9_-]*+[ \t]*+")
_TOML_LONG_WORD = re.compile(rf"(?<![-+0-9A-Za-z_])[-+0-9A-Za-z_]{{{MAX_WORD + 1}}}")


def _scan_json(text: str, max_depth: int) -> None:
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        start = token.start()
        char = text[start]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise _too_deep(text, start, max_depth)
        elif char in "]}":
            depth = max(depth - 1, 0)  # an unbalanced close is the parser's to report
        elif (bad := _JSON_BAD_WORD.search(text, start, token.end())) is not None:
            if bad[0] in ("NaN", "Infinity"):
                line, column = _position(text, bad.start())
                raise DocumentError(f"{bad[0]} is not JSON", line=line, column=column, syntax=True)
            raise _too_long(text, bad.start(), "a number")


def _scan_toml(text: str, max_depth: int) -> None:
    depth = 1  # the document itself is a table
    dots = 0  # dots so far in the dotted key (or table header) being read
    for token in _TOML_TOKEN.finditer(text):
        start = token.start()
        char = text[start]
        if char in "\"'":
            continue  # a string: a quoted part of a dotted key, or a value
        if char == ".":
            dots += 1
            # n dots: n + 1 tables, below the document and any table header.
            if dots >= max_depth:
                raise _too_deep(text, start, max_depth)
        elif char in "[{":
            depth += 1
            dots = 0
            if depth > max_depth:
                raise _too_deep(text, start, max_depth)
        elif char in "]}":
            depth = max(depth - 1, 1)
            dots = 0
        elif char == "#":
            dots = 0
        else:
            end = token.end()
            if not _TOML_KEY_PART.fullmatch(text, start, end):
                dots = 0  # "=", ",", a new line...: the dotted key ended
            if (long := _TOML_LONG_WORD.search(text, start, end)) is not None:
                raise _too_long(text, long.start(), "a number or bare key")


# -- parsing -------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        # TOML refuses a repeated key; JSON parsers disagree on which one wins. A reviewer
        # reads the first, json keeps the last: refuse, as TOML does.
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise DocumentError(f"duplicate key {shown(key)}", syntax=True)
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise DocumentError(f"{name} is not JSON", syntax=True)


def parse_json(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text within the limits: nesting, number length, no NaN/Infinity, no
    repeated key.

    Raises:
        DocumentError: the text is not such JSON; the line and column are named.
    """
    _scan_json(text, max_depth)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except DocumentError:
        raise
    except json.JSONDecodeError as exc:
        raise DocumentError(exc.msg, line=exc.lineno, column=exc.colno, syntax=True) from None
    except (RecursionError, ValueError) as exc:  # Defensive: the scan refuses what raises these
        raise DocumentError(f"cannot be parsed ({type(exc).__name__})") from None


def parse_toml(text: str, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse TOML text within the limits (nesting, dotted key parts, number length).

    Raises:
        DocumentError: the text is not such TOML; `problem` is tomllib's message, which ends
            with the line and column (or `line`/`column` are set, for a limit).
    """
    _scan_toml(text, max_depth)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DocumentError(str(exc), syntax=True) from None
    except (RecursionError, ValueError) as exc:  # Defensive: the scan refuses what raises these
        raise DocumentError(f"cannot be parsed ({type(exc).__name__})") from None
    # Table headers and dotted keys nest without brackets; only the parsed document shows how
    # deep they went. (The scan kept each dotted key short, so this walk is all that remains.)
    check_structure(data, max_depth)
    return data


# -- the structure -------------------------------------------------------------------------------

#: values a TOML or JSON parser makes, besides containers and integers.
_SCALARS = (str, bool, float, dt.date, dt.time, type(None))
#: keys besides strings that `json.dumps` writes (messages quote keys with it): documents built
#: in code may use them, and the policy's own checks then say what is wrong with them.
_KEY_SCALARS = (int, float, type(None))
#: a key path, innermost last, as a linked list (extending it costs O(1) per value).
_Path = tuple["_Path", object] | tuple[str] | None


def check_structure(
    document: Any, max_depth: int = MAX_DEPTH, *, depth: int = 1, path: str = ""
) -> None:
    """Check a parsed document (or a part of one) without recursing: containers nested at most
    `max_depth` deep, integers within 64 bits, and no key or value that TOML or JSON cannot
    hold. Linear in the number of values; the first offending value in document order is named.

    Args:
        depth: the depth of `document` itself (1 for a whole document).
        path: its key path, for messages (``""`` for a whole document).

    Raises:
        DocumentError: naming the key path of the offending value.
    """
    root: _Path = (path,) if path else None
    stack: list[tuple[Any, int, _Path]] = [(document, depth, root)]
    while stack:
        value, level, where = stack.pop()
        items: list[tuple[object, Any]]
        if isinstance(value, Mapping):
            items = list(value.items())
            for key, _item in items:
                if not isinstance(key, str) and (not isinstance(key, _KEY_SCALARS) or _huge(key)):
                    raise DocumentError(
                        f"a key must be a string, got {shown(key)}", path=_path(where)
                    )
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        else:
            _check_scalar(value, where)
            continue
        if level > max_depth:
            raise DocumentError(f"nested more than {max_depth} levels deep", path=_path(where))
        for key, item in reversed(items):  # the stack pops them in document order
            if type(item) is str:
                continue
            stack.append((item, level + 1, (where, key)))


def _huge(value: object) -> bool:
    """An integer beyond 64 bits (its str() raises past 4 300 digits; no field needs one)."""
    return isinstance(value, int) and not -_INT_LIMIT <= value < _INT_LIMIT


def _check_scalar(value: Any, where: _Path) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        if _huge(value):
            raise DocumentError(
                f"integer out of range (it has {value.bit_length()} bits; at most 64)",
                path=_path(where),
            )
    elif not isinstance(value, _SCALARS):
        raise DocumentError(
            f"a {type(value).__name__} is not a TOML or JSON value", path=_path(where)
        )


_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")


def _path(where: _Path) -> str:
    """``domains."a.example".pins[1]`` (error paths only)."""
    parts: list[str] = []
    while where is not None:
        if len(where) == 1:
            parts.append(str(where[0]))
            break
        where, key = where
        if isinstance(key, int) and not isinstance(key, bool):
            parts.append(f"[{key}]")
        else:
            parts.append("." + key_text(key))
    text = "".join(reversed(parts)).removeprefix(".")
    return text if len(text) <= 200 else text[:197] + "..."


def key_text(key: object) -> str:
    """A key as a location names it: bare when it can be (``pins``), else quoted, so that no
    key can put a new line or a terminal escape into a one-line message."""
    if isinstance(key, str):
        return key if _BARE.match(key) else json.dumps(key, ensure_ascii=False)
    return f"<{shown(key)}>"


def shown(value: object) -> str:
    """A short ``repr`` for messages: containers and huge numbers are described, never printed
    (their repr can be huge, recurse without end, or raise past 4 300 digits)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int) and _huge(value):
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str | int | float | bytes):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, dt.date | dt.time):
        return repr(value)
    return f"a {type(value).__name__}"


# -- writing -------------------------------------------------------------------------------------


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are a subset of TOML's."""
    return json.dumps(value, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    raise TypeError(f"cannot write {type(value).__name__} as TOML")  # Defensive


def one_line(text: str) -> str:
    """A comment-safe single line: every control or line-separating character becomes ``?``.

    A newline inside a ``#`` comment would end it and inject TOML (a certificate subject can
    carry one), and TOML forbids control characters in comments.
    """
    return "".join("?" if (ord(c) < 0x20 or c in "\x7f\u2028\u2029\x85") else c for c in text)


def _list(items: Iterable[str], comments: dict[str, str] | None = None) -> str:
    lines = []
    for item in items:
        note = (comments or {}).get(item)
        note = None if note is None else one_line(note)
        lines.append(f"  {toml_string(item)},{'  # ' + note if note else ''}")
    return "[\n" + "\n".join(lines) + "\n]" if lines else "[]"


def dump_policy(
    policy: Policy, *, header: str | None = None, pin_comments: dict[str, str] | None = None
) -> str:
    """Render `policy` as TOML.

    Args:
        header: comment lines to put on top (without the leading ``#``).
        pin_comments: pin string -> a note written after it (e.g. what the pin is).
    """
    out: list[str] = []
    if header:
        out += [f"# {one_line(line)}".rstrip() for line in header.splitlines()]
        out.append("")
    doc = policy.to_dict()
    out.append(f"schema = {doc['schema']}")
    if "version" in doc:
        out.append(f"version = {doc['version']}")
    out.append(f"unpinned_hosts = {toml_string(doc['unpinned_hosts'])}")
    for key, rule in policy.domains.items():
        out.append("")
        out.append(f"[domains.{toml_string(key)}]")
        body = rule.to_dict()
        for name in ("pins", "leaf_pins", "ca_pins"):
            if name in body:
                out.append(f"{name} = {_list(body[name], pin_comments)}")
        out.append(f"include_subdomains = {_value(rule.include_subdomains)}")
        if rule.expires is not None:
            out.append(f"expires = {toml_datetime(rule.expires)}")
        out.append(f"enforce = {_value(rule.enforce)}")
        if rule.report_uris:
            out.append(f"report_uris = {_list(rule.report_uris)}")
        if rule.allow_single_pin:
            out.append("allow_single_pin = true")
    return "\n".join(out) + "\n"
