"""Argument checks shared by every module of `lib`.

Each check raises ``ValueError`` naming the argument and the allowed range, so a reader who
passes a wrong value learns what to pass instead.
"""
from __future__ import annotations

import numbers

import numpy as np


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer in ``lo..hi``.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    value : object
        The value to check; booleans are rejected.
    lo, hi : int
        Inclusive bounds; ``hi=None`` means unbounded above.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {allowed}, got {value}")
    return value


def check_real(name: str, value, lo: float = -np.inf) -> float:
    """Return ``value`` as a finite ``float`` that is at least ``lo``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < lo:
        raise ValueError(f"{name} must be a finite number >= {lo}, got {value}")
    return value


def check_grammar(M) -> np.ndarray:
    """Check a production tensor and return it as a float64 array.

    Parameters
    ----------
    M : array_like, shape (q, q, q)
        ``M[a, b, c] = P(left child b, right child c | parent a)``; every ``M[a]`` must be a
        probability table (non-negative, finite, summing to one).

    Returns
    -------
    numpy.ndarray, shape (q, q, q), float64
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 3 or len(set(M.shape)) != 1 or M.shape[0] < 2:
        raise ValueError(f"M must have shape (q, q, q) with q >= 2, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("M must be finite (no NaN or inf entries)")
    if np.any(M < 0):
        raise ValueError("M must be non-negative")
    sums = M.sum(axis=(1, 2))
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-9):
        raise ValueError(f"M must be row-stochastic: sum over (b, c) of M[a] must be 1, got {sums}")
    return M


def check_leaves(leaves, q: int) -> tuple[np.ndarray, int]:
    """Check a batch of leaf sequences; return it as int64 with its tree depth.

    Parameters
    ----------
    leaves : array_like of int, shape (n, 2**depth)
        Symbols in ``0..q``; the value ``q`` marks a masked leaf.
    q : int
        Alphabet size.

    Returns
    -------
    leaves : numpy.ndarray, shape (n, 2**depth), int64
    depth : int
    """
    leaves = np.asarray(leaves)
    if leaves.ndim != 2:
        raise ValueError(f"leaves must have shape (n, 2**depth), got shape {leaves.shape}; "
                         "wrap a single sequence as leaves[None]")
    if leaves.size and not np.issubdtype(leaves.dtype, np.integer):
        raise ValueError(f"leaves must hold integer symbol ids in 0..{q}, got dtype {leaves.dtype}")
    length = leaves.shape[1]
    if length < 1 or length & (length - 1):
        raise ValueError(f"leaves: sequence length must be 2**depth, got {length}")
    if leaves.size and (leaves.min() < 0 or leaves.max() > q):
        raise ValueError(f"leaves: symbols must be in 0..{q} ({q} = masked), "
                         f"got values in {leaves.min()}..{leaves.max()}")
    return leaves.astype(np.int64, copy=False), length.bit_length() - 1
