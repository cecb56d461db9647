"""Where and how a masked-token run collapses: chapter 4's recipe traced step by step.

Trains the first ``--steps`` steps of chapter 4's converged masked-token run at filtering level
``--k`` (`lib.config.converged_config`, exactly the stored runs' trajectory: same data, masks,
initialisation, validation and plateau schedule) for every seed in ``--seeds`` and every
learning rate in ``--lr``, with `lib.collapse.trace`: every ``AGG`` steps the mean training loss
and the largest global gradient and update norms; every ``--probe-every`` steps, on the first
``N_PROBE`` validation sequences with every position masked in turn, the cross-entropy,
accuracy, KL to BP_k, entropy of the predictions and each layer's attention entropy. (Traces
written before this script moved its code to `lib.collapse` also hold ``mode_share``, the share
of predictions equal to the most frequent leaf symbol.)

One CSV per (lr, seed) under ``--out`` (a rerun skips finished ones) and ``runs.json`` with the
code state (`lib.provenance.code_state`) and settings. Run it from a clean worktree:

    git worktree add /tmp/wt-collapse HEAD
    PYTHONPATH=/tmp/wt-collapse python /tmp/wt-collapse/scripts/mlm_collapse.py \\
        --out data/mlm_collapse   # 24 traces: about 100 CPU-minutes, 50 with two jobs
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from lib import collapse, config, provenance


def _job(args) -> str:
    cfg, probe_every, path = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    collapse.trace(cfg, probe_every)[0].to_csv(path, index=False, float_format="%.6g")
    return f"{path.name}: {time.perf_counter() - t0:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=4, help="filtering level of the training data")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(12)))
    parser.add_argument("--lr", type=float, nargs="+", default=[4e-3, 2e-3],
                        help="Adam rates: the former and the current masked-token recipe's")
    parser.add_argument("--steps", type=int, default=3000, help="training steps traced")
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="processes at once")
    parser.add_argument("--out", type=Path, default=Path("data/mlm_collapse"))
    a = parser.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for lr in a.lr:
        for seed in a.seeds:
            cfg = replace(config.converged_config("mlm", "laptop", a.k, seed), lr=lr,
                          n_steps=a.steps, n_evals=1, eval_every=a.steps)
            path = a.out / f"k{a.k}_lr{lr:g}_s{seed}.csv"
            if not path.exists():
                jobs.append((cfg, a.probe_every, path))
    meta = a.out / "runs.json"
    runs = json.loads(meta.read_text()) if meta.exists() else {}
    with multiprocessing.Pool(a.jobs) as pool:
        for (cfg, _, path), line in zip(jobs, pool.imap(_job, jobs)):
            print(line, flush=True)
            runs[path.name] = {"code": provenance.code_state(), "probe_every": a.probe_every,
                               "config": json.loads(json.dumps(asdict(cfg), default=str))}
            meta.write_text(json.dumps(runs, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
