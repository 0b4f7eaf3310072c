"""The options several verbs share, declared once, and the command class every verb uses.

One name, one meaning, across every verb (docs/cli.md, "Options shared by the verbs"):

- ``--json``: print the result as JSON instead of text.
- ``--policy FILE``: the pin policy, for the verbs that do not take it as their argument.
- ``--cafile FILE``: trust these PEM CA certificates instead of the system store.
- ``--connect HOST[:PORT]``: connect to this TLS server (its verified chain).
- ``-o/--output FILE``: write here instead of stdout.
- ``--timeout S``: seconds for each TCP connection and TLS handshake.

Old spellings stay as hidden options of the verbs that had them (`deprecated_option`): they work
as before and print one ``certpin: warning: … is deprecated`` line on stderr.

This module is imported by every verb: what it needs of the library beyond the TLS constants is
imported when an option is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from click.core import ParameterSource

from certpin._errors import CertpinError
from certpin.cli.exitcode import ExitCode
from certpin.cli.output import error, warn
from certpin.tls.fetch import DEFAULT_TIMEOUT
from certpin.tls.fetch import parse_target as _parse_target

__all__ = [
    "DEFAULT_PORT",
    "Verb",
    "apply_options",
    "cafile_option",
    "chain_option",
    "connect_option",
    "deprecated_option",
    "json_option",
    "now_option",
    "output_option",
    "parse_target",
    "password_options",
    "policy_option",
    "read_password",
    "servername_option",
    "timeout_option",
    "tls_server_options",
]

#: a click decorator: takes the verb function (or an already decorated one) and returns it.
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DEFAULT_PORT = 443


def apply_options(func: Callable[..., Any], decorators: Sequence[Decorator]) -> Callable[..., Any]:
    """Apply click decorators to `func`, so that ``--help`` lists them in the order given."""
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


# -- the command class: deprecated spellings ----------------------------------------------------


class _DeprecatedOption(click.Option):
    """A hidden option that keeps an old spelling working (see `deprecated_option`)."""

    def __init__(
        self,
        decls: Sequence[str],
        *,
        use: str,
        translate: Callable[[Any], Mapping[str, Any]],
        **attrs: Any,
    ) -> None:
        super().__init__(decls, hidden=True, **attrs)
        self.use = use
        self.translate = translate

    def hand_over(self, ctx: click.Context) -> None:
        """Give the value to the new option(s), unless those were given too; warn once."""
        assert self.name is not None
        value = ctx.params.pop(self.name, None)
        if ctx.get_parameter_source(self.name) is not ParameterSource.COMMANDLINE:
            return
        warn(f"{self.opts[0]} is deprecated in `{ctx.command_path}`: use {self.use}")
        for name, new in self.translate(value).items():
            if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
                ctx.params[name] = new


def deprecated_option(
    old: str,
    use: str,
    translate: Callable[[Any], Mapping[str, Any]],
    **attrs: Any,
) -> Decorator:
    """A hidden option spelled `old` that still works and prints a deprecation warning.

    Args:
        old: the old spelling, e.g. ``"--out"``.
        use: what to write instead, for the warning (e.g. ``"-o/--output"``).
        translate: the old option's value -> {parameter name of the new option(s): value}. The
            new spelling wins when both are given.
        attrs: the old option's click attributes (``is_flag``, ``type``, ``metavar``…).

    The command must be a `Verb` (it hands the value over once everything is parsed).
    """
    dest = "deprecated_" + old.lstrip("-").replace("-", "_")
    return click.option(old, dest, cls=_DeprecatedOption, use=use, translate=translate, **attrs)


class Verb(click.Command):
    """A certpin verb.

    - Hands deprecated spellings over to their new options after parsing, and checks the
      options that are required under either spelling (``required_options``).
    - Turns the library's errors into ``certpin: error: …`` and an exit code: a connection or TLS
      failure (`ConnectError`) is `ExitCode.CONNECTION`, any other `CertpinError` (bad policy,
      file, key…) `ExitCode.USAGE`; the message is `explain`ed for the ``--cafile`` given.
    """

    def __init__(self, *args: Any, required_options: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.required_options = required_options

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CertpinError as exc:
            from certpin.cli.messages import explain
            from certpin.tls.fetch import ConnectError

            error(explain(str(exc), ctx.params.get("cafile")))
            code = ExitCode.CONNECTION if isinstance(exc, ConnectError) else ExitCode.USAGE
            raise click.exceptions.Exit(code) from exc

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for param in self.params:
            if isinstance(param, _DeprecatedOption):
                param.hand_over(ctx)
        for name in self.required_options:
            if ctx.params.get(name) is None and not ctx.resilient_parsing:
                param = next(p for p in self.params if p.name == name)
                raise click.MissingParameter(ctx=ctx, param=param)
        return rest


def _same(name: str) -> Callable[[Any], Mapping[str, Any]]:
    return lambda value: {name: value}


# -- the shared options --------------------------------------------------------------------------


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` -> ``as_json: bool``."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def policy_option(*, required: bool) -> Decorator:
    """``--policy FILE`` -> ``policy_file: str | None`` (read by the verb, after usage checks)."""
    return click.option(
        "--policy",
        "policy_file",
        required=required,
        metavar="FILE",
        help="Pin policy (TOML or JSON).",
    )


def cafile_option(
    help: str = "PEM file of trusted CA certificates (default: the system trust store).",
) -> Decorator:
    """``--cafile FILE`` -> ``cafile: str | None``; `Verb` error messages say which store."""
    return click.option("--cafile", type=click.Path(exists=True, dir_okay=False), help=help)


def timeout_option(
    default: float = DEFAULT_TIMEOUT,
    help: str = "Seconds allowed for the TCP connection and the TLS handshake.",
) -> Decorator:
    """``--timeout S`` -> ``timeout: float`` (> 0)."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=True,
        help=help,
    )


