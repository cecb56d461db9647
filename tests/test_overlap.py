"""Tests of lib.overlap: what held-out sequences share with training and pre-training."""
import itertools
from dataclasses import replace

import numpy as np
import pytest

import exact

from lib import config, overlap, run_data


def tiny_run(**changes):
    """A q = 3, depth 3 root run on 64 fixed training sequences (the sweep's shape, tiny)."""
    base = replace(config.tiny_runs()["tiny_root"], n_steps=200, restore_best=True,
                   checkpoints=(), n_train=64)
    return replace(base, **changes)


def test_validation_overlap_counts_validation_sequences_in_the_test_set():
    cfg = replace(tiny_run(), n_test=2000, n_val=500)
    M = run_data.grammar(cfg)
    test, val = run_data.test_sets(cfg, M)[0][1], run_data.validation_set(cfg, M)[1]
    brute = (val[:, None, :] == test[None]).all(-1).any(1).mean()      # pairwise
    assert 0 < brute < 1 and overlap.validation_overlap(cfg) == pytest.approx(brute, abs=1e-12)


def test_rejected_share_is_the_held_out_probability_mass():
    base = tiny_run()
    cfg = replace(base, depth=2, model=replace(base.model, seq_len=4), n_test=40, n_val=20)
    M, _, _, _ = run_data.held_out(cfg)
    p = exact.joint_root_leaves(M, cfg.depth, 0).sum(0)          # p(leaves), enumerated
    tests, val = run_data.test_sets(cfg, M), run_data.validation_set(cfg, M)
    held = {tuple(row) for _, x in tests.values() for row in x} | {tuple(r) for r in val[1]}
    mass = sum(p[row] for row in held)
    n = 100_000
    share = overlap.rejected_share(cfg, n=n, seed=3)
    assert 0.05 < mass < 0.95 and abs(share - mass) < 4 * np.sqrt(mass * (1 - mass) / n)
    with pytest.raises(ValueError, match="n must be"):
        overlap.rejected_share(cfg, n=0)


def test_seen_in_stream_finds_the_rows_the_stream_held():
    cfg = tiny_run()
    fresh = replace(cfg, n_train=None)                           # a fresh batch every step
    M, _, _, held = run_data.held_out(fresh)
    stream = [x for _, x in itertools.islice(run_data.batches(fresh, M, held), 5)]
    seen = {tuple(row) for x in stream for row in x}
    rng = np.random.default_rng(0)
    probe = np.concatenate([stream[2][:30], rng.integers(0, cfg.q, (200, 8))])
    brute = np.array([tuple(row) in seen for row in probe])
    assert brute[:30].all() and not brute.all()
    assert (overlap.seen_in_stream(fresh, 5, probe) == brute).all()
    with pytest.raises(ValueError, match="n_steps must be"):
        overlap.seen_in_stream(fresh, 0, probe)


def test_unseen_scores_leave_out_the_seen_sequences():
    base = tiny_run()
    cfg = replace(base, depth=2, model=replace(base.model, seq_len=4), n_test=300)
    M = run_data.grammar(cfg)
    roots, leaves = run_data.test_sets(cfg, M)[0]
    predicted = np.where(np.arange(300) % 3 == 0, (roots + 1) % 3, roots)   # a third wrong
    seen = np.arange(300) % 2 == 0
    out = overlap.unseen_scores(cfg, predicted, seen)
    keep = ~seen
    assert out["n_unseen"] == 150
    assert out["accuracy_unseen"] == pytest.approx((predicted[keep] == roots[keep]).mean())
    P = exact.joint_root_leaves(M, cfg.depth, 0)                # BP by enumeration
    enumerated = exact.root_posterior(P, leaves[keep]).argmax(-1)
    assert out["bp_accuracy_unseen"] == pytest.approx((enumerated == roots[keep]).mean())
    cache = {}                                  # a cache gives the same scores, twice
    assert overlap.unseen_scores(cfg, predicted, seen, cache) == out
    assert overlap.unseen_scores(cfg, predicted, seen, cache) == out and len(cache) == 1
    with pytest.raises(ValueError, match=r"predicted must have shape \(300,\)"):
        overlap.unseen_scores(cfg, predicted[:-1], seen)
    with pytest.raises(ValueError, match="seen must be a boolean mask"):
        overlap.unseen_scores(cfg, predicted, np.ones(300, bool))
