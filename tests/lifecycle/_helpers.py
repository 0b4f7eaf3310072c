"""Helpers for the lifecycle tests: policy files, pins, chain files, running the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from certpin import Pin
from certpin.cli.main import main


def random_pin() -> str:
    """A pin no key has: a backup nobody holds."""
    return str(Pin(os.urandom(32)))


def in_days(days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).date().isoformat()


def write_policy(
    path: Path, domains: dict[str, dict[str, Any]], version: int | None = None
) -> Path:
    """Write a JSON policy (Policy.from_file reads .json)."""
    doc: dict[str, Any] = {"domains": domains}
    if version is not None:
        doc["version"] = version
    path.write_text(json.dumps(doc))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
