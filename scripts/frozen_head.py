"""Fit the authors' two-layer head on the frozen masked-token encoder (lib.frozen_head).

For every frozen run of the sample-complexity sweep (every P and seed), trains the head on the
encoder's features of that run's training sequences, stops it on the run's validation set and
scores it on the run's test set against exact BP, on all test inputs and on those the encoder
never saw in pre-training (lib.sample_complexity.pretraining_seen), and fits wider heads at the
largest P; reads the encoder from the model store (never trains it). Fits already in the
record are skipped, so an interrupted invocation resumes. The record names the code it ran, so
run it from a clean checkout of a commit, for example a worktree, writing into the main
checkout:

    git worktree add /tmp/head_wt HEAD
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/head_wt python /tmp/head_wt/scripts/frozen_head.py \\
        --out data

It takes about 6 CPU-minutes on one core (each fit's CPU seconds are in the record).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lib import frozen_head, results, sample_complexity


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the record (the book reads data)")
    parser.add_argument("--fresh", action="store_true",
                        help="start the record again (drops fits made by another commit)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write a record from uncommitted code (the book refuses it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    jobs = frozen_head.fits()
    record = results.open_record(args.out, frozen_head.NAME, frozen_head.record_config(),
                                 fresh=args.fresh, allow_dirty=args.allow_dirty)
    encoder = frozen_head.encoder()
    seen = sample_complexity.pretraining_seen("laptop")     # scored without them too
    references = {}
    for key, (cfg, hidden) in (bar := tqdm(jobs.items(), unit="fit")):
        if key in record["runs"]:
            continue
        bar.set_postfix_str(key)
        cpu = time.process_time()
        result = frozen_head.fit(cfg, encoder, references, hidden, seen)
        results.add_run(args.out, frozen_head.NAME, record, key,
                        {**result, "cpu_s": time.process_time() - cpu})
        tqdm.write(f"{key}: accuracy {result['accuracy']:.4f} (BP {result['bp_accuracy']:.4f}), "
                   f"{result['epochs']} epochs, {result['fit_s']:.0f} s")
    print(f"record: {args.out / (frozen_head.NAME + '.json')}, {len(record['runs'])} fits")


if __name__ == "__main__":
    main()
