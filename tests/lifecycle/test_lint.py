"""`certpin lint`: every rule fires on its mistake and stays quiet on the fixed policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from _support.pki import PKI, spki_pin
from _support.servers import TLSServer

from ._helpers import in_days, random_pin, run, write_policy


def _lint(capsys, tmp_path: Path, domains: dict[str, dict[str, Any]], *extra: str):
    policy = write_policy(tmp_path / "pins.json", domains)
    code, out, err = run(capsys, "lint", policy, "--json", *extra)
    assert code in (0, 1), err
    doc = json.loads(out)
    assert doc["exit_code"] == code
    return code, {(f["rule"], f["severity"], f["domain"]) for f in doc["findings"]}, doc


def _ids(findings) -> set[str]:
    return {rule for rule, _severity, _domain in findings}


def _good(pki: PKI, **extra: Any) -> dict[str, Any]:
    """Intermediate pinned (live) plus a backup, expiring in 300 days: lints clean."""
    return {"pins": [spki_pin(pki.intermediate), random_pin()], "expires": in_days(300), **extra}


def test_clean_policy_with_chain(capsys, tmp_path, pki, chain_args):
    code, findings, doc = _lint(capsys, tmp_path, {"localhost": _good(pki)}, *chain_args)
    assert (code, findings) == (0, set())
    assert doc["counts"] == {"error": 0, "warning": 0, "info": 0}


def test_text_output_has_id_why_and_fix(capsys, tmp_path, pki):
    policy = write_policy(
        tmp_path / "p.json", {"localhost": {"pins": [random_pin(), random_pin()]}}
    )
    code, out, err = run(capsys, "lint", policy)
    assert code == 0, err  # CP103 is a warning
    assert "CP103 warning [localhost] expires-missing" in out
    assert "    why: " in out and "    fix: " in out
    assert run(capsys, "lint", policy, "--strict")[0] == 1


# -- CP1xx ----------------------------------------------------------------------------------


def test_cp101_single_pin(capsys, tmp_path, pki):
    single = {"pins": [random_pin()], "allow_single_pin": True, "expires": in_days(30)}
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": single})
    assert ("CP101", "error", "localhost") in findings and code == 1
    report_only = {
        "pins": [random_pin()], "enforce": False, "report_uris": ["https://r.example/"],
        "expires": in_days(30),
    }  # fmt: skip
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": report_only})
    assert ("CP101", "warning", "localhost") in findings and code == 0
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki)})
    assert "CP101" not in _ids(findings)


def test_cp102_duplicate_pin(capsys, tmp_path, pki):
    pin = random_pin()
    dup = {"pins": [pin, pin, random_pin()], "expires": in_days(30)}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": dup})
    assert ("CP102", "warning", "localhost") in findings
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki)})
    assert "CP102" not in _ids(findings)


def test_cp102_the_same_pin_in_two_slots(capsys, tmp_path):
    pin, other = random_pin(), random_pin()
    both = {"pins": [pin, other], "leaf_pins": [pin, random_pin()], "expires": in_days(30)}
    _code, findings, doc = _lint(capsys, tmp_path, {"localhost": both})
    assert ("CP102", "warning", "localhost") in findings
    messages = [f["message"] for f in doc["findings"] if f["rule"] == "CP102"]
    assert messages == [f"{pin} is listed in both pins and leaf_pins"]
    apart = {"pins": [pin, other], "leaf_pins": [random_pin(), random_pin()], "expires": in_days(9)}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": apart})
    assert "CP102" not in _ids(findings)


@pytest.mark.parametrize(
    ("expires", "rule"),
    [(None, "CP103"), (in_days(-1), "CP104"), (in_days(500), "CP105"), (in_days(364), None)],
)
def test_cp103_to_105_expiry(capsys, tmp_path, expires, rule):
    body: dict[str, Any] = {"pins": [random_pin(), random_pin()]}
    if expires is not None:
        body["expires"] = expires
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": body})
    expiry_rules = _ids(findings) & {"CP103", "CP104", "CP105"}
    assert expiry_rules == ({rule} if rule else set())
    assert code == (1 if rule == "CP104" else 0)


def test_now_option_moves_the_clock(capsys, tmp_path):
    body = {"pins": [random_pin(), random_pin()], "expires": "2030-01-01"}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, "--now", "2029-12-31")
    assert not _ids(findings) & {"CP104", "CP105"}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, "--now", "2030-01-01T00:00Z")
    assert "CP104" in _ids(findings)
    code, out, err = run(capsys, "lint", tmp_path / "pins.json", "--now", "tomorrow")
    assert code == 2 and "tomorrow" in err


def test_cp106_report_only_without_uri(capsys, tmp_path, pki):
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki, enforce=False)})
    assert ("CP106", "warning", "localhost") in findings
    fixed = _good(pki, enforce=False, report_uris=["https://r.example/"])
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": fixed})
    assert "CP106" not in _ids(findings)


@pytest.mark.parametrize("parent_key", ["example.com", "*.example.com", "**.example.com"], ids=str)
def test_cp107_fewer_pins_than_parent(capsys, tmp_path, parent_key):
    a, b, c = random_pin(), random_pin(), random_pin()
    parent: dict[str, Any] = {"pins": [a, b, c], "expires": in_days(30)}
    if parent_key == "example.com":
        parent["include_subdomains"] = True
    child = {"pins": [a, b], "expires": in_days(30)}
    domains = {parent_key: parent, "api.example.com": child}
    _code, findings, _ = _lint(capsys, tmp_path, domains)
    assert ("CP107", "warning", "api.example.com") in findings
    # Same pins as the parent: not weaker.
    domains["api.example.com"] = {"pins": [a, b, c], "expires": in_days(30)}
    _code, findings, _ = _lint(capsys, tmp_path, domains)
    assert "CP107" not in _ids(findings)
    # Different pins, as many: still drops a parent pin (a backup): a warning, fatal with --strict.
    domains["api.example.com"] = {"pins": [a, b, random_pin()], "expires": in_days(30)}
    code, findings, _ = _lint(capsys, tmp_path, domains)
    assert ("CP107", "warning", "api.example.com") in findings and code == 0
    code, findings, _ = _lint(capsys, tmp_path, domains, "--strict")
    assert ("CP107", "warning", "api.example.com") in findings and code == 1


def test_cp107_unrelated_rules_are_not_parents(capsys, tmp_path):
    # example.com without include_subdomains covers only itself: not a parent of api.
    domains = {
        "example.com": {"pins": [random_pin(), random_pin(), random_pin()], "expires": in_days(9)},
        "api.example.com": {"pins": [random_pin(), random_pin()], "expires": in_days(9)},
        "other.test": {"pins": [random_pin(), random_pin(), random_pin()], "expires": in_days(9)},
    }
    _code, findings, _ = _lint(capsys, tmp_path, domains)
    assert not _ids(findings) & {"CP107", "CP108"}


def test_cp108_report_only_under_enforcing_parent(capsys, tmp_path):
    pins = [random_pin(), random_pin()]
    domains = {
        "**.example.com": {"pins": pins, "expires": in_days(30)},
        "api.example.com": {
            "pins": pins, "enforce": False, "report_uris": ["https://r.example/"],
            "expires": in_days(30),
        },
    }  # fmt: skip
    _code, findings, _ = _lint(capsys, tmp_path, domains)
    assert ("CP108", "warning", "api.example.com") in findings
    domains["api.example.com"]["enforce"] = True
    _code, findings, _ = _lint(capsys, tmp_path, domains)
    assert "CP108" not in _ids(findings)


# -- CP2xx ----------------------------------------------------------------------------------


def test_cp201_lock_out(capsys, tmp_path, pki, chain_args):
    body = {"pins": [random_pin(), random_pin()], "expires": in_days(30)}
    code, findings, doc = _lint(capsys, tmp_path, {"localhost": body}, *chain_args)
    assert ("CP201", "error", "localhost") in findings and code == 1
    (cp201,) = [f for f in doc["findings"] if f["rule"] == "CP201"]
    assert spki_pin(pki.leaf) in cp201["message"] and cp201["fix"]
    report_only = {**body, "enforce": False, "report_uris": ["https://r.example/"]}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": report_only}, *chain_args)
    assert ("CP201", "warning", "localhost") in findings
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki)}, *chain_args)
    assert "CP201" not in _ids(findings)


def test_cp202_no_backup(capsys, tmp_path, pki, chain_args):
    body = {"pins": [spki_pin(pki.leaf), spki_pin(pki.intermediate)], "expires": in_days(30)}
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, *chain_args)
    assert ("CP202", "error", "localhost") in findings and code == 1
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki)}, *chain_args)
    assert "CP202" not in _ids(findings)


def test_cp203_root_only_counts_a_root_the_server_does_not_send(capsys, tmp_path, pki, chain_args):
    # The chain file holds leaf + intermediate only: the root comes from --cafile, as in a
    # client's verified chain, so the root pin is live (no CP201) and CP203 fires.
    body = {"pins": [spki_pin(pki.root), random_pin()], "expires": in_days(30)}
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, *chain_args)
    assert ("CP203", "warning", "localhost") in findings
    assert "CP201" not in _ids(findings) and code == 0
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki)}, *chain_args)
    assert "CP203" not in _ids(findings)


def _spare_csr(capsys, directory: Path, key_type: str = "p256") -> tuple[Path, str]:
    code, out, err = run(capsys, "keygen", "-o", directory, "--type", key_type)
    assert code == 0, err
    return directory / "csr.pem", out.strip()


def test_cp204_leaf_only_without_spare(capsys, tmp_path, pki, chain_args):
    body = {"pins": [spki_pin(pki.leaf), random_pin()], "expires": in_days(30)}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, *chain_args)
    assert ("CP204", "warning", "localhost") in findings
    csr, spare = _spare_csr(capsys, tmp_path / "spare", "rsa2048")
    body["pins"] = [spki_pin(pki.leaf), spare]
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, *chain_args, "--key", csr)
    assert "CP204" not in _ids(findings)


def test_cp205_expires_after_pinned_leaf(capsys, tmp_path, pki, chain_args):
    # The leaf is valid for 365 days; pins expiring in 366 outlive it.
    late = {"pins": [spki_pin(pki.leaf), random_pin()], "expires": in_days(366)}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": late}, *chain_args)
    assert ("CP205", "warning", "localhost") in findings
    early = {**late, "expires": in_days(300)}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": early}, *chain_args)
    assert "CP205" not in _ids(findings)
    # Not the leaf pinned: the rule does not apply.
    _code, findings, _ = _lint(
        capsys, tmp_path, {"localhost": _good(pki, expires=in_days(366))}, *chain_args
    )
    assert "CP205" not in _ids(findings)


def test_cp206_weak_spare_key(capsys, tmp_path, pki):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "weak.pem"
    path.write_bytes(
        weak.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    body = {"pins": [spki_pin(weak), random_pin()], "expires": in_days(30)}
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, "--key", path)
    assert ("CP206", "error", "localhost") in findings and code == 1
    strong = tmp_path / "strong"
    csr, pin = _spare_csr(capsys, strong, "rsa2048")
    body = {"pins": [pin, random_pin()], "expires": in_days(30)}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, "--key", csr)
    assert "CP206" not in _ids(findings)


def test_cp207_single_key_algorithm(capsys, tmp_path, pki, chain_args):
    ec_csr, ec_pin = _spare_csr(capsys, tmp_path / "ec", "p384")
    body = {"pins": [spki_pin(pki.intermediate), ec_pin], "expires": in_days(30)}
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, *chain_args, "--key", ec_csr)
    assert ("CP207", "warning", "localhost") in findings
    rsa_csr, rsa_pin = _spare_csr(capsys, tmp_path / "rsa", "rsa2048")
    body["pins"] = [spki_pin(pki.intermediate), rsa_pin]
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, *chain_args, "--key", rsa_csr)
    assert "CP207" not in _ids(findings)
    # An unidentified backup: the algorithm is unknown, so no claim is made.
    _code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki)}, *chain_args)
    assert "CP207" not in _ids(findings)


# -- --connect ------------------------------------------------------------------------------


def test_connect_lints_the_live_chain(capsys, tmp_path, pki, root_ca, server: TLSServer):
    address = ["--address", f"localhost=127.0.0.1:{server.port}", "--cafile", str(root_ca)]
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": _good(pki)}, *address)
    assert (code, findings) == (0, set())
    body = {"pins": [random_pin(), random_pin()], "expires": in_days(30)}
    code, findings, _ = _lint(capsys, tmp_path, {"localhost": body}, *address)
    assert ("CP201", "error", "localhost") in findings and code == 1


def test_cp208_unreachable_endpoint_is_a_finding(capsys, tmp_path, pki, root_ca, unused_port):
    address = ["--address", f"localhost=127.0.0.1:{unused_port}", "--cafile", str(root_ca)]
    code, findings, doc = _lint(
        capsys, tmp_path, {"localhost": _good(pki)}, *address, "--timeout", "2"
    )
    assert ("CP208", "error", "localhost") in findings and code == 1


def test_connect_skips_one_label_wildcards_with_a_note(capsys, tmp_path, pki):
    domains = {"*.example.com": _good(pki)}
    code, findings, doc = _lint(capsys, tmp_path, domains, "--live")
    assert ("CP208", "info", "*.example.com") in findings and code == 0


def test_wildcard_key_with_chain_file(capsys, tmp_path, pki, root_ca):
    leaf = pki.intermediate.issue_leaf("api.example.test")
    certfile, _key = leaf.write(tmp_path / "w")
    domains = {"*.example.test": {"pins": [random_pin(), random_pin()], "expires": in_days(9)}}
    code, findings, doc = _lint(
        capsys, tmp_path, domains, "--chain", f"*.example.test={certfile}", "--cafile", root_ca
    )
    assert ("CP201", "error", "*.example.test") in findings and "api.example.test" in str(doc)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ("localhost", "expected DOMAIN=VALUE"),
        ("=x.pem", "expected DOMAIN=VALUE"),
        ("bad host!=x.pem", "invalid domain"),
        ("localhost=missing.pem", "missing.pem: no such file"),
        ("other.example=x.pem", "'other.example' is not a key of"),
    ],
)
def test_bad_chain_argument_exits_2(capsys, tmp_path, pki, root_ca, chain, expected):
    policy = write_policy(tmp_path / "p.json", {"localhost": _good(pki)})
    code, out, err = run(capsys, "lint", policy, "--chain", chain, "--cafile", root_ca)
    assert code == 2 and expected in err and out == ""


def test_chain_that_does_not_verify_exits_2(capsys, tmp_path, pki, rogue_pki_files, chain_args):
    policy = write_policy(tmp_path / "p.json", {"localhost": _good(pki)})
    args = [*chain_args[:2], "--cafile", str(rogue_pki_files.root_ca)]
    code, _out, err = run(capsys, "lint", policy, *args)
    assert code == 2 and "does not verify" in err and chain_args[1].split("=", 1)[1] in err


def test_missing_and_invalid_policy_exit_2(capsys, tmp_path):
    code, _out, err = run(capsys, "lint", tmp_path / "nope.toml")
    assert code == 2 and "nope.toml" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[domains."localhost"]\npins = ["nope"]\n')
    code, _out, err = run(capsys, "lint", bad)
    assert code == 2 and 'bad.toml: domains."localhost".pins[0]' in err


def test_docs_list_every_rule_with_its_severity():
    from certpin.lifecycle.lint import RULES

    doc = (Path(__file__).parents[2] / "docs" / "lint.md").read_text()
    for rule in RULES.values():
        assert f"| `{rule.id}` | {rule.severity} | `{rule.name}` |" in doc, rule.id
