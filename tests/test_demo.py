"""`make demo` doubles as an end-to-end smoke test: it exits non-zero if any step misbehaves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo" / "demo.py"


def test_demo_runs_every_step() -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(DEMO)],
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
    # Signed bundles: a rotation with no failed request, forgery and replay rejected.
    assert "bundle v1 (B + spare C) updated: client on v1 -> HTTP 200, matched key B" in proc.stdout
    assert "server rotated to key C: client on v1 -> HTTP 200, matched key C" in proc.stdout
    assert "client on v2 -> HTTP 200, matched key C" in proc.stdout
    assert "forged v9: rejected (bad_signature); replayed v1: rejected (rollback)" in proc.stdout
    # The kill switch: blocked first, then let through with the `killed` verdict, logged loudly.
    assert "server moved to unpinned key E -> BLOCKED (PinValidationError)" in proc.stdout
    assert "bundle v3 with kill switch updated -> HTTP 200, verdict killed" in proc.stdout
    assert "log: WARNING certpin.enforce: certpin: KILL SWITCH: pins for localhost" in proc.stdout
    assert "the bundle host 127.0.0.1 stays pinned: True" in proc.stdout
    # The blocked MITM's report reaches the collector, which serves it back through its API.
    assert "pinned request blocked: True; reports sent: 1" in proc.stdout
    assert '"hostname": "localhost"' in proc.stdout and '"app": "demo-app"' in proc.stdout
    assert '"unexpected_subject": "CN=localhost (rogue)"' in proc.stdout
    assert "dashboard: https://127.0.0.1:" in proc.stdout
    # `certpin run`: the same unchanged program reaches the interceptor, then is refused by it.
    assert "the interceptor read: b'GET / HTTP/1.1'" in proc.stdout
    assert "refused: Certificate pinning failure for localhost" in proc.stdout
    assert "application bytes the interceptor got: 0" in proc.stdout
    # CT: the rogue certificate in the log is unexpected (exit 1), key A's is pinned, and the
    # alert reaches the collector's CT view.
    assert "pinned localhost: key A (entry #0, CN=certpin demo intermediate)" in proc.stdout
    assert "unexpected localhost: interceptor's key (entry #1, CN=Inspection intermediate)" in (
        proc.stdout
    )
    assert "exit status 1 (1: an unexpected certificate)" in proc.stdout
    assert "collector GET /api/ct?host=localhost -> unexpected sha256/" in proc.stdout
    assert "issued by CN=Inspection intermediate" in proc.stdout
    assert proc.stdout.count("PASS") == 10
    assert "FAIL" not in proc.stdout


def test_demo_exits_1_when_a_step_misbehaves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import demo as _demo

    def step_broken(d: _demo.Demo) -> bool:
        """A step that does not behave.

        certpin let something through it should have blocked."""
        return False

    monkeypatch.setattr(_demo, "STEPS", [_demo.step_pki, step_broken, _demo.step_policy])
    assert _demo.main() == 1
    out = capsys.readouterr().out
    assert "FAIL  A step that does not behave" in out and "Write the pin policy" not in out
