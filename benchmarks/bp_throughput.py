"""Throughput of the exact sampler and of batched BP, against a plain per-sequence Python BP.

Run with one BLAS thread (``make benchmark`` sets it):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bp_throughput.py

Prints a table (sequences per second, best of several repeats) and writes it with provenance to
``data/bp_throughput.csv`` and ``data/bp_throughput.json``; chapter 3 shows that file. A second
table, ``data/bp_scaling.csv``, times root and all-leaf posteriors over q in {4, 8, 16} and depth
in {4, 6, 8, 10} next to the operation count (``--no-scaling`` skips it). The
baseline is a straightforward per-sequence BP with Python loops over the alphabet, written the way
the authors' reference implementation is (one sequence at a time, both sweeps); the script also
checks that it agrees with ``lib.bp`` on the sequences it timed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib import bp, provenance, tree

DATA = Path(__file__).resolve().parents[1] / "data"


def naive_bp(M: list, x: list[int], k: int, T: list) -> tuple[list[float], list[list[float]]]:
    """Root marginal and leave-one-out leaf conditionals of one sequence, with plain Python loops."""
    q, L = len(M), len(x)
    depth = L.bit_length() - 1

    def norm(v):
        s = sum(v)
        return [t / s for t in v]

    inside = {depth: [[1.0 if b == s or s == q else 0.0 for b in range(q)] for s in x]}
    for i in range(depth - 1, k - 1, -1):
        inside[i] = []
        for j in range(2**i):
            left, right = inside[i + 1][2 * j], inside[i + 1][2 * j + 1]
            inside[i].append(norm([sum(M[a][b][c] * left[b] * right[c] for b in range(q) for c in range(q))
                                   for a in range(q)]))
    if k == 0:
        root = inside[0][0]
        outside = {0: [[1.0 / q] * q]}
    else:
        f = [norm([sum(T[j][a][y] * inside[k][j][y] for y in range(q)) for a in range(q)]) for j in range(2**k)]
        root = norm([np.prod([f[j][a] for j in range(2**k)]) for a in range(q)])
        outside = {k: [norm([sum(T[j][a][y] * np.prod([f[t][a] for t in range(2**k) if t != j])
                                 for a in range(q)) for y in range(q)]) for j in range(2**k)]}
    for i in range(k, depth):
        outside[i + 1] = []
        for j in range(2**i):
            psi, left, right = outside[i][j], inside[i + 1][2 * j], inside[i + 1][2 * j + 1]
            outside[i + 1].append(norm([sum(psi[a] * M[a][b][c] * right[c] for a in range(q) for c in range(q))
                                        for b in range(q)]))
            outside[i + 1].append(norm([sum(psi[a] * M[a][b][c] * left[b] for a in range(q) for b in range(q))
                                        for c in range(q)]))
    return root, outside[depth]


def best_rate(fn, n: int, repeats: int) -> float:
    """Sequences per second of ``fn()`` processing ``n`` sequences: best of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / min(times)


def measure(n: int = 500_000, n_naive: int = 300, repeats: int = 3) -> pd.DataFrame:
    """Throughput table for the book's grammar (q=4, depth=4, sigma=1), k = 0, 2, 4."""
    s = tree.BOOK_SETTING
    M = tree.random_grammar(s["q"], s["sigma"], s["seed"])
    rows = []
    for k in (0, 2, 4):
        _, leaves = tree.sample(M, s["depth"], n, k=k, seed=k)
        T = tree.path_marginals(M, k).tolist()
        Ml, xs = M.tolist(), leaves[:n_naive].tolist()
        naive = [naive_bp(Ml, x, k, T) for x in xs]
        assert np.allclose([r for r, _ in naive], bp.root_posterior(M, leaves[:n_naive], k), atol=1e-12)
        assert np.allclose([p for _, p in naive], bp.leaf_posterior(M, leaves[:n_naive], k), atol=1e-12)
        rate_naive = best_rate(lambda: [naive_bp(Ml, x, k, T) for x in xs], n_naive, 1)
        rates = {
            "sampling": best_rate(lambda: tree.sample(M, s["depth"], n, k=k, seed=1), n, repeats),
            "root posterior": best_rate(lambda: bp.root_posterior(M, leaves, k), n, repeats),
            "all-leaf posteriors": best_rate(lambda: bp.leaf_posterior(M, leaves, k), n, repeats),
        }
        for task, rate in rates.items():
            rows.append({"k": k, "task": task, "seq_per_s": rate, "baseline_seq_per_s": np.nan})
        rows.append({"k": k, "task": "plain Python BP (root + all leaves)", "seq_per_s": rate_naive,
                     "baseline_seq_per_s": rate_naive})
    table = pd.DataFrame(rows)
    naive_rate = table.groupby("k")["baseline_seq_per_s"].transform("max")
    table["speed-up vs plain BP"] = table["seq_per_s"] / naive_rate
    return table.drop(columns="baseline_seq_per_s")


