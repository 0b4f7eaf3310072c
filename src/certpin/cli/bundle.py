"""``certpin bundle …`` (signed pin bundles) and ``certpin tofu …`` (trust-on-first-use store).

Exit codes: 0 success; 1 ``bundle verify`` rejected the bundle, or ``bundle sign`` refused a
policy that would lock out a live host (without ``--force``), or ``tofu forget`` found nothing;
2 usage or input error; 3 connection/TLS failure. Reference: docs/dynamic.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import click

from certpin.cli.main import EXIT_MISMATCH, EXIT_OK, _error, parse_target

__all__ = ["bundle_group", "tofu_group"]

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


def _write_out(token: str, out: str | None) -> None:
    if out is None:
        click.echo(token)
        return
    from certpin._io.atomic import atomic_write

    atomic_write(Path(out), token.encode("ascii") + b"\n")
    click.echo(f"wrote {out}", err=True)


@click.group("bundle")
def bundle_group() -> None:
    """Signed pin bundles: keys, signing, kill switch, verification, static serving."""


@bundle_group.command("keygen")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Private key PEM to write (mode 0600).",
)
@click.option(
    "--pub",
    "pub_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Public key PEM to write.",
)
@click.option("--alg", type=_ALGS, default="ES256", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def keygen(key_path: str, pub_path: str, alg: str, force: bool) -> None:
    """Create a bundle signing key pair; prints its kid (RFC 7638 thumbprint)."""
    from certpin._io.atomic import atomic_write
    from certpin.dynamic.jws import FileSigner, generate_private_key

    for path in (key_path, pub_path):
        if Path(path).exists() and not force:
            raise click.BadParameter(f"{path} exists (use --force to overwrite)")
    signer = FileSigner(generate_private_key(alg))
    atomic_write(Path(key_path), signer.private_pem(), mode=0o600)
    atomic_write(Path(pub_path), signer.public_pem())
    click.echo(f"{signer.alg} kid {signer.kid}")


def _sign_options(func: Any) -> Any:
    for decorator in reversed(
        [
            click.argument("policy_file", type=click.Path(exists=True, dir_okay=False)),
            click.option(
                "--key",
                "key_path",
                required=True,
                type=click.Path(exists=True, dir_okay=False),
                help="Signing key (PEM).",
            ),
            click.option(
                "--version",
                "version",
                required=True,
                type=click.IntRange(min=0),
                help="Bundle version (monotonic).",
            ),
            click.option(
                "--expires", required=True, help="Bundle expiry: date, ISO time, or duration (30d)."
            ),
            click.option(
                "--out", type=click.Path(dir_okay=False), help="Write here (default: stdout)."
            ),
            click.option(
                "--add-key",
                "add_keys",
                multiple=True,
                type=click.Path(exists=True, dir_okay=False),
                help="Public key to announce as trusted (repeatable).",
            ),
            click.option(
                "--retire-kid", "retire_kids", multiple=True, help="kid to retire (repeatable)."
            ),
        ]
    ):
        func = decorator(func)
    return func


def _load_policy(path: str) -> Any:
    from certpin.core.policy import Policy

    return Policy.from_file(path)


@bundle_group.command("sign")
@_sign_options
@click.option(
    "--rollout",
    "rollout_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Next policy for a share of clients.",
)
@click.option("--rollout-id", help="Cohort id of the rollout (stable across bundles).")
@click.option("--rollout-percent", type=click.FloatRange(0, 100), help="Share of clients, 0-100.")
@click.option(
    "--connect",
    "targets",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Pre-flight: check the policy against this host's live verified chain (repeatable).",
)
@click.option(
    "--chain",
    "chain_specs",
    multiple=True,
    metavar="DOMAIN=FILE",
    help="Pre-flight: check the policy against DOMAIN's chain in FILE (PEM, leaf first), "
    "verified against --cafile (repeatable).",
)
@click.option(
    "--cafile",
    type=click.Path(exists=True, dir_okay=False),
    help="CA file for --connect and --chain (default: the system CA file).",
)
@click.option("--force", is_flag=True, help="Sign even if pre-flight finds a lock-out.")
def sign(
    policy_file: str,
    key_path: str,
    version: int,
    expires: str,
    out: str | None,
    add_keys: tuple[str, ...],
    retire_kids: tuple[str, ...],
    rollout_file: str | None,
    rollout_id: str | None,
    rollout_percent: float | None,
    targets: tuple[str, ...],
    chain_specs: tuple[str, ...],
    cafile: str | None,
    force: bool,
) -> int:
    """Sign POLICY_FILE into a bundle (compact JWS)."""
    policy = _load_policy(policy_file)
    rollout = None
    if rollout_file is not None:
        if rollout_id is None or rollout_percent is None:
            raise click.BadParameter("--rollout needs --rollout-id and --rollout-percent")
        rollout = {
            "id": rollout_id,
            "percent": rollout_percent,
            "policy": _load_policy(rollout_file),
        }
    policies = [policy] + ([rollout["policy"]] if rollout else [])
    if (targets or chain_specs) and not _preflight(policies, targets, chain_specs, cafile):
        if not force:
            _error("refusing to sign a bundle that would lock out a live host (use --force)")
            return EXIT_MISMATCH
        click.echo("pre-flight found a lock-out; signing anyway (--force)", err=True)
    return _sign(policy, key_path, version, expires, out, add_keys, retire_kids, rollout=rollout)


def _preflight(
    policies: list[Any], targets: tuple[str, ...], chain_specs: tuple[str, ...], cafile: str | None
) -> bool:
    """Run every policy (the bundle's and the rollout's) against every verified chain: the
    live ones (``--connect``) and the files (``--chain DOMAIN=FILE``, verified by
    `certpin.lifecycle.chains` as lint and rotate do). True when no policy blocks any chain."""
    from certpin._errors import ConfigurationError
    from certpin.core.verdict import verdict
    from certpin.lifecycle.chains import chain_for_file, parse_chain_specs
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
    for target in targets:
        host, port = parse_target(target)
        checks.append(
            (host, f"connect {host}:{port}", fetch_chain(host, port, cafile=cafile).verified)
        )
    ok = True
    for host, origin, chain in checks:
        for policy in policies:
            result = verdict(host, chain, policy, now)
            click.echo(
                f"pre-flight {host} ({origin}) against {policy.source}: {result.status.value}",
                err=True,
            )
            if not result.allowed:
                click.echo(result.message(), err=True)
                ok = False
    return ok


def _sign(
    policy: Any,
    key_path: str,
    version: int,
    expires: str,
    out: str | None,
    add_keys: tuple[str, ...],
    retire_kids: tuple[str, ...],
    **extra: Any,
) -> int:
    from certpin.dynamic.bundle import sign_bundle
    from certpin.dynamic.jws import FileSigner, TrustedKey

    signer = FileSigner.from_file(key_path)
    token = sign_bundle(
        policy,
        signer,
        version=version,
        expires=_when(expires, "--expires"),
        add_keys=[TrustedKey.from_file(p) for p in add_keys],
        retire_keys=retire_kids,
        **extra,
    )
    _write_out(token, out)
    return EXIT_OK


@bundle_group.command("kill-switch")
@_sign_options
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
    policy_file: str,
    key_path: str,
    version: int,
    expires: str,
    out: str | None,
    add_keys: tuple[str, ...],
    retire_kids: tuple[str, ...],
    domains: tuple[str, ...],
    all_domains: bool,
    until: str,
    reason: str,
) -> int:
    """Sign POLICY_FILE into a bundle that suspends pinning for some domains, until a time."""
    if bool(domains) == all_domains:
        raise click.BadParameter("give --domain (repeatable) or --all, not both")
    switch = {
        "domains": "*" if all_domains else list(domains),
        "until": _when(until, "--until"),
        "reason": reason,
    }
    policy = _load_policy(policy_file)
    return _sign(policy, key_path, version, expires, out, add_keys, retire_kids, kill_switch=switch)


@bundle_group.command("verify")
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
@click.option("--json", "as_json", is_flag=True)
def verify(bundle_file: str, trust: tuple[str, ...], min_version: int, as_json: bool) -> int:
    """Verify BUNDLE_FILE: exit 0 valid, 1 rejected (with the reason), 2 usage."""
    from certpin.dynamic.bundle import verify_bundle
    from certpin.dynamic.jws import BundleError, TrustedKey

    keys = [TrustedKey.from_file(p) for p in trust]
    data = Path(bundle_file).read_bytes()
    try:
        b = verify_bundle(data, keys, now=dt.datetime.now(dt.UTC), min_version=min_version)
    except BundleError as exc:
        if as_json:
            click.echo(json.dumps({"valid": False, "reason": exc.reason, "detail": exc.detail}))
        else:
            click.echo(f"REJECTED: {exc.detail} [{exc.reason}]")
        return EXIT_MISMATCH
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
        if info["rollout"]:
            click.echo(f"  rollout {b.rollout.id!r} to {b.rollout.percent}% of clients")  # type: ignore[union-attr]
    return EXIT_OK


@bundle_group.command("serve")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--bind", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8443, show_default=True)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve HTTPS with this certificate chain.",
)
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False))
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


# -- tofu -----------------------------------------------------------------------------------------


def _default_store() -> str:
    return os.environ.get("CERTPIN_KNOWN_PINS") or str(
        Path("~/.config/certpin/known_pins.json").expanduser()
    )


_file_option = click.option(
    "--file",
    "store",
    default=None,
    help="Known-pins file (default: $CERTPIN_KNOWN_PINS or ~/.config/certpin/known_pins.json).",
)


def _store(path: str | None) -> Any:
    from certpin.dynamic.tofu import KnownPins

    return KnownPins(path or _default_store())


def _target(text: str) -> tuple[str, int | None]:
    if text.endswith(":*"):
        return text[:-2], None
    return parse_target(text)


@click.group("tofu")
def tofu_group() -> None:
    """The trust-on-first-use store: list, accept a new key, forget a host."""


@tofu_group.command("list")
@_file_option
@click.option("--json", "as_json", is_flag=True)
def tofu_list(store: str | None, as_json: bool) -> None:
    """List recorded hosts and their pins."""
    entries = _store(store).entries()
    if as_json:
        click.echo(json.dumps({e.key: e.to_json() for e in entries}, indent=2))
        return
    for e in entries:
        pins = " ".join(str(p) for p in e.pins + e.issuer_pins)
        click.echo(f"{e.key}\t{e.first_seen}\t{pins}")


@tofu_group.command("accept")
@click.argument("target", metavar="HOST[:PORT]")
@_file_option
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0)
@click.option("--match-issuer", is_flag=True, help="Also record the issuing CA's pin.")
@click.option(
    "--connect-port",
    type=click.IntRange(1, 65535),
    default=443,
    show_default=True,
    help="Port to connect to for a HOST:* record (the asyncio key).",
)
def tofu_accept(
    target: str,
    store: str | None,
    cafile: str | None,
    timeout: float,
    match_issuer: bool,
    connect_port: int,
) -> None:
    """Connect to HOST (CA-verified) and record its current key, replacing the old record.

    HOST:* replaces the port-less record asyncio clients use (connecting to --connect-port).
    """
    from certpin.dynamic.tofu import KnownPins
    from certpin.tls.fetch import fetch_chain

    host, port = _target(target)
    chain = fetch_chain(host, port or connect_port, cafile=cafile, timeout=timeout).verified
    known = KnownPins(store or _default_store(), match_issuer=match_issuer)
    entry = known.record(host, port, tuple(chain), replace=True)
    click.echo(
        f"{entry.key}: now trusting {' '.join(str(p) for p in entry.pins + entry.issuer_pins)}"
    )


@tofu_group.command("forget")
@click.argument("target", metavar="HOST[:PORT]")
@_file_option
def tofu_forget(target: str, store: str | None) -> int:
    """Forget HOST's record: the next connection is a first use again."""
    host, port = _target(target)
    if not _store(store).forget(host, port):
        _error(f"{target}: not in the known-pins file")
        return EXIT_MISMATCH
    click.echo(f"forgot {target}")
    return EXIT_OK
