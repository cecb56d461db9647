"""Tests of lib.train and lib.config: seeding, masking, disjoint test sets, evaluation against BP."""
import dataclasses
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from lib import config, reference, run_data, schedule, train, tree
from lib.config import TrainConfig
from lib.transformer import ModelConfig, Transformer

torch.set_num_threads(1)          # tiny models on a shared CPU: one thread is fastest


def tiny(task="root", depth=3, **fields):
    """A run of a few seconds: q = 3, 2**depth leaves, a one-layer encoder."""
    model = ModelConfig(vocab=3 + (task == "mlm"), seq_len=2**depth, n_classes=3, task=task,
                        d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0)
    base = TrainConfig(model=model, q=3, depth=depth, n_steps=60, batch_size=64, lr=1e-2,
                       warmup_steps=5, n_test=256, n_monitor=128, n_evals=4, eval_every=20)
    return replace(base, **fields)


@pytest.mark.parametrize("task", ["root", "mlm"])
def test_loss_falls_and_history_is_tidy(task):
    _, history, info, checkpoints = train.train(tiny(task), progress=False)
    assert checkpoints == {}
    assert list(history.columns) == ["step", "seqs", "wall_s", "k_test", "n_test", "loss", "accuracy",
                                     "kl_bp0", "kl_bp1", "kl_bp2", "kl_bp3"]
    assert (history.filter(like="kl_bp") >= 0).all().all()
    assert set(history.k_test) == {0, 1, 2, 3}
    assert list(history.step.unique()) == list(schedule.eval_steps(tiny(task)))
    k0 = history[history.k_test == 0].set_index("step")
    assert k0.loss.iloc[-1] < k0.loss.iloc[0] - 0.1
    assert k0.n_test.iloc[-1] == 256 and k0.n_test.iloc[0] == 128   # full test set at the end
    assert info["train_s"] > 0


def test_same_seeds_same_history_and_each_seed_matters():
    cfg = tiny("mlm", n_steps=20)
    runs = {name: train.train(replace(cfg, **{name: 5}), progress=False)[1]
            for name in ("data_seed", "init_seed", "mask_seed")}
    first = train.train(cfg, progress=False)[1].drop(columns="wall_s")
    again = train.train(cfg, progress=False)[1].drop(columns="wall_s")
    pd.testing.assert_frame_equal(first, again)
    for name, history in runs.items():
        assert not np.allclose(history.loss, first.loss), name


def test_checkpoints_are_the_weights_of_the_same_run():
    cfg = tiny("mlm", n_steps=30)
    plain_model, plain_history, _, _ = train.train(cfg, progress=False)
    ckpt = replace(cfg, checkpoints=(0, 7, 30))
    model, history, _, states = train.train(ckpt, progress=False)
    assert sorted(states) == [0, 7, 30]
    assert {0, 7, 30} <= set(history.step)                     # every checkpoint is evaluated
    final = model.state_dict()
    for name, tensor in plain_model.state_dict().items():     # taking checkpoints changes nothing
        assert torch.equal(tensor, final[name]) and torch.equal(tensor, states[30][name])
    common = history[history.step.isin(plain_history.step)].reset_index(drop=True)
    pd.testing.assert_frame_equal(common.drop(columns="wall_s"), plain_history.drop(columns="wall_s"))
    torch.manual_seed(cfg.init_seed)
    init = Transformer(cfg.model).state_dict()
    assert all(torch.equal(init[n], states[0][n]) for n in init)
    assert not torch.equal(states[7]["embed.weight"], states[0]["embed.weight"])


def test_training_draws_never_repeat_a_test_sequence():
    cfg = tiny(depth=2, n_steps=10)
    M = run_data.grammar(cfg)
    tests = run_data.test_sets(cfg, M)
    exclude = np.concatenate([run_data._codes(x, cfg.q) for _, x in tests.values()])
    batches = run_data.batches(cfg, M, exclude)
    seen = np.concatenate([run_data._codes(next(batches)[1], cfg.q) for _ in range(30)])
    assert not np.isin(seen, exclude).any()
    # depth 2, q 3: only 81 strings exist, so without the rejection most draws would be test sequences
    assert np.isin(run_data._codes(tree.sample(M, 2, 1000, seed=9)[1], 3), exclude).mean() > 0.5


