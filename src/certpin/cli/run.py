"""``certpin run``: run a program with certpin's pinning injected into every Python process it
starts (docs/process-wide.md).

How: the policy is checked here first; then PROGRAM replaces this process (``exec``) with
``CERTPIN_RUN_POLICY`` naming the policy file and certpin's ``sitecustomize`` hook
(``certpin/_startup``) first on ``PYTHONPATH``. Every Python interpreter started from then on,
PROGRAM itself or any child, grandchild…, imports the hook at start-up and calls
`certpin.inject_into_ssl` before the program's code runs. An interpreter that cannot import
certpin (another virtualenv, another Python version) stops with exit status 78 and a message:
never a silently unpinned run. PROGRAM's exit status is ``certpin run``'s.

Exit codes of its own: 2 bad policy or options; 126 PROGRAM is not executable; 127 PROGRAM
is not found.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from certpin.cli.exitcode import ExitCode
from certpin.cli.options import Verb, policy_option
from certpin.cli.output import error

__all__ = ["run_command"]

#: The directory of the start-up hook (``sitecustomize.py``), put first on PYTHONPATH.
STARTUP_DIR = Path(__file__).resolve().parent.parent / "_startup"
NOT_EXECUTABLE = 126
NOT_FOUND = 127


@click.command(
    "run",
    cls=Verb,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@policy_option(required=True)
@click.option(
    "--report-uri",
    metavar="URL",
    help="Send pin and CA failure reports here (RFC 7469 JSON; https, or http to a loopback "
    "collector) besides the policy's own report URIs.",
)
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(policy_file: str, report_uri: str | None, program: tuple[str, ...]) -> int:
    """Run PROGRAM [ARGS…] with every Python process it starts pinned by POLICY.

    Write ``--`` before PROGRAM. Pinned hosts are checked on every TLS handshake of every
    client library (urllib, requests, httpx, aiohttp, boto3, pip…); other hosts are untouched.

    Exit status: PROGRAM's; 2 bad policy or options; 78 (from a child interpreter) it cannot
    import certpin or read the policy; 126/127 PROGRAM is not executable / not found.
    """
    from certpin.core.policy import Policy
    from certpin.tls.inject import ENV_POLICY, ENV_REPORT_URI

    path = Path(policy_file).resolve()
    Policy.from_file(path)  # a bad policy is exit 2 here, not a failure in every child
    if report_uri is not None:
        from certpin.core.policy import is_report_uri

        if not is_report_uri(report_uri):
            error(f"--report-uri {report_uri!r} is not an http(s) URL")
            return ExitCode.USAGE
    executable = shutil.which(program[0])
    if executable is None:
        error(f"{program[0]}: command not found")
        return NOT_FOUND
    env = dict(os.environ)
    env[ENV_POLICY] = str(path)
    if report_uri:
        env[ENV_REPORT_URI] = report_uri
    else:
        env.pop(ENV_REPORT_URI, None)
    paths = [str(STARTUP_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "nt":  # pragma: no cover - no exec on Windows: wait and pass the status on
            import subprocess

            return subprocess.call([executable, *program[1:]], env=env)
        os.execve(executable, list(program), env)
    except OSError as exc:
        error(f"{program[0]}: {exc.strerror or exc}")
        return NOT_EXECUTABLE
    raise AssertionError("unreachable")  # pragma: no cover - execve does not return
