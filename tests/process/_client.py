"""One request with one client library, in a process of its own; prints the outcome as JSON.

    python _client.py CLIENT HOST PORT {verify|off} [--cafile CA] [--no-check-hostname]
                      [--inject POLICY]

Run by tests/process under ``certpin run`` (pinning injected at interpreter start-up), under
plain Python (the unpinned baseline), or with ``--inject POLICY``: the script then imports the
client's libraries first and only then calls ``certpin.inject_into_ssl`` (a library imported
before the injection, with the contexts and class names it bound at import time).

Each client gets the trust store the way its users give it: ``--cafile`` as an argument
(``verify=``, ``cafile=``, ``ca_certs=``, ``ssl_ca_certs=``, ``sslrootcert=``), or, for urllib,
httpx, aiohttp's default context and boto3, through the environment the test sets
(``SSL_CERT_FILE``, ``AWS_CA_BUNDLE``). ``off`` turns verification off the client's usual way
(``verify=False``, ``ssl=False``, ``cert_reqs="CERT_NONE"``, ``sslmode=require``…).
``--no-check-hostname`` keeps certificate verification but turns host-name checking off.

The last line of stdout is a JSON object: ``ok``, ``body`` (or ``error``), ``chain`` (the class
names in the exception's cause chain), ``pin_error`` (certpin's `PinValidationError` is in it),
``cert_error`` (an ``ssl.SSLCertVerificationError`` is in it) and ``injected``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import ssl
import sys
from collections.abc import Callable
from typing import Any

ClientFn = Callable[[argparse.Namespace], str]

CLIENTS: dict[str, ClientFn] = {}
#: What each client imports: with --inject these are imported *before* inject_into_ssl.
IMPORTS: dict[str, tuple[str, ...]] = {}
PROBE = "certpin-probe"


def client(name: str, *modules: str) -> Callable[[ClientFn], ClientFn]:
    def register(fn: ClientFn) -> ClientFn:
        CLIENTS[name] = fn
        IMPORTS[name] = modules
        return fn

    return register


def url(a: argparse.Namespace, scheme: str = "https") -> str:
    return f"{scheme}://{a.host}:{a.port}/"


def context(a: argparse.Namespace) -> ssl.SSLContext:
    """A stdlib context the way applications build one from a CA file."""
    if not a.verify:
        return ssl._create_unverified_context()
    ctx = ssl.create_default_context(cafile=a.cafile)
    if not a.check_hostname:
        ctx.check_hostname = False
    return ctx


@client("urllib", "urllib.request")
def _urllib(a: argparse.Namespace) -> str:
    import urllib.request

    # Trust: SSL_CERT_FILE (the default context loads it), as for any urlopen() caller.
    ctx = None
    if not a.verify:
        ctx = ssl._create_unverified_context()
    elif not a.check_hostname:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
    with urllib.request.urlopen(url(a), timeout=10, context=ctx) as response:
        return str(response.read().decode())


@client("http.client", "http.client")
def _http_client(a: argparse.Namespace) -> str:
    import http.client

    conn = http.client.HTTPSConnection(a.host, a.port, timeout=10, context=context(a))
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@client("requests", "requests")
def _requests(a: argparse.Namespace) -> str:
    import requests

    response = requests.get(url(a), verify=a.cafile if a.verify else False, timeout=10)
    return str(response.text)


@client("pip-requests", "pip._vendor.requests")
def _pip_requests(a: argparse.Namespace) -> str:
    from pip._vendor import requests

    response = requests.get(url(a), verify=a.cafile if a.verify else False, timeout=10)
    return str(response.text)


@client("urllib3", "urllib3")
def _urllib3(a: argparse.Namespace) -> str:
    import urllib3

    if not a.verify:
        pool = urllib3.PoolManager(cert_reqs="CERT_NONE")
    elif not a.check_hostname:
        pool = urllib3.PoolManager(ca_certs=a.cafile, assert_hostname=False)
    else:
        pool = urllib3.PoolManager(ca_certs=a.cafile)
    return str(pool.request("GET", url(a), timeout=10).data.decode())


@client("httpx", "httpx")
def _httpx(a: argparse.Namespace) -> str:
    import httpx

    # Trust: SSL_CERT_FILE (httpx reads it with trust_env, the default).
    verify: Any = a.verify if a.check_hostname else context(a)
    return str(httpx.get(url(a), verify=verify, timeout=10).text)


@client("httpx-async", "httpx")
def _httpx_async(a: argparse.Namespace) -> str:
    import httpx

    verify: Any = a.verify if a.check_hostname else context(a)

    async def fetch() -> str:
        async with httpx.AsyncClient(verify=verify, timeout=10) as http:
            return str((await http.get(url(a))).text)

    return asyncio.run(fetch())


@client("aiohttp", "aiohttp")
def _aiohttp(a: argparse.Namespace) -> str:
    import aiohttp

    ssl_arg: Any = context(a) if a.verify else False
    return asyncio.run(_aiohttp_fetch(aiohttp, url(a), ssl_arg))


@client("aiohttp-default", "aiohttp")
def _aiohttp_default(a: argparse.Namespace) -> str:
    import aiohttp

    # ssl=True (the default): aiohttp's own verified context, built at import time from the
    # default trust store (SSL_CERT_FILE); ssl=False: its import-time unverified context.
    return asyncio.run(_aiohttp_fetch(aiohttp, url(a), True if a.verify else False))


async def _aiohttp_fetch(aiohttp: Any, target: str, ssl_arg: Any) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(target, ssl=ssl_arg, timeout=aiohttp.ClientTimeout(10)) as r:
            return str(await r.text())


@client("websockets-sync", "websockets.sync.client")
def _websockets_sync(a: argparse.Namespace) -> str:
    from websockets.sync.client import connect

    with connect(url(a, "wss"), ssl=context(a), open_timeout=10, close_timeout=2) as ws:
        ws.send(PROBE)
        return str(ws.recv(timeout=10))


@client("websockets-async", "websockets.asyncio.client")
def _websockets_async(a: argparse.Namespace) -> str:
    from websockets.asyncio.client import connect

    async def talk() -> str:
        async with connect(url(a, "wss"), ssl=context(a), open_timeout=10, close_timeout=2) as ws:
            await ws.send(PROBE)
            return str(await ws.recv())

    return asyncio.run(talk())


@client("boto3", "boto3", "botocore.httpsession")
def _boto3(a: argparse.Namespace) -> str:
    import boto3

    # Trust: AWS_CA_BUNDLE; credentials, region and retries: the environment the test sets.
    s3 = boto3.client("s3", endpoint_url=url(a), verify=None if a.verify else False)
    return ",".join(bucket["Name"] for bucket in s3.list_buckets()["Buckets"])


@client("redis", "redis")
def _redis(a: argparse.Namespace) -> str:
    import redis

    options: dict[str, Any] = {"ssl_ca_certs": a.cafile} if a.verify else {}
    if not a.verify:
        options.update(ssl_cert_reqs="none", ssl_check_hostname=False)
    conn = redis.Redis(host=a.host, port=a.port, ssl=True, socket_timeout=10, **options)
    try:
        return str(conn.echo(PROBE).decode())
    finally:
        conn.close()


@client("smtplib", "smtplib")
def _smtplib(a: argparse.Namespace) -> str:
    import smtplib

    with smtplib.SMTP_SSL(a.host, a.port, context=context(a), timeout=10) as smtp:
        smtp.ehlo()
        code, message = smtp.noop()
        return f"{code} {message.decode()}"


@client("imaplib", "imaplib")
def _imaplib(a: argparse.Namespace) -> str:
    import imaplib

    imap = imaplib.IMAP4_SSL(a.host, a.port, ssl_context=context(a), timeout=10)
    try:
        typ, data = imap.noop()
        return f"{typ} {data[0].decode()}"
    finally:
        imap.logout()


@client("asyncpg", "asyncpg")
def _asyncpg(a: argparse.Namespace) -> str:
    import asyncpg

    # The libpq way: sslmode=verify-full + sslrootcert; "off" is sslmode=require (encrypted,
    # nothing verified).
    mode = "verify-full" if a.verify else "require"
    dsn = f"postgresql://certpin@{a.host}:{a.port}/certpin?sslmode={mode}"
    if a.verify:
        dsn += f"&sslrootcert={a.cafile}"

    async def connect() -> str:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return str(conn.get_server_version())
        finally:
            await conn.close()

    return asyncio.run(connect())


def _truststore_fetch(a: argparse.Namespace, truststore: Any) -> str:
    import http.client

    ctx = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if a.verify:
        ctx.load_verify_locations(a.cafile)
        ctx.check_hostname = a.check_hostname
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(a.host, a.port, timeout=10, context=ctx)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@client("truststore", "truststore")
def _truststore(a: argparse.Namespace) -> str:
    import truststore

    return _truststore_fetch(a, truststore)


@client("pip-truststore", "pip._vendor.truststore")
def _pip_truststore(a: argparse.Namespace) -> str:
    from pip._vendor import truststore

    return _truststore_fetch(a, truststore)


# -- outcome --------------------------------------------------------------------------------------


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps: causes, contexts, and the attributes client libraries keep
    the original error in (urllib3 ``reason``, aiohttp ``certificate_error``, botocore
    ``kwargs["error"]``, exception groups)."""
    seen: set[int] = set()
    found: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        found.append(item)
        stack += [item.__cause__, item.__context__]
        for name in ("reason", "os_error", "certificate_error", "_certificate_error", "args"):
            value = getattr(item, name, None)
            stack += list(value) if isinstance(value, tuple | list) else [value]
        stack += list(getattr(item, "exceptions", ()) or ())
        kwargs = getattr(item, "kwargs", None)
        if isinstance(kwargs, dict):
            stack += list(kwargs.values())
    return found


def outcome(exc: BaseException) -> dict[str, Any]:
    chain = causes(exc)
    return {
        "ok": False,
        "error": f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:3000],
        "chain": [f"{type(e).__module__}.{type(e).__qualname__}" for e in chain],
        "pin_error": any(
            type(e).__name__ == "PinValidationError" and isinstance(e, ssl.SSLCertVerificationError)
            for e in chain
        ),
        "cert_error": any(isinstance(e, ssl.SSLCertVerificationError) for e in chain),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("mode", choices=["verify", "off"])
    parser.add_argument("--cafile")
    parser.add_argument("--no-check-hostname", dest="check_hostname", action="store_false")
    parser.add_argument("--inject", metavar="POLICY")
    a = parser.parse_args(argv)
    a.verify = a.mode == "verify"
    if a.inject:
        for module in IMPORTS[a.client]:
            importlib.import_module(module)
        import certpin

        certpin.inject_into_ssl(certpin.Policy.from_file(a.inject))
    try:
        result: dict[str, Any] = {"ok": True, "body": CLIENTS[a.client](a)}
    except Exception as exc:
        result = outcome(exc)
    result["injected"] = ssl.SSLContext.__name__ == "InjectedContext"
    sys.stdout.flush()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
