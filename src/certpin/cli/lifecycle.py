"""CLI verbs for the pin lifecycle: ``keygen``, ``lint``, ``inventory`` (docs/rotation.md,
docs/lint.md), and the options and helpers the lifecycle, rotate (`certpin.cli.rotate`),
monitor and export CLIs share (``--now``, the chain options, `load_policy`).

Thin functions over `certpin.lifecycle.keygen`, `certpin.lifecycle.lint`,
`certpin.lifecycle.inventory` and `certpin.lifecycle.chains`; exit codes follow docs/cli.md
(0 ok, 1 findings/breakage/lock-out, 2 usage or input error, 3 connection failure where a
single connection decides).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certpin.cli.main import EXIT_OK, _read_password
from certpin.tls.fetch import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from certpin.core.policy import Policy
    from certpin.lifecycle.chains import DomainChain, SpareKey

__all__ = [
    "acquire",
    "chain_options",
    "inventory_command",
    "keygen_command",
    "key_options",
    "lint_command",
    "load_policy",
    "note",
    "now_option",
    "parse_now",
    "print_json",
]


# -- shared options ----------------------------------------------------------------------------


def parse_now(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    """click callback for ``--now``-style options: `certpin.core.times.parse_iso`, as UTC."""
    from certpin.core.times import parse_iso

    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected an ISO 8601 date or date-time, e.g. 2026-01-31T12:00:00Z"
        ) from None


def now_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--now",
        metavar="ISO",
        callback=parse_now,
        help="Judge expiry dates at this time instead of now (chains are verified at now).",
    )(func)


def chain_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="With --connect: seconds per connection and handshake.",
        ),
        click.option(
            "--cafile",
            type=click.Path(exists=True, dir_okay=False),
            help="Trusted CA certificates (PEM) for --chain and --connect (default: system).",
        ),
        click.option(
            "--address",
            "addresses",
            multiple=True,
            metavar="DOMAIN=HOST:PORT",
            help="Where to connect for a policy key (SNI stays DOMAIN). Implies connecting "
            "for that key.",
        ),
        click.option(
            "--chain",
            "chains",
            multiple=True,
            metavar="DOMAIN=FILE",
            help="The chain a policy key serves: a PEM file, leaf first (repeatable).",
        ),
        click.option(
            "--connect",
            is_flag=True,
            help="Fetch every policy key's live verified chain (port 443, concurrently).",
        ),
    ]
    for option in options:
        func = option(func)
    return func


def key_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--password-env",
            metavar="VAR",
            help="Passphrase of encrypted --key private keys: this environment variable.",
        ),
        click.option(
            "--password-file",
            metavar="FILE",
            help="Passphrase of encrypted --key private keys: the first line of FILE.",
        ),
        click.option(
            "--key",
            "keys",
            multiple=True,
            type=click.Path(exists=True, dir_okay=False),
            metavar="FILE",
            help="A spare key, CSR or certificate the backup pins may name (repeatable).",
        ),
    ]
    for option in options:
        func = option(func)
    return func


def load_policy(path: str | None) -> Policy:
    """The policy in `path` (errors name the file and field), or an empty policy for None.

    The one policy loader of the lifecycle, rotate, monitor and export CLIs.
    """
    from certpin.core.policy import Policy

    return Policy({}) if path is None else Policy.from_file(path)


def acquire(
    policy: Policy,
    chains: Sequence[str],
    addresses: Sequence[str],
    connect: bool,
    cafile: str | None,
    timeout: float,
) -> dict[str, DomainChain]:
    from certpin.lifecycle.chains import acquire_chains, parse_chain_specs

    return acquire_chains(
        policy,
        chain_files=parse_chain_specs(chains, "--chain"),
        connect=connect,
        addresses=parse_chain_specs(addresses, "--address"),
        cafile=cafile,
        timeout=timeout,
    )


def _spares(
    keys: Sequence[str], password_file: str | None, password_env: str | None
) -> list[SpareKey]:
    from certpin.lifecycle.chains import load_spares

    if (password_file or password_env) and not keys:
        raise click.UsageError("--password-file/--password-env only apply to --key files")
    return load_spares(keys, _read_password(password_file, password_env))


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def note(message: str) -> None:
    click.echo(f"certpin: {message}", err=True)


# -- keygen ------------------------------------------------------------------------------------


@click.command("keygen")
@click.option(
    "--out", "out_dir", required=True, metavar="DIR", help="Directory for the three files."
)
@click.option(
    "--type",
    "key_type",
    type=click.Choice(["rsa2048", "rsa3072", "rsa4096", "p256", "p384", "ed25519"]),
    default="p256",
    show_default=True,
    help="Key algorithm and size.",
)
@click.option("--cn", metavar="NAME", help="CSR subject common name (default: the first --san).")
@click.option("--san", "sans", multiple=True, metavar="NAME", help="CSR SubjectAltName (repeat).")
@click.option(
    "--password-file",
    "--passphrase-file",
    "passphrase_file",
    metavar="FILE",
    help="Encrypt the key: the first line of FILE.",
)
@click.option(
    "--password-env",
    "--passphrase-env",
    "passphrase_env",
    metavar="VAR",
    help="Encrypt the key: this environment variable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def keygen_command(
    out_dir: str,
    key_type: str,
    cn: str | None,
    sans: tuple[str, ...],
    passphrase_file: str | None,
    passphrase_env: str | None,
    as_json: bool,
) -> int:
    """Generate a spare key, its CSR and its pin, to pin the next key before it is used.

    Writes DIR/key.pem (mode 0600), DIR/csr.pem and DIR/pin.txt, never overwriting a file, and
    prints the pin.
    """
    from certpin.lifecycle.keygen import generate

    secret = _read_password(passphrase_file, passphrase_env)
    if secret is not None and not secret:
        where = passphrase_file or f"environment variable {passphrase_env}"
        hint = "--password-file" if passphrase_file else "--password-env"
        what = "the first line is empty" if passphrase_file else "is empty"
        raise click.BadParameter(f"{where}: {what}", param_hint=hint)
    result = generate(out_dir, key_type, common_name=cn, sans=sans, passphrase=secret)
    if as_json:
        print_json(
            {
                "pin": str(result.pin),
                "key_type": result.key_type,
                "key": str(result.key_path),
                "csr": str(result.csr_path),
                "pin_file": str(result.pin_path),
                "encrypted": result.encrypted,
            }
        )
    else:
        click.echo(str(result.pin))
        state = "encrypted" if result.encrypted else "NOT encrypted"
        note(f"wrote {result.key_path} ({result.key_type}, mode 0600, {state})")
        note(f"wrote {result.csr_path} and {result.pin_path}")
        note("add the pin to the policy as a backup pin; keep the key offline until rotation")
    return EXIT_OK


# -- lint --------------------------------------------------------------------------------------


@click.command("lint")
@click.argument("policy_file", metavar="POLICY")
@chain_options
@key_options
@now_option
@click.option("--strict", is_flag=True, help="Warnings fail the run too (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def lint_command(
    policy_file: str,
    connect: bool,
    chains: tuple[str, ...],
    addresses: tuple[str, ...],
    cafile: str | None,
    timeout: float,
    keys: tuple[str, ...],
    password_file: str | None,
    password_env: str | None,
    now: dt.datetime | None,
    strict: bool,
    as_json: bool,
) -> int:
    """Find the policy mistakes that cause lock-outs or void the pins (rules: docs/lint.md).

    Chain rules (CP2xx) run on each key's *verified* chain, from --chain DOMAIN=FILE or
    --connect. Exit 0 clean, 1 errors (or warnings with --strict), 2 bad input.
    """
    from certpin.lifecycle.lint import exit_code, lint_policy

    policy = load_policy(policy_file)
    spares = _spares(keys, password_file, password_env)
    domain_chains = acquire(policy, chains, addresses, connect, cafile, timeout)
    findings = lint_policy(policy, domain_chains, spares, now)
    code = exit_code(findings, strict)
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    if as_json:
        print_json(
            {
                "policy": policy_file,
                "findings": [f.to_json() for f in findings],
                "counts": counts,
                "strict": strict,
                "exit_code": code,
            }
        )
        return code
    for f in findings:
        click.echo(f"{policy_file}: {f.rule} {f.severity} [{f.domain}] {f.name}: {f.message}")
        click.echo(f"    why: {f.why}")
        click.echo(f"    fix: {f.fix}")
    checked = sum(c.available for c in domain_chains.values())
    summary = ", ".join(f"{n} {s}{'' if n == 1 or s == 'info' else 's'}" for s, n in counts.items())
    rules = len(policy.domains)
    click.echo(
        f"{policy_file}: {summary} ({rules} rule{'' if rules == 1 else 's'}, "
        f"{checked} with a verified chain)"
    )
    return code


# -- inventory ---------------------------------------------------------------------------------


@click.command("inventory")
@click.argument("policy_file", metavar="POLICY")
@chain_options
@key_options
@now_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "json"]),
    default="md",
    show_default=True,
    help="Output format.",
)
@click.option("-o", "--output", metavar="FILE", help="Write here instead of stdout.")
def inventory_command(
    policy_file: str,
    connect: bool,
    chains: tuple[str, ...],
    addresses: tuple[str, ...],
    cafile: str | None,
    timeout: float,
    keys: tuple[str, ...],
    password_file: str | None,
    password_env: str | None,
    now: dt.datetime | None,
    fmt: str,
    output: str | None,
) -> int:
    """Document every pin: what it names, live or backup, expiry and the next rotation."""
    from certpin.lifecycle.inventory import build_inventory, render

    policy = load_policy(policy_file)
    spares = _spares(keys, password_file, password_env)
    domain_chains = acquire(policy, chains, addresses, connect, cafile, timeout)
    text = render(build_inventory(policy, domain_chains, spares, now), fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"{output}: {exc.strerror or exc}", param_hint="--output"
            ) from None
    return EXIT_OK
