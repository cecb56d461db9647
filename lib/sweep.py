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

import contextlib
import fcntl
import json
import os
import socket
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


@contextlib.contextmanager
def _lock(path: Path):
    """Hold an exclusive lock on ``path`` while the block runs (``fcntl.flock``: the kernel
    releases it when the holder exits, however it exits).

    Raises
    ------
    RuntimeError
        If another live process holds it: the same run trained twice at once would share a
        partial file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RuntimeError(f"{path.stem} is being trained by {handle.read() or 'another process'}")
        handle.truncate(0)
        handle.write(f"{socket.gethostname()}:{os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_job(name: str, cfg: TrainConfig, root: Path = store.STORE, threads: int = 1,
            amp: bool = False, allow_dirty: bool = False) -> dict:
    """Train run ``name`` (resuming its partial state if any), save it in the store at ``root``
    and return a summary: name, key, train_s, stop_step, converged, accuracy (on k_train).

    The code state is read before training: a dirty tree fails at once (unless ``allow_dirty``),
    and the save refuses if the code changed while the run trained. A pre-trained encoder
    (``cfg.init_from``) is always read from the model store, `lib.store.STORE`, whatever
    ``root`` is. The partial state is
    removed only once the entry is saved.
    """
    torch.set_num_threads(threads)
    root, progress = Path(root), _progress_path(cfg, Path(root))
    code = store.code_state()
    if code["dirty"] and not allow_dirty:
        raise store.DirtyTree("the working tree differs from its commit: commit first")
    partial = store.partial_path(cfg, root)
    with _lock(progress.with_suffix("").with_suffix(".lock")):
        model, history, info, checkpoints = train.train(
            cfg, progress=False, partial=partial, report=lambda now: progress.write_text(
                json.dumps(now)), amp=amp, keep_partial=True,
            encoder=store.pretrained_state(cfg))
        store.save(cfg, model, history, info, checkpoints, root=root, allow_dirty=allow_dirty,
                   code=code)
        for path in (partial, progress):
            path.unlink(missing_ok=True)
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
    if kind == "local":          # every job sees every GPU: several runs share one GPU
        ex = submitit.LocalExecutor(folder=LOGS)
        ex.update_parameters(timeout_min=timeout_min, gpus_per_node=torch.cuda.device_count())
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
    for name, value in (("jobs", jobs), ("threads", threads), ("timeout_min", timeout_min)):
        check_int(name, value, 1)
    if not poll_s > 0:
        raise ValueError(f"poll_s must be > 0, got {poll_s}")
    if store.code_state()["dirty"] and not allow_dirty:      # fail before hours of training
        raise store.DirtyTree("the working tree differs from its commit: commit first (or "
                              "allow_dirty=True)")
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