def test_fixed_training_set_is_cycled():
    cfg = tiny(n_train=128)
    M = run_data.grammar(cfg)
    batches = run_data.batches(cfg, M, np.array([], dtype=np.int64))
    codes = [set(run_data._codes(next(batches)[1], 3)) for _ in range(4)]
    assert codes[0] | codes[1] == codes[2] | codes[3]        # two batches per epoch, same set


def test_mlm_inputs_mask_exactly_one_token_and_keep_its_target():
    cfg = tiny("mlm")
    roots, leaves = tree.sample(run_data.grammar(cfg), 3, 50, seed=1)
    x, y, pos = train._inputs(cfg, roots, leaves, torch.Generator().manual_seed(0))
    assert ((x == cfg.model.mask_id).sum(1) == 1).all()
    assert (x[torch.arange(50), pos] == 3).all()
    assert (y.numpy() == leaves[np.arange(50), pos.numpy()]).all()
    assert (x.numpy() == np.where(x.numpy() == 3, x.numpy(), leaves)).all()


def test_mlm_log_probs_never_see_the_target():
    """Position i's prediction is read with x_i masked: changing x_i leaves it unchanged."""
    cfg = tiny("mlm")
    model = Transformer(cfg.model)
    leaves = np.array([[0, 1, 2, 0, 1, 1, 2, 0]] * 3)
    leaves[1, 2], leaves[2, 2] = 0, 1
    logp = train.log_probs(model, leaves)
    assert logp.shape == (3, 8, 3)
    assert np.allclose(logp[0, 2], logp[1, 2]) and np.allclose(logp[0, 2], logp[2, 2])
    assert not np.allclose(logp[0, 0], logp[1, 0])             # other positions do see x_2


def test_bp_reference_is_exact_on_the_full_model():
    ref = reference.bp_reference(replace(tiny(), q=4, depth=4, model=config.model_config("root", "laptop")))
    table = ref.pivot(index="k_model", columns="k_test", values="accuracy")
    assert table.loc[0, 0] == 1.0                               # unambiguous grammar: BP parses the root
    assert (np.diag(table) >= table.max(axis=0) - 0.02).all()   # matched model is (near) best per column


def test_lr_schedule_and_eval_steps():
    cfg = tiny(n_steps=100, warmup_steps=10, lr_final=0.05)
    assert schedule.lr_factor(cfg, 0) == pytest.approx(0.1)
    assert schedule.lr_factor(cfg, 10) == pytest.approx(1.0)
    assert schedule.lr_factor(cfg, 100) == pytest.approx(0.05)
    steps = schedule.eval_steps(cfg)
    assert steps[0] == 0 and steps[-1] == 100 and (np.diff(steps) > 0).all()


def test_nearest_bp_row_and_time_to_accuracy():
    ref = pd.DataFrame([{"k_model": m, "k_test": t, "accuracy": 1.0 - 0.1 * abs(m - t)}
                        for m in range(3) for t in range(3)])
    hist = pd.concat([ref[ref.k_model == m].assign(step=s, wall_s=2.0 * s).drop(columns="k_model")
                      for s, m in enumerate([2, 1, 0])])
    rows = reference.nearest_bp_row(hist, ref)
    assert list(rows.k_model) == [2, 1, 0] and np.allclose(rows.distance, 0)
    assert reference.time_to_accuracy(hist, 0, 0.95) == 4.0
    assert np.isnan(reference.time_to_accuracy(hist, 0, 1.5))
    assert reference.bp_accuracy(ref, 2, 0) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="one row with k_model=3"):
        reference.bp_accuracy(ref, 3, 0)


@pytest.mark.parametrize("fields, match", [
    ({"k_train": 4}, "k_train must be in 0..3"),
    ({"q": 4}, "n_classes = q"),
    ({"n_monitor": 512}, "n_monitor"),
    ({"n_train": 10}, "n_train"),
    ({"lr_final": 2.0}, "lr_final"),
    ({"checkpoints": (0, 61)}, "checkpoints must be in 0..60"),
    ({"checkpoints": (5, 5)}, "strictly increasing"),
    ({"checkpoints": (1.5,)}, "checkpoints must be an integer"),
    ({"checkpoints": 10}, "checkpoints must be a tuple"),
])
def test_bad_training_config_raises(fields, match):
    with pytest.raises(ValueError, match=match):
        tiny(**fields)


