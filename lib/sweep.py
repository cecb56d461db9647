"""Training runs of the model store at any scale: one job per run, through submitit.

A sweep is a dict ``{name: TrainConfig}`` (e.g. `lib.config.chapter4_runs`). :func:`run` trains
every run whose store entry is not ``"ok"`` (`lib.store.status`) and saves it; a run interrupted
mid-way resumes from its partial state (`lib.train.train`, ``partial=``), so a sweep can be
stopped and restarted at any time. Executors, from `submitit`:

- ``inline``: one run after another in this process (no submitit);
- ``debug``: submitit's in-process executor (for tests);
- ``local``: one process per run on this machine, at most ``jobs`` at once;
- ``slurm``: a SLURM job array, at most ``jobs`` running at once.

One progress line covers all jobs: runs finished, and each running run's step and accuracy
(read from the small JSON file each job rewrites at every evaluation). Introduced in chapter 4.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lib import store, train
from lib.config import TrainConfig
from lib.validate import check_int

EXECUTORS = ("inline", "debug", "local", "slurm")
#: Where submitit keeps its job files and logs.
LOGS = Path(__file__).resolve().parents[1] / "build" / "sweep"


def _progress_path(cfg: TrainConfig, root: Path) -> Path:
    return store.partial_path(cfg, root).with_suffix(".progress.json")


def _lock(path: Path) -> None:
    """Take the lock file ``path`` for this process; a lock left by a dead process is taken over.

    Raises
    ------
    RuntimeError
        If a live process holds it (the same run trained twice at once would share a partial file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)                               # raises if no such process
        if pid != os.getpid():
            raise RuntimeError(f"{path.stem} is being trained by process {pid}")
    except (OSError, ValueError):
        pass                                          # no lock, or its holder is gone
    path.write_text(str(os.getpid()))


def run_job(name: str, cfg: TrainConfig, root: Path = store.STORE, threads: int = 1,
            amp: bool = False, allow_dirty: bool = False) -> dict:
    """Train run ``name`` (resuming its partial state if any), save it in the store at ``root``
    and return a summary: name, key, train_s, stop_step, converged, accuracy (on k_train)."""
    torch.set_num_threads(threads)
    root, progress = Path(root), _progress_path(cfg, Path(root))
    lock = progress.with_suffix("").with_suffix(".lock")
    _lock(lock)

    def report(now: dict) -> None:
        progress.write_text(json.dumps(now))

    model, history, info, checkpoints = train.train(
        cfg, progress=False, partial=store.partial_path(cfg, root), report=report, amp=amp)
    store.save(cfg, model, history, info, checkpoints, root=root, allow_dirty=allow_dirty)
    progress.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
    final = history[history.step == info["stop_step"]].set_index("k_test").accuracy
    return {"name": name, "key": store.key(cfg), "train_s": round(info["train_s"], 1),
            "stop_step": info["stop_step"], "converged": info["converged"],
            "accuracy": float(final[cfg.k_train])}


def check(runs: dict[str, TrainConfig], root: Path = store.STORE) -> dict[str, str]:
    """The store status (`lib.store.status`) of every run, by name; trains nothing."""
    return {name: store.status(cfg, root) for name, cfg in runs.items()}


def _executor(kind: str, jobs: int, timeout_min: int, slurm: dict | None):
    """A submitit executor of ``kind`` (``None`` for ``inline``)."""
    import submitit

    LOGS.mkdir(parents=True, exist_ok=True)
    if kind == "debug":
        return submitit.DebugExecutor(folder=LOGS)
    if kind == "local":
        ex = submitit.LocalExecutor(folder=LOGS)
        ex.update_parameters(timeout_min=timeout_min)
        return ex
    ex = submitit.AutoExecutor(folder=LOGS, cluster="slurm")
    ex.update_parameters(timeout_min=timeout_min, slurm_array_parallelism=jobs, **(slurm or {}))
    return ex


