"""Calibration: are a model's probabilities the right probabilities, not only its decisions?

On the filtered grammar the right probabilities are known exactly: BP's posteriors. A model is
calibrated when, among all predictions to which it gives probability about ``p``, the exact
posterior probability is on average ``p`` too. :func:`reliability` bins the model's predicted
probabilities (every class of every prediction) and averages the reference probabilities in
each bin; on in-distribution data the empirical frequency of the true class is a second,
sampled reference (:func:`frequencies`). :func:`kl_per_prediction` measures the same gap one
prediction at a time. Introduced in chapter 4.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.validate import check_int


def _probabilities(name: str, p) -> np.ndarray:
    """``p`` as a float array (..., q) of distributions over the last axis, after checking."""
    p = np.asarray(p, dtype=float)
    if p.ndim < 1 or p.shape[-1] < 2 or p.size == 0:
        raise ValueError(f"{name} must have shape (..., q) with q >= 2, got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(-1), 1.0, atol=1e-6):
        raise ValueError(f"{name} must hold probability distributions over its last axis")
    return p


def kl_per_prediction(p_ref, p_model) -> np.ndarray:
    """KL(p_ref || p_model) in nats for every prediction: shape ``p_ref.shape[:-1]``.

    ``0 log 0 = 0``; a class the reference allows and the model rules out gives ``inf``.
    """
    p_ref, p_model = _probabilities("p_ref", p_ref), _probabilities("p_model", p_model)
    if p_ref.shape != p_model.shape:
        raise ValueError(f"p_ref and p_model must have the same shape, got {p_ref.shape} "
                         f"and {p_model.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_ref > 0, p_ref * (np.log(p_ref) - np.log(p_model)), 0.0)
    return terms.sum(-1)


def reliability(p_model, p_ref, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table of ``p_model`` against the reference probabilities ``p_ref``.

    Parameters
    ----------
    p_model, p_ref : array_like, shape (..., q)
        The model's and the exact (BP) distributions for the same predictions; every class of
        every prediction is one point.
    n_bins : int
        Equal-width bins of the model's probability in [0, 1].

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: bin (index), lo, hi, n (points), p_model (mean model
        probability), p_ref (mean reference probability). Calibrated: p_model = p_ref.
    """
    p_model, p_ref = _probabilities("p_model", p_model), _probabilities("p_ref", p_ref)
    if p_ref.shape != p_model.shape:
        raise ValueError(f"p_ref and p_model must have the same shape, got {p_ref.shape} "
                         f"and {p_model.shape}")
    n_bins = check_int("n_bins", n_bins, 1)
    x, y = p_model.ravel(), p_ref.ravel()
    which = np.minimum((x * n_bins).astype(int), n_bins - 1)
    n = np.bincount(which, minlength=n_bins)
    table = pd.DataFrame({"bin": np.arange(n_bins), "lo": np.arange(n_bins) / n_bins,
                          "hi": np.arange(1, n_bins + 1) / n_bins, "n": n,
                          "p_model": np.bincount(which, x, n_bins) / np.maximum(n, 1),
                          "p_ref": np.bincount(which, y, n_bins) / np.maximum(n, 1)})
    return table[table.n > 0].reset_index(drop=True)


def frequencies(target, q: int) -> np.ndarray:
    """One-hot rows (..., q) of the true classes ``target`` (...): the sampled reference."""
    q = check_int("q", q, 2)
    target = np.asarray(target)
    if target.size == 0 or target.min() < 0 or target.max() >= q:
        raise ValueError(f"target must hold classes in 0..{q - 1}")
    return np.eye(q)[target]


def calibration_error(table: pd.DataFrame) -> float:
    """Expected calibration error of a :func:`reliability` table: the point-weighted mean of
    ``|p_model - p_ref|`` over bins."""
    return float(np.average((table.p_model - table.p_ref).abs(), weights=table.n))
