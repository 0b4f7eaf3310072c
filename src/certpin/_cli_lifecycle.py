"""CLI verbs for the pin lifecycle: ``keygen``, ``lint``, ``rotate plan``/``rotate next``,
``inventory`` (docs/rotation.md, docs/lint.md).

Thin functions over `certpin._keygen`, `certpin._lint`, `certpin._rotate`, `certpin._inventory`
and `certpin._chains`; exit codes follow docs/cli.md (0 ok, 1 findings/breakage/lock-out,
2 usage or input error, 3 connection failure where a single connection decides).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._cli import EXIT_MISMATCH, EXIT_OK, _read_password
from ._errors import ConfigurationError
from ._fetch import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from ._chains import DomainChain, SpareKey
    from ._policy import Policy

__all__ = ["inventory_command", "keygen_command", "lint_command", "rotate_group"]


# -- shared options ----------------------------------------------------------------------------


def _parse_now(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected an ISO 8601 date or date-time, e.g. 2026-01-31T12:00:00Z"
        ) from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _now_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--now",
        metavar="ISO",
        callback=_parse_now,
        help="Judge expiry dates at this time instead of now (chains are verified at now).",
    )(func)


def _chain_options(func: Callable[..., Any]) -> Callable[..., Any]:
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


def _key_options(func: Callable[..., Any]) -> Callable[..., Any]:
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


def _load_policy(path: str) -> Policy:
    from ._policy import Policy

    return Policy.from_file(path)


def _acquire(
    policy: Policy,
    chains: Sequence[str],
    addresses: Sequence[str],
    connect: bool,
    cafile: str | None,
    timeout: float,
) -> dict[str, DomainChain]:
    from ._chains import acquire_chains, parse_chain_specs

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
    from ._chains import load_spares

    if (password_file or password_env) and not keys:
        raise click.UsageError("--password-file/--password-env only apply to --key files")
    return load_spares(keys, _read_password(password_file, password_env))


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _note(message: str) -> None:
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
@click.option("--passphrase-file", metavar="FILE", help="Encrypt the key: first line of FILE.")
@click.option("--passphrase-env", metavar="VAR", help="Encrypt the key: this environment variable.")
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
    from ._keygen import generate

    if passphrase_file and passphrase_env:
        raise click.UsageError("give --passphrase-file or --passphrase-env, not both")
    secret: bytes | None = None
    if passphrase_file:
        try:
            lines = Path(passphrase_file).read_bytes().splitlines()
        except OSError as exc:
            raise click.BadParameter(
                f"{passphrase_file}: {exc.strerror or exc}", param_hint="--passphrase-file"
            ) from None
        secret = lines[0] if lines else b""
        if not secret:
            raise click.BadParameter(
                f"{passphrase_file}: the first line is empty", param_hint="--passphrase-file"
            )
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if not value:
            raise click.BadParameter(
                f"environment variable {passphrase_env} is not set or empty",
                param_hint="--passphrase-env",
            )
        secret = os.fsencode(value)
    result = generate(out_dir, key_type, common_name=cn, sans=sans, passphrase=secret)
    if as_json:
        _print_json(
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
        _note(f"wrote {result.key_path} ({result.key_type}, mode 0600, {state})")
        _note(f"wrote {result.csr_path} and {result.pin_path}")
        _note("add the pin to the policy as a backup pin; keep the key offline until rotation")
    return EXIT_OK


# -- lint --------------------------------------------------------------------------------------


@click.command("lint")
@click.argument("policy_file", metavar="POLICY")
@_chain_options
@_key_options
@_now_option
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
    from ._lint import exit_code, lint_policy

    policy = _load_policy(policy_file)
    spares = _spares(keys, password_file, password_env)
    domain_chains = _acquire(policy, chains, addresses, connect, cafile, timeout)
    findings = lint_policy(policy, domain_chains, spares, now)
    code = exit_code(findings, strict)
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    if as_json:
        _print_json(
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


# -- rotate ------------------------------------------------------------------------------------


@click.group("rotate")
def rotate_group() -> None:
    """Plan a key rotation across deployed policy versions; write the next version."""


@rotate_group.command("plan")
@click.option(
    "--deployed",
    "deployed_files",
    multiple=True,
    required=True,
    metavar="POLICY",
    help="A policy version clients still run (repeat for each).",
)
@click.option(
    "--next-chain",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="The chain you are about to serve (PEM, leaf first).",
)
@click.option(
    "--cafile",
    type=click.Path(exists=True, dir_okay=False),
    help="Trusted CA certificates (PEM) to verify the next chain (default: system).",
)
@click.option(
    "--share",
    "shares",
    multiple=True,
    metavar="VERSION=SHARE",
    help="Share of users on a version: 0.12 or 12% (repeatable).",
)
@_now_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def rotate_plan_command(
    deployed_files: tuple[str, ...],
    next_chain: str,
    cafile: str | None,
    shares: tuple[str, ...],
    now: dt.datetime | None,
    as_json: bool,
) -> int:
    """Would serving NEXT_CHAIN break a deployed policy version? Exit 1 if any would.

    Runs the verdict of the next (verified) chain for every name on its leaf against each
    deployed version, and prints the safe playbook.
    """
    import dataclasses

    from ._chains import verify_chain_file
    from ._rotate import DeployedVersion, parse_shares, plan_rotation, version_name

    versions = []
    for path in deployed_files:
        policy = _load_policy(path)
        versions.append(DeployedVersion(version_name(policy, path), path, policy))
    names = [v.name for v in versions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(
            f"--deployed: two files name the same version {', '.join(duplicates)}"
        )
    share_of = parse_shares(shares, versions)
    versions = [dataclasses.replace(v, share=share_of.get(v.name)) for v in versions]
    chain, leaf_names = verify_chain_file(next_chain, cafile)
    plan = plan_rotation(versions, chain, leaf_names, now)
    code = EXIT_MISMATCH if plan.breaking else EXIT_OK
    if as_json:
        doc = plan.to_json()
        doc["playbook"] = plan.playbook(next_chain)
        _print_json(doc)
        return code
    leaf = plan.certs[0]
    click.echo(f"next chain: {next_chain}: {leaf.subject} ({leaf.key_type}), pin {leaf.pin}")
    click.echo(f"names: {', '.join(plan.names)}")
    for outcome in plan.outcomes:
        v = outcome.version
        share = "" if v.share is None else f" ({v.share:.0%} of users)"
        state = "BREAKS" if outcome.breaks else "ok"
        if not outcome.breaks and outcome.reports:
            state = "ok (report-only rules would report)"
        click.echo(f"  {v.name}{share} [{v.path}]: {state}")
        for result in outcome.verdicts:
            mark = "ok   " if result.allowed else "BREAK"
            if result.status.value == "denied":
                mark = "deny "  # refused whatever the chain: not the rotation's doing
            click.echo(f"    {mark} {result.host}: {result.status.value}: {result.reason}")
    if plan.breaking:
        broken = plan.broken_share
        share_text = "" if broken is None else f", {broken:.0%} of users"
        names_text = ", ".join(o.version.name for o in plan.breaking)
        click.echo(f"would break: {names_text}{share_text}")
    else:
        click.echo("safe: no deployed version breaks")
    click.echo("playbook:")
    for line in plan.playbook(next_chain):
        click.echo(f"  {line}")
    return code


@rotate_group.command("next")
@click.argument("policy_file", metavar="POLICY")
@click.option("--add-pin", "add_pins", multiple=True, metavar="PIN[:DOMAIN]", help="Pin to add.")
@click.option(
    "--drop-pin", "drop_pins", multiple=True, metavar="PIN[:DOMAIN]", help="Pin to remove."
)
@click.option("--domain", metavar="DOMAIN", help="Policy key for pins given without :DOMAIN.")
@click.option(
    "-o", "--output", metavar="OUT", help="Write the next version here (default: stdout)."
)
@_chain_options
@_now_option
@click.option("--force", is_flag=True, help="Write the version even if it locks out a chain.")
def rotate_next_command(
    policy_file: str,
    add_pins: tuple[str, ...],
    drop_pins: tuple[str, ...],
    domain: str | None,
    output: str | None,
    connect: bool,
    chains: tuple[str, ...],
    addresses: tuple[str, ...],
    cafile: str | None,
    timeout: float,
    now: dt.datetime | None,
    force: bool,
) -> int:
    """Write POLICY's next version (version + 1) with pins added and dropped.

    The new version is linted and checked against every key's live verified chain
    (--connect/--address, or --chain); a version that locks one out is refused (exit 1) unless
    --force. OUT is never overwritten: clients still run the previous version.
    """
    from ._lint import lint_policy
    from ._rotate import lockouts, next_version, parse_pin_spec
    from ._toml import dump_policy

    if not add_pins and not drop_pins:
        raise click.UsageError("give at least one --add-pin or --drop-pin")
    if not (connect or chains or addresses):
        raise click.UsageError(
            "give --connect, --address or --chain: the next version is checked against the "
            "live chains"
        )
    if output is not None and Path(output).exists():
        raise click.BadParameter(
            f"{output} exists; the previous versions stay as they are deployed",
            param_hint="--output",
        )
    policy = _load_policy(policy_file)
    add = [parse_pin_spec(p, "--add-pin") for p in add_pins]
    drop = [parse_pin_spec(p, "--drop-pin") for p in drop_pins]
    new = next_version(policy, add, drop, domain)
    domain_chains = _acquire(new, chains, addresses, connect, cafile, timeout)
    for chain in domain_chains.values():
        if chain.error:
            _note(f"cannot check {chain.key}: {chain.error}")
        elif chain.note:
            _note(f"not checked: {chain.note}")
    findings = lint_policy(new, domain_chains, (), now)
    for f in findings:
        if f.rule != "CP201":
            _note(f"lint {f.rule} {f.severity} [{f.domain}] {f.name}: {f.message}")
    failures = lockouts(new, domain_chains, now)
    for result in failures:
        _note(f"version {new.version} would lock out {result.host}:\n{result.message()}")
    unchecked = [c.key for c in domain_chains.values() if not c.available]
    if failures and not force:
        _note(f"refusing to write version {new.version} (use --force to write it anyway)")
        return EXIT_MISMATCH
    if any(c.error for c in domain_chains.values()) and not force:
        _note(f"refusing to write version {new.version}: a live chain could not be checked")
        return EXIT_MISMATCH
    changes = [f"added {p}" + (f" for {d}" if d else "") for p, d in add]
    changes += [f"dropped {p}" + (f" for {d}" if d else "") for p, d in drop]
    header = f"version {new.version}, from {policy_file} (version {policy.version}): " + (
        "; ".join(changes)
    )
    if unchecked:
        header += f"\nnot checked against a live chain: {', '.join(unchecked)}"
    text = dump_policy(new, header=header, pin_comments=_pin_comments(new, domain_chains, now))
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            with open(output, "x", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise click.BadParameter(
                f"{output}: {exc.strerror or exc}", param_hint="--output"
            ) from None
        _note(f"wrote version {new.version} to {output}")
    return EXIT_OK


def _pin_comments(
    policy: Policy, chains: dict[str, DomainChain], now: dt.datetime | None
) -> dict[str, str]:
    from ._chains import classify_pins, describe_chain

    when = now or dt.datetime.now(dt.UTC)
    notes: dict[str, str] = {}
    for key, rule in policy.domains.items():
        chain = chains.get(key)
        if chain is None or not chain.available:
            continue
        for info in classify_pins(rule, describe_chain(chain.chain), (), when):
            if info.certs:
                cert = info.certs[0]
                notes.setdefault(str(info.pin), f"{cert.role}: {cert.subject}")
            else:
                notes.setdefault(str(info.pin), "backup (not in the live chain)")
    return notes


# -- inventory ---------------------------------------------------------------------------------


@click.command("inventory")
@click.argument("policy_file", metavar="POLICY")
@_chain_options
@_key_options
@_now_option
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
    from ._inventory import build_inventory, render

    policy = _load_policy(policy_file)
    spares = _spares(keys, password_file, password_env)
    domain_chains = _acquire(policy, chains, addresses, connect, cafile, timeout)
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
