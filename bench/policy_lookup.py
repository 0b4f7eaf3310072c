"""`Policy.lookup` time per host at 100 / 10 000 / 100 000 rules, against a plain dict lookup.

Rules are a mix of exact keys, exact keys with ``include_subdomains``, ``*.`` and ``**.``
patterns. Queries, 1 000 hosts of each kind (distinct from 10 000 rules up):

- hit:       an exact key (``svc17.team17.example.com``);
- subdomain: a name matched through a parent (``*.``, ``**.`` or include_subdomains), 1-2 labels
             below the rule;
- miss:      a 5-label name on a site no rule covers (no parent is probed).
- miss, same site: a 5-label name under a site with wildcard rules (the parent walk runs).

Baseline: ``dict.get`` of the same host strings on a dict with as many keys, measured in the
same run, interleaved batch by batch. Host normalisation is cached (``lru_cache``, 8 192 hosts),
as it is for a client talking to a set of hosts; the "hit, cold" row clears that cache before
each batch, i.e. the first lookup of each host (informational, no goal). Goal: median <= 2 µs
at 100 000 rules for hits, subdomain matches and misses, and flat across sizes.

    .venv/bin/python bench/policy_lookup.py [--sizes 100,10000,100000] [--repeats 30]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable

from _common import Result, median, print_table

import certpin
from certpin.core import policy as _policy

PINS = [str(certpin.Pin.for_spki(b"key A")), str(certpin.Pin.for_spki(b"key B"))]
QUERIES = 1000


def build(n: int) -> tuple[certpin.Policy, dict[str, list[str]], dict[str, int]]:
    """A policy of `n` rules (a quarter of each kind), queries per kind, and a baseline dict."""
    domains: dict[str, dict[str, object]] = {}
    queries: dict[str, list[str]] = {"hit": [], "subdomain": [], "miss": [], "miss, same site": []}
    for i in range(n):
        kind = i % 4
        base = f"team{i}.example{i % 997}.com"
        if kind == 0:
            domains[f"svc{i}.{base}"] = {"pins": PINS}
        elif kind == 1:
            domains[base] = {"pins": PINS, "include_subdomains": True}
        elif kind == 2:
            domains[f"*.{base}"] = {"pins": PINS}
        else:
            domains[f"**.{base}"] = {"pins": PINS}
    step = max(1, n // QUERIES)
    for j in range(QUERIES):
        group = (j * step) % n // 4 * 4  # the first of 4 rules, one of each kind
        i = group + j % 2  # an exact key, with or without include_subdomains
        queries["hit"].append(
            f"svc{i}.team{i}.example{i % 997}.com"
            if i % 4 == 0
            else f"team{i}.example{i % 997}.com"
        )
        i = group + 1 + j % 3  # include_subdomains, *. (exactly one label) or **. (any depth)
        base = f"team{i}.example{i % 997}.com"
        queries["subdomain"].append(f"api{j}.{base}" if i % 4 == 2 else f"a{j}.b.{base}")
        queries["miss"].append(f"x{j}.y{j}.nowhere{j}.example.net")
        # under a site the policy pins elsewhere: the parent walk really runs
        queries["miss, same site"].append(f"x{j}.y{j}.nowhere{j}.example{i % 997}.com")
    if n % 4 or n < 4:
        raise ValueError("use a multiple of 4 rules")
    start = time.perf_counter()
    policy = certpin.Policy.from_dict({"domains": domains})
    print(f"  built {n:,} rules in {time.perf_counter() - start:.2f} s", flush=True)
    for kind, hosts in queries.items():  # check the benchmark measures what it says
        found = sum(policy.lookup(h) is not None for h in hosts)
        assert found == (0 if kind.startswith("miss") else len(hosts)), (kind, found)
    baseline = {key: 1 for key in domains}
    return policy, queries, baseline


def _batch(
    fn: Callable[[str], object], hosts: list[str], clear: bool, policy: object = None
) -> float:
    """ns per call over one pass of `hosts`; `clear` forgets normalisation and the lookup memo
    first (the first lookup of each host)."""
    if clear:
        _policy._canonical.cache_clear()
        if policy is not None:
            policy._memo.clear()  # type: ignore[attr-defined]
    start = time.perf_counter_ns()
    for h in hosts:
        fn(h)
    return (time.perf_counter_ns() - start) / len(hosts)


def run(sizes: tuple[int, ...] = (100, 10_000, 100_000), repeats: int = 30) -> list[Result]:
    print("policy_lookup: median ns per lookup (1 000 hosts per batch, batches interleaved)")
    results = []
    for n in sizes:
        policy, queries, table = build(n)
        cases = [(kind, hosts, False) for kind, hosts in queries.items()]
        # First lookups (nothing cached): what a host costs the first time it is seen.
        for kind in ("hit", "subdomain", "miss, same site"):
            cases.append((f"{kind}, cold", list(dict.fromkeys(queries[kind])), True))
        gc.collect()
        gc.disable()  # a collection of the 100k-rule policy inside a batch is not lookup time
        try:
            for case, hosts, clear in cases:
                ours, base = [], []
                for _ in range(repeats):
                    ours.append(_batch(policy.lookup, hosts, clear, policy))
                    base.append(_batch(table.get, hosts, False))
                us, base_us = median(ours) / 1000, median(base) / 1000
                print(
                    f"  {n:>7,} rules  {case:22}  lookup {us:6.3f} µs   dict.get {base_us:6.3f} µs"
                    f"   ratio {us / base_us:5.1f}"
                )
                results.append(
                    Result(
                        "policy_lookup",
                        f"{n:,} rules, {case}",
                        us,
                        base_us,
                        "µs",
                        goal_value=2.0 if n == max(sizes) and not clear else None,
                    )
                )
        finally:
            gc.enable()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000,100000")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    print_table(run(tuple(int(s) for s in args.sizes.split(",")), args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
