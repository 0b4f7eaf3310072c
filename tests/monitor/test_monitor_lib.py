"""certpin.lifecycle.monitor.check as a library: concurrency, the watch loop, state files, the
webhook."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _support.pki import PKI, PKIFiles, spki_pin
from _support.servers import TLSServer, wait_for
from certpin import Policy, VerdictStatus
from certpin.lifecycle.monitor.check import (
    EndpointReport,
    Monitor,
    Snapshot,
    StateError,
    Target,
    Webhook,
    evaluate,
    exit_code,
    load_state,
    run_once,
    save_state,
)
from certpin.tls.context import verifying_context
from monitor._helpers import WebhookReceiver, random_pin

ROOT = Path(__file__).resolve().parents[2]


def _policy(pki: PKI) -> Policy:
    return Policy.from_dict(
        {"domains": {"127.0.0.1": {"pins": [random_pin(), spki_pin(pki.intermediate)]}}}
    )


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "rounds"), [(2, 2), (4, 1)])
def test_concurrency_bounds_parallel_connections(silent_port, concurrency, rounds):
    # Four silent endpoints, 0.4 s timeout each: the run takes as many timeouts as there are
    # batches of `concurrency`, which shows the bound holds and the timeout starts per turn.
    targets = [Target("127.0.0.1", silent_port)] * 4
    start = time.monotonic()
    reports = asyncio.run(
        run_once(
            targets, Policy({}), context=verifying_context(), concurrency=concurrency, timeout=0.4
        )
    )
    elapsed = time.monotonic() - start
    assert [r.status for r in reports] == ["error"] * 4
    assert rounds * 0.4 <= elapsed < rounds * 0.4 + 1.0, elapsed


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(run_once([], Policy({}), context=verifying_context(), concurrency=0))


def test_progress_callback_sees_every_report(tmp_pki_files, server, closed_port):
    seen: list[EndpointReport] = []
    targets = [Target("127.0.0.1", server.port), Target("127.0.0.1", closed_port)]
    ctx = verifying_context(cafile=tmp_pki_files.root_ca)
    reports = asyncio.run(run_once(targets, Policy({}), context=ctx, on_report=seen.append))
    assert sorted(r.target.key for r in seen) == sorted(t.key for t in targets)
    assert [r.status for r in reports] == ["ok", "error"]


# -- watch loop -----------------------------------------------------------------------------


def test_watch_alerts_only_on_the_round_that_changed(
    tmp_path, pki: PKI, tmp_pki_files: PKIFiles, server: TLSServer, webhook: WebhookReceiver
):
    state = tmp_path / "state.json"
    new_leaf = pki.intermediate.issue_leaf("localhost", "127.0.0.1")
    new_files = new_leaf.write(tmp_path / "new")
    monitor = Monitor(
        [Target("127.0.0.1", server.port)],
        _policy(pki),
        verifying_context(cafile=tmp_pki_files.root_ca),
        state_path=state,
        webhook=Webhook(webhook.url),
    )
    rounds: list[tuple[int, list[str | None], int]] = []

    def on_round(n: int, reports: list[EndpointReport], changed: list[EndpointReport]) -> None:
        rounds.append((n, [str(r.changed) for r in reports], len(changed)))
        if n == 1:
            server.set_certificate(*new_files)  # the next round sees a new leaf key

    last = asyncio.run(monitor.watch(0.01, max_runs=4, on_round=on_round))
    assert rounds == [(0, ["None"], 0), (1, ["False"], 0), (2, ["True"], 1), (3, ["False"], 0)]
    (event,) = webhook.events
    assert event["previous"]["leaf_pin"] == spki_pin(pki.leaf)
    assert event["current"]["leaf_pin"] == spki_pin(new_leaf)
    assert last[0].status == "ok"
    assert load_state(state)["127.0.0.1:" + str(server.port)].leaf_pin == spki_pin(new_leaf)


def test_watch_stops_when_the_event_is_set(tmp_pki_files, server):
    monitor = Monitor(
        [Target("127.0.0.1", server.port)],
        Policy({}),
        verifying_context(cafile=tmp_pki_files.root_ca),
    )

    async def main() -> float:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        start = time.monotonic()
        await monitor.watch(60, stop=stop)  # would sleep a minute without the event
        return time.monotonic() - start

    assert asyncio.run(main()) < 2.0
    assert server.handshakes == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_watch_exits_cleanly_on_signal(tmp_path, tmp_pki_files, server, sig):
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "certpin", "monitor", f"127.0.0.1:{server.port}"]
        + ["--cafile", str(tmp_pki_files.root_ca), "--watch", "0.1", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert wait_for(lambda: server.handshakes >= 2, timeout=20)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"127.0.0.1:{server.port}  OK" in out
    assert load_state(state)[f"127.0.0.1:{server.port}"].status == "ok"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- state ----------------------------------------------------------------------------------


def _snapshot(status: str = "ok", pins: tuple[str, ...] = ("sha256/a", "sha256/b")) -> Snapshot:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    return Snapshot(status, "ok", pins[0] if pins else None, pins, now)  # type: ignore[arg-type]


def test_state_round_trips(tmp_path):
    path = tmp_path / "state.json"
    state = {"a:443": _snapshot(), "b:443": _snapshot("error", ())}
    save_state(path, state)
    assert load_state(path) == state
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # mkstemp's mode, kept by the rename
    assert load_state(tmp_path / "missing.json") == {}


def test_state_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    save_state(path, {"a:443": _snapshot()})
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_state(path, {"a:443": _snapshot("error", ())})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_unreadable_state_names_the_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"format": "certpin-monitor-state", "version": 1, "endpoints": []}')
    with pytest.raises(StateError, match=f"{path}: endpoints: expected an object"):
        load_state(path)


@pytest.mark.parametrize(
    ("before", "after", "differs"),
    [
        (_snapshot(), _snapshot(), False),
        (_snapshot(), _snapshot("warn"), True),
        (_snapshot(), _snapshot(pins=("sha256/a", "sha256/c")), True),
        (_snapshot(), _snapshot(pins=("sha256/a",)), True),
    ],
)
def test_change_means_status_or_chain_pins(before, after, differs):
    assert before.differs(after) is differs


# -- exit codes -----------------------------------------------------------------------------


def _report(status: str) -> EndpointReport:
    now = dt.datetime.now(dt.UTC)
    return EndpointReport(Target("a"), status, None, (), None, (), now, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([], 0),
        (["ok", "ok"], 0),
        (["ok", "warn"], 4),
        (["warn", "error"], 3),
        (["error", "mismatch", "warn"], 1),
        (["ok", "denied"], 1),
    ],
)
def test_exit_code_precedence(statuses, code):
    assert exit_code([_report(s) for s in statuses]) == code


def test_evaluate_uses_the_verdict(pki: PKI):
    # The monitor's decision is verdict()'s: same chain, pinned vs. not pinned.
    now = dt.datetime.now(dt.UTC)
    chain = pki.leaf.chain_der()
    target = Target("127.0.0.1", 443)
    good = evaluate(target, chain, chain[:2], _policy(pki), now)
    assert good.status == "ok" and good.verdict is not None
    assert good.verdict.status is VerdictStatus.OK
    assert [c.served for c in good.chain] == [True, True, False]
    wrong = Policy.from_dict({"domains": {"127.0.0.1": {"pins": [random_pin(), random_pin()]}}})
    bad = evaluate(target, chain, chain, wrong, now)
    assert bad.status == "mismatch" and bad.verdict is not None
    assert bad.verdict.status is VerdictStatus.FAILED


@pytest.mark.parametrize("killed", [True, False])
def test_a_kill_switched_host_is_a_warning_not_a_mismatch(pki: PKI, killed: bool):
    # The verdict's own allowed/pin_failure decide: KILLED lets the connection through (CA
    # validation only), so the monitor says warn (with why), never mismatch.
    import certpin
    from certpin import DomainRule

    now = dt.datetime.now(dt.UTC)
    chain = pki.leaf.chain_der()
    switch = certpin.KillSwitch(until=now + dt.timedelta(hours=2), reason="key compromise")
    rule = DomainRule(
        pattern="127.0.0.1",
        pins=(certpin.Pin.parse(random_pin()), certpin.Pin.parse(random_pin())),
        kill_switch=switch if killed else None,
    )
    report = evaluate(Target("127.0.0.1"), chain, chain, Policy(domains={"127.0.0.1": rule}), now)
    assert report.verdict is not None
    if killed:
        assert report.verdict.status is VerdictStatus.KILLED
        assert report.status == "warn"
        assert "suspended by a signed kill switch until" in report.message
        assert "(key compromise)" in report.message
        assert exit_code([report]) == 4
    else:
        assert report.verdict.status is VerdictStatus.FAILED
        assert report.status == "mismatch"
        assert exit_code([report]) == 1


# -- webhook --------------------------------------------------------------------------------


def _event() -> dict[str, str]:
    return {"event": "changed", "endpoint": "a:443"}


@pytest.mark.parametrize("pinned", [True, False])
def test_https_webhook_is_verified_and_pinned(pki: PKI, tmp_pki_files, server, caplog, pinned):
    pins = [random_pin(), spki_pin(pki.intermediate) if pinned else random_pin()]
    policy = Policy.from_dict({"domains": {"localhost": {"pins": pins}}})
    hook = Webhook(server.url("/hook"), policy=policy, cafile=str(tmp_pki_files.root_ca))
    delivered = hook.post(_event())
    server.wait_idle()
    assert delivered is pinned
    if pinned:
        assert hook.delivered == 1 and hook.failed == 0
        request = server.total_received()
        assert request.startswith(b"POST /hook HTTP/1.1")
        assert request.endswith(json.dumps(_event()).encode())
    else:
        assert hook.delivered == 0 and hook.failed == 1
        assert server.total_received() == b""  # not one byte of the alert left the client
        assert "delivery failed" in caplog.text and "pinning failure" in caplog.text.lower()


def test_https_webhook_with_untrusted_certificate_fails(server, caplog):
    hook = Webhook(server.url("/hook"))  # system trust store: the test CA is not in it
    assert hook.post(_event()) is False
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text or "certificate verify" in caplog.text


def test_webhook_timeout_is_bounded(silent_port, caplog):
    hook = Webhook(f"http://127.0.0.1:{silent_port}/hook", timeout=0.3)
    start = time.monotonic()
    assert hook.post(_event()) is False
    assert time.monotonic() - start < 2.0
    assert "timed out" in caplog.text


def test_webhook_does_not_follow_redirects(caplog):
    with WebhookReceiver(status=307) as redirecting:
        hook = Webhook(redirecting.url)
        assert hook.post(_event()) is False
    assert len(redirecting.events) == 1 and "HTTP 307" in caplog.text


@pytest.mark.parametrize("url", ["http://localhost:1/x", "http://127.0.0.2/x", "http://[::1]/x"])
def test_http_webhook_allowed_on_loopback(url):
    assert Webhook(url).url == url


@pytest.mark.parametrize("url", ["http://10.0.0.1/x", "http://example.com/x", "file:///etc/x"])
def test_webhook_url_refused(url):
    with pytest.raises(ValueError, match="--webhook"):
        Webhook(url)


def test_state_error_is_raised_before_connecting(tmp_path, server):
    bad = tmp_path / "state.json"
    bad.write_text("[]")
    with pytest.raises(StateError):
        Monitor([Target("127.0.0.1", server.port)], Policy({}), verifying_context(), state_path=bad)
    assert server.handshakes == 0


def test_a_dead_webhook_does_not_stall_the_round(tmp_path, silent_port, closed_port, caplog):
    # Twelve endpoints change at once and the webhook never answers (default 10 s per POST):
    # the round still ends within its webhook budget, and the undelivered alerts are counted.
    targets = [Target("127.0.0.1", closed_port, f"h{i}.example") for i in range(12)]
    before = Snapshot("ok", "ok", "sha256/x", ("sha256/x",), dt.datetime.now(dt.UTC))
    save_state(tmp_path / "state.json", {t.key: before for t in targets})
    hook = Webhook(f"http://127.0.0.1:{silent_port}/hook", round_budget=0.5)
    assert hook.timeout == 10.0
    monitor = Monitor(
        targets,
        Policy({}),
        verifying_context(),
        timeout=0.5,
        state_path=tmp_path / "state.json",
        webhook=hook,
    )
    start = time.monotonic()
    reports, changed = asyncio.run(monitor.round())
    elapsed = time.monotonic() - start
    assert len(changed) == 12 and [r.status for r in reports] == ["error"] * 12
    assert elapsed < 3.0, elapsed
    assert hook.delivered == 0 and hook.failed == 12
    assert "not delivered within 0.5 s: dropped" in caplog.text


def test_post_all_delivers_every_event_with_few_workers():
    with WebhookReceiver() as receiver:
        hook = Webhook(receiver.url, workers=2)
        events = [{"event": "changed", "endpoint": f"h{i}:443"} for i in range(9)]
        assert asyncio.run(hook.post_all(events)) == 0
    assert hook.delivered == 9 and hook.failed == 0
    assert sorted(e["endpoint"] for e in receiver.events) == sorted(e["endpoint"] for e in events)
