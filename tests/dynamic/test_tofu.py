"""KnownPins (trust on first use) against real loopback TLS servers and real processes."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support.growth import assert_near_linear
from _support.pki import PKI, PKIFiles, make_pki, spki_pin, write_pki_files
from _support.servers import DEFAULT_BODY, ConnectProxy, TLSServer
from certpin import ConfigurationError, Pin, PinValidationError, Policy, VerdictStatus
from certpin.cli.main import main
from certpin.dynamic import KnownPins
from certpin.dynamic.tofu import MAX_STORE_SIZE, parse_store
from certpin.tls.fetch import fetch_chain
from tls._clients import asyncio_get, find_in_chain


@pytest.fixture(scope="module")
def pki_a() -> PKI:
    return make_pki(("127.0.0.1", "localhost"))


@pytest.fixture
def files(pki_a: PKI, tmp_path: Path) -> PKIFiles:
    return write_pki_files(pki_a, tmp_path / "pki")


def get(ctx: Any, port: int, host: str = "127.0.0.1") -> int:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_first_use_records_then_must_match(files: PKIFiles, pki_a: PKI, tmp_path: Path) -> None:
    store = KnownPins(tmp_path / "known.json")
    ctx = store.create_default_context(cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        assert get(ctx, srv.port) == 200  # first use: recorded under the host, no port
        entry = store.get("127.0.0.1")
        assert entry is not None and [str(p) for p in entry.pins] == [spki_pin(pki_a.leaf.cert)]
        assert get(ctx, srv.port) == 200  # same key: OK
        new_leaf = pki_a.intermediate.issue_leaf("127.0.0.1")  # same CA, new key
        srv.set_certificate(*new_leaf.write(tmp_path / "new"))
        with pytest.raises(PinValidationError) as err:
            get(ctx, srv.port)
        v = err.value.verdict
        assert v is not None and v.status is VerdictStatus.TOFU_MISMATCH
        assert spki_pin(pki_a.leaf.cert) in v.reason and spki_pin(new_leaf.cert) in v.reason
        assert "certpin tofu accept" in str(err.value)
    doc = json.loads((tmp_path / "known.json").read_text())
    assert doc["format"] == "certpin-known-pins/2" and list(doc["hosts"]) == ["127.0.0.1"]


def test_ca_validation_still_required(files: PKIFiles, tmp_path: Path) -> None:
    import ssl

    store = KnownPins(tmp_path / "known.json")
    other_root = write_pki_files(make_pki(root_name="Other"), tmp_path / "other").root_ca
    with TLSServer(files.certfile, files.keyfile) as srv:
        with pytest.raises(ssl.SSLCertVerificationError):
            get(store.create_default_context(cafile=other_root), srv.port)
    assert store.entries() == []  # nothing recorded from an unverified connection


def test_match_issuer_opt_in_accepts_new_leaf_from_same_ca(
    files: PKIFiles, pki_a: PKI, tmp_path: Path
) -> None:
    store = KnownPins(tmp_path / "known.json", match_issuer=True)
    ctx = store.create_default_context(cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        get(ctx, srv.port)
        srv.set_certificate(*pki_a.intermediate.issue_leaf("127.0.0.1").write(tmp_path / "n"))
        assert get(ctx, srv.port) == 200
        rogue_leaf = pki_a.root.issue_intermediate("Other CA").issue_leaf("127.0.0.1")
        srv.set_certificate(*rogue_leaf.write(tmp_path / "r"))
        with pytest.raises(PinValidationError):
            get(ctx, srv.port)


def test_fallback_policy_still_enforced(files: PKIFiles, tmp_path: Path) -> None:
    from _dyn import BACKUP

    strict = Policy.from_dict(
        {"domains": {"127.0.0.1": {"pins": [BACKUP], "allow_single_pin": True}}}
    )
    ctx = KnownPins(tmp_path / "k.json").create_default_context(strict, cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        with pytest.raises(PinValidationError) as err:
            get(ctx, srv.port)
    assert err.value.verdict is not None and err.value.verdict.status is VerdictStatus.FAILED


def test_corrupt_store_fails_closed(files: PKIFiles, tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    path.write_text("{broken")
    ctx = KnownPins(path).create_default_context(cafile=files.root_ca)
    with TLSServer(files.certfile, files.keyfile) as srv:
        with pytest.raises(ConfigurationError, match="unreadable known-pins"):
            get(ctx, srv.port)


_RECORDER = """
import sys
from certpin.dynamic import KnownPins
from certpin import Pin
from _support.pki import make_pki
store = KnownPins(sys.argv[1])
leaf = make_pki(("h.example",)).leaf
for i in range(int(sys.argv[3])):
    store.record(f"h{sys.argv[2]}-{i}.example", 443, tuple(leaf.chain_der()))
