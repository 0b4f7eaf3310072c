"""Attacks on `certpin.inject_into_ssl`, each in a fresh interpreter (injection is process-wide).

    python _inject_runner.py ATTACK CONFIG MODE

CONFIG is a JSON file written by tests/attacks/test_inject_attacks.py (CA file, policies,
server ports). MODE is ``inject`` (``inject_into_ssl`` with CONFIG's policy first), ``deny``
(the same policy with ``unpinned_hosts = "deny"``) or ``plain`` (no certpin: the twin that
shows the attack works without it). Prints one JSON object, the last line of stdout.

Outcomes: ``"ok"`` (the request went through), ``"pin"`` (certpin's `PinValidationError` was
raised), ``"cert: …"`` (another ``ssl.SSLCertVerificationError``), ``"error: …"`` (anything else).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import types
from collections.abc import Callable
from typing import Any

REQUEST = b"GET /secret?token=hunter2 HTTP/1.1\r\nHost: pinned\r\n\r\n"
ORIGINAL_CONTEXT = ssl.SSLContext
C: dict[str, Any] = {}
FAILURES: list[Any] = []
ATTACKS: dict[str, Callable[[], dict[str, Any]]] = {}


def attack(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    ATTACKS[fn.__name__] = fn
    return fn


def classify(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "PinValidationError":
            return "pin"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"cert: {exc.verify_message}"
    return f"error: {type(exc).__name__}: {exc}"


def outcome(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - classified for the test
        return classify(exc)
    return "ok"


def context(verify: bool = True, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=C["cafile"])
    if not check_hostname or not verify:
        ctx.check_hostname = False
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((host, port))
    return sock


def exchange(tls: ssl.SSLSocket) -> bytes:
    tls.sendall(REQUEST)
    data = tls.recv(100)
    tls.close()
    return data


def fetch(
    ctx: ssl.SSLContext,
    port: int,
    server_hostname: str | None = "127.0.0.1",
    address: str = "127.0.0.1",
    **kwargs: Any,
) -> bytes:
    tls = ctx.wrap_socket(connect(port, address), server_hostname=server_hostname, **kwargs)
    return exchange(tls)


# -- the context's settings changed between wrap and handshake ------------------------------------


@attack
def verify_mode_flipped_after_wrap() -> dict[str, Any]:
    """The SSL object is made while the context says CERT_NONE (OpenSSL copies the mode into
    it); a library then sets CERT_REQUIRED on the shared context before the handshake."""

    def run() -> None:
        ctx = context(verify=False)
        tls = ctx.wrap_socket(
            connect(C["ports"]["forged"]),
            server_hostname="127.0.0.1",
            do_handshake_on_connect=False,
        )
        ctx.verify_mode = ssl.CERT_REQUIRED
        tls.do_handshake()
        exchange(tls)

    return {"forged": outcome(run)}


@attack
def verify_none_throughout() -> dict[str, Any]:
    ctx = context(verify=False)
    return {"forged": outcome(lambda: fetch(ctx, C["ports"]["forged"]))}


@attack
def check_hostname_turned_on_after_wrap() -> dict[str, Any]:
    """The SSL object is made with check_hostname off (no name set in OpenSSL); the library
    turns it on before the handshake: neither OpenSSL nor certpin then checks the name."""

    def run() -> None:
        ctx = context(check_hostname=False)
        tls = ctx.wrap_socket(
            connect(C["ports"]["other"]), server_hostname="127.0.0.1", do_handshake_on_connect=False
        )
        ctx.check_hostname = True
        tls.do_handshake()
        exchange(tls)

    return {"other": outcome(run)}


@attack
def check_hostname_off_throughout() -> dict[str, Any]:
    ctx = context(check_hostname=False)
    return {
        "other": outcome(lambda: fetch(ctx, C["ports"]["other"])),
        "good": outcome(lambda: fetch(ctx, C["ports"]["good"])),
    }


@attack
def cert_optional() -> dict[str, Any]:
    ctx = context(check_hostname=False)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return {
        name: outcome(lambda port=C["ports"][name]: fetch(ctx, port))
        for name in ("rogue", "other", "untrusted", "good")
    }


# -- host spellings -------------------------------------------------------------------------------


@attack
def spellings() -> dict[str, Any]:
    """Each spelling of a pinned host, to the rogue server and to the good one."""
    out: dict[str, Any] = {}
    ctx = context()
    for spelling in C["spellings"]:
        address = "::1" if ":" in spelling else "127.0.0.1"
        suffix = "6" if address == "::1" else ""
        out[spelling] = [
            outcome(lambda p=C["ports"][role + suffix], s=spelling, a=address: fetch(ctx, p, s, a))
            for role in ("rogue", "good")
        ]
    return out


@attack
def unreadable_names() -> dict[str, Any]:
    """Names OpenSSL verifies (for a pinned address, or under a pinned domain) that certpin's
    host parser refuses: ``127.0.0.010`` is the address 127.0.0.10 to OpenSSL; ``xn--a`` is
    not valid punycode but is compared as a plain string."""
    ctx = context()
    return {
        name: outcome(lambda n=name: fetch(ctx, C["ports"]["rogue"], n))
        for name in ("127.0.0.010", "xn--a.pinned.test")
    }


@attack
def readable_twins() -> dict[str, Any]:
    ctx = context()
    return {
        name: outcome(lambda n=name: fetch(ctx, C["ports"]["rogue"], n))
        for name in ("127.0.0.10", "a.pinned.test")
    }


@attack
def no_server_hostname() -> dict[str, Any]:
    """A client that turned check_hostname off and passes no server_hostname, to a pinned IP."""
    ctx = context(check_hostname=False)
    return {
        "rogue": outcome(lambda: fetch(ctx, C["ports"]["rogue"], None)),
        "good": outcome(lambda: fetch(ctx, C["ports"]["good"], None)),
    }


# -- the socket classes ---------------------------------------------------------------------------


@attack
def instance_socket_classes() -> dict[str, Any]:
    """A library installs the plain classes on its context (as truststore installs its own)."""
    ctx = context()
    ctx.sslsocket_class = ssl.SSLSocket
    ctx.sslobject_class = ssl.SSLObject

    async def via_asyncio() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", C["ports"]["rogue"], ssl=ctx, server_hostname="127.0.0.1"
        )
        writer.write(REQUEST)
        await writer.drain()
        await reader.read(100)
        writer.close()

    return {
        "blocking": outcome(lambda: fetch(ctx, C["ports"]["rogue"])),
        "asyncio": outcome(lambda: asyncio.run(via_asyncio())),
    }


@attack
def class_socket_classes() -> dict[str, Any]:
    """A library assigns the class attributes of ``ssl.SSLContext`` (certpin's class while
    injected) instead of an instance's."""
    klass: Any = ssl.SSLContext
    refused = []
    for name, plain in (("sslsocket_class", ssl.SSLSocket), ("sslobject_class", ssl.SSLObject)):
        try:
            setattr(klass, name, plain)
        except ValueError as exc:  # certpin.InsecureContextError is a ValueError
            refused.append(type(exc).__name__)
    ctx = context()
    return {"assignment": refused, "blocking": outcome(lambda: fetch(ctx, C["ports"]["rogue"]))}


