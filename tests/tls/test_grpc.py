"""gRPC over real loopback servers: grpcio pinned by narrowing its trust anchors
(`certpin.tls.grpc`), and grpclib, which takes certpin's SSLContext like any Python client."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

import certpin
from _support.pki import CA, PKI, Leaf, make_key, pems, spki_pin
from certpin import DomainRule, KillSwitch, Pin, Policy
from certpin.tls.grpc import (
    UnenforceableRuleError,
    channel_credentials,
    root_certificates,
    secure_channel,
)

grpc: Any = pytest.importorskip("grpc")

METHOD = "/certpin.test.Echo/Ping"
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
_SPARE = spki_pin(make_key("p256"))
_SPARE2 = spki_pin(make_key("p256"))


def _policy(host: str = "localhost", **rule: Any) -> Policy:
    return Policy.from_dict({"domains": {host: rule}})


class GrpcServer:
    """A real grpcio server on 127.0.0.1 serving `leaf` (with its intermediates); one generic
    unary method that echoes bytes (no generated code). ``calls`` counts handler runs."""

    def __init__(self, leaf: Leaf) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(
            "certpin.test.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(self._ping)}
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers((handler,))
        credentials = grpc.ssl_server_credentials([(leaf.key_pem(), leaf.chain_pem())])
        self.port = self._server.add_secure_port("127.0.0.1:0", credentials)

    def _ping(self, request: bytes, context: Any) -> bytes:
        with self._lock:
            self.calls += 1
        return b"pong:" + request

    def __enter__(self) -> GrpcServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(None).wait(5)


def _call(channel: Any) -> bytes:
    with channel:
        return channel.unary_unary(METHOD)(b"hi", timeout=10)  # type: ignore[no-any-return]


def _call_with(credentials: Any, port: int, host: str = "localhost") -> bytes:
    return _call(grpc.secure_channel(f"{host}:{port}", credentials))


def _refused(credentials: Any, port: int, host: str = "localhost") -> Any:
    with pytest.raises(grpc.RpcError) as err:
        _call_with(credentials, port, host)
    return err.value.code()


@pytest.fixture
def good(pki: PKI) -> Iterator[GrpcServer]:
    with GrpcServer(pki.leaf) as server:
        yield server


@pytest.fixture
def rogue(rogue_pki: PKI) -> Iterator[GrpcServer]:
    with GrpcServer(rogue_pki.leaf) as server:
        yield server


@pytest.fixture
def both_roots(pki: PKI, rogue_pki: PKI) -> bytes:
    """A CA bundle that trusts the real root and the interceptor's."""
    return pems([pki.root, rogue_pki.root])


# -- grpcio: CA pins as trust anchors ------------------------------------------------------------


def test_a_pinned_root_passes_and_another_trusted_ca_is_refused(
    pki: PKI, good: GrpcServer, rogue: GrpcServer, both_roots: bytes
) -> None:
    # without certpin, the bundle trusts the interceptor
    assert _call_with(grpc.ssl_channel_credentials(both_roots), rogue.port) == b"pong:hi"
    assert rogue.calls == 1
    policy = _policy(ca_pins=[spki_pin(pki.root), _SPARE])
    credentials = channel_credentials(policy, "localhost", ca_certs=both_roots)
    assert _call_with(credentials, good.port) == b"pong:hi"
    assert _refused(credentials, rogue.port) == grpc.StatusCode.UNAVAILABLE
    assert (good.calls, rogue.calls) == (1, 1)  # the refused call never reached the handler


def test_only_the_pinned_certificates_are_kept(pki: PKI, rogue_pki: PKI, both_roots: bytes) -> None:
    policy = _policy(ca_pins=[spki_pin(pki.root), _SPARE])
    assert root_certificates(policy, "localhost", ca_certs=both_roots) == pki.root.pem()
    # a host no rule covers keeps the whole bundle
    assert root_certificates(policy, "127.0.0.1", ca_certs=both_roots) == both_roots


