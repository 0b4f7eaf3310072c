"""``certpin bundle …``: signed pin bundles and the signed kill switch (docs/dynamic.md).

Thin functions over `certpin.dynamic.bundle` and `certpin.dynamic.jws`. Exit codes (`ExitCode`):
0 success; 1 ``bundle verify`` rejected the bundle, or ``bundle sign`` refused a policy that would
lock out a live host (without ``--force``); 2 usage or input error; 3 connection/TLS failure.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.options import (
    Decorator,
    Verb,
    apply_options,
    cafile_option,
    chain_option,
    connect_option,
    json_option,
    output_option,
    port_option,
    tls_server_options,
)
from certpin.cli.output import error

if TYPE_CHECKING:
    from certpin.core.policy import Policy

__all__ = ["bundle_group"]

_ALGS = click.Choice(["ES256", "Ed25519"])


def _when(value: str, what: str) -> dt.datetime:
    """A date (00:00Z), an ISO 8601 time (naive = UTC), or a duration from now: 90m, 12h, 7d."""
    m = re.fullmatch(r"(\d+)([mhd])", value)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return dt.datetime.now(dt.UTC) + dt.timedelta(**{unit: int(m.group(1))})
    try:
        if len(value) == 10:
            d = dt.date.fromisoformat(value)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC)
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected YYYY-MM-DD, an ISO 8601 time, or a duration like 7d",
            param_hint=what,
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _pem_to_write(flag: str, dest: str, help: str) -> Decorator:
    return click.option(flag, dest, required=True, type=click.Path(dir_okay=False), help=help)


@click.group("bundle")
def bundle_group() -> None:
    """Signed pin bundles: keys, signing, kill switch, verification, static serving."""


@bundle_group.command("keygen", cls=Verb)
@_pem_to_write("--key", "key_path", "Private key PEM to write (mode 0600).")
@_pem_to_write("--pub", "pub_path", "Public key PEM to write.")
@click.option("--alg", type=_ALGS, default="ES256", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def keygen(key_path: str, pub_path: str, alg: str, force: bool) -> None:
    """Create a bundle signing key pair; prints its kid (RFC 7638 thumbprint)."""
    from certpin._io.atomic import atomic_write
    from certpin.dynamic import FileSigner
    from certpin.dynamic.jws import generate_private_key

    for path in (key_path, pub_path):
        if Path(path).exists() and not force:
            raise click.BadParameter(f"{path} exists (use --force to overwrite)")
    signer = FileSigner(generate_private_key(alg))
    atomic_write(Path(key_path), signer.private_pem(), mode=0o600)
    atomic_write(Path(pub_path), signer.public_pem())
    click.echo(f"{signer.alg} kid {signer.kid}")


# -- sign and kill-switch -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signing:
    """What ``bundle sign`` and ``bundle kill-switch`` both take: the policy, the key, the
    bundle's version and expiry, where to write, and the signing keys to announce or retire."""

    policy_file: str
    key_path: str
    version: int
    expires: str
    output: str | None
    add_keys: tuple[str, ...]
    retire_kids: tuple[str, ...]

    def sign(self, policy: Policy, **extra: Any) -> ExitCode:
        """Sign `policy` into a bundle (compact JWS) and write it."""
        from certpin._io.atomic import atomic_write
        from certpin.dynamic import FileSigner, TrustedKey, sign_bundle

        token = sign_bundle(
            policy,
            FileSigner.from_file(self.key_path),
            version=self.version,
            expires=_when(self.expires, "--expires"),
            add_keys=[TrustedKey.from_file(p) for p in self.add_keys],
            retire_keys=self.retire_kids,
            **extra,
        )
        if self.output is None or self.output == "-":
            click.echo(token)
        else:
            atomic_write(Path(self.output), token.encode("ascii") + b"\n")
            click.echo(f"wrote {self.output}", err=True)
        return ExitCode.OK


