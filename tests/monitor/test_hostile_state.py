"""Hostile monitor state files: `load_state` returns the state or raises `StateError` naming the
file and the line and column (or the field), in time linear in the file, which is read up to
`MAX_STATE_SIZE` (docs/monitor.md, "State file")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from _support.servers import TLSServer
from certpin.cli.main import main
from certpin.lifecycle.monitor.state import MAX_STATE_SIZE, Snapshot, StateError, load_state

PIN = "sha256/" + "A" * 43 + "="


def _entry(**fields: Any) -> dict[str, Any]:
    entry = {
        "status": "ok",
        "verdict": "ok",
        "leaf_pin": PIN,
        "chain_pins": [PIN, PIN],
        "checked_at": "2026-05-01T10:00:00Z",
    }
    entry.update(fields)
    return entry


def _state(endpoints: dict[str, Any]) -> str:
    return json.dumps(
        {"format": "certpin-monitor-state", "version": 1, "endpoints": endpoints}, indent=2
    )


def _outcome(path: Path) -> dict[str, Snapshot] | StateError:
    """`load_state`'s result or its error; any other exception fails the test."""
    try:
        return load_state(path)
    except StateError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), exc
        return exc


def _error(path: Path) -> str:
    result = _outcome(path)
    assert isinstance(result, StateError), result
    return str(result)


# -- limits, each with its passing twin -----------------------------------------------------------


@pytest.mark.parametrize("opening", ["[", '{"a": '])
def test_a_deeply_nested_state_file_is_refused_before_parsing(tmp_path: Path, opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    path = tmp_path / "state.json"
    head = '{"format": "certpin-monitor-state", "version": 1, "x": '
    path.write_text(head + opening * 100_000 + "1" * (opening != "[") + closing * 100_000 + "}")
    assert f"{path}: line 1, column " in _error(path)
    assert "nested more than 32 levels deep" in _error(path)
    path.write_text(head + opening * 31 + "1" * (opening != "[") + closing * 31 + "}")
    assert "endpoints: expected an object" in _error(path)  # 32 levels: read, then checked


def test_a_state_file_larger_than_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    text = _state({"a:443": _entry()})
    path.write_text(text + " " * (MAX_STATE_SIZE - len(text)))
    assert list(load_state(path)) == ["a:443"]  # exactly the cap: read
    with path.open("a") as file:
        file.write(" ")
    assert _error(path) == (
        f"{path}: the state file is larger than the 16 MiB ({MAX_STATE_SIZE} bytes) limit"
    )


def test_invalid_utf8_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    data = _state({"a:443": _entry(verdict="X")}).encode()
    path.write_bytes(data.replace(b'"X"', b'"\xe9"'))  # Latin-1, not UTF-8
    message = _error(path)
    assert message == (
        f"{path}: line 7, column 19: the state file is not UTF-8 text "
        "(byte 0xe9: invalid continuation byte)"
    )
    path.write_bytes(b"\xef\xbb\xbf" + _state({"a:443": _entry()}).encode())
    assert list(load_state(path)) == ["a:443"]


def test_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    text = _state({"a:443": _entry()})
    path.write_text(text.replace('"status": "ok"', '"status": "ok", "status": "error"'))
    assert "not JSON: duplicate key 'status'" in _error(path)


@pytest.mark.parametrize(
    ("checked_at", "accepted"),
    [
        ("0001-01-01T00:00:00+01:00", False),
        ("9999-12-31T23:59:59-01:00", False),
        (10**50, False),
        (["2026-05-01"], False),
        ("0001-01-01T00:00:00Z", True),
        ("9999-12-31T23:59:59Z", True),
    ],
)
def test_times_out_of_range_are_state_errors(
    tmp_path: Path, checked_at: Any, accepted: bool
) -> None:
    path = tmp_path / "state.json"
    path.write_text(_state({"a:443": _entry(checked_at=checked_at)}))
    if accepted:
        assert list(load_state(path)) == ["a:443"]
    else:
        assert 'endpoints."a:443".checked_at: expected an ISO 8601 time' in _error(path)


@pytest.mark.parametrize("version", ["true", "1.0", "1" + "0" * 200, "NaN"])
def test_only_the_integer_1_is_state_version_1(tmp_path: Path, version: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(_state({}).replace('"version": 1', f'"version": {version}'))
    message = _error(path)
    assert "unsupported state version" in message or "line 3, column 14" in message


def test_monitor_with_a_deeply_nested_state_exits_2_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, server: TLSServer
) -> None:
    state = tmp_path / "state.json"
    content = '{"endpoints": ' + "[" * 100_000 + "]" * 100_000 + "}"
    state.write_text(content)
    code = main(["monitor", f"127.0.0.1:{server.port}", "--state", str(state)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"certpin: error: {state}: line 1, column ")
    assert "nested more than 32 levels deep" in err
    assert state.read_text() == content  # never overwritten
    assert server.handshakes == 0


# -- fuzz ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state-fuzz")


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_fuzz_arbitrary_bytes(fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / "state.json"
    path.write_bytes(data)
    _outcome(path)


_HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "-Infinity",
            "1e999",
            "null",
            "true",
            "[]",
            "{}",
            '"ok"',
            '"error"',
            '"\\ud800"',
            '"0001-01-01T00:00:00+01:00"',
            '"9999-12-31T23:59:59-01:00"',
            '"2026-13-01T00:00:00Z"',
            '["sha256/x", 1]',
            json.dumps([PIN]),
        ]
    ),
    st.builds(lambda n: "1" + "0" * n, st.integers(0, 5000)),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 3000)),
    st.builds(lambda n: '{"a":' * n + "1" + "}" * n, st.integers(1, 3000)),
    st.text(max_size=10).map(json.dumps),
)
_FIELDS = st.sampled_from(
    ["status", "verdict", "leaf_pin", "chain_pins", "checked_at", "status", "x"]
)


