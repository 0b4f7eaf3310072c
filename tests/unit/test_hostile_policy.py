"""Hostile policy documents: every reader of a policy returns a `Policy` or raises `PolicyError`.

What a policy file may hold is bounded (docs/policy.md, "Limits"): its size, how deeply it nests,
how many parts one dotted key has, how long a number is. Past a limit the error names the file,
the position and the limit; below it, parsing runs in time linear in the input. `Policy.from_dict`
gets the same guarantee for documents built in code (non-string keys, wrong types, objects no
TOML or JSON parser makes).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from _support.pki import PKIFiles
from _support.servers import TLSServer
from certpin import Pin, Policy, PolicyError
from certpin.cli.main import main
from certpin.core.schema import MAX_POLICY_SIZE
from certpin.core.toml import MAX_WORD, parse_json, parse_toml

P1, P2 = (str(Pin(bytes([n]) * 32)) for n in (1, 2))

#: deep enough to overflow any recursive parser (CPython's limit is 1 000 frames).
VERY_DEEP = 100_000


def _deep_documents(depth: int) -> dict[str, str]:
    """name -> a policy text nested `depth` levels deep, one per kind of nesting."""
    return {
        "arrays.toml": "version = " + "[" * depth + "]" * depth + "\n",
        "inline-tables.toml": "version = " + "{a = " * depth + "1" + "}" * depth + "\n",
        "arrays.json": '{"version": ' + "[" * depth + "]" * depth + "}",
        "objects.json": '{"version": ' + '{"a": ' * depth + "1" + "}" * depth + "}",
    }


def _one_line_error(err: str, path: Path) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"certpin: error: {path}: "), err
    assert "Traceback" not in err and "RecursionError" not in err
    return lines[0]


# -- item 12: deep nesting through the CLI ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_deep_documents(1)))
def test_lint_of_a_deeply_nested_policy_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_text(_deep_documents(VERY_DEEP)[name])
    assert main(["lint", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = _one_line_error(err, path)
    assert "nested more than 32 levels deep" in line and "line 1, column " in line


@pytest.mark.parametrize("name", sorted(_deep_documents(1)))
def test_check_refuses_a_deeply_nested_policy_before_connecting(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tmp_pki_files: PKIFiles,
    server: TLSServer,
    name: str,
) -> None:
    path = tmp_path / name
    path.write_text(_deep_documents(VERY_DEEP)[name])
    argv = ["check", f"127.0.0.1:{server.port}", "--policy", str(path)]
    code = main([*argv, "--cafile", str(tmp_pki_files.root_ca), "--servername", "localhost"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "nested more than 32 levels deep" in _one_line_error(err, path)
    assert server.handshakes == 0  # refused before any connection


def test_a_deep_policy_read_on_a_small_thread_stack_does_not_crash(tmp_path: Path) -> None:
    # Catching RecursionError is not enough: on CPython 3.13, json's C scanner recursing 5 000
    # levels on a 256 KiB thread stack crashes the interpreter (SIGSEGV) before any
    # RecursionError. The scan refuses such a document before the parser sees it.
    path = tmp_path / "deep.json"
    path.write_text(_deep_documents(5000)["arrays.json"])
    script = (
        "import sys, threading\n"
        "from certpin import Policy, PolicyError\n"
        "def read():\n"
        "    try:\n"
        "        Policy.from_file(sys.argv[1])\n"
        "    except PolicyError as exc:\n"
        "        print(exc.problem)\n"
        "threading.stack_size(256 * 1024)\n"
        "thread = threading.Thread(target=read)\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "nested more than 32 levels deep" in done.stdout


@pytest.mark.parametrize("name", sorted(_deep_documents(1)))
def test_nesting_at_the_limit_reaches_the_schema_check(tmp_path: Path, name: str) -> None:
    # The passing twin: 31 levels inside the top-level table are parsed, and the policy's own
    # validation then speaks (version must be an integer).
    path = tmp_path / name
    path.write_text(_deep_documents(31)[name])
    with pytest.raises(PolicyError) as info:
        Policy.from_file(path)
    assert info.value.location == "version" and "non-negative integer" in info.value.problem
    path.write_text(_deep_documents(32)[name])
    with pytest.raises(PolicyError, match="nested more than 32 levels deep"):
        Policy.from_file(path)


# -- the limits, each with its passing twin ------------------------------------------------------


def _error(path: Path) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        Policy.from_file(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    return info.value


def _valid_toml(pad: int = 0) -> str:
    return f'version = 1\n[domains."a.example"]\npins = ["{P1}", "{P2}"]\n' + "#" * pad


def test_a_policy_file_larger_than_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "pins.toml"
    path.write_text(_valid_toml(pad=MAX_POLICY_SIZE - len(_valid_toml())))
    assert path.stat().st_size == MAX_POLICY_SIZE
    assert Policy.from_file(path).version == 1  # exactly the cap: read
    with path.open("a") as file:
        file.write("#")
    err = _error(path)
    assert err.problem == "policy is larger than the 16 MiB (16777216 bytes) limit"


def test_invalid_utf8_names_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "pins.toml"
    path.write_bytes(b'version = 1\nunpinned_hosts = "d\xc3\xa9ny\xff"\n')
    err = _error(path)
    assert (
        err.problem == "line 2, column 24: policy is not UTF-8 text (byte 0xff: invalid start byte)"
    )
    path.write_bytes(b'version = 1\nunpinned_hosts = "d\xc3\xa9ny"\n')  # the twin: valid UTF-8
    assert "'dény'" in _error(path).problem


@pytest.mark.parametrize("name", ["pins.toml", "pins.json", "pins.conf"])
def test_a_byte_order_mark_is_ignored(tmp_path: Path, name: str) -> None:
    text = _valid_toml() if name == "pins.toml" else json.dumps({"version": 1})
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert Policy.from_file(path).version == 1
    path.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode())  # one BOM only
    assert "invalid" in _error(path).problem


def test_a_repeated_json_key_is_refused(tmp_path: Path) -> None:
    # json keeps the last value, a reviewer reads the first: a pinned host must not vanish.
    path = tmp_path / "pins.json"
    rule = {"pins": [P1, P2]}
    path.write_text(
        '{"domains": {"a.example": %s}, "domains": {}}' % json.dumps(rule)  # noqa: UP031
    )
    assert _error(path).problem == "invalid JSON: duplicate key 'domains'"
    path.write_text('{"domains": {"a.example": %s}}' % json.dumps(rule))  # noqa: UP031
    assert list(Policy.from_file(path).domains) == ["a.example"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_refused(tmp_path: Path, constant: str) -> None:
    path = tmp_path / "pins.json"
    path.write_text('{"version":\n  %s}' % constant)  # noqa: UP031
    problem = _error(path).problem
    assert problem.startswith("invalid JSON at line 2, column ") and "is not JSON" in problem


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("pins.toml", "1" * (MAX_WORD + 1)),
        ("pins.toml", "0x" + "f" * MAX_WORD),
        ("pins.toml", "1." + "0" * (MAX_WORD + 1)),
        ("pins.json", "-" + "1" * MAX_WORD),
        ("pins.json", "1e" + "9" * MAX_WORD),
    ],
)
def test_a_number_longer_than_the_cap_is_refused_where_it_stands(
    tmp_path: Path, name: str, number: str
) -> None:
    path = tmp_path / name
    text = "\nversion = NUMBER\n" if name == "pins.toml" else '{\n"version": NUMBER}'
    path.write_text(text.replace("NUMBER", number))
    problem = _error(path).problem
    assert problem.startswith("line 2, column ") and f"longer than {MAX_WORD} characters" in problem
    # At the cap: read, then refused by the schema (a version must fit in 64 bits).
    path.write_text(text.replace("NUMBER", "1" * MAX_WORD))
    assert _error(path).location == "version"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0001-01-01T00:00:00+01:00", "out of range in UTC"),
        ("9999-12-31T23:59:59-01:00", "out of range in UTC"),
        ("nan", "invalid date"),
        ("inf", "invalid date"),
        ("-inf", "invalid date"),
        ("1e999", "invalid date"),
        ("9223372036854775807", "timestamp out of range"),
    ],
)
def test_dates_and_floats_out_of_range_are_policy_errors(
    tmp_path: Path, value: str, problem: str
) -> None:
    path = tmp_path / "pins.toml"
    path.write_text(f'[domains."a.example"]\npins = ["{P1}", "{P2}"]\nexpires = {value}\n')
    err = _error(path)
    assert err.location == 'domains."a.example".expires' and problem in err.problem


def test_a_dotted_key_of_too_many_parts_is_refused_before_parsing(tmp_path: Path) -> None:
    # tomllib's time is quadratic in one key's parts: 100 000 parts would take over a minute.
    path = tmp_path / "pins.toml"
    path.write_text("domains." + ".".join(["a"] * 100_000) + " = 1\n")
    assert "nested more than 32 levels deep" in _error(path).problem
    path.write_text("x." + '"b". c .'.join(["a"] * 20) + " = 1\n")  # 40 parts, a few quoted
    assert "line 1, column " in _error(path).problem


@pytest.mark.parametrize("header", ["[{}]", "[[{}]]"])
def test_table_headers_nest_at_most_as_deep_as_brackets(tmp_path: Path, header: str) -> None:
    # Headers nest without brackets: the parsed document is measured (its key path is named).
    path = tmp_path / "pins.toml"
    extra = header.count("[") - 1  # an array of tables adds a level below its last part
    path.write_text(header.format(".".join(["a"] * (31 - extra))) + "\n")
    assert "unknown field" in _error(path).problem  # 32 levels: read, then validated
    path.write_text(header.format(".".join(["a"] * (32 - extra))) + "\n")
    err = _error(path)
    assert err.problem == "nested more than 32 levels deep"
    # The 33rd level: the header's last table, or the first table of its array.
    assert err.location == ".".join(["a"] * (32 - extra)) + "[0]" * extra


# -- the scans never refuse what is within the limits -------------------------------------------

_KEY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
_STRINGS = st.text(
    st.one_of(
        st.sampled_from(list("[]{}.#=,\"'\\\n\t ")),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=20,
)


def _toml_basic(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_string(text: str, style: int) -> str:
    """The string in one of TOML's four notations, when it can be written in it."""
    if style == 1 and "'" not in text and "\n" not in text and _printable(text):
        return f"'{text}'"
    if style == 2 and "'''" not in text and not text.endswith("'") and _printable(text, "\n"):
        return f"'''{text}'''"
    if style == 3:
        body = _toml_basic(text)[1:-1].replace("\\u000a", "\n")
        return f'"""{body}"""'
    return _toml_basic(text)


