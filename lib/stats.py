"""Statistics of leaf sequences: empirical pair frequencies, mutual information, tree distance.

Introduced in chapters 1 and 2, where they reveal the hierarchy hidden in the grammar's leaves.
"""
from __future__ import annotations

import numpy as np

from lib.validate import check_int, check_leaves


def pair_frequencies(leaves, q: int) -> np.ndarray:
    """Empirical joint frequencies of every pair of positions.

    Parameters
    ----------
    leaves : array_like of int, shape (n, L)
        Observed sequences with symbols in ``0..q-1`` (no masks), ``n >= 1``.
    q : int
        Alphabet size.

    Returns
    -------
    numpy.ndarray, shape (L, L, q, q)
        ``F[i, j, x, y]`` = fraction of sequences with ``leaves[:, i] = x`` and ``leaves[:, j] = y``.
    """
    q = check_int("q", q, 2)
    leaves, _ = check_leaves(leaves, q)
    if len(leaves) == 0 or leaves.max() >= q:
        raise ValueError(f"leaves must hold at least one sequence of symbols in 0..{q - 1} (no masks)")
    n, L = leaves.shape
    one_hot = np.eye(q)[leaves].reshape(n, L * q)                   # (n, L q)
    return (one_hot.T @ one_hot / n).reshape(L, q, L, q).transpose(0, 2, 1, 3)


def mutual_information(P) -> np.ndarray:
    """Mutual information (nats) of every pair from joint laws ``P`` of shape (L, L, q, q).

    Returns an (L, L) array; the diagonal holds each position's entropy.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 4 or P.shape[0] != P.shape[1] or P.shape[2] != P.shape[3]:
        raise ValueError(f"P must have shape (L, L, q, q), got {P.shape}")
    if np.any(P < 0) or not np.allclose(P.sum(axis=(2, 3)), 1.0, atol=1e-9):
        raise ValueError("P must hold probability tables: non-negative, each P[i, j] summing to 1")
    p_x = P.sum(axis=3, keepdims=True)
    p_y = P.sum(axis=2, keepdims=True)
    ratio = np.divide(P, p_x * p_y, out=np.ones_like(P), where=P > 0)
    return (P * np.log(ratio)).sum(axis=(2, 3))


def tree_distance(depth: int) -> np.ndarray:
    """Height of the lowest common ancestor of leaves ``i`` and ``j``: ``bit_length(i ^ j)``, shape (L, L)."""
    depth = check_int("depth", depth, 0)
    idx = np.arange(2**depth)
    xor = idx[:, None] ^ idx[None, :]
    return np.where(xor > 0, np.floor(np.log2(np.maximum(xor, 1))).astype(int) + 1, 0)


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n)) of ``n >= 2`` finite values:
    the summary of a quantity measured once per seed."""
    values = np.asarray(values, dtype=float).ravel()
    if len(values) < 2 or not np.isfinite(values).all():
        raise ValueError(f"values must hold at least two finite numbers, got {values.tolist()}")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
