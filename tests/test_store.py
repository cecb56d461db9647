"""Tests of lib.store: exact round trips, config-keyed reuse, and refusal of stale entries."""
import dataclasses
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from lib import config, run_data, store, train
from lib.config import TrainConfig
from lib.transformer import ModelConfig

torch.set_num_threads(1)          # tiny models on a shared CPU: one thread is fastest

TINY = TrainConfig(model=ModelConfig(vocab=3, seq_len=8, n_classes=3, d_model=8, n_layers=1,
                                     n_heads=2, d_ff=16, dropout=0.0),
                   q=3, depth=3, n_steps=12, batch_size=32, warmup_steps=2, n_test=64,
                   n_monitor=32, n_evals=3, eval_every=6)


def test_key_depends_on_every_field():
    assert store.key(TINY) == store.key(replace(TINY))
    others = [replace(TINY, lr=1e-3), replace(TINY, mask_seed=1), replace(TINY, n_train=64),
              replace(TINY, model=replace(TINY.model, d_ff=17))]
    assert len({store.key(c) for c in [TINY, *others]}) == 5


def test_load_or_train_trains_once_then_reuses(tmp_path):
    assert store.load(TINY, tmp_path) is None
    model, history, prov = store.load_or_train(TINY, tmp_path, progress=False, allow_dirty=True)
    assert {"commit", "lib_sha256", "device", "train_s", "torch", "created"} <= set(prov)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{store.key(TINY)}.{ext}" for ext in ("csv", "json", "pt")]
    again, history2, _ = store.load_or_train(TINY, tmp_path, progress=False, allow_dirty=True)
    pd.testing.assert_frame_equal(history, history2)
    x = torch.randint(3, (5, 8))
    assert torch.equal(model(x), again(x))
    # the stored weights reproduce the stored final evaluation
    logp = train.log_probs(again, run_data.test_sets(TINY, run_data.grammar(TINY))[0][1])
    final = history[(history.step == TINY.n_steps) & (history.k_test == 0)].iloc[0]
    assert final.loss == pytest.approx(-logp.numpy()[np.arange(64), run_data.test_sets(
        TINY, run_data.grammar(TINY))[0][0]].mean(), rel=1e-5)


def test_checkpoints_round_trip_and_are_part_of_the_key(tmp_path):
    cfg = replace(TINY, checkpoints=(0, 6, 12))
    assert store.key(cfg) != store.key(TINY)
    assert '"checkpoints"' not in json.dumps(store._record(TINY))    # old keys survive the new field
    with pytest.raises(ValueError, match="no checkpoints"):
        store.load_checkpoints(TINY, tmp_path)
    assert store.load_checkpoints(cfg, tmp_path) is None
    model, _, _ = store.load_or_train(cfg, tmp_path, progress=False, allow_dirty=True)
    assert (tmp_path / f"{store.key(cfg)}.checkpoints.pt").exists()
    models = store.load_checkpoints(cfg, tmp_path)
    assert sorted(models) == [0, 6, 12]
    x = torch.randint(3, (5, 8))
    assert torch.equal(models[12](x), model(x))
    assert not torch.allclose(models[0](x), model(x))
    trained = train.train(cfg, progress=False)
    with pytest.raises(ValueError, match="exactly the steps"):
        store.save(cfg, *trained[:3], {0: trained[3][0]}, root=tmp_path, allow_dirty=True)


def test_a_stale_entry_is_never_used(tmp_path):
    store.load_or_train(TINY, tmp_path, progress=False, allow_dirty=True)
    record = tmp_path / f"{store.key(TINY)}.json"
    meta = json.loads(record.read_text())
    meta["config"]["lr"] = 0.5                                  # an entry edited or written by other code
    record.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stale"):
        store.load(TINY, tmp_path)
    meta["config"]["lr"], meta["format"] = TINY.lr, store.FORMAT - 1
    record.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="stale"):
        store.load_or_train(TINY, tmp_path, progress=False, allow_dirty=True)


def test_a_different_config_is_not_served_from_the_store(tmp_path):
    store.load_or_train(TINY, tmp_path, progress=False, allow_dirty=True)
    assert store.load(replace(TINY, init_seed=3), tmp_path) is None


