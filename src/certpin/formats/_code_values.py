"""Values written in source code, resolved statically: the second half of reading code (the
first, `certpin.formats._code`, gives the tokens).

`Evaluator` reads the value of an expression at a token: string literals and ``+``
concatenations of literals and constants (adjacent literals in C), booleans, numbers, array and
dictionary literals (Swift ``[…]``/``[k: v]``, Objective-C ``@[…]``/``@{k: v}``, Java
``{…}``/``new String[]{…}``, Kotlin ``arrayOf``/``listOf``…), and the file's constants.
Anything else (a ``BuildConfig`` field, ``getString(R.string.x)``, a loop variable, a function
call, a template with an expression, a ``var``, a name defined twice) becomes an *unresolved*
`Node` carrying its tokens and why, so an importer can warn about exactly that and import the
rest.

Bounds: values nest at most `MAX_DEPTH` deep (brackets and constant references together:
deeper is unresolved and skipped in O(1) over the bracket-match table), a resolved string holds
at most `MAX_STRING` characters and a list or dictionary at most `MAX_ITEMS` items (constants
that double each other would otherwise grow exponentially), ``+`` chains are joined once, and
each constant is evaluated once (memoised; one that refers to itself is unresolved).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from certpin.formats import _common as common
from certpin.formats._code import CLOSERS, OPENERS, WORD, Code

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_STRING", "Evaluator", "Node"]

#: How deeply values may nest (brackets, parentheses and constant references together).
MAX_DEPTH = 32
#: The longest resolved string: a host has at most 253 characters, a pin about 50.
MAX_STRING = 4096
#: The most items a resolved list or dictionary may hold.
MAX_ITEMS = 10_000


@dataclass(slots=True)
class Node:
    """A value read from code.

    ``kind`` is ``str``, ``bool``, ``num`` (``value`` is its source text), ``nil``, ``list``
    (``value``: list of Nodes), ``dict`` (``value``: list of (key Node, value Node)), or
    ``unresolved`` (``value`` is why). ``line`` is where it was written; ``first`` and ``last``
    are the tokens it was read from (`Code.excerpt` gives the text for messages). ``spread``
    marks a Kotlin ``*array`` argument.
    """

    kind: str
    value: object
    line: int
    first: int
    last: int
    spread: bool = False

    @property
    def resolved(self) -> bool:
        return self.kind != "unresolved"

    def string(self) -> str | None:
        return self.value if self.kind == "str" and isinstance(self.value, str) else None

    def items(self) -> list[Node]:
        """A list's items (empty for anything else)."""
        return self.value if self.kind == "list" and isinstance(self.value, list) else []

    def entries(self) -> list[tuple[Node, Node]]:
        """A dictionary's (key, value) entries, in order (empty for anything else)."""
        return self.value if self.kind == "dict" and isinstance(self.value, list) else []


#: Kotlin and Java calls that build a list from their arguments.
_LIST_CALLS = frozenset(
    {
        "arrayOf",
        "listOf",
        "setOf",
        "mutableListOf",
        "mutableSetOf",
        "arrayListOf",
        "hashSetOf",
        "linkedSetOf",
        "Arrays.asList",
        "List.of",
        "Set.of",
        "ImmutableList.of",
        "ImmutableSet.of",
    }
)
#: Postfix calls that leave a list as it is.
_NEUTRAL_CALLS = frozenset({"toTypedArray", "toList", "toSet", "toMutableList"})
_NEW_LINE_CONTINUES = frozenset({"+", ".", "=", ",", "(", "[", "{", ":"})