def test_an_intermediate_pin_is_an_anchor(pki: PKI, good: GrpcServer, both_roots: bytes) -> None:
    # a sibling intermediate under the same root: CA-valid, but not the pinned intermediate
    sibling = pki.root.issue_intermediate("Sibling Intermediate").issue_leaf("localhost")
    bundle = both_roots + pki.intermediate.pem()
    policy = _policy(ca_pins=[spki_pin(pki.intermediate), _SPARE])
    assert root_certificates(policy, "localhost", ca_certs=bundle) == pki.intermediate.pem()
    credentials = channel_credentials(policy, "localhost", ca_certs=bundle)
    # grpcio (1.85) accepts a chain that ends at a trusted intermediate
    assert _call_with(credentials, good.port) == b"pong:hi"
    with GrpcServer(sibling) as other:
        assert _call_with(grpc.ssl_channel_credentials(bundle), other.port) == b"pong:hi"
        assert _refused(credentials, other.port) == grpc.StatusCode.UNAVAILABLE
        assert other.calls == 1
    # the twin: certpin's own context decides the same for the sibling chain
    verdict = certpin.verdict("localhost", sibling.chain_der(), policy, NOW - dt.timedelta(1))
    assert verdict.status is certpin.VerdictStatus.FAILED


def test_pins_keep_the_ca_certificates_they_name(
    pki: PKI, good: GrpcServer, rogue: GrpcServer, both_roots: bytes
) -> None:
    # pins = [leaf key, root key]: the root is an anchor, the leaf key cannot be one
    policy = _policy(pins=[spki_pin(pki.leaf), spki_pin(pki.root)])
    assert root_certificates(policy, "localhost", ca_certs=both_roots) == pki.root.pem()
    credentials = channel_credentials(policy, "localhost", ca_certs=both_roots)
    assert _call_with(credentials, good.port) == b"pong:hi"
    assert _refused(credentials, rogue.port) == grpc.StatusCode.UNAVAILABLE


def test_every_set_slot_must_name_the_anchor(pki: PKI, both_roots: bytes) -> None:
    bundle = both_roots + pki.intermediate.pem()
    rule = {"pins": [spki_pin(pki.root), _SPARE], "ca_pins": [spki_pin(pki.intermediate), _SPARE]}
    with pytest.raises(UnenforceableRuleError, match="by the rule's pins and ca_pins"):
        root_certificates(_policy(**rule), "localhost", ca_certs=bundle)
    rule["pins"] = [spki_pin(pki.intermediate), _SPARE]
    assert root_certificates(_policy(**rule), "localhost", ca_certs=bundle) == (
        pki.intermediate.pem()
    )


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"leaf_pins": [_SPARE, _SPARE2]}, "leaf_pins cannot be enforced"),
        (
            {"leaf_pins": [_SPARE, _SPARE2], "ca_pins": ["ROOT", _SPARE]},
            "leaf_pins cannot be enforced",
        ),
        ({"ca_pins": [_SPARE, _SPARE2]}, "none of the 2 CA certificates"),
        ({"pins": ["LEAF", _SPARE]}, "none of the 2 CA certificates"),
        ({"ca_pins": ["ROOT"], "enforce": False}, "report-only"),
    ],
    ids=["leaf_pins", "leaf+ca", "unknown-ca", "leaf-key-in-pins", "report-only"],
)
def test_rules_grpcio_cannot_enforce_are_refused(
    pki: PKI, both_roots: bytes, rule: dict[str, Any], words: str
) -> None:
    names = {"ROOT": spki_pin(pki.root), "LEAF": spki_pin(pki.leaf)}
    for slot in ("pins", "leaf_pins", "ca_pins"):
        if slot in rule:
            rule[slot] = [names.get(p, p) for p in rule[slot]]
    with pytest.raises(UnenforceableRuleError) as err:
        channel_credentials(_policy(**rule), "localhost", ca_certs=both_roots)
    assert (err.value.host, err.value.pattern, err.value.client) == (
        "localhost",
        "localhost",
        "grpcio",
    )
    assert "cannot pin localhost with grpcio" in str(err.value)
    assert words in str(err.value)


def test_a_leaf_certificate_in_the_bundle_is_never_an_anchor(pki: PKI) -> None:
    # given the leaf itself, grpcio would trust it directly (partial chains); certpin keeps
    # CA certificates only, so a leaf key in pins cannot turn into an anchor
    bundle = pems([pki.leaf, pki.root])
    with pytest.raises(UnenforceableRuleError, match="none of the 2 CA certificates"):
        root_certificates(_policy(pins=[spki_pin(pki.leaf), _SPARE]), "localhost", ca_certs=bundle)


