"""The options ``lint``, ``inventory`` and ``rotate next`` share: where each policy key's verified
chain comes from (``--live``, ``--chain``, ``--address``, ``--cafile``, ``--timeout``) and the spare
keys the backup pins may name (``--key`` and its passphrase options).

Each group of options reaches the verb as one value (`ChainSources`, `SpareKeys`) whose method
does the library call, so the three verbs read the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from certpin.cli.options import (
    apply_options,
    cafile_option,
    chain_option,
    deprecated_option,
    password_options,
    read_password,
    timeout_option,
)

if TYPE_CHECKING:
    from certpin.core.policy import Policy
    from certpin.lifecycle.chains import DomainChain, SpareKey

__all__ = ["ChainSources", "SpareKeys", "chain_options", "key_options"]


# -- the verified chains of a policy's keys (lint, inventory, rotate next) ----------------------


@dataclass(frozen=True)
class ChainSources:
    """Where ``lint``, ``inventory`` and ``rotate next`` take each policy key's chain from."""

    live: bool
    chains: tuple[str, ...]
    addresses: tuple[str, ...]
    cafile: str | None
    timeout: float

    @property
    def given(self) -> bool:
        return self.live or bool(self.chains or self.addresses)

    def acquire(self, policy: Policy) -> dict[str, DomainChain]:
        """`certpin.lifecycle.chains.acquire_chains` for these options."""
        from certpin.lifecycle.chains import acquire_chains, parse_chain_specs

        return acquire_chains(
            policy,
            chain_files=parse_chain_specs(self.chains, "--chain"),
            connect=self.live,
            addresses=parse_chain_specs(self.addresses, "--address"),
            cafile=self.cafile,
            timeout=self.timeout,
        )


def chain_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--live``, ``--chain``, ``--address``, ``--cafile``, ``--timeout`` -> ``sources:
    ChainSources``. ``--connect`` (a flag here) is the deprecated spelling of ``--live``."""

    @functools.wraps(func)
    def collect(
        *args: Any,
        live: bool,
        chains: tuple[str, ...],
        addresses: tuple[str, ...],
        cafile: str | None,
        timeout: float,
        **kwargs: Any,
    ) -> Any:
        return func(*args, sources=ChainSources(live, chains, addresses, cafile, timeout), **kwargs)

    return apply_options(
        collect,
        [
            click.option(
                "--live",
                is_flag=True,
                help="Fetch every policy key's live verified chain (port 443, concurrently).",
            ),
            deprecated_option("--connect", "--live", lambda value: {"live": value}, is_flag=True),
            chain_option("The chain a policy key serves: a PEM file, leaf first (repeatable)."),
            click.option(
                "--address",
                "addresses",
                multiple=True,
                metavar="DOMAIN=HOST:PORT",
                help="Where to connect for a policy key (SNI stays DOMAIN). Implies connecting "
                "for that key.",
            ),
            cafile_option(
                "Trusted CA certificates (PEM) for --chain and --live (default: system)."
            ),
            timeout_option(help="With --live/--address: seconds per connection and handshake."),
        ],
    )


@dataclass(frozen=True)
class SpareKeys:
    """The ``--key`` files of ``lint`` and ``inventory`` and their passphrase options."""

    paths: tuple[str, ...]
    password_file: str | None
    password_env: str | None

    def load(self) -> list[SpareKey]:
        """`certpin.lifecycle.chains.load_spares` for these options."""
        from certpin.lifecycle.chains import load_spares

        if (self.password_file or self.password_env) and not self.paths:
            raise click.UsageError("--password-file/--password-env only apply to --key files")
        return load_spares(self.paths, read_password(self.password_file, self.password_env))


def key_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--key FILE`` (repeatable) and its passphrase options -> ``spares: SpareKeys``."""

    @functools.wraps(func)
    def collect(
        *args: Any,
        keys: tuple[str, ...],
        password_file: str | None,
        password_env: str | None,
        **kwargs: Any,
    ) -> Any:
        return func(*args, spares=SpareKeys(keys, password_file, password_env), **kwargs)

    return apply_options(
        collect,
        [
            click.option(
                "--key",
                "keys",
                multiple=True,
                type=click.Path(exists=True, dir_okay=False),
                metavar="FILE",
                help="A spare key, CSR or certificate the backup pins may name (repeatable).",
            ),
            password_options("encrypted --key private keys"),
        ],
    )
