"""The bundle/JWS parser and the DynamicPolicy cache files are parsers of outside input: on any
input they return or raise certpin's `BundleError`, nothing else; they are capped in size and
nesting; and they run in linear time.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _dyn import BACKUP, NOW, policy_doc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from certpin import Pin, Policy
from certpin.dynamic import BundleError, DynamicPolicy, FileSigner, sign_bundle, verify_bundle
from certpin.dynamic.bundle import MAX_BUNDLE_SIZE
from certpin.dynamic.jws import (
    MAX_JSON_DEPTH,
    b64url_decode,
    b64url_encode,
    generate_private_key,
    json_depth,
    verify_compact,
)
from certpin.dynamic.state import MAX_STATE_SIZE, State, parse_state

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
SIGNER = FileSigner(generate_private_key("Ed25519"))  # fast signatures for many examples
KEYS = {SIGNER.kid: SIGNER.trusted_key}
TYP = "certpin-bundle+jws"
P1, P2 = str(Pin(bytes([1]) * 32)), str(Pin(bytes([2]) * 32))
PAYLOAD: dict[str, Any] = {
    "format": "certpin-bundle/1",
    "version": 1,
    "issued_at": "2026-01-15T00:00:00Z",
    "expires_at": "2026-02-01T00:00:00Z",
    "policy": policy_doc({"api.example.com": [P1, P2]}),
    "kill_switch": {"domains": ["api.example.com"], "until": "2026-01-16T00:00:00Z"},
    "rollout": {"id": "r", "percent": 5, "policy": policy_doc({"api.example.com": [P1, P2]})},
    "keys": {"add": [SIGNER.trusted_key.jwk()], "retire": []},
}
HEADER = {"alg": SIGNER.alg, "kid": SIGNER.kid, "typ": TYP}


def verify(token: str | bytes) -> object:
    return verify_bundle(token, KEYS, now=NOW)


def signed(header_text: bytes, payload_text: bytes) -> str:
    """A token whose signature verifies over exactly these header and payload bytes."""
    head = f"{b64url_encode(header_text)}.{b64url_encode(payload_text)}"
    return f"{head}.{b64url_encode(SIGNER.sign(head.encode()))}"


def outcome(func: Any, arg: Any) -> str:
    """Only a value or certpin's error: anything else fails the test with its traceback."""
    try:
        func(arg)
    except BundleError as exc:
        assert exc.reason and isinstance(exc.detail, str)
        return "rejected"
    return "accepted"


