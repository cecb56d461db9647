"""Tests of lib.depth_sweep: its runs against chapter 4's, and its table from the store."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from lib import bp, config, depth_sweep, run_data, store, sweep, train

torch.set_num_threads(1)


@pytest.mark.parametrize("profile", ["laptop", "paper"])
def test_runs_change_the_layer_count_and_step_cap_of_chapter_4s_runs(profile):
    runs, chapter4 = depth_sweep.runs(profile), config.chapter4_runs(profile)
    cap = depth_sweep.step_cap(profile)
    assert cap == max(chapter4["root_k0"].n_steps, chapter4["mlm_k0"].n_steps)
    layers = range(1, 6)
    assert len(runs) == 2 * len(layers) * 3 and next(iter(runs)) == "root_k0_layers1"
    shared = 0
    for task in ("root", "mlm"):
        for seed in (0, *config.REPLICAS):
            suffix = f"_s{seed}" if seed else ""
            ch4 = chapter4[f"{task}_k0{suffix}"]
            for n in layers:
                cfg = runs[f"{task}_k0_layers{n}{suffix}"]
                assert cfg.model.n_layers == n and cfg.k_train == 0
                if n == ch4.model.n_layers:          # chapter 4's own run, its store entry
                    assert cfg == ch4
                    shared += 1
                else:              # its recipe, the larger cap, without chapter 5's checkpoints
                    assert cfg == replace(ch4, model=replace(ch4.model, n_layers=n),
                                          checkpoints=(), n_steps=cap)
    assert shared == 2 * 3
    with pytest.raises(ValueError, match="profile must be one of"):
        depth_sweep.runs("desktop")
    with pytest.raises(ValueError, match="profile must be one of"):
        depth_sweep.step_cap("desktop")


@pytest.fixture
def clean(monkeypatch):
    """Save as if from a clean tree (tests run in working copies that may be edited)."""
    state = {"commit": "0" * 40, "dirty": False, "diff_sha256": None, "lib_sha256": "1" * 64}
    monkeypatch.setattr(store, "code_state", lambda: state)


def test_table_scores_both_tasks_against_bp_on_the_same_sequences(tmp_path, clean):
    tiny = config.tiny_runs()
    runs = {f"{task}_k0_layers{n}": replace(tiny[f"tiny_{task}"], n_steps=60, checkpoints=(),
                                            model=replace(tiny[f"tiny_{task}"].model,
                                                          n_layers=n))
            for task in ("root", "mlm") for n in (1, 2)}
    stored = {name: runs[name] for name in ("root_k0_layers1", "mlm_k0_layers2")}
    done, failed = sweep.run(stored, "inline", root=tmp_path, progress=False)
    assert failed == {} and len(done) == 2
    results = depth_sweep.table(runs, tmp_path).set_index("task")     # unstored runs left out
    assert list(results.n_layers) == [1, 2] and set(results.commit) == {"0" * 40}
    M = run_data.grammar(runs["mlm_k0_layers2"])
    for name, cfg in stored.items():
        row = results.loc[cfg.task]
        model, _, info = store.require(cfg, root=tmp_path)
        roots, leaves = run_data.test_sets(cfg, M)[0]
        assert row.n_test == cfg.n_test and row.stop_step == info["stop_step"]
        if cfg.task == "root":   # rescored here: the stored model and exact BP on the same set
            want = (train.log_probs(model, leaves).argmax(-1).numpy() == roots).mean()
            exact = (bp.root_posterior(M, leaves, 0).argmax(-1) == roots).mean()
        else:                    # the model called directly, every position masked in turn
            model.eval()
            with torch.no_grad():
                want = np.mean([(model(masked(leaves, i, cfg.q))[:, i].argmax(-1).numpy()
                                 == leaves[:, i]) for i in range(leaves.shape[1])])
            exact = (bp.leaf_posterior(M, leaves, 0).argmax(-1) == leaves).mean()
        # the history stores six significant digits; BP's accuracy is computed afresh
        assert row.accuracy == pytest.approx(want, abs=1e-6), name
        assert row.bp_accuracy == pytest.approx(exact, abs=1e-9), name


def masked(leaves: np.ndarray, i: int, q: int) -> torch.Tensor:
    """``leaves`` (n, L) with position ``i`` replaced by the mask symbol ``q``, as model input."""
    x = torch.from_numpy(leaves.copy())
    x[:, i] = q
    return x
