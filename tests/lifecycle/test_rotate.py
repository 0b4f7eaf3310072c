"""`certpin rotate plan` and `certpin rotate next`: inputs, refusals, naming."""

from __future__ import annotations

import json

import pytest

from _support.pki import PKI, spki_pin
from certpin import Pin, Policy
from certpin.lifecycle.rotate import parse_pin_spec

from ._helpers import in_days, random_pin, run, write_policy


@pytest.fixture
def next_chain(tmp_path, pki: PKI):
    """A new leaf (new key) from the same intermediate."""
    leaf = pki.intermediate.issue_leaf("localhost", "127.0.0.1")
    certfile, _key = leaf.write(tmp_path / "next")
    return certfile, spki_pin(leaf)


def _plan(capsys, root_ca, next_chain, *policies, extra=()):
    args = ["rotate", "plan"]
    for p in policies:
        args += ["--deployed", p]
    return run(capsys, *args, "--next-chain", next_chain[0], "--cafile", root_ca, *extra)


def test_plan_names_versions_by_field_or_file_stem(capsys, tmp_path, pki, root_ca, next_chain):
    old = write_policy(
        tmp_path / "legacy.json",
        {"localhost": {"pins": [random_pin(), random_pin()], "expires": in_days(40)}},
    )
    ok = write_policy(
        tmp_path / "new.json",
        {"localhost": {"pins": [spki_pin(pki.intermediate), random_pin()]}},
        version=42,
    )
    code, out, err = _plan(
        capsys, root_ca, next_chain, old, ok, extra=["--share", "legacy=5%", "--share", "42=0.9"]
    )
    assert code == 1, err
    assert "legacy (5% of users) [" in out and ": BREAKS" in out
    assert "v42 (90% of users) [" in out
    assert "would break: legacy, 5% of users" in out
    assert next_chain[1] in out  # the pin to add now
    assert f"pins expire on {in_days(40)}" in out
    code, out, err = _plan(capsys, root_ca, next_chain, ok)
    assert code == 0 and "safe: no deployed version breaks" in out


def test_plan_report_only_does_not_break(capsys, tmp_path, root_ca, next_chain):
    policy = write_policy(
        tmp_path / "ro.json",
        {"localhost": {"pins": [random_pin()], "enforce": False, "report_uris": ["https://r/"]}},
    )
    code, out, err = _plan(capsys, root_ca, next_chain, policy, extra=["--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["safe"] and doc["versions"][0]["reports"] and not doc["versions"][0]["breaks"]


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        ("v9=0.5", "no deployed version 'v9'"),
        ("legacy", "expected VERSION=SHARE"),
        ("legacy=lots", "'lots' is not a number"),
        ("legacy=1.5", "between 0 and 1"),
    ],
)
def test_plan_bad_share_exits_2(capsys, tmp_path, root_ca, next_chain, share, expected):
    policy = write_policy(
        tmp_path / "legacy.json", {"localhost": {"pins": [random_pin(), random_pin()]}}
    )
    code, _out, err = _plan(capsys, root_ca, next_chain, policy, extra=["--share", share])
    assert code == 2 and expected in err


def test_plan_bad_inputs_exit_2(capsys, tmp_path, root_ca, next_chain, rogue_pki_files):
    policy = write_policy(
        tmp_path / "a.json", {"localhost": {"pins": [random_pin(), random_pin()]}}
    )
    code, _out, err = run(
        capsys, "rotate", "plan", "--deployed", policy, "--next-chain", tmp_path / "none.pem"
    )
    assert code == 2 and "none.pem" in err
    code, _out, err = _plan(capsys, rogue_pki_files.root_ca, next_chain, policy)
    assert code == 2 and "does not verify" in err
    code, _out, err = _plan(capsys, root_ca, next_chain, tmp_path / "missing.toml")
    assert code == 2 and "missing.toml" in err
    code, _out, err = _plan(capsys, root_ca, next_chain, policy, policy)
    assert code == 2 and "same version" in err