def _printable(text: str, also: str = "") -> bool:
    return all(c in also or c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F) for c in text)


def _toml_value(value: Any, style: int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value, style)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, style) for v in value) + ",\n]"
    items = (f"{_toml_string(k, 0)} = {_toml_value(v, style)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


_LEAVES = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), _STRINGS)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEY_TEXT, inner, max_size=3),
    max_leaves=12,
)


@given(
    st.dictionaries(_KEY_TEXT, _VALUES, max_size=4),
    st.lists(_KEY_TEXT, min_size=1, max_size=4),
    st.integers(0, 3),
    _STRINGS,
)
@settings(max_examples=300, deadline=None)
def test_the_toml_scan_passes_every_document_within_the_limits(
    body: dict[str, Any], header: list[str], style: int, comment: str
) -> None:
    comment = comment.replace("\n", " ")
    lines = [f"# {c}" if _printable(c) else "#" for c in (comment,)]
    lines += [
        f"{_toml_string(k, 0)} = {_toml_value(v, style)}  #{']' * 3}" for k, v in body.items()
    ]
    lines.append("[" + ".".join(_toml_string(part, style % 2) for part in header) + "]")
    lines.append(f"x.'y'.\"z\" = {_toml_value(body, style)}")
    text = "\n".join(lines) + "\n"
    try:
        expected = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # the generator wrote something TOML does not allow: nothing to compare
    assert parse_toml(text) == expected


