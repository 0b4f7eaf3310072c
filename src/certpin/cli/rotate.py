"""``certpin rotate plan`` and ``certpin rotate next``: rotate keys without locking anyone out
(docs/rotation.md).

Thin functions over `certpin.lifecycle.rotate`, `certpin.lifecycle.lint` and
`certpin.lifecycle.chains`; the shared options come from `certpin.cli.options`. Exit codes
(`ExitCode`): 0 safe/written, 1 a deployed version breaks or the next version is refused, 2 usage
or input error.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import click

from certpin._errors import ConfigurationError
from certpin.cli.exitcode import ExitCode
from certpin.cli.messages import explain
from certpin.cli.options import (
    Verb,
    cafile_option,
    json_option,
    now_option,
    output_option,
)
from certpin.cli.output import note, print_json, write_output
from certpin.cli.sources import ChainSources, chain_options

if TYPE_CHECKING:
    from certpin.core.policy import Policy
    from certpin.lifecycle.chains import DomainChain

__all__ = ["rotate_group"]


@click.group("rotate")
def rotate_group() -> None:
    """Plan a key rotation across deployed policy versions; write the next version."""


@rotate_group.command("plan", cls=Verb)
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
@cafile_option("Trusted CA certificates (PEM) to verify the next chain (default: system).")
@click.option(
    "--share",
    "shares",
    multiple=True,
    metavar="VERSION=SHARE",
    help="Share of users on a version: 0.12 or 12% (repeatable).",
)
@now_option
@json_option
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

    from certpin.core.policy import Policy
    from certpin.lifecycle.chains import verify_chain_file
    from certpin.lifecycle.rotate import DeployedVersion, parse_shares, plan_rotation, version_name

    versions = []
    for path in deployed_files:
        policy = Policy.from_file(path)
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
    code = ExitCode.FAILED if plan.breaking else ExitCode.OK
    if as_json:
        doc = plan.to_json()
        doc["playbook"] = plan.playbook(next_chain)
        print_json(doc)
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


@rotate_group.command("next", cls=Verb)
@click.argument("policy_file", metavar="POLICY")
@click.option("--add-pin", "add_pins", multiple=True, metavar="PIN[:DOMAIN]", help="Pin to add.")
@click.option(
    "--drop-pin", "drop_pins", multiple=True, metavar="PIN[:DOMAIN]", help="Pin to remove."
)
@click.option("--domain", metavar="DOMAIN", help="Policy key for pins given without :DOMAIN.")
@output_option("Write the next version here (default: stdout).", metavar="OUT")
@chain_options
@now_option
@click.option("--force", is_flag=True, help="Write the version even if it locks out a chain.")
def rotate_next_command(
    policy_file: str,
    add_pins: tuple[str, ...],
    drop_pins: tuple[str, ...],
    domain: str | None,
    output: str | None,
    sources: ChainSources,
    now: dt.datetime | None,
    force: bool,
) -> int:
    """Write POLICY's next version (version + 1) with pins added and dropped.

    The new version is linted and checked against every key's live verified chain
    (--live/--address, or --chain). It is refused (exit 1) unless --force when it locks a
    live chain out, when lint finds an error, or when a key has no verified chain to check it
    against. OUT is never overwritten: clients still run the previous version.
    """
    from certpin.core.policy import Policy
    from certpin.core.toml import dump_policy
    from certpin.formats._common import one_line
    from certpin.lifecycle.lint import lint_policy
    from certpin.lifecycle.rotate import lockouts, next_version, parse_pin_spec

    if not add_pins and not drop_pins:
        raise click.UsageError("give at least one --add-pin or --drop-pin")
    if not sources.given:
        raise click.UsageError(
            "give --live, --address or --chain: the next version is checked against the live chains"
        )
    if output is not None and output != "-" and Path(output).exists():
        raise click.BadParameter(
            f"{output} exists; the previous versions stay as they are deployed",
            param_hint="--output",
        )
    policy = Policy.from_file(policy_file)
    add = [parse_pin_spec(p, "--add-pin") for p in add_pins]
    drop = [parse_pin_spec(p, "--drop-pin") for p in drop_pins]
    new = next_version(policy, add, drop, domain)
    domain_chains = sources.acquire(new)
    for chain in domain_chains.values():
        if chain.error:
            note(f"cannot check {chain.key}: {explain(chain.error, sources.cafile)}")
        elif chain.note:
            note(f"not checked: {chain.note}")
    findings = lint_policy(new, domain_chains, (), now)
    for f in findings:
        if f.rule != "CP201":  # lock-outs are reported below, with the verdict's message
            message = explain(f.message, sources.cafile)
            note(f"lint {f.rule} {f.severity} [{f.domain}] {f.name}: {message}")
    failures = lockouts(new, domain_chains, now)
    for result in failures:
        note(f"version {new.version} would lock out {result.host}:\n{result.message()}")
    unchecked = [c.key for c in domain_chains.values() if not c.available]
    errors = [f for f in findings if f.severity == "error" and f.rule != "CP201"]
    refusals = []
    if failures:
        refusals.append(f"it locks out {len(failures)} live chain(s)")
    if any(c.error for c in domain_chains.values()):
        refusals.append("a live chain could not be fetched")
    if errors:
        refusals.append(f"lint found {len(errors)} error(s) ({', '.join(f.rule for f in errors)})")
    if unchecked:
        refusals.append(
            f"{', '.join(unchecked)} ha{'s' if len(unchecked) == 1 else 've'} no verified chain to "
            "check it against (give --chain DOMAIN=FILE, --address DOMAIN=HOST:PORT or --live)"
        )
    if refusals:
        if not force:
            note(
                f"refusing to write version {new.version}: {'; '.join(refusals)} "
                "(--force writes it anyway)"
            )
            return ExitCode.FAILED
        note(f"--force: writing version {new.version} although {'; '.join(refusals)}")
    changes = [f"added {p}" + (f" for {d}" if d else "") for p, d in add]
    changes += [f"dropped {p}" + (f" for {d}" if d else "") for p, d in drop]
    header = [
        f"version {new.version}, from {policy_file} (version {policy.version}): "
        + "; ".join(changes)
    ]
    if unchecked:
        header.append(f"not checked against a live chain (--force): {', '.join(unchecked)}")
    text = dump_policy(
        new,
        header="\n".join(one_line(line) for line in header),
        pin_comments=_pin_comments(new, domain_chains, now),
    )
    write_output(text, output, exclusive=True)
    if output is not None and output != "-":
        note(f"wrote version {new.version} to {output}")
    return ExitCode.OK


def _pin_comments(
    policy: Policy, chains: dict[str, DomainChain], now: dt.datetime | None
) -> dict[str, str]:
    from certpin.formats._common import one_line
    from certpin.lifecycle.chains import classify_pins, describe_chain

    when = now or dt.datetime.now(dt.UTC)
    notes: dict[str, str] = {}
    for key, rule in policy.domains.items():
        chain = chains.get(key)
        if chain is None or not chain.available:
            continue
        for info in classify_pins(rule, describe_chain(chain.chain), (), when):
            if info.certs:
                cert = info.certs[0]
                # A subject is the server's text: it may hold a newline that would end the TOML
                # comment and inject keys into the policy.
                notes.setdefault(str(info.pin), one_line(f"{cert.role}: {cert.subject}"))
            else:
                notes.setdefault(str(info.pin), "backup (not in the live chain)")
    return notes