# -- rotate next ---------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path, pki, chain_args):
    spare = random_pin()
    policy = write_policy(
        tmp_path / "v3.json",
        {"localhost": {"pins": [spki_pin(pki.leaf), spare], "expires": in_days(100)}},
        version=3,
    )
    return policy, spare, chain_args


def test_next_adds_and_drops(capsys, tmp_path, pki, live):
    policy, spare, chain_args = live
    new_spare = random_pin()
    out_file = tmp_path / "v4.toml"
    code, out, err = run(
        capsys, "rotate", "next", policy, "--add-pin", new_spare,
        "--drop-pin", f"{spare}:localhost", *chain_args, "-o", out_file,
    )  # fmt: skip
    assert code == 0, err
    new = Policy.from_file(out_file)
    assert new.version == 4
    assert [str(p) for p in new.domains["localhost"].pins] == [spki_pin(pki.leaf), new_spare]
    text = out_file.read_text()
    assert "leaf: CN=localhost" in text and "backup (not in the live chain)" in text
    assert "version 4, from" in text
    # OUT is never overwritten: the previous version is what clients run.
    code, _out, err = run(
        capsys, "rotate", "next", policy, "--add-pin", random_pin(), *chain_args, "-o", out_file
    )
    assert code == 2 and "exists" in err


def test_next_refuses_lock_out_unless_forced(capsys, tmp_path, pki, live):
    policy, _spare, chain_args = live
    args = ["rotate", "next", policy, "--add-pin", random_pin(), "--drop-pin", spki_pin(pki.leaf)]
    code, out, err = run(capsys, *args, *chain_args)
    assert code == 1 and out == ""
    assert "would lock out localhost" in err and "refusing to write version 4" in err
    code, out, err = run(capsys, *args, *chain_args, "--force")
    assert code == 0 and Policy.from_dict(__import__("tomllib").loads(out)).version == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "at least one --add-pin or --drop-pin"),
        (["--add-pin", "LEAF"], "already pins it"),
        (["--drop-pin", "RANDOM"], "no rule of"),
        (["--drop-pin", "RANDOM:localhost"], "localhost does not pin it"),
        (["--drop-pin", "SPARE"], 'v3.json (next version): domains."localhost".pins: '),
        (["--add-pin", "RANDOM:nothere.example"], "'nothere.example' is not a key"),
        (["--add-pin", "sha256/nope:localhost"], "--add-pin 'sha256/nope:localhost'"),
        (["--add-pin", "RANDOM", "--domain", "bad host"], "invalid domain"),
    ],
)
def test_next_bad_input_exits_2(capsys, pki, live, args, expected):
    policy, spare, chain_args = live
    subst = {"LEAF": spki_pin(pki.leaf), "SPARE": spare, "RANDOM": random_pin()}
    args = [
        ":".join(subst.get(part, part) for part in a.split(":")) if a.count(":") < 2 else a
        for a in args
    ]
    code, out, err = run(capsys, "rotate", "next", policy, *args, *chain_args)
    assert code == 2 and expected in err and out == ""


def test_next_needs_a_chain_source(capsys, live):
    policy, _spare, _chain_args = live
    code, _out, err = run(capsys, "rotate", "next", policy, "--add-pin", random_pin())
    assert code == 2 and "--live, --address or --chain" in err


def test_pin_spec_accepts_hex_fingerprints_with_and_without_domain():
    hex_pin = ":".join(["AB"] * 32)
    assert parse_pin_spec(hex_pin, "--add-pin") == (Pin.parse(hex_pin), None)
    assert parse_pin_spec(f"{hex_pin}:API.example.com", "--add-pin") == (
        Pin.parse(hex_pin), "api.example.com",
    )  # fmt: skip


def test_plan_does_not_blame_denied_hosts_on_the_rotation(
    capsys, tmp_path, pki, root_ca, next_chain
):
    # 127.0.0.1 is on the leaf but not in the policy, and unpinned hosts are denied: refused
    # with the old chain as with the new one. localhost's pins still accept the next chain.
    policy = tmp_path / "deny.json"
    policy.write_text(
        json.dumps(
            {
                "unpinned_hosts": "deny",
                "domains": {"localhost": {"pins": [spki_pin(pki.intermediate), random_pin()]}},
            }
        )
    )
    code, out, err = _plan(capsys, root_ca, next_chain, policy)
    assert code == 0, err
    assert "deny  127.0.0.1: denied" in out and "safe: no deployed version breaks" in out


