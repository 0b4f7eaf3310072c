"""Writing policies as TOML (the standard library reads TOML but does not write it).

The output is the canonical form of a `Policy`: `Policy.from_file` reads it back into an equal
policy. Comments of a hand-written file are not carried over.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from ._policy import Policy

__all__ = ["dump_policy", "one_line", "toml_string"]


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
            out.append(f"expires = {_datetime(rule.expires)}")
        out.append(f"enforce = {_value(rule.enforce)}")
        if rule.report_uris:
            out.append(f"report_uris = {_list(rule.report_uris)}")
        if rule.allow_single_pin:
            out.append("allow_single_pin = true")
    return "\n".join(out) + "\n"


def _datetime(when: dt.datetime) -> str:
    """A TOML date for midnight UTC (the NSC/TrustKit meaning of a date), else a date-time."""
    when = when.astimezone(dt.UTC)
    if when.time() == dt.time(0, 0):
        return when.date().isoformat()
    return (
        when.strftime("%Y-%m-%dT%H:%M:%S")
        + (f".{when.microsecond:06d}" if when.microsecond else "")
        + "Z"
    )