def flops(q: int, depth: int, task: str) -> float:
    """Multiply-adds (x2) per sequence of one sweep: each of the ``2**depth - 1`` internal nodes
    contracts a (q, q*q) table with a q*q outer product; the outside sweep does it twice per node."""
    sweeps = 1 if task == "root posterior" else 3
    return 2.0 * sweeps * (2**depth - 1) * q**3


def measure_scaling(qs=(4, 8, 16), depths=(4, 6, 8, 10), budget: float = 2e9,
                    repeats: int = 2) -> pd.DataFrame:
    """Throughput of ``lib.bp`` (k = 0) against q and depth, with the achieved GFLOP/s.

    Each cell processes about ``budget`` flops (at least 256 sequences)."""
    rows = []
    for q in qs:
        M = tree.random_grammar(q, 1.0, 0)
        for depth in depths:
            n = int(np.clip(budget / flops(q, depth, "all-leaf posteriors"), 256, 200_000))
            _, leaves = tree.sample(M, depth, n, seed=depth)
            for task, fn in (("root posterior", bp.root_posterior),
                             ("all-leaf posteriors", bp.leaf_posterior)):
                rate = best_rate(lambda: fn(M, leaves, 0), n, repeats)
                rows.append({"q": q, "depth": depth, "task": task, "n": n, "seq_per_s": rate,
                             "flop_per_seq": flops(q, depth, task),
                             "GFLOP_per_s": rate * flops(q, depth, task) / 1e9})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500_000, help="sequences per batched measurement")
    parser.add_argument("--n-naive", type=int, default=300, help="sequences for the plain Python baseline")
    parser.add_argument("--no-save", action="store_true", help="print only; do not write data/")
    parser.add_argument("--no-scaling", action="store_true", help="skip the q x depth table")
    parser.add_argument("--scaling-only", action="store_true", help="only the q x depth table")
    args = parser.parse_args()
    if not args.scaling_only:
        throughput(args)
    if not args.no_scaling:
        scaling(args)


def throughput(args) -> None:
    """The book's grammar: sampler, root and all-leaf posteriors against plain Python BP."""
    table = measure(args.n, args.n_naive)
    shown = table.assign(seq_per_s=table["seq_per_s"].map("{:,.0f}".format),
                         **{"speed-up vs plain BP": table["speed-up vs plain BP"].map("{:,.0f}x".format)})
    print(shown.to_string(index=False))
    if not args.no_save:
        table.to_csv(DATA / "bp_throughput.csv", index=False)
        meta = provenance.environment() | {"date": datetime.date.today().isoformat(), "n": args.n,
                                           "n_naive": args.n_naive, "threads": "1 (OMP/OPENBLAS_NUM_THREADS=1)",
                                           "command": "make benchmark"}
        (DATA / "bp_throughput.json").write_text(json.dumps(meta, indent=2) + "\n")


def scaling(args) -> None:
    """How BP's cost grows over q and depth (written to data/bp_scaling.csv and .json)."""
    start = time.perf_counter()
    scaling = measure_scaling()
    print("\nHow BP's cost grows (k = 0, one thread): sequences/s and achieved GFLOP/s")
    print(scaling.pivot_table(index=["q", "depth"], columns="task",
                              values=["seq_per_s", "GFLOP_per_s"]).round(2).to_string())
    if not args.no_save:
        scaling.to_csv(DATA / "bp_scaling.csv", index=False)
        meta = provenance.environment() | {
            "date": datetime.date.today().isoformat(), "threads": "1 (OMP/OPENBLAS_NUM_THREADS=1)",
            "load_average_1min": os.getloadavg()[0], "seconds": time.perf_counter() - start,
            "command": "python benchmarks/bp_throughput.py --scaling-only"}
        (DATA / "bp_scaling.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
