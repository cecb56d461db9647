"""Exact BP's numbers for a training run, and a run's history read against them.

:func:`bp_reference` scores BP under every filtering assumption on the very test sets
`lib.train.train` evaluates on; :func:`nearest_bp_row` and :func:`time_to_accuracy` read a
training history (`lib.train.train`) against that table. Introduced in chapter 4.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.config import TrainConfig
from lib.run_data import grammar, test_sets
from lib.train import bp_posteriors, score


def bp_reference(cfg: TrainConfig, n: int | None = None) -> pd.DataFrame:
    """BP assuming model ``k_model`` on the first ``n`` (default ``n_test``) sequences of test set ``k_test``.

    Returns a tidy table (k_model, k_test, loss, accuracy) for the run's task: root posterior or
    leave-one-out leaf conditionals at every position, from `lib.bp` on the very test sets
    :func:`train` evaluates on.
    """
    M, n = grammar(cfg), n or cfg.n_test
    rows = []
    for k_test, (roots, leaves) in test_sets(cfg, M).items():
        target = roots[:n] if cfg.task == "root" else leaves[:n]
        for k_model, p in enumerate(bp_posteriors(cfg, M, leaves[:n])):
            with np.errstate(divide="ignore"):       # log 0 = -inf: symbols BP rules out exactly
                loss, acc = score(np.log(p), target)
            rows.append({"k_model": k_model, "k_test": k_test, "loss": loss, "accuracy": acc})
    return pd.DataFrame(rows)


def bp_accuracy(table: pd.DataFrame, k_model: int, k_test: int) -> float:
    """BP(k_model, k_test)'s accuracy from a :func:`bp_reference` table."""
    row = table[(table.k_model == k_model) & (table.k_test == k_test)]
    if len(row) != 1:
        raise ValueError(f"table must hold one row with k_model={k_model}, k_test={k_test}, "
                         f"got {len(row)}")
    return float(row.accuracy.iloc[0])


def time_to_accuracy(history: pd.DataFrame, k_test: int, target: float) -> float:
    """Training wall seconds at the first evaluation with accuracy on ``k_test`` at least ``target`` (NaN if never)."""
    hit = history[(history.k_test == k_test) & (history.accuracy >= target)]
    return float(hit.wall_s.iloc[0]) if len(hit) else float("nan")


def nearest_bp_row(history: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """At each step, the BP row ``k_model`` whose accuracies over ``k_test`` are closest (Euclidean) to the model's.

    Returns a table (step, wall_s, k_model, distance).
    """
    acc = history.pivot(index=["step", "wall_s"], columns="k_test", values="accuracy")
    rows = reference.pivot(index="k_model", columns="k_test", values="accuracy")[acc.columns]
    dist = np.linalg.norm(acc.to_numpy()[:, None, :] - rows.to_numpy()[None], axis=-1)
    out = acc.index.to_frame(index=False)
    out["k_model"] = rows.index.to_numpy()[dist.argmin(1)]
    out["distance"] = dist.min(1)
    return out
