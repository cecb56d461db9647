"""Regenerate the model store (data/models) for one profile, through the sweep runner (lib.sweep).

Usage (from the repository root):

    python scripts/regenerate_models.py --check                  # list missing/stale runs, train nothing
    python scripts/regenerate_models.py                          # train them, two local jobs at once
    python scripts/regenerate_models.py --only root_k0 mlm_k0    # some runs only
    python scripts/regenerate_models.py --profile paper --executor slurm --jobs 16 --amp

Runs already stored with exactly their config and a clean commit are kept (``--force``
retrains them); a run interrupted mid-way resumes from its partial state in data/models/partial.
Entries are saved only from a clean working tree (commit first; ``--allow-dirty`` records the
diff's hash and leaves the entry flagged stale). ``--sweep chapter4`` (the default) names the
converged, seeded runs of chapters 4 and 5; ``--sweep tiny`` is the seconds-long
sweep CI exercises; ``--sweep sample_complexity`` trains root classifiers on fixed training sets
(lib.sample_complexity) into data/sample_complexity and then rewrites its table,
data/sample_complexity.csv; ``--sweep depth`` trains chapter 4's k = 0 runs with 1 to depth + 1
layers (lib.depth_sweep) and rewrites data/depth.csv; ``--sweep chapter5`` trains chapter 5's
one-head, depth-layer encoders (lib.paper_shaped). ``--prune`` deletes entries that belong to no
run of any sweep.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from lib import config, depth_sweep, paper_shaped, sample_complexity, store, sweep
from lib.provenance import PROFILES

SWEEPS = {"chapter4": config.chapter4_runs, "tiny": config.tiny_runs,
          "sample_complexity": sample_complexity.runs, "chapter5": paper_shaped.runs,
          "depth": depth_sweep.runs}
#: Where each sweep's entries live (default: the model store, data/models).
ROOTS = {"sample_complexity": sample_complexity.STORE}


def sample_complexity_table(runs: dict, root: Path):
    """The sweep's table, its k = 0 rows also scored on the test inputs that the pre-trained
    runs' encoder never saw in pre-training (`lib.sample_complexity.pretraining_seen`)."""
    return sample_complexity.table(runs, root, sample_complexity.pretraining_seen("laptop"))


#: Sweeps with a committed table of their laptop runs: (function making it, file).
TABLES = {"sample_complexity": (sample_complexity_table, sample_complexity.TABLE),
          "depth": (depth_sweep.table, depth_sweep.TABLE)}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--profile", choices=PROFILES, default="laptop")
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="chapter4")
    parser.add_argument("--executor", choices=sweep.EXECUTORS, default="local")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (local, slurm)")
    parser.add_argument("--only", nargs="*", help="run names (default: every run of the sweep)")
    parser.add_argument("--check", action="store_true",
                        help="list every missing or stale run and exit 1 if any; trains nothing")
    parser.add_argument("--force", action="store_true", help="retrain runs already stored")
    parser.add_argument("--allow-dirty", action="store_true", help="save from a modified tree")
    parser.add_argument("--prune", action="store_true", help="delete entries of no current run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per job")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument("--root", type=Path, help="store folder (default: data/models, or "
                        "data/sample_complexity for that sweep)")
    parser.add_argument("--slurm", nargs="*", default=[], metavar="KEY=VALUE",
                        help="submitit SLURM parameters, e.g. slurm_partition=gpu gpus_per_node=1")
    return parser.parse_args()


def _stop(*_) -> None:
    """SIGTERM: ignore further ones (the cleanup must finish), then unwind like Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(143)


def restore_sigint() -> None:
    """Local jobs are cancelled by SIGINT, which a runner started in the background (nohup, &)
    inherits as ignored and passes on, ignored, to its jobs: give it the default handler."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def write_table(name: str, profile: str, root: Path) -> None:
    """Rewrite the committed table of sweep ``name`` from its stored laptop runs (only those)."""
    make, path = TABLES[name]
    if (profile, root.resolve()) != ("laptop", ROOTS.get(name, store.STORE).resolve()):
        print(f"{path} not rewritten: it holds the laptop runs of {name}, not {profile} runs "
              f"in {root}")
        return
    results = make(SWEEPS[name](profile), root)
    results.to_csv(path, index=False, float_format="%.6g")
    print(f"wrote {len(results)} rows to {path}")


def main() -> int:
    args = parse()
    # SIGTERM (kill, a batch system's stop) unwinds like Ctrl-C, so the runner cancels its jobs
    signal.signal(signal.SIGTERM, _stop)
    restore_sigint()
    runs = SWEEPS[args.sweep](args.profile)
    args.root = args.root or ROOTS.get(args.sweep, store.STORE)
    unknown = set(args.only or ()) - set(runs)
    if unknown:
        sys.exit(f"unknown run names {sorted(unknown)}; choose from {list(runs)}")
    runs = {n: runs[n] for n in args.only} if args.only else runs
    if args.check:
        bad = {n: s for n, s in sweep.check(runs, args.root).items() if s != "ok"}
        for name, state in bad.items():
            print(f"{name:16s} {store.key(runs[name])}  {state}")
        print(f"{len(runs) - len(bad)} of {len(runs)} runs of {args.sweep}/{args.profile} are stored"
              f" and current; {len(bad)} missing or stale")
        return int(bool(bad))
    start = time.perf_counter()
    bad = [item for item in args.slurm if "=" not in item]
    if bad:
        sys.exit(f"--slurm takes KEY=VALUE items, got {bad}")
    slurm = {k: int(v) if v.isdigit() else v for k, v in (i.split("=", 1) for i in args.slurm)}
    done, failed = sweep.run(runs, args.executor, args.jobs, args.root, args.force, args.threads,
                             args.amp, args.allow_dirty, slurm=slurm)
    for job in done:
        print(f"{job['name']:16s} {job['key']}  {job['train_s']:7.0f} s  stop {job['stop_step']:6d}"
              f"  converged {job['converged']!s:5s}  accuracy on k_train {job['accuracy']:.4f}")
    for name, error in failed.items():
        print(f"{name:16s} FAILED  {error}")
    print(f"total {time.perf_counter() - start:.0f} s wall, {len(done)} trained, {len(failed)} failed")
    if args.sweep in TABLES:
        write_table(args.sweep, args.profile, args.root)
    if args.prune:
        keep = {store.key(c) for sweep_of in SWEEPS.values() for p in PROFILES
                for c in sweep_of(p).values()}
        for path in sorted(Path(args.root).glob("*.*")):
            if path.name.split(".")[0] not in keep:
                print(f"pruned {path.name}")
                path.unlink()
    return int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
