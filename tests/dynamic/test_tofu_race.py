"""KnownPins: first use is decided under the lock (threads and processes racing on ONE host with
different leaves), and `certpin tofu accept HOST:*` records the host-wide key `HOST`."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _support.pki import PKI, PKIFiles, make_pki, spki_pin, write_pki_files
from _support.servers import TLSServer
from certpin import VerdictStatus
from certpin.cli.main import main
from certpin.dynamic import KnownPins

NOW = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pki_a() -> PKI:
    return make_pki(("127.0.0.1", "race.example"))


@pytest.fixture(scope="module")
def chains(pki_a: PKI) -> dict[str, tuple[bytes, ...]]:
    other = pki_a.intermediate.issue_leaf("race.example")
    return {"A": tuple(pki_a.leaf.chain_der()), "B": tuple(other.chain_der())}


def check_outcomes(
    outcomes: list[tuple[str, str]], recorded_pin: str, pins: dict[str, str]
) -> None:
    """Exactly one first use; every other client is checked against the record that won."""
    firsts = [leaf for leaf, outcome in outcomes if outcome == "first"]
    assert len(firsts) == 1, outcomes
    winner = firsts[0]
    assert pins[winner] == recorded_pin
    for leaf, outcome in outcomes:
        if outcome == "first":
            continue
        expected = VerdictStatus.OK if leaf == winner else VerdictStatus.TOFU_MISMATCH
        assert outcome == expected.value, (leaf, outcome, outcomes)


def test_threads_racing_on_one_host_with_different_leaves(
    tmp_path: Path, chains: dict[str, tuple[bytes, ...]]
) -> None:
    pins = {k: spki_pin_der(v[0]) for k, v in chains.items()}
    for attempt in range(3):
        path = tmp_path / f"known-{attempt}.json"
        stores = [KnownPins(path) for _ in range(8)]  # one store each: like separate processes
        barrier = threading.Barrier(len(stores))
        outcomes: list[tuple[str, str]] = []
        lock = threading.Lock()

        def run(
            i: int,
            store: KnownPins,
            barrier: threading.Barrier,
            lock: threading.Lock,
            outcomes: list[tuple[str, str]],
        ) -> None:
            leaf = "AB"[i % 2]
            barrier.wait()
            result = store.check("race.example", 443, chains[leaf], NOW)
            with lock:
                outcomes.append((leaf, "first" if result is None else result.status.value))

        threads = [
            threading.Thread(target=run, args=(i, s, barrier, lock, outcomes))
            for i, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        entry = KnownPins(path).get("race.example")
        assert entry is not None
        check_outcomes(outcomes, str(entry.pins[0]), pins)


def spki_pin_der(der: bytes) -> str:
    from certpin import Pin

    return str(Pin.for_certificate(der))


_CHILD = """
import datetime as dt, sys, time
from pathlib import Path
from certpin.dynamic import KnownPins
store, leaf, go = KnownPins(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
chain = tuple(Path(p).read_bytes() for p in sys.argv[4:])
while not go.exists():
    time.sleep(0.0005)
result = store.check("race.example", 443, chain, dt.datetime(2026, 1, 15, tzinfo=dt.UTC))
print(leaf, "first" if result is None else result.status.value)
"""


def test_processes_racing_on_one_host_with_different_leaves(
    tmp_path: Path, chains: dict[str, tuple[bytes, ...]]
) -> None:
    files: dict[str, list[str]] = {}
    for leaf, chain in chains.items():
        files[leaf] = []
        for n, der in enumerate(chain):
            f = tmp_path / f"{leaf}{n}.der"
            f.write_bytes(der)
            files[leaf].append(str(f))
    path, go = tmp_path / "known.json", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), leaf, str(go), *files[leaf]],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for leaf in "ABABAB"
    ]
    time.sleep(1.0)  # let every child import certpin and start polling
    go.touch()
    outcomes = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        leaf, outcome = out.split()
        outcomes.append((leaf, outcome))
    entry = KnownPins(path).get("race.example")
    assert entry is not None
    check_outcomes(outcomes, str(entry.pins[0]), {k: spki_pin_der(v[0]) for k, v in chains.items()})


def test_a_record_made_by_someone_else_is_checked_not_allowed(
    tmp_path: Path, chains: dict[str, tuple[bytes, ...]]
) -> None:
    """The window itself: this store read "no record", another process recorded meanwhile."""
    path = tmp_path / "known.json"
    mine, theirs = KnownPins(path), KnownPins(path)
    real_read = mine._read

    def read_then_lose_the_race() -> dict[str, object]:
        snapshot = dict(real_read())
        if not snapshot:
            theirs.record("race.example", 443, chains["B"])
        return snapshot  # type: ignore[return-value]

    mine._read = read_then_lose_the_race  # type: ignore[method-assign]
    result = mine.check("race.example", 443, chains["A"], NOW)
    assert result is not None and result.status is VerdictStatus.TOFU_MISMATCH
    # its twin: the same leaf as the record that won is simply OK
    fresh = KnownPins(tmp_path / "known2.json")
    other = KnownPins(tmp_path / "known2.json")
    real2 = fresh._read

    def read_then_same_leaf() -> dict[str, object]:
        snapshot = dict(real2())
        if not snapshot:
            other.record("race.example", 443, chains["A"])
        return snapshot  # type: ignore[return-value]

    fresh._read = read_then_same_leaf  # type: ignore[method-assign]
    result = fresh.check("race.example", 443, chains["A"], NOW)
    assert result is not None and result.status is VerdictStatus.OK


def test_cli_accept_host_star_records_the_portless_key(
    pki_a: PKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files: PKIFiles = write_pki_files(pki_a, tmp_path / "pki")
    path = tmp_path / "known.json"
    store = KnownPins(path)
    with TLSServer(files.certfile, files.keyfile) as srv:
        args = ["--file", str(path), "--cafile", str(files.root_ca)]
        code = main(["tofu", "accept", "127.0.0.1:*", "--connect-port", str(srv.port), *args])
        assert code == 0
        assert capsys.readouterr().out.startswith("127.0.0.1: now trusting")
        assert [e.key for e in store.entries()] == ["127.0.0.1"]
        star = store.get("127.0.0.1")
        assert star is not None and str(star.pins[0]) == spki_pin(pki_a.leaf.cert)
        assert store.get("127.0.0.1", 443) is None  # never the silent :443 of the old code
        # the twin: an explicit port is a record for that port, and replaces the host-wide one
        # (whose port is unknown: it may have been this one)
        assert main(["tofu", "accept", f"127.0.0.1:{srv.port}", *args]) == 0
    assert [e.key for e in store.entries()] == [f"127.0.0.1:{srv.port}"]
    assert store.get("127.0.0.1") is None
    assert main(["tofu", "forget", "127.0.0.1:*", "--file", str(path)]) == 0
    assert store.entries() == []
