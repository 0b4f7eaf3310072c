"""While injected, ``isinstance(ctx, ssl.SSLContext)`` answers as before injection for every
context: libraries test the caller's context that way (httpx ``verify=``, aiohttp ``ssl=``),
and a False would silently drop the caller's trust settings."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import ssl, certpin
policy = certpin.Policy.from_dict({"domains": {"a.example": {
    "pins": ["sha256/AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
             "sha256/AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="]}}})
before = ssl.create_default_context()
pinning = certpin.create_default_context(policy)
certpin.inject_into_ssl(policy)
after = ssl.create_default_context()
checks = {
    "before": isinstance(before, ssl.SSLContext),
    "after": isinstance(after, ssl.SSLContext),
    "pinning": isinstance(pinning, ssl.SSLContext),
    "subclass": issubclass(type(before), ssl.SSLContext),
    "not a context": isinstance(object(), ssl.SSLContext),
    "not a context class": issubclass(int, ssl.SSLContext),
    "injected type": type(after).__name__,
    "plain type": type(before).__name__,
}
print(checks)
"""


def test_isinstance_answers_as_before_injection() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(
        {
            "before": True,
            "after": True,
            "pinning": True,
            "subclass": True,
            "not a context": False,
            "not a context class": False,
            "injected type": "InjectedContext",
            "plain type": "SSLContext",
        }
    )
