"""Debian's certspotter, a real and independent CT monitor, against the project's RFC 6962 test
log: it must accept the log (signatures, tree) and discover the same certificates for the watched
names as ``certpin ct watch``; ``certpin ct hook`` in its hooks.d passes on the unexpected ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server

from _support.pki import make_key
from ct._certs import issuance
from ct.conftest import watch_once, write_log_list

CERTSPOTTER = shutil.which("certspotter")
CLI = Path(__file__).with_name("_cli.py")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CERTSPOTTER is None,
        reason="Debian's certspotter is not installed (`make system-deps` installs it)",
    ),
]


def _fill(log: TestLog, world) -> None:
    def add(ca, *names, key=None, precert=False):
        i = issuance(ca, *names, key=key)
        if precert:
            first = log.add_precert(i.precert(), i.chain())
            log.add_x509(i.final([log.sct(first)]), i.chain())
        else:
            log.add_x509(i.final(), i.chain())

    add(world.ca, "api.example.com", key=world.primary)
    add(world.ca, "api.example.com", key=world.backup)
    add(world.rogue, "api.example.com", precert=True)
    add(world.ca, "api.example.com", key=world.primary, precert=True)
    add(
        world.rogue,
        *[f"n{k}.unrelated.example" for k in range(10)],
        "api.example.com",
        *[f"m{k}.unrelated.example" for k in range(9)],
    )
    add(world.rogue, "www.unrelated.example")
    add(world.rogue, "a.b.wild.example.net")
    add(world.rogue, "wild.example.net")
    add(world.rogue, "deep.sub.inc.example.org")
    add(world.rogue, "sub.exact.example.org")
    add(world.rogue, "exact.example.org")
    add(world.ca, "*.example.com", key=make_key("p256"))


def _watchlist(path: Path) -> Path:
    # The interop policy's keys in certspotter's terms: ".x" is x and every name under it.
    path.write_text("api.example.com\n.wild.example.net\n.inc.example.org\nexact.example.org\n")
    return path


def _certspotter(lst: Path, watch: Path, config: Path, state: Path, size: int) -> str:
    """Run certspotter until it has verified `size` entries of the log; its stderr."""
    env = dict(
        os.environ,
        CERTSPOTTER_CONFIG_DIR=str(config),
        CERTSPOTTER_STATE_DIR=str(state),
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    proc = subprocess.Popen(
        [
            CERTSPOTTER,
            "-logs",
            str(lst),
            "-watchlist",
            str(watch),
            "-state_dir",
            str(state),
            "-verbose",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    verified = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and verified != size:
            for path in state.glob("logs/*/state.json"):
                sth = json.loads(path.read_text() or "{}").get("verified_sth") or {}
                verified = sth.get("tree_size", 0)
            time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert verified == size, f"certspotter did not verify the test log:\n{err}"
    # ("stopped with error context canceled" is certspotter acknowledging the SIGTERM)
    problems = [
        line
        for line in err.splitlines()
        if "error" in line.lower() and "context canceled" not in line
    ]
    assert problems == [], err
    return err


def _take_lines(path: Path) -> list[str]:
    """The lines written to `path` since the last call (then empties it)."""
    lines = path.read_text().splitlines() if path.exists() else []
    path.write_text("")
    return lines


def test_certspotter_discovers_what_certpin_does(capsys, world, tmp_path):
    policy = world.policy(tmp_path / "policy.json")
    data = json.loads(policy.read_text())
    del data["domains"]["*.one.example.net"]  # certspotter has no "exactly one label" item
    policy.write_text(json.dumps(data))
    config, state, ours = tmp_path / "config", tmp_path / "state", tmp_path / "ours"
    hooks = config / "hooks.d"
    hooks.mkdir(parents=True)
    script = hooks / "certpin"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$EVENT $ENTRY_INDEX $TBS_SHA256" >> "{tmp_path}/events"\n'
        f'exec "{sys.executable}" "{CLI}" ct hook --policy "{policy}" --json '
        f'--exit-status certspotter >> "{tmp_path}/hook.out"\n'
    )
    script.chmod(0o755)
    watch = _watchlist(tmp_path / "watch")
    with RFC6962Server(TestLog()) as server:
        lst = write_log_list(tmp_path / "list.json", server)
        for round_ in range(2):  # the second round reads only what the first did not
            if round_ == 0:
                _fill(server.log, world)
            else:
                i = issuance(world.rogue, "api.example.com")
                server.log.add_x509(i.final(), i.chain())
                i = issuance(world.ca, "x.wild.example.net", key=world.backup)
                server.log.add_x509(i.final(), i.chain())
            code, records, err = watch_once(
                capsys,
                str(policy),
                str(lst),
                "--state",
                str(ours),
            )
            assert code == 1, err
            _certspotter(lst, watch, config, state, len(server.log.entries))
            events = [line.split() for line in _take_lines(tmp_path / "events")]
            assert all(event == "discovered_cert" for event, _, _ in events)
            certpin_tbs = {r["tbs_sha256"] for r in records}
            # One issuance: certspotter reports the precertificate and the final certificate
            # (two of them in the first round), certpin the issuance once.
            assert {tbs for _, _, tbs in events} == certpin_tbs
            assert len(events) == len(certpin_tbs) + (2 if round_ == 0 else 0)
            hooked = [json.loads(line) for line in _take_lines(tmp_path / "hook.out")]
            unexpected = {r["tbs_sha256"] for r in records if r["kind"] == "unexpected"}
            assert all(r["kind"] == "unexpected" for r in hooked)
            assert {r["tbs_sha256"] for r in hooked} == unexpected
