"""Checks of `certpin.inject_into_ssl` / `extract_from_ssl` that need a fresh interpreter.

    python _inject_checks.py CHECK POLICY CAFILE PINNED_PORT

PINNED_PORT is a MITM on 127.0.0.1 (a pinned host) whose certificate CAFILE trusts. Prints one
JSON object (the last line of stdout); tests/process/test_inject.py asserts on it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

#: The names the issue lists (urllib3, pip's urllib3, botocore, truststore, requests' and
#: aiohttp's import-time contexts); certpin's own tables are added at run time so a new entry
#: there is checked too.
CLASS_BINDINGS = [
    ("ssl", "SSLContext"),
    ("urllib3.util.ssl_", "SSLContext"),
    ("pip._vendor.urllib3.util.ssl_", "SSLContext"),
    ("botocore.httpsession", "SSLContext"),
    ("truststore._api", "_original_SSLContext"),
    ("pip._vendor.truststore._api", "_original_SSLContext"),
]
PRELOADED = [
    ("requests.adapters", "_preloaded_ssl_context"),
    ("pip._vendor.requests.adapters", "_preloaded_ssl_context"),
    ("aiohttp.connector", "_SSL_CONTEXT_VERIFIED"),
    ("aiohttp.connector", "_SSL_CONTEXT_UNVERIFIED"),
]
BEFORE = ["urllib3.util.ssl_", "requests.adapters", "aiohttp.connector", "truststore._api"]
WHILE = [
    "botocore.httpsession",
    "pip._vendor.urllib3.util.ssl_",
    "pip._vendor.requests.adapters",
    "pip._vendor.truststore._api",
]
ORIGINAL = ssl.SSLContext


def _import(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _tables() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    from certpin.tls import inject

    bindings = list(dict.fromkeys(CLASS_BINDINGS + list(inject._CLASS_BINDINGS)))
    preloaded = list(dict.fromkeys(PRELOADED + list(inject._PRELOADED)))
    return bindings, preloaded


def _state() -> dict[str, str]:
    """module.attribute -> the class name bound there / the class of the preloaded context."""
    bindings, preloaded = _tables()
    out: dict[str, str] = {}
    for module_name, attribute in bindings:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            value = getattr(module, attribute)
            out[f"{module_name}.{attribute}"] = (
                "original" if value is ORIGINAL else getattr(value, "__name__", repr(value))
            )
    for module_name, attribute in preloaded:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            klass = type(getattr(module, attribute))
            out[f"{module_name}.{attribute}"] = (
                "original" if klass is ORIGINAL else f"instance of {klass.__name__}"
            )
    return out


def _absent() -> list[str]:
    bindings, preloaded = _tables()
    return [
        f"{m}.{a}"
        for m, a in bindings + preloaded
        if m not in sys.modules or not hasattr(sys.modules[m], a)
    ]


def _connect(ctx: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> str:
    """One HTTPS request through `ctx`; "ok", "pin" (certpin refused) or the error."""
    import http.client

    conn = http.client.HTTPSConnection(host, port, timeout=10, context=ctx)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return "ok"
    except ssl.SSLCertVerificationError as exc:
        return "pin" if type(exc).__name__ == "PinValidationError" else f"cert: {exc}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def check_names(policy: Any, cafile: str, port: int) -> dict[str, Any]:
    """Every name is patched while injected (also for modules imported during the injection)
    and holds CPython's class again after extract_from_ssl."""
    import certpin

    _import(BEFORE)
    before = _state()
    certpin.inject_into_ssl(policy)
    _import(WHILE)
    during = _state()
    certpin.extract_from_ssl()
    after = _state()
    return {
        "before": before,
        "during": during,
        "after": after,
        "absent": _absent(),
        "injected_after": certpin.tls.inject.injected(),
        "ssl_restored": ssl.SSLContext is ORIGINAL,
        "new_context_after": _connect(ssl.create_default_context(cafile=cafile), port),
    }


def check_idempotent(policy: Any, cafile: str, port: int) -> dict[str, Any]:
    """A second inject replaces the policy without patching twice; extract twice is harmless;
    inject works again after extract."""
    import certpin

    _import(BEFORE + WHILE)
    wrong = certpin.Policy.from_file(sys.argv[5])  # a policy whose pins the good server fails
    steps: dict[str, Any] = {}
    certpin.inject_into_ssl(wrong)
    ctx = ssl.create_default_context(cafile=cafile)
    steps["wrong_policy"] = _connect(ctx, int(sys.argv[6]))
    certpin.inject_into_ssl(policy)
    certpin.inject_into_ssl(policy)
    steps["undo_entries"] = len(certpin.tls.inject._undo)
    steps["right_policy_same_context"] = _connect(ctx, int(sys.argv[6]))
    steps["mitm"] = _connect(ssl.create_default_context(cafile=cafile), port)
    certpin.extract_from_ssl()
    certpin.extract_from_ssl()
    steps["after_extract"] = _state()
    steps["mitm_after_extract"] = _connect(ssl.create_default_context(cafile=cafile), port)
    certpin.inject_into_ssl(policy)
    steps["reinjected"] = _state()
    steps["mitm_reinjected"] = _connect(ssl.create_default_context(cafile=cafile), port)
    certpin.extract_from_ssl()
    steps["final"] = _state()
    return steps