@given(_VALUES, st.integers(0, 1))
@settings(max_examples=300, deadline=None)
def test_the_json_scan_passes_every_document_within_the_limits(value: Any, indent: int) -> None:
    text = json.dumps({"v": value, "s": "[[[{{{"}, indent=indent or None, ensure_ascii=False)
    assert parse_json(text) == json.loads(text)


# -- fuzz: from_file returns a Policy or raises PolicyError, nothing else ------------------------


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _outcome_of_file(path: Path) -> Policy | PolicyError:
    """`Policy.from_file`'s result or its PolicyError; any other exception fails the test."""
    try:
        return Policy.from_file(path)
    except PolicyError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        return exc


@given(st.binary(max_size=300), st.sampled_from(["p.toml", "p.json", "p.conf"]))
@settings(max_examples=300, deadline=None)
def test_fuzz_arbitrary_bytes(fuzz_dir: Path, data: bytes, name: str) -> None:
    path = fuzz_dir / name
    path.write_bytes(data)
    _outcome_of_file(path)


@given(st.text(max_size=300), st.sampled_from(["p.toml", "p.json", "p.conf"]))
@settings(max_examples=300, deadline=None)
def test_fuzz_arbitrary_text(fuzz_dir: Path, text: str, name: str) -> None:
    path = fuzz_dir / name
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _outcome_of_file(path)