def test_unpinned_hosts_get_the_whole_bundle_or_are_denied(
    pki: PKI, rogue: GrpcServer, both_roots: bytes
) -> None:
    policy = _policy(ca_pins=[spki_pin(pki.root), _SPARE])
    credentials = channel_credentials(policy, "127.0.0.1", ca_certs=both_roots)
    assert _call_with(credentials, rogue.port, "127.0.0.1") == b"pong:hi"  # CA validation only
    deny = Policy.from_dict(
        {
            "unpinned_hosts": "deny",
            "domains": {"localhost": {"ca_pins": [spki_pin(pki.root), _SPARE]}},
        }
    )
    with pytest.raises(certpin.PinValidationError) as err:
        channel_credentials(deny, "127.0.0.1", ca_certs=both_roots)
    assert err.value.verdict is not None
    assert err.value.verdict.status is certpin.VerdictStatus.DENIED
    assert root_certificates(deny, "localhost", ca_certs=both_roots) == pki.root.pem()


def test_expired_rules_and_kill_switches_keep_the_whole_bundle(
    pki: PKI, both_roots: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    pins = (Pin.parse(spki_pin(pki.root)), Pin.parse(_SPARE))
    second = dt.timedelta(seconds=1)
    expiring = DomainRule("localhost", ca_pins=pins, expires=NOW)
    killed = DomainRule("localhost", ca_pins=pins, kill_switch=KillSwitch(NOW, "rotation"))
    for rule, enforced, relaxed in ((expiring, NOW - second, NOW), (killed, NOW, NOW - second)):
        policy = Policy.from_rules([rule])
        roots = root_certificates(policy, "localhost", ca_certs=both_roots, now=enforced)
        assert roots == pki.root.pem()
        with caplog.at_level(logging.WARNING, logger="certpin.enforce"):
            roots = root_certificates(policy, "localhost", ca_certs=both_roots, now=relaxed)
        assert roots == both_roots
        assert "grpcio connection to localhost set up with CA validation only" in caplog.text
        caplog.clear()


def test_ca_certs_from_a_file_and_in_der(pki: PKI, rogue_pki: PKI, tmp_path: Path) -> None:
    policy = _policy(ca_pins=[spki_pin(pki.root), _SPARE])
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pems([rogue_pki.root, pki.root]))
    assert root_certificates(policy, "localhost", ca_certs=bundle) == pki.root.pem()
    assert root_certificates(policy, "localhost", ca_certs=str(bundle)) == pki.root.pem()
    assert root_certificates(policy, "localhost", ca_certs=pki.root.der()) == pki.root.pem()


def test_a_bundle_with_anything_but_certificates_is_refused(pki: PKI) -> None:
    policy = _policy(ca_pins=[spki_pin(pki.root), _SPARE])
    bundle = pki.root.pem() + pki.leaf.key_pem()
    with pytest.raises(certpin.CertificateLoadError, match=r"ca_certs, line \d+: a private-key"):
        root_certificates(policy, "localhost", ca_certs=bundle)
    with pytest.raises(certpin.CertificateLoadError):
        root_certificates(policy, "localhost", ca_certs=b"not a certificate")


# -- grpcio: secure_channel looks the pins up by the name grpcio verifies -----------------------


def test_secure_channel_pins_the_target_host(
    pki: PKI, good: GrpcServer, rogue: GrpcServer, both_roots: bytes
) -> None:
    policy = _policy(ca_pins=[spki_pin(pki.root), _SPARE])
    assert _call(secure_channel(f"localhost:{good.port}", policy, ca_certs=both_roots))
    assert _call(secure_channel(f"dns:///localhost:{good.port}", policy, ca_certs=both_roots))
    with pytest.raises(grpc.RpcError):
        _call(secure_channel(f"localhost:{rogue.port}", policy, ca_certs=both_roots))
    # 127.0.0.1 has no rule: the interceptor's chain is CA-valid
    assert _call(secure_channel(f"ipv4:127.0.0.1:{rogue.port}", policy, ca_certs=both_roots))
    # ... unless grpcio is told to verify the certificate for localhost
    override = [("grpc.ssl_target_name_override", "localhost")]
    channel = secure_channel(
        f"127.0.0.1:{rogue.port}", policy, ca_certs=both_roots, options=override
    )
    with pytest.raises(grpc.RpcError):
        _call(channel)
    authority = [("grpc.default_authority", f"localhost:{rogue.port}")]
    channel = secure_channel(
        f"127.0.0.1:{rogue.port}", policy, ca_certs=both_roots, options=authority
    )
    with pytest.raises(grpc.RpcError):
        _call(channel)
    assert rogue.calls == 1


