"""Issue item 6: an ended kill switch never comes back when the clock goes back.

A real signed bundle over the real loopback bundle host, a real pinned API server on loopback
presenting a rogue-but-trusted certificate (what the pins are there to stop), and a client whose
clock the test moves the way an attacker (or a dead RTC battery) would.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _dyn import BACKUP, BundleHost, policy_doc

from _support.pki import PKI, PKIFiles, make_pki, spki_pin, write_pki_files
from _support.servers import TLSServer
from certpin import PinValidationError, Policy, VerdictStatus, create_default_context, verdict
from certpin.dynamic import DynamicPolicy, FileSigner, sign_bundle

DAY = dt.timedelta(days=1)
T = dt.datetime.now(dt.UTC).replace(microsecond=0)
API = "127.0.0.1"


@pytest.fixture(scope="module")
def genuine() -> PKI:
    """The API's real chain: its intermediate is what the bundle pins."""
    return make_pki((API,), root_name="API Root", intermediate_name="API CA")


@pytest.fixture(scope="module")
def rogue() -> PKI:
    """A chain for the API host from another CA the client also trusts: a MITM's chain."""
    return make_pki((API,), root_name="Rogue Root", intermediate_name="Rogue CA")


@pytest.fixture
def mitm(rogue: PKI, tmp_path: Path) -> Iterator[TLSServer]:
    files = write_pki_files(rogue, tmp_path / "rogue")
    with TLSServer(files.certfile, files.keyfile) as srv:
        yield srv


@pytest.fixture
def cafile(tmp_path: Path, bundle_files: PKIFiles, rogue: PKI) -> Path:
    path = tmp_path / "roots.pem"
    path.write_bytes(bundle_files.root_ca.read_bytes() + rogue.root.pem())
    return path


