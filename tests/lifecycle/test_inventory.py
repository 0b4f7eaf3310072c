"""`certpin inventory`: what every pin is, live or backup, expiry and next rotation."""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser

import pytest

from _support.pki import PKI, spki_pin

from ._helpers import in_days, random_pin, run, write_policy


@pytest.fixture
def setup(capsys, tmp_path, pki: PKI, chain_args):
    code, out, err = run(capsys, "keygen", "-o", tmp_path / "spare", "--type", "rsa2048")
    assert code == 0, err
    spare = out.strip()
    unknown = random_pin()
    policy = write_policy(
        tmp_path / "pins.json",
        {
            "localhost": {
                "pins": [spki_pin(pki.intermediate), spare, unknown],
                "expires": in_days(500),
            },
            "api.example.com": {"pins": [random_pin(), random_pin()]},
        },
        version=7,
    )
    args = [policy, *chain_args, "--key", tmp_path / "spare" / "csr.pem"]
    return args, spare, unknown


def test_json(capsys, pki, setup):
    args, spare, unknown = setup
    code, out, err = run(capsys, "inventory", *args, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["version"] == 7
    local, api = doc["domains"]
    pins = {p["pin"]: p for p in local["pins"]}
    live = pins[spki_pin(pki.intermediate)]
    assert (live["status"], live["what"], live["chain_positions"]) == ("live", "intermediate", [1])
    assert live["subject"] == pki.intermediate.cert.subject.rfc4514_string()
    assert live["issuer"] == pki.root.cert.subject.rfc4514_string()
    assert live["key_type"] == "EC P-256" and live["not_after"]
    assert (pins[spare]["status"], pins[spare]["what"], pins[spare]["key_type"]) == (
        "backup", "spare CSR", "RSA 2048",
    )  # fmt: skip
    assert (pins[unknown]["status"], pins[unknown]["what"]) == ("backup", "unknown")
    # Next rotation: leaf notAfter (365 d) - 30 d comes before expires (500 d).
    leaf_end = pki.leaf.cert.not_valid_after_utc
    expected = (leaf_end - dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert local["next_rotation"]["date"] == expected
    assert [c["role"] for c in local["chain"]] == ["leaf", "intermediate", "root"]
    # No chain, no expires: nothing to plan from, said so.
    assert api["next_rotation"] is None and api["chain_source"] is None
    assert {p["status"] for p in api["pins"]} == {"backup"}


def test_next_rotation_is_expiry_when_earlier(capsys, tmp_path, pki, chain_args):
    policy = write_policy(
        tmp_path / "p.json",
        {"localhost": {"pins": [spki_pin(pki.leaf), random_pin()], "expires": in_days(10)}},
    )
    code, out, err = run(capsys, "inventory", policy, *chain_args, "--json")
    assert code == 0, err
    (domain,) = json.loads(out)["domains"]
    assert domain["next_rotation"]["date"].startswith(in_days(10))
    assert domain["pins"][0]["what"] == "leaf"


def test_markdown(capsys, pki, setup):
    args, spare, _unknown = setup
    code, out, err = run(capsys, "inventory", *args)
    assert code == 0, err
    assert out.startswith("# Pin inventory: ") and "(version 7)" in out
    assert "## localhost" in out and "## api.example.com" in out
    assert "- **Next planned rotation:** " in out
    row = next(line for line in out.splitlines() if line.startswith(f"| {spare} "))
    assert "| backup | spare CSR" in row
    assert f"| {spki_pin(pki.intermediate)} | live | intermediate (chain position 1)" in out


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.external.append(value)

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_escaped_and_self_contained(capsys, tmp_path, pki):
    evil = pki.intermediate.issue_leaf("localhost", cn='<script>alert("x")</script>&')
    certfile, _key = evil.write(tmp_path / "evil")
    policy = write_policy(
        tmp_path / "p.json",
        {"localhost": {"pins": [spki_pin(evil), random_pin()], "expires": in_days(30)}},
    )
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.pem())
    code, out, err = run(
        capsys, "inventory", policy, "--chain", f"localhost={certfile}", "--cafile", root,
        "--html", "-o", tmp_path / "inv.html",
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    page = (tmp_path / "inv.html").read_text()
    # RFC 4514 escapes < and > with a backslash; HTML escaping comes on top.
    assert "<script" not in page and "&lt;script" in page
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags and parser.external == []
    assert any('\\<script\\>alert(\\"x\\")' in t for t in parser.text)  # round-trips
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page


def test_bad_format_and_missing_key_exit_2(capsys, tmp_path, pki):
    policy = write_policy(
        tmp_path / "p.json", {"localhost": {"pins": [random_pin(), random_pin()]}}
    )
    code, _out, err = run(capsys, "inventory", policy, "--format", "pdf")
    assert code == 2 and "pdf" in err
    code, _out, err = run(capsys, "inventory", policy, "--key", tmp_path / "nope.pem")
    assert code == 2 and "nope.pem" in err


def test_connect_reads_the_live_chain(capsys, tmp_path, pki: PKI, root_ca, server):
    """--connect (here through --address, which keeps the domain as SNI): the pins are identified
    on the chain the server really serves, verified, root included although it is not sent."""
    pins = [spki_pin(pki.intermediate), random_pin()]
    policy = write_policy(tmp_path / "pins.json", {"localhost": {"pins": pins}}, version=3)
    address = ["--address", f"localhost=127.0.0.1:{server.port}", "--cafile", str(root_ca)]
    code, out, err = run(capsys, "inventory", policy, *address, "--json")
    assert code == 0, err
    (local,) = json.loads(out)["domains"]
    by_pin = {p["pin"]: p for p in local["pins"]}
    assert by_pin[pins[0]]["status"] == "live" and by_pin[pins[1]]["status"] == "backup"
    assert [c["role"] for c in local["chain"]] == ["leaf", "intermediate", "root"]
    assert local["chain_source"]


def test_connect_failure_is_reported_not_hidden(capsys, tmp_path, pki: PKI, root_ca, unused_port):
    pins = [spki_pin(pki.intermediate), random_pin()]
    policy = write_policy(tmp_path / "pins.json", {"localhost": {"pins": pins}})
    address = ["--address", f"localhost=127.0.0.1:{unused_port}", "--cafile", str(root_ca)]
    code, out, err = run(capsys, "inventory", policy, *address, "--json", "--timeout", "2")
    assert code == 0, err  # the document is still written: every domain, with what is known
    (local,) = json.loads(out)["domains"]
    assert local["chain_source"] is None and local["chain"] == []
    assert "cannot connect" in local["chain_note"]  # the failure is stated, not hidden
    assert {p["status"] for p in local["pins"]} == {"backup"}  # nothing claimed live
