"""Attacks on process-wide pinning (`certpin.inject_into_ssl`, `certpin run`), issue #16.

Every attack runs in a fresh interpreter (`_inject_runner.py`): injection is process-wide. The
servers run here, on loopback, with plain contexts. The client trusts the good root *and* the
rogue root: the rogue server's certificate is CA-valid for every name, only pins can stop it.
The policy pins the good *intermediate* (a CA pin: the case where a name check matters, since
any certificate that CA issues carries the pin) for 127.0.0.1, 127.0.0.10, ::1, pinned.test
(with subdomains) and bücher.test; ``localhost`` is not pinned.

Each attack asserts the refusal and, where bytes could flow, that the server received none;
its twin (``MODE = "plain"``, no certpin) shows the attack succeeds without certpin. Holes
found were fixed in certpin (recorded verification settings, unreadable names refused, the
peer's address when there is no server_hostname, class-level socket classes refused).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from _support.pki import PKI, make_key, make_pki, spki_pin
from _support.servers import RecordingForwarder, TLSServer

RUNNER = Path(__file__).with_name("_inject_runner.py")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "process-wide.md"
SECRET = b"hunter2"  # in every request the runner sends
SANS = (
    "localhost",
    "127.0.0.1",
    "127.0.0.10",
    "::1",
    "pinned.test",
    "pinned.test.",  # OpenSSL does not strip a trailing dot: a rogue CA issues it as is
    "a.pinned.test",
    "xn--a.pinned.test",  # not valid punycode: OpenSSL compares it as a string
    "xn--bcher-kva.test",
    "127.1",
    "0x7f.1",
    "2130706433",
)
PINNED_KEYS = ("127.0.0.1", "127.0.0.10", "::1", "pinned.test", "bücher.test")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _has_ipv6()


def _forged_leaf(issuer: x509.Certificate) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf that *names* the pinned intermediate as issuer but is signed by its own key: no
    CA would verify it; a chain built without verification still runs through the pinned CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


@dataclass
class World:
    directory: Path
    good: PKI
    config: Path
    policy: Path
    servers: dict[str, Any]
    _marks: dict[str, bytes] = field(default_factory=dict)

    def run(self, attack: str, mode: str = "inject") -> dict[str, Any]:
        for server in self.servers.values():
            server.wait_idle()
        self._marks = {name: _received(s) for name, s in self.servers.items()}
        done = subprocess.run(
            [sys.executable, str(RUNNER), attack, str(self.config), mode],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def received(self, name: str) -> bytes:
        """What server `name` received (decrypted, or raw for the tap) since the last run."""
        server = self.servers[name]
        server.wait_idle()
        return _received(server)[len(self._marks[name]) :]


def _received(server: Any) -> bytes:
    if isinstance(server, RecordingForwarder):
        return server.received
    return server.total_received()


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SSL_CERT_", "CERTPIN_", "PYTHONWARNINGS")) and k != "PYTHONPATH"
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _policy_text(pin: str, spare: str, *, deny: bool = False) -> str:
    head = 'unpinned_hosts = "deny"\n\n' if deny else ""
    rules = []
    for key in PINNED_KEYS:
        extra = "include_subdomains = true\n" if key == "pinned.test" else ""
        rules.append(f'[domains."{key}"]\n{extra}pins = ["{pin}", "{spare}"]\n')
    return head + "\n".join(rules)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = tmp_path_factory.mktemp("inject-attacks")
    good = make_pki(SANS)
    rogue = make_pki(SANS, root_name="Rogue Root CA", intermediate_name="Rogue Issuing CA")
    untrusted = make_pki(SANS, root_name="Untrusted Root", intermediate_name="Untrusted CA")
    # CA-valid, issued by the pinned intermediate, for another name: pins match, the name not.
    other = good.intermediate.issue_leaf("elsewhere.example")
    forged, forged_key = _forged_leaf(good.intermediate.cert)
    forged_cert = d / "forged-chain.pem"
    forged_cert.write_bytes(
        forged.public_bytes(serialization.Encoding.PEM) + good.intermediate.pem()
    )
    forged_keyfile = d / "forged-key.pem"
    forged_keyfile.write_bytes(
        forged_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cafile = d / "trusted.pem"
    cafile.write_bytes(good.root.pem() + rogue.root.pem())
    pin, spare = spki_pin(good.intermediate), spki_pin(make_key("p256"))
    policy = d / "policy.toml"
    policy.write_text(_policy_text(pin, spare), encoding="utf-8")
    deny = d / "deny.toml"
    deny.write_text(_policy_text(pin, spare, deny=True), encoding="utf-8")

    servers: dict[str, Any] = {
        "good": TLSServer(*good.leaf.write(d / "good")),
        "rogue": TLSServer(*rogue.leaf.write(d / "rogue")),
        "other": TLSServer(*other.write(d / "other")),
        "forged": TLSServer(forged_cert, forged_keyfile),
        "untrusted": TLSServer(*untrusted.leaf.write(d / "untrusted")),
    }
    if IPV6:
        servers["good6"] = TLSServer(*good.leaf.write(d / "good"), host="::1")
        servers["rogue6"] = TLSServer(*rogue.leaf.write(d / "rogue"), host="::1")
    for server in servers.values():
        server.start()
    servers["rogue_tap"] = RecordingForwarder(servers["rogue"].address).start()
    config = d / "config.json"
    config.write_text(
        json.dumps(
            {
                "cafile": str(cafile),
                "policy": str(policy),
                "deny_policy": str(deny),
                "ports": {name: s.port for name, s in servers.items()},
                "spellings": SPELLINGS + (SPELLINGS_V6 if IPV6 else []),
            }
        ),
        encoding="utf-8",
    )
    try:
        yield World(d, good, config, policy, servers)
    finally:
        for server in reversed(list(servers.values())):
            server.stop()


# -- the context's settings changed between wrap and handshake ------------------------------------


def test_verify_mode_raised_after_wrap_does_not_pass_a_forged_chain(world: World) -> None:
    result = world.run("verify_mode_flipped_after_wrap")
    assert result == {"forged": "pin"}
    assert SECRET not in world.received("forged")


def test_verify_none_to_pinned_host_is_refused_even_with_a_forged_chain(world: World) -> None:
    """The twin of the attack above, without the flip: CERT_NONE is refused, nothing sent."""
    assert world.run("verify_none_throughout") == {"forged": "pin"}
    assert world.received("forged") == b""
    assert world.run("verify_none_throughout", "plain") == {"forged": "ok"}  # no certpin
    assert SECRET in world.received("forged")


def test_check_hostname_turned_on_after_wrap_still_checks_the_name(world: World) -> None:
    result = world.run("check_hostname_turned_on_after_wrap")
    assert result == {"other": "pin"}
    assert world.received("other") == b""


def test_check_hostname_off_name_is_checked_against_the_verified_leaf(world: World) -> None:
    assert world.run("check_hostname_off_throughout") == {"other": "pin", "good": "ok"}
    assert SECRET not in world.received("other")
    # Twin: without certpin the certificate issued for another name is accepted.
    assert world.run("check_hostname_off_throughout", "plain") == {"other": "ok", "good": "ok"}
    assert SECRET in world.received("other")


def test_cert_optional_with_check_hostname_off_is_still_pinned(world: World) -> None:
    result = world.run("cert_optional")
    assert result["rogue"] == "pin" and result["other"] == "pin" and result["good"] == "ok"
    assert result["untrusted"].startswith("cert: ")  # OpenSSL verifies with CERT_OPTIONAL too
    assert SECRET not in world.received("rogue") + world.received("other")
    plain = world.run("cert_optional", "plain")
    assert plain["rogue"] == plain["other"] == "ok"


# -- host spellings -------------------------------------------------------------------------------

SPELLINGS = [
    "127.0.0.1",
    " 127.0.0.1",  # OpenSSL's sscanf skips the space: the address 127.0.0.1
    "127.0.0.1 ",
    "127.1",
    "0x7f.1",
    "2130706433",
    "PINNED.TEST",
    "pinned.test.",
    "Pinned.Test.",
    "A.PINNED.TEST",
    "bücher.test",
    "BÜCHER.test",
    "xn--bcher-kva.test",
    "XN--BCHER-KVA.TEST",
    "pinned.test\x00",
    "pinned.test\n",
]
SPELLINGS_V6 = ["::1", "0:0:0:0:0:0:0:1", "0::0:1", "::0001", "[::1]"]


def test_every_spelling_of_a_pinned_host_is_pinned(world: World) -> None:
    result = world.run("spellings")
    accepted = []
    for spelling, (rogue, good) in result.items():
        assert rogue != "ok", f"{spelling!r} reached the rogue server: {result}"
        if good == "ok":
            accepted.append(spelling)
            assert rogue == "pin", (spelling, rogue)
        else:  # the spelling fails before certpin (the name check, or ssl refuses it)
            assert not good.startswith("error: PinValidation"), (spelling, good)
            assert rogue == good or rogue.startswith("cert: "), (spelling, rogue, good)
    assert SECRET not in world.received("rogue") + world.received("rogue6" if IPV6 else "rogue")
    # Enough spellings reach the good server to make the test mean something.
    assert {"127.0.0.1", "PINNED.TEST", "pinned.test.", "bücher.test", "127.1"} <= set(accepted)
    if IPV6:
        assert {"::1", "0:0:0:0:0:0:0:1"} <= set(accepted)


def test_spellings_reach_the_rogue_server_without_certpin(world: World) -> None:
    result = world.run("spellings", "plain")
    assert result["127.1"][0] == result["bücher.test"][0] == result["pinned.test."][0] == "ok"


def test_names_certpin_cannot_read_are_refused(world: World) -> None:
    result = world.run("unreadable_names")
    assert result == {"127.0.0.010": "pin", "xn--a.pinned.test": "pin"}
    assert SECRET not in world.received("rogue")


def test_readable_twins_of_the_unreadable_names_are_pinned(world: World) -> None:
    assert world.run("readable_twins") == {"127.0.0.10": "pin", "a.pinned.test": "pin"}
    assert world.run("unreadable_names", "deny") == {
        "127.0.0.010": "pin",
        "xn--a.pinned.test": "pin",
    }
    assert SECRET not in world.received("rogue")
    assert world.run("unreadable_names", "plain") == {
        "127.0.0.010": "ok",
        "xn--a.pinned.test": "ok",
    }


def test_no_server_hostname_to_a_pinned_address_is_refused(world: World) -> None:
    result = world.run("no_server_hostname")
    assert result["rogue"] == "pin"
    assert SECRET not in world.received("rogue")


def test_no_server_hostname_under_deny_checks_the_peer_address(world: World) -> None:
    # The peer's address is what the certificate must be for: the genuine server passes, the
    # rogue one gets nothing.
    assert world.run("no_server_hostname", "deny") == {"rogue": "pin", "good": "ok"}
    assert world.received("rogue") == b""
    assert world.run("no_server_hostname", "plain") == {"rogue": "ok", "good": "ok"}


# -- the socket classes ---------------------------------------------------------------------------


def test_plain_socket_classes_set_on_a_context_keep_pinning(world: World) -> None:
    assert world.run("instance_socket_classes") == {"blocking": "pin", "asyncio": "pin"}
    assert SECRET not in world.received("rogue")
    assert world.run("instance_socket_classes", "plain") == {"blocking": "ok", "asyncio": "ok"}


def test_class_level_socket_class_assignment_keeps_pinning(world: World) -> None:
    refused = ["InsecureContextError", "InsecureContextError"]
    assert world.run("class_socket_classes") == {"assignment": refused, "blocking": "pin"}
    assert SECRET not in world.received("rogue")


# -- I/O before the handshake ---------------------------------------------------------------------


def test_first_io_before_the_handshake_is_pinned_and_leaves_no_cleartext(world: World) -> None:
    result = world.run("io_before_handshake")
    assert set(result) == {"send", "sendall", "write", "sendfile", "makefile", "recv"}
    for name, (first, *raw) in result.items():
        assert first == "pin", (name, first)
        assert all(not r.endswith(": sent") for r in raw), (name, raw)
    # The interceptor on the path saw TLS records only: never the request in cleartext.
    assert SECRET not in world.received("rogue_tap")
    assert world.received("rogue") == b""
    plain = world.run("io_before_handshake", "plain")
    assert plain["sendall"][0] == "ok" and SECRET in world.received("rogue")


def test_memory_bio_written_before_the_handshake_is_pinned(world: World) -> None:
    result = world.run("memory_bio_write_first")
    assert result["write"] == "pin" and result["steps"] >= 1
    assert result["again"] == "pin"  # the object stays dead
    assert world.received("rogue") == b""
    assert world.run("memory_bio_write_first", "plain")["write"] == "ok"


def test_asyncio_default_context_and_start_tls_are_pinned(world: World) -> None:
    assert world.run("asyncio_clients") == {
        "ssl_true": "pin",
        "start_tls": "pin",
        "cert_none": "pin",
    }
    assert world.received("rogue") == b""
    assert world.run("asyncio_clients", "plain") == {
        "ssl_true": "ok",
        "start_tls": "ok",
        "cert_none": "ok",
    }
    assert SECRET in world.received("rogue")


# -- sessions -------------------------------------------------------------------------------------


def test_session_from_an_unpinned_host_does_not_carry_a_pinned_host(world: World) -> None:
    result = world.run("session_from_unpinned_host")
    assert result["have_session"] and result["resume"] == "pin"
    assert world.received("rogue").count(SECRET) == 1  # the unpinned request only
    plain = world.run("session_from_unpinned_host", "plain")
    assert plain["resume"] == "ok" and plain["reused"]  # OpenSSL resumes it, names unchecked


def test_session_from_an_unverified_handshake_is_refused(world: World) -> None:
    result = world.run("session_from_cert_none")
    assert result["first"] == "pin" and result["resume"] == "pin"
    assert world.received("rogue") == b""


def test_session_verified_for_the_pinned_host_resumes(world: World) -> None:
    """The twin: resumption works, and passes on the remembered verified chain."""
    assert world.run("session_good_resumes") == {
        "have_session": True,
        "resume": "ok",
        "reused": True,
    }


# -- injection lifetime ---------------------------------------------------------------------------


def test_handshakes_pin_while_another_thread_extracts_and_injects(world: World) -> None:
    assert world.run("threads_during_churn") == {"results": ["pin"], "count": 20}
    assert world.received("rogue") == b""


def test_a_name_bound_while_injected_outlives_extract_and_keeps_pinning(world: World) -> None:
    """Documents what `extract_from_ssl` cannot undo: a module outside certpin's table that did
    ``from ssl import SSLContext`` while injected keeps certpin's class (fail-safe: it pins),
    while ``ssl`` itself and fresh default contexts are plain again."""
    result = world.run("name_bound_while_injected")
    assert result == {
        "ssl_restored": True,
        "binding": "InjectedContext",
        "rogue": "pin",
        "fresh_default": "ok",
    }


# -- reports --------------------------------------------------------------------------------------


def test_ca_failures_are_reported_once_per_handshake_and_only_for_pinned_hosts(
    world: World,
) -> None:
    result = world.run("reports")
    for key in ("pinned_1", "pinned_2", "pinned_unconnected", "pinned_asyncio"):
        assert result[key][0].startswith("cert: "), (key, result[key])
        assert result[key][1] == ["UNTRUSTED"], (key, result[key])
    for key in ("unpinned", "unpinned_asyncio"):
        assert result[key][0].startswith("cert: ") and result[key][1] == [], (key, result[key])
    assert result["name_check"] == ["pin", ["UNTRUSTED"]]
    assert result["pin_failure"] == ["pin", ["FAILED"]]


# -- certpin run ----------------------------------------------------------------------------------

PROBE = (
    "import ssl, sys; print(type(ssl.create_default_context()).__name__, 'certpin' in sys.modules)"
)


def _certpin_run(
    policy: Path, *program: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("certpin")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "certpin"]
    return subprocess.run(
        [*command, "run", "--policy", str(policy), "--", *program],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or _env(),
        check=False,
    )


@pytest.mark.parametrize("flag", ["-I", "-E", "-S"])
def test_run_does_not_reach_isolated_interpreters_as_documented(world: World, flag: str) -> None:
    """``python -I``/``-E``/``-S`` skip the start-up hook: unpinned, and docs/process-wide.md
    says so. The twin (no flag) is pinned."""
    done = _certpin_run(world.policy, sys.executable, flag, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SSLContext False"  # no hook ran, certpin never imported
    assert f"`{flag}`" in DOCS.read_text(encoding="utf-8")
    twin = _certpin_run(world.policy, sys.executable, "-c", PROBE)
    assert twin.stdout.strip() == "InjectedContext True", twin.stderr


def test_run_chains_an_existing_sitecustomize_and_still_pins(world: World, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['THEIRS_RAN'] = '1'\n")
    env = _env()
    env["PYTHONPATH"] = str(theirs)
    probe = PROBE[:-1] + ", __import__('os').environ.get('THEIRS_RAN'))"
    done = _certpin_run(world.policy, sys.executable, "-c", probe, env=env)
    assert done.stdout.strip() == "InjectedContext True 1", done.stderr
    plain = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('THEIRS_RAN'))"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.stdout.strip() == "1"  # the twin: their hook runs without certpin too


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_child_fails_closed_when_the_policy_is_gone(
    world: World, tmp_path: Path, damage: str
) -> None:
    """PROGRAM (a shell script) removes or breaks the policy, then starts Python: exit 78."""
    policy = tmp_path / "policy.toml"
    policy.write_text(world.policy.read_text(encoding="utf-8"), encoding="utf-8")
    action = f"rm {policy}" if damage == "delete" else f"echo 'pins = [' > {policy}"
    script = tmp_path / "program.sh"
    script.write_text(f'#!/bin/sh\n{action}\nexec "{sys.executable}" -c "print(1)"\n')
    script.chmod(0o755)
    done = _certpin_run(policy, str(script))
    assert done.returncode == 78, (done.stdout, done.stderr)
    assert done.stdout == ""  # the program's code never ran
    assert "refusing to run" in done.stderr and str(policy) in done.stderr


def test_python_started_by_a_shell_script_is_pinned(world: World, tmp_path: Path) -> None:
    port = world.servers["rogue"].port
    cafile = str(world.directory / "trusted.pem")
    code = (
        f"import ssl, socket; ctx = ssl.create_default_context(cafile={cafile!r}); "
        f"s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), "
        "server_hostname='127.0.0.1'); s.sendall(b'GET /hunter2 HTTP/1.0\\r\\n\\r\\n'); "
        "print('sent')"
    )
    script = tmp_path / "program.sh"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{code}"\n')
    script.chmod(0o755)
    before = world.servers["rogue"].total_received()
    done = _certpin_run(world.policy, str(script))
    assert done.returncode == 1 and "PinValidationError" in done.stderr, done.stderr
    world.servers["rogue"].wait_idle()
    assert world.servers["rogue"].total_received() == before
    plain = subprocess.run([str(script)], capture_output=True, text=True, env=_env(), check=False)
    assert plain.stdout.strip() == "sent", plain.stderr  # the twin: unpinned, the MITM wins
