"""Regenerate every stored model of chapter 4 for one profile (the model store in data/models).

Usage (from the repository root, one CPU thread per process):

    python scripts/regenerate_models.py --profile laptop            # train what is missing
    python scripts/regenerate_models.py --profile laptop --force    # retrain everything
    python scripts/regenerate_models.py --profile laptop --only root_k0 mlm_k0

Runs train one after another, most important first (`lib.config.chapter4_runs`); an entry already
present with exactly the same config is kept unless ``--force``. ``--prune`` deletes entries that
belong to no run of either profile (left behind by a changed config).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lib import config, store, train
from lib.provenance import PROFILES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="laptop")
    parser.add_argument("--only", nargs="*", help="run names (default: all runs of the profile)")
    parser.add_argument("--force", action="store_true", help="retrain entries that already exist")
    parser.add_argument("--prune", action="store_true", help="delete entries of no current run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    runs = config.chapter4_runs(args.profile)
    unknown = set(args.only or ()) - set(runs)
    if unknown:
        parser.error(f"unknown run names {sorted(unknown)}; choose from {list(runs)}")
    start = time.perf_counter()
    for name in args.only or runs:
        cfg = runs[name]
        if not args.force and store.load(cfg) is not None:
            print(f"{name:18s} {store.key(cfg)}  kept")
            continue
        t0 = time.perf_counter()
        model, history, info, checkpoints = train.train(cfg)
        store.save(cfg, model, history, info, checkpoints)
        final = history[history.step == cfg.n_steps].set_index("k_test").accuracy
        print(f"{name:18s} {store.key(cfg)}  {time.perf_counter() - t0:6.0f} s  "
              f"accuracy on k_test = {cfg.k_train}: {final[cfg.k_train]:.4f}", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.prune:
        keep = {store.key(c) for p in PROFILES for c in config.chapter4_runs(p).values()}
        for path in sorted(Path(store.STORE).glob("*.*")):
            if path.name.split(".")[0] not in keep:
                print(f"pruned {path.name}")
                path.unlink()


if __name__ == "__main__":
    main()
