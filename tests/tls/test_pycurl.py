"""`certpin.tls.pycurl`: a policy's leaf pins as libcurl's CURLOPT_PINNEDPUBLICKEY, checked
with real pycurl (and the curl command line) against real loopback TLS servers."""

from __future__ import annotations

import datetime as dt
import io
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import certpin
from _support.pki import PKI, KeyType, PKIFiles, make_key, make_pki, pems, spki_pin, write_pki_files
from _support.servers import DEFAULT_BODY, TLSServer
from certpin import DomainRule, KillSwitch, Pin, Policy
from certpin.tls.pycurl import UnenforceableRuleError, pin_curl, pinned_public_key

pycurl: Any = pytest.importorskip("pycurl")

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _leaf_policy(host: str, *leaf_pins: str, **rule: Any) -> Policy:
    return Policy.from_dict({"domains": {host: {"leaf_pins": list(leaf_pins), **rule}}})


def _curl_pin(pin: str) -> str:
    assert pin.startswith("sha256/")
    return "sha256//" + pin.removeprefix("sha256/")


class Curl:
    """One pycurl handle for a loopback server: localhost resolves to 127.0.0.1."""

    def __init__(self, server: TLSServer, cafile: Path) -> None:
        self.handle = pycurl.Curl()
        self.server = server
        self.body = io.BytesIO()
        self.handle.setopt(pycurl.CAINFO, str(cafile))
        self.handle.setopt(pycurl.RESOLVE, [f"localhost:{server.port}:127.0.0.1"])
        self.handle.setopt(pycurl.WRITEDATA, self.body)
        self.handle.setopt(pycurl.TIMEOUT, 10)

    def url(self, host: str = "localhost", path: str = "/") -> str:
        return self.server.url(path, host)

    def perform(self) -> tuple[int, bytes]:
        self.body.seek(0)
        self.body.truncate()
        self.handle.perform()
        return self.handle.getinfo(pycurl.RESPONSE_CODE), self.body.getvalue()


@pytest.fixture
def curl(server: TLSServer, tmp_pki_files: PKIFiles) -> Iterator[Curl]:
    c = Curl(server, tmp_pki_files.root_ca)
    yield c
    c.handle.close()


def _curl_error(exc: BaseException) -> int:
    assert isinstance(exc, pycurl.error), repr(exc)
    return int(exc.args[0])


# -- the pin string ------------------------------------------------------------------------------


def test_the_pin_string_is_curls_notation_of_the_leaf_pins(pki: PKI) -> None:
    spare = spki_pin(make_key("p256"))
    policy = _leaf_policy("localhost", spki_pin(pki.leaf), spare)
    value = pinned_public_key(policy, "https://localhost:8443/x?y#z")
    # computed independently of certpin (_support.pki hashes the key with cryptography)
    assert value == f"{_curl_pin(spki_pin(pki.leaf))};{_curl_pin(spare)}"
    assert pinned_public_key(policy, "LOCALHOST.") == value
    assert pinned_public_key(policy, "127.0.0.1") is None  # no rule: CA validation only


def test_an_unpinned_host_under_deny_is_refused(pki: PKI) -> None:
    policy = Policy.from_dict(
        {
            "unpinned_hosts": "deny",
            "domains": {"localhost": {"leaf_pins": [spki_pin(pki.leaf)], "allow_single_pin": True}},
        }
    )
    assert pinned_public_key(policy, "localhost") == _curl_pin(spki_pin(pki.leaf))
    with pytest.raises(certpin.PinValidationError) as err:
        pinned_public_key(policy, "https://127.0.0.1/")
    assert err.value.verdict is not None
    assert err.value.verdict.status is certpin.VerdictStatus.DENIED
    assert "127.0.0.1" in str(err.value)


_SPARE = spki_pin(make_key("p256"))
_SPARE2 = spki_pin(make_key("p256"))


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"pins": [_SPARE, _SPARE2]}, "leaf_pins instead"),
        ({"ca_pins": [_SPARE, _SPARE2]}, "ca_pins cannot be enforced"),
        (
            {"leaf_pins": [_SPARE], "ca_pins": [_SPARE, _SPARE2], "allow_single_pin": True},
            "ca_pins",
        ),
        (
            {"leaf_pins": [_SPARE, "sha512/" + "A" * 86 + "=="], "allow_single_pin": True},
            "not other digests or certificate fingerprints",
        ),
        (
            {"leaf_pins": [_SPARE, "cert-sha256/" + "A" * 43 + "="], "allow_single_pin": True},
            "certificate fingerprints",
        ),
        ({"leaf_pins": [_SPARE], "enforce": False}, "report-only"),
    ],
    ids=["pins", "ca_pins", "leaf+ca", "sha512", "certificate", "report-only"],
)
def test_rules_curl_cannot_express_are_refused(rule: dict[str, Any], words: str) -> None:
    policy = Policy.from_dict({"domains": {"api.example.com": rule}})
    with pytest.raises(UnenforceableRuleError) as err:
        pinned_public_key(policy, "https://api.example.com/")
    assert isinstance(err.value, certpin.ConfigurationError)
    assert (err.value.host, err.value.pattern, err.value.client) == (
        "api.example.com",
        "api.example.com",
        "pycurl",
    )
    assert "cannot pin api.example.com with pycurl" in str(err.value)
    assert words in str(err.value)