class Clock:
    """The one clock both the DynamicPolicy and the TLS hook read (like the system clock)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Env:
    def __init__(
        self, host: BundleHost, signer: FileSigner, bootstrap: Policy, cafile: Path, tmp: Path
    ) -> None:
        self.host, self.signer, self.bootstrap, self.cafile = host, signer, bootstrap, cafile
        self.cache = tmp / "cache"
        self.clock = Clock(T)

    def publish(self, genuine: PKI, *, until: dt.datetime, issued_at: dt.datetime) -> str:
        bundle_pins = [str(p) for p in self.bootstrap.domains["localhost"].all_pins]
        doc = policy_doc(
            {"localhost": bundle_pins, API: [spki_pin(genuine.intermediate.cert), BACKUP]}
        )
        token = sign_bundle(
            doc,
            self.signer,
            version=1,
            issued_at=issued_at,
            expires=T + 30 * DAY,
            kill_switch={"domains": [API], "until": until, "reason": "INC-6"},
        )
        self.host.publish(token)
        return token

    def client(self) -> DynamicPolicy:
        return DynamicPolicy(
            self.host.url,
            trusted_keys=[self.signer.trusted_key],
            cache_dir=self.cache,
            fallback=self.bootstrap,
            cafile=self.cafile,
            timeout=2.0,
            clock=self.clock,
        )

    def get(self, dyn: DynamicPolicy, server: TLSServer) -> int:
        ctx = create_default_context(dyn, cafile=self.cafile, clock=self.clock)
        conn = http.client.HTTPSConnection(API, server.port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status
        finally:
            conn.close()

    def blocked(self, dyn: DynamicPolicy, server: TLSServer) -> bool:
        try:
            self.get(dyn, server)
        except PinValidationError as exc:
            assert exc.verdict is not None and exc.verdict.status is VerdictStatus.FAILED
            return True
        return False


@pytest.fixture
def env(
    bundle_host: BundleHost, es256: FileSigner, bootstrap: Policy, cafile: Path, tmp_path: Path
) -> Env:
    return Env(bundle_host, es256, bootstrap, cafile, tmp_path)


def _status(dyn: DynamicPolicy, rogue: PKI, now: dt.datetime) -> VerdictStatus:
    return verdict(API, rogue.leaf.chain_der(), dyn.current_policy(), now).status


def test_ended_kill_switch_stays_ended_when_the_clock_goes_back(
    env: Env, genuine: PKI, rogue: PKI, mitm: TLSServer
) -> None:
    issued = T - 2 * DAY
    env.publish(genuine, issued_at=issued, until=T - DAY)  # ended a day ago
    dyn = env.client()
    assert dyn.refresh_now().status == "updated"
    assert env.blocked(dyn, mitm)  # the switch is over: pins apply
    env.clock.now = issued - 3 * DAY  # before issued_at (and before the skew allowance)
    assert _status(dyn, rogue, env.clock.now) is VerdictStatus.FAILED
    assert env.blocked(dyn, mitm)
    # a restart from the cache with the clock still set back
    restarted = env.client()
    assert restarted.version == 1
    assert _status(restarted, rogue, env.clock.now) is VerdictStatus.FAILED
    assert env.blocked(restarted, mitm)
    state = json.loads((env.cache / "state.json").read_text())
    assert state["kill_switch_ended"] == (T - DAY).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_switch_seen_ending_while_running_stays_ended(
    env: Env, genuine: PKI, rogue: PKI, mitm: TLSServer
) -> None:
    issued = T - 2 * DAY
    env.publish(genuine, issued_at=issued, until=T - DAY)
    env.clock.now = T - 1.5 * DAY  # inside the window: the switch is on
    dyn = env.client()
    assert dyn.refresh_now().status == "updated"
    assert env.get(dyn, mitm) == 200
    assert _status(dyn, rogue, env.clock.now) is VerdictStatus.KILLED
    env.clock.now = T  # the switch ends while the client runs (seen by the next handshake)
    assert env.blocked(dyn, mitm)
    env.clock.now = T - 1.5 * DAY  # back into the window
    assert env.blocked(dyn, mitm)
    assert _status(dyn, rogue, env.clock.now) is VerdictStatus.FAILED
    env.clock.now = issued - DAY  # and before issued_at
    assert env.blocked(dyn, mitm)
    restarted = env.client()
    assert env.blocked(restarted, mitm)
    assert _status(restarted, rogue, env.clock.now) is VerdictStatus.FAILED


def test_the_twin_inside_the_window_the_switch_still_allows(
    env: Env, genuine: PKI, rogue: PKI, mitm: TLSServer
) -> None:
    issued = T - DAY
    env.publish(genuine, issued_at=issued, until=T + DAY)
    dyn = env.client()
    assert dyn.refresh_now().status == "updated"
    assert env.get(dyn, mitm) == 200
    assert _status(dyn, rogue, env.clock.now) is VerdictStatus.KILLED
    # A clock set back but never past `until`: the switch never ended, so it still applies.
    env.clock.now = issued - 3 * DAY
    assert env.get(dyn, mitm) == 200
    restarted = env.client()
    assert restarted.version == 1 and env.get(restarted, mitm) == 200
    env.clock.now = T + 2 * DAY  # and it does end at `until`
    assert env.blocked(restarted, mitm)


def test_the_clock_never_reads_before_the_newest_issued_at_minus_skew(
    env: Env, genuine: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    """The floor for every DynamicPolicy time decision: a bundle that expired before the
    floor stays expired (the union applies) however far back the clock is set."""
    issued = T - 2 * DAY
    env.publish(genuine, issued_at=issued, until=T - DAY)
    dyn = env.client()
    dyn.refresh_now()
    env.clock.now = issued - 400 * DAY
    floor = issued - dyn.skew
    assert dyn._now() == floor
    env.clock.now = T
    assert dyn._now() == T  # the twin: a clock after the floor is used as it is
    restarted = env.client()
    env.clock.now = issued - 400 * DAY
    assert restarted._now() == floor


@pytest.mark.parametrize(
    "state",
    [
        {"kill_switch_ended": 5},
        {"kill_switch_ended": "yesterday"},
        {"not_before": ["2026-01-01T00:00:00Z"]},
        {"not_before": "2026-01-01T00:00:00"},
    ],
)
def test_bad_time_fields_in_the_state_file_are_refused(state: dict[str, Any]) -> None:
    from certpin.dynamic import BundleError
    from certpin.dynamic.state import parse_state

    base = {"highest_version": 1, "highest_sha256": None}
    with pytest.raises(BundleError) as err:
        parse_state(json.dumps({**base, **state}).encode(), "state.json")
    assert err.value.reason == "bad_cache" and "state.json" in str(err.value)
    assert parse_state(json.dumps(base).encode(), "state.json").highest_version == 1  # twin