def _nest(opening: str, closing: str, depth: int, core: str = "") -> str:
    return opening * depth + core + closing * depth


_HOSTILE_TOML_VALUES = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "1979-05-27T07:32:00+24:00",
            "2020-02-30",
            "24:00:00",
            "0001-01-01",
            "nan",
            "+inf",
            "-inf",
            "1e999",
            "-0.0",
            "0x7fffffffffffffff",
            "0o777",
            "0b1",
            "9223372036854775808",
            "-9223372036854775809",
            '"\\uD800"',
            '"\\U00110000"',
            '"""a""""',
            "'''x",
            '"unterminated',
            f'["{P1}", "{P2}"]',
            f'"{P1}"',
            '"allow"',
            "true",
            "{}",
            "[]",
        ]
    ),
    st.builds(lambda n: "1" + "0" * n, st.integers(0, 5000)),
    st.builds(lambda n: "0x" + "f" * n, st.integers(1, 5000)),
    st.builds(lambda n: _nest("[", "]", n), st.integers(1, 3000)),
    st.builds(lambda n: _nest("{a=", "}", n, "1"), st.integers(1, 3000)),
    st.builds(lambda n: _nest("[{a=", "}]", n, "1"), st.integers(1, 1500)),
)
_HOSTILE_TOML_KEYS = st.one_of(
    st.sampled_from(
        ["schema", "version", "unpinned_hosts", "domains", "pins", "expires", "enforce", '""']
    ),
    st.sampled_from(["include_subdomains", "leaf_pins", "ca_pins", "report_uris", "x"]),
    st.builds(lambda n: ".".join(["a"] * n), st.integers(1, 3000)),
    st.builds(lambda n: 'domains."a.example".' + ".".join(['"b"'] * n), st.integers(0, 40)),
)
_HOSTILE_TOML_LINES = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", _HOSTILE_TOML_KEYS, _HOSTILE_TOML_VALUES),
    st.builds(lambda k: f"[{k}]", _HOSTILE_TOML_KEYS),
    st.builds(lambda k: f"[[{k}]]", _HOSTILE_TOML_KEYS),
    st.sampled_from(['[domains."a.example"]', '[domains."*.example.com"]', "[domains]", "#"]),
)


@given(
    st.lists(_HOSTILE_TOML_LINES, max_size=8),
    st.sampled_from(["", "\ufeff", "\ufeff\ufeff"]),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=2)), max_size=2),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_hostile_toml_documents(
    fuzz_dir: Path,
    lines: list[str],
    bom: str,
    newline: str,
    inserted: list[tuple[int, bytes]],
) -> None:
    data = (bom + newline.join(lines) + "\n").encode()
    for where, junk in inserted:  # invalid UTF-8, NUL, stray bytes anywhere
        where %= len(data) + 1
        data = data[:where] + junk + data[where:]
    path = fuzz_dir / "hostile.toml"
    path.write_bytes(data)
    _outcome_of_file(path)


_HOSTILE_JSON_VALUES = st.recursive(
    st.one_of(
        st.sampled_from(
            [
                "NaN",
                "-Infinity",
                "1e999",
                "-0",
                '"\\ud800"',
                '"0001-01-01T00:00:00+01:00"',
                '"9999-12-31T23:59:59-01:00"',
                "9223372036854775808",
                "253402300800",
                f'["{P1}", "{P2}"]',
                '"deny"',
                "null",
                "true",
                "{}",
            ]
        ),
        st.builds(lambda n: "-1" + "0" * n, st.integers(0, 5000)),
        st.builds(lambda n: _nest("[", "]", n), st.integers(1, 5000)),
        st.builds(lambda n: _nest('{"a":', "}", n, "1"), st.integers(1, 5000)),
    ),
    lambda inner: st.one_of(
        st.builds(lambda vs: "[" + ",".join(vs) + "]", st.lists(inner, max_size=3)),
        st.builds(
            lambda kvs: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in kvs) + "}",
            st.lists(st.tuples(_HOSTILE_TOML_KEYS.filter(lambda k: len(k) < 50), inner)),
        ),
    ),
    max_leaves=6,
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["schema", "version", "unpinned_hosts", "domains", "domains"]),
            _HOSTILE_JSON_VALUES,
        ),
        max_size=5,
    ),
    st.dictionaries(
        st.sampled_from(["a.example", "*.example.com", "b.example", "A.EXAMPLE."]),
        st.lists(
            st.tuples(
                st.sampled_from(["pins", "expires", "enforce", "report_uris", "leaf_pins", "y"]),
                _HOSTILE_JSON_VALUES,
            ),
            max_size=4,
        ),
        max_size=3,
    ),
    st.sampled_from(["", "\ufeff"]),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_hostile_json_documents(
    fuzz_dir: Path,
    top: list[tuple[str, str]],
    rules: dict[str, list[tuple[str, str]]],
    bom: str,
) -> None:
    domains = ",".join(
        json.dumps(host) + ":{" + ",".join(f'"{k}":{v}' for k, v in fields) + "}"
        for host, fields in rules.items()
    )
    members = [f'"{k}":{v}' for k, v in top] + [f'"domains":{{{domains}}}']
    path = fuzz_dir / "hostile.json"
    path.write_text(bom + "{" + ",".join(members) + "}", encoding="utf-8", errors="surrogatepass")
    _outcome_of_file(path)


