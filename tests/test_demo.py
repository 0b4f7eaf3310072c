"""`make demo` doubles as an end-to-end smoke test: it exits non-zero if any step misbehaves."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_every_step() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "certpin._demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Every step behaved as expected." in proc.stdout
    # The MITM step must show a block, and the rogue server must have received nothing.
    assert "BLOCKED with PinValidationError" in proc.stdout
    assert "application bytes the interceptor got from the pinned client: 0" in proc.stdout
    assert "FAIL" not in proc.stdout
