"""``python examples/demo/demo.py`` (``make demo``): pinning, a MITM and a key rotation, end to end.

Everything runs on loopback with a throwaway PKI, never the network or the system trust store.
Each step is a function in `STEPS` returning True when certpin behaved as expected; the exit
code is 0 only if every step did, so the demo doubles as a smoke test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ssl
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server
from demo_support import (
    CA,
    BundleServer,
    CollectorServer,
    LogTap,
    Server,
    new_key,
    pem,
    say,
    spki_pin,
)

import certpin
import certpin.dynamic
import certpin.reporting

# -- the steps ------------------------------------------------------------------------------------


class Demo:
    """What the steps share; each step sets what later ones use."""

    intermediate: CA
    root_file: Path
    key_b: ec.EllipticCurvePrivateKey
    pin_a: certpin.Pin
    pin_b: certpin.Pin
    pin_c: certpin.Pin
    pin_d: certpin.Pin
    server: Server
    policy: certpin.Policy
    names: dict[certpin.Pin, str]  # pin -> "key A", for the output
    bundles: BundleServer
    dynamic: certpin.dynamic.DynamicPolicy
    publish: Any  # (version, pins, **extra) -> signed token, published on the bundle host
    log: LogTap
    rogue_url: str
    both_roots: Path
    dashboard: str = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.servers = tmp, list[Server]()
        self.cleanup = contextlib.ExitStack()

    def serve(self, stem: Path) -> Server:
        self.servers.append(Server(stem))
        return self.servers[-1]


def _get(url: str | urllib.request.Request, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return resp.status, resp.read()


def step_pki(d: Demo) -> bool:
    """Make a local PKI on loopback.

    A root CA, an intermediate, and a server certificate for localhost with key A. Key B is the
    backup: generated now and kept offline; it has no certificate yet."""
    root = CA("certpin demo root")
    d.intermediate = CA("certpin demo intermediate", root)
    d.root_file = d.tmp / "root.pem"
    d.root_file.write_bytes(pem(root.cert))
    key_a = new_key()
    d.key_b = new_key()
    d.pin_a, d.pin_b = spki_pin(key_a), spki_pin(d.key_b)
    d.names = {d.pin_a: "key A", d.pin_b: "key B"}
    d.server = d.serve(d.intermediate.issue_leaf(key_a, d.tmp, "leaf-a"))
    say(f"  pin of key A (in use): {d.pin_a}\n  pin of key B (backup): {d.pin_b}", "bold")
    say(f"  server: https://localhost:{d.server.port}/ (leaf A <- intermediate <- root)")
    return True


def step_policy(d: Demo) -> bool:
    """Write the pin policy.

    Pin the keys, not the certificates: a re-issued certificate with the same key still matches.
    certpin refuses an enforcing rule without a backup pin (you could never rotate)."""
    toml = f'[domains."localhost"]\npins = [\n    "{d.pin_a}",  # key A, in use\n'
    toml += f'    "{d.pin_b}",  # key B, backup\n]\n'
    (d.tmp / "pins.toml").write_text(toml)
    say(toml, "cyan")
    d.policy = certpin.Policy.from_file(d.tmp / "pins.toml")
    return d.policy.lookup("localhost") is not None


def _pinned(d: Demo, cafile: Path | None = None) -> ssl.SSLContext:
    return certpin.create_default_context(d.policy, cafile=cafile or d.root_file)


def step_pinned_request(d: Demo) -> bool:
    """Pinned request to the real server.

    urlopen(url, context=certpin.create_default_context(policy, cafile=root)): CA validation,
    host name check, then the pin check, before the request is sent."""
    status, body = _get(f"https://localhost:{d.server.port}/", _pinned(d))
    say(f"  -> HTTP {status}, body {body!r}", "green")
    return status == 200 and body == b"hello"


def step_mitm(d: Demo) -> bool:
    """Man in the middle with a CA the client trusts.

    An interceptor with its own CA, which the client ALSO trusts (like a corporate TLS inspection
    root), answers for localhost. CA validation alone cannot tell it from the real server."""
    rogue_root = CA("Totally Legit Inspection CA")
    rogue_key = new_key()
    rogue = d.serve(CA("Inspection intermediate", rogue_root).issue_leaf(rogue_key, d.tmp, "rogue"))
    both = d.tmp / "both-roots.pem"
    both.write_bytes(d.root_file.read_bytes() + pem(rogue_root.cert))
    url = d.rogue_url = f"https://localhost:{rogue.port}/"
    d.both_roots = both
    status, _ = _get(url, ssl.create_default_context(cafile=both))
    sent = rogue.received.get(timeout=5)
    say(f"  unpinned ssl.create_default_context(cafile=both): HTTP {status}", "yellow")
    say(f"  and the interceptor read the request: {sent.splitlines()[0]!r}...", "yellow")
    try:
        _get(url, _pinned(d, cafile=both))
    except urllib.error.URLError as exc:
        error = exc.reason
    else:
        say("  the pinned request went through: NOT expected", "bold red")
        return False
    leaked = rogue.received.get(timeout=5)
    say(f"  pinned: BLOCKED with {type(error).__name__}:", "bold green")
    say("    " + str(error).replace("\n", "\n    "), "green")
    say(f"  application bytes the interceptor got from the pinned client: {len(leaked)}", "bold")
    return isinstance(error, certpin.PinValidationError) and status == 200 and leaked == b""


def step_report(d: Demo) -> bool:
    """The blocked MITM is reported to the certpin collector.

    The client's on_failure hook is certpin's reporter: it builds an RFC 7469 report (both
    chains, the known pins) and uploads it in the background, CA-validated, to the collector
    (`certpin serve`, here on 127.0.0.1 with SQLite), which answers once the report is on disk."""
    import json
    import secrets

    token = secrets.token_urlsafe(16)
    collector = CollectorServer(
        d.intermediate.issue_leaf(new_key(), d.tmp, "collector"), d.tmp / "reports.db", token
    )
    d.cleanup.callback(collector.close)
    reporter = certpin.reporting.reporting_hook(
        d.policy, report_uris=[f"{collector.url}/reports"], cafile=d.root_file, app="demo-app"
    )
    d.cleanup.callback(reporter.close)
    ctx = certpin.create_default_context(d.policy, cafile=d.both_roots, on_failure=reporter)
    try:
        _get(d.rogue_url, ctx)
        return False
    except urllib.error.URLError as exc:
        blocked = isinstance(exc.reason, certpin.PinValidationError)
    reporter.flush(5)
    request = urllib.request.Request(
        f"{collector.url}/api/reports?host=localhost",
        headers={"Authorization": f"Bearer {token}"},
    )
    status, body = _get(request, ssl.create_default_context(cafile=d.root_file))
    reports = json.loads(body)["reports"]
    say(f"  pinned request blocked: {blocked}; reports sent: {reporter.stats.sent}", "green")
    for report in reports[:1]:
        keys = ("hostname", "port", "app", "verdict_status", "unexpected_pin", "unexpected_subject")
        shown = {k: report.get(k) for k in keys}
        say(f"  GET /api/reports -> {json.dumps(shown)}", "cyan")
    d.dashboard = f"{collector.url}/  (token: {token})"
    say(f"  dashboard: {d.dashboard}", "bold")
    return blocked and status == 200 and len(reports) == 1


_APP = """\
# An ordinary program: plain requests, no certpin anywhere.
import sys
import requests

