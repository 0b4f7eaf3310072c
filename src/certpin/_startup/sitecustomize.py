"""`certpin run`'s startup hook: pins the interpreter it runs in (docs/process-wide.md).

`certpin run` puts this directory first on ``PYTHONPATH`` and names the policy file in
``CERTPIN_RUN_POLICY``; Python imports ``sitecustomize`` at start-up, so every Python process
the program starts (children inherit the environment) injects certpin's pinning before the
program's own code runs. Without the variable this hook does nothing but hand over to the
``sitecustomize`` it shadows.

An interpreter that cannot import certpin, or cannot read the policy, is stopped with exit
status 78 and a message on stderr: a program run under `certpin run` is never silently
unpinned.
"""

import os
import sys

#: The exit status of an interpreter that cannot pin itself (sysexits' EX_CONFIG).
EXIT_CANNOT_PIN = 78


def _refuse(problem: str) -> None:
    sys.stderr.write(
        f"certpin run: {problem}\n"
        f"certpin run: refusing to run {sys.executable} (pid {os.getpid()}) unpinned; exit "
        f"status {EXIT_CANNOT_PIN}\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_CANNOT_PIN)  # site.py swallows exceptions from sitecustomize


def _pin() -> None:
    path = os.environ.get("CERTPIN_RUN_POLICY")
    if not path:
        return
    try:
        import certpin
        from certpin._io.http import is_loopback
        from certpin.reporting import Reporter
    except Exception as exc:  # ImportError, or a broken install (a missing cryptography)
        _refuse(
            f"this interpreter cannot import certpin ({type(exc).__name__}: {exc}); install "
            "certpin into it, or run it outside `certpin run`"
        )
        return
    try:
        policy = certpin.Policy.from_file(path)
        uri = os.environ.get("CERTPIN_RUN_REPORT_URI")
        on_failure = None
        if uri:
            on_failure = Reporter(
                # A collector on this machine may be reached over plain HTTP; any other
                # report URI must be https (the reporter refuses http).
                policy,
                report_uris=[uri],
                allow_http=is_loopback(uri),
                app="certpin run",
            )
        certpin.inject_into_ssl(policy, on_failure=on_failure)
    except Exception as exc:
        _refuse(f"cannot pin with {path}: {exc}")


def _chain() -> None:
    # Run the sitecustomize this one shadows (a virtualenv's or a distribution's), if any.
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_pin()
_chain()
