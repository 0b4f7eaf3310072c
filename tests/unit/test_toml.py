"""The TOML writer: whatever it writes, Policy.from_file reads back into an equal policy."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from certpin import Pin, Policy
from certpin.core.toml import dump_policy

PINS = [str(Pin(bytes([i]) * 32)) for i in range(1, 6)]


def test_round_trip_all_fields(tmp_path: Path) -> None:
    policy = Policy.from_dict(
        {
            "version": 7,
            "unpinned_hosts": "deny",
            "domains": {
                "api.example.com": {
                    "pins": PINS[:2],
                    "include_subdomains": True,
                    "expires": "2027-06-30",
                    "report_uris": ["https://r.example/x?a=b&c=%22d%22"],
                },
                "*.cdn.example.com": {
                    "leaf_pins": PINS[2:3],
                    "ca_pins": PINS[3:5],
                    "expires": "2027-01-02T03:04:05.5Z",
                    "enforce": False,
                },
                "bücher.example": {"pins": PINS[:1], "allow_single_pin": True},
            },
        }
    )
    text = dump_policy(
        policy, header="certpin policy v7\nwritten by a test", pin_comments={PINS[0]: "current key"}
    )
    assert text.startswith("# certpin policy v7\n# written by a test\n")
    assert f'"{PINS[0]}",  # current key' in text
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    again = Policy.from_file(path)
    assert again == policy
    assert again.domains["*.cdn.example.com"].expires == dt.datetime(
        2027, 1, 2, 3, 4, 5, 500000, tzinfo=dt.UTC
    )
    assert "expires = 2027-06-30\n" in text  # a date stays a TOML date


def test_minimal_policy() -> None:
    text = dump_policy(Policy.from_dict({}))
    assert tomllib.loads(text) == {"schema": 1, "unpinned_hosts": "allow"}


_hosts = st.from_regex(r"[a-z][a-z0-9]{0,8}\.(example|test)\.org", fullmatch=True)
_rule = st.fixed_dictionaries(
    {"pins": st.lists(st.sampled_from(PINS), min_size=2, max_size=4, unique=True)},
    optional={
        "include_subdomains": st.booleans(),
        "enforce": st.booleans(),
        "expires": st.datetimes(
            min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)
        ).map(lambda d: d.replace(tzinfo=dt.UTC).isoformat()),
        "report_uris": st.lists(st.just("https://r.example/r?x=%C3%A9"), max_size=1),
    },
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_hosts, _rule, max_size=4), st.none() | st.integers(0, 2**40))
def test_any_policy_round_trips(domains: dict, version: int | None) -> None:  # type: ignore[type-arg]
    doc = {"domains": domains} | ({} if version is None else {"version": version})
    policy = Policy.from_dict(doc)
    assert Policy.from_dict(tomllib.loads(dump_policy(policy))) == policy


def test_comments_are_one_line() -> None:
    policy = Policy.from_dict({"domains": {"a.example": {"pins": PINS[:2]}}})
    text = dump_policy(
        policy,
        header="ok\x00\x7f",
        pin_comments={PINS[0]: 'CN=x\n[domains."evil.example"]\npins = []'},
    )
    assert "evil.example" not in tomllib.loads(text)["domains"]
    assert '# CN=x?[domains."evil.example"]?pins = []' in text
    assert "# ok??" in text
