"""Alerts: ``--webhook`` POSTs each unexpected certificate; ``certpin ct hook`` judges what
certspotter found (its documented hooks.d environment)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certpin.core.pins import spki_of_certificate
from ct._certs import issuance
from ct.conftest import run_ct, watch_once, write_log_list
from monitor._helpers import WebhookReceiver


@pytest.mark.parametrize("rogue", [True, False])
def test_the_webhook_gets_each_unexpected_certificate(
    capsys, world, policy, rfc_log, tmp_path, rogue
):
    i = issuance(
        world.rogue if rogue else world.ca, "api.example.com", key=None if rogue else world.primary
    )
    first = rfc_log.log.add_precert(i.precert(), i.chain())
    rfc_log.log.add_x509(i.final([rfc_log.log.sct(first)]), i.chain())
    with WebhookReceiver() as hook:
        code, records, _ = watch_once(
            capsys,
            str(policy),
            str(write_log_list(tmp_path / "l.json", rfc_log)),
            "--webhook",
            hook.url,
        )
    if not rogue:
        assert (code, hook.events) == (0, [])
        return
    assert code == 1
    (event,) = hook.events  # one issuance, one alert
    assert event["event"] == "ct_unexpected"
    assert event["certificate"] == records[0]
    assert event["time"].endswith("Z")
    assert "api.example.com" in event["message"] and records[0]["spki_pin"] in event["message"]


def test_a_webhook_over_plain_http_to_another_host_is_refused(capsys, policy, rfc_log, tmp_path):
    code, _, err = run_ct(
        capsys,
        "watch",
        "--policy",
        str(policy),
        "--log-list",
        str(write_log_list(tmp_path / "l.json", rfc_log)),
        "--once",
        "--webhook",
        "http://alerts.example.com/hook",
    )
    assert code == 2 and "loopback" in err
    assert rfc_log.requests == {}


def test_a_dead_webhook_does_not_change_the_verdict(capsys, world, policy, rfc_log, tmp_path):
    i = issuance(world.rogue, "api.example.com")
    rfc_log.log.add_x509(i.final(), i.chain())
    with WebhookReceiver(status=500) as hook:
        code, records, err = watch_once(
            capsys,
            str(policy),
            str(write_log_list(tmp_path / "l.json", rfc_log)),
            "--webhook",
            hook.url,
        )
    assert code == 1 and len(records) == 1
    assert "webhook" in err and "500" in err


# -- certpin ct hook --------------------------------------------------------------------------


def _certspotter_env(monkeypatch, tmp_path: Path, chain: list[bytes], **extra: str) -> None:
    """What certspotter 0.16 sets for a discovered_cert event (certspotter-script(8))."""
    path = tmp_path / "cert.pem"
    path.write_bytes(
        b"".join(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM) for der in chain)
    )
    env = {
        "EVENT": "discovered_cert",
        "SUMMARY": "Certificate Discovered for api.example.com",
        "WATCH_ITEM": "api.example.com",
        "LOG_URI": "https://ct.example/log/",
        "ENTRY_INDEX": "42",
        "CERT_FILENAME": str(path),
        "PUBKEY_SHA256": hashlib.sha256(spki_of_certificate(chain[0])).hexdigest(),
        "CERT_SHA256": hashlib.sha256(chain[0]).hexdigest(),
    }
    env.update(extra)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("who", "names", "code"),
    [
        ("rogue", ("api.example.com",), 1),
        ("primary", ("api.example.com",), 0),
        ("rogue", ("www.unrelated.example",), 0),
        ("rogue-precert", ("api.example.com",), 1),
    ],
)
def test_the_hook_passes_on_only_unexpected_keys(
    capsys, monkeypatch, world, policy, tmp_path, who, names, code
):
    i = issuance(
        world.ca if who == "primary" else world.rogue,
        *names,
        key=world.primary if who == "primary" else None,
    )
    leaf = i.precert() if who.endswith("precert") else i.final()
    _certspotter_env(monkeypatch, tmp_path, [leaf, *i.chain()])
    code_, records, err = run_ct(capsys, "hook", "--policy", str(policy), "--json")
    assert code_ == code, err
    if code == 0:
        assert records == []
        return
    (record,) = records
    assert record["kind"] == "unexpected" and record["hosts"] == ["api.example.com"]
    assert record["log"] == "https://ct.example/log/" and record["index"] == 42
    assert record["entry_type"] == ("precert" if who.endswith("precert") else "x509")


def test_other_certspotter_events_pass_silently(capsys, monkeypatch, policy):
    monkeypatch.setenv("EVENT", "error")
    monkeypatch.setenv("TEXT_FILENAME", "/nonexistent")
    assert run_ct(capsys, "hook", "--policy", str(policy))[:2] == (0, [])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"CERT_FILENAME": ""}, "-no_save"),
        ({"PUBKEY_SHA256": "00" * 32}, "PUBKEY_SHA256"),
        ({"CERT_FILENAME": "/nonexistent/cert.pem"}, "CERT_FILENAME"),
    ],
)
def test_a_contradictory_environment_is_an_input_error(
    capsys, monkeypatch, world, policy, tmp_path, change, problem
):
    i = issuance(world.rogue, "api.example.com")
    _certspotter_env(monkeypatch, tmp_path, [i.final(), *i.chain()], **change)
    code, _, err = run_ct(capsys, "hook", "--policy", str(policy))
    assert code == 2 and problem in err


@pytest.mark.parametrize(("status", "code"), [(204, 0), (500, 1)])
def test_certspotter_exit_status_asks_for_a_retry_only_when_the_alert_did_not_get_through(
    capsys, monkeypatch, world, policy, tmp_path, status, code
):
    i = issuance(world.rogue, "api.example.com")
    _certspotter_env(monkeypatch, tmp_path, [i.final(), *i.chain()])
    with WebhookReceiver(status=status) as hook:
        code_, _, _ = run_ct(
            capsys,
            "hook",
            "--policy",
            str(policy),
            "--webhook",
            hook.url,
            "--exit-status",
            "certspotter",
            "--json",
        )
    assert code_ == code
    assert hook.events[0]["event"] == "ct_unexpected"
