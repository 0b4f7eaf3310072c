"""One name, one meaning across every verb; old spellings still work and say they are deprecated.

The names are checked on the click tree itself (every verb and sub-verb); the deprecated spellings
by running each old spelling next to its new one: same result, one warning line for the old one,
no warning for the new one.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from certpin import Pin
from certpin.cli.exitcode import ExitCode
from certpin.cli.main import cli, main
from certpin.cli.options import Verb

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _commands() -> Iterator[tuple[str, click.Command]]:
    """Every verb and sub-verb: (``certpin bundle sign``, command)."""
    ctx = click.Context(cli, info_name="certpin")
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            for sub in sorted(command.commands):
                yield f"certpin {name} {sub}", command.commands[sub]
        else:
            yield f"certpin {name}", command


COMMANDS = dict(_commands())


def _visible_options(command: click.Command) -> dict[str, click.Option]:
    return {
        name: param
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for name in param.opts + param.secondary_opts
    }


def test_every_verb_is_a_verb():
    assert COMMANDS
    for path, command in COMMANDS.items():
        assert isinstance(command, Verb), path


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_shared_names_have_one_meaning(path: str):
    options = _visible_options(COMMANDS[path])
    if "--json" in options:
        assert options["--json"].is_flag and options["--json"].name == "as_json"
        assert options["--json"].help == "Print JSON instead of text."
    if "--connect" in options:  # a server to connect to, never a flag
        assert not options["--connect"].is_flag and options["--connect"].metavar == "HOST[:PORT]"
    if "--cafile" in options:
        cafile = options["--cafile"]
        assert isinstance(cafile.type, click.Path) and cafile.type.exists
    if "--timeout" in options:
        timeout = options["--timeout"]
        assert isinstance(timeout.type, click.FloatRange) and timeout.type.min == 0
        assert timeout.type.min_open
    if "--output" in options or "-o" in options:
        assert options["-o"] is options["--output"]
    if "--policy" in options:
        assert options["--policy"].name == "policy_file" and options["--policy"].metavar == "FILE"
    if "--format" in options:  # a platform format of docs/formats.md, nothing else
        assert path in {"certpin export", "certpin import"}
    assert "--out" not in options


def test_shared_options_are_where_the_docs_say():
    """Every verb that has a result worth a script has --json; the output file is -o."""
    with_json = {p for p, c in COMMANDS.items() if "--json" in _visible_options(c)}
    assert {
        "certpin pin",
        "certpin check",
        "certpin keygen",
        "certpin lint",
        "certpin diff",
        "certpin inventory",
        "certpin rotate plan",
        "certpin monitor",
        "certpin bundle verify",
        "certpin tofu list",
        "certpin ct watch",
        "certpin ct hook",
    } == with_json
    with_output = {p for p, c in COMMANDS.items() if "--output" in _visible_options(c)}
    assert {
        "certpin keygen",
        "certpin inventory",
        "certpin rotate next",
        "certpin export",
        "certpin import",
        "certpin bundle sign",
        "certpin bundle kill-switch",
    } == with_output


def test_every_visible_option_is_in_the_docs():
    """docs/cli.md names every option of every verb it documents itself (pin, check) and lists
    the shared ones; the verb references elsewhere are checked by their own docs."""
    text = DOCS.read_text(encoding="utf-8")
    for path in ("certpin pin", "certpin check"):
        for name in _visible_options(COMMANDS[path]):
            if name not in ("-h", "--help"):
                assert f"`{name}" in text, (path, name)


# -- deprecated spellings ----------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _deprecated(err: str) -> list[str]:
    return [line for line in err.splitlines() if "deprecated" in line]


def test_keygen_out_still_works_and_warns(capsys, tmp_path: Path):
    code, out, err = _run(capsys, "keygen", "--out", tmp_path / "old", "--type", "ed25519")
    assert code == 0, err
    assert (tmp_path / "old" / "pin.txt").read_text().strip() == out.strip()
    assert _deprecated(err) == [
        "certpin: warning: --out is deprecated in `certpin keygen`: use -o/--output"
    ]
    code, out, err = _run(capsys, "keygen", "-o", tmp_path / "new", "--type", "ed25519")
    assert code == 0 and (tmp_path / "new" / "pin.txt").exists() and _deprecated(err) == []
    code, out, err = _run(capsys, "keygen", "--output", tmp_path / "long", "--type", "ed25519")
    assert code == 0 and (tmp_path / "long" / "pin.txt").exists() and _deprecated(err) == []


def test_keygen_needs_an_output_under_either_spelling(capsys, tmp_path: Path):
    code, _out, err = _run(capsys, "keygen", "--type", "ed25519")
    assert code == 2 and "Missing option '-o' / '--output'" in err
    assert list(tmp_path.iterdir()) == []


def test_new_spelling_wins_when_both_are_given(capsys, tmp_path: Path):
    code, _out, err = _run(
        capsys, "keygen", "--out", tmp_path / "old", "-o", tmp_path / "new", "--type", "ed25519"
    )
    assert code == 0, err
    assert (tmp_path / "new" / "pin.txt").exists() and not (tmp_path / "old").exists()
    assert len(_deprecated(err)) == 1


def _wildcard_policy(tmp_path: Path) -> Path:
    """A `*.` key: with --live it is skipped with a note (no connection is made)."""
    pins = [str(Pin(os.urandom(32))), str(Pin(os.urandom(32)))]
    path = tmp_path / "pins.json"
    path.write_text(json.dumps({"domains": {"*.example.com": {"pins": pins}}}))
    return path


def test_lint_connect_flag_is_live(capsys, tmp_path: Path):
    policy = _wildcard_policy(tmp_path)
    code, new, err = _run(capsys, "lint", policy, "--json", "--live")
    assert code == 0 and _deprecated(err) == []
    assert "CP208" in new  # the skipped key: --live was taken into account
    code, old, err = _run(capsys, "lint", policy, "--json", "--connect")
    assert code == 0 and old == new
    assert _deprecated(err) == [
        "certpin: warning: --connect is deprecated in `certpin lint`: use --live"
    ]
    code, without, _err = _run(capsys, "lint", policy, "--json")
    assert code == 0 and "CP208" not in without  # the twin: without --live, no note


def test_rotate_next_connect_flag_is_live(capsys, tmp_path: Path):
    policy = _wildcard_policy(tmp_path)
    pin = str(Pin(os.urandom(32)))
    base = ["rotate", "next", policy, "--add-pin", f"{pin}:*.example.com"]
    code, _out, err = _run(capsys, *base)
    assert code == 2 and "give --live, --address or --chain" in err
    code, new_out, new_err = _run(capsys, *base, "--live")
    assert code == 1 and "refusing to write version" in new_err and _deprecated(new_err) == []
    code, old_out, old_err = _run(capsys, *base, "--connect")
    assert code == 1 and old_out == new_out
    assert _deprecated(old_err) == [
        "certpin: warning: --connect is deprecated in `certpin rotate next`: use --live"
    ]
    assert old_err.replace(_deprecated(old_err)[0] + "\n", "") == new_err


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["--format", "json"], ["--json"]),
        (["--format", "html"], ["--html"]),
        (["--format", "md"], []),
    ],
)
def test_inventory_format_is_json_or_html(capsys, tmp_path: Path, old: list[str], new: list[str]):
    policy = _wildcard_policy(tmp_path)
    now = ["--now", "2030-01-01"]  # the document says when it was made: the same for both
    code, new_out, err = _run(capsys, "inventory", policy, *now, *new)
    assert code == 0 and _deprecated(err) == []
    code, old_out, err = _run(capsys, "inventory", policy, *now, *old)
    assert code == 0 and old_out == new_out
    assert _deprecated(err) == [
        "certpin: warning: --format is deprecated in `certpin inventory`: use --json or --html "
        "(Markdown is the default)"
    ]
    if new == ["--json"]:
        json.loads(new_out)
    elif new == ["--html"]:
        assert new_out.lstrip().lower().startswith("<!doctype html>")
    else:
        assert new_out.startswith("#")


def test_inventory_json_and_html_exclude_each_other(capsys, tmp_path: Path):
    code, out, err = _run(capsys, "inventory", _wildcard_policy(tmp_path), "--json", "--html")
    assert code == 2 and out == "" and "--json or --html, not both" in err


def test_hidden_spellings_are_not_in_help(capsys):
    for argv, hidden in (
        (["keygen", "--help"], "--out"),
        (["lint", "--help"], "--connect"),
        (["inventory", "--help"], "--format"),
        (["rotate", "next", "--help"], "--connect"),
        (["bundle", "sign", "--help"], "--out"),
        (["bundle", "kill-switch", "--help"], "--out"),
    ):
        code, out, _err = _run(capsys, *argv)
        assert code == 0 and not re.search(rf"{hidden}\b", out), argv
        assert "--output" in out or "--live" in out or "--json" in out


def test_bundle_sign_out_still_works_and_warns(capsys, tmp_path: Path):
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    assert main(["bundle", "keygen", "--key", str(key), "--pub", str(pub), "--alg", "Ed25519"]) == 0
    pins = [str(Pin(os.urandom(32))), str(Pin(os.urandom(32)))]
    policy = tmp_path / "pins.json"
    policy.write_text(json.dumps({"domains": {"api.example.com": {"pins": pins}}}))
    capsys.readouterr()
    sign = ["bundle", "sign", policy, "--key", key, "--version", "1", "--expires", "7d"]
    for verb, extra in (
        (sign, []),
        (
            ["bundle", "kill-switch", policy, "--key", key, "--version", "2", "--expires", "7d"],
            ["--all", "--until", "1d", "--reason", "test"],
        ),
    ):
        path = f"certpin {verb[0]} {verb[1]}"
        code, _out, err = _run(capsys, *verb, *extra, "--out", tmp_path / "old.jws")
        assert code == 0, err
        assert _deprecated(err) == [
            f"certpin: warning: --out is deprecated in `{path}`: use -o/--output"
        ]
        code, _out, err = _run(capsys, *verb, *extra, "-o", tmp_path / "new.jws")
        assert code == 0 and _deprecated(err) == []
        for name in ("old.jws", "new.jws"):
            token = (tmp_path / name).read_text()
            assert main(["bundle", "verify", str(tmp_path / name), "--trust", str(pub)]) == 0
            assert token.count(".") == 2
        capsys.readouterr()


# -- exit codes ----------------------------------------------------------------------------------


def test_exit_codes_are_the_documented_table():
    """docs/cli.md holds the one exit-code table; its codes and names are `ExitCode`."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| *(\d+) \| `([A-Z_]+)` \|", section, re.MULTILINE)
    assert rows == [(str(int(code)), code.name) for code in ExitCode]


def test_exit_code_of_each_kind_of_failure(capsys, tmp_path: Path):
    assert main(["--version"]) == ExitCode.OK
    assert main(["pin", "--bogus"]) == ExitCode.USAGE
    assert main(["pin", str(tmp_path / "missing.pem")]) == ExitCode.USAGE
    policy = _wildcard_policy(tmp_path)
    assert main(["lint", str(policy), "--strict"]) == ExitCode.FAILED  # CP103 warning
    with socket.socket() as sock:  # a port nothing listens on: refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["pin", "--connect", f"127.0.0.1:{port}", "--timeout", "2"]) == (
        ExitCode.CONNECTION
    )
    capsys.readouterr()