def test_every_run_the_chapters_show_is_stored():
    """The runs chapters 4 and 5 read are all in the store with exactly their configs, each
    ending at the step its provenance names (the stop of the criterion, or the cap)."""
    for name, cfg in config.chapter4_runs("laptop").items():
        model, history, info = store.require(cfg, name)
        assert history.step.max() == info["stop_step"] <= cfg.n_steps, name
        assert info["converged"] == (info["stop_step"] < cfg.n_steps), name


def test_every_stored_entry_reproduces_its_final_evaluation():
    """Each entry of data/models, reloaded, scores its final row again on its own test set."""
    records = sorted(store.STORE.glob("*.json"))
    assert len(records) >= len(config.chapter4_runs("laptop"))
    for record in records:
        cfg = config.from_record(json.loads(record.read_text())["config"])
        assert store.key(cfg) == record.stem
        model, history, _ = store.require(cfg)
        final = history[history.step == history.step.max()].set_index("k_test").loc[cfg.k_train]
        roots, leaves = run_data.test_sets(cfg, run_data.grammar(cfg))[cfg.k_train]
        n = int(final.n_test)
        row = train.evaluate(model, {cfg.k_train: (roots[:n], leaves[:n])}, n)[0]
        assert row["loss"] == pytest.approx(final.loss, rel=2e-5), record.stem
        assert row["accuracy"] == pytest.approx(final.accuracy, abs=1e-6), record.stem


def test_a_dirty_tree_is_refused_unless_allowed(tmp_path, monkeypatch):
    trained = train.train(TINY, progress=False)
    dirty = {"commit": "abc", "dirty": True, "diff_sha256": "f" * 64, "lib_sha256": "0" * 64}
    monkeypatch.setattr(store, "code_state", lambda: dirty)
    with pytest.raises(store.DirtyTree, match="commit first"):
        store.save(TINY, *trained, root=tmp_path)
    assert list(tmp_path.iterdir()) == []                       # nothing half-written
    store.save(TINY, *trained, root=tmp_path, allow_dirty=True)
    assert store.load(TINY, tmp_path)[2]["diff_sha256"] == "f" * 64
    assert store.status(TINY, tmp_path).startswith("stale: written from an uncommitted tree")
    clean = {**dirty, "dirty": False, "diff_sha256": None}
    monkeypatch.setattr(store, "code_state", lambda: clean)
    store.save(TINY, *trained, root=tmp_path)
    assert store.status(TINY, tmp_path) == "ok"
    assert not list(tmp_path.glob("*.tmp"))                     # writes go through a rename


def test_status_and_require(tmp_path):
    assert store.status(TINY, tmp_path) == "missing"
    with pytest.raises(store.MissingEntry, match="regenerate_models.py --only tiny"):
        store.require(TINY, "tiny", tmp_path)
    store.load_or_train(TINY, tmp_path, progress=False, allow_dirty=True)
    (tmp_path / f"{store.key(TINY)}.pt").unlink()
    assert store.status(TINY, tmp_path) == "stale: files missing"
    record = tmp_path / f"{store.key(TINY)}.json"
    record.write_text(record.read_text().replace('"lr": 0.004', '"lr": 0.5'))
    assert store.status(TINY, tmp_path) == "stale: the stored config differs"


def test_an_early_stopped_run_stores_the_checkpoints_it_reached(tmp_path):
    cfg = replace(TINY, n_steps=400, schedule="plateau", patience=1, n_decays=0, n_val=32, val_every=6,
                  min_delta=0.5, checkpoints=(0, 6, 300))
    model, history, info, states = train.train(cfg, progress=False)
    assert info["converged"] and info["stop_step"] < 300 and sorted(states) == [0, 6]
    store.save(cfg, model, history, info, states, root=tmp_path, allow_dirty=True)
    assert sorted(store.load_checkpoints(cfg, tmp_path)) == [0, 6]


def test_a_key_is_pinned():
    """The key of chapter 4's root_k0 run, as stored: a change to the keying would orphan the
    whole store."""
    assert store.key(config.chapter4_runs("laptop")["root_k0"]) == "836ddcb46d2abcbe"


def test_legacy_fields_leave_old_keys_unchanged():
    assert set(store._record(TINY)["config"]) == {f.name for f in dataclasses.fields(TINY)} - set(
        config.LEGACY_FIELDS)
    plateau = replace(TINY, schedule="plateau")
    assert store._record(plateau)["config"]["schedule"] == "plateau"
    assert store.key(plateau) != store.key(TINY)
