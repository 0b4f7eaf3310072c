"""The state: incremental runs read only new entries, --start-at end, a bad state file is an
input error, and ``kill -9`` at any point neither skips nor repeats a record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo_ctlog import TestLog
from demo_ctservers import RFC6962Server, TiledServer

from certpin.core.policy import Policy
from certpin.lifecycle.ct import state as ct_state
from certpin.lifecycle.ct.loglist import load_log_list
from certpin.lifecycle.ct.watch import Watcher
from ct._certs import issuance
from ct.conftest import run_ct, watch_once, write_log_list

KINDS = ["rfc6962", "tiled"]
CLI = Path(__file__).with_name("_cli.py")


def _server(kind: str):
    if kind == "tiled":
        return TiledServer(TestLog(static=True))
    return RFC6962Server(TestLog())


def _add(server, world, n=1, rogue=True, name="api.example.com"):
    for _ in range(n):
        i = issuance(world.rogue if rogue else world.ca, name)
        server.log.add_x509(i.final(), i.chain())


def _watch(capsys, policy, lst, state, *extra):
    return watch_once(
        capsys,
        str(policy),
        str(lst),
        "--state",
        str(state),
        *extra,
    )


def _reads(server) -> int:
    return server.requests["get-entries"] + server.requests["data"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_run_reads_only_new_entries(capsys, world, policy, tmp_path, kind):
    state = tmp_path / "state"
    with _server(kind) as server:
        _add(server, world, n=2)
        lst = write_log_list(tmp_path / "l.json", server)
        code, records, _ = _watch(capsys, policy, lst, state)
        assert (code, [r["index"] for r in records]) == (1, [0, 1])
        reads = _reads(server)
        code, records, _ = _watch(capsys, policy, lst, state)
        assert (code, records) == (0, [])
        assert _reads(server) == reads  # nothing new, nothing fetched
        _add(server, world, n=1)
        _add(server, world, n=1, name="www.unrelated.example")
        code, records, _ = _watch(capsys, policy, lst, state)
        assert (code, [r["index"] for r in records]) == (1, [2])
    saved = json.loads((state / "ct-watch.json").read_text())
    assert saved["pending"] == []
    (log,) = saved["logs"].values()
    assert log["position"] == 4 and log["head"]["size"] == 4
    assert oct((state / "ct-watch.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("start_at", ["beginning", "end"])
def test_a_log_that_starts_empty(capsys, world, policy, tmp_path, kind, start_at):
    state = tmp_path / "state"
    with _server(kind) as server:
        lst = write_log_list(tmp_path / "l.json", server)
        assert _watch(capsys, policy, lst, state, "--start-at", start_at)[:2] == (0, [])
        _add(server, world)
        code, records, err = _watch(capsys, policy, lst, state, "--start-at", start_at)
    assert (code, [r["index"] for r in records]) == (1, [0]), err


def test_without_state_every_run_starts_afresh(capsys, world, policy, rfc_log, tmp_path):
    _add(rfc_log, world)
    lst = write_log_list(tmp_path / "l.json", rfc_log)
    for _ in range(2):
        code, records, _ = run_ct(
            capsys, "watch", "--policy", str(policy), "--log-list", str(lst), "--once", "--json"
        )
        assert (code, len(records)) == (1, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_start_at_end_skips_what_is_there(capsys, world, policy, tmp_path, kind):
    state = tmp_path / "state"
    with _server(kind) as server:
        _add(server, world, n=300)  # a tiled log: one full tile and a partial one
        lst = write_log_list(tmp_path / "l.json", server)
        code, records, err = _watch(capsys, policy, lst, state, "--start-at", "end")
        assert (code, records) == (0, []), err
        assert _reads(server) <= 1  # RFC 6962: the last entry, for its inclusion proof
        _add(server, world, n=1)
        code, records, _ = _watch(capsys, policy, lst, state, "--start-at", "end")
        assert (code, [r["index"] for r in records]) == (1, [300])


def test_start_at_end_checks_the_frontier_against_the_root(capsys, world, policy, tmp_path):
    state = tmp_path / "state"
    with TiledServer(TestLog(static=True)) as server:
        _add(server, world, n=300)
        server.log.tampered_hash_tiles.add((1, 0))
        lst = write_log_list(tmp_path / "l.json", server)
        code, records, _ = _watch(capsys, policy, lst, state, "--start-at", "end")
    assert code == 3 and records[0]["kind"] == "log_error"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"format": "something-else"}', "not a certpin CT watch state"),
        ('{"format": "certpin-ct-state", "version": 9}', "version"),
        (
            json.dumps(
                {
                    "format": "certpin-ct-state",
                    "version": 1,
                    "issuances": {},
                    "pending": [],
                    "logs": {
                        "x": {
                            "url": "u",
                            "head": {"size": 1, "root": "AA=="},
                            "position": 0,
                            "range": [],
                        }
                    },
                }
            ),
            "root",
        ),
    ],
)
def test_a_bad_state_file_is_an_input_error_naming_it(
    capsys, world, policy, rfc_log, tmp_path, content, problem
):
    state = tmp_path / "state"
    state.mkdir()
    (state / "ct-watch.json").write_text(content)
    code, records, err = _watch(capsys, policy, write_log_list(tmp_path / "l.json", rfc_log), state)
    assert code == 2 and records == []
    assert str(state / "ct-watch.json") in err and problem in err
    assert rfc_log.requests == {}  # nothing fetched


def test_a_leftover_temporary_file_is_ignored(capsys, world, policy, rfc_log, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / ".ct-watch.json.abc.tmp").write_text("half a file")
    _add(rfc_log, world)
    code, records, _ = _watch(capsys, policy, write_log_list(tmp_path / "l.json", rfc_log), state)
    assert (code, len(records)) == (1, 1)


# -- crashes --------------------------------------------------------------------------------------


class _Killed(BaseException):
    """Stands for the process dying at a point of the commit protocol."""


def _watcher(policy, lst, state, emit):
    return Watcher(
        load_log_list(str(lst)), Policy.from_file(policy), state_dir=state, emit=emit, chunk=256
    )


def test_a_crash_after_the_commit_prints_the_records_on_the_next_run(world, policy, tmp_path):
    state = tmp_path / "state"
    with RFC6962Server(TestLog()) as server:
        _add(server, world, n=2)
        lst = write_log_list(tmp_path / "l.json", server)

        def die(record):
            raise _Killed

        with pytest.raises(_Killed), _watcher(policy, lst, state, die) as watcher:
            watcher.run_once()
        saved = ct_state.load_state(state)
        assert [r["index"] for r in saved.pending] == [0, 1]  # journaled, position advanced
        printed: list[dict] = []
        with _watcher(policy, lst, state, printed.append) as watcher:
            summary = watcher.run_once()
        assert [r["index"] for r in printed] == [0, 1] and summary.unexpected == 2
        printed.clear()
        with _watcher(policy, lst, state, printed.append) as watcher:
            watcher.run_once()
        assert printed == []


def test_a_crash_before_the_commit_reads_the_chunk_again(world, policy, tmp_path, monkeypatch):
    state = tmp_path / "state"
    with RFC6962Server(TestLog()) as server:
        _add(server, world, n=2)
        lst = write_log_list(tmp_path / "l.json", server)

        def die(*args, **kwargs):
            raise _Killed

        monkeypatch.setattr("certpin.lifecycle.ct.watch.save_state", die)
        printed: list[dict] = []
        with pytest.raises(_Killed), _watcher(policy, lst, state, printed.append) as watcher:
            watcher.run_once()
        monkeypatch.undo()
        assert printed == [] and not (state / "ct-watch.json").exists()
        with _watcher(policy, lst, state, printed.append) as watcher:
            watcher.run_once()
        assert [r["index"] for r in printed] == [0, 1]


@pytest.mark.slow
def test_kill_9_at_any_point_neither_skips_nor_repeats(world, policy, tmp_path):
    """A real ``kill -9`` of ``certpin ct watch`` at many points of a slow run; the runs'
    outputs together are exactly one uninterrupted run's."""
    state = tmp_path / "state"
    with RFC6962Server(TestLog()) as rfc, TiledServer(TestLog(static=True)) as tiled:
        for server in (rfc, tiled):
            for n in range(1500):
                i = issuance(
                    world.rogue if n % 50 == 7 else world.ca,
                    "api.example.com" if n % 50 == 7 else f"h{n}.other.example",
                )
                server.log.add_x509(i.final(), i.chain())
            server.max_entries = 50
        rfc.delay, tiled.delay = 0.1, 0.4  # about 3 s of reading, so that kills land mid-run
        lst = write_log_list(tmp_path / "l.json", rfc, tiled)
        argv = [
            sys.executable,
            str(CLI),
            "ct",
            "watch",
            "--policy",
            str(policy),
            "--log-list",
            str(lst),
            "--once",
            "--json",
            "--state",
            str(state),
            "--chunk",
            "256",
            "--parallel",
            "2",
        ]
        expected = {(s.url, n) for s in (rfc, tiled) for n in range(1500) if n % 50 == 7}
        lines: list[str] = []
        printed: list[tuple[float | None, int, int]] = []  # (wait, status, lines) per run
        kills, finished = 0, False
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        for wait in [0.7, 0.9, 1.1, 0.8, 1.0, 1.2, 0.9, 1.4] + [None]:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            if wait is not None:
                time.sleep(wait)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            out, err = proc.communicate(timeout=120)
            lines += out.decode().splitlines()
            printed.append((wait, proc.returncode, len(out.decode().splitlines())))
            if wait is None:  # 0 when the killed runs had already printed every record
                assert proc.returncode in (0, 1), err
                finished = True
    assert finished and kills >= 4, printed
    # Some killed runs had printed records (killed between commits), so the crash points were
    # spread over the run, not only before the first commit.
    assert sum(1 for wait, status, n in printed if status == -signal.SIGKILL and n) >= 2, printed
    records = [json.loads(line) for line in lines if line.strip()]
    seen = [(r["log"], r["index"]) for r in records]
    assert all(r["kind"] == "unexpected" for r in records)
    assert len(seen) == len(set(seen)), "a record was printed twice"
    assert set(seen) == expected, "a record was skipped"


