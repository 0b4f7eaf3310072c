"""DynamicPolicy end to end: a real HTTPS bundle host, real pinned API servers, real files."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _dyn import BACKUP, BundleHost, policy_doc

from _support.pki import PKI, PKIFiles, make_pki, spki_pin, write_pki_files
from _support.servers import TLSServer
from certpin import Pin, PinValidationError, Policy, VerdictStatus, create_default_context
from certpin.dynamic import DynamicPolicy, FileSigner, sign_bundle
from certpin.dynamic.compose import bucket

DAY = dt.timedelta(days=1)
OTHER = str(Pin(bytes([9]) * 32))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def api_pki() -> PKI:
    return make_pki(("127.0.0.1",), root_name="API Root", intermediate_name="API CA")


@pytest.fixture
def api_files(api_pki: PKI, tmp_path: Path) -> PKIFiles:
    return write_pki_files(api_pki, tmp_path / "api-pki")


@pytest.fixture
def api(api_files: PKIFiles) -> Iterator[TLSServer]:
    with TLSServer(api_files.certfile, api_files.keyfile) as srv:
        yield srv


@pytest.fixture
def cafile(tmp_path: Path, bundle_files: PKIFiles, api_files: PKIFiles) -> Path:
    path = tmp_path / "roots.pem"
    path.write_bytes(bundle_files.root_ca.read_bytes() + api_files.root_ca.read_bytes())
    return path


class Env:
    def __init__(
        self, host: BundleHost, signer: FileSigner, bootstrap: Policy, cafile: Path, tmp: Path
    ) -> None:
        self.host, self.signer, self.bootstrap, self.cafile, self.tmp = (
            host,
            signer,
            bootstrap,
            cafile,
            tmp,
        )
        self.cache = tmp / "cache"
        self.bundle_pins = bootstrap.to_dict()["domains"]["localhost"]["pins"]

    def doc(self, api_pins: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        domains = {"localhost": self.bundle_pins}
        if api_pins is not None:
            domains["127.0.0.1"] = api_pins
        return policy_doc(domains, **extra)

    def publish(self, version: int, api_pins: list[str] | None = None, **kw: Any) -> str:
        kw.setdefault("expires", now() + 30 * DAY)
        token = sign_bundle(self.doc(api_pins), self.signer, version=version, **kw)
        self.host.publish(token)
        return token

    def client(self, **kw: Any) -> DynamicPolicy:
        args: dict[str, Any] = {
            "trusted_keys": [self.signer.trusted_key],
            "cache_dir": self.cache,
            "fallback": self.bootstrap,
            "cafile": self.cafile,
            "timeout": 2.0,
        }
        args.update(kw)
        return DynamicPolicy(self.host.url, **args)


@pytest.fixture
def env(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, cafile: Path, tmp_path: Path
) -> Env:
    return Env(bundle_host, es256, bootstrap, cafile, tmp_path)


def get(ctx: Any, server: TLSServer) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


# -- fetching and installing ------------------------------------------------------------------


def test_fetch_install_and_etag(env: Env, api_pki: PKI) -> None:
    env.publish(1, [spki_pin(api_pki.intermediate.cert), BACKUP])
    dyn = env.client()
    assert dyn.version is None and dyn.current_policy() is env.bootstrap  # fallback first
    r = dyn.refresh_now()
    assert (r.status, r.version) == ("updated", 1)
    assert "127.0.0.1" in dyn.current_policy().domains
    assert (env.cache / "bundle.jws").read_text() == dyn.bundle.token  # type: ignore[union-attr]
    assert dyn.refresh_now().status == "not_modified"  # If-None-Match -> 304
    state = json.loads((env.cache / "state.json").read_text())
    assert state["highest_version"] == 1 and state["etag"]


def test_system_ca_store_is_loaded_by_the_first_fetch_not_at_start(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without CA material the bundle host is checked against the system store, whose loading
    # (≈ 40 ms) is deferred to the first fetch: SSL_CERT_FILE set *after* construction still
    # decides which roots that fetch trusts.
    env.publish(1)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    untrusting = env.client(cafile=None, cache_dir=env.tmp / "a")
    trusting = env.client(cafile=None, cache_dir=env.tmp / "b")
    monkeypatch.setenv("SSL_CERT_FILE", str(env.cafile))
    assert trusting.refresh_now().status == "updated"
    monkeypatch.setenv("SSL_CERT_FILE", str(env.tmp / "no-such-roots.pem"))
    failed = untrusting.refresh_now()
    assert failed.status == "failed" and "certificate verify failed" in failed.reason
    assert untrusting.version is None and untrusting.current_policy() is env.bootstrap


def test_explicit_ca_material_is_loaded_at_construction(env: Env) -> None:
    with pytest.raises(FileNotFoundError):
        env.client(cafile=env.tmp / "missing.pem")


def test_new_version_applies_to_new_handshakes_without_rebuilding(
    env: Env, api: TLSServer, api_pki: PKI, cafile: Path
) -> None:
    env.publish(1, [BACKUP, spki_pin(make_pki().intermediate.cert)])  # wrong pins for the API
    dyn = env.client()
    dyn.refresh_now()
    ctx = create_default_context(dyn, cafile=cafile)
    with pytest.raises(PinValidationError):
        get(ctx, api)
    env.publish(2, [spki_pin(api_pki.intermediate.cert), BACKUP])
    assert dyn.refresh_now().status == "updated"
    assert get(ctx, api) == 200


def test_replay_of_older_version_rejected_also_after_restart(env: Env) -> None:
    old = env.publish(1)
    dyn = env.client()
    dyn.refresh_now()
    env.publish(2)
    assert dyn.refresh_now().version == 2
    env.host.publish(old)
    r = dyn.refresh_now()
    assert r.status == "rejected" and "below" in r.reason and dyn.version == 2
    restarted = env.client()
    assert restarted.version == 2
    r = restarted.refresh_now()
    assert r.status == "rejected" and restarted.version == 2


def test_wiped_cache_still_honours_min_version(env: Env) -> None:
    env.publish(3)
    dyn = env.client(min_version=4)
    r = dyn.refresh_now()
    assert r.status == "rejected" and "below the minimum 4" in r.reason
    assert dyn.current_policy() is env.bootstrap
    env.publish(4)
    assert dyn.refresh_now().status == "updated"


def test_same_version_must_be_byte_identical(env: Env) -> None:
    env.publish(5)
    dyn = env.client()
    dyn.refresh_now()
    env.publish(5, [BACKUP, spki_pin(make_pki().root.cert)])  # re-signed with other content
    r = dyn.refresh_now()
    assert r.status == "rejected" and "equivocation" in r.reason
    assert "127.0.0.1" not in dyn.current_policy().domains


def test_expired_and_future_bundles_rejected(env: Env) -> None:
    env.publish(1, issued_at=now() - 10 * DAY, expires=now() - DAY)
    dyn = env.client()
    r = dyn.refresh_now()
    assert r.status == "rejected" and "expired" in r.reason
    env.publish(2, issued_at=now() + DAY, expires=now() + 9 * DAY)
    r = dyn.refresh_now()
    assert r.status == "rejected" and "future" in r.reason
    assert dyn.current_policy() is env.bootstrap


def test_bundle_signed_by_untrusted_key_rejected(env: Env) -> None:
    from certpin.dynamic.jws import generate_private_key

    env.signer = FileSigner(generate_private_key("ES256"))
    env.publish(1)
    dyn = env.client(trusted_keys=[FileSigner(generate_private_key("Ed25519")).trusted_key])
    r = dyn.refresh_now()
    assert r.status == "rejected" and "unknown_kid" in r.reason


def test_oversized_response_rejected(env: Env) -> None:
    token = env.publish(1)
    dyn = env.client(max_size=len(token) - 10)
    r = dyn.refresh_now()
    assert r.status == "rejected" and dyn.version is None


def test_server_down_never_fails_requests(
    env: Env, api: TLSServer, api_pki: PKI, cafile: Path
) -> None:
    env.publish(1, [spki_pin(api_pki.intermediate.cert), BACKUP])
    dyn = env.client()
    dyn.refresh_now()
    env.host.close()
    r = dyn.refresh_now()
    assert r.status == "failed" and r.version == 1
    assert get(create_default_context(dyn, cafile=cafile), api) == 200


def test_404_is_a_failed_refresh(env: Env) -> None:
    dyn = env.client()
    r = dyn.refresh_now()
    assert r.status == "failed" and "404" in r.reason


def test_slow_server_times_out(env: Env, tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)  # accepts TCP (kernel backlog) but never speaks TLS
    try:
        dyn = DynamicPolicy(
            f"https://localhost:{listener.getsockname()[1]}/bundle.jws",
            trusted_keys=[env.signer.trusted_key],
            cache_dir=tmp_path / "slow",
            fallback=env.bootstrap,
            cafile=env.cafile,
            timeout=0.3,
        )
        start = time.monotonic()
        r = dyn.refresh_now()
        assert r.status == "failed" and "timed out" in r.reason.lower()
        assert time.monotonic() - start < 3
    finally:
        listener.close()


def test_bundle_host_mitm_blocked_by_bootstrap_pins(env: Env, tmp_path: Path) -> None:
    rogue = write_pki_files(make_pki(root_name="Rogue Root"), tmp_path / "rogue")
    cafile = tmp_path / "with-rogue.pem"
    cafile.write_bytes(env.cafile.read_bytes() + rogue.root_ca.read_bytes())  # rogue CA trusted
    www = tmp_path / "rogue-www"
    www.mkdir()
    evil = BundleHost(rogue, www)
    try:
        evil.publish(env.publish(1))  # even a genuinely signed bundle: the channel is pinned
        dyn = DynamicPolicy(
            f"https://localhost:{evil.port}/bundle.jws",
            trusted_keys=[env.signer.trusted_key],
            cache_dir=tmp_path / "mitm",
            fallback=env.bootstrap,
            cafile=cafile,
        )
        r = dyn.refresh_now()
        assert r.status == "failed" and "pinning failure" in r.reason.lower()
    finally:
        evil.close()


def test_redirects_refused(env: Env) -> None:
    from certpin.dynamic.serve import BundleHandler

    class Redirect(BundleHandler):
        def send_head(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://localhost:1/bundle.jws")
            self.send_header("Content-Length", "0")
            self.end_headers()

    env.host.server.RequestHandlerClass = lambda *a, **k: Redirect(
        *a, directory=str(env.host.directory), **k
    )  # type: ignore[assignment]
    r = env.client().refresh_now()
    assert r.status == "failed" and "302" in r.reason


# -- cache -------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "state"])
def test_corrupt_cache_falls_back_to_static_never_unpinned(env: Env, damage: str) -> None:
    env.publish(2)
    env.client().refresh_now()
    bundle, state = env.cache / "bundle.jws", env.cache / "state.json"
    if damage == "truncate":
        bundle.write_bytes(bundle.read_bytes()[:-20])
    elif damage == "garbage":
        bundle.write_bytes(b"\x00\xff" * 100)
    elif damage == "empty":
        bundle.write_bytes(b"")
    else:
        state.write_text("{not json")
    dyn = env.client()
    assert gc.isenabled()  # a library never switches the process-wide cyclic GC
    if damage == "state":
        assert dyn.version == 2  # the bundle itself is fine and verified
    else:
        assert dyn.current_policy() is env.bootstrap
        assert dyn.current_policy().lookup("localhost") is not None  # still pinned
        assert env.client().refresh_now().status in ("updated", "unchanged")


def test_cache_writes_leave_no_temp_files(env: Env) -> None:
    for v in range(1, 4):
        env.publish(v)
        env.client().refresh_now()
    assert sorted(p.name for p in env.cache.iterdir()) == [
        ".lock",
        "bundle.jws",
        "client_id",
        "state.json",
    ]


def test_many_threads_refreshing_at_once(env: Env) -> None:
    env.publish(1)
    dyn = env.client()
    results: list[str] = []
    barrier = threading.Barrier(32)

    def worker() -> None:
        barrier.wait()
        results.append(dyn.refresh_now().status)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 32 and set(results) <= {"updated", "unchanged", "not_modified"}
    assert dyn.version == 1
    assert env.host.requests < 32  # concurrent callers shared fetches
    assert json.loads((env.cache / "state.json").read_text())["highest_version"] == 1


def test_background_refresh_thread(env: Env) -> None:
    env.publish(1)
    with env.client() as dyn:
        dyn.start()
        deadline = time.monotonic() + 5
        while dyn.version is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dyn.version == 1
    assert dyn._thread is not None and not dyn._thread.is_alive()


def test_refresh_sooner_near_expiry_and_backoff(env: Env) -> None:
    env.publish(1, expires=now() + dt.timedelta(hours=2))
    dyn = env.client(refresh_interval=3600, min_refresh_interval=60)
    assert 0.75 * 3600 <= dyn.next_delay() <= 3600
    dyn.refresh_now()
    assert dyn.next_delay() <= 1800  # a quarter of the 2 h left
    env.host.close()
    dyn.refresh_now()
    dyn.refresh_now()
    assert dyn.next_delay() <= 120  # failures back off from the floor


# -- expiry, kill switch, cohorts, rotation -------------------------------------------------


def test_hard_expiry_applies_union_of_fallback_and_last_good(
    env: Env, api_pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    clock = {"now": now()}
    new_pin = spki_pin(make_pki().intermediate.cert)
    env.publish(1, [new_pin, BACKUP], expires=clock["now"] + DAY)
    fallback = Policy.from_dict(
        policy_doc(
            {
                "localhost": env.bundle_pins,
                "127.0.0.1": [spki_pin(api_pki.intermediate.cert), BACKUP],
            }
        )
    )
    dyn = env.client(fallback=fallback, clock=lambda: clock["now"])
    dyn.refresh_now()
    assert [str(p) for p in dyn.current_policy().domains["127.0.0.1"].pins] == [new_pin, BACKUP]
    clock["now"] += 2 * DAY
    with caplog.at_level(logging.WARNING, "certpin.dynamic"):
        rule = dyn.current_policy().domains["127.0.0.1"]
    assert {str(p) for p in rule.pins} == {new_pin, BACKUP, spki_pin(api_pki.intermediate.cert)}
    assert "union" in caplog.text
    # and after a restart with the expired bundle in cache
    assert (
        env.client(fallback=fallback, clock=lambda: clock["now"])
        .current_policy()
        .domains["127.0.0.1"]
        == rule
    )


def test_kill_switch_end_to_end(
    env: Env, api: TLSServer, cafile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = [BACKUP, spki_pin(make_pki().intermediate.cert)]
    env.publish(1, wrong)
    dyn = env.client()
    dyn.refresh_now()
    ctx = create_default_context(dyn, cafile=cafile)
    with pytest.raises(PinValidationError):
        get(ctx, api)  # locked out: the emergency
    env.publish(
        2,
        wrong,
        kill_switch={"domains": ["127.0.0.1"], "until": now() + DAY, "reason": "INC-42 lockout"},
    )
    assert dyn.refresh_now().status == "updated"
    with caplog.at_level(logging.WARNING, "certpin.enforce"):
        assert get(ctx, api) == 200
    assert "KILL SWITCH" in caplog.text and "INC-42" in caplog.text
    # only its domain: the bundle host keeps its pins
    assert dyn.current_policy().domains["localhost"].kill_switch is None


def test_kill_switch_for_another_domain_does_not_apply(
    env: Env, api: TLSServer, cafile: Path
) -> None:
    env.publish(
        1,
        [BACKUP, spki_pin(make_pki().intermediate.cert)],
        kill_switch={"domains": ["other.example.com"], "until": now() + DAY, "reason": "x"},
    )
    dyn = env.client()
    dyn.refresh_now()
    with pytest.raises(PinValidationError) as err:
        get(create_default_context(dyn, cafile=cafile), api)
    assert err.value.verdict is not None and err.value.verdict.status is VerdictStatus.FAILED


def test_expired_kill_switch_does_not_apply(env: Env, api: TLSServer, cafile: Path) -> None:
    env.publish(
        1,
        [BACKUP, spki_pin(make_pki().intermediate.cert)],
        issued_at=now() - 2 * DAY,
        kill_switch={"domains": "*", "until": now() - DAY, "reason": "old"},
    )
    dyn = env.client()
    assert dyn.refresh_now().status == "updated"
    with pytest.raises(PinValidationError):
        get(create_default_context(dyn, cafile=cafile), api)


def test_unsigned_kill_switch_rejected(env: Env) -> None:
    from certpin.dynamic.jws import b64url_encode

    env.publish(1)
    dyn = env.client()
    dyn.refresh_now()
    header = b64url_encode(b'{"alg":"none","typ":"certpin-bundle+jws"}')
    payload = dict(
        json.loads(__import__("base64").urlsafe_b64decode(dyn.bundle.token.split(".")[1] + "=="))
    )  # type: ignore[union-attr]
    payload.update(
        version=2,
        kill_switch={
            "domains": "*",
            "until": (now() + DAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": "evil",
        },
    )
    env.host.publish(f"{header}.{b64url_encode(json.dumps(payload).encode())}.")
    r = dyn.refresh_now()
    assert r.status == "rejected" and dyn.version == 1
    assert all(rule.kill_switch is None for rule in dyn.current_policy().domains.values())


def test_cohorts_are_stable_and_close_to_the_share() -> None:
    import secrets

    ids = [secrets.token_hex(16) for _ in range(10_000)]
    for percent in (1, 10, 50):
        share = sum(bucket("rollout-7", i) < percent * 100 for i in ids) / len(ids)
        assert abs(share - percent / 100) <= 0.015, (percent, share)
    assert [bucket("r1", i) for i in ids[:50]] != [bucket("r2", i) for i in ids[:50]]
    # the documented formula, pinned to a known value (a changed hash would reshuffle everyone)
    assert bucket("r", "c") == int.from_bytes(hashlib.sha256(b"rc").digest()) % 10_000


def test_cohort_survives_a_restart_with_the_same_cache_dir(env: Env, tmp_path: Path) -> None:
    """A client without an id keeps its random id, hence its cohort, across restarts; clients
    with different cache dirs get different ids and split between the cohorts."""
    env.host.publish(
        sign_bundle(
            env.doc(),
            env.signer,
            version=1,
            expires=now() + DAY,
            rollout={"id": "r-restart", "percent": 50, "policy": env.doc([BACKUP, OTHER])},
        )
    )
    seen = []
    for n in range(12):
        cache = tmp_path / f"client-{n}"
        first = env.client(cache_dir=cache)
        result = first.refresh_now()
        assert result.status == "updated", result  # else every client is in neither cohort
        restarted = env.client(cache_dir=cache)  # no fetch: the cached bundle and id
        assert restarted.client_id == first.client_id
        assert restarted.in_rollout() == first.in_rollout()
        assert ("127.0.0.1" in restarted.current_policy().domains) == first.in_rollout()
        seen.append(first.in_rollout())
    assert len(set(seen)) == 2  # 12 random ids at 50 %: both cohorts (p(miss) = 2^-11)


def test_rollout_applies_to_the_clients_cohort(env: Env, tmp_path: Path) -> None:
    next_doc = env.doc([BACKUP, spki_pin(make_pki().root.cert)])
    token = sign_bundle(
        env.doc(),
        env.signer,
        version=1,
        expires=now() + DAY,
        rollout={"id": "r", "percent": 50, "policy": next_doc},
    )
    env.host.publish(token)
    inside = next(f"c{i}" for i in range(100) if bucket("r", f"c{i}") < 5000)
    outside = next(f"c{i}" for i in range(100) if bucket("r", f"c{i}") >= 5000)
    a = env.client(client_id=inside, cache_dir=tmp_path / "a")
    b = env.client(client_id=outside, cache_dir=tmp_path / "b")
    a.refresh_now(), b.refresh_now()
    assert a.in_rollout() and "127.0.0.1" in a.current_policy().domains
    assert not b.in_rollout() and "127.0.0.1" not in b.current_policy().domains


def test_random_client_id_is_persisted(env: Env) -> None:
    first = env.client().client_id
    assert len(first) == 32 and env.client().client_id == first
    assert (env.cache / "client_id").read_text().strip() == first


@pytest.mark.parametrize("junk", [b"", b"not hex at all\n", b"\xff" * 32, b"ab" * 17])
def test_unreadable_client_id_is_replaced(env: Env, junk: bytes) -> None:
    env.cache.mkdir(parents=True, exist_ok=True)
    (env.cache / "client_id").write_bytes(junk)
    fresh = env.client().client_id
    assert len(fresh) == 32 and int(fresh, 16) >= 0
    assert (env.cache / "client_id").read_text().strip() == fresh == env.client().client_id


def test_full_rotation_through_bundles_clients_never_fail(
    env: Env, api_files: PKIFiles, api_pki: PKI, cafile: Path, tmp_path: Path
) -> None:
    old_pin = spki_pin(api_pki.leaf.cert)
    new_leaf = api_pki.intermediate.issue_leaf("127.0.0.1")
    new_cert, new_key = new_leaf.write(tmp_path / "new-leaf")
    new_pin = spki_pin(new_leaf.cert)
    env.publish(1, [old_pin, BACKUP])
    dyn = env.client()
    dyn.refresh_now()
    ctx = create_default_context(dyn, cafile=cafile)
    failures: list[BaseException] = []
    with TLSServer(api_files.certfile, api_files.keyfile) as api:

        def hammer(n: int) -> None:
            for _ in range(n):
                try:
                    assert get(ctx, api) == 200
                except BaseException as exc:  # noqa: BLE001
                    failures.append(exc)

        hammer(3)
        env.publish(2, [old_pin, new_pin])  # v1 -> v2: old + next
        assert dyn.refresh_now().version == 2
        hammer(3)
        api.set_certificate(new_cert, new_key)  # the server rotates
        hammer(3)
        env.publish(3, [new_pin, BACKUP])  # v3 drops the old key
        assert dyn.refresh_now().version == 3
        hammer(3)
        api.set_certificate(api_files.certfile, api_files.keyfile)  # the old key is now refused
        with pytest.raises(PinValidationError):
            get(ctx, api)
    assert failures == []


def test_signing_key_rotation(env: Env, tmp_path: Path) -> None:
    from certpin.dynamic.jws import generate_private_key

    old = env.signer
    new = FileSigner(generate_private_key("Ed25519"))
    env.publish(1, add_keys=[new.trusted_key])  # old key announces the next one
    dyn = env.client()
    dyn.refresh_now()
    assert new.kid in dyn.trusted_keys
    env.signer = new
    env.publish(2, retire_keys=[old.kid])  # the new key retires the old one
    assert dyn.refresh_now().version == 2
    assert old.kid not in dyn.trusted_keys
    env.signer = old
    env.publish(3)
    r = dyn.refresh_now()
    assert r.status == "rejected" and "unknown_kid" in r.reason
    restarted = env.client()  # key changes survive a restart
    assert restarted.version == 2 and old.kid not in restarted.trusted_keys


def test_constructor_validation(env: Env) -> None:
    from certpin import ConfigurationError

    with pytest.raises(ConfigurationError, match="https"):
        DynamicPolicy(
            "http://x/b.jws",
            trusted_keys=[env.signer.trusted_key],
            cache_dir=env.cache,
            fallback=env.bootstrap,
        )
    with pytest.raises(ConfigurationError, match="empty"):
        DynamicPolicy(env.host.url, trusted_keys=[], cache_dir=env.cache, fallback=env.bootstrap)
