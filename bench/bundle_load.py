"""Dynamic pinning costs: verifying + loading a 1 000-domain signed bundle, and the per-handshake
cost of a `DynamicPolicy` against a static `Policy`, measured in one run.

The bundle: 1 000 domains, two pins each (one unique per domain, one shared backup), signed
with ES256 and with Ed25519. Baseline everywhere: ``json.loads`` of the same payload, measured
alongside. Goals (issue 13): <= 10 ms in a new process, <= 5 ms in a running one.

1. New processes (one cold sample each, the way a program starts): ``verify_bundle``, and a
   `DynamicPolicy` start from its cache, each with the young-generation collection it leaves
   pending on the clock.
2. In one process, interleaved with the baseline: ``verify_bundle`` (signature, canonical
   base64url, payload, policy validation) with certpin's parse caches cleared before each
   sample (cold) and not (a refresh re-delivering the same keys); then a `DynamicPolicy` start
   from its cache (read the files, verify, build the policy in force; the bundle host's HTTPS
   client is built by the first fetch), cold.
3. Real loopback handshakes (bench/handshake_overhead.py's harness): plain, pinned with a static
   policy, pinned with a `DynamicPolicy` holding the same pins (installed from a signed bundle).
   Goal: the dynamic ratio equals the static ratio (both <= 1.01 of plain).

    .venv/bin/python bench/bundle_load.py [--rounds 20] [--per-round 50] [--repeats 200]
        [--fresh 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import handshake_overhead as ho
from _common import BENCH, Result, median, print_table, test_pki

import certpin
import certpin.dynamic
from certpin.core import hosts as _hosts
from certpin.core import pins as _pins
from certpin.core import policy as _policy
from certpin.dynamic.jws import FileSigner, b64url_decode, generate_private_key

DOMAINS = 1000


def big_policy(extra: dict[str, list[str]] | None = None) -> dict[str, object]:
    domains = {
        f"api{i}.example.com": {
            "pins": [str(certpin.Pin(i.to_bytes(32, "big"))), str(certpin.Pin(b"\x01" * 32))]
        }
        for i in range(DOMAINS)
    }
    for host, pins in (extra or {}).items():
        domains[host] = {"pins": pins}
    return {"domains": domains}


def bundle_host_fallback() -> certpin.Policy:
    """The app's static policy: it pins the bundle host (DynamicPolicy requires that)."""
    pins = [str(certpin.Pin(b"\x02" * 32)), str(certpin.Pin(b"\x03" * 32))]
    return certpin.Policy.from_dict({"domains": {"pins.invalid": {"pins": pins}}})


def clear_caches() -> None:
    """Forget certpin's parse caches: a process at client start has never seen these keys/pins.

    (Looked up by name, so the same script also measures older trees without some of them.)
    """
    for module, name in (
        (_hosts, "_parse_pattern"),
        (_pins, "_parse_cached"),
        (_policy, "_canonical"),
    ):
        cache = getattr(module, name, None)
        if hasattr(cache, "cache_clear"):
            cache.cache_clear()


def _interleaved(
    measured: Callable[[], object], baseline: Callable[[], object], repeats: int, cold: bool
) -> tuple[float, float]:
    """Median ms of `measured` and of `baseline`, sampled alternately (same noise for both)."""
    ours, base = [], []
    for _ in range(repeats):
        if cold:
            clear_caches()
        t0 = time.perf_counter_ns()
        measured()
        ours.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        baseline()
        base.append(time.perf_counter_ns() - t0)
    return median(ours) / 1e6, median(base) / 1e6


