"""Chapter 7's costly runs, stored in data/topics/ (one JSON record per study, lib.results).

- ``authors_demo``: the authors' released demo (lib.authors_demo), three seeds, with and without
  the LayerNorm + token-type input block of their code; its record carries ``dev_loss``;
- ``two_stage``: joint training from a small initialisation, Adam and SGD at three learning rates
  each, three seeds, with the value gap and attention ratio along the way (lib.two_stage);
- ``wikipedia``: the real-text encoder, three seeds, with its embedding and attention topic
  effects and their nulls (lib.wiki_study).

Runs already in a record are skipped, so an interrupted invocation resumes. The record names the
code it ran, so run it from a clean checkout of a commit, for example a worktree, writing into
the main checkout:

    git worktree add /work/wt-ch7 HEAD
    OMP_NUM_THREADS=1 PYTHONPATH=/work/wt-ch7 python /work/wt-ch7/scripts/topic_runs.py \\
        --out data/topics

It takes about 20 CPU-minutes on one core (each run's CPU seconds are in its record).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lib import authors_demo, results, two_stage, wiki_study

STUDIES = ("authors_demo", "two_stage", "wikipedia")


def _timed(fn, *args) -> dict:
    """``fn(*args)`` (a dict) with its ``cpu_s`` and ``wall_s`` added."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return {**out, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def _sweep(args, name: str, config, jobs: dict) -> dict:
    """Run every job ``{key: (fn, *args)}`` not yet in the record ``name``, storing each;
    returns the record."""
    record = results.open_record(args.out, name, asdict(config), fresh=args.fresh,
                                 allow_dirty=args.allow_dirty)
    for key, (fn, *fn_args) in jobs.items():
        if key in record["runs"]:
            print(f"{name} {key}: stored, skipped", flush=True)
            continue
        result = _timed(fn, *fn_args)
        results.add_run(args.out, name, record, key, result)
        print(f"{name} {key}: done in {result['cpu_s']:.0f} CPU s", flush=True)
    return record


def demo(args) -> None:
    cfg = authors_demo.DemoConfig()
    jobs = {f"{'authors_input' if norm else 'one_hot_input'}_s{seed}":
            (authors_demo.run, cfg, seed, norm)
            for norm in (True, False) for seed in cfg.seeds}
    record = _sweep(args, "authors_demo", cfg, jobs)
    faithful = [r["dev_loss"] for r in record["runs"].values() if r["input_norm"]]
    record["dev_loss"] = sum(faithful) / len(faithful)      # the headline: their code's model
    record["dev_loss_note"] = ("mean over seeds of the best dev loss (mean of batch means, as "
                               "the authors' code computes it) with their LayerNorm + "
                               "token-type input block")
    results.save(args.out, "authors_demo", record)


def stages(args) -> None:
    cfg = two_stage.StageConfig()
    jobs = {two_stage.key(opt, lr, seed): (_history, cfg, opt, lr, seed)
            for opt, lr, seed in cfg.runs()}
    _sweep(args, "two_stage", cfg, jobs)


def _history(cfg, opt, lr, seed) -> dict:
    return {"optimizer": opt, "lr": lr, "seed": seed,
            "history": two_stage.run(cfg, opt, lr, seed).to_dict("list")}


def wikipedia(args) -> None:
    cfg = wiki_study.TextConfig()
    prep = wiki_study.prepare(cfg)
    jobs = {"corpus": (lambda: prep["summary"],)}
    jobs |= {f"s{seed}": (wiki_study.run, cfg, prep, seed) for seed in cfg.seeds}
    _sweep(args, "wikipedia", cfg, jobs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the records (the book reads data/topics)")
    parser.add_argument("--only", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--fresh", action="store_true",
                        help="start the chosen records again instead of resuming them")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write records from uncommitted code (the book refuses them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for study in args.only:
        {"authors_demo": demo, "two_stage": stages, "wikipedia": wikipedia}[study](args)


if __name__ == "__main__":
    main()
