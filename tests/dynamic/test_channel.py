"""The update channel: the bundle host stays pinned, fetches have a deadline, refreshes never
raise, hard expiry unions per host, and a DynamicPolicy reads like a Policy."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _dyn import BACKUP, BundleHost, policy_doc

from _support.pki import PKI, PKIFiles, make_pki, spki_pin
from certpin import ConfigurationError, Pin, Policy, VerdictStatus, verdict
from certpin.dynamic import DynamicPolicy, FileSigner, RefreshResult, sign_bundle
from certpin.dynamic.compose import union_policy
from certpin.dynamic.jws import b64url_encode, canonical_json, sign_compact

DAY = dt.timedelta(days=1)
BACKUP2 = str(Pin(bytes([8]) * 32))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def rogue() -> PKI:
    """A chain for localhost from another CA: what a MITM of the bundle host would present."""
    return make_pki(("localhost",), root_name="Rogue Root")


def client(
    host: BundleHost, signer: FileSigner, fallback: Policy, tmp: Path, **kw: Any
) -> DynamicPolicy:
    args: dict[str, Any] = {
        "trusted_keys": [signer.trusted_key],
        "cache_dir": tmp / "cache",
        "fallback": fallback,
        "cafile": host.files.root_ca,
        "timeout": 2.0,
    }
    args.update(kw)
    return DynamicPolicy(host.url, **args)


def publish(
    host: BundleHost, signer: FileSigner, doc: dict[str, Any], version: int, **kw: Any
) -> str:
    kw.setdefault("expires", now() + 30 * DAY)
    token = sign_bundle(doc, signer, version=version, **kw)
    host.publish(token)
    return token


# -- S4: the bundle host stays pinned -------------------------------------------------------------


def test_fallback_must_pin_the_bundle_host(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, tmp_path: Path
) -> None:
    unpinned = Policy.from_dict(policy_doc({"api.example.com": [BACKUP, BACKUP2]}))
    with pytest.raises(ConfigurationError, match="localhost.*allow_unpinned_bundle_host"):
        client(bundle_host, es256, unpinned, tmp_path)
    report_only = Policy.from_dict(
        {"domains": {"localhost": {"pins": [BACKUP, BACKUP2], "enforce": False}}}
    )
    with pytest.raises(ConfigurationError, match="enforcing"):
        client(bundle_host, es256, report_only, tmp_path)
    # the documented opt-out, and the normal case
    assert client(bundle_host, es256, unpinned, tmp_path, allow_unpinned_bundle_host=True)
    assert client(bundle_host, es256, bootstrap, tmp_path / "ok").bundle_host == "localhost"


def _bundle_host_verdict(dyn: DynamicPolicy, pki: PKI) -> VerdictStatus:
    return verdict("localhost", pki.leaf.chain_der(), dyn.current_policy(), now()).status


@pytest.mark.parametrize("how", ["omitted", "rollout_omits", "deny_omits"])
def test_a_bundle_cannot_unpin_the_bundle_host(
    bundle_host: BundleHost,
    es256: FileSigner,
    bootstrap: Policy,
    bundle_pki: PKI,
    rogue: PKI,
    tmp_path: Path,
    how: str,
) -> None:
    other = policy_doc({"127.0.0.1": [BACKUP, BACKUP2]})
    if how == "omitted":
        publish(bundle_host, es256, other, 1)
    elif how == "deny_omits":
        publish(bundle_host, es256, {**other, "unpinned_hosts": "deny"}, 1)
    else:
        keep = policy_doc({"localhost": [spki_pin(bundle_pki.intermediate.cert), BACKUP]})
        rollout = {"id": "r", "percent": 100, "policy": other}
        publish(bundle_host, es256, keep, 1, rollout=rollout)
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    assert dyn.refresh_now().version == 1
    assert _bundle_host_verdict(dyn, rogue) is VerdictStatus.FAILED  # a MITM is still refused
    assert _bundle_host_verdict(dyn, bundle_pki) is VerdictStatus.OK
    assert dyn.refresh_now().ok  # and the channel still works over the bootstrap pins


def test_a_bundle_can_rotate_the_bundle_host(
    bundle_host: BundleHost,
    es256: FileSigner,
    bootstrap: Policy,
    bundle_pki: PKI,
    rogue: PKI,
    tmp_path: Path,
) -> None:
    # "the bootstrap pins of the fallback, then whatever the last good bundle says for that
    # host": v1 adds the next CA next to the current one, v2 drops the old one.
    current, new = spki_pin(bundle_pki.intermediate.cert), spki_pin(rogue.intermediate.cert)
    publish(bundle_host, es256, policy_doc({"localhost": [current, new]}), 1)
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    assert dyn.refresh_now().version == 1
    assert _bundle_host_verdict(dyn, rogue) is VerdictStatus.OK
    assert _bundle_host_verdict(dyn, bundle_pki) is VerdictStatus.OK
    publish(bundle_host, es256, policy_doc({"localhost": [new, BACKUP2]}), 2)
    assert dyn.refresh_now().version == 2
    pins = {str(p) for p in dyn.current_policy().domains["localhost"].pins}
    assert pins == {new, BACKUP2}  # the old key is gone: the channel really rotated
    assert _bundle_host_verdict(dyn, bundle_pki) is VerdictStatus.FAILED
    assert _bundle_host_verdict(dyn, rogue) is VerdictStatus.OK


def test_a_report_only_bundle_rule_cannot_weaken_the_bundle_host(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, rogue: PKI, tmp_path: Path
) -> None:
    doc = policy_doc({"localhost": [BACKUP, BACKUP2]})
    doc["domains"]["localhost"]["enforce"] = False
    publish(bundle_host, es256, doc, 1)
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    assert dyn.refresh_now().version == 1
    rule = dyn.current_policy().domains["localhost"]
    assert rule.enforce and set(bootstrap.domains["localhost"].pins) <= set(rule.pins)
    assert _bundle_host_verdict(dyn, rogue) is VerdictStatus.FAILED


@pytest.mark.parametrize("domains", ["*", ["localhost"], ["127.0.0.1", "localhost"]])
def test_kill_switches_never_reach_the_bundle_host(
    bundle_host: BundleHost,
    es256: FileSigner,
    bootstrap: Policy,
    bundle_pki: PKI,
    rogue: PKI,
    tmp_path: Path,
    domains: Any,
) -> None:
    doc = policy_doc(
        {
            "localhost": [spki_pin(bundle_pki.intermediate.cert), BACKUP],
            "127.0.0.1": [BACKUP, BACKUP2],
        }
    )
    kill = {"domains": domains, "until": now() + DAY, "reason": "INC-1"}
    publish(bundle_host, es256, doc, 1, kill_switch=kill)
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    assert dyn.refresh_now().version == 1
    policy = dyn.current_policy()
    assert policy.domains["localhost"].kill_switch is None
    assert _bundle_host_verdict(dyn, rogue) is VerdictStatus.FAILED
    # its twin: the other host named by the switch is killed
    if domains == "*" or "127.0.0.1" in domains:
        assert policy.domains["127.0.0.1"].kill_switch is not None
        chain = make_pki(("127.0.0.1",)).leaf.chain_der()
        assert verdict("127.0.0.1", chain, policy, now()).status is VerdictStatus.KILLED


def test_opted_out_bundle_host_follows_the_bundle_but_is_never_killed(
    bundle_host: BundleHost, es256: FileSigner, bundle_pki: PKI, rogue: PKI, tmp_path: Path
) -> None:
    fallback = Policy.from_dict(policy_doc({"127.0.0.1": [BACKUP, BACKUP2]}))
    dyn = client(bundle_host, es256, fallback, tmp_path, allow_unpinned_bundle_host=True)
    assert _bundle_host_verdict(dyn, rogue) is VerdictStatus.UNPINNED  # the accepted risk
    doc = policy_doc(
        {
            "localhost": [spki_pin(bundle_pki.intermediate.cert), BACKUP],
            "127.0.0.1": [BACKUP, BACKUP2],
        }
    )
    kill = {"domains": "*", "until": now() + DAY, "reason": "INC-3"}
    publish(bundle_host, es256, doc, 1, kill_switch=kill)
    assert dyn.refresh_now().version == 1
    assert _bundle_host_verdict(dyn, rogue) is VerdictStatus.FAILED
    assert dyn.current_policy().domains["localhost"].kill_switch is None
    assert dyn.current_policy().domains["127.0.0.1"].kill_switch is not None


# -- S5: hard expiry unions what each policy applies to each host ----------------------------------


@pytest.fixture(scope="module")
def api_pki() -> PKI:
    return make_pki(("api.example.com", "www.example.com"), root_name="Example Root")


@pytest.mark.parametrize("flip", [False, True])
def test_union_applies_both_policies_pins_per_host(api_pki: PKI, flip: bool) -> None:
    good = spki_pin(api_pki.intermediate.cert)
    wide = Policy.from_dict(policy_doc({"**.example.com": [good, BACKUP]}))
    narrow = Policy.from_dict(policy_doc({"api.example.com": [BACKUP2, str(Pin(bytes(32)))]}))
    a, b = (narrow, wide) if flip else (wide, narrow)
    union = union_policy(a, b)
    chain, t = api_pki.leaf.chain_der(), now()
    assert verdict("api.example.com", chain, union, t).status is VerdictStatus.OK
    assert verdict("www.example.com", chain, union, t).status is VerdictStatus.OK
    assert verdict("api.example.com", chain, narrow, t).status is VerdictStatus.FAILED  # twin
    rogue_chain = make_pki(("api.example.com",)).leaf.chain_der()
    assert verdict("api.example.com", rogue_chain, union, t).status is VerdictStatus.FAILED
    assert {str(p) for p in union.domains["api.example.com"].pins} == {
        good,
        BACKUP,
        BACKUP2,
        str(Pin(bytes(32))),
    }
    assert {str(p) for p in union.domains["**.example.com"].pins} == {good, BACKUP}


def test_union_covers_one_label_subdomain_and_include_subdomains_classes() -> None:
    p = [str(Pin(bytes([n]) * 32)) for n in range(10, 16)]
    a = Policy.from_dict(
        {
            "domains": {
                "*.example.com": {"pins": p[0:2]},
                "example.com": {"pins": p[2:4], "include_subdomains": True},
                "10.0.0.1": {"pins": p[4:6]},
            }
        }
    )
    b = Policy.from_dict(
        policy_doc({"**.example.com": [p[0], BACKUP], "10.0.0.1": [BACKUP2, p[5]]})
    )
    union = union_policy(a, b)

    def pins(host: str) -> set[str]:
        rule = union.lookup(host)
        assert rule is not None
        return {str(x) for x in rule.pins}

    assert pins("x.example.com") == set(p[0:2]) | {BACKUP}
    assert pins("x.y.example.com") == set(p[2:4]) | {p[0], BACKUP}
    assert pins("example.com") == set(p[2:4]) | {p[0], BACKUP}
    assert pins("10.0.0.1") == {p[4], p[5], BACKUP2}
    assert union.lookup("other.org") is None


_UNION_KEYS = [
    "example.com",
    "*.example.com",
    "**.example.com",
    "api.example.com",
    "*.api.example.com",
    "**.api.example.com",
    "v1.api.example.com",
    "**.other.org",
    "other.org",
    "10.0.0.1",
]
_UNION_HOSTS = [
    "example.com",
    "api.example.com",
    "www.example.com",
    "v1.api.example.com",
    "v2.api.example.com",
    "a.b.example.com",
    "x.v1.api.example.com",
    "a.b.api.example.com",
    "a.b.c.example.com",
    "shop.com",
    "other.org",
    "www.other.org",
    "10.0.0.1",
]


def _rules(keys: list[str], first: int, subdomains: bool) -> Policy:
    domains: dict[str, Any] = {}
    for n, key in enumerate(keys):
        rule: dict[str, Any] = {"pins": [str(Pin(bytes([first + n]) * 32)), BACKUP]}
        if subdomains and not key.startswith("*") and key.count(".") > 1:
            rule["include_subdomains"] = True
        domains[key] = rule
    return Policy.from_dict({"domains": domains})


_SPLITS = [(_UNION_KEYS[n::2], _UNION_KEYS[(n + 1) % 3 :: 3], n % 2 == 1) for n in range(6)] + [
    # A "*." key of one policy beside a "**." key of the other on the same base: the hosts two
    # labels down get the "**." key, and the first policy's rule above it.
    (["*.api.example.com", "**.example.com"], ["**.api.example.com", "api.example.com"], True),
    (["*.api.example.com", "example.com"], ["api.example.com", "www.example.com"], True),
]


@pytest.mark.parametrize(("a_keys", "b_keys", "subdomains"), _SPLITS)
def test_union_accepts_for_every_host_what_either_policy_accepts_and_no_more(
    a_keys: list[str], b_keys: list[str], subdomains: bool
) -> None:
    # The definition, host by host, over overlapping key sets of every kind: the union's rule
    # for a host holds every pin either policy's rule for it holds (so the union never locks out
    # what one of them lets in), and no pin that neither policy applies anywhere near it.
    a = _rules(a_keys, 40, subdomains=subdomains)
    b = _rules(b_keys, 80, subdomains=not subdomains)
    union = union_policy(a, b)
    for host in _UNION_HOSTS:
        expected = {p for policy in (a, b) if (rule := policy.lookup(host)) for p in rule.all_pins}
        rule = union.lookup(host)
        got = set() if rule is None else set(rule.all_pins)
        assert expected <= got, host
        every = {p for r in (*a.domains.values(), *b.domains.values()) for p in r.all_pins}
        assert got <= every, host
        assert (rule is None) == (not expected), host


def test_hard_expiry_keeps_fallback_wildcard_pins_for_a_bundle_host_rule(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, api_pki: PKI, tmp_path: Path
) -> None:
    clock = {"now": now()}
    good = spki_pin(api_pki.intermediate.cert)
    fallback = bootstrap.replace_rules(
        Policy.from_dict(policy_doc({"**.example.com": [good, BACKUP]})).domains.values()
    )
    doc = policy_doc(
        {
            "localhost": [str(p) for p in bootstrap.domains["localhost"].pins],
            "api.example.com": [BACKUP2, str(Pin(bytes(32)))],
        }
    )
    publish(bundle_host, es256, doc, 1, expires=clock["now"] + DAY)
    dyn = client(bundle_host, es256, fallback, tmp_path, clock=lambda: clock["now"])
    assert dyn.refresh_now().version == 1
    chain = api_pki.leaf.chain_der()
    assert dyn.lookup("api.example.com") is not None
    before = verdict("api.example.com", chain, dyn.current_policy(), clock["now"])
    assert before.status is VerdictStatus.FAILED  # the bundle in force says other pins
    clock["now"] += 2 * DAY
    after = verdict("api.example.com", chain, dyn.current_policy(), clock["now"])
    assert after.status is VerdictStatus.OK


# -- S6: an overall deadline for the fetch ---------------------------------------------------------


class DripServer:
    """TLS with the bundle host's certificate, then an HTTP response one byte per 0.2 s."""

    def __init__(self, files: PKIFiles, drip_headers: bool) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(files.certfile, files.keyfile)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.drip_headers = drip_headers
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(raw,), daemon=True).start()

    def _drip(self, raw: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                if not self.drip_headers:
                    conn.sendall(head)
                    head = b""
                for byte in head + b"x" * 60:  # 60 bytes: ~12 s, bounded so nothing hangs forever
                    if self.stop.wait(0.2):
                        return
                    conn.sendall(bytes([byte]))
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


@pytest.mark.parametrize("drip_headers", [False, True])
def test_dripping_bundle_host_is_cut_at_the_deadline(
    bundle_files: PKIFiles, es256: FileSigner, bootstrap: Policy, tmp_path: Path, drip_headers: bool
) -> None:
    server = DripServer(bundle_files, drip_headers)
    try:
        dyn = DynamicPolicy(
            f"https://localhost:{server.port}/bundle.jws",
            trusted_keys=[es256.trusted_key],
            cache_dir=tmp_path / "cache",
            fallback=bootstrap,
            cafile=bundle_files.root_ca,
            timeout=1.0,  # each byte arrives well within the per-read timeout
            deadline=1.0,
        )
        results: list[tuple[RefreshResult, float]] = []

        def waiter() -> None:
            time.sleep(0.2)  # arrive while the first fetch is running
            start = time.monotonic()
            results.append((dyn.refresh_now(), time.monotonic() - start))

        other = threading.Thread(target=waiter)
        other.start()
        start = time.monotonic()
        result = dyn.refresh_now()
        elapsed = time.monotonic() - start
        other.join(15)
        assert result.status == "failed" and "deadline" in result.reason, result
        assert elapsed < 2.5
        ((waited, waited_for),) = results
        assert waited.status == "failed" and waited_for < 2.5
        assert dyn.current_policy() is bootstrap
    finally:
        server.close()


def test_a_fast_bundle_host_is_not_cut(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, tmp_path: Path
) -> None:
    publish(bundle_host, es256, policy_doc({"localhost": [BACKUP, BACKUP2]}), 1)
    dyn = client(bundle_host, es256, bootstrap, tmp_path, deadline=1.0)
    time.sleep(1.2)  # the watchdog of a finished fetch must not fire into a later one
    assert dyn.refresh_now().status == "updated"
    assert dyn.deadline == 1.0 and client(bundle_host, es256, bootstrap, tmp_path).deadline == 6.0


# -- S2: hostile input never escapes refresh_now() / accept() --------------------------------------


def _hostile_headers() -> list[str]:
    big_int = b'{"alg":"ES256","kid":' + b"9" * 5000 + b"}"
    nested = b"[" * 5000 + b"]" * 5000
    huge = b"[" * 100_000
    return [f"{b64url_encode(h)}.e30.AAAA" for h in (big_int, nested, huge)]


def test_hostile_unsigned_headers_are_rejections_not_crashes(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, tmp_path: Path
) -> None:
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    for token in _hostile_headers():
        r = dyn.accept(token)
        assert r.status == "rejected" and ("bad_json" in r.reason or "too_large" in r.reason)
        bundle_host.publish(token)
        r = dyn.refresh_now()
        assert r.status == "rejected", r
    assert dyn.current_policy() is bootstrap


def test_hostile_signed_payloads_are_rejections(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, tmp_path: Path
) -> None:
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    for payload in (b'{"version":' + b"1" * 5000 + b"}", b"[" * 5000 + b"]" * 5000):
        r = dyn.accept(sign_compact(payload, es256, "certpin-bundle+jws"))
        assert r.status == "rejected" and "bad_json" in r.reason
    good = sign_compact(canonical_json({"format": "certpin-bundle/1"}), es256, "certpin-bundle+jws")
    assert "bad_payload" in dyn.accept(good).reason or "version" in dyn.accept(good).reason


def test_refresh_never_raises_and_waiters_get_a_result(
    bundle_host: BundleHost,
    es256: FileSigner,
    bootstrap: Policy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    entered = threading.Event()

    def broken() -> RefreshResult:
        entered.set()
        time.sleep(0.3)
        raise RuntimeError("a bug in the fetch")

    monkeypatch.setattr(dyn, "_refresh", broken)
    waited: list[RefreshResult] = []

    def waiter() -> None:
        entered.wait(5)
        waited.append(dyn.refresh_now())

    t = threading.Thread(target=waiter)
    t.start()
    first = dyn.refresh_now()
    t.join(10)
    assert first.status == "failed" and "RuntimeError" in first.reason
    assert [w.status for w in waited] == ["failed"]
    assert dyn.current_policy() is bootstrap


def test_accept_never_raises(
    bundle_host: BundleHost,
    es256: FileSigner,
    bootstrap: Policy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import certpin.dynamic.provider as dynamic

    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    token = publish(bundle_host, es256, policy_doc({"localhost": [BACKUP, BACKUP2]}), 1)

    def explode(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dynamic, "atomic_write", explode)
    r = dyn.accept(token)
    assert r.status == "failed" and "No space" in r.reason and dyn.version is None
    monkeypatch.setattr(dynamic, "verify_bundle", lambda *a, **k: 1 / 0)
    r = dyn.accept(token)
    assert r.status == "rejected" and "ZeroDivisionError" in r.reason
    monkeypatch.undo()
    assert dyn.accept(token).status == "updated"  # the twin: the same token, healthy


def test_cli_verify_rejects_hostile_bundles_without_a_traceback(
    es256: FileSigner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from certpin.cli.main import main

    pub = tmp_path / "pub.pem"
    pub.write_bytes(es256.public_pem())
    for n, token in enumerate(_hostile_headers()):
        f = tmp_path / f"b{n}.jws"
        f.write_text(token)
        assert main(["bundle", "verify", str(f), "--trust", str(pub)]) == 1
        out = capsys.readouterr()
        assert "REJECTED" in out.out and "Traceback" not in out.err


# -- C3: a DynamicPolicy reads like a Policy -------------------------------------------------------


def test_dynamic_policy_is_usable_where_a_policy_is_read(
    bundle_host: BundleHost,
    es256: FileSigner,
    bootstrap: Policy,
    bundle_pki: PKI,
    rogue: PKI,
    tmp_path: Path,
) -> None:
    dyn = client(bundle_host, es256, bootstrap, tmp_path)
    t = now()
    for pki, status in ((bundle_pki, VerdictStatus.OK), (rogue, VerdictStatus.FAILED)):
        chain = pki.leaf.chain_der()
        direct = verdict("localhost", chain, dyn, t)  # type: ignore[arg-type]
        assert direct.status is status
        assert direct == verdict("localhost", chain, dyn.current_policy(), t)
    assert dyn.domains == bootstrap.domains and dyn.unpinned_hosts == "allow"
    assert dyn.lookup("localhost") is bootstrap.lookup("localhost")
    publish(
        bundle_host,
        es256,
        {**policy_doc({"127.0.0.1": [BACKUP, BACKUP2]}), "unpinned_hosts": "deny"},
        1,
    )
    dyn.refresh_now()
    assert dyn.unpinned_hosts == "deny" and "127.0.0.1" in dyn.domains
    denied = verdict("elsewhere.example", rogue.leaf.chain_der(), dyn, t)  # type: ignore[arg-type]
    assert denied.status is VerdictStatus.DENIED