def test_the_same_rule_with_leaf_pins_is_accepted() -> None:
    # the twin of the refusals above: leaf_pins of sha256 keys are what curl can express
    policy = Policy.from_dict({"domains": {"api.example.com": {"leaf_pins": [_SPARE, _SPARE2]}}})
    assert pinned_public_key(policy, "https://api.example.com/") == (
        f"{_curl_pin(_SPARE)};{_curl_pin(_SPARE2)}"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@localhost/",
        "https://localhost\\@evil.test/",
        "https://local host/",
        "https://bücher.test/",
        "https://%6cocalhost/",
        "localhost/path",
    ],
)
def test_urls_libcurl_could_read_differently_are_refused(curl: Curl, url: str) -> None:
    policy = _leaf_policy("localhost", _SPARE, _SPARE2)
    with pytest.raises(certpin.ConfigurationError):
        pin_curl(curl.handle, policy, url)


# -- real transfers ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["p256", "rsa2048", "ed25519"])
def test_the_leaf_key_passes_and_a_wrong_key_is_refused_before_any_byte(
    key: KeyType, tmp_path: Path
) -> None:
    pki = make_pki(key=key)
    files = write_pki_files(pki, tmp_path / key)
    with TLSServer(files.certfile, files.keyfile) as server:
        c = Curl(server, files.root_ca)
        good = _leaf_policy("localhost", _SPARE, spki_pin(pki.leaf))
        assert pin_curl(c.handle, good, c.url()) is not None
        assert c.perform() == (200, DEFAULT_BODY)
        assert server.wait_idle() and b"GET / HTTP/1.1" in server.total_received()

        wrong = _leaf_policy("localhost", _SPARE, _SPARE2)
        before = server.total_received()
        pin_curl(c.handle, wrong, c.url("localhost", "/secret"))
        with pytest.raises(pycurl.error) as err:
            c.perform()
        assert _curl_error(err.value) == pycurl.E_SSL_PINNEDPUBKEYNOTMATCH == 90
        assert server.wait_idle() and server.total_received() == before  # not one byte more
        c.handle.close()


def test_a_rogue_but_trusted_ca_is_refused(
    rogue_server: TLSServer, pki: PKI, rogue_pki: PKI, tmp_path: Path
) -> None:
    both = tmp_path / "both-roots.pem"
    both.write_bytes(pems([pki.root, rogue_pki.root]))
    c = Curl(rogue_server, both)
    # without certpin the interceptor's chain verifies: the client trusts its CA
    c.handle.setopt(pycurl.URL, c.url())
    assert c.perform() == (200, DEFAULT_BODY)
    policy = _leaf_policy("localhost", spki_pin(pki.leaf), _SPARE)
    pin_curl(c.handle, policy, c.url("localhost", "/secret"))
    with pytest.raises(pycurl.error) as err:
        c.perform()
    assert _curl_error(err.value) == 90
    assert rogue_server.wait_idle()
    assert rogue_server.total_received().count(b"GET /") == 1  # the unpinned fetch only
    assert b"/secret" not in rogue_server.total_received()
    c.handle.close()


def test_a_pinned_ip_address_host(curl: Curl, pki: PKI) -> None:
    policy = _leaf_policy("127.0.0.1", spki_pin(pki.leaf), _SPARE)
    pin_curl(curl.handle, policy, curl.url("127.0.0.1"))
    assert curl.perform() == (200, DEFAULT_BODY)
    pin_curl(curl.handle, _leaf_policy("127.0.0.1", _SPARE, _SPARE2), curl.url("127.0.0.1"))
    with pytest.raises(pycurl.error) as err:
        curl.perform()
    assert _curl_error(err.value) == 90


def test_an_unpinned_host_gets_no_pin_and_a_reused_handle_fails_closed(
    curl: Curl, server: TLSServer, tmp_pki_files: PKIFiles
) -> None:
    policy = _leaf_policy("localhost", _SPARE, _SPARE2)  # wrong pins for localhost only
    assert pin_curl(curl.handle, policy, curl.url("localhost")) is not None
    with pytest.raises(pycurl.error):
        curl.perform()
    # pycurl cannot unset the pin: on the same handle the unpinned host fails (closed) ...
    assert pin_curl(curl.handle, policy, curl.url("127.0.0.1")) is None
    with pytest.raises(pycurl.error) as err:
        curl.perform()
    assert _curl_error(err.value) == 90
    # ... and on a fresh handle CA validation alone applies
    fresh = Curl(server, tmp_pki_files.root_ca)
    assert pin_curl(fresh.handle, policy, fresh.url("127.0.0.1")) is None
    assert fresh.perform() == (200, DEFAULT_BODY)
    fresh.handle.close()