# -- I/O before the handshake ---------------------------------------------------------------------


def _writers() -> dict[str, Callable[[ssl.SSLSocket], object]]:
    def sendfile(tls: ssl.SSLSocket) -> None:
        with tempfile.TemporaryFile() as f:
            f.write(REQUEST)
            f.seek(0)
            tls.sendfile(f)

    def makefile(tls: ssl.SSLSocket) -> None:
        with tls.makefile("wb") as f:
            f.write(REQUEST)
            f.flush()

    return {
        "send": lambda t: t.send(REQUEST),
        "sendall": lambda t: t.sendall(REQUEST),
        "write": lambda t: t.write(REQUEST),
        "sendfile": sendfile,
        "makefile": makefile,
        "recv": lambda t: t.recv(10),
    }


@attack
def io_before_handshake() -> dict[str, Any]:
    """do_handshake_on_connect=False, then the first I/O: OpenSSL would complete the handshake
    implicitly inside it. After the refusal, raw writes on the descriptor must go nowhere."""
    ctx = context()
    out: dict[str, Any] = {}
    for name, writer in _writers().items():
        tls = ctx.wrap_socket(
            connect(C["ports"]["rogue_tap"]),
            server_hostname="127.0.0.1",
            do_handshake_on_connect=False,
        )
        result = outcome(lambda w=writer, t=tls: w(t))
        raw = []
        for how, write in (
            ("os.write", lambda t=tls: os.write(t.fileno(), REQUEST)),
            ("socket.send", lambda t=tls: socket.socket.send(t, REQUEST)),
            ("again", lambda t=tls: t.sendall(REQUEST)),
        ):
            try:
                write()
                raw.append(f"{how}: sent")
            except Exception as exc:  # noqa: BLE001 - classified for the test
                raw.append(f"{how}: {classify(exc)[:40]}")
        tls.close()
        out[name] = [result, *raw]
    return out


