"""Dynamic pinning costs: verifying + loading a 1 000-domain signed bundle, and the per-handshake
cost of a `DynamicPolicy` against a static `Policy`, measured in one run.

1. ``verify_bundle`` (signature, canonical base64url, payload, policy validation) of a bundle
   with 1 000 domains, two pins each, for ES256 and Ed25519; and a `DynamicPolicy` cold start
   from its cache (read the file + verify + build the effective policy). Goal: <= 5 ms.
2. Real loopback handshakes (bench/handshake_overhead.py's harness): plain, pinned with a static
   policy, pinned with a `DynamicPolicy` holding the same pins (installed from a signed bundle).
   Goal: the dynamic ratio equals the static ratio (both <= 1.01 of plain).

    .venv/bin/python bench/bundle_load.py [--rounds 20] [--per-round 50] [--repeats 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import handshake_overhead as ho
from _common import BENCH, Result, median, print_table, test_pki

import certpin
from certpin._jws import FileSigner, generate_private_key

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


def load_times(repeats: int) -> list[Result]:
    now = dt.datetime.now(dt.UTC)
    results = []
    for alg in ("ES256", "Ed25519"):
        signer = FileSigner(generate_private_key(alg))
        token = certpin.sign_bundle(
            big_policy(), signer, version=1, expires=now + dt.timedelta(days=30)
        )
        keys = [signer.trusted_key]
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            certpin.verify_bundle(token, keys, now=now)
            samples.append(time.perf_counter_ns() - t0)
        ms = median(samples) / 1e6
        print(
            f"bundle_load: verify {alg} bundle, {DOMAINS} domains, {len(token):,} bytes:"
            f" {ms:.3f} ms"
        )
        results.append(
            Result("bundle", f"verify+load {DOMAINS} domains {alg}", ms, 5.0, "ms", goal_value=5.0)
        )
        with tempfile.TemporaryDirectory() as tmp:
            fallback = certpin.Policy.from_dict({"domains": {}})
            dyn = certpin.DynamicPolicy(
                "https://pins.invalid/b.jws", trusted_keys=keys, cache_dir=tmp, fallback=fallback
            )
            dyn.accept(token)
            cold = []
            for _ in range(max(10, repeats // 10)):
                t0 = time.perf_counter_ns()
                certpin.DynamicPolicy(
                    "https://pins.invalid/b.jws",
                    trusted_keys=keys,
                    cache_dir=tmp,
                    fallback=fallback,
                )
                cold.append(time.perf_counter_ns() - t0)
            cms = median(cold) / 1e6
            print(f"bundle_load: DynamicPolicy cold start from cache ({alg}): {cms:.3f} ms")
            results.append(
                Result("bundle", f"client start from cache {alg}", cms, 5.0, "ms", goal_value=5.0)
            )
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
        dyn = certpin.DynamicPolicy(
            "https://pins.invalid/b.jws",
            trusted_keys=[signer.trusted_key],
            cache_dir=Path(tmp) / "cache",
            fallback=certpin.Policy.from_dict({"domains": {}}),
        )
        assert dyn.accept(
            certpin.sign_bundle(doc, signer, version=1, expires=now + dt.timedelta(days=30))
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


def run(rounds: int = 20, per_round: int = 50, repeats: int = 200) -> list[Result]:
    return load_times(repeats) + handshakes(rounds, per_round)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    print_table(run(args.rounds, args.per_round, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