def test_profiles():
    laptop, paper = (config.train_config("root", p) for p in ("laptop", "paper"))
    assert (paper.model.d_model, paper.model.n_heads, paper.model.d_ff, paper.model.dropout) == (128, 1, 2048, 0.1)
    assert (paper.lr, paper.batch_size, paper.n_train, paper.lr_final) == (1e-4, 32, 2**17, 1.0)
    assert paper.n_steps == 200 * 2**17 // 32
    assert laptop.n_train is None and laptop.model.n_heads == 4
    assert config.train_config("mlm", "paper").n_train == 2**18
    with pytest.raises(ValueError, match="profile"):
        config.train_config("root", "desktop")


def test_plateau_run_converges_before_its_cap_and_records_validation():
    cfg = tiny(n_steps=2000, schedule="plateau", val_every=10, patience=2, n_decays=1,
               n_val=64, min_delta=0.01)
    _, history, info, _ = train.train(cfg, progress=False)
    assert info["converged"] and info["stop_step"] < cfg.n_steps
    assert history.step.max() == info["stop_step"]
    final = history[history.step == info["stop_step"]]
    assert (final.n_test == cfg.n_test).all()                    # whole test sets at the stop
    assert final.lr_factor.iloc[0] == cfg.lr_decay ** (cfg.n_decays + 1)
    assert history.val_loss.notna().any()


@pytest.mark.parametrize("task, fields", [("root", {}), ("mlm", {"schedule": "plateau", "n_val": 32,
                                                               "val_every": 10})])
def test_an_interrupted_run_resumes_bit_for_bit(task, fields, tmp_path):
    cfg = tiny(task, n_steps=40, checkpoints=(0, 10, 30), **fields)
    model, history, info, states = train.train(cfg, progress=False)
    partial = tmp_path / "run.pt"
    assert train.train(cfg, progress=False, partial=partial, stop_at=17) is None
    assert partial.exists()
    model2, history2, info2, states2 = train.train(cfg, progress=False, partial=partial)
    assert not partial.exists()                                   # removed once the run is done
    pd.testing.assert_frame_equal(history.drop(columns="wall_s"), history2.drop(columns="wall_s"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, model2.state_dict()[name])
    assert sorted(states2) == [0, 10, 30] and torch.equal(states[10]["embed.weight"],
                                                        states2[10]["embed.weight"])
    train.train(cfg, progress=False, partial=partial, stop_at=5)
    with pytest.raises(ValueError, match="another config"):
        train.train(replace(cfg, lr=0.5), progress=False, partial=partial)


def test_plateau_criterion():
    p = schedule.Plateau(patience=2, min_delta=0.1, n_decays=1)
    assert [p.update(x) for x in (1.0, 0.95, float("nan"))] == [False, False, False]
    assert (p.best, p.decays) == (1.0, 1)                   # 0.95 is not 10 % better; NaN never is
    assert p.update(0.5) is False and p.stale == 0
    assert [p.update(x) for x in (0.5, 0.5)] == [False, True]     # second plateau: converged
    cfg = tiny(schedule="plateau", warmup_steps=5, lr_decay=0.5)
    assert schedule.lr_factor(cfg, 0, 3) == pytest.approx(0.2)   # warm-up ignores decays
    assert schedule.lr_factor(cfg, 50, 3) == 0.125


@pytest.mark.parametrize("fields, match", [
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"patience": 0}, "patience"),
    ({"lr_decay": 1.0}, "lr_decay must be in"),
    ({"n_decays": -1}, "n_decays"),
    ({"min_delta": 1.5}, "min_delta must be in"),
    ({"n_val": 0}, "n_val"),
    ({"val_every": 0}, "val_every"),
    ({"restore_best": True}, "restore_best must be a bool and needs schedule='plateau'"),
    ({"restore_best": 1, "schedule": "plateau"}, "restore_best must be a bool"),
])
def test_bad_convergence_settings_raise(fields, match):
    with pytest.raises(ValueError, match=match):
        tiny(**fields)