class Evaluator:
    """Reads values at tokens of a `Code`, resolving the file's constants (each once).

    Args:
        code: the tokenized file.
        builtins: names that are constants of a library rather than of the file (TrustKit's
            ``kTSK…`` keys), with their values; a definition in the file takes precedence.
    """

    def __init__(self, code: Code, builtins: Mapping[str, str] | None = None) -> None:
        self.code = code
        self.builtins = dict(builtins or {})
        self._memo: dict[str, Node] = {}
        self._busy: set[str] = set()

    # -- entry points -----------------------------------------------------------------------------

    def literal(self, i: int) -> Node:
        """The value of the bracketed literal (or expression) starting at token `i`."""
        node, _ = self._term(i, _COMMA, 0, len(self.code.tokens))
        return node

    def arguments(self, open_index: int) -> list[Node]:
        """The arguments of the call whose ``(`` is at `open_index`, spread arguments
        (Kotlin ``*PINS``) and arrays passed to Java varargs flattened."""
        close = self.code.match[open_index]
        return self._elements(open_index + 1, close, 1, flatten=True)

    def constant(self, name: str, at: int) -> Node:
        """The value of the same-file constant (or builtin) `name`, used at token `at`."""
        return self._constant(name, at, at, 0)

    # -- grammar ----------------------------------------------------------------------------------

    def _unresolved(self, why: str, first: int, last: int) -> Node:
        tokens = self.code.tokens
        line = tokens[min(first, len(tokens) - 1)].line if tokens else 1
        return Node("unresolved", why, line, first, max(first, last))

    def _skip(self, i: int, stops: frozenset[str], end: int, line: int | None) -> int:
        """The end of the expression at `i`: the next stop or closing bracket at this level
        (brackets jumped over), or with a `line`, a new line that does not continue it."""
        tokens, match = self.code.tokens, self.code.match
        while i < end:
            tok = tokens[i]
            if line is not None and tok.line != line:
                prev = tokens[i - 1]
                if not (prev.kind == "op" and prev.text in _NEW_LINE_CONTINUES):
                    return i
                line = tok.line
            if tok.kind == "op":
                if tok.text in stops or tok.text in CLOSERS or tok.text == ";":
                    return i
                if tok.text in OPENERS:
                    i = match[i] + 1
                    line = tokens[i - 1].line if line is not None else None
                    continue
            i += 1
        return i

    def _expr(
        self, i: int, stops: frozenset[str], depth: int, end: int, *, newline: bool
    ) -> tuple[Node, int]:
        """An expression: terms joined by ``+`` (and, in C, adjacent string literals)."""
        code, tokens = self.code, self.code.tokens
        start = i
        line = tokens[i].line if newline and i < end else None
        if depth > MAX_DEPTH:
            j = self._skip(i, stops, end, line)
            return self._unresolved(f"nested more than {MAX_DEPTH} deep", start, j - 1), max(j, i)
        node, i = self._term(i, stops, depth, end)
        parts: list[str] | None = None
        size = 0
        failed: Node | None = None
        while i < end and (
            code.is_op(i, "+")
            or (code.dialect == "apple" and tokens[i].kind == "str" and tokens[i - 1].kind == "str")
        ):
            if parts is None:  # the first '+': collect the pieces, join them once
                parts = []
                failed = self._piece(node, parts)
                size = len(parts[0]) if parts else 0
            if code.is_op(i, "+"):
                i += 1
            rhs, i = self._term(i, stops, depth, end)
            if failed is None:
                failed = self._piece(rhs, parts)
                size += len(parts[-1]) if failed is None else 0
                if failed is None and size > MAX_STRING:
                    failed = self._unresolved(
                        f"a string longer than {MAX_STRING} characters", start, i - 1
                    )
        if parts is not None:
            if failed is not None:
                node = Node("unresolved", failed.value, tokens[start].line, start, i - 1)
            else:
                node = Node("str", "".join(parts), tokens[start].line, start, i - 1)
        if i < end and not self._ends(i, stops, line):
            # Something certpin does not evaluate follows (?:, a ternary, a comparison…).
            j = self._skip(i, stops, end, line)
            node = self._unresolved("an expression certpin cannot evaluate", start, j - 1)
            i = j
        return node, i

    def _piece(self, node: Node, parts: list[str]) -> Node | None:
        """Append a concatenated string piece, or return what makes the whole unresolved."""
        if not node.resolved:
            return node
        text = node.string()
        if text is None:
            return Node("unresolved", "'+' of a value that is not a string", node.line, 0, 0)
        parts.append(text)
        return None

    def _ends(self, i: int, stops: frozenset[str], line: int | None) -> bool:
        tok = self.code.tokens[i]
        if tok.kind == "op" and (tok.text in stops or tok.text in CLOSERS or tok.text == ";"):
            return True
        # Kotlin and Swift end a statement at the end of a line.
        return line is not None and tok.line != line

    def _term(self, i: int, stops: frozenset[str], depth: int, end: int) -> tuple[Node, int]:
        code, tokens = self.code, self.code.tokens
        tok = tokens[i] if i < end else None
        if tok is None or (tok.kind == "op" and (tok.text in stops or tok.text in CLOSERS)):
            at = min(i, end - 1) if end else 0
            return self._unresolved("a missing value", at, at), i
        if depth > MAX_DEPTH:
            j = self._skip(i, stops, end, None)
            return self._unresolved(f"nested more than {MAX_DEPTH} deep", i, j - 1), max(j, i + 1)
        node: Node | None = None
        start = i
        if tok.kind == "str":
            node, i = self._string(i, depth), i + 1
        elif tok.kind == "num":
            node, i = Node("num", tok.text, tok.line, i, i), i + 1
        elif tok.kind == "name":
            node, i = self._name(i, stops, depth, end)
        elif tok.kind == "op":
            if tok.text == "@" and code.dialect == "apple":
                node, i = self._objc_literal(i, depth)
            elif tok.text == "*" and code.dialect == "jvm":
                inner, i = self._term(i + 1, stops, depth + 1, end)
                inner.spread = True
                return inner, i
            elif tok.text == "(":
                close = code.match[i]
                inner, j = self._expr(i + 1, _NONE, depth + 1, close, newline=False)
                node = inner if j == close else None
                i = close + 1
            elif tok.text == "[":
                node, i = self._bracket_literal(i, depth + 1), code.match[i] + 1
            elif tok.text == "{" and code.dialect == "jvm":  # Java array initializer
                close = code.match[i]
                node, i = self._list(self._elements(i + 1, close, depth + 1), i, close), close + 1
        if node is None:
            j = self._skip(max(i, start + 1), stops, end, tok.line)
            return self._unresolved("an expression certpin cannot evaluate", start, j - 1), j
        return self._postfix(node, start, i, stops, end)

    def _postfix(
        self, node: Node, start: int, i: int, stops: frozenset[str], end: int
    ) -> tuple[Node, int]:
        code, tokens = self.code, self.code.tokens
        while i < end:
            if code.is_op(i, "!!") or (code.dialect == "apple" and code.is_op(i, "!")):
                i += 1
                continue
            if code.dialect == "apple" and code.is_name(i, "as"):
                i += 1
                if code.is_op(i, "!") or code.is_op(i, "?"):
                    i += 1
                i = min(self._skip_swift_type(i), end)
                continue
            if code.is_op(i, ".") and code.is_name(i + 1) and code.is_op(i + 2, "("):
                name = tokens[i + 1].text
                close = code.match[i + 2]
                if name in _NEUTRAL_CALLS and close == i + 3 and node.kind == "list":
                    i = close + 1
                    continue
                j = self._skip(i, stops, end, None)
                return self._unresolved(f"a call of .{name}()", start, j - 1), j
            break
        return node, i

    def _skip_swift_type(self, i: int) -> int:
        """After ``as``: a Swift type (``[String: Any]``, ``NSDictionary``, ``Foo.Bar<T>?``)."""
        code = self.code
        if code.is_op(i, "["):
            i = code.match[i] + 1
        else:
            while code.is_name(i):
                i += 1
                if code.is_op(i, "<"):
                    level = 0
                    for _ in range(64):  # generic arguments, bounded
                        if code.is_op(i, "<"):
                            level += 1
                        elif code.is_op(i, ">"):
                            level -= 1
                        i += 1
                        if level == 0:
                            break
                if code.is_op(i, ".") and code.is_name(i + 1):
                    i += 1
                    continue
                break
        while code.is_op(i, "?") or code.is_op(i, "!"):
            i += 1
        return i

    def _string(self, index: int, depth: int) -> Node:
        tok = self.code.tokens[index]
        if tok.unsupported:
            return Node("unresolved", tok.unsupported, tok.line, index, index)
        if tok.parts is None:
            return Node("str", tok.text, tok.line, index, index)
        out: list[str] = []
        for literal, expression in tok.parts:
            out.append(literal)
            if not expression:
                continue
            if not WORD.fullmatch(expression):
                why = "a string template with an expression"
                return Node("unresolved", why, tok.line, index, index)
            inner = self._constant(expression, index, index, depth + 1)
            value = inner.string()
            if value is None:
                why = str(inner.value) if not inner.resolved else "not a string"
                return Node("unresolved", f"{why} (in a string template)", tok.line, index, index)
            out.append(value)
        joined = "".join(out)
        if len(joined) > MAX_STRING:
            why = f"a string longer than {MAX_STRING} characters"
            return Node("unresolved", why, tok.line, index, index)
        return Node("str", joined, tok.line, index, index)

    def _objc_literal(self, i: int, depth: int) -> tuple[Node | None, int]:
        """``@[…]``, ``@{…}``, ``@(…)``, ``@YES``, ``@1``."""
        code, tokens = self.code, self.code.tokens
        j = i + 1
        if code.is_op(j, "["):
            close = code.match[j]
            return self._list(self._elements(j + 1, close, depth + 1), i, close), close + 1
        if code.is_op(j, "{"):
            close = code.match[j]
            return self._dict(j + 1, close, depth + 1, i), close + 1
        if code.is_op(j, "("):
            close = code.match[j]
            inner, k = self._expr(j + 1, _NONE, depth + 1, close, newline=False)
            if k != close:
                return self._unresolved("a boxed expression", i, close), close + 1
            return Node(inner.kind, inner.value, inner.line, i, close), close + 1
        if j < len(tokens) and tokens[j].kind == "num":
            return Node("num", tokens[j].text, tokens[j].line, i, j), j + 1
        if code.is_name(j) and tokens[j].text in ("YES", "NO", "true", "false"):
            return Node("bool", tokens[j].text in ("YES", "true"), tokens[j].line, i, j), j + 1
        return None, j

    def _bracket_literal(self, i: int, depth: int) -> Node:
        """Swift ``[a, b]``, ``[k: v]``, ``[:]``."""
        code = self.code
        close = code.match[i]
        if code.is_op(i + 1, ":") and i + 2 == close:
            return Node("dict", [], code.tokens[i].line, i, close)
        _, j = self._expr(i + 1, _KEY, depth, close, newline=False) if i + 1 < close else (None, 0)
        if i + 1 < close and code.is_op(j, ":"):
            return self._dict(i + 1, close, depth, i)
        return self._list(self._elements(i + 1, close, depth), i, close)

    def _elements(self, i: int, close: int, depth: int, *, flatten: bool = False) -> list[Node]:
        items: list[Node] = []
        while i < close and len(items) <= MAX_ITEMS:
            node, i = self._expr(i, _COMMA, depth, close, newline=False)
            if i < close and not self.code.is_op(i, ","):  # Defensive: resync at the next ','
                j = self._skip(i + 1, _COMMA, close, None)
                node, i = self._unresolved("an expression certpin cannot evaluate", i, j - 1), j
            if node.kind == "list" and (node.spread or flatten):
                items.extend(node.items())
            else:
                items.append(node)
            i += 1  # the ','
        return items

    def _list(self, items: list[Node], first: int, last: int) -> Node:
        if len(items) > MAX_ITEMS:
            return self._unresolved(f"a list of more than {MAX_ITEMS} items", first, last)
        return Node("list", items, self.code.tokens[first].line, first, last)

    def _dict(self, i: int, close: int, depth: int, first: int) -> Node:
        code = self.code
        entries: list[tuple[Node, Node]] = []
        while i < close:
            key, i = self._expr(i, _KEY, depth, close, newline=False)
            if not code.is_op(i, ":"):
                return self._unresolved("a dictionary entry without ':'", i, close)
            value, i = self._expr(i + 1, _COMMA, depth, close, newline=False)
            if i < close and not code.is_op(i, ","):
                return self._unresolved("a dictionary certpin cannot read", first, close)
            entries.append((key, value))
            if len(entries) > MAX_ITEMS:
                why = f"a dictionary of more than {MAX_ITEMS} entries"
                return self._unresolved(why, first, close)
            i += 1
        return Node("dict", entries, code.tokens[first].line, first, close)

    def _name(self, i: int, stops: frozenset[str], depth: int, end: int) -> tuple[Node, int]:
        code, tokens = self.code, self.code.tokens
        tok = tokens[i]
        word = tok.text
        if word in ("true", "false", "YES", "NO"):
            return Node("bool", word in ("true", "YES"), tok.line, i, i), i + 1
        if word in ("nil", "null", "NULL"):
            return Node("nil", None, tok.line, i, i), i + 1
        if word == "new" and code.dialect == "jvm":
            return self._java_new(i, stops, depth, end)
        names = [word]  # a dotted name: A.B.C
        j = i + 1
        while code.is_op(j, ".") and code.is_name(j + 1) and len(names) < 16:
            names.append(tokens[j + 1].text)
            j += 2
        dotted = ".".join(names)
        if code.is_op(j, "("):
            close = code.match[j]
            if dotted in _LIST_CALLS or names[-1] in ("arrayOf", "listOf", "setOf"):
                return self._list(self._elements(j + 1, close, depth + 1), i, close), close + 1
            why = _generated(names) or f"a call of {common.one_line(dotted[:60])}(…)"
            k = self._skip(close + 1, stops, end, tok.line)
            return self._unresolved(why, i, k - 1), k
        generated = _generated(names)
        if generated:
            return self._unresolved(generated, i, j - 1), j
        if len(names) > 1 and not all(n in code.types for n in names[:-1]):
            why = f"{common.clip(dotted, 40)} is not a constant of this file"
            return self._unresolved(why, i, j - 1), j
        return self._constant(names[-1], i, j - 1, depth + 1), j

    def _java_new(self, i: int, stops: frozenset[str], depth: int, end: int) -> tuple[Node, int]:
        """``new String[] {…}`` is a list; any other ``new`` is unresolved."""
        code = self.code
        j = i + 1
        for _ in range(16):
            if code.is_op(j, "{") and code.is_op(j - 1, "]"):
                close = code.match[j]
                return self._list(self._elements(j + 1, close, depth + 1), i, close), close + 1
            if code.is_op(j, "["):
                j = code.match[j] + 1
            elif code.is_name(j) or code.is_op(j, "."):
                j += 1
            else:
                break
        k = self._skip(j, stops, end, code.tokens[i].line)
        return self._unresolved("an object created at run time", i, k - 1), k

    def _constant(self, name: str, first: int, last: int, depth: int) -> Node:
        code = self.code
        line = code.tokens[first].line
        shown = common.clip(name, 40)
        definition = code.definitions.get(name)
        if definition is None:
            if name in self.builtins:
                return Node("str", self.builtins[name], line, first, last)
            why = f"{shown} is not a constant of this file"
            return Node("unresolved", why, line, first, last)
        if definition.count > 1:
            where = ", ".join(str(n) for n in definition.lines[:5])
            why = f"{shown} is defined {definition.count} times in this file (lines {where})"
            return Node("unresolved", why, line, first, last)
        if definition.mutable:
            why = f"{shown} is a var: it can change at run time"
            return Node("unresolved", why, line, first, last)
        if name in self._memo:
            return self._used(name, self._memo[name], first, last)
        if name in self._busy:
            return Node("unresolved", f"{shown} refers to itself", line, first, last)
        if depth > MAX_DEPTH:
            why = f"constants nested more than {MAX_DEPTH} deep"
            return Node("unresolved", why, line, first, last)
        self._busy.add(name)
        try:
            end = min(definition.end, len(code.tokens))
            if definition.start >= end:
                value = Node("unresolved", f"{shown} has no value", line, first, last)
            else:
                value, after = self._expr(definition.start, _COMMA, depth, end, newline=True)
                if definition.end < len(code.tokens) and after < end:  # a #define with more
                    value = self._unresolved(
                        "a macro certpin cannot evaluate", definition.start, end - 1
                    )
        finally:
            self._busy.discard(name)
        self._memo[name] = value
        return self._used(name, value, first, last)

    def _used(self, name: str, value: Node, first: int, last: int) -> Node:
        """A constant's value at a use: an unresolved one is reported where it is used, with
        the definition's line and text."""
        if value.resolved:
            return value
        code = self.code
        why = (
            f"{common.clip(name, 40)} = {common.clip(code.excerpt(value.first, value.last), 80)} "
            f"(line {value.line}): {value.value}"
        )
        return Node("unresolved", why, code.tokens[first].line, first, last)


_NONE: frozenset[str] = frozenset()
_COMMA = frozenset({","})
_KEY = frozenset({",", ":"})
_GENERATED_ROOTS = {
    "BuildConfig": "a BuildConfig field, set by the build",
    "R": "an Android resource, read at run time",
    "Bundle": "a value read at run time",
    "ProcessInfo": "a value read at run time",
    "UserDefaults": "a value read at run time",
    "NSUserDefaults": "a value read at run time",
}


def _generated(names: list[str]) -> str | None:
    """Why a (dotted) name is known to be set outside the file, or None."""
    if names[0] in _GENERATED_ROOTS:
        return _GENERATED_ROOTS[names[0]]
    if names[-1] in ("getString", "getText", "getStringArray"):
        return "an Android resource, read at run time"
    return None
