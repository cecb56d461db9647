"""Tests of lib.frozen_head: the frozen run's own data, the encoder's features, the fitted head."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from lib import bp, config, frozen_head, results, run_data, sample_complexity as sc
from lib.transformer import Transformer

torch.set_num_threads(1)


def tiny_frozen(n_train: int = 256) -> tuple:
    """A frozen q = 3, depth 3 root run on ``n_train`` sequences and an untrained encoder."""
    runs = config.tiny_runs()
    cfg = replace(runs["tiny_root"], n_train=n_train, init_from="0" * 16, freeze_encoder=True)
    torch.manual_seed(0)
    return cfg, Transformer(runs["tiny_mlm"].model)


def test_training_set_is_every_sequence_the_run_trains_on_and_no_held_out_one():
    cfg, _ = tiny_frozen(96)
    roots, leaves = frozen_head.training_set(cfg)
    M, tests, val, exclude = run_data.held_out(cfg)
    # the fixed set drawn from data_seed (what every epoch of lib.run_data.batches permutes)
    want_roots, want_leaves = run_data._draw(cfg, M, cfg.n_train, run_data._seed(cfg.data_seed),
                                             exclude)
    order, want = np.lexsort(leaves.T), np.lexsort(want_leaves.T)
    assert leaves.shape == (96, 8) and np.array_equal(leaves[order], want_leaves[want])
    assert np.array_equal(roots[order], want_roots[want])
    assert not np.isin(run_data._codes(leaves, cfg.q), exclude).any()
    for n_train in (None, 100):                       # fresh data, or a partial last batch
        with pytest.raises(ValueError, match="cfg.n_train must be a multiple of"):
            frozen_head.training_set(replace(cfg, n_train=n_train))


def test_features_are_the_last_layer_flattened_in_any_chunking():
    cfg, encoder = tiny_frozen()
    leaves = frozen_head.training_set(cfg)[1][:10]
    H = frozen_head.features(encoder, leaves, rows=3)
    with torch.no_grad():
        want = encoder.hidden(torch.as_tensor(leaves))[0].reshape(10, -1).numpy()
    assert H.shape == (10, 8 * 8) and np.allclose(H, want, atol=1e-6)


def test_fit_scores_the_head_and_bp_on_the_runs_test_set():
    cfg, encoder = tiny_frozen(1024)
    out = frozen_head.fit(cfg, encoder)
    roots, leaves = run_data.test_sets(cfg, run_data.grammar(cfg))[0]
    exact = bp.root_posterior(run_data.grammar(cfg), leaves, 0).argmax(-1)
    assert out["bp_accuracy"] == pytest.approx((exact == roots).mean(), abs=1e-12)
    assert out["n_test"] == cfg.n_test and 0 <= out["best_epoch"] <= out["epochs"]
    assert out["hidden"] == frozen_head.HEAD["hidden"]
    assert frozen_head.fit(cfg, encoder, hidden=8)["hidden"] == 8
    # with a mask, also scored without the masked sequences: all seen but one sequence
    seen = np.arange(cfg.n_test) > 0
    one = frozen_head.fit(cfg, encoder, seen=seen)
    assert one["n_unseen"] == 1 and one["accuracy"] == out["accuracy"]
    assert one["bp_accuracy_unseen"] == float(exact[0] == roots[0])
    # even an untrained encoder's features carry the root: the head beats chance clearly
    assert out["accuracy"] > 1 / cfg.q + 0.1, out
    with pytest.raises(ValueError, match="cfg must be a frozen run"):
        frozen_head.fit(replace(cfg, freeze_encoder=False), encoder)
    with pytest.raises(ValueError, match="encoder must be a masked-token model"):
        frozen_head.fit(cfg, Transformer(replace(encoder.cfg, n_layers=2)))
    with pytest.raises(ValueError, match="hidden"):
        frozen_head.fit(cfg, encoder, hidden=0)


def test_table_reads_a_complete_current_record_and_refuses_any_other(tmp_path, monkeypatch):
    monkeypatch.setattr(results.provenance, "code_state",
                        lambda: {"commit": "0" * 40, "dirty": False})
    runs = frozen_head.fits()
    n_runs = len(sc.SIZES["laptop"]) * len(sc.SEEDS)
    assert len(frozen_head.frozen_runs()) == n_runs
    assert len(runs) == n_runs + len(sc.SEEDS) * len(frozen_head.WIDER)
    wide = {key: (cfg.n_train, hidden) for key, (cfg, hidden) in runs.items()
            if hidden != frozen_head.HEAD["hidden"]}
    assert set(wide.values()) == {(max(sc.SIZES["laptop"]), w) for w in frozen_head.WIDER}
    with pytest.raises(FileNotFoundError, match="scripts/frozen_head.py"):
        frozen_head.table(folder=tmp_path)
    record = results.open_record(tmp_path, frozen_head.NAME, frozen_head.record_config())
    for key in list(runs)[:-1]:
        results.add_run(tmp_path, frozen_head.NAME, record, key, {"accuracy": 0.5})
    with pytest.raises(ValueError, match="lacks runs"):
        frozen_head.table(folder=tmp_path)
    results.add_run(tmp_path, frozen_head.NAME, record, list(runs)[-1], {"accuracy": 0.5})
    rows = frozen_head.table(folder=tmp_path)
    assert len(rows) == len(runs) and set(rows.task) == {frozen_head.TASK}
    assert rows.P.tolist() == [cfg.n_train for cfg, _ in runs.values()]
    assert set(rows.P) == set(sc.SIZES["laptop"]) and set(rows.seed) == set(sc.SEEDS)
    assert (rows.k == 0).all() and (rows.commit == "0" * 40).all()
    monkeypatch.setattr(frozen_head, "HEAD", {**frozen_head.HEAD, "hidden": 128})
    with pytest.raises(ValueError, match="another configuration"):
        frozen_head.table(folder=tmp_path)
