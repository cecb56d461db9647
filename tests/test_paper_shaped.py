"""Tests of lib.paper_shaped: chapter 5's one-head runs differ from chapter 4's only in shape."""
from dataclasses import replace

import pytest

from lib import config, paper_shaped, store


def test_one_head_runs_change_only_heads_and_layers():
    for profile in ("laptop", "paper"):
        runs, chapter4 = paper_shaped.runs(profile), config.chapter4_runs(profile)
        assert len(runs) == 2 * 5
        for name, cfg in runs.items():
            base = chapter4[name.removesuffix("_1head")]
            assert (cfg.model.n_heads, cfg.model.n_layers) == (1, cfg.depth) == (1, 4)
            assert cfg == replace(base, model=cfg.model, checkpoints=cfg.checkpoints)
            assert cfg.model == replace(base.model, n_heads=1, n_layers=4)
    # the paper's encoders already have this shape: the same store entries, nothing to retrain
    paper = paper_shaped.runs("paper")
    assert all(store.key(cfg) == store.key(config.chapter4_runs("paper")[n[:-6]])
               for n, cfg in paper.items())
    with pytest.raises(ValueError, match="profile must be one of"):
        paper_shaped.runs("desktop")