def test_chapter4_runs_replicas_differ_only_in_their_seeds():
    for profile in ("laptop", "paper"):
        runs = config.chapter4_runs(profile)
        assert len(runs) == 2 * 5 * 3
        for name, cfg in runs.items():
            base = runs[name.split("_s")[0]]
            assert cfg.schedule == "plateau"
            if name != name.split("_s")[0]:
                seed = int(name.split("_s")[1])
                assert (cfg.init_seed, cfg.data_seed) == (seed, seed)
                assert cfg == replace(base, init_seed=seed, data_seed=seed, checkpoints=cfg.checkpoints)
        assert runs["mlm_k0"].checkpoints == config.power_checkpoints(runs["mlm_k0"].n_steps)
    assert config.power_checkpoints(300) == (0, 32, 64, 128, 256)
    cfg = config.chapter4_runs("laptop")["root_k3_s2"]
    assert config.from_record(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


def test_resume_is_exact_with_dropout_decays_timed_saves_and_two_interruptions(tmp_path,
                                                                               monkeypatch):
    model_cfg = replace(tiny("mlm").model, dropout=0.1)
    cfg = tiny("mlm", model=model_cfg, n_steps=300, schedule="plateau", val_every=5,
               patience=1, n_decays=2, n_val=32, min_delta=0.05)
    model, history, info, _ = train.train(cfg, progress=False)
    assert info["converged"] and history.lr_factor.min() < 1        # decays happened
    monkeypatch.setattr(train.resume, "SAVE_EVERY_S", 0.0)         # a save at every step
    partial = tmp_path / "run.pt"
    for stop in (7, info["stop_step"] - 3):                         # two interruptions
        assert train.train(cfg, progress=False, partial=partial, stop_at=stop) is None
    model2, history2, info2, _ = train.train(cfg, progress=False, partial=partial)
    pd.testing.assert_frame_equal(history.drop(columns="wall_s"), history2.drop(columns="wall_s"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, model2.state_dict()[name])
    assert info2["resumed_from_lib"] == []                          # same code throughout


def test_stop_at_needs_a_partial_file_and_a_step_in_range(tmp_path):
    with pytest.raises(ValueError, match="needs partial"):
        train.train(tiny(), progress=False, stop_at=5)
    with pytest.raises(ValueError, match="stop_at must be in"):
        train.train(tiny(), progress=False, partial=tmp_path / "p.pt", stop_at=0)


def test_restore_best_scores_the_weights_of_the_lowest_validation_loss(tmp_path):
    # a fixed training set of 64 sequences, trained long enough to overfit it; every
    # validation is also an evaluation, so the history holds every validation loss
    cfg = tiny(n_train=64, n_steps=400, lr=3e-2, warmup_steps=1, schedule="plateau",
               val_every=10, eval_every=10, patience=3, n_decays=1, n_val=256, min_delta=0.0,
               restore_best=True, checkpoints=(0, 10))
    model, history, info, _ = train.train(cfg, progress=False)
    val = history.dropna(subset=["val_loss"]).drop_duplicates("step").set_index("step").val_loss
    assert info["best_step"] == val.idxmin() < info["stop_step"]
    M, tests, val_set, _ = run_data.held_out(cfg)
    final = history[history.step == info["stop_step"]].set_index("k_test")
    rescored = pd.DataFrame(train.evaluate(model, tests, cfg.n_test)).set_index("k_test")
    assert np.allclose(rescored.loss, final.loss, atol=1e-6)      # scores of the returned weights
    # the best weights are the ones validated at best_step, not the last ones
    assert train._validation_loss(model, val_set) == pytest.approx(val.min(), abs=1e-6)
    partial = tmp_path / "run.pt"                         # the best weights survive a resume
    assert train.train(cfg, progress=False, partial=partial, stop_at=info["best_step"] + 5) is None
    model2, history2, info2, _ = train.train(cfg, progress=False, partial=partial)
    assert info2["best_step"] == info["best_step"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, model2.state_dict()[name])
    plain = train.train(replace(cfg, restore_best=False), progress=False)[2]
    assert "best_step" not in plain and plain["stop_step"] == info["stop_step"]
