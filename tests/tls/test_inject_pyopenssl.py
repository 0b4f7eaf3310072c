"""`inject_into_ssl` refuses when urllib3 runs on pyOpenSSL (no ``ssl`` hook reaches it), rather
than pinning everything else and letting urllib3/requests traffic through unpinned."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("OpenSSL", reason="needs pyOpenSSL")

SCRIPT = """
import certpin, ssl
import urllib3.contrib.pyopenssl as pyopenssl
policy = certpin.Policy.from_dict({"domains": {"a.example": {
    "pins": ["sha256/AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
             "sha256/AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="]}}})
if "{mode}" == "injected":
    pyopenssl.inject_into_urllib3()
elif "{mode}" == "extracted":
    pyopenssl.inject_into_urllib3()
    pyopenssl.extract_from_urllib3()
try:
    certpin.inject_into_ssl(policy)
except certpin.InsecureContextError as exc:
    print("refused:", exc)
else:
    import urllib3.util.ssl_ as u
    print("injected:", u.SSLContext.__name__, ssl.SSLContext.__name__)
"""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("injected", "refused: urllib3 uses pyOpenSSL"),
        ("extracted", "injected: InjectedContext InjectedContext"),  # the twin: undone first
        ("plain", "injected: InjectedContext InjectedContext"),
    ],
)
def test_pyopenssl_urllib3_is_refused(mode: str, expected: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", SCRIPT.replace("{mode}", mode)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(expected), proc.stdout
