"""The structural limits of a report body: value counting and nesting depth agree with a plain
recursive definition, for any JSON document."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certpin.collector.limits import IngestLimits, LimitError, _walk, parse_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=40,
)


def _count(value: Any) -> int:
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    return 1 + sum(_count(c) for c in children)


def _depth(value: Any) -> int:
    """Containers nested in `value`, the top level counting 1 (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((_depth(c) for c in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(c) for c in value), default=0)
    return 0


@given(JSON, st.integers(min_value=1, max_value=6))
def test_walk_counts_values_and_bounds_depth_like_the_recursive_definition(
    value: Any, max_depth: int
) -> None:
    parsed = json.loads(json.dumps(value))  # exactly the types json.loads yields
    if _depth(parsed) > max_depth:
        with pytest.raises(LimitError, match=f"deeper than {max_depth} levels"):
            _walk(parsed, max_depth)
    else:
        assert _walk(parsed, max_depth) == _count(parsed)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"a": ' * 9 + b"1" + b"}" * 9, "deeper than 8 levels"),
        (b'{"a": [' + b"1," * 2000 + b"1]}", "too many JSON values (2003 > 2000)"),
        (b'{"a": 1, "a": 2}', "duplicate JSON key 'a'"),
        (b"[1, 2]", "a report must be a JSON object"),
    ],
)
def test_parse_json_names_the_limit(body: bytes, error: str) -> None:
    with pytest.raises(LimitError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_json(body, IngestLimits())


def test_eight_levels_are_accepted() -> None:
    body = b'{"a": ' * 7 + b"[1]" + b"}" * 7
    assert _count(parse_json(body, IngestLimits())) == 9