# -- from_dict on documents built in code ---------------------------------------------------------


class _Opaque:
    """An object no parser makes, whose repr fails: it must never reach a message."""

    def __repr__(self) -> str:
        raise RuntimeError("repr of a hostile object")


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


_ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    # Built, not listed: hypothesis reprs listed values, and these refuse to be repr'd.
    st.builds(lambda e, sign: sign * 10**e, st.integers(19, 5000), st.sampled_from([1, -1])),
    st.builds(_Opaque),
    st.floats(),
    st.text(max_size=10),
    st.binary(max_size=4),
    st.sampled_from(
        [
            dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-1))),
            dt.datetime.min,
            dt.datetime.max,
            dt.date(1, 1, 1),
            dt.time(23, 59),
            math.nan,
            (),
            (P1, P2),
            frozenset({P1}),
            P1,
        ]
    ),
)
_ODD_KEYS = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.sampled_from([None, 1.5, math.nan, b"a.example", (1, 2), True]),
    st.builds(lambda e: 10**e, st.integers(19, 5000)),
    st.builds(_Opaque),
    st.sampled_from(["a.example", "*.example.com", "**.example.org", "pins", "version"]),
)
_ODD_VALUES = st.recursive(
    _ODD_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.dictionaries(_ODD_KEYS, inner, max_size=3),
        # Deeper than the 32 levels, and than any recursion limit (CPython's is 1 000).
        st.builds(_deep_list, st.integers(30, 20_000)),
        st.builds(_deep_dict, st.integers(30, 20_000)),
    ),
    max_leaves=8,
)
_RULE_FIELDS = st.sampled_from(
    [
        "pins",
        "leaf_pins",
        "ca_pins",
        "include_subdomains",
        "expires",
        "enforce",
        "report_uris",
        "allow_single_pin",
    ]
)


