"""Fit chapter 5's probes and store their tables in data/probes/ (lib.probe_study).

Reads the models of the store (never trains them) and fits, one after the other:

- the two-layer ancestor probes (the paper's readout) of every model of
  `lib.probe_study.ProbeConfig.models` and of a random encoder of each model shape, per layer
  and ancestor level, scored against the true ancestors and BP's exact ancestor laws;
- the same probes of one model with twice the epochs (what the short budget costs);
- the linear probes at the checkpoints and final models of the k = 0 runs (chapter 5,
  section 5).

The record names the code it ran, so run it from a clean checkout of a commit, for example a
worktree, writing into the main checkout:

    git worktree add /tmp/probe_wt HEAD
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/probe_wt python /tmp/probe_wt/scripts/fit_probes.py \
        --out data/probes

It takes about 12 CPU-minutes on one core (the record keeps the wall and CPU time).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lib import config, probe_study, provenance, run_data, train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the tables (the book reads data/probes)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write a record from uncommitted code (the book refuses it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = probe_study.ProbeConfig()
    runs = config.chapter4_runs(provenance.profile())
    M = run_data.grammar(runs[cfg.models[0]])
    print(cfg, flush=True)

    def progress(items):
        for name, item in items:
            print(f"  {name}  ({time.process_time():.0f} CPU s so far)", flush=True)
            yield name, item

    start, cpu = time.perf_counter(), time.process_time()
    ancestors = probe_study.ancestor_table(cfg, runs, M, progress=progress)
    ancestor_s = {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
    print(f"ancestor probes: {ancestor_s}", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    budget = probe_study.budget_table(cfg, runs, M)
    budget_s = {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
    print(f"budget check: {budget_s}", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    checkpoints = probe_study.checkpoint_table(cfg, runs, M, progress=progress)
    checkpoint_s = {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
    print(f"checkpoint probes: {checkpoint_s}", flush=True)
    timing = {"ancestor_probes": ancestor_s, "budget_check": budget_s,
              "checkpoint_probes": checkpoint_s, "threads": torch.get_num_threads(),
              "total_cpu_s": time.process_time()}
    command = " ".join(["python", *sys.argv])
    tables = {"ancestors": ancestors, "budget": budget, "checkpoints": checkpoints}
    path = probe_study.save(args.out, cfg, runs, tables, timing, command,
                            allow_dirty=args.allow_dirty)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