def _signing_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of `_Signing` -> ``signing: _Signing``."""

    @functools.wraps(func)
    def collect(
        *,
        policy_file: str,
        key_path: str,
        version: int,
        expires: str,
        output: str | None,
        add_keys: tuple[str, ...],
        retire_kids: tuple[str, ...],
        **rest: Any,
    ) -> Any:
        signing = _Signing(policy_file, key_path, version, expires, output, add_keys, retire_kids)
        return func(signing=signing, **rest)

    existing = click.Path(exists=True, dir_okay=False)
    return apply_options(
        collect,
        [
            click.argument("policy_file", type=existing),
            click.option(
                "--key", "key_path", required=True, type=existing, help="Signing key (PEM)."
            ),
            click.option(
                "--version",
                required=True,
                type=click.IntRange(min=0),
                help="Bundle version (monotonic).",
            ),
            click.option(
                "--expires", required=True, help="Bundle expiry: date, ISO time, or duration (30d)."
            ),
            output_option(
                "Write here (default: stdout).", type=click.Path(dir_okay=False), old_out=True
            ),
            click.option(
                "--add-key",
                "add_keys",
                multiple=True,
                type=existing,
                help="Public key to announce as trusted (repeatable).",
            ),
            click.option(
                "--retire-kid", "retire_kids", multiple=True, help="kid to retire (repeatable)."
            ),
        ],
    )


@bundle_group.command("sign", cls=Verb)
@_signing_options
@click.option(
    "--rollout",
    "rollout_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Next policy for a share of clients.",
)
@click.option("--rollout-id", help="Cohort id of the rollout (stable across bundles).")
@click.option("--rollout-percent", type=click.FloatRange(0, 100), help="Share of clients, 0-100.")
@connect_option(
    multiple=True,
    help="Pre-flight: check the policy against this host's live verified chain (repeatable).",
)
@chain_option(
    "Pre-flight: check the policy against DOMAIN's chain in FILE (PEM, leaf first), verified "
    "against --cafile (repeatable)."
)
@cafile_option("CA file for --connect and --chain (default: the system CA file).")
@click.option("--force", is_flag=True, help="Sign even if pre-flight finds a lock-out.")
def sign(
    signing: _Signing,
    rollout_file: str | None,
    rollout_id: str | None,
    rollout_percent: float | None,
    connect: tuple[tuple[str, int], ...],
    chains: tuple[str, ...],
    cafile: str | None,
    force: bool,
) -> int:
    """Sign POLICY_FILE into a bundle (compact JWS)."""
    from certpin.core.policy import Policy

    policy = Policy.from_file(signing.policy_file)
    rollout = None
    if rollout_file is not None:
        if rollout_id is None or rollout_percent is None:
            raise click.BadParameter("--rollout needs --rollout-id and --rollout-percent")
        rollout = {
            "id": rollout_id,
            "percent": rollout_percent,
            "policy": Policy.from_file(rollout_file),
        }
    policies = [policy] + ([rollout["policy"]] if rollout else [])
    if (connect or chains) and not _preflight(policies, connect, chains, cafile):
        if not force:
            error("refusing to sign a bundle that would lock out a live host (use --force)")
            return ExitCode.FAILED
        click.echo("pre-flight found a lock-out; signing anyway (--force)", err=True)
    return signing.sign(policy, rollout=rollout)


def _preflight(
    policies: Sequence[Any],
    targets: Sequence[tuple[str, int]],
    chain_specs: Sequence[str],
    cafile: str | None,
) -> bool:
    """Run every policy (the bundle's and the rollout's) against every verified chain: the
    live ones (``--connect``) and the files (``--chain DOMAIN=FILE``, verified by
    `certpin.lifecycle.chains` as lint and rotate do). True when no policy blocks any chain."""
    from certpin._errors import ConfigurationError
    from certpin.lifecycle.chains import chain_for_file, parse_chain_specs, verdict_for_name
    from certpin.tls.fetch import fetch_chain

    now = dt.datetime.now(dt.UTC)
    checks: list[tuple[str, str, tuple[bytes, ...]]] = []  # (verdict host, origin, chain)
    for key, path in parse_chain_specs(chain_specs).items():
        owner = next((p for p in policies if key in p.domains), None)
        if owner is None:
            sources = " or ".join(p.source for p in policies)
            raise ConfigurationError(f"--chain {key}=…: {key!r} is not a key of {sources}")
        if not Path(path).is_file():
            raise ConfigurationError(f"--chain {key}={path}: {path}: no such file")
        found = chain_for_file(key, path, cafile, owner, now)
        checks.append((found.host, found.origin, found.chain))
    for host, port in targets:
        checks.append(
            (host, f"connect {host}:{port}", fetch_chain(host, port, cafile=cafile).verified)
        )
    ok = True
    for host, origin, chain in checks:
        for policy in policies:
            # A wildcard key's chain file names "*.base": the verdict for any host under base.
            result = verdict_for_name(host, chain, policy, now)
            click.echo(
                f"pre-flight {host} ({origin}) against {policy.source}: {result.status.value}",
                err=True,
            )
            if not result.allowed:
                click.echo(result.message(), err=True)
                ok = False
    return ok


@bundle_group.command("kill-switch", cls=Verb)
@_signing_options
@click.option(
    "--domain", "domains", multiple=True, help="Policy key or host to stop pinning (repeatable)."
)
@click.option("--all", "all_domains", is_flag=True, help="Stop pinning every domain.")
@click.option(
    "--until",
    "until",
    required=True,
    help="End of the kill switch (≤ 30 days): date, ISO time, or duration (7d).",
)
@click.option("--reason", required=True, help="Why (logged by every affected client).")
def kill_switch(
    signing: _Signing, domains: tuple[str, ...], all_domains: bool, until: str, reason: str
) -> int:
    """Sign POLICY_FILE into a bundle that suspends pinning for some domains, until a time."""
    from certpin.core.policy import Policy

    if bool(domains) == all_domains:
        raise click.BadParameter("give --domain (repeatable) or --all, not both")
    switch = {
        "domains": "*" if all_domains else list(domains),
        "until": _when(until, "--until"),
        "reason": reason,
    }
    return signing.sign(Policy.from_file(signing.policy_file), kill_switch=switch)


# -- verify and serve -----------------------------------------------------------------------------


@bundle_group.command("verify", cls=Verb)
@click.argument("bundle_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--trust",
    "trust",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Trusted public key PEM (repeatable).",
)
@click.option("--min-version", type=click.IntRange(min=0), default=0)
@json_option
def verify(bundle_file: str, trust: tuple[str, ...], min_version: int, as_json: bool) -> int:
    """Verify BUNDLE_FILE: exit 0 valid, 1 rejected (with the reason), 2 usage."""
    from certpin.dynamic import BundleError, TrustedKey, verify_bundle

    keys = [TrustedKey.from_file(p) for p in trust]
    data = Path(bundle_file).read_bytes()
    try:
        b = verify_bundle(data, keys, now=dt.datetime.now(dt.UTC), min_version=min_version)
    except BundleError as exc:
        if as_json:
            click.echo(json.dumps({"valid": False, "reason": exc.reason, "detail": exc.detail}))
        else:
            click.echo(f"REJECTED: {exc.detail} [{exc.reason}]")
        return ExitCode.FAILED
    info: dict[str, Any] = {
        "valid": True,
        "kid": b.kid,
        "version": b.version,
        "issued_at": b.issued_at.isoformat(),
        "expires_at": b.expires_at.isoformat(),
        "domains": sorted(b.policy.domains),
        "kill_switch": None
        if b.kill_switch is None
        else {
            "domains": b.kill_switch.domains
            if isinstance(b.kill_switch.domains, str)
            else list(b.kill_switch.domains),
            "until": b.kill_switch.until.isoformat(),
            "reason": b.kill_switch.reason,
        },
        "rollout": None
        if b.rollout is None
        else {"id": b.rollout.id, "percent": b.rollout.percent},
        "add_keys": [k.kid for k in b.add_keys],
        "retire_keys": list(b.retire_keys),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"VALID: version {b.version}, signed by {b.kid}, expires {info['expires_at']}")
        click.echo(f"  {len(b.policy.domains)} domain(s): {', '.join(info['domains'])}")
        if info["kill_switch"]:
            ks = info["kill_switch"]
            click.echo(f"  KILL SWITCH for {ks['domains']} until {ks['until']}: {ks['reason']}")
        if b.rollout is not None:
            click.echo(f"  rollout {b.rollout.id!r} to {b.rollout.percent}% of clients")
    return ExitCode.OK


@bundle_group.command("serve", cls=Verb)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--bind", default="127.0.0.1", show_default=True)
@port_option("--port", 8443, any_port=True)
@tls_server_options
def serve(directory: str, bind: str, port: int, certfile: str | None, keyfile: str | None) -> None:
    """Serve DIRECTORY's files with ETag / If-None-Match (for tests and small deployments)."""
    from certpin.dynamic.serve import make_server

    server = make_server(directory, bind, port, certfile, keyfile)
    scheme = "https" if certfile else "http"
    click.echo(f"serving {directory} at {scheme}://{bind}:{server.server_address[1]}/", err=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
