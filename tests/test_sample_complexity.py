"""Tests of lib.sample_complexity: the sweep's runs, its table from the store, and P*."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from lib import config, reference, sample_complexity as sc, store, sweep

torch.set_num_threads(1)


def test_runs_differ_only_in_level_size_and_seeds():
    runs = sc.runs("laptop")
    assert len(runs) == 5 * len(sc.SIZES["laptop"]) * len(sc.SEEDS)
    assert max(sc.SIZES["laptop"]) / min(sc.SIZES["laptop"]) >= 64
    assert list(runs)[:2] == ["root_k0_P512_s0", "root_k1_P512_s0"]      # cheapest first
    base = runs["root_k0_P512_s0"]
    assert base.restore_best and base.schedule == "plateau" and base.n_test == sc.N_TEST >= 20_000
    for name, cfg in runs.items():
        k, P, seed = (int(part[1:]) for part in name.split("_")[1:])
        assert cfg == replace(base, k_train=k, n_train=P, init_seed=seed, data_seed=seed)
    # the same held-out test sequences for every run, hence one BP reference per level
    assert len({(c.test_seed, c.n_test, c.grammar_seed) for c in runs.values()}) == 1
    assert len(sc.runs("paper")) == 5 * 12 * 3
    with pytest.raises(ValueError, match="profile must be one of"):
        sc.runs("desktop")


def tiny_sweep():
    """Two seeds of a q = 3, depth 3 root run on 64 and 128 training sequences (seconds)."""
    base = replace(config.tiny_runs()["tiny_root"], n_steps=200, restore_best=True,
                   checkpoints=())
    return {f"tiny_P{P}_s{s}": replace(base, n_train=P, init_seed=s, data_seed=s)
            for P in (64, 128) for s in (0, 1)}


@pytest.fixture
def clean(monkeypatch):
    """Save as if from a clean tree (tests run in working copies that may be edited)."""
    state = {"commit": "0" * 40, "dirty": False, "diff_sha256": None, "lib_sha256": "1" * 64}
    monkeypatch.setattr(store, "code_state", lambda: state)


def test_table_holds_one_row_per_stored_run_scored_against_bp(tmp_path, clean):
    runs = tiny_sweep()
    done, failed = sweep.run(dict(list(runs.items())[:3]), "inline", root=tmp_path,
                             progress=False)
    assert failed == {} and len(done) == 3
    results = sc.table(runs, tmp_path)                           # the unstored run is left out
    assert len(results) == 3 and set(results.P) == {64, 128}
    cfg = runs["tiny_P64_s1"]
    row = results[(results.P == 64) & (results.seed == 1)].iloc[0]
    _, history, info = store.require(cfg, root=tmp_path)
    final = history[(history.step == info["stop_step"]) & (history.k_test == cfg.k_train)]
    assert row.accuracy == final.accuracy.item() and row.n_test == cfg.n_test
    assert row.best_step == info["best_step"] <= row.stop_step
    bp = reference.bp_reference(cfg).query("k_model == 0 and k_test == 0").accuracy.item()
    assert row.bp_accuracy == bp and row.commit == "0" * 40


def test_p_star_reads_the_first_size_from_which_the_gap_stays_small():
    rows = []
    for P, gaps in ((512, (0.10, 0.12)), (1024, (0.01, 0.03)), (2048, (0.05, 0.07)),
                    (4096, (0.005, 0.015)), (8192, (0.0, 0.004))):
        rows += [{"k": 0, "P": P, "accuracy": 0.9 - g, "bp_accuracy": 0.9} for g in gaps]
    rows += [{"k": 1, "P": P, "accuracy": 0.5, "bp_accuracy": 0.6} for P in (512, 1024)
             for _ in range(2)]
    out = sc.p_star(pd.DataFrame(rows), eps=0.02)
    # 1024 is within 2 points but 2048 is not again: P* is 4096, not 1024
    assert out.loc[0, "P_star"] == 4096 and np.isnan(out.loc[1, "P_star"])
    # gap at 4096 is 0.010 +- 0.005 and at 2048 0.06 +- 0.01: one SE either way changes nothing
    assert out.loc[0, "P_low"] == out.loc[0, "P_high"] == 4096
    assert sc.p_star(pd.DataFrame(rows), eps=0.0105).loc[0, "P_high"] == 8192


@pytest.mark.parametrize("eps, rows, match", [
    (0.0, [{"k": 0, "P": 1, "accuracy": 1, "bp_accuracy": 1}] * 2, "eps"),
    (0.1, [{"k": 0, "P": 1, "accuracy": 1, "bp_accuracy": 1}], "at least two seeds"),
])
def test_p_star_rejects_bad_input(eps, rows, match):
    with pytest.raises(ValueError, match=match):
        sc.p_star(pd.DataFrame(rows), eps)