@given(
    st.dictionaries(
        st.one_of(st.sampled_from(["schema", "version", "unpinned_hosts"]), _ODD_KEYS),
        _ODD_VALUES,
        max_size=3,
    ),
    st.dictionaries(
        _ODD_KEYS,
        st.one_of(
            st.dictionaries(st.one_of(_RULE_FIELDS, _ODD_KEYS), _ODD_VALUES, max_size=4),
            st.builds(
                lambda extra: {"pins": [P1, P2], **extra},
                st.dictionaries(_RULE_FIELDS, _ODD_VALUES, max_size=2),
            ),
            _ODD_VALUES,
        ),
        max_size=3,
    ),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_from_dict_with_hostile_values(top: dict[Any, Any], domains: dict[Any, Any]) -> None:
    document = {**top, "domains": domains} if domains else top
    try:
        policy = Policy.from_dict(document)
    except PolicyError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(policy, Policy)


def test_from_dict_names_what_no_parser_makes() -> None:
    deep = _deep_list(100_000)
    cases: list[tuple[dict[Any, Any], str, str]] = [
        ({"version": deep}, "version", "version must be a non-negative integer, got a list"),
        ({"version": 2**63}, "version", "version must fit in 64 bits"),
        ({"schema": 10**5000}, "schema", "unsupported schema an integer of 16610 bits"),
        ({b"domains": {}}, "", "a key must be a string, got b'domains'"),
        ({"domains": {"a.example": {"pins": [deep]}}}, 'domains."a.example".pins[0]', "nested"),
        (
            {"domains": {"a.example": {"pins": [P1, 10**5000]}}},
            'domains."a.example".pins[1]',
            "bits",
        ),
        ({"domains": {"a.example": {"expires": 10**400}}}, 'domains."a.example".expires', "64"),
        ({"domains": {b"a.example": {}}}, "domains", "a key must be a string, got b'a.example'"),
        (
            {"domains": {"a.example": {"enforce": _Opaque()}}},
            'domains."a.example".enforce',
            "_Opaque",
        ),
    ]
    for document, location, problem in cases:
        with pytest.raises(PolicyError) as info:
            Policy.from_dict(document, source="code")
        assert info.value.location.startswith(location), info.value
        assert problem in info.value.problem, info.value


# -- time linear in the input --------------------------------------------------------------------


def _policy_toml(n: int) -> str:
    rules = (f'[domains."h{i}.example"]\npins = ["{P1}", "{P2}"]\n' for i in range(n))
    return "version = 1\n" + "".join(rules)


def _policy_json(n: int) -> str:
    return json.dumps({"domains": {f"h{i}.example": {"pins": [P1, P2]} for i in range(n)}})


#: name -> (file name, size -> text, base size). Each shape is something a scan or a parser
#: could be quadratic in; the base is large enough for a run to take a few milliseconds.
_SHAPES: dict[str, tuple[str, Any, int]] = {
    "toml: many domains": ("p.toml", _policy_toml, 100),
    "toml: a long string": ("p.toml", lambda n: f'x = "{"a[{." * n}"\n', 20_000),
    "toml: a long comment": ("p.toml", lambda n: "# " + "[{.\"'" * n + "\n", 20_000),
    "toml: unterminated strings": ("p.toml", lambda n: '"""\\"' * n, 20_000),
    "toml: many bracket pairs": ("p.toml", lambda n: "x = [" + "[]," * n + "]\n", 5_000),
    "toml: nesting at the limit, repeated": (
        "p.toml",
        lambda n: "".join(f"k{i} = {_nest('[', ']', 31)}\n" for i in range(n)),
        100,
    ),
    "toml: dotted keys of 31 parts": (
        "p.toml",
        lambda n: "".join(f"k{i}." + ".".join(["a"] * 30) + " = 1\n" for i in range(n)),
        100,
    ),
    "toml: deep table headers": (
        "p.toml",
        lambda n: "".join(f"[k{i}." + ".".join(["a"] * 30) + "]\n" for i in range(n)),
        100,
    ),
    "toml: dots and spaces": ("p.toml", lambda n: "a . " * n, 20_000),
    "toml: one long number": ("p.toml", lambda n: "x = " + "1" * n, 50_000),
    "json: many domains": ("p.json", _policy_json, 300),
    "json: a long string": ("p.json", lambda n: '{"x": "' + '\\"[{' * n + '"}', 20_000),
    "json: an unterminated string": ("p.json", lambda n: '{"x": "' + "\\\\[" * n, 20_000),
    "json: many bracket pairs": ("p.json", lambda n: '{"x": [' + "[]," * n + "[]]}", 10_000),
    "json: nesting at the limit, repeated": (
        "p.json",
        lambda n: '{"x": [' + ",".join([_nest("[", "]", 30)] * n) + "]}",
        150,  # small: json.loads of many lists slows with the heap (caches), not with us
    ),
    "json: many keys": (
        "p.json",
        lambda n: "{" + ",".join(f'"k{i}": {i}' for i in range(n)) + "}",
        5_000,
    ),
}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_from_file_is_linear(tmp_path: Path, shape: str) -> None:
    name, make, base = _SHAPES[shape]
    sizes: dict[int, Path] = {}

    def make_file(n: int) -> Path:
        path = sizes[n] = tmp_path / f"{n}-{name}"
        path.write_text(make(n))
        return path

    assert_near_linear(_outcome_of_file, make_file, base=base)


def test_from_dict_is_linear_on_the_rule_by_rule_path() -> None:
    # One bad rule at the end sends the whole document through the structure walk and the
    # rule-by-rule path: both must be linear too.
    def make(n: int) -> dict[str, Any]:
        domains: dict[Any, Any] = {f"h{i}.example": {"pins": [P1, P2]} for i in range(n)}
        domains["last.example"] = {"pins": [P1, P2], "enforce": "yes"}
        return {"domains": domains}

    assert_near_linear(Policy.from_dict, make, base=500)
