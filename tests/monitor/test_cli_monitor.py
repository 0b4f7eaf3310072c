"""``certpin monitor`` against real loopback TLS servers, in-process via main()."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest

from _support.pki import PKI, PKIFiles, make_pki, spki_pin
from _support.servers import TLSServer
from certpin.cli.main import main
from monitor._helpers import WebhookReceiver, random_pin, write_policy


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["monitor", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = _run(capsys, *argv, "--json")
    assert out, err
    return code, json.loads(out)


def _target(server: TLSServer | int) -> str:
    return f"127.0.0.1:{server if isinstance(server, int) else server.port}"


def _by_endpoint(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["endpoint"]: e for e in document["endpoints"]}


def _leaf_server_files(pki: PKI, tmp_path: Path, **validity: dt.datetime) -> tuple[Path, Path]:
    leaf = pki.intermediate.issue_leaf("localhost", "127.0.0.1", **validity)
    return leaf.write(tmp_path / f"leaf-{leaf.cert.serial_number:x}")


NOW = dt.datetime.now(dt.UTC)


# -- verdicts and exit codes ----------------------------------------------------------------


def test_good_pins_exit_0_with_chain_pins_and_expiry(
    capsys, pki: PKI, tmp_pki_files: PKIFiles, server: TLSServer, good_policy: Path
):
    code, doc = _json(
        capsys,
        _target(server),
        "--policy",
        str(good_policy),
        "--cafile",
        str(tmp_pki_files.root_ca),
    )
    assert code == 0
    assert doc["exit_code"] == 0
    assert doc["summary"]["ok"] == 1 and doc["summary"]["error"] == 0
    (endpoint,) = doc["endpoints"]
    assert endpoint["endpoint"] == _target(server)
    assert endpoint["status"] == "ok" and endpoint["verdict"] == "ok"
    assert endpoint["matched_pin"] == spki_pin(pki.intermediate)
    assert endpoint["rule"] == "127.0.0.1" and endpoint["mode"] == "enforce"
    # The verified chain, root included although the server does not send it.
    pins = [c["pin"] for c in endpoint["chain"]]
    assert pins == [spki_pin(pki.leaf), spki_pin(pki.intermediate), spki_pin(pki.root)]
    assert [c["served"] for c in endpoint["chain"]] == [True, True, False]
    assert endpoint["chain"][0]["subject"] == pki.leaf.cert.subject.rfc4514_string()
    assert [c["is_ca"] for c in endpoint["chain"]] == [False, True, True]
    expected_days = (pki.leaf.cert.not_valid_after_utc - NOW).days
    assert endpoint["leaf_days_left"] in (expected_days - 1, expected_days)
    assert endpoint["ca_days_left"] is not None and endpoint["ca_days_left"] >= 300
    assert endpoint["error"] is None and endpoint["warnings"] == []
    assert endpoint["changed"] is None and endpoint["previous"] is None


def test_wrong_pins_exit_1(capsys, tmp_path, tmp_pki_files: PKIFiles, server: TLSServer):
    policy = write_policy(
        tmp_path / "p.json", {"127.0.0.1": {"pins": [random_pin(), random_pin()]}}
    )
    code, doc = _json(
        capsys, _target(server), "--policy", str(policy), "--cafile", str(tmp_pki_files.root_ca)
    )
    assert code == 1 and doc["exit_code"] == 1
    (endpoint,) = doc["endpoints"]
    assert endpoint["status"] == "mismatch" and endpoint["verdict"] == "failed"
    assert endpoint["allowed"] is False and endpoint["matched_pin"] is None
    assert len(endpoint["chain"]) == 3  # the chain is still reported, for the operator


def test_report_only_mismatch_still_exit_1(capsys, tmp_path, tmp_pki_files, server):
    rule = {"pins": [random_pin(), random_pin()], "enforce": False}
    policy = write_policy(tmp_path / "p.json", {"127.0.0.1": rule})
    code, doc = _json(
        capsys, _target(server), "--policy", str(policy), "--cafile", str(tmp_pki_files.root_ca)
    )
    (endpoint,) = doc["endpoints"]
    assert code == 1
    assert endpoint["status"] == "mismatch" and endpoint["allowed"] is True
    assert endpoint["mode"] == "report-only" and "report-only" in endpoint["message"]


def test_denied_host_exit_1_and_unpinned_host_exit_0(capsys, tmp_path, tmp_pki_files, server):
    other = {"example.com": {"pins": [random_pin(), random_pin()]}}
    deny = write_policy(tmp_path / "deny.json", other, unpinned_hosts="deny")
    allow = write_policy(tmp_path / "allow.json", other)
    cafile = str(tmp_pki_files.root_ca)
    code, doc = _json(capsys, _target(server), "--policy", str(deny), "--cafile", cafile)
    assert code == 1 and doc["endpoints"][0]["status"] == "denied"
    code, doc = _json(capsys, _target(server), "--policy", str(allow), "--cafile", cafile)
    assert code == 0 and doc["endpoints"][0]["verdict"] == "unpinned"


def test_no_policy_reports_chain_and_expiry(capsys, tmp_pki_files, server):
    code, doc = _json(capsys, _target(server), "--cafile", str(tmp_pki_files.root_ca))
    assert code == 0
    assert doc["policy"] is None and doc["endpoints"][0]["verdict"] == "unpinned"
    assert len(doc["endpoints"][0]["chain"]) == 3


def test_expired_leaf_is_an_error_exit_3(capsys, tmp_path, pki: PKI, tmp_pki_files, good_policy):
    certfile, keyfile = _leaf_server_files(pki, tmp_path, not_after=NOW - dt.timedelta(days=1))
    with TLSServer(certfile, keyfile) as expired:
        code, doc = _json(
            capsys,
            _target(expired),
            "--policy",
            str(good_policy),
            "--cafile",
            str(tmp_pki_files.root_ca),
        )
    assert code == 3 and doc["exit_code"] == 3
    (endpoint,) = doc["endpoints"]
    assert endpoint["status"] == "error" and endpoint["verdict"] is None
    assert "expired" in endpoint["error"] and endpoint["message"] == endpoint["error"]
    assert endpoint["chain"] == []


def test_untrusted_ca_is_an_error(capsys, rogue_server, good_policy, tmp_pki_files):
    code, doc = _json(
        capsys,
        _target(rogue_server),
        "--policy",
        str(good_policy),
        "--cafile",
        str(tmp_pki_files.root_ca),
    )
    assert code == 3
    assert "certificate verification failed" in doc["endpoints"][0]["error"]


@pytest.mark.parametrize(("warn_days", "code", "status"), [(30, 4, "warn"), (5, 0, "ok")])
def test_leaf_expiring_within_warn_days(
    capsys, tmp_path, pki: PKI, tmp_pki_files, good_policy, warn_days, code, status
):
    certfile, keyfile = _leaf_server_files(pki, tmp_path, not_after=NOW + dt.timedelta(days=10))
    with TLSServer(certfile, keyfile) as soon:
        got, doc = _json(
            capsys,
            _target(soon),
            "--policy",
            str(good_policy),
            "--cafile",
            str(tmp_pki_files.root_ca),
            "--warn-days",
            str(warn_days),
        )
    (endpoint,) = doc["endpoints"]
    assert (got, endpoint["status"]) == (code, status)
    assert endpoint["leaf_days_left"] in (9, 10)
    if status == "warn":
        assert "leaf certificate CN=localhost" in endpoint["warnings"][0]
    else:
        assert endpoint["warnings"] == []


@pytest.mark.parametrize(
    ("expires_in", "code", "verdict", "warning"),
    [
        (dt.timedelta(days=10), 4, "ok", "expire in"),
        (dt.timedelta(days=-1), 4, "expired", "expired on"),
        (dt.timedelta(days=60), 0, "ok", None),
    ],
)
def test_pin_rule_expiry(
    capsys, tmp_path, pki, tmp_pki_files, server, expires_in, code, verdict, warning
):
    expires = (NOW + expires_in).date().isoformat()
    rule = {"pins": [random_pin(), spki_pin(pki.intermediate)], "expires": expires}
    policy = write_policy(tmp_path / "p.json", {"127.0.0.1": rule})
    got, doc = _json(
        capsys, _target(server), "--policy", str(policy), "--cafile", str(tmp_pki_files.root_ca)
    )
    (endpoint,) = doc["endpoints"]
    assert got == code and endpoint["verdict"] == verdict
    assert endpoint["rule_expires"].startswith(expires)
    if warning is None:
        assert endpoint["warnings"] == []
    else:
        assert warning in endpoint["warnings"][0]


def test_mismatch_outranks_error_outranks_warning(
    capsys, tmp_path, pki, tmp_pki_files, closed_port, rogue_pki_files: PKIFiles
):
    certfile, keyfile = _leaf_server_files(pki, tmp_path, not_after=NOW + dt.timedelta(days=3))
    # The rogue server is trusted here (its root in the bundle) but matches no pin.
    bundle = tmp_path / "both.pem"
    bundle.write_bytes(tmp_pki_files.root_ca.read_bytes() + rogue_pki_files.root_ca.read_bytes())
    policy = write_policy(
        tmp_path / "p.json",
        {"127.0.0.1": {"pins": [random_pin(), spki_pin(pki.intermediate)]}},
    )
    common = ["--policy", str(policy), "--cafile", str(bundle)]
    with (
        TLSServer(certfile, keyfile) as soon,
        TLSServer(rogue_pki_files.certfile, rogue_pki_files.keyfile) as rogue,
    ):
        code, _ = _json(capsys, _target(soon), *common)
        assert code == 4
        code, _ = _json(capsys, _target(soon), _target(closed_port), *common)
        assert code == 3
        code, doc = _json(capsys, _target(soon), _target(closed_port), _target(rogue), *common)
    assert code == 1
    statuses = [e["status"] for e in doc["endpoints"]]
    assert statuses == ["warn", "error", "mismatch"]


# -- slow and dead endpoints ----------------------------------------------------------------


def test_silent_and_closed_endpoints_do_not_stall_the_run(
    capsys, tmp_pki_files, good_policy, silent_port, closed_port
):
    servers = [TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) for _ in range(3)]
    for srv in servers:
        srv.start()
    try:
        targets = [_target(servers[0]), _target(silent_port), _target(servers[1])]
        targets += [_target(closed_port), _target(servers[2])]
        start = time.monotonic()
        code, doc = _json(
            capsys,
            *targets,
            "--policy",
            str(good_policy),
            "--cafile",
            str(tmp_pki_files.root_ca),
            "--timeout",
            "1",
            "--concurrency",
            "2",
        )
        elapsed = time.monotonic() - start
    finally:
        for srv in servers:
            srv.stop()
    # One timeout (1 s) plus a small margin, although concurrency is 2 and the silent
    # endpoint holds one slot the whole second.
    assert elapsed < 2.5, elapsed
    assert code == 3
    got = {e["endpoint"]: (e["status"], e["error"]) for e in doc["endpoints"]}
    assert got[_target(silent_port)] == ("error", f"{_target(silent_port)}: timed out after 1 s")
    assert got[_target(closed_port)][0] == "error"
    assert "cannot connect" in got[_target(closed_port)][1]
    assert [got[_target(s)][0] for s in servers] == ["ok", "ok", "ok"]
    # Reports keep the order of the targets, whatever order they finished in.
    assert [e["endpoint"] for e in doc["endpoints"]] == targets


# -- targets --------------------------------------------------------------------------------


def test_targets_file_and_policy_keys(capsys, tmp_path, pki, tmp_pki_files, server, closed_port):
    listing = tmp_path / "targets.txt"
    listing.write_text(f"# fleet\n{_target(server)}\n\n  {_target(closed_port)}  # old box\n")
    code, doc = _json(
        capsys, "--targets-file", str(listing), "--cafile", str(tmp_pki_files.root_ca)
    )
    assert [e["endpoint"] for e in doc["endpoints"]] == [_target(server), _target(closed_port)]
    assert code == 3
    # Without targets, the policy's exact keys are checked on port 443; wildcards are skipped.
    rules = {
        "127.0.0.1": {"pins": [random_pin(), random_pin()]},
        "*.example.com": {"pins": [random_pin(), random_pin()]},
    }
    policy = write_policy(tmp_path / "p.json", rules)
    code, doc = _json(capsys, "--policy", str(policy), "--timeout", "1")
    assert [e["endpoint"] for e in doc["endpoints"]] == ["127.0.0.1:443"]


def test_duplicate_targets_checked_once(capsys, tmp_pki_files, server):
    code, doc = _json(
        capsys, _target(server), _target(server), "--cafile", str(tmp_pki_files.root_ca)
    )
    assert code == 0 and len(doc["endpoints"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give TARGETS"),
        (("host:99999",), "port must be a number"),
        (("http://example.com",), "only https"),
        (("127.0.0.1:1", "--webhook", "http://127.0.0.1:1/"), "needs --state FILE or --watch"),
        (("127.0.0.1:1", "--max-runs", "2"), "only applies with --watch"),
        (("127.0.0.1:1", "--concurrency", "0"), "--concurrency"),
    ],
)
def test_usage_errors_exit_2(capsys, args, message):
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert message in err and out == ""


def test_bad_targets_file_line_is_named(capsys, tmp_path):
    listing = tmp_path / "targets.txt"
    listing.write_text("example.com\nbad host:1\n")
    code, _out, err = _run(capsys, "--targets-file", str(listing))
    assert code == 2 and f"{listing}:2" in err


def test_policy_with_only_wildcards_and_no_targets(capsys, tmp_path):
    policy = write_policy(
        tmp_path / "p.json", {"*.example.com": {"pins": [random_pin(), random_pin()]}}
    )
    code, _out, err = _run(capsys, "--policy", str(policy))
    assert code == 2 and "no exact domain keys" in err


def test_invalid_policy_exit_2_before_connecting(capsys, tmp_path, server):
    policy = tmp_path / "p.json"
    policy.write_text('{"domains": {"127.0.0.1": {"pins": ["nope"]}}}')
    code, _out, err = _run(capsys, _target(server), "--policy", str(policy))
    assert code == 2 and str(policy) in err and "pins[0]" in err
    assert server.handshakes == 0


def test_http_webhook_only_to_loopback(capsys, tmp_path, server):
    state = str(tmp_path / "s.json")
    code, _out, err = _run(
        capsys, _target(server), "--state", state, "--webhook", "http://hooks.example.com/x"
    )
    assert code == 2 and "plain http is only allowed to localhost" in err
    code, _out, err = _run(capsys, _target(server), "--state", state, "--webhook", "ftp://x/")
    assert code == 2 and "expected an https:// URL" in err


# -- plain text output ----------------------------------------------------------------------


def test_plain_text_report(capsys, pki, tmp_pki_files, server, good_policy, closed_port):
    code, out, err = _run(
        capsys,
        _target(server),
        _target(closed_port),
        "--policy",
        str(good_policy),
        "--cafile",
        str(tmp_pki_files.root_ca),
    )
    assert code == 3, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{_target(server)}  OK  verdict=ok  leaf=")
    assert any(spki_pin(pki.intermediate) in line and "Test Intermediate" in line for line in lines)
    assert any(
        f"{spki_pin(pki.root)}" in line and "[not sent by the server]" in line for line in lines
    )
    assert f"{_target(closed_port)}  ERROR  verdict=-" in out
    assert lines[-1] == "2 endpoint(s): 1 ok, 1 error"
    assert err == ""  # no progress bar when stderr is not a terminal


# -- state and change detection -------------------------------------------------------------


def test_state_detects_a_swapped_certificate_across_runs(
    capsys, tmp_path, pki: PKI, tmp_pki_files, server, good_policy, webhook: WebhookReceiver
):
    state = tmp_path / "state.json"
    args = [
        _target(server),
        "--policy",
        str(good_policy),
        "--cafile",
        str(tmp_pki_files.root_ca),
        "--state",
        str(state),
        "--webhook",
        webhook.url,
    ]
    code, first = _json(capsys, *args)
    assert code == 0 and first["endpoints"][0]["changed"] is None  # first sighting: baseline
    saved = json.loads(state.read_text())
    assert saved["format"] == "certpin-monitor-state" and saved["version"] == 1
    entry = saved["endpoints"][_target(server)]
    assert entry["status"] == "ok" and entry["leaf_pin"] == spki_pin(pki.leaf)

    code, second = _json(capsys, *args)
    assert code == 0 and second["endpoints"][0]["changed"] is False
    assert second["summary"]["changed"] == 0
    assert webhook.events == []  # no change, no alert

    # A new leaf key from the same CA: still passes the intermediate pin, but the chain changed.
    new_leaf = pki.intermediate.issue_leaf("localhost", "127.0.0.1")
    server.set_certificate(*new_leaf.write(tmp_path / "new"))
    code, third = _json(capsys, *args)
    endpoint = third["endpoints"][0]
    assert code == 0 and endpoint["status"] == "ok" and endpoint["changed"] is True
    assert endpoint["previous"]["leaf_pin"] == spki_pin(pki.leaf)
    assert endpoint["chain"][0]["pin"] == spki_pin(new_leaf)
    assert third["summary"]["changed"] == 1

    (event,) = webhook.events
    assert set(event) == {"event", "time", "endpoint", "previous", "current", "verdict", "message"}
    assert event["event"] == "changed" and event["endpoint"] == _target(server)
    assert event["verdict"] == "ok"
    assert event["previous"]["leaf_pin"] == spki_pin(pki.leaf)
    assert event["current"]["leaf_pin"] == spki_pin(new_leaf)
    assert event["current"]["chain_pins"][1:] == event["previous"]["chain_pins"][1:]
    assert dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")) <= dt.datetime.now(
        dt.UTC
    )
    assert webhook.headers[0]["Content-Type"] == "application/json"


def test_status_change_is_a_change(capsys, tmp_path, tmp_pki_files, good_policy, webhook):
    state = tmp_path / "state.json"
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as srv:
        port = srv.port
        args = [_target(port), "--policy", str(good_policy), "--cafile", str(tmp_pki_files.root_ca)]
        args += ["--state", str(state), "--webhook", webhook.url, "--timeout", "1"]
        assert _json(capsys, *args)[0] == 0
    code, doc = _json(capsys, *args)  # the server is gone: refused
    assert code == 3 and doc["endpoints"][0]["changed"] is True
    (event,) = webhook.events
    assert event["previous"]["status"] == "ok" and event["current"]["status"] == "error"
    assert event["verdict"] is None and "cannot connect" in event["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"endpoints": {}}', "not a certpin monitor state file"),
        ('{"format": "certpin-monitor-state", "version": 9, "endpoints": {}}', "version 9"),
        (
            '{"format": "certpin-monitor-state", "version": 1,'
            ' "endpoints": {"a:1": {"status": "fine"}}}',
            'endpoints."a:1".status',
        ),
    ],
)
def test_bad_state_file_exit_2(capsys, tmp_path, server, content, message):
    state = tmp_path / "state.json"
    state.write_text(content)
    code, _out, err = _run(capsys, _target(server), "--state", str(state))
    assert code == 2 and str(state) in err and message in err
    assert state.read_text() == content  # never overwritten
    assert server.handshakes == 0


def test_webhook_failure_is_logged_not_fatal(capsys, tmp_path, tmp_pki_files, server, closed_port):
    state = tmp_path / "state.json"
    args = [_target(server), "--cafile", str(tmp_pki_files.root_ca), "--state", str(state)]
    args += ["--webhook", f"http://127.0.0.1:{closed_port}/hook"]
    assert _run(capsys, *args)[0] == 0
    server.set_certificate(*make_pki().leaf.write(tmp_path / "other"))
    code, out, err = _run(capsys, *args)
    assert code == 3  # the other PKI is untrusted: an error, and a change
    assert "ERROR" in out and "CHANGED" in out  # reported, although the webhook failed
    assert f"webhook http://127.0.0.1:{closed_port}/hook: delivery failed" in err
    assert json.loads(state.read_text())["endpoints"][_target(server)]["status"] == "error"


def test_webhook_http_error_is_logged(capsys, tmp_path, tmp_pki_files, closed_port):
    with WebhookReceiver(status=500) as failing:
        state = tmp_path / "state.json"
        with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as srv:
            args = [_target(srv), "--cafile", str(tmp_pki_files.root_ca), "--state", str(state)]
            args += ["--webhook", failing.url, "--timeout", "1"]
            assert _run(capsys, *args)[0] == 0
        code, _out, err = _run(capsys, *args)
    assert code == 3 and len(failing.events) == 1
    assert "HTTP 500" in err


# -- watch mode (CLI) -----------------------------------------------------------------------


def test_watch_without_changes_alerts_nothing(
    capsys, tmp_path, tmp_pki_files, server, good_policy, webhook
):
    state = tmp_path / "state.json"
    start = time.monotonic()
    code, out, err = _run(
        capsys,
        _target(server),
        "--policy",
        str(good_policy),
        "--cafile",
        str(tmp_pki_files.root_ca),
        "--watch",
        "0.1",
        "--max-runs",
        "3",
        "--state",
        str(state),
        "--webhook",
        webhook.url,
    )
    assert code == 0, err
    assert time.monotonic() - start >= 0.2  # three rounds, 0.1 s apart
    assert server.handshakes == 3
    assert webhook.events == []
    assert out.count(f"{_target(server)}  OK") == 1  # the first round's report only
    assert "CHANGED" not in out
    assert json.loads(state.read_text())["endpoints"][_target(server)]["status"] == "ok"


def test_watch_json_prints_alerts_as_json_lines(
    capsys, tmp_path, tmp_pki_files, good_policy, webhook
):
    state = tmp_path / "state.json"
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as srv:
        args = [_target(srv), "--policy", str(good_policy), "--cafile", str(tmp_pki_files.root_ca)]
        args += ["--state", str(state), "--timeout", "1"]
        assert _run(capsys, *args)[0] == 0  # baseline
    code, out, err = _run(
        capsys, *args, "--json", "--watch", "0.05", "--max-runs", "2", "--webhook", webhook.url
    )
    assert code == 3, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1  # ok -> error once; the second round is unchanged
    assert lines[0] == webhook.events[0]
    assert lines[0]["current"]["status"] == "error"