"""


def test_concurrent_processes_lose_no_record(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    tests_dir = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": tests_dir}
    import os

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RECORDER, str(path), str(n), "10"], env={**os.environ, **env}
        )
        for n in range(6)
    ]
    assert [p.wait(60) for p in procs] == [0] * 6
    assert len(KnownPins(path).entries()) == 60


def test_cli_list_accept_forget(
    files: PKIFiles, pki_a: PKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "known.json"
    store = KnownPins(path)
    with TLSServer(files.certfile, files.keyfile) as srv:
        get(store.create_default_context(cafile=files.root_ca), srv.port)
        target = f"127.0.0.1:{srv.port}"
        assert main(["tofu", "list", "--file", str(path)]) == 0
        assert spki_pin(pki_a.leaf.cert) in capsys.readouterr().out
        new_leaf = pki_a.intermediate.issue_leaf("127.0.0.1")
        srv.set_certificate(*new_leaf.write(tmp_path / "new"))
        assert (
            main(["tofu", "accept", target, "--file", str(path), "--cafile", str(files.root_ca)])
            == 0
        )
        assert spki_pin(new_leaf.cert) in capsys.readouterr().out
        assert get(store.create_default_context(cafile=files.root_ca), srv.port) == 200
        assert main(["tofu", "list", "--file", str(path), "--json"]) == 0
        assert target in json.loads(capsys.readouterr().out)
        assert main(["tofu", "forget", target, "--file", str(path)]) == 0
        assert main(["tofu", "forget", target, "--file", str(path)]) == 1
        assert store.entries() == []
        assert (
            main(
                [
                    "tofu",
                    "accept",
                    "127.0.0.1:1",
                    "--file",
                    str(path),
                    "--cafile",
                    str(files.root_ca),
                ]
            )
            == 3
        )


# -- a host is known on every port: proxies and asyncio cannot make a changed key a first use -----


@pytest.fixture
def two_keys(pki_a: PKI, tmp_path: Path) -> Iterator[tuple[TLSServer, TLSServer, TLSServer]]:
    """Three servers for 127.0.0.1 under one trusted CA: the first key twice, another key once."""
    new_leaf = pki_a.intermediate.issue_leaf("127.0.0.1", "localhost")  # same CA, new key
    first = write_pki_files(pki_a, tmp_path / "first")
    with (
        TLSServer(first.certfile, first.keyfile) as a,
        TLSServer(first.certfile, first.keyfile) as same_key,
        TLSServer(*new_leaf.write(tmp_path / "other")) as other_key,
    ):
        yield a, same_key, other_key


def _mismatch(exc: BaseException) -> bool:
    err = find_in_chain(exc, PinValidationError)
    v = getattr(err, "verdict", None)
    return v is not None and v.status is VerdictStatus.TOFU_MISMATCH


def test_changed_key_on_another_port_is_a_mismatch_not_a_first_use(
    files: PKIFiles, two_keys: tuple[TLSServer, TLSServer, TLSServer], tmp_path: Path
) -> None:
    a, same_key, other_key = two_keys
    store = KnownPins(tmp_path / "known.json")
    ctx = store.create_default_context(cafile=files.root_ca)
    assert get(ctx, a.port) == 200  # first use, through port A
    with pytest.raises(PinValidationError) as err:
        get(ctx, other_key.port)
    assert _mismatch(err.value)
    assert other_key.wait_idle() and other_key.total_received() == b""
    # the twin: the recorded key through yet another port is simply known
    assert get(ctx, same_key.port) == 200
    assert [e.key for e in store.entries()] == ["127.0.0.1"]


@pytest.mark.parametrize("first_via", ["http.client", "asyncio"])
def test_asyncio_sees_the_same_records(
    first_via: str,
    files: PKIFiles,
    two_keys: tuple[TLSServer, TLSServer, TLSServer],
    tmp_path: Path,
) -> None:
    # asyncio's SSLObject has no peer port (the old store keyed it "host:*", apart from every
    # "host:PORT" record): either way round, a changed key is a mismatch.
    a, same_key, other_key = two_keys
    store = KnownPins(tmp_path / "known.json")
    ctx = store.create_default_context(cafile=files.root_ca)

    def via_http_client(port: int) -> bytes:
        assert get(ctx, port) == 200
        return DEFAULT_BODY

    def via_asyncio(port: int) -> bytes:
        return asyncio.run(asyncio_get(f"https://127.0.0.1:{port}/", ctx))

    clients = [via_http_client, via_asyncio]
    first, second = clients if first_via == "http.client" else clients[::-1]
    assert first(a.port) == DEFAULT_BODY  # first use
    with pytest.raises(PinValidationError) as err:
        second(other_key.port)
    assert _mismatch(err.value), repr(err.value)
    assert other_key.wait_idle() and other_key.total_received() == b""
    # the twin: the recorded key is accepted by the other client, on another port
    assert second(same_key.port) == DEFAULT_BODY


def test_a_tls_inspecting_proxy_cannot_pass_as_a_first_use(
    files: PKIFiles, two_keys: tuple[TLSServer, TLSServer, TLSServer], tmp_path: Path
) -> None:
    # Through a CONNECT proxy the TCP peer is the proxy: its port used to key a fresh record, so
    # a proxy presenting another (CA-trusted) key for a known host was "first use".
    a, same_key, other_key = two_keys
    store = KnownPins(tmp_path / "known.json")
    ctx = store.create_default_context(cafile=files.root_ca)
    assert get(ctx, a.port) == 200  # first use, direct
    with ConnectProxy() as proxy:

        def via_proxy(port: int) -> int:
            conn = http.client.HTTPSConnection(proxy.host, proxy.port, context=ctx, timeout=5)
            conn.set_tunnel("127.0.0.1", port)
            try:
                conn.request("GET", "/")
                return conn.getresponse().status
            finally:
                conn.close()

        with pytest.raises(PinValidationError) as err:
            via_proxy(other_key.port)
        assert _mismatch(err.value)
        assert other_key.wait_idle() and other_key.total_received() == b""
        assert via_proxy(same_key.port) == 200  # the twin: the known key through the proxy
    assert [e.key for e in store.entries()] == ["127.0.0.1"]


def test_a_port_the_application_names_adds_a_record(
    files: PKIFiles, pki_a: PKI, two_keys: tuple[TLSServer, TLSServer, TLSServer], tmp_path: Path
) -> None:
    # Two services with different keys on one host: the application records the second by port;
    # both keys are then accepted on any port, and a third key is still a mismatch.
    a, _same_key, other_key = two_keys
    store = KnownPins(tmp_path / "known.json")
    ctx = store.create_default_context(cafile=files.root_ca)
    assert get(ctx, a.port) == 200
    chain = tuple(fetch_chain("127.0.0.1", other_key.port, cafile=files.root_ca).verified)
    store.record("127.0.0.1", other_key.port, chain)  # not replaced: the host is known
    assert [e.key for e in store.entries()] == ["127.0.0.1"]
    store.record("127.0.0.1", other_key.port, chain, replace=True)
    assert [e.key for e in store.entries()] == [f"127.0.0.1:{other_key.port}"]
    assert get(ctx, other_key.port) == 200
    with pytest.raises(PinValidationError):
        get(ctx, a.port)  # the host-wide record went with replace (its port was unknown)
    store.record("127.0.0.1", a.port, tuple(pki_a.leaf.chain_der()), replace=True)
    assert get(ctx, a.port) == 200 and get(ctx, other_key.port) == 200
    third = pki_a.intermediate.issue_leaf("127.0.0.1")
    with TLSServer(*third.write(tmp_path / "third")) as srv, pytest.raises(PinValidationError):
        get(ctx, srv.port)


def test_version_1_files_are_migrated(
    files: PKIFiles, pki_a: PKI, two_keys: tuple[TLSServer, TLSServer, TLSServer], tmp_path: Path
) -> None:
    a, same_key, other_key = two_keys
    path = tmp_path / "known.json"
    pin = spki_pin(pki_a.leaf.cert)
    v1 = {
        "format": "certpin-known-pins/1",
        "hosts": {
            f"127.0.0.1:{a.port}": {"pins": [pin], "first_seen": "2026-01-02T00:00:00Z"},
            "LOCALHOST.:*": {"pins": [pin], "first_seen": "2026-01-01T00:00:00Z"},
            "[::1]:443": {"pins": [pin], "first_seen": "2026-01-01T00:00:00Z"},
        },
    }
    path.write_text(json.dumps(v1))
    store = KnownPins(path)
    assert sorted(e.key for e in store.entries()) == [
        f"127.0.0.1:{a.port}",
        "[::1]:443",
        "localhost",
    ]
    ctx = store.create_default_context(cafile=files.root_ca)
    with pytest.raises(PinValidationError) as err:  # known under port A: known on every port
        get(ctx, other_key.port)
    assert _mismatch(err.value)
    assert get(ctx, same_key.port) == 200
    with pytest.raises(PinValidationError):  # the old asyncio record makes localhost known
        get(ctx, other_key.port, host="localhost")
    # the next write stores version 2, with the same records
    store.forget("::1")
    doc = json.loads(path.read_text())
    assert doc["format"] == "certpin-known-pins/2"
    assert sorted(doc["hosts"]) == [f"127.0.0.1:{a.port}", "localhost"]


# -- the store file is outside input: bounded, linear, only certpin's errors ----------------------


@pytest.mark.parametrize("port", [0, 65536, -1, True, "443"])
def test_a_port_that_could_not_be_read_back_is_never_written(
    port: Any, tmp_path: Path, pki_a: PKI
) -> None:
    store = KnownPins(tmp_path / "known.json")
    with pytest.raises(ConfigurationError, match="is not 1-65535"):
        store.record("a.example", port, tuple(pki_a.leaf.chain_der()))
    assert not (tmp_path / "known.json").exists()
    store.record("a.example", 65535, tuple(pki_a.leaf.chain_der()))  # the twin: the top port
    assert [e.key for e in KnownPins(tmp_path / "known.json").entries()] == ["a.example:65535"]


def test_oversized_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    path.write_bytes(b" " * (MAX_STORE_SIZE + 1))
    with pytest.raises(ConfigurationError, match="limit is"):
        KnownPins(path).entries()
    # the twin: a store just under the cap loads
    body = json.dumps({"format": "certpin-known-pins/2", "hosts": {}}).encode()
    path.write_bytes(body + b" " * (MAX_STORE_SIZE - len(body)))
    assert KnownPins(path).entries() == []


def test_recording_into_a_full_store_fails_closed(
    tmp_path: Path, pki_a: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same code with a 64 KiB cap (the real one is 8 MiB: slow to fill in a test).
    cap = 64 * 1024
    monkeypatch.setattr("certpin.dynamic.tofu.MAX_STORE_SIZE", cap)
    path = tmp_path / "known.json"
    pin = spki_pin(pki_a.leaf.cert)

    def doc(n: int) -> bytes:  # as KnownPins writes it; fixed-width names: constant record size
        hosts = {f"h{i:07d}.example": {"pins": [pin], "first_seen": ""} for i in range(n)}
        return (
            json.dumps({"format": "certpin-known-pins/2", "hosts": hosts}, indent=2) + "\n"
        ).encode()

    step = len(doc(2)) - len(doc(1))
    n = (cap - len(doc(1))) // step + 1  # the most records that fit
    path.write_bytes(doc(n))
    assert cap - step < path.stat().st_size <= cap
    store = KnownPins(path)
    assert len(store.entries()) == n  # a full store loads
    with pytest.raises(ConfigurationError, match="would exceed"):
        store.record(f"h{n:07d}.example", None, tuple(pki_a.leaf.chain_der()))
    assert len(KnownPins(path).entries()) == n  # refused, and the file is untouched


_GOOD_PIN = "sha256/" + "A" * 43 + "="


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{broken", "unreadable"),
        (b"\xff\xfe", "unreadable"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|unreadable"),
        (b'{"format": "certpin-known-pins/3", "hosts": {}}', "format is not"),
        (b'{"format": "certpin-known-pins/2"}', "'hosts' object"),
        (b'{"format": "certpin-known-pins/2", "hosts": {}, "x": 1}', "'hosts' object"),
        (b'{"format": "certpin-known-pins/2", "hosts": [], "format": 1}', "duplicate key"),
        (b'{"format": "certpin-known-pins/2", "hosts": {"a.example": 1}}', "must be an object"),
        (b'{"format": "certpin-known-pins/2", "hosts": {"a.example": {}}}', "non-empty list"),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"a.example": {"pins": [NaN]}}}',
            "NaN is not JSON",
        ),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"a.example": {"pins": [1]}}}',
            r"hosts\['a.example'\].pins\[0\]: must be a pin string",
        ),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"a.example": {"pins": ["x"]}}}',
            r"pins\[0\]",
        ),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"a.example": {"pins": ["'
            + _GOOD_PIN.encode()
            + b'"], "extra": 1}}}',
            "unknown field 'extra'",
        ),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"a..b": {"pins": ["'
            + _GOOD_PIN.encode()
            + b'"]}}}',
            "not a known-pins key",
        ),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"a.example:0": {"pins": ["'
            + _GOOD_PIN.encode()
            + b'"]}}}',
            "not 1-65535",
        ),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"::1": {"pins": ["'
            + _GOOD_PIN.encode()
            + b'"]}}}',
            "must be in brackets",
        ),
        (
            b'{"format": "certpin-known-pins/1", "hosts": {"a.example": {"pins": ["'
            + _GOOD_PIN.encode()
            + b'"]}}}',
            "version 1 key is HOST:PORT",
        ),
        (
            b'{"format": "certpin-known-pins/2", "hosts": {"127.0.0.010": {"pins": ["'
            + _GOOD_PIN.encode()
            + b'"]}}}',
            "not a known-pins key",
        ),
    ],
)
def test_corrupt_store_content_is_a_configuration_error(
    content: bytes, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "known.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=problem) as err:
        KnownPins(path).entries()
    assert str(path) in str(err.value)


def test_spellings_of_one_host_merge_into_one_record() -> None:
    doc = {
        "format": "certpin-known-pins/1",
        "hosts": {
            "127.0.0.1:443": {"pins": [_GOOD_PIN], "first_seen": "2026-01-02T00:00:00Z"},
            "127.1:443": {"pins": [str(Pin.parse("sha256/" + "B" * 42 + "A="))]},
        },
    }
    records = parse_store(json.dumps(doc).encode(), "mem")
    (only,) = records["127.0.0.1"]
    assert only.key == "127.0.0.1:443" and len(only.pins) == 2
    assert only.first_seen == "2026-01-02T00:00:00Z"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_ENTRY = st.fixed_dictionaries(
    {
        "pins": st.lists(
            st.sampled_from([_GOOD_PIN, "sha256/x", "", "md5/AA=="]) | _JSON, max_size=3
        )
    },
    optional={"issuer_pins": _JSON, "first_seen": _JSON, "x": _JSON},
)
_KEYS = st.sampled_from(
    ["a.example", "a.example:443", "[::1]", "[::1]:0", "A.EXAMPLE.", "a.example:*", "::1", "127.1"]
) | st.text(max_size=20)
_DOCS = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["certpin-known-pins/1", "certpin-known-pins/2"]) | _JSON,
        "hosts": st.dictionaries(_KEYS, _ENTRY | _JSON, max_size=4) | _JSON,
    }
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), _DOCS.map(lambda d: json.dumps(d).encode())))
def test_parse_store_returns_records_or_raises_configuration_error(data: bytes) -> None:
    try:
        records = parse_store(data, "fuzz")
    except ConfigurationError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    for host, entries in records.items():
        assert entries and all(e.host == host and e.pins for e in entries)


def test_parse_store_is_linear() -> None:
    def make(n: int) -> bytes:
        hosts = {
            f"h{i}.example{':' + str(1 + i % 65535) if i % 3 else ''}": {
                "pins": [_GOOD_PIN],
                "first_seen": "2026-01-01T00:00:00Z",
            }
            for i in range(n)
        }
        return json.dumps({"format": "certpin-known-pins/2", "hosts": hosts}).encode()

    assert_near_linear(lambda data: parse_store(data, "x"), make, base=2000)
    # long keys and pins are refused before any quadratic work could start
    assert_near_linear(
        lambda data: parse_store(data, "x"),
        lambda n: json.dumps(
            {"format": "certpin-known-pins/2", "hosts": {"a" * n: {"pins": ["A" * n]}}}
        ).encode(),
        base=200_000,
    )
