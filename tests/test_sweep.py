"""Tests of lib.sweep and scripts/regenerate_models.py on the tiny sweep (seconds per run)."""
import fcntl
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lib import config, store, sweep

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean(monkeypatch):
    """Save as if from a clean tree (tests run in working copies that may be edited)."""
    state = {"commit": "0" * 40, "dirty": False, "diff_sha256": None, "lib_sha256": "1" * 64}
    monkeypatch.setattr(store, "code_state", lambda: state)


@pytest.mark.parametrize("executor", ["inline", "debug"])
def test_a_sweep_trains_what_is_missing_then_nothing(executor, tmp_path, clean):
    runs = config.tiny_runs()
    assert set(sweep.check(runs, tmp_path).values()) == {"missing"}
    done, failed = sweep.run(runs, executor, root=tmp_path, progress=False)
    assert failed == {} and sorted(job["name"] for job in done) == sorted(runs)
    assert set(sweep.check(runs, tmp_path).values()) == {"ok"}
    assert sweep.run(runs, executor, root=tmp_path, progress=False) == ([], {})
    for name, cfg in runs.items():                # the sweep's entry is the run train() gives
        _, history, info = store.require(cfg, name, tmp_path)
        job = next(j for j in done if j["name"] == name)
        assert job["stop_step"] == info["stop_step"] == history.step.max()


def test_a_failing_run_is_reported_and_the_others_still_run(tmp_path, clean, monkeypatch):
    runs = config.tiny_runs()
    real = sweep.train.train

    def flaky(cfg, **kw):
        if cfg.task == "root":
            raise RuntimeError("out of memory")
        return real(cfg, **kw)

    monkeypatch.setattr(sweep.train, "train", flaky)
    done, failed = sweep.run(runs, "inline", root=tmp_path, progress=False)
    assert failed == {"tiny_root": "RuntimeError: out of memory"}
    assert [j["name"] for j in done] == ["tiny_mlm"]


def test_bad_sweep_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="executor must be one of"):
        sweep.run(config.tiny_runs(), "cluster", root=tmp_path)
    with pytest.raises(ValueError, match="jobs must be in"):
        sweep.run(config.tiny_runs(), "local", jobs=0, root=tmp_path)


def test_check_lists_missing_runs_and_exits_nonzero(tmp_path):
    cmd = [sys.executable, "scripts/regenerate_models.py", "--sweep", "tiny", "--check",
           "--root", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "tiny_root" in out.stdout and "missing" in out.stdout
    assert list(tmp_path.iterdir()) == []                       # --check writes nothing
    help_text = subprocess.run([sys.executable, "scripts/regenerate_models.py", "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60).stdout
    assert "--check" in help_text and "--executor" in help_text


def test_a_run_is_never_trained_twice_at_once(tmp_path, clean):
    name, cfg = "tiny_mlm", config.tiny_runs()["tiny_mlm"]
    lock = store.partial_path(cfg, tmp_path).with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as holder:                        # another trainer holds the run
        holder.write("elsewhere:42")
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="being trained by elsewhere:42"):
            sweep.run_job(name, cfg, tmp_path)
    assert sweep.run_job(name, cfg, tmp_path)["name"] == name     # released: it runs
    assert store.status(cfg, tmp_path) == "ok"
    assert not store.partial_path(cfg, tmp_path).exists()      # removed after the save


def test_a_dirty_tree_fails_before_any_training(tmp_path, monkeypatch):
    dirty = {"commit": "0" * 40, "dirty": True, "diff_sha256": "1" * 64, "lib_sha256": "2" * 64}
    monkeypatch.setattr(store, "code_state", lambda: dirty)
    with pytest.raises(store.DirtyTree, match="commit first"):
        sweep.run(config.tiny_runs(), "inline", root=tmp_path, progress=False)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_the_local_executor_trains_in_separate_processes(tmp_path):
    """submitit's local executor, one job at a time (the waves path of sweep.run)."""
    runs = config.tiny_runs()
    done, failed = sweep.run(runs, "local", jobs=1, root=tmp_path, allow_dirty=True,
                             poll_s=0.5, progress=False)
    assert failed == {} and sorted(job["name"] for job in done) == sorted(runs)
    for name, cfg in runs.items():
        _, history, info = store.require(cfg, name, tmp_path)
        assert info["stop_step"] == history.step.max()


def test_jobs_of_a_background_runner_can_still_be_cancelled():
    """nohup and & start the runner with SIGINT ignored; its jobs (cancelled by SIGINT) must
    not inherit that."""
    child = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    runner = ("import signal, subprocess, sys; sys.path[:0] = ['scripts', '.']\n"
              "import regenerate_models\n"
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, "
              "text=True).stdout.strip())\n"
              "regenerate_models.restore_sigint()\n"
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, "
              "text=True).stdout.strip())")
    out = subprocess.run([sys.executable, "-c", runner], cwd=ROOT, capture_output=True,
                         text=True, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_a_sweeps_table_is_rewritten_only_from_its_own_laptop_store(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import regenerate_models

    table = tmp_path / "table.csv"

    def count(runs, root):
        return pd.DataFrame({"runs": [len(runs)], "root": [str(root)]})

    monkeypatch.setitem(regenerate_models.TABLES, "tiny", (count, table))
    monkeypatch.setitem(regenerate_models.ROOTS, "tiny", tmp_path)
    regenerate_models.write_table("tiny", "paper", tmp_path)
    regenerate_models.write_table("tiny", "laptop", tmp_path / "elsewhere")
    assert not table.exists() and capsys.readouterr().out.count("not rewritten") == 2
    regenerate_models.write_table("tiny", "laptop", tmp_path)
    written = pd.read_csv(table)
    assert list(written.runs) == [len(config.tiny_runs())]
    assert list(written.root) == [str(tmp_path)]