def check_threads(policy: Any, cafile: str, port: int) -> dict[str, Any]:
    """Concurrent inject/extract never leaves a mix of patched and restored names, and a
    thread's own inject is in force when it returns."""
    import certpin

    _import(BEFORE + WHILE)
    errors: list[str] = []
    mixed: list[dict[str, str]] = []
    results: list[str] = []
    barrier = threading.Barrier(8)

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(150):
            try:
                if rng.random() < 0.6:
                    certpin.inject_into_ssl(policy)
                else:
                    certpin.extract_from_ssl()
            except Exception as exc:  # noqa: BLE001 - reported to the test
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for _ in range(3):  # settled: every name agrees with injected()
        state = _state()
        want = "InjectedContext" if certpin.tls.inject.injected() else "original"
        if any(v.removeprefix("instance of ") != want for v in state.values()):
            mixed.append(state)
    # Each thread injects, then connects: its own injection is in force.
    barrier2 = threading.Barrier(6)

    def inject_and_connect() -> None:
        barrier2.wait()
        certpin.inject_into_ssl(policy)
        results.append(_connect(ssl.create_default_context(cafile=cafile), port))

    threads = [threading.Thread(target=inject_and_connect) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    undo = len(certpin.tls.inject._undo)
    certpin.extract_from_ssl()
    return {
        "errors": errors,
        "mixed": mixed,
        "results": results,
        "undo_entries": undo,
        "after": _state(),
    }


def check_context_lifetimes(policy: Any, cafile: str, port: int) -> dict[str, Any]:
    """A context made before the injection is unaffected (documented); one made while injected
    keeps pinning after extract_from_ssl (documented); one made after extract is plain."""
    import certpin

    before = ssl.create_default_context(cafile=cafile)
    certpin.inject_into_ssl(policy)
    during = ssl.create_default_context(cafile=cafile)
    out = {"before": _connect(before, port), "during": _connect(during, port)}
    certpin.extract_from_ssl()
    out["during_after_extract"] = _connect(during, port)
    out["after_extract"] = _connect(ssl.create_default_context(cafile=cafile), port)
    return out


def check_server_side(policy: Any, cafile: str, port: int) -> dict[str, Any]:
    """Under ``unpinned_hosts = "deny"`` (every client connection pinned), server contexts made
    while injected still serve: blocking sockets and asyncio (memory BIO) alike."""
    import certpin

    certfile, keyfile = sys.argv[5], sys.argv[6]
    client_ctx = ssl.create_default_context(cafile=cafile)  # made before: unaffected
    certpin.inject_into_ssl(policy)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certfile, keyfile)
    out: dict[str, Any] = {"server_context": type(server_ctx).__name__}

    listener = socket.create_server(("127.0.0.1", 0))
    served: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            served.append(type(tls).__module__ + "." + type(tls).__qualname__)
            tls.sendall(tls.recv(100).upper())

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(listener.getsockname(), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"blocking")
            out["blocking"] = tls.recv(100).decode()
    thread.join(10)
    listener.close()
    out["blocking_server_socket"] = served

    async def asyncio_round() -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.read(100)).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        server_port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server_port, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"asyncio")
        reply = await reader.read(100)
        writer.close()
        server.close()
        await server.wait_closed()
        return reply.decode()

    out["asyncio"] = asyncio.run(asyncio_round())
    # The twin: a *client* context made while injected is refused for the unpinned host.
    out["client_while_injected"] = _connect(ssl.create_default_context(cafile=cafile), port)
    out["client_while_injected_unpinned"] = _connect(
        ssl.create_default_context(cafile=cafile), port, host="localhost"
    )
    return out


def check_msg_callback(policy: Any, cafile: str, port: int) -> dict[str, Any]:
    """ssl.py's Python-level setters work on an injected context: ``_msg_callback`` (ssl.py
    sets it through ``super(SSLContext, SSLContext)``, the module's class, i.e. certpin's)."""
    import certpin

    certpin.inject_into_ssl(policy)
    ctx = ssl.create_default_context(cafile=cafile)
    seen: list[object] = []
    try:
        ctx._msg_callback = lambda *args: seen.append(args)  # type: ignore[attr-defined]
    except RecursionError:
        return {"msg_callback": "RecursionError"}
    return {"msg_callback": "set", "connect": _connect(ctx, port), "messages": len(seen)}


CHECKS: dict[str, Callable[[Any, str, int], dict[str, Any]]] = {
    "names": check_names,
    "idempotent": check_idempotent,
    "threads": check_threads,
    "lifetimes": check_context_lifetimes,
    "server-side": check_server_side,
    "msg-callback": check_msg_callback,
}


def main() -> int:
    check, policy_file, cafile, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import certpin

    policy = certpin.Policy.from_file(policy_file)
    result = CHECKS[check](policy, cafile, port)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
