"""Tests of lib.sample_complexity: the sweep's runs, its table from the store, and P*."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from lib import bp, config, run_data, sample_complexity as sc, store, sweep, train

torch.set_num_threads(1)


def test_runs_differ_only_in_level_size_and_seeds():
    runs = sc.runs("laptop")
    assert sum(sc.label(n) == "root" for n in runs) == 5 * len(sc.SIZES["laptop"]) * len(sc.SEEDS)
    assert max(sc.SIZES["laptop"]) / min(sc.SIZES["laptop"]) >= 64
    assert list(runs)[:2] == ["root_k0_P512_s0", "root_k1_P512_s0"]      # cheapest first
    seeds = [int(name.rsplit("_s", 1)[1]) for name in runs]
    assert seeds == sorted(seeds)                   # every task's seed 0 before any replica
    base = runs["root_k0_P512_s0"]
    assert base.restore_best and base.schedule == "plateau" and base.n_test == sc.N_TEST >= 20_000
    chapter4 = config.converged_config("root", "laptop", 0, 0)
    assert base.model == replace(chapter4.model, dropout=sc.DROPOUT)    # regularised, else same
    # chapter 4's plateau rule with one halving, and more steps than fresh data needs
    assert (base.patience, base.n_decays) == (4, 1) and base.n_steps > chapter4.n_steps
    for name, cfg in runs.items():
        if sc.label(name) != "root":
            continue
        k, P, seed = (int(part[1:]) for part in name.split("_")[1:])
        assert cfg == replace(base, k_train=k, n_train=P, init_seed=seed, data_seed=seed)
    # the same held-out test sequences for every run, hence one BP reference per level
    assert len({(c.test_seed, c.n_test, c.grammar_seed) for c in runs.values()}) == 1
    source = config.chapter4_runs("laptop")["mlm_k0"]
    deep = {n: c for n, c in runs.items() if sc.label(n) != "root"}
    assert len(deep) == 3 * len(sc.SIZES["laptop"]) * len(sc.SEEDS) and len(runs) == 105 + 63
    for name, cfg in deep.items():
        task = sc.label(name)
        assert cfg.k_train == 0 and cfg.freeze_encoder == task.endswith("frozen")
        assert cfg.init_from == (None if task == "root_layers5" else store.key(source))
        # the pre-trained runs and their baseline share the encoder's depth, nothing else differs
        twin = runs[name.replace(task, "root_layers5")]
        assert cfg == replace(twin, init_from=cfg.init_from, freeze_encoder=cfg.freeze_encoder,
                              model=cfg.model)
        # a frozen encoder runs with the dropout it was pre-trained with (none on the laptop)
        dropout = source.model.dropout if cfg.freeze_encoder else sc.DROPOUT
        assert source.model.dropout == 0 < sc.DROPOUT
        assert cfg.model == replace(base.model, n_layers=source.model.n_layers, dropout=dropout)
    assert len(sc.runs("paper")) == (5 + 2) * 12 * 3          # there MLM has the root's depth
    with pytest.raises(ValueError, match="name must look like"):
        sc.label("root_k0_P512")
    with pytest.raises(ValueError, match="profile must be one of"):
        sc.runs("desktop")


def tiny_sweep():
    """Two seeds of a q = 3, depth 3 root run on 64 and 128 training sequences (seconds)."""
    base = replace(config.tiny_runs()["tiny_root"], n_steps=200, restore_best=True,
                   checkpoints=())
    return {f"tiny_k0_P{P}_s{s}": replace(base, n_train=P, init_seed=s, data_seed=s)
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
    cfg = runs["tiny_k0_P64_s1"]
    row = results[(results.P == 64) & (results.seed == 1)].iloc[0]
    assert row.task == "tiny" and row.n_test == cfg.n_test and row.commit == "0" * 40
    # rescored independently: the stored model and exact BP on the run's own test set
    model, history, info = store.require(cfg, root=tmp_path)
    roots, leaves = run_data.test_sets(cfg, run_data.grammar(cfg))[0]
    predicted = train.log_probs(model, leaves).argmax(-1).numpy()
    assert row.accuracy == pytest.approx((predicted == roots).mean(), abs=1e-9)
    exact = bp.root_posterior(run_data.grammar(cfg), leaves, 0).argmax(-1)
    assert row.bp_accuracy == pytest.approx((exact == roots).mean(), abs=1e-9)
    # and on the test sequences a mask leaves unseen, from the stored model again
    seen = np.random.default_rng(0).random(cfg.n_test) < 0.4
    again = sc.table(runs, tmp_path, seen=seen)
    row = again[(again.P == 64) & (again.seed == 1)].iloc[0]
    assert row.n_unseen == (~seen).sum() and row.accuracy_unseen == pytest.approx(
        (predicted[~seen] == roots[~seen]).mean(), abs=1e-9)
    assert row.bp_accuracy_unseen == pytest.approx((exact[~seen] == roots[~seen]).mean())
    assert row.best_step == info["best_step"] <= row.stop_step
    assert row.converged == info["converged"] == (row.stop_step < cfg.n_steps)
    # the trace before the first validation (step 20 here) against the kept weights' score
    own = history[history.k_test == 0]
    assert sc.first_validation(cfg) == 20 and (own.step < 20).sum() >= 2
    assert sc.early_excess(cfg, tmp_path) == pytest.approx(
        own[own.step < 20].accuracy.max() - row.accuracy, abs=1e-9)


def test_first_validation_is_the_first_step_the_training_loop_validates():
    base = tiny_sweep()["tiny_k0_P64_s0"]
    for warmup, every in ((0, 7), (4, 20), (20, 20), (21, 20), (300, 250)):
        cfg = replace(base, warmup_steps=warmup, val_every=every, n_steps=1000)
        loop = next(s for s in range(1000) if s >= max(1, warmup) and s % every == 0)
        assert sc.first_validation(cfg) == loop


def test_p_star_reads_the_first_size_from_which_the_gap_stays_small():
    rows = []
    for P, gaps in ((512, (0.10, 0.12)), (1024, (0.01, 0.03)), (2048, (0.05, 0.07)),
                    (4096, (0.005, 0.015)), (8192, (0.0, 0.004))):
        rows += [{"k": 0, "P": P, "accuracy": 0.9 - g, "bp_accuracy": 0.9} for g in gaps]
    rows += [{"k": 1, "P": P, "accuracy": 0.5, "bp_accuracy": 0.6} for P in (512, 1024)
             for _ in range(2)]
    sizes = (512, 1024, 2048, 4096, 8192)
    with pytest.raises(ValueError, match=r"level 1 lacks them at P = \[2048, 4096, 8192\]"):
        sc.p_star(pd.DataFrame(rows), 0.02, sizes)
    rows += [{"k": 1, "P": P, "accuracy": 0.5, "bp_accuracy": 0.6} for P in sizes[2:]
             for _ in range(2)]
    out = sc.p_star(pd.DataFrame(rows), eps=0.02, sizes=sizes)
    # 1024 is within 2 points but 2048 is not again: P* is 4096, not 1024
    assert out.loc[0, "P_star"] == 4096 and np.isnan(out.loc[1, "P_star"])
    # gap at 4096 is 0.010 +- 0.005 and at 2048 0.06 +- 0.01: one SE either way changes nothing
    assert out.loc[0, "P_low"] == out.loc[0, "P_high"] == 4096
    assert sc.p_star(pd.DataFrame(rows), 0.0105, sizes).loc[0, "P_high"] == 8192


def test_each_seed_has_its_own_p_star():
    sizes = (512, 1024, 2048)
    gaps = {0: (0.10, 0.01, 0.0), 1: (0.01, 0.03, 0.01), 2: (0.1, 0.1, 0.05)}
    rows = [{"k": 0, "P": P, "seed": s, "accuracy": 0.9 - g, "bp_accuracy": 0.9}
            for s, curve in gaps.items() for P, g in zip(sizes, curve)]
    out = sc.seed_p_star(pd.DataFrame(rows), 0.02, sizes)
    assert out[(0, 0)] == 1024 and out[(0, 1)] == 2048 and np.isnan(out[(0, 2)])
    with pytest.raises(ValueError, match=r"level 0, seed 2 has P = \[512, 1024\]"):
        sc.seed_p_star(pd.DataFrame(rows[:-1]), 0.02, sizes)
    with pytest.raises(ValueError, match="eps"):
        sc.seed_p_star(pd.DataFrame(rows), -1, sizes)


@pytest.mark.parametrize("eps, rows, match", [
    (0.0, [{"k": 0, "P": 1, "accuracy": 1, "bp_accuracy": 1}] * 2, "eps"),
    (0.1, [{"k": 0, "P": 1, "accuracy": 1, "bp_accuracy": 1}], "at least two seeds"),
])
def test_p_star_rejects_bad_input(eps, rows, match):
    with pytest.raises(ValueError, match=match):
        sc.p_star(pd.DataFrame(rows), eps, sizes=(1,))


# MLM pre-training: a root run that starts from a stored masked-token encoder

def pretrained_pair(tmp_path):
    """A stored tiny masked-token run and root runs of the same shape that start from it."""
    runs = config.tiny_runs()
    source = replace(runs["tiny_mlm"], n_steps=40, checkpoints=())
    sweep.run({"src": source}, "inline", root=tmp_path, progress=False)
    root = replace(runs["tiny_root"], n_steps=30, checkpoints=(0, 30), init_from=store.key(source))
    return source, root


def test_a_pretrained_run_starts_from_the_encoder_and_freezing_trains_the_readout_only(
        tmp_path, clean):
    source, cfg = pretrained_pair(tmp_path)
    encoder = store.pretrained_state(cfg, tmp_path)
    start = {}
    for frozen in (False, True):
        run = replace(cfg, freeze_encoder=frozen)
        model, _, _, states = train.train(run, progress=False, encoder=encoder)
        start[frozen] = states[0]
        for name, tensor in states[0].items():           # step 0: the encoder, a fresh readout
            if name == "embed.weight":
                assert torch.equal(tensor, encoder[name][:source.q])    # no mask-id row
            elif not name.startswith("readout."):
                assert torch.equal(tensor, encoder[name])
        moved = {n for n, t in model.state_dict().items() if not torch.equal(t, states[0][n])}
        assert moved == ({"readout.weight", "readout.bias"} if frozen
                         else set(model.state_dict()) - {"pe"})
    # the readout's initialisation comes from init_seed, the same with and without freezing
    assert torch.equal(start[True]["readout.weight"], start[False]["readout.weight"])


def test_pretraining_needs_its_stored_run_of_the_same_shape(tmp_path, clean):
    source, cfg = pretrained_pair(tmp_path)
    with pytest.raises(ValueError, match="encoder must be given exactly when"):
        train.train(cfg, progress=False)
    with pytest.raises(ValueError, match="encoder must be given exactly when"):
        train.train(replace(cfg, init_from=None), progress=False, encoder={})
    with pytest.raises(store.MissingEntry, match="no pre-trained run"):
        store.pretrained_state(replace(cfg, init_from="0" * 16), tmp_path)
    wide = replace(cfg, model=replace(cfg.model, d_ff=32))
    with pytest.raises(ValueError, match="must be a masked-token run with the encoder shape"):
        store.pretrained_state(wide, tmp_path)
    assert store.pretrained_state(replace(cfg, init_from=None), tmp_path) is None


@pytest.mark.parametrize("fields, match", [
    ({"init_from": "abc"}, "init_from must be None or the 16-hex-digit store key"),
    ({"init_from": "G" * 16}, "init_from must be None"),
    ({"freeze_encoder": True}, "freeze_encoder must be a bool and needs init_from"),
    ({"init_from": "0" * 16, "freeze_encoder": 1}, "freeze_encoder must be a bool"),
])
def test_bad_pretraining_settings_raise(fields, match):
    with pytest.raises(ValueError, match=match):
        replace(config.tiny_runs()["tiny_root"], **fields)
    if "init_from" in fields:                                   # root runs only
        with pytest.raises(ValueError, match="init_from must be None"):
            replace(config.tiny_runs()["tiny_mlm"], init_from="0" * 16)