@given(
    st.lists(st.tuples(st.sampled_from(["format", "version", "endpoints", "y"]), _HOSTILE_VALUES)),
    st.lists(
        st.tuples(
            st.text(max_size=6),
            st.one_of(
                _HOSTILE_VALUES,
                st.lists(st.tuples(_FIELDS, _HOSTILE_VALUES), max_size=6).map(
                    lambda kvs: "{" + ",".join(f'"{k}":{v}' for k, v in kvs) + "}"
                ),
            ),
        ),
        max_size=3,
    ),
    st.sampled_from(["", "\ufeff"]),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_hostile_state_documents(
    fuzz_dir: Path, top: list[tuple[str, str]], endpoints: list[tuple[str, str]], bom: str
) -> None:
    members = [
        '"format": "certpin-monitor-state"',
        '"version": 1',
        *(f'"{k}": {v}' for k, v in top),
    ]
    body = ",".join(f"{json.dumps(k)}: {v}" for k, v in endpoints)
    members.append(f'"endpoints": {{{body}}}')
    path = fuzz_dir / "state.json"
    text = bom + "{" + ",".join(members) + "}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _outcome(path)


# -- time linear in the file -----------------------------------------------------------------------

_SHAPES: dict[str, tuple[Any, int]] = {
    "many endpoints": (lambda n: _state({f"h{i}:443": _entry() for i in range(n)}), 200),
    "long chains": (lambda n: _state({"a:443": _entry(chain_pins=[PIN] * n)}), 2000),
    "many bracket pairs": (lambda n: _state({"a:443": [[]] * n}), 5000),
    "a long string": (lambda n: _state({"a:443": _entry(verdict='\\"[{' * n)}), 5000),
    "nesting at the limit, repeated": (
        lambda n: '{"x": [' + ",".join(["[" * 30 + "]" * 30] * n) + "]}",
        300,
    ),
}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_load_state_is_linear(tmp_path: Path, shape: str) -> None:
    make, base = _SHAPES[shape]

    def make_file(n: int) -> Path:
        path = tmp_path / f"{n}.json"
        path.write_text(make(n))
        return path

    assert_near_linear(_outcome, make_file, base=base)