good, rogue, cafile = sys.argv[1:]
for url in (good, rogue):
    try:
        reply = requests.get(url, verify=cafile, timeout=5)
        print(f"{url}: HTTP {reply.status_code}")
    except requests.exceptions.SSLError as exc:
        text = str(exc)
        cause = text[text.find("Certificate pinning failure"):] if "pinning" in text else text
        print(f"{url}: refused: {cause.split(chr(92))[0].splitlines()[0][:100]}")
"""


def step_certpin_run(d: Demo) -> bool:
    """A whole program pinned by `certpin run`, unchanged.

    A program that only knows `requests.get(url, verify=both_roots)` reaches the interceptor.
    `certpin run --policy pins.toml -- python app.py` injects certpin into every Python
    process it starts: the same program now refuses the interceptor before sending a byte."""
    import subprocess

    app = d.tmp / "app.py"
    app.write_text(_APP)
    args = [f"https://localhost:{d.server.port}/", d.rogue_url, str(d.both_roots)]
    program = [sys.executable, str(app), *args]
    pinned_run = [sys.executable, "-m", "certpin", "run", "--policy", str(d.tmp / "pins.toml")]
    rogue = next(s for s in d.servers if d.rogue_url.endswith(f":{s.port}/"))
    while not rogue.received.empty():  # what the earlier steps' connections left
        rogue.received.get_nowait()
    plain = subprocess.run(program, capture_output=True, text=True, timeout=60)
    seen = rogue.received.get(timeout=5)
    say("  $ python app.py", "bold")
    say("    " + plain.stdout.strip().replace("\n", "\n    "), "yellow")
    say(f"    the interceptor read: {seen.splitlines()[0]!r}...", "yellow")
    pinned = subprocess.run(
        pinned_run + ["--"] + program, capture_output=True, text=True, timeout=60
    )
    leaked = rogue.received.get(timeout=5)
    say("  $ certpin run --policy pins.toml -- python app.py", "bold")
    say("    " + pinned.stdout.strip().replace("\n", "\n    "), "green")
    say(f"    application bytes the interceptor got: {len(leaked)}", "bold")
    lines = pinned.stdout.splitlines()
    return (
        plain.returncode == 0
        and pinned.returncode == 0
        and seen.startswith(b"GET /")
        and leaked == b""
        and len(lines) == 2
        and lines[0].endswith("HTTP 200")
        and "refused" in lines[1]
        and "Certificate pinning failure for localhost" in lines[1]
    )


def _request(d: Demo, ctx: ssl.SSLContext) -> tuple[int, certpin.Verdict]:
    """GET / with http.client (what urllib uses) directly, to see the verdict of the handshake."""
    conn = http.client.HTTPSConnection("localhost", d.server.port, context=ctx, timeout=5)
    with contextlib.closing(conn):
        conn.connect()  # the handshake, and certpin's check, happen here
        sock: Any = conn.sock
        result: certpin.Verdict = sock.certpin_verdict  # set by the hook
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status, result


def step_rotation(d: Demo) -> bool:
    """Rotate the server to the backup key.

    Key A is retired: the server gets a new certificate for key B. Clients keep the same policy
    and keep working, because B was pinned from the start."""
    d.server.set_certificate(d.intermediate.issue_leaf(d.key_b, d.tmp, "leaf-b"))
    status, result = _request(d, _pinned(d))
    say(f"  -> HTTP {status}; verdict: {result.status.value}", "green")
    say(f"  matched pin = {result.matched_pin} (key B)", "bold green")
    return status == 200 and result.matched_pin == d.pin_b


def step_bundle_rotation(d: Demo) -> bool:
    """Rotation delivered by a signed bundle.

    Now the pins come from signed bundles (Ed25519 JWS; the signing key never leaves the signing
    side) served by a bundle host, 127.0.0.1, which the app's static fallback policy pins. Bundle
    v1 adds a new spare key C; the server moves to C; v2 drops key B. No app release, and no
    request fails. A forged or replayed bundle is rejected and the last good one stays."""
    from certpin.dynamic.jws import FileSigner, b64url_decode, b64url_encode, generate_private_key

    d.log = LogTap()  # certpin logs through `logging`; the demo shows the lines that matter
    signer = FileSigner(generate_private_key("Ed25519"))
    bundle_host = d.intermediate.issue_leaf(new_key(), d.tmp, "bundle-host")
    d.bundles = d.cleanup.enter_context(
        contextlib.closing(BundleServer(bundle_host, d.tmp / "www"))
    )
    host_rule = {
        "127.0.0.1": {"pins": [str(spki_pin(d.intermediate.key)), str(spki_pin(new_key()))]}
    }
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)

    def publish(version: int, pins: list[certpin.Pin], **extra: Any) -> str:
        doc = {"domains": {"localhost": {"pins": [str(p) for p in pins]}, **host_rule}}
        token = certpin.dynamic.sign_bundle(doc, signer, version=version, expires=expires, **extra)
        d.bundles.publish(token)
        return token

    d.publish = publish
    fallback = certpin.Policy.from_dict(
        {"domains": {"localhost": {"pins": [str(d.pin_a), str(d.pin_b)]}, **host_rule}},
        source="the app's fallback",
    )
    d.dynamic = certpin.dynamic.DynamicPolicy(
        d.bundles.url,
        trusted_keys=[signer.trusted_key],
        cache_dir=d.tmp / "pin-cache",
        fallback=fallback,
        cafile=d.root_file,
    )
    ctx = certpin.create_default_context(d.dynamic, cafile=d.root_file)  # built once, kept
    key_c = new_key()
    d.pin_c, d.pin_d = spki_pin(key_c), spki_pin(new_key())
    d.names.update({d.pin_c: "key C", d.pin_d: "key D"})
    ok = True

    def show(event: str, expect: certpin.Pin) -> None:
        nonlocal ok
        status, result = _request(d, ctx)
        name = d.names.get(result.matched_pin, "none") if result.matched_pin else "none"
        say(f"  {event}: client on v{d.dynamic.version} -> HTTP {status}, matched {name}", "green")
        ok = ok and status == 200 and result.matched_pin == expect

    v1 = publish(1, [d.pin_b, d.pin_c])
    show(f"bundle v1 (B + spare C) {d.dynamic.refresh_now().status}", d.pin_b)
    d.server.set_certificate(d.intermediate.issue_leaf(key_c, d.tmp, "leaf-c"))
    show("server rotated to key C", d.pin_c)
    v2 = publish(2, [d.pin_c, d.pin_d])
    show(f"bundle v2 (C + spare D, B dropped) {d.dynamic.refresh_now().status}", d.pin_c)
    # A forgery: v2's payload edited to claim version 9, v2's signature kept.
    header, payload, signature = v2.split(".")
    edited = b64url_decode(payload).replace(b'"version":2', b'"version":9')
    forged = d.dynamic.accept(f"{header}.{b64url_encode(edited)}.{signature}")
    replayed = d.dynamic.accept(v1)
    say(
        f"  forged v9: {forged.status} ({_why(forged)}); replayed v1: {replayed.status} "
        f"({_why(replayed)}); client still on v{d.dynamic.version}",
        "bold green",
    )
    d.log.take()
    return ok and forged.status == replayed.status == "rejected" and d.dynamic.version == 2


def _why(result: certpin.dynamic.RefreshResult) -> str:
    """The reason code of a rejection: "bundle rejected (rollback): …" -> "rollback"."""
    return result.reason.partition("(")[2].partition(")")[0]


def step_kill_switch(d: Demo) -> bool:
    """Emergency: a signed kill switch.

    The server is moved in a hurry to a key no bundle pins (say, an incident re-issue on new
    hardware): pinned clients are locked out. The operator signs a bundle with a kill switch
    for localhost, for one hour. Clients fetch it from the still-pinned bundle host and accept
    localhost with CA validation only, until then, logging every such connection loudly."""
    d.server.set_certificate(d.intermediate.issue_leaf(new_key(), d.tmp, "leaf-e"))
    ctx = certpin.create_default_context(d.dynamic, cafile=d.root_file)
    try:
        _request(d, ctx)
    except certpin.PinValidationError as exc:
        blocked = True
        say(f"  server moved to unpinned key E -> BLOCKED ({type(exc).__name__})", "bold")
    else:
        blocked = False
        say("  the request to the unpinned key went through: NOT expected", "bold red")
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    switch = {"domains": ["localhost"], "until": until, "reason": "INC-42 unplanned key"}
    d.log.take()
    d.publish(3, [d.pin_c, d.pin_d], kill_switch=switch)
    refreshed = d.dynamic.refresh_now()
    status, result = _request(d, ctx)
    say(
        f"  bundle v3 with kill switch {refreshed.status} -> HTTP {status}, "
        f"verdict {result.status.value}",
        "bold green",
    )
    lines = d.log.take("KILL SWITCH")
    for line in lines[:1]:
        say(f"  log: {line}", "yellow")
    bundle_host = d.dynamic.current_policy().lookup("127.0.0.1")
    still_pinned = bundle_host is not None and bundle_host.kill_switch is None
    say(f"  the bundle host 127.0.0.1 stays pinned: {still_pinned}", "green")
    return (
        blocked
        and refreshed.status == "updated"
        and status == 200
        and result.status is certpin.VerdictStatus.KILLED
        and bool(lines)
        and still_pinned
    )


def _collector(d: Demo) -> tuple[str, str] | None:
    """The collector's URL and token, from what step_report showed (None if it did not run)."""
    url, _, rest = d.dashboard.partition("/  (token: ")
    return (url, rest.rstrip(")")) if rest else None


