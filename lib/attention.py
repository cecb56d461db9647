"""Attention statistics of `lib.transformer` on tree-structured sequences.

A sequence of ``L = 2**depth`` leaves is cut into aligned blocks of size ``2**m``: positions ``i``
and ``j`` share their block of size ``2**m`` exactly when their lowest common ancestor lies at most
``m`` levels above the leaves, ``(i ^ j).bit_length() <= m``. The block-locality score of an
attention pattern is the share of each query's attention that stays inside its own block, averaged
over queries; it is 1 for ``m = depth`` and ``2**m / L`` for uniform attention. Introduced in
chapter 5.
"""
from __future__ import annotations

import numpy as np
import torch

from lib.transformer import Transformer, token_ids

_ROWS = 1024          # sequences per forward pass


@torch.no_grad()
def average_patterns(model: Transformer, x) -> tuple[np.ndarray, np.ndarray]:
    """Every layer's attention pattern, averaged over sequences, and the first sequence's patterns.

    Parameters
    ----------
    model : Transformer
    x : array_like of int, shape (n, L)
        Input token ids in ``0..vocab-1`` (the mask id included for masked-token models).

    Returns
    -------
    mean : numpy.ndarray, shape (n_layers, n_heads, L, L)
        Mean pattern over the ``n`` sequences; queries on axis 2, keys on axis 3.
    first : numpy.ndarray, shape (n_layers, n_heads, L, L)
        The patterns of sequence 0, for single-sequence maps.
    """
    x = token_ids(model.cfg, x)
    model.eval()
    total, first = 0.0, None
    for lo in range(0, len(x), _ROWS):
        _, patterns = model(x[lo:lo + _ROWS], return_attention=True)
        A = torch.stack(patterns, dim=1)                           # (B, n_layers, H, L, L)
        total = total + A.double().sum(0)
        first = A[0].numpy() if first is None else first
    return (total / len(x)).numpy(), first


def block_masks(depth: int) -> np.ndarray:
    """``masks[m, i, j] = 1`` if positions ``i`` and ``j`` lie in the same aligned block of size ``2**m``.

    Returns
    -------
    numpy.ndarray, shape (depth + 1, 2**depth, 2**depth), float64, for ``m = 0..depth``
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
    pos = np.arange(2**depth)
    block = pos[None, :] >> np.arange(depth + 1)[:, None]             # (depth + 1, L) block index
    return (block[:, :, None] == block[:, None, :]).astype(float)


def block_locality(patterns) -> np.ndarray:
    """Share of attention each query keeps inside its own block of size ``2**m``, mean over queries.

    Parameters
    ----------
    patterns : array_like, shape (..., L, L)
        Attention patterns (rows are queries and sum to one), ``L = 2**depth``.

    Returns
    -------
    numpy.ndarray, shape (..., depth + 1)
        Entry ``m`` is the locality score for blocks of size ``2**m``, ``m = 0..depth``
        (``m = 0`` is attention to the query itself; ``m = depth`` is 1).
    """
    A = np.asarray(patterns, dtype=float)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2] or A.shape[-1] < 1:
        raise ValueError(f"patterns must have shape (..., L, L), got {A.shape}")
    L = A.shape[-1]
    if L & (L - 1):
        raise ValueError(f"patterns: L must be a power of two, got {L}")
    if np.any(A < 0) or not np.allclose(A.sum(-1), 1.0, atol=1e-4):
        raise ValueError("patterns must be non-negative with rows summing to one")
    masks = block_masks(L.bit_length() - 1)
    return np.einsum("...ij,mij->...m", A, masks) / L


def uniform_locality(depth: int) -> np.ndarray:
    """Block-locality score of uniform attention, ``2**m / 2**depth`` for ``m = 0..depth``."""
    return block_masks(depth).sum(axis=(1, 2)) / 4**depth


def block_scale(scores, level: float = 0.9) -> np.ndarray:
    """The smallest aligned block that keeps at least ``level`` of a pattern's attention.

    Parameters
    ----------
    scores : array_like, shape (..., depth + 1)
        Block-locality scores (:func:`block_locality`), non-decreasing in ``m``, 1 at
        ``m = depth``.
    level : float
        Share of the attention the block must keep, in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray of int, shape (...)
        ``2**m`` for the smallest such ``m``: 1 for attention to the query itself, 2 for
        siblings, ``2**depth`` when only the whole sequence keeps ``level``.
    """
    S = np.asarray(scores, dtype=float)
    if S.ndim < 1 or S.shape[-1] < 1 or not np.allclose(S[..., -1], 1.0, atol=1e-6):
        raise ValueError("scores must have shape (..., depth + 1) with last entry 1, "
                         f"got shape {S.shape}")
    if not 0.0 < level <= 1.0:
        raise ValueError(f"level must be in (0, 1], got {level!r}")
    return 2 ** np.argmax(S >= level - 1e-9, axis=-1)
