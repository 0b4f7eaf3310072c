"""CLI verbs for the pin lifecycle: ``keygen``, ``lint``, ``inventory`` (docs/rotation.md,
docs/lint.md).

Thin functions over `certpin.lifecycle.keygen`, `certpin.lifecycle.lint`,
`certpin.lifecycle.inventory` and `certpin.lifecycle.chains`; the chain and key options are
`certpin.cli.options.chain_options` and `key_options`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.messages import explain
from certpin.cli.options import (
    Verb,
    deprecated_option,
    json_option,
    now_option,
    output_option,
    password_options,
    read_password,
)
from certpin.cli.output import note, print_json, write_output
from certpin.cli.sources import ChainSources, SpareKeys, chain_options, key_options

__all__ = ["inventory_command", "keygen_command", "lint_command"]


# -- keygen -------------------------------------------------------------------------------------


@click.command("keygen", cls=Verb, required_options=("output",))
@output_option("Directory for the three files (required).", metavar="DIR", old_out=True)
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
@password_options("the new key (encrypts it)", passphrase_names=True)
@json_option
def keygen_command(
    output: str,
    key_type: str,
    cn: str | None,
    sans: tuple[str, ...],
    password_file: str | None,
    password_env: str | None,
    as_json: bool,
) -> int:
    """Generate a spare key, its CSR and its pin, to pin the next key before it is used.

    Writes DIR/key.pem (mode 0600), DIR/csr.pem and DIR/pin.txt, never overwriting a file, and
    prints the pin.
    """
    from certpin.lifecycle.keygen import generate

    secret = read_password(password_file, password_env)
    if secret is not None and not secret:
        where = password_file or f"environment variable {password_env}"
        hint = "--password-file" if password_file else "--password-env"
        what = "the first line is empty" if password_file else "is empty"
        raise click.BadParameter(f"{where}: {what}", param_hint=hint)
    result = generate(output, key_type, common_name=cn, sans=sans, passphrase=secret)
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
    return ExitCode.OK


# -- lint ---------------------------------------------------------------------------------------


@click.command("lint", cls=Verb)
@click.argument("policy_file", metavar="POLICY")
@chain_options
@key_options
@now_option
@click.option("--strict", is_flag=True, help="Warnings fail the run too (exit 1).")
@json_option
def lint_command(
    policy_file: str,
    sources: ChainSources,
    spares: SpareKeys,
    now: dt.datetime | None,
    strict: bool,
    as_json: bool,
) -> int:
    """Find the policy mistakes that cause lock-outs or void the pins (rules: docs/lint.md).

    POLICY is a certpin policy, or any file `certpin import` reads (format detected from the
    content, an .apk or an .ipa included): it is imported, then linted.

    Chain rules (CP2xx) run on each key's *verified* chain, from --chain DOMAIN=FILE or
    --live. Exit 0 clean, 1 errors (or warnings with --strict), 2 bad input.
    """
    from certpin.cli.formats import load_input
    from certpin.cli.output import warn
    from certpin.lifecycle.lint import exit_code, lint_policy

    # A certpin policy, or what an import format, an .apk or an .ipa amounts to (detected):
    # the import's warnings are printed, then the policy is linted like any other.
    loaded = load_input(policy_file)
    policy = loaded.policy
    if not as_json:
        for line in loaded.warnings:
            warn(line)
    spare_keys = spares.load()
    domain_chains = sources.acquire(policy)
    findings = lint_policy(policy, domain_chains, spare_keys, now)
    code = ExitCode(exit_code(findings, strict))
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    if as_json:
        print_json(
            {
                "policy": policy_file,
                "format": loaded.fmt,
                "import_warnings": list(loaded.warnings),
                "findings": [f.to_json() for f in findings],
                "counts": counts,
                "strict": strict,
                "exit_code": int(code),
            }
        )
        return code
    for f in findings:
        message = explain(f.message, sources.cafile)
        click.echo(f"{policy_file}: {f.rule} {f.severity} [{f.domain}] {f.name}: {message}")
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


# -- inventory ----------------------------------------------------------------------------------


def _format(value: str | None) -> dict[str, Any]:
    """The deprecated ``--format md|html|json`` as the new flags (md: neither)."""
    return {"as_json": value == "json", "html": value == "html"}


@click.command("inventory", cls=Verb)
@click.argument("policy_file", metavar="POLICY")
@chain_options
@key_options
@now_option
@json_option
@click.option("--html", is_flag=True, help="One self-contained HTML page instead of Markdown.")
@deprecated_option(
    "--format",
    "--json or --html (Markdown is the default)",
    _format,
    type=click.Choice(["md", "html", "json"]),
)
@output_option()
@click.option(
    "--no-revocation",
    is_flag=True,
    help="With --live/--address: skip the revocation checks of the live chains.",
)
def inventory_command(
    policy_file: str,
    sources: ChainSources,
    spares: SpareKeys,
    now: dt.datetime | None,
    as_json: bool,
    html: bool,
    output: str | None,
    no_revocation: bool,
) -> int:
    """Document every pin: what it names, live or backup, expiry and the next rotation.

    Markdown by default; --json or --html for the other renderings. Live chains (--live,
    --address) get each certificate's revocation status (--no-revocation skips it).
    """
    from certpin.core.policy import Policy
    from certpin.lifecycle.inventory import build_inventory, render

    if as_json and html:
        raise click.UsageError("give --json or --html, not both")
    policy = Policy.from_file(policy_file)
    spare_keys = spares.load()
    domain_chains = sources.acquire(policy)
    fmt = "json" if as_json else "html" if html else "md"
    revocations = None
    if not no_revocation:
        from certpin.lifecycle.inventory import live_revocations

        # the answers must be valid now, whatever --now says about rotation dates
        revocations = live_revocations(domain_chains, dt.datetime.now(dt.UTC), sources.timeout)
    document = build_inventory(policy, domain_chains, spare_keys, now, revocations)
    write_output(render(document, fmt), output)
    return ExitCode.OK
