"""The data of a training run: its grammar, held-out test and validation sets, training stream.

Every draw flows from the run's named seeds (`lib.config.TrainConfig`): the test sets of every
filtering level ``k = 0..depth`` from ``test_seed``, the validation set from ``val_seed``, and
the training stream (a fresh batch every step, or a fixed set of ``n_train`` sequences cycled in
shuffled epochs) from ``data_seed``. Training draws equal to a held-out sequence are rejected.
Introduced in chapter 4.
"""
from __future__ import annotations

import itertools

import numpy as np

from lib import tree
from lib.config import TrainConfig

_BATCHES_PER_DRAW = 64        # training batches sampled per call to the grammar sampler


def _seed(*keys: int) -> int:
    """An integer seed derived from named integer keys (independent streams per key tuple)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def grammar(cfg: TrainConfig) -> np.ndarray:
    """The production tensor ``M`` (q, q, q) of the run's grammar."""
    return tree.random_grammar(cfg.q, cfg.sigma, cfg.grammar_seed)


def test_sets(cfg: TrainConfig, M: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Held-out ``(roots (n_test,), leaves (n_test, 2**depth))`` for every test level ``k``, from ``test_seed``."""
    return {k: tree.sample(M, cfg.depth, cfg.n_test, k=k, seed=_seed(cfg.test_seed, k))
            for k in range(cfg.depth + 1)}


def _codes(leaves: np.ndarray, q: int) -> np.ndarray:
    """One int64 per sequence (base-``q`` digits; exact while ``q**length < 2**63``, as for 4**16)."""
    return leaves @ (q ** np.arange(leaves.shape[1], dtype=np.int64))


def _draw(cfg: TrainConfig, M: np.ndarray, n: int, seed: int, exclude: np.ndarray):
    """``n`` training draws at level ``k_train`` that are not test sequences (codes in ``exclude``)."""
    roots, leaves, part = [], [], 0
    while sum(map(len, roots)) < n:
        r, x = tree.sample(M, cfg.depth, n, k=cfg.k_train, seed=_seed(seed, part))
        keep = ~np.isin(_codes(x, cfg.q), exclude)
        roots.append(r[keep])
        leaves.append(x[keep])
        part += 1
    return np.concatenate(roots)[:n], np.concatenate(leaves)[:n]


def batches(cfg: TrainConfig, M: np.ndarray, exclude: np.ndarray):
    """Endless ``(roots (B,), leaves (B, L))`` training batches from ``data_seed``."""
    B = cfg.batch_size
    if cfg.n_train is None:                                   # fresh samples every step
        for draw in itertools.count():
            roots, leaves = _draw(cfg, M, B * _BATCHES_PER_DRAW, _seed(cfg.data_seed, draw), exclude)
            for i in range(0, len(roots), B):
                yield roots[i:i + B], leaves[i:i + B]
    roots, leaves = _draw(cfg, M, cfg.n_train, _seed(cfg.data_seed), exclude)
    rng = np.random.default_rng(_seed(cfg.data_seed, 1))
    while True:                                               # shuffled epochs, last partial batch dropped
        order = rng.permutation(cfg.n_train)
        for i in range(0, cfg.n_train - B + 1, B):
            yield roots[order[i:i + B]], leaves[order[i:i + B]]


def validation_set(cfg: TrainConfig, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n_val`` held-out ``(roots, leaves)`` at level ``k_train`` from ``val_seed`` (the plateau
    criterion's data; like the test sets, never trained on)."""
    return tree.sample(M, cfg.depth, cfg.n_val, k=cfg.k_train, seed=_seed(cfg.val_seed, 99, cfg.k_train))


def held_out(cfg: TrainConfig):
    """Grammar, test sets, validation set (``None`` for ``"cosine"``) and the codes of every
    held-out sequence, which training draws reject."""
    M = grammar(cfg)
    tests = test_sets(cfg, M)
    val = validation_set(cfg, M) if cfg.schedule == "plateau" else None
    held = [leaves for _, leaves in tests.values()] + ([val[1]] if val else [])
    return M, tests, val, np.concatenate([_codes(x, cfg.q) for x in held])