@pytest.mark.parametrize("target", ["unix:/tmp/sock", "xds:///svc", "ipv4:1.2.3.4:1,5.6.7.8:1"])
def test_secure_channel_refuses_targets_it_cannot_read(
    pki: PKI, both_roots: bytes, target: str
) -> None:
    with pytest.raises(certpin.ConfigurationError, match="cannot tell which host name"):
        secure_channel(target, _policy(ca_pins=[spki_pin(pki.root), _SPARE]), ca_certs=both_roots)


# -- grpclib: certpin's SSLContext -----------------------------------------------------------------


class _RecordingSSLObject(ssl.SSLObject):
    """Server side: every application byte each TLS connection decrypted."""

    received: dict[int, bytearray] = {}

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002
        data = super().read(len, buffer) if buffer is not None else super().read(len)
        chunk = bytes(buffer[:data]) if buffer is not None else data
        self.received.setdefault(id(self), bytearray()).extend(chunk)
        return data


def _grpclib_exchange(
    leaf: Leaf, ctx: ssl.SSLContext, received: dict[int, bytearray]
) -> tuple[str | BaseException, int]:
    """Serve `leaf` with grpclib, call it once through a client using `ctx`; returns the reply
    (or the client's exception) and how often the handler ran."""
    grpclib_server = pytest.importorskip("grpclib.server")
    from google.protobuf.wrappers_pb2 import StringValue
    from grpclib.client import Channel
    from grpclib.const import Cardinality, Handler

    calls = 0

    class Echo:
        async def ping(self, stream: Any) -> None:
            nonlocal calls
            calls += 1
            request = await stream.recv_message()
            await stream.send_message(StringValue(value="pong:" + request.value))

        def __mapping__(self) -> dict[str, Any]:
            return {METHOD: Handler(self.ping, Cardinality.UNARY_UNARY, StringValue, StringValue)}

    async def run(tmp: Path) -> str | BaseException:
        certfile, keyfile = leaf.write(tmp)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(certfile, keyfile)
        server_ctx.set_alpn_protocols(["h2"])
        server_ctx.sslobject_class = type(
            "Recording", (_RecordingSSLObject,), {"received": received}
        )
        server = grpclib_server.Server([Echo()])
        await server.start("127.0.0.1", 0, ssl=server_ctx)
        port = server._server.sockets[0].getsockname()[1]
        channel = Channel("localhost", port, ssl=ctx)
        try:
            async with channel.request(
                METHOD, Cardinality.UNARY_UNARY, StringValue, StringValue, timeout=10
            ) as stream:
                await stream.send_message(StringValue(value="hi"), end=True)
                reply = await stream.recv_message()
                return str(reply.value)
        except Exception as exc:
            return exc
        finally:
            channel.close()
            server.close()
            await server.wait_closed()

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp)))
    return result, calls


def _context(pki: PKI, *roots: CA, **rule: Any) -> ssl.SSLContext:
    ctx = certpin.create_default_context(_policy(**rule), cadata=pems(roots).decode())
    ctx.set_alpn_protocols(["h2"])  # what grpclib's own default context offers
    return ctx


def test_grpclib_with_certpins_context(pki: PKI) -> None:
    received: dict[int, bytearray] = {}
    ctx = _context(pki, pki.root, pins=[spki_pin(pki.intermediate), _SPARE])
    reply, calls = _grpclib_exchange(pki.leaf, ctx, received)
    assert (reply, calls) == ("pong:hi", 1)
    assert any(bytes(b).startswith(b"PRI * HTTP/2.0") for b in received.values())


def test_grpclib_refuses_a_rogue_but_trusted_ca_before_any_byte(pki: PKI, rogue_pki: PKI) -> None:
    received: dict[int, bytearray] = {}
    ctx = _context(pki, pki.root, rogue_pki.root, pins=[spki_pin(pki.intermediate), _SPARE])
    reply, calls = _grpclib_exchange(rogue_pki.leaf, ctx, received)
    assert isinstance(reply, certpin.PinValidationError), repr(reply)
    assert calls == 0
    assert all(len(b) == 0 for b in received.values())  # not even the HTTP/2 preface
    # the twin: the same client without the pin talks to the interceptor
    plain = certpin.create_default_context(
        Policy.from_dict({"domains": {}}), cadata=pems([pki.root, rogue_pki.root]).decode()
    )
    reply, calls = _grpclib_exchange(rogue_pki.leaf, plain, received)
    assert (reply, calls) == ("pong:hi", 1)
    assert any(bytes(b).startswith(b"PRI * HTTP/2.0") for b in received.values())
