"""BP's exact laws of a tree node, the references the ancestor probes of chapter 5 are scored by.

For the node ``(m, j)`` (level ``m``, position ``j``) of the full model (``k = 0``) and leaves that
may hold masked positions (the symbol ``q``), two laws:

- :func:`posterior`, ``P(node | every observed leaf)``: the product of BP's outside message
  ``psi`` and inside message ``nu`` at the node, the best any reader of the whole sequence can do;
- :func:`inside`, ``P(node | the observed leaves below it)``: the inside message times the node's
  prior marginal, what a reader of the node's own block of ``2**(depth - m)`` leaves can do.

They are equal at the root (its block is the whole sequence) and wherever the block's leaves fix
the node, as clean leaves do on this book's unambiguous grammar; they differ above a masked leaf.
Both reuse the message sweeps of `lib.bp` (its inside sweep, and its outside sweep stopped at level
``m``), which the tests of `lib.bp` check against enumeration; ``tests/test_probe.py`` checks these
laws against enumeration too. Introduced in chapter 5.
"""
from __future__ import annotations

import numpy as np

from lib import bp
from lib.tree import path_marginals
from lib.validate import check_grammar, check_int, check_leaves


def _messages(M, leaves, m):
    """Validated ``(M, leaves, m)`` and the normalised inside messages ``nu[0..m]`` (q, 2**i, n)."""
    M = check_grammar(M)
    leaves, depth = check_leaves(leaves, M.shape[0])
    m = check_int("m", m, 0, depth - 1)
    dead = np.zeros(len(leaves), dtype=bool)
    nu = bp._inside(M, leaves, 0, dead)[: m + 1]
    if dead.any():
        raise ValueError(f"leaves: {int(dead.sum())} sequence(s) have probability zero under "
                         f"the grammar (first at row {int(np.flatnonzero(dead)[0])})")
    return M, m, nu


def _normalise(p: np.ndarray) -> np.ndarray:
    """(q, 2**m, n) unnormalised laws -> (n, 2**m, q) laws."""
    return (p / p.sum(axis=0)).transpose(2, 1, 0)


def posterior(M, leaves, m: int) -> np.ndarray:
    """Exact ``P(node (m, j) = a | all observed leaves)`` for every level-``m`` node ``j``.

    Parameters
    ----------
    M : array_like, shape (q, q, q)
        Row-stochastic production tensor of the full model (``k = 0``).
    leaves : array_like of int, shape (n, 2**depth)
        Symbols in ``0..q-1``; ``q`` marks a masked (unobserved) leaf.
    m : int
        Level of the node, ``0`` (the root) to ``depth - 1`` (the leaves' parents).

    Returns
    -------
    numpy.ndarray, shape (n, 2**m, q)
    """
    M, m, nu = _messages(M, leaves, m)
    q, n = M.shape[0], nu[0].shape[-1]
    dead = np.zeros(n, dtype=bool)
    psi = bp._outside(M, np.full((q, 1, n), 1.0 / q), nu, 0, dead)    # (q, 2**m, n)
    return _normalise(psi * nu[m])


def inside(M, leaves, m: int) -> np.ndarray:
    """Exact ``P(node (m, j) = a | the observed leaves below node (m, j))``.

    The inside (upward) message of BP times the node's prior marginal under the full model,
    ``(1/q) sum_r T_j[r, a]`` with ``T_j = tree.path_marginals(M, m)[j]``. Same arguments and
    shape as :func:`posterior`.
    """
    M, m, nu = _messages(M, leaves, m)
    prior = path_marginals(M, m).mean(axis=1)                         # (2**m, q)
    return _normalise(nu[m] * prior.T[:, :, None])


def per_token(laws: np.ndarray, depth: int) -> np.ndarray:
    """Node laws (n, 2**m, q) repeated onto the ``2**depth`` leaves below each node: (n, L, q)."""
    laws = np.asarray(laws)
    depth = check_int("depth", depth, 1)
    if laws.ndim != 3 or laws.shape[1] > 2**depth or 2**depth % laws.shape[1]:
        raise ValueError(f"laws must have shape (n, 2**m, q) with m < depth = {depth}, "
                         f"got {laws.shape}")
    return np.repeat(laws, 2**depth // laws.shape[1], axis=1)
