"""Tests of lib.collapse: tracing leaves training unchanged, the reference laws, the verdicts."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from lib import collapse, config, run_data, train, tree

torch.set_num_threads(1)
TINY = replace(config.tiny_runs()["tiny_mlm"], schedule="plateau", n_steps=60)


def test_tracing_a_run_does_not_change_it():
    traced, history = collapse.trace(TINY, probe_every=20)
    assert traced.step.tolist() == list(range(10, 61, 10)) and train._step.__name__ == "_step"
    probed = traced.dropna(subset=["kl_bp"])
    assert probed.step.tolist() == [20, 40, 60]
    assert (probed.kl_bp >= 0).all()
    assert (probed.attn_entropy_1 <= np.log(TINY.model.seq_len) + 1e-6).all()
    _, plain, _, _ = train.train(TINY, progress=False)
    pd.testing.assert_frame_equal(plain.drop(columns="wall_s"),
                                  history.drop(columns="wall_s"))


def test_the_position_law_is_what_samples_show():
    cfg = replace(TINY, k_train=TINY.depth)
    M = run_data.grammar(cfg)
    position = tree.path_marginals(M, cfg.depth).mean(axis=1)
    _, leaves = tree.sample(M, cfg.depth, 200_000, k=cfg.depth, seed=5)
    freq = (leaves[..., None] == np.arange(cfg.q)).mean(axis=0)        # (L, q)
    assert np.abs(freq - position).max() < 0.01
    refs = collapse.reference_kl(cfg)
    assert 0 < refs["position law"] <= refs["symbol law"]


def _trace(kl: list[float], lr=4e-3, seed=0) -> pd.DataFrame:
    n = len(kl)
    return pd.DataFrame({"k": 4, "lr": lr, "seed": seed, "step": 50 * np.arange(1, n + 1),
                         "kl_bp": kl, "attn_entropy_1": np.linspace(2.7, 1.0, n),
                         "update_norm_max": 0.1})


def test_a_run_that_forgets_is_collapsed_and_one_that_keeps_is_not():
    refs = {"symbol law": 0.03, "position law": 0.008}
    runs = pd.concat([_trace([0.03, 0.012, 0.009, 0.02, 0.029, 0.03], seed=1),
                      _trace([0.03, 0.012, 0.009, 0.009, 0.010, 0.011], seed=2),
                      _trace([0.03, 0.03, 0.03, 0.03, 0.03, 0.03], seed=3)])
    v = collapse.verdicts(runs, refs, last=2).set_index("seed")
    assert v.collapsed.tolist() == [True, False, False]      # never learning is not collapsing
    assert v.loc[1, "lowest KL"] == 0.009 and v.loc[1, "lowest at step"] == 150
    assert v.loc[1, "final KL"] == pytest.approx(0.0295)
    assert v.loc[1, "lowest attention entropy"] == 1.0


@pytest.mark.parametrize("bad", [{"refs": {"symbol law": -1, "position law": 0.0}},
                                 {"last": 0}])
def test_bad_arguments_are_named(bad):
    args = {"refs": {"symbol law": 0.03, "position law": 0.008}, "last": 5} | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        collapse.verdicts(_trace([0.03]), **args)


def test_the_rule_refuses_what_it_cannot_read():
    refs = {"symbol law": 0.03, "position law": 0.008}
    for kl in ([], [0.01, np.nan], [[0.01]]):
        with pytest.raises(ValueError, match="kl must be"):
            collapse.collapsed(kl, refs)
    with pytest.raises(ValueError, match="one level k"):
        collapse.verdicts(pd.concat([_trace([0.03]), _trace([0.03]).assign(k=3)]), refs)


def test_trace_refuses_runs_it_cannot_trace():
    with pytest.raises(ValueError, match="masked-token run"):
        collapse.trace(replace(TINY, schedule="cosine"), 20)
    with pytest.raises(ValueError, match="probe_every"):
        collapse.trace(TINY, 25)


def test_the_laws_can_be_read_on_any_sequences():
    cfg = replace(TINY, k_train=TINY.depth)
    M = run_data.grammar(cfg)
    probes = run_data.validation_set(cfg, M)[1][:collapse.N_PROBE]
    assert collapse.reference_kl(cfg, probes) == collapse.reference_kl(cfg)
    assert collapse.reference_kl(cfg, probes[:8]) != collapse.reference_kl(cfg)
