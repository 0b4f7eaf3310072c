"""`certpin.inject_into_ssl` called by the program itself, in fresh interpreters: libraries
imported before the injection, every patched name restored by `extract_from_ssl`, idempotency,
concurrent calls, which contexts pin, and server-side contexts left alone."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from process._harness import (
    HERE,
    PINNED,
    Material,
    Stack,
    Traffic,
    client_env,
    has_module,
    run_client,
    run_process,
)
from process.test_matrix import CLIENTS, Client, assert_refused, assert_served

CHECKS = HERE / "_inject_checks.py"

#: Clients whose libraries bind ssl.SSLContext, or build contexts, at import time.
PREIMPORTED = [
    c
    for c in CLIENTS
    if c.name
    in {
        "urllib3",
        "requests",
        "aiohttp",
        "aiohttp-default",
        "boto3",
        "truststore",
        "pip-requests",
        "pip-truststore",
        "httpx",
    }
]


def _check(material: Material, check: str, port: int, *extra: str, policy: Any = None) -> Any:
    argv = [
        sys.executable,
        str(CHECKS),
        check,
        str(policy or material.policy),
        str(material.bundle),
        str(port),
        *extra,
    ]
    done = run_process(argv, client_env(material), pinned=False, policy=material.policy)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["verify", "off"])
@pytest.mark.parametrize("client", [pytest.param(c, id=c.name) for c in PREIMPORTED])
def test_library_imported_before_injection_is_pinned(
    client: Client, mode: str, material: Material, stacks: Callable[[str], Stack]
) -> None:
    """The library is imported first, then ``inject_into_ssl``: the class names it bound and
    the contexts it built at import time are switched over (twin: the same run without
    certpin, `test_mitm_succeeds_without_certpin`)."""
    for module in client.requires:
        if not has_module(module):
            pytest.skip(f"{client.name} needs the {module} package")
    stack = stacks(client.stack)
    env = client.env(material) if client.env else None
    with Traffic(stack.mitm) as traffic:
        run = run_client(
            material,
            client.name,
            PINNED,
            stack.mitm.port,
            mode,
            pinned=False,
            env=env,
            args=["--inject", str(material.policy)],
        )
    assert run.result["injected"]
    assert_refused(run, traffic)


@pytest.mark.parametrize("client", [pytest.param(c, id=c.name) for c in PREIMPORTED])
def test_library_imported_before_injection_reaches_the_good_server(
    client: Client, material: Material, stacks: Callable[[str], Stack]
) -> None:
    for module in client.requires:
        if not has_module(module):
            pytest.skip(f"{client.name} needs the {module} package")
    stack = stacks(client.stack)
    env = client.env(material) if client.env else None
    run = run_client(
        material,
        client.name,
        PINNED,
        stack.good.port,
        pinned=False,
        env=env,
        args=["--inject", str(material.policy)],
    )
    assert_served(run, client)


def test_extract_restores_every_patched_name(
    material: Material, stacks: Callable[[str], Stack]
) -> None:
    mitm = stacks("http").mitm
    result = _check(material, "names", mitm.port)
    before, during, after = result["before"], result["during"], result["after"]
    # Imported before: CPython's class; while injected every name is certpin's class.
    assert before and all(v == "original" for v in before.values()), before
    assert set(during) >= set(before)
    assert all(v.removeprefix("instance of ") == "InjectedContext" for v in during.values()), during
    # Each library this environment has: its names were seen (not silently absent).
    for module in ("urllib3", "botocore", "aiohttp", "truststore", "pip"):
        if has_module(module):
            assert any(name.startswith(module + ".") for name in during), (module, during)
    assert after == {name: "original" for name in during}, after
    assert result["ssl_restored"] and not result["injected_after"]
    assert result["new_context_after"] == "ok"  # plain again: the MITM gets through


def test_inject_is_idempotent_and_replaces_the_policy(
    material: Material, stacks: Callable[[str], Stack]
) -> None:
    stack = stacks("http")
    steps = _check(
        material, "idempotent", stack.mitm.port, str(material.wrong_policy), str(stack.good.port)
    )
    assert steps["wrong_policy"] == "pin"  # the first policy was in force
    assert steps["right_policy_same_context"] == "ok"  # the second replaced it, same context
    assert steps["mitm"] == "pin"
    first = steps["undo_entries"]
    assert all(v == "original" for v in steps["after_extract"].values())
    assert steps["mitm_after_extract"] == "ok"
    assert all(
        v.removeprefix("instance of ") == "InjectedContext" for v in steps["reinjected"].values()
    )
    assert steps["mitm_reinjected"] == "pin"
    assert all(v == "original" for v in steps["final"].values())
    # Three inject calls recorded each name once: names + preloaded contexts + the marker.
    assert first == len(steps["reinjected"]) + 1


def test_concurrent_inject_and_extract(material: Material, stacks: Callable[[str], Stack]) -> None:
    mitm = stacks("http").mitm
    with Traffic(mitm) as traffic:
        result = _check(material, "threads", mitm.port)
    assert result["errors"] == []
    assert result["mixed"] == [], "names half patched after concurrent inject/extract"
    assert result["results"] == ["pin"] * 6
    assert result["undo_entries"] == len(result["after"]) + 1
    assert all(v == "original" for v in result["after"].values())
    assert traffic.bytes == 0


def test_which_contexts_pin(material: Material, stacks: Callable[[str], Stack]) -> None:
    """Documented: contexts made before the injection are unaffected; contexts made while
    injected keep pinning after extract_from_ssl; contexts made after it are plain."""
    mitm = stacks("http").mitm
    result = _check(material, "lifetimes", mitm.port)
    assert result == {
        "before": "ok",
        "during": "pin",
        "during_after_extract": "pin",
        "after_extract": "ok",
    }


def test_server_side_contexts_are_untouched(
    material: Material, stacks: Callable[[str], Stack]
) -> None:
    mitm = stacks("http").mitm
    result = _check(
        material,
        "server-side",
        mitm.port,
        str(material.good.certfile),
        str(material.good.keyfile),
        policy=material.deny_policy,
    )
    assert result["server_context"] == "InjectedContext"
    assert result["blocking"] == "BLOCKING"
    assert result["blocking_server_socket"] == ["ssl.SSLSocket"]
    assert result["asyncio"] == "ASYNCIO"
    # The twin: client contexts made while injected are pinned, "deny" covers every host.
    assert result["client_while_injected"] == "pin"
    assert result["client_while_injected_unpinned"] == "pin"


def test_ssl_py_setters_work_on_injected_contexts(
    material: Material, stacks: Callable[[str], Stack]
) -> None:
    """ssl.py's ``_msg_callback`` setter calls ``super(SSLContext, SSLContext)`` with the
    module's SSLContext, certpin's class while injected (see the report: it recurses)."""
    good = stacks("http").good
    result = _check(material, "msg-callback", good.port)
    assert result["msg_callback"] == "set", result
    assert result["connect"] == "ok" and result["messages"] > 0
