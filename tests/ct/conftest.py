"""Fixtures for the CT watcher: a pinned PKI and a rogue one, test logs of both kinds on
loopback, a log list and a policy on disk, and `ct` run in-process through `certpin.cli.main`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server, TiledServer

from _support.pki import CA, PrivateKey, make_key, new_root, spki_pin
from certpin.cli import main as cli_main


@pytest.fixture(autouse=True)
def _ct_verb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``certpin ct`` for the in-process runs until the lead adds it to the verbs."""
    verbs = getattr(cli_main, "_VERBS", None)
    if verbs is not None and "ct" not in verbs:
        monkeypatch.setitem(verbs, "ct", "certpin.cli.ct:ct_group")


@dataclass
class World:
    """The owner's CA and keys (primary and backup pinned) and a rogue CA."""

    ca: CA
    rogue: CA
    primary: PrivateKey
    backup: PrivateKey

    def policy(self, path: Path, extra: dict[str, Any] | None = None) -> Path:
        pins = [spki_pin(self.primary.public_key()), spki_pin(self.backup.public_key())]
        domains: dict[str, Any] = {
            "api.example.com": {"pins": pins},
            "**.wild.example.net": {"pins": pins},
            "*.one.example.net": {"pins": pins},
            "inc.example.org": {"pins": pins, "include_subdomains": True},
            "exact.example.org": {"pins": pins},
        }
        domains.update(extra or {})
        path.write_text(json.dumps({"domains": domains}))
        return path


@pytest.fixture(scope="session")
def world() -> World:
    root = new_root("CT Test Root")
    rogue_root = new_root("Rogue Root")
    return World(
        ca=root.issue_intermediate("CT Test Intermediate"),
        rogue=rogue_root.issue_intermediate("Rogue Intermediate"),
        primary=make_key("p256"),
        backup=make_key("p256"),
    )


@pytest.fixture
def policy(world: World, tmp_path: Path) -> Path:
    return world.policy(tmp_path / "policy.json")


@pytest.fixture
def rfc_log() -> Iterator[RFC6962Server]:
    with RFC6962Server(TestLog()) as server:
        yield server


@pytest.fixture
def tiled_log() -> Iterator[TiledServer]:
    with TiledServer(TestLog(static=True)) as server:
        yield server


def write_log_list(path: Path, *servers: RFC6962Server | TiledServer) -> Path:
    rfc, tiled = [], []
    for server in servers:
        entry = server.log.log_list_entry(server.url)
        (tiled if server.log.static else rfc).append(entry)
    path.write_text(
        json.dumps(
            {
                "version": "1.0",
                "operators": [{"name": "t", "email": [], "logs": rfc, "tiled_logs": tiled}],
            }
        )
    )
    return path


def watch_once(
    capsys: pytest.CaptureFixture[str], policy: object, log_list: object, *extra: str
) -> tuple[int, list[dict[str, Any]], str]:
    """``certpin ct watch --policy POLICY --log-list LOG_LIST --once --json EXTRA…``."""
    return run_ct(
        capsys,
        "watch",
        "--policy",
        str(policy),
        "--log-list",
        str(log_list),
        "--once",
        "--json",
        *extra,
    )


def run_ct(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    """``certpin ct ARGV``: (exit code, the JSON records printed (with ``--json``), stderr)."""
    code = cli_main.main(["ct", *argv])
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, records, err
