"""Fixtures of the process-wide pinning tests: one set of certificates and policies and one
server stack per protocol for the whole directory (tests/process/_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from process._harness import Material, Stack, Unavailable, build_stack


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return Material.create(tmp_path_factory.mktemp("process-pki"))


@pytest.fixture(scope="session")
def stacks(material: Material) -> Iterator[Callable[[str], Stack]]:
    """``stacks(kind) -> Stack``: started on first use, stopped at the end of the session. A
    stack that cannot run here (redis-server missing or without TLS) skips its tests."""
    started: dict[str, Stack] = {}
    unavailable: dict[str, str] = {}

    def get(kind: str) -> Stack:
        if kind in unavailable:
            pytest.skip(unavailable[kind])
        if kind not in started:
            try:
                started[kind] = build_stack(kind, material)
            except Unavailable as exc:
                unavailable[kind] = str(exc)
                pytest.skip(str(exc))
        return started[kind]

    yield get
    for stack in started.values():
        stack.close()
