"""What the held-out sequences share with training: rejected draws, validation and pre-training.

Every run draws its test sets, validation set and training stream from independent seeds
(`lib.run_data`), and training draws equal to a held-out sequence are rejected. On a grammar
that puts much weight on a few sequences, three questions follow, and this module answers
them by counting: how much probability the rejection removes from the training distribution
(:func:`rejected_share`); how many validation sequences are also test sequences
(:func:`validation_overlap`); and which test inputs a pre-trained encoder saw in its own
training stream (:func:`seen_in_stream`), so that a model can be scored on the test inputs
no part of it saw (:func:`unseen_scores`). Introduced in chapter 4's section on data.
"""
from __future__ import annotations

import itertools

import numpy as np

from lib import bp, run_data, tree
from lib.config import TrainConfig
from lib.validate import check_int


def rejected_share(cfg: TrainConfig, n: int = 200_000, seed: int = 0) -> float:
    """Monte Carlo estimate, from ``n`` draws with seed ``seed``, of the probability that a
    draw at level ``k_train`` equals one of run ``cfg``'s held-out (test or validation)
    sequences: the share of its training draws that `lib.run_data` rejects, so that every
    test score is on sequences the run never trained on."""
    n, seed = check_int("n", n, 1), check_int("seed", seed, 0)
    M, _, _, held = run_data.held_out(cfg)
    _, leaves = tree.sample(M, cfg.depth, n, k=cfg.k_train, seed=seed)
    return float(np.isin(run_data._codes(leaves, cfg.q), held).mean())


def validation_overlap(cfg: TrainConfig) -> float:
    """The fraction of run ``cfg``'s validation sequences that are also test sequences of its
    level: the two sets are drawn independently (training draws reject both), so a few
    sequences likely under the grammar can be in both."""
    M = run_data.grammar(cfg)
    tests = {row.tobytes() for row in run_data.test_sets(cfg, M)[cfg.k_train][1]}
    return float(np.mean([row.tobytes() in tests for row in run_data.validation_set(cfg, M)[1]]))


def seen_in_stream(source: TrainConfig, n_steps: int, leaves: np.ndarray) -> np.ndarray:
    """Which rows of ``leaves`` (n, 2**depth) are among the inputs of the first ``n_steps``
    training batches of run ``source`` (its stream regenerated from its seeds,
    `lib.run_data.batches`), as a boolean array (n,): for a pre-trained encoder, which test
    inputs it saw."""
    n_steps = check_int("n_steps", n_steps, 1)
    M, _, _, held = run_data.held_out(source)
    stream = itertools.islice(run_data.batches(source, M, held), n_steps)
    seen = np.concatenate([run_data._codes(x, source.q) for _, x in stream])
    return np.isin(run_data._codes(np.asarray(leaves), source.q), seen)


def unseen_scores(cfg: TrainConfig, predicted: np.ndarray, seen: np.ndarray,
                  cache: dict | None = None) -> dict:
    """A model's and exact BP(k, k)'s accuracy on run ``cfg``'s test sequences of level
    ``k_train`` that are not marked ``seen``.

    Parameters
    ----------
    cfg : TrainConfig
        The run whose test set of level ``k_train`` (``n_test`` sequences) is scored.
    predicted : array_like of int, shape (n_test,)
        The model's root for every test sequence.
    seen : array_like of bool, shape (n_test,)
        The sequences to leave out (e.g. :func:`seen_in_stream` of a pre-trained encoder).
    cache : dict, optional
        Filled in place with the unseen roots and BP's hits per test set and mask, so that
        runs sharing them (a sweep's table) sample the test set and run BP once.

    Returns
    -------
    dict
        n_unseen, accuracy_unseen and bp_accuracy_unseen (fractions, on the same sequences).
    """
    predicted, seen = np.asarray(predicted), np.asarray(seen)
    for name, a in (("predicted", predicted), ("seen", seen)):
        if a.shape != (cfg.n_test,):
            raise ValueError(f"{name} must have shape ({cfg.n_test},), got {a.shape}")
    if seen.dtype != bool or seen.all():
        raise ValueError("seen must be a boolean mask that leaves some sequences unseen")
    key = (cfg.q, cfg.depth, cfg.sigma, cfg.grammar_seed, cfg.test_seed, cfg.n_test,
           cfg.k_train, seen.tobytes())
    cache = {} if cache is None else cache
    if key not in cache:
        M = run_data.grammar(cfg)
        roots, leaves = run_data.test_sets(cfg, M)[cfg.k_train]
        exact = bp.root_posterior(M, leaves[~seen], cfg.k_train).argmax(-1)
        cache[key] = roots[~seen], exact == roots[~seen]
    roots, bp_hits = cache[key]
    return {"n_unseen": len(roots),
            "accuracy_unseen": float((predicted[~seen] == roots).mean()),
            "bp_accuracy_unseen": float(bp_hits.mean())}