def _line(running: dict, root: Path) -> str:
    """``name step/cap acc`` for every running job, from the jobs' progress files."""
    parts = []
    for name, cfg in running.items():
        try:
            now = json.loads(_progress_path(cfg, root).read_text())
            parts.append(f"{name} {now['step']}/{now['n_steps']} acc {now['accuracy']:.3f}")
        except (OSError, ValueError, KeyError):
            parts.append(f"{name} starting")
    return "; ".join(parts)


def run(runs: dict[str, TrainConfig], executor: str = "local", jobs: int = 2,
        root: Path = store.STORE, force: bool = False, threads: int = 1, amp: bool = False,
        allow_dirty: bool = False, timeout_min: int = 24 * 60, slurm: dict | None = None,
        poll_s: float = 5.0, progress: bool = True) -> tuple[list[dict], dict[str, str]]:
    """Train every run of ``runs`` whose entry is not ``"ok"`` (all of them with ``force``).

    Returns
    -------
    done : list of dict
        :func:`run_job`'s summary of every run trained, in order of completion.
    failed : dict
        ``{name: error message}`` of the runs that raised; the others still ran.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    check_int("jobs", jobs, 1)
    root = Path(root)
    todo = [n for n, s in check(runs, root).items() if force or s != "ok"]
    kwargs = dict(root=root, threads=threads, amp=amp, allow_dirty=allow_dirty)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))     # BLAS threads of local jobs
    done, failed = [], {}
    quiet = {} if progress else {"disable": True}      # TQDM_DISABLE=1 silences the bar too
    bar = tqdm(total=len(todo), desc="runs", unit="run", **quiet)
    ex = None if executor == "inline" else _executor(executor, jobs, timeout_min, slurm)
    if executor in ("inline", "debug"):
        _serial(ex, todo, runs, kwargs, done, failed, bar)
        bar.close()
        return done, failed
    if executor == "slurm":                 # the scheduler caps concurrency (array parallelism)
        with ex.batch():
            jobs_of = {n: ex.submit(run_job, n, runs[n], **kwargs) for n in todo}
        queue = []
    else:                                   # local: submit in waves of at most `jobs`
        jobs_of, queue = {}, list(todo)
    try:
        _drain(ex, executor, jobs, runs, kwargs, jobs_of, queue, done, failed, bar, root, poll_s)
    finally:                                # interrupted: stop the jobs still running
        for job in jobs_of.values():
            job.cancel(check=False)
    bar.close()
    return done, failed


def _serial(ex, todo, runs, kwargs, done, failed, bar) -> None:
    """Train ``todo`` one after another, in this process (``ex`` is the debug executor or None)."""
    for name in todo:
        bar.set_postfix_str(name)
        try:
            done.append(run_job(name, runs[name], **kwargs) if ex is None
                        else ex.submit(run_job, name, runs[name], **kwargs).result())
        except Exception as err:            # one failed run must not stop the sweep
            failed[name] = f"{type(err).__name__}: {err}"
        bar.update()


def _drain(ex, executor, jobs, runs, kwargs, jobs_of, queue, done, failed, bar, root, poll_s):
    """Submit ``queue`` (at most ``jobs`` at once for ``local``) and collect ``jobs_of`` until
    both are empty, updating ``done``, ``failed`` and the progress bar."""
    while queue or jobs_of:
        while queue and (executor != "local" or len(jobs_of) < jobs):
            name = queue.pop(0)
            jobs_of[name] = ex.submit(run_job, name, runs[name], **kwargs)
        for name, job in list(jobs_of.items()):
            if job.done():
                try:
                    done.append(job.result())
                except Exception as err:
                    failed[name] = f"{type(err).__name__}: {err}"
                del jobs_of[name]
                bar.update()
        bar.set_postfix_str(_line({n: runs[n] for n in jobs_of}, root))
        time.sleep(poll_s if jobs_of else 0)