# -- strategies --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(), max_size=30)  # lone surrogates included
    | st.sampled_from(["*", "api.example.com", "2026-01-16T00:00:00Z", P1, SIGNER.kid, "\ud800"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def hostile_json_text(draw: st.DrawFn) -> bytes:
    """JSON-ish text a hostile sender would try: deep nesting, huge numbers, duplicate and
    non-string keys, JSON's forbidden constants, lone surrogates, bad UTF-8."""
    depth = draw(st.sampled_from([50, 999, 1001, 5000, 100_000]))
    digits = draw(st.sampled_from([10, 4300, 4301, 20_000]))
    return draw(
        st.sampled_from(
            [
                b"[" * depth + b"]" * depth,
                b'{"a":' * depth + b"1" + b"}" * depth,
                b"[" * depth,
                b'{"version":' + b"9" * digits + b"}",
                b'{"version":1e' + b"9" * digits + b"}",
                b'{"version":-0.0}',
                b'{"a":1,"a":2}',
                b'{"format":"certpin-bundle/1","format":"x"}',
                b"{1:2}",
                b"{null:1}",
                b'{"a":NaN}',
                b'{"a":Infinity}',
                b'{"a":-Infinity}',
                b'{"a":"\\ud800"}',
                b'{"\\udfff":1}',
                b'{"a":"\xff\xfe"}',
                b"\xef\xbb\xbf{}",  # a UTF-8 BOM
                b"",
                b"null",
                b"[]",
                b'"x"',
            ]
        )
    )


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    """A real bundle payload with members replaced, removed or nested into: reaches the deep
    checks (policy, kill switch, rollout, keys) with a valid signature."""
    doc: dict[str, Any] = json.loads(json.dumps(PAYLOAD))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(
            st.sampled_from(
                [
                    ("format",),
                    ("version",),
                    ("issued_at",),
                    ("expires_at",),
                    ("policy",),
                    ("policy", "domains"),
                    ("policy", "domains", "api.example.com"),
                    ("policy", "domains", "api.example.com", "pins"),
                    ("policy", "domains", "api.example.com", "expires"),
                    ("policy", "unpinned_hosts"),
                    ("kill_switch",),
                    ("kill_switch", "domains"),
                    ("kill_switch", "until"),
                    ("kill_switch", "reason"),
                    ("rollout",),
                    ("rollout", "percent"),
                    ("rollout", "id"),
                    ("keys", "add"),
                    ("keys", "retire"),
                    ("extra",),
                ]
            )
        )
        target = doc
        for name in path[:-1]:
            child = target.get(name)
            if not isinstance(child, dict):
                child = target[name] = {}
            target = child
        if draw(st.booleans()):
            target.pop(path[-1], None)
        else:
            target[path[-1]] = draw(json_values)
    text = json.dumps(doc).encode()
    if draw(st.booleans()):  # splice hostile raw text in where a value goes
        text = text.replace(b'"api.example.com"', draw(hostile_json_text()), 1)
    return text


# -- the bundle / JWS parser -------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
def test_verify_bundle_on_arbitrary_bytes(data: bytes) -> None:
    assert outcome(verify, data) == "rejected"


@FUZZ
@given(
    st.text(max_size=200)
    | st.from_regex(r"[A-Za-z0-9_=+/-]{0,60}\.[A-Za-z0-9_=+/-]{0,60}\.[A-Za-z0-9_-]{0,90}")
)
def test_verify_bundle_on_arbitrary_text(text: str) -> None:
    assert outcome(verify, text) == "rejected"


@FUZZ
@given(hostile_json_text() | json_values.map(lambda v: json.dumps(v).encode()))
def test_hostile_headers(header_text: bytes) -> None:
    assert outcome(verify, signed(header_text, json.dumps(PAYLOAD).encode())) == "rejected"


@FUZZ
@given(hostile_json_text())
def test_hostile_payloads_with_valid_signatures(payload_text: bytes) -> None:
    assert outcome(verify, signed(json.dumps(HEADER).encode(), payload_text)) == "rejected"


@FUZZ
@given(mutated_payloads())
def test_mutated_payloads_with_valid_signatures(payload_text: bytes) -> None:
    if outcome(verify, signed(json.dumps(HEADER).encode(), payload_text)) == "accepted":
        # what is accepted is Unicode text throughout: hashing, logging and writing it later
        # cannot raise UnicodeEncodeError
        json.dumps(json.loads(payload_text), ensure_ascii=False).encode("utf-8")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutated_payloads())
def test_dynamic_policy_accept_never_raises(
    tmp_path_factory: pytest.TempPathFactory, payload_text: bytes
) -> None:
    """All the way through installing (rollout cohort, kill switch, key changes, files)."""
    fallback = Policy.from_dict(policy_doc({"localhost": [P1, P2]}))
    dyn = _client(tmp_path_factory.mktemp("fuzz"), SIGNER, fallback)
    result = dyn.accept(signed(json.dumps(HEADER).encode(), payload_text))
    assert result.status in ("updated", "rejected"), result


def test_lone_surrogates_are_rejected_and_pairs_accepted(tmp_path: Path, bootstrap: Policy) -> None:
    header = json.dumps(HEADER).encode()
    rollout = {**PAYLOAD["rollout"], "id": "\ud800"}
    token = signed(header, json.dumps({**PAYLOAD, "rollout": rollout}).encode())
    with pytest.raises(BundleError, match="surrogate") as err:
        verify(token)
    assert err.value.reason == "bad_json"
    # hashing that rollout id for the cohort raised UnicodeEncodeError out of accept()
    assert _client(tmp_path, SIGNER, bootstrap).accept(token).status == "rejected"
    paired = {**PAYLOAD["rollout"], "id": "\ud83d\ude00"}  # one emoji, escaped as a pair
    assert outcome(verify, signed(header, json.dumps({**PAYLOAD, "rollout": paired}).encode())) == (
        "accepted"
    )


def test_the_unmutated_payload_is_accepted() -> None:
    """The twin of the fuzz tests above: their base payload is valid, so mutations reach the
    deep checks rather than failing at the first member."""
    assert outcome(verify, signed(json.dumps(HEADER).encode(), json.dumps(PAYLOAD).encode())) == (
        "accepted"
    )


def test_deep_nesting_is_a_rejection_even_where_the_parser_allows_it() -> None:
    """Python 3.13's JSON parser reads nesting far deeper than 3.11's; a raised recursion
    limit stands in for it here. Every member of the payload, nested 8 000 deep: rejected."""
    deep = b"[" * 8000 + b"]" * 8000
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(40_000)
    try:
        for name in ("version", "policy", "kill_switch", "rollout", "keys", "issued_at"):
            doc = {**PAYLOAD, name: "__X__"}
            text = json.dumps(doc).encode().replace(b'"__X__"', deep)
            with pytest.raises(BundleError) as err:
                verify(signed(json.dumps(HEADER).encode(), text))
            assert err.value.reason in ("bad_payload", "bad_policy", "bad_kill_switch") or (
                err.value.reason in ("bad_rollout", "bad_keys", "bad_json")
            )
    finally:
        sys.setrecursionlimit(old)


def test_a_recursion_error_late_in_the_check_is_a_rejection() -> None:
    """Nesting the parser accepts can still exhaust a nearly full stack in a later step."""

    def deep_call(n: int) -> object:
        if n:
            return deep_call(n - 1)
        text = json.dumps({**PAYLOAD, "policy": "__X__"}).encode()
        return verify(
            signed(json.dumps(HEADER).encode(), text.replace(b'"__X__"', b"[" * 600 + b"]" * 600))
        )

    with pytest.raises(BundleError) as err:
        deep_call(sys.getrecursionlimit() - 700)
    assert err.value.reason in ("bad_json", "bad_policy")


def test_header_nesting_is_capped_before_parsing() -> None:
    for depth, ok in ((MAX_JSON_DEPTH, True), (MAX_JSON_DEPTH + 1, False)):
        header = dict(HEADER, x=json.loads("[" * (depth - 1) + "]" * (depth - 1)))
        text = json.dumps(header).encode()
        assert json_depth(text) == depth
        result = outcome(verify, signed(text, json.dumps(PAYLOAD).encode()))
        assert result == ("accepted" if ok else "rejected")
    # brackets inside strings do not nest
    assert json_depth(b'{"a":"[[[[\\"[[[[","b":[1]}') == 2


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_constants_are_refused(constant: bytes) -> None:
    text = json.dumps({**PAYLOAD, "rollout": {**PAYLOAD["rollout"], "percent": "__X__"}})
    token = signed(json.dumps(HEADER).encode(), text.encode().replace(b'"__X__"', constant))
    with pytest.raises(BundleError, match="not JSON") as err:
        verify(token)
    assert err.value.reason == "bad_json"


def test_messages_about_hostile_values_stay_short() -> None:
    text = json.dumps({**PAYLOAD, "version": "v" * 1_000_000, "format": ["x"] * 1000}).encode()
    with pytest.raises(BundleError) as err:
        verify(signed(json.dumps(HEADER).encode(), text))
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z"])
def test_times_near_the_datetime_limits_are_rejections(when: str) -> None:
    text = json.dumps({**PAYLOAD, "issued_at": when}).encode()
    with pytest.raises(BundleError) as err:
        verify(signed(json.dumps(HEADER).encode(), text))
    assert err.value.reason == "bad_payload"


def test_key_changes_per_bundle_are_capped() -> None:
    kids = [f"kid-{n}" for n in range(17)]
    for count, ok in ((16, True), (17, False)):
        text = json.dumps({**PAYLOAD, "keys": {"add": [], "retire": kids[:count]}}).encode()
        assert outcome(verify, signed(json.dumps(HEADER).encode(), text)) == (
            "accepted" if ok else "rejected"
        )


# -- linear time ---------------------------------------------------------------------------------


def _big_policy_token(n: int) -> bytes:
    domains = {f"h{i}.example.com": [str(Pin(i.to_bytes(32, "big"))), BACKUP] for i in range(n)}
    return sign_bundle(
        policy_doc(domains), SIGNER, version=1, expires=NOW + dt.timedelta(days=9), issued_at=NOW
    ).encode()


def test_verify_bundle_is_linear_in_the_number_of_rules() -> None:
    assert_near_linear(verify, _big_policy_token, base=1000)


def test_verify_bundle_is_linear_in_payload_size() -> None:
    def token(n: int) -> str:
        reason = "r" * n
        return signed(
            json.dumps(HEADER).encode(),
            json.dumps(
                {**PAYLOAD, "kill_switch": {**PAYLOAD["kill_switch"], "reason": reason}}
            ).encode(),
        )

    assert verify(token(10)) is not None  # accepted: the whole payload is checked
    assert len(token(2_800_000)) < MAX_BUNDLE_SIZE  # the large input too, not "too_large"
    # 4x (not 8x): the large token must stay under the 4 MiB cap to be parsed at all.
    assert_near_linear(verify, token, base=700_000, factor=4)


@pytest.mark.parametrize(
    ("unit", "base"),
    [
        (b"[", 300_000),
        (b'{"a":', 60_000),
        (b'"\\"",', 50_000),
        (b"9", 300_000),
        (b'"\\ud800",', 30_000),
    ],
    ids=["open-arrays", "open-objects", "escaped-quotes", "digits", "surrogates"],
)
def test_rejecting_hostile_payloads_is_linear(unit: bytes, base: int) -> None:
    header = json.dumps(HEADER).encode()
    assert_near_linear(verify, lambda n: signed(header, b'{"a":[' + unit * n + b"]}"), base=base)


def _many(func: Any, times: int) -> Any:
    """`func` run `times` times per call: a capped input is too small to time once."""

    def run(arg: Any) -> None:
        for _ in range(times):
            try:
                func(arg)
            except BundleError:
                pass

    return run


def test_b64url_decode_is_linear() -> None:
    assert_near_linear(b64url_decode, lambda n: "A" * (4 * n) + "AB", base=400_000)


def test_header_rejection_is_linear_up_to_its_cap() -> None:
    def token(n: int) -> bytes:
        return b64url_encode(b'{"a":"' + b'\\"' * n + b'"}').encode() + b".e30.AA"

    check = _many(lambda t: verify_compact(t, KEYS, max_size=MAX_BUNDLE_SIZE, typ=TYP), 200)
    assert_near_linear(check, token, base=300)


# -- the DynamicPolicy cache files ---------------------------------------------------------------

GOOD_STATE = State(highest_version=3, highest_sha256="a" * 64, etag='"x"').to_json()


def parse(data: bytes) -> State:
    return parse_state(data, "state.json")


def test_state_round_trip() -> None:
    state = State(
        highest_version=7,
        highest_sha256="a" * 64,
        highest_signed_sha256="b" * 64,
        added_keys=(SIGNER.trusted_key,),
        retired_kids=("old",),
        etag='"e"',
        not_before=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        kill_switch_ended=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    )
    assert parse(state.to_json()) == state


@FUZZ
@given(st.binary(max_size=400) | hostile_json_text())
def test_state_parser_on_arbitrary_bytes(data: bytes) -> None:
    outcome(parse, data)


@st.composite
def mutated_states(draw: st.DrawFn) -> bytes:
    doc: dict[str, Any] = json.loads(
        State(
            highest_version=3,
            highest_sha256="a" * 64,
            added_keys=(SIGNER.trusted_key,),
            retired_kids=("k",),
            not_before=NOW,
            kill_switch_ended=NOW,
        ).to_json()
    )
    for name in draw(st.lists(st.sampled_from([*doc, "added_keys.0", "x"]), max_size=3)):
        if name == "added_keys.0":
            doc["added_keys"] = [draw(json_values)]
        elif draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = draw(json_values)
    return json.dumps(doc).encode()


@FUZZ
@given(mutated_states())
def test_state_parser_on_mutated_states(data: bytes) -> None:
    outcome(parse, data)


def test_state_caps() -> None:
    assert parse(GOOD_STATE).highest_version == 3
    padded = GOOD_STATE[:-1] + b', "pad": "' + b"x" * MAX_STATE_SIZE + b'"}'
    with pytest.raises(BundleError, match="limit") as err:
        parse(padded)
    assert err.value.reason == "bad_cache"
    nested = GOOD_STATE[:-1] + b', "pad": ' + b"[" * 17 + b"]" * 17 + b"}"
    with pytest.raises(BundleError, match="deeper"):
        parse(nested)
    many = json.loads(GOOD_STATE)
    many["retired_kids"] = [f"k{n}" for n in range(1025)]
    with pytest.raises(BundleError, match="1024"):
        parse(json.dumps(many).encode())
    many["retired_kids"] = many["retired_kids"][:1024]
    assert len(parse(json.dumps(many).encode()).retired_kids) == 1024


def test_state_parser_is_linear() -> None:
    def state(n: int) -> bytes:
        return GOOD_STATE[:-1] + b', "pad": ["' + b'\\"' * n + b'", ' + b"[1]," * n + b"1]}"

    def parse_alone(data: bytes) -> None:
        # The parser's own work: with 160 000 lists alive, the cyclic GC's collections (which
        # certpin no longer pauses) add time that depends on the whole heap, and on a loaded
        # machine pushed the ratio past the limit without any quadratic step in the parser.
        gc.disable()
        try:
            parse(data)
        finally:
            gc.enable()

    assert_near_linear(parse_alone, state, base=20_000)


def _client(tmp_path: Path, signer: FileSigner, bootstrap: Policy) -> DynamicPolicy:
    return DynamicPolicy(
        "https://localhost:9/bundle.jws",
        trusted_keys=[signer.trusted_key],
        cache_dir=tmp_path / "cache",
        fallback=bootstrap,
        clock=lambda: NOW,
    )


def test_huge_cache_files_are_not_read_whole(
    tmp_path: Path, bootstrap: Policy, caplog: pytest.LogCaptureFixture
) -> None:
    """A 64 GiB (sparse) bundle.jws and state.json: the start reads a capped prefix of each and
    falls back to the static policy, quickly and without the memory."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("bundle.jws", "state.json", "client_id"):
        with (cache / name).open("wb") as fh:
            fh.truncate(64 * 1024**3)
    start = time.perf_counter()
    with caplog.at_level(logging.ERROR, "certpin.dynamic"):
        dyn = _client(tmp_path, SIGNER, bootstrap)
    assert time.perf_counter() - start < 5
    assert dyn.current_policy() is bootstrap
    assert "too_large" in caplog.text and "bad_cache" in caplog.text
    assert len(dyn.client_id) == 32


def test_a_good_cache_still_loads(tmp_path: Path, bootstrap: Policy) -> None:
    """The twin: the same start from a cache the client wrote itself."""
    token = sign_bundle(
        policy_doc({"localhost": [str(p) for p in bootstrap.domains["localhost"].all_pins]}),
        SIGNER,
        version=2,
        expires=NOW + dt.timedelta(days=9),
        issued_at=NOW,
    )
    first = _client(tmp_path, SIGNER, bootstrap)
    assert first.accept(token).status == "updated"
    state = parse((tmp_path / "cache" / "state.json").read_bytes())
    assert state.highest_version == 2 and state.not_before == NOW - first.skew
    assert _client(tmp_path, SIGNER, bootstrap).version == 2


@pytest.mark.parametrize(
    "damage",
    [
        b"[" * 100_000,
        b'{"highest_version": 1, "added_keys": [[1]]}',
        b'{"highest_version": 1, "retired_kids": 5}',
        b'{"highest_version": true}',
        b'{"highest_version": 1, "added_keys": [{"kty": ["EC"]}]}',
        b"\xff",
    ],
)
def test_damaged_state_is_logged_and_never_raises(
    tmp_path: Path, bootstrap: Policy, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "state.json").write_bytes(damage)
    with caplog.at_level(logging.ERROR, "certpin.dynamic"):
        dyn = _client(tmp_path, SIGNER, bootstrap)
    assert dyn.current_policy() is bootstrap and "unreadable" in caplog.text


def test_etags_longer_than_the_cap_are_not_kept() -> None:
    # What the client refuses to keep is what the parser refuses to read.
    with pytest.raises(BundleError):
        parse(State(highest_version=1, etag="x" * 1025).to_json())
    assert parse(State(highest_version=1, etag="x" * 1024).to_json()).etag == "x" * 1024


def test_state_times_keep_their_precision() -> None:
    """A kill switch ending at 12:00:00.5 must still count as ended after a restart."""
    until = dt.datetime(2026, 1, 16, 12, 0, 0, 500_000, tzinfo=dt.UTC)
    state = parse(State(highest_version=1, kill_switch_ended=until, not_before=NOW).to_json())
    assert state.kill_switch_ended == until and state.not_before == NOW
    assert b'"2026-01-15T12:00:00Z"' in State(highest_version=1, not_before=NOW).to_json()