def test_verification_is_turned_back_on(
    server: TLSServer, rogue_pki_files: PKIFiles, pki: PKI
) -> None:
    # the client trusts only the rogue root, so the server's chain does not verify
    c = Curl(server, rogue_pki_files.root_ca)
    c.handle.setopt(pycurl.SSL_VERIFYPEER, 0)
    c.handle.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.handle.setopt(pycurl.URL, c.url())
    assert c.perform() == (200, DEFAULT_BODY)  # unverified: accepted
    pin_curl(c.handle, _leaf_policy("localhost", spki_pin(pki.leaf), _SPARE), c.url())
    with pytest.raises(pycurl.error) as err:  # right leaf key, but the chain must verify too
        c.perform()
    assert _curl_error(err.value) == pycurl.E_PEER_FAILED_VERIFICATION
    c.handle.close()


def test_redirects_are_not_followed(tmp_pki_files: PKIFiles, pki: PKI) -> None:
    redirect = (
        b"HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:1/elsewhere\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile, response=redirect) as server:
        c = Curl(server, tmp_pki_files.root_ca)
        c.handle.setopt(pycurl.FOLLOWLOCATION, 1)
        c.handle.setopt(pycurl.URL, c.url())
        with pytest.raises(pycurl.error):  # followed: port 1 refuses the connection
            c.perform()
        pin_curl(c.handle, _leaf_policy("localhost", spki_pin(pki.leaf), _SPARE), c.url())
        assert c.perform() == (302, b"")
        assert c.handle.getinfo(pycurl.REDIRECT_URL) == "https://127.0.0.1:1/elsewhere"
        c.handle.close()


def test_cleartext_to_a_pinned_host_is_refused(curl: Curl) -> None:
    policy = _leaf_policy("localhost", _SPARE, _SPARE2)
    with pytest.raises(certpin.InsecureContextError, match="http:// is not TLS"):
        pin_curl(curl.handle, policy, "http://localhost/")
    # an unpinned host may use http://
    assert pin_curl(curl.handle, policy, "http://127.0.0.1/") is None


def test_expired_rules_and_kill_switches_fall_back_to_ca_validation(
    server: TLSServer, tmp_pki_files: PKIFiles, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = (Pin.parse(_SPARE), Pin.parse(_SPARE2))
    live = DomainRule("localhost", leaf_pins=wrong, expires=NOW)
    killed = DomainRule(
        "localhost", leaf_pins=wrong, kill_switch=KillSwitch(NOW, reason="key lost")
    )
    second = dt.timedelta(seconds=1)
    # (rule, an instant its pins apply, an instant they do not): a rule expires at NOW, a kill
    # switch holds until NOW
    for rule, enforced, relaxed in ((live, NOW - second, NOW), (killed, NOW, NOW - second)):
        policy = Policy.from_rules([rule])
        before = Curl(server, tmp_pki_files.root_ca)
        assert pin_curl(before.handle, policy, before.url(), now=enforced)
        with pytest.raises(pycurl.error):
            before.perform()
        after = Curl(server, tmp_pki_files.root_ca)
        with caplog.at_level(logging.WARNING, logger="certpin.enforce"):
            assert pin_curl(after.handle, policy, after.url(), now=relaxed) is None
        assert "CA validation only" in caplog.text
        caplog.clear()
        assert after.perform() == (200, DEFAULT_BODY)
        before.handle.close()
        after.handle.close()


# -- the curl command line agrees ----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="the curl command is not installed")
def test_the_curl_command_line_reads_the_same_string(
    server: TLSServer, tmp_pki_files: PKIFiles, pki: PKI
) -> None:
    def run(value: str) -> int:
        return subprocess.run(
            [
                "curl",
                "--silent",
                "--output",
                "/dev/null",
                "--max-time",
                "10",
                "--noproxy",
                "*",
                "--cacert",
                str(tmp_pki_files.root_ca),
                "--resolve",
                f"localhost:{server.port}:127.0.0.1",
                "--pinnedpubkey",
                value,
                server.url(),
            ],
            check=False,
        ).returncode

    good = pinned_public_key(_leaf_policy("localhost", _SPARE, spki_pin(pki.leaf)), "localhost")
    wrong = pinned_public_key(_leaf_policy("localhost", _SPARE, _SPARE2), "localhost")
    assert good is not None and wrong is not None
    assert run(good) == 0
    assert run(wrong) == 90