# -- polling ----------------------------------------------------------------------------------


def test_polling_reads_what_is_new_each_round(world, policy, tmp_path):
    with RFC6962Server(TestLog()) as server:
        _add(server, world)
        lst = write_log_list(tmp_path / "l.json", server)
        printed: list[dict] = []
        rounds: list[int] = []

        def on_round(summary) -> None:
            rounds.append(summary.exit_code)
            _add(server, world)  # something new for the next round

        with _watcher(policy, lst, tmp_path / "state", printed.append) as watcher:
            watcher.watch(0.01, max_runs=3, on_round=on_round)
    assert [r["index"] for r in printed] == [0, 1, 2] and rounds == [1, 1, 1]


def test_stop_ends_a_round_at_a_chunk_boundary(world, policy, tmp_path):
    import threading

    state = tmp_path / "state"
    with RFC6962Server(TestLog()) as server:
        for n in range(600):
            _add(
                server,
                world,
                rogue=n in (10, 500),
                name="api.example.com" if n in (10, 500) else f"h{n}.other.example",
            )
        lst = write_log_list(tmp_path / "l.json", server)
        stop = threading.Event()
        printed: list[dict] = []

        def emit(record: dict) -> None:
            printed.append(record)
            stop.set()  # SIGTERM arrives while the first chunk is being printed

        with _watcher(policy, lst, state, emit) as watcher:
            watcher.watch(0.01, stop=stop)
        assert [r["index"] for r in printed] == [10]
        (log,) = ct_state.load_state(state).logs.values()
        assert log.position == 256
        printed.clear()
        with _watcher(policy, lst, state, printed.append) as watcher:
            watcher.run_once()
        assert [r["index"] for r in printed] == [500]