# -- rotate next: what it refuses, and what it writes ---------------------------------------


def test_next_drop_pin_without_domain_drops_it_where_pinned(capsys, tmp_path, pki, chain_args):
    # Multi-domain policy: the old pin is on two of three rules. --drop-pin PIN (no :DOMAIN)
    # drops it from those two and leaves the third alone.
    old, keep, other = random_pin(), random_pin(), random_pin()
    leaf = spki_pin(pki.leaf)
    policy = write_policy(
        tmp_path / "v1.json",
        {
            "localhost": {"pins": [leaf, old, keep], "expires": in_days(100)},
            "a.example": {"pins": [old, keep, other], "expires": in_days(100)},
            "b.example": {"pins": [keep, other], "expires": in_days(100)},
        },
        version=1,
    )
    chains = [*chain_args]
    code, out, err = run(capsys, "rotate", "next", policy, "--drop-pin", old, *chains, "--force")
    assert code == 0, err
    new = Policy.from_dict(__import__("tomllib").loads(out))
    assert [str(p) for p in new.domains["localhost"].pins] == [leaf, keep]
    assert [str(p) for p in new.domains["a.example"].pins] == [keep, other]
    assert [str(p) for p in new.domains["b.example"].pins] == [keep, other]


def test_next_refuses_keys_without_a_chain_unless_forced(capsys, tmp_path, pki, chain_args):
    policy = write_policy(
        tmp_path / "v1.json",
        {
            "localhost": {"pins": [spki_pin(pki.leaf), random_pin()], "expires": in_days(100)},
            "other.example": {"pins": [random_pin(), random_pin()], "expires": in_days(100)},
        },
        version=1,
    )
    args = ["rotate", "next", policy, "--add-pin", f"{random_pin()}:localhost", *chain_args]
    code, out, err = run(capsys, *args)
    assert code == 1 and out == ""
    assert "refusing to write version 2" in err
    assert "other.example has no verified chain to check it against" in err
    code, out, err = run(capsys, *args, "--force")
    assert code == 0 and "# not checked against a live chain (--force): other.example" in out


def test_next_refuses_lint_errors_unless_forced(capsys, tmp_path, pki, chain_args):
    # An expired rule (CP104) is a lint error: the next version is not written without --force.
    policy = write_policy(
        tmp_path / "v1.json",
        {"localhost": {"pins": [spki_pin(pki.leaf), random_pin()], "expires": in_days(-1)}},
        version=1,
    )
    args = ["rotate", "next", policy, "--add-pin", random_pin(), *chain_args]
    code, out, err = run(capsys, *args)
    assert code == 1 and out == ""
    assert "lint CP104 error [localhost]" in err and "lint found 1 error(s) (CP104)" in err
    code, out, err = run(capsys, *args, "--force")
    assert code == 0 and Policy.from_dict(__import__("tomllib").loads(out)).version == 2


def test_next_pin_comments_cannot_inject_toml(capsys, tmp_path, pki):
    # The leaf's subject is the server's text: a newline in it must not end the TOML comment.
    evil = 'x\n[domains."evil.example"]\npins = ["' + random_pin() + '"]'
    leaf = pki.intermediate.issue_leaf("localhost", cn=evil)
    certfile, _key = leaf.write(tmp_path / "evil")
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.pem())
    policy = write_policy(
        tmp_path / "v1.json",
        {"localhost": {"pins": [spki_pin(leaf), random_pin()], "expires": in_days(100)}},
        version=1,
    )
    code, out, err = run(
        capsys, "rotate", "next", policy, "--add-pin", random_pin(),
        "--chain", f"localhost={certfile}", "--cafile", root,
    )  # fmt: skip
    assert code == 0, err
    new = Policy.from_dict(__import__("tomllib").loads(out))
    assert list(new.domains) == ["localhost"]
    assert "# leaf: CN=x?[domains." in out