def step_ct(d: Demo) -> bool:
    """A rogue certificate caught in a CT log.

    CAs log every certificate they issue in Certificate Transparency logs. A loopback RFC 6962
    log holds key A's real certificate and the interceptor's certificate for localhost (from
    step 4). `certpin ct watch` verifies the log's signed tree and every entry, decides each
    certificate for a pinned name with the same verdict as a connection, and alerts on the
    one no pin covers: here it also posts it to the collector's CT view."""
    import json
    import os
    import subprocess

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    def chain(stem: str) -> list[bytes]:
        certs = x509.load_pem_x509_certificates((d.tmp / f"{stem}.pem").read_bytes())
        return [c.public_bytes(Encoding.DER) for c in certs]

    log_server = d.cleanup.enter_context(RFC6962Server(TestLog(origin="ct.demo/log")))
    for stem in ("leaf-a", "rogue"):
        leaf, *issuers = chain(stem)
        log_server.log.add_x509(leaf, issuers)
    log_list = d.tmp / "log_list.json"
    operator = {
        "name": "demo",
        "email": [],
        "logs": [log_server.log.log_list_entry(log_server.url)],
    }
    log_list.write_text(json.dumps({"version": "1.0", "operators": [operator]}))
    command = ["ct", "watch", "--policy", "pins.toml", "--log-list", "log_list.json"]
    command += ["--once", "--json"]
    collector = _collector(d)
    env = dict(os.environ)
    if collector is not None:
        (d.tmp / "collector.token").write_text(collector[1] + "\n")
        command += [
            "--webhook",
            f"{collector[0]}/api/ct",
            "--webhook-token-file",
            "collector.token",
        ]
        env["SSL_CERT_FILE"] = str(d.root_file)  # the webhook trusts the demo's root
    watch = subprocess.run(
        [sys.executable, "-m", "certpin", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=d.tmp,
        env=env,
    )
    say("  $ certpin " + " ".join(command), "bold")
    records = [json.loads(line) for line in watch.stdout.splitlines() if line.startswith("{")]
    for r in records:
        name = d.names.get(certpin.Pin.parse(r["spki_pin"]), "interceptor's key")
        line = (
            f"    {r['kind']} {', '.join(r['hosts'])}: {name} (entry #{r['index']}, {r['issuer']})"
        )
        say(line, "bold red" if r["kind"] == "unexpected" else "green")
    say(f"  exit status {watch.returncode} (1: an unexpected certificate)", "bold")
    if watch.stderr.strip():
        say("  " + watch.stderr.strip(), "yellow")
    kinds = sorted((r["kind"], r["index"]) for r in records)
    ok = watch.returncode == 1 and kinds == [("pinned", 0), ("unexpected", 1)]
    if collector is not None:
        request = urllib.request.Request(
            f"{collector[0]}/api/ct?host=localhost",
            headers={"Authorization": f"Bearer {collector[1]}"},
        )
        status, body = _get(request, ssl.create_default_context(cafile=d.root_file))
        rows = json.loads(body)["certificates"]
        for row in rows:
            say(
                f"  collector GET /api/ct?host=localhost -> {row['kind']} {row['spki_pin']} "
                f"issued by {row['issuer']}",
                "cyan",
            )
        say(f"  CT view: {collector[0]}/ct", "bold")
        rogue = next((r for r in records if r["kind"] == "unexpected"), None)
        ok = ok and status == 200 and [r["spki_pin"] for r in rows] == [rogue and rogue["spki_pin"]]
    return ok


# Later features add their steps here.
STEPS = [
    step_pki,
    step_policy,
    step_pinned_request,
    step_mitm,
    step_report,
    step_certpin_run,
    step_rotation,
    step_bundle_rotation,
    step_kill_switch,
    step_ct,
]


#: `python examples/demo/demo.py --keep`: leave the collector (and its dashboard) up at the end.
KEEP = "--keep" in sys.argv[1:]


def main() -> int:
    results: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="certpin-demo-") as tmp:
        demo = Demo(Path(tmp))
        try:
            for number, step in enumerate(STEPS, 1):
                title, _, why = (step.__doc__ or step.__name__).partition(".\n")
                say(f"\n{number}. {title}", "bold underline")
                say(" ".join(why.split()), "dim")
                try:
                    ok = step(demo)
                except Exception as exc:  # a smoke test reports, then goes on to the summary
                    say(f"  unexpected {type(exc).__name__}: {exc}", "bold red")
                    ok = False
                results.append((title, ok))
                if not ok:
                    break  # later steps build on earlier ones
            if KEEP and demo.dashboard:
                say(f"\nThe collector keeps running: {demo.dashboard}. Ctrl-C to stop.", "bold")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
        finally:
            demo.cleanup.close()
            for server in demo.servers:
                server.shutdown()
                server.server_close()
    say(f"\n{len(STEPS) + 1}. Summary", "bold underline")
    for title, ok in results:
        say(f"  {'PASS' if ok else 'FAIL'}  {title}", "green" if ok else "bold red")
    passed = len(results) == len(STEPS) and all(ok for _, ok in results)
    last = "Every step behaved as expected." if passed else "A step did NOT behave as expected."
    say(last, "bold green" if passed else "bold red")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
