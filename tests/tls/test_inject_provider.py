"""`inject_into_ssl` takes any policy provider, as `create_default_context` does: the provider
is asked on every handshake, so a new policy (a bundle refresh, a rotation) reaches every
injected context without injecting again (issue 16: "a DynamicPolicy works too")."""

from __future__ import annotations

import json
import subprocess
import sys

from _support.pki import PKIFiles
from _support.servers import TLSServer
from tls._fixtures import Pins

SCRIPT = """
import json, ssl, sys, urllib.request
import certpin

port, cafile, good, other, spare = sys.argv[1:]

def policy(*pins):
    return certpin.Policy.from_dict({"domains": {"localhost": {"pins": list(pins)}}})

class Provider:  # what a DynamicPolicy is to the context: an object with current_policy()
    def __init__(self):
        self.policy = policy(good, spare)
    def current_policy(self):
        return self.policy

provider = Provider()
certpin.inject_into_ssl(provider)
ctx = ssl.create_default_context(cafile=cafile)  # made once, like a long-lived client's
outcomes = []
for pins in ((good, spare), (other, spare), (good, spare)):
    provider.policy = policy(*pins)  # a refresh: no new injection, no new context
    try:
        urllib.request.urlopen(f"https://localhost:{port}/", context=ctx, timeout=10).read()
        outcomes.append("ok")
    except urllib.error.URLError as exc:
        outcomes.append(type(exc.reason).__name__)
print(json.dumps(outcomes))
"""


def test_the_provider_is_asked_on_every_handshake(tmp_pki_files: PKIFiles, pins: Pins) -> None:
    with TLSServer(tmp_pki_files.certfile, tmp_pki_files.keyfile) as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                SCRIPT,
                str(server.port),
                str(tmp_pki_files.root_ca),
                str(pins.intermediate),
                str(pins.other),
                str(pins.spare),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        # Pinned, then the new policy no longer matches (refused before any byte), then again.
        assert json.loads(proc.stdout) == ["ok", "PinValidationError", "ok"]
        assert server.wait_idle() and server.handshakes == 3
        # The refused connection sent not one byte (the server threads may finish in any order).
        assert sorted(r[:5] for r in server.received) == [b"", b"GET /", b"GET /"]