def test_the_cli_polls_and_reports_like_once_with_max_runs(
    capsys, world, policy, rfc_log, tmp_path
):
    _add(rfc_log, world)
    code, records, _ = run_ct(
        capsys,
        "watch",
        "--policy",
        str(policy),
        "--log-list",
        str(write_log_list(tmp_path / "l.json", rfc_log)),
        "--json",
        "--interval",
        "1",
        "--max-runs",
        "2",
        "--state",
        str(tmp_path / "s"),
    )
    assert code == 1 and len(records) == 1


def test_text_output_names_the_kind_the_key_and_the_entry(capsys, world, policy, rfc_log, tmp_path):
    from certpin.cli.main import main

    _add(rfc_log, world)
    code = main(
        [
            "ct",
            "watch",
            "--policy",
            str(policy),
            "--log-list",
            str(write_log_list(tmp_path / "l.json", rfc_log)),
            "--once",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("UNEXPECTED api.example.com: sha256/")
    assert f"x509 {rfc_log.url} #0" in out[0]
    assert out[-1] == "1 new entries from 1 log(s): 1 unexpected, 0 pinned, 0 log error(s)"


def test_on_a_terminal_the_round_ends_with_a_table_and_copyable_pins(capsys):
    from certpin.cli.ct import _Printer
    from certpin.lifecycle.ct.watch import RoundSummary

    printer = _Printer(as_json=False, tty=True)
    record = {
        "kind": "unexpected",
        "hosts": ["api.example.com"],
        "names": ["api.example.com"],
        "spki_pin": "sha256/" + "A" * 43 + "=",
        "tbs_sha256": "00" * 32,
        "log": "https://l/",
        "index": 7,
        "entry_type": "x509",
        "not_before": None,
        "not_after": None,
        "issuer": "CN=Rogue",
    }
    printer.emit(record)
    printer.emit({"kind": "log_error", "log": "https://m/", "reason": "forked"})
    assert capsys.readouterr().out == ""  # kept for the table
    printer.finish(RoundSummary(unexpected=1, log_errors=1, entries=8), 2)
    out = capsys.readouterr().out
    assert "Kind" in out and "Hosts" in out  # the table (its cells fold at this width)
    assert f"unexpected https://l/ #7: sha256/{'A' * 43}=" in out  # whole, on its own line
    assert out.rstrip().endswith("1 unexpected, 0 pinned, 1 log error(s)")