@attack
def memory_bio_write_first() -> dict[str, Any]:
    """An SSLObject (memory BIO) written to before do_handshake, then pumped over a socket."""
    ctx = context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    sock = connect(C["ports"]["rogue"])
    steps: list[str] = []

    def pump_write() -> None:
        while True:
            try:
                obj.write(REQUEST)
                return
            except ssl.SSLWantReadError:
                steps.append("want-read")
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("peer closed") from None
                incoming.write(data)

    result = outcome(pump_write)
    pending = outgoing.read()  # whatever the object produced, sent only if it is no refusal
    if result == "ok":
        sock.sendall(pending)
    sock.close()
    return {"write": result, "steps": len(steps), "again": outcome(lambda: obj.write(REQUEST))}


@attack
def asyncio_clients() -> dict[str, Any]:
    """``open_connection(ssl=True)`` (asyncio builds the default context) and ``start_tls``."""
    port = C["ports"]["rogue"]

    async def ssl_true() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=True)
        writer.write(REQUEST)
        await writer.drain()
        await reader.read(100)
        writer.close()

    async def start_tls() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await writer.start_tls(context(), server_hostname="127.0.0.1")
        writer.write(REQUEST)
        await writer.drain()
        await reader.read(100)
        writer.close()

    async def unverified() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context(verify=False), server_hostname="127.0.0.1"
        )
        writer.write(REQUEST)
        await writer.drain()
        writer.close()

    return {
        "ssl_true": outcome(lambda: asyncio.run(ssl_true())),
        "start_tls": outcome(lambda: asyncio.run(start_tls())),
        "cert_none": outcome(lambda: asyncio.run(unverified())),
    }


# -- sessions -------------------------------------------------------------------------------------


def _tls12() -> ssl.SSLContext:
    # TLS 1.2: the session exists right after the handshake (no ticket to wait for).
    ctx = context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _session(ctx: ssl.SSLContext, port: int, host: str) -> ssl.SSLSession | None:
    tls = ctx.wrap_socket(connect(port), server_hostname=host)
    session = tls.session
    exchange(tls)
    return session


def _resume(ctx: ssl.SSLContext, port: int, host: str, session: Any) -> tuple[str, bool]:
    tls = ctx.wrap_socket(
        connect(port), server_hostname=host, session=session, do_handshake_on_connect=False
    )
    result = outcome(tls.do_handshake)
    reused = tls.session_reused
    if result == "ok":
        result = outcome(lambda: exchange(tls))
    tls.close()
    return result, reused


@attack
def session_from_unpinned_host() -> dict[str, Any]:
    """A session the rogue server gave for an unpinned name, offered for the pinned host."""
    ctx = _tls12()
    session = _session(ctx, C["ports"]["rogue"], "localhost")
    result, reused = _resume(ctx, C["ports"]["rogue"], "127.0.0.1", session)
    return {"have_session": session is not None, "resume": result, "reused": reused}


@attack
def session_from_cert_none() -> dict[str, Any]:
    """A session made while the context had verification off (refused for the pinned host, but
    the session exists), offered once the context verifies again."""
    ctx = _tls12()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(
        connect(C["ports"]["rogue"]), server_hostname="127.0.0.1", do_handshake_on_connect=False
    )
    first = outcome(tls.do_handshake)
    session = tls.session
    tls.close()
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    result, reused = _resume(ctx, C["ports"]["rogue"], "127.0.0.1", session)
    return {"first": first, "have_session": session is not None, "resume": result, "reused": reused}


@attack
def session_good_resumes() -> dict[str, Any]:
    """The twin: a session verified for the pinned host at the good server resumes there."""
    ctx = _tls12()
    session = _session(ctx, C["ports"]["good"], "127.0.0.1")
    result, reused = _resume(ctx, C["ports"]["good"], "127.0.0.1", session)
    return {"have_session": session is not None, "resume": result, "reused": reused}