def port_option(
    name: str, default: int, help: str | None = None, *, any_port: bool = False
) -> Decorator:
    """A TCP port option (1-65535; 0 too with `any_port`: "any free port") with its default
    shown."""
    return click.option(
        name,
        type=click.IntRange(0 if any_port else 1, 65535),
        default=default,
        show_default=True,
        help=help,
    )


def parse_target(text: str) -> tuple[str, int]:
    """`certpin.tls.fetch.parse_target`, with its errors as click usage errors (exit code 2)."""
    try:
        return _parse_target(text, DEFAULT_PORT)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _targets(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(parse_target(text) for text in value)
    return parse_target(value)


def connect_option(
    *,
    multiple: bool = False,
    help: str = "Fetch the verified chain from a TLS server instead of reading files.",
) -> Decorator:
    """``--connect HOST[:PORT]`` -> ``connect: (host, port)`` (a tuple of them if `multiple`).

    Default port 443; ``[IPv6]:PORT`` and ``https://`` URLs work too.
    """
    return click.option(
        "--connect",
        metavar="HOST[:PORT]",
        multiple=multiple,
        callback=_targets,
        help=help,
    )


def output_option(
    help: str = "Write here instead of stdout.",
    *,
    metavar: str = "FILE",
    type: Any = None,
    old_out: bool = False,
) -> Decorator:
    """``-o/--output FILE`` -> ``output: str | None``; with `old_out`, also the deprecated
    ``--out`` (``keygen``, ``bundle sign``, ``bundle kill-switch`` had that spelling)."""
    new = click.option("-o", "--output", metavar=metavar, type=type, help=help)
    if not old_out:
        return new
    old = deprecated_option("--out", "-o/--output", _same("output"), metavar=metavar, type=type)
    return lambda func: apply_options(func, [new, old])


def _servername(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from certpin.core.hosts import HostError, normalize_host

    if value is not None:
        try:
            normalize_host(value)
        except HostError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    return value


def servername_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--servername NAME`` -> ``servername: str | None`` (a valid host name)."""
    return click.option(
        "--servername",
        metavar="NAME",
        callback=_servername,
        help="Host name to send in SNI and verify the certificate for (default: HOST).",
    )(func)


def password_options(
    what: str, *, must_exist: bool = False, passphrase_names: bool = False
) -> Decorator:
    """``--password-file FILE`` and ``--password-env VAR`` -> ``password_file``,
    ``password_env`` (read them with `read_password`).

    Args:
        what: whose passphrase, for the help text.
        must_exist: the file must exist (checked by click).
        passphrase_names: also accept ``--passphrase-file``/``--passphrase-env`` (``keygen``
            documents both spellings).
    """
    file_names = ["--password-file"] + (["--passphrase-file"] if passphrase_names else [])
    env_names = ["--password-env"] + (["--passphrase-env"] if passphrase_names else [])
    return lambda func: apply_options(
        func,
        [
            click.option(
                *file_names,
                "password_file",
                type=click.Path(exists=True, dir_okay=False) if must_exist else None,
                metavar="FILE",
                help=f"Passphrase of {what}: the first line of FILE.",
            ),
            click.option(
                *env_names,
                "password_env",
                metavar="VAR",
                help=f"Passphrase of {what}: this environment variable.",
            ),
        ],
    )


def read_password(password_file: str | None, password_env: str | None) -> bytes | None:
    """The passphrase given by ``--password-file`` or ``--password-env``, or None."""
    if password_file and password_env:
        raise click.UsageError("give --password-file or --password-env, not both")
    if password_file:
        try:
            with open(password_file, "rb") as fh:
                return fh.readline().rstrip(b"\r\n")
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="--password-file") from None
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise click.BadParameter(
                f"environment variable {password_env} is not set", param_hint="--password-env"
            )
        return os.fsencode(value)
    return None


def _now(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
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
    """``--now ISO`` -> ``now: datetime | None`` (UTC)."""
    return click.option(
        "--now",
        metavar="ISO",
        callback=_now,
        help="Judge expiry dates at this time instead of now (chains are verified at now).",
    )(func)


def chain_option(help: str) -> Decorator:
    """``--chain DOMAIN=FILE`` (repeatable) -> ``chains: tuple[str, ...]``."""
    return click.option("--chain", "chains", multiple=True, metavar="DOMAIN=FILE", help=help)


def tls_server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--certfile`` and ``--keyfile``: the certificate and key a server serves HTTPS with."""
    existing = click.Path(exists=True, dir_okay=False)
    return apply_options(
        func,
        [
            click.option("--certfile", type=existing, help="Serve HTTPS: the certificate chain."),
            click.option("--keyfile", type=existing, help="Serve HTTPS: its private key."),
        ],
    )
