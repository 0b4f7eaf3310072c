"""Source code as tokens: the first half of reading values written in code (the second is
`certpin.formats._code_values`).

The OkHttp importer (Kotlin, Java) and the trustkit-ios-code importer (Swift, Objective-C) read
pinning configurations that real apps write as code: a host in a ``const val``, pins in a
``static final String[]``, a TrustKit dictionary that refers to ``kTSK…`` constants and ``let``
values. `Code` tokenizes such a file once (string literals with their escapes, Kotlin ``$`` /
Swift ``\\(…)`` templates, Kotlin/Swift multi-line strings, Objective-C ``@"…"``, identifiers,
numbers, operators; ``//`` and ``/* */`` comments and preprocessor lines skipped), matches its
brackets and finds its constant declarations (``val``/``const val``/``let``/``var``, Java
``final``, C/Objective-C ``const`` and ``#define``). One pass over the text, one over the
tokens: linear in the file. Python's ``eval`` and ``ast`` are never used: the input is neither
Python nor trusted.

What a compiler refuses, and certpin could not read reliably, is a FormatError naming the line:
an unterminated string, character literal or ``/*`` comment, a ``/*`` inside a block comment
(Java and C end the comment at the first ``*/``, Kotlin and Swift nest it), unbalanced brackets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from certpin.formats import _common as common

__all__ = ["CLOSERS", "OPENERS", "WORD", "Code", "Dialect", "Token"]

#: How deeply string templates may nest inside each other.
MAX_TEMPLATE_DEPTH = 32

Dialect = Literal["jvm", "apple"]

WORD = re.compile(r"[^\W\d]\w*", re.UNICODE)
_JVM_WORD = re.compile(r"[^\W\d][\w$]*|\$[\w$]*", re.UNICODE)
_DEFINE = re.compile(r"#[ \t]*define[ \t]+([A-Za-z_]\w*)(?![\w(])")
_NUMBER = re.compile(r"\d[\w]*(?:\.\d\w*)?")
_SPACE = re.compile(r"[ \t\r\f\v\n]+")
_OPS3 = frozenset({"===", "!==", "...", "..<"})
_OPS2 = frozenset(
    {"==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "*=", "/=", "?:", "?.", "!!", "->", "::"}
    | {"..", "++", "--", "=>", "%="}
)
OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {")": "(", "]": "[", "}": "{"}
_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "a": "\a",
    "e": "\x1b",
    "s": " ",
    "0": "\0",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "$": "$",
    "?": "?",
}
_HEX = re.compile(r"[0-9A-Fa-f]+")


@dataclass(frozen=True, slots=True)
class Token:
    """One token. ``kind``: ``str`` (a string literal; ``text`` is its decoded value),
    ``name``, ``num``, ``op`` (``text`` is the operator) or ``char`` (a character literal).

    For a string, ``parts`` holds the template expressions as ``None``-free tuples
    ``(literal, expression)`` when the literal is a template (``"${HOST}"``, ``"\\(host)"``),
    ``unsupported`` says why a string cannot be used (a multi-line string), and ``at`` marks
    an Objective-C ``@"…"`` literal.
    """

    kind: str
    text: str
    start: int
    end: int
    line: int
    parts: tuple[tuple[str, str], ...] | None = None
    unsupported: str | None = None
    at: bool = False


@dataclass
class _Definition:
    name: str
    start: int  # token index of the initializer
    end: int  # token index after its last possible token (len(tokens) unless a #define)
    line: int
    mutable: bool = False
    count: int = 1
    lines: list[int] = field(default_factory=list)


class Code:
    """A source file, tokenized once, with its brackets matched and its constants found.

    Args:
        text: the file's text (the caller has capped its size).
        source: the file name, for errors.
        dialect: ``"jvm"`` (Kotlin and Java: ``$`` templates, ``'c'`` characters) or
            ``"apple"`` (Swift and Objective-C: ``\\(…)`` interpolation, ``@"…"``,
            ``#define``, ``#if``; adjacent string literals concatenate as in C).

    Raises:
        FormatError: an unterminated string, character literal or ``/*`` comment, a ``/*``
            inside a block comment (Java and C end the comment at the first ``*/``, Kotlin and
            Swift nest it: what is live would be ambiguous), or unbalanced brackets: the
            compiler would refuse the file, and certpin cannot tell what it means.
    """

    def __init__(self, text: str, source: str, dialect: Dialect) -> None:
        self.text = text
        self.source = source
        self.dialect = dialect
        self.tokens: list[Token] = []
        self.match: list[int] = []
        self.parent: list[int] = []
        self.definitions: dict[str, _Definition] = {}
        self.types: set[str] = {"Companion"}
        self._lines = common.LineCounter(text)
        self._defines: list[tuple[str, int, int, int]] = []  # name, first/end token, line
        self._tokenize()
        self._pair_brackets()
        self._find_definitions()

    # -- messages ---------------------------------------------------------------------------------

    def error(self, problem: str, pos: int) -> common.FormatError:
        return common.FormatError(
            problem, source=self.source, location=f"line {self.text.count(chr(10), 0, pos) + 1}"
        )

    def excerpt(self, first: int, last: int) -> str:
        """The source text of tokens `first`..`last` (inclusive), on one line, clipped."""
        if first > last or first >= len(self.tokens):
            return ""
        start = self.tokens[first].start
        end = self.tokens[min(last, len(self.tokens) - 1)].end
        raw = self.text[start : min(end, start + 200)]
        flat = common.one_line(_SPACE.sub(" ", raw).strip())
        return flat if end - start <= 200 else flat + "…"

    # -- tokenizer --------------------------------------------------------------------------------

    def _add(self, kind: str, text: str, start: int, end: int, **extra: object) -> None:
        line = self._lines.line(start)
        self.tokens.append(Token(kind, text, start, end, line, **extra))  # type: ignore[arg-type]

    def _tokenize(self) -> None:
        text, n = self.text, len(self.text)
        word_re = _JVM_WORD if self.dialect == "jvm" else WORD
        i = 0
        line_start = True  # only whitespace since the last newline (for preprocessor lines)
        define: tuple[str, int, int, int] | None = None  # name, first token, end, line
        while i < n:
            if define is not None and i >= define[2]:
                self._defines.append((define[0], define[1], len(self.tokens), define[3]))
                define = None
            ch = text[i]
            if ch in " \t\r\f\v":
                i += 1
                continue
            if ch == "\n":
                i += 1
                line_start = True
                continue
            if ch == "\\" and text.startswith("\n", i + 1):  # a continued preprocessor line
                i += 2
                continue
            at_line_start, line_start = line_start, False
            if ch == "/" and text.startswith("//", i):
                end = text.find("\n", i)
                i = n if end < 0 else end
                continue
            if ch == "/" and text.startswith("/*", i):
                i = self._block_comment(i)
                continue
            if ch == "#" and self.dialect == "apple":
                if i + 1 < n and text[i + 1] in '#"':
                    i = self._raw_string(i)
                    continue
                if at_line_start:
                    m = _DEFINE.match(text, i)
                    if m is None:  # #import, #if, #pragma…: not values
                        i = self._line_end(i)
                        continue
                    line = self._lines.line(i)
                    define = (m.group(1), len(self.tokens), self._line_end(m.end()), line)
                    i = m.end()
                    continue
            if ch == '"':
                i = self._string(i, at=False)
                continue
            if ch == "@" and self.dialect == "apple" and text.startswith('"', i + 1):
                i = self._string(i + 1, at=True, begin=i)
                continue
            if ch == "'":
                i = self._char(i)
                continue
            if not ch.isdigit():
                word = word_re.match(text, i)
                if word is not None:
                    self._add("name", word.group(), i, word.end())
                    i = word.end()
                    continue
            number = _NUMBER.match(text, i)
            if number is not None:
                self._add("num", number.group(), i, number.end())
                i = number.end()
                continue
            op = text[i : i + 3]
            if op not in _OPS3:
                op = text[i : i + 2]
                if op not in _OPS2:
                    op = ch
            self._add("op", op, i, i + len(op))
            i += len(op)
        if define is not None:
            self._defines.append((define[0], define[1], len(self.tokens), define[3]))

    def _block_comment(self, i: int) -> int:
        end = self.text.find("*/", i + 2)
        if end < 0:
            raise self.error("unterminated /* comment", i)
        inner = self.text.find("/*", i + 2, end)
        if inner >= 0:
            raise self.error(
                "a /* inside a block comment: Java and C end the comment at the first */, "
                "Kotlin and Swift nest it, so what is live is ambiguous; remove the inner /*",
                inner,
            )
        return end + 2

    def _line_end(self, i: int) -> int:
        """The end of the logical line at `i` (a backslash before the newline continues it)."""
        text = self.text
        while True:
            end = text.find("\n", i)
            if end < 0:
                return len(text)
            if end > 0 and text[end - 1] == "\\":
                i = end + 1
                continue
            return end

    def _string(self, i: int, *, at: bool, begin: int | None = None) -> int:
        """Tokenize the string literal whose opening quote is at `i`; returns its end."""
        text = self.text
        start = i if begin is None else begin
        if text.startswith('"""', i):
            end = text.find('"""', i + 3)
            if end < 0:
                raise self.error("unterminated multi-line string literal", i)
            while text.startswith('"', end + 3):  # Kotlin: extra quotes belong to the text
                end += 1
            self._add("str", "", start, end + 3, unsupported="a multi-line string literal", at=at)
            return end + 3
        value, parts, end = self._scan_string(i, 0)
        self._add("str", value, start, end, parts=parts, at=at)
        return end

    def _scan_string(
        self, i: int, depth: int
    ) -> tuple[str, tuple[tuple[str, str], ...] | None, int]:
        """Decode the one-line string literal at `i`: (text, template parts or None, end).

        Template parts are (literal, expression) pairs: Kotlin ``$name`` / ``${…}``, Swift
        ``\\(…)``. A Kotlin ``${`` whose ``}`` is not on the same line is read as a literal
        ``$`` (what Java does with it; Kotlin would refuse the file).
        """
        if depth > MAX_TEMPLATE_DEPTH:
            raise self.error(f"string templates nested more than {MAX_TEMPLATE_DEPTH} deep", i)
        text, n = self.text, len(self.text)
        out: list[str] = []
        parts: list[tuple[str, str]] = []
        j = i + 1
        while True:
            k = _PLAIN.match(text, j).end()  # type: ignore[union-attr]
            out.append(text[j:k])
            if k >= n or text[k] == "\n":
                raise self.error("unterminated string literal", i)
            ch = text[k]
            if ch == '"':
                literal = "".join(out)
                if parts:
                    parts.append((literal, ""))
                    return "", tuple(parts), k + 1
                return literal, None, k + 1
            if ch == "$":
                if self.dialect == "jvm" and text.startswith("{", k + 1):
                    end = self._skip_code(k + 2, "}", depth)
                    if end >= 0:
                        parts.append(("".join(out), text[k + 2 : end - 1].strip()))
                        out = []
                        j = end
                        continue
                m = WORD.match(text, k + 1) if self.dialect == "jvm" else None
                if m is not None:
                    parts.append(("".join(out), m.group()))
                    out = []
                    j = m.end()
                    continue
                out.append("$")
                j = k + 1
                continue
            # a backslash
            if k + 1 >= n or text[k + 1] == "\n":
                raise self.error("unterminated string literal", i)
            esc = text[k + 1]
            j = k + 2
            if esc == "(" and self.dialect == "apple":
                end = self._skip_code(j, ")", depth)
                if end < 0:
                    raise self.error("unterminated string interpolation \\(", k)
                parts.append(("".join(out), text[j : end - 1].strip()))
                out = []
                j = end
                continue
            if esc == "u":
                if text.startswith("{", j):  # Swift \u{1F600}
                    m = _HEX.match(text, j + 1, j + 9)
                    if m and text.startswith("}", m.end()):
                        out.append(_codepoint(m.group()))
                        j = m.end() + 1
                        continue
                m = _HEX.match(text, j, j + 4)
                if m and len(m.group()) == 4:
                    out.append(_codepoint(m.group()))
                    j = m.end()
                    continue
            elif esc == "x":
                m = _HEX.match(text, j, j + 2)
                if m:
                    out.append(_codepoint(m.group()))
                    j = m.end()
                    continue
            elif esc in "01234567":
                m = _OCTAL.match(text, k + 1)
                assert m is not None  # Defensive: esc is an octal digit
                out.append(chr(int(m.group(), 8) & 0xFF))
                j = m.end()
                continue
            out.append(_SIMPLE_ESCAPES.get(esc, esc))

    def _skip_code(self, i: int, close: str, depth: int) -> int:
        """Skip a template's code up to its closing `close` on the same line (brackets
        counted, nested strings skipped); the position after it, or -1."""
        text = self.text
        opener = "{" if close == "}" else "("
        level = 1
        while True:
            m = _TEMPLATE_STOP.search(text, i)
            if m is None:
                return -1
            i = m.start()
            ch = text[i]
            if ch == "\n":
                return -1
            if ch == '"':
                if text.startswith('"""', i):
                    return -1
                _, _, i = self._scan_string(i, depth + 1)
                continue
            if ch == opener:
                level += 1
            elif ch == close:
                level -= 1
                if level == 0:
                    return i + 1
            i += 1

    def _raw_string(self, i: int) -> int:
        """Swift raw string ``#"…"#`` (any number of ``#``); one with an escape is not read."""
        text = self.text
        j = i
        while j < len(text) and text[j] == "#":
            j += 1
        hashes = j - i
        if not text.startswith('"', j):
            self._add("op", "#", i, i + 1)
            return i + 1
        closing = '"' + "#" * hashes
        if text.startswith('"""', j):
            end = text.find('"""' + "#" * hashes, j + 3)
            if end < 0:
                raise self.error("unterminated raw string literal", i)
            self._add("str", "", i, end + 3 + hashes, unsupported="a multi-line raw string")
            return end + 3 + hashes
        end = text.find(closing, j + 1)
        newline = text.find("\n", j + 1)
        if end < 0 or 0 <= newline < end:
            raise self.error("unterminated raw string literal", i)
        body = text[j + 1 : end]
        unsupported = "a raw string with an escape or interpolation" if "\\#" in body else None
        self._add("str", body, i, end + len(closing), unsupported=unsupported)
        return end + len(closing)

    def _char(self, i: int) -> int:
        m = _CHAR.match(self.text, i)
        if m is None:
            raise self.error("unterminated character literal", i)
        self._add("char", m.group(), i, m.end())
        return m.end()

    # -- structure --------------------------------------------------------------------------------

    def _pair_brackets(self) -> None:
        tokens = self.tokens
        self.match = [-1] * len(tokens)
        self.parent = [-1] * len(tokens)
        stack: list[int] = []
        for i, tok in enumerate(tokens):
            self.parent[i] = stack[-1] if stack else -1
            if tok.kind != "op":
                continue
            if tok.text in OPENERS:
                stack.append(i)
            elif tok.text in CLOSERS:
                if not stack or tokens[stack[-1]].text != CLOSERS[tok.text]:
                    raise self.error(f"unbalanced {tok.text!r}", tok.start)
                opened = stack.pop()
                self.match[opened] = i
                self.match[i] = opened
                self.parent[i] = stack[-1] if stack else -1
        if stack:
            raise self.error(f"unclosed {tokens[stack[-1]].text!r}", tokens[stack[-1]].start)

    def is_op(self, i: int, text: str) -> bool:
        tokens = self.tokens
        return 0 <= i < len(tokens) and tokens[i].kind == "op" and tokens[i].text == text

    def is_name(self, i: int, text: str | None = None) -> bool:
        tokens = self.tokens
        if not 0 <= i < len(tokens) or tokens[i].kind != "name":
            return False
        return text is None or tokens[i].text == text

    def _find_definitions(self) -> None:
        tokens = self.tokens
        for name, start, end, line in self._defines:
            self._define(name, start, end, line)
        for i, tok in enumerate(tokens):
            if tok.kind != "name":
                continue
            word = tok.text
            if word in _TYPE_KEYWORDS:
                if self.is_name(i + 1):
                    self.types.add(tokens[i + 1].text)
            elif word in ("val", "let", "var"):
                if self.is_name(i + 1) and not self.is_op(i - 1, "."):
                    self._declaration(i + 1, mutable=word == "var")
            elif word in ("final", "const"):
                self._declaration_after(i)

    def _declaration(self, i: int, *, mutable: bool) -> None:
        """``NAME [: Type] = value`` at the name token `i` (Kotlin, Swift)."""
        j = i + 1
        if self.is_op(j, ":"):
            j = self._type_end(j + 1, self.tokens[i].line)
        if self.is_op(j, "="):
            self._define(self.tokens[i].text, j + 1, len(self.tokens), self.tokens[i].line, mutable)

    def _type_end(self, j: int, line: int) -> int:
        """The index of the ``=`` after a type annotation on `line`, or -1 (at most 64 tokens;
        brackets jumped over)."""
        tokens = self.tokens
        for _ in range(64):
            if j >= len(tokens) or tokens[j].line != line:
                return -1
            tok = tokens[j]
            if tok.kind == "op":
                if tok.text == "=":
                    return j
                if tok.text in OPENERS:
                    j = self.match[j] + 1
                    continue
                if tok.text not in ("<", ">", ".", "?", ",", "*", "&", "!"):
                    return -1
            j += 1
        return -1

    def _declaration_after(self, i: int) -> None:
        """Java ``final Type NAME = value`` and C ``Type * const NAME = value``: the name is the
        identifier right before the first ``=`` (at most 64 tokens on, through type tokens)."""
        tokens = self.tokens
        j = i + 1
        for _ in range(64):
            if j >= len(tokens):
                return
            tok = tokens[j]
            if tok.kind == "op":
                if tok.text == "=":
                    break
                if tok.text == "[" and self.is_op(j + 1, "]"):
                    j += 2
                    continue
                if tok.text not in ("<", ">", ".", "*", "?", ",", "&"):
                    return
            elif tok.kind != "name":
                return
            j += 1
        else:
            return
        if self.is_name(j - 1) and j - 1 > i:
            self._define(tokens[j - 1].text, j + 1, len(tokens), tokens[j - 1].line)

    def _define(self, name: str, start: int, end: int, line: int, mutable: bool = False) -> None:
        known = self.definitions.get(name)
        if known is None:
            self.definitions[name] = _Definition(name, start, end, line, mutable, 1, [line])
        elif start != known.start:
            known.count += 1
            known.lines.append(line)


def _codepoint(hex_digits: str) -> str:
    value = int(hex_digits, 16)
    return chr(value) if value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF else "\ufffd"


_PLAIN = re.compile(r'[^"\\\n$]*')
_TEMPLATE_STOP = re.compile(r'["\n{}()]')
_OCTAL = re.compile(r"[0-7]{1,3}")
_CHAR = re.compile(r"'(?:[^'\\\n]|\\[^\n])*'")
_TYPE_KEYWORDS = frozenset(
    {"class", "object", "interface", "struct", "enum", "extension", "protocol", "implementation"}
)