def load_times(repeats: int) -> list[Result]:
    """verify_bundle with cold caches (client start) and warm (a refresh re-delivering the same
    keys), against ``json.loads`` of the same payload measured interleaved; then a
    `DynamicPolicy` cold start from its cache, against ``ssl.create_default_context()``."""
    now = dt.datetime.now(dt.UTC)
    results = []
    for alg in ("ES256", "Ed25519"):
        signer = FileSigner(generate_private_key(alg))
        token = certpin.dynamic.sign_bundle(
            big_policy(), signer, version=1, expires=now + dt.timedelta(days=30)
        )
        payload = b64url_decode(token.split(".")[1])
        keys = [signer.trusted_key]
        for cold in (True, False):
            ms, json_ms = _interleaved(
                lambda: certpin.dynamic.verify_bundle(token, keys, now=now),  # noqa: B023
                lambda: json.loads(payload),  # noqa: B023
                repeats,
                cold,
            )
            label = "cold caches" if cold else "warm caches"
            print(
                f"bundle_load: verify {alg} bundle, {DOMAINS} domains, {len(token):,} bytes,"
                f" {label}: {ms:.3f} ms (json.loads of the payload alone: {json_ms:.3f} ms)"
            )
            results.append(
                Result(
                    "bundle",
                    f"verify+load {DOMAINS} domains {alg}, {label}",
                    ms,
                    json_ms,
                    "ms",
                    goal_value=5.0 if cold else None,
                )
            )
        with tempfile.TemporaryDirectory() as tmp:
            fallback = bundle_host_fallback()

            def start() -> None:
                certpin.dynamic.DynamicPolicy(
                    "https://pins.invalid/b.jws",
                    trusted_keys=keys,  # noqa: B023
                    cache_dir=tmp,  # noqa: B023
                    fallback=fallback,  # noqa: B023
                )

            certpin.dynamic.DynamicPolicy(
                "https://pins.invalid/b.jws", trusted_keys=keys, cache_dir=tmp, fallback=fallback
            ).accept(token)
            cms, base_ms = _interleaved(
                start,
                lambda: json.loads(payload),  # noqa: B023
                max(10, repeats // 4),
                True,
            )
            print(
                f"bundle_load: DynamicPolicy start from cache ({alg}), cold caches: {cms:.3f} ms"
                f" (json.loads of the payload alone: {base_ms:.3f} ms)"
            )
            results.append(
                Result(
                    "bundle",
                    f"DynamicPolicy start from cache {alg}, cold caches",
                    cms,
                    base_ms,
                    "ms",
                    goal_value=5.0,
                )
            )
    return results


# -- client start in a fresh process ---------------------------------------------------------------


def child(what: str, workdir: str) -> None:
    """Child process: one cold `what` ("start" or "verify"), then the json.loads baseline, as
    JSON on stdout. Everything is imported and read before the clock starts; nothing certpin
    has parsed before is in its caches (a new process), and the interpreter's GC state is that
    of a program that has just imported its modules."""
    import gc

    work = Path(workdir)
    token = (work / "cache" / "bundle.jws").read_bytes()
    payload = b64url_decode(token.split(b".")[1].decode())
    keys = [certpin.dynamic.TrustedKey.from_pem((work / "pub.pem").read_bytes())]
    fallback = bundle_host_fallback()
    now = dt.datetime.now(dt.UTC)
    if what == "start":

        def measured() -> None:
            certpin.dynamic.DynamicPolicy(
                "https://pins.invalid/b.jws",
                trusted_keys=keys,
                cache_dir=work / "cache",
                fallback=fallback,
            )
    else:

        def measured() -> None:
            certpin.dynamic.verify_bundle(token, keys, now=now)

    t0 = time.perf_counter_ns()
    measured()
    # A young-generation collection the load left pending runs here, on the clock.
    gc.collect(0)
    ours = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    json.loads(payload)
    gc.collect(0)
    base = time.perf_counter_ns() - t0
    print(json.dumps({"ms": ours / 1e6, "json_ms": base / 1e6}))


def fresh_starts(samples: int, alg: str) -> list[Result]:
    """Client start as a program sees it: each sample is a new process (cold caches, the GC
    state of a program that just imported its modules), alternating DynamicPolicy start from
    its cache and a bare verify_bundle; baseline: json.loads of the payload in the same
    process."""
    now = dt.datetime.now(dt.UTC)
    signer = FileSigner(generate_private_key(alg))
    token = certpin.dynamic.sign_bundle(
        big_policy(), signer, version=1, expires=now + dt.timedelta(days=30)
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="certpin-bench-") as tmp:
        work = Path(tmp)
        (work / "pub.pem").write_bytes(signer.public_pem())
        certpin.dynamic.DynamicPolicy(
            "https://pins.invalid/b.jws",
            trusted_keys=[signer.trusted_key],
            cache_dir=work / "cache",
            fallback=bundle_host_fallback(),
        ).accept(token)
        runs: dict[str, list[tuple[float, float]]] = {"start": [], "verify": []}
        for _ in range(samples):
            for what in runs:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", what, tmp],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=BENCH,
                )
                data = json.loads(out.stdout)
                runs[what].append((data["ms"], data["json_ms"]))
        labels = {
            "verify": f"verify+load {DOMAINS} domains {alg}, new process",
            "start": f"DynamicPolicy start from cache {alg}, new process",
        }
        for what, samples_ in runs.items():
            ms = median([m for m, _ in samples_])
            base = median([b for _, b in samples_])
            print(
                f"bundle_load: {labels[what]}: {ms:.3f} ms median of {len(samples_)}"
                f" (json.loads of the payload in the same processes: {base:.3f} ms)"
            )
            results.append(Result("bundle", labels[what], ms, base, "ms", goal_value=10.0))
    return results


def handshakes(rounds: int, per_round: int) -> list[Result]:
    pki = test_pki()
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="certpin-bench-") as tmp:
        files = pki.write_pki_files(pki.make_pki(), tmp)  # type: ignore[attr-defined]
        pin = certpin.Pin.for_certificate(ho._der(files.intermediate_ca))
        backup = certpin.Pin.for_spki(b"backup key that is not in the chain")
        doc = big_policy({ho.HOST: [str(pin), str(backup)]})
        static = certpin.Policy.from_dict(doc)
        signer = FileSigner(generate_private_key("ES256"))
        dyn = certpin.dynamic.DynamicPolicy(
            "https://pins.invalid/b.jws",
            trusted_keys=[signer.trusted_key],
            cache_dir=Path(tmp) / "cache",
            fallback=bundle_host_fallback(),
        )
        assert dyn.accept(
            certpin.dynamic.sign_bundle(doc, signer, version=1, expires=now + dt.timedelta(days=30))
        ).ok
        contexts = {
            "plain": ho.plain_context(files.root_ca),
            "pinned": certpin.create_default_context(static, cafile=files.root_ca),
            "dynamic": certpin.create_default_context(dyn, cafile=files.root_ca),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "tls_server", str(files.certfile), str(files.keyfile)],
            cwd=BENCH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            results = ho._measure(contexts, port, rounds, per_round)
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(10)
            server.stdout.close()  # type: ignore[union-attr]
    return [r for r in results if r.case.endswith("connection")]


def run(rounds: int = 20, per_round: int = 50, repeats: int = 200, fresh: int = 30) -> list[Result]:
    fresh_results = [r for alg in ("Ed25519", "ES256") for r in fresh_starts(fresh, alg)]
    return fresh_results + load_times(repeats) + handshakes(rounds, per_round)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--fresh", type=int, default=30, help="new-process samples of each")
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    print_table(run(args.rounds, args.per_round, args.repeats, args.fresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