# -- injection lifetime ---------------------------------------------------------------------------


@attack
def threads_during_churn() -> dict[str, Any]:
    """Handshakes through contexts made while injected, while another thread injects and
    extracts in a loop."""
    import certpin

    contexts = [context() for _ in range(4)]
    stop = threading.Event()
    results: list[str] = []
    lock = threading.Lock()

    def churn() -> None:
        while not stop.is_set():
            certpin.extract_from_ssl()
            certpin.inject_into_ssl(C["policy_obj"])

    def handshakes(ctx: ssl.SSLContext) -> None:
        for _ in range(5):
            result = outcome(lambda: fetch(ctx, C["ports"]["rogue"]))
            with lock:
                results.append(result)

    churner = threading.Thread(target=churn)
    churner.start()
    workers = [threading.Thread(target=handshakes, args=(c,)) for c in contexts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    stop.set()
    churner.join(60)
    return {"results": sorted(set(results)), "count": len(results)}


@attack
def name_bound_while_injected() -> dict[str, Any]:
    """A module imported while injected does ``from ssl import SSLContext``; then
    ``extract_from_ssl()``. Which class does its name hold, and does its context pin?"""
    import certpin

    module = types.ModuleType("late_library")
    exec("from ssl import SSLContext, PROTOCOL_TLS_CLIENT", module.__dict__)  # noqa: S102
    certpin.extract_from_ssl()
    ctx = module.SSLContext(module.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(C["cafile"])
    return {
        "ssl_restored": ssl.SSLContext is ORIGINAL_CONTEXT,
        "binding": module.SSLContext.__name__,
        "rogue": outcome(lambda: fetch(ctx, C["ports"]["rogue"])),
        "fresh_default": outcome(lambda: fetch(context(), C["ports"]["rogue"])),
    }


# -- reports --------------------------------------------------------------------------------------


@attack
def reports() -> dict[str, Any]:
    """on_failure: once per handshake for a CA failure on a pinned host, never for an unpinned
    one; once for certpin's own name check (check_hostname off)."""

    def count(fn: Callable[[], object]) -> list[Any]:
        before = len(FAILURES)
        result = outcome(fn)
        return [result, [f.verdict.status.name for f in FAILURES[before:]]]

    async def via_asyncio(host: str) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", C["ports"]["untrusted"], ssl=context(), server_hostname=host
        )
        writer.close()

    ctx = context()
    return {
        "pinned_1": count(lambda: fetch(ctx, C["ports"]["untrusted"])),
        "pinned_2": count(lambda: fetch(ctx, C["ports"]["untrusted"])),
        "pinned_unconnected": count(
            lambda: exchange(_connect_later(ctx, C["ports"]["untrusted"], "127.0.0.1"))
        ),
        "pinned_asyncio": count(lambda: asyncio.run(via_asyncio("127.0.0.1"))),
        "unpinned": count(lambda: fetch(ctx, C["ports"]["untrusted"], "localhost")),
        "unpinned_asyncio": count(lambda: asyncio.run(via_asyncio("localhost"))),
        "name_check": count(lambda: fetch(context(check_hostname=False), C["ports"]["other"])),
        "pin_failure": count(lambda: fetch(ctx, C["ports"]["rogue"])),
    }


def _connect_later(ctx: ssl.SSLContext, port: int, host: str) -> ssl.SSLSocket:
    # The Python docs' pattern: wrap an unconnected socket, then connect() (handshake inside).
    tls = ctx.wrap_socket(socket.socket(socket.AF_INET), server_hostname=host)
    tls.settimeout(10)
    tls.connect(("127.0.0.1", port))
    return tls


def main() -> int:
    name, config, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(config, encoding="utf-8") as f:
        C.update(json.load(f))
    os.environ["SSL_CERT_FILE"] = C["cafile"]  # for the contexts asyncio builds itself
    if mode != "plain":
        import certpin

        policy = certpin.Policy.from_file(C["deny_policy" if mode == "deny" else "policy"])
        C["policy_obj"] = policy
        certpin.inject_into_ssl(policy, on_failure=FAILURES.append)
    result = ATTACKS[name]()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
